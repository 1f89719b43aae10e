"""JSON form of a graph: structure, attributes and weight shapes (not weight values)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .ir import Graph, Node, Value

FORMAT_VERSION = 1


def _jsonable(x: Any) -> Any:
    if isinstance(x, tuple):
        return {"__tuple__": [_jsonable(i) for i in x]}
    if isinstance(x, list):
        return [_jsonable(i) for i in x]
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x


def _from_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        if set(x) == {"__tuple__"}:
            return tuple(_from_jsonable(i) for i in x["__tuple__"])
        return {k: _from_jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_jsonable(i) for i in x]
    return x


def _value(v: Value) -> dict[str, Any]:
    out: dict[str, Any] = {"name": v.name, "shape": list(v.shape), "dtype": v.dtype}
    if v.perm is not None:
        out["perm"] = list(v.perm)
    if v.source is not None:
        out["source"] = v.source
    return out


def to_dict(graph: Graph) -> dict[str, Any]:
    """The graph as plain data (weights appear as shape and dtype only)."""
    return {
        "format": "ktorch-graph",
        "version": FORMAT_VERSION,
        "name": graph.name,
        "inputs": [_value(v) for v in graph.inputs],
        "outputs": [v.name for v in graph.outputs],
        "nodes": [
            {
                "op": n.op,
                "name": n.name,
                "inputs": [v.name for v in n.inputs],
                "outputs": [_value(v) for v in n.outputs],
                "attrs": _jsonable(n.attrs),
                "weights": {k: {"shape": list(w.shape), "dtype": str(w.dtype)} for k, w in n.weights.items()},
                **({"source": n.source} if n.source else {}),
                **({"source_class": n.source_class} if n.source_class else {}),
                **({"training": _jsonable(n.training)} if n.training else {}),
            }
            for n in graph.nodes
        ],
        "meta": _jsonable(graph.meta),
    }


def to_json(graph: Graph, **kwargs: Any) -> str:
    return json.dumps(to_dict(graph), **kwargs)


def from_dict(data: dict[str, Any], weights: dict[str, dict[str, np.ndarray]] | None = None) -> Graph:
    """Rebuild a graph from `to_dict` output. Weight values come from `weights`
    (node name -> weight name -> array); where absent, zeros of the recorded shape."""
    graph = Graph(data["name"])
    graph.meta = _from_jsonable(data.get("meta", {}))
    values: dict[str, Value] = {}
    for v in data["inputs"]:
        value = graph.add_input(v["name"], [d for d in v["shape"]], v["dtype"])
        value.source = v.get("source")
        value.perm = tuple(v["perm"]) if "perm" in v else None
        values[v["name"]] = value
    for n in data["nodes"]:
        given = (weights or {}).get(n["name"], {})
        w = {k: given.get(k, np.zeros(s["shape"], s["dtype"])) for k, s in n["weights"].items()}
        node = graph.add_node(
            n["op"],
            [values[name] for name in n["inputs"]],
            _from_jsonable(n["attrs"]),
            w,
            name=n["name"],
            source=n.get("source"),
            source_class=n.get("source_class"),
        )
        node.training = _from_jsonable(n.get("training", {}))
        for value, spec in zip(node.outputs, n["outputs"]):
            graph._names.discard(value.name)
            value.name = spec["name"]
            graph._names.add(value.name)
            value.shape = tuple(spec["shape"])
            value.dtype = spec["dtype"]
            value.perm = tuple(spec["perm"]) if "perm" in spec else None
            value.source = spec.get("source")
            values[value.name] = value
    graph.outputs = [values[name] for name in data["outputs"]]
    return graph


def from_json(text: str, weights: dict[str, dict[str, np.ndarray]] | None = None) -> Graph:
    return from_dict(json.loads(text), weights)


def node_signature(node: Node) -> tuple:
    """A comparable summary of a node, for tests and equality checks."""
    return (
        node.op,
        node.name,
        tuple(v.name for v in node.inputs),
        tuple(v.shape for v in node.outputs),
        repr(node.attrs),
    )
