"""Keras merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot."""

from __future__ import annotations

from ...graph import Value
from ..registry import register
from .reader import LayerCall

_NARY = {"Add": "add", "Multiply": "mul", "Average": "average", "Maximum": "maximum", "Minimum": "minimum"}


def _same_rank(call: LayerCall) -> list[Value]:
    ins = call.inputs
    if len(ins) < 2:
        raise call.error(f"needs at least 2 inputs, got {len(ins)}")
    rank = max(v.rank for v in ins)
    out = []
    for i, v in enumerate(ins):
        if v.rank < rank:  # Keras merge layers expand the smaller operand's trailing axes
            shape = tuple(d if d is not None else -1 for d in v.shape[1:]) + (1,) * (rank - v.rank)
            v = call.emit("reshape", [v], {"shape": shape}, suffix=f"_expand{i}")
        out.append(v)
    return out


@register("keras->ir", *_NARY)
def nary_merge_from_keras(call: LayerCall) -> Value:
    return call.emit(_NARY[call.class_name], _same_rank(call))


@register("keras->ir", "Subtract")
def subtract_from_keras(call: LayerCall) -> Value:
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
