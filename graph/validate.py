"""Consistency checks for a graph: wiring, order, schema, shapes and weights."""

from __future__ import annotations

from .errors import GraphError
from .ir import Graph
from .ops import get_op


def validate(graph: Graph) -> None:
    """Raise GraphError on the first inconsistency found."""
    seen: set[int] = {id(v) for v in graph.inputs}
    names: set[str] = set()
    for v in graph.inputs:
        if v.producer is not None:
            raise GraphError(f"graph input {v.name!r} has a producer")
    for node in graph.nodes:
        opdef = get_op(node.op)
        where = f"node {node.name!r} ({node.op})"
        if node.name in names:
            raise GraphError(f"{where}: duplicate node name")
        names.add(node.name)
        for value in node.inputs:
            if id(value) not in seen:
                raise GraphError(f"{where}: input {value.name!r} is not produced before this node")
            if node not in value.users:
                raise GraphError(f"{where}: missing from the users of its input {value.name!r}")
        opdef.check_attrs(node.attrs, where=where)
        unknown = set(node.weights) - set(opdef.weights)
        if unknown:
            raise GraphError(f"{where}: unexpected weights {sorted(unknown)}")
        inferred = opdef.infer(node)
        if len(inferred) != len(node.outputs):
            raise GraphError(f"{where}: has {len(node.outputs)} outputs, its op kind infers {len(inferred)}")
        for value, (shape, _dtype) in zip(node.outputs, inferred):
            if value.producer is not node:
                raise GraphError(f"{where}: output {value.name!r} names another producer")
            if tuple(shape) != tuple(value.shape):
                raise GraphError(f"{where}: output {value.name!r} has shape {value.shape}, inferred {tuple(shape)}")
            seen.add(id(value))
            for user in value.users:
                if value not in user.inputs:
                    raise GraphError(
                        f"{where}: {user.name!r} is listed as a user of {value.name!r} but does not read it"
                    )
    for value in graph.outputs:
        if id(value) not in seen:
            raise GraphError(f"graph output {value.name!r} is not produced by the graph")
