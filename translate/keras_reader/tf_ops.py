"""tf.keras 2 TFOpLambda / SlicingOpLambda layers: TensorFlow functions called on symbolic tensors.

`tf.reduce_mean(x, axis=1)` or `x[:, 0]` in a tf.keras 2 functional model is saved as a layer
naming the TF function (`math.reduce_mean`, `__operators__.getitem`) with the first argument as
the inbound tensor and the others in the call kwargs: no code, so they are read without
--trust-code, registered as "tf.<function>". Semantics from the TF API docs: reductions with
`keepdims`, `tf.split` with a count or sizes, `tf.image.resize` (half-pixel centres),
`tf.nn.gelu(approximate=False)` by default (unlike keras.ops.gelu).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...graph import Value
from ..registry import register
from .calls import LayerCall
from .keras_ops import (
    axes_of,
    binary_nodes,
    cast_nodes,
    constant_value,
    einsum_nodes,
    expand_dims_nodes,
    getitem_nodes,
    is_number,
    pad_nodes,
    reduce_nodes,
    reshape_nodes,
    split_nodes,
    squeeze_nodes,
    stack_nodes,
    take_nodes,
    transpose_nodes,
)


def _first(call: LayerCall) -> Any:
    """The function's first argument (the layer's inbound tensor, or a constant)."""
    return call.args[0] if call.args else None


def _kw(call: LayerCall, *names: str, default: Any = None) -> Any:
    for name in names:
        if name in call.kwargs:
            return call.kwargs[name]
    return default


def _tensor(call: LayerCall) -> Value:
    x = _first(call)
    if not isinstance(x, Value):
        raise call.error(f"is called on {x!r}, not a tensor")
    return x


def _no_extra(call: LayerCall, *known: str) -> None:
    """Refuse arguments that would change the result and that the translator does not read."""
    extra = {k: v for k, v in call.kwargs.items() if k not in (*known, "name") and v not in (None, False)}
    if extra:
        raise call.error(f"called with {sorted(extra)}, which ktorch does not read")


# -- reductions ---------------------------------------------------------------------------------
_REDUCTIONS = {
    "tf.math.reduce_mean": "mean",
    "tf.math.reduce_sum": "sum",
    "tf.math.reduce_max": "max",
    "tf.math.reduce_min": "min",
    "tf.math.reduce_prod": "prod",
    "tf.compat.v1.reduce_mean": "mean",
    "tf.compat.v1.reduce_sum": "sum",
    "tf.compat.v1.reduce_max": "max",
}


_LIST_REDUCTIONS = {"sum": "add", "max": "maximum", "min": "minimum", "mean": "average", "prod": "mul"}


@register("keras->ir", *_REDUCTIONS)
def reduction_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "axis", "keepdims", "keep_dims", "reduction_indices")
    axis = _kw(call, "axis", "reduction_indices")
    keepdims = bool(_kw(call, "keepdims", "keep_dims", default=False))
    mode = _REDUCTIONS[call.class_name]
    first = _first(call)
    if isinstance(first, list) and all(isinstance(v, Value) for v in first) and len(first) > 1:
        # a list of tensors is stacked on a new axis 0 first: reducing that axis (ResNeSt's
        # tf.reduce_sum(splits, axis=0)) combines the tensors element-wise
        axes = sorted(int(a) % (first[0].rank + 1) for a in (axis if isinstance(axis, (list, tuple)) else [axis]))
        if axis is None or axes[0] != 0 or keepdims:
            raise call.error(f"a {mode} over a list of tensors is supported along axis 0 only, without keepdims")
        combined = call.emit(_LIST_REDUCTIONS[mode], list(first), suffix="_combine" if len(axes) > 1 else "")
        return reduce_nodes(call, combined, mode, [a - 1 for a in axes[1:]], False) if len(axes) > 1 else combined
    return reduce_nodes(call, _tensor(call), mode, axis, keepdims)


# -- shape --------------------------------------------------------------------------------------
@register("keras->ir", "tf.reshape", "tf.compat.v1.reshape")
def reshape_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "shape")
    x = _tensor(call)
    shape = _static(call, _kw(call, "shape"), "a reshape target")
    if shape is None:
        raise call.error("a reshape without a target shape")
    return reshape_nodes(call, x, shape)


@register("keras->ir", "tf.compat.v1.shape", "tf.shape")
def shape_from_tf(call: LayerCall) -> Value:
    """The static shape, batch as -1, as a constant that the ops reading it fold at conversion
    time (kecam's tf.image.resize(x, tf.shape(y)[1:-1])); a batch size read from it is refused."""
    _no_extra(call, "out_type")
    x = _tensor(call)
    if None in x.shape[1:]:
        raise call.error(f"reads the shape {x.shape} whose sizes are not all known; give the model a fixed input size")
    return call.emit("constant", [], {"trainable": False}, {"value": np.asarray((-1, *x.shape[1:]), np.int32)})


def _static(call: LayerCall, value: Any, what: str) -> Any:
    """A size argument: a list, or a constant Value (a static shape) folded to a list."""
    if isinstance(value, Value):
        folded = constant_value(value)
        if folded is None:
            raise call.error(f"{what} computed from the inputs is not supported")
        return folded.reshape(-1).tolist()
    if isinstance(value, list):
        return [v for item in value for v in (_static(call, item, what) if isinstance(item, Value) else [item])]
    return value


@register("keras->ir", "tf.transpose", "tf.compat.v1.transpose", "tf.linalg.matrix_transpose")
def transpose_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "perm", "conjugate")
    x = _tensor(call)
    perm = _kw(call, "perm")
    if call.class_name == "tf.linalg.matrix_transpose":
        perm = (*range(x.rank - 2), x.rank - 1, x.rank - 2)
    return transpose_nodes(call, x, perm)


@register("keras->ir", "tf.expand_dims", "tf.compat.v1.expand_dims")
def expand_dims_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "axis", "dim")
    return expand_dims_nodes(call, _tensor(call), _kw(call, "axis", "dim"))


@register("keras->ir", "tf.squeeze", "tf.compat.v1.squeeze")
def squeeze_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "axis", "squeeze_dims")
    return squeeze_nodes(call, _tensor(call), _kw(call, "axis", "squeeze_dims"))


@register("keras->ir", "tf.__operators__.getitem")
def getitem_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "slice_spec", "var")
    return getitem_nodes(call, _tensor(call), _kw(call, "slice_spec"))


@register("keras->ir", "tf.gather", "tf.compat.v1.gather")
def gather_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "indices", "axis", "validate_indices")
    if _kw(call, "batch_dims", default=0):
        raise call.error("gather with batch_dims is not supported")
    return take_nodes(call, _tensor(call), _kw(call, "indices"), _kw(call, "axis", default=0))


@register("keras->ir", "tf.concat", "tf.compat.v1.concat")
def concat_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "axis", "values")
    ins = call.inputs
    axis = int(_kw(call, "axis")) % ins[0].rank
    if axis == 0:
        raise call.error("concatenating along the batch axis is not supported")
    return call.emit("concat", ins, {"axis": axis})


@register("keras->ir", "tf.stack", "tf.compat.v1.stack")
def stack_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "axis", "values")
    return stack_nodes(call, call.inputs, _kw(call, "axis", default=0))


@register("keras->ir", "tf.split", "tf.compat.v1.split")
def split_from_tf(call: LayerCall) -> list[Value]:
    _no_extra(call, "num_or_size_splits", "axis", "num")
    sections = _kw(call, "num_or_size_splits")
    if isinstance(sections, Value):
        raise call.error("split by computed sizes is not supported")
    return split_nodes(call, _tensor(call), sections, _kw(call, "axis", default=0), sizes=True)


@register("keras->ir", "tf.unstack")
def unstack_from_tf(call: LayerCall) -> list[Value]:
    """tf.unstack(x, num, axis): the slices x[..., i, ...] along `axis`, each without that axis."""
    _no_extra(call, "num", "axis")
    x = _tensor(call)
    axis = int(_kw(call, "axis", default=0)) % x.rank
    n, num = x.shape[axis], _kw(call, "num")
    if axis == 0 or n is None:
        raise call.error(f"unstacking axis {axis} of shape {x.shape} is not supported")
    if num is not None and int(num) != n:
        raise call.error(f"num={num} does not match the size {n} of axis {axis}")
    return [call.emit("select", [x], {"axis": axis, "index": i}, suffix=f"_{i}") for i in range(n)]


@register("keras->ir", "tf.repeat")
def repeat_from_tf(call: LayerCall) -> Value:
    """tf.repeat(x, n, axis): every slice along `axis` n times in a row (np.repeat). A size-1
    axis is tiled; otherwise a new axis after `axis` is tiled and merged into it (into the batch
    for axis 0: GCViT repeats its global query for every window of the example)."""
    _no_extra(call, "repeats", "axis")
    x = _tensor(call)
    repeats, axis = _kw(call, "repeats"), _kw(call, "axis")
    if isinstance(repeats, (list, tuple)) and len(repeats) == 1:
        repeats = repeats[0]
    if axis is None or not isinstance(repeats, int) or isinstance(repeats, bool):
        raise call.error("only a whole-number repeat along a given axis is supported")
    axis = int(axis) % x.rank
    if axis > 0 and x.shape[axis] == 1:
        return call.emit("tile", [x], {"reps": tuple(repeats if i == axis else 1 for i in range(x.rank))})
    if axis > 0 and x.shape[axis] is None:
        raise call.error(f"repeating axis {axis} of unknown size in {x.shape} is not supported")
    rows = call.emit("expand_dims", [x], {"axis": axis + 1}, suffix="_rows")
    reps = tuple(repeats if i == axis + 1 else 1 for i in range(x.rank + 1))
    tiled = call.emit("tile", [rows], {"reps": reps}, suffix="_tiled")
    if axis == 0:
        return call.emit("fold_time", [tiled])
    merged = (*x.shape[1:axis], x.shape[axis] * repeats, *x.shape[axis + 1 :])
    return call.emit("reshape", [tiled], {"shape": merged})


@register("keras->ir", "tf.linalg.matmul", "tf.matmul", "tf.compat.v1.matmul")
def matmul_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "b", "transpose_a", "transpose_b", "adjoint_a", "adjoint_b")
    ins = [_tensor(call), _kw(call, "b")]
    if not isinstance(ins[1], Value) or ins[0].rank < 3 or ins[1].rank < 3:
        raise call.error("matmul with a constant or with a rank-2 operand (whose rows are the batch) is not supported")
    for i, flag in enumerate("ab"):
        if _kw(call, f"transpose_{flag}") or _kw(call, f"adjoint_{flag}"):
            v = ins[i]
            ins[i] = call.emit(
                "transpose", [v], {"perm": (*range(v.rank - 2), v.rank - 1, v.rank - 2)}, suffix=f"_t{flag}"
            )
    return call.emit("matmul", ins)


@register("keras->ir", "tf.einsum", "tf.linalg.einsum")
def einsum_from_tf(call: LayerCall) -> Value:
    equation = _first(call)
    ins = [v for v in call.inputs if isinstance(v, Value)]
    if not isinstance(equation, str) or not ins:
        raise call.error("the file does not hold einsum's operands (tf.keras 2 keeps only the first argument)")
    return einsum_nodes(call, equation, ins)


@register("keras->ir", "tf.pad", "tf.compat.v1.pad")
def pad_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "paddings", "mode", "constant_values")
    return pad_nodes(
        call,
        _tensor(call),
        _kw(call, "paddings"),
        _kw(call, "mode", default="CONSTANT"),
        _kw(call, "constant_values", default=0),
    )


@register("keras->ir", "tf.image.resize")
def resize_from_tf(call: LayerCall) -> Value:
    """tf.image.resize (TF 2): half-pixel centres; bilinear or nearest without antialiasing."""
    _no_extra(call, "size", "method", "antialias", "preserve_aspect_ratio")
    x = _tensor(call)
    size, method = (
        _static(call, _kw(call, "size"), "a resize size"),
        str(_kw(call, "method", default="bilinear")).lower(),
    )
    if _kw(call, "preserve_aspect_ratio") or _kw(call, "antialias"):
        raise call.error("resize with preserve_aspect_ratio or antialias is not supported")
    if size is None or len(size) != 2 or x.rank != 4 or min(int(s) for s in size) <= 0:
        raise call.error(f"only a resize of images (rank 4) to a fixed size is supported, not to {size}")
    if method not in ("bilinear", "nearest"):
        raise call.error(f"resize method {method!r} is not supported (bilinear and nearest are)")
    attrs = {"size": tuple(int(s) for s in size), "mode": method, "data_format": "channels_last"}
    return call.emit("resize", [x], attrs)


@register("keras->ir", "tf.math.l2_normalize", "tf.nn.l2_normalize", "tf.linalg.l2_normalize")
def l2_normalize_from_tf(call: LayerCall) -> Value:
    """TF: x * rsqrt(max(sum(x**2), epsilon)), i.e. x / max(norm, sqrt(epsilon))."""
    _no_extra(call, "axis", "epsilon", "dim")
    x = _tensor(call)
    axes = axes_of(call, _kw(call, "axis", "dim"), x.rank, what="an l2 normalization")
    epsilon = float(_kw(call, "epsilon", default=1e-12))
    return call.emit("l2_normalize", [x], {"axes": axes, "epsilon": epsilon**0.5})


@register("keras->ir", "tf.cast", "tf.dtypes.cast")
def cast_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "dtype")
    return cast_nodes(call, _tensor(call), str(_kw(call, "dtype")))


@register("keras->ir", "tf.identity", "tf.stop_gradient")
def identity_from_tf(call: LayerCall) -> Value:
    _no_extra(call)
    return call.emit("identity", [_tensor(call)])


@register("keras->ir", "tf.clip_by_value")
def clip_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "clip_value_min", "clip_value_max")
    lo, hi = _kw(call, "clip_value_min"), _kw(call, "clip_value_max")
    if not (is_number(lo) and is_number(hi)):
        raise call.error("clip_by_value with tensor bounds is not supported")
    return call.emit("clip", [_tensor(call)], {"min": float(lo), "max": float(hi)})


# -- element-wise -------------------------------------------------------------------------------
_UNARY: dict[str, tuple[str, dict[str, Any]]] = {
    "tf.nn.relu": ("relu", {}),
    "tf.nn.relu6": ("relu", {"max_value": 6.0}),
    "tf.math.sigmoid": ("sigmoid", {}),
    "tf.nn.sigmoid": ("sigmoid", {}),
    "tf.math.tanh": ("tanh", {}),
    "tf.nn.tanh": ("tanh", {}),
    "tf.nn.elu": ("elu", {"alpha": 1.0}),
    "tf.nn.selu": ("selu", {}),
    "tf.math.softplus": ("softplus", {}),
    "tf.nn.softplus": ("softplus", {}),
    "tf.nn.softsign": ("softsign", {}),
    "tf.math.softsign": ("softsign", {}),
    "tf.math.log_sigmoid": ("log_sigmoid", {}),
    "tf.math.exp": ("exp", {}),
    "tf.math.abs": ("abs", {}),
    "tf.math.negative": ("neg", {}),
    "tf.math.sqrt": ("sqrt", {}),
    "tf.math.rsqrt": ("rsqrt", {}),
    "tf.math.square": ("square", {}),
    "tf.math.log": ("log", {}),
    "tf.math.erf": ("erf", {}),
    "tf.math.sin": ("sin", {}),
    "tf.math.cos": ("cos", {}),
}


@register("keras->ir", *_UNARY)
def unary_from_tf(call: LayerCall) -> Value:
    _no_extra(call)
    op, attrs = _UNARY[call.class_name]
    return call.emit(op, [_tensor(call)], dict(attrs))


@register("keras->ir", "tf.nn.silu", "tf.nn.swish")
def silu_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "beta")
    if float(_kw(call, "beta", default=1.0)) != 1.0:
        raise call.error("swish with beta != 1 is not supported")
    return call.emit("silu", [_tensor(call)])


@register("keras->ir", "tf.nn.gelu")
def gelu_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "approximate")
    return call.emit("gelu", [_tensor(call)], {"approximate": bool(_kw(call, "approximate", default=False))})


@register("keras->ir", "tf.nn.leaky_relu")
def leaky_relu_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "alpha")
    return call.emit("relu", [_tensor(call)], {"negative_slope": float(_kw(call, "alpha", default=0.2))})


@register("keras->ir", "tf.nn.softmax", "tf.nn.log_softmax", "tf.math.softmax", "tf.math.log_softmax")
def softmax_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "axis", "dim")
    x = _tensor(call)
    axis = int(_kw(call, "axis", "dim", default=-1)) % x.rank
    if axis == 0:
        raise call.error("a softmax over the batch axis is not supported")
    op = "log_softmax" if call.class_name.endswith("log_softmax") else "softmax"
    return call.emit(op, [x], {"axis": (axis,)})


_BINARY = {
    "tf.__operators__.add": "add",
    "tf.math.add": "add",
    "tf.math.add_v2": "add",
    "tf.math.subtract": "sub",
    "tf.math.multiply": "mul",
    "tf.math.truediv": "div",
    "tf.math.divide": "div",
    "tf.math.maximum": "maximum",
    "tf.math.minimum": "minimum",
    "tf.math.pow": "pow",
    "tf.math.greater": "compare:greater",
    "tf.math.greater_equal": "compare:greater_equal",
    "tf.math.less": "compare:less",
    "tf.math.less_equal": "compare:less_equal",
    "tf.math.equal": "compare:equal",
    "tf.math.not_equal": "compare:not_equal",
}


@register("keras->ir", *_BINARY)
def binary_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "y")
    return binary_nodes(call, _BINARY[call.class_name], _first(call), _kw(call, "y"))


@register("keras->ir", "tf.where", "tf.compat.v1.where_v2")
def where_from_tf(call: LayerCall) -> Value:
    _no_extra(call, "x", "y")
    from .keras_ops import constant

    cond, a, b = _tensor(call), _kw(call, "x"), _kw(call, "y")
    ref = a if isinstance(a, Value) else b
    if a is None or b is None or not isinstance(ref, Value):
        raise call.error("where without both branches or between two constants is not supported")
    ins = [v if isinstance(v, Value) else constant(call, v, ref.dtype, f"_{k}") for k, v in (("x", a), ("y", b))]
    if any(v.rank > cond.rank for v in ins):
        raise call.error("where with a condition of lower rank than its branches is not supported")
    return call.emit("where", [cond, *ins])
