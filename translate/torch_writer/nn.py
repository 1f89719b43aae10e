"""PyTorch code for layers with weights or windows: Linear, Conv, norms, pooling, Embedding."""

from __future__ import annotations

import math

import numpy as np

from ...graph import Node
from ...graph.errors import GraphError
from ..registry import register
from .codegen import Raw, TorchEmitter, call, py_literal


def compact(values: tuple) -> int | tuple:
    """(3, 3) -> 3, as people write it; (3, 1) stays."""
    return values[0] if len(set(values)) == 1 else tuple(values)


def torch_pad(pairs) -> tuple[int, ...]:
    """((b0, e0), (b1, e1), ...) for axes 2.. -> F.pad's last-axis-first order."""
    out: list[int] = []
    for b, e in reversed(pairs):
        out += [int(b), int(e)]
    return tuple(out)


_PAD_SAME = '''def pad_same(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]) -> torch.Tensor:
    """TensorFlow's "same" padding for inputs whose size is only known at run time (extra pixel at the end)."""
    pads: list[int] = []
    for i in range(len(kernel) - 1, -1, -1):
        size = x.shape[2 + i]
        total = max((-(-size // stride[i]) - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)
'''


def _require_channels_first(node: Node) -> None:
    if node.attrs.get("data_format", "channels_first") != "channels_first":
        raise GraphError(f"{node.name}: the PyTorch writer needs channels-first data; the layout pass did not run")


def _padded_input(node: Node, em: TorchEmitter, x: str) -> tuple[str, int | tuple]:
    """The input expression (with explicit padding if torch cannot express it) and the
    `padding=` argument for the layer."""
    pads = node.attrs["padding"]
    if pads == "same":
        a = node.attrs
        em.functional()
        helper = em.helper("pad_same", _PAD_SAME)
        return f"{helper}({x}, {py_literal(a['kernel_size'])}, {py_literal(a['strides'])}, {py_literal(a['dilation'])})", 0
    if all(b == e for b, e in pads):
        return x, compact(tuple(b for b, _ in pads))
    return f"{em.functional()}.pad({x}, {py_literal(torch_pad(pads))})", 0


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
    mod = em.module(node, call("nn.Embedding", a["input_dim"], a["output_dim"], **kwargs), {"weight": node.weights["weight"]})
    em.assign(node, f"{mod}({em.var(node.inputs[0])})")


@register("ir->torch", "conv")
def conv_to_torch(node: Node, em: TorchEmitter) -> None:
    _require_channels_first(node)
    a = node.attrs
    w = node.weights["weight"]
    x, padding = _padded_input(node, em, em.var(node.inputs[0]))
    kwargs: dict = {"kernel_size": compact(a["kernel_size"])}
    if any(s != 1 for s in a["strides"]):
        kwargs["stride"] = compact(a["strides"])
    if padding != 0:
        kwargs["padding"] = padding
    if any(d != 1 for d in a["dilation"]):
        kwargs["dilation"] = compact(a["dilation"])
    if a["groups"] != 1:
        kwargs["groups"] = a["groups"]
    state = {"weight": w}
    if a["use_bias"]:
        state["bias"] = node.weights["bias"]
    else:
        kwargs["bias"] = False
    mod = em.module(node, call(f"nn.Conv{a['rank']}d", int(w.shape[1]) * a["groups"], int(w.shape[0]), **kwargs), state)
    em.assign(node, f"{mod}({x})")


@register("ir->torch", "conv_transpose")
def conv_transpose_to_torch(node: Node, em: TorchEmitter) -> None:
    _require_channels_first(node)
    a = node.attrs
    w = node.weights["weight"]
    crops = a["padding"]
    begin = tuple(b for b, _ in crops)
    # torch crops `padding` from both ends, then adds output_padding at the end
    out_pad = tuple(b - e + x for (b, e), x in zip(crops, a["output_padding"]))
    limit = [max(s, d) for s, d in zip(a["strides"], a["dilation"])]
    trim = tuple(max(-p, 0) if p < 0 or p >= lim else 0 for p, lim in zip(out_pad, limit))
    if any(p >= lim for p, lim in zip(out_pad, limit)):
        raise GraphError(f"{node.name}: output padding {out_pad} is not expressible in PyTorch")
    out_pad = tuple(max(p, 0) for p in out_pad)
    kwargs: dict = {"kernel_size": compact(a["kernel_size"])}
    if any(s != 1 for s in a["strides"]):
        kwargs["stride"] = compact(a["strides"])
    if any(begin):
        kwargs["padding"] = compact(begin)
    if any(out_pad):
        kwargs["output_padding"] = compact(out_pad)
    if any(d != 1 for d in a["dilation"]):
        kwargs["dilation"] = compact(a["dilation"])
    state = {"weight": w}
    if a["use_bias"]:
        state["bias"] = node.weights["bias"]
    else:
        kwargs["bias"] = False
    mod = em.module(node, call(f"nn.ConvTranspose{a['rank']}d", int(w.shape[0]), int(w.shape[1]) * a["groups"], **kwargs), state)
    expr = f"{mod}({em.var(node.inputs[0])})"
    if any(trim):
        expr += "[:, :, " + ", ".join(f":-{t}" if t else ":" for t in trim) + "]"
    em.assign(node, expr)


_BN = {2: "nn.BatchNorm1d", 3: "nn.BatchNorm1d", 4: "nn.BatchNorm2d", 5: "nn.BatchNorm3d"}


@register("ir->torch", "batch_norm")
def batch_norm_to_torch(node: Node, em: TorchEmitter) -> None:
    x = node.inputs[0]
    axis = node.attrs["axis"]
    c = node.weights["running_mean"].shape[0]
    state = {k: node.weights[k] for k in ("weight", "bias", "running_mean", "running_var")}
    state["num_batches_tracked"] = np.array(0, dtype=np.int64)
    mod = em.module(node, call(_BN[x.rank], int(c), eps=float(node.attrs["epsilon"]), momentum=float(node.attrs["momentum"])), state)
    v = em.var(x)
    em.assign(node, f"{mod}({v})" if axis == 1 else f"{mod}({v}.movedim({axis}, 1)).movedim(1, {axis})")


_CHANNEL_LN = '''class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over dim 1 of a channels-first tensor (Keras LayerNormalization on the channel axis)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).square().mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.weight is not None:
            x = x * self.weight.view(shape)
        if self.bias is not None:
            x = x + self.bias.view(shape)
        return x
'''

_KERAS_RMS = '''def keras_rms_scaling(x: torch.Tensor, weight: torch.Tensor | None, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    """Keras LayerNormalization(rms_scaling=True): x * rsqrt(var(x) + eps) * weight (no centring)."""
    x = x * torch.rsqrt(x.var(dim=dims, unbiased=False, keepdim=True) + eps)
    return x if weight is None else x * weight
'''


@register("ir->torch", "layer_norm")
def layer_norm_to_torch(node: Node, em: TorchEmitter) -> None:
    x = node.inputs[0]
    axes = tuple(node.attrs["axes"])
    eps = float(node.attrs["epsilon"])
    shape = tuple(int(x.shape[a]) for a in axes)
    w, b = node.weights.get("weight"), node.weights.get("bias")
    v = em.var(x)
    if node.attrs["rms_scaling"]:
        helper = em.helper("keras_rms_scaling", _KERAS_RMS)
        weight = "None"
        if w is not None:
            full = tuple(x.shape[i] if i in axes else 1 for i in range(1, x.rank))
            weight = em.module(node, f"nn.Parameter(torch.ones({py_literal(full)}))", {"": w.reshape(full)})
        em.assign(node, f"{helper}({v}, {weight}, {py_literal(axes)}, {py_literal(eps)})")
        return
    state = {}
    kwargs: dict = {"eps": eps}
    if w is None and b is None:
        kwargs["elementwise_affine"] = False
    else:
        state["weight"] = w if w is not None else np.ones(shape, np.float32)
        if b is not None:
            state["bias"] = b
        else:
            kwargs["bias"] = False
    trailing = axes == tuple(range(x.rank - len(axes), x.rank))
    if trailing:
        mod = em.module(node, call("nn.LayerNorm", compact(shape) if len(shape) == 1 else shape, **kwargs), state)
        em.assign(node, f"{mod}({v})")
    elif axes == (1,):
        em.helper("ChannelLayerNorm", _CHANNEL_LN)
        mod = em.module(node, call("ChannelLayerNorm", shape[0], **kwargs), state)
        em.assign(node, f"{mod}({v})")
    else:
        raise GraphError(f"{node.name}: layer normalisation over axes {axes} of a rank-{x.rank} tensor is not supported by the PyTorch writer")


@register("ir->torch", "group_norm")
def group_norm_to_torch(node: Node, em: TorchEmitter) -> None:
    x = node.inputs[0]
    axis = node.attrs["axis"]
    c = int(x.shape[axis])
    state = {"weight": node.weights["weight"], "bias": node.weights["bias"]}
    mod = em.module(node, call("nn.GroupNorm", node.attrs["groups"], c, eps=float(node.attrs["epsilon"])), state)
    v = em.var(x)
    em.assign(node, f"{mod}({v})" if axis == 1 else f"{mod}({v}.movedim({axis}, 1)).movedim(1, {axis})")


@register("ir->torch", "l2_normalize")
def l2_normalize_to_torch(node: Node, em: TorchEmitter) -> None:
    axes = node.attrs["axes"]
    dim = axes[0] if len(axes) == 1 else tuple(axes)
    em.assign(node, f"{em.functional()}.normalize({em.var(node.inputs[0])}, dim={py_literal(dim)}, eps={py_literal(float(node.attrs['epsilon']))})")


def _broadcast_buffer(node: Node, em: TorchEmitter, name: str, array: np.ndarray, axes: tuple[int, ...]) -> str:
    x = node.inputs[0]
    shape = tuple(int(x.shape[i]) if i in axes else 1 for i in range(x.rank))
    return em.module(node, f"nn.Buffer(torch.zeros({py_literal(shape)}))", {"": array.reshape(shape)}, suffix=name)


@register("ir->torch", "standardize")
def standardize_to_torch(node: Node, em: TorchEmitter) -> None:
    axes = tuple(node.attrs["axis"])
    mean = _broadcast_buffer(node, em, "mean", node.weights["mean"], axes)
    std = _broadcast_buffer(node, em, "std", node.weights["std"], axes)
    v = em.var(node.inputs[0])
    em.assign(node, f"{mean} + {v} * {std}" if node.attrs["invert"] else f"({v} - {mean}) / {std}")


@register("ir->torch", "channel_affine")
def channel_affine_to_torch(node: Node, em: TorchEmitter) -> None:
    axes = (node.attrs["axis"],)
    expr = em.var(node.inputs[0])
    if "scale" in node.weights:
        expr = f"{expr} * {_broadcast_buffer(node, em, 'scale', node.weights['scale'], axes)}"
    if "offset" in node.weights:
        expr = f"{expr} + {_broadcast_buffer(node, em, 'offset', node.weights['offset'], axes)}"
    em.assign(node, expr)


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
