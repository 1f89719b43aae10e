"""PyTorch code for the op kinds that only graphs read from programs carry (the export route
reads Keras through torch.export): constants, einsum, unsqueeze/squeeze, integer division.

A constant of one element is written inline as a number; a larger one is a module attribute,
an `nn.Parameter` when it is a trained variable and an `nn.Buffer` otherwise, named after
the node (the Keras variable it came from).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...graph import Node
from ..registry import lookup, register
from .codegen import TorchEmitter, py_literal


def _register(op: str) -> Callable:
    """Register unless another family already writes this op kind (each op has one writer)."""
    if lookup("ir->torch", op) is not None:
        return lambda fn: fn
    return register("ir->torch", op)


def _number(array: np.ndarray) -> str:
    item = array.reshape(()).item()
    if isinstance(item, bool):
        return "True" if item else "False"
    if isinstance(item, float):
        return repr(float(item)) if np.isfinite(item) else f'float("{item}")'
    return repr(item)


@_register("constant")
def constant_to_torch(node: Node, em: TorchEmitter) -> None:
    value = np.asarray(node.weights["value"])
    out = node.output
    if value.size == 1 and all(d == 1 for d in value.shape) and len(value.shape) <= out.rank:
        em.value_names[id(out)] = _number(value)  # broadcasts like the size-1 tensor
        return
    shape = py_literal(tuple(int(d) for d in value.shape))
    dtype = "" if value.dtype == np.float32 else f", dtype=torch.{value.dtype.name}"
    if node.attrs.get("trainable") and value.dtype.kind == "f":
        expr = f"nn.Parameter(torch.zeros({shape}{dtype}))"
    else:
        expr = f"nn.Buffer(torch.zeros({shape}{dtype}))"
    attr = em.module(node, expr, {"": value})
    if node.attrs.get("per_example") and em.graph.inputs:
        # the same rows for every example of the batch (a class token): expanded to the batch
        batch = f"{em.var(em.graph.inputs[0])}.shape[0]"
        em.assign(node, f"{attr}.expand({batch}{', -1' * (value.ndim - 1)})")
        return
    em.value_names[id(out)] = attr


@_register("einsum")
def einsum_to_torch(node: Node, em: TorchEmitter) -> None:
    operands = ", ".join(em.var(v) for v in node.inputs)
    em.assign(node, f'torch.einsum("{node.attrs["equation"]}", {operands})')


@_register("expand_dims")
def expand_dims_to_torch(node: Node, em: TorchEmitter) -> None:
    axes = node.attrs["axis"]
    expr = em.var(node.inputs[0])
    for axis in sorted(axes) if isinstance(axes, (list, tuple)) else [axes]:
        expr = f"{expr}.unsqueeze({axis})"
    em.assign(node, expr)


@_register("squeeze")
def squeeze_to_torch(node: Node, em: TorchEmitter) -> None:
    axes = node.attrs["axis"]
    axes = tuple(axes) if isinstance(axes, (list, tuple)) else (axes,)
    em.assign(node, f"{em.var(node.inputs[0])}.squeeze({axes[0] if len(axes) == 1 else py_literal(axes)})")


@_register("floor_divide")
def floor_divide_to_torch(node: Node, em: TorchEmitter) -> None:
    a, b = (em.var(v) for v in node.inputs)
    em.assign(node, f"torch.div({a}, {b}, rounding_mode='floor')")


@_register("trunc_divide")
def trunc_divide_to_torch(node: Node, em: TorchEmitter) -> None:
    a, b = (em.var(v) for v in node.inputs)
    em.assign(node, f"torch.div({a}, {b}, rounding_mode='trunc')")
