"""Keras recurrent layers -> PyTorch at parity: LSTM, GRU (reset_after both ways), SimpleRNN,
Bidirectional (every merge mode), return_sequences / return_state / go_backwards, initial
states as inputs, activation variants, masks from Embedding(mask_zero=True) and Masking
(masked steps anywhere in the sequence), stacked layers and TimeDistributed."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import forward_source, randomize_weights

T, F, U = 6, 3, 4  # time steps, features, units
VOCAB = 12


def seq_model(keras, layer, name: str, *, extra_inputs: int = 0):
    """A functional model: x (batch, T, F) [and initial states] -> layer."""
    x = keras.Input((T, F), name="x")
    states = [keras.Input((U,), name=f"s{i}") for i in range(extra_inputs)]
    out = layer(x, initial_state=states) if states else layer(x)
    model = keras.Model([x, *states] if states else x, out, name=name)
    randomize_weights(model)
    return model


def _layer(keras, cls: str, **kwargs):
    return getattr(keras.layers, cls)(U, name="rnn", **kwargs)


RNN_CASES = {
    "lstm_last": ("LSTM", {}),
    "lstm_seq": ("LSTM", dict(return_sequences=True)),
    "lstm_state": ("LSTM", dict(return_state=True)),
    "lstm_seq_state_back": ("LSTM", dict(return_sequences=True, return_state=True, go_backwards=True)),
    "lstm_back_last": ("LSTM", dict(go_backwards=True)),
    "lstm_nobias": ("LSTM", dict(use_bias=False, return_sequences=True)),
    "lstm_relu_hardsig": ("LSTM", dict(activation="relu", recurrent_activation="hard_sigmoid", return_sequences=True)),
    "lstm_linear": ("LSTM", dict(activation="linear", recurrent_activation="sigmoid", return_state=True)),
    "gru_last": ("GRU", {}),
    "gru_seq_back": ("GRU", dict(return_sequences=True, go_backwards=True)),
    "gru_state": ("GRU", dict(return_state=True, return_sequences=True)),
    "gru_nobias": ("GRU", dict(use_bias=False)),
    "gru_reset_before": ("GRU", dict(reset_after=False, return_sequences=True)),
    "gru_reset_before_state_back": ("GRU", dict(reset_after=False, return_state=True, go_backwards=True)),
    "gru_reset_before_nobias": ("GRU", dict(reset_after=False, use_bias=False)),
    "gru_hardsig_elu": ("GRU", dict(recurrent_activation="hard_sigmoid", activation="elu", return_sequences=True)),
    "rnn_last": ("SimpleRNN", {}),
    "rnn_seq_relu": ("SimpleRNN", dict(activation="relu", return_sequences=True)),
    "rnn_state_back": ("SimpleRNN", dict(return_state=True, go_backwards=True)),
    "rnn_sigmoid_nobias": ("SimpleRNN", dict(activation="sigmoid", use_bias=False, return_sequences=True)),
}


@pytest.mark.parametrize("case", list(RNN_CASES), ids=list(RNN_CASES))
def test_rnn_parity(keras, convert, case):
    cls, kwargs = RNN_CASES[case]
    result = convert(seq_model(keras, _layer(keras, cls, **kwargs), case))
    assert result.parity.worst_rel <= 1e-4
    assert result.manifest["layout"]["transposes"] == 0
    forward = forward_source(result)
    assert "permute(" not in forward
    native = {"LSTM": "nn.LSTM(", "GRU": "nn.GRU(", "SimpleRNN": "nn.RNN("}[cls]
    code = (result.out / "model.py").read_text()
    standard = (
        not any(k in kwargs for k in ("activation", "recurrent_activation"))
        or kwargs.get("activation") == "relu"
        and cls == "SimpleRNN"
    )
    if standard and kwargs.get("reset_after", True):
        assert native in code  # torch's own layer where its semantics are Keras's
    else:
        assert "KerasRNN(" in code


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_initial_state_inputs(keras, convert, cls, bidirectional):
    states = {"LSTM": 2, "GRU": 1, "SimpleRNN": 1}[cls] * (2 if bidirectional else 1)
    layer = _layer(keras, cls, return_sequences=True, return_state=True)
    if bidirectional:
        layer = keras.layers.Bidirectional(layer, name="bi")
    result = convert(seq_model(keras, layer, f"init_{cls}_{bidirectional}", extra_inputs=states))
    assert result.parity.worst_rel <= 1e-4
    assert len(result.manifest["inputs"]) == 1 + states


BIDI_CASES = {
    "concat_seq": ("LSTM", dict(merge_mode="concat"), dict(return_sequences=True)),
    "concat_last": ("LSTM", dict(merge_mode="concat"), {}),
    "sum_seq": ("GRU", dict(merge_mode="sum"), dict(return_sequences=True)),
    "ave_last": ("GRU", dict(merge_mode="ave"), {}),
    "mul_seq": ("SimpleRNN", dict(merge_mode="mul"), dict(return_sequences=True)),
    "none_seq": ("LSTM", dict(merge_mode=None), dict(return_sequences=True)),
    "none_last_state": ("GRU", dict(merge_mode=None), dict(return_state=True)),
    "concat_state": ("LSTM", {}, dict(return_sequences=True, return_state=True)),
    "gru_reset_before": ("GRU", {}, dict(reset_after=False, return_sequences=True)),
}


@pytest.mark.parametrize("case", list(BIDI_CASES), ids=list(BIDI_CASES))
def test_bidirectional_parity(keras, convert, case):
    cls, bi_kwargs, kwargs = BIDI_CASES[case]
    layer = keras.layers.Bidirectional(_layer(keras, cls, **kwargs), name="bi", **bi_kwargs)
    result = convert(seq_model(keras, layer, f"bi_{case}"))
    assert result.parity.worst_rel <= 1e-4
    assert "permute(" not in forward_source(result)
    if cls == "LSTM" and bi_kwargs.get("merge_mode", "concat") == "concat":
        assert "bidirectional=True" in (result.out / "model.py").read_text()


def _right_padded_ids(rng, batch: int = 3) -> np.ndarray:
    """Token ids with zeros (the padding id) at the end, in the middle and a full row."""
    ids = rng.integers(1, VOCAB, size=(batch, T)).astype("int32")
    ids[0, 4:] = 0
    ids[1, 1] = 0
    ids[1, 3] = 0
    return ids


MASK_CASES = {
    "lstm_last": lambda L: L.LSTM(U, name="rnn"),
    "lstm_seq": lambda L: L.LSTM(U, return_sequences=True, name="rnn"),
    "gru_seq_back_state": lambda L: L.GRU(U, return_sequences=True, go_backwards=True, return_state=True, name="rnn"),
    "gru_reset_before": lambda L: L.GRU(U, reset_after=False, name="rnn"),
    "rnn_seq": lambda L: L.SimpleRNN(U, return_sequences=True, name="rnn"),
    "bi_lstm_seq": lambda L: L.Bidirectional(L.LSTM(U, return_sequences=True), name="rnn"),
    "bi_gru_last_sum": lambda L: L.Bidirectional(L.GRU(U), merge_mode="sum", name="rnn"),
    "bi_lstm_state": lambda L: L.Bidirectional(L.LSTM(U, return_sequences=True, return_state=True), name="rnn"),
}


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("case", list(MASK_CASES), ids=list(MASK_CASES))
def test_embedding_mask(keras, convert, case, fmt):
    """Masked steps anywhere in the sequence are skipped exactly as Keras skips them (the
    masked positions of returned sequences are compared too)."""
    L = keras.layers
    layers = [L.Embedding(VOCAB, F, mask_zero=True, name="emb"), MASK_CASES[case](L)]
    if fmt == "keras":  # functional: Keras records the mask as an explicit not_equal
        ids = keras.Input((T,), dtype="int32", name="ids")
        model = keras.Model(ids, layers[1](layers[0](ids)), name=f"mask_{case}")
    else:  # Sequential: the mask flows implicitly (Keras cannot reload a functional h5 with not_equal)
        model = keras.Sequential([keras.Input((T,), dtype="int32", name="ids"), *layers], name=f"mask_{case}")
    randomize_weights(model)
    rng = np.random.default_rng(0)
    # padded rows, and rows drawn from the whole vocabulary (zeros anywhere)
    ids = np.concatenate([_right_padded_ids(rng), rng.integers(0, VOCAB, size=(3, T)).astype("int32")])
    result = convert(model, fmt=fmt, inputs=[ids])
    assert result.parity.worst_rel <= 1e-4
    assert result.manifest["inputs"][0]["range"] == [0, VOCAB]
    assert "KerasRNN(" in (result.out / "model.py").read_text()


def test_masking_layer(keras, convert):
    """Masking: a step whose features all equal mask_value is skipped, and zeroed in the output."""
    L = keras.layers
    x = keras.Input((T, F), name="x")
    masked = L.Masking(mask_value=0.0, name="masking")(x)
    seq = L.LSTM(U, return_sequences=True, name="lstm")(masked)
    model = keras.Model(x, [masked, seq, L.GRU(U, name="gru")(seq)], name="masking")
    randomize_weights(model)
    data = np.random.default_rng(3).standard_normal((3, T, F)).astype("float32")
    data[0, 2:4] = 0.0
    data[1, -1] = 0.0
    data[2, 0] = 0.0
    result = convert(model, fmt="keras", inputs=[data])
    assert result.parity.worst_rel <= 1e-4


def test_stacked_rnns_no_transposes(keras, convert):
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((T, F), name="x"),
            L.LSTM(U, return_sequences=True, name="lstm1"),
            L.GRU(U, return_sequences=True, name="gru2"),
            L.SimpleRNN(U, return_sequences=True, name="rnn3"),
            L.LSTM(U, name="lstm4"),
            L.Dense(2, name="head"),
        ],
        name="stacked",
    )
    randomize_weights(model)
    result = convert(model)
    assert result.parity.worst_rel <= 1e-4
    forward = forward_source(result)
    assert "permute(" not in forward and result.manifest["layout"]["transposes"] == 0
    assert "perm" not in result.manifest["inputs"][0]


@pytest.mark.parametrize("inner", ["Dense", "Conv1D"])
def test_time_distributed(keras, convert, inner):
    L = keras.layers
    if inner == "Dense":
        x = keras.Input((T, F), name="x")
        y = L.TimeDistributed(L.Dense(U, activation="relu"), name="td")(x)
    else:
        x = keras.Input((T, 7, F), name="x")
        y = L.TimeDistributed(L.Conv1D(U, 3), name="td")(x)
        y = L.TimeDistributed(L.Flatten(), name="flat")(y)
    model = keras.Model(x, L.LSTM(U, name="lstm")(y), name=f"td_{inner}")
    randomize_weights(model)
    result = convert(model)
    assert result.parity.worst_rel <= 1e-4


def test_keras2_file_semantics(tmp_path):
    """A tf.keras 2 file: GRU reset_after=False and the Keras 2 hard_sigmoid (0.2 x + 0.5)
    are what Keras 2 computes; compared against tf_keras's own outputs."""
    tf_keras = pytest.importorskip("tf_keras")
    import ktorch
    from ktorch.verify.runners import import_emitted, run_torch

    tf_keras.utils.set_random_seed(0)
    L = tf_keras.layers
    x = tf_keras.Input((T, F), name="x")
    y = L.GRU(U, reset_after=False, recurrent_activation="hard_sigmoid", return_sequences=True, name="gru")(x)
    y = L.Bidirectional(L.LSTM(U, recurrent_activation="hard_sigmoid"), name="bi")(y)
    model = tf_keras.Model(x, y, name="k2")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    src = tmp_path / "k2.h5"
    model.save(src)
    data = (3 * rng.standard_normal((2, T, F))).astype("float32")  # large enough to reach the clip
    expected = model(data).numpy()
    result = ktorch.convert(src, tmp_path / "out", verify=False)
    got = run_torch(import_emitted(result.out).load(), [data])[0]
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= 1e-4 * scale
    code = (result.out / "model.py").read_text()
    assert "keras2_hard_sigmoid" in code and "reset_after=False" in code


@pytest.mark.parametrize(
    "cls,bidirectional,explicit",
    [
        ("LSTM", False, True),
        ("GRU", False, True),
        ("LSTM", True, True),
        ("GRU", True, True),
        ("LSTM", False, False),
        ("GRU", True, False),
    ],
)
def test_mask_with_initial_state(keras, convert, cls, bidirectional, explicit):
    """With an explicit mask, a masked first step keeps the given initial state while its
    output is zeros (Keras starts the carried output at zero). Without one, Keras 3 does not
    hand an RNN called with initial_state= its input's implicit mask: no masking at all."""
    L = keras.layers
    n_states = (2 if cls == "LSTM" else 1) * (2 if bidirectional else 1)
    ids = keras.Input((T,), dtype="int32", name="ids")
    states = [keras.Input((U,), name=f"s{i}") for i in range(n_states)]
    layer = getattr(L, cls)(U, return_sequences=True, return_state=True, name="rnn")
    if bidirectional:
        layer = L.Bidirectional(layer, name="bi")
    embedded = L.Embedding(VOCAB, F, mask_zero=True, name="emb")(ids)
    kwargs = {"mask": keras.ops.not_equal(ids, 0)} if explicit else {}
    out = layer(embedded, initial_state=states, **kwargs)
    model = keras.Model([ids, *states], out, name=f"mask_init_{cls}_{bidirectional}_{explicit}")
    randomize_weights(model)
    rng = np.random.default_rng(7)
    token_ids = _right_padded_ids(rng)
    token_ids[2, 0] = 0  # the very first step masked
    data = [token_ids] + [rng.standard_normal((3, U)).astype("float32") for _ in states]
    result = convert(model, fmt="keras", inputs=data)
    assert result.parity.worst_rel <= 1e-4
    assert ("state=(" in forward_source(result)) == explicit


def test_errors_name_the_layer(keras, tmp_path):
    """A stateful RNN is refused with a message naming the layer and the way out."""
    import ktorch
    from ktorch.translate.keras_reader import KerasLayerError

    x = keras.Input((T, F), batch_size=2, name="x")
    model = keras.Model(x, keras.layers.LSTM(U, stateful=True, name="memory")(x), name="stateful")
    model.save(tmp_path / "stateful.keras")
    with pytest.raises(KerasLayerError, match=r"'memory' \(LSTM\).*stateful=False"):
        ktorch.convert(tmp_path / "stateful.keras", tmp_path / "out")


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell", "SimpleRNNCell"])
def test_generic_rnn_layer(keras, convert, cell):
    """keras.layers.RNN(cell) is the same layer as its LSTM / GRU / SimpleRNN."""
    layer = keras.layers.RNN(getattr(keras.layers, cell)(U), return_sequences=True, go_backwards=True, name="rnn")
    result = convert(seq_model(keras, layer, f"generic_{cell}"))
    assert result.parity.worst_rel <= 1e-4


CONV_LSTM_CASES = {
    "last_valid": {"filters": 3, "kernel_size": 3},
    "seq_same_back": {
        "filters": 3,
        "kernel_size": (3, 2),
        "padding": "same",
        "return_sequences": True,
        "go_backwards": True,
    },
    "state_strided": {"filters": 2, "kernel_size": 3, "strides": 2, "return_state": True},
    "hardsig_relu_nobias": {
        "filters": 2,
        "kernel_size": 2,
        "activation": "relu",
        "recurrent_activation": "hard_sigmoid",
        "use_bias": False,
        "return_sequences": True,
    },
}


@pytest.mark.parametrize("case", list(CONV_LSTM_CASES), ids=list(CONV_LSTM_CASES))
def test_conv_lstm2d(keras, convert, case):
    layer = keras.layers.ConvLSTM2D(name="convlstm", **CONV_LSTM_CASES[case])
    x = keras.Input((4, 7, 6, 2), name="frames")
    model = keras.Model(x, layer(x), name=f"convlstm_{case}")
    randomize_weights(model, scale=0.3)
    result = convert(model)
    assert result.parity.worst_rel <= 1e-4
    code = (result.out / "model.py").read_text()
    assert "ConvLSTMCell(" in code and "nn.Conv2d," in code


def test_dynamic_length_sequences(keras, convert):
    """Sequences of unknown length (Input((None,))): the emitted loops and layers take any length."""
    L = keras.layers
    ids = keras.Input((None,), dtype="int32", name="ids")
    y = L.Embedding(VOCAB, F, mask_zero=True, name="emb")(ids)
    y = L.Bidirectional(L.GRU(U, return_sequences=True), name="bigru")(y)
    model = keras.Model(ids, L.LSTM(U, name="lstm")(y), name="dynamic")
    randomize_weights(model)
    result = convert(model, fmt="keras")
    assert result.parity.worst_rel <= 1e-4
    assert result.manifest["inputs"][0]["shape"] == [None, None]
