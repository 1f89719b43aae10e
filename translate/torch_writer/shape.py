"""PyTorch code for data movement: flatten, reshape, permute, cat, pad, crop, resize, reduce,
cumsum."""

from __future__ import annotations

from ...graph import Node
from ...graph.errors import GraphError
from ..registry import register
from .codegen import Raw, TorchEmitter, call, py_literal
from .conv import compact, require_channels_first, torch_pad

_DTYPES = {
    "float16": "torch.float16",
    "bfloat16": "torch.bfloat16",
    "float32": "torch.float32",
    "float64": "torch.float64",
    "int8": "torch.int8",
    "uint8": "torch.uint8",
    "int16": "torch.int16",
    "int32": "torch.int32",
    "int64": "torch.int64",
    "bool": "torch.bool",
}


@register("ir->torch", "flatten")
def flatten_to_torch(node: Node, em: TorchEmitter) -> None:
    em.assign(node, f"{em.var(node.inputs[0])}.flatten(1)")


@register("ir->torch", "reshape")
def reshape_to_torch(node: Node, em: TorchEmitter) -> None:
    x = em.var(node.inputs[0])
    target = tuple(node.attrs["shape"])
    if -1 in target:
        em.assign(node, f"{x}.reshape({x}.shape[0], {', '.join(str(d) for d in target)})")
    else:
        em.assign(node, f"{x}.reshape(-1, {', '.join(str(d) for d in target)})")


@register("ir->torch", "transpose")
def transpose_to_torch(node: Node, em: TorchEmitter) -> None:
    em.assign(node, f"{em.var(node.inputs[0])}.permute({', '.join(str(p) for p in node.attrs['perm'])})")


@register("ir->torch", "concat")
def concat_to_torch(node: Node, em: TorchEmitter) -> None:
    names = ", ".join(em.var(v) for v in node.inputs)
    em.assign(node, f"torch.cat([{names}], dim={node.attrs['axis']})")


@register("ir->torch", "pad")
def pad_to_torch(node: Node, em: TorchEmitter) -> None:
    require_channels_first(node)
    value = float(node.attrs["value"])
    extra = f", value={py_literal(value)}" if value != 0.0 else ""
    em.assign(
        node, f"{em.functional()}.pad({em.var(node.inputs[0])}, {py_literal(torch_pad(node.attrs['pads']))}{extra})"
    )


@register("ir->torch", "crop")
def crop_to_torch(node: Node, em: TorchEmitter) -> None:
    require_channels_first(node)
    slices = [":", ":"] + [f"{b or ''}:{-e if e else ''}" for b, e in node.attrs["crops"]]
    em.assign(node, f"{em.var(node.inputs[0])}[{', '.join(slices)}]")


_MODES = {
    ("nearest", 1): "nearest-exact",
    ("nearest", 2): "nearest-exact",
    ("nearest", 3): "nearest-exact",
    ("bilinear", 1): "linear",
    ("bilinear", 2): "bilinear",
    ("bilinear", 3): "trilinear",
    ("linear", 1): "linear",
    ("trilinear", 3): "trilinear",
    ("bicubic", 2): "bicubic",
}


@register("ir->torch", "upsample")
def upsample_to_torch(node: Node, em: TorchEmitter) -> None:
    require_channels_first(node)
    a = node.attrs
    rank = len(a["scale"])
    mode = _MODES.get((a["mode"], rank))
    if mode is None:
        raise GraphError(f"{node.name}: {a['mode']} upsampling of rank {rank} is not supported")
    if mode == "nearest-exact":
        mode = "nearest"  # the same for integer factors, and what people write
    kwargs: dict = {"scale_factor": compact(tuple(int(s) for s in a["scale"])), "mode": mode}
    if mode != "nearest":
        kwargs["align_corners"] = bool(a["align_corners"])
    mod = em.module(node, call("nn.Upsample", **kwargs))
    em.assign(node, f"{mod}({em.var(node.inputs[0])})")


@register("ir->torch", "resize")
def resize_to_torch(node: Node, em: TorchEmitter) -> None:
    require_channels_first(node)
    a = node.attrs
    mode = _MODES.get((a["mode"], len(a["size"])))
    if mode is None:
        raise GraphError(f"{node.name}: {a['mode']} resizing is not supported")
    extra = ""
    if mode not in ("nearest", "nearest-exact"):
        extra = ", align_corners=False" + (", antialias=True" if a["antialias"] else "")
    em.assign(
        node,
        f'{em.functional()}.interpolate({em.var(node.inputs[0])}, size={py_literal(tuple(a["size"]))}, mode="{mode}"{extra})',
    )


@register("ir->torch", "repeat_vector")
def repeat_vector_to_torch(node: Node, em: TorchEmitter) -> None:
    em.assign(node, f"{em.var(node.inputs[0])}.unsqueeze(1).expand(-1, {node.attrs['n']}, -1)")


@register("ir->torch", "matmul")
def matmul_to_torch(node: Node, em: TorchEmitter) -> None:
    a, b = node.inputs
    em.assign(node, f"{em.var(a)} @ {em.var(b)}")


_REDUCE = {"mean": "mean", "sum": "sum", "max": "amax", "min": "amin"}


@register("ir->torch", "reduce")
def reduce_to_torch(node: Node, em: TorchEmitter) -> None:
    a = node.attrs
    axes = tuple(a["axes"])
    keep = ", keepdim=True" if a["keepdims"] else ""
    x = em.var(node.inputs[0])
    if a["mode"] == "prod":
        if len(axes) != 1:
            raise GraphError(f"{node.name}: a product over several axes is not supported")
        em.assign(node, f"{x}.prod({axes[0]}{keep})")
        return
    dim = axes[0] if len(axes) == 1 else axes
    em.assign(node, f"{x}.{_REDUCE[a['mode']]}({py_literal(dim)}{keep})")


@register("ir->torch", "cumsum")
def cumsum_to_torch(node: Node, em: TorchEmitter) -> None:
    """The running sum in the input's dtype (torch sums integers as int64 unless told)."""
    dtype = node.inputs[0].dtype
    keep = f", dtype={_DTYPES[dtype]}" if not dtype.startswith(("float", "bfloat")) and dtype != "int64" else ""
    em.assign(node, f"{em.var(node.inputs[0])}.cumsum({node.attrs['axis']}{keep})")


@register("ir->torch", "cast")
def cast_to_torch(node: Node, em: TorchEmitter) -> None:
    em.assign(node, f"{em.var(node.inputs[0])}.to({_DTYPES[node.attrs['dtype']]})")


# PyTorch's F.interpolate modes for the IR's interpolate (PyTorch's own semantics, by rank)
_INTERPOLATE_MODES = {
    ("nearest", 1): "nearest",
    ("nearest", 2): "nearest",
    ("nearest", 3): "nearest",
    ("nearest_exact", 1): "nearest-exact",
    ("nearest_exact", 2): "nearest-exact",
    ("nearest_exact", 3): "nearest-exact",
    ("linear", 1): "linear",
    ("linear", 2): "bilinear",
    ("linear", 3): "trilinear",
    ("cubic", 2): "bicubic",
}


@register("ir->torch", "interpolate")
def interpolate_to_torch(node: Node, em: TorchEmitter) -> None:
    """F.interpolate as PyTorch wrote it: with the scale_factor it was given (PyTorch then samples
    at 1 / scale), else to the size."""
    require_channels_first(node)
    a = node.attrs
    mode = _INTERPOLATE_MODES.get((a["mode"], len(a["size"])))
    if mode is None:
        raise GraphError(f"{node.name}: {a['mode']} interpolation of rank {len(a['size'])} is not supported")
    kwargs: dict = {"scale_factor": compact(tuple(a["scale"]))} if a["scale"] else {"size": compact(tuple(a["size"]))}
    kwargs["mode"] = mode
    if mode not in ("nearest", "nearest-exact"):
        kwargs["align_corners"] = bool(a["align_corners"])
    em.assign(node, call(f"{em.functional()}.interpolate", Raw(em.var(node.inputs[0])), **kwargs))


@register("ir->torch", "pixel_shuffle", "pixel_unshuffle")
def pixel_shuffle_to_torch(node: Node, em: TorchEmitter) -> None:
    require_channels_first(node)
    if node.op == "pixel_shuffle":
        mod = em.module(node, call("nn.PixelShuffle", node.attrs["upscale"]))
    else:
        mod = em.module(node, call("nn.PixelUnshuffle", node.attrs["downscale"]))
    em.assign(node, f"{mod}({em.var(node.inputs[0])})")
