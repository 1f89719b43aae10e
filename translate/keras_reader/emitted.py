"""The custom layers of the Keras models ktorch writes from PyTorch (translate/keras_writer), read
back for a PyTorch -> Keras -> PyTorch round trip. model.py registers them with Keras under the
"ktorch" package, so a saved model names them "ktorch>Parameter", "ktorch>AdaptivePooling"...;
each is the IR op the Keras writer wrote it for."""

from __future__ import annotations

from ...graph import Value
from ..registry import register
from .calls import LayerCall


def _data_format(call: LayerCall) -> str:
    return call.get("data_format", "channels_last") or "channels_last"


@register("keras->ir", "ktorch>Parameter")
def parameter_from_keras(call: LayerCall) -> Value:
    """A learned tensor (a PyTorch nn.Parameter or buffer used directly) that ignores its input;
    with per_example, its size-1 axis 0 is repeated for every example of the batch."""
    shape = tuple(int(d) for d in call.get("shape"))
    call.expect_weights(1)
    value = call.weight(0, expect=shape)
    attrs = {"trainable": bool(call.get("value_trainable", True)), "per_example": bool(call.get("per_example", False))}
    return call.emit("constant", [], attrs, {"value": value})


@register("keras->ir", "ktorch>AdaptivePooling")
def adaptive_pooling_from_keras(call: LayerCall) -> Value:
    output_size = tuple(int(d) for d in call.get("output_size"))
    attrs = {"mode": call.get("mode", "avg"), "output_size": output_size, "data_format": _data_format(call)}
    return call.emit("adaptive_pool", [call.x], attrs)


@register("keras->ir", "ktorch>PixelShuffle")
def pixel_shuffle_from_keras(call: LayerCall) -> Value:
    return call.emit("pixel_shuffle", [call.x], {"upscale": int(call.get("upscale")), "data_format": "channels_last"})


@register("keras->ir", "ktorch>PixelUnshuffle")
def pixel_unshuffle_from_keras(call: LayerCall) -> Value:
    attrs = {"downscale": int(call.get("downscale")), "data_format": "channels_last"}
    return call.emit("pixel_unshuffle", [call.x], attrs)


@register("keras->ir", "ktorch>Interpolate")
def interpolate_from_keras(call: LayerCall) -> Value:
    scale = call.get("scale", None)
    attrs = {
        "size": tuple(int(d) for d in call.get("size")),
        "mode": call.get("mode", "linear"),
        "align_corners": bool(call.get("align_corners", False)),
        "scale": None if scale is None else tuple(float(s) for s in scale),
        "data_format": _data_format(call),
    }
    return call.emit("interpolate", [call.x], attrs)
