"""PyTorch training facts the ATen graph does not hold as calls: frozen parameters (the
program keeps `requires_grad`) and regularizers named by the caller (PyTorch attaches none to
a parameter: weight decay lives in the optimizer). See regularization.py for dropout.
"""

from __future__ import annotations

from typing import Any

from ...graph import Graph
from ...graph.errors import KtorchError
from ...graph.training import set_regularizer

# nodes that hold one parameter as a tensor (named after it), and the weight that holds it
LEARNED_TENSORS = {"constant": "value", "table_lookup": "table"}


def _parameters(program: Any) -> dict[str, bool]:
    """Parameter name -> requires_grad, for the program's parameters."""
    state = program.state_dict
    return {name: bool(getattr(state.get(name), "requires_grad", True)) for name in program.graph_signature.parameters}


def tied_parameters(program: Any) -> dict[str, str]:
    """Parameter name -> the name of the first parameter that shares its storage (tied
    weights: Bart's shared, encoder and decoder token embeddings; GPT-2's wte and lm_head)."""
    state = program.state_dict
    first: dict[tuple, str] = {}
    tied = {}
    for name in program.graph_signature.parameters:
        t = state[name]
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
        tied[name] = first.setdefault(key, name)
    return tied


def trainable_count(program: Any) -> int:
    """Elements of the program's trainable parameters (requires_grad), each tied parameter
    once: `sum(p.numel() for p in module.parameters() if p.requires_grad)`."""
    state = program.state_dict
    tied = tied_parameters(program)
    return int(
        sum(state[name].numel() for name, trains in _parameters(program).items() if trains and tied[name] == name)
    )


def mark_frozen(graph: Graph, program: Any) -> None:
    """Mark the nodes of modules whose parameters all have requires_grad=False as frozen;
    a module frozen only in part is recorded in graph.meta["training_dropped"]."""
    params = _parameters(program)
    if all(params.values()):
        return
    for node in graph.nodes:
        if not node.weights or node.source is None:
            continue
        if node.op in LEARNED_TENSORS:
            own = {node.source: params[node.source]} if node.source in params else {}
        else:
            prefix = node.source + "."
            own = {k: v for k, v in params.items() if k.startswith(prefix) and "." not in k[len(prefix) :]}
        if not own or all(own.values()):
            continue
        if any(own.values()):
            frozen = sorted(k for k, v in own.items() if not v)
            graph.meta.setdefault("training_dropped", []).append(
                f"{node.source}: only {frozen} have requires_grad=False; "
                "Keras freezes whole layers, so the layer stays trainable"
            )
            continue
        node.training["frozen"] = True


def _factors(spec: Any, name: str) -> dict[str, float]:
    if isinstance(spec, dict):
        unknown = set(spec) - {"l1", "l2"}
        if not unknown:
            return {"l1": float(spec.get("l1", 0.0)), "l2": float(spec.get("l2", 0.0))}
    elif isinstance(spec, (list, tuple)) and spec and str(spec[0]).lower() in ("l1", "l2", "l1l2", "l1_l2"):
        kind = str(spec[0]).lower()
        if kind in ("l1", "l2") and len(spec) == 2:
            return {"l1": 0.0, "l2": 0.0, kind: float(spec[1])}
        if kind in ("l1l2", "l1_l2") and len(spec) == 3:
            return {"l1": float(spec[1]), "l2": float(spec[2])}
    raise KtorchError(
        f"regularizers[{name!r}] = {spec!r}: expected ('l1', a), ('l2', b), ('l1l2', a, b) or {{'l1': a, 'l2': b}}"
    )


def attach_regularizers(graph: Graph, regularizers: dict[str, Any]) -> None:
    """Record `regularizers` ({parameter name: spec}, see `_factors`) on the nodes that
    hold those parameters. Raises KtorchError naming a parameter that no node holds."""
    for name, spec in regularizers.items():
        factors = _factors(spec, name)
        module, _, local = name.rpartition(".")
        found = False
        for node in graph.nodes:
            if node.op in LEARNED_TENSORS and node.source == name:
                set_regularizer(node, LEARNED_TENSORS[node.op], **factors)
                found = True
            elif module and node.source == module and local in node.weights:
                set_regularizer(node, local, **factors)
                found = True
        if found:  # by the source's parameter names: the verifier's PyTorch side adds the same terms
            graph.meta.setdefault("source_regularizers", {})[name] = dict(factors)
        if not found:
            held = sorted(
                {f"{n.source}.{w}" for n in graph.nodes if n.source and n.op not in LEARNED_TENSORS for w in n.weights}
            )
            raise KtorchError(
                f"regularizers: no layer holds the parameter {name!r}; parameters by name: {', '.join(held[:12])}"
                + (" ..." if len(held) > 12 else "")
            )
