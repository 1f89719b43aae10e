"""ATen data movement: flatten, view/reshape, permute/transpose, cat/stack, chunk/split/
unbind, slice/select, unsqueeze/squeeze, expand (no-op only), roll, reductions and casts.

The batch axis (0) stays in place: an op that would move, split or reduce it is refused
with the reason, since the emitted Keras model keeps a dynamic batch. A reshape that
merges the batch with other axes (window attention) gives a `MergedBatch` (merged.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...graph import Value
from ..edge_pad import edge_pad
from ..registry import register
from .arithmetic import operand
from .calls import BATCH, AtenCall, Const, SymSize, dtype_name
from .merged import MergedBatch, batch_target

_BIG = 2**62


def _no_batch(call: AtenCall, axis: int, what: str) -> None:
    if axis == 0 and not call.unbatched:
        raise call.unsupported(f"{what} on the batch axis (axis 0); the emitted model keeps a dynamic batch")


@register("torch->ir", "aten.flatten")
def flatten_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    start = call.axis("start_dim", x.rank)
    end = call.axis("end_dim", x.rank)
    if end <= start:
        return x
    if None in x.shape[max(start, 1) : end + 1]:
        rest = [*x.shape[1:start], *x.shape[end + 1 :]]
        if (start <= 1 and end == x.rank - 1) or None in rest:
            raise call.unsupported("flattening axes whose size is dynamic (a layer after it would need their product)")
        # (B, C, H, W).flatten(2) with a dynamic image size: the one dynamic axis is Keras's -1
        return call.emit("reshape", [x], {"shape": (*x.shape[1:start], -1, *x.shape[end + 1 :])})
    if start == 1 and end == x.rank - 1:
        return call.emit("flatten", [x])
    if start == 0:
        # x.flatten(0, 1) (LeViT's tokens before a BatchNorm1d): the batch merged with axes 1..end
        if end == 1:
            return MergedBatch(x, 0)
        return MergedBatch(
            call.emit("reshape", [x], {"shape": (math.prod(x.shape[1 : end + 1]), *x.shape[end + 1 :])}), 0
        )
    size = math.prod(x.shape[start : end + 1])
    return call.emit("reshape", [x], {"shape": tuple(x.shape[1:start]) + (size,) + tuple(x.shape[end + 1 :])})


def reshape_target(call: AtenCall, x: Value, size: list[Any]) -> tuple[int, ...]:
    """The target shape without the batch axis, if the reshape keeps the batch axis."""
    size = list(size)
    if any(not isinstance(s, int) for s in size[1:]) or not (isinstance(size[0], int) or size[0] is BATCH):
        raise call.unsupported(
            f"reshape to {tuple(size)}: the batch size is used on an axis other than 0 or in arithmetic"
        )
    rest = [int(s) for s in size[1:]]
    known = math.prod(x.shape[1:])
    if size[0] is BATCH:
        return tuple(rest)
    batch = call.reader.static_batch
    product = math.prod(d for d in rest if d != -1)
    if -1 not in rest and product == known and (size[0] == -1 or size[0] == batch):
        return tuple(rest)
    if -1 in rest and size[0] == batch and batch is not None:
        return tuple(rest)
    raise call.unsupported(f"reshape to {tuple(size)} mixes the batch axis with others; keep x.size(0) (or -1) first")


def _dynamic_reshape(call: AtenCall, x: Value, size: list[Any]) -> Value:
    """A reshape of a tensor with a dynamic length (a sequence): torch's own output shape says
    each size; the one it knows only at run time is Keras's -1."""
    target = list(call.meta_shapes[0][1:])
    if len(size) == x.rank - 1 and x.shape[1] is None and None not in x.shape[2:] and target == list(x.shape[2:]):
        # (B, N, C) -> (B * N, C) with a dynamic length N (OPT's feed-forward on flattened
        # tokens): held as it is, the batch merged with the tokens, until a reshape splits them
        return MergedBatch(x, 0)
    known = [d for d in x.shape[1:] if d is not None]
    same_elements = x.shape[1:].count(None) == 1 and math.prod(known) == math.prod(d for d in target if d is not None)
    batch_first = size[0] is BATCH or size[0] == call.reader.static_batch or (size[0] == -1 and same_elements)
    if not batch_first or target.count(None) != 1:
        raise call.unsupported(
            f"reshape to {tuple(size)} of a tensor with a dynamic length, unless the batch stays first "
            "and one axis holds the dynamic length"
        )
    if tuple(target) == tuple(x.shape[1:]):
        return x
    return call.emit("reshape", [x], {"shape": tuple(-1 if d is None else d for d in target)})


@register("torch->ir", "aten.view", "aten.reshape", "aten._unsafe_view")
def reshape_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    size = call.args.get("size", call.args.get("shape"))
    if not isinstance(size, (list, tuple)):
        raise call.unsupported("view as another dtype")
    if None in x.shape[1:] or any(isinstance(d, SymSize) for d in size):
        return _dynamic_reshape(call, x, list(size))
    merged = (
        batch_target(list(size), math.prod(x.shape[1:]), call.reader.static_batch) if None not in x.shape[1:] else None
    )
    if merged is not None and merged[0] != 1:
        # (B, H, W, C) -> (B * windows, tokens, C): held as (B, windows, tokens, C)
        k, rest = merged
        return MergedBatch(call.emit("reshape", [x], {"shape": (k, *rest)}), 0)
    target = reshape_target(call, x, size)
    if target == tuple(x.shape[1:]):
        return x
    return call.emit("reshape", [x], {"shape": target})


def _transpose(call: AtenCall, x: Value, perm: tuple[int, ...]) -> Value | MergedBatch:
    if perm[0] != 0:
        # the batch moves inward (Swin's (B * 1, tokens, 3, heads, d) -> (3, B * 1, heads, tokens, d)):
        # hold it as a batch merged with a size-1 axis, which the permutation moves
        x = call.emit("expand_dims", [x], {"axis": 1}, suffix="_batch")
        y = call.emit("transpose", [x], {"perm": (0, *(p + 1 for p in perm))})
        return MergedBatch(y, perm.index(0))
    if perm == tuple(range(x.rank)):
        return x
    return call.emit("transpose", [x], {"perm": perm})


@register("torch->ir", "aten.permute")
def permute_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    return _transpose(call, x, tuple(int(d) % x.rank for d in call.args["dims"]))


@register("torch->ir", "aten.transpose")
def transpose_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    a, b = call.axis("dim0", x.rank), call.axis("dim1", x.rank)
    perm = list(range(x.rank))
    perm[a], perm[b] = perm[b], perm[a]
    return _transpose(call, x, tuple(perm))


@register("torch->ir", "aten.cat", "aten.concat")
def cat_to_ir(call: AtenCall) -> Value:
    tensors = [t for t in call.args["tensors"] if not (isinstance(t, Value) and 0 in t.shape)]
    rank = max(t.rank if isinstance(t, Value) else t.array.ndim for t in tensors)
    axis = call.axis("dim", rank)
    _no_batch(call, axis, "concatenation")
    values = [t if isinstance(t, Value) else call.reader.constant_value(t, rank) for t in tensors]
    if len(values) == 1:
        return values[0]
    return call.emit("concat", values, {"axis": axis})


@register("torch->ir", "aten.stack")
def stack_to_ir(call: AtenCall) -> Value:
    values = [t if isinstance(t, Value) else call.reader.constant_value(t) for t in call.args["tensors"]]
    axis = call.axis("dim", values[0].rank + 1)
    _no_batch(call, axis, "stack")
    return call.emit("stack", values, {"axis": axis})


def _split(call: AtenCall, x: Value, axis: int, sizes: list[int]) -> list[Value]:
    _no_batch(call, axis, "split")
    if len(sizes) == 1:
        return [x]
    return call.emit_all("split", [x], {"axis": axis, "sizes": tuple(sizes)})


@register("torch->ir", "aten.chunk")
def chunk_to_ir(call: AtenCall) -> list[Value]:
    x = call.value("self")
    axis = call.axis("dim", x.rank)
    n = int(x.shape[axis])
    step = -(-n // int(call.args["chunks"]))
    return _split(call, x, axis, [min(step, n - i) for i in range(0, n, step)])


@register("torch->ir", "aten.split", "aten.split_with_sizes")
def split_to_ir(call: AtenCall) -> list[Value]:
    x = call.value("self")
    axis = call.axis("dim", x.rank)
    n = int(x.shape[axis])
    size = call.args.get("split_size", call.args.get("split_sizes"))
    if isinstance(size, int):
        sizes = [min(size, n - i) for i in range(0, n, size)]
    else:
        sizes = [int(s) for s in size]
    return _split(call, x, axis, sizes)


@register("torch->ir", "aten.unbind")
def unbind_to_ir(call: AtenCall) -> list[Value]:
    x = call.value("self")
    axis = call.axis("dim", x.rank)
    _no_batch(call, axis, "unbind")
    return [call.emit("select", [x], {"axis": axis, "index": i}, suffix=f"_{i}") for i in range(int(x.shape[axis]))]


@register("torch->ir", "aten.slice")
def slice_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    axis = call.axis("dim", x.rank)
    n = int(x.shape[axis]) if x.shape[axis] is not None else None
    start = call.args.get("start")
    end = call.args.get("end")
    step = int(call.args.get("step") or 1)
    start = 0 if start is None else int(start)
    end = None if end is None or (isinstance(end, int) and end >= _BIG) else int(end)
    if start == 0 and end is None and step == 1:
        return x
    if n is not None:
        start, stop, _ = slice(start, end, step).indices(n)
        if start == 0 and stop == n and step == 1:
            return x
        end = stop if stop != n else None
    _no_batch(call, axis, "slicing")
    return call.emit("slice", [x], {"axis": axis, "start": start, "stop": end, "step": step})


@register("torch->ir", "aten.select")
def select_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    axis = call.axis("dim", x.rank)
    _no_batch(call, axis, "select")
    index = int(call.args["index"])
    if x.shape[axis] is not None:
        index %= int(x.shape[axis])  # a dynamic length keeps a negative index: counted from the end
    return call.emit("select", [x], {"axis": axis, "index": index})


@register("torch->ir", "aten.unsqueeze")
def unsqueeze_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    axis = call.axis("dim", x.rank + 1)
    _no_batch(call, axis, "unsqueeze")
    return call.emit("expand_dims", [x], {"axis": axis})


@register("torch->ir", "aten.squeeze")
def squeeze_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    dims = call.args.get("dim")
    if dims is None:
        axes = [i for i in range(1, x.rank) if x.shape[i] == 1]
    else:
        axes = [d % x.rank for d in ([dims] if isinstance(dims, int) else dims)]
        axes = [a for a in axes if x.shape[a] == 1 and a != 0]
    for i, axis in enumerate(sorted(axes, reverse=True)):
        x = call.emit("squeeze", [x], {"axis": axis}, suffix=f"_{i}" if i else "")
    return x


@register("torch->ir", "aten.expand")
def expand_to_ir(call: AtenCall) -> Value:
    size = list(call.args["size"])
    c = call.args["self"]
    batch = size[0] is BATCH or (call.reader.static_batch is not None and size[0] == call.reader.static_batch)
    if isinstance(c, Const) and c.array.ndim <= len(size) and batch:
        # a learned tensor expanded to the batch (CLIP's 1-D class_embedding.expand(B, 1, -1)):
        # the same weight for every example, however large the batch
        c = c.reshaped((1,) * (len(size) - c.array.ndim) + c.array.shape)
        if c.array.shape[0] == 1:
            x = call.reader.per_example_value(c)
            call.args = {**call.args, "self": x}
            return expand_to_ir(call)
    x = call.value("self")
    if len(size) != x.rank or not (size[0] == -1 or size[0] is BATCH or size[0] == call.reader.static_batch):
        raise call.unsupported(f"expand of {x.shape} to {tuple(size)} (new axes, or an expanded batch axis)")
    reps = [1]
    for axis, (s, d) in enumerate(zip(size[1:], x.shape[1:]), start=1):
        if isinstance(s, SymSize) and d == 1 and s.ref is not None:
            # a size-1 axis broadcast to a dynamic length (a padding mask to (B, 1, S, S))
            x = call.emit(
                "size_like", [x, s.ref[0]], {"axis": axis, "ref_axis": s.ref[1], "mode": "broadcast"}, suffix=f"_{axis}"
            )
            reps.append(1)
        elif s == -1 or s == d or (isinstance(s, SymSize) and d is None):  # torch checked that the sizes agree
            reps.append(1)
        elif d == 1 and isinstance(s, int):
            reps.append(int(s))  # a size-1 axis broadcast to s: the same as repeating it s times
        else:
            raise call.unsupported(f"expand of {x.shape} to {tuple(size)}")
    if all(r == 1 for r in reps):
        return x
    return call.emit("tile", [x], {"reps": tuple(reps)})


@register("torch->ir", "aten.repeat")
def repeat_to_ir(call: AtenCall) -> Value | MergedBatch:
    reps = list(call.args["repeats"])
    c = call.args["self"]
    by_batch = reps and (
        reps[0] is BATCH or (call.reader.static_batch is not None and reps[0] == call.reader.static_batch)
    )
    if by_batch and isinstance(c, Const) and len(reps) == c.array.ndim and all(isinstance(r, int) for r in reps[1:]):
        # a constant repeated once per example along axis 0 (BLOOM's ALiBi slopes, (H, 1, S) to
        # (B * H, 1, S)): every example gets the same rows, the batch merged with axis 0
        if any(r != 1 for r in reps[1:]) and c.learned:
            raise call.unsupported("repeat of a parameter along axes other than the batch")
        tiled = c if all(r == 1 for r in reps[1:]) else Const(c.name, np.tile(c.array, [1, *reps[1:]]))
        value = call.reader.per_example_value(tiled.reshaped((1, *tiled.array.shape)))
        if tiled.array.shape[0] == 1:
            return call.emit("squeeze", [value], {"axis": 1})
        return MergedBatch(value, 0)
    x = call.value("self")
    if any(not isinstance(r, int) for r in reps):
        raise call.unsupported(
            f"repeat {tuple(reps)} of a rank-{x.rank} tensor (a repeat count that depends on the batch)"
        )
    if len(reps) != x.rank or reps[0] != 1:
        raise call.unsupported(f"repeat {tuple(reps)} of a rank-{x.rank} tensor (new axes, or a repeated batch axis)")
    if all(r == 1 for r in reps):
        return x
    return call.emit("tile", [x], {"reps": tuple(reps)})


_REDUCE = {"aten.mean": "mean", "aten.sum": "sum", "aten.amax": "max", "aten.amin": "min", "aten.prod": "prod"}


@register("torch->ir", *_REDUCE)
def reduce_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    dims = call.args.get("dim")
    if dims is None or dims == []:
        raise call.unsupported("a reduction over all axes (including the batch axis)")
    dims = [dims] if isinstance(dims, int) else list(dims)
    axes = tuple(sorted(d % x.rank for d in dims))
    _no_batch(call, axes[0], "reduction")
    keep = bool(call.args.get("keepdim", False))
    return call.emit("reduce", [x], {"mode": _REDUCE[call.key], "axes": axes, "keepdims": keep})


@register("torch->ir", "aten.all", "aten.any")
def all_any_to_ir(call: AtenCall) -> Value:
    """torch.all / torch.any over some axes: the minimum / maximum of the truth values."""
    x = call.value("self")
    dims = call.args.get("dim")
    if dims is None or dims == []:
        raise call.unsupported(f"{call.key} over all axes (including the batch axis)")
    dims = [dims] if isinstance(dims, int) else list(dims)
    axes = tuple(sorted(d % x.rank for d in dims))
    _no_batch(call, axes[0], call.key.removeprefix("aten."))
    if x.dtype != "bool":
        x = call.emit("cast", [x], {"dtype": "bool"}, suffix="_truth")
    mode = "min" if call.key == "aten.all" else "max"
    return call.emit("reduce", [x], {"mode": mode, "axes": axes, "keepdims": bool(call.args.get("keepdim", False))})


@register("torch->ir", "aten.to", "aten._to_copy", "aten.type_as")
def cast_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    dtype = call.args.get("dtype")
    if call.key == "aten.type_as":
        other: Any = call.args["other"]
        dtype = (
            other.dtype if isinstance(other, Value) else str(other.array.dtype) if isinstance(other, Const) else None
        )
    target = call.meta_dtypes[0] if dtype is None else dtype_name(dtype) if not isinstance(dtype, str) else dtype
    if target == x.dtype:
        return x
    return call.emit("cast", [x], {"dtype": target})


__all__ = ["operand", "reshape_target"]


@register("torch->ir", "aten.reflection_pad1d", "aten.reflection_pad2d", "aten.reflection_pad3d")
def reflection_pad_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    flat = [int(p) for p in call.args["padding"]]
    pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)][::-1]
    return call.emit(
        "reflect_pad",
        [x],
        {"pads": tuple([(0, 0)] * (x.rank - 2 - len(pairs)) + pairs), "data_format": "channels_first"},
    )


@register("torch->ir", "aten.replication_pad1d", "aten.replication_pad2d", "aten.replication_pad3d")
def replication_pad_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    flat = [int(p) for p in call.args["padding"]]
    pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)][::-1]  # from the last axis backwards
    return edge_pad(
        call,
        x,
        {x.rank - len(pairs) + i: pair for i, pair in enumerate(pairs) if pair != (0, 0)},
        what="replicate padding",
    )


@register("torch->ir", "aten.pad", "aten.constant_pad_nd")
def pad_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    mode = call.args.get("mode", "constant")
    if mode not in ("constant", "reflect", "replicate"):
        raise call.unsupported(f"{mode!r} padding (constant, reflect and replicate padding are translated)")
    flat = [int(p) for p in call.args["pad"]]
    # F.pad lists (begin, end) pairs from the last axis backwards
    pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)][::-1]
    if all(p == (0, 0) for p in pairs):
        return x
    while pairs[0] == (0, 0):  # F.pad(x, (0, 0, 0, 1, 0, 0)) lists axes it leaves alone (MobileBERT's batch axis)
        pairs = pairs[1:]
    data_format = "channels_first"
    if x.rank - len(pairs) == 1 and pairs[-1] == (0, 0) and mode == "constant":
        pairs, data_format = pairs[:-1], "channels_last"  # (B, H, W, C) padded on H and W (Swin's windows)
    first = x.rank - len(pairs) if data_format == "channels_first" else 1
    if first < 1 or (first == 1 and data_format == "channels_first"):
        raise call.unsupported(
            f"padding of {len(pairs)} trailing axes of a rank-{x.rank} tensor (only the spatial axes after N, C)"
        )
    pairs = [(0, 0)] * (first - 2) + pairs if data_format == "channels_first" else pairs
    if mode == "replicate":
        return edge_pad(
            call,
            x,
            {axis: pair for axis, pair in enumerate(pairs, start=2) if pair != (0, 0)},
            what="replicate padding",
        )
    if mode == "reflect":
        if any(b < 0 or e < 0 for b, e in pairs):
            raise call.unsupported("negative reflection padding")
        return call.emit("reflect_pad", [x], {"pads": tuple(pairs), "data_format": "channels_first"})
    value = float(call.args.get("value") or 0.0)
    if all(b <= 0 and e <= 0 for b, e in pairs):
        return call.emit("crop", [x], {"crops": tuple((-b, -e) for b, e in pairs), "data_format": data_format})
    if any(b < 0 or e < 0 for b, e in pairs):
        raise call.unsupported("padding that crops some axes and pads others")
    return call.emit("pad", [x], {"pads": tuple(pairs), "value": value, "data_format": data_format})


@register("torch->ir", "aten.roll")
def roll_to_ir(call: AtenCall) -> Value:
    """torch.roll over several dims is one roll per dim, in turn."""
    x = call.value("self")
    shifts = [int(s) for s in call.args["shifts"]]
    dims = call.args.get("dims") or []
    if len(dims) != len(shifts):
        raise call.unsupported("roll of the flattened tensor (no dims)")
    for i, (shift, dim) in enumerate(zip(shifts, dims)):
        axis = call.axis_of(dim, x.rank)
        _no_batch(call, axis, "roll")
        if shift % int(x.shape[axis]):
            x = call.emit("roll", [x], {"axis": axis, "shift": shift % int(x.shape[axis])}, suffix=f"_{i}" if i else "")
    return x


@register("torch->ir", "aten.unflatten")
def unflatten_to_ir(call: AtenCall) -> Value:
    x = call.value("self")
    axis = call.axis("dim", x.rank)
    _no_batch(call, axis, "unflatten")
    sizes = [int(s) for s in call.args["sizes"]]
    if -1 in sizes:
        sizes[sizes.index(-1)] = int(x.shape[axis]) // math.prod(s for s in sizes if s != -1)
    return call.emit("reshape", [x], {"shape": tuple(x.shape[1:axis]) + tuple(sizes) + tuple(x.shape[axis + 1 :])})


def _size_of(call: AtenCall, name: str) -> list[Any]:
    """The shape of tensor argument `name` as a size list (a graph value's batch axis: BATCH)."""
    other = call.args[name]
    if isinstance(other, Value):
        return [BATCH, *other.shape[1:]]
    if isinstance(other, Const):
        return list(other.array.shape)
    if isinstance(other, MergedBatch):
        return [other.size(i) for i in range(other.rank)]
    raise call.unsupported(f"argument {name!r} is {other!r}, expected a tensor")


@register("torch->ir", "aten.reshape_as", "aten.view_as")
def reshape_as_to_ir(call: AtenCall) -> Any:
    """x.reshape_as(other): a reshape to other's shape."""
    call.args = {"self": call.args["self"], "shape": _size_of(call, "other")}
    return reshape_to_ir(call)


@register("torch->ir", "aten.expand_as")
def expand_as_to_ir(call: AtenCall) -> Value:
    """x.expand_as(other): an expand to other's shape."""
    call.args = {"self": call.args["self"], "size": _size_of(call, "other")}
    return expand_to_ir(call)


@register("torch->ir", "aten.cumsum")
def cumsum_to_ir(call: AtenCall) -> Value:
    """torch.cumsum(x, dim, dtype): x is cast to `dtype` first (integers and bools sum as int64)."""
    x = call.value("self")
    axis = call.axis("dim", x.rank)
    _no_batch(call, axis, "cumsum")
    target = call.meta_dtypes[0]
    if target != x.dtype:
        x = call.emit("cast", [x], {"dtype": target}, suffix="_cast")
    return call.emit("cumsum", [x], {"axis": axis})


@register("torch->ir", "aten.argmax", "aten.argmin")
def arg_reduce_to_ir(call: AtenCall) -> Value:
    """torch.argmax / argmin along one dim (the first index among equal elements)."""
    x = call.value("self")
    if call.args.get("dim") is None:
        raise call.unsupported(
            f"{call.key.split('.')[1]} of the flattened tensor (no dim), which includes the batch axis"
        )
    axis = call.axis("dim", x.rank)
    _no_batch(call, axis, call.key.split(".")[1])
    keep = bool(call.args.get("keepdim", False))
    return call.emit("arg_reduce", [x], {"mode": call.key.split(".")[1], "axes": (axis,), "keepdims": keep})


@register("torch->ir", "aten.linalg_vector_norm")
def vector_norm_to_ir(call: AtenCall) -> Value:
    """torch.linalg.vector_norm(x, ord, dim, keepdim) (F.normalize's norm) over the flattened
    `dim` axes: 2 -> sqrt(sum(x^2)), 1 -> sum(|x|), inf -> max(|x|), -inf -> min(|x|),
    0 -> the count of non-zeros, p -> sum(|x|^p)^(1/p)."""
    x = call.value("self")
    if call.args.get("dtype") is not None and dtype_name(call.args["dtype"]) != x.dtype:
        x = call.emit("cast", [x], {"dtype": dtype_name(call.args["dtype"])}, suffix="_cast")
    dims = call.args.get("dim")
    if dims is None or dims == []:
        raise call.unsupported("a norm over all axes (including the batch axis)")
    axes = tuple(sorted({call.axis_of(d, x.rank) for d in ([dims] if isinstance(dims, int) else dims)}))
    _no_batch(call, axes[0], "norm")
    keep = bool(call.args.get("keepdim", False))
    p = float(call.args.get("ord", 2))

    def reduce(v: Value, mode: str) -> Value:
        return call.emit(
            "reduce",
            [v],
            {"mode": mode, "axes": axes, "keepdims": keep},
            suffix="_sum" if mode == "sum" else f"_{mode}",
        )

    if p == 2:
        return call.emit("sqrt", [reduce(call.emit("square", [x], suffix="_square"), "sum")])
    if p == 0:
        zero = call.reader.scalar_value(0.0, x.rank, x.dtype)
        nonzero = call.emit(
            "cast",
            [call.emit("compare", [x, zero], {"mode": "not_equal"}, suffix="_nonzero")],
            {"dtype": x.dtype},
            suffix="_count",
        )
        return reduce(nonzero, "sum")
    a = call.emit("abs", [x], suffix="_abs")
    if p == 1:
        return reduce(a, "sum")
    if math.isinf(p):
        return reduce(a, "max" if p > 0 else "min")
    powered = call.emit("pow", [a, call.reader.scalar_value(p, x.rank)], suffix="_pow")
    total = reduce(powered, "sum")
    return call.emit("pow", [total, call.reader.scalar_value(1.0 / p, total.rank)])


@register("torch->ir", "aten.gather")
def gather_to_ir(call: AtenCall) -> Value:
    """torch.gather(x, dim, index): out[..., i, ...] = x[..., index[..., i, ...], ...]. The index
    may be smaller than x on the other axes (x is cut to its size there, as torch reads it)."""
    index = call.value("index")
    src = call.args["self"]
    x = call.reader.constant_value(src, index.rank) if isinstance(src, Const) else call.value("self")
    if x.rank != index.rank:
        raise call.unsupported(f"gather from a rank-{x.rank} tensor with a rank-{index.rank} index")
    axis = call.axis("dim", x.rank)
    _no_batch(call, axis, "gather")
    for d in range(1, x.rank):
        if d != axis and x.shape[d] is not None and index.shape[d] is not None and index.shape[d] < x.shape[d]:
            x = call.emit(
                "slice", [x], {"axis": d, "start": 0, "stop": int(index.shape[d]), "step": 1}, suffix=f"_cut{d}"
            )
    return call.emit("gather", [x, index], {"axis": axis})
