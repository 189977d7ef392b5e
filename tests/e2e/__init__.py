"""End-to-end tests: the local stack over HTTP (``make test-e2e``)."""
