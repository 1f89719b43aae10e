"""The PyTorch writer's op families, imported explicitly so that their translators register."""

from __future__ import annotations

from . import activations, attention, conv, core, normalization, pooling, recurrent, regularization, shape, tensor  # noqa: F401
from . import graph_ops  # noqa: F401  (last: it writes only the op kinds no family above writes)
