"""The ONNX op families, imported explicitly so that their translators register."""

from __future__ import annotations

from . import activations, arithmetic, attention, conv, core, normalization, pooling, recurrent, resize, shape  # noqa: F401
