"""Questions about values that several pipelines ask (framework-free)."""

from __future__ import annotations

from .ir import Value
from .ops import Layout, get_op


def is_spatial(value: Value) -> bool:
    """Whether a value is image or sequence data: it reaches a spatial op through ops that
    keep its rank and axis meaning (element-wise, axis, transpose)."""
    seen: set[int] = set()
    frontier = [value]
    while frontier:
        v = frontier.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        for node in list(v.users) + ([v.producer] if v.producer is not None else []):
            layout = get_op(node.op).layout
            if layout == Layout.SPATIAL:
                return True
            if layout in (Layout.ELEMENTWISE, Layout.AXIS, Layout.TRANSPOSE):
                frontier.extend(x for x in [*node.inputs, *node.outputs] if x.rank == value.rank)
    return False


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
