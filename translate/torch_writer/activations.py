"""PyTorch code for element-wise ops: activations, arithmetic, softmax, PReLU."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ...graph import Node
from ..codegen import Raw, call, py_literal
from ..registry import register

if TYPE_CHECKING:  # the emitter imports this module to apply fused activations
    from .codegen import TorchEmitter

_KERAS_RELU = '''def keras_relu(x: torch.Tensor, negative_slope: float, max_value: float | None, threshold: float) -> torch.Tensor:
    """Keras's general relu: x above threshold (clipped to [0, max_value]), else negative_slope * (x - threshold)."""
    upper = x if max_value is None else x.clamp(min=0.0, max=max_value)
    return torch.where(x > threshold, upper, negative_slope * (x - threshold))
'''


_SPARSE_PLUS = '''def sparse_plus(x: torch.Tensor) -> torch.Tensor:
    """Keras sparse_plus: 0 below -1, (x + 1)^2 / 4 on (-1, 1), x from 1 on."""
    return torch.where(x <= -1, torch.zeros_like(x), torch.where(x < 1, 0.25 * (x + 1) ** 2, x))
'''


_SQUAREPLUS = '''def squareplus(x: torch.Tensor, b: float) -> torch.Tensor:
    """Keras squareplus: (x + sqrt(x^2 + b)) / 2, a smooth relu."""
    return (x + torch.sqrt(x * x + b)) / 2
'''


def _relu(em: TorchEmitter, a: dict[str, Any], x: str, inplace: bool = False) -> str:
    mv, thr, slope = a["max_value"], float(a["threshold"]), float(a["negative_slope"])
    f = em.functional()
    flag = ", inplace=True" if inplace else ""
    if thr == 0.0 and slope == 0.0:
        if mv is None:
            return f"{f}.relu({x}{flag})"
        if float(mv) == 6.0:
            return f"{f}.relu6({x}{flag})"
        return f"torch.clamp({x}, 0.0, {py_literal(float(mv))})"
    if thr == 0.0 and mv is None:
        # in place only for a positive slope: PyTorch's in-place backward cannot invert a negative one
        flag = flag if slope > 0.0 else ""
        return f"{f}.leaky_relu({x}, negative_slope={py_literal(slope)}{flag})"
    name = em.helper("keras_relu", _KERAS_RELU)
    return call(name, Raw(x), negative_slope=slope, max_value=None if mv is None else float(mv), threshold=thr)


def _hard_sigmoid(em: TorchEmitter, a: dict[str, Any], x: str) -> str:
    if abs(a["slope"] - 1.0 / 6.0) < 1e-12 and a["offset"] == 0.5:
        return f"{em.functional()}.hardsigmoid({x})"
    return f"torch.clamp({x} * {py_literal(float(a['slope']))} + {py_literal(float(a['offset']))}, 0.0, 1.0)"


def _scale_shift(em: TorchEmitter, a: dict[str, Any], x: str) -> str:
    expr = x
    if a["scale"] != 1.0:
        expr = f"{expr} * {py_literal(float(a['scale']))}"
    if a["offset"] != 0.0:
        expr = f"{expr} + {py_literal(float(a['offset']))}"
    return expr


def _clip(em: TorchEmitter, a: dict[str, Any], x: str) -> str:
    kwargs = {k: float(a[k]) for k in ("min", "max") if a[k] is not None}
    return call("torch.clamp", Raw(x), **kwargs)


_EXPR: dict[str, Callable[[TorchEmitter, dict[str, Any], str], str]] = {
    "relu": _relu,
    "elu": lambda em, a, x: (
        f"{em.functional()}.elu({x})"
        if a["alpha"] == 1.0
        else f"{em.functional()}.elu({x}, alpha={py_literal(float(a['alpha']))})"
    ),
    "selu": lambda em, a, x: f"{em.functional()}.selu({x})",
    "gelu": lambda em, a, x: (
        f'{em.functional()}.gelu({x}, approximate="tanh")' if a["approximate"] else f"{em.functional()}.gelu({x})"
    ),
    "silu": lambda em, a, x: f"{em.functional()}.silu({x})",
    "hard_silu": lambda em, a, x: f"{em.functional()}.hardswish({x})",
    "hard_sigmoid": _hard_sigmoid,
    "softplus": lambda em, a, x: f"{em.functional()}.softplus({x})",
    "softsign": lambda em, a, x: f"{em.functional()}.softsign({x})",
    "tanh": lambda em, a, x: f"torch.tanh({x})",
    "sigmoid": lambda em, a, x: f"torch.sigmoid({x})",
    "log_sigmoid": lambda em, a, x: f"{em.functional()}.logsigmoid({x})",
    "exp": lambda em, a, x: f"torch.exp({x})",
    "mish": lambda em, a, x: f"{em.functional()}.mish({x})",
    "identity": lambda em, a, x: x,
    "abs": lambda em, a, x: f"torch.abs({x})",
    "neg": lambda em, a, x: f"-{x}",
    "sqrt": lambda em, a, x: f"torch.sqrt({x})",
    "rsqrt": lambda em, a, x: f"torch.rsqrt({x})",
    "log": lambda em, a, x: f"torch.log({x})",
    "square": lambda em, a, x: f"torch.square({x})",
    "erf": lambda em, a, x: f"torch.erf({x})",
    "sin": lambda em, a, x: f"torch.sin({x})",
    "cos": lambda em, a, x: f"torch.cos({x})",
    "clip": _clip,
    "scale_shift": _scale_shift,
    "celu": lambda em, a, x: (
        f"{em.functional()}.celu({x})"
        if a["alpha"] == 1.0
        else f"{em.functional()}.celu({x}, alpha={py_literal(float(a['alpha']))})"
    ),
    "squareplus": lambda em, a, x: f"{em.helper('squareplus', _SQUAREPLUS)}({x}, b={py_literal(float(a['b']))})",
    "soft_shrink": lambda em, a, x: f"{em.functional()}.softshrink({x}, lambd={py_literal(float(a['threshold']))})",
    "hard_shrink": lambda em, a, x: f"{em.functional()}.hardshrink({x}, lambd={py_literal(float(a['threshold']))})",
    "tanh_shrink": lambda em, a, x: f"{em.functional()}.tanhshrink({x})",
    "sparse_plus": lambda em, a, x: f"{em.helper('sparse_plus', _SPARSE_PLUS)}({x})",
}


def activation_expr(em: TorchEmitter, op: str, attrs: dict[str, Any], x: str, *, inplace: bool = False) -> str:
    """The expression of activation `op` applied to `x`; with `inplace`, one that may
    overwrite `x` (the ReLU family only: their backward reads their output, not their input)."""
    if op == "relu":
        return _relu(em, attrs, x, inplace)
    if op == "glu":
        return f"{em.functional()}.glu({x}, dim={attrs['axis'][0]})"
    if op in ("softmax", "log_softmax"):
        axes = attrs["axis"]
        if len(axes) != 1:
            raise ValueError(f"a fused {op} over several axes cannot be one expression")
        return f"torch.{op}({x}, dim={axes[0]})"
    return _EXPR[op](em, attrs, x)


@register("ir->torch", *_EXPR)
def unary_to_torch(node: Node, em: TorchEmitter) -> None:
    x = node.inputs[0]
    em.assign(node, activation_expr(em, node.op, node.attrs, em.var(x), inplace=em.overwritable(x, node)))


@register("ir->torch", "glu")
def glu_to_torch(node: Node, em: TorchEmitter) -> None:
    em.assign(node, activation_expr(em, node.op, node.attrs, em.var(node.inputs[0])))


@register("ir->torch", "softmax", "log_softmax")
def softmax_to_torch(node: Node, em: TorchEmitter) -> None:
    x = em.var(node.inputs[0])
    axes = node.attrs["axis"]
    if len(axes) == 1:
        em.assign(node, activation_expr(em, node.op, node.attrs, x))
        return
    dims = py_literal(tuple(axes))
    lse = f"torch.logsumexp({x}, dim={dims}, keepdim=True)"
    em.assign(node, f"torch.exp({x} - {lse})" if node.op == "softmax" else f"{x} - {lse}")


_INFIX = {"add": "+", "mul": "*", "sub": "-", "div": "/", "pow": "**"}


@register("ir->torch", "add", "mul", "sub", "div", "pow", "maximum", "minimum", "average")
def arithmetic_to_torch(node: Node, em: TorchEmitter) -> None:
    names = [em.var(v) for v in node.inputs]
    if node.op in ("add", "sub") and len(node.inputs) == 2 and node.outputs[0].rank >= 3:
        # `a.add_(b)` into a feature map nothing else reads: torchvision's `out += identity`
        # (small tensors gain nothing and read better as `a + b`)
        out = node.outputs[0]
        a, b = node.inputs
        candidates = [(a, b)] if node.op == "sub" else [(a, b), (b, a)]
        for target, other in candidates:
            if em.overwritable(target, node) and target.shape == out.shape and target.dtype == out.dtype:
                em.assign(node, f"{em.var(target)}.{node.op}_({em.var(other)})")
                return
    if node.op in _INFIX:
        expr = f" {_INFIX[node.op]} ".join(names)
    elif node.op == "average":
        expr = f"({' + '.join(names)}) / {len(names)}"
    else:
        expr = names[0]
        for n in names[1:]:
            expr = f"torch.{node.op}({expr}, {n})"
    em.assign(node, expr)


@register("ir->torch", "prelu")
def prelu_to_torch(node: Node, em: TorchEmitter) -> None:
    x = node.inputs[0]
    alpha = node.weights["alpha"]
    channels = x.shape[1] if x.rank >= 2 else None
    per_channel = alpha.ndim >= 1 and alpha.shape[0] == channels and alpha.size == channels
    if alpha.size == 1 or per_channel:
        mod = em.module(node, call("nn.PReLU", num_parameters=int(alpha.size)), {"weight": alpha.reshape(-1)})
        em.assign(node, f"{mod}({em.var(x)})")
        return
    shape = tuple(int(d) for d in alpha.shape)
    mod = em.module(node, f"nn.Parameter(torch.zeros({py_literal(shape)}))", {"": np.asarray(alpha)})
    v = em.var(x)
    em.assign(node, f"torch.where({v} >= 0, {v}, {mod} * {v})")
