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


_RECURRENT_OPS = ("lstm", "gru", "simple_rnn")


def _own_parameters(node: Any, params: dict[str, bool]) -> dict[str, bool]:
    """The program's parameters that `node` holds, by name -> requires_grad. A recurrent node holds
    one layer of an nn.LSTM / GRU / RNN (source "lstm", or "lstm.l1" for a layer of a stack): its
    weight `bias_hh_reverse` is the parameter `lstm.bias_hh_l1_reverse`."""
    if node.op in LEARNED_TENSORS:
        return {node.source: params[node.source]} if node.source in params else {}
    if node.op in _RECURRENT_OPS:
        module, layer = node.source, "l0"
        head, _, tail = node.source.rpartition(".")
        if f"{module}.weight_ih_l0" not in params and tail[1:].isdigit() and tail.startswith("l"):
            module, layer = head, tail
        names = []
        for weight in node.weights:
            base = weight.removesuffix("_reverse")
            names.append(f"{module}.{base}_{layer}{weight[len(base) :]}")
        return {name: params[name] for name in names if name in params}
    prefix = node.source + "."
    return {k: v for k, v in params.items() if k.startswith(prefix) and "." not in k[len(prefix) :]}


def mark_frozen(graph: Graph, program: Any) -> None:
    """Mark the nodes of modules whose parameters all have requires_grad=False as frozen; an
    LSTM / RNN whose bias_hh alone is frozen (what ktorch writes for a one-bias Keras layer) has it
    as a `constant` weight; a module frozen otherwise in part is recorded in
    graph.meta["training_dropped"]."""
    params = _parameters(program)
    if all(params.values()):
        return
    for node in graph.nodes:
        if not node.weights or node.source is None:
            continue
        own = _own_parameters(node, params)
        if not own or all(own.values()):
            continue
        frozen = sorted(k for k, v in own.items() if not v)
        if node.op in ("lstm", "simple_rnn") and all(".bias_hh_" in k for k in frozen):
            held = sorted(w for w in node.weights if w.startswith("bias_hh"))
            if len(held) == len(frozen):  # every direction's: one trainable bias, as a Keras layer has
                node.training["constant"] = held
                continue
        if any(own.values()):
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
