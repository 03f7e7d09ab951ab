"""Dataset formats, media writing and synthetic data."""
