"""Keras 3 operations in a functional graph: `keras.ops.mean(x, axis=1)`, `x[:, 0]`, `ops.pad`...

A Keras 3 functional config records an operation on symbolic tensors like a layer call:
class name (`Mean`, `GetItem`), module (`keras.src.ops.numpy`, `.nn`, `.core`, `.math`),
the constructor arguments in `config` (`axis`, `keepdims`, `newshape`, `pad_width`) and the
call arguments in the inbound node (tensors, Python numbers, slices as `__slice__` dicts).
They are registered as "ops.<class>" (ops.Reshape is keras.ops.reshape, not the Reshape
layer). The semantics are numpy's, as Keras documents them (keras/src/ops/numpy.py).

The helpers at the top (reductions, indexing, padding, arithmetic with Python numbers) are
shared with the tf.keras 2 TensorFlow functions of `tf_ops.py`.
"""

from __future__ import annotations

from numbers import Number
from typing import Any

import numpy as np

from ...graph import Value
from ..registry import register
from .calls import LayerCall

_MISSING = object()


def param(call: LayerCall, name: str, index: int | None = None, default: Any = _MISSING) -> Any:
    """An operation's argument: from its config, its call kwargs or positional args."""
    if name in call.config:
        return call.config[name]
    if name in call.kwargs:
        return call.kwargs[name]
    if index is not None and index < len(call.args):
        return call.args[index]
    if default is _MISSING:
        raise call.error(f"has no argument {name!r}")
    return default


def is_number(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


def axes_of(call: LayerCall, axis: Any, rank: int, *, what: str) -> tuple[int, ...]:
    """Normalised non-batch axes; None (all axes) and the batch axis are refused."""
    if axis is None:
        raise call.error(f"{what} over all axes, the batch axis included, is not supported")
    axes = tuple(sorted({int(a) % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])}))
    if 0 in axes:
        raise call.error(f"{what} over the batch axis is not supported")
    return axes


def constant(call: LayerCall, value: Any, dtype: str, suffix: str) -> Value:
    """A scalar (or small array) that does not depend on the inputs."""
    array = np.asarray(value, dtype=dtype)
    return call.emit("constant", [], {"trainable": False}, {"value": array}, suffix=suffix)


def constant_value(value: Any) -> np.ndarray | None:
    """The array of a Value computed from no input (a `constant` node), for folding at
    conversion time (a static shape read with tf.shape and indexed); None otherwise, and for a
    learned one (a trainable table sliced in the graph stays a parameter, sliced at run time)."""
    node = value.producer if isinstance(value, Value) else None
    if node is None or node.op != "constant" or node.attrs.get("per_example") or node.attrs.get("trainable"):
        return None
    return node.weights["value"]


# -- reductions ---------------------------------------------------------------------------------
def reduce_nodes(call: LayerCall, x: Value, mode: str, axis: Any, keepdims: bool) -> Value:
    axes = axes_of(call, axis, x.rank, what=f"a {mode} reduction")
    if mode == "prod" and len(axes) > 1:  # one product per axis, the last axis first
        for i, a in enumerate(sorted(axes, reverse=True)):
            x = call.emit(
                "reduce", [x], {"mode": mode, "axes": (a,), "keepdims": bool(keepdims)}, suffix=f"_{i}" if i else ""
            )
        return x
    return call.emit("reduce", [x], {"mode": mode, "axes": axes, "keepdims": bool(keepdims)})


# -- indexing -----------------------------------------------------------------------------------
def _index_item(call: LayerCall, item: Any) -> Any:
    """One entry of a serialized index: a slice, Ellipsis, None (newaxis) or an int."""
    if isinstance(item, dict):
        cls = item.get("class_name")
        if cls == "__ellipsis__":
            return Ellipsis
        cfg = item.get("config", item) if cls == "__slice__" else item
        if {"start", "stop", "step"} <= set(cfg):
            return slice(cfg["start"], cfg["stop"], cfg["step"])
    if item is None or (isinstance(item, int) and not isinstance(item, bool)):
        return item
    raise call.error(f"indexing with {item!r} (a tensor or a list of indices) is not supported")


def getitem_nodes(call: LayerCall, x: Value, key: Any) -> Value:
    """x[key] with ints (negative too), slices (positive steps), None/newaxis and Ellipsis,
    as select / slice / expand_dims nodes, one per indexed axis; a constant is indexed now."""
    items = [_index_item(call, k) for k in (key if isinstance(key, (list, tuple)) else [key])]
    folded = constant_value(x)
    if folded is not None:  # a constant has no batch axis: plain numpy indexing
        return call.emit("constant", [], {"trainable": False}, {"value": np.asarray(folded[tuple(items)])})
    if items.count(Ellipsis) > 1:
        raise call.error("an index with more than one Ellipsis")
    used = sum(1 for k in items if k is not None and k is not Ellipsis)
    if used > x.rank:
        raise call.error(f"too many indices ({used}) for a tensor of rank {x.rank}")
    if Ellipsis in items:
        i = items.index(Ellipsis)
        items[i : i + 1] = [slice(None)] * (x.rank - used)
    source = x
    axis = 0  # the axis of the current tensor the next item applies to
    for n, item in enumerate(items):
        suffix = f"_{n}" if n else ""
        if item is None:
            if axis == 0:
                raise call.error("inserting an axis before the batch axis is not supported")
            x = call.emit("expand_dims", [x], {"axis": axis}, suffix=suffix)
            axis += 1
            continue
        if axis == 0:
            if item != slice(None) and item != slice(None, None, 1):
                raise call.error(f"indexing the batch axis with {item!r} is not supported")
            axis += 1
            continue
        if isinstance(item, int):
            size = x.shape[axis]
            if size is not None and not -size <= item < size:
                raise call.error(f"index {item} is out of range for axis {axis} of size {size}")
            x = call.emit("select", [x], {"axis": axis, "index": item}, suffix=suffix)
            continue
        step = 1 if item.step is None else int(item.step)
        if step <= 0:
            raise call.error(f"a slice with step {step} is not supported")
        if item.start in (None, 0) and item.stop is None and step == 1:
            axis += 1
            continue
        attrs = {"axis": axis, "start": int(item.start or 0), "stop": item.stop, "step": step}
        x = call.emit("slice", [x], attrs, suffix=suffix)
        axis += 1
    return call.emit("identity", [x]) if x is source else x


def take_nodes(call: LayerCall, x: Value, indices: Any, axis: Any) -> Value:
    if isinstance(indices, Value) or axis is None:
        raise call.error("take with computed indices or without an axis is not supported")
    axis = int(axis) % x.rank
    if axis == 0:
        raise call.error("take along the batch axis is not supported")
    if isinstance(indices, int):
        return call.emit("select", [x], {"axis": axis, "index": indices})
    flat = np.asarray(indices)
    if flat.ndim != 1:
        raise call.error(f"take with indices of shape {flat.shape} is not supported (one list of indices only)")
    return call.emit("take", [x], {"axis": axis, "indices": tuple(int(i) for i in flat)})


# -- padding ------------------------------------------------------------------------------------
def _pad_pairs(call: LayerCall, width: Any, rank: int) -> list[tuple[int, int]]:
    w = np.asarray(width, dtype=np.int64)
    if w.ndim == 0:
        w = np.full((rank, 2), int(w))
    elif w.shape == (2,) or w.shape == (1, 2):
        w = np.tile(w.reshape(1, 2), (rank, 1))
    if w.shape != (rank, 2) or (w < 0).any():
        raise call.error(f"pad widths {width!r} do not fit a tensor of rank {rank}")
    return [(int(b), int(e)) for b, e in w]


def _mirror(call: LayerCall, x: Value, axis: int, begin: int, end: int, symmetric: bool, n: int) -> Value:
    """Reflect (edge not repeated) or symmetric (edge repeated) padding of one axis, as the
    mirrored single-element slices concatenated around x."""
    size = x.shape[axis]
    need = max(begin, end) + (0 if symmetric else 1)
    if size is not None and need > size:
        raise call.error(
            f"mirror padding ({begin}, {end}) needs at least {need} elements on axis {axis}, it has {size}"
        )
    shift = 0 if symmetric else 1
    parts = []
    for i in reversed(range(shift, begin + shift)):
        parts.append(call.emit("slice", [x], {"axis": axis, "start": i, "stop": i + 1}, suffix=f"_a{n}b{i}"))
    parts.append(x)
    for k in range(end):
        start = -1 - k - shift
        stop = start + 1
        attrs = {"axis": axis, "start": start, "stop": stop if stop != 0 else None}
        parts.append(call.emit("slice", [x], attrs, suffix=f"_a{n}e{k}"))
    return call.emit("concat", parts, {"axis": axis}, suffix=f"_a{n}")


def pad_nodes(call: LayerCall, x: Value, width: Any, mode: str, value: Any) -> Value:
    """numpy/TF padding: 'constant' (any value), 'reflect', 'symmetric'."""
    mode = str(mode).lower()
    pairs = _pad_pairs(call, width, x.rank)
    if pairs[0] != (0, 0):
        raise call.error("padding the batch axis is not supported")
    padded = [a for a, p in enumerate(pairs) if p != (0, 0)]
    if not padded:
        return call.emit("identity", [x])
    if mode == "constant":
        value = 0.0 if value is None else value
        if isinstance(value, Value) or not is_number(value):
            raise call.error(f"padding with the value {value!r} is not supported")
        # the spatial pad op: channels_last pads axes 1..r-2, channels_first pads 2..r-1
        for fmt, axes in (("channels_last", range(1, x.rank - 1)), ("channels_first", range(2, x.rank))):
            if x.rank >= 3 and set(padded) <= set(axes):
                pads = tuple(pairs[a] for a in axes)
                return call.emit("pad", [x], {"pads": pads, "value": float(value), "data_format": fmt})
        if x.rank == 2:  # (batch, features), as ECA pads its pooled channels: one channels-first step
            row = call.emit("expand_dims", [x], {"axis": 1}, suffix="_row")
            attrs = {"pads": (pairs[1],), "value": float(value), "data_format": "channels_first"}
            padded_row = call.emit("pad", [row], attrs, suffix="_padded")
            return call.emit("squeeze", [padded_row], {"axis": 1})
        raise call.error(f"constant padding of axes {padded} of a rank-{x.rank} tensor is not supported")
    if mode not in ("reflect", "symmetric"):
        raise call.error(f"padding mode {mode!r} is not supported")
    if mode == "reflect" and x.rank >= 3 and set(padded) <= set(range(1, x.rank - 1)):
        known = all(x.shape[a] is not None and max(pairs[a]) < x.shape[a] for a in padded)
        if known:
            pads = tuple(pairs[a] for a in range(1, x.rank - 1))
            return call.emit("reflect_pad", [x], {"pads": pads, "data_format": "channels_last"})
    for n, a in enumerate(padded):
        x = _mirror(call, x, a, *pairs[a], mode == "symmetric", n)
    return x


# -- arithmetic ---------------------------------------------------------------------------------
def _serialized_array(call: LayerCall, value: Any, other: Any) -> Any:
    """A constant tensor Keras serialized into the call (`__tensor__` / `__numpy__`): a number
    if it holds one value, else a constant node (no batch axis; it broadcasts)."""
    if not (isinstance(value, dict) and value.get("class_name") in ("__tensor__", "__numpy__")):
        return value
    cfg = value.get("config", {})
    dtype = str(cfg.get("dtype") or (other.dtype if isinstance(other, Value) else "float32"))
    array = np.asarray(cfg.get("value"), dtype=dtype)
    if array.size == 1:
        return array.reshape(()).item()
    return call.emit("constant", [], {"trainable": False}, {"value": array}, suffix="_value")


_COMMUTATIVE = {"add", "mul", "maximum", "minimum"}
_FLIPPED = {"greater": "less", "less": "greater", "greater_equal": "less_equal", "less_equal": "greater_equal"}


_NUMPY_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.true_divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": np.power,
    "compare:equal": np.equal,
    "compare:not_equal": np.not_equal,
    "compare:greater": np.greater,
    "compare:greater_equal": np.greater_equal,
    "compare:less": np.less,
    "compare:less_equal": np.less_equal,
}


def _fixed(value: Any) -> np.ndarray | None:
    """The array of a number or of a constant Value (a static size read with tf.shape), else None."""
    if isinstance(value, Value):
        folded = constant_value(value)
        return None if folded is None or value.producer.attrs.get("trainable") else folded
    return np.asarray(value) if is_number(value) else None


def folded_constant(call: LayerCall, array: np.ndarray) -> Value:
    """An operation on fixed values (kecam's `cast(shape[1] * shape[2]) ** 0.5`), computed at
    conversion time, as numpy (and TensorFlow, for the dtypes that reach here) would."""
    return call.emit("constant", [], {"trainable": False}, {"value": np.asarray(array)})


def binary_nodes(call: LayerCall, op: str, a: Any, b: Any) -> Value:
    """a <op> b for tensors or Python numbers (numpy broadcasting); op is an IR arithmetic op
    kind or "compare:<mode>". A number becomes an affine/clip node where one exists; an
    operation on two fixed values is computed at conversion time."""
    compare = op.startswith("compare:")
    a, b = (_serialized_array(call, v, a if v is b else b) for v in (a, b))
    fa, fb = _fixed(a), _fixed(b)
    if fa is not None and fb is not None and (isinstance(a, Value) or isinstance(b, Value)):
        if isinstance(a, Value) != isinstance(b, Value):  # a Python number takes the tensor's dtype
            fa, fb = (fa.astype(fb.dtype), fb) if not isinstance(a, Value) else (fa, fb.astype(fa.dtype))
        return folded_constant(call, _NUMPY_BINARY[op](fa, fb))
    if not isinstance(a, Value) and not isinstance(b, Value):
        raise call.error("an operation on two constants")
    if isinstance(a, Value) and isinstance(b, Value):
        if a.rank < b.rank:  # the layout pass aligns the operands to the first (highest-rank) one
            if op in _COMMUTATIVE or op in ("compare:equal", "compare:not_equal"):
                a, b = b, a
            elif compare:
                mode = op.split(":")[1]
                a, b, op = b, a, "compare:" + _FLIPPED[mode]
            elif op == "sub":
                return call.emit("add", [call.emit("neg", [b], suffix="_neg"), a])
            else:
                raise call.error(f"{op} of a rank-{a.rank} tensor by a rank-{b.rank} tensor is not supported")
        if compare:
            return call.emit("compare", [a, b], {"mode": op.split(":")[1]})
        return call.emit(op, [a, b])
    c_first = not isinstance(a, Value)
    x, c = (b, a) if c_first else (a, b)
    if not is_number(c):
        raise call.error(f"{op} with the operand {c!r} is not supported")
    c = float(c) if not (isinstance(c, int) and x.dtype.startswith(("int", "uint", "bool"))) else int(c)
    if compare:
        mode = op.split(":")[1]
        if c_first:
            mode = _FLIPPED.get(mode, mode)
        return call.emit("compare", [x, constant(call, c, x.dtype, "_value")], {"mode": mode})
    if x.dtype.startswith(("int", "uint", "bool")):
        if c_first and op not in _COMMUTATIVE:
            raise call.error(f"{op} of a constant by an integer tensor is not supported")
        return call.emit(op, [x, constant(call, c, x.dtype, "_value")])
    if op == "add":
        return call.emit("scale_shift", [x], {"offset": c})
    if op == "sub":
        return call.emit("scale_shift", [x], {"scale": -1.0, "offset": c} if c_first else {"offset": -c})
    if op == "mul":
        return call.emit("scale_shift", [x], {"scale": c})
    if op == "div" and not c_first:
        if c == 0.0:
            raise call.error("divides by the constant 0")
        return call.emit("scale_shift", [x], {"scale": 1.0 / c})
    if op in ("maximum", "minimum"):
        return call.emit("clip", [x], {"min": c} if op == "maximum" else {"max": c})
    if op == "pow" and not c_first:
        if c == 2.0:
            return call.emit("square", [x])
        if c == 0.5:
            return call.emit("sqrt", [x])
        if c == 1.0:
            return call.emit("identity", [x])
        return call.emit("pow", [x, constant(call, c, x.dtype, "_exponent")])
    if op == "pow" and c > 0:  # c ** x = exp(x * log(c))
        return call.emit("exp", [call.emit("scale_shift", [x], {"scale": float(np.log(c))}, suffix="_log")])
    if op == "div":  # c / x
        inverse = call.emit("pow", [x, constant(call, -1.0, x.dtype, "_m1")], suffix="_inv" if c != 1.0 else "")
        return inverse if c == 1.0 else call.emit("scale_shift", [inverse], {"scale": c})
    raise call.error(f"{op} of the constant {c!r} and a tensor is not supported")


# -- translators: reductions --------------------------------------------------------------------
_REDUCTIONS = {
    "ops.Mean": "mean",
    "ops.Sum": "sum",
    "ops.Max": "max",
    "ops.Amax": "max",
    "ops.Min": "min",
    "ops.Amin": "min",
    "ops.Prod": "prod",
}


@register("keras->ir", *_REDUCTIONS)
def reduction_from_keras_ops(call: LayerCall) -> Value:
    if call.get("initial") is not None:
        raise call.error("a reduction with an initial value is not supported")
    call.get("dtype")
    return reduce_nodes(call, call.x, _REDUCTIONS[call.class_name], call.get("axis"), bool(call.get("keepdims", False)))


# -- translators: shape -------------------------------------------------------------------------
def reshape_target(call: LayerCall, x: Value, shape: Any) -> tuple[int, ...]:
    """The non-batch target of a reshape whose first entry is the batch (-1/None or its size)."""
    shape = [(-1 if d is None else int(d)) for d in shape]
    if not shape:
        raise call.error("reshape to a scalar is not supported")
    rest = shape[1:]
    if shape[0] != -1 and -1 not in rest and x.shape[0] is not None and shape[0] != x.shape[0]:
        raise call.error(f"reshape to {tuple(shape)} changes the batch size")
    if shape[0] != -1 and -1 in rest:
        raise call.error(f"reshape to {tuple(shape)} with a fixed batch size is not supported")
    known = [d for d in x.shape[1:]]
    if shape[0] == -1 and -1 not in rest and None not in known and int(np.prod(rest)) != int(np.prod(known)):
        raise call.error(
            f"reshape of {x.shape} to {tuple(shape)} moves a part of the axes into or out of the batch axis "
            "by a factor that is not a whole number"
        )
    return tuple(rest)


def batch_factor(x: Value, shape: Any) -> int:
    """How many times a reshape to `shape` (batch first, as -1) multiplies the batch: k > 1
    folds k rows of every example into the batch (MobileViT's patches, window attention),
    -k unfolds them back, 1 leaves the batch alone (or the sizes are not known)."""
    shape = [(-1 if d is None else int(d)) for d in shape]
    rest, known = shape[1:], x.shape[1:]
    if not shape or shape[0] != -1 or -1 in rest or None in known or not rest:
        return 1
    have, want = int(np.prod(known)), int(np.prod(rest))
    if want == 0 or have == want:
        return 1
    if have % want == 0:
        return have // want
    if want % have == 0:
        return -(want // have)
    return 1


def reshape_nodes(call: LayerCall, x: Value, shape: Any) -> Value:
    """A reshape whose first entry is the batch: within the example, or moving whole rows of
    each example into the batch axis and back (a batch of B images of H rows reshaped to
    (-1, W, C) is B * H rows), row-major like the source."""
    k = batch_factor(x, shape)
    rest = tuple(int(d) for d in shape[1:])
    if k > 1:
        split = call.emit("reshape", [x], {"shape": (k, *rest)}, suffix="_rows")
        return call.emit("fold_time", [split])
    if k < -1:
        rows = call.emit("unfold_time", [x], {"steps": -k}, suffix="_rows")
        return call.emit("reshape", [rows], {"shape": rest})
    return call.emit("reshape", [x], {"shape": reshape_target(call, x, shape)})


@register("keras->ir", "ops.Reshape")
def reshape_from_keras_ops(call: LayerCall) -> Value:
    return reshape_nodes(call, call.x, call.get("newshape"))


def transpose_nodes(call: LayerCall, x: Value, perm: Any) -> Value:
    perm = tuple(range(x.rank))[::-1] if perm is None else tuple(int(p) % x.rank for p in perm)
    if perm[0] != 0 and not from_constants(x):
        raise call.error(f"a transpose {perm} that moves the batch axis is not supported")
    if perm == tuple(range(x.rank)):
        return call.emit("identity", [x])
    return call.emit("transpose", [x], {"perm": perm})


@register("keras->ir", "ops.Transpose")
def transpose_from_keras_ops(call: LayerCall) -> Value:
    return transpose_nodes(call, call.x, call.get("axes"))


def squeeze_nodes(call: LayerCall, x: Value, axis: Any) -> Value:
    if axis is None:
        axes = [i for i, d in enumerate(x.shape) if i and d == 1]
    else:
        axes = list(axes_of(call, axis, x.rank, what="squeeze"))
    if not axes:
        return call.emit("identity", [x])
    for i, a in enumerate(sorted(axes, reverse=True)):
        x = call.emit("squeeze", [x], {"axis": a}, suffix=f"_{i}" if i else "")
    return x


@register("keras->ir", "ops.Squeeze")
def squeeze_from_keras_ops(call: LayerCall) -> Value:
    return squeeze_nodes(call, call.x, call.get("axis"))


def from_constants(value: Value) -> bool:
    """Whether `value` is computed from constants (learned or not) alone, with no model input: its
    first axis is not a batch (Swin V2's pair-wise position table, run through its meta MLP)."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if v.producer is None:
            return False
        stack.extend(v.producer.inputs)
    return True


def expand_dims_nodes(call: LayerCall, x: Value, axis: Any) -> Value:
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    rank = x.rank + len(axes)
    for i, a in enumerate(sorted(int(a) % rank for a in axes)):
        if a == 0 and not from_constants(x):
            raise call.error("inserting an axis before the batch axis is not supported")
        x = call.emit("expand_dims", [x], {"axis": a}, suffix=f"_{i}" if i else "")
    return x


@register("keras->ir", "ops.ExpandDims")
def expand_dims_from_keras_ops(call: LayerCall) -> Value:
    return expand_dims_nodes(call, call.x, call.get("axis"))


@register("keras->ir", "ops.GetItem")
def getitem_from_keras_ops(call: LayerCall) -> Value:
    return getitem_nodes(call, call.x, param(call, "key", 1))


@register("keras->ir", "ops.Take")
def take_from_keras_ops(call: LayerCall) -> Value:
    return take_nodes(call, call.x, param(call, "indices", 1), call.get("axis"))


@register("keras->ir", "ops.Pad")
def pad_from_keras_ops(call: LayerCall) -> Value:
    return pad_nodes(
        call, call.x, call.get("pad_width"), call.get("mode", "constant"), call.kwargs.get("constant_values")
    )


@register("keras->ir", "ops.Concatenate")
def concatenate_from_keras_ops(call: LayerCall) -> Value:
    ins = call.inputs
    axis = int(call.get("axis", 0)) % ins[0].rank
    if axis == 0:
        raise call.error("concatenating along the batch axis is not supported")
    return call.emit("concat", ins, {"axis": axis})


def stack_nodes(call: LayerCall, ins: list[Value], axis: int) -> Value:
    axis = int(axis) % (ins[0].rank + 1)
    if axis == 0:
        raise call.error("stacking along the batch axis is not supported")
    return call.emit("stack", ins, {"axis": axis})


@register("keras->ir", "ops.Stack")
def stack_from_keras_ops(call: LayerCall) -> Value:
    return stack_nodes(call, call.inputs, call.get("axis", 0))


def split_nodes(call: LayerCall, x: Value, sections: Any, axis: int, *, sizes: bool = False) -> list[Value]:
    """numpy split (a count of equal parts, or split points) or TF split (a count, or sizes)."""
    axis = int(axis) % x.rank
    n = x.shape[axis]
    if axis == 0 or n is None:
        raise call.error(f"splitting axis {axis} of shape {x.shape} is not supported")
    if isinstance(sections, int):
        if n % sections:
            raise call.error(f"cannot split {n} elements into {sections} equal parts")
        parts = (n // sections,) * sections
    elif sizes:
        parts = tuple(int(s) for s in sections)
        if -1 in parts:
            parts = tuple(n - (sum(parts) + 1) if s == -1 else s for s in parts)
    else:
        points = [0, *(int(p) for p in sections), n]
        parts = tuple(b - a for a, b in zip(points, points[1:]))
    if len(parts) == 1:  # one part: the tensor itself (EdgeNeXt splits its channels in 1 + n parts)
        return [call.emit("identity", [x])]
    node_out = call.emit("split", [x], {"axis": axis, "sizes": parts})
    return list(node_out.producer.outputs)


@register("keras->ir", "ops.Split")
def split_from_keras_ops(call: LayerCall) -> list[Value]:
    return split_nodes(call, call.x, call.get("indices_or_sections"), call.get("axis", 0))


@register("keras->ir", "ops.Matmul")
def matmul_from_keras_ops(call: LayerCall) -> Value:
    a, b = param(call, "x1", 0), param(call, "x2", 1)
    if not isinstance(a, Value) or not isinstance(b, Value) or a.rank < 2 or b.rank < 2:
        raise call.error("matmul of a constant or of a vector is not supported")
    return call.emit("matmul", [a, b])


def einsum_nodes(call: LayerCall, equation: str, ins: list[Value]) -> Value:
    equation = equation.replace(" ", "")
    if "->" not in equation or "." in equation:
        raise call.error(f"einsum {equation!r} without an explicit output or with '...' is not supported")
    return call.emit("einsum", ins, {"equation": equation})


@register("keras->ir", "ops.Einsum")
def einsum_from_keras_ops(call: LayerCall) -> Value:
    return einsum_nodes(call, call.get("subscripts"), call.inputs)


@register("keras->ir", "ops.Cast")
def cast_from_keras_ops(call: LayerCall) -> Value:
    dtype = call.get("dtype")
    dtype = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else str(dtype)
    return cast_nodes(call, call.x, dtype)


def cast_nodes(call: LayerCall, x: Value, dtype: str) -> Value:
    """x as `dtype`; a fixed value is converted at conversion time."""
    fixed = _fixed(x)
    if fixed is not None:
        return folded_constant(call, fixed.astype(dtype))
    return call.emit("cast", [x], {"dtype": dtype})


# -- translators: element-wise ------------------------------------------------------------------
_UNARY: dict[str, tuple[str, dict[str, Any]]] = {
    "ops.Relu": ("relu", {}),
    "ops.Relu6": ("relu", {"max_value": 6.0}),
    "ops.Sigmoid": ("sigmoid", {}),
    "ops.Softplus": ("softplus", {}),
    "ops.Softsign": ("softsign", {}),
    "ops.Silu": ("silu", {}),
    "ops.Swish": ("silu", {}),
    "ops.LogSigmoid": ("log_sigmoid", {}),
    "ops.HardSigmoid": ("hard_sigmoid", {"slope": 1.0 / 6.0, "offset": 0.5}),
    "ops.HardSilu": ("hard_silu", {}),
    "ops.HardSwish": ("hard_silu", {}),
    "ops.Selu": ("selu", {}),
    "ops.Tanh": ("tanh", {}),
    "ops.Exp": ("exp", {}),
    "ops.Log": ("log", {}),
    "ops.Sqrt": ("sqrt", {}),
    "ops.Rsqrt": ("rsqrt", {}),
    "ops.Square": ("square", {}),
    "ops.Abs": ("abs", {}),
    "ops.Absolute": ("abs", {}),
    "ops.Negative": ("neg", {}),
    "ops.Erf": ("erf", {}),
    "ops.Sin": ("sin", {}),
    "ops.Cos": ("cos", {}),
    "ops.Identity": ("identity", {}),
    "ops.StopGradient": ("identity", {}),
}


@register("keras->ir", *_UNARY)
def unary_from_keras_ops(call: LayerCall) -> Value:
    op, attrs = _UNARY[call.class_name]
    return call.emit(op, [call.x], dict(attrs))


@register("keras->ir", "ops.Gelu")
def gelu_from_keras_ops(call: LayerCall) -> Value:
    # keras.ops.gelu defaults to the tanh approximation (keras.activations.gelu does not)
    return call.emit("gelu", [call.x], {"approximate": bool(call.get("approximate", True))})


@register("keras->ir", "ops.LeakyRelu")
def leaky_relu_from_keras_ops(call: LayerCall) -> Value:
    return call.emit("relu", [call.x], {"negative_slope": float(call.get("negative_slope", 0.2))})


@register("keras->ir", "ops.Elu", "ops.Celu")
def elu_from_keras_ops(call: LayerCall) -> Value:
    return call.emit(call.class_name[4:].lower(), [call.x], {"alpha": float(call.get("alpha", 1.0))})


@register("keras->ir", "ops.Softmax", "ops.LogSoftmax")
def softmax_from_keras_ops(call: LayerCall) -> Value:
    x = call.x
    axis = call.get("axis", -1)
    axes = tuple(sorted({int(a) % x.rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])}))
    if 0 in axes:
        raise call.error("a softmax over the batch axis is not supported")
    return call.emit("softmax" if call.class_name == "ops.Softmax" else "log_softmax", [x], {"axis": axes})


@register("keras->ir", "ops.Clip")
def clip_from_keras_ops(call: LayerCall) -> Value:
    lo, hi = call.get("x_min"), call.get("x_max")
    if not all(v is None or is_number(v) for v in (lo, hi)):
        raise call.error("clip with tensor bounds is not supported")
    return call.emit(
        "clip", [call.x], {"min": None if lo is None else float(lo), "max": None if hi is None else float(hi)}
    )


_BINARY = {
    "ops.Add": "add",
    "ops.Subtract": "sub",
    "ops.Multiply": "mul",
    "ops.Divide": "div",
    "ops.TrueDivide": "div",
    "ops.Power": "pow",
    "ops.Maximum": "maximum",
    "ops.Minimum": "minimum",
}
_COMPARISONS = {
    "ops.Equal": "equal",
    "ops.NotEqual": "not_equal",
    "ops.Greater": "greater",
    "ops.GreaterEqual": "greater_equal",
    "ops.Less": "less",
    "ops.LessEqual": "less_equal",
}


@register("keras->ir", *_BINARY)
def binary_from_keras_ops(call: LayerCall) -> Value:
    return binary_nodes(call, _BINARY[call.class_name], param(call, "x1", 0), param(call, "x2", 1))


@register("keras->ir", *[k for k in _COMPARISONS if k != "ops.NotEqual"])
def comparison_from_keras_ops(call: LayerCall) -> Value:
    return binary_nodes(call, "compare:" + _COMPARISONS[call.class_name], param(call, "x1", 0), param(call, "x2", 1))


@register("keras->ir", "ops.Where")
def where_from_keras_ops(call: LayerCall) -> Value:
    cond, a, b = param(call, "condition", 0), param(call, "x1", 1, None), param(call, "x2", 2, None)
    if not isinstance(cond, Value) or a is None or b is None:
        raise call.error("where with a constant condition or without both branches is not supported")
    ref = a if isinstance(a, Value) else b
    if not isinstance(ref, Value):
        raise call.error("where between two constants is not supported")
    ins = [v if isinstance(v, Value) else constant(call, v, ref.dtype, f"_{k}") for k, v in (("a", a), ("b", b))]
    if any(v.rank > cond.rank for v in ins):
        raise call.error("where with a condition of lower rank than its branches is not supported")
    return call.emit("where", [cond, *ins])
