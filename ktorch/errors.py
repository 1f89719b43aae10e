"""Every error a ktorch user may catch, importable from one place.

    from ktorch.errors import KtorchError, ParityError

All derive from `KtorchError`; each has an `exit_code` (what the CLI exits with).
"""

from __future__ import annotations

from .capture import BatchPinnedError, ImportOrderError
from .graph.errors import (
    GraphError,
    KtorchError,
    ModelFileError,
    OutputExistsError,
    ParityError,
    UnsupportedOpError,
    UntrustedCodeError,
)
from .options import OptionError
from .translate.keras_reader.reader import KerasLayerError
from .translate.onnx_reader.reader import OnnxOpError
from .translate.torch_reader.reader import TorchOpError
from .verify.runners import RunError
from .verify.verifier import SourceMismatchError, StructuralError

__all__ = [
    "BatchPinnedError",
    "GraphError",
    "ImportOrderError",
    "KerasLayerError",
    "KtorchError",
    "ModelFileError",
    "OnnxOpError",
    "OptionError",
    "OutputExistsError",
    "ParityError",
    "RunError",
    "SourceMismatchError",
    "StructuralError",
    "TorchOpError",
    "UnsupportedOpError",
    "UntrustedCodeError",
]
