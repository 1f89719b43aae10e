"""The ATen op families, imported explicitly so that their translators register."""

from __future__ import annotations

from . import (  # noqa: F401
    activations,
    arithmetic,
    attention,
    conv,
    core,
    normalization,
    pooling,
    recurrent,
    regularization,
    resize,
    shape,
    writes,
)
