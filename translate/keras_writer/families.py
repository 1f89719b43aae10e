"""The Keras writer's op families, imported explicitly so that their translators register."""

from __future__ import annotations

from . import activations, conv, core, normalization, pooling, shape, tensor  # noqa: F401
