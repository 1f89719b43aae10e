"""In-place writes into tensors the model computes, read as the values they leave (Hugging
Face's shift_tokens_right: `ids.new_zeros(ids.shape)`, then `copy_` into `[:, 1:]`, `fill_`
of `[:, 0]` and `masked_fill_`), and the `new_zeros` family at the batch size.

The reader hands a write the tensor written into (`call.written`) and the views from it down
to the written one (`call.views`: slices and selects); the translator returns the tensor
after the write, which every later reader of it sees, and the written view."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...graph import Value
from ..registry import register
from .arithmetic import operand
from .calls import BATCH, AtenCall, Const, batch_factor

_BIG = 2**62  # slice(x, dim, 0, 9223372036854775807): to the end


def _region(call: AtenCall) -> tuple[dict[int, tuple[int, int]], list[int]]:
    """The box the views cut out of `call.written`: {axis: (start, stop)} for the axes they
    narrow, and the axes a select removed (in the written tensor's numbering)."""
    x = call.written
    assert x is not None
    axes = list(range(x.rank))  # the written view's axes, as axes of x
    box = {a: (0, x.shape[a]) for a in range(1, x.rank)}
    selected: list[int] = []
    for key, args in call.views:
        if key not in ("aten.slice", "aten.select", "aten.alias"):
            raise call.unsupported(f"an in-place write through {key} (only slices and selects are read)")
        if key == "aten.alias":
            continue
        dim = int(args[0]) % len(axes)
        a = axes[dim]
        if a == 0:
            start, end = (tuple(args[1:3]) + (None, None))[:2]
            if key == "aten.slice" and not start and (end is None or end >= _BIG) and tuple(args[3:4]) in ((), (1,)):
                continue  # [:, ...]: every example
            raise call.unsupported("an in-place write into part of the batch axis")
        lo, hi = box[a]
        if key == "aten.select":
            i = int(args[1]) % (hi - lo)
            box[a] = (lo + i, lo + i + 1)
            axes.pop(dim)
            selected.append(a)
            continue
        start, end = (tuple(args[1:3]) + (None, None))[:2]
        step = args[3] if len(args) > 3 else 1
        if step != 1:
            raise call.unsupported("an in-place write into a strided slice")
        s, e, _ = slice(start, None if end is None or end >= _BIG else end).indices(hi - lo)
        box[a] = (lo + s, lo + max(s, e))
    narrowed = {a: b for a, b in box.items() if b != (0, call.written.shape[a])}
    return narrowed, selected


def _filled(call: AtenCall, value: Any, shape: tuple, dtype: str) -> Value:
    """A number (or 0-d constant) as a tensor of `shape` (its batch axis the batch's)."""
    number = value.array.reshape(-1)[0] if isinstance(value, Const) else value
    array = np.full((1, *shape[1:]), number, dtype=np.dtype(dtype))
    return call.reader.per_example_value(Const(f"{call.name}_value", array))


def _write(call: AtenCall, piece: Value | None, fill: Any = None) -> tuple[Value, Value]:
    x = call.written
    assert x is not None
    narrowed, selected = _region(call)
    if len(narrowed) > 1:
        raise call.unsupported("an in-place write into a block narrowed on more than one axis")
    view_shape = tuple(call.meta_shapes[0])
    if piece is None:
        piece = _filled(call, fill, view_shape, x.dtype)
    elif tuple(piece.shape[1:]) != view_shape[1:]:
        raise call.unsupported(f"copy_ of a {piece.shape} tensor into a {view_shape} view (broadcasting)")
    if piece.dtype != x.dtype:
        piece = call.emit("cast", [piece], {"dtype": x.dtype}, suffix="_cast")
    view = piece
    for a in sorted(selected):
        piece = call.emit("expand_dims", [piece], {"axis": a}, suffix=f"_axis{a}")
    if not narrowed:
        return piece, view
    ((axis, (start, stop)),) = narrowed.items()
    parts = []
    if start > 0:
        parts.append(call.emit("slice", [x], {"axis": axis, "start": 0, "stop": start, "step": 1}, suffix="_before"))
    parts.append(piece)
    if stop < x.shape[axis]:
        parts.append(call.emit("slice", [x], {"axis": axis, "start": stop, "stop": None, "step": 1}, suffix="_after"))
    return call.emit("concat", parts, {"axis": axis}), view


@register("torch->ir", "aten.copy")
def copy_to_ir(call: AtenCall) -> Any:
    """dst.copy_(src) into (a slice of) a tensor the model computes."""
    if call.written is None:
        raise call.unsupported("copy_ into a tensor that is not computed by the model")
    src = call.args.get("src")
    if isinstance(src, Const):
        return _write(call, call.reader.constant_value(src, len(call.meta_shapes[0])))
    if not isinstance(src, Value):
        raise call.unsupported(f"copy_ from {type(src).__name__}")
    return _write(call, src)


@register("torch->ir", "aten.fill")
def fill_to_ir(call: AtenCall) -> Any:
    """dst.fill_(value) of (a slice of) a tensor the model computes."""
    value = call.args.get("value")
    if call.written is None:
        raise call.unsupported("fill_ of a tensor that is not computed by the model")
    if isinstance(value, Const) and value.array.size != 1 or isinstance(value, Value):
        raise call.unsupported("fill_ with a tensor that is not a single number")
    return _write(call, None, value)


@register("torch->ir", "aten.masked_fill")
def masked_fill_to_ir(call: AtenCall) -> Any:
    """x.masked_fill(mask, value) (in place too): where(mask, value, x)."""
    x = call.args.get("self")
    value = call.args.get("value")
    if call.views:
        raise call.unsupported("masked_fill_ of a view of a tensor (write the whole tensor)")
    if not isinstance(x, Value) or isinstance(value, Value) or isinstance(value, Const) and value.array.size != 1:
        raise call.unsupported("masked_fill of a tensor the model does not compute, or with a tensor value")
    rank = x.rank
    mask = operand(call, "mask", rank)
    if mask.dtype != "bool":
        mask = call.emit("cast", [mask], {"dtype": "bool"}, suffix="_mask")
    number = value.array.reshape(-1)[0].item() if isinstance(value, Const) else value
    filled = call.reader.scalar_value(number, rank, x.dtype)
    out = call.emit("where", [mask, filled, x])
    return (out, out) if call.written is not None else out


@register("torch->ir", "aten.new_zeros", "aten.new_ones", "aten.new_full")
def new_filled_to_ir(call: AtenCall) -> Value:
    """x.new_zeros((batch, ...)) and friends: the same numbers for every example."""
    size = list(call.args["size"])
    if not size or not (batch_factor(size[0]) == 1 or size[0] is BATCH or size[0] == call.reader.static_batch):
        raise call.unsupported(f"new_zeros/new_ones/new_full of size {tuple(size)} (axis 0 is not the batch)")
    if not all(isinstance(d, int) for d in size[1:]):
        raise call.unsupported(f"new_zeros/new_ones/new_full of size {tuple(size)}")
    number = {"aten.new_zeros": 0, "aten.new_ones": 1}.get(call.key, call.args.get("fill_value"))
    dtype = call.meta_dtypes[0]
    return call.reader.per_example_value(Const(call.name, np.full((1, *size[1:]), number, dtype=np.dtype(dtype))))
