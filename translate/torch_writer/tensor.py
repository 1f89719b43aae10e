"""PyTorch code for indexing, splitting and stacking (x[:, -1], x.split, torch.stack),
rolling (torch.roll), tiling (Tensor.repeat) and reflection padding."""

from __future__ import annotations

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
