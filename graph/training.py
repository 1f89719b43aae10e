"""Training-time facts about a node's weights, kept in `Node.training` (framework-free).

Keys (all optional; an absent key means the default):

- ``"frozen": True`` — the node's weights take no gradient and no update (Keras
  `trainable=False`, PyTorch `requires_grad=False`). A frozen batch norm also normalises
  with its moving statistics while training, as Keras 3 does.
- ``"constant": [weight, ...]`` — weights the target needs but the source does not have, fixed
  at their value in training (a Keras recurrent layer has one bias where PyTorch has two: the
  second, `bias_hh`, is a zero that must not train; so is an ONNX LSTM's all-zero recurrent bias,
  and a PyTorch LSTM / RNN's bias_hh frozen alone). A recurrent node whose bias_hh is not constant
  has two trainable biases, which the Keras writer keeps apart (TorchLSTMCell).
- ``"regularizers": {weight: {"l1": a, "l2": b}}`` — `a * sum(|w|) + b * sum(w**2)` added to
  the training loss (Keras L1, L2, L1L2: no factor 1/2). Weight names are the node's.
- ``"constraints": {weight: {"kind": ..., ...}}`` — a projection applied to the weight after
  every optimizer step (Keras kernel/bias constraints). Kinds and their parameters are in
  CONSTRAINTS; `axes` are axes of the node's weight array (the IR's canonical, PyTorch, form).

Activity regularizers are graph nodes (op `activity_regularization`), not node facts.
"""

from __future__ import annotations

from typing import Any

from .errors import GraphError
from .ir import Graph, Node

# constraint kind -> its parameters (Keras 3 keras.constraints; epsilon is backend.epsilon())
CONSTRAINTS: dict[str, tuple[str, ...]] = {
    "max_norm": ("max_value", "axes"),
    "non_neg": (),
    "unit_norm": ("axes",),
    "min_max_norm": ("min_value", "max_value", "rate", "axes"),
}
KERAS_EPSILON = 1e-7


def is_frozen(node: Node) -> bool:
    return bool(node.training.get("frozen"))


def set_regularizer(node: Node, weight: str, l1: float = 0.0, l2: float = 0.0) -> None:
    if weight not in node.weights:
        raise GraphError(f"node {node.name!r} ({node.op}) has no weight {weight!r} to regularize")
    node.training.setdefault("regularizers", {})[weight] = {"l1": float(l1), "l2": float(l2)}


def set_constraint(node: Node, weight: str, kind: str, **params: Any) -> None:
    if kind not in CONSTRAINTS:
        raise GraphError(f"unknown weight constraint {kind!r}; expected one of {sorted(CONSTRAINTS)}")
    if weight not in node.weights:
        raise GraphError(f"node {node.name!r} ({node.op}) has no weight {weight!r} to constrain")
    missing = set(CONSTRAINTS[kind]) - set(params)
    if missing:
        raise GraphError(f"constraint {kind!r} needs {sorted(missing)}")
    node.training.setdefault("constraints", {})[weight] = {"kind": kind, **params}


def has_training_facts(graph: Graph) -> bool:
    return any(n.training for n in graph.nodes) or any(n.op == "activity_regularization" for n in graph.nodes)


def summary(graph: Graph) -> dict[str, Any]:
    """What the manifest records: frozen layers, regularized and constrained weights, the
    training-time layers kept, and what could not be carried over."""
    from .ops import get_op

    out: dict[str, Any] = {
        "frozen": sorted({n.source or n.name for n in graph.nodes if is_frozen(n)}),
        "regularizers": {
            f"{n.source or n.name}:{w}": spec
            for n in graph.nodes
            for w, spec in n.training.get("regularizers", {}).items()
        },
        "constraints": {
            f"{n.source or n.name}:{w}": {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()}
            for n in graph.nodes
            for w, spec in n.training.get("constraints", {}).items()
        },
        "layers": sorted({n.source or n.name for n in graph.nodes if get_op(n.op).family == "training"}),
    }
    if graph.meta.get("parameter_regularizers"):
        out["parameter_regularizers"] = dict(graph.meta["parameter_regularizers"])  # emitted parameter -> factors
    if graph.meta.get("source_regularizers"):  # a PyTorch source: its parameter -> factors
        out["source_regularizers"] = dict(graph.meta["source_regularizers"])
    dropped = graph.meta.get("training_dropped")
    if dropped:
        out["dropped"] = list(dropped)
    return {k: v for k, v in out.items() if v}
