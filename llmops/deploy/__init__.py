"""Engines on gpu nodes over ssh."""
