"""The one catalogue of op kinds.

Every op kind the graph can hold is declared here, once: its attribute schema, the names
of its weight tensors, its layout class (how it behaves when the layout pass permutes the
axes of its tensors) and its shape inference. Readers and writers refer to these names;
nothing invents an op kind locally. The definitions live in one module per family
(`elementwise`, `nn`, `shape`, ...), imported explicitly here; the schema is in `schema`.
"""

from __future__ import annotations

from . import elementwise, nn, sequence, shape, tensor, training  # noqa: F401  (the family modules define their ops)
from .schema import (
    REQUIRED,
    Attr,
    InferFn,
    Layout,
    OpDef,
    all_ops,
    attr,
    broadcast_shapes,
    channel_axis,
    define,
    get_op,
    normalize_axis,
    same_as_input,
    spatial_axes,
)

__all__ = [
    "REQUIRED",
    "Attr",
    "InferFn",
    "Layout",
    "OpDef",
    "all_ops",
    "attr",
    "broadcast_shapes",
    "channel_axis",
    "define",
    "get_op",
    "normalize_axis",
    "same_as_input",
    "spatial_axes",
]
