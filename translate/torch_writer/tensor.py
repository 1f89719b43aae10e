"""PyTorch code for indexing, splitting and stacking (x[:, -1], x.split, torch.stack),
rolling (torch.roll), tiling (Tensor.repeat), reflection padding, axis insertion and removal,
einsum, comparisons, torch.where and constants."""

from __future__ import annotations

import numpy as np

from ...graph import Node
from ..registry import register
from .codegen import TorchEmitter, py_literal
from .conv import require_channels_first, torch_pad


def _index(axis: int, item: str) -> str:
    return ", ".join([":"] * axis + [item])


@register("ir->torch", "select")
def select_to_torch(node: Node, em: TorchEmitter) -> None:
    a = node.attrs
    em.assign(node, f"{em.var(node.inputs[0])}[{_index(a['axis'], str(a['index']))}]")


@register("ir->torch", "slice")
def slice_to_torch(node: Node, em: TorchEmitter) -> None:
    a = node.attrs
    start = "" if a["start"] == 0 else str(a["start"])
    stop = "" if a["stop"] is None else str(a["stop"])
    step = "" if a["step"] == 1 else f":{a['step']}"
    em.assign(node, f"{em.var(node.inputs[0])}[{_index(a['axis'], f'{start}:{stop}{step}')}]")


@register("ir->torch", "split")
def split_to_torch(node: Node, em: TorchEmitter) -> None:
    a = node.attrs
    sizes = tuple(a["sizes"])
    x = em.var(node.inputs[0])
    by = str(sizes[0]) if len(set(sizes)) == 1 else py_literal(list(sizes))
    em.assign(node, f"{x}.split({by}, dim={a['axis']})")


@register("ir->torch", "stack")
def stack_to_torch(node: Node, em: TorchEmitter) -> None:
    names = ", ".join(em.var(v) for v in node.inputs)
    em.assign(node, f"torch.stack([{names}], dim={node.attrs['axis']})")


@register("ir->torch", "reflect_pad")
def reflect_pad_to_torch(node: Node, em: TorchEmitter) -> None:
    require_channels_first(node)
    pads = torch_pad(node.attrs["pads"])
    em.assign(node, f'{em.functional()}.pad({em.var(node.inputs[0])}, {py_literal(pads)}, mode="reflect")')


@register("ir->torch", "roll")
def roll_to_torch(node: Node, em: TorchEmitter) -> None:
    a = node.attrs
    em.assign(node, f"torch.roll({em.var(node.inputs[0])}, shifts={a['shift']}, dims={a['axis']})")


@register("ir->torch", "tile")
def tile_to_torch(node: Node, em: TorchEmitter) -> None:
    reps = ", ".join(str(int(r)) for r in node.attrs["reps"])
    em.assign(node, f"{em.var(node.inputs[0])}.repeat({reps})")


@register("ir->torch", "take")
def take_to_torch(node: Node, em: TorchEmitter) -> None:
    a = node.attrs
    em.assign(node, f"{em.var(node.inputs[0])}[{_index(a['axis'], py_literal(list(a['indices'])))}]")


@register("ir->torch", "expand_dims")
def expand_dims_to_torch(node: Node, em: TorchEmitter) -> None:
    em.assign(node, f"{em.var(node.inputs[0])}.unsqueeze({node.attrs['axis']})")


@register("ir->torch", "squeeze")
def squeeze_to_torch(node: Node, em: TorchEmitter) -> None:
    em.assign(node, f"{em.var(node.inputs[0])}.squeeze({node.attrs['axis']})")


@register("ir->torch", "einsum")
def einsum_to_torch(node: Node, em: TorchEmitter) -> None:
    args = ", ".join(em.var(v) for v in node.inputs)
    em.assign(node, f"torch.einsum({py_literal(node.attrs['equation'])}, {args})")


_COMPARE = {"equal": "==", "not_equal": "!=", "greater": ">", "greater_equal": ">=", "less": "<", "less_equal": "<="}


@register("ir->torch", "compare")
def compare_to_torch(node: Node, em: TorchEmitter) -> None:
    a, b = (em.var(v) for v in node.inputs)
    em.assign(node, f"{a} {_COMPARE[node.attrs['mode']]} {b}")


@register("ir->torch", "gather")
def gather_to_torch(node: Node, em: TorchEmitter) -> None:
    """numpy take_along_axis; torch.take_along_dim broadcasts the index like it (torch.gather does not)."""
    x, index = (em.var(v) for v in node.inputs)
    em.assign(node, f"torch.take_along_dim({x}, {index}, dim={node.attrs['axis']})")


@register("ir->torch", "where")
def where_to_torch(node: Node, em: TorchEmitter) -> None:
    cond, a, b = (em.var(v) for v in node.inputs)
    em.assign(node, f"torch.where({cond}, {a}, {b})")


@register("ir->torch", "table_lookup")
def table_lookup_to_torch(node: Node, em: TorchEmitter) -> None:
    """A learned table read through an integer index at run time: table.flatten()[index]."""
    table = node.weights["table"]
    shape = py_literal(tuple(int(d) for d in table.shape))
    mod = em.module(node, f"nn.Parameter(torch.zeros({shape}))", {"": table})
    em.assign(node, f"{mod}.flatten()[{em.var(node.inputs[0])}]")


@register("ir->torch", "constant")
def constant_to_torch(node: Node, em: TorchEmitter) -> None:
    """A fixed scalar is written as its literal where it is used (`x * 0.5`); a tensor or a
    learned scalar (a gain) becomes a parameter (trainable) or a frozen parameter of the module."""
    value = node.weights["value"]
    out = node.outputs[0]
    if value.ndim == 0 and not node.attrs["trainable"]:
        literal = value.item()
        text = py_literal(bool(literal) if value.dtype == np.bool_ else literal)
        em.value_names[id(out)] = f"({text})" if text.startswith("-") else text
        return
    shape = py_literal(tuple(int(d) for d in value.shape))
    grad = "" if node.attrs["trainable"] else ", requires_grad=False"
    dtype = str(value.dtype)
    zeros = f"torch.zeros({shape})" if dtype == "float32" else f"torch.zeros({shape}, dtype=torch.{dtype})"
    mod = em.module(node, f"nn.Parameter({zeros}{grad})", {"": value})
    if node.attrs["per_example"] and em.graph.inputs:
        # the same rows for every example (a class token): expanded to the batch where it is used
        batch = f"{em.var(em.graph.inputs[0])}.shape[0]"
        em.assign(node, f"{mod}.expand({batch}{', -1' * (value.ndim - 1)})")
        return
    em.value_names[id(out)] = mod


@register("ir->torch", "size_like")
def size_like_to_torch(node: Node, em: TorchEmitter) -> None:
    a = node.attrs
    x, ref = em.var(node.inputs[0]), em.var(node.inputs[1])
    size = f"{ref}.shape[{a['ref_axis']}]"
    if a["mode"] == "broadcast":
        sizes = ", ".join(size if i == a["axis"] else "-1" for i in range(node.inputs[0].rank))
        em.assign(node, f"{x}.expand({sizes})")
    else:
        em.assign(node, f"{x}[{_index(a['axis'], f':{size}')}]")
