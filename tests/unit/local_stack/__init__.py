"""Unit tests of the local stack's pure parts (template reader, gateway, poller, scheduler, tokens)."""
