"""ATen arithmetic: add/sub/mul/div (tensor, scalar and parameter operands, rounding
modes), pow, minimum/maximum. Python numbers become size-1 constants that the Keras
writer prints inline; parameters become `constant` nodes."""

from __future__ import annotations

from typing import Any

from ...graph import Value
from ..registry import register
from .calls import AtenCall, Const, SizeTable


def operand(call: AtenCall, name: str, rank: int, dtype: str = "float32") -> Value:
    """Argument `name` as a value of `rank` (numbers and constants broadcast); a Python
    number takes `dtype` (the other operand's) where it is an integer."""
    v: Any = call.args[name]
    if isinstance(v, Value):
        return v
    if isinstance(v, Const):
        return call.reader.constant_value(v, rank)
    if isinstance(v, SizeTable):
        return call.reader.size_table_value(v, rank)
    if isinstance(v, (bool, int)) and not dtype.startswith("float"):
        return call.reader.scalar_value(int(v), rank, dtype)
    if isinstance(v, (bool, int, float)):
        return call.reader.scalar_value(float(v), rank)
    raise call.unsupported(f"operand {name!r} is {type(v).__name__}")


def _binary(call: AtenCall, op: str, a_name: str = "self", b_name: str = "other") -> Value:
    a, b = call.args[a_name], call.args[b_name]
    rank = max(v.rank if isinstance(v, Value) else getattr(getattr(v, "array", None), "ndim", 0) for v in (a, b))
    alpha = call.args.get("alpha", 1)
    dtype = next((v.dtype for v in (a, b) if isinstance(v, Value)), "float32")
    x = operand(call, a_name, rank, dtype)
    if op in ("add", "sub") and alpha not in (1, None):
        y = call.emit(
            "mul", [operand(call, b_name, rank, dtype), call.reader.scalar_value(float(alpha), rank)], suffix="_alpha"
        )
    else:
        y = operand(call, b_name, rank, dtype)
    if op.startswith("compare_"):
        return call.emit("compare", [x, y], {"mode": op[len("compare_") :]})
    return call.emit(op, [x, y])


@register("torch->ir", "aten.add")
def add_to_ir(call: AtenCall) -> Value:
    return _binary(call, "add")


@register("torch->ir", "aten.sub")
def sub_to_ir(call: AtenCall) -> Value:
    return _binary(call, "sub")


@register("torch->ir", "aten.rsub")
def rsub_to_ir(call: AtenCall) -> Value:
    if call.args.get("alpha", 1) != 1:
        raise call.unsupported("rsub with alpha other than 1")
    return _binary(call, "sub", "other", "self")


@register("torch->ir", "aten.mul")
def mul_to_ir(call: AtenCall) -> Value:
    return _binary(call, "mul")


@register("torch->ir", "aten.div")
def div_to_ir(call: AtenCall) -> Value:
    mode = call.args.get("rounding_mode")
    return _binary(call, {None: "div", "floor": "floor_divide", "trunc": "trunc_divide"}[mode])


@register("torch->ir", "aten.floor_divide")
def floor_divide_to_ir(call: AtenCall) -> Value:
    return _binary(call, "floor_divide")


@register("torch->ir", "aten.maximum", "aten.minimum")
def extremum_to_ir(call: AtenCall) -> Value:
    return _binary(call, call.key.split(".")[1])


@register("torch->ir", "aten.pow")
def pow_to_ir(call: AtenCall) -> Value:
    e = call.args["exponent"]
    if isinstance(e, (int, float)) and isinstance(call.args["self"], Value):
        special = {2: "square", 0.5: "sqrt", -0.5: "rsqrt", 1: "identity"}
        if e in special:
            return call.emit(special[e], [call.args["self"]])
    return _binary(call, "pow", "self", "exponent")


@register("torch->ir", "aten.reciprocal")
def reciprocal_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    return call.emit("div", [call.reader.scalar_value(1.0, x.rank), x])


_COMPARE = {
    "aten.eq": "equal", "aten.ne": "not_equal", "aten.lt": "less", "aten.le": "less_equal",
    "aten.gt": "greater", "aten.ge": "greater_equal",
}  # fmt: skip


@register("torch->ir", *_COMPARE)
def compare_to_ir(call: AtenCall) -> Value:
    """x == y, x != y, x < y ... (tensor or number operands, broadcasting): a bool tensor."""
    return _binary(call, "compare_" + _COMPARE[call.key])


@register("torch->ir", "aten.where")
def where_to_ir(call: AtenCall) -> Value:
    """torch.where(condition, a, b), all three broadcasting; numbers take the tensor's dtype."""
    if call.args.get("self") is None:
        raise call.unsupported("torch.where(condition) with one argument (the indices of the True elements)")
    names = ("condition", "self", "other")
    ranks = [
        v.rank if isinstance(v, Value) else getattr(getattr(v, "array", None), "ndim", 0)
        for v in (call.args[n] for n in names)
    ]
    rank = max(ranks)
    dtype = next(
        (v.dtype for v in (call.args["self"], call.args["other"]) if isinstance(v, Value)), call.meta_dtypes[0]
    )
    cond = operand(call, "condition", rank, "bool")
    a, b = operand(call, "self", rank, dtype), operand(call, "other", rank, dtype)
    if cond.dtype != "bool":
        cond = call.emit("cast", [cond], {"dtype": "bool"}, suffix="_condition")
    return call.emit("where", [cond, a, b])
