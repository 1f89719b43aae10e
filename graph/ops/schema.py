"""The schema of op kinds: `OpDef` (attributes, weights, layout class, shape inference),
the `define` that puts one into the catalogue and `get_op` that finds it, and the axis
helpers the definitions share. The family modules import this, never the package."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import GraphError

if TYPE_CHECKING:
    from ..ir import Node


class Layout:
    """Layout classes: how an op reacts when its tensors' axes are permuted."""

    ELEMENTWISE = "elementwise"  # any permutation, applied alike to all same-rank operands
    AXIS = "axis"  # any permutation; the axes named in `axis_attrs` are remapped
    SPATIAL = "spatial"  # has `data_format`; the channel-moving permutation flips it
    TRANSPOSE = "transpose"  # composes with any permutation
    FLATTEN = "flatten"  # a permuted input folds into the rows of the Dense that follow
    RESHAPE = "reshape"  # a permutation that keeps the order of non-unit axes is free
    OPAQUE = "opaque"  # only the identity


REQUIRED = object()


@dataclass(frozen=True, slots=True)
class Attr:
    name: str
    types: tuple[type, ...]
    default: Any = REQUIRED
    choices: tuple[Any, ...] | None = None


def attr(name: str, *types: type, default: Any = REQUIRED, choices: Iterable[Any] | None = None) -> Attr:
    return Attr(name, types, default, tuple(choices) if choices is not None else None)


InferFn = Callable[["Node"], list[tuple[tuple, str]]]


@dataclass(frozen=True, slots=True)
class OpDef:
    """One op kind: schema, weights, layout class and shape inference."""

    name: str
    infer: InferFn
    attrs: tuple[Attr, ...] = ()
    weights: tuple[str, ...] = ()
    layout: str = Layout.OPAQUE
    axis_attrs: tuple[str, ...] = ()  # attrs holding axis indices (int or tuple of ints)
    broadcast_weights: tuple[str, ...] = ()  # weights shaped like input[1:] (permuted with it)
    axes_weights: tuple[str, ...] = ()  # weights shaped like the input's sizes on the sorted `axes`
    doc: str = ""
    family: str = ""
    schema: dict[str, Attr] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schema", {a.name: a for a in self.attrs})

    def check_attrs(self, attrs: dict[str, Any], *, where: str) -> dict[str, Any]:
        """Validate attributes against the schema and fill in defaults."""
        unknown = set(attrs) - set(self.schema)
        if unknown:
            raise GraphError(f"{where}: op {self.name!r} has no attribute(s) {sorted(unknown)}")
        out: dict[str, Any] = {}
        for a in self.attrs:
            if a.name in attrs:
                value = attrs[a.name]
            elif a.default is REQUIRED:
                raise GraphError(f"{where}: op {self.name!r} needs attribute {a.name!r}")
            else:
                value = a.default
            if a.types and value is not None and not isinstance(value, a.types):
                raise GraphError(
                    f"{where}: attribute {a.name!r} of op {self.name!r} must be "
                    f"{'/'.join(t.__name__ for t in a.types)}, got {type(value).__name__} {value!r}"
                )
            if a.choices is not None and value not in a.choices:
                raise GraphError(
                    f"{where}: attribute {a.name!r} of op {self.name!r} must be one of {a.choices}, got {value!r}"
                )
            out[a.name] = value
        return out


_CATALOGUE: dict[str, OpDef] = {}


def define(opdef: OpDef) -> OpDef:
    if opdef.name in _CATALOGUE:
        raise GraphError(f"op kind {opdef.name!r} is defined twice")
    _CATALOGUE[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    try:
        return _CATALOGUE[name]
    except KeyError:
        raise GraphError(f"unknown op kind {name!r}") from None


def all_ops() -> dict[str, OpDef]:
    return dict(_CATALOGUE)


# -- shape helpers shared by the families --------------------------------------------------
def same_as_input(node: Node) -> list[tuple[tuple, str]]:
    return [(node.inputs[0].shape, node.inputs[0].dtype)]


def broadcast_shapes(shapes: list[tuple], *, where: str) -> tuple:
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out = []
    for dims in zip(*padded):
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise GraphError(f"{where}: shapes {shapes} do not broadcast")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def spatial_axes(rank: int, data_format: str) -> list[int]:
    """Indices of the spatial axes of a tensor of `rank` in `data_format`."""
    return list(range(1, rank - 1)) if data_format == "channels_last" else list(range(2, rank))


def channel_axis(rank: int, data_format: str) -> int:
    return rank - 1 if data_format == "channels_last" else 1


def normalize_axis(axis: int, rank: int, *, where: str) -> int:
    if not -rank <= axis < rank:
        raise GraphError(f"{where}: axis {axis} is out of range for rank {rank}")
    return axis % rank
