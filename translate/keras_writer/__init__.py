"""Keras writer: intermediate graph -> Keras 3 functional model.py + model.weights.h5."""

from __future__ import annotations

from . import families  # noqa: F401  (imports the op families, which register their translators)
