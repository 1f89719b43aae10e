"""ONNX Gemm and MatMul: a constant right-hand side makes a dense layer (weight stored
(out, in), PyTorch's layout); a computed one a matrix product."""

from __future__ import annotations

import numpy as np

from ...graph import Value
from ..registry import register
from .calls import OnnxCall


@register("onnx->ir", "Gemm")
def gemm_to_ir(call: OnnxCall) -> Value:
    if call.attr("transA", 0):
        raise call.unsupported("Gemm with transA=1")
    x = call.value(0)
    b = call.const(1).astype(np.float32)
    weight = b if call.attr("transB", 0) else b.T
    alpha, beta = call.attr("alpha", 1.0), call.attr("beta", 1.0)
    if alpha != 1.0:
        weight = weight * np.float32(alpha)
    weights = {"weight": np.ascontiguousarray(weight)}
    c = call.const(2, optional=True)
    units = int(weight.shape[0])
    if c is not None:
        if c.size not in (1, units):
            raise call.unsupported(f"Gemm with a bias of shape {c.shape} (only a per-unit vector)")
        weights["bias"] = np.ascontiguousarray(
            np.broadcast_to(c.reshape(-1) * np.float32(beta), (units,)).astype(np.float32)
        )
    return call.emit("dense", [x], {"units": units, "use_bias": c is not None}, weights)


@register("onnx->ir", "MatMul")
def matmul_to_ir(call: OnnxCall) -> Value:
    a = call.value(0)
    if call.has(1) and not isinstance(call.inputs[1], Value):
        w = call.const(1)
        if w.ndim != 2:
            raise call.unsupported(f"MatMul with a constant of shape {w.shape} (only a 2-D weight)")
        weight = np.ascontiguousarray(w.T.astype(np.float32))
        return call.emit("dense", [a], {"units": int(w.shape[1]), "use_bias": False}, {"weight": weight})
    return call.emit("matmul", [a, call.value(1)])
