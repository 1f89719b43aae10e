"""PyTorch training-time behaviour: dropout calls, frozen parameters, and regularizers
given by the caller.

torch.export of a module in eval mode keeps every dropout as an ATen call with
`train=False` (`aten.dropout` for nn.Dropout and F.dropout, `aten.feature_dropout` for
nn.Dropout1d/2d/3d, `aten.alpha_dropout`, `aten.feature_alpha_dropout`), named after its
module by nn_module_stack: they become `dropout` nodes with the exact rate. The program's
parameters keep `requires_grad`: a module whose parameters are all frozen becomes a frozen
node (Keras `trainable=False`). PyTorch has no regularizer attached to a parameter (weight
decay lives in the optimizer), so `ktorch.convert(..., regularizers={"fc.weight": ("l2", 1e-4)})`
names them; they become `kernel_regularizer=` and friends in Keras.
"""

from __future__ import annotations

from typing import Any

from ...graph import Graph, Value
from ...graph.errors import KtorchError
from ...graph.training import set_regularizer
from ..registry import register
from .reader import AtenCall


def _dropout(call: AtenCall, *, channels: bool, alpha: bool) -> Value:
    x = call.value("input")
    if call.args.get("train"):
        raise call.unsupported("a module in training mode; export after model.eval()")
    if float(call.args["p"]) == 0.0:
        return x  # does nothing, in training too (torchvision's attention_dropout=0.0)
    shared = tuple(range(2, x.rank)) if channels else ()
    return call.emit("dropout", [x], {"rate": float(call.args["p"]), "shared_axes": shared, "alpha": alpha})


@register("torch->ir", "aten.dropout")
def dropout_to_ir(call: AtenCall) -> Value:
    return _dropout(call, channels=False, alpha=False)


@register("torch->ir", "aten.feature_dropout")
def feature_dropout_to_ir(call: AtenCall) -> Value:
    """nn.Dropout1d/2d/3d: whole channels (axis 1) dropped, one decision per (example, channel)."""
    return _dropout(call, channels=True, alpha=False)


@register("torch->ir", "aten.alpha_dropout")
def alpha_dropout_to_ir(call: AtenCall) -> Value:
    return _dropout(call, channels=False, alpha=True)


@register("torch->ir", "aten.feature_alpha_dropout")
def feature_alpha_dropout_to_ir(call: AtenCall) -> Value:
    return _dropout(call, channels=True, alpha=True)


def _parameters(program: Any) -> dict[str, bool]:
    """Parameter name -> requires_grad, for the program's parameters."""
    state = program.state_dict
    return {name: bool(getattr(state.get(name), "requires_grad", True)) for name in program.graph_signature.parameters}


def mark_frozen(graph: Graph, program: Any) -> None:
    """Mark the nodes of modules whose parameters all have requires_grad=False as frozen;
    a module frozen only in part is recorded in graph.meta["training_dropped"]."""
    params = _parameters(program)
    if all(params.values()):
        return
    for node in graph.nodes:
        if not node.weights or node.source is None:
            continue
        if node.op == "constant":
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
            if node.op == "constant" and node.source == name:
                set_regularizer(node, "value", **factors)
                found = True
            elif module and node.source == module and local in node.weights:
                set_regularizer(node, local, **factors)
                found = True
        if not found:
            held = sorted(
                {f"{n.source}.{w}" for n in graph.nodes if n.source and n.op != "constant" for w in n.weights}
            )
            raise KtorchError(
                f"regularizers: no layer holds the parameter {name!r}; parameters by name: {', '.join(held[:12])}"
                + (" ..." if len(held) > 12 else "")
            )
