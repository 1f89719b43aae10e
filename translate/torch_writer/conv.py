"""PyTorch code for convolutions: Conv1d/2d/3d and ConvTranspose, with padding helpers."""

from __future__ import annotations

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


PAD_SAME = '''def pad_same(
    x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...], value: float = 0.0
) -> torch.Tensor:
    """TensorFlow's "same" padding for inputs whose size is only known at run time (extra pixel at the end)."""
    pads: list[int] = []
    for i in range(len(kernel) - 1, -1, -1):
        size = x.shape[2 + i]
        total = max((-(-size // stride[i]) - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)
'''


def require_channels_first(node: Node) -> None:
    if node.attrs.get("data_format", "channels_first") != "channels_first":
        raise GraphError(f"{node.name}: the PyTorch writer needs channels-first data; the layout pass did not run")


def _padded_input(node: Node, em: TorchEmitter, x: str) -> tuple[str, int | tuple]:
    """The input expression (with explicit padding if torch cannot express it) and the
    `padding=` argument for the layer."""
    pads = node.attrs["padding"]
    if pads == "same":
        a = node.attrs
        em.functional()
        helper = em.helper("pad_same", PAD_SAME)
        return (
            f"{helper}({x}, {py_literal(a['kernel_size'])}, {py_literal(a['strides'])}, {py_literal(a['dilation'])})",
            0,
        )
    if all(b == e for b, e in pads):
        return x, compact(tuple(b for b, _ in pads))
    return f"{em.functional()}.pad({x}, {py_literal(torch_pad(pads))})", 0


@register("ir->torch", "conv")
def conv_to_torch(node: Node, em: TorchEmitter) -> None:
    require_channels_first(node)
    a = node.attrs
    x, padding = _padded_input(node, em, em.var(node.inputs[0]))
    if len(node.inputs) > 1:  # a kernel the model computes (weight_norm): the functional form
        options = {"stride": compact(a["strides"]), "padding": padding, "dilation": compact(a["dilation"])}
        kwargs = {k: v for k, v in options.items() if v not in (0, 1)}
        if a["groups"] != 1:
            kwargs["groups"] = a["groups"]
        kernel = Raw(em.var(node.inputs[1]))
        em.assign(node, call(f"{em.functional()}.conv{a['rank']}d", Raw(x), kernel, **kwargs))
        return
    w = node.weights["weight"]
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
    require_channels_first(node)
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
    if a["groups"] != 1:
        kwargs["groups"] = a["groups"]
    if any(d != 1 for d in a["dilation"]):
        kwargs["dilation"] = compact(a["dilation"])
    state = {"weight": w}
    if a["use_bias"]:
        state["bias"] = node.weights["bias"]
    else:
        kwargs["bias"] = False
    mod = em.module(
        node, call(f"nn.ConvTranspose{a['rank']}d", int(w.shape[0]), int(w.shape[1]) * a["groups"], **kwargs), state
    )
    expr = f"{mod}({em.var(node.inputs[0])})"
    if any(trim):
        expr += "[:, :, " + ", ".join(f":-{t}" if t else ":" for t in trim) + "]"
    em.assign(node, expr)
