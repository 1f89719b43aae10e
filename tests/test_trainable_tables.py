"""PyTorch -> Keras keeps every learned tensor trainable: a table read through a constant
index (a relative-position bias table gathered by its index buffer, a token-type row, T5's
bucketed bias) is a Keras weight picked at run time, not a constant folded at conversion
time, so the emitted model's trainable-parameter count equals the source's
(`sum(p.numel() for p in m.parameters() if p.requires_grad)`, recorded in ktorch.json) and
training reaches the table. Attention is written without permutes (einsum), and a
Hugging Face Bart (whose shift_tokens_right writes in place) converts as it comes. Parity
at the export's batch (2) and at batch 3."""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

TEXT = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
)
VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=10)


def randomize(model):
    """Seeded noise on every parameter (timm zero-initialises tables and layer scales)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def convert(module, example, out):
    """Convert with verification, check parity at batch 3 too, and the trainable counts."""
    import ktorch
    from ktorch.verify.torch_source import check_torch_to_keras

    result = ktorch.convert(module, out, example_inputs=example, to="keras", force=True)
    assert result.parity.passed and result.parity.worst_rel <= 1e-4, result.parity
    arrays = [np.concatenate([v, v[:1]]) for v in (example.values() if isinstance(example, dict) else example)]
    parity = check_torch_to_keras(module, out, inputs=arrays, manifest=result.manifest, keras_model=result.keras_model)
    assert parity.passed and parity.worst_rel <= 1e-4, parity
    counted = sum(int(np.prod(w.shape)) for w in result.keras_model.trainable_weights)
    manifest = result.manifest
    assert manifest["source"]["trainable_parameters"] == trainable(module)
    # a parameter that forward never reads (Wav2Vec2's masked_spec_embed, used in training
    # only) has no place in a functional model: it is named in ktorch.json instead
    unused = manifest["model"].get("unused_parameters", [])
    params = dict(module.named_parameters())
    assert (
        manifest["model"]["trainable_parameters"]
        == counted
        == trainable(module) - sum(params[n].numel() for n in unused)
    )
    assert "frozen_parameters" not in manifest["model"]
    return result


def transposes(result) -> int:
    code = (result.out / "model.py").read_text()
    return len(re.findall(r"layers\.Permute\(|ops\.transpose\(", code))


def ids(batch: int = 2, seq: int = 8):
    return torch.randint(0, 99, (batch, seq), generator=torch.Generator().manual_seed(1))


def image(size: int = 32):
    return (torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)),)


class WindowAttention(torch.nn.Module):
    """Swin's attention in miniature: a (2W-1)^2 x heads table gathered by an index buffer."""

    def __init__(self, dim: int = 16, heads: int = 2, window: int = 3) -> None:
        super().__init__()
        self.heads, self.n = heads, window * window
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.table = torch.nn.Parameter(torch.randn((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.type_rows = torch.nn.Embedding(2, dim)  # read at constant row 0, like BERT's token types
        self.register_buffer("types", torch.zeros(1, self.n, dtype=torch.long))

    def forward(self, x):
        b, n, c = x.shape
        x = x + self.type_rows(self.types)
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        attn = (q @ k.transpose(-2, -1)) * 0.5 + bias
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


def test_gathered_table_is_a_trainable_weight_with_the_sources_gradient(tmp_path):
    import tensorflow as tf

    torch.manual_seed(0)
    module = WindowAttention().eval()
    x = torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(2))
    result = convert(module, (x,), tmp_path / "window")
    model = result.keras_model
    code = (result.out / "model.py").read_text()
    assert "TableLookup(" in code and transposes(result) <= 1  # the qkv permute of the merged q, k, v
    table = next(w for w in model.trainable_weights if tuple(w.shape) == (25, 2))
    np.testing.assert_array_equal(np.asarray(table), module.table.detach().numpy())
    rows = next(w for w in model.trainable_weights if tuple(w.shape) == (2, 16))
    # the gradient of one loss reaches both tables, as in PyTorch
    weights = torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(3))
    (module(x) * weights).sum().backward()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x.numpy()) * weights.numpy())
    grad_table, grad_rows = tape.gradient(loss, [table, rows])
    grad_table, grad_rows = (np.asarray(tf.convert_to_tensor(g)) for g in (grad_table, grad_rows))
    assert np.abs(grad_table).max() > 1e-3
    np.testing.assert_allclose(grad_table, module.table.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad_rows, module.type_rows.weight.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_bert_attention_has_no_permutes(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = randomize(transformers.BertModel(transformers.BertConfig(**TEXT)))
    example = {"input_ids": ids(), "attention_mask": torch.ones(2, 8, dtype=torch.int64)}
    result = convert(model, example, tmp_path / "bert")
    code = (result.out / "model.py").read_text()
    assert transposes(result) == 0 and result.manifest["layout"]["transposes"] == 0
    assert code.count("keras.ops.einsum(") == 2 * TEXT["num_hidden_layers"]  # scores and context per layer


def test_vit_attention_permutes(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8
    )
    result = convert(randomize(transformers.ViTModel(config)), image(), tmp_path / "vit")
    assert transposes(result) == 0 and result.manifest["layout"]["transposes"] == 0


def _timm(name, size=32, **kwargs):
    def build():
        timm = pytest.importorskip("timm")
        torch.manual_seed(0)
        return randomize(timm.create_model(name, pretrained=False, **kwargs)), image(size)

    return build


def _keras_gradients(model, x, weights, variables):
    """The gradients of sum(model(x) * weights) with respect to `variables`, as arrays."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        out = model(x)
        out = out["logits"] if isinstance(out, dict) else out
        loss = tf.reduce_sum(out * weights)
    return [np.asarray(tf.convert_to_tensor(g)) for g in tape.gradient(loss, variables)]


def _one(model, shape):
    """The one trainable Keras weight of `shape`."""
    found = [w for w in model.trainable_weights if tuple(w.shape) == tuple(shape)]
    assert len(found) == 1, [w.path for w in found]
    return found[0]


def test_tied_lm_head_shares_one_embedding_table(tmp_path):
    """GPT-2's lm_head.weight is transformer.wte.weight: one Keras weight (a ReversibleEmbedding
    called again with reverse=True), that both uses train, as in PyTorch."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=1, n_head=4, n_positions=64)
    model = randomize(transformers.GPT2LMHeadModel(config))
    assert model.lm_head.weight is model.transformer.wte.weight
    x = ids()
    result = convert(model, (x,), tmp_path / "gpt2")
    code = (result.out / "model.py").read_text()
    assert "class ReversibleEmbedding(layers.Embedding)" in code and "(transformer_ln_f, reverse=True)" in code
    table = _one(result.keras_model, (99, 32))
    np.testing.assert_array_equal(np.asarray(table), model.transformer.wte.weight.detach().numpy())
    weights = torch.randn(2, 8, 99, generator=torch.Generator().manual_seed(3))
    (model(x).logits * weights).sum().backward()
    (grad,) = _keras_gradients(result.keras_model, x.numpy(), weights.numpy(), [table])
    expected = model.transformer.wte.weight.grad.numpy()
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)


class WeightNormed(torch.nn.Module):
    """weight_norm three ways: over all axes but the kernel's (Wav2Vec2's positional conv, grouped),
    the old hook on a Linear (dim 0), and over the whole tensor (dim=None)."""

    def __init__(self) -> None:
        super().__init__()
        weight_norm = torch.nn.utils.parametrizations.weight_norm
        self.conv = weight_norm(torch.nn.Conv1d(8, 8, 5, padding=2, groups=2), dim=2)
        with pytest.warns(FutureWarning):
            self.fc = torch.nn.utils.weight_norm(torch.nn.Linear(8, 6))
        self.head = weight_norm(torch.nn.Linear(6, 4, bias=False), dim=None)

    def forward(self, x):
        y = torch.relu(self.conv(x)).transpose(1, 2)
        return self.head(torch.tanh(self.fc(y)))


def test_weight_norm_keeps_g_and_v_trainable(tmp_path):
    torch.manual_seed(0)
    module = randomize(WeightNormed())
    x = torch.randn(2, 8, 11, generator=torch.Generator().manual_seed(2))
    result = convert(module, (x,), tmp_path / "wn")
    code = (result.out / "model.py").read_text()
    assert "Convolution(" in code and "keras.ops.sqrt(" in code
    model = result.keras_model
    pairs = {  # torch parameter -> the Keras weight's shape (g of dim=None broadcasts as (1, 1))
        "conv.parametrizations.weight.original0": (1, 1, 5),
        "conv.parametrizations.weight.original1": (8, 4, 5),
        "fc.weight_g": (6, 1),
        "fc.weight_v": (6, 8),
        "head.parametrizations.weight.original0": (1, 1),
        "head.parametrizations.weight.original1": (4, 6),
    }
    params = dict(module.named_parameters())
    variables = [_one(model, shape) for shape in pairs.values()]
    for name, v in zip(pairs, variables):
        np.testing.assert_array_equal(np.asarray(v).reshape(params[name].shape), params[name].detach().numpy())
    # the gradient reaches g and v, as in PyTorch
    weights = torch.randn(2, 11, 4, generator=torch.Generator().manual_seed(3))
    (module(x) * weights).sum().backward()
    grads = _keras_gradients(model, x.numpy().transpose(0, 2, 1), weights.numpy(), variables)
    for name, grad in zip(pairs, grads):
        expected = params[name].grad.numpy()
        assert np.abs(expected).max() > 1e-4, name
        np.testing.assert_allclose(grad.reshape(expected.shape), expected, rtol=1e-4, atol=1e-5, err_msg=name)


class GridPosition(torch.nn.Module):
    """EdgeNeXt's positional encoding in miniature: a conv applied to a grid the model builds
    from the input's sizes, so a conversion-time constant; its conv must stay trainable."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.proj = torch.nn.Conv2d(2, 8, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        ones = torch.ones(b, h, w)
        grid = torch.stack([ones.cumsum(1) / h, ones.cumsum(2) / w], dim=1)
        return self.body(x) + self.proj(grid.sin())


def test_conv_on_a_fixed_grid_stays_trainable(tmp_path):
    torch.manual_seed(0)
    module = randomize(GridPosition())
    x = torch.randn(2, 3, 6, 5, generator=torch.Generator().manual_seed(2))
    result = convert(module, (x,), tmp_path / "grid")
    model = result.keras_model
    kernel = _one(model, (1, 1, 2, 8))
    weights = torch.randn(2, 8, 6, 5, generator=torch.Generator().manual_seed(3))
    (module(x) * weights).sum().backward()
    (grad,) = _keras_gradients(model, x.numpy().transpose(0, 2, 3, 1), weights.numpy().transpose(0, 2, 3, 1), [kernel])
    expected = module.proj.weight.grad.numpy().transpose(2, 3, 1, 0)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)


class ZeroKeyBias(torch.nn.Module):
    """EVA's and BEiT's attention bias in miniature: q and v biases are parameters, the key's
    is a zero buffer, concatenated into the bias of one q/k/v projection."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = torch.nn.Parameter(torch.randn(dim))
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.v_bias = torch.nn.Parameter(torch.randn(dim))
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x):
        qkv_bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        q, k, v = torch.nn.functional.linear(x, self.qkv.weight, qkv_bias).chunk(3, dim=-1)
        return self.proj(q * torch.tanh(k) + v)


def test_concatenated_bias_keeps_its_zero_third_fixed(tmp_path):
    """The cat of parameters and a buffer is no batch-axis concatenation: it is computed in the
    Keras model, so q_bias and v_bias train and the key's zero third stays zero."""
    import keras

    torch.manual_seed(0)
    module = randomize(ZeroKeyBias())
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(2))
    result = convert(module, (x,), tmp_path / "qkv")  # parity at batch 2 and 3, trainable counts equal
    model = result.keras_model
    q_bias = next(w for w in model.trainable_weights if np.array_equal(np.asarray(w), module.q_bias.detach().numpy()))
    v_bias = next(w for w in model.trainable_weights if np.array_equal(np.asarray(w), module.v_bias.detach().numpy()))
    (k_bias,) = [w for w in model.non_trainable_weights if tuple(w.shape) == (16,)]
    assert not np.asarray(k_bias).any()
    # one training step: the gradient reaches q_bias and v_bias, as in PyTorch; the zero stays
    before = {id(w): np.asarray(w).copy() for w in (q_bias, v_bias)}
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.train_on_batch(x.numpy(), np.ones((2, 5, 16), np.float32))
    assert not np.asarray(k_bias).any()
    assert all(not np.array_equal(np.asarray(w), before[id(w)]) for w in (q_bias, v_bias))
    code = (result.out / "model.py").read_text()
    assert "keras.ops.concatenate([q_bias, k_bias, v_bias]" in code and "Dense(units=48, use_bias=False" in code


def _coatnet():
    timm = pytest.importorskip("timm")
    from timm.models.maxxvit import MaxxVit, MaxxVitCfg, MaxxVitTransformerCfg

    torch.manual_seed(0)
    cfg = MaxxVitCfg(
        embed_dim=(16, 32),
        depths=(1, 1),
        block_type=("C", "T"),
        stem_width=16,
        transformer_cfg=MaxxVitTransformerCfg(dim_head=8),
    )
    assert timm  # the models come from timm
    return randomize(MaxxVit(cfg, img_size=32, num_classes=10)), image()


def _hf(name):
    def build():
        transformers = pytest.importorskip("transformers")
        torch.manual_seed(0)
        if name == "bert":
            return randomize(transformers.BertModel(transformers.BertConfig(**TEXT))), (ids(),)
        if name == "gpt2":
            config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
            return randomize(transformers.GPT2Model(config)), (ids(),)
        if name == "t5":
            config = transformers.T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
            return randomize(transformers.T5EncoderModel(config)), (ids(),)
        if name == "whisper":
            config = transformers.WhisperConfig(
                vocab_size=99, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=8,
                max_source_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
            )  # fmt: skip
            features = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(1))
            return randomize(transformers.WhisperModel(config).get_encoder()), (features,)
        if name == "clip_text":
            config = transformers.CLIPTextConfig(**TEXT)
            return randomize(transformers.CLIPTextModel(config)), (ids(),)
        if name == "clip_vision":
            config = transformers.CLIPVisionConfig(
                hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32,
                patch_size=8,
            )  # fmt: skip
            return randomize(transformers.CLIPVisionModel(config)), image()
        if name == "gpt2_lm":
            config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
            return randomize(transformers.GPT2LMHeadModel(config)), (ids(),)
        if name == "wav2vec2":
            config = transformers.Wav2Vec2Config(
                hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37, conv_dim=(16, 16),
                conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
            )  # fmt: skip
            audio = torch.randn(2, 400, generator=torch.Generator().manual_seed(1))
            return randomize(transformers.Wav2Vec2Model(config)), (audio,)
        if name == "bart":
            config = transformers.BartConfig(
                vocab_size=99, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
            )  # fmt: skip
            return randomize(transformers.BartModel(config)), (ids(),)
        raise KeyError(name)

    return build


MODELS = {
    "timm_vit": _timm("vit_tiny_patch16_224", **VIT),
    "timm_deit": _timm("deit_tiny_distilled_patch16_224", **VIT),
    "timm_swin": _timm(
        "swin_tiny_patch4_window7_224",
        size=64,
        img_size=64,
        window_size=4,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(2, 4),
        num_classes=10,
    ),  # fmt: skip
    "timm_levit": _timm(
        "levit_128s",
        size=64,
        img_size=64,
        num_classes=10,
        embed_dim=(32, 48, 64),
        key_dim=8,
        num_heads=(2, 3, 4),
        depth=(1, 1, 1),
    ),  # fmt: skip
    "timm_edgenext": _timm(
        "edgenext_xx_small", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), heads=(2, 2, 2, 2), num_classes=10
    ),  # a conv on a fixed position grid
    "timm_coatnet": _coatnet,
    # q_bias, a zero k_bias buffer and v_bias concatenated into the qkv bias
    "timm_eva": _timm("eva02_tiny_patch14_224", **VIT),
    "timm_beit": _timm("beit_base_patch16_224", **VIT),
    **{
        f"hf_{n}": _hf(n)
        for n in ("bert", "gpt2", "gpt2_lm", "t5", "whisper", "wav2vec2", "clip_text", "clip_vision", "bart")
    },
}
QUICK = {"timm_swin", "hf_t5"}  # the rest run with -m slow


@pytest.mark.parametrize(
    "name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in MODELS], ids=list(MODELS)
)
def test_trainable_parameter_counts_equal_the_sources(name, tmp_path):
    module, example = MODELS[name]()
    convert(module, example, tmp_path / name)
