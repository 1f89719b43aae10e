"""PyTorch code for max/average pooling and the global pools."""

from __future__ import annotations

import math

from ...graph import Node
from ...graph.errors import GraphError
from ..registry import register
from .codegen import TorchEmitter, call, py_literal
from .conv import _require_channels_first, compact


def _pool_padding(node: Node) -> tuple[int | tuple, bool]:
    """Torch padding and ceil_mode reproducing explicit (begin, end) pads, where the pads
    never count (max, or average excluding padding)."""
    a = node.attrs
    x = node.inputs[0]
    pads = a["padding"]
    if pads == "same":
        raise GraphError(f"{node.name}: 'same' pooling with strides on inputs of unknown size is not supported; pass --input-shape")
    if all(b == e for b, e in pads) and not a["ceil_mode"]:
        return compact(tuple(b for b, _ in pads)), False
    if a["mode"] == "avg" and a["count_include_pad"]:
        raise GraphError(f"{node.name}: asymmetric padding counted in the average is not supported")
    wanted = node.output.shape[2:]
    sizes = x.shape[2:]
    for i, (b, e) in enumerate(pads):
        if 2 * b > a["pool_size"][i]:
            raise GraphError(f"{node.name}: padding {pads} is too large for PyTorch pooling")
    # torch windows start at i * stride - begin, like the source's; ceil_mode adds the last one
    begin = tuple(b for b, _ in pads)
    for ceil_mode in (False, True):
        got = []
        for n, k, s, p in zip(sizes, a["pool_size"], a["strides"], begin):
            o = (math.ceil if ceil_mode else math.floor)((n + 2 * p - k) / s) + 1
            if ceil_mode and (o - 1) * s >= n + p:
                o -= 1
            got.append(o)
        if tuple(got) == tuple(wanted):
            return compact(begin), ceil_mode
    raise GraphError(f"{node.name}: pooling padding {pads} has no PyTorch equivalent")


@register("ir->torch", "pool")
def pool_to_torch(node: Node, em: TorchEmitter) -> None:
    _require_channels_first(node)
    a = node.attrs
    padding, ceil_mode = _pool_padding(node)
    kind = "Max" if a["mode"] == "max" else "Avg"
    kwargs: dict = {"kernel_size": compact(a["pool_size"])}
    if a["strides"] != a["pool_size"]:
        kwargs["stride"] = compact(a["strides"])
    if padding != 0:
        kwargs["padding"] = padding
    if ceil_mode:
        kwargs["ceil_mode"] = True
    if kind == "Avg" and not a["count_include_pad"] and (padding != 0 or ceil_mode):
        kwargs["count_include_pad"] = False
    mod = em.module(node, call(f"nn.{kind}Pool{a['rank']}d", **kwargs))
    em.assign(node, f"{mod}({em.var(node.inputs[0])})")


@register("ir->torch", "global_pool")
def global_pool_to_torch(node: Node, em: TorchEmitter) -> None:
    _require_channels_first(node)
    x = node.inputs[0]
    dims = tuple(range(2, x.rank))
    fn = "mean" if node.attrs["mode"] == "avg" else "amax"
    dim = dims[0] if len(dims) == 1 else dims
    keep = ", keepdim=True" if node.attrs["keepdims"] else ""
    em.assign(node, f"{em.var(x)}.{fn}({py_literal(dim)}{keep})")
