"""Keras recurrent layers: LSTM, GRU, SimpleRNN, Bidirectional, TimeDistributed, Masking.

Kernels become PyTorch's (gates * units, features) matrices once, here: Keras LSTM gates
(i, f, c, o) are torch's order already; Keras GRU gates (z, r, h) are reordered to torch's
(r, z, n). A Keras layer has one bias where torch has two: it goes into `bias_ih` and
`bias_hh` is a zero that does not train (a reset_after GRU has both, as rows of its
(2, 3 * units) bias; ktorch's TorchLSTMCell / TorchSimpleRNNCell, written for a PyTorch source,
have both as `bias` and `recurrent_bias`).

Keras masks flow implicitly (Embedding(mask_zero=True), Masking); the reader hands them
to these translators as `call.mask`, and they become an explicit input of the op.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...graph import Value
from ..registry import lookup, register
from .calls import SIMPLE_ACTIVATIONS, LayerCall, activation_name

_OPS = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "simple_rnn"}
_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}
# Options that do not change what a trained layer computes at inference.
_TRAINING_ONLY = ("dropout", "recurrent_dropout", "unit_forget_bias", "unroll", "implementation", "use_cudnn")


def activation_attr(call: LayerCall, spec: Any) -> dict[str, Any]:
    """A Keras activation spec as the {'op', 'attrs'} dict the recurrent ops hold."""
    name = activation_name(spec)
    if name in (None, "linear", ""):
        return {"op": "identity", "attrs": {}}
    if name == "hard_sigmoid":
        # Keras 2 (and TF1): clip(0.2 x + 0.5, 0, 1); Keras 3: relu6(x + 3) / 6
        slope = 0.2 if call.keras2 else 1.0 / 6.0
        return {"op": "hard_sigmoid", "attrs": {"slope": slope, "offset": 0.5}}
    if name not in SIMPLE_ACTIVATIONS:
        raise call.error(f"activation {name!r} is not supported in a recurrent layer")
    op, attrs = SIMPLE_ACTIVATIONS[name]
    return {"op": op, "attrs": dict(attrs)}


def _reorder_gru(matrix: np.ndarray, units: int) -> np.ndarray:
    """Keras GRU gate blocks (z, r, h) along the last axis -> torch's (r, z, n)."""
    z, r, h = (matrix[..., i * units : (i + 1) * units] for i in range(3))
    return np.concatenate([r, z, h], axis=-1)


def cell_weights(
    call: LayerCall,
    cls: str,
    config: dict[str, Any],
    arrays: list[np.ndarray],
    features: int,
    suffix: str = "",
    two_biases: bool = False,
) -> dict[str, np.ndarray]:
    """One direction's Keras (kernel, recurrent_kernel[, bias[, recurrent_bias]]) in torch's
    canonical form."""
    units = int(config["units"])
    gates = _GATES[cls]
    use_bias = bool(config.get("use_bias", True))
    reset_after = cls == "GRU" and bool(config.get("reset_after", True))
    expected = (4 if two_biases else 3) if use_bias else 2
    if len(arrays) != expected:
        raise call.error(f"expected {expected} weight tensors per direction, the file has {len(arrays)}")
    kernel, recurrent = arrays[0], arrays[1]
    if kernel.shape != (features, gates * units) or recurrent.shape != (units, gates * units):
        raise call.error(
            f"kernel {kernel.shape} / recurrent kernel {recurrent.shape} do not match "
            f"{features} input features and {units} units"
        )
    if cls == "GRU":
        kernel, recurrent = _reorder_gru(kernel, units), _reorder_gru(recurrent, units)
    weights = {"weight_ih": kernel.T, "weight_hh": recurrent.T}
    if use_bias:
        bias = arrays[2]
        if reset_after:
            if bias.shape != (2, gates * units):
                raise call.error(f"a reset_after GRU bias has shape (2, {gates * units}), the file has {bias.shape}")
            weights["bias_ih"], weights["bias_hh"] = _reorder_gru(bias[0], units), _reorder_gru(bias[1], units)
        else:
            if bias.shape != (gates * units,):
                raise call.error(f"bias has shape {bias.shape}, expected ({gates * units},)")
            weights["bias_ih"] = _reorder_gru(bias, units) if cls == "GRU" else bias
            weights["bias_hh"] = arrays[3] if two_biases else np.zeros_like(bias)
            if weights["bias_hh"].shape != bias.shape:
                raise call.error(f"recurrent_bias has shape {weights['bias_hh'].shape}, expected {bias.shape}")
    return {k + suffix: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}


def _rnn_attrs(call: LayerCall, cls: str, config: dict[str, Any]) -> dict[str, Any]:
    if config.get("stateful"):
        raise call.error("stateful RNNs carry state from one call to the next; save the model with stateful=False")
    if config.get("time_major"):
        raise call.error("time_major RNNs are not supported; use batch-major inputs")
    for key in _TRAINING_ONLY:
        config.get(key)
    attrs: dict[str, Any] = {
        "units": int(config["units"]),
        "activation": activation_attr(call, config.get("activation", "tanh")),
        "use_bias": bool(config.get("use_bias", True)),
        "return_sequences": bool(config.get("return_sequences", False)),
        "return_state": bool(config.get("return_state", False)),
        "zero_output_for_mask": bool(config.get("zero_output_for_mask", False)),
    }
    if cls != "SimpleRNN":
        attrs["recurrent_activation"] = activation_attr(call, config.get("recurrent_activation", "sigmoid"))
    if cls == "GRU":
        attrs["reset_after"] = bool(config.get("reset_after", True))
    return attrs


def _inputs(call: LayerCall) -> tuple[Value, Value | None, list[Value]]:
    """The sequence, its mask and the initial states (Keras 3 `initial_state=`, or the
    extra inputs Keras 2 lists after the sequence)."""
    ins = call.inputs
    states = call.kwargs.get("initial_state")
    if isinstance(states, Value):
        states = [states]
    states = list(states) if states else ins[1:]
    mask = call.mask
    if mask is not None and mask.rank == 3:  # an explicit (batch, time, 1) mask
        mask = call.emit("reshape", [mask], {"shape": (-1,)}, suffix="_mask")
    return ins[0], mask, states


def _emit_rnn(
    call: LayerCall,
    op: str,
    attrs: dict,
    weights: dict,
    x: Value,
    mask: Value | None,
    states: list[Value],
    two_biases: bool = False,
) -> list[Value]:
    if op != "conv_lstm":
        attrs = {**attrs, "masked": mask is not None}
    inputs = [x] + ([mask] if mask is not None else []) + states
    node = call.graph.add_node(
        op, inputs, attrs, weights, name=call.name.replace("/", "_"), source=call.name, source_class=call.class_name
    )
    call._emitted.append(node)
    placeholders = sorted(k for k in weights if k.startswith("bias_hh")) if op != "conv_lstm" else []
    if placeholders and not attrs.get("reset_after", False) and not two_biases:
        # Keras has one bias where torch has two: bias_hh is a zero placeholder that must not train
        node.training["constant"] = placeholders
    return node.outputs


def _one_direction(call: LayerCall, cls: str, config: dict[str, Any], two_biases: bool = False) -> list[Value]:
    x, mask, states = _inputs(call)
    if x.rank != 3 or x.shape[-1] is None:
        raise call.error(f"expects a (batch, time, features) input with known features, got {x.shape}")
    attrs = _rnn_attrs(call, cls, config)
    attrs["direction"] = "backward" if config.get("go_backwards") else "forward"
    arrays = [w for _, w in call.weights]
    weights = cell_weights(call, cls, config, arrays, int(x.shape[-1]), two_biases=two_biases)
    outs = _emit_rnn(call, _OPS[cls], attrs, weights, x, mask, states, two_biases)
    if mask is not None:
        call.output_masks = [mask if attrs["return_sequences"] else None] + [None] * (len(outs) - 1)
    return outs


@register("keras->ir", "LSTM", "GRU", "SimpleRNN")
def rnn_from_keras(call: LayerCall) -> list[Value]:
    return _one_direction(call, call.class_name, call.config)


# RNN cells -> (the layer they make, whether they hold two biases): Keras's, and the cells ktorch
# writes for a PyTorch LSTM / RNN (keras_writer/recurrent.py), by their registered names
_CELLS = {
    "LSTMCell": ("LSTM", False),
    "GRUCell": ("GRU", False),
    "SimpleRNNCell": ("SimpleRNN", False),
    "ktorch>TorchLSTMCell": ("LSTM", True),
    "ktorch>TorchSimpleRNNCell": ("SimpleRNN", True),
}
_RNN_OPTIONS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll", "zero_output_for_mask",
                "time_major")  # fmt: skip


def _cell_key(cell: dict[str, Any]) -> str:
    """A serialized cell's key in _CELLS: its registered name ("ktorch>TorchLSTMCell"), else its class."""
    registered = cell.get("registered_name")
    return registered if isinstance(registered, str) and ">" in registered else str(cell.get("class_name"))


def recurrent_layer(call: LayerCall, layer: dict[str, Any]) -> tuple[str, dict[str, Any], bool]:
    """A serialized LSTM / GRU / SimpleRNN, or RNN around one cell, as (LSTM / GRU / SimpleRNN,
    its options, whether it holds two biases): an RNN's cell options merged with the RNN's."""
    cls, config = layer.get("class_name"), dict(layer.get("config") or {})
    if cls in _OPS:
        return str(cls), config, False
    if cls != "RNN":
        raise call.error(f"{cls} is not supported here (LSTM, GRU, SimpleRNN and RNN are)")
    cell = config.get("cell")
    if isinstance(cell, list) or not isinstance(cell, dict) or _cell_key(cell) not in _CELLS:
        name = cell.get("class_name") if isinstance(cell, dict) else "several cells"
        raise call.error(f"an RNN around {name} is not supported (one LSTMCell, GRUCell or SimpleRNNCell is)")
    cls, two_biases = _CELLS[_cell_key(cell)]
    options = {k: config[k] for k in _RNN_OPTIONS if config.get(k) is not None}
    return cls, {**cell.get("config", {}), **options}, two_biases


@register("keras->ir", "RNN")
def generic_rnn_from_keras(call: LayerCall) -> list[Value]:
    """keras.layers.RNN around one LSTMCell / GRUCell / SimpleRNNCell (or ktorch's TorchLSTMCell /
    TorchSimpleRNNCell): the same layer as LSTM / GRU / SimpleRNN, with the layer's options in the
    RNN config and the cell's in its own."""
    for key in ("cell", *_RNN_OPTIONS):
        call.get(key)
    cls, config, two_biases = recurrent_layer(call, {"class_name": "RNN", "config": call.config})
    return _one_direction(call, cls, config, two_biases)


def _direction_weights(call: LayerCall) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split a Bidirectional layer's weights into the forward and backward layer's."""
    forward, backward = [], []
    for name, array in call.weights:
        # ".../forward_lstm/lstm_cell/kernel" (h5) or "forward_layer/cell/vars/0" (.keras)
        parts = name.split("/")
        cells = [i for i, p in enumerate(parts) if p.endswith("cell")]
        head = parts[cells[-1] - 1] if cells and cells[-1] > 0 else ""
        if head.startswith("forward"):
            forward.append(array)
        elif head.startswith("backward"):
            backward.append(array)
        else:
            raise call.error(f"weight {name!r} belongs to neither the forward nor the backward layer")
    return forward, backward


@register("keras->ir", "Bidirectional")
def bidirectional_from_keras(call: LayerCall) -> list[Value]:
    inner = call.get("layer")
    if not isinstance(inner, dict) or inner.get("class_name") not in (*_OPS, "RNN"):
        cls = inner.get("class_name") if isinstance(inner, dict) else None
        raise call.error(f"Bidirectional around {cls} is not supported (LSTM, GRU, SimpleRNN and RNN are)")
    cls, fw_cfg, two_biases = recurrent_layer(call, inner)
    bw = call.get("backward_layer")
    if isinstance(bw, dict):
        bw_cls, bw_cfg, bw_two = recurrent_layer(call, bw)
        if (bw_cls, bw_two) != (cls, two_biases):
            raise call.error("a backward_layer of another class than the forward layer is not supported")
    else:
        bw_cfg = {**fw_cfg, "go_backwards": True}
    if fw_cfg.get("go_backwards") or not bw_cfg.get("go_backwards"):
        raise call.error("only a forward layer with a go_backwards backward layer is supported")
    x, mask, states = _inputs(call)
    attrs = _rnn_attrs(call, cls, fw_cfg)
    if _rnn_attrs(call, cls, {**bw_cfg, "go_backwards": False}) != attrs:
        raise call.error("forward and backward layers with different settings are not supported")
    # Keras's Bidirectional zeroes the outputs of masked steps when it returns sequences
    attrs["zero_output_for_mask"] = attrs["return_sequences"]
    merge_mode = call.get("merge_mode", "concat")
    attrs.update(direction="bidirectional", merge_mode=merge_mode)
    features = int(x.shape[-1])
    fw, bw_arrays = _direction_weights(call)
    weights = cell_weights(call, cls, fw_cfg, fw, features, two_biases=two_biases)
    weights.update(cell_weights(call, cls, bw_cfg, bw_arrays, features, suffix="_reverse", two_biases=two_biases))
    outs = _emit_rnn(call, _OPS[cls], attrs, weights, x, mask, states, two_biases)
    if mask is not None and attrs["return_sequences"]:
        n = 2 if merge_mode is None else 1
        call.output_masks = [mask] * n + [None] * (len(outs) - n)
    return outs


_CONV_LSTM_RANK = {"ConvLSTM1D": 1, "ConvLSTM2D": 2, "ConvLSTM3D": 3}


@register("keras->ir", *_CONV_LSTM_RANK)
def conv_lstm_from_keras(call: LayerCall) -> Value | list[Value]:
    """ConvLSTM1D/2D/3D. The op works on channels-first steps, so a channels-last sequence
    is transposed in and out here (the layout pass cannot move axes through a recurrence)."""
    rank = _CONV_LSTM_RANK[call.class_name]
    x = call.x
    if x.rank != rank + 3 or any(d is None for d in x.shape[2:]):
        raise call.error(f"expects (batch, time, *{rank} spatial, channels) steps of known size, got {x.shape}")
    config = call.config
    if config.get("stateful"):
        raise call.error("stateful RNNs carry state from one call to the next; save the model with stateful=False")
    if call.mask is not None or call.kwargs.get("initial_state") is not None or len(call.inputs) > 1:
        raise call.error("ConvLSTM with a mask or initial states is not supported yet")
    for key in _TRAINING_ONLY:
        config.get(key)
    channels_last = (config.get("data_format") or "channels_last") == "channels_last"

    def tup(key: str, default: int) -> tuple[int, ...]:
        v = config.get(key, default)
        return tuple(int(i) for i in v) if isinstance(v, (list, tuple)) else (int(v),) * rank

    kernel_size, strides, dilation = tup("kernel_size", 1), tup("strides", 1), tup("dilation_rate", 1)
    padding = str(config.get("padding", "valid")).lower()
    if padding == "same" and any(s != 1 for s in strides):
        raise call.error("'same' padding with strides > 1 is not supported for ConvLSTM yet")
    filters = int(config["filters"])
    channels = int(x.shape[-1] if channels_last else x.shape[2])
    use_bias = bool(config.get("use_bias", True))
    call.expect_weights(3 if use_bias else 2)
    kernel = call.weight(0, expect=(*kernel_size, channels, 4 * filters))
    recurrent = call.weight(1, expect=(*kernel_size, filters, 4 * filters))
    to_torch = (rank + 1, rank, *range(rank))  # (*k, in, out) -> (out, in, *k)
    weights = {
        "weight_ih": np.ascontiguousarray(kernel.transpose(to_torch)),
        "weight_hh": np.ascontiguousarray(recurrent.transpose(to_torch)),
    }
    if use_bias:
        weights["bias"] = call.weight(2, expect=(4 * filters,))
    attrs = {
        "rank": rank,
        "filters": filters,
        "kernel_size": kernel_size,
        "strides": strides,
        "dilation": dilation,
        "padding": padding,
        "activation": activation_attr(call, config.get("activation", "tanh")),
        "recurrent_activation": activation_attr(call, config.get("recurrent_activation", "sigmoid")),
        "use_bias": use_bias,
        "direction": "backward" if config.get("go_backwards") else "forward",
        "return_sequences": bool(config.get("return_sequences", False)),
        "return_state": bool(config.get("return_state", False)),
    }
    if channels_last:
        x = call.emit("transpose", [x], {"perm": (0, 1, x.rank - 1, *range(2, x.rank - 1))}, suffix="_cf")
    outs = _emit_rnn(call, "conv_lstm", attrs, weights, x, None, [])
    if not channels_last:
        return outs
    back = []
    for i, v in enumerate(outs):
        perm = (0, *range(2, v.rank), 1) if v.rank == rank + 2 else (0, 1, *range(3, v.rank), 2)
        back.append(call.emit("transpose", [v], {"perm": perm}, suffix="_cl" if i == 0 else f"_cl{i}"))
    return back


@register("keras->ir", "Masking")
def masking_from_keras(call: LayerCall) -> Value:
    x = call.x
    mask = call.emit(
        "sequence_mask", [x], {"value": float(call.get("mask_value", 0.0)), "reduce_last": True}, suffix="_mask"
    )
    call.output_masks = [mask]
    return call.emit("apply_mask", [x, mask])


# Inner layers that act on the last axis alone: TimeDistributed needs no folding for them.
_PER_STEP = frozenset(
    {"Dense", "Activation", "Dropout", "ReLU", "LeakyReLU", "ELU", "Softmax", "LayerNormalization", "Identity"}
)


@register("keras->ir", "TimeDistributed")
def time_distributed_from_keras(call: LayerCall) -> Value:
    """The inner layer on every time step: on the sequence itself for layers that act on
    the last axis, else on the steps folded into the batch, (batch * time, ...)."""
    inner = call.get("layer")
    cls = inner.get("class_name")
    translator = lookup("keras->ir", cls)
    if translator is None:
        raise call.error(f"TimeDistributed around {cls}: no translator for that layer class")
    config = dict(inner.get("config", {}))
    x = call.x
    steps = x.shape[1]
    per_step = cls in _PER_STEP
    if not per_step and steps is None:
        raise call.error("TimeDistributed over a layer that needs folding needs a known number of time steps")
    # A channels-last image layer runs channels-first on the folded steps: the layout pass
    # cannot see through the fold, so the channel move is explicit here.
    spatial = not per_step and cls != "Flatten" and "data_format" in config and x.rank >= 4
    if spatial and (config.get("data_format") or "channels_last") == "channels_last":
        x = call.emit("transpose", [x], {"perm": (0, 1, x.rank - 1, *range(2, x.rank - 1))}, suffix="_cf")
        config["data_format"] = "channels_first"
    else:
        spatial = False
    if cls == "Flatten" and (config.get("data_format") or "channels_last") == "channels_last" and x.rank >= 3:
        # each step flattened: one reshape of the sequence, (batch, time, features)
        size = 1
        for d in x.shape[2:]:
            size = -1 if d is None or size == -1 else size * d
        if steps is not None or size != -1:
            return call.emit("reshape", [x], {"shape": (steps if steps is not None else -1, size)})
    inner_x = x if per_step else call.emit("fold_time", [x], suffix="_fold")
    inner_call = LayerCall(
        graph=call.graph,
        name=call.name,
        class_name=cls,
        config=config,
        args=[inner_x],
        kwargs={},
        weights=call.weights,
        keras2=call.keras2,
        call_index=call.call_index,
    )
    y = translator(inner_call)
    if not isinstance(y, Value):
        raise call.error(f"TimeDistributed around {cls} with several outputs is not supported")
    call._emitted.extend(inner_call._emitted)
    if per_step:
        return y
    y = call.emit("unfold_time", [y], {"steps": int(steps)}, suffix="_unfold")
    if spatial and y.rank >= 4:
        y = call.emit("transpose", [y], {"perm": (0, 1, *range(3, y.rank), 2)}, suffix="_cl")
    return y


@register("keras->ir", "ops.NotEqual")
def not_equal_from_keras(call: LayerCall) -> Value:
    """`keras.ops.not_equal(x, constant)`: how a Keras 3 functional config records the mask of
    an Embedding(mask_zero=True), passed on to its consumers as `mask=`; any other not_equal
    is an element-wise comparison."""
    if len(call.inputs) != 1 or len(call.args) != 2 or not isinstance(call.args[1], (int, float)):
        from .keras_ops import binary_nodes

        return binary_nodes(call, "compare:not_equal", call.args[0], call.args[1])
    attrs = {"value": call.args[1], "reduce_last": False}
    for user in call.x.users:  # the same mask, already computed for an Embedding(mask_zero=True)
        if user.op == "sequence_mask" and user.attrs == attrs:
            return call.emit("identity", [user.output])
    return call.emit("sequence_mask", [call.x], attrs)


@register("keras->ir", "ops.Any")
def any_from_keras(call: LayerCall) -> Value:
    """`keras.ops.any(not_equal(x, v), axis=-1)`: how a Keras 3 functional config records
    the mask of a Masking layer."""
    x = call.x
    producer = x.producer
    axis = call.get("axis")
    if (
        producer is None
        or producer.op != "sequence_mask"
        or producer.attrs["reduce_last"]
        or axis not in (-1, x.rank - 1)
        or call.get("keepdims")
    ):
        raise call.error("only any(not_equal(x, value), axis=-1), a Masking layer's mask, is supported")
    return call.emit("sequence_mask", [producer.inputs[0]], {"value": producer.attrs["value"], "reduce_last": True})


@register("keras->ir", "ops.LogicalOr", "ops.LogicalAnd")
def logical_from_keras(call: LayerCall) -> Value:
    """`keras.ops.logical_or/and(a, b)`: how a Keras 3 functional config records the mask
    of a merge of masked sequences."""
    a, b = call.inputs if len(call.inputs) == 2 else (None, None)
    if a is None or a.dtype != "bool" or b.dtype != "bool":
        raise call.error("only the logical OR/AND of two bool masks is supported")
    if a is b:  # a residual Add of two tensors that carry the same mask
        return call.emit("identity", [a])
    return call.emit("mask_merge", [a, b], {"mode": "or" if call.class_name == "ops.LogicalOr" else "and"})
