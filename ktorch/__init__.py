"""ktorch: translate trained models between Keras and PyTorch, as code, with proof of parity."""

from __future__ import annotations

from . import (
    errors,  # every public exception: ktorch.errors.ParityError, ...
    verify,  # (ktorch.verify.assert_parity, ktorch.verify.verify_conversion)
)
from .api import ConversionResult, convert, inspect
from .version import __version__

__all__ = ["ConversionResult", "__version__", "convert", "errors", "inspect", "verify"]
