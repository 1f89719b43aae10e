"""Keras code for data movement: Flatten, Reshape, Permute, concatenation, padding,
cropping, reductions and casts."""

from __future__ import annotations

from typing import Any

from ...graph import Node
from ..registry import register
from .codegen import KerasEmitter, py_literal
from .conv import CROPPING_LAYERS, data_format, pad_argument
from .normalization import keras_axis

_ZERO_PAD = {1: "layers.ZeroPadding1D", 2: "layers.ZeroPadding2D", 3: "layers.ZeroPadding3D"}


@register("ir->keras", "flatten")
def flatten_to_keras(node: Node, em: KerasEmitter) -> None:
    em.assign(node, f"{em.layer(node, 'layers.Flatten')}({em.var(node.inputs[0])})")


@register("ir->keras", "reshape")
def reshape_to_keras(node: Node, em: KerasEmitter) -> None:
    target = tuple(int(d) for d in node.attrs["shape"])
    em.assign(node, f"{em.layer(node, 'layers.Reshape', target_shape=target)}({em.var(node.inputs[0])})")


@register("ir->keras", "transpose")
def transpose_to_keras(node: Node, em: KerasEmitter) -> None:
    perm = tuple(node.attrs["perm"])
    x = em.var(node.inputs[0])
    if perm[0] == 0:
        em.assign(node, f"{em.layer(node, 'layers.Permute', dims=perm[1:])}({x})")
    else:
        em.assign(node, f"keras.ops.transpose({x}, axes={py_literal(perm)})")


@register("ir->keras", "concat")
def concat_to_keras(node: Node, em: KerasEmitter) -> None:
    x = node.inputs[0]
    names = ", ".join(em.var(v) for v in node.inputs)
    em.assign(node, f"keras.ops.concatenate([{names}], axis={keras_axis(node.attrs['axis'], x.rank)})")


@register("ir->keras", "pad")
def pad_to_keras(node: Node, em: KerasEmitter) -> None:
    pads = tuple(tuple(p) for p in node.attrs["pads"])
    x = node.inputs[0]
    if float(node.attrs["value"]) == 0.0:
        layer = em.layer(node, _ZERO_PAD[x.rank - 2], padding=pad_argument(pads), **data_format(node))
        em.assign(node, f"{layer}({em.var(x)})")
        return
    width: list[Any] = [(0, 0)] * x.rank
    axes = range(1, x.rank - 1) if node.attrs["data_format"] == "channels_last" else range(2, x.rank)
    for axis, p in zip(axes, pads):
        width[axis] = p
    em.assign(
        node,
        f"keras.ops.pad({em.var(x)}, {py_literal(tuple(width))}, constant_values={py_literal(float(node.attrs['value']))})",
    )


@register("ir->keras", "reflect_pad")
def reflect_pad_to_keras(node: Node, em: KerasEmitter) -> None:
    x = node.inputs[0]
    width: list[Any] = [(0, 0)] * x.rank
    axes = range(1, x.rank - 1) if node.attrs["data_format"] == "channels_last" else range(2, x.rank)
    for axis, p in zip(axes, node.attrs["pads"]):
        width[axis] = tuple(p)
    em.assign(node, f'keras.ops.pad({em.var(x)}, {py_literal(tuple(width))}, mode="reflect")')


@register("ir->keras", "crop")
def crop_to_keras(node: Node, em: KerasEmitter) -> None:
    x = node.inputs[0]
    layer = em.layer(
        node,
        CROPPING_LAYERS[x.rank - 2],
        cropping=pad_argument(tuple(tuple(p) for p in node.attrs["crops"])),
        **data_format(node),
    )
    em.assign(node, f"{layer}({em.var(x)})")


_REDUCE = {
    "mean": "keras.ops.mean",
    "sum": "keras.ops.sum",
    "max": "keras.ops.max",
    "min": "keras.ops.min",
    "prod": "keras.ops.prod",
}


@register("ir->keras", "reduce")
def reduce_to_keras(node: Node, em: KerasEmitter) -> None:
    a = node.attrs
    axes = tuple(a["axes"])
    axis = axes[0] if len(axes) == 1 else axes
    keep = ", keepdims=True" if a["keepdims"] else ""
    em.assign(node, f"{_REDUCE[a['mode']]}({em.var(node.inputs[0])}, axis={py_literal(axis)}{keep})")


@register("ir->keras", "cast")
def cast_to_keras(node: Node, em: KerasEmitter) -> None:
    em.assign(node, f"keras.ops.cast({em.var(node.inputs[0])}, {py_literal(node.attrs['dtype'])})")


_ARG_REDUCE = '''def arg_reduce(x, axis, mode="argmax", keepdims=False):
    """torch.argmax / argmin: among equal elements the first index (TensorFlow leaves ties unspecified)."""
    ones = keras.ops.ones_like(x, dtype="int64")  # positions counted at run time: the axis may have a dynamic length
    positions = keras.ops.cumsum(ones, axis=axis) - 1
    n = keras.ops.sum(ones, axis=axis, keepdims=True)
    best = keras.ops.max(x, axis=axis, keepdims=True) if mode == "argmax" else keras.ops.min(x, axis=axis, keepdims=True)
    return keras.ops.min(keras.ops.where(keras.ops.equal(x, best), positions, n), axis=axis, keepdims=keepdims)
'''


@register("ir->keras", "arg_reduce")
def arg_reduce_to_keras(node: Node, em: KerasEmitter) -> None:
    a = node.attrs
    fn = em.helper("arg_reduce", _ARG_REDUCE)
    keep = ", keepdims=True" if a["keepdims"] else ""
    em.assign(node, f"{fn}({em.var(node.inputs[0])}, {a['axes'][0]}, {py_literal(a['mode'])}{keep})")


@register("ir->keras", "cumsum")
def cumsum_to_keras(node: Node, em: KerasEmitter) -> None:
    em.assign(node, f"keras.ops.cumsum({em.var(node.inputs[0])}, axis={node.attrs['axis']})")
