"""nn.LSTM / nn.GRU / nn.RNN, translated from the whole module call.

torch.export (2.14) keeps one `aten.lstm.input` / `aten.gru.input` / `aten.rnn_tanh.input`
/ `aten.rnn_relu.input` call per module, with the flags as arguments (has_biases,
num_layers, dropout, train, bidirectional, batch_first) and the weights as a flat list;
the module's state_dict names them (`weight_ih_l1_reverse`). Each layer of the stack
becomes one `lstm` / `gru` / `simple_rnn` node (a Keras LSTM, or a Bidirectional one),
with torch's canonical weights (see graph/ops/sequence.py). Dropout between layers does
nothing at inference.

The final states h_n / c_n are (layers * directions, batch, hidden): their batch axis is
axis 1, which no graph value may hold. They stay a `StateStack` of (batch, hidden) values
until an ATen call reads them: `h_n[-1]`, `h_n[-2:]`, `h_n.unbind(0)`,
`h_n.transpose(0, 1)` / `permute(1, 0, 2)`, or another RNN's initial state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ...graph import Value
from ..registry import register
from .calls import Deferred, ModuleCall, aten_key, bind_arguments

if TYPE_CHECKING:
    from .reader import TorchReader

_OPS = {
    "aten.lstm": "lstm",
    "aten.gru": "gru",
    "aten.rnn_tanh": "simple_rnn",
    "aten.rnn_relu": "simple_rnn",
}
_GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}
_SIGMOID = {"op": "sigmoid", "attrs": {}}


class StateStack(Deferred):
    """An RNN's h_n or c_n: PyTorch's (layers * directions, batch, hidden) tensor, held as
    one (batch, hidden) value per row."""

    def __init__(self, states: list[Value], module: str) -> None:
        self.states = states
        self.module = module

    def apply(self, reader: TorchReader, node: Any, key: str, args: dict[str, Any]) -> Any:
        n = len(self.states)
        source = args.get("self", args.get("input"))
        if source is not self:
            raise self.refuse(node, key, "a final state used as an operand")
        if key == "aten.select" and int(args["dim"]) == 0:
            return self.states[int(args["index"]) % n]
        if key == "aten.slice" and int(args["dim"]) == 0:
            start = args.get("start") or 0
            end = args.get("end")
            end = n if end is None or end > n else end
            return StateStack(
                self.states[slice(int(start), int(end), int(args.get("step") or 1))],
                self.module,
            )
        if key == "aten.unbind" and int(args.get("dim", 0)) == 0:
            return list(self.states)
        swap = (key == "aten.transpose" and sorted(int(d) % 3 for d in (args["dim0"], args["dim1"])) == [0, 1]) or (
            key == "aten.permute" and [int(d) % 3 for d in args["dims"]] == [1, 0, 2]
        )
        if swap:
            return self.stack(reader, axis=1, name=f"{self.module}_{node.name}")
        raise self.refuse(node, key, "this use of a final state")

    def stack(self, reader: TorchReader, axis: int, name: str) -> Value:
        node = reader.graph.add_node(
            "stack",
            list(self.states),
            {"axis": axis},
            name=name,
            source=self.module,
            source_class="stack",
        )
        return node.output

    def materialize(self, reader: TorchReader, name: str) -> Value:
        from ...graph.errors import UnsupportedOpError

        raise UnsupportedOpError(
            [
                (
                    name,
                    "h_n / c_n",
                    f"the final states of {self.module} returned as they are (batch on axis 1)",
                )
            ],
            where="the PyTorch reader",
            hint="Return h_n.transpose(0, 1) (batch first) or h_n[-1] instead; the Keras model keeps the batch on axis 0.",
        )

    def refuse(self, node: Any, key: str, what: str) -> Exception:
        from ...graph.errors import UnsupportedOpError

        return UnsupportedOpError(
            [(node.name, key, f"{what} of {self.module} (h_n / c_n, batch on axis 1)")],
            where="the PyTorch reader",
            hint="Index the final states by layer first (h_n[-1], h_n[-2:], h_n.unbind(0)) or use h_n.transpose(0, 1).",
        )


def _all_zeros(call: ModuleCall, node: Any) -> bool:
    """Whether an hx argument is zeros the model made itself (a constant, or one that
    depends only on the batch size)."""
    from .calls import Const

    value = call.reader.env.get(getattr(node, "name", ""))
    if isinstance(value, Const):
        return not value.array.any()
    by_batch = call.reader._batch_values.get(getattr(node, "name", ""))
    return bool(by_batch) and all(hasattr(t, "any") and not bool(t.any()) for t in by_batch.values())


def _initial_states(call: ModuleCall, arg: Any, zero_nodes: set[str]) -> list[Value] | None:
    """The (batch, hidden) rows of an hx argument, or None for the zeros torch makes itself."""
    args = arg if isinstance(arg, (list, tuple)) else [arg]
    rows: list[list[Value]] = []
    # torch.zeros(layers, x.size(0), hidden) made in the forward counts as no state too
    zero_nodes = zero_nodes | {a.name for a in args if a is not None and _all_zeros(call, a)}
    for a in args:
        if a is None or getattr(a, "name", None) in zero_nodes:
            if len(args) == 1 or all(getattr(b, "name", None) in zero_nodes for b in args):
                return None
            raise call.unsupported("an initial hidden state given without the cell state (or the reverse)")
        v = call.reader.env.get(a.name)
        if not isinstance(v, StateStack):
            raise call.unsupported(
                "an initial state that is not another RNN's final state; (layers, batch, hidden) tensors put the batch on axis 1"
            )
        rows.append(v.states)
    return [list(r) for r in zip(*rows)]  # per row of the stack: h (and c)


@register("torch->ir", "module.LSTM", "module.GRU", "module.RNN")
def rnn_module_to_ir(call: ModuleCall) -> list[Any]:
    """One recurrent node per layer of the stack (bidirectional: both directions in one),
    transposes around it for batch_first=False; the sequence output, and h_n / c_n as
    StateStacks, for whichever of them the model uses."""
    rnn_nodes = [n for n in call.nodes if aten_key(n.target) in _OPS]
    if not rnn_nodes:
        raise call.unsupported(
            "the recurrent call was decomposed into per-step ATen ops (a program after run_decompositions()); "
            "save the torch.export program without decompositions so that aten.lstm / aten.gru stays one call"
        )
    if len(rnn_nodes) != 1:
        raise call.unsupported(f"expected one recurrent ATen call in the module, found {len(rnn_nodes)}")
    rnn = rnn_nodes[0]
    key = aten_key(rnn.target)
    if rnn.target._overloadname != "input":
        raise call.unsupported("packed sequences (nn.utils.rnn.pack_padded_sequence); pass a padded tensor")
    args = bind_arguments(rnn.target, rnn.args, rnn.kwargs)
    op = _OPS[key]
    if args["train"] and float(args["dropout"]) > 0:
        raise call.unsupported("a module in training mode with dropout; export after model.eval()")
    layers, bidirectional, batch_first = (
        int(args["num_layers"]),
        bool(args["bidirectional"]),
        bool(args["batch_first"]),
    )
    if any(k.startswith("weight_hr") for k in call.state):
        raise call.unsupported("LSTM with proj_size")
    directions = 2 if bidirectional else 1
    zero_nodes = {
        n.name for n in call.nodes if aten_key(n.target) in ("aten.zeros", "aten.zeros_like", "aten.new_zeros")
    }
    init = _initial_states(call, args["hx"], zero_nodes)
    x = call.reader.env[rnn.args[0].name]
    if not isinstance(x, Value) or x.rank != 3:
        raise call.unsupported("an unbatched (time, features) input; add a batch axis")
    if not batch_first:
        x = call.swap_time_and_batch(x, "batch_first")
    # what is used outside: getitem 0 (the sequence), 1 (h_n), 2 (c_n)
    used = {int(n.args[1]) for n in call.outputs if n.target.__name__ == "getitem" and n.args[0] is rnn}
    if any(n is rnn for n in call.outputs):
        used = {0, 1, 2}
    want_states = bool(used & {1, 2})
    units = int(call.state["weight_hh_l0"].shape[1])
    attrs_base: dict[str, Any] = {"units": units, "use_bias": bool(args["has_biases"])}
    if op == "simple_rnn":
        attrs_base["activation"] = {
            "op": "relu" if key == "aten.rnn_relu" else "tanh",
            "attrs": {},
        }
    else:
        attrs_base.update(activation={"op": "tanh", "attrs": {}}, recurrent_activation=_SIGMOID)
    if op == "gru":
        attrs_base["reset_after"] = True  # torch's GRU applies the reset gate after the recurrent product
    if bidirectional:
        attrs_base.update(direction="bidirectional", merge_mode="concat")
    per_direction = 2 if op == "lstm" else 1
    h_rows: list[Value] = []
    c_rows: list[Value] = []
    seq = x
    for k in range(layers):
        weights = {}
        for suffix in ("", "_reverse")[:directions]:
            for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                name = f"{w}_l{k}{suffix}"
                if name in call.state:
                    weights[w + suffix] = np.ascontiguousarray(call.state[name], dtype=np.float32)
        last = k == layers - 1
        attrs = {
            **attrs_base,
            "return_sequences": not last or 0 in used,
            "return_state": want_states,
        }
        states: list[Value] = []
        if init is not None:
            for d in range(directions):
                states += init[k * directions + d][:per_direction]
        node = call.graph.add_node(
            op,
            [seq, *states],
            attrs,
            weights,
            name=call.name if layers == 1 else f"{call.name}_l{k}",
            source=call.module if layers == 1 else f"{call.module}.l{k}",
            source_class=call.module_class,
        )
        seq = node.outputs[0]
        if want_states:
            finals = node.outputs[1:]
            for d in range(directions):
                h_rows.append(finals[d * per_direction])
                if op == "lstm":
                    c_rows.append(finals[d * per_direction + 1])
    out = seq
    if 0 in used and not batch_first:
        out = call.swap_time_and_batch(seq, "time_first")
    results = []
    for n in call.outputs:
        index = int(n.args[1]) if n.target.__name__ == "getitem" and n.args[0] is rnn else None
        if index == 0:
            results.append(out)
        elif index == 1:
            results.append(StateStack(h_rows, call.module))
        elif index == 2:
            results.append(StateStack(c_rows, call.module))
        else:
            raise call.unsupported(f"a value computed inside the module ({n.name}) is used outside it")
    return results
