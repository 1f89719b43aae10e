"""Keras merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot.

Keras 3 records arithmetic on symbolic tensors (`x + 3.0`, `x * y`) as operations of the same
class names from module `keras.src.ops.numpy`: those are read as "ops.Add" ... (keras_ops.py);
an Add/Multiply called with a Python number is still read here for configs without a module.
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
    """`x + c`, `x - c`, `c - x`, `x * c` as one scale_shift node."""
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
