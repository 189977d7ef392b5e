"""Unit tests of the build checks and benchmark helpers (tests/bench): no build, no network."""
