"""Curation pipeline: Ray Data plan, one module per stage family, media I/O, models registry."""
