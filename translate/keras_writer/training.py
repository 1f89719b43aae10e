"""The Keras layer arguments that carry a node's training facts (graph/training.py):
`trainable=False` and `kernel_regularizer=keras.regularizers.L2(...)` and friends, added by
KerasEmitter.layer to the layer of every node that has them.

A PyTorch parameter with requires_grad=False becomes `trainable=False` on its layer. For a
BatchNorm that also means Keras normalises with the moving statistics while training (the
usual way to freeze a batch norm in PyTorch too: `bn.eval()`, torchvision's FrozenBatchNorm2d).
"""

from __future__ import annotations

import warnings
from typing import Any

from ...graph import Node
from ..codegen import Raw, py_literal

# graph weight -> Keras argument prefix, by Keras layer class
_KERNEL = {"weight": "kernel", "bias": "bias"}
_NORM = {"weight": "gamma", "bias": "beta"}
_PREFIXES: dict[str, dict[str, str]] = {
    "layers.Dense": _KERNEL,
    **{f"layers.Conv{r}D": _KERNEL for r in (1, 2, 3)},
    **{f"layers.Conv{r}DTranspose": _KERNEL for r in (1, 2, 3)},
    "layers.BatchNormalization": _NORM,
    "TorchBatchNormalization": _NORM,
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
