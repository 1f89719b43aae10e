"""The ktorch version, in a module of its own that imports nothing (setup.cfg reads it)."""

__version__ = "0.1.0"
