"""Keras attention layers -> PyTorch at parity: MultiHeadAttention (key_dim != value_dim,
output_shape, query/key/value of different lengths, masks from Embedding(mask_zero=True),
attention_mask, use_causal_mask), Attention / AdditiveAttention (score modes, scale,
masks), EinsumDense, and GlobalAveragePooling1D over a masked sequence."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import forward_source, randomize_weights

TQ, TV, D = 6, 5, 8
VOCAB = 10


def _ids(rng, batch: int = 3, length: int = TQ) -> np.ndarray:
    """Token ids with padding (0) at the end, in the middle, and one full row."""
    ids = rng.integers(1, VOCAB, size=(batch, length)).astype("int32")
    ids[0, -2:] = 0
    ids[1, 1] = 0
    return ids


def _model(keras, inputs, outputs, name):
    model = keras.Model(inputs, outputs, name=name)
    randomize_weights(model)
    return model


MHA_CASES = {
    "self": ({"num_heads": 2, "key_dim": 4}, {}),
    "key_ne_value_dim": ({"num_heads": 2, "key_dim": 3, "value_dim": 5}, {}),
    "output_shape": ({"num_heads": 3, "key_dim": 2, "output_shape": 7}, {}),
    "no_bias": ({"num_heads": 2, "key_dim": 4, "use_bias": False}, {}),
    "causal": ({"num_heads": 2, "key_dim": 4}, {"use_causal_mask": True}),
}


@pytest.mark.parametrize("case", list(MHA_CASES), ids=list(MHA_CASES))
def test_mha_self_attention(keras, convert, case):
    layer_kwargs, call_kwargs = MHA_CASES[case]
    x = keras.Input((TQ, D), name="x")
    y = keras.layers.MultiHeadAttention(name="mha", **layer_kwargs)(x, x, **call_kwargs)
    result = convert(_model(keras, x, y, f"mha_{case}"))
    assert result.parity.worst_rel <= 1e-4
    forward = forward_source(result)
    assert "permute(" not in forward and result.manifest["layout"]["transposes"] == 0
    assert "F.scaled_dot_product_attention" in (result.out / "model.py").read_text()


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_mha_cross_attention_different_lengths(keras, convert, fmt):
    """Query, key and value of different lengths and widths."""
    q = keras.Input((TQ, D), name="q")
    v = keras.Input((TV, 3), name="v")
    k = keras.Input((TV, 5), name="k")
    y = keras.layers.MultiHeadAttention(2, 4, value_dim=6, name="mha")(q, v, key=k)
    result = convert(_model(keras, [q, v, k], y, f"cross_{fmt}"), fmt=fmt)
    assert result.parity.worst_rel <= 1e-4


def test_mha_attention_mask_and_causal(keras, convert):
    """An explicit (batch, Tq, Tv) attention_mask ANDed with the causal mask, including
    query rows with nothing left to attend to (Keras then averages every value)."""
    q = keras.Input((TQ, D), name="q")
    v = keras.Input((TV, D), name="v")
    m = keras.Input((TQ, TV), dtype="bool", name="m")
    y = keras.layers.MultiHeadAttention(2, 4, name="mha")(q, v, attention_mask=m, use_causal_mask=True)
    model = _model(keras, [q, v, m], y, "mha_mask")
    rng = np.random.default_rng(1)
    mask = rng.random((3, TQ, TV)) > 0.3
    mask[0, 2] = False  # a fully masked row
    data = [rng.standard_normal((3, TQ, D)).astype("float32"), rng.standard_normal((3, TV, D)).astype("float32"), mask]
    result = convert(model, fmt="keras", inputs=data)
    assert result.parity.worst_rel <= 1e-4
    assert "causal=True" in forward_source(result)


@pytest.mark.parametrize("causal", [False, True])
def test_mha_embedding_masks(keras, convert, causal):
    """Query and value masks from Embedding(mask_zero=True), masked rows compared too."""
    L = keras.layers
    q_ids = keras.Input((TQ,), dtype="int32", name="q_ids")
    v_ids = keras.Input((TV,), dtype="int32", name="v_ids")
    q = L.Embedding(VOCAB, D, mask_zero=True, name="q_emb")(q_ids)
    v = L.Embedding(VOCAB, D, mask_zero=True, name="v_emb")(v_ids)
    y = L.MultiHeadAttention(2, 4, value_dim=3, name="mha")(q, v, use_causal_mask=causal)
    model = _model(keras, [q_ids, v_ids], y, f"mha_emb_{causal}")
    rng = np.random.default_rng(2)
    result = convert(model, fmt="keras", inputs=[_ids(rng), _ids(rng, length=TV)])
    assert result.parity.worst_rel <= 1e-4
    forward = forward_source(result)
    assert "query_mask=" in forward and "value_mask=" in forward


ATTENTION_CASES = {
    "dot": ("Attention", {}),
    "dot_scale": ("Attention", {"use_scale": True}),
    "concat_scale": ("Attention", {"use_scale": True, "score_mode": "concat"}),
    "concat": ("Attention", {"score_mode": "concat"}),
    "additive": ("AdditiveAttention", {}),
    "additive_noscale": ("AdditiveAttention", {"use_scale": False}),
}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", list(ATTENTION_CASES), ids=list(ATTENTION_CASES))
def test_attention_layers(keras, convert, case, causal):
    cls, kwargs = ATTENTION_CASES[case]
    q = keras.Input((TQ, D), name="q")
    v = keras.Input((TV, D), name="v")
    k = keras.Input((TV, D), name="k")
    y = getattr(keras.layers, cls)(name="att", **kwargs)([q, v, k], use_causal_mask=causal)
    # .keras: Keras cannot reload an Attention layer from .h5 (score_mode comes back as a function)
    result = convert(_model(keras, [q, v, k], y, f"att_{case}_{causal}"), fmt="keras")
    assert result.parity.worst_rel <= 1e-4


@pytest.mark.parametrize("cls", ["Attention", "AdditiveAttention"])
def test_attention_explicit_masks(keras, convert, cls):
    """mask=[query_mask, value_mask]: masked value steps are ignored, masked query steps are 0."""
    q = keras.Input((TQ, D), name="q")
    v = keras.Input((TV, D), name="v")
    qm = keras.Input((TQ,), dtype="bool", name="qm")
    vm = keras.Input((TV,), dtype="bool", name="vm")
    y = getattr(keras.layers, cls)(name="att")([q, v], mask=[qm, vm])
    model = _model(keras, [q, v, qm, vm], y, f"att_mask_{cls}")
    rng = np.random.default_rng(3)
    q_mask = rng.random((3, TQ)) > 0.3
    v_mask = rng.random((3, TV)) > 0.3
    v_mask[:, 0] = True  # Keras needs one visible value per row
    data = [
        rng.standard_normal((3, TQ, D)).astype("float32"),
        rng.standard_normal((3, TV, D)).astype("float32"),
        q_mask,
        v_mask,
    ]
    result = convert(model, fmt="keras", inputs=data)
    assert result.parity.worst_rel <= 1e-4


EINSUM_CASES = {
    "dense_like": ("abc,cd->abd", (None, 5), "d", (TQ, D)),
    "heads": ("abc,cde->abde", (None, 2, 3), "de", (TQ, D)),
    "no_bias_2d": ("ab,bc->ac", (4,), None, (D,)),
    "merge_heads": ("abcd,cde->abe", (None, 4), "e", (TQ, 2, 3)),
}


@pytest.mark.parametrize("case", list(EINSUM_CASES), ids=list(EINSUM_CASES))
def test_einsum_dense(keras, convert, case):
    equation, out_shape, bias_axes, in_shape = EINSUM_CASES[case]
    x = keras.Input(in_shape, name="x")
    y = keras.layers.EinsumDense(equation, output_shape=out_shape, bias_axes=bias_axes, activation="relu", name="ed")(x)
    result = convert(_model(keras, x, y, f"ed_{case}"))
    assert result.parity.worst_rel <= 1e-4
    assert "torch.einsum(" in forward_source(result)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_global_average_pooling_with_mask(keras, convert, fmt):
    """GlobalAveragePooling1D averages over the unmasked steps only."""
    L = keras.layers
    layers = [
        L.Embedding(VOCAB, D, mask_zero=True, name="emb"),
        L.Dense(4, name="dense"),
        L.GlobalAveragePooling1D(name="gap"),
    ]
    if fmt == "keras":
        ids = keras.Input((TQ,), dtype="int32", name="ids")
        y = ids
        for layer in layers:
            y = layer(y)
        model = _model(keras, ids, y, "gap_mask")
    else:
        model = keras.Sequential([keras.Input((TQ,), dtype="int32", name="ids"), *layers], name="gap_mask")
        randomize_weights(model)
    result = convert(model, fmt=fmt, inputs=[_ids(np.random.default_rng(4))])
    assert result.parity.worst_rel <= 1e-4
    assert "torch.where(" in forward_source(result)


@pytest.mark.parametrize("cls", ["Attention", "AdditiveAttention"])
def test_attention_embedding_masks(keras, convert, cls):
    """Masks that reach Attention implicitly, from Embedding(mask_zero=True) on both inputs."""
    L = keras.layers
    q_ids = keras.Input((TQ,), dtype="int32", name="q_ids")
    v_ids = keras.Input((TV,), dtype="int32", name="v_ids")
    q = L.Embedding(VOCAB, D, mask_zero=True, name="q_emb")(q_ids)
    v = L.Embedding(VOCAB, D, mask_zero=True, name="v_emb")(v_ids)
    y = getattr(L, cls)(name="att")([q, v])
    model = _model(keras, [q_ids, v_ids], y, f"att_emb_{cls}")
    rng = np.random.default_rng(5)
    result = convert(model, fmt="keras", inputs=[_ids(rng), _ids(rng, length=TV)])
    assert result.parity.worst_rel <= 1e-4
    assert "query_mask=" in forward_source(result)


@pytest.mark.parametrize("causal", [False, True])
def test_mha_return_attention_scores(keras, convert, causal):
    """return_attention_scores=True: the (batch, heads, Tq, Tv) weights as a second output."""
    L = keras.layers
    ids = keras.Input((TQ,), dtype="int32", name="ids")
    x = L.Embedding(VOCAB, D, mask_zero=True, name="emb")(ids)
    y, scores = L.MultiHeadAttention(2, 4, name="mha")(x, x, return_attention_scores=True, use_causal_mask=causal)
    model = _model(keras, ids, [y, scores], f"mha_scores_{causal}")
    result = convert(model, fmt="keras", inputs=[_ids(np.random.default_rng(6))])
    assert result.parity.worst_rel <= 1e-4
    assert result.manifest["outputs"][1]["shape"] == [None, 2, TQ, TQ]
    assert "return_scores=True" in forward_source(result)


def test_mha_with_dropout_masks_like_keras(keras, convert):
    """A layer trained with dropout takes Keras's explicit softmax even at inference: a
    padded query row attends to nothing (weights 0) instead of to every value."""
    L = keras.layers
    ids = keras.Input((TQ,), dtype="int32", name="ids")
    x = L.Embedding(VOCAB, D, mask_zero=True, name="emb")(ids)
    y = L.MultiHeadAttention(2, 4, dropout=0.1, name="mha")(x, x)
    model = _model(keras, ids, y, "mha_dropout")
    result = convert(model, fmt="keras", inputs=[_ids(np.random.default_rng(8))])
    assert result.parity.worst_rel <= 1e-4
    assert "zero_masked_rows=True" in (result.out / "model.py").read_text()


def test_padding_mask_input_is_checked_left_and_right_padded(keras, convert):
    """An input named like a padding mask is marked in the manifest, and seeded inputs for it
    are tokenizer-like: a left-padded row (whose first causal queries see no key at all), a
    right-padded row, each with a token. Causal attention must match there too."""
    from ktorch.verify.parity import check_keras_to_torch
    from ktorch.verify.runners import make_inputs

    ids = keras.Input((TQ,), dtype="int32", name="token_ids")
    padding = keras.Input((TQ,), dtype="int32", name="padding_mask")
    x = keras.layers.Embedding(VOCAB, D, name="embed")(ids)
    mask = keras.ops.cast(padding[:, None, :], "bool")
    y = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x, attention_mask=mask, use_causal_mask=True)
    result = convert(_model(keras, {"token_ids": ids, "padding_mask": padding}, y, "padded"), fmt="keras")
    specs = result.manifest["inputs"]
    assert [s["name"] for s in specs] == ["padding_mask", "token_ids"]
    assert specs[0].get("padding_mask") is True and "padding_mask" not in specs[1]
    arrays = make_inputs(specs, seed=5, batch=5)
    masks = arrays[0]
    assert masks.shape == (5, TQ) and masks.dtype == np.int32
    assert masks[0, 0] == 0 and masks[0, -1] == 1 and masks[1, 0] == 1 and masks[1, -1] == 0
    assert (masks.sum(axis=1) >= 1).all()
    assert all(np.all(np.diff(row) >= 0) or np.all(np.diff(row) <= 0) for row in masks)  # one run of tokens
    src = next(result.out.parent.glob("padded.keras"))
    again = check_keras_to_torch(src, result.out, inputs=arrays)
    assert again.passed, again
