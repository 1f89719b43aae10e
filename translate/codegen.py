"""Code-generation helpers shared by the writers: Python literals, calls, value tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..graph import Value


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
