"""ONNX reader: an ONNX ModelProto (opsets 13-21) -> intermediate graph."""

from __future__ import annotations

from . import families  # noqa: F401  (imports the op families, which register their translators)
from .calls import Const, OnnxCall, OnnxOpError
from .reader import load_model, read_onnx

__all__ = ["Const", "OnnxCall", "OnnxOpError", "load_model", "read_onnx"]
