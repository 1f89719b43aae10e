"""ONNX -> PyTorch / Keras for sequence models and the ops around them: LSTM / GRU as
torch.onnx.export writes nn.LSTM / nn.GRU, self-attention (nn.MultiheadAttention,
nn.TransformerEncoderLayer, a hand-written block), reflect / edge / symmetric padding;
each at parity with ONNX Runtime (see test_onnx.py for the helpers)."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_weights
from test_onnx import convert_both, keras_to_onnx, torch_to_onnx
from torch import nn
from torch.nn import functional as F

from ktorch import convert as convert_onnx
from ktorch.graph.errors import UnsupportedOpError

TARGETS = ["torch", pytest.param("keras", marks=pytest.mark.slow)]


class Recurrent(nn.Module):
    def __init__(self, cls, last_state: bool = False, **kwargs) -> None:
        super().__init__()
        self.rnn = cls(8, 6, batch_first=True, **kwargs)
        self.fc = nn.Linear(6 * (2 if kwargs.get("bidirectional") and not last_state else 1), 3)
        self.last_state = last_state

    def forward(self, x):
        y, state = self.rnn(x)
        if self.last_state:
            h = state[0] if isinstance(state, tuple) else state
            return self.fc(h[-1])
        return self.fc(y[:, -1])


RNNS = {
    "lstm-bidirectional-2-layers": lambda: Recurrent(nn.LSTM, bidirectional=True, num_layers=2),
    "gru": lambda: Recurrent(nn.GRU),
    "gru-2-layers-last-state": lambda: Recurrent(nn.GRU, last_state=True, num_layers=2),
    "lstm-bidirectional-last-state": lambda: Recurrent(nn.LSTM, last_state=True, bidirectional=True),
}


# the Keras target of the sequence-returning RNNs takes ~20 s each; the last-state cases cover Keras in the fast suite
RNN_CASES = [
    pytest.param(name, to, marks=pytest.mark.slow)
    if to == "keras" and name in ("lstm-bidirectional-2-layers", "gru")
    else (name, to)
    for name in RNNS
    for to in ("torch", "keras")
]


@pytest.mark.parametrize("name, to", RNN_CASES)
def test_torch_rnn(tmp_path, name, to):
    torch.manual_seed(1)
    onnx_path = torch_to_onnx(RNNS[name](), tmp_path / "rnn.onnx", (2, 5, 8))
    result = convert_both(onnx_path, tmp_path, targets=(to,))[to]
    assert result.manifest["layout"]["transposes"] == 0
    if to == "torch" and name == "lstm-bidirectional-2-layers":
        code = (result.out / "model.py").read_text()
        forward = code[code.index("    def forward(self") :]
        assert "nn.LSTM(8, 6, batch_first=True, bidirectional=True)" in code
        assert "nn.LSTM(12, 6, batch_first=True, bidirectional=True)" in code
        assert "permute" not in forward and "[:, -1]" in forward


def test_time_major_input_is_refused(tmp_path):
    """batch_first=False: the model's input is (time, batch, features), whose axis 0 the
    graph would take for the batch; the reader says so instead of converting it wrongly."""
    torch.manual_seed(2)
    onnx_path = torch_to_onnx(nn.GRU(4, 3).eval(), tmp_path / "time_major.onnx", (5, 2, 4))
    with pytest.raises(UnsupportedOpError, match="GRU"):
        convert_onnx(onnx_path, tmp_path / "out")


class SelfAttention(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.heads = heads

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=-1)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        a = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, t, c))


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            16, 4, 32, batch_first=True
        )  # called from a wrapper: the tracer fails on its is_causal default

    def forward(self, x):
        return self.layer(x)


@pytest.mark.parametrize("to", TARGETS)
@pytest.mark.parametrize(
    "factory",
    [Attention, Encoder, SelfAttention],
    ids=["multihead-attention", "transformer-encoder-layer", "self-attention-block"],
)
def test_torch_attention(tmp_path, factory, to):
    torch.manual_seed(3)
    onnx_path = torch_to_onnx(factory(), tmp_path / "attn.onnx", (2, 5, 16))
    result = convert_both(onnx_path, tmp_path, targets=(to,))[to]
    code = (result.out / "model.py").read_text()
    if factory is not SelfAttention:  # the module's op-by-op subgraph is one attention layer again
        assert result.manifest["layout"]["transposes"] == 0
        if to == "torch":
            assert "16, 16, 16, num_heads=4, key_dim=4, value_dim=4, output_dim=16" in code


class Padding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = F.pad(self.conv(x), (1, 2, 2, 1), mode="reflect")
        return self.head(F.pad(x, (2, 1, 0, 3), mode="replicate"))


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_torch_reflect_and_edge_pad(tmp_path, to):
    torch.manual_seed(4)
    onnx_path = torch_to_onnx(Padding(), tmp_path / "pad.onnx", (2, 3, 8, 8))
    result = convert_both(onnx_path, tmp_path, targets=(to,))[to]
    if to == "torch":
        assert 'F.pad(conv, (1, 2, 2, 1), mode="reflect")' in (result.out / "model.py").read_text()


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_tf2onnx_reflect_and_symmetric_pad(tmp_path, keras, to):
    import tensorflow as tf

    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = layers.Lambda(lambda t: tf.pad(t, [[0, 0], [1, 2], [2, 1], [0, 0]], mode="REFLECT"), name="refl")(x)
    x = layers.Lambda(lambda t: tf.pad(t, [[0, 0], [1, 1], [0, 2], [0, 0]], mode="SYMMETRIC"), name="sym")(x)
    outputs = layers.Conv2D(2, 1, name="head")(x)
    model = keras.Model(inputs, outputs)
    randomize_weights(model, seed=5)
    onnx_path = keras_to_onnx(model, tmp_path / "tf_pad.onnx")
    convert_both(onnx_path, tmp_path, targets=(to,))


def test_tf2onnx_keras_gru_loop_is_refused(tmp_path, keras):
    """tf2onnx writes a Keras GRU as an ONNX Loop (not a fused GRU): refused, naming it."""
    layers = keras.layers
    inputs = keras.Input((6, 4))
    outputs = layers.Dense(2, name="out")(layers.GRU(5, name="gru")(inputs))
    model = keras.Model(inputs, outputs)
    onnx_path = keras_to_onnx(model, tmp_path / "gru.onnx")
    with pytest.raises(UnsupportedOpError, match="Loop"):
        convert_onnx(onnx_path, tmp_path / "out")


@pytest.mark.parametrize("to", TARGETS)
def test_tf2onnx_keras_lstm(tmp_path, keras, to):
    """tf2onnx fuses a Keras LSTM into an ONNX LSTM with zeros Expand-ed to the batch size as
    its initial states and Slice + Squeeze for the last step: one LSTM, then x[:, -1]."""
    layers = keras.layers
    inputs = keras.Input((6, 4))
    outputs = layers.Dense(2, name="out")(layers.LSTM(5, name="lstm")(inputs))
    model = keras.Model(inputs, outputs)
    randomize_weights(model, seed=6, scale=0.5)
    onnx_path = keras_to_onnx(model, tmp_path / "lstm.onnx")
    result = convert_both(onnx_path, tmp_path, targets=(to,))[to]
    if to == "torch":
        code = (result.out / "model.py").read_text()
        assert "nn.LSTM(4, 5, batch_first=True)" in code and "[:, -1]" in code
