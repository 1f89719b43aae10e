"""ATen resizing: F.interpolate's nearest / nearest-exact / (bi/tri)linear / bicubic
kernels with align_corners, and pixel (un)shuffle."""

from __future__ import annotations

from typing import Any

from ...graph import Value
from ..registry import register
from .calls import AtenCall

_MODES = {
    "aten.upsample_nearest1d": "nearest",
    "aten.upsample_nearest2d": "nearest",
    "aten.upsample_nearest3d": "nearest",
    "aten._upsample_nearest_exact1d": "nearest_exact",
    "aten._upsample_nearest_exact2d": "nearest_exact",
    "aten._upsample_nearest_exact3d": "nearest_exact",
    "aten.upsample_linear1d": "linear",
    "aten.upsample_bilinear2d": "linear",
    "aten.upsample_trilinear3d": "linear",
    "aten.upsample_bicubic2d": "cubic",
}


@register("torch->ir", *_MODES)
def interpolate_to_ir(call: AtenCall) -> Value:
    x = call.value("input") if "input" in call.args else call.value("self")
    rank = x.rank - 2
    scales = call.args.get("scale_factors")
    if scales is None:
        named = [call.args.get(k) for k in ("scales_d", "scales_h", "scales_w") if k in call.args]
        scales = named if named and all(s is not None for s in named) else None
    if call.args.get("antialias"):
        raise call.unsupported("antialiased interpolation")
    if None in call.meta_shapes[0][2:]:
        return _dynamic_upsample(call, x, scales)
    size = tuple(int(s) for s in call.meta_shapes[0][2:])
    attrs = {
        "size": size,
        "mode": _MODES[call.key],
        "align_corners": bool(call.args.get("align_corners") or False),
        "scale": tuple(float(s) for s in scales) if scales is not None and len(scales) == rank else None,
        "data_format": "channels_first",
    }
    return call.emit("interpolate", [x], attrs)


def _dynamic_upsample(call: AtenCall, x: Value, scales: Any) -> Value:
    """An image size the export keeps dynamic: integer scale factors are an `upsample` by
    those factors, whatever the size. Nearest (and nearest-exact: with an integer factor f
    both read source pixel floor(o / f)) repeats each pixel; bilinear without align_corners
    samples at (o + 0.5) / f - 0.5, as Keras's UpSampling2D does."""
    mode, rank = _MODES[call.key], x.rank - 2
    integer = scales is not None and len(scales) == rank and all(float(f) == int(f) >= 1 for f in scales)
    align = bool(call.args.get("align_corners") or False)
    if not integer or mode == "cubic" or (mode == "linear" and (align or rank != 2)):
        raise call.unsupported(
            f"{mode} interpolation of a dynamic image size with scale factors {scales} and "
            f"align_corners={align} (a dynamic size takes integer factors, nearest or 2-D bilinear "
            "without align_corners; convert with a fixed size otherwise)"
        )
    attrs = {
        "scale": tuple(int(f) for f in scales),
        "mode": "nearest" if mode in ("nearest", "nearest_exact") else "bilinear",
        "data_format": "channels_first",
    }
    return call.emit("upsample", [x], attrs)


@register("torch->ir", "aten.pixel_shuffle")
def pixel_shuffle_to_ir(call: AtenCall) -> Value:
    return call.emit(
        "pixel_shuffle",
        [call.value("self")],
        {"upscale": int(call.args["upscale_factor"]), "data_format": "channels_first"},
    )


@register("torch->ir", "aten.pixel_unshuffle")
def pixel_unshuffle_to_ir(call: AtenCall) -> Value:
    return call.emit(
        "pixel_unshuffle",
        [call.value("self")],
        {"downscale": int(call.args["downscale_factor"]), "data_format": "channels_first"},
    )
