"""PyTorch -> Keras with dynamic sizes: the batch is always dynamic (a model whose code
fixes it is refused, naming that code), and `dynamic=` keeps a sequence length or an image
size symbolic where the model allows any: the Keras Input says None there, ktorch.json says
which sizes are dynamic (and which requested ones the model fixes, and why), and the
verifier checks both sides at the export's size and at a second one."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn


def _inputs_line(out) -> list[str]:
    return [line.strip() for line in (out / "model.py").read_text().splitlines() if "keras.Input(" in line]


def _check_at(result, module, shapes, seed=3):
    """Parity of the emitted model with the module at other input shapes (source layout)."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype("float32") for s in shapes]
    expected = module(*[torch.from_numpy(a) for a in arrays]).detach().numpy()
    perms = [spec.get("perm") for spec in result.manifest["inputs"]]
    got = result.keras_model([a.transpose(p) if p else a for a, p in zip(arrays, perms)])
    got = np.asarray(got)
    scale = np.abs(expected).max()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() / scale <= 1e-4


def _randomise_bn(module):
    gen = torch.Generator().manual_seed(7)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return module


class FullyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(self.stem(x))
        x = x + self.block(x)
        return self.head(x.mean((2, 3)))


class FlattenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_fully_convolutional_net_takes_any_image_size(tmp_path):
    import ktorch

    torch.manual_seed(0)
    module = _randomise_bn(FullyConv()).eval()
    x = torch.randn(2, 3, 16, 16)
    result = ktorch.convert(module, tmp_path / "fcn", example_inputs=(x,), to="keras", dynamic="height,width")
    assert _inputs_line(tmp_path / "fcn") == ['x = keras.Input(shape=(None, None, 3), name="x")']
    spec = result.manifest["inputs"][0]
    assert spec["shape"] == [None, 3, None, None] and spec["dynamic"] == {"height": 2, "width": 3}
    sizes = result.manifest["source"]["dynamic"]
    assert set(sizes) == {"height", "width"} and sizes["height"]["example"] == 16
    # verified at the export's size and at a second one
    assert result.parity.passed and result.parity.worst_rel <= 1e-4
    assert [c.name for c in result.parity.outputs] == ["head", "head @ height=24, width=24"]
    assert result.parity.settings["sizes"] == [{"height": 16, "width": 16}, {"height": 24, "width": 24}]
    assert [c.shape for c in result.parity.outputs] == [(2, 5), (3, 5)]
    _check_at(result, module, [(3, 3, 40, 28)])  # not square, another batch


def test_auto_keeps_what_the_model_allows_and_says_what_it_fixes(tmp_path):
    import ktorch

    torch.manual_seed(0)
    module = FlattenNet().eval()
    x = torch.randn(2, 3, 16, 16)
    result = ktorch.convert(module, tmp_path / "flat", example_inputs=(x,), to="keras", dynamic="auto")
    # the Linear after Flatten needs 16 x 16 images: the sizes stay fixed, and ktorch.json says why
    assert _inputs_line(tmp_path / "flat") == ['x = keras.Input(shape=(16, 16, 3), name="x")']
    source = result.manifest["source"]
    assert "dynamic" not in source
    assert set(source["static"]) == {"height", "width"}  # 'auto' does not list seq: no input has it
    assert "fixed size" in source["static"]["height"]
    assert result.parity.passed
    # an explicit request that no input can take is said too
    result = ktorch.convert(module, tmp_path / "seq", example_inputs=(x,), to="keras", dynamic="seq", force=True)
    assert result.manifest["source"]["static"] == {"seq": "no input has this axis"}


def test_the_batch_is_always_dynamic(tmp_path):
    import ktorch

    module = nn.Sequential(nn.Linear(8, 3), nn.Tanh()).eval()
    # a batch of 1 in the example is repeated for the export: the Keras model takes any batch
    result = ktorch.convert(module, tmp_path / "b1", example_inputs=(torch.randn(1, 8),), to="keras")
    assert _inputs_line(tmp_path / "b1") == ['input_1 = keras.Input(shape=(8,), name="input_1")']
    assert "batch" not in result.manifest["source"]
    _check_at(result, module, [(5, 8)])


class PinnedByBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)
        self.register_buffer("offset", torch.randn(2, 4))

    def forward(self, x):
        return self.fc(x) + self.offset


class PinnedByView(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(x).view(2, 4) * 2


@pytest.mark.parametrize(
    "module, code",
    [(PinnedByBuffer, "return self.fc(x) + self.offset"), (PinnedByView, "return self.fc(x).view(2, 4) * 2")],
)
def test_a_model_that_fixes_its_batch_is_refused_naming_the_code(tmp_path, module, code):
    import ktorch
    from ktorch.errors import BatchPinnedError

    with pytest.raises(BatchPinnedError) as info:
        ktorch.convert(module().eval(), tmp_path / "out", example_inputs=(torch.randn(2, 8),), to="keras")
    message = str(info.value)
    assert f"fixes its batch size at `{code}`" in message and "in forward" in message
    assert not (tmp_path / "out").exists()


def test_a_fixed_batch_program_gives_a_fixed_batch_input(tmp_path):
    import ktorch

    program = torch.export.export(PinnedByView().eval(), (torch.randn(2, 8),))
    result = ktorch.convert(program, tmp_path / "fixed", to="keras")
    assert _inputs_line(tmp_path / "fixed") == ['x = keras.Input(shape=(8,), batch_size=2, name="x")']
    assert result.manifest["source"]["batch"] == 2 and result.parity.passed


def test_dynamic_names_are_checked():
    import ktorch
    from ktorch.errors import OptionError

    with pytest.raises(OptionError, match="seq, height, width"):
        ktorch.convert(nn.Linear(2, 2), "unused", example_inputs=(torch.randn(2, 2),), to="keras", dynamic="time")


@pytest.mark.slow
def test_timm_resnet_takes_any_image_size(tmp_path):
    timm = pytest.importorskip("timm")
    import ktorch

    torch.manual_seed(0)
    module = timm.models.resnet.ResNet(
        timm.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=0, stem_width=8, channels=(8, 16, 16, 16)
    )
    module = _randomise_bn(module).eval()
    x = torch.randn(2, 3, 64, 64)
    result = ktorch.convert(module, tmp_path / "resnet", example_inputs=(x,), to="keras", dynamic="height,width")
    assert _inputs_line(tmp_path / "resnet") == ['x = keras.Input(shape=(None, None, 3), name="x")']
    assert result.parity.passed and result.parity.worst_rel <= 1e-4 and len(result.parity.outputs) == 2
    _check_at(result, module, [(1, 3, 80, 96)])


# -- text: a dynamic sequence length, Hugging Face models passed as they come ------------------
transformers = pytest.importorskip("transformers")
TEXT = dict(vocab_size=99, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)


def _text_case(kind):
    torch.manual_seed(0)
    if kind == "bert":
        config = transformers.BertConfig(hidden_size=32, max_position_embeddings=64, type_vocab_size=2, **TEXT)
        return transformers.BertModel(config).eval(), True
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
        return transformers.GPT2LMHeadModel(config).eval(), False
    if kind == "opt":  # its feed-forward flattens the tokens into the batch: (B * N, C)
        config = transformers.OPTConfig(
            vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=37,
            max_position_embeddings=64, word_embed_proj_dim=32,
        )  # fmt: skip
        return transformers.OPTModel(config).eval(), False
    if kind == "t5":  # a relative-position bias looked up by buckets of (query, key) offsets
        config = transformers.T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
        return transformers.T5EncoderModel(config).eval(), False
    if kind == "clip_text":  # pooled at the argmax of the ids
        config = transformers.CLIPTextConfig(hidden_size=32, max_position_embeddings=64, **TEXT)
        return transformers.CLIPTextModel(config).eval(), False
    config = transformers.LlamaConfig(hidden_size=32, num_key_value_heads=2, max_position_embeddings=64, **TEXT)
    return transformers.LlamaModel(config).eval(), False


def _tokens(batch, length, seed):
    return torch.randint(0, 99, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "kind",
    ["bert", *(pytest.param(k, marks=pytest.mark.slow) for k in ("gpt2", "llama", "opt", "t5", "clip_text"))],
)
def test_text_model_takes_any_sequence_length(tmp_path, kind):
    import ktorch
    from ktorch.verify.torch_source import check_torch_to_keras

    model, with_mask = _text_case(kind)
    ids = _tokens(2, 8, 1)
    example = {"input_ids": ids, "attention_mask": torch.ones(2, 8, dtype=torch.int64)} if with_mask else (ids,)
    out = tmp_path / kind
    result = ktorch.convert(model, out, example_inputs=example, to="keras", dynamic="seq")
    lines = _inputs_line(out)
    assert lines[0] == 'input_ids = keras.Input(shape=(None,), dtype="int64", name="input_ids")'
    assert len(lines) == (2 if with_mask else 1)
    assert all(spec["dynamic"] == {"seq": 1} for spec in result.manifest["inputs"])
    seq = result.manifest["source"]["dynamic"]["seq"]
    assert seq["example"] == 8 and seq["max"] is not None and seq["max"] >= 12
    assert "static" not in result.manifest["source"]
    # verified at the export's length and at another one (and another batch)
    assert result.parity.passed and result.parity.worst_rel <= 1e-4
    assert result.parity.settings["sizes"] == [{"seq": 8}, {"seq": 12}]
    assert any(c.name.endswith("@ seq=12") and c.shape[:2] == (3, 12) for c in result.parity.outputs)
    # the position table stays a trainable weight, sliced at run time, not folded to a constant
    # (GPT-2's head tied to its token embeddings counts once, as in PyTorch)
    source = sum(p.numel() for p in model.parameters())
    assert sum(int(np.prod(w.shape)) for w in result.keras_model.trainable_weights) == source
    code = (out / "model.py").read_text()
    assert "SizeLike(" in code
    if kind == "t5":  # the bias table is read by an index cut to the length at run time
        assert "TableLookup(" in code and "relative_attention_bias" in code
    # a third length, against the module itself, with padding in the mask
    ids = _tokens(2, 5, 4)
    arrays = [ids.numpy()]
    if with_mask:
        mask = torch.ones(2, 5, dtype=torch.int64)
        mask[1, 3:] = 0
        arrays.append(mask.numpy())
    parity = check_torch_to_keras(model, out, inputs=arrays, manifest=result.manifest, keras_model=result.keras_model)
    assert parity.passed and parity.worst_rel <= 1e-4, parity


@pytest.mark.slow
def test_vit_with_a_fixed_position_table_stays_static(tmp_path):
    import ktorch

    torch.manual_seed(0)
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8
    )
    model = transformers.ViTModel(config).eval()
    x = torch.randn(2, 3, 32, 32)
    result = ktorch.convert(model, tmp_path / "vit", example_inputs=(x,), to="keras", dynamic="height,width")
    assert _inputs_line(tmp_path / "vit") == ['pixel_values = keras.Input(shape=(32, 32, 3), name="pixel_values")']
    assert set(result.manifest["source"]["static"]) == {"height", "width"}
    assert result.parity.passed


class Upsampling(nn.Module):
    """HRNet's fuse layers: a lower-resolution branch upsampled by an integer factor and added."""

    def __init__(self, mode: str, factor: float = 2) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.same = nn.Conv2d(3, 4, 1)
        self.up = nn.Upsample(scale_factor=factor, mode=mode)

    def forward(self, x):
        y = self.up(self.down(x))
        return y + self.same(x) if y.shape[2:] == x.shape[2:] else y


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear"])
def test_integer_upsampling_takes_any_image_size(mode, tmp_path):
    import ktorch

    torch.manual_seed(0)
    module = Upsampling(mode).eval()
    x = torch.randn(2, 3, 16, 16)
    result = ktorch.convert(module, tmp_path / "up", example_inputs=(x,), to="keras", dynamic="height,width")
    assert _inputs_line(tmp_path / "up") == ['x = keras.Input(shape=(None, None, 3), name="x")']
    assert "UpSampling2D(" in (tmp_path / "up" / "model.py").read_text()
    assert result.parity.passed and result.parity.worst_rel <= 1e-5
    x = np.random.default_rng(3).standard_normal((3, 3, 20, 12)).astype("float32")  # another size and batch
    expected = module(torch.from_numpy(x)).detach().numpy().transpose(result.manifest["outputs"][0]["perm"])
    got = np.asarray(result.keras_model(x.transpose(result.manifest["inputs"][0]["perm"])))
    assert got.shape == expected.shape == (3, 20, 12, 4)
    assert np.abs(got - expected).max() / np.abs(expected).max() <= 1e-5


def test_upsampling_by_a_fractional_factor_keeps_the_size_fixed_and_says_why(tmp_path):
    import ktorch

    torch.manual_seed(0)
    module = Upsampling("nearest", factor=1.5).eval()
    result = ktorch.convert(
        module, tmp_path / "frac", example_inputs=(torch.randn(2, 3, 16, 16),), to="keras", dynamic="auto"
    )
    assert _inputs_line(tmp_path / "frac") == ['x = keras.Input(shape=(16, 16, 3), name="x")']
    assert "scale factors [1.5, 1.5]" in result.manifest["source"]["static"]["height"]
    assert result.parity.passed


class PoolMixer(nn.Module):
    """PoolFormer's token mixer: AvgPool2d(3, 1, 1, count_include_pad=False) - x; `stride` 2
    pads depending on the size, which a dynamic size cannot take."""

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(3, stride, 1, count_include_pad=False)

    def forward(self, x):
        x = self.conv(x)
        y = self.pool(x)
        return y - x if y.shape == x.shape else y


def test_average_pooling_that_excludes_padding_takes_any_image_size(tmp_path):
    import ktorch

    torch.manual_seed(0)
    module = PoolMixer().eval()
    x = torch.randn(2, 3, 16, 16)
    result = ktorch.convert(module, tmp_path / "pool", example_inputs=(x,), to="keras", dynamic="height,width")
    assert _inputs_line(tmp_path / "pool") == ['x = keras.Input(shape=(None, None, 3), name="x")']
    assert 'padding="same"' in (tmp_path / "pool" / "model.py").read_text()
    assert result.parity.passed and result.parity.worst_rel <= 1e-5
    x = np.random.default_rng(3).standard_normal((3, 3, 9, 14)).astype("float32")  # odd sides: edge cells count
    expected = module(torch.from_numpy(x)).detach().numpy().transpose(result.manifest["outputs"][0]["perm"])
    got = np.asarray(result.keras_model(x.transpose(result.manifest["inputs"][0]["perm"])))
    assert got.shape == expected.shape and np.abs(got - expected).max() / np.abs(expected).max() <= 1e-5


def test_strided_average_pooling_that_excludes_padding_names_the_layer_on_a_dynamic_size(tmp_path):
    import ktorch
    from ktorch.graph.errors import UnsupportedOpError

    with pytest.raises(UnsupportedOpError) as err:
        ktorch.convert(
            PoolMixer(stride=2).eval(),
            tmp_path / "strided",
            example_inputs=(torch.randn(2, 3, 16, 16),),
            to="keras",
            dynamic="height,width",
        )
    assert "pool (AvgPool2d): average pooling over padding [(1, 1), (1, 1)] that excludes the padding" in str(err.value)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_ceil_mode_pooling_by_two_takes_any_image_size(mode, tmp_path):
    """ResNet-D's shortcut AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False): on odd
    sides the last window holds one cell, averaged over that one cell (TF's SAME)."""
    import ktorch

    pool = (
        nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
        if mode == "avg"
        else nn.MaxPool2d(2, 2, ceil_mode=True)
    )
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), pool).eval()
    result = ktorch.convert(
        module, tmp_path / mode, example_inputs=(torch.randn(2, 3, 16, 16),), to="keras", dynamic="height,width"
    )
    assert _inputs_line(tmp_path / mode) == ['input_1 = keras.Input(shape=(None, None, 3), name="input_1")']
    assert result.parity.passed and result.parity.worst_rel <= 1e-5
    x = np.random.default_rng(3).standard_normal((3, 3, 9, 14)).astype("float32")
    expected = module(torch.from_numpy(x)).detach().numpy().transpose(result.manifest["outputs"][0]["perm"])
    got = np.asarray(result.keras_model(x.transpose(result.manifest["inputs"][0]["perm"])))
    assert got.shape == expected.shape == (3, 5, 7, 4)
    assert np.abs(got - expected).max() / np.abs(expected).max() <= 1e-5
