"""Keras code for convolutions: Conv1D/2D/3D (grouped), DepthwiseConv1D/2D and the
transposed forms. PyTorch's explicit padding becomes Keras "same" where TensorFlow's rule
gives the same pads, else a ZeroPadding layer before a "valid" convolution."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...graph import Node
from ...graph.errors import GraphError
from ...graph.ops import spatial_axes
from ..registry import register
from .codegen import KerasEmitter, activation_kwarg, py_literal

_CONV = {1: "layers.Conv1D", 2: "layers.Conv2D", 3: "layers.Conv3D"}
_DEPTHWISE = {1: "layers.DepthwiseConv1D", 2: "layers.DepthwiseConv2D"}
_TRANSPOSE = {1: "layers.Conv1DTranspose", 2: "layers.Conv2DTranspose", 3: "layers.Conv3DTranspose"}
_ZERO_PAD = {1: "layers.ZeroPadding1D", 2: "layers.ZeroPadding2D", 3: "layers.ZeroPadding3D"}
CROPPING_LAYERS = {1: "layers.Cropping1D", 2: "layers.Cropping2D", 3: "layers.Cropping3D"}


def compact(values: tuple) -> int | tuple:
    """(3, 3) -> 3, as people write it; (3, 1) stays."""
    return values[0] if len(set(values)) == 1 else tuple(values)


def data_format(node: Node) -> dict[str, Any]:
    """`data_format=` only where it is not Keras's default (channels_last)."""
    fmt = node.attrs["data_format"]
    return {} if fmt == "channels_last" else {"data_format": fmt}


def pad_argument(pads: tuple) -> Any:
    """ZeroPadding/Cropping `padding=`: an int if all equal, else per-axis (begin, end)."""
    flat = [p for pair in pads for p in pair]
    if len(set(flat)) == 1:
        return flat[0]
    if len(pads) == 1:
        return tuple(pads[0])
    if all(b == e for b, e in pads):  # symmetric on each axis: (rows, cols)
        return tuple(b for b, _ in pads)
    return tuple(tuple(p) for p in pads)


def keras_padding(node: Node) -> tuple[tuple | None, str]:
    """(explicit pads to apply first or None, the layer's `padding=`)."""
    a = node.attrs
    pads = a["padding"]
    if pads == "same":
        return None, "same"
    if all(b == 0 and e == 0 for b, e in pads):
        return None, "valid"
    x = node.inputs[0]
    sizes = [x.shape[i] for i in spatial_axes(x.rank, a["data_format"])]
    tf_same = []
    for n, k, s, d in zip(sizes, a["kernel_size"], a["strides"], a["dilation"]):
        k_eff = d * (k - 1) + 1
        if s == 1:
            total = k_eff - 1
        elif n is None:
            break
        else:  # TensorFlow "same" for a known size; the extra pixel at the end
            total = max((math.ceil(n / s) - 1) * s + k_eff - n, 0)
        tf_same.append((total // 2, total - total // 2))
    if tuple(tf_same) == tuple(tuple(p) for p in pads):
        return None, "same"
    return tuple(tuple(p) for p in pads), "valid"


def zero_pad(node: Node, em: KerasEmitter, x: str, pads: tuple) -> str:
    rank = len(pads)
    return em.temp(
        f"{node.name}_pad",
        f"{em.layer(node, _ZERO_PAD[rank], suffix='pad', padding=pad_argument(pads), **data_format(node))}({x})",
    )


def _kernel(w: np.ndarray) -> np.ndarray:
    """(out, in, *k) -> (*k, in, out)."""
    rank = w.ndim - 2
    return w.transpose(*range(2, 2 + rank), 1, 0)


_CONVOLUTION = '''class Convolution(layers.Layer):
    """keras.ops.conv with a kernel computed in the model (PyTorch's weight_norm), passed as the
    second input. A layer because keras.ops.conv on symbolic tensors refuses grouped kernels."""

    def __init__(self, strides=1, padding="valid", data_format="channels_last", dilation_rate=1, **kwargs):
        super().__init__(**kwargs)
        self.strides = strides
        self.padding = padding
        self.data_format = data_format
        self.dilation_rate = dilation_rate

    def call(self, inputs, kernel):
        return keras.ops.conv(inputs, kernel, self.strides, self.padding, self.data_format, self.dilation_rate)

    def get_config(self):
        options = {"strides": self.strides, "padding": self.padding, "data_format": self.data_format}
        return {**super().get_config(), **options, "dilation_rate": self.dilation_rate}
'''


def _computed_kernel_conv(node: Node, em: KerasEmitter) -> None:
    """A convolution whose kernel the model computes (weight_norm's g * v / ||v||): a Convolution
    layer on the kernel, moved from PyTorch's layout (out, in / groups, *k) to Keras's (*k, in / groups, out)."""
    a = node.attrs
    rank = a["rank"]
    x = em.var(node.inputs[0])
    pads, padding = keras_padding(node)
    if pads is not None:
        x = zero_pad(node, em, x, pads)
    kernel = em.temp(
        f"{node.name}_kernel",
        f"keras.ops.transpose({em.var(node.inputs[1])}, {py_literal((*range(2, 2 + rank), 1, 0))})",
    )
    kwargs: dict[str, Any] = {}
    if any(s != 1 for s in a["strides"]):
        kwargs["strides"] = compact(a["strides"])
    if padding != "valid":
        kwargs["padding"] = padding
    kwargs.update(data_format(node))
    if any(d != 1 for d in a["dilation"]):
        kwargs["dilation_rate"] = compact(a["dilation"])
    expr = f"{em.layer(node, em.helper('Convolution', _CONVOLUTION), **kwargs)}({x}, {kernel})"
    act = a.get("activation")
    if act is not None and "name" in act:  # fused by name: a layer's activation=, here applied to the result
        from .activations import activation_expr

        expr = activation_expr(em, node, act["op"], act["attrs"], expr)
    em.assign(node, expr)


@register("ir->keras", "conv")
def conv_to_keras(node: Node, em: KerasEmitter) -> None:
    if len(node.inputs) > 1:
        _computed_kernel_conv(node, em)
        return
    a = node.attrs
    rank = a["rank"]
    w = node.weights["weight"]
    in_ch = int(w.shape[1]) * a["groups"]
    x = em.var(node.inputs[0])
    pads, padding = keras_padding(node)
    if pads is not None:
        x = zero_pad(node, em, x, pads)
    kwargs: dict[str, Any] = {"kernel_size": compact(a["kernel_size"])}
    if any(s != 1 for s in a["strides"]):
        kwargs["strides"] = compact(a["strides"])
    if padding != "valid":
        kwargs["padding"] = padding
    if any(d != 1 for d in a["dilation"]):
        kwargs["dilation_rate"] = compact(a["dilation"])
    depthwise = a["groups"] == in_ch and a["groups"] > 1 and rank in _DEPTHWISE and a["filters"] % in_ch == 0
    if depthwise:
        mult = a["filters"] // in_ch
        if mult != 1:
            kwargs["depth_multiplier"] = mult
        # torch output channel c * mult + m is Keras's (channel c, multiplier m)
        kernel = w.reshape(in_ch, mult, *a["kernel_size"]).transpose(*range(2, 2 + rank), 0, 1)
        cls = _DEPTHWISE[rank]
    else:
        kwargs = {"filters": a["filters"], **kwargs}
        if a["groups"] != 1:
            kwargs["groups"] = a["groups"]
        kernel = _kernel(w)
        cls = _CONV[rank]
    weights = [kernel]
    if a["use_bias"]:
        weights.append(node.weights["bias"])
    else:
        kwargs["use_bias"] = False
    kwargs.update(activation_kwarg(node))
    kwargs.update(data_format(node))
    em.assign(node, f"{em.layer(node, cls, weights, **kwargs)}({x})")


@register("ir->keras", "conv_transpose")
def conv_transpose_to_keras(node: Node, em: KerasEmitter) -> None:
    a = node.attrs
    rank = a["rank"]
    if a["groups"] != 1:
        raise GraphError(f"{node.name}: grouped transposed convolutions have no Keras layer")
    w = node.weights["weight"]  # (in, out, *k)
    # Keras "valid" computes the full transposed convolution ((n - 1) * s + k_eff) plus
    # `output_padding` rows at the end; PyTorch crops `padding` from both ends of it first
    extra, crops = [], []
    for (b, e), op in zip(a["padding"], a["output_padding"]):
        k_op = max(op - e, 0)
        extra.append(k_op)
        crops.append((b, e - op + k_op))
    kwargs: dict[str, Any] = {"filters": a["filters"], "kernel_size": compact(a["kernel_size"])}
    if any(s != 1 for s in a["strides"]):
        kwargs["strides"] = compact(a["strides"])
    kwargs["output_padding"] = compact(tuple(extra))
    if any(d != 1 for d in a["dilation"]):
        kwargs["dilation_rate"] = compact(a["dilation"])
    weights = [w.transpose(*range(2, 2 + rank), 1, 0)]
    if a["use_bias"]:
        weights.append(node.weights["bias"])
    else:
        kwargs["use_bias"] = False
    kwargs.update(activation_kwarg(node))
    kwargs.update(data_format(node))
    expr = f"{em.layer(node, _TRANSPOSE[rank], weights, **kwargs)}({em.var(node.inputs[0])})"
    if any(b or e for b, e in crops):
        y = em.temp(f"{node.name}_full", expr)
        expr = f"{em.layer(node, CROPPING_LAYERS[rank], suffix='crop', cropping=pad_argument(tuple(crops)), **data_format(node))}({y})"
    em.assign(node, expr)
