"""Developer tools run through make targets (not shipped, not tests)."""
