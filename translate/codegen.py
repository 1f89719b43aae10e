"""Code-generation helpers shared by the writers (and the readers' naming): identifiers,
unique names, Python literals, calls, value tables."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..graph.errors import GraphError, UnsupportedOpError
from .registry import lookup

if TYPE_CHECKING:
    from ..graph import Graph, Value

E = TypeVar("E", bound="ValueNames")


def identifier(
    text: str, *, default: str = "x", digit_prefix: bool = True, lower: bool = False, collapse: bool = False
) -> str:
    """`text` as a Python identifier: every non-word character becomes "_", leading and
    trailing "_" go; `collapse` merges runs of "_", `lower` lower-cases, an empty result
    is `default`, and `digit_prefix` puts "x" before a leading digit. Each reader and writer
    keeps its own settings, on which the names in emitted code depend."""
    name = re.sub(r"\W", "_", text).strip("_")
    if collapse:
        name = re.sub(r"_+", "_", name)
    if lower:
        name = name.lower()
    name = name or default
    return f"x{name}" if digit_prefix and name[0].isdigit() else name


class Namespace:
    """Deterministic unique identifiers (torch.fx's _Namespace): `take` returns `base` as an
    identifier, numbered "_1", "_2", ... while it is taken or in `reserved` (keywords,
    builtins, the names a model.py imports). With `escape_reserved`, a reserved name first
    gets a trailing "_" (`input` -> `input_`, then `input_1`), as PEP 8 suggests."""

    def __init__(self, reserved: Iterable[str], taken: Iterable[str] = (), *, escape_reserved: bool = False) -> None:
        self.reserved = frozenset(reserved)
        self.used = set(taken)
        self.escape_reserved = escape_reserved

    def take(self, base: str) -> str:
        stem, sep = identifier(base), "_"
        if self.escape_reserved and stem in self.reserved:
            stem, sep = f"{stem}_", ""
        candidate, i = stem, 1
        while candidate in self.used or candidate in self.reserved:
            candidate = f"{stem}{sep}{i}"
            i += 1
        self.used.add(candidate)
        return candidate


class ValueNames:
    """The variables of an emitter's values: `bind` names a value (unique in `vars_ns`),
    `var` is how later statements refer to it, `inline` writes a constant as its literal."""

    value_names: dict[int, str]
    vars_ns: Namespace

    def var(self, value: Value) -> str:
        """The expression of a value: its variable, or the literal of an inlined constant."""
        try:
            return self.value_names[id(value)]
        except KeyError:
            raise GraphError(f"value {value.name!r} is used before it is computed") from None

    def bind(self, value: Value, base: str | None = None) -> str:
        name = self.vars_ns.take(base or value.name)
        self.value_names[id(value)] = name
        return name

    def inline(self, value: Value, expr: str) -> None:
        """Let `value` be written as `expr` wherever it is used (a literal constant)."""
        self.value_names[id(value)] = expr


def emit_nodes(graph: Graph, em: E, direction: str, writer: str) -> E:
    """Bind the graph's inputs in `em` and run every node's translator registered under
    `direction` ("ir->torch") in order; first raise UnsupportedOpError listing every op
    kind the `writer` ("PyTorch") has no translator for."""
    missing = [
        (n.source or n.name, n.op, f"no {writer} writer for this op kind")
        for n in graph.nodes
        if lookup(direction, n.op) is None
    ]
    if missing:
        raise UnsupportedOpError(sorted(set(missing)), where=f"the {writer} writer")
    for value in graph.inputs:
        em.bind(value)
    for node in graph.nodes:
        lookup(direction, node.op)(node, em)  # type: ignore[misc]
    return em


def py_literal(value: Any) -> str:
    """A Python literal for attribute values (tuples, floats, strings, None)."""
    if isinstance(value, (bool, np.bool_)):
        return repr(bool(value))
    if isinstance(value, (int, np.integer)):
        return repr(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if f == float("inf"):
            return 'float("inf")'
        if f == float("-inf"):
            return 'float("-inf")'
        return repr(f)
    if isinstance(value, tuple):
        inner = ", ".join(py_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    return repr(value)


def call(callee: str, *args: Any, **kwargs: Any) -> str:
    """`callee(arg, ..., key=value, ...)` with literals; pass str args through `Raw`."""
    parts = [a if isinstance(a, Raw) else py_literal(a) for a in args]
    parts += [f"{k}={v if isinstance(v, Raw) else py_literal(v)}" for k, v in kwargs.items()]
    return f"{callee}({', '.join(parts)})"


class Raw(str):
    """A code fragment passed to `call` as is."""


def describe_values(values: list[Value], names: dict[int, str]) -> str:
    """Docstring lines `name: dtype[N, 3, 32, 32]` for a model's inputs or outputs."""
    lines = []
    for v in values:
        dims = ", ".join("N" if i == 0 and d is None else ("?" if d is None else str(d)) for i, d in enumerate(v.shape))
        lines.append(f"    {names[id(v)]}: {v.dtype}[{dims}]")
    return "\n".join(lines)
