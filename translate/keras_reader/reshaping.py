"""Keras spatial reshaping: ZeroPadding, Cropping, UpSampling (1D/2D/3D) and Resizing."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...graph import Value
from ...graph.ops import spatial_axes
from ..registry import register
from .calls import LayerCall


def _pairs(value: Any, rank: int) -> tuple[tuple[int, int], ...]:
    """Keras padding/cropping specs: int, (a, b) for 1-D, or per-axis ints or pairs."""
    if isinstance(value, int):
        return ((value, value),) * rank
    value = list(value)
    if rank == 1:
        if len(value) == 2 and all(isinstance(v, int) for v in value):
            return ((int(value[0]), int(value[1])),)
        return ((int(value[0][0]), int(value[0][1])),)
    out = []
    for v in value:
        out.append((int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1])))
    return tuple(out)


def _data_format(call: LayerCall) -> str:
    """The layer's data_format (Keras 3 ZeroPadding1D has one too; Cropping1D and
    UpSampling1D do not and are channels-last)."""
    return call.get("data_format") or "channels_last"


def _pad(call: LayerCall, rank: int) -> Value:
    return call.emit("pad", [call.x], {"pads": _pairs(call.get("padding", 1), rank), "data_format": _data_format(call)})


def _crop(call: LayerCall, rank: int) -> Value:
    return call.emit(
        "crop", [call.x], {"crops": _pairs(call.get("cropping", 1), rank), "data_format": _data_format(call)}
    )


@register("keras->ir", "ZeroPadding1D")
def zero_padding1d_from_keras(call: LayerCall) -> Value:
    return _pad(call, 1)


@register("keras->ir", "ZeroPadding2D")
def zero_padding2d_from_keras(call: LayerCall) -> Value:
    return _pad(call, 2)


@register("keras->ir", "ZeroPadding3D")
def zero_padding3d_from_keras(call: LayerCall) -> Value:
    return _pad(call, 3)


@register("keras->ir", "Cropping1D")
def cropping1d_from_keras(call: LayerCall) -> Value:
    return _crop(call, 1)


@register("keras->ir", "Cropping2D")
def cropping2d_from_keras(call: LayerCall) -> Value:
    return _crop(call, 2)


@register("keras->ir", "Cropping3D")
def cropping3d_from_keras(call: LayerCall) -> Value:
    return _crop(call, 3)


def _upsample(call: LayerCall, rank: int) -> Value:
    size = call.get("size", 2)
    scale = (int(size),) * rank if isinstance(size, int) else tuple(int(s) for s in size)
    mode = _interpolation(call, "nearest")
    return call.emit("upsample", [call.x], {"scale": scale, "mode": mode, "data_format": _data_format(call)})


@register("keras->ir", "UpSampling1D")
def upsampling1d_from_keras(call: LayerCall) -> Value:
    return _upsample(call, 1)


@register("keras->ir", "UpSampling2D")
def upsampling2d_from_keras(call: LayerCall) -> Value:
    return _upsample(call, 2)


@register("keras->ir", "UpSampling3D")
def upsampling3d_from_keras(call: LayerCall) -> Value:
    return _upsample(call, 3)


_INTERPOLATIONS = ("nearest", "bilinear")


def _interpolation(call: LayerCall, default: str) -> str:
    mode = str(call.get("interpolation", default))
    if mode not in _INTERPOLATIONS:
        raise call.error(
            f"interpolation {mode!r} has no exact PyTorch equivalent (TensorFlow's bicubic uses a = -0.5, "
            "PyTorch's -0.75; lanczos and area have no counterpart); ktorch converts 'nearest' and 'bilinear'. "
            "Register your own translator with @ktorch.plugins.keras_layer to accept an approximation"
        )
    return mode


def _f32_div(a: int, b: int) -> int:
    """int32(float32(a) / float32(b)), as Keras computes the aspect-ratio box on TensorFlow."""
    return int(np.float32(a) / np.float32(b))


def _aspect_ratio_box(call: LayerCall, x: Value, size: tuple[int, int], data_format: str, fill_value: float) -> Value:
    """Keras's crop_to_aspect_ratio (a centred crop) or pad_to_aspect_ratio (centred padding
    with fill_value) before the resize, resolved for the input's known size."""
    h, w = (x.shape[a] for a in spatial_axes(x.rank, data_format))
    if h is None or w is None:
        raise call.error(
            "crop_to_aspect_ratio / pad_to_aspect_ratio need a known input size; give the model's Input a fixed spatial size"
        )
    th, tw = size
    want_h, want_w = _f32_div(w * th, tw), _f32_div(h * tw, th)
    if call.get("crop_to_aspect_ratio"):
        ch, cw = max(min(h, want_h), 1), max(min(w, want_w), 1)
        hs, ws = _f32_div(h - ch, 2), _f32_div(w - cw, 2)
        crops = ((hs, h - hs - ch), (ws, w - ws - cw))
        if crops == ((0, 0), (0, 0)):
            return x
        return call.emit("crop", [x], {"crops": crops, "data_format": data_format}, suffix="_crop")
    # TensorFlow pads the same amount before and after, so an odd difference loses a row
    hs, ws = _f32_div(max(h, want_h) - h, 2), _f32_div(max(w, want_w) - w, 2)
    if hs == 0 and ws == 0:
        return x
    return call.emit(
        "pad", [x], {"pads": ((hs, hs), (ws, ws)), "value": fill_value, "data_format": data_format}, suffix="_pad"
    )


@register("keras->ir", "Resizing")
def resizing_from_keras(call: LayerCall) -> Value:
    mode = _interpolation(call, "bilinear")
    x = call.x
    if x.rank != 4:
        raise call.error(f"expects a batch of images (rank 4), got shape {x.shape}")
    data_format = _data_format(call)
    size = (int(call.get("height")), int(call.get("width")))
    if (call.get("fill_mode") or "constant") != "constant":  # Keras itself refuses other modes
        raise call.error(
            f"fill_mode {call.get('fill_mode')!r} is not defined for resizing; Keras allows 'constant' only"
        )
    fill_value = float(call.get("fill_value") or 0.0)  # only used by pad_to_aspect_ratio
    if call.get("crop_to_aspect_ratio") or call.get("pad_to_aspect_ratio"):
        x = _aspect_ratio_box(call, x, size, data_format, fill_value)
    return call.emit(
        "resize",
        [x],
        {"size": size, "mode": mode, "antialias": bool(call.get("antialias", False)), "data_format": data_format},
    )
