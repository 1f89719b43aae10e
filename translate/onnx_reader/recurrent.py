"""ONNX LSTM and GRU: one `lstm` / `gru` node (Keras recurrent semantics, batch first, see
graph/ops/sequence.py) per ONNX node, with the weights in PyTorch's canonical form.

ONNX stores W (directions, gates * hidden, input), R (directions, gates * hidden, hidden)
and B (directions, 2 * gates * hidden: W's biases, then R's), gates in the order LSTM
i, o, f, c and GRU z, r, h; the graph wants torch's LSTM i, f, g, o and GRU r, z, n.
GRU's linear_before_reset=1 is torch's GRU (Keras reset_after=True); 0 is Keras's
reset_after=False, whose biases all add before the activations (one bias). An all-zero
recurrent bias (tf2onnx writes a Keras LSTM's Rb so) is one effective bias too: it stays a
fixed zero in training, and a Keras target keeps its stock one-bias layer.

An RNN in ONNX runs time first: X is (time, batch, input) (layout 0), Y is (time,
directions, batch, hidden), Y_h / Y_c are (directions, batch, hidden). The graph keeps
the batch on axis 0, so these stay `Deferred` until a node reads them batch first again:

* `TimeMajor(v)` holds v.transpose(0, 1) for a batch-first (batch, time, features) v:
  torch.onnx.export's Transpose(1, 0, 2) before the RNN of a batch_first module, and
  what the next layer or Transpose(1, 0, 2) after it reads.
* `RnnSequence` holds Y: Squeeze(1) (one direction) or Transpose(0, 2, 1, 3) + Reshape
  to (time, batch, directions * hidden) (both) make it time-major again, which is exactly
  the graph's concat-merged output; Transpose(2, 0, 1, 3) makes it batch first.
* `StateStack` holds Y_h / Y_c as one (batch, hidden) value per direction (or per layer
  after a Concat): indexing by row, Transpose(1, 0, 2), or another RNN's initial state.
* `BatchFill` is ConstantOfShape over a shape computed from the batch size: the zero
  initial states exporters build; zeros are the graph's "no initial state".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...graph import Value
from ..registry import register
from .calls import BATCH, Const, Deferred, OnnxCall, evaluate_node

_GATE_ORDER = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2]}  # ONNX iofc -> torch ifgo; zrh -> rzn
_GATES = {"LSTM": 4, "GRU": 3}
_DEFAULT_ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}
_SIGMOID = {"op": "sigmoid", "attrs": {}}
_TANH = {"op": "tanh", "attrs": {}}


def _perm(call: OnnxCall, rank: int) -> tuple[int, ...]:
    return tuple(int(p) % rank for p in call.attr("perm", list(reversed(range(rank)))))


def _scalar_index(call: OnnxCall, size: int | None) -> int | None:
    """The constant scalar index of a Gather (input 1), or None."""
    if len(call.inputs) < 2 or not isinstance(call.inputs[1], Const):
        return None
    index = call.inputs[1].array
    if index.ndim != 0:
        return None
    i = int(index)
    if i < 0:
        if size is None:
            return None
        i += size
    return i


def _slice_axis0(call: OnnxCall, size: int) -> slice | None:
    """The constant Slice of axis 0 (starts, ends, axes, steps inputs), or None."""
    arrays = [call.const(i, optional=True) if call.has(i) else None for i in range(1, 5)]
    starts, ends, axes, steps = arrays
    if starts is None or ends is None or starts.size != 1:
        return None
    if axes is not None and int(axes.reshape(-1)[0]) != 0:
        return None
    step = 1 if steps is None else int(steps.reshape(-1)[0])
    start, end = int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])
    return slice(*slice(start, min(end, size) if end > 0 else end, step).indices(size))


def _stack(call: OnnxCall, values: list[Value], axis: int) -> Value:
    return call.emit("stack", list(values), {"axis": axis})


class BatchFill(Deferred):
    """ConstantOfShape over a shape that holds the batch size (BATCH marker at `axis`)."""

    what = "a constant shaped by the batch size"

    def __init__(self, shape: tuple[int, ...], axis: int, fill: float) -> None:
        self.shape, self.axis, self.fill = shape, axis, fill

    @classmethod
    def of_shape(cls, shape: np.ndarray, value: np.ndarray) -> BatchFill:
        dims = [int(d) for d in shape.reshape(-1)]
        axis = dims.index(BATCH)
        return cls(tuple(1 if d == BATCH else d for d in dims), axis, float(value.reshape(-1)[0]))

    def proxy(self, batch: int) -> np.ndarray:
        shape = list(self.shape)
        shape[self.axis] = batch
        return np.full(shape, self.fill, np.float32)

    def apply(self, call: OnnxCall) -> Any:
        """Data movement of the filled tensor: run it on two batch sizes and find where
        the batch went (the values stay the fill value)."""
        if call.key not in ("Slice", "Gather", "Squeeze", "Unsqueeze", "Transpose", "Expand", "Cast", "Identity"):
            raise self.refuse(call)
        if any(isinstance(v, Deferred) and v is not self for v in call.inputs):
            raise self.refuse(call)
        outs = []
        for batch in (3, 5):
            arrays = [
                self.proxy(batch) if v is self else (v.array if isinstance(v, Const) else None) for v in call.inputs
            ]
            outs.append(evaluate_node(call.proto, arrays, call.opset)[0])
        moved = [i for i, (a, b) in enumerate(zip(outs[0].shape, outs[1].shape)) if a != b]
        if len(moved) != 1 or outs[0].shape[moved[0]] != 3:
            raise self.refuse(
                call, "an operation that does not keep the batch axis of a constant shaped by the batch size"
            )
        shape = list(outs[0].shape)
        shape[moved[0]] = 1
        return BatchFill(tuple(shape), moved[0], self.fill)


class TimeMajor(Deferred):
    """value.transpose(0, 1) of a batch-first (batch, time, features) value."""

    what = "a time-major (time, batch, features) sequence"

    def __init__(self, value: Value, step: tuple[Value, int] | None = None) -> None:
        self.value = value
        self.step = step  # (sequence, index) when `value` is one step sliced out of a sequence

    def apply(self, call: OnnxCall) -> Any:
        x = self.value
        if call.inputs[0] is not self:
            raise self.refuse(call)
        if call.key == "Transpose" and _perm(call, 3) == (1, 0, 2):
            return x
        if call.key == "Gather" and int(call.attr("axis", 0)) == 0:
            index = _scalar_index(call, x.shape[1])
            if index is not None:
                return call.emit("select", [x], {"axis": 1, "index": index})
        if call.key == "Slice" and x.shape[1] is not None:
            s = _slice_axis0(call, x.shape[1])
            if s is not None and s.step > 0:
                one = (x, s.start) if len(range(s.start, s.stop, s.step)) == 1 else None
                return TimeMajor(
                    call.emit("slice", [x], {"axis": 1, "start": s.start, "stop": s.stop, "step": s.step}), one
                )
        if call.key == "Squeeze" and x.shape[1] == 1:  # tf2onnx's last step: Slice then Squeeze of the time axis
            axes = call.const(1, optional=True) if call.has(1) else call.attr("axes")
            if axes is not None and [int(a) % 3 for a in np.reshape(axes, -1)] == [0]:
                seq, index = self.step if self.step is not None else (x, 0)
                if seq.shape[1] is not None and index == seq.shape[1] - 1:
                    index = -1
                return call.emit("select", [seq], {"axis": 1, "index": index})
        raise self.refuse(call, f"this use of {self.what}; read it with Transpose(1, 0, 2) or as another RNN's input")


class RnnSequence(Deferred):
    """An RNN's Y, (time, directions, batch, hidden), held as the graph's batch-first
    output (batch, time, directions * hidden); `swapped` after Transpose(0, 2, 1, 3)."""

    what = "an RNN's (time, directions, batch, hidden) output"

    def __init__(self, value: Value, directions: int, hidden: int, swapped: bool = False) -> None:
        self.value, self.directions, self.hidden, self.swapped = value, directions, hidden, swapped

    def apply(self, call: OnnxCall) -> Any:
        if call.inputs[0] is not self:
            raise self.refuse(call)
        x, d, h = self.value, self.directions, self.hidden
        if call.key == "Squeeze" and not self.swapped and d == 1:
            axes = call.const(1, optional=True) if call.has(1) else call.attr("axes")
            if axes is not None and [int(a) % 4 for a in np.reshape(axes, -1)] == [1]:
                return TimeMajor(x)
        if call.key == "Transpose":
            perm = _perm(call, 4)
            if perm == (0, 2, 1, 3) and not self.swapped:
                return RnnSequence(x, d, h, swapped=True)
            if perm == (2, 0, 1, 3) and not self.swapped:  # (batch, time, directions, hidden)
                return call.emit("reshape", [x], {"shape": (x.shape[1], d, h)})
        if call.key == "Reshape" and self.swapped:
            target = [int(t) for t in call.const(1)]
            if len(target) == 3 and target[2] in (-1, d * h):
                return TimeMajor(x)
        raise self.refuse(call, f"this use of {self.what}; export it batch first (batch_first=True)")


class StateStack(Deferred):
    """An RNN's Y_h or Y_c, (rows, batch, hidden), as one (batch, hidden) value per row."""

    what = "an RNN's (directions, batch, hidden) final state"

    def __init__(self, states: list[Value]) -> None:
        self.states = list(states)

    def apply(self, call: OnnxCall) -> Any:
        n = len(self.states)
        if (
            call.key == "Concat"
            and int(call.attr("axis")) % 3 == 0
            and all(isinstance(v, StateStack) for v in call.inputs)
        ):
            return StateStack([s for v in call.inputs for s in v.states])
        if call.inputs[0] is not self:
            raise self.refuse(call)
        if call.key == "Gather" and int(call.attr("axis", 0)) % 3 == 0:
            index = _scalar_index(call, n)
            if index is not None and 0 <= index < n:
                return self.states[index]
            if isinstance(call.inputs[1], Const) and call.inputs[1].array.ndim == 1:
                return StateStack([self.states[int(i)] for i in call.inputs[1].array])
        if call.key == "Slice":
            s = _slice_axis0(call, n)
            if s is not None:
                return StateStack(self.states[s])
        if call.key == "Squeeze" and n == 1:
            axes = call.const(1, optional=True) if call.has(1) else call.attr("axes")
            if axes is None or [int(a) % 3 for a in np.reshape(axes, -1)] == [0]:
                return self.states[0]
        if call.key == "Transpose" and _perm(call, 3) == (1, 0, 2):
            return _stack(call, self.states, 1)
        raise self.refuse(call, f"this use of {self.what}; index it by direction, or transpose it batch first")


def _is_zero_state(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, BatchFill):
        return v.fill == 0.0
    return isinstance(v, Const) and not np.any(v.array)


def _initial(call: OnnxCall, index: int, rows: int) -> list[Value] | None:
    v = call.inputs[index] if index < len(call.inputs) else None
    if _is_zero_state(v):
        return None
    if isinstance(v, StateStack) and len(v.states) == rows:
        return v.states
    raise call.unsupported(
        f"input {index} (an initial state) is neither zeros nor another RNN's final state; "
        "a (directions, batch, hidden) model input puts the batch on axis 1"
    )


def _activations(call: OnnxCall, directions: int) -> None:
    given = call.attr("activations")
    default = _DEFAULT_ACTIVATIONS[call.key]
    if given is not None and [a.lower() for a in given] != default * directions:
        raise call.unsupported(f"activations {given} (only the defaults {default} per direction)")
    if call.attr("activation_alpha") or call.attr("activation_beta"):
        raise call.unsupported("activation_alpha / activation_beta")


@register("onnx->ir", "LSTM", "GRU")
def rnn_to_ir(call: OnnxCall) -> list[Any]:
    """One lstm / gru node; Y, Y_h and Y_c as Deferred (see the module docstring)."""
    op = call.key.lower()
    gates = _GATES[call.key]
    direction = call.attr("direction", "forward")
    directions = 2 if direction == "bidirectional" else 1
    hidden = int(call.attr("hidden_size"))
    layout = int(call.attr("layout", 0))
    _activations(call, directions)
    if call.attr("clip") is not None:
        raise call.unsupported("cell clipping (clip)")
    if call.attr("input_forget", 0):
        raise call.unsupported("coupled input and forget gates (input_forget=1)")
    x = call.inputs[0]
    if layout == 0:
        if not isinstance(x, TimeMajor):
            raise call.unsupported(
                "a time-major (time, batch, features) input that is not a transposed batch-first tensor; "
                "the graph keeps the batch on axis 0 (export with batch_first=True)"
            )
        seq = x.value
    else:
        seq = call.value(0)
    steps = seq.shape[1]
    lens = call.inputs[4] if len(call.inputs) > 4 else None
    if lens is not None:
        full = (isinstance(lens, Const) and steps is not None and np.all(lens.array == steps)) or (
            isinstance(lens, BatchFill) and lens.fill == steps
        )
        if not full:
            raise call.unsupported("sequence_lens shorter than the sequence (pad and mask instead)")
    if call.key == "LSTM" and len(call.inputs) > 7 and call.inputs[7] is not None:
        peep = call.const(7)
        if np.any(peep):
            raise call.unsupported("peephole connections (P)")
    y_used, h_used = call.used(0), call.used(1)
    c_used = call.key == "LSTM" and call.used(2)
    if direction == "reverse" and y_used:
        raise call.unsupported(
            "direction 'reverse' with its output sequence Y used (only its final state is translated)"
        )

    w, r = call.const(1).astype(np.float32), call.const(2).astype(np.float32)
    b = call.const(3, optional=True) if call.has(3) else None
    order = _GATE_ORDER[call.key]

    def reorder(a: np.ndarray) -> np.ndarray:
        blocks = a.reshape(gates, hidden, *a.shape[1:])
        return np.ascontiguousarray(blocks[order].reshape(a.shape), dtype=np.float32)

    reset_after = bool(call.attr("linear_before_reset", 0))
    weights: dict[str, np.ndarray] = {}
    for d, suffix in enumerate(("", "_reverse")[:directions]):
        weights["weight_ih" + suffix] = reorder(w[d])
        weights["weight_hh" + suffix] = reorder(r[d])
        if b is not None:
            wb, rb = b[d, : gates * hidden].astype(np.float32), b[d, gates * hidden :].astype(np.float32)
            if call.key == "GRU" and not reset_after:  # all biases add before the activations
                wb, rb = wb + rb, np.zeros_like(rb)
            weights["bias_ih" + suffix] = reorder(wb)
            weights["bias_hh" + suffix] = reorder(rb)
    attrs: dict[str, Any] = {
        "units": hidden,
        "activation": _TANH,
        "recurrent_activation": _SIGMOID,
        "use_bias": b is not None,
        "direction": {"forward": "forward", "reverse": "backward", "bidirectional": "bidirectional"}[direction],
        "return_sequences": y_used,
        "return_state": h_used or c_used,
    }
    if directions == 2:
        attrs["merge_mode"] = "concat"
    if call.key == "GRU":
        attrs["reset_after"] = reset_after
    h0 = _initial(call, 5, directions)
    c0 = _initial(call, 6, directions) if call.key == "LSTM" else None
    states: list[Value] = []
    if call.key == "LSTM" and (h0 is None) != (c0 is None):
        raise call.unsupported("an initial hidden state without the cell state (or the reverse)")
    if h0 is not None:
        for d in range(directions):
            states += [h0[d]] + ([c0[d]] if c0 is not None else [])
    taken = {n.source for n in call.graph.nodes}
    if call.base in taken:  # the second layer of a stack ("/rnn/LSTM_1"): a layer of its own, not a shared one
        call.base = next(f"{call.base}_{k}" for k in range(1, len(taken) + 2) if f"{call.base}_{k}" not in taken)
    outs = call.emit_all(op, [seq, *states], attrs, weights)
    recurrent_biases = [k for k in weights if k.startswith("bias_hh")]
    if (
        recurrent_biases
        and (call.key == "LSTM" or not reset_after)
        and not any(weights[k].any() for k in recurrent_biases)
    ):
        # one effective bias (tf2onnx writes a Keras LSTM's Rb as zeros; a GRU's folded into Wb above): the zero
        # recurrent bias stays fixed in training, and a Keras target keeps its stock one-bias layer
        outs[0].producer.training["constant"] = sorted(recurrent_biases)
    if y_used:
        y: Any = RnnSequence(outs[0], directions, hidden)
        if layout == 1:  # (batch, time, directions, hidden)
            y = call.emit("reshape", [outs[0]], {"shape": (steps, directions, hidden)}, suffix="_y")
    else:
        y = None
    results: list[Any] = [y]
    finals = outs[1:]
    per_direction = 2 if call.key == "LSTM" else 1
    for k, used in ((0, h_used), (1, c_used)):
        if k == 1 and call.key != "LSTM":
            break
        if not used:
            results.append(None)
            continue
        rows = [finals[d * per_direction + k] for d in range(directions)]
        results.append(_stack(call, rows, 1) if layout == 1 else StateStack(rows))
    return results


rnn_to_ir.accepts_deferred = True  # type: ignore[attr-defined]  (X and the initial states arrive Deferred)
