"""Keras spatial reshaping: ZeroPadding, Cropping, UpSampling (1D/2D/3D) and Resizing."""

from __future__ import annotations

from typing import Any

from ...graph import Value
from ..registry import register
from .reader import LayerCall


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
    return call.emit("crop", [call.x], {"crops": _pairs(call.get("cropping", 1), rank), "data_format": _data_format(call)})


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
    mode = str(call.get("interpolation", "nearest"))
    if mode not in ("nearest", "bilinear"):
        raise call.error(f"interpolation {mode!r} is not supported (nearest and bilinear are)")
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


@register("keras->ir", "Resizing")
def resizing_from_keras(call: LayerCall) -> Value:
    if call.get("crop_to_aspect_ratio") or call.get("pad_to_aspect_ratio"):
        raise call.error("crop_to_aspect_ratio / pad_to_aspect_ratio are not supported yet")
    # fill_mode / fill_value only apply with pad_to_aspect_ratio, refused above: mark them read
    call.get("fill_mode")
    call.get("fill_value")
    mode = str(call.get("interpolation", "bilinear"))
    if mode not in ("nearest", "bilinear"):
        raise call.error(f"interpolation {mode!r} is not supported (nearest and bilinear are)")
    x = call.x
    if x.rank != 4:
        raise call.error(f"expects a batch of images (rank 4), got shape {x.shape}")
    return call.emit(
        "resize",
        [x],
        {
            "size": (int(call.get("height")), int(call.get("width"))),
            "mode": mode,
            "antialias": bool(call.get("antialias", False)),
            "data_format": _data_format(call),
        },
    )
