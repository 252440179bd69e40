"""The package version, read by packaging and written into output tags."""

__version__ = "0.3.0"
