"""The Keras layer families, imported explicitly so that their translators register."""

from __future__ import annotations

from . import (  # noqa: F401
    activations,
    applications,
    attention,
    conv,
    core,
    emitted,
    kecam,
    keras_ops,
    merge,
    normalization,
    pooling,
    preprocessing,
    recurrent,
    regularization,
    reshaping,
    tf_ops,
)
