"""Test support shared by every tier and the local stack: the template reader and a private Valkey."""
