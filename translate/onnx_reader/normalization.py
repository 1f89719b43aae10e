"""ONNX normalisations: BatchNormalization (inference), LayerNormalization,
InstanceNormalization."""

from __future__ import annotations

import numpy as np

from ...graph import Value
from ..registry import register
from .calls import OnnxCall


@register("onnx->ir", "BatchNormalization")
def batch_norm_to_ir(call: OnnxCall) -> Value:
    if call.attr("training_mode", 0):
        raise call.unsupported("BatchNormalization in training mode (export the model in eval mode)")
    x = call.value(0)
    weights = {
        "weight": call.const(1),
        "bias": call.const(2),
        "running_mean": call.const(3),
        "running_var": call.const(4),
    }
    # ONNX's momentum weighs the running statistics; PyTorch's weighs the new batch
    # and the spec's training-mode update uses the biased batch variance (ReduceVar over N and the spatial axes)
    attrs = {
        "axis": 1,
        "epsilon": call.attr("epsilon", 1e-5),
        "momentum": round(1.0 - call.attr("momentum", 0.9), 7),
        "biased_running_var": True,
    }
    return call.emit("batch_norm", [x], attrs, weights)


@register("onnx->ir", "LayerNormalization")
def layer_norm_to_ir(call: OnnxCall) -> Value:
    x = call.value(0)
    first = call.axis(int(call.attr("axis", -1)), x.rank)
    if first == 0:
        raise call.unsupported("layer normalization over the batch axis")
    axes = tuple(range(first, x.rank))
    shape = tuple(x.shape[a] for a in axes)
    weights = {}
    for index, name in ((1, "weight"), (2, "bias")):
        w = call.const(index, optional=True)
        if w is not None:
            weights[name] = np.ascontiguousarray(np.broadcast_to(w, shape).astype(np.float32))
    return call.emit("layer_norm", [x], {"axes": axes, "epsilon": call.attr("epsilon", 1e-5)}, weights)


@register("onnx->ir", "InstanceNormalization")
def instance_norm_to_ir(call: OnnxCall) -> Value:
    x = call.value(0)
    scale, bias = call.const(1), call.const(2)
    return call.emit(
        "group_norm",
        [x],
        {"groups": int(scale.shape[0]), "axis": 1, "epsilon": call.attr("epsilon", 1e-5)},
        {"weight": scale, "bias": bias},
    )


@register("onnx->ir", "ktorch::LayerNormalization")
def fused_layer_norm_to_ir(call: OnnxCall) -> Value:
    """A layer normalisation over any non-batch axes, fused from tf2onnx's op-by-op
    subgraph (see patterns.py); scale and bias are shaped like those axes."""
    x = call.value(0)
    axes = tuple(sorted(call.axis(int(a), x.rank) for a in call.attr("axes")))
    weights = {"weight": call.const(1), "bias": call.const(2)}
    return call.emit("layer_norm", [x], {"axes": axes, "epsilon": call.attr("epsilon")}, weights)
