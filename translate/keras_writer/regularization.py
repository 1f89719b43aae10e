"""Keras code for training-time behaviour: Dropout, SpatialDropout1D/2D/3D, AlphaDropout,
GaussianNoise, GaussianDropout, ActivityRegularization, and the layer arguments that carry a
node's training facts (graph/training.py): `trainable=False`, `kernel_regularizer=` ...

A PyTorch parameter with requires_grad=False becomes `trainable=False` on its layer. For a
BatchNorm that also means Keras normalises with the moving statistics while training (the
usual way to freeze a batch norm in PyTorch too: `bn.eval()`, torchvision's FrozenBatchNorm2d).
"""

from __future__ import annotations

import warnings
from typing import Any

from ...graph import Node
from ..registry import register
from .codegen import KerasEmitter, Raw, py_literal


@register("ir->keras", "dropout")
def dropout_to_keras(node: Node, em: KerasEmitter) -> None:
    """Dropout / AlphaDropout; a decision shared over all spatial axes as SpatialDropout*D
    (channels-last, or channels-first with data_format); any other sharing as noise_shape."""
    x = node.inputs[0]
    rate = float(node.attrs["rate"])
    shared = tuple(node.attrs["shared_axes"])
    kwargs: dict[str, Any] = {}
    if not node.attrs["alpha"] and 3 <= x.rank <= 5 and shared == tuple(range(1, x.rank - 1)):
        cls = f"layers.SpatialDropout{x.rank - 2}D"
    elif not node.attrs["alpha"] and 4 <= x.rank <= 5 and shared == tuple(range(2, x.rank)):
        cls, kwargs = f"layers.SpatialDropout{x.rank - 2}D", {"data_format": "channels_first"}
    else:
        cls = "layers.AlphaDropout" if node.attrs["alpha"] else "layers.Dropout"
        if shared:
            kwargs["noise_shape"] = tuple(1 if i in shared else None for i in range(x.rank))
    em.assign(node, f"{em.layer(node, cls, rate=rate, **kwargs)}({em.var(x)})")


@register("ir->keras", "gaussian_noise")
def gaussian_noise_to_keras(node: Node, em: KerasEmitter) -> None:
    em.assign(
        node, f"{em.layer(node, 'layers.GaussianNoise', stddev=float(node.attrs['stddev']))}({em.var(node.inputs[0])})"
    )


@register("ir->keras", "gaussian_dropout")
def gaussian_dropout_to_keras(node: Node, em: KerasEmitter) -> None:
    em.assign(
        node, f"{em.layer(node, 'layers.GaussianDropout', rate=float(node.attrs['rate']))}({em.var(node.inputs[0])})"
    )


@register("ir->keras", "activity_regularization")
def activity_regularization_to_keras(node: Node, em: KerasEmitter) -> None:
    kwargs = {k: float(node.attrs[k]) for k in ("l1", "l2") if node.attrs[k]}
    em.assign(node, f"{em.layer(node, 'layers.ActivityRegularization', **kwargs)}({em.var(node.inputs[0])})")


# graph weight -> Keras argument prefix, by Keras layer class
_KERNEL = {"weight": "kernel", "bias": "bias"}
_NORM = {"weight": "gamma", "bias": "beta"}
_PREFIXES: dict[str, dict[str, str]] = {
    "layers.Dense": _KERNEL,
    **{f"layers.Conv{r}D": _KERNEL for r in (1, 2, 3)},
    **{f"layers.Conv{r}DTranspose": _KERNEL for r in (1, 2, 3)},
    "layers.BatchNormalization": _NORM,
    "layers.LayerNormalization": _NORM,
    "layers.GroupNormalization": _NORM,
    "layers.Embedding": {"weight": "embeddings"},
}


def regularizer_expr(factors: dict[str, float]) -> str:
    l1, l2 = float(factors.get("l1", 0.0)), float(factors.get("l2", 0.0))
    if l1 and l2:
        return f"keras.regularizers.L1L2(l1={py_literal(l1)}, l2={py_literal(l2)})"
    return f"keras.regularizers.L1({py_literal(l1)})" if l1 else f"keras.regularizers.L2({py_literal(l2)})"


def training_kwargs(node: Node, cls: str) -> dict[str, Any]:
    """`trainable=False` and `<prefix>_regularizer=` arguments for the layer of `node`."""
    kwargs: dict[str, Any] = {}
    if node.training.get("frozen"):
        kwargs["trainable"] = False
    prefixes = _PREFIXES.get(cls, {})
    for weight, factors in node.training.get("regularizers", {}).items():
        prefix = prefixes.get(weight)
        if prefix is None:
            message = f"{node.source or node.name}: no Keras argument for the regularizer of {weight!r} on {cls}"
            warnings.warn(f"training-time option not carried over: {message}", stacklevel=3)
            node.training.setdefault("dropped", []).append(message)
            continue
        kwargs[f"{prefix}_regularizer"] = Raw(regularizer_expr(factors))
    return kwargs
