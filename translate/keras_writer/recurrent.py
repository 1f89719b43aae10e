"""Keras code for recurrent ops: layers.LSTM / GRU / SimpleRNN, in layers.Bidirectional
where the op runs both ways.

The graph holds torch's canonical weights (graph/ops/sequence.py); they become Keras's
once, here. Keras has one bias where torch has two: an LSTM or SimpleRNN adds them (the
two are only ever summed); a GRU with reset_after keeps both as the rows of its
(2, 3 * units) bias. Gate order: LSTM (i, f, g, o) is the same in both; a torch GRU's
(r, z, n) blocks become Keras's (z, r, h).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...graph import Node
from ...graph.errors import UnsupportedOpError
from ...graph.ops.sequence import rnn_inputs
from ..registry import register
from .codegen import KerasEmitter, Raw, call

_LAYER = {"lstm": "layers.LSTM", "gru": "layers.GRU", "simple_rnn": "layers.SimpleRNN"}


def _activation(node: Node, spec: dict[str, Any] | None, default: str) -> str | None:
    """The Keras activation name for an op's activation dict (None when it is `default`)."""
    if spec is None:
        return None
    op, attrs = spec["op"], spec["attrs"]
    if op == "identity":
        name = "linear"
    elif op in ("tanh", "sigmoid") or (
        op == "relu" and not any(attrs.get(k) for k in ("max_value", "negative_slope", "threshold"))
    ):
        name = op
    elif op == "hard_sigmoid" and abs(attrs["slope"] - 1.0 / 6.0) < 1e-12 and attrs["offset"] == 0.5:
        name = "hard_sigmoid"
    else:
        raise UnsupportedOpError(
            [
                (
                    node.source or node.name,
                    node.op,
                    f"activation {op} {attrs} in a Keras recurrent layer",
                )
            ],
            where="the Keras writer",
        )
    return None if name == default else name


def _gru_to_keras_gates(matrix: np.ndarray, units: int) -> np.ndarray:
    """torch GRU gate blocks (r, z, n) along axis 0 -> Keras's (z, r, h)."""
    r, z, n = (matrix[i * units : (i + 1) * units] for i in range(3))
    return np.concatenate([z, r, n], axis=0)


def keras_cell_weights(node: Node, suffix: str = "") -> list[np.ndarray]:
    """One direction's [kernel, recurrent_kernel(, bias)] in Keras's layout."""
    a, w = node.attrs, node.weights
    units = a["units"]
    w_ih, w_hh = w["weight_ih" + suffix], w["weight_hh" + suffix]
    b_ih = w.get("bias_ih" + suffix)
    b_hh = w.get("bias_hh" + suffix)
    if node.op == "gru":
        w_ih, w_hh = _gru_to_keras_gates(w_ih, units), _gru_to_keras_gates(w_hh, units)
        b_ih = None if b_ih is None else _gru_to_keras_gates(b_ih, units)
        b_hh = None if b_hh is None else _gru_to_keras_gates(b_hh, units)
    out = [w_ih.T, w_hh.T]
    if a["use_bias"]:
        zeros = np.zeros(w_ih.shape[0], np.float32)
        b_ih = zeros if b_ih is None else b_ih
        b_hh = zeros if b_hh is None else b_hh
        if node.op == "gru" and a["reset_after"]:
            out.append(np.stack([b_ih, b_hh]))
        else:
            if node.op == "gru" and np.any(b_hh):
                raise UnsupportedOpError(
                    [
                        (
                            node.source or node.name,
                            node.op,
                            "a GRU with reset_after=False and a recurrent bias",
                        )
                    ],
                    where="the Keras writer",
                )
            out.append(b_ih + b_hh)
    return [np.ascontiguousarray(x, dtype=np.float32) for x in out]


@register("ir->keras", "lstm", "gru", "simple_rnn")
def rnn_to_keras(node: Node, em: KerasEmitter) -> None:
    a = node.attrs
    kwargs: dict[str, Any] = {"units": a["units"]}
    act = _activation(node, a["activation"], "tanh")
    if act is not None:
        kwargs["activation"] = act
    if node.op != "simple_rnn":
        rec = _activation(node, a["recurrent_activation"], "sigmoid")
        if rec is not None:
            kwargs["recurrent_activation"] = rec
    if not a["use_bias"]:
        kwargs["use_bias"] = False
    if node.op == "gru" and not a["reset_after"]:
        kwargs["reset_after"] = False
    if a["return_sequences"]:
        kwargs["return_sequences"] = True
    if a["return_state"]:
        kwargs["return_state"] = True
    if a["zero_output_for_mask"] and a["masked"] and a["direction"] != "bidirectional":
        kwargs["zero_output_for_mask"] = True
    x, mask, states = rnn_inputs(node)
    weights = keras_cell_weights(node)
    if a["direction"] == "bidirectional":
        weights += keras_cell_weights(node, "_reverse")
        inner = Raw(call(_LAYER[node.op], **kwargs))
        layer = em.layer(
            node,
            "layers.Bidirectional",
            weights,
            layer=inner,
            merge_mode=a["merge_mode"],
        )
    else:
        if a["direction"] == "backward":
            kwargs["go_backwards"] = True
        layer = em.layer(node, _LAYER[node.op], weights, **kwargs)
    args = [em.var(x)]
    if mask is not None:
        args.append(f"mask={em.var(mask)}")
    if states:
        args.append(f"initial_state=[{', '.join(em.var(s) for s in states)}]")
    # not em.assign: the op's `activation` attribute is the cell's, not one fused after it
    n_out = 2 if a["direction"] == "bidirectional" and a["merge_mode"] is None else 1
    names = [em.bind(v) for v in node.outputs[:n_out]]
    kinds = ("h", "c") if node.op == "lstm" else ("h",)
    prefixes = [f"{node.name}_fw", f"{node.name}_bw"] if a["direction"] == "bidirectional" else [node.name]
    bases = [f"{prefix}_{kind}" for prefix in prefixes for kind in kinds]
    names += [em.bind(v, base) for v, base in zip(node.outputs[n_out:], bases)]
    em.line(f"{', '.join(names)} = {layer}({', '.join(args)})")
