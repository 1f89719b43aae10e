"""A table of an ONNX model's nodes, with support status, for `ktorch inspect`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from ..registry import lookup
from .reader import PASS_THROUGH, load_model, op_key


def inspect_onnx(path: Path) -> list[dict[str, Any]]:
    """One row per graph input and node: name, op type (marked "folded" for a constant
    expression evaluated at conversion time), status ('ok', 'input' or 'UNSUPPORTED') and
    the output shape ONNX shape inference finds."""
    from onnx import shape_inference

    model = load_model(path)
    with contextlib.suppress(Exception):  # the shapes are a courtesy here
        model = shape_inference.infer_shapes(model)
    shapes: dict[str, tuple] = {}
    for info in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    constant = {i.name for i in model.graph.initializer} | {""}
    rows: list[dict[str, Any]] = [
        {"name": i.name, "class": "input", "status": "input", "shape": shapes.get(i.name)}
        for i in model.graph.input
        if i.name not in constant
    ]
    for node in model.graph.node:
        key = op_key(node)
        if key in ("Constant", "Shape") or (node.input and all(i in constant for i in node.input)):
            constant.update(node.output)
            key, status = f"{key} (folded)", "ok"
        elif key in PASS_THROUGH or lookup("onnx->ir", key) is not None:
            status = "ok"
        else:
            status = "UNSUPPORTED"
        rows.append(
            {"name": node.name or node.output[0], "class": key, "status": status, "shape": shapes.get(node.output[0])}
        )
    return rows
