"""Tests of the MySetlist backend, in tiers: unit, integration, end to end (see Makefile)."""
