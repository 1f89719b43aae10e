"""Questions about values that several pipelines ask (framework-free)."""

from __future__ import annotations

from .ir import Node, Value
from .ops import Layout, get_op


def _first_spatial_op(value: Value, through: tuple[str, ...]) -> Node | None:
    """The first spatial op (of the value's rank) reached from `value` through ops of the
    layout classes `through` that keep its rank."""
    seen: set[int] = set()
    frontier = [value]
    while frontier:
        v = frontier.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        for node in list(v.users) + ([v.producer] if v.producer is not None else []):
            layout = get_op(node.op).layout
            if layout == Layout.SPATIAL and node.inputs[0].rank == value.rank:
                return node
            if layout in through:
                frontier.extend(x for x in [*node.inputs, *node.outputs] if x.rank == value.rank)
    return None


def is_spatial(value: Value) -> bool:
    """Whether a value is image or sequence data: it reaches a spatial op through ops that
    keep its rank (element-wise, axis, transpose)."""
    return _first_spatial_op(value, (Layout.ELEMENTWISE, Layout.AXIS, Layout.TRANSPOSE)) is not None


def spatial_format(value: Value) -> str | None:
    """The data_format ('channels_last' / 'channels_first') in which a value is image or
    sequence data: that of the first spatial op it reaches without crossing a transpose
    (which would move the channels). None if it is not spatial data."""
    node = _first_spatial_op(value, (Layout.ELEMENTWISE, Layout.AXIS))
    return None if node is None else str(node.attrs["data_format"])


def id_range(value: Value) -> tuple[int, int] | None:
    """For an integer input that feeds an embedding (possibly through casts or no-ops), the
    range of valid ids [0, vocabulary size)."""
    frontier = [value]
    seen: set[int] = set()
    while frontier:
        v = frontier.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        for user in v.users:
            if user.op == "embedding":
                return (0, int(user.attrs["input_dim"]))
            if user.op in ("cast", "identity"):
                frontier.extend(user.outputs)
    return None


_LAYOUT_NAMES = {3: ("NLC", "NCL"), 4: ("NHWC", "NCHW"), 5: ("NDHWC", "NCDHW")}


def layout_name(rank: int, channels_first: bool) -> str | None:
    """'NCHW', 'NHWC', 'NCL', ... for image/sequence data of `rank` (None for other ranks)."""
    names = _LAYOUT_NAMES.get(rank)
    return None if names is None else names[1 if channels_first else 0]


def is_padding_mask(name: str, dtype: str, rank: int) -> bool:
    """Whether a model input holds a tokenizer's padding mask (1 = token, 0 = padding), by the
    names Keras models give one (`padding_mask`, `encoder_padding_mask`, `attention_mask`): an
    integer or bool (batch, sequence) tensor. Its checks feed it left- and right-padded rows."""
    return "mask" in name.lower() and rank == 2 and (dtype.startswith(("int", "uint")) or dtype == "bool")
