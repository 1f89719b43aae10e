"""Keras activations: the `activation=` argument of layers, and the activation layers."""

from __future__ import annotations

from typing import Any

from ...graph import Value
from ..registry import register
from .reader import LayerCall

# name -> (op kind, attrs); Keras 3 definitions (keras/src/activations/activations.py)
_SIMPLE: dict[str, tuple[str, dict[str, Any]]] = {
    "relu": ("relu", {}),
    "relu6": ("relu", {"max_value": 6.0}),
    "elu": ("elu", {"alpha": 1.0}),
    "selu": ("selu", {}),
    "gelu": ("gelu", {"approximate": False}),
    "silu": ("silu", {}),
    "swish": ("silu", {}),
    "hard_silu": ("hard_silu", {}),
    "hard_swish": ("hard_silu", {}),
    "softplus": ("softplus", {}),
    "softsign": ("softsign", {}),
    "tanh": ("tanh", {}),
    "sigmoid": ("sigmoid", {}),
    "log_sigmoid": ("log_sigmoid", {}),
    "exponential": ("exp", {}),
    "mish": ("mish", {}),
    "leaky_relu": ("relu", {"negative_slope": 0.2}),
    "hard_tanh": ("clip", {"min": -1.0, "max": 1.0}),
    "celu": ("celu", {"alpha": 1.0}),
    "squareplus": ("squareplus", {"b": 4.0}),
    "soft_shrink": ("soft_shrink", {"threshold": 0.5}),
    "hard_shrink": ("hard_shrink", {"threshold": 0.5}),
    "tanh_shrink": ("tanh_shrink", {}),
    "sparse_plus": ("sparse_plus", {}),
    "sparse_sigmoid": ("hard_sigmoid", {"slope": 0.5, "offset": 0.5}),
}
_LINEAR = ("linear", None, "")
_AXIS_ACTIVATIONS = ("softmax", "log_softmax", "glu")

# Functions registered with keras.saving.register_keras_serializable ("Package>name"): known by
# the name's suffix only where the name fixes the formula (keras-cv-attention-models'
# kecamCommon>hard_swish is x * relu6(x + 3) / 6, hard_sigmoid_torch is clip(x / 6 + 0.5, 0, 1)).
_REGISTERED: dict[str, tuple[str, dict[str, Any]]] = {
    "hard_swish": ("hard_silu", {}),
    "hardswish": ("hard_silu", {}),
    "hard_silu": ("hard_silu", {}),
    "swish": ("silu", {}),
    "silu": ("silu", {}),
    "mish": ("mish", {}),
    "hard_sigmoid_torch": ("hard_sigmoid", {"slope": 1.0 / 6.0, "offset": 0.5}),
    "relu6": ("relu", {"max_value": 6.0}),
}


def _registered(name: str) -> tuple[str, dict[str, Any]] | None:
    if ">" not in name:
        return None
    return _REGISTERED.get(name.rsplit(">", 1)[1].lower())


def known_activation(spec: Any) -> bool:
    """Whether `activation_nodes` can translate the serialized activation `spec`."""
    name = activation_name(spec)
    if name in _LINEAR or name in _AXIS_ACTIVATIONS or name == "hard_sigmoid" or name in _SIMPLE:
        return True
    return _registered(str(name)) is not None


def activation_name(spec: Any) -> str | None:
    """The name of a serialized activation (string, or a Keras 3 function dict)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        cfg = spec.get("config")
        if isinstance(cfg, str):
            return cfg
        if isinstance(cfg, dict) and "name" in cfg:
            return str(cfg["name"])
        return str(spec.get("class_name"))
    return str(spec)


def activation_nodes(call: LayerCall, x: Value, spec: Any, *, suffix: str = "_act") -> Value:
    """Emit the activation named by `spec` on x; linear emits nothing."""
    name = activation_name(spec)
    if name in _LINEAR:
        return x
    if name in _AXIS_ACTIVATIONS:
        return call.emit(name, [x], {"axis": (x.rank - 1,)}, suffix=suffix)
    if name == "hard_sigmoid":
        # Keras 2 (and TF1): clip(0.2 x + 0.5); Keras 3: relu6(x + 3) / 6
        attrs = {"slope": 0.2, "offset": 0.5} if call.keras2 else {"slope": 1.0 / 6.0, "offset": 0.5}
        return call.emit("hard_sigmoid", [x], attrs, suffix=suffix)
    found = _SIMPLE.get(str(name)) or _registered(str(name))
    if found is None:
        raise call.error(f"activation {name!r} is not supported")
    op, attrs = found
    return call.emit(op, [x], dict(attrs), suffix=suffix)


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
