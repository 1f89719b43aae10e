"""Op kinds with weights or windows: dense, convolutions, normalisations, pooling, embedding.

Weights are stored in one canonical form, PyTorch's: dense `weight` is (out, in);
convolution `weight` is (out, in / groups, *kernel); transposed convolution `weight` is
(in, out / groups, *kernel). Readers and writers convert at conversion time.
"""

from __future__ import annotations

import math

from ..errors import GraphError
from .schema import Layout, OpDef, attr, channel_axis, define, same_as_input, spatial_axes

_F = (int, float)
_DATA_FORMAT = attr("data_format", str, choices=("channels_last", "channels_first"))


def _dim(x, fn):
    return None if x is None else fn(x)


def _conv_out(size, k, s, d, pad):
    if pad == "same":
        return _dim(size, lambda n: math.ceil(n / s))
    b, e = pad
    return _dim(size, lambda n: (n + b + e - d * (k - 1) - 1) // s + 1)


def _with_spatial(node, sizes, channels):
    """The input shape with its spatial sizes and channel count replaced."""
    x = node.inputs[0]
    fmt = node.attrs["data_format"]
    shape = list(x.shape)
    for axis, size in zip(spatial_axes(x.rank, fmt), sizes):
        shape[axis] = size
    if channels is not None:
        shape[channel_axis(x.rank, fmt)] = channels
    return tuple(shape)


def _spatial_sizes(node):
    x = node.inputs[0]
    rank = node.attrs.get("rank", x.rank - 2)
    if x.rank != rank + 2:
        raise GraphError(f"{node.name}: expected a rank-{rank + 2} input, got shape {x.shape}")
    return [x.shape[a] for a in spatial_axes(x.rank, node.attrs["data_format"])]


def _check_channels(node, expected):
    x = node.inputs[0]
    c = x.shape[channel_axis(x.rank, node.attrs["data_format"])]
    if c is not None and expected is not None and c != expected:
        raise GraphError(f"{node.name}: input has {c} channels but the weights expect {expected}")


def _infer_conv(node):
    a = node.attrs
    sizes = _spatial_sizes(node)
    w = node.weights.get("weight")
    if w is not None:
        _check_channels(node, w.shape[1] * a["groups"])
    out = [
        _conv_out(n, k, s, d, "same" if a["padding"] == "same" else a["padding"][i])
        for i, (n, k, s, d) in enumerate(zip(sizes, a["kernel_size"], a["strides"], a["dilation"]))
    ]
    return [(_with_spatial(node, out, a["filters"]), node.inputs[0].dtype)]


def _infer_conv_transpose(node):
    a = node.attrs
    sizes = _spatial_sizes(node)
    w = node.weights.get("weight")
    if w is not None:
        _check_channels(node, w.shape[0])
    out = [
        _dim(
            n,
            lambda n, i=i, k=k, s=s, d=d: (n - 1) * s - sum(a["padding"][i]) + d * (k - 1) + 1 + a["output_padding"][i],
        )
        for i, (n, k, s, d) in enumerate(zip(sizes, a["kernel_size"], a["strides"], a["dilation"]))
    ]
    return [(_with_spatial(node, out, a["filters"]), node.inputs[0].dtype)]


_CONV_ATTRS = (
    attr("rank", int, choices=(1, 2, 3)),
    attr("filters", int),
    attr("kernel_size", tuple),
    attr("strides", tuple),
    attr("dilation", tuple),
    attr("groups", int, default=1),
    attr("padding", tuple, str),
    attr("use_bias", bool, default=True),
    _DATA_FORMAT,
    attr("activation", dict, default=None),
)

define(
    OpDef(
        "conv",
        _infer_conv,
        attrs=_CONV_ATTRS,
        weights=("weight", "bias"),
        layout=Layout.SPATIAL,
        doc="N-d convolution; padding is ((begin, end), ...) per spatial axis, or 'same' "
        "(TensorFlow's rule: the extra pixel at the end) where sizes are dynamic",
        family="conv",
    )
)
define(
    OpDef(
        "conv_transpose",
        _infer_conv_transpose,
        attrs=_CONV_ATTRS[:6] + (attr("padding", tuple), attr("output_padding", tuple)) + _CONV_ATTRS[7:],
        weights=("weight", "bias"),
        layout=Layout.SPATIAL,
        doc="N-d transposed convolution; padding is the ((begin, end), ...) cropped from the full output",
        family="conv",
    )
)


# -- pooling ------------------------------------------------------------------------------
def _infer_pool(node):
    a = node.attrs
    sizes = _spatial_sizes(node)
    out = []
    for i, (n, k, s) in enumerate(zip(sizes, a["pool_size"], a["strides"])):
        if a["padding"] == "same":
            out.append(_dim(n, lambda n, s=s: math.ceil(n / s)))
            continue
        b, e = a["padding"][i]
        rounding = math.ceil if a["ceil_mode"] else math.floor

        def size(n, b=b, e=e, k=k, s=s, rounding=rounding):
            o = rounding((n + b + e - k) / s) + 1
            if a["ceil_mode"] and (o - 1) * s >= n + b:  # torch: the last window must start inside
                o -= 1
            return o

        out.append(_dim(n, size))
    return [(_with_spatial(node, out, None), node.inputs[0].dtype)]


define(
    OpDef(
        "pool",
        _infer_pool,
        attrs=(
            attr("mode", str, choices=("max", "avg")),
            attr("rank", int, choices=(1, 2, 3)),
            attr("pool_size", tuple),
            attr("strides", tuple),
            attr("padding", tuple, str),
            attr("ceil_mode", bool, default=False),
            attr("count_include_pad", bool, default=False),
            _DATA_FORMAT,
        ),
        layout=Layout.SPATIAL,
        doc="max/average pooling; padded positions never win a max and are counted by an "
        "average only if count_include_pad",
        family="pooling",
    )
)


def _infer_global_pool(node):
    x = node.inputs[0]
    fmt = node.attrs["data_format"]
    if node.attrs["keepdims"]:
        return [(_with_spatial(node, [1] * (x.rank - 2), None), x.dtype)]
    return [((x.shape[0], x.shape[channel_axis(x.rank, fmt)]), x.dtype)]


define(
    OpDef(
        "global_pool",
        _infer_global_pool,
        attrs=(attr("mode", str, choices=("max", "avg")), attr("keepdims", bool, default=False), _DATA_FORMAT),
        layout=Layout.SPATIAL,
        doc="max/average over all spatial axes",
        family="pooling",
    )
)


# -- dense and embedding ------------------------------------------------------------------
def _infer_dense(node):
    x = node.inputs[0]
    w = node.weights.get("weight")
    if w is not None and x.shape[-1] is not None and w.shape[1] != x.shape[-1]:
        raise GraphError(f"{node.name}: input has {x.shape[-1]} features but the weight expects {w.shape[1]}")
    return [(x.shape[:-1] + (node.attrs["units"],), x.dtype)]


define(
    OpDef(
        "dense",
        _infer_dense,
        attrs=(attr("units", int), attr("use_bias", bool, default=True), attr("activation", dict, default=None)),
        weights=("weight", "bias"),
        layout=Layout.OPAQUE,
        doc="x @ weight.T + bias over the last axis",
        family="core",
    )
)


def _infer_embedding(node):
    x = node.inputs[0]
    if node.attrs["reverse"]:
        return [(x.shape[:-1] + (node.attrs["input_dim"],), x.dtype)]
    return [(x.shape + (node.attrs["output_dim"],), "float32")]


define(
    OpDef(
        "embedding",
        _infer_embedding,
        attrs=(
            attr("input_dim", int),
            attr("output_dim", int),
            attr("padding_idx", int, default=None),
            attr("reverse", bool, default=False),
        ),
        weights=("weight",),
        doc="row lookup in a (input_dim, output_dim) table; reverse: x @ table.T, the table read as an "
        "output layer (a language model's head tied to its input embeddings, one weight)",
        family="core",
    )
)


# -- normalisation ------------------------------------------------------------------------
define(
    OpDef(
        "batch_norm",
        same_as_input,
        attrs=(
            attr("axis", int),
            attr("epsilon", *_F),
            attr("momentum", *_F, default=0.1),
            attr("biased_running_var", bool, default=False),
        ),
        weights=("weight", "bias", "running_mean", "running_var"),
        layout=Layout.AXIS,
        axis_attrs=("axis",),
        doc="(x - running_mean) / sqrt(running_var + epsilon) * weight + bias along `axis`; "
        "momentum in PyTorch's convention (weight of the new batch). In training, running_var "
        "tracks the unbiased batch variance (PyTorch), or the biased one if biased_running_var (Keras)",
        family="normalization",
    )
)
define(
    OpDef(
        "layer_norm",
        same_as_input,
        attrs=(attr("axes", tuple), attr("epsilon", *_F), attr("rms_scaling", bool, default=False)),
        weights=("weight", "bias"),
        layout=Layout.AXIS,
        axis_attrs=("axes",),
        axes_weights=("weight", "bias"),
        doc="normalise over `axes` with biased variance; weight/bias (optional) shaped like those axes. "
        "rms_scaling is Keras's deprecated variant: x * rsqrt(var(x) + epsilon) * weight, no centring",
        family="normalization",
    )
)
define(
    OpDef(
        "rms_norm",
        same_as_input,
        attrs=(attr("axes", tuple), attr("epsilon", *_F)),
        weights=("weight",),
        layout=Layout.AXIS,
        axis_attrs=("axes",),
        axes_weights=("weight",),
        doc="x * rsqrt(mean(x**2 over `axes`) + epsilon) * weight; weight (optional) shaped like those axes",
        family="normalization",
    )
)
define(
    OpDef(
        "group_norm",
        same_as_input,
        attrs=(attr("groups", int), attr("axis", int), attr("epsilon", *_F)),
        weights=("weight", "bias"),
        layout=Layout.AXIS,
        axis_attrs=("axis",),
        doc="normalise each group of consecutive channels along `axis` over the group and all other non-batch axes",
        family="normalization",
    )
)
define(
    OpDef(
        "l2_normalize",
        same_as_input,
        attrs=(attr("axes", tuple), attr("epsilon", *_F, default=1e-12)),
        layout=Layout.AXIS,
        axis_attrs=("axes",),
        doc="x / max(sqrt(sum(x**2, axes)), epsilon)",
        family="normalization",
    )
)
define(
    OpDef(
        "standardize",
        same_as_input,
        attrs=(attr("axis", tuple), attr("invert", bool, default=False)),
        weights=("mean", "std"),
        layout=Layout.AXIS,
        axis_attrs=("axis",),
        axes_weights=("mean", "std"),
        doc="(x - mean) / std, or mean + x * std if invert; mean/std shaped like the input sizes on `axis` (Keras Normalization, std already floored at epsilon)",
        family="normalization",
    )
)
define(
    OpDef(
        "channel_affine",
        same_as_input,
        attrs=(attr("axis", int), attr("learned", bool, default=False)),
        weights=("scale", "offset"),
        layout=Layout.AXIS,
        axis_attrs=("axis",),
        doc="x * scale + offset with per-channel vectors along `axis` (either may be absent); "
        "learned: trained parameters (LayerScale) rather than constants (Rescaling)",
        family="normalization",
    )
)
