"""Keras merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot.

Keras 3 also records arithmetic on symbolic tensors (`x + 3.0`, `x * y`) as operations of
the same class names (`keras.src.ops.numpy.Add`, ...), called with two positional
arguments of which one may be a Python number; those are read here too.
"""

from __future__ import annotations

from numbers import Number

from ...graph import Value
from ..registry import register
from .calls import LayerCall

_NARY = {"Add": "add", "Multiply": "mul", "Average": "average", "Maximum": "maximum", "Minimum": "minimum"}


def _same_rank(call: LayerCall) -> list[Value]:
    ins = call.inputs
    if len(ins) < 2:
        raise call.error(f"needs at least 2 inputs, got {len(ins)}")
    rank = max(v.rank for v in ins)
    out = []
    for i, v in enumerate(ins):
        if v.rank < rank:  # Keras merge layers insert axes after the batch axis (expand_dims(x, 1))
            shape = (1,) * (rank - v.rank) + tuple(d if d is not None else -1 for d in v.shape[1:])
            v = call.emit("reshape", [v], {"shape": shape}, suffix=f"_expand{i}")
        out.append(v)
    return out


def _constant_operand(call: LayerCall) -> tuple[Value, float, bool] | None:
    """For a Keras op called as `op(x, c)` or `op(c, x)` with a number c:
    (x, c, whether c comes first). None for tensor-only calls."""
    args = call.args[0] if len(call.args) == 1 and isinstance(call.args[0], (list, tuple)) else call.args
    if len(args) != 2:
        return None
    first, second = args
    if isinstance(first, Value) and isinstance(second, Number) and not isinstance(second, bool):
        return first, float(second), False
    if isinstance(second, Value) and isinstance(first, Number) and not isinstance(first, bool):
        return second, float(first), True
    return None


def _affine_with_constant(call: LayerCall) -> Value | None:
    """`x + c`, `x - c`, `c - x`, `x * c`, `x / c` as one scale_shift node."""
    found = _constant_operand(call)
    if found is None:
        return None
    x, c, c_first = found
    cls = call.class_name
    if cls == "Add":
        attrs = {"offset": c}
    elif cls == "Subtract":
        attrs = {"scale": -1.0, "offset": c} if c_first else {"offset": -c}
    elif cls == "Multiply":
        attrs = {"scale": c}
    elif cls in ("Divide", "TrueDivide") and not c_first:
        if c == 0.0:
            raise call.error("divides by the constant 0")
        attrs = {"scale": 1.0 / c}
    else:
        raise call.error(f"{cls} of a tensor and the constant {c!r} is not supported")
    return call.emit("scale_shift", [x], attrs)


@register("keras->ir", *_NARY)
def nary_merge_from_keras(call: LayerCall) -> Value:
    constant = _affine_with_constant(call) if call.class_name in ("Add", "Multiply") else None
    if constant is not None:
        return constant
    return call.emit(_NARY[call.class_name], _same_rank(call))


@register("keras->ir", "Subtract")
def subtract_from_keras(call: LayerCall) -> Value:
    constant = _affine_with_constant(call)
    if constant is not None:
        return constant
    ins = _same_rank(call)
    if len(ins) != 2:
        raise call.error("Subtract takes exactly 2 inputs")
    return call.emit("sub", ins)


@register("keras->ir", "Divide", "TrueDivide")
def divide_from_keras(call: LayerCall) -> Value:
    """The Keras 3 operation `x / y` (there is no Divide merge layer)."""
    constant = _affine_with_constant(call)
    if constant is not None:
        return constant
    ins = call.inputs
    if len(ins) != 2:
        raise call.error(f"{call.class_name} takes exactly 2 tensors, got {len(ins)}")
    return call.emit("div", ins)


@register("keras->ir", "Concatenate")
def concatenate_from_keras(call: LayerCall) -> Value:
    ins = call.inputs
    return call.emit("concat", ins, {"axis": int(call.get("axis", -1)) % ins[0].rank})


@register("keras->ir", "Dot")
def dot_from_keras(call: LayerCall) -> Value:
    a, b = call.inputs
    axes = call.get("axes")
    axes = (axes, axes) if isinstance(axes, int) else tuple(axes)
    ax, bx = (axes[0] % a.rank, axes[1] % b.rank)
    if call.get("normalize"):
        a = call.emit("l2_normalize", [a], {"axes": (ax,)}, suffix="_norm_a")
        b = call.emit("l2_normalize", [b], {"axes": (bx,)}, suffix="_norm_b")
    if a.rank == 2 and b.rank == 2:
        # (N, D) . (N, D) -> (N, 1)
        prod = call.emit("mul", [a, b], suffix="_mul")
        return call.emit("reduce", [prod], {"mode": "sum", "axes": (1,), "keepdims": True})
    if a.rank == 3 and b.rank == 3:
        # batched matmul contracting a's axis ax with b's axis bx
        if ax != 2:
            a = call.emit("transpose", [a], {"perm": (0, 2, 1)}, suffix="_ta")
        if bx != 1:
            b = call.emit("transpose", [b], {"perm": (0, 2, 1)}, suffix="_tb")
        return call.emit("matmul", [a, b])
    raise call.error(f"Dot of ranks {a.rank} and {b.rank} is not supported")


# -- tf.keras 2: TensorFlow functions recorded as TFOpLambda layers ----------------------------
# `x + 3.0` in a tf.keras 2 functional model is saved as a TFOpLambda layer naming the TF
# function ("__operators__.add") with the other operand in the call kwargs. The names below
# are TF API functions, not serialized code, so they are read without --trust-code.
TF_BINARY = {
    "__operators__.add": "Add",
    "math.add": "Add",
    "math.add_v2": "Add",
    "math.subtract": "Subtract",
    "math.multiply": "Multiply",
    "math.truediv": "Divide",
    "math.divide": "Divide",
    "math.maximum": "Maximum",
    "math.minimum": "Minimum",
}
TF_UNARY: dict[str, tuple[str, dict]] = {
    "nn.relu": ("relu", {}),
    "nn.relu6": ("relu", {"max_value": 6.0}),
    "math.sigmoid": ("sigmoid", {}),
    "nn.sigmoid": ("sigmoid", {}),
    "math.tanh": ("tanh", {}),
    "nn.silu": ("silu", {}),
    "nn.swish": ("silu", {}),
    "math.exp": ("exp", {}),
    "math.abs": ("abs", {}),
    "math.negative": ("neg", {}),
    "math.sqrt": ("sqrt", {}),
    "math.rsqrt": ("rsqrt", {}),
    "math.square": ("square", {}),
    "math.log": ("log", {}),
}
TF_FUNCTIONS = frozenset(TF_BINARY) | frozenset(TF_UNARY)


@register("keras->ir", "TFOpLambda")
def tf_op_from_keras(call: LayerCall) -> Value:
    function = str(call.get("function"))
    x = call.x
    extra = {k: v for k, v in call.kwargs.items() if k not in ("y", "name")}
    if extra:
        raise call.error(f"tf.{function} called with {sorted(extra)} is not supported")
    if function in TF_UNARY:
        op, attrs = TF_UNARY[function]
        return call.emit(op, [x], dict(attrs))
    if function not in TF_BINARY:
        raise call.error(f"the TensorFlow function tf.{function} is not supported")
    y = call.kwargs.get("y")
    kind = TF_BINARY[function]
    if isinstance(y, Value):
        ins = [x, y]
        return call.emit({"Add": "add", "Subtract": "sub", "Multiply": "mul", "Divide": "div", "Maximum": "maximum", "Minimum": "minimum"}[kind], ins)
    if not isinstance(y, Number) or isinstance(y, bool):
        raise call.error(f"tf.{function} with the operand {y!r} is not supported")
    c = float(y)
    if kind in ("Maximum", "Minimum"):
        return call.emit("clip", [x], {"min": c} if kind == "Maximum" else {"max": c})
    attrs = {"Add": {"offset": c}, "Subtract": {"offset": -c}, "Multiply": {"scale": c}}.get(kind)
    if attrs is None:  # Divide
        if c == 0.0:
            raise call.error("divides by the constant 0")
        attrs = {"scale": 1.0 / c}
    return call.emit("scale_shift", [x], attrs)
