"""PyTorch code for Linear and Embedding."""

from __future__ import annotations

from ...graph import Node
from ..registry import register
from .codegen import TorchEmitter, call


@register("ir->torch", "dense")
def dense_to_torch(node: Node, em: TorchEmitter) -> None:
    w = node.weights["weight"]
    state = {"weight": w}
    if node.attrs["use_bias"]:
        state["bias"] = node.weights["bias"]
    kwargs = {} if node.attrs["use_bias"] else {"bias": False}
    mod = em.module(node, call("nn.Linear", int(w.shape[1]), int(w.shape[0]), **kwargs), state)
    em.assign(node, f"{mod}({em.var(node.inputs[0])})")


@register("ir->torch", "embedding")
def embedding_to_torch(node: Node, em: TorchEmitter) -> None:
    a = node.attrs
    kwargs = {"padding_idx": a["padding_idx"]} if a["padding_idx"] is not None else {}
    mod = em.module(
        node, call("nn.Embedding", a["input_dim"], a["output_dim"], **kwargs), {"weight": node.weights["weight"]}
    )
    if a["reverse"]:  # the table read as an output layer (tied weights)
        em.assign(node, f"{em.functional()}.linear({em.var(node.inputs[0])}, {mod}.weight)")
        return
    em.assign(node, f"{mod}({em.var(node.inputs[0])})")
