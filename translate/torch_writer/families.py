"""The PyTorch writer's op families, imported explicitly so that their translators register."""

from __future__ import annotations

from . import (  # noqa: F401
    activations,
    attention,
    conv,
    core,
    graph_ops,
    normalization,
    pooling,
    recurrent,
    regularization,
    shape,
    tensor,
)
