"""Keras activation layers (the `activation=` argument of other layers is calls.activation_nodes)."""

from __future__ import annotations

from ...graph import Value
from ..registry import register
from .calls import LayerCall, activation_nodes


@register("keras->ir", "Activation")
def activation_from_keras(call: LayerCall) -> Value:
    x = call.x
    out = activation_nodes(call, x, call.get("activation"), suffix="")
    return call.emit("identity", [x], suffix="") if out is x else out


@register("keras->ir", "ReLU")
def relu_from_keras(call: LayerCall) -> Value:
    max_value = call.get("max_value")
    return call.emit(
        "relu",
        [call.x],
        {
            "max_value": None if max_value is None else float(max_value),
            "threshold": float(call.get("threshold", 0.0) or 0.0),
            "negative_slope": float(call.get("negative_slope", 0.0) or 0.0),
        },
    )


@register("keras->ir", "ThresholdedReLU")
def thresholded_relu_from_keras(call: LayerCall) -> Value:
    """tf.keras 2: x * (x > theta)."""
    return call.emit("relu", [call.x], {"threshold": float(call.get("theta", 1.0))})


@register("keras->ir", "LeakyReLU")
def leaky_relu_from_keras(call: LayerCall) -> Value:
    # Keras 3 calls it negative_slope, Keras 2 alpha; both default to 0.3
    slope = call.get("negative_slope", call.get("alpha", 0.3))
    return call.emit("relu", [call.x], {"negative_slope": float(slope)})


@register("keras->ir", "ELU")
def elu_from_keras(call: LayerCall) -> Value:
    return call.emit("elu", [call.x], {"alpha": float(call.get("alpha", 1.0))})


@register("keras->ir", "Softmax")
def softmax_from_keras(call: LayerCall) -> Value:
    x = call.x
    axis = call.get("axis", -1)
    axes = tuple(a % x.rank for a in (axis if isinstance(axis, (list, tuple)) else [axis]))
    if call.mask is not None:  # explicit mask= or one Keras passes implicitly (Embedding mask_zero)
        raise call.error("a Softmax with a mask (explicit or from mask_zero/Masking upstream) is not supported yet")
    return call.emit("softmax", [x], {"axis": axes})


@register("keras->ir", "PReLU")
def prelu_from_keras(call: LayerCall) -> Value:
    x = call.x
    shared = [a % x.rank for a in (call.get("shared_axes") or [])]
    expect = tuple(1 if i + 1 in shared else d for i, d in enumerate(x.shape[1:]))
    alpha = call.weight(0, expect=expect)
    return call.emit("prelu", [x], weights={"alpha": alpha})
