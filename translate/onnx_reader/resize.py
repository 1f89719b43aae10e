"""ONNX Resize (and the old Upsample): integer scale factors become `upsample`
(nearest: each pixel repeated, which every ONNX nearest rounding gives for an integer
factor; linear: half-pixel centres, or align_corners); other sizes become `resize`."""

from __future__ import annotations

import math

from ...graph import Value
from ..registry import register
from .calls import OnnxCall

_HALF_PIXEL = ("half_pixel", "pytorch_half_pixel")


@register("onnx->ir", "Resize")
def resize_to_ir(call: OnnxCall) -> Value:
    x = call.value(0)
    if call.attr("antialias", 0):
        raise call.unsupported("Resize with antialias")
    if call.attr("axes") is not None:
        raise call.unsupported("Resize with the axes attribute")
    mode = call.attr("mode", "nearest")
    coords = call.attr("coordinate_transformation_mode", "half_pixel")
    scales = call.const(2, optional=True) if call.has(2) else None
    sizes = call.const(3, optional=True) if call.has(3) else None
    spatial = x.shape[2:]
    if sizes is not None and sizes.size:
        out = [int(s) for s in sizes]
    elif scales is not None and scales.size:
        if list(scales[:2]) != [1.0, 1.0]:
            raise call.unsupported(f"Resize with scales {list(scales)} on the batch or channel axis")
        if None in spatial:
            raise call.unsupported("Resize of dynamic spatial sizes")
        out = [x.shape[0], x.shape[1]] + [math.floor(n * float(s)) for n, s in zip(spatial, scales[2:])]
    else:
        raise call.unsupported("Resize without constant scales or sizes")
    if out[1] != x.shape[1] or len(out) != x.rank:
        raise call.unsupported(f"Resize of {x.shape} to {out}: only the spatial axes may change")
    target = tuple(out[2:])
    factors = [t / n for t, n in zip(target, spatial)]
    integer = all(f == int(f) and f >= 1 for f in factors)
    linear = {1: "linear", 2: "bilinear", 3: "trilinear"}.get(len(target))
    fmt = "channels_first"
    if mode == "nearest" and integer and (coords in _HALF_PIXEL + ("asymmetric", "tf_half_pixel_for_nn")):
        if coords == "asymmetric" and call.attr("nearest_mode", "round_prefer_floor") not in (
            "floor",
            "round_prefer_floor",
            "round_prefer_ceil",
        ):
            raise call.unsupported(
                f"nearest Resize with nearest_mode {call.attr('nearest_mode')!r} and asymmetric coordinates"
            )
        return call.emit(
            "upsample", [x], {"scale": tuple(int(f) for f in factors), "mode": "nearest", "data_format": fmt}
        )
    if mode == "linear" and coords in _HALF_PIXEL + ("align_corners",) and linear is not None:
        align = coords == "align_corners"
        if integer and not (coords == "pytorch_half_pixel" and 1 in target):
            return call.emit(
                "upsample",
                [x],
                {"scale": tuple(int(f) for f in factors), "mode": linear, "align_corners": align, "data_format": fmt},
            )
        if not align and len(target) == 2:
            return call.emit("resize", [x], {"size": target, "mode": "bilinear", "data_format": fmt})
    raise call.unsupported(
        f"Resize mode {mode!r} with coordinate_transformation_mode {coords!r} to {target} from {tuple(spatial)}"
    )
