"""Op kinds that move data around: reshaping, transposing, joining, padding, resizing."""

from __future__ import annotations

import math

from ..errors import GraphError
from .schema import Layout, OpDef, attr, define, same_as_input, spatial_axes

_F = (int, float)
_DATA_FORMAT = attr("data_format", str, choices=("channels_last", "channels_first"))


def _prod(dims):
    if any(d is None for d in dims):
        return None
    return math.prod(dims)


def _infer_flatten(node):
    x = node.inputs[0]
    return [((x.shape[0], _prod(x.shape[1:])), x.dtype)]


define(
    OpDef("flatten", _infer_flatten, layout=Layout.FLATTEN, doc="(N, ...) -> (N, prod(...)), row-major", family="shape")
)


def _infer_reshape(node):
    x = node.inputs[0]
    target = list(node.attrs["shape"])
    total = _prod(x.shape[1:])
    if target.count(-1) > 1:
        raise GraphError(f"{node.name}: reshape target {tuple(target)} has more than one -1")
    if -1 in target:
        known = _prod([d for d in target if d != -1])
        target[target.index(-1)] = None if total is None else total // known
    elif total is not None and _prod(target) != total:
        raise GraphError(f"{node.name}: cannot reshape {x.shape} to (batch, *{tuple(target)})")
    return [((x.shape[0], *target), x.dtype)]


define(
    OpDef(
        "reshape",
        _infer_reshape,
        attrs=(attr("shape", tuple),),
        layout=Layout.RESHAPE,
        doc="reshape the non-batch axes to `shape` (row-major; one -1 allowed)",
        family="shape",
    )
)


def _infer_transpose(node):
    x = node.inputs[0]
    perm = node.attrs["perm"]
    if sorted(perm) != list(range(x.rank)):
        raise GraphError(f"{node.name}: {perm} is not a permutation of {x.rank} axes")
    return [(tuple(x.shape[p] for p in perm), x.dtype)]


define(
    OpDef(
        "transpose",
        _infer_transpose,
        attrs=(attr("perm", tuple),),
        layout=Layout.TRANSPOSE,
        doc="output axis i is input axis perm[i] (batch axis included)",
        family="shape",
    )
)


def _infer_concat(node):
    axis = node.attrs["axis"]
    first = node.inputs[0].shape
    out = list(first)
    for v in node.inputs[1:]:
        if len(v.shape) != len(first) or any(
            a is not None and b is not None and a != b for i, (a, b) in enumerate(zip(v.shape, first)) if i != axis
        ):
            raise GraphError(f"{node.name}: cannot concatenate shapes {[v.shape for v in node.inputs]} on axis {axis}")
    sizes = [v.shape[axis] for v in node.inputs]
    out[axis] = None if None in sizes else sum(sizes)
    return [(tuple(out), node.inputs[0].dtype)]


define(
    OpDef(
        "concat",
        _infer_concat,
        attrs=(attr("axis", int),),
        layout=Layout.AXIS,
        axis_attrs=("axis",),
        doc="join inputs along `axis`",
        family="shape",
    )
)


def _infer_spatial_resize(node, fn):
    x = node.inputs[0]
    shape = list(x.shape)
    for i, axis in enumerate(spatial_axes(x.rank, node.attrs["data_format"])):
        shape[axis] = None if shape[axis] is None else fn(i, shape[axis])
    return [(tuple(shape), x.dtype)]


define(
    OpDef(
        "pad",
        lambda n: _infer_spatial_resize(n, lambda i, s: s + sum(n.attrs["pads"][i])),
        attrs=(attr("pads", tuple), attr("value", *_F, default=0.0), _DATA_FORMAT),
        layout=Layout.SPATIAL,
        doc="constant padding ((begin, end), ...) of the spatial axes",
        family="shape",
    )
)
define(
    OpDef(
        "crop",
        lambda n: _infer_spatial_resize(n, lambda i, s: s - sum(n.attrs["crops"][i])),
        attrs=(attr("crops", tuple), _DATA_FORMAT),
        layout=Layout.SPATIAL,
        doc="remove ((begin, end), ...) from the spatial axes",
        family="shape",
    )
)
define(
    OpDef(
        "upsample",
        lambda n: _infer_spatial_resize(n, lambda i, s: s * n.attrs["scale"][i]),
        attrs=(
            attr("scale", tuple),
            attr("mode", str, choices=("nearest", "bilinear", "bicubic", "linear", "trilinear")),
            attr("align_corners", bool, default=False),
            _DATA_FORMAT,
        ),
        layout=Layout.SPATIAL,
        doc="resize by integer factors; 'nearest' repeats each element (PyTorch 'nearest-exact' semantics), "
        "'bilinear' samples at half-pixel centres",
        family="shape",
    )
)
define(
    OpDef(
        "resize",
        lambda n: _infer_spatial_resize(n, lambda i, s: n.attrs["size"][i]),
        attrs=(
            attr("size", tuple),
            attr("mode", str, choices=("nearest", "bilinear", "bicubic", "area")),
            attr("antialias", bool, default=False),
            _DATA_FORMAT,
        ),
        layout=Layout.SPATIAL,
        doc="resize to a fixed spatial size with half-pixel centres ('nearest' rounds half-pixel coordinates)",
        family="shape",
    )
)


def _infer_repeat(node):
    x = node.inputs[0]
    return [((x.shape[0], node.attrs["n"], *x.shape[1:]), x.dtype)]


define(
    OpDef(
        "repeat_vector",
        _infer_repeat,
        attrs=(attr("n", int),),
        doc="(N, F) -> (N, n, F)",
        family="shape",
    )
)


def _infer_matmul(node):
    a, b = node.inputs
    if a.rank < 2 or b.rank < 2:
        raise GraphError(f"{node.name}: matmul needs rank >= 2 operands, got {a.shape} and {b.shape}")
    if a.shape[-1] is not None and b.shape[-2] is not None and a.shape[-1] != b.shape[-2]:
        raise GraphError(f"{node.name}: cannot multiply {a.shape} by {b.shape}")
    from .schema import broadcast_shapes

    batch = broadcast_shapes([a.shape[:-2], b.shape[:-2]], where=node.name)
    return [((*batch, a.shape[-2], b.shape[-1]), a.dtype)]


define(OpDef("matmul", _infer_matmul, doc="batched matrix product a @ b", family="shape"))


def _infer_reduce(node):
    x = node.inputs[0]
    axes = node.attrs["axes"]
    if node.attrs["keepdims"]:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return [(shape, x.dtype)]


define(
    OpDef(
        "reduce",
        _infer_reduce,
        attrs=(
            attr("mode", str, choices=("mean", "sum", "max", "min", "prod")),
            attr("axes", tuple),
            attr("keepdims", bool, default=False),
        ),
        layout=Layout.AXIS,
        axis_attrs=("axes",),
        doc="reduce over `axes`",
        family="shape",
    )
)
define(
    OpDef(
        "cast",
        lambda n: [(n.inputs[0].shape, n.attrs["dtype"])],
        attrs=(attr("dtype", str),),
        layout=Layout.ELEMENTWISE,
        doc="convert to `dtype`",
        family="shape",
    )
)


def _infer_arg_reduce(node):
    x = node.inputs[0]
    (axis,) = node.attrs["axes"]
    if node.attrs["keepdims"]:
        shape = tuple(1 if i == axis else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i != axis)
    return [(shape, "int64")]


define(
    OpDef(
        "arg_reduce",
        _infer_arg_reduce,
        attrs=(
            attr("mode", str, choices=("argmax", "argmin")),
            attr("axes", tuple),
            attr("keepdims", bool, default=False),
        ),
        layout=Layout.AXIS,
        axis_attrs=("axes",),
        doc="the int64 index of the largest (argmax) or smallest (argmin) element along the one axis in `axes`; "
        "among equal elements the first, as torch.argmax",
        family="shape",
    )
)
define(
    OpDef(
        "cumsum",
        same_as_input,
        attrs=(attr("axis", int),),
        layout=Layout.AXIS,
        axis_attrs=("axis",),
        doc="running sum along `axis` (inclusive), in the input's dtype",
        family="shape",
    )
)
