"""Edge (replicate) padding for the readers, as the graph has no op of its own for it:
along each padded axis, the first and last slices repeated and concatenated around the
tensor (ONNX Pad mode="edge", PyTorch F.pad mode="replicate")."""

from __future__ import annotations

from typing import Any

from ..graph import Value


def edge_pad(call: Any, x: Value, per_axis: dict[int, tuple[int, int]], what: str = "edge padding") -> Value:
    """`call` is a reader's call (emit(op, inputs, attrs, suffix=...) and unsupported(reason));
    `per_axis` maps an axis to its (before, after) widths."""
    out = x
    for axis in sorted(per_axis):
        before, after = per_axis[axis]
        if (before, after) == (0, 0):
            continue
        if before < 0 or after < 0:
            raise call.unsupported(f"{what} with negative pads {per_axis[axis]}")
        parts = []
        if before:
            first = call.emit("slice", [out], {"axis": axis, "start": 0, "stop": 1, "step": 1}, suffix="_first")
            parts += [first] * before
        parts.append(out)
        if after:
            size = out.shape[axis]
            if size is None:
                raise call.unsupported(f"{what} of an axis of unknown size")
            last = call.emit("slice", [out], {"axis": axis, "start": size - 1, "stop": size, "step": 1}, suffix="_last")
            parts += [last] * after
        out = call.emit("concat", parts, {"axis": axis})
    return out
