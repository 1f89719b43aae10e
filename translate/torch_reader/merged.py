"""Tensors whose batch axis PyTorch merged with another axis.

Window attention (Swin) reshapes (B, H, W, C) images into (B * windows, tokens, C) and
runs attention with the windows as more examples of the batch; Hugging Face models fold
heads into the batch the same way. The graph keeps the batch on axis 0, alone, so such a
tensor is held as a `MergedBatch`: a graph value with the batch split out in front,
(B, windows, tokens, C), and the position of the merged axis in PyTorch's shape. Every ATen
call that reads it is translated on that value, its dims shifted by one (`permute`,
`select`, `softmax`, ...), until a reshape separates the batch again
((B * windows, ...) -> (B, windows, ...)), which gives a plain value back. The emitted model
keeps its dynamic batch: it reshapes and permutes the axes after the batch only.

Held with the merged axis first, the value's elements are in PyTorch's order (the batch is
the outermost factor), so a reshape is a reshape of the axes after the batch. A reshape
of a tensor whose merged axis is not first is refused.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ...graph import Value
from ...graph.errors import UnsupportedOpError
from .calls import BATCH, BatchExpr, Const, Deferred, batch_factor

if TYPE_CHECKING:
    from .reader import TorchReader


def batch_target(size: list[Any], elements: int, static_batch: int | None) -> tuple[int, tuple[int, ...]] | None:
    """(k, rest) when reshaping a tensor of batch * `elements` elements to `size` gives
    axis 0 the size batch * k and the other axes the sizes `rest`; None if it does not
    (the batch size lands on another axis, or the sizes do not add up)."""
    first, rest = size[0], list(size[1:])
    if any(not isinstance(d, int) for d in rest) or rest.count(-1) > 1:
        return None
    known = math.prod(d for d in rest if d != -1)
    k = batch_factor(first)
    if k is None:
        if not isinstance(first, int):
            return None
        if first == -1:
            if -1 in rest or known == 0 or elements % known:
                return None
            k = elements // known
        elif static_batch and first % static_batch == 0:
            k = first // static_batch  # a fixed-batch export spells batch * k as a number
        else:
            return None
    if -1 in rest:
        if k * known == 0 or elements % (k * known):
            return None
        rest[rest.index(-1)] = elements // (k * known)
    if k * math.prod(rest) != elements:
        return None
    return k, tuple(rest)


class MergedBatch(Deferred):
    """A tensor whose PyTorch axis `axis` is batch * k: held as `value`, the batch in
    front and k at position axis + 1 (PyTorch axis i is axis i + 1 of the value)."""

    def __init__(self, value: Value, axis: int) -> None:
        self.value = value
        self.axis = axis

    @property
    def rank(self) -> int:
        """PyTorch's rank of the tensor."""
        return self.value.rank - 1

    @property
    def factor(self) -> int | None:
        """k, or None where k is a length known only at run time (tokens of a dynamic sequence)."""
        k = self.value.shape[self.axis + 1]
        return None if k is None else int(k)

    def size(self, dim: int) -> Any:
        d = dim % self.rank
        if d == self.axis:
            if self.factor is None:
                return BatchExpr("batch * length")
            return BATCH if self.factor == 1 else BatchExpr(f"batch * {self.factor}", self.factor)
        return self.value.shape[d + 1]

    def torch_shape(self) -> tuple:
        """PyTorch's shape, the merged axis written as B*k."""
        out: list = list(self.value.shape[1:])
        out[self.axis] = f"B*{'length' if self.factor is None else self.factor}"
        return tuple(out)

    def __repr__(self) -> str:
        return f"MergedBatch({self.value.name}, axis={self.axis}, factor={self.factor})"

    # -- translation ----------------------------------------------------------------------
    def apply(self, reader: TorchReader, node: Any, key: str, args: dict[str, Any]) -> Any:
        handler = _HANDLERS.get(key)
        if handler is None:
            keys = ", ".join(sorted(_HANDLERS))
            raise _refuse(
                node,
                key,
                f"{key} is not translated on a tensor whose batch axis is merged with axis {self.axis} "
                f"(PyTorch shape {self.torch_shape()}, batch * {self.factor} on axis {self.axis}); ops translated on such tensors: {keys}",
            )
        return handler(self, reader, node, key, dict(args))

    def materialize(self, reader: TorchReader, name: str) -> Value:
        raise UnsupportedOpError(
            [
                (
                    name,
                    "output",
                    "the batch axis of this model output is merged with another axis; the emitted model keeps the batch on axis 0",
                )
            ],
            where="the PyTorch reader",
        )

    def dim(self, node: Any, key: str, d: int) -> int:
        """The value's axis for PyTorch dim `d` (not the merged one)."""
        d = int(d) % self.rank
        if d == self.axis:
            raise _refuse(node, key, f"works on axis {d}, which holds the batch merged with another axis")
        return d + 1


def _refuse(node: Any, key: str, reason: str) -> UnsupportedOpError:
    return UnsupportedOpError([(node.name, key, reason)], where="the PyTorch reader")


def _shapes(x: MergedBatch, node: Any, axis: int | None) -> list[tuple]:
    """The graph shape of the call's output: PyTorch's, with the batch split out in front
    of a merged `axis` (its size, batch * k, left unchecked)."""
    return _shape_of(node.meta.get("val"), node, axis)


def _shape_of(val: Any, node: Any, axis: int | None) -> list[tuple]:
    dims: list[int | None] = []
    for i, d in enumerate(val.shape):
        if i == (0 if axis is None else axis) or not isinstance(d, int):
            dims.append(None)  # the batch, or a length the export keeps dynamic
            continue
        try:
            dims.append(int(d))
        except (TypeError, ValueError):
            raise _refuse(node, "dynamic shape", f"axis {i} has the symbolic size {d}") from None
    if axis is None:
        return [(None, *dims[1:])]
    return [(None, *dims)]


def _translate(x: MergedBatch, reader: TorchReader, node: Any, key: str, args: dict[str, Any], axis: int | None) -> Any:
    """Translate the call on the values, wrapping a result whose merged axis is `axis`."""
    out = reader.translate(node, key, args, _shapes(x, node, axis))
    if axis is None or not isinstance(out, Value):
        return out
    return _wrap(reader, node, out, axis)


def _wrap(reader: TorchReader, node: Any, value: Value, axis: int) -> Any:
    """`value` held as a MergedBatch on `axis`; a batch merged with a size-1 axis in front
    (B * 1 on axis 0) is a plain tensor again: that axis is squeezed out."""
    if axis == 0 and value.shape[1] == 1:
        return reader.translate(node, "aten.squeeze", {"self": value, "dim": 1}, [(None, *value.shape[2:])])
    return MergedBatch(value, axis)


# arguments of a call on the last axes that never broadcast against the batch (a Linear's
# weight (out, in), a LayerNorm's (C,) weight): no size on them is the merged axis's
_OWN_WEIGHTS = {"aten.linear": ("weight", "bias"), "aten.layer_norm": ("weight", "bias")}


def _operands(x: MergedBatch, node: Any, key: str, args: dict[str, Any], core: int = 0) -> dict[str, Any]:
    """Merged tensors replaced by their values; they must agree on the merged axis, and a
    constant operand must have size 1 there (it broadcasts over the batch and the windows).
    `core` trailing axes of a constant are the op's own (a matmul's matrix: 2) and never
    line up with the merged axis; neither do a Linear's or a LayerNorm's weights."""
    out = {}
    own = _OWN_WEIGHTS.get(key, ())
    for name, v in args.items():
        if isinstance(v, MergedBatch):
            if v.rank != x.rank or v.axis != x.axis or v.factor != x.factor:
                raise _refuse(node, key, f"combines tensors whose batch is merged differently ({v!r} and {x!r})")
            v = v.value
        elif isinstance(v, Value):
            raise _refuse(
                node,
                key,
                "combines a tensor whose batch axis is merged with another axis and one whose batch axis is not",
            )
        elif isinstance(v, Const) and name not in own:
            at = x.axis - (x.rank - v.array.ndim)  # the constant's axis that lines up with the merged one
            if 0 <= at < v.array.ndim - core and v.array.shape[at] != 1:
                raise _refuse(
                    node,
                    key,
                    f"a constant of shape {v.array.shape} has size {v.array.shape[at]} on the merged batch axis",
                )
        out[name] = v
    return out


def _reshape(x: MergedBatch, reader: TorchReader, node: Any, key: str, args: dict[str, Any]) -> Any:
    size = list(args.get("size", args.get("shape")))
    if x.factor is None:
        # (B * N, C) back to (B, N, C) with a dynamic length N: the value as it is held
        if x.axis == 0 and _shape_of(node.meta.get("val"), node, None)[0][1:] == (None, *x.value.shape[2:]):
            return x.value
        raise _refuse(node, key, f"reshape to {tuple(size)} of tokens merged with the batch, with a dynamic length")
    if x.axis != 0 and any(d != 1 for d in x.value.shape[1 : x.axis + 1]):
        raise _refuse(node, key, f"reshapes a tensor whose batch is merged into axis {x.axis}, not axis 0")
    if x.axis != 0:  # only size-1 axes before it: the elements are in the same order
        x = MergedBatch(
            _emit_reshape(
                reader, node, key, x, (x.factor, *[d for i, d in enumerate(x.value.shape[1:]) if i != x.axis])
            ),
            0,
        )
    target = batch_target(size, math.prod(x.value.shape[1:]), reader.static_batch)
    if target is None:
        raise _refuse(node, key, f"reshape to {tuple(size)} moves the batch size to an axis other than 0")
    k, rest = target
    args["self"] = x.value
    args["size" if "size" in args else "shape"] = [BATCH, k, *rest] if k != 1 else [BATCH, *rest]
    return _translate(x, reader, node, key, args, 0 if k != 1 else None)


def _emit_reshape(reader: TorchReader, node: Any, key: str, x: MergedBatch, shape: tuple) -> Value:
    return reader.translate(node, "aten.reshape", {"self": x.value, "shape": [BATCH, *shape]}, [(None, *shape)])


def _permute(x: MergedBatch, reader: TorchReader, node: Any, key: str, args: dict[str, Any]) -> Any:
    if key == "aten.permute":
        perm = [int(d) % x.rank for d in args["dims"]]
    else:
        perm = list(range(x.rank))
        a, b = int(args["dim0"]) % x.rank, int(args["dim1"]) % x.rank
        perm[a], perm[b] = perm[b], perm[a]
    return _translate(
        x, reader, node, "aten.permute", {"self": x.value, "dims": [0, *(d + 1 for d in perm)]}, perm.index(x.axis)
    )


def _select(x: MergedBatch, reader: TorchReader, node: Any, key: str, args: dict[str, Any]) -> Any:
    d = int(args["dim"]) % x.rank
    args["self"], args["dim"] = x.value, x.dim(node, key, d)
    return _translate(x, reader, node, key, args, x.axis - (d < x.axis))


def _slice(x: MergedBatch, reader: TorchReader, node: Any, key: str, args: dict[str, Any]) -> Any:
    args["self"], args["dim"] = x.value, x.dim(node, key, args["dim"])
    return _translate(x, reader, node, key, args, x.axis)


def _unsqueeze(x: MergedBatch, reader: TorchReader, node: Any, key: str, args: dict[str, Any]) -> Any:
    d = int(args["dim"]) % (x.rank + 1)
    args["self"], args["dim"] = x.value, d + 1
    return _translate(x, reader, node, key, args, x.axis + (d <= x.axis))


def _softmax(x: MergedBatch, reader: TorchReader, node: Any, key: str, args: dict[str, Any]) -> Any:
    args["self"], args["dim"] = x.value, x.dim(node, key, args["dim"])
    return _translate(x, reader, node, key, args, x.axis)


def _split_like(x: MergedBatch, reader: TorchReader, node: Any, key: str, args: dict[str, Any]) -> Any:
    """unbind / chunk / split / split_with_sizes along an axis other than the merged one
    (timm's qkv.reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)): every piece keeps
    the batch merged the same way (unbind drops an axis before it: one place earlier)."""
    d = int(args["dim"]) % x.rank
    args["self"], args["dim"] = x.value, x.dim(node, key, d)
    axis = x.axis - (d < x.axis) if key == "aten.unbind" else x.axis
    shapes = [s for val in node.meta.get("val") for s in _shape_of(val, node, axis)]
    outs = reader.translate(node, key, args, shapes)
    return [_wrap(reader, node, v, axis) for v in outs]


def _reshape_as(x: MergedBatch, reader: TorchReader, node: Any, key: str, args: dict[str, Any]) -> Any:
    """x.reshape_as(other) on a merged tensor: a reshape to other's size."""
    other = args.pop("other")
    if isinstance(other, MergedBatch):
        size = [other.size(i) for i in range(other.rank)]
    elif isinstance(other, Value):
        size = [BATCH, *other.shape[1:]]
    else:
        raise _refuse(node, key, f"reshape_as a {type(other).__name__}")
    if args.get("self") is not x:
        raise _refuse(node, key, "reshapes a tensor whose batch is not merged like the other operand's")
    return _reshape(x, reader, node, "aten.reshape", {"self": x, "shape": size})


def _batch_norm(x: MergedBatch, reader: TorchReader, node: Any, key: str, args: dict[str, Any]) -> Any:
    """BatchNorm1d on tokens flattened into the batch (LeViT's (B * N, C)): channels on axis 1."""
    if x.axis == 1:
        raise _refuse(node, key, "normalises the channel axis, which holds the batch merged with another axis")
    args["input"], args["channel_axis"] = x.value, 2
    val = node.meta.get("val")
    if not isinstance(val, (list, tuple)):
        return _translate(x, reader, node, key, args, x.axis)
    out = reader.translate(
        node, key, args, _shape_of(val[0], node, x.axis)
    )  # the legit_no_training form: (y, None, None)
    return [_wrap(reader, node, out[0], x.axis), *out[1:]]


_MATRIX = ("aten.matmul", "aten.mm", "aten.bmm", "aten.baddbmm")


def _trailing(n: int):
    """A call on the last `n` axes (linear: 1, matmul: 2), translated as it is."""

    def handler(x: MergedBatch, reader: TorchReader, node: Any, key: str, args: dict[str, Any]) -> Any:
        count = len(args["normalized_shape"]) if key == "aten.layer_norm" else n
        other = args.get("other", args.get("mat2"))
        if key in _MATRIX and args.get("self") is x and isinstance(other, Const) and other.array.ndim == 2:
            count = 1  # rows (B * N, C) times a constant matrix: each row on its own, like a Linear
        if x.axis >= x.rank - count:
            raise _refuse(node, key, "works on the axis that holds the batch merged with another axis")
        return _translate(x, reader, node, key, _operands(x, node, key, args, core=n if key in _MATRIX else 0), x.axis)

    return handler


_ELEMENTWISE = (
    "aten.add", "aten.sub", "aten.rsub", "aten.mul", "aten.div", "aten.maximum", "aten.minimum", "aten.pow",
    "aten.relu", "aten.gelu", "aten.silu", "aten.sigmoid", "aten.tanh", "aten.exp", "aten.neg", "aten.sqrt",
    "aten.rsqrt", "aten.erf", "aten.abs", "aten.hardswish", "aten.hardtanh", "aten.leaky_relu", "aten.clamp",
    "aten.to", "aten._to_copy",
)  # fmt: skip


def _dropout(x: MergedBatch, reader: TorchReader, node: Any, key: str, args: dict[str, Any]) -> Any:
    """Element dropout on windows (Swin's attention dropout); a rate of 0 does nothing, even in training."""
    if float(args.get("p") or 0.0) == 0.0:
        return x
    return _trailing(0)(x, reader, node, key, args)


_HANDLERS = {
    "aten.view": _reshape,
    "aten.dropout": _dropout,
    "aten.alpha_dropout": _dropout,
    "aten.reshape": _reshape,
    "aten._unsafe_view": _reshape,
    "aten.reshape_as": _reshape_as,
    "aten.view_as": _reshape_as,
    "aten.unbind": _split_like,
    "aten.chunk": _split_like,
    "aten.split": _split_like,
    "aten.split_with_sizes": _split_like,
    "aten.permute": _permute,
    "aten.transpose": _permute,
    "aten.select": _select,
    "aten.slice": _slice,
    "aten.unsqueeze": _unsqueeze,
    "aten.softmax": _softmax,
    "aten._softmax": _softmax,
    "aten.log_softmax": _softmax,
    "aten._log_softmax": _softmax,
    "aten.batch_norm": _batch_norm,
    "aten._native_batch_norm_legit_no_training": _batch_norm,
    "aten.linear": _trailing(1),
    "aten.scaled_dot_product_attention": _trailing(2),
    "aten.layer_norm": _trailing(1),
    "aten.matmul": _trailing(2),
    "aten.bmm": _trailing(2),
    "aten.baddbmm": _trailing(2),
    "aten.mm": _trailing(2),
    **{k: _trailing(0) for k in _ELEMENTWISE},
}
