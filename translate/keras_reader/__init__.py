"""Keras reader: `.h5` / `.keras` files -> intermediate graph, without TensorFlow."""

from __future__ import annotations

from .reader import KerasLayerError, LayerCall, ReadOptions, read_keras

__all__ = ["KerasLayerError", "LayerCall", "ReadOptions", "read_keras"]
