"""ATen convolutions: conv1d/2d/3d (numeric or "same"/"valid" padding), their transposes,
and the generic aten.convolution. Weights keep PyTorch's layout, the graph's canonical form."""

from __future__ import annotations

from ...graph import Value
from ..registry import register
from .calls import AtenCall, Const

RANKS = {
    "aten.conv1d": 1,
    "aten.conv2d": 2,
    "aten.conv3d": 3,
    "aten.conv_transpose1d": 1,
    "aten.conv_transpose2d": 2,
    "aten.conv_transpose3d": 3,
}


def _padding(call: AtenCall, rank: int, kernel: tuple, dilation: tuple) -> tuple:
    pad = call.args["padding"]
    if isinstance(pad, str):
        if pad == "valid":
            return ((0, 0),) * rank
        # torch "same" (stride 1 only): the extra pixel goes at the end, like TensorFlow
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in call.ints("padding", rank))


def _weights(call: AtenCall) -> dict:
    weights = {"weight": call.const("weight")}
    bias = call.const("bias", optional=True)
    if bias is not None:
        weights["bias"] = bias
    return weights


def conv_node(call: AtenCall, x: Value, rank: int, *, transposed: bool) -> Value:
    if isinstance(call.args["weight"], Value) and not transposed:
        return _computed_kernel_conv(call, x, rank)
    weights = _weights(call)
    w = weights["weight"]
    kernel = tuple(int(k) for k in w.shape[2:])
    dilation = call.ints("dilation", rank)
    groups = int(call.args.get("groups") or 1)
    attrs = {
        "rank": rank,
        "filters": int(w.shape[1] * groups if transposed else w.shape[0]),
        "kernel_size": kernel,
        "strides": call.ints("stride", rank),
        "dilation": dilation,
        "groups": groups,
        "padding": _padding(call, rank, kernel, dilation),
        "use_bias": "bias" in weights,
        "data_format": "channels_first",
    }
    if transposed:
        attrs["output_padding"] = call.ints("output_padding", rank)
        return call.emit("conv_transpose", [x], attrs, weights)
    return call.emit("conv", [x], attrs, weights)


def _computed_kernel_conv(call: AtenCall, x: Value, rank: int) -> Value:
    """A convolution whose kernel the model computes from its parameters (weight_norm's
    g * v / ||v||): the kernel is the node's second input, in PyTorch's layout, so that
    training reaches the parameters it is computed from; the bias is added after it."""
    kernel = call.args["weight"]
    if any(d is None for d in kernel.shape[1:]):
        raise call.unsupported("a computed kernel whose shape is known only at run time")
    kernel_size = tuple(int(k) for k in kernel.shape[2:])
    dilation = call.ints("dilation", rank)
    groups = int(call.args.get("groups") or 1)
    attrs = {
        "rank": rank,
        "filters": int(call.meta_shapes[0][1]),
        "kernel_size": kernel_size,
        "strides": call.ints("stride", rank),
        "dilation": dilation,
        "groups": groups,
        "padding": _padding(call, rank, kernel_size, dilation),
        "use_bias": False,
        "data_format": "channels_first",
    }
    y = call.emit("conv", [x, kernel], attrs)
    bias = call.args.get("bias")
    if bias is None:
        return y
    if not isinstance(bias, Const):
        raise call.unsupported("a computed bias")
    per_channel = call.reader.constant_value(bias.reshaped((bias.array.shape[0],) + (1,) * rank), y.rank)
    return call.emit("add", [y, per_channel], suffix="_bias")


@register("torch->ir", "aten.conv1d", "aten.conv2d", "aten.conv3d")
def conv_to_ir(call: AtenCall) -> Value:
    return conv_node(call, call.value("input"), RANKS[call.key], transposed=False)


@register("torch->ir", "aten.conv_transpose1d", "aten.conv_transpose2d", "aten.conv_transpose3d")
def conv_transpose_to_ir(call: AtenCall) -> Value:
    return conv_node(call, call.value("input"), RANKS[call.key], transposed=True)


@register("torch->ir", "aten.convolution", "aten._convolution")
def convolution_to_ir(call: AtenCall) -> Value:
    x = call.value("input")
    return conv_node(call, x, x.rank - 2, transposed=bool(call.args["transposed"]))
