"""The PyTorch writer's op families, imported explicitly so that their translators register."""

from __future__ import annotations

from . import activations, attention, conv, core, normalization, pooling, recurrent, regularization, shape, tensor  # noqa: F401
