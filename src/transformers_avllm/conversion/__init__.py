"""Converters from reference checkpoints (not shipped to the Hub)."""
