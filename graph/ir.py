"""The intermediate graph: values, nodes and the graph that owns them.

The graph is framework-free. A `Value` is a tensor edge with a static shape (None for a
dynamic dimension), a dtype name and a layout permutation; a `Node` applies one op kind
from the catalogue (`graph.ops`) to input values and produces output values. Each value
knows its producer and its users so that passes can rewrite the graph safely.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import GraphError

Shape = tuple  # tuple[int | None, ...]

DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")


@dataclass(eq=False, slots=True)
class Value:
    """A tensor flowing between nodes.

    `perm` maps the source model's axis order to the emitted model's: the emitted tensor
    equals `source_tensor.transpose(perm)`. None means the identity.
    """

    name: str
    shape: Shape
    dtype: str = "float32"
    producer: Node | None = None
    users: list[Node] = field(default_factory=list)
    perm: tuple[int, ...] | None = None
    source: str | None = None  # the source layer whose output this value is, if any

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"Value({self.name!r}, {self.shape}, {self.dtype})"


@dataclass(eq=False, slots=True)
class Node:
    """One application of an op kind to input values."""

    op: str
    name: str
    inputs: list[Value]
    outputs: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    source: str | None = None  # name of the source layer/module this node came from
    source_class: str | None = None  # its class, for messages and reports
    # training-time facts about this node's weights (see graph/training.py): frozen,
    # weight regularizers and constraints, keyed by weight name. Empty for most nodes.
    training: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        ins = ", ".join(v.name for v in self.inputs)
        return f"Node({self.op} {self.name!r}: [{ins}] -> {[v.name for v in self.outputs]})"

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise GraphError(f"node {self.name!r} ({self.op}) has {len(self.outputs)} outputs, not one")
        return self.outputs[0]


class Graph:
    """A directed acyclic graph of nodes, with named inputs and outputs."""

    def __init__(self, name: str = "model") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.meta: dict[str, Any] = {}
        self._names: set[str] = set()
        self._counter = itertools.count()

    # -- construction -------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        """A name not used yet by any node or value of this graph."""
        name = base
        n = 1
        while name in self._names:
            name = f"{base}_{n}"
            n += 1
        self._names.add(name)
        return name

    def add_input(self, name: str, shape: Iterable[int | None], dtype: str = "float32") -> Value:
        value = Value(self.unique_name(name), tuple(shape), dtype, source=name)
        self.inputs.append(value)
        return value

    def add_node(
        self,
        op: str,
        inputs: list[Value],
        attrs: dict[str, Any] | None = None,
        weights: dict[str, np.ndarray] | None = None,
        *,
        name: str | None = None,
        source: str | None = None,
        source_class: str | None = None,
        index: int | None = None,
    ) -> Node:
        """Append a node of a catalogued op kind; its attributes are checked and its
        output shapes inferred from the catalogue."""
        from .ops import get_op

        opdef = get_op(op)
        node = Node(
            op=op,
            name=self.unique_name(name or source or op),
            inputs=list(inputs),
            outputs=[],
            attrs=opdef.check_attrs(attrs or {}, where=name or source or op),
            weights=dict(weights or {}),
            source=source,
            source_class=source_class,
        )
        for shape, dtype in opdef.infer(node):
            out_name = node.name if not node.outputs else self.unique_name(f"{node.name}_out{len(node.outputs)}")
            node.outputs.append(Value(out_name, tuple(shape), dtype, producer=node))
        for value in node.inputs:
            value.users.append(node)
        if index is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(index, node)
        return node

    # -- rewriting ----------------------------------------------------------------------
    def replace_uses(self, old: Value, new: Value, *, except_node: Node | None = None) -> None:
        """Make every user of `old` (and the graph outputs) read `new` instead."""
        for user in list(old.users):
            if user is except_node:
                continue
            user.inputs = [new if v is old else v for v in user.inputs]
            old.users.remove(user)
            if user not in new.users:
                new.users.append(user)
        self.outputs = [new if v is old else v for v in self.outputs]

    def set_input(self, node: Node, index: int, new: Value) -> None:
        old = node.inputs[index]
        node.inputs[index] = new
        if node not in new.users:
            new.users.append(node)
        if old not in node.inputs:
            old.users.remove(node)

    def remove_node(self, node: Node) -> None:
        for out in node.outputs:
            if out.users or out in self.outputs:
                raise GraphError(f"cannot remove {node!r}: its output {out.name!r} is still used")
        for value in node.inputs:
            if node in value.users:
                value.users.remove(node)
        self.nodes.remove(node)

    def bypass(self, node: Node) -> None:
        """Remove a one-input, one-output node, wiring its input to its users."""
        self.replace_uses(node.output, node.inputs[0])
        self.remove_node(node)

    # -- queries ------------------------------------------------------------------------
    def values(self) -> Iterator[Value]:
        yield from self.inputs
        for node in self.nodes:
            yield from node.outputs

    def find_node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def toposort(self) -> None:
        """Order `nodes` so that every node comes after the producers of its inputs,
        keeping the current order wherever it is already valid."""
        import heapq

        position = {id(n): i for i, n in enumerate(self.nodes)}
        pending = {id(n): len({id(v.producer) for v in n.inputs if v.producer is not None}) for n in self.nodes}
        ready = [(position[id(n)], n) for n in self.nodes if pending[id(n)] == 0]
        heapq.heapify(ready)
        order: list[Node] = []
        while ready:
            _, node = heapq.heappop(ready)
            order.append(node)
            consumers = {id(u): u for out in node.outputs for u in out.users}
            for user in consumers.values():
                pending[id(user)] -= 1
                if pending[id(user)] == 0:
                    heapq.heappush(ready, (position[id(user)], user))
        if len(order) != len(self.nodes):
            stuck = [n.name for n in self.nodes if pending[id(n)] > 0][:5]
            raise GraphError(f"graph has a cycle (or a dangling input) around nodes {stuck}")
        self.nodes = order

    def weight_bytes(self) -> int:
        return sum(w.nbytes for n in self.nodes for w in n.weights.values())

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.nodes)} nodes)"
