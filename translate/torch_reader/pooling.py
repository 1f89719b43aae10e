"""ATen pooling: max/avg pooling (padding, ceil_mode, count_include_pad) and adaptive pooling."""

from __future__ import annotations

from ...graph import Value
from ..registry import register
from .calls import AtenCall


def _rank(call: AtenCall) -> int:
    return call.value("self").rank - 2


def _pool(call: AtenCall, mode: str) -> Value:
    x = call.value("self")
    rank = x.rank - 2
    kernel = call.ints("kernel_size", rank)
    stride = call.ints("stride", rank) if call.args.get("stride") else kernel
    padding = call.ints("padding", rank)
    if mode == "max" and any(d != 1 for d in call.ints("dilation", rank)):
        raise call.unsupported("max pooling with dilation")
    if mode == "avg" and call.args.get("divisor_override") is not None:
        raise call.unsupported("average pooling with divisor_override")
    attrs = {
        "mode": mode,
        "rank": rank,
        "pool_size": kernel,
        "strides": stride,
        "padding": tuple((p, p) for p in padding),
        "ceil_mode": bool(call.args.get("ceil_mode", False)),
        "count_include_pad": bool(call.args.get("count_include_pad", False)) if mode == "avg" else False,
        "data_format": "channels_first",
    }
    return call.emit("pool", [x], attrs)


@register("torch->ir", "aten.max_pool1d", "aten.max_pool2d", "aten.max_pool3d")
def max_pool_to_ir(call: AtenCall) -> Value:
    return _pool(call, "max")


@register("torch->ir", "aten.max_pool1d_with_indices", "aten.max_pool2d_with_indices", "aten.max_pool3d_with_indices")
def max_pool_with_indices_to_ir(call: AtenCall) -> list:
    return [_pool(call, "max"), None]


@register("torch->ir", "aten.avg_pool1d", "aten.avg_pool2d", "aten.avg_pool3d")
def avg_pool_to_ir(call: AtenCall) -> Value:
    return _pool(call, "avg")


def _adaptive(call: AtenCall, mode: str) -> Value:
    x = call.value("self")
    rank = x.rank - 2
    size = tuple(int(s) if s is not None else int(x.shape[2 + i]) for i, s in enumerate(call.ints("output_size", rank)))
    if all(s == 1 for s in size):
        return call.emit("global_pool", [x], {"mode": mode, "keepdims": True, "data_format": "channels_first"})
    return call.emit("adaptive_pool", [x], {"mode": mode, "output_size": size, "data_format": "channels_first"})


@register("torch->ir", "aten.adaptive_avg_pool1d", "aten.adaptive_avg_pool2d", "aten.adaptive_avg_pool3d")
def adaptive_avg_pool_to_ir(call: AtenCall) -> Value:
    return _adaptive(call, "avg")


@register("torch->ir", "aten.adaptive_max_pool1d", "aten.adaptive_max_pool2d", "aten.adaptive_max_pool3d")
def adaptive_max_pool_to_ir(call: AtenCall) -> list:
    return [_adaptive(call, "max"), None]
