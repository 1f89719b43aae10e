"""Keras code for recurrent ops: layers.LSTM / GRU / SimpleRNN, in layers.Bidirectional
where the op runs both ways.

The graph holds torch's canonical weights (graph/ops/sequence.py); they become Keras's
once, here. Keras's LSTM and SimpleRNN have one bias where torch has two. Where the source
has two that train (a PyTorch nn.LSTM / nn.RNN), the layer is `layers.RNN` around
`TorchLSTMCell` / `TorchSimpleRNNCell`, cells that keep torch's bias_hh as a second trainable
`recurrent_bias`, so that training, the optimizer state and the trainable-parameter count are
torch's. Where the second is a fixed zero (a Keras source, read back) or absent, the stock layer
holds their sum. A GRU with reset_after keeps both as the rows of its (2, 3 * units) bias. Gate
order: LSTM (i, f, g, o) is the same in both; a torch GRU's (r, z, n) blocks become Keras's
(z, r, h).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...graph import Node
from ...graph.errors import UnsupportedOpError
from ...graph.ops.sequence import rnn_inputs
from ...graph.training import is_frozen
from ..registry import register
from .codegen import KerasEmitter, Raw, call

_LAYER = {"lstm": "layers.LSTM", "gru": "layers.GRU", "simple_rnn": "layers.SimpleRNN"}

# A Keras cell with PyTorch's two biases: the class is written into model.py from this template.
_TWO_BIAS_CELL = '''class {name}(layers.{base}):
    """layers.{base} with PyTorch's two biases, trained apart as PyTorch trains them: `bias` is
    torch's bias_ih and `recurrent_bias` its bias_hh (both under bias_regularizer and
    bias_constraint). A step adds both where layers.{base} adds `bias`.

    {note}"""

    def __init__(self, units, dropout=0.0, recurrent_dropout=0.0, **kwargs):
        if dropout or recurrent_dropout:
            raise ValueError(f"{{self.name}}: no dropout inside the cell (PyTorch's has none)")
        super().__init__(units, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        if self.use_bias:
            self.recurrent_bias = self.add_weight(
                shape=self.bias.shape,
                name="recurrent_bias",
                initializer="zeros",
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def call(self, inputs, states, training=False):
{step}
'''
_TWO_BIAS_STEPS = {
    "lstm": (
        "TorchLSTMCell",
        "LSTMCell",
        "Run it in layers.RNN, which always steps through the cell: layers.LSTM and\n"
        "    Bidirectional(layers.LSTM) may run a fused kernel (cuDNN, the backend's lstm) that reads\n"
        "    `bias` alone.",
        """        h, c = states
        z = keras.ops.matmul(inputs, self.kernel) + keras.ops.matmul(h, self.recurrent_kernel)
        if self.use_bias:
            z = z + self.bias + self.recurrent_bias
        i, f, g, o = keras.ops.split(z, 4, axis=-1)  # gate order (i, f, g, o): torch's and Keras's
        c = self.recurrent_activation(f) * c + self.recurrent_activation(i) * self.activation(g)
        h = self.recurrent_activation(o) * self.activation(c)
        return h, [h, c]""",
    ),
    "simple_rnn": (
        "TorchSimpleRNNCell",
        "SimpleRNNCell",
        "Run it in layers.RNN (layers.SimpleRNN makes its own cell).",
        """        nested = isinstance(states, (list, tuple))
        h = states[0] if nested else states
        z = keras.ops.matmul(inputs, self.kernel) + keras.ops.matmul(h, self.recurrent_kernel)
        if self.use_bias:
            z = z + self.bias + self.recurrent_bias
        h = self.activation(z)
        return h, [h] if nested else h""",
    ),
}


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


def two_biases(node: Node) -> bool:
    """Whether the layer keeps torch's two biases apart (TorchLSTMCell / TorchSimpleRNNCell): an
    LSTM or SimpleRNN whose bias_hh trains (not the fixed zero a one-bias source reads as)."""
    fixed = set(node.training.get("constant", []))
    return (
        node.op in _TWO_BIAS_STEPS
        and node.attrs["use_bias"]
        and any(k.startswith("bias_hh") and k not in fixed for k in node.weights)
    )


def keras_cell_weights(node: Node, suffix: str = "") -> list[np.ndarray]:
    """One direction's [kernel, recurrent_kernel(, bias(, recurrent_bias))] in Keras's layout."""
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
        elif two_biases(node):
            out += [b_ih, b_hh]
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


def two_bias_cell(node: Node, em: KerasEmitter, kwargs: dict[str, Any]) -> str:
    """`TorchLSTMCell(...)` / `TorchSimpleRNNCell(...)`, its class written into model.py."""
    name, base, note, step = _TWO_BIAS_STEPS[node.op]
    em.helper(name, _TWO_BIAS_CELL.format(name=name, base=base, note=note, step=step))
    return call(name, **kwargs)


@register("ir->keras", "lstm", "gru", "simple_rnn")
def rnn_to_keras(node: Node, em: KerasEmitter) -> None:
    a = node.attrs
    kwargs: dict[str, Any] = {"units": a["units"]}  # the cell's arguments, then the layer's
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
    cls = _LAYER[node.op]
    # Keras 3 does not pass a wrapper's trainable=False (which em.layer writes) on to the layers it
    # wraps: a frozen node's cell (in layers.RNN) or inner layer (in Bidirectional) says it too
    frozen = {"trainable": False} if is_frozen(node) else {}
    if two_biases(node):  # layers.RNN(TorchLSTMCell(...), ...)
        kwargs = {"cell": Raw(two_bias_cell(node, em, {**kwargs, **frozen}))}
        cls = "layers.RNN"
    elif a["direction"] == "bidirectional":
        kwargs.update(frozen)
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
        inner = Raw(call(cls, **kwargs))
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
        layer = em.layer(node, cls, weights, **kwargs)
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
