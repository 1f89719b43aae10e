"""ONNX arithmetic: Add/Sub/Mul/Div/Pow/Max/Min/Sum/Mean between tensors, and with an
initializer operand. A constant operand becomes work done at conversion time: a scalar
turns into `scale_shift` (x * a + b), a per-channel vector into `channel_affine`."""

from __future__ import annotations

import numpy as np

from ...graph import Value
from ..registry import register
from .calls import Const, OnnxCall

_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Max": "maximum", "Min": "minimum"}


def _channel_axis(x: Value, array: np.ndarray) -> int | None:
    """The one axis of `x` along which the constant `array` varies (numpy broadcasting
    from the right), if `array` is a per-channel vector for `x`; else None."""
    if array.ndim > x.rank:
        return None
    shape = (1,) * (x.rank - array.ndim) + array.shape
    varying = [i for i, d in enumerate(shape) if d != 1]
    if len(varying) != 1 or varying[0] == 0 or shape[varying[0]] != x.shape[varying[0]]:
        return None
    return varying[0]


def _with_constant(call: OnnxCall, op: str, x: Value, c: np.ndarray, *, constant_first: bool) -> Value | None:
    c = c.astype(np.float32)
    if c.size == 1:
        k = float(c.reshape(()))
        table = {
            "add": (1.0, k),
            "mul": (k, 0.0),
            "sub": (-1.0, k) if constant_first else (1.0, -k),
            "div": None if constant_first else (1.0 / k, 0.0),
        }
        if op == "pow" and not constant_first and k in (2.0, 0.5, -0.5, 1.0):
            return call.emit({2.0: "square", 0.5: "sqrt", -0.5: "rsqrt", 1.0: "identity"}[k], [x])
        scale_offset = table.get(op)
        if scale_offset is not None:
            return call.emit("scale_shift", [x], {"scale": scale_offset[0], "offset": scale_offset[1]})
        return None
    axis = _channel_axis(x, c)
    if axis is None:
        return None
    vector = np.ascontiguousarray(c.reshape(-1))
    if op == "add":
        weights = {"offset": vector}
    elif op == "mul":
        weights = {"scale": vector}
    elif op == "sub":
        weights = {"scale": -np.ones_like(vector), "offset": vector} if constant_first else {"offset": -vector}
    elif op == "div" and not constant_first:
        weights = {"scale": (1.0 / vector).astype(np.float32)}
    else:
        return None
    return call.emit("channel_affine", [x], {"axis": axis}, weights)


@register("onnx->ir", *_BINARY)
def binary_to_ir(call: OnnxCall) -> Value:
    op = _BINARY[call.key]
    a, b = call.inputs[0], call.inputs[1]
    if isinstance(a, Value) and isinstance(b, Value):
        return call.emit(op, [a, b])
    x, c, constant_first = (a, b, False) if isinstance(a, Value) else (b, a, True)
    if op in ("add", "mul", "maximum", "minimum"):
        constant_first = False  # commutative
    out = _with_constant(call, op, x, c.array, constant_first=constant_first)
    if out is None:
        raise call.unsupported(
            f"{call.key} with a constant operand of shape {c.array.shape} on a tensor of shape {x.shape}"
        )
    return out


@register("onnx->ir", "Sum", "Mean")
def sum_to_ir(call: OnnxCall) -> Value:
    values = [call.value(i) for i in range(len(call.inputs))]
    if len(values) == 1:
        return values[0]
    return call.emit("add" if call.key == "Sum" else "average", values)


__all__ = ["Const"]
