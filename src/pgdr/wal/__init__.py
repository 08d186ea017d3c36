"""Continuous WAL archiving and point-in-time recovery: archive.py names the stored objects (pure)."""
