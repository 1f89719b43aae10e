"""Keras normalisation layers: BatchNormalization, LayerNormalization,
GroupNormalization, UnitNormalization."""

from __future__ import annotations

import numpy as np

from ...graph import Value
from ..registry import register
from .calls import LayerCall


def _axes(call: LayerCall, x: Value, default=-1) -> tuple[int, ...]:
    axis = call.get("axis", default)
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return tuple(sorted(int(a) % x.rank for a in axes))


def _affine(call: LayerCall, shape: tuple) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """gamma and beta (present per `scale` / `center`), and how many weights they used."""
    i = 0
    gamma = beta = None
    if call.get("scale", True):
        gamma = call.weight(i, expect=shape)
        i += 1
    if call.get("center", True):
        beta = call.weight(i, expect=shape)
        i += 1
    return gamma, beta, i


@register("keras->ir", "BatchNormalization")
def batch_norm_from_keras(call: LayerCall) -> Value:
    # Keras updates the moving variance with the biased batch variance (ops.moments)
    return _batch_norm(call, biased_running_var=True)


@register("keras->ir", "ktorch>TorchBatchNormalization")
def torch_batch_norm_from_keras(call: LayerCall) -> Value:
    """The BatchNormalization ktorch writes for a PyTorch BatchNorm (keras_writer/normalization.py):
    its moving variance follows the unbiased batch variance, as PyTorch's running_var does."""
    return _batch_norm(call, biased_running_var=False)


def _batch_norm(call: LayerCall, *, biased_running_var: bool) -> Value:
    x = call.x
    axes = _axes(call, x)
    if len(axes) != 1:
        raise call.error(f"batch normalisation over several axes {axes} is not supported")
    if call.get("renorm"):
        raise call.error("batch renormalisation (renorm=True) is not supported")
    c = x.shape[axes[0]]
    gamma, beta, i = _affine(call, (c,))
    call.expect_weights(i + 2)
    mean = call.weight(i, expect=(c,))
    var = call.weight(i + 1, expect=(c,))
    if np.any(var < 0):
        raise call.error("moving_variance has negative entries")
    weights = {
        "weight": gamma if gamma is not None else np.ones((c,), mean.dtype),
        "bias": beta if beta is not None else np.zeros((c,), mean.dtype),
        "running_mean": mean,
        "running_var": var,
    }
    # Keras: moving = m * moving + (1 - m) * batch; PyTorch weighs the new batch
    momentum = round(1.0 - float(call.get("momentum", 0.99)), 12)
    attrs = {
        "axis": axes[0],
        "epsilon": float(call.get("epsilon", 1e-3)),
        "momentum": momentum,
        "biased_running_var": biased_running_var,
    }
    return call.emit("batch_norm", [x], attrs, weights)


@register("keras->ir", "LayerNormalization")
def layer_norm_from_keras(call: LayerCall) -> Value:
    x = call.x
    axes = _axes(call, x)
    shape = tuple(x.shape[a] for a in axes)
    rms = bool(call.get("rms_scaling", False))
    # Keras 3 builds gamma if scale or rms_scaling, beta only if center and not rms_scaling
    has_gamma = bool(call.get("scale", True)) or rms
    has_beta = bool(call.get("center", True)) and not rms
    call.expect_weights(int(has_gamma) + int(has_beta))
    weights = {}
    if has_gamma:
        weights["weight"] = call.weight(0, expect=shape)
    if has_beta:
        weights["bias"] = call.weight(int(has_gamma), expect=shape)
    return call.emit(
        "layer_norm", [x], {"axes": axes, "epsilon": float(call.get("epsilon", 1e-3)), "rms_scaling": rms}, weights
    )


@register("keras->ir", "RMSNormalization")
def rms_norm_from_keras(call: LayerCall) -> Value:
    """Keras 3: x * rsqrt(mean(x^2) + epsilon) * scale over `axis`."""
    x = call.x
    axes = _axes(call, x)
    call.expect_weights(1)
    scale = call.weight(0, expect=tuple(x.shape[a] for a in axes))
    return call.emit("rms_norm", [x], {"axes": axes, "epsilon": float(call.get("epsilon", 1e-6))}, {"weight": scale})


@register("keras->ir", "GroupNormalization")
def group_norm_from_keras(call: LayerCall) -> Value:
    x = call.x
    axis = _axes(call, x)[0]
    c = x.shape[axis]
    groups = int(call.get("groups", 32))
    if groups == -1:
        groups = c
    if c % groups:
        raise call.error(f"{c} channels do not split into {groups} groups")
    gamma, beta, used = _affine(call, (c,))
    call.expect_weights(used)
    weights = {
        "weight": gamma if gamma is not None else np.ones((c,), np.float32),
        "bias": beta if beta is not None else np.zeros((c,), np.float32),
    }
    return call.emit(
        "group_norm", [x], {"groups": groups, "axis": axis, "epsilon": float(call.get("epsilon", 1e-3))}, weights
    )


@register("keras->ir", "UnitNormalization")
def unit_norm_from_keras(call: LayerCall) -> Value:
    x = call.x
    return call.emit("l2_normalize", [x], {"axes": _axes(call, x), "epsilon": 1e-12})
