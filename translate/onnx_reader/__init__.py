"""ONNX reader: an ONNX ModelProto (opsets 13-21) -> intermediate graph."""

from __future__ import annotations

from .reader import Const, OnnxCall, OnnxOpError, load_model, read_onnx

__all__ = ["Const", "OnnxCall", "OnnxOpError", "load_model", "read_onnx"]
