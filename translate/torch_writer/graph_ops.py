"""PyTorch code for op kinds that graphs read from programs carry (the export route reads
Keras through torch.export) and no other family writes: floor and truncating division."""

from __future__ import annotations

from collections.abc import Callable

from ...graph import Node
from ..registry import lookup, register
from .codegen import TorchEmitter


def _register(op: str) -> Callable:
    """Register unless another family already writes this op kind (each op has one writer)."""
    if lookup("ir->torch", op) is not None:
        return lambda fn: fn
    return register("ir->torch", op)


@_register("floor_divide")
def floor_divide_to_torch(node: Node, em: TorchEmitter) -> None:
    a, b = (em.var(v) for v in node.inputs)
    em.assign(node, f"torch.div({a}, {b}, rounding_mode='floor')")


@_register("trunc_divide")
def trunc_divide_to_torch(node: Node, em: TorchEmitter) -> None:
    a, b = (em.var(v) for v in node.inputs)
    em.assign(node, f"torch.div({a}, {b}, rounding_mode='trunc')")
