"""ATen activations: relu, hardtanh/relu6, gelu (exact and tanh), silu, hardswish,
hardsigmoid, leaky_relu, elu, prelu, softmax and friends."""

from __future__ import annotations

import numpy as np

from ...graph import Value
from ..registry import register
from .calls import AtenCall

_UNARY = {
    "aten.relu": "relu",
    "aten.silu": "silu",
    "aten.sigmoid": "sigmoid",
    "aten.tanh": "tanh",
    "aten.hardswish": "hard_silu",
    "aten.mish": "mish",
    "aten.exp": "exp",
    "aten.log": "log",
    "aten.abs": "abs",
    "aten.neg": "neg",
    "aten.sqrt": "sqrt",
    "aten.rsqrt": "rsqrt",
    "aten.erf": "erf",
    "aten.sin": "sin",
    "aten.cos": "cos",
    "aten.square": "square",
    "aten.log_sigmoid": "log_sigmoid",
}


@register("torch->ir", *_UNARY)
def unary_to_ir(call: AtenCall) -> Value:
    return call.emit(_UNARY[call.key], [call.value("self")])


@register("torch->ir", "aten.hardsigmoid")
def hardsigmoid_to_ir(call: AtenCall) -> Value:
    return call.emit("hard_sigmoid", [call.value("self")], {"slope": 1.0 / 6.0, "offset": 0.5})


@register("torch->ir", "aten.hardtanh", "aten.relu6")
def hardtanh_to_ir(call: AtenCall) -> Value:
    lo = float(call.args.get("min_val", 0.0))
    hi = float(call.args.get("max_val", 6.0))
    if lo == 0.0:
        return call.emit("relu", [call.value("self")], {"max_value": hi})
    return call.emit("clip", [call.value("self")], {"min": lo, "max": hi})


@register("torch->ir", "aten.clamp", "aten.clamp_min", "aten.clamp_max")
def clamp_to_ir(call: AtenCall) -> Value:
    lo, hi = call.args.get("min"), call.args.get("max")
    if call.key == "aten.clamp_min":
        hi = None
    if call.key == "aten.clamp_max":
        lo, hi = None, call.args.get("max")
    if any(v is not None and not isinstance(v, (int, float)) for v in (lo, hi)):
        raise call.unsupported("clamp with tensor bounds")
    if lo == 0 and hi is None:
        return call.emit("relu", [call.value("self")])
    return call.emit(
        "clip",
        [call.value("self")],
        {"min": None if lo is None else float(lo), "max": None if hi is None else float(hi)},
    )


@register("torch->ir", "aten.gelu")
def gelu_to_ir(call: AtenCall) -> Value:
    return call.emit("gelu", [call.value("self")], {"approximate": call.args.get("approximate", "none") == "tanh"})


@register("torch->ir", "aten.leaky_relu")
def leaky_relu_to_ir(call: AtenCall) -> Value:
    return call.emit("relu", [call.value("self")], {"negative_slope": float(call.args["negative_slope"])})


@register("torch->ir", "aten.elu")
def elu_to_ir(call: AtenCall) -> Value:
    if float(call.args["scale"]) != 1.0 or float(call.args["input_scale"]) != 1.0:
        raise call.unsupported("elu with scale or input_scale other than 1")
    return call.emit("elu", [call.value("self")], {"alpha": float(call.args["alpha"])})


@register("torch->ir", "aten.selu")
def selu_to_ir(call: AtenCall) -> Value:
    return call.emit("selu", [call.value("self")])


@register("torch->ir", "aten.softplus")
def softplus_to_ir(call: AtenCall) -> Value:
    if float(call.args["beta"]) != 1.0:
        raise call.unsupported("softplus with beta other than 1")
    # torch returns x itself above `threshold` (20): log1p(exp(x)) equals x there to float precision
    return call.emit("softplus", [call.value("self")])


@register("torch->ir", "aten.prelu")
def prelu_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    w = call.const("weight")
    c = x.shape[1] if x.rank > 1 else 1
    alpha = np.broadcast_to(w.reshape(-1, *([1] * (x.rank - 2))), (c, *([1] * (x.rank - 2)))).astype(np.float32)
    return call.emit("prelu", [x], weights={"alpha": np.ascontiguousarray(alpha)})


@register("torch->ir", "aten.softmax", "aten._softmax", "aten.log_softmax", "aten._log_softmax")
def softmax_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    axis = call.axis("dim", x.rank)
    if axis == 0:
        raise call.unsupported("softmax over the batch axis")
    op = "log_softmax" if "log" in call.key else "softmax"
    return call.emit(op, [x], {"axis": (axis,)})
