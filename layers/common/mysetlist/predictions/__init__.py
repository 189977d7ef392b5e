"""Setlist predictions: per-artist history, features, a calibrated learned model, back-test."""
