"""Adapters that turn real vendor exports into Lethe's canonical raw tables."""
