"""Hugging Face transformers, built from tiny configs with seeded random weights (nothing
is downloaded), exported with torch.export and converted to Keras at parity: BERT (encoder
and pooler), GPT-2 (causal LM, from a .pt2 file), DistilBERT, ViT. The emitted model is
made of Keras layers (Embedding, Dense, LayerNormalization, explicit attention), named
after the Hugging Face module paths."""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


class Outputs(torch.nn.Module):
    """A Hugging Face model returning plain tensors (export-friendly)."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...], **call_kwargs) -> None:
        super().__init__()
        self.model = model
        self.names = names
        self.call_kwargs = call_kwargs

    def forward(self, x):
        key = "pixel_values" if x.is_floating_point() else "input_ids"
        out = self.model(**{key: x}, **self.call_kwargs)
        return tuple(getattr(out, n) for n in self.names)


def convert(module, example: tuple, out, **kwargs):
    import ktorch

    result = ktorch.convert(module, out, example_inputs=example, to="keras", force=True, **kwargs)
    assert result.parity is not None and result.parity.passed, result.parity
    assert result.parity.worst_rel <= 1e-4
    print(f"parity {out.name}: worst relative error {result.parity.worst_rel:.2e}")
    return result


def build_source(result) -> str:
    """build()'s text on one line (the formatter's line breaks removed)."""
    code = (result.out / "model.py").read_text()
    code = re.sub(r"\s+", " ", code[code.index("def build") : code.index("\ndef load")])
    return re.sub(r"([(\[]) | ([)\]])", r"\1\2", code).replace(", )", ")")


def test_bert_encoder_and_pooler(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
    )
    model = Outputs(transformers.BertModel(config).eval(), ("last_hidden_state", "pooler_output"))
    path = tmp_path / "bert.pt2"
    program = torch.export.export(
        model,
        (torch.randint(0, 99, (2, 7)),),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    torch.export.save(program, str(path))
    result = convert(str(path), (), tmp_path / "bert")
    assert len(result.parity.outputs) == 2
    code = build_source(result)
    assert code.count("layers.LayerNormalization(") == 5 and "epsilon=1e-12" in code
    assert 'name="model_encoder_layer_1_attention_self_query"' in code and 'name="model_pooler_dense"' in code
    assert code.count("layers.Softmax(") == 2  # explicit attention, one per layer
    assert "layers.Embedding(input_dim=99, output_dim=32" in code
    # another batch size than the export's
    ids = np.random.default_rng(0).integers(0, 99, (3, 7)).astype("int64")
    with torch.no_grad():
        ref = model(torch.from_numpy(ids))[0].numpy()
    got = np.asarray(result.keras_model(ids, training=False)[0])
    assert np.max(np.abs(ref - got)) <= 1e-4 * max(1.0, np.max(np.abs(ref)))


def test_gpt2_causal_lm_from_pt2(tmp_path):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=16)
    model = Outputs(transformers.GPT2LMHeadModel(config).eval(), ("logits",), use_cache=False)
    ids = torch.randint(0, 99, (2, 7))
    path = tmp_path / "gpt2.pt2"
    torch.export.save(
        torch.export.export(model, (ids,), dynamic_shapes=({0: torch.export.Dim("batch")},)),
        str(path),
    )
    result = convert(str(path), (), tmp_path / "gpt2")
    code = build_source(result)
    assert 'name="model_transformer_h_0_attn_c_attn"' in code and "layers.Dense(units=96" in code  # HF Conv1D -> Dense
    # causal: changing a later token leaves the earlier logits alone, in both models
    a = np.random.default_rng(0).integers(0, 99, (3, 7)).astype("int64")  # another batch size than the export's
    b = a.copy()
    b[:, 5:] = (b[:, 5:] + 1) % 99
    la, lb = (np.asarray(result.keras_model(x, training=False)) for x in (a, b))
    np.testing.assert_allclose(la[:, :5], lb[:, :5], atol=1e-5)
    with torch.no_grad():
        ref = model(torch.from_numpy(a))[0].numpy()
    assert np.max(np.abs(ref - la)) <= 1e-4 * max(1.0, np.max(np.abs(ref)))
    assert np.max(np.abs(la[:, 5:] - lb[:, 5:])) > 1e-3


def test_distilbert(tmp_path):
    torch.manual_seed(1)
    config = transformers.DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37)
    model = Outputs(transformers.DistilBertModel(config).eval(), ("last_hidden_state",))
    result = convert(model, (torch.randint(0, 99, (2, 7)),), tmp_path / "distilbert")
    code = build_source(result)
    assert (
        'name="model_transformer_layer_1_attention_q_lin"' in code
        and 'name="model_transformer_layer_1_output_layer_norm"' in code
    )


def test_vit(tmp_path):
    torch.manual_seed(2)
    config = transformers.ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
    )
    model = Outputs(transformers.ViTModel(config).eval(), ("last_hidden_state", "pooler_output"))
    result = convert(model, (torch.randn(2, 3, 16, 16),), tmp_path / "vit")
    code = build_source(result)
    assert "layers.Conv2D(filters=32, kernel_size=4, strides=4" in code
    assert result.manifest["inputs"][0]["perm"] == [0, 2, 3, 1]  # channels-last images


class MaskedBert(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def test_bert_with_attention_mask(tmp_path):
    """Padding: the (batch, length) attention_mask input becomes the attention's mask."""
    torch.manual_seed(3)
    config = transformers.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
    )
    model = MaskedBert(transformers.BertModel(config).eval())
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 99, (3, 7)).astype("int64")
    mask = np.ones((3, 7), "int64")
    mask[0, 4:] = 0
    mask[2, 6:] = 0
    result = convert(
        model,
        (torch.from_numpy(ids), torch.from_numpy(mask)),
        tmp_path / "bert_mask",
        inputs=[ids, mask],
    )
    unmasked = np.asarray(result.keras_model([ids, np.ones_like(mask)], training=False))
    masked = np.asarray(result.keras_model([ids, mask], training=False))
    assert np.max(np.abs(masked[0, :4] - unmasked[0, :4])) > 1e-3  # the padding is not attended


class MaskedGpt2(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def test_gpt2_with_attention_mask(tmp_path):
    """Causal and padding masks together (the causal one a constant, ANDed with the input's)."""
    torch.manual_seed(4)
    config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=16)
    model = MaskedGpt2(transformers.GPT2LMHeadModel(config).eval())
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 99, (3, 7)).astype("int64")
    mask = np.ones((3, 7), "int64")
    mask[1, :2] = 0  # left padding
    result = convert(
        model,
        (torch.from_numpy(ids), torch.from_numpy(mask)),
        tmp_path / "gpt2_mask",
        inputs=[ids, mask],
    )
    assert "keras.ops.logical_and(" in build_source(result)
