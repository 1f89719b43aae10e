"""Keras code for element-wise ops: activations (as Keras layers where one exists),
arithmetic written with operators, and softmax."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...graph import Node
from ...graph.errors import GraphError
from ..codegen import py_literal
from ..registry import register

if TYPE_CHECKING:  # the emitter imports this module to apply fused activations
    from .codegen import KerasEmitter

# op kind -> keras.activations name (an Activation layer)
_ACTIVATIONS = {
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "silu": "silu",
    "hard_silu": "hard_silu",
    "softplus": "softplus",
    "softsign": "softsign",
    "selu": "selu",
    "mish": "mish",
    "exp": "exponential",
}
# op kind -> keras.ops expression template
_OPS = {
    "abs": "keras.ops.abs({x})",
    "neg": "-{x}",
    "sqrt": "keras.ops.sqrt({x})",
    "rsqrt": "keras.ops.rsqrt({x})",
    "log": "keras.ops.log({x})",
    "square": "keras.ops.square({x})",
    "erf": "keras.ops.erf({x})",
    "sin": "keras.ops.sin({x})",
    "cos": "keras.ops.cos({x})",
    "log_sigmoid": "keras.ops.log_sigmoid({x})",
}


def activation_expr(em: KerasEmitter, node: Node, op: str, a: dict[str, Any], x: str) -> str:
    """The expression applying activation `op` (with attributes `a`) to `x`."""
    if op == "relu":
        mv, thr, slope = a.get("max_value"), float(a.get("threshold", 0.0)), float(a.get("negative_slope", 0.0))
        if mv is None and thr == 0.0 and slope != 0.0:
            return f"{em.layer(node, 'layers.LeakyReLU', negative_slope=slope)}({x})"
        kwargs: dict[str, Any] = {}
        if mv is not None:
            kwargs["max_value"] = float(mv)
        if slope:
            kwargs["negative_slope"] = slope
        if thr:
            kwargs["threshold"] = thr
        return f"{em.layer(node, 'layers.ReLU', **kwargs)}({x})"
    if op == "elu":
        return f"{em.layer(node, 'layers.ELU', alpha=float(a['alpha']))}({x})"
    if op == "gelu":
        if a.get("approximate"):
            return f"keras.ops.gelu({x}, approximate=True)"
        return f"{em.layer(node, 'layers.Activation', activation='gelu')}({x})"
    if op == "hard_sigmoid":
        if abs(a["slope"] - 1.0 / 6.0) < 1e-12 and a["offset"] == 0.5:
            return f"{em.layer(node, 'layers.Activation', activation='hard_sigmoid')}({x})"
        return f"keras.ops.clip({x} * {py_literal(float(a['slope']))} + {py_literal(float(a['offset']))}, 0.0, 1.0)"
    if op in _ACTIVATIONS:
        return f"{em.layer(node, 'layers.Activation', activation=_ACTIVATIONS[op])}({x})"
    if op in _OPS:
        return _OPS[op].format(x=x)
    if op == "clip":
        lo = "None" if a["min"] is None else py_literal(float(a["min"]))
        hi = "None" if a["max"] is None else py_literal(float(a["max"]))
        if a["max"] is None:
            return f"keras.ops.maximum({x}, {lo})"
        if a["min"] is None:
            return f"keras.ops.minimum({x}, {hi})"
        return f"keras.ops.clip({x}, {lo}, {hi})"
    if op == "scale_shift":
        expr = x
        if a["scale"] != 1.0:
            expr = f"{expr} * {py_literal(float(a['scale']))}"
        if a["offset"] != 0.0:
            expr = f"{expr} + {py_literal(float(a['offset']))}"
        return expr
    if op == "identity":
        return f"{em.layer(node, 'layers.Identity')}({x})"
    raise GraphError(f"{node.name}: no Keras activation for {op!r}")


_ELEMENTWISE = ("relu", "elu", "gelu", "hard_sigmoid", "clip", "scale_shift", "identity", *_ACTIVATIONS, *_OPS)


@register("ir->keras", *_ELEMENTWISE)
def activation_to_keras(node: Node, em: KerasEmitter) -> None:
    em.assign(node, activation_expr(em, node, node.op, node.attrs, em.var(node.inputs[0])))


@register("ir->keras", "softmax", "log_softmax")
def softmax_to_keras(node: Node, em: KerasEmitter) -> None:
    x = node.inputs[0]
    axes = tuple(node.attrs["axis"])
    axis: Any = -1 if axes == (x.rank - 1,) else (axes[0] if len(axes) == 1 else axes)
    if node.op == "softmax":
        em.assign(node, f"{em.layer(node, 'layers.Softmax', axis=axis)}({em.var(x)})")
    else:
        em.assign(node, f"keras.ops.log_softmax({em.var(x)}, axis={py_literal(axis)})")


@register("ir->keras", "prelu")
def prelu_to_keras(node: Node, em: KerasEmitter) -> None:
    alpha = node.weights["alpha"]
    shared = [i + 1 for i, d in enumerate(alpha.shape) if d == 1 and node.inputs[0].shape[i + 1] != 1]
    kwargs = {"shared_axes": shared} if shared else {}
    em.assign(node, f"{em.layer(node, 'layers.PReLU', [alpha], **kwargs)}({em.var(node.inputs[0])})")


_INFIX = {"add": " + ", "mul": " * ", "sub": " - ", "div": " / "}
_FUNCS = {
    "maximum": "keras.ops.maximum",
    "minimum": "keras.ops.minimum",
    "pow": "keras.ops.power",
    "floor_divide": "keras.ops.floor_divide",
}


@register(
    "ir->keras", "add", "mul", "sub", "div", "maximum", "minimum", "pow", "floor_divide", "trunc_divide", "average"
)
def arithmetic_to_keras(node: Node, em: KerasEmitter) -> None:
    names = [em.var(v) for v in node.inputs]
    if node.op in _INFIX:
        em.assign(node, _INFIX[node.op].join(names))
    elif node.op == "average":
        em.assign(node, f"({' + '.join(names)}) / {len(names)}")
    elif node.op == "trunc_divide":
        em.assign(node, f"keras.ops.trunc({names[0]} / {names[1]})")
    else:
        expr = names[0]
        for other in names[1:]:
            expr = f"{_FUNCS[node.op]}({expr}, {other})"
        em.assign(node, expr)


@register("ir->keras", "compare")
def compare_to_keras(node: Node, em: KerasEmitter) -> None:
    a, b = (em.var(v) for v in node.inputs)
    em.assign(node, f"keras.ops.{node.attrs['mode']}({a}, {b})")


@register("ir->keras", "where")
def where_to_keras(node: Node, em: KerasEmitter) -> None:
    cond, a, b = (em.var(v) for v in node.inputs)
    em.assign(node, f"keras.ops.where({cond}, {a}, {b})")
