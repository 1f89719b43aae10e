"""ONNX pooling: MaxPool and AveragePool (pads, ceil_mode, count_include_pad, auto_pad)
and the global poolings."""

from __future__ import annotations

from ...graph import Value
from ..registry import register
from .calls import OnnxCall
from .conv import explicit_pads


def _pool(call: OnnxCall, mode: str) -> Value:
    x = call.value(0)
    kernel = tuple(int(k) for k in call.attr("kernel_shape"))
    rank = len(kernel)
    strides = call.ints("strides", rank, 1)
    dilation = call.ints("dilations", rank, 1)
    if any(d != 1 for d in dilation):
        raise call.unsupported(f"pooling with dilations {dilation}")
    if mode == "max" and len(call.expected) > 1:
        raise call.unsupported("MaxPool's Indices output")
    if mode == "max" and call.attr("storage_order", 0) != 0:
        raise call.unsupported("MaxPool with storage_order 1")
    padding = explicit_pads(call, x, kernel, strides, dilation)
    count_include_pad = bool(call.attr("count_include_pad", 0))
    attrs = {
        "mode": mode,
        "rank": rank,
        "pool_size": kernel,
        "strides": strides,
        "padding": padding,
        "ceil_mode": bool(call.attr("ceil_mode", 0)),
        "count_include_pad": count_include_pad,
        "data_format": "channels_first",
    }
    return call.emit("pool", [x], attrs)


@register("onnx->ir", "MaxPool")
def max_pool_to_ir(call: OnnxCall) -> Value:
    return _pool(call, "max")


@register("onnx->ir", "AveragePool")
def average_pool_to_ir(call: OnnxCall) -> Value:
    return _pool(call, "avg")


@register("onnx->ir", "GlobalAveragePool", "GlobalMaxPool")
def global_pool_to_ir(call: OnnxCall) -> Value:
    mode = "avg" if call.key == "GlobalAveragePool" else "max"
    return call.emit("global_pool", [call.value(0)], {"mode": mode, "keepdims": True, "data_format": "channels_first"})
