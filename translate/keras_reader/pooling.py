"""Keras pooling: Max/AveragePooling 1D/2D/3D and the global pools."""

from __future__ import annotations

from ...graph import Value
from ...graph.ops import spatial_axes
from ..registry import register
from .calls import LayerCall
from .conv import int_tuple, same_padding


def _pool(call: LayerCall, mode: str, rank: int) -> Value:
    x = call.x
    if x.rank != rank + 2:
        raise call.error(f"expects a rank-{rank + 2} input, got shape {x.shape}")
    data_format = call.get("data_format") or "channels_last"
    size = int_tuple(call.get("pool_size", 2), rank)
    strides = int_tuple(call.get("strides") or size, rank)
    padding = str(call.get("padding", "valid")).lower()
    if padding == "valid":
        pads = ((0, 0),) * rank
    else:
        sizes = [x.shape[a] for a in spatial_axes(x.rank, data_format)]
        resolved = [same_padding(n, k, s, 1) for n, k, s in zip(sizes, size, strides)]
        pads = "same" if any(p is None for p in resolved) else tuple(resolved)
    return call.emit(
        "pool",
        [x],
        {
            "mode": mode,
            "rank": rank,
            "pool_size": size,
            "strides": strides,
            "padding": pads,
            "count_include_pad": False,  # Keras averages over the real elements only
            "data_format": data_format,
        },
    )


def _global(call: LayerCall, mode: str) -> Value:
    return call.emit(
        "global_pool",
        [call.x],
        {
            "mode": mode,
            "keepdims": bool(call.get("keepdims", False)),
            "data_format": call.get("data_format") or "channels_last",
        },
    )


@register("keras->ir", "MaxPooling1D", "MaxPool1D")
def max_pool1d_from_keras(call: LayerCall) -> Value:
    return _pool(call, "max", 1)


@register("keras->ir", "MaxPooling2D", "MaxPool2D")
def max_pool2d_from_keras(call: LayerCall) -> Value:
    return _pool(call, "max", 2)


@register("keras->ir", "MaxPooling3D", "MaxPool3D")
def max_pool3d_from_keras(call: LayerCall) -> Value:
    return _pool(call, "max", 3)


@register("keras->ir", "AveragePooling1D", "AvgPool1D")
def avg_pool1d_from_keras(call: LayerCall) -> Value:
    return _pool(call, "avg", 1)


@register("keras->ir", "AveragePooling2D", "AvgPool2D")
def avg_pool2d_from_keras(call: LayerCall) -> Value:
    return _pool(call, "avg", 2)


@register("keras->ir", "AveragePooling3D", "AvgPool3D")
def avg_pool3d_from_keras(call: LayerCall) -> Value:
    return _pool(call, "avg", 3)


@register(
    "keras->ir",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "GlobalAvgPool1D",
    "GlobalAvgPool2D",
    "GlobalAvgPool3D",
)
def global_avg_pool_from_keras(call: LayerCall) -> Value:
    mask = call.mask if call.class_name in ("GlobalAveragePooling1D", "GlobalAvgPool1D") else call.kwargs.get("mask")
    if mask is not None:
        if (call.get("data_format") or "channels_last") != "channels_last":
            raise call.error("masked global average pooling of channels_first steps is not supported yet")
        # Keras averages over the unmasked steps only
        return call.emit("masked_mean", [call.x, mask], {"axis": 1, "keepdims": bool(call.get("keepdims", False))})
    if (
        call.class_name in ("GlobalAveragePooling1D", "GlobalAvgPool1D")
        and (call.get("data_format") or "channels_last") == "channels_last"
    ):
        # a mean over the steps: it follows whatever axis order the sequence is held in,
        # so a (batch, time, features) model needs no transpose for it
        return call.emit(
            "reduce", [call.x], {"mode": "mean", "axes": (1,), "keepdims": bool(call.get("keepdims", False))}
        )
    return _global(call, "avg")


@register(
    "keras->ir",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "GlobalMaxPool1D",
    "GlobalMaxPool2D",
    "GlobalMaxPool3D",
)
def global_max_pool_from_keras(call: LayerCall) -> Value:
    return _global(call, "max")
