"""The package version: one place, at the bottom layer, for everything that records it."""

__version__ = "0.1.0"
