"""Graph -> PyTorch source: the emitter that op translators write into.

Each op translator (registered under "ir->torch") declares the submodules it needs in
`__init__` with `em.module(...)` and writes exactly one forward statement with
`em.assign(...)`. The emitter owns naming (unique, never shadowing builtins), imports,
module-level helpers and the state dict.
"""

from __future__ import annotations

import builtins
import keyword
from dataclasses import dataclass, field

import numpy as np

from ...graph import Graph, Node, Value
from ..codegen import Namespace, Raw, ValueNames, call, emit_nodes, py_literal  # noqa: F401  (Raw, call, py_literal: re-exported for the op families)

RESERVED = (
    set(keyword.kwlist) | set(dir(builtins)) | {"self", "torch", "nn", "F", "Path", "load", "load_file", "annotations"}
)


@dataclass
class EmittedModule:
    attr: str
    expr: str
    source: str | None


# Ops whose emitted expression yields a new tensor that their backward does not read back:
# an activation or addition may overwrite it in place, as torchvision's ReLU(inplace=True)
# and `out += identity` do (a fresh output per activation costs page faults on every call).
FRESH_OUTPUT_OPS = frozenset(
    {"conv", "conv_transpose", "scaled_std_conv", "batch_norm", "dense", "layer_norm", "group_norm", "add", "sub"}
    | {"concat"}
)


# Ops that torch.autocast runs in the lower precision (matmuls, convolutions, RNNs, attention):
# in a mixed-precision model, such an op fed float32 (a layer with a float32 dtype policy, whose
# inputs Keras casts to float32) runs with autocast switched off, in float32 as in Keras.
AUTOCAST_OPS = frozenset(
    {"conv", "conv_transpose", "dense", "einsum_dense", "einsum", "matmul", "multi_head_attention", "dot_attention"}
    | {"scaled_std_conv", "conv_lstm", "lstm", "gru", "simple_rnn"}
)


@dataclass
class TorchEmitter(ValueNames):
    graph: Graph
    class_name: str
    modules: list[EmittedModule] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    state: dict[str, np.ndarray] = field(default_factory=dict)
    helpers: dict[str, str] = field(default_factory=dict)
    value_names: dict[int, str] = field(default_factory=dict)
    statement_of: dict[str, str] = field(default_factory=dict)  # value var -> source layer
    _module_keys: dict[tuple, tuple[str, dict]] = field(default_factory=dict)
    uses_functional: bool = False
    node_modules: dict[int, list[str]] = field(default_factory=dict)  # id(node) -> the attrs it declared
    node_state: dict[int, list[str]] = field(default_factory=dict)  # id(node) -> the state keys it added

    def __post_init__(self) -> None:
        taken = {"training", "forward", "eval", "train", "to", "cuda", "cpu", "state_dict", "parameters"}
        taken |= {"activations", "regularization_loss", "apply_constraints"}  # the training members
        self.attrs_ns = Namespace(RESERVED, taken, escape_reserved=True)
        self.vars_ns = Namespace(RESERVED, {self.class_name}, escape_reserved=True)

    # -- building -----------------------------------------------------------------------
    def module(self, node: Node, expr: str, state: dict[str, np.ndarray] | None = None, *, suffix: str = "") -> str:
        """Declare `self.<name> = <expr>` for this node (shared by nodes of one shared
        source layer) and record its parameters/buffers. Returns `self.<name>`."""
        # one source layer called several times (a shared layer) is one module called again
        key = (node.source, node.op, expr, suffix)
        if node.source is not None and key in self._module_keys:
            attr, first = self._module_keys[key]
            if first.keys() == node.weights.keys() and all(np.array_equal(first[k], node.weights[k]) for k in first):
                return f"self.{attr}"
        attr = self.attrs_ns.take(node.name + (f"_{suffix}" if suffix else ""))
        self._module_keys.setdefault(key, (attr, node.weights))
        self.modules.append(EmittedModule(attr, expr, node.source))
        self.node_modules.setdefault(id(node), []).append(attr)
        for k, w in (state or {}).items():
            key = f"{attr}.{k}" if k else attr
            self.state[key] = np.asarray(w) if np.ndim(w) == 0 else np.ascontiguousarray(w)
            self.node_state.setdefault(id(node), []).append(key)
        return f"self.{attr}"

    def overwritable(self, value: Value, node: Node) -> bool:
        """Whether `node` may overwrite `value` in place: a fresh tensor (see
        FRESH_OUTPUT_OPS) that no other statement reads and forward does not return."""
        producer = value.producer
        return (
            producer is not None
            and producer.op in FRESH_OUTPUT_OPS
            and producer.attrs.get("activation") is None
            and len(value.users) == 1
            and value.users[0] is node
            and all(value is not v for v in self.graph.outputs)
        )

    def helper(self, name: str, code: str) -> str:
        """A module-level helper function, emitted once."""
        self.helpers.setdefault(name, code)
        return name

    def functional(self) -> str:
        self.uses_functional = True
        return "F"

    def assign(self, node: Node, expr: str) -> None:
        """The one forward statement of `node`: `<out> = <expr>` (fused activation applied)."""
        act = node.attrs.get("activation")
        if act is not None:
            from .activations import activation_expr

            # the node's own result is a temporary nothing else holds
            expr = activation_expr(self, act["op"], act["attrs"], expr, inplace=node.op in FRESH_OUTPUT_OPS)
        outs = node.outputs
        names = [self.bind(v) for v in outs]
        target = names[0] if len(names) == 1 else ", ".join(names)
        if self.full_precision(node):
            device = self.var(self.graph.inputs[0])
            self.lines.append(
                f"with torch.autocast({device}.device.type, enabled=False):  # a float32 layer\n    {target} = {expr}"
            )
            return
        self.lines.append(f"{target} = {expr}")

    def full_precision(self, node: Node) -> bool:
        """Whether `node` must run with torch.autocast off: a matmul-like op of a float32 layer in a
        mixed-precision model (graph.meta['autocast'])."""
        floats = [v.dtype for v in node.inputs if v.dtype in ("float16", "bfloat16", "float32")]
        return (
            bool(self.graph.meta.get("autocast"))
            and node.op in AUTOCAST_OPS
            and floats == ["float32"] * len(floats)
            and bool(floats)
        )


def emit_graph(graph: Graph, class_name: str) -> TorchEmitter:
    """Run every node's translator; raise UnsupportedOpError listing all missing ones."""
    return emit_nodes(graph, TorchEmitter(graph, class_name), "ir->torch", "PyTorch")
