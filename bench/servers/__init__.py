"""Bare baseline servers and workers, each a small script run as its own process."""
