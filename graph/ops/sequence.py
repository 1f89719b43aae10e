"""Sequence op kinds: recurrent layers, attention, masks and the batch/time folds.

Recurrent weights are stored in PyTorch's canonical form: `weight_ih` (gates * units, in),
`weight_hh` (gates * units, units), `bias_ih`, `bias_hh` (gates * units), gates in torch's
order (LSTM i, f, g, o; GRU r, z, n). A bidirectional op holds the backward direction's
weights under the same names with a `_reverse` suffix. A Keras GRU with reset_after=False
has one bias, kept as `bias_ih` with a zero `bias_hh`.

All of these ops are opaque to the layout pass: they work in the source's axis order
(batch, time, features), so a sequence model carries no transposes.
"""

from __future__ import annotations

from ..errors import GraphError
from .schema import Layout, OpDef, attr, define

_F = (int, float)
_RNN_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
RNN_STATES = {"lstm": 2, "gru": 1, "simple_rnn": 1}


def rnn_inputs(node) -> tuple:
    """(sequence, mask or None, initial states) of a recurrent node."""
    x = node.inputs[0]
    rest = node.inputs[1:]
    mask = None
    if node.attrs["masked"]:
        mask, rest = rest[0], rest[1:]
    return x, mask, list(rest)


def _infer_rnn(node):
    a = node.attrs
    x, mask, states = rnn_inputs(node)
    if x.rank != 3:
        raise GraphError(f"{node.name}: a recurrent layer needs a (batch, time, features) input, got {x.shape}")
    if mask is not None and (mask.rank != 2 or mask.dtype != "bool"):
        raise GraphError(f"{node.name}: the mask must be a (batch, time) bool tensor, got {mask.shape} {mask.dtype}")
    directions = 2 if a["direction"] == "bidirectional" else 1
    per_direction = RNN_STATES[node.op]
    if states and len(states) != directions * per_direction:
        raise GraphError(f"{node.name}: expected {directions * per_direction} initial states, got {len(states)}")
    units = a["units"]
    width = 2 * units if a["direction"] == "bidirectional" and a["merge_mode"] == "concat" else units
    outputs = 2 if a["direction"] == "bidirectional" and a["merge_mode"] is None else 1
    shape = (x.shape[0], x.shape[1], width) if a["return_sequences"] else (x.shape[0], width)
    result = [(shape, x.dtype)] * outputs
    if a["return_state"]:
        result += [((x.shape[0], units), x.dtype)] * (directions * per_direction)
    return result


def _rnn_attrs(*extra):
    return (
        attr("units", int),
        attr("activation", dict),
        attr("recurrent_activation", dict, default=None),
        attr("use_bias", bool, default=True),
        *extra,
        attr("direction", str, default="forward", choices=("forward", "backward", "bidirectional")),
        attr("merge_mode", str, default="concat", choices=("concat", "sum", "mul", "ave", None)),
        attr("return_sequences", bool, default=False),
        attr("return_state", bool, default=False),
        attr("zero_output_for_mask", bool, default=False),
        attr("masked", bool, default=False),
    )


_RNN_DOC = (
    "Keras recurrent semantics over (batch, time, features). Inputs: the sequence, then "
    "the (batch, time) bool mask if `masked`, then initial states (per direction: h[, c]). "
    "direction 'backward' is Keras go_backwards: the sequence is read last step first and "
    "the outputs stay in that order; 'bidirectional' flips the backward outputs back and "
    "merges them (`merge_mode` None: two outputs). Where the mask is False a step is "
    "skipped: the states carry over, the output too (zeros if zero_output_for_mask). "
    "Outputs: the output(s), then the final states if return_state (forward, then backward). "
    "activation dicts are {'op': kind, 'attrs': {...}} from the activation family."
)

for _name, _extra in (
    ("lstm", ()),
    ("gru", (attr("reset_after", bool, default=True),)),
    ("simple_rnn", ()),
):
    define(
        OpDef(
            _name,
            _infer_rnn,
            attrs=_rnn_attrs(*_extra),
            weights=_RNN_WEIGHTS + tuple(w + "_reverse" for w in _RNN_WEIGHTS),
            layout=Layout.OPAQUE,
            doc=_RNN_DOC,
            family="recurrent",
        )
    )


def _infer_conv_lstm(node):
    a = node.attrs
    x = node.inputs[0]
    rank = a["rank"]
    if x.rank != rank + 3:
        raise GraphError(
            f"{node.name}: ConvLSTM{rank}D needs (batch, time, channels, *{rank} spatial) steps, got {x.shape}"
        )
    sizes = []
    for n, k, s_, d in zip(x.shape[3:], a["kernel_size"], a["strides"], a["dilation"]):
        if n is None:
            sizes.append(None)
        elif a["padding"] == "same":
            sizes.append(-(-n // s_))
        else:
            sizes.append((n - d * (k - 1) - 1) // s_ + 1)
    step = (a["filters"], *sizes)
    out = (x.shape[0], x.shape[1], *step) if a["return_sequences"] else (x.shape[0], *step)
    return [(out, x.dtype)] + ([((x.shape[0], *step), x.dtype)] * 2 if a["return_state"] else [])


define(
    OpDef(
        "conv_lstm",
        _infer_conv_lstm,
        attrs=(
            attr("rank", int, choices=(1, 2, 3)),
            attr("filters", int),
            attr("kernel_size", tuple),
            attr("strides", tuple),
            attr("dilation", tuple),
            attr("padding", str, choices=("valid", "same")),
            attr("activation", dict),
            attr("recurrent_activation", dict),
            attr("use_bias", bool, default=True),
            attr("direction", str, default="forward", choices=("forward", "backward")),
            attr("return_sequences", bool, default=False),
            attr("return_state", bool, default=False),
        ),
        weights=("weight_ih", "weight_hh", "bias"),
        doc="Keras ConvLSTM over channels-first steps (batch, time, channels, *spatial): gates "
        "(i, f, c, o) = conv(x_t; weight_ih, bias, strides, padding) + 'same' conv(h; weight_hh); "
        "weights are torch conv weights (4 * filters, in, *kernel). Outputs: the last h (or every "
        "h if return_sequences), then h and c if return_state",
        family="recurrent",
    )
)


# -- masks --------------------------------------------------------------------------------
def _infer_sequence_mask(node):
    x = node.inputs[0]
    shape = x.shape[:-1] if node.attrs["reduce_last"] else x.shape
    return [(shape, "bool")]


define(
    OpDef(
        "sequence_mask",
        _infer_sequence_mask,
        attrs=(attr("value", *_F, default=0), attr("reduce_last", bool, default=False)),
        doc="x != value (Embedding mask_zero); with reduce_last, any(x != value) over the last axis (Masking)",
        family="mask",
    )
)


def _infer_mask_merge(node):
    from .schema import broadcast_shapes

    if any(v.dtype != "bool" for v in node.inputs):
        raise GraphError(f"{node.name}: masks must be bool tensors, got {[v.dtype for v in node.inputs]}")
    return [(broadcast_shapes([v.shape for v in node.inputs], where=node.name), "bool")]


define(
    OpDef(
        "mask_merge",
        _infer_mask_merge,
        attrs=(attr("mode", str, choices=("and", "or")),),
        doc="logical AND / OR of bool masks (Keras merges the masks of merged sequences)",
        family="mask",
    )
)


def _infer_apply_mask(node):
    x, mask = node.inputs
    if mask.shape != x.shape[: mask.rank] and mask.rank != x.rank - 1:
        raise GraphError(f"{node.name}: mask {mask.shape} does not match {x.shape}")
    return [(x.shape, x.dtype)]


define(
    OpDef(
        "apply_mask",
        _infer_apply_mask,
        doc="x where the (batch, time) mask is True, else 0 (Masking's output)",
        family="mask",
    )
)


def _infer_masked_mean(node):
    x, _ = node.inputs
    axis = node.attrs["axis"]
    if node.attrs["keepdims"]:
        return [(tuple(1 if i == axis else d for i, d in enumerate(x.shape)), x.dtype)]
    return [(tuple(d for i, d in enumerate(x.shape) if i != axis), x.dtype)]


define(
    OpDef(
        "masked_mean",
        _infer_masked_mean,
        attrs=(attr("axis", int, default=1), attr("keepdims", bool, default=False)),
        doc="mean over `axis` of the steps where the (batch, time) mask is True "
        "(GlobalAveragePooling1D with a mask; NaN where every step is masked, as in Keras)",
        family="mask",
    )
)


# -- batch/time folding (TimeDistributed) ------------------------------------------------
def _infer_fold(node):
    x = node.inputs[0]
    if x.rank < 3:
        raise GraphError(f"{node.name}: folding time into batch needs rank >= 3, got {x.shape}")
    n, t = x.shape[0], x.shape[1]
    return [((None if n is None or t is None else n * t, *x.shape[2:]), x.dtype)]


define(
    OpDef(
        "fold_time",
        _infer_fold,
        doc="(batch, time, ...) -> (batch * time, ...): TimeDistributed runs its layer on every step",
        family="sequence",
    )
)


def _infer_unfold(node):
    x = node.inputs[0]
    t = node.attrs["steps"]
    return [((None if x.shape[0] is None else x.shape[0] // t, t, *x.shape[1:]), x.dtype)]


define(
    OpDef(
        "unfold_time",
        _infer_unfold,
        attrs=(attr("steps", int),),
        doc="(batch * steps, ...) -> (batch, steps, ...), the inverse of fold_time",
        family="sequence",
    )
)


# -- attention ------------------------------------------------------------------------------
MHA_MASKS = ("query_mask", "value_mask", "key_mask", "attention_mask")


def _check_masks(node, names: tuple) -> None:
    given = node.attrs["mask_inputs"]
    if any(m not in names for m in given) or len(node.inputs) != 3 + len(given):
        raise GraphError(f"{node.name}: mask_inputs {given} do not match its {len(node.inputs) - 3} mask inputs")


def _infer_mha(node):
    _check_masks(node, MHA_MASKS)
    q, v, k = node.inputs[:3]
    if q.rank != 3 or v.rank != 3 or k.rank != 3:
        raise GraphError(
            f"{node.name}: attention over (batch, time, features) inputs only, got {q.shape}, {v.shape}, {k.shape}"
        )
    out = [((*q.shape[:-1], node.attrs["output_dim"]), q.dtype)]
    scores = node.attrs["return_scores"]
    if scores == "heads":
        out.append(((q.shape[0], node.attrs["num_heads"], q.shape[1], v.shape[1]), q.dtype))
    elif scores == "mean":
        out.append(((q.shape[0], q.shape[1], v.shape[1]), q.dtype))
    return out


define(
    OpDef(
        "multi_head_attention",
        _infer_mha,
        attrs=(
            attr("num_heads", int),
            attr("key_dim", int),
            attr("value_dim", int),
            attr("output_dim", int),
            attr("use_bias", bool, default=True),
            attr("causal", bool, default=False),
            attr("mask_inputs", tuple, default=()),
            attr("return_scores", str, default="none", choices=("none", "heads", "mean")),
            attr("zero_masked_rows", bool, default=False),
        ),
        weights=(
            "query_weight",
            "query_bias",
            "key_weight",
            "key_bias",
            "value_weight",
            "value_bias",
            "output_weight",
            "output_bias",
        ),
        doc="Keras MultiHeadAttention over the time axis: inputs query, value, key, then the masks "
        "named in `mask_inputs` ((batch, Tq) query, (batch, Tv) value/key, (batch, Tq, Tv) "
        "attention; True = attend), all ANDed, with the causal (lower-left) mask if `causal`. "
        "Projections are Linear weights (heads * dim, features); scores are scaled by "
        "1/sqrt(key_dim); a masked score becomes -0.7 * float32 max (so a row that is all "
        "masked attends uniformly, as in Keras). `return_scores` adds a second output, the softmax "
        "weights: per head (batch, heads, Tq, Tv) or their mean over heads (batch, Tq, Tv). "
        "zero_masked_rows: Keras's explicit softmax (taken with return_attention_scores or dropout > 0, "
        "even at inference): masked scores become -1e9 and masked weights 0, so an all-masked row "
        "attends to nothing",
        family="attention",
    )
)


def _infer_attention(node):
    _check_masks(node, ("query_mask", "value_mask"))
    q, v = node.inputs[0], node.inputs[1]
    return [((*q.shape[:-1], v.shape[-1]), q.dtype)]


define(
    OpDef(
        "dot_attention",
        _infer_attention,
        attrs=(
            attr("score", str, choices=("dot", "concat", "additive")),
            attr("causal", bool, default=False),
            attr("mask_inputs", tuple, default=()),
        ),
        weights=("scale", "concat_score_weight"),
        doc="Keras Attention (score 'dot': q @ k^T * scale; 'concat': concat_score_weight * "
        "sum(tanh(scale * (q + k)))) and AdditiveAttention ('additive': sum(scale * tanh(q + k))); "
        "scale absent means 1. Inputs query, value, key, then the masks named in `mask_inputs`: "
        "masked value steps get 1e9 subtracted from their scores, masked query steps output 0",
        family="attention",
    )
)


def _infer_einsum_dense(node):
    x = node.inputs[0]
    eq = node.attrs["equation"]
    ins, out = eq.split("->")
    x_spec, k_spec = ins.split(",")
    kernel = node.weights.get("kernel")
    sizes = dict(zip(x_spec, x.shape))
    if kernel is not None:
        sizes.update({c: d for c, d in zip(k_spec, kernel.shape)})
    if len(x_spec) != x.rank:
        raise GraphError(f"{node.name}: equation {eq!r} expects a rank-{len(x_spec)} input, got {x.shape}")
    return [(tuple(sizes.get(c) for c in out), x.dtype)]


define(
    OpDef(
        "einsum_dense",
        _infer_einsum_dense,
        attrs=(attr("equation", str),),
        weights=("kernel", "bias"),
        doc="einsum(equation, x, kernel) + bias (bias shaped to broadcast against the output's trailing axes)",
        family="attention",
    )
)
