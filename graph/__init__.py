"""ktorch's framework-free intermediate graph: IR, op catalogue, passes, JSON form."""

from __future__ import annotations

from .errors import GraphError, KtorchError
from .ir import Graph, Node, Value
from .ops import Layout, OpDef, all_ops, get_op
from .serialize import from_json, to_dict, to_json
from .validate import validate

__all__ = [
    "Graph",
    "GraphError",
    "KtorchError",
    "Layout",
    "Node",
    "OpDef",
    "Value",
    "all_ops",
    "from_json",
    "get_op",
    "to_dict",
    "to_json",
    "validate",
]
