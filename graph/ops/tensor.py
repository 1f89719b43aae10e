"""Op kinds for tensor manipulation that PyTorch code writes functionally: slicing,
splitting, adaptive pooling, pixel shuffle, einsum, interpolation and learned constants.

Axis attributes count the batch axis (axis 0); none of these ops may move the batch axis.
"""

from __future__ import annotations

from ..errors import GraphError
from .schema import Layout, OpDef, attr, broadcast_shapes, define, spatial_axes

_DATA_FORMAT = attr("data_format", str, choices=("channels_last", "channels_first"))


def _with_axis(shape: tuple, axis: int, size: int | None) -> tuple:
    out = list(shape)
    out[axis] = size
    return tuple(out)


def _check_axis(node, axis: int) -> None:
    x = node.inputs[0]
    if not 0 < axis < x.rank:
        raise GraphError(
            f"{node.name}: axis {axis} is out of range for shape {x.shape} (the batch axis 0 cannot be sliced)"
        )


# -- slicing and splitting -------------------------------------------------------------------
def _infer_slice(node):
    x = node.inputs[0]
    a = node.attrs
    _check_axis(node, a["axis"])
    n = x.shape[a["axis"]]
    if n is None:
        return [(_with_axis(x.shape, a["axis"], None), x.dtype)]
    start, stop, step = slice(a["start"], a["stop"], a["step"]).indices(n)
    return [(_with_axis(x.shape, a["axis"], len(range(start, stop, step))), x.dtype)]


define(
    OpDef(
        "slice",
        _infer_slice,
        attrs=(
            attr("axis", int),
            attr("start", int, default=0),
            attr("stop", int, default=None),
            attr("step", int, default=1),
        ),
        layout=Layout.AXIS,
        axis_attrs=("axis",),
        doc="x[..., start:stop:step, ...] on `axis` (Python slice semantics, step > 0)",
        family="tensor",
    )
)


def _infer_split(node):
    x = node.inputs[0]
    a = node.attrs
    _check_axis(node, a["axis"])
    n = x.shape[a["axis"]]
    if n is not None and sum(a["sizes"]) != n:
        raise GraphError(f"{node.name}: split sizes {a['sizes']} do not add up to {n} on axis {a['axis']}")
    return [(_with_axis(x.shape, a["axis"], s), x.dtype) for s in a["sizes"]]


define(
    OpDef(
        "split",
        _infer_split,
        attrs=(attr("axis", int), attr("sizes", tuple)),
        layout=Layout.AXIS,
        axis_attrs=("axis",),
        doc="split `axis` into consecutive pieces of the given sizes (torch.split / chunk), one output each",
        family="tensor",
    )
)


def _infer_index(node):
    x = node.inputs[0]
    a = node.attrs
    _check_axis(node, a["axis"])
    return [(tuple(d for i, d in enumerate(x.shape) if i != a["axis"]), x.dtype)]


define(
    OpDef(
        "select",
        _infer_index,
        attrs=(attr("axis", int), attr("index", int)),
        layout=Layout.OPAQUE,
        doc="x[..., index, ...] on `axis`, removing the axis (torch.select, x[:, 0])",
        family="tensor",
    )
)


def _infer_expand_dims(node):
    x = node.inputs[0]
    axis = node.attrs["axis"]
    if not 0 <= axis <= x.rank:
        raise GraphError(f"{node.name}: cannot insert an axis at {axis} into shape {x.shape}")
    return [(x.shape[:axis] + (1,) + x.shape[axis:], x.dtype)]


define(
    OpDef(
        "expand_dims",
        _infer_expand_dims,
        attrs=(attr("axis", int),),
        layout=Layout.OPAQUE,
        doc="insert a size-1 axis at `axis` (unsqueeze); axis 0 only into a value computed from constants alone",
        family="tensor",
    )
)


def _infer_squeeze(node):
    x = node.inputs[0]
    axis = node.attrs["axis"]
    _check_axis(node, axis)
    if x.shape[axis] not in (1, None):
        raise GraphError(f"{node.name}: cannot squeeze axis {axis} of size {x.shape[axis]}")
    return [(x.shape[:axis] + x.shape[axis + 1 :], x.dtype)]


define(
    OpDef(
        "squeeze",
        _infer_squeeze,
        attrs=(attr("axis", int),),
        layout=Layout.OPAQUE,
        doc="remove the size-1 axis `axis`",
        family="tensor",
    )
)


def _infer_stack(node):
    first = node.inputs[0]
    axis = node.attrs["axis"]
    if not 0 < axis <= first.rank:
        raise GraphError(f"{node.name}: cannot stack at axis {axis}")
    return [(first.shape[:axis] + (len(node.inputs),) + first.shape[axis:], first.dtype)]


define(
    OpDef(
        "stack",
        _infer_stack,
        attrs=(attr("axis", int),),
        layout=Layout.OPAQUE,
        doc="stack inputs along a new axis `axis`",
        family="tensor",
    )
)


# -- spatial ops -------------------------------------------------------------------------------
def _infer_spatial(node, sizes, channels=None):
    x = node.inputs[0]
    fmt = node.attrs["data_format"]
    shape = list(x.shape)
    for axis, size in zip(spatial_axes(x.rank, fmt), sizes):
        shape[axis] = size
    if channels is not None:
        shape[x.rank - 1 if fmt == "channels_last" else 1] = channels
    return tuple(shape)


def _infer_adaptive_pool(node):
    x = node.inputs[0]
    out = node.attrs["output_size"]
    if len(out) != x.rank - 2:
        raise GraphError(f"{node.name}: output size {out} does not match a rank-{x.rank} input")
    return [(_infer_spatial(node, out), x.dtype)]


define(
    OpDef(
        "adaptive_pool",
        _infer_adaptive_pool,
        attrs=(attr("mode", str, choices=("max", "avg")), attr("output_size", tuple), _DATA_FORMAT),
        layout=Layout.SPATIAL,
        doc="PyTorch adaptive pooling: output cell i covers input [floor(i * n / o), ceil((i + 1) * n / o))",
        family="tensor",
    )
)


def _infer_pixel_shuffle(node):
    x = node.inputs[0]
    r = node.attrs["upscale"]
    fmt = node.attrs["data_format"]
    c = x.shape[x.rank - 1 if fmt == "channels_last" else 1]
    if c is not None and c % (r ** (x.rank - 2)):
        raise GraphError(f"{node.name}: {c} channels are not divisible by {r}**{x.rank - 2}")
    sizes = [None if x.shape[a] is None else x.shape[a] * r for a in spatial_axes(x.rank, fmt)]
    return [(_infer_spatial(node, sizes, None if c is None else c // r ** (x.rank - 2)), x.dtype)]


define(
    OpDef(
        "pixel_shuffle",
        _infer_pixel_shuffle,
        attrs=(attr("upscale", int), _DATA_FORMAT),
        layout=Layout.SPATIAL,
        doc="PyTorch PixelShuffle: channel c * r * r + i * r + j moves to (c, h * r + i, w * r + j)",
        family="tensor",
    )
)


def _infer_pixel_unshuffle(node):
    x = node.inputs[0]
    r = node.attrs["downscale"]
    fmt = node.attrs["data_format"]
    c = x.shape[x.rank - 1 if fmt == "channels_last" else 1]
    sizes = [None if x.shape[a] is None else x.shape[a] // r for a in spatial_axes(x.rank, fmt)]
    return [(_infer_spatial(node, sizes, None if c is None else c * r ** (x.rank - 2)), x.dtype)]


define(
    OpDef(
        "pixel_unshuffle",
        _infer_pixel_unshuffle,
        attrs=(attr("downscale", int), _DATA_FORMAT),
        layout=Layout.SPATIAL,
        doc="the inverse of pixel_shuffle",
        family="tensor",
    )
)


def _infer_interpolate(node):
    x = node.inputs[0]
    size = node.attrs["size"]
    if len(size) != x.rank - 2:
        raise GraphError(f"{node.name}: size {size} does not match a rank-{x.rank} input")
    return [(_infer_spatial(node, size), x.dtype)]


define(
    OpDef(
        "interpolate",
        _infer_interpolate,
        attrs=(
            attr("size", tuple),
            attr("mode", str, choices=("nearest", "nearest_exact", "linear", "cubic")),
            attr("align_corners", bool, default=False),
            attr("scale", tuple, default=None),
            _DATA_FORMAT,
        ),
        layout=Layout.SPATIAL,
        doc="PyTorch F.interpolate to `size` (antialias off): 'nearest' takes floor(o * in / out) "
        "(floor(o / scale) when `scale` was given), 'nearest_exact' floor((o + 0.5) * in / out); "
        "'linear'/'cubic' (a = -0.75) sample at half-pixel centres, or at o * (in - 1) / (out - 1) "
        "if align_corners",
        family="tensor",
    )
)


# -- algebra and constants ---------------------------------------------------------------------
def _infer_einsum(node):
    eq = node.attrs["equation"].replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(node.inputs) or not rhs or "." in eq:
        raise GraphError(
            f"{node.name}: einsum {eq!r} needs one explicit term per input and an explicit output (no '...')"
        )
    sizes: dict[str, int | None] = {}
    for term, v in zip(terms, node.inputs):
        if len(term) != v.rank:
            raise GraphError(f"{node.name}: einsum term {term!r} does not match shape {v.shape}")
        for ch, d in zip(term, v.shape):
            if sizes.get(ch) is None:
                sizes[ch] = d
    return [(tuple(sizes[c] for c in rhs), node.inputs[0].dtype)]


define(
    OpDef(
        "einsum",
        _infer_einsum,
        attrs=(attr("equation", str),),
        layout=Layout.OPAQUE,
        doc="Einstein summation with an explicit output term",
        family="tensor",
    )
)
define(
    OpDef(
        "constant",
        lambda n: [
            (
                (None, *n.weights["value"].shape[1:]) if n.attrs["per_example"] else tuple(n.weights["value"].shape),
                str(n.weights["value"].dtype),
            )
        ],
        attrs=(attr("trainable", bool, default=True), attr("per_example", bool, default=False)),
        weights=("value",),
        layout=Layout.OPAQUE,
        doc="a tensor that does not depend on the inputs (a learned nn.Parameter used directly, a buffer); "
        "its shape has no batch axis of its own and broadcasts against the batch; with per_example, its "
        "size-1 axis 0 is repeated for every example of the batch (a class token expanded to the batch)",
        family="tensor",
    )
)

define(
    OpDef(
        "table_lookup",
        lambda n: [(tuple(n.inputs[0].shape), str(n.weights["table"].dtype))],
        weights=("table",),
        layout=Layout.OPAQUE,
        doc="entries of a learned table picked at run time by an integer index tensor (a constant): "
        "table.reshape(-1)[index], shaped like the index (a relative-position bias table gathered by "
        "its index buffer, a token-type embedding row); the table stays a trainable weight",
        family="tensor",
    )
)


def _infer_floor_divide(node):
    return [(broadcast_shapes([v.shape for v in node.inputs], where=node.name), node.inputs[0].dtype)]


define(
    OpDef(
        "floor_divide",
        _infer_floor_divide,
        layout=Layout.ELEMENTWISE,
        doc="floor(a / b) (torch.div(rounding_mode='floor'), //)",
        family="arithmetic",
    )
)
define(
    OpDef(
        "trunc_divide",
        _infer_floor_divide,
        layout=Layout.ELEMENTWISE,
        doc="trunc(a / b) (torch.div(rounding_mode='trunc'))",
        family="arithmetic",
    )
)


def _infer_tile(node):
    x = node.inputs[0]
    reps = node.attrs["reps"]
    if len(reps) != x.rank or reps[0] != 1:
        raise GraphError(
            f"{node.name}: tile repetitions {reps} must cover the {x.rank} axes and keep the batch (1 first)"
        )
    return [(tuple(None if d is None else d * r for d, r in zip(x.shape, reps)), x.dtype)]


define(
    OpDef(
        "tile",
        _infer_tile,
        attrs=(attr("reps", tuple),),
        layout=Layout.OPAQUE,
        doc="repeat the whole tensor reps[i] times along axis i (Tensor.repeat; expand of size-1 axes)",
        family="tensor",
    )
)


def _infer_reflect_pad(node):
    x = node.inputs[0]
    pads = node.attrs["pads"]
    sizes = [
        None if x.shape[a] is None else x.shape[a] + sum(p)
        for a, p in zip(spatial_axes(x.rank, node.attrs["data_format"]), pads)
    ]
    for a, (b, e) in zip(spatial_axes(x.rank, node.attrs["data_format"]), pads):
        if x.shape[a] is not None and max(b, e) >= x.shape[a]:
            raise GraphError(f"{node.name}: reflection padding {(b, e)} needs more than {x.shape[a]} elements")
    return [(_infer_spatial(node, sizes), x.dtype)]


define(
    OpDef(
        "reflect_pad",
        _infer_reflect_pad,
        attrs=(attr("pads", tuple), _DATA_FORMAT),
        layout=Layout.SPATIAL,
        doc="mirror padding ((begin, end), ...) of the spatial axes without repeating the edge (PyTorch 'reflect', numpy 'reflect')",
        family="tensor",
    )
)


def _infer_roll(node):
    _check_axis(node, node.attrs["axis"])
    return [(node.inputs[0].shape, node.inputs[0].dtype)]


define(
    OpDef(
        "roll",
        _infer_roll,
        attrs=(attr("axis", int), attr("shift", int)),
        layout=Layout.AXIS,
        axis_attrs=("axis",),
        doc="shift the elements `shift` places along `axis`, wrapping around (torch.roll on one dim)",
        family="tensor",
    )
)


def _infer_gather(node):
    from .schema import broadcast_shapes

    x, index = node.inputs
    axis = node.attrs["axis"]
    _check_axis(node, axis)
    if index.rank != x.rank:
        raise GraphError(f"{node.name}: gather needs an index of the input's rank, got {index.shape} for {x.shape}")
    others = broadcast_shapes(
        [tuple(d for i, d in enumerate(s) if i != axis) for s in (x.shape, index.shape)], where=node.name
    )
    return [((*others[:axis], index.shape[axis], *others[axis:]), x.dtype)]


define(
    OpDef(
        "gather",
        _infer_gather,
        attrs=(attr("axis", int),),
        doc="out[..., i, ...] = x[..., index[..., i, ...], ...] along `axis` (numpy take_along_axis: the "
        "index has the input's rank and broadcasts against it on the other axes)",
        family="tensor",
    )
)


def _infer_take(node):
    x = node.inputs[0]
    axis = node.attrs["axis"]
    _check_axis(node, axis)
    n = x.shape[axis]
    if n is not None and any(not -n <= i < n for i in node.attrs["indices"]):
        raise GraphError(f"{node.name}: indices {node.attrs['indices']} are out of range for size {n} on axis {axis}")
    return [(_with_axis(x.shape, axis, len(node.attrs["indices"])), x.dtype)]


define(
    OpDef(
        "take",
        _infer_take,
        attrs=(attr("axis", int), attr("indices", tuple)),
        layout=Layout.AXIS,
        axis_attrs=("axis",),
        doc="x[..., indices, ...] on `axis` with a constant list of indices (negative counts from the end)",
        family="tensor",
    )
)


def _infer_size_like(node):
    x, ref = node.inputs
    a = node.attrs
    _check_axis(node, a["axis"])
    if not 0 < a["ref_axis"] < ref.rank:
        raise GraphError(f"{node.name}: ref_axis {a['ref_axis']} is out of range for shape {ref.shape}")
    if a["mode"] == "broadcast" and x.shape[a["axis"]] not in (1, None):
        raise GraphError(f"{node.name}: only a size-1 axis broadcasts, axis {a['axis']} of {x.shape}")
    return [(_with_axis(x.shape, a["axis"], ref.shape[a["ref_axis"]]), x.dtype)]


define(
    OpDef(
        "size_like",
        _infer_size_like,
        attrs=(attr("axis", int), attr("ref_axis", int), attr("mode", str, choices=("slice", "broadcast"))),
        layout=Layout.OPAQUE,
        doc="axis `axis` of input 0 made as long as axis `ref_axis` of input 1 is at run time: its first "
        "elements ('slice': a position table cut to the sequence length) or its one element repeated "
        "('broadcast')",
        family="tensor",
    )
)
