"""PyTorch code for max/average pooling, the global pools and adaptive pooling."""

from __future__ import annotations

import math

from ...graph import Node
from ...graph.errors import GraphError
from ..registry import register
from .codegen import TorchEmitter, call, py_literal
from .conv import PAD_SAME, compact, require_channels_first


def _torch_pool_count(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """How many windows nn.*Pool*d produces along one axis (torch's own formula)."""
    o = (math.ceil if ceil_mode else math.floor)((n + 2 * p - k) / s) + 1
    if ceil_mode and (o - 1) * s >= n + p:  # the last window must start inside the input
        o -= 1
    return o


def _ceil_mode_is_same(attrs: dict) -> bool:
    """Whether unpadded ceil_mode pooling equals TF's "same" for every input size: true when
    TF never pads before the input and the windows are those starting inside it (a window
    of 1, or of 2 with a stride of at least 2)."""
    return all(k == 1 or (k == 2 and s >= 2) for k, s in zip(attrs["pool_size"], attrs["strides"]))


def _pool_padding(node: Node) -> tuple[int | tuple, bool, tuple[tuple[int, int], ...] | None]:
    """Torch `padding` and `ceil_mode` reproducing explicit (begin, end) pads, where the
    pads never count (max, or average excluding padding), and the (start, stop) slice of
    the torch output per spatial axis when torch's symmetric padding yields extra windows
    (None when the output is used as is)."""
    a = node.attrs
    x = node.inputs[0]
    pads = a["padding"]
    if pads == "same":
        # sizes known only at run time: TF pads nothing before the input when the window
        # is at most 2 wide, and ceil_mode adds the last, partial window, as TF does
        if _ceil_mode_is_same(a):
            return 0, True, None
        raise GraphError(
            f"{node.name}: 'same' average pooling of size {a['pool_size']}, strides {a['strides']} on inputs "
            "of unknown spatial size is not supported; give the Keras model's Input a fixed spatial size"
        )
    if any(2 * b > k for (b, _), k in zip(pads, a["pool_size"])):
        raise GraphError(
            f"{node.name}: padding {pads} is larger than half the pool size {a['pool_size']}; PyTorch cannot pool it"
        )
    if all(b == e for b, e in pads):  # what nn.*Pool*d itself does (ceil_mode as torch defines it)
        return compact(tuple(b for b, _ in pads)), a["ceil_mode"], None
    if a["mode"] == "avg" and a["count_include_pad"]:
        raise GraphError(f"{node.name}: asymmetric padding counted in the average is not supported")
    wanted = node.output.shape[2:]
    axes = list(zip(x.shape[2:], a["pool_size"], a["strides"], pads, wanted))
    # torch windows start at i * stride - padding and ceil_mode adds a last, partial one.
    # Per axis, pad `begin` on both sides if that gives the source's windows; otherwise pad
    # `end` on both sides (TF's "same" with stride 1 pads more at the end) and drop the
    # windows that start in the extra padding at the beginning.
    for ceil_mode in (False, True):
        padding, slices = [], []
        for n, k, s, (b, e), o in axes:
            if _torch_pool_count(n, k, s, b, ceil_mode) == o:
                padding.append(b)
                slices.append((0, o))
                continue
            p = max(b, e)
            skip = (p - b) // s
            if (p - b) % s or 2 * p > k or _torch_pool_count(n, k, s, p, ceil_mode) < skip + o:
                break
            padding.append(p)
            slices.append((skip, skip + o))
        else:
            exact = all(_torch_pool_count(n, k, s, p, ceil_mode) == o for (n, k, s, _, o), p in zip(axes, padding))
            return compact(tuple(padding)), ceil_mode, None if exact else tuple(slices)
    raise GraphError(f"{node.name}: pooling padding {pads} has no PyTorch equivalent")


def _slice_expr(expr: str, slices: tuple[tuple[int, int], ...], sizes: tuple) -> str:
    """`expr[:, :, a:b, ...]` keeping `slices` of the spatial axes (`sizes`: torch's output)."""
    parts = []
    for (start, stop), n in zip(slices, sizes):
        parts.append(f"{start or ''}:{stop if stop != n else ''}" if (start, stop) != (0, n) else ":")
    while parts and parts[-1] == ":":
        parts.pop()
    return f"{expr}[:, :, {', '.join(parts)}]"


@register("ir->torch", "pool")
def pool_to_torch(node: Node, em: TorchEmitter) -> None:
    require_channels_first(node)
    a = node.attrs
    kind = "Max" if a["mode"] == "max" else "Avg"
    x = em.var(node.inputs[0])
    if a["padding"] == "same" and kind == "Max" and not _ceil_mode_is_same(a):
        # sizes known only at run time: pad as TF does, with -inf so that padding never wins
        em.functional()
        helper = em.helper("pad_same", PAD_SAME)
        ones = (1,) * a["rank"]
        x = f'{helper}({x}, {py_literal(a["pool_size"])}, {py_literal(a["strides"])}, {py_literal(ones)}, value=float("-inf"))'
        padding, ceil_mode, slices = 0, False, None
    else:
        padding, ceil_mode, slices = _pool_padding(node)
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
    expr = f"{mod}({x})"
    if slices is not None:
        pads = padding if isinstance(padding, tuple) else (padding,) * a["rank"]
        in_sizes = node.inputs[0].shape[2:]
        sizes = tuple(
            _torch_pool_count(n, k, s, p, ceil_mode) for n, k, s, p in zip(in_sizes, a["pool_size"], a["strides"], pads)
        )
        expr = _slice_expr(expr, slices, sizes)
    em.assign(node, expr)


@register("ir->torch", "global_pool")
def global_pool_to_torch(node: Node, em: TorchEmitter) -> None:
    require_channels_first(node)
    x = node.inputs[0]
    dims = tuple(range(2, x.rank))
    fn = "mean" if node.attrs["mode"] == "avg" else "amax"
    dim = dims[0] if len(dims) == 1 else dims
    keep = ", keepdim=True" if node.attrs["keepdims"] else ""
    em.assign(node, f"{em.var(x)}.{fn}(dim={py_literal(dim)}{keep})")


@register("ir->torch", "adaptive_pool")
def adaptive_pool_to_torch(node: Node, em: TorchEmitter) -> None:
    """nn.AdaptiveAvgPool2d / nn.AdaptiveMaxPool2d (1-D and 3-D alike): PyTorch's own windows."""
    require_channels_first(node)
    out = tuple(node.attrs["output_size"])
    kind = "Avg" if node.attrs["mode"] == "avg" else "Max"
    mod = em.module(node, call(f"nn.Adaptive{kind}Pool{len(out)}d", compact(out)))
    em.assign(node, f"{mod}({em.var(node.inputs[0])})")
