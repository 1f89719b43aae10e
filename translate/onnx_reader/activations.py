"""ONNX activations: Relu and its variants, Clip, the sigmoid family, HardSwish, Gelu,
Softmax/LogSoftmax and the element-wise unary functions."""

from __future__ import annotations

import math

import numpy as np

from ...graph import Value
from ..registry import register
from .calls import OnnxCall

# op type -> (graph op, {onnx attribute: (graph attribute, default)})
UNARY = {
    "Relu": ("relu", {}),
    "Sigmoid": ("sigmoid", {}),
    "Tanh": ("tanh", {}),
    "HardSwish": ("hard_silu", {}),
    "Softplus": ("softplus", {}),
    "Softsign": ("softsign", {}),
    "Mish": ("mish", {}),
    "Elu": ("elu", {"alpha": ("alpha", 1.0)}),
    "Celu": ("celu", {"alpha": ("alpha", 1.0)}),
    "LeakyRelu": ("relu", {"alpha": ("negative_slope", 0.01)}),
    "Exp": ("exp", {}),
    "Log": ("log", {}),
    "Sqrt": ("sqrt", {}),
    "Abs": ("abs", {}),
    "Neg": ("neg", {}),
    "Erf": ("erf", {}),
    "Sin": ("sin", {}),
    "Cos": ("cos", {}),
}


@register("onnx->ir", *UNARY)
def unary_to_ir(call: OnnxCall) -> Value:
    op, table = UNARY[call.key]
    attrs = {ours: call.attr(theirs, default) for theirs, (ours, default) in table.items()}
    return call.emit(op, [call.value(0)], attrs)


@register("onnx->ir", "Selu")
def selu_to_ir(call: OnnxCall) -> Value:
    alpha, gamma = call.attr("alpha", 1.6732632), call.attr("gamma", 1.050701)
    if not (math.isclose(alpha, 1.6732632, rel_tol=1e-6) and math.isclose(gamma, 1.050701, rel_tol=1e-6)):
        raise call.unsupported(f"Selu with alpha={alpha}, gamma={gamma} (only the standard constants)")
    return call.emit("selu", [call.value(0)])


@register("onnx->ir", "HardSigmoid")
def hard_sigmoid_to_ir(call: OnnxCall) -> Value:
    slope = call.attr("alpha", 0.2)
    if math.isclose(slope, 1.0 / 6.0, rel_tol=1e-6):
        slope = 1.0 / 6.0  # PyTorch's hardsigmoid, stored as the float32 nearest 1/6
    return call.emit("hard_sigmoid", [call.value(0)], {"slope": slope, "offset": call.attr("beta", 0.5)})


@register("onnx->ir", "Gelu")
def gelu_to_ir(call: OnnxCall) -> Value:
    return call.emit("gelu", [call.value(0)], {"approximate": call.attr("approximate", "none") == "tanh"})


def _bound(call: OnnxCall, index: int) -> float | None:
    array = call.const(index, optional=True)
    if array is None:
        return None
    if array.size != 1:
        raise call.unsupported(f"Clip bound {index} is not a scalar")
    return float(array.reshape(()))


@register("onnx->ir", "Clip")
def clip_to_ir(call: OnnxCall) -> Value:
    low, high = _bound(call, 1), _bound(call, 2)
    x = call.value(0)
    if low == 0.0:
        return call.emit("relu", [x], {"max_value": high})  # ReLU6 and friends
    return call.emit("clip", [x], {"min": low, "max": high})


@register("onnx->ir", "PRelu")
def prelu_to_ir(call: OnnxCall) -> Value:
    x = call.value(0)
    slope = call.const(1).astype(np.float32)
    # the graph's alpha has the input's non-batch shape, 1 on shared axes
    alpha = (
        slope.reshape((1,) * (x.rank - 1 - slope.ndim) + slope.shape)
        if slope.ndim < x.rank - 1
        else slope.reshape(slope.shape[-(x.rank - 1) :])
    )
    return call.emit("prelu", [x], weights={"alpha": np.ascontiguousarray(alpha)})


@register("onnx->ir", "Softmax", "LogSoftmax")
def softmax_to_ir(call: OnnxCall) -> Value:
    x = call.value(0)
    axis = call.axis(int(call.attr("axis", -1)), x.rank)
    if axis == 0:
        raise call.unsupported("softmax over the batch axis")
    return call.emit("softmax" if call.key == "Softmax" else "log_softmax", [x], {"axis": (axis,)})


@register("onnx->ir", "Reciprocal")
def reciprocal_to_ir(call: OnnxCall) -> Value:
    """1 / sqrt(x), which tf2onnx writes as Sqrt then Reciprocal (TensorFlow's Rsqrt,
    in every LayerNormalization); other reciprocals of computed tensors are refused."""
    x = call.value(0)
    if x.producer is not None and x.producer.op == "sqrt":
        return call.emit("rsqrt", [x.producer.inputs[0]])  # the sqrt is dropped as dead if nothing else reads it
    raise call.unsupported("Reciprocal of a computed tensor other than a square root")
