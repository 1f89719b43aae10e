"""Hugging Face models passed to ktorch.convert as they come (no wrapper module): a
ModelOutput result is flattened with its field names (the Keras model returns a dict with
those keys, the manifest lists them), a decoder's default use_cache=True is switched off
for the capture only (and recorded), and a dict of example inputs is passed as keyword
arguments. Parity at the export's batch (2) and at batch 3."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXT = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
)


def convert(module, example, out):
    import ktorch
    from ktorch.verify.torch_source import check_torch_to_keras

    result = ktorch.convert(module, out, example_inputs=example, to="keras", force=True)
    assert result.parity is not None and result.parity.passed and result.parity.worst_rel <= 1e-4, result.parity
    # another batch, against the module itself (not the captured program)
    arrays = [np.concatenate([v, v[:1]]) for v in (example.values() if isinstance(example, dict) else example)]
    parity = check_torch_to_keras(module, out, inputs=arrays, manifest=result.manifest, keras_model=result.keras_model)
    assert parity.passed and parity.worst_rel <= 1e-4, parity
    # every learned table stays a trainable weight (position embeddings are not folded into
    # constants); a table the source ties to another (GPT-2's wte and lm_head) is one Keras weight
    source = sum(p.numel() for p in module.parameters())
    emitted = sum(int(np.prod(w.shape)) for w in result.keras_model.trainable_weights)
    assert emitted == source
    return result


def test_bert_with_keyword_inputs(tmp_path):
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**TEXT)).eval()
    ids = torch.randint(0, 99, (2, 8), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 8, dtype=torch.int64)
    result = convert(model, {"input_ids": ids, "attention_mask": mask}, tmp_path / "bert")
    assert [s["name"] for s in result.manifest["inputs"]] == ["input_ids", "attention_mask"]
    assert [s["name"] for s in result.manifest["outputs"]] == ["last_hidden_state", "pooler_output"]
    assert result.manifest["source"]["capture"]["kwargs"] == ["input_ids", "attention_mask"]
    out = result.keras_model([ids.numpy(), mask.numpy()])
    assert list(out) == ["last_hidden_state", "pooler_output"]
    expected = model(input_ids=ids, attention_mask=mask)
    np.testing.assert_allclose(np.asarray(out["pooler_output"]), expected.pooler_output.detach().numpy(), atol=1e-5)


def test_gpt2_with_use_cache_on(tmp_path):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    model = transformers.GPT2LMHeadModel(config).eval()
    assert model.config.use_cache
    ids = torch.randint(0, 99, (2, 8), generator=torch.Generator().manual_seed(1))
    result = convert(model, (ids,), tmp_path / "gpt2")
    assert model.config.use_cache  # restored after the capture
    assert result.manifest["source"]["capture"] == {"use_cache": False}
    assert [s["name"] for s in result.manifest["outputs"]] == ["logits"]


def test_vit_model_output(tmp_path):
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8
    )
    model = transformers.ViTModel(config).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    result = convert(model, (x,), tmp_path / "vit")
    assert [s["name"] for s in result.manifest["outputs"]] == ["last_hidden_state", "pooler_output"]
    assert "capture" not in result.manifest["source"]


def test_nested_outputs_are_flattened_with_their_names(tmp_path):
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**TEXT)).eval()
    model.config.output_hidden_states = True
    ids = torch.randint(0, 99, (2, 8), generator=torch.Generator().manual_seed(1))
    result = convert(model, (ids,), tmp_path / "bert_hidden")
    names = [s["name"] for s in result.manifest["outputs"]]
    assert names == ["last_hidden_state", "pooler_output", "hidden_states_0", "hidden_states_1", "hidden_states_2"]


def test_opt_linear_on_flattened_tokens(tmp_path):
    """OPT flattens the tokens to (B * N, C) before its feed-forward Linears."""
    torch.manual_seed(0)
    config = transformers.OPTConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=37,
        max_position_embeddings=64, word_embed_proj_dim=32,
    )  # fmt: skip
    ids = torch.randint(0, 99, (2, 8), generator=torch.Generator().manual_seed(1))
    convert(transformers.OPTModel(config).eval(), (ids,), tmp_path / "opt")


def test_clip_vision_class_embedding_stays_a_weight(tmp_path):
    """CLIP's 1-D class_embedding.expand(B, 1, -1), concatenated with the patches: one
    trainable weight repeated for every example, at any batch size."""
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8
    )
    model = transformers.CLIPVisionModel(config).eval()
    result = convert(model, (torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)),), tmp_path / "clip")
    code = (tmp_path / "clip" / "model.py").read_text()
    assert "per_example=True" in code
    weights = {w.path.split("/")[0]: w for w in result.keras_model.weights}
    token = [w for name, w in weights.items() if "class_embedding" in name]
    assert len(token) == 1 and token[0].trainable and tuple(token[0].shape) == (1, 1, 32)
