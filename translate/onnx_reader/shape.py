"""ONNX data movement: Flatten, Reshape, Squeeze/Unsqueeze, Transpose, Concat, Pad, the
reductions and Cast. The batch axis (0) stays in place: an op that would move, split or
reduce it is refused with the reason, since the emitted model keeps a dynamic batch."""

from __future__ import annotations

import math

import numpy as np

from ...graph import Value
from ..edge_pad import edge_pad
from ..registry import register
from .calls import BATCH, ONNX_DTYPES, Const, OnnxCall


def _reshape(call: OnnxCall, x: Value, target: tuple[int, ...]) -> Value:
    """Reshape the non-batch axes of `x` to `target` (a no-op reshape is dropped)."""
    if target == tuple(x.shape[1:]):
        return x
    if len(target) == 1 and None not in x.shape[1:] and target[0] in (-1, math.prod(x.shape[1:])):
        return call.emit("flatten", [x])
    return call.emit("reshape", [x], {"shape": tuple(target)})


@register("onnx->ir", "Flatten")
def flatten_to_ir(call: OnnxCall) -> Value:
    x = call.value(0)
    axis = call.axis(int(call.attr("axis", 1)), x.rank) if call.attr("axis", 1) != x.rank else x.rank
    if axis == 1:
        return call.emit("flatten", [x])
    if axis == 0 or None in x.shape[1:]:
        raise call.unsupported(f"Flatten at axis {axis} of shape {x.shape} (only the batch axis may stay first)")
    return _reshape(call, x, (math.prod(x.shape[1:axis]), math.prod(x.shape[axis:])))


@register("onnx->ir", "Shape")
def shape_to_ir(call: OnnxCall) -> Const:
    """The shape of a tensor, known at conversion time but for the batch size, which
    stays a marker that Reshape recognises (so `x.view(x.size(0), -1)` folds)."""
    x = call.value(0)
    if None in x.shape[1:]:
        raise call.unsupported(f"Shape of a tensor with dynamic non-batch axes {x.shape}")
    dims = np.array([BATCH, *x.shape[1:]], dtype=np.int64)
    start, end = call.attr("start", 0), call.attr("end")
    return Const(call.node_name, dims[start:end])


@register("onnx->ir", "Reshape")
def reshape_to_ir(call: OnnxCall) -> Value:
    x = call.value(0)
    shape = [int(d) for d in call.const(1)]
    if BATCH in shape[1:] or any(d < -1 and d != BATCH for d in shape):
        raise call.unsupported(
            f"Reshape to a shape computed from the batch size ({[d if d != BATCH else 'N' for d in shape]})"
        )
    shape = [None if d == BATCH else d for d in shape]
    allowzero = bool(call.attr("allowzero", 0))
    if not allowzero:
        shape = [x.shape[i] if d == 0 and i < x.rank else d for i, d in enumerate(shape)]
    first, rest = shape[0], shape[1:]
    batch = call.reader.static_batch
    whole = (
        None not in x.shape[1:] and None not in rest and -1 not in rest and math.prod(rest) == math.prod(x.shape[1:])
    )
    if first is None or (first == -1 and whole) or (batch is not None and first == batch):
        if None in rest:
            raise call.unsupported(f"Reshape to {call.const(1).tolist()} copies a dynamic axis other than the batch")
        return _reshape(call, x, tuple(rest))
    raise call.unsupported(
        f"Reshape of {x.shape} to {call.const(1).tolist()} mixes the batch axis with others; keep the batch size (or 0) first"
    )


def _axes(call: OnnxCall, rank: int, index: int = 1) -> list[int] | None:
    array = call.const(index, optional=True) if call.has(index) else None
    axes = array.tolist() if array is not None else call.attr("axes")
    return None if axes is None else sorted(call.axis(int(a), rank) for a in axes)


@register("onnx->ir", "Squeeze")
def squeeze_to_ir(call: OnnxCall) -> Value:
    x = call.value(0)
    axes = _axes(call, x.rank)
    if axes is None:
        axes = [i for i in range(1, x.rank) if x.shape[i] == 1]
    if 0 in axes:
        raise call.unsupported("Squeeze of the batch axis")
    if None in x.shape[1:]:
        raise call.unsupported(f"Squeeze of a tensor with dynamic non-batch axes {x.shape}")
    return _reshape(call, x, tuple(d for i, d in enumerate(x.shape) if i not in axes and i > 0))


@register("onnx->ir", "Unsqueeze")
def unsqueeze_to_ir(call: OnnxCall) -> Value:
    x = call.value(0)
    axes = _axes(call, x.rank + len(call.const(1) if call.has(1) else call.attr("axes")))
    if 0 in axes:
        raise call.unsupported("Unsqueeze before the batch axis")
    if None in x.shape[1:]:
        raise call.unsupported(f"Unsqueeze of a tensor with dynamic non-batch axes {x.shape}")
    dims = list(x.shape[1:])
    for a in axes:
        dims.insert(a - 1, 1)
    return _reshape(call, x, tuple(dims))


@register("onnx->ir", "Transpose")
def transpose_to_ir(call: OnnxCall) -> Value:
    x = call.value(0)
    perm = tuple(int(p) for p in call.attr("perm", list(reversed(range(x.rank)))))
    if perm == (1, 0, 2):
        from .recurrent import TimeMajor

        return TimeMajor(x)  # time-major, for an RNN (or refused where it is read otherwise)
    if perm[0] != 0:
        raise call.unsupported(f"Transpose {perm} moves the batch axis")
    if perm == tuple(range(x.rank)):
        return x
    return call.emit("transpose", [x], {"perm": perm})


@register("onnx->ir", "Gather")
def gather_to_ir(call: OnnxCall) -> Value:
    """x[..., i, ...] with a constant index: `select` for a scalar, `slice` for a run of
    consecutive indices; other gathers of computed tensors are refused."""
    x = call.value(0)
    axis = call.axis(int(call.attr("axis", 0)), x.rank)
    if axis == 0:
        raise call.unsupported("Gather along the batch axis")
    index = call.const(1)
    size = x.shape[axis]
    flat = [int(i) + (size if int(i) < 0 and size is not None else 0) for i in index.reshape(-1)]
    if any(i < 0 for i in flat):
        raise call.unsupported(f"Gather with a negative index on an axis of unknown size {x.shape}")
    if index.ndim == 0:
        return call.emit("select", [x], {"axis": axis, "index": int(index)})  # x[:, -1] stays -1
    if index.ndim == 1 and flat == list(range(flat[0], flat[0] + len(flat))):
        return call.emit("slice", [x], {"axis": axis, "start": flat[0], "stop": flat[0] + len(flat), "step": 1})
    raise call.unsupported(f"Gather of indices {index.tolist()} (only one index or a run of consecutive ones)")


@register("onnx->ir", "Slice")
def slice_to_ir(call: OnnxCall) -> Value:
    """Constant starts/ends/axes/steps: one `slice` per sliced axis (positive steps)."""
    x = call.value(0)
    starts, ends = call.const(1).reshape(-1), call.const(2).reshape(-1)
    axes = call.const(3, optional=True) if call.has(3) else None
    steps = call.const(4, optional=True) if call.has(4) else None
    axes_list = list(range(len(starts))) if axes is None else [call.axis(int(a), x.rank) for a in axes.reshape(-1)]
    steps_list = [1] * len(starts) if steps is None else [int(t) for t in steps.reshape(-1)]
    out = x
    for a, b, e, t in zip(axes_list, starts, ends, steps_list):
        size = x.shape[a]
        if a == 0:
            raise call.unsupported("Slice of the batch axis")
        if t <= 0 or size is None:
            raise call.unsupported(f"Slice with step {t} on an axis of size {size}")
        start, stop, step = slice(int(b), int(min(e, size) if e > 0 else e), t).indices(size)
        if (start, stop, step) == (0, size, 1):
            continue
        out = call.emit("slice", [out], {"axis": a, "start": start, "stop": max(stop, start), "step": step})
    return out


@register("onnx->ir", "Compress")
def compress_to_ir(call: OnnxCall) -> Value:
    """x with a constant boolean mask along an axis: the kept runs sliced and concatenated
    (tf2onnx writes TensorFlow's SYMMETRIC padding as a reflect Pad whose mirrored edge
    rows a Compress removes)."""
    x = call.value(0)
    if call.attr("axis") is None:
        raise call.unsupported("Compress without an axis (of the flattened tensor)")
    axis = call.axis(int(call.attr("axis")), x.rank)
    keep = call.const(1).reshape(-1).astype(bool)
    size = x.shape[axis]
    if axis == 0 or size is None:
        raise call.unsupported(f"Compress along axis {axis} of shape {x.shape}")
    keep = np.concatenate([keep[:size], np.zeros(max(size - keep.size, 0), bool)])
    runs, start = [], None
    for i, k in enumerate([*keep, False]):
        if k and start is None:
            start = i
        elif not k and start is not None:
            runs.append((start, i))
            start = None
    if not runs:
        raise call.unsupported("Compress that keeps nothing")
    parts = [
        x
        if (b, e) == (0, size)
        else call.emit("slice", [x], {"axis": axis, "start": b, "stop": e, "step": 1}, suffix=f"_{b}")
        for b, e in runs
    ]
    return parts[0] if len(parts) == 1 else call.emit("concat", parts, {"axis": axis})


@register("onnx->ir", "Split")
def split_to_ir(call: OnnxCall) -> list[Value]:
    x = call.value(0)
    axis = call.axis(int(call.attr("axis", 0)), x.rank)
    if axis == 0:
        raise call.unsupported("Split of the batch axis")
    size = x.shape[axis]
    sizes = call.const(1, optional=True) if call.has(1) else None
    if sizes is None:
        sizes = call.attr("split")
    if sizes is None:
        n = int(call.attr("num_outputs", len(call.outputs)))
        if size is None:
            raise call.unsupported("Split of an axis of unknown size")
        chunk = -(-size // n)
        sizes = [min(chunk, size - i * chunk) for i in range(n)]
    sizes = tuple(int(s) for s in np.reshape(sizes, -1))
    if len(sizes) == 1:
        return [x]
    return call.emit_all("split", [x], {"axis": axis, "sizes": sizes})


@register("onnx->ir", "Concat")
def concat_to_ir(call: OnnxCall) -> Value:
    values = [
        call.value(i)
        for i in range(len(call.inputs))
        if not (isinstance(call.inputs[i], Value) and 0 in call.inputs[i].shape)
    ]
    axis = call.axis(int(call.attr("axis")), values[0].rank)
    if axis == 0:
        raise call.unsupported("concatenation along the batch axis")
    if len(values) == 1:
        return values[0]
    return call.emit("concat", values, {"axis": axis})


@register("onnx->ir", "Pad")
def pad_to_ir(call: OnnxCall) -> Value:
    """constant -> `pad` (or `crop` for negative pads), reflect -> `reflect_pad`, edge ->
    concatenated copies of the edge slices (the graph has no replicate padding op)."""
    x = call.value(0)
    mode = call.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise call.unsupported(f"Pad mode {mode!r} (constant, reflect and edge are translated)")
    pads = [int(p) for p in call.const(1)]
    value = call.const(2, optional=True) if call.has(2) else None
    fill = 0.0 if value is None or value.size == 0 else float(value.reshape(-1)[0])
    axes = _axes(call, x.rank, 3) if call.has(3) else list(range(x.rank))
    n = len(axes)
    per_axis = {a: (pads[i], pads[i + n]) for i, a in enumerate(axes)}
    padded = [a for a, p in per_axis.items() if p != (0, 0)]
    if not padded:
        return x
    if 0 in padded:
        raise call.unsupported("padding of the batch axis")
    if mode == "edge":
        return edge_pad(call, x, per_axis, what="edge Pad")
    # ONNX pads any axes; the graph's pad op pads the spatial axes of a channels-first or -last tensor
    if 1 not in padded:
        fmt, spatial = "channels_first", range(2, x.rank)
    elif x.rank - 1 not in padded:
        fmt, spatial = "channels_last", range(1, x.rank - 1)
    else:
        raise call.unsupported(f"Pad of every non-batch axis {padded}")
    widths = tuple(per_axis.get(a, (0, 0)) for a in spatial)
    negative = any(b < 0 or e < 0 for b, e in widths)
    if mode == "reflect":
        if negative:
            raise call.unsupported(f"reflect Pad with negative pads {pads}")
        return call.emit("reflect_pad", [x], {"pads": widths, "data_format": fmt})
    if negative:
        if fill == 0.0 and all(b <= 0 and e <= 0 for b, e in widths):
            return call.emit("crop", [x], {"crops": tuple((-b, -e) for b, e in widths), "data_format": fmt})
        raise call.unsupported(f"Pad with negative and positive pads {pads}")
    return call.emit("pad", [x], {"pads": widths, "value": fill, "data_format": fmt})


_REDUCE = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min", "ReduceProd": "prod"}


@register("onnx->ir", *_REDUCE)
def reduce_to_ir(call: OnnxCall) -> Value:
    x = call.value(0)
    axes = _axes(call, x.rank)
    if not axes:
        if call.attr("noop_with_empty_axes", 0):
            return x
        raise call.unsupported("a reduction over all axes (including the batch axis)")
    if 0 in axes:
        raise call.unsupported("a reduction over the batch axis")
    return call.emit(
        "reduce", [x], {"mode": _REDUCE[call.key], "axes": tuple(axes), "keepdims": bool(call.attr("keepdims", 1))}
    )


@register("onnx->ir", "Cast")
def cast_to_ir(call: OnnxCall) -> Value:
    x = call.value(0)
    dtype = ONNX_DTYPES.get(int(call.attr("to")))
    if dtype is None:
        raise call.unsupported(f"Cast to ONNX element type {call.attr('to')}")
    if dtype == x.dtype:
        return x
    return call.emit("cast", [x], {"dtype": dtype})
