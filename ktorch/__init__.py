"""ktorch: translate trained models between Keras and PyTorch, as code, with proof of parity."""

from __future__ import annotations

__version__ = "0.1.0"

from .api import ConversionResult, convert, inspect  # noqa: E402

__all__ = ["ConversionResult", "__version__", "convert", "inspect"]
