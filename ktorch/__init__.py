"""ktorch: translate trained models between Keras and PyTorch, as code, with proof of parity."""

from __future__ import annotations

from .version import __version__

from .api import ConversionResult, convert, inspect  # noqa: E402
from . import verify  # noqa: E402  (ktorch.verify.assert_parity, ktorch.verify.verify_conversion)

__all__ = ["ConversionResult", "__version__", "convert", "inspect", "verify"]
