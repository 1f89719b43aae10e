"""The PyTorch writer's op families, imported explicitly so that their translators register."""

from __future__ import annotations

from . import activations, nn, shape  # noqa: F401
