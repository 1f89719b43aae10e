"""Keras reader: `.h5` / `.keras` files -> intermediate graph, without TensorFlow."""

from __future__ import annotations

from . import families  # noqa: F401  (imports the layer families, which register their translators)
from .calls import KerasLayerError, LayerCall
from .reader import ReadOptions, read_keras

__all__ = ["KerasLayerError", "LayerCall", "ReadOptions", "read_keras"]
