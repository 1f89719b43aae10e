"""Whole sequence models, Keras -> PyTorch at parity: a masked text classifier
(Embedding(mask_zero) -> Bidirectional LSTM -> GRU -> Dense), a transformer block (token and
position embeddings, MultiHeadAttention, LayerNormalization, feed-forward, masked pooling)
and a video model (TimeDistributed(Conv2D) -> LSTM)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import forward_source, randomize_weights

T, VOCAB, D = 7, 20, 8


def _ids(seed: int, batch: int = 4) -> np.ndarray:
    """Token ids with right padding, a gap in the middle, and a row without padding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(batch, T)).astype("int32")
    ids[0, 4:] = 0
    ids[1, 2] = 0
    ids[2, -1] = 0
    return ids


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_text_classifier(keras, convert, fmt):
    L = keras.layers
    layers = [
        L.Embedding(VOCAB, D, mask_zero=True, name="embed"),
        L.Bidirectional(L.LSTM(6, return_sequences=True), name="bilstm"),
        L.GRU(5, name="gru"),
        L.Dense(3, activation="softmax", name="classes"),
    ]
    if fmt == "keras":
        ids = keras.Input((T,), dtype="int32", name="ids")
        y = ids
        for layer in layers:
            y = layer(y)
        model = keras.Model(ids, y, name="text_classifier")
    else:  # Sequential: Keras's legacy h5 cannot reload a functional model with an implicit mask
        model = keras.Sequential([keras.Input((T,), dtype="int32", name="ids"), *layers], name="text_classifier")
    randomize_weights(model)
    result = convert(model, fmt=fmt, inputs=[_ids(0)])
    assert result.parity.worst_rel <= 1e-4
    forward = forward_source(result)
    assert "permute(" not in forward and result.manifest["layout"]["transposes"] == 0
    assert "!= 0" in forward  # the padding mask is computed from the ids
    # random ids from the whole vocabulary: padding (0) anywhere
    result = convert(model, fmt=fmt, force=True)
    assert result.parity.worst_rel <= 1e-4


def test_text_classifier_without_mask_uses_torch_layers(keras, convert):
    """Without a mask, the same stack is nn.LSTM(bidirectional=True) and nn.GRU."""
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((T,), dtype="int32", name="ids"),
            L.Embedding(VOCAB, D, name="embed"),
            L.Bidirectional(L.LSTM(6, return_sequences=True), name="bilstm"),
            L.GRU(5, name="gru"),
            L.Dense(3, name="classes"),
        ],
        name="plain_text",
    )
    randomize_weights(model)
    result = convert(model)
    assert result.parity.worst_rel <= 1e-4
    code = (result.out / "model.py").read_text()
    assert "self.bilstm = nn.LSTM(8, 6, batch_first=True, bidirectional=True)" in code
    assert "self.gru = nn.GRU(12, 5, batch_first=True)" in code
    assert "KerasRNN" not in code
    forward = forward_source(result)
    assert "bilstm, _ = self.bilstm(embed)\n" in forward
    assert "gru = self.gru(bilstm)[0][:, -1]\n" in forward
    # Keras's gate order i, f, c, o is torch's; GRU's z, r, h becomes r, z, n; the single
    # Keras bias goes to bias_ih with a zero bias_hh
    from safetensors.numpy import load_file

    state = load_file(str(result.out / "model.safetensors"))
    assert {"bilstm.weight_ih_l0_reverse", "bilstm.bias_hh_l0", "gru.weight_hh_l0"} <= set(state)
    assert not state["bilstm.bias_hh_l0"].any()


def _transformer(keras, *, positions: bool, mask_zero: bool, causal: bool):
    L = keras.layers
    ids = keras.Input((T,), dtype="int32", name="ids")
    inputs = [ids]
    x = L.Embedding(VOCAB, D, mask_zero=mask_zero, name="token_embed")(ids)
    if positions:
        pos = keras.Input((T,), dtype="int32", name="positions")
        inputs.append(pos)
        # Keras: Add keeps a mask only if every input has one, so this drops the token mask
        x = L.Add(name="embed")([x, L.Embedding(T, D, name="position_embed")(pos)])
    attn = L.MultiHeadAttention(num_heads=2, key_dim=4, name="attention")(x, x, use_causal_mask=causal)
    x = L.LayerNormalization(epsilon=1e-6, name="norm1")(L.Add(name="residual1")([x, attn]))
    ffn = L.Dense(D, name="ffn_out")(L.Dense(16, activation="gelu", name="ffn_in")(x))
    x = L.LayerNormalization(epsilon=1e-6, name="norm2")(L.Add(name="residual2")([x, ffn]))
    pooled = L.GlobalAveragePooling1D(name="pool")(x)
    name = f"transformer_{positions}_{mask_zero}_{causal}"
    model = keras.Model(inputs, L.Dense(2, name="head")(pooled), name=name)
    randomize_weights(model, scale=0.3)
    return model


@pytest.mark.parametrize(
    "positions,mask_zero,causal",
    [(True, False, False), (True, False, True), (False, True, False), (False, True, True), (True, True, False)],
)
def test_transformer_block(keras, convert, positions, mask_zero, causal):
    """A transformer encoder block. Masks follow Keras exactly: the attention sees the
    padding mask of the token embedding unless an Add with the (unmasked) position
    embedding dropped it, and MultiHeadAttention takes the mask off its inputs."""
    model = _transformer(keras, positions=positions, mask_zero=mask_zero, causal=causal)
    inputs = [_ids(1)] + ([np.tile(np.arange(T, dtype="int32"), (4, 1))] if positions else [])
    result = convert(model, fmt="keras", inputs=inputs)
    assert result.parity.worst_rel <= 1e-4
    forward = forward_source(result)
    assert "permute(" not in forward and result.manifest["layout"]["transposes"] == 0
    assert "self.attention(" in forward
    assert ("query_mask=" in forward) == (mask_zero and not positions)
    assert ("causal=True" in forward) == causal


@pytest.mark.parametrize("reduce", ["Flatten", "GlobalAveragePooling2D"])
def test_time_distributed_conv_lstm(keras, convert, reduce):
    L = keras.layers
    frames = keras.Input((5, 9, 8, 3), name="frames")
    x = L.TimeDistributed(L.Conv2D(4, 3, strides=2, padding="same", activation="relu"), name="conv")(frames)
    x = L.TimeDistributed(L.MaxPooling2D(2), name="pool")(x)
    x = L.TimeDistributed(getattr(L, reduce)(), name="reduce")(x)
    x = L.LSTM(6, name="lstm")(x)
    model = keras.Model(frames, L.Dense(2, name="head")(x), name=f"video_{reduce}")
    randomize_weights(model)
    result = convert(model)
    assert result.parity.worst_rel <= 1e-4
    code = (result.out / "model.py").read_text()
    assert "nn.Conv2d(3, 4" in code and "nn.LSTM(" in code


def _tf_keras2_model(tf_keras, case: str):
    L = tf_keras.layers
    if case == "text":
        return tf_keras.Sequential(
            [
                tf_keras.Input((T,), dtype="int32"),
                L.Embedding(VOCAB, D, mask_zero=True),
                L.Bidirectional(L.LSTM(6, return_sequences=True)),
                L.GRU(5, reset_after=False),
                L.Dense(3),
            ]
        )
    if case == "mha":
        ids = tf_keras.Input((T,), dtype="int32")
        x = L.Embedding(VOCAB, D, mask_zero=True)(ids)
        x = L.MultiHeadAttention(2, 4)(x, x)
        return tf_keras.Model(ids, L.GlobalAveragePooling1D()(x))
    frames = tf_keras.Input((5, 6, 6, 2))
    x = L.TimeDistributed(L.Conv2D(3, 3))(frames)
    x = L.TimeDistributed(L.Flatten())(x)
    return tf_keras.Model(frames, L.SimpleRNN(4)(x))


@pytest.mark.parametrize("case", ["text", "mha", "video"])
def test_tf_keras2_files(tmp_path, case):
    """tf.keras 2 files (Keras 2 masks, GRU reset_after=False, its MultiHeadAttention and
    weight names), compared against tf_keras's own outputs."""
    tf_keras = pytest.importorskip("tf_keras")
    import ktorch
    from ktorch.verify.runners import import_emitted, run_torch

    model = _tf_keras2_model(tf_keras, case)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    model.save(tmp_path / "k2.h5")
    data = rng.standard_normal((3, 5, 6, 6, 2)).astype("float32") if case == "video" else _ids(3)
    expected = model(data).numpy()
    result = ktorch.convert(tmp_path / "k2.h5", tmp_path / "out", verify=False)
    got = run_torch(import_emitted(result.out).load(), [data])[0]
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
