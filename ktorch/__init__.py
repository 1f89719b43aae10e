"""ktorch: translate trained models between Keras and PyTorch, as code, with proof of parity."""

from __future__ import annotations

from .version import __version__

from .api import ConversionResult, convert, inspect  # noqa: E402
from . import verify  # noqa: E402  (ktorch.verify.assert_parity, ktorch.verify.verify_conversion)
from . import errors  # noqa: E402  (every public exception: ktorch.errors.ParityError, ...)

__all__ = ["ConversionResult", "__version__", "convert", "errors", "inspect", "verify"]
