"""Keras preprocessing layers that belong to the model: Rescaling and Normalization."""

from __future__ import annotations

import numpy as np

from ...graph import Value
from ..registry import register
from .reader import LayerCall

KERAS_EPSILON = 1e-7  # keras.config.epsilon(), the floor Normalization puts under sqrt(variance)


@register("keras->ir", "Rescaling")
def rescaling_from_keras(call: LayerCall) -> Value:
    x = call.x
    scale, offset = call.get("scale", 1.0), call.get("offset", 0.0)
    if isinstance(scale, dict) or isinstance(offset, dict):  # serialized arrays
        raise call.error("array-valued scale/offset saved as tensors are not supported")
    if isinstance(scale, (list, tuple)) or isinstance(offset, (list, tuple)):
        c = x.shape[-1]
        s = np.broadcast_to(np.asarray(scale, np.float32), (c,)).copy()
        o = np.broadcast_to(np.asarray(offset, np.float32), (c,)).copy()
        return call.emit("channel_affine", [x], {"axis": x.rank - 1}, {"scale": s, "offset": o})
    return call.emit("scale_shift", [x], {"scale": float(scale), "offset": float(offset)})


@register("keras->ir", "Normalization")
def normalization_from_keras(call: LayerCall) -> Value:
    x = call.x
    axis = call.get("axis", -1)
    axes = tuple(sorted(int(a) % x.rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])))
    shape = tuple(x.shape[a] for a in axes)
    if call.get("mean") is not None:
        mean = np.asarray(call.get("mean"), np.float32)
        var = np.asarray(call.get("variance"), np.float32)
    else:
        mean, var = call.weight(0), call.weight(1)
    mean = np.broadcast_to(mean.reshape(-1) if mean.size == np.prod(shape) else mean, shape).astype(np.float32)
    var = np.broadcast_to(var.reshape(-1) if var.size == np.prod(shape) else var, shape).astype(np.float32)
    mean, var = mean.reshape(shape), var.reshape(shape)
    std = np.maximum(np.sqrt(var), KERAS_EPSILON).astype(np.float32)
    return call.emit("standardize", [x], {"axis": axes, "invert": bool(call.get("invert", False))}, {"mean": mean, "std": std})
