"""Keras convolutions: Conv1D/2D/3D, their transposes, depthwise and separable forms.

Kernels are rearranged once, here, into the graph's canonical (PyTorch) layout.
Padding is resolved to explicit (begin, end) pairs with TensorFlow's rules: for
"same", the total padding is split with the extra pixel at the end.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...graph import Value
from ...graph.ops import channel_axis, spatial_axes
from ..registry import register
from .calls import LayerCall


def int_tuple(value: Any, rank: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        if len(value) == 1 and rank > 1:
            return tuple(int(value[0]) for _ in range(rank))
        return tuple(int(v) for v in value)
    return (int(value),) * rank


def same_padding(size: int | None, k: int, s: int, d: int) -> tuple[int, int] | None:
    """TensorFlow's SAME padding of one axis; None if it depends on an unknown size."""
    k_eff = (k - 1) * d + 1
    if s == 1:
        total = k_eff - 1
    elif size is None:
        return None
    else:
        total = max((math.ceil(size / s) - 1) * s + k_eff - size, 0)
    return (total // 2, total - total // 2)


def resolve_padding(call: LayerCall, x: Value, kernel, strides, dilation, data_format: str):
    padding = str(call.get("padding", "valid")).lower()
    rank = len(kernel)
    sizes = [x.shape[a] for a in spatial_axes(x.rank, data_format)]
    if padding == "valid":
        return ((0, 0),) * rank
    if padding == "causal":
        if rank != 1:
            raise call.error("causal padding is only defined for 1-D convolutions")
        return (((kernel[0] - 1) * dilation[0], 0),)
    if padding == "same":
        pads = [same_padding(n, k, s, d) for n, k, s, d in zip(sizes, kernel, strides, dilation)]
        return "same" if any(p is None for p in pads) else tuple(pads)
    raise call.error(f"unknown padding {padding!r}")


def _common(call: LayerCall, rank: int) -> dict[str, Any]:
    x = call.x
    if x.rank != rank + 2:
        raise call.error(f"expects a rank-{rank + 2} input, got shape {x.shape}")
    data_format = call.get("data_format") or "channels_last"
    kernel = int_tuple(call.get("kernel_size"), rank)
    strides = int_tuple(call.get("strides", 1), rank)
    dilation = int_tuple(call.get("dilation_rate", 1), rank)
    if any(s > 1 for s in strides) and any(d > 1 for d in dilation):
        raise call.error("strides > 1 together with dilation_rate > 1 is not defined in Keras")
    return {
        "rank": rank,
        "kernel_size": kernel,
        "strides": strides,
        "dilation": dilation,
        "data_format": data_format,
        "padding": resolve_padding(call, x, kernel, strides, dilation, data_format),
    }


def _channels(x: Value, data_format: str) -> int:
    c = x.shape[channel_axis(x.rank, data_format)]
    if c is None:
        raise ValueError("the channel dimension of the input must be known")
    return int(c)


def conv_layer(
    call: LayerCall, rank: int, *, op: str = "conv", attrs: dict[str, Any] | None = None, filter_weights: tuple = ()
) -> Value:
    """A Keras ConvND layer (or a subclass of it) as one `op` node and its activation; the
    subclass's `attrs` are added, and its `filter_weights` (one value per filter, created after
    kernel and bias) are read in that order."""
    common = _common(call, rank)
    x = call.x
    filters = int(call.get("filters"))
    groups = int(call.get("groups", 1) or 1)
    in_ch = _channels(x, common["data_format"])
    use_bias = bool(call.get("use_bias", True))
    call.expect_weights((2 if use_bias else 1) + len(filter_weights))
    kernel = call.weight(0, expect=(*common["kernel_size"], in_ch // groups, filters))
    weight = np.ascontiguousarray(kernel.transpose(rank + 1, rank, *range(rank)))
    weights = {"weight": weight}
    if use_bias:
        weights["bias"] = call.weight(1, expect=(filters,))
    for name in filter_weights:
        weights[name] = call.weight(len(weights), expect=(filters,))
    node_attrs = {**common, "filters": filters, "groups": groups, "use_bias": use_bias, **(attrs or {})}
    y = call.emit(op, [x], node_attrs, weights)
    return call.activate(y, call.get("activation"))


def _depthwise(call: LayerCall, rank: int, kernel: np.ndarray, *, bias: np.ndarray | None, suffix: str = "") -> Value:
    attrs = _common(call, rank)
    x = call.x
    in_ch = _channels(x, attrs["data_format"])
    mult = int(call.get("depth_multiplier", 1))
    if int(call.get("groups", 1) or 1) != 1:  # tf.keras 2 writes the Conv base's groups=1 here
        raise call.error("a depthwise convolution with groups != 1 is not defined")
    expect = (*attrs["kernel_size"], in_ch, mult)
    if tuple(kernel.shape) != expect:
        raise call.error(f"depthwise kernel has shape {kernel.shape}, expected {expect}")
    # output channel c * mult + m, as tf.nn.depthwise_conv2d orders them
    weight = kernel.reshape(*attrs["kernel_size"], in_ch * mult).transpose(rank, *range(rank))[:, None]
    weights = {"weight": np.ascontiguousarray(weight)}
    if bias is not None:
        weights["bias"] = bias
    return call.emit(
        "conv",
        [x],
        {**attrs, "filters": in_ch * mult, "groups": in_ch, "use_bias": bias is not None},
        weights,
        suffix=suffix,
    )


def _depthwise_conv(call: LayerCall, rank: int) -> Value:
    use_bias = bool(call.get("use_bias", True))
    call.expect_weights(2 if use_bias else 1)
    bias = call.weight(1) if use_bias else None
    y = _depthwise(call, rank, call.weight(0), bias=bias)
    return call.activate(y, call.get("activation"))


def _separable_conv(call: LayerCall, rank: int) -> Value:
    use_bias = bool(call.get("use_bias", True))
    call.expect_weights(3 if use_bias else 2)
    y = _depthwise(call, rank, call.weight(0), bias=None, suffix="_depthwise")
    filters = int(call.get("filters"))
    pointwise = call.weight(
        1, expect=(*([1] * rank), y.shape[channel_axis(y.rank, call.get("data_format") or "channels_last")], filters)
    )
    weights = {"weight": np.ascontiguousarray(pointwise.transpose(rank + 1, rank, *range(rank)))}
    if use_bias:
        weights["bias"] = call.weight(2, expect=(filters,))
    y = call.emit(
        "conv",
        [y],
        {
            "rank": rank,
            "filters": filters,
            "kernel_size": (1,) * rank,
            "strides": (1,) * rank,
            "dilation": (1,) * rank,
            "padding": ((0, 0),) * rank,
            "use_bias": use_bias,
            "data_format": call.get("data_format") or "channels_last",
        },
        weights,
        suffix="_pointwise",
    )
    return call.activate(y, call.get("activation"))


def _conv_transpose(call: LayerCall, rank: int) -> Value:
    x = call.x
    data_format = call.get("data_format") or "channels_last"
    kernel_size = int_tuple(call.get("kernel_size"), rank)
    strides = int_tuple(call.get("strides", 1), rank)
    dilation = int_tuple(call.get("dilation_rate", 1), rank)
    padding = str(call.get("padding", "valid")).lower()
    out_pad_cfg = call.get("output_padding")
    out_pad = int_tuple(out_pad_cfg, rank) if out_pad_cfg is not None else None
    filters = int(call.get("filters"))
    if int(call.get("groups", 1) or 1) != 1:  # tf.keras 2 writes groups=1 for transposed convolutions
        raise call.error("grouped transposed convolutions are not supported")
    in_ch = _channels(x, data_format)
    use_bias = bool(call.get("use_bias", True))
    call.expect_weights(2 if use_bias else 1)
    kernel = call.weight(0, expect=(*kernel_size, filters, in_ch))
    weights = {"weight": np.ascontiguousarray(kernel.transpose(rank + 1, rank, *range(rank)))}
    if use_bias:
        weights["bias"] = call.weight(1, expect=(filters,))
    crops, extra = [], []
    for i, axis in enumerate(spatial_axes(x.rank, data_format)):
        n, k, s, d = x.shape[axis], kernel_size[i], strides[i], dilation[i]
        if n is None:
            n = 1  # the crops below do not depend on the input size: any size gives them
        k_eff = (k - 1) * d + 1
        # the output length Keras asks TensorFlow for (keras deconv_output_length)
        if out_pad is None:
            out = n * s + max(k_eff - s, 0) if padding == "valid" else n * s
        else:
            pad = k_eff // 2 if padding == "same" else 0
            out = (n - 1) * s + k_eff - 2 * pad + out_pad[i]
        # TensorFlow's transposed conv is the gradient of a conv from `out` to `n`
        before = max((math.ceil(out / s) - 1) * s + k_eff - out, 0) // 2 if padding == "same" else 0
        full = (n - 1) * s + k_eff
        end = full - out - before
        crops.append((before, max(end, 0)))
        extra.append(max(-end, 0))
    y = call.emit(
        "conv_transpose",
        [x],
        {
            "rank": rank,
            "filters": filters,
            "kernel_size": kernel_size,
            "strides": strides,
            "dilation": dilation,
            "groups": 1,
            "padding": tuple(crops),
            "output_padding": tuple(extra),
            "use_bias": use_bias,
            "data_format": data_format,
        },
        weights,
    )
    return call.activate(y, call.get("activation"))


@register("keras->ir", "Conv1D", "Convolution1D")
def conv1d_from_keras(call: LayerCall) -> Value:
    return conv_layer(call, 1)


@register("keras->ir", "Conv2D", "Convolution2D")
def conv2d_from_keras(call: LayerCall) -> Value:
    return conv_layer(call, 2)


@register("keras->ir", "Conv3D", "Convolution3D")
def conv3d_from_keras(call: LayerCall) -> Value:
    return conv_layer(call, 3)


@register("keras->ir", "DepthwiseConv1D")
def depthwise_conv1d_from_keras(call: LayerCall) -> Value:
    return _depthwise_conv(call, 1)


@register("keras->ir", "DepthwiseConv2D")
def depthwise_conv2d_from_keras(call: LayerCall) -> Value:
    return _depthwise_conv(call, 2)


@register("keras->ir", "SeparableConv1D", "SeparableConvolution1D")
def separable_conv1d_from_keras(call: LayerCall) -> Value:
    return _separable_conv(call, 1)


@register("keras->ir", "SeparableConv2D", "SeparableConvolution2D")
def separable_conv2d_from_keras(call: LayerCall) -> Value:
    return _separable_conv(call, 2)


@register("keras->ir", "Conv1DTranspose", "Convolution1DTranspose")
def conv1d_transpose_from_keras(call: LayerCall) -> Value:
    return _conv_transpose(call, 1)


@register("keras->ir", "Conv2DTranspose", "Convolution2DTranspose")
def conv2d_transpose_from_keras(call: LayerCall) -> Value:
    return _conv_transpose(call, 2)


@register("keras->ir", "Conv3DTranspose", "Convolution3DTranspose")
def conv3d_transpose_from_keras(call: LayerCall) -> Value:
    return _conv_transpose(call, 3)
