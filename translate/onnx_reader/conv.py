"""ONNX Conv and ConvTranspose (1-D/2-D/3-D, groups, explicit or auto padding). ONNX
weights are already in PyTorch's layout, the graph's canonical form."""

from __future__ import annotations

import math

from ...graph import Value
from ..registry import register
from .calls import OnnxCall


def explicit_pads(call: OnnxCall, x: Value, kernel: tuple, strides: tuple, dilation: tuple) -> tuple | str:
    """((begin, end), ...) per spatial axis from `pads` or `auto_pad`; 'same' when
    SAME_UPPER meets a dynamic size (TensorFlow's rule, the extra pixel at the end)."""
    rank = len(kernel)
    auto = call.attr("auto_pad", "NOTSET")
    if auto == "VALID":
        return ((0, 0),) * rank
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        sizes = x.shape[2:]
        if any(n is None for n in sizes):
            if auto == "SAME_LOWER":
                raise call.unsupported("auto_pad SAME_LOWER on an input with dynamic spatial sizes")
            return "same"
        pads = []
        for n, k, s, d in zip(sizes, kernel, strides, dilation):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return tuple(pads)
    p = call.ints("pads", 2 * rank, 0)
    return tuple((p[i], p[i + rank]) for i in range(rank))


def _conv(call: OnnxCall, *, transposed: bool) -> Value:
    x = call.value(0)
    w = call.const(1)
    b = call.const(2, optional=True)
    rank = w.ndim - 2
    kernel = tuple(int(k) for k in w.shape[2:])
    if call.attr("kernel_shape") is not None and tuple(call.attr("kernel_shape")) != kernel:
        raise call.error(f"kernel_shape {call.attr('kernel_shape')} does not match the weight's {kernel}")
    strides = call.ints("strides", rank, 1)
    dilation = call.ints("dilations", rank, 1)
    groups = int(call.attr("group", 1))
    weights = {"weight": w} if b is None else {"weight": w, "bias": b}
    attrs = {
        "rank": rank,
        "filters": int(w.shape[1] * groups if transposed else w.shape[0]),
        "kernel_size": kernel,
        "strides": strides,
        "dilation": dilation,
        "groups": groups,
        "use_bias": b is not None,
        "data_format": "channels_first",
    }
    if not transposed:
        attrs["padding"] = explicit_pads(call, x, kernel, strides, dilation)
        return call.emit("conv", [x], attrs, weights)
    if call.attr("output_shape") is not None:
        raise call.unsupported("ConvTranspose with output_shape (export with explicit pads and output_padding)")
    if call.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise call.unsupported(f"ConvTranspose with auto_pad {call.attr('auto_pad')}")
    p = call.ints("pads", 2 * rank, 0)
    attrs["padding"] = tuple((p[i], p[i + rank]) for i in range(rank))
    attrs["output_padding"] = call.ints("output_padding", rank, 0)
    return call.emit("conv_transpose", [x], attrs, weights)


@register("onnx->ir", "Conv")
def conv_to_ir(call: OnnxCall) -> Value:
    return _conv(call, transposed=False)


@register("onnx->ir", "ConvTranspose")
def conv_transpose_to_ir(call: OnnxCall) -> Value:
    return _conv(call, transposed=True)
