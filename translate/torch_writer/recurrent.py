"""PyTorch code for recurrent layers, masks and TimeDistributed folds.

Where torch's own layer computes exactly what Keras does (no mask; LSTM with tanh and
sigmoid; GRU with reset_after and tanh/sigmoid; SimpleRNN with tanh or relu), the layer is
an `nn.LSTM` / `nn.GRU` / `nn.RNN` with `batch_first=True`, bidirectional where Keras's
Bidirectional concatenates. Otherwise it is a `KerasRNN` loop (emitted beside the model)
around a torch cell, or around a cell subclass with Keras's math (other activations, GRU
reset_after=False): a Keras mask can skip any step, which no packed sequence expresses.
"""

from __future__ import annotations

from typing import Any

from ...graph import Node
from ...graph.ops.sequence import RNN_STATES, rnn_inputs
from ..codegen import identifier
from ..registry import register
from .activations import activation_expr
from .codegen import Raw, TorchEmitter, call
from .conv import compact

_KERAS_RNN = '''class KerasRNN(nn.Module):
    """Keras's recurrent loop around a torch cell: reads x (batch, time, features) step by
    step, last step first if `go_backwards`. Where `mask` is False the step is skipped: the
    state carries over, and so does the output (zeros if `zero_masked_outputs`). Returns the
    outputs in the order they were computed and the final state (h, or h and c)."""

    def __init__(self, cell: nn.Module, go_backwards: bool = False, zero_masked_outputs: bool = False) -> None:
        super().__init__()
        self.cell = cell
        self.go_backwards = go_backwards
        self.zero_masked_outputs = zero_masked_outputs

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, state: tuple[torch.Tensor, ...] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if state is None:
            state = self.initial_state(x)
        output = torch.zeros_like(state[0])
        outputs = []
        steps = range(x.shape[1] - 1, -1, -1) if self.go_backwards else range(x.shape[1])
        for t in steps:
            new = self.cell(x[:, t], state if len(state) > 1 else state[0])
            new = new if isinstance(new, tuple) else (new,)
            if mask is None:
                state, output = new, new[0]
            else:
                keep = mask[:, t].view(-1, *[1] * (output.dim() - 1))
                state = tuple(torch.where(keep, n, s) for n, s in zip(new, state))
                output = torch.where(keep, new[0], torch.zeros_like(output) if self.zero_masked_outputs else output)
            outputs.append(output)
        return torch.stack(outputs, dim=1), state

    def initial_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Zeros shaped like the cell's state: (h, c) for an LSTM, (h,) otherwise."""
        if hasattr(self.cell, "zero_state"):
            return self.cell.zero_state(x[:, 0])
        zeros = x.new_zeros(x.shape[0], self.cell.hidden_size)
        return (zeros, zeros) if isinstance(self.cell, nn.LSTMCell) else (zeros,)
'''

_CONV_LSTM_CELL = '''class ConvLSTMCell(nn.Module):
    """Keras's ConvLSTM cell on channels-first steps: the gates (i, f, c, o) are a
    convolution of the input plus a "same" convolution of the hidden state."""

    def __init__(
        self, conv: type[nn.Module], in_channels: int, filters: int, kernel_size, stride=1, padding=0, dilation=1, bias: bool = True, activation=torch.tanh, recurrent_activation=torch.sigmoid
    ) -> None:
        super().__init__()
        self.filters = filters
        self.input_conv = conv(in_channels, 4 * filters, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=bias)
        self.recurrent_conv = conv(filters, 4 * filters, kernel_size, padding="same", bias=False)
        self.activation = activation
        self.recurrent_activation = recurrent_activation

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, g, o = (self.input_conv(x) + self.recurrent_conv(h)).chunk(4, dim=1)
        c = self.recurrent_activation(f) * c + self.recurrent_activation(i) * self.activation(g)
        h = self.recurrent_activation(o) * self.activation(c)
        return h, c

    def zero_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conv = self.input_conv
        size = list(x.shape[2:])
        if conv.padding != "same":
            size = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in zip(size, conv.padding, conv.dilation, conv.kernel_size, conv.stride)]
        h = x.new_zeros(x.shape[0], self.filters, *size)
        return h, h
'''

_KERAS_LSTM_CELL = '''class KerasLSTMCell(nn.LSTMCell):
    """An LSTM cell with Keras's choice of activations (torch's has tanh and sigmoid built in)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, activation=torch.tanh, recurrent_activation=torch.sigmoid) -> None:
        super().__init__(input_size, hidden_size, bias)
        self.activation = activation
        self.recurrent_activation = recurrent_activation

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        gates = F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)
        i, f, g, o = gates.chunk(4, dim=1)
        c = self.recurrent_activation(f) * c + self.recurrent_activation(i) * self.activation(g)
        h = self.recurrent_activation(o) * self.activation(c)
        return h, c
'''

_KERAS_GRU_CELL = '''class KerasGRUCell(nn.GRUCell):
    """A GRU cell with Keras's choice of activations and of reset_after. With
    reset_after=False (the Keras 2 / TF1 convention) the reset gate scales the state before
    the recurrent matrix multiplication, and bias_hh is zero (Keras has one bias)."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, reset_after: bool = True, activation=torch.tanh, recurrent_activation=torch.sigmoid
    ) -> None:
        super().__init__(input_size, hidden_size, bias)
        self.reset_after = reset_after
        self.activation = activation
        self.recurrent_activation = recurrent_activation

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        x_r, x_z, x_n = F.linear(x, self.weight_ih, self.bias_ih).chunk(3, dim=1)
        if self.reset_after:
            h_r, h_z, h_n = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, dim=1)
            r = self.recurrent_activation(x_r + h_r)
            z = self.recurrent_activation(x_z + h_z)
            n = self.activation(x_n + r * h_n)
        else:
            w_rz, w_n = self.weight_hh.split([2 * self.hidden_size, self.hidden_size])
            h_r, h_z = F.linear(h, w_rz).chunk(2, dim=1)
            r = self.recurrent_activation(x_r + h_r)
            z = self.recurrent_activation(x_z + h_z)
            n = self.activation(x_n + F.linear(r * h, w_n))
        return (1 - z) * n + z * h
'''

_KERAS_SIMPLE_RNN_CELL = '''class KerasSimpleRNNCell(nn.RNNCell):
    """A simple RNN cell with any Keras activation (torch's allows tanh and relu)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, activation=torch.tanh) -> None:
        super().__init__(input_size, hidden_size, bias)
        self.activation = activation

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.activation(F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh))
'''

_NATIVE = {"lstm": "nn.LSTM", "gru": "nn.GRU", "simple_rnn": "nn.RNN"}
_CELL = {"lstm": "nn.LSTMCell", "gru": "nn.GRUCell", "simple_rnn": "nn.RNNCell"}
_KERAS_CELL = {
    "lstm": ("KerasLSTMCell", _KERAS_LSTM_CELL),
    "gru": ("KerasGRUCell", _KERAS_GRU_CELL),
    "simple_rnn": ("KerasSimpleRNNCell", _KERAS_SIMPLE_RNN_CELL),
}


def _is(spec: dict[str, Any] | None, op: str) -> bool:
    if spec is None or spec["op"] != op:
        return False
    if op == "relu":
        return (
            spec["attrs"].get("max_value") is None
            and not spec["attrs"].get("negative_slope")
            and not spec["attrs"].get("threshold")
        )
    return True


def _torch_cell_fits(node: Node) -> bool:
    """Whether torch's own cell computes what this Keras layer does."""
    a = node.attrs
    if node.op == "simple_rnn":
        return _is(a["activation"], "tanh") or _is(a["activation"], "relu")
    fits = _is(a["activation"], "tanh") and _is(a["recurrent_activation"], "sigmoid")
    return fits and (node.op != "gru" or a["reset_after"])


def _activation_fn(em: TorchEmitter, spec: dict[str, Any]) -> str:
    """A callable for a cell's activation: a torch function, or a small emitted helper."""
    op, attrs = spec["op"], spec["attrs"]
    if op in ("tanh", "sigmoid") or _is(spec, "relu"):
        return f"torch.{op}"
    if op == "hard_sigmoid" and abs(attrs["slope"] - 1.0 / 6.0) < 1e-12 and attrs["offset"] == 0.5:
        return f"{em.functional()}.hardsigmoid"
    if op == "hard_sigmoid" and attrs["slope"] == 0.2:
        base = "keras2_hard_sigmoid"
    else:
        base = identifier(op)
    body = activation_expr(em, op, attrs, "x")
    code = f'def {{name}}(x: torch.Tensor) -> torch.Tensor:\n    """Keras\'s {op} activation{" (Keras 2: 0.2 x + 0.5, clipped)" if base == "keras2_hard_sigmoid" else ""}."""\n    return {body}\n'
    name, i = base, 1
    while name in em.helpers and em.helpers[name] != code.format(name=name):
        i += 1
        name = f"{base}_{i}"
    return em.helper(name, code.format(name=name))


def _cell_expr(node: Node, em: TorchEmitter, features: int) -> str:
    a = node.attrs
    kwargs: dict[str, Any] = {} if a["use_bias"] else {"bias": False}
    if _torch_cell_fits(node):
        if node.op == "simple_rnn" and a["activation"]["op"] == "relu":
            kwargs["nonlinearity"] = "relu"
        return call(_CELL[node.op], features, a["units"], **kwargs)
    name, code = _KERAS_CELL[node.op]
    em.functional()
    em.helper(name, code)
    if node.op == "gru" and not a["reset_after"]:
        kwargs["reset_after"] = False
    if not _is(a["activation"], "tanh"):
        kwargs["activation"] = Raw(_activation_fn(em, a["activation"]))
    if node.op != "simple_rnn" and not _is(a["recurrent_activation"], "sigmoid"):
        kwargs["recurrent_activation"] = Raw(_activation_fn(em, a["recurrent_activation"]))
    return call(name, features, a["units"], **kwargs)


def _direction_state(node: Node, suffix: str, prefix: str, layer_suffix: str = "") -> dict[str, Any]:
    return {
        f"{prefix}{k}{layer_suffix}": node.weights[k + suffix]
        for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        if k + suffix in node.weights
    }


def _merge(mode: str, fw: str, bw: str) -> str:
    return {
        "concat": f"torch.cat([{fw}, {bw}], dim=-1)",
        "sum": f"{fw} + {bw}",
        "ave": f"({fw} + {bw}) / 2",
        "mul": f"{fw} * {bw}",
    }[mode]


def _bind_outputs(node: Node, em: TorchEmitter) -> tuple[list[str], list[str]]:
    """Variable names of the node's outputs: (the output or two, the final states), the
    states named after the layer: `lstm_h`, `lstm_c` (`bilstm_fw_h`, `bilstm_bw_h`, ...)."""
    a = node.attrs
    bidirectional = a["direction"] == "bidirectional"
    n_out = 2 if bidirectional and a["merge_mode"] is None else 1
    outs = [em.bind(v) for v in node.outputs[:n_out]]
    kinds = ("h", "c")[: RNN_STATES[node.op]]
    prefixes = [f"{node.name}_fw", f"{node.name}_bw"] if bidirectional else [node.name]
    bases = [f"{prefix}_{kind}" for prefix in prefixes for kind in kinds]
    states = [em.bind(v, base) for v, base in zip(node.outputs[n_out:], bases)]
    return outs, states


def _temp(em: TorchEmitter, node: Node, suffix: str) -> str:
    return em.vars_ns.take(f"{node.name}_{suffix}")


def _native_rnn(node: Node, em: TorchEmitter) -> None:
    """nn.LSTM / nn.GRU / nn.RNN, batch_first, bidirectional where Keras's Bidirectional is."""
    a = node.attrs
    x, _, states = rnn_inputs(node)
    features, units = int(x.shape[-1]), a["units"]
    bidirectional = a["direction"] == "bidirectional"
    kwargs: dict[str, Any] = {"batch_first": True}
    if not a["use_bias"]:
        kwargs["bias"] = False
    if node.op == "simple_rnn" and a["activation"]["op"] == "relu":
        kwargs["nonlinearity"] = "relu"
    if bidirectional:
        kwargs["bidirectional"] = True
    state = _direction_state(node, "", "", "_l0")
    if bidirectional:
        state.update(_direction_state(node, "_reverse", "", "_l0_reverse"))
    mod = em.module(node, call(_NATIVE[node.op], features, units, **kwargs), state)
    inp = em.var(x) + (".flip(1)" if a["direction"] == "backward" else "")
    per = RNN_STATES[node.op]
    if states:
        names = [em.var(s) for s in states]
        groups = [names[i::per] for i in range(per)]  # h of each direction, then c of each
        stacked = [f"torch.stack([{', '.join(g)}])" if bidirectional else f"{g[0]}.unsqueeze(0)" for g in groups]
        inp += ", " + (f"({stacked[0]}, {stacked[1]})" if per == 2 else stacked[0])
    outs, state_names = _bind_outputs(node, em)
    whole = a["return_sequences"] and (not bidirectional or a["merge_mode"] == "concat")
    seq = outs[0] if whole else _temp(em, node, "seq")
    need_final = a["return_state"] or (bidirectional and not a["return_sequences"])
    if not need_final:
        if a["return_sequences"]:
            em.lines.append(f"{seq}, _ = {mod}({inp})")
        else:
            em.lines.append(f"{outs[0]} = {mod}({inp})[0][:, -1]")
            return
    else:
        h, c = _temp(em, node, "hn"), _temp(em, node, "cn")
        em.lines.append(f"{seq}, {f'({h}, {c})' if per == 2 else h} = {mod}({inp})")
        finals = [h, c][:per]
        directions = 2 if bidirectional else 1
        values = [f"{f}[{d}]" for d in range(directions) for f in finals]
        if state_names:
            em.lines.append(f"{', '.join(state_names)} = {', '.join(values)}")
    if not bidirectional:
        if not a["return_sequences"]:
            em.lines.append(f"{outs[0]} = {seq}[:, -1]")
        return
    if a["return_sequences"]:
        if a["merge_mode"] == "concat":
            return
        fw, bw = f"{seq}[..., :{units}]", f"{seq}[..., {units}:]"
    else:
        fw, bw = f"{h}[0]", f"{h}[1]"
    if a["merge_mode"] is None:
        em.lines.append(f"{outs[0]}, {outs[1]} = {fw}, {bw}")
    else:
        em.lines.append(f"{outs[0]} = {_merge(a['merge_mode'], fw, bw)}")


def _loop_rnn(node: Node, em: TorchEmitter) -> None:
    """KerasRNN loops around a cell: a mask, or cell math torch's layers do not have."""
    a = node.attrs
    x, mask, states = rnn_inputs(node)
    features = int(x.shape[-1])
    em.helper("KerasRNN", _KERAS_RNN)
    cell = _cell_expr(node, em, features)
    per = RNN_STATES[node.op]
    bidirectional = a["direction"] == "bidirectional"
    directions = [("forward", ""), ("backward", "_reverse")] if bidirectional else [(a["direction"], "")]
    outs, state_names = _bind_outputs(node, em)
    results = []
    for d, (direction, suffix) in enumerate(directions):
        kwargs = []
        if direction == "backward":
            kwargs.append("go_backwards=True")
        if a["zero_output_for_mask"] and mask is not None:
            kwargs.append("zero_masked_outputs=True")
        expr = f"KerasRNN({cell}{', ' + ', '.join(kwargs) if kwargs else ''})"
        mod = em.module(node, expr, _direction_state(node, suffix, "cell."), suffix=direction if bidirectional else "")
        args = [em.var(x)]
        if mask is not None:
            args.append(em.var(mask))
        if states:
            own = [em.var(s) for s in states[d * per : (d + 1) * per]]
            args.append(f"state=({', '.join(own)},)" if per == 1 else f"state=({', '.join(own)})")
        seq = (
            outs[0]
            if not bidirectional and a["return_sequences"]
            else _temp(em, node, "fw" if d == 0 and bidirectional else ("bw" if bidirectional else "seq"))
        )
        finals = state_names[d * per : (d + 1) * per]
        target = "_" if not finals else f"({finals[0]},)" if per == 1 else f"({', '.join(finals)})"
        em.lines.append(f"{seq}, {target} = {mod}({', '.join(args)})")
        results.append(seq)
    if not bidirectional:
        if not a["return_sequences"]:
            em.lines.append(f"{outs[0]} = {results[0]}[:, -1]")
        return
    fw, bw = results
    if a["return_sequences"]:
        fw_out, bw_out = fw, f"{bw}.flip(1)"
    else:
        fw_out, bw_out = f"{fw}[:, -1]", f"{bw}[:, -1]"
    if a["merge_mode"] is None:
        em.lines.append(f"{outs[0]}, {outs[1]} = {fw_out}, {bw_out}")
    else:
        em.lines.append(f"{outs[0]} = {_merge(a['merge_mode'], fw_out, bw_out)}")


@register("ir->torch", "lstm", "gru", "simple_rnn")
def rnn_to_torch(node: Node, em: TorchEmitter) -> None:
    if node.attrs["masked"] or not _torch_cell_fits(node):
        _loop_rnn(node, em)
    else:
        _native_rnn(node, em)


@register("ir->torch", "conv_lstm")
def conv_lstm_to_torch(node: Node, em: TorchEmitter) -> None:
    """A KerasRNN loop around a ConvLSTMCell of torch convolutions."""
    a = node.attrs
    x = node.inputs[0]
    em.helper("KerasRNN", _KERAS_RNN)
    em.helper("ConvLSTMCell", _CONV_LSTM_CELL)
    kwargs: dict[str, Any] = {"kernel_size": compact(a["kernel_size"])}
    if any(s != 1 for s in a["strides"]):
        kwargs["stride"] = compact(a["strides"])
    if a["padding"] == "same":
        kwargs["padding"] = "same"
    if any(d != 1 for d in a["dilation"]):
        kwargs["dilation"] = compact(a["dilation"])
    if not a["use_bias"]:
        kwargs["bias"] = False
    if not _is(a["activation"], "tanh"):
        kwargs["activation"] = Raw(_activation_fn(em, a["activation"]))
    if not _is(a["recurrent_activation"], "sigmoid"):
        kwargs["recurrent_activation"] = Raw(_activation_fn(em, a["recurrent_activation"]))
    cell = call("ConvLSTMCell", Raw(f"nn.Conv{a['rank']}d"), int(x.shape[2]), a["filters"], **kwargs)
    state = {
        "cell.input_conv.weight": node.weights["weight_ih"],
        "cell.recurrent_conv.weight": node.weights["weight_hh"],
    }
    if a["use_bias"]:
        state["cell.input_conv.bias"] = node.weights["bias"]
    backwards = ", go_backwards=True" if a["direction"] == "backward" else ""
    mod = em.module(node, f"KerasRNN({cell}{backwards})", state)
    out = em.bind(node.outputs[0])
    finals = [em.bind(v, f"{node.name}_{k}") for v, k in zip(node.outputs[1:], ("h", "c"))]
    seq = out if a["return_sequences"] else _temp(em, node, "seq")
    em.lines.append(f"{seq}, {'(' + ', '.join(finals) + ')' if finals else '_'} = {mod}({em.var(x)})")
    if not a["return_sequences"]:
        em.lines.append(f"{out} = {seq}[:, -1]")


# -- masks and folds --------------------------------------------------------------------
@register("ir->torch", "sequence_mask")
def sequence_mask_to_torch(node: Node, em: TorchEmitter) -> None:
    x = em.var(node.inputs[0])
    value = node.attrs["value"]
    literal = repr(int(value)) if node.inputs[0].dtype.startswith(("int", "uint")) else repr(float(value))
    em.assign(node, f"({x} != {literal}).any(dim=-1)" if node.attrs["reduce_last"] else f"{x} != {literal}")


@register("ir->torch", "mask_merge")
def mask_merge_to_torch(node: Node, em: TorchEmitter) -> None:
    op = " & " if node.attrs["mode"] == "and" else " | "
    em.assign(node, op.join(em.var(v) for v in node.inputs))


@register("ir->torch", "apply_mask")
def apply_mask_to_torch(node: Node, em: TorchEmitter) -> None:
    x, mask = node.inputs
    em.assign(node, f"torch.where({em.var(mask)}.unsqueeze(-1), {em.var(x)}, 0.0)")


@register("ir->torch", "masked_mean")
def masked_mean_to_torch(node: Node, em: TorchEmitter) -> None:
    x, mask = node.inputs
    axis = node.attrs["axis"]
    keep = ", keepdim=True" if node.attrs["keepdims"] else ""
    m = em.var(mask)
    total = f"torch.where({m}[..., None], {em.var(x)}, 0.0).sum({axis}{keep})"
    count = f"{m}[..., None].sum({axis}, keepdim=True)" if node.attrs["keepdims"] else f"{m}.sum({axis}, keepdim=True)"
    em.assign(node, f"{total} / {count}")


@register("ir->torch", "fold_time")
def fold_time_to_torch(node: Node, em: TorchEmitter) -> None:
    em.assign(node, f"{em.var(node.inputs[0])}.flatten(0, 1)")


@register("ir->torch", "unfold_time")
def unfold_time_to_torch(node: Node, em: TorchEmitter) -> None:
    em.assign(node, f"{em.var(node.inputs[0])}.unflatten(0, (-1, {node.attrs['steps']}))")
