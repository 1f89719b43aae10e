"""Keras code for max/average pooling, global pooling and adaptive pooling.

PyTorch pads max pooling with -inf and (by default) counts padded zeros in an average;
ceil_mode adds a last window that may run past the end. Each case becomes the Keras
layer that computes exactly that, with explicit padding in front where needed."""

from __future__ import annotations

import math
from typing import Any

from ...graph import Node
from ...graph.errors import UnsupportedOpError
from ...graph.ops import channel_axis, spatial_axes
from ..registry import register
from .codegen import KerasEmitter, py_literal
from .conv import compact, data_format, zero_pad

_POOL = {
    ("max", 1): "layers.MaxPooling1D",
    ("max", 2): "layers.MaxPooling2D",
    ("max", 3): "layers.MaxPooling3D",
    ("avg", 1): "layers.AveragePooling1D",
    ("avg", 2): "layers.AveragePooling2D",
    ("avg", 3): "layers.AveragePooling3D",
}
_GLOBAL = {
    ("max", 1): "layers.GlobalMaxPooling1D",
    ("max", 2): "layers.GlobalMaxPooling2D",
    ("max", 3): "layers.GlobalMaxPooling3D",
    ("avg", 1): "layers.GlobalAveragePooling1D",
    ("avg", 2): "layers.GlobalAveragePooling2D",
    ("avg", 3): "layers.GlobalAveragePooling3D",
}


def _unsupported(node: Node, reason: str) -> UnsupportedOpError:
    return UnsupportedOpError(
        [(node.source or node.name, node.source_class or node.op, reason)], where="the Keras writer"
    )


def _effective_pads(node: Node) -> list[tuple[int, int]]:
    """(begin, end) per spatial axis such that a "valid" pooling gives the node's output size."""
    a = node.attrs
    x, y = node.inputs[0], node.output
    fmt = a["data_format"]
    pads = []
    for i, (ax_in, ax_out) in enumerate(zip(spatial_axes(x.rank, fmt), spatial_axes(y.rank, fmt))):
        n, out = x.shape[ax_in], y.shape[ax_out]
        b = a["padding"][i][0]
        k, s = a["pool_size"][i], a["strides"][i]
        if n is None or out is None:  # a dynamic size: floor mode pools exactly over the declared padding
            if a["ceil_mode"]:
                raise _unsupported(node, "ceil_mode pooling over a dynamic size (its last window depends on the size)")
            pads.append(tuple(a["padding"][i]))
            continue
        pads.append((b, max((out - 1) * s + k - n - b, 0)))
    return pads


def _tf_same(node: Node) -> list[tuple[int, int]] | None:
    """TensorFlow's SAME pads for this pooling, if they give the node's output size (with a
    dynamic size: only for stride 1, where they do not depend on the size)."""
    a = node.attrs
    x, y = node.inputs[0], node.output
    fmt = a["data_format"]
    out = []
    for i, (ax_in, ax_out) in enumerate(zip(spatial_axes(x.rank, fmt), spatial_axes(y.rank, fmt))):
        n, k, s = x.shape[ax_in], a["pool_size"][i], a["strides"][i]
        if n is None and s == 1:  # a dynamic size: with stride 1, SAME pads k - 1 whatever the size
            total = k - 1
        elif n is None or math.ceil(n / s) != y.shape[ax_out]:
            return None
        else:
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        out.append((total // 2, total - total // 2))
    return out


def _ceil_is_same(node: Node) -> bool:
    """ceil_mode windows as wide as their stride (1 or 2), no padding, over a dynamic size
    (ResNet-D's AvgPool2d(2, 2, ceil_mode=True) shortcut): PyTorch's last window takes the one
    cell left on an odd side and divides by the cells it covers, as TensorFlow's SAME does
    (its one cell of padding at the end, never counted)."""
    a = node.attrs
    x = node.inputs[0]
    return (
        a["ceil_mode"]
        and None in [x.shape[i] for i in spatial_axes(x.rank, a["data_format"])]
        and all(b == 0 and e == 0 for b, e in a["padding"])
        and all(k == s <= 2 for k, s in zip(a["pool_size"], a["strides"]))
    )


@register("ir->keras", "pool")
def pool_to_keras(node: Node, em: KerasEmitter) -> None:
    a = node.attrs
    x = em.var(node.inputs[0])
    rank = a["rank"]
    if a["padding"] == "same" or _ceil_is_same(node):
        padding, pads = "same", None
    else:
        pads = _effective_pads(node)
        padding = "valid"
        if not any(b or e for b, e in pads):
            pads = None
        elif a["mode"] == "avg":
            declared = [tuple(p) for p in a["padding"]]
            overflow = any(e > de for (_, e), (_, de) in zip(pads, declared))
            if not a["count_include_pad"] or not any(b or e for b, e in declared):
                # PyTorch divides by the cells inside the input: TensorFlow's "same" average does too
                if _tf_same(node) != pads:
                    raise _unsupported(
                        node, f"average pooling over padding {pads} that excludes the padding from the count"
                    )
                padding, pads = "same", None
            elif overflow:
                raise _unsupported(
                    node, "ceil_mode average pooling that counts the padding and whose last window runs past it"
                )
    if pads is not None:
        if a["mode"] == "max":
            # PyTorch pads max pooling with -inf: padding never wins
            rank_all = node.inputs[0].rank
            width = [(0, 0)] * rank_all
            for axis, p in zip(spatial_axes(rank_all, a["data_format"]), pads):
                width[axis] = p
            x = em.temp(
                f"{node.name}_pad", f'keras.ops.pad({x}, {py_literal(tuple(width))}, constant_values=float("-inf"))'
            )
        else:
            x = zero_pad(node, em, x, tuple(pads))
    kwargs: dict[str, Any] = {"pool_size": compact(a["pool_size"])}
    if a["strides"] != a["pool_size"]:
        kwargs["strides"] = compact(a["strides"])
    if padding != "valid":
        kwargs["padding"] = padding
    kwargs.update(data_format(node))
    em.assign(node, f"{em.layer(node, _POOL[(a['mode'], rank)], **kwargs)}({x})")


@register("ir->keras", "global_pool")
def global_pool_to_keras(node: Node, em: KerasEmitter) -> None:
    x = node.inputs[0]
    kwargs: dict[str, Any] = {}
    if node.attrs["keepdims"]:
        kwargs["keepdims"] = True
    kwargs.update(data_format(node))
    em.assign(node, f"{em.layer(node, _GLOBAL[(node.attrs['mode'], x.rank - 2)], **kwargs)}({em.var(x)})")


_ADAPTIVE = '''class AdaptivePooling(layers.Layer):
    """PyTorch adaptive pooling: output cell i covers input [floor(i * n / o), ceil((i + 1) * n / o))."""

    def __init__(self, output_size, mode="avg", data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.output_size = tuple(output_size)
        self.mode = mode
        self.data_format = data_format

    def call(self, x):
        rank = len(self.output_size)
        axes = range(1, rank + 1) if self.data_format == "channels_last" else range(2, rank + 2)
        reduce = keras.ops.mean if self.mode == "avg" else keras.ops.max
        for axis, out in zip(axes, self.output_size):
            n = x.shape[axis]
            cells = []
            for i in range(out):
                start, stop = (i * n) // out, -((-(i + 1) * n) // out)
                window = keras.ops.take(x, list(range(start, stop)), axis=axis)
                cells.append(reduce(window, axis=axis, keepdims=True))
            x = keras.ops.concatenate(cells, axis=axis)
        return x

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size, "mode": self.mode, "data_format": self.data_format}
'''


@register("ir->keras", "adaptive_pool")
def adaptive_pool_to_keras(node: Node, em: KerasEmitter) -> None:
    a = node.attrs
    x = node.inputs[0]
    sizes = [x.shape[i] for i in spatial_axes(x.rank, a["data_format"])]
    out = a["output_size"]
    if all(n % o == 0 for n, o in zip(sizes, out)):
        # equal windows: a plain pooling layer with stride = window = n / o
        window = tuple(n // o for n, o in zip(sizes, out))
        layer = em.layer(node, _POOL[(a["mode"], len(out))], pool_size=compact(window), **data_format(node))
    else:
        cls = em.helper("AdaptivePooling", _ADAPTIVE)
        kwargs: dict[str, Any] = {"output_size": tuple(out), "mode": a["mode"]}
        kwargs.update(data_format(node))
        layer = em.layer(node, cls, **kwargs)
    em.assign(node, f"{layer}({em.var(x)})")


__all__ = ["channel_axis"]
