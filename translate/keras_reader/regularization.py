"""Keras training-time behaviour: dropout and noise layers, ActivityRegularization, and the
per-layer options that act only while training (`trainable`, `*_regularizer`,
`*_constraint`, `activity_regularizer`).

The layers become graph ops of the "training" family (the identity at inference, kept so
that the emitted model trains like the source). The options become `Node.training` facts
(graph/training.py) on the node that holds the weight, with constraint axes mapped from the
Keras weight's axes to the graph's canonical (PyTorch) weight layout.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ...graph import Node, Value
from ...graph.training import set_constraint, set_regularizer
from ..registry import register
from .calls import LayerCall

# -- layers ---------------------------------------------------------------------------------


def _noise_shared_axes(call: LayerCall, x: Value) -> tuple[int, ...]:
    """Keras `noise_shape` as the axes along which one keep/drop decision is shared."""
    noise_shape = call.get("noise_shape")
    if noise_shape is None:
        return ()
    noise_shape = list(noise_shape)
    if len(noise_shape) != x.rank:
        raise call.error(f"noise_shape {noise_shape} does not have the input's rank {x.rank}")
    shared = []
    for axis, (n, d) in enumerate(zip(noise_shape, x.shape)):
        if n is None or n == d:
            continue
        if n == 1:
            shared.append(axis)
        else:
            raise call.error(
                f"noise_shape {noise_shape}: size {n} on axis {axis} is neither 1 nor the input's size {d}"
            )
    return tuple(shared)


@register("keras->ir", "Dropout")
def dropout_from_keras(call: LayerCall) -> Value:
    call.get("seed")
    shared = _noise_shared_axes(call, call.x)
    if float(call.get("rate")) == 0.0:
        return call.emit("identity", [call.x])  # does nothing, in training too
    return call.emit("dropout", [call.x], {"rate": float(call.get("rate")), "shared_axes": shared})


@register("keras->ir", "AlphaDropout")
def alpha_dropout_from_keras(call: LayerCall) -> Value:
    call.get("seed")
    attrs = {"rate": float(call.get("rate")), "shared_axes": _noise_shared_axes(call, call.x), "alpha": True}
    return call.emit("dropout", [call.x], attrs)


@register("keras->ir", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")
def spatial_dropout_from_keras(call: LayerCall) -> Value:
    """One decision per (example, channel), shared over the spatial axes."""
    x = call.x
    call.get("seed")
    fmt = call.get("data_format") or "channels_last"  # SpatialDropout1D has none: (batch, steps, channels)
    spatial = tuple(range(1, x.rank - 1)) if fmt == "channels_last" else tuple(range(2, x.rank))
    return call.emit("dropout", [x], {"rate": float(call.get("rate")), "shared_axes": spatial})


@register("keras->ir", "GaussianNoise")
def gaussian_noise_from_keras(call: LayerCall) -> Value:
    call.get("seed")
    return call.emit("gaussian_noise", [call.x], {"stddev": float(call.get("stddev"))})


@register("keras->ir", "GaussianDropout")
def gaussian_dropout_from_keras(call: LayerCall) -> Value:
    call.get("seed")
    return call.emit("gaussian_dropout", [call.x], {"rate": float(call.get("rate"))})


@register("keras->ir", "ActivityRegularization")
def activity_regularization_from_keras(call: LayerCall) -> Value:
    attrs = {"l1": float(call.get("l1", 0.0) or 0.0), "l2": float(call.get("l2", 0.0) or 0.0)}
    return call.emit("activity_regularization", [call.x], attrs)


# -- per-layer options ----------------------------------------------------------------------

AxisMap = Callable[[int, int], tuple[int, ...]]  # (Keras axis, Keras weight rank) -> graph weight axes


def _same(axis: int, rank: int) -> tuple[int, ...]:
    return (axis,)


def _dense_kernel(axis: int, rank: int) -> tuple[int, ...]:
    # Keras (in, units) -> graph (units, in[, 1, ...]) (a Dense on images is a 1x1 conv)
    return (1,) if axis == 0 else (0,)


def _conv_kernel(axis: int, rank: int) -> tuple[int, ...]:
    # Keras (*kernel, in / groups, out) -> graph (out, in / groups, *kernel)
    spatial = rank - 2
    return (2 + axis,) if axis < spatial else (1,) if axis == spatial else (0,)


def _conv_transpose_kernel(axis: int, rank: int) -> tuple[int, ...]:
    # Keras (*kernel, out, in) -> graph (in, out, *kernel)
    spatial = rank - 2
    return (2 + axis,) if axis < spatial else (1,) if axis == spatial else (0,)


_DENSE = {"kernel": ("weight", _dense_kernel), "bias": ("bias", _same)}
_CONV = {"kernel": ("weight", _conv_kernel), "bias": ("bias", _same)}
_CONV_T = {"kernel": ("weight", _conv_transpose_kernel), "bias": ("bias", _same)}
_NORM = {"gamma": ("weight", _same), "beta": ("bias", _same)}
# recurrent kernels: Keras (in, gates * units) -> graph (gates * units, in), gate blocks reordered (a sum
# of |w| or w**2 does not see the order); one Keras bias -> bias_ih (bias_hh is a fixed zero), except a
# reset_after GRU's, whose two rows are bias_ih and bias_hh, and ktorch's TorchLSTMCell /
# TorchSimpleRNNCell's `bias` and `recurrent_bias` (both under bias_regularizer)
_RECURRENT = {
    "kernel": ("weight_ih", _dense_kernel),
    "recurrent": ("weight_hh", _dense_kernel),  # recurrent_regularizer / recurrent_constraint
    "bias": ("bias_ih", _same),
}
_TWO_BIASES = {**_RECURRENT, "bias": (("bias_ih", "bias_hh"), _same)}
# MultiHeadAttention's kernel_/bias_regularizer apply to its four projections
_MHA_PARTS = ("query", "key", "value", "output")
_MHA = {
    "kernel": (tuple(f"{p}_weight" for p in _MHA_PARTS), _same),
    "bias": (tuple(f"{p}_bias" for p in _MHA_PARTS), _same),
}

# Keras class -> (graph ops that may hold its weights, Keras weight -> (graph weight(s), axis map))
WEIGHT_MAP: dict[str, tuple[tuple[str, ...], dict[str, tuple[str | tuple[str, ...], AxisMap]]]] = {
    "Dense": (("dense", "conv"), _DENSE),
    **{f"Conv{r}D": (("conv",), _CONV) for r in (1, 2, 3)},
    **{f"Convolution{r}D": (("conv",), _CONV) for r in (1, 2, 3)},
    **{f"Conv{r}DTranspose": (("conv_transpose",), _CONV_T) for r in (1, 2, 3)},
    "BatchNormalization": (("batch_norm",), _NORM),
    "TorchBatchNormalization": (("batch_norm",), _NORM),  # ktorch's (keras_writer/normalization.py)
    "LayerNormalization": (("layer_norm",), _NORM),
    "GroupNormalization": (("group_norm",), _NORM),
    "Embedding": (("embedding",), {"embeddings": ("weight", _same)}),
    "LSTM": (("lstm",), _RECURRENT),
    "GRU": (("gru",), _RECURRENT),
    "SimpleRNN": (("simple_rnn",), _RECURRENT),
    # the cells of an RNN layer (their options are in the cell's config)
    "LSTMCell": (("lstm",), _RECURRENT),
    "GRUCell": (("gru",), _RECURRENT),
    "SimpleRNNCell": (("simple_rnn",), _RECURRENT),
    "TorchLSTMCell": (("lstm",), _TWO_BIASES),  # ktorch's (keras_writer/recurrent.py)
    "TorchSimpleRNNCell": (("simple_rnn",), _TWO_BIASES),
    "MultiHeadAttention": (("multi_head_attention",), _MHA),
}

_REGULARIZERS = {
    "L1": ("l1",),
    "L2": ("l2",),
    "L1L2": ("l1", "l2"),
    "l1": ("l1",),
    "l2": ("l2",),
    "l1_l2": ("l1", "l2"),
}
_CONSTRAINTS = {
    "MaxNorm": "max_norm", "max_norm": "max_norm", "NonNeg": "non_neg", "non_neg": "non_neg",
    "UnitNorm": "unit_norm", "unit_norm": "unit_norm", "MinMaxNorm": "min_max_norm", "min_max_norm": "min_max_norm",
}  # fmt: skip


def _factor(value: Any) -> float:
    """A factor as written: Keras 3 keeps L1's factor as a float32 tensor (0.01 is saved as
    0.009999999776482582) and computes in float32, so the shortest float32 repr is exact."""
    f = float(value)
    short = float(str(np.float32(f)))
    return short if np.float32(short) == np.float32(f) and f == float(np.float32(f)) else f


def regularizer_factors(spec: Any) -> dict[str, float] | None:
    """{"l1": a, "l2": b} for a serialized Keras L1/L2/L1L2 regularizer, None for another kind."""
    if isinstance(spec, str):
        spec = {"class_name": spec, "config": {}}
    keys = _REGULARIZERS.get(str(spec.get("class_name")))
    if keys is None:
        return None
    config = spec.get("config") or {}
    # Keras's own defaults: L1(l1=0.01), L2(l2=0.01), L1L2(l1=0.0, l2=0.0)
    default = 0.0 if len(keys) == 2 else 0.01
    return {k: _factor(config.get(k, default)) if k in keys else 0.0 for k in ("l1", "l2")}


def _constraint(spec: Any) -> tuple[str, dict[str, Any]] | None:
    if isinstance(spec, str):
        spec = {"class_name": spec, "config": {}}
    kind = _CONSTRAINTS.get(str(spec.get("class_name")))
    if kind is None:
        return None
    c = spec.get("config") or {}
    params = {
        "max_norm": {"max_value": float(c.get("max_value", 2.0))},
        "non_neg": {},
        "unit_norm": {},
        "min_max_norm": {
            "min_value": float(c.get("min_value", 0.0)),
            "max_value": float(c.get("max_value", 1.0)),
            "rate": float(c.get("rate", 1.0)),
        },
    }[kind]
    if kind != "non_neg":
        axis = c.get("axis", 0)
        params["keras_axis"] = tuple(axis) if isinstance(axis, (list, tuple)) else (int(axis),)
    return kind, params


def _class_name(spec: Any) -> str:
    return str(spec.get("class_name")) if isinstance(spec, dict) else str(spec)


def _weight_node(nodes: list[Node], ops: tuple[str, ...], weight: str) -> Node | None:
    return next((n for n in nodes if n.op in ops and weight in n.weights), None)


def _recurrent_parts(layer: Any, suffix: str) -> list[tuple[str, dict[str, Any], str]]:
    """A serialized LSTM / GRU / SimpleRNN, or RNN around one cell, as the (class, config, graph
    weight suffix) whose options name its weights: an RNN's are in its cell's config."""
    if not isinstance(layer, dict):
        return []
    if layer.get("class_name") == "RNN":
        return _recurrent_parts((layer.get("config") or {}).get("cell"), suffix)
    return [(str(layer.get("class_name")), layer.get("config") or {}, suffix)]


def _option_parts(call: LayerCall) -> list[tuple[str, dict[str, Any], str]]:
    """(class, config, graph weight suffix) of each layer whose options name the weights of `call`:
    the layer itself, an RNN's cell, a Bidirectional's forward and backward (`_reverse`) layers."""
    if call.class_name == "RNN":
        return _recurrent_parts({"class_name": "RNN", "config": {"cell": call.config.get("cell")}}, "")
    if call.class_name == "Bidirectional":
        inner = call.config.get("layer")
        backward = call.config.get("backward_layer") or inner
        return _recurrent_parts(inner, "") + _recurrent_parts(backward, "_reverse")
    return [(call.class_name, call.config, "")]


def _apply_options(
    call: LayerCall, nodes: list[Node], cls: str, config: dict[str, Any], suffix: str, dropped: list[str]
) -> None:
    """Record the `*_regularizer` / `*_constraint` options of a layer of class `cls` on the graph
    weights they name (with `suffix`: a Bidirectional's backward weights); what has no mapping
    goes to `dropped`."""
    ops, weights = WEIGHT_MAP.get(cls, ((), {}))
    if cls in ("GRU", "GRUCell") and config.get("reset_after", True):
        weights = _TWO_BIASES
    for key in config:
        if not key.endswith(("_regularizer", "_constraint")) or key == "activity_regularizer":
            continue
        spec = config.get(key)
        if spec is None:
            continue
        prefix, _, what = key.rpartition("_")
        target = weights.get(prefix)
        names: tuple[str, ...] = () if target is None else (target[0],) if isinstance(target[0], str) else target[0]
        names = tuple(name + suffix for name in names)
        node = _weight_node(nodes, ops, names[0]) if names else None
        if node is None or any(name not in node.weights for name in names):
            dropped.append(f"{call.name} ({cls}): {key} (no mapping for this weight)")
            continue
        if what == "regularizer":
            factors = regularizer_factors(spec)
            if factors is None:
                dropped.append(f"{call.name} ({cls}): {key} {_class_name(spec)} (only L1, L2, L1L2)")
                continue
            for name in names:  # a Keras weight held as several graph weights: its sum, part by part
                set_regularizer(node, name, **factors)
        else:
            parsed = _constraint(spec)
            if parsed is None:
                dropped.append(f"{call.name} ({cls}): {key} {_class_name(spec)} (unknown constraint)")
                continue
            if len(names) != 1:
                dropped.append(f"{call.name} ({cls}): {key} (a constraint on a weight split in parts)")
                continue
            kind, params = parsed
            if "keras_axis" in params:
                # the Keras weight's rank: the graph's, but a Dense kernel on images is a 1x1 conv there
                rank = 2 if cls == "Dense" and prefix == "kernel" else node.weights[names[0]].ndim
                axes: set[int] = set()
                for a in params.pop("keras_axis"):
                    axes.update(target[1](a % rank, rank))
                params["axes"] = tuple(sorted(axes))
            set_constraint(node, names[0], kind, **params)


_WRAPPED = ("layer", "backward_layer", "cell")  # Bidirectional's, TimeDistributed's, RNN's


def _frozen_inside(layer: Any) -> bool:
    """Whether a wrapped layer or cell (serialized), or one inside it, is trainable=False: Keras 3
    passes a wrapper's trainable=False on to neither, so a frozen LSTM in Bidirectional, or cell in
    RNN, says so itself."""
    if not isinstance(layer, dict):
        return False
    config = layer.get("config") or {}
    return config.get("trainable", True) is False or any(_frozen_inside(config.get(key)) for key in _WRAPPED)


def apply_layer_training(call: LayerCall, outs: list[Value], frozen: bool) -> list[Value]:
    """Record the layer's training-time options on the nodes it emitted; return its outputs
    (an `activity_regularizer=` adds an activity_regularization node after them)."""
    nodes = call.emitted
    wrapped = (call.config.get(key) for key in _WRAPPED)
    if frozen or call.config.get("trainable", True) is False or any(_frozen_inside(layer) for layer in wrapped):
        for node in nodes:
            if node.weights:
                node.training["frozen"] = True
    dropped: list[str] = []
    for cls, config, suffix in _option_parts(call):
        _apply_options(call, nodes, cls, config, suffix, dropped)
    activity = call.config.get("activity_regularizer")
    if activity is not None and call.class_name != "ActivityRegularization":
        factors = regularizer_factors(activity)
        if factors is None or len(outs) != 1:
            dropped.append(
                f"{call.name} ({call.class_name}): activity_regularizer {activity!r} (only L1, L2, L1L2 on one output)"
            )
        else:
            y = call.emit("activity_regularization", [outs[0]], factors, suffix="_activity")
            outs = [y]
    if dropped:
        warnings.warn("training-time options not carried over: " + "; ".join(dropped), stacklevel=2)
        call.graph.meta.setdefault("training_dropped", []).extend(dropped)
    return outs
