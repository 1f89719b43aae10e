"""Graph -> Keras functional source: the emitter that op translators write into.

Each op translator (registered under "ir->keras") writes exactly one statement of
`build()` with `em.assign(...)`, usually a Keras layer call named after the source module
(`layers.Conv2D(..., name="layer1_0_conv1")(x)`) or a `keras.ops` expression for
functional code. The emitter owns naming (unique Python variables and unique Keras layer
names), custom layer classes written out in model.py, and the weights of every layer in
the order Keras's `set_weights` expects.
"""

from __future__ import annotations

import builtins
import keyword
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...graph import Graph, Node
from ..codegen import Namespace, Raw, ValueNames, call, emit_nodes, py_literal
from .training import training_kwargs

RESERVED = (
    set(keyword.kwlist)
    | set(dir(builtins))
    | {"keras", "layers", "ops", "np", "Path", "build", "load", "annotations", "model"}
)

__all__ = ["KerasEmitter", "Raw", "call", "emit_graph", "py_literal"]


@dataclass
class KerasEmitter(ValueNames):
    graph: Graph
    lines: list[str] = field(default_factory=list)
    weights: dict[str, list[np.ndarray]] = field(default_factory=dict)  # Keras layer name -> set_weights list
    helpers: dict[str, str] = field(default_factory=dict)  # custom layer classes, by name
    value_names: dict[int, str] = field(default_factory=dict)
    layer_count: int = 0
    _shared: dict[tuple, str] = field(default_factory=dict)
    _shared_keys: set = field(default_factory=set)

    def __post_init__(self) -> None:
        self.vars_ns = Namespace(RESERVED)
        self.layers_ns = Namespace(RESERVED)
        # a source module with weights that several nodes use is one Keras layer, called again
        seen: dict[tuple, int] = {}
        for node in self.graph.nodes:
            if node.weights and node.source is not None:
                key = (node.source, node.op)
                seen[key] = seen.get(key, 0) + 1
        self._shared_keys = {k for k, n in seen.items() if n > 1}

    # -- building -----------------------------------------------------------------------
    def layer(
        self, node: Node, cls: str, weights: list[np.ndarray] | None = None, *, suffix: str = "", **kwargs: Any
    ) -> str:
        """A Keras layer for `node`: `cls(**kwargs, name=...)`, with its weights recorded.
        Returns the callable expression (the constructor, or the variable of a shared layer)."""
        key = (node.source, node.op)
        if not suffix and key in self._shared:
            return self._shared[key]
        name = self.layers_ns.take(node.name + (f"_{suffix}" if suffix else ""))
        self.layer_count += 1
        if weights:
            self.weights[name] = [np.ascontiguousarray(w) if np.ndim(w) else np.asarray(w) for w in weights]
            if node.training and not suffix:
                kwargs.update(training_kwargs(node, cls))
        expr = call(cls, **kwargs, name=name)
        if not suffix and key in self._shared_keys:
            var = self.vars_ns.take(f"{name}_layer")
            self.lines.append(f"{var} = {expr}")
            self._shared[key] = var
            return var
        return expr

    def helper(self, name: str, code: str) -> str:
        """A custom layer class (or function) written into model.py once."""
        self.helpers.setdefault(name, code)
        return name

    def line(self, code: str) -> None:
        self.lines.append(code)

    def assign(self, node: Node, expr: str) -> None:
        """The statement of `node`: `<out> = <expr>` (several outputs unpacked)."""
        act = node.attrs.get("activation")
        if act is not None and "name" not in act:  # a named activation is the layer's activation=
            from .activations import activation_expr

            expr = activation_expr(self, node, act["op"], act["attrs"], expr)
        names = [self.bind(v) for v in node.outputs]
        self.lines.append(f"{', '.join(names)} = {expr}")

    def temp(self, base: str, expr: str) -> str:
        """An intermediate statement (padding before a layer); returns its variable."""
        name = self.vars_ns.take(base)
        self.lines.append(f"{name} = {expr}")
        return name


def activation_kwarg(node: Node) -> dict[str, str]:
    """`activation="relu"` for a layer whose activation was fused into it by name."""
    act = node.attrs.get("activation")
    return {"activation": act["name"]} if act is not None and "name" in act else {}


def emit_graph(graph: Graph) -> KerasEmitter:
    """Run every node's translator; raise UnsupportedOpError listing all missing ones."""
    return emit_nodes(graph, KerasEmitter(graph), "ir->keras", "Keras")
