"""Keras code for slicing, splitting, stacking, pixel shuffle and interpolation.

F.interpolate becomes UpSampling where Keras computes the same numbers (integer factors:
nearest, or bilinear at half-pixel centres), else the `Interpolate` layer written into
model.py, which applies PyTorch's sampling as one small matrix per spatial axis."""

from __future__ import annotations

from typing import Any

from ...graph import Node
from ...graph.errors import GraphError
from ...graph.ops import spatial_axes
from ..registry import register
from .codegen import KerasEmitter, py_literal
from .conv import compact, data_format

_UPSAMPLING = {1: "layers.UpSampling1D", 2: "layers.UpSampling2D", 3: "layers.UpSampling3D"}


def _index(rank: int, axis: int, item: str) -> str:
    return ", ".join([":"] * axis + [item])


@register("ir->keras", "slice")
def slice_to_keras(node: Node, em: KerasEmitter) -> None:
    a = node.attrs
    start = "" if a["start"] == 0 else str(a["start"])
    stop = "" if a["stop"] is None else str(a["stop"])
    step = "" if a["step"] == 1 else f":{a['step']}"
    em.assign(node, f"{em.var(node.inputs[0])}[{_index(node.inputs[0].rank, a['axis'], f'{start}:{stop}{step}')}]")


@register("ir->keras", "select")
def select_to_keras(node: Node, em: KerasEmitter) -> None:
    a = node.attrs
    em.assign(node, f"{em.var(node.inputs[0])}[{_index(node.inputs[0].rank, a['axis'], str(a['index']))}]")


@register("ir->keras", "split")
def split_to_keras(node: Node, em: KerasEmitter) -> None:
    a = node.attrs
    sizes = a["sizes"]
    x = em.var(node.inputs[0])
    if len(set(sizes)) == 1:
        em.assign(node, f"keras.ops.split({x}, {len(sizes)}, axis={a['axis']})")
        return
    bounds, total = [], 0
    for s in sizes[:-1]:
        total += s
        bounds.append(total)
    em.assign(node, f"keras.ops.split({x}, {py_literal(bounds)}, axis={a['axis']})")


@register("ir->keras", "expand_dims")
def expand_dims_to_keras(node: Node, em: KerasEmitter) -> None:
    em.assign(node, f"keras.ops.expand_dims({em.var(node.inputs[0])}, axis={node.attrs['axis']})")


@register("ir->keras", "squeeze")
def squeeze_to_keras(node: Node, em: KerasEmitter) -> None:
    em.assign(node, f"keras.ops.squeeze({em.var(node.inputs[0])}, axis={node.attrs['axis']})")


@register("ir->keras", "tile")
def tile_to_keras(node: Node, em: KerasEmitter) -> None:
    em.assign(node, f"keras.ops.tile({em.var(node.inputs[0])}, {py_literal(tuple(node.attrs['reps']))})")


@register("ir->keras", "roll")
def roll_to_keras(node: Node, em: KerasEmitter) -> None:
    em.assign(node, f"keras.ops.roll({em.var(node.inputs[0])}, {node.attrs['shift']}, axis={node.attrs['axis']})")


@register("ir->keras", "stack")
def stack_to_keras(node: Node, em: KerasEmitter) -> None:
    names = ", ".join(em.var(v) for v in node.inputs)
    em.assign(node, f"keras.ops.stack([{names}], axis={node.attrs['axis']})")


_PIXEL_SHUFFLE = '''class PixelShuffle(layers.Layer):
    """PyTorch nn.PixelShuffle on channels-last images: channel c * r * r + i * r + j of
    pixel (h, w) moves to channel c of pixel (h * r + i, w * r + j)."""

    def __init__(self, upscale, **kwargs):
        super().__init__(**kwargs)
        self.upscale = upscale

    def call(self, x):
        r = self.upscale
        h, w, c = x.shape[1], x.shape[2], x.shape[3] // (r * r)
        x = keras.ops.reshape(x, (-1, h, w, c, r, r))
        x = keras.ops.transpose(x, (0, 1, 4, 2, 5, 3))
        return keras.ops.reshape(x, (-1, h * r, w * r, c))

    def get_config(self):
        return {**super().get_config(), "upscale": self.upscale}
'''

_PIXEL_UNSHUFFLE = '''class PixelUnshuffle(layers.Layer):
    """PyTorch nn.PixelUnshuffle on channels-last images (the inverse of PixelShuffle)."""

    def __init__(self, downscale, **kwargs):
        super().__init__(**kwargs)
        self.downscale = downscale

    def call(self, x):
        r = self.downscale
        h, w, c = x.shape[1] // r, x.shape[2] // r, x.shape[3]
        x = keras.ops.reshape(x, (-1, h, r, w, r, c))
        x = keras.ops.transpose(x, (0, 1, 3, 5, 2, 4))
        return keras.ops.reshape(x, (-1, h, w, c * r * r))

    def get_config(self):
        return {**super().get_config(), "downscale": self.downscale}
'''


@register("ir->keras", "pixel_shuffle", "pixel_unshuffle")
def pixel_shuffle_to_keras(node: Node, em: KerasEmitter) -> None:
    x = node.inputs[0]
    if x.rank != 4 or node.attrs["data_format"] != "channels_last":
        raise GraphError(f"{node.name}: pixel (un)shuffle is written for channels-last images only")
    if node.op == "pixel_shuffle":
        layer = em.layer(node, em.helper("PixelShuffle", _PIXEL_SHUFFLE), upscale=node.attrs["upscale"])
    else:
        layer = em.layer(node, em.helper("PixelUnshuffle", _PIXEL_UNSHUFFLE), downscale=node.attrs["downscale"])
    em.assign(node, f"{layer}({em.var(x)})")


_INTERPOLATE = '''def interpolation_matrix(size_in, size_out, mode, align_corners=False, scale=None):
    """The (size_out, size_in) matrix that resamples one axis as PyTorch's F.interpolate does."""
    m = np.zeros((size_out, size_in), dtype="float64")
    # PyTorch's ratio: 1 / scale_factor when one was given, else size_in / size_out
    ratio = (1.0 / scale) if scale else size_in / size_out
    for o in range(size_out):
        if mode in ("nearest", "nearest_exact"):
            src = np.float32(o + (0.5 if mode == "nearest_exact" else 0.0)) * np.float32(ratio)
            m[o, min(int(np.floor(src)), size_in - 1)] = 1.0
            continue
        if align_corners:
            src = o * (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        else:
            src = (o + 0.5) * ratio - 0.5
        if mode == "linear":
            src = max(src, 0.0)
            i0 = min(int(np.floor(src)), size_in - 1)
            i1 = min(i0 + 1, size_in - 1)
            t = src - i0
            m[o, i0] += 1.0 - t
            m[o, i1] += t
        else:  # cubic convolution with a = -0.75, taps clamped at the border
            i = int(np.floor(src))
            t = src - i
            a = -0.75
            taps = (
                ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
                ((a + 2) * t - (a + 3)) * t * t + 1,
                ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
                ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
            )
            for k, w in enumerate(taps):
                m[o, min(max(i - 1 + k, 0), size_in - 1)] += w
    return m.astype("float32")


class Interpolate(layers.Layer):
    """PyTorch F.interpolate (antialias off) to a fixed size, one resampling matrix per spatial axis."""

    def __init__(self, size, mode="linear", align_corners=False, scale=None, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(size)
        self.mode = mode
        self.align_corners = align_corners
        self.scale = None if scale is None else tuple(scale)
        self.data_format = data_format

    def call(self, x):
        rank = len(self.size)
        axes = range(1, rank + 1) if self.data_format == "channels_last" else range(2, rank + 2)
        for i, (axis, out) in enumerate(zip(axes, self.size)):
            scale = None if self.scale is None else self.scale[i]
            m = interpolation_matrix(x.shape[axis], out, self.mode, self.align_corners, scale)
            x = keras.ops.moveaxis(keras.ops.tensordot(x, keras.ops.convert_to_tensor(m, dtype=x.dtype), axes=[[axis], [1]]), -1, axis)
        return x

    def get_config(self):
        config = {"size": self.size, "mode": self.mode, "align_corners": self.align_corners, "scale": self.scale}
        return {**super().get_config(), **config, "data_format": self.data_format}
'''


@register("ir->keras", "interpolate")
def interpolate_to_keras(node: Node, em: KerasEmitter) -> None:
    a = node.attrs
    x = node.inputs[0]
    sizes = [x.shape[i] for i in spatial_axes(x.rank, a["data_format"])]
    out = a["size"]
    factors = [o // n if n and o % n == 0 else None for n, o in zip(sizes, out)]
    integer = all(f is not None and f >= 1 for f in factors)
    if a["scale"] is not None and integer:
        integer = all(abs(s - f) < 1e-9 for s, f in zip(a["scale"], factors))
    rank = len(out)
    keras_mode = None
    if integer and a["mode"] in ("nearest", "nearest_exact"):
        keras_mode = "nearest"
    elif integer and a["mode"] == "linear" and not a["align_corners"] and rank == 2:
        keras_mode = "bilinear"
    if keras_mode is not None and (rank == 2 or keras_mode == "nearest"):
        kwargs: dict[str, Any] = {"size": compact(tuple(factors)) if rank > 1 else factors[0]}
        if rank == 2:
            kwargs["interpolation"] = keras_mode
        kwargs.update(data_format(node) if rank > 1 else {})
        em.assign(node, f"{em.layer(node, _UPSAMPLING[rank], **kwargs)}({em.var(x)})")
        return
    cls = em.helper("Interpolate", _INTERPOLATE)
    kwargs = {"size": tuple(out), "mode": a["mode"]}
    if a["align_corners"]:
        kwargs["align_corners"] = True
    if a["scale"] is not None and not a["align_corners"]:  # PyTorch samples with 1 / scale_factor then
        kwargs["scale"] = tuple(a["scale"])
    kwargs.update(data_format(node))
    em.assign(node, f"{em.layer(node, cls, **kwargs)}({em.var(x)})")


@register("ir->keras", "upsample")
def upsample_to_keras(node: Node, em: KerasEmitter) -> None:
    """Integer-factor upsampling (Keras's UpSampling layers, ONNX nearest Resize,
    tf2onnx's repeat chains): 'nearest' repeats elements, 'bilinear' samples at half-pixel
    centres as Keras's UpSampling2D(interpolation="bilinear") does."""
    a = node.attrs
    rank = len(a["scale"])
    nearest = a["mode"] == "nearest"
    if not (nearest or (a["mode"] == "bilinear" and rank == 2 and not a["align_corners"])):
        raise GraphError(
            f"{node.source or node.name}: {a['mode']} upsampling (align_corners={a['align_corners']}) has no Keras UpSampling layer "
            "(Keras's bicubic uses another kernel; 1-D and 3-D layers only repeat)"
        )
    kwargs: dict[str, Any] = {"size": compact(tuple(int(s) for s in a["scale"])) if rank > 1 else int(a["scale"][0])}
    if not nearest:
        kwargs["interpolation"] = "bilinear"
    kwargs.update(data_format(node) if rank > 1 else {})
    em.assign(node, f"{em.layer(node, _UPSAMPLING[rank], **kwargs)}({em.var(node.inputs[0])})")


@register("ir->keras", "gather")
def gather_to_keras(node: Node, em: KerasEmitter) -> None:
    x, index = (em.var(v) for v in node.inputs)
    em.assign(node, f"keras.ops.take_along_axis({x}, {index}, axis={node.attrs['axis']})")


_SIZE_LIKE = '''class SizeLike(layers.Layer):
    """Axis `axis` of x made as long as axis `ref_axis` of ref is at run time: its first
    elements (mode "slice": a position table cut to the sequence length) or its one
    element repeated (mode "broadcast")."""

    def __init__(self, axis, ref_axis, mode="slice", **kwargs):
        super().__init__(**kwargs)
        self.axis, self.ref_axis, self.mode = axis, ref_axis, mode

    def call(self, x, ref):
        shape = list(keras.ops.shape(x))
        shape[self.axis] = keras.ops.shape(ref)[self.ref_axis]
        if self.mode == "broadcast":
            return keras.ops.broadcast_to(x, shape)
        return keras.ops.slice(x, [0] * len(shape), shape)

    def compute_output_shape(self, x_shape, ref_shape):
        shape = list(x_shape)
        shape[self.axis] = ref_shape[self.ref_axis]
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "ref_axis": self.ref_axis, "mode": self.mode}
'''


@register("ir->keras", "size_like")
def size_like_to_keras(node: Node, em: KerasEmitter) -> None:
    a = node.attrs
    cls = em.helper("SizeLike", _SIZE_LIKE)
    layer = em.layer(node, cls, axis=a["axis"], ref_axis=a["ref_axis"], mode=a["mode"])
    em.assign(node, f"{layer}({em.var(node.inputs[0])}, {em.var(node.inputs[1])})")
