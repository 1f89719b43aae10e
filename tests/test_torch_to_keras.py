"""PyTorch -> Keras at parity: hand-written modules that exercise each ATen family
(convolutions with PyTorch's padding rules, pooling with ceil_mode / count_include_pad,
normalisations with their epsilons and momentum, activations, functional tensor code with
several inputs and outputs), the emitted model's contract (dynamic batch, trainable,
saves as .keras, no transposes in a CNN), and the sources: nn.Module, .pt2, a
`module:factory` string, and the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running statistics and affine weights for every BatchNorm (seeded)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.randn(c, generator=g) * 0.5 + 1)
                m.bias.data.copy_(torch.randn(c, generator=g) * 0.5)
    return model


@pytest.fixture(autouse=True)
def seeded():
    """Every test builds its modules and example inputs from the same seed."""
    torch.manual_seed(0)


def convert(module: nn.Module, inputs: tuple, out: Path, **kwargs):
    """Convert with verification (raises ParityError above tolerance) and return the result."""
    import ktorch

    torch.manual_seed(0)
    module = randomize_bn(module.eval())
    result = ktorch.convert(module, out, example_inputs=inputs, to="keras", force=True, **kwargs)
    assert result.parity is not None and result.parity.passed, result.parity
    return result


def build_source(result) -> str:
    code = (result.out / "model.py").read_text()
    return code[code.index("def build") : code.index("\ndef load")]


# -- modules ----------------------------------------------------------------------------------
class Convs(nn.Module):
    """Padding Keras cannot say with "same", dilation, groups, depthwise x2, transposed convs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 5, stride=2, padding=(2, 1))
        self.bn = nn.BatchNorm2d(8, eps=1e-3, momentum=0.3)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False)
        self.grouped = nn.Conv2d(8, 12, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(12, 24, 3, stride=2, padding=1, groups=12)
        self.same = nn.Conv2d(24, 8, 4, padding="same")
        self.up = nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1, bias=False)
        self.mirror = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.mirror(F.pad(x, (1, 2, 0, 1), mode="reflect"))
        x = self.grouped(self.dilated(x))
        return self.up2(self.up(self.same(self.depthwise(x))))


class Conv1d3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 6, 3, stride=2, padding=2)
        self.bn1 = nn.BatchNorm1d(6)
        self.pool1 = nn.MaxPool1d(2, ceil_mode=True)
        self.c3 = nn.Conv3d(2, 4, 3, padding=1)
        self.t3 = nn.ConvTranspose3d(4, 2, 2, stride=2)

    def forward(self, seq, vol):
        return self.pool1(self.bn1(self.c1(seq))), self.t3(self.c3(vol))


class Pools(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.max_ceil = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.avg_incl = nn.AvgPool2d(3, stride=1, padding=1)
        self.avg_excl = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.avg_ceil = nn.AvgPool2d(2, ceil_mode=True)
        self.adaptive = nn.AdaptiveAvgPool2d((3, 2))
        self.adaptive_max = nn.AdaptiveMaxPool2d(2)

    def forward(self, x):
        a = self.max_ceil(x)
        return self.adaptive(self.avg_incl(a)), self.adaptive_max(self.avg_excl(x)), self.avg_ceil(x)


class Activations(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.acts = nn.ModuleList(
            [nn.GELU(), nn.GELU(approximate="tanh"), nn.Hardswish(), nn.Hardsigmoid(), nn.SiLU(), nn.LeakyReLU(0.2),
             nn.ELU(0.7), nn.ReLU6(), nn.PReLU(8), nn.Softplus(), nn.Mish(), nn.Sigmoid(), nn.Tanh(), nn.Hardtanh(-2.0, 2.0)]
        )  # fmt: skip

    def forward(self, x):
        x = self.conv(x) * 3.0
        outs = [act(x) for act in self.acts]
        outs += [torch.clamp(x, min=-1.0, max=0.5), x.clamp(min=0.1), torch.softmax(x, dim=1), F.log_softmax(x, dim=1)]
        return torch.cat(outs, dim=1)


class Functional(nn.Module):
    """Two inputs, three outputs: the functional code people write in forward()."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.shuffle = nn.PixelShuffle(2)
        self.proj = nn.Linear(6, 5)
        self.ln = nn.LayerNorm(5, eps=1e-3)

    def forward(self, image, feats):
        x = self.norm(self.conv(image))
        a, b = torch.chunk(x, 2, dim=1)
        y = torch.cat(
            [self.inorm(x)[:, 2:6], a * torch.cos(b), b[:, 1:3] / (a[:, :2].abs() + 1.0), 0.5 - torch.sin(x[:, 6:8])],
            dim=1,
        )
        up = F.interpolate(y, scale_factor=2, mode="nearest")
        lin = F.interpolate(y, size=(11, 7), mode="bilinear", align_corners=False)
        cor = F.interpolate(y, size=(9, 13), mode="bilinear", align_corners=True)
        cub = F.interpolate(y, scale_factor=1.5, mode="bicubic", align_corners=False)
        near = F.interpolate(y, size=(5, 12), mode="nearest") + F.interpolate(y, size=(5, 12), mode="nearest-exact")
        ps = self.shuffle(y)
        pooled = torch.cat(
            [
                up.mean(dim=(2, 3)),
                lin.amax(dim=(2, 3)),
                cor.sum(dim=(2, 3)) / 50.0,
                cub.mean(dim=(2, 3)),
                near.mean(dim=(2, 3)),
                ps.mean(dim=(2, 3)),
            ],
            dim=1,
        )
        s1, s2, s3 = torch.split(feats, [2, 3, 1], dim=2)
        z = torch.einsum("bsi,bsj->bij", s1, s2)
        t = feats.transpose(1, 2) @ feats
        seq = self.ln(self.proj(feats))
        q = seq.view(seq.size(0), -1, 5).permute(0, 2, 1).reshape(-1, 5 * feats.shape[1])
        r = torch.div(feats, 0.3, rounding_mode="floor") + torch.div(feats, 0.7, rounding_mode="trunc") + feats // 0.4
        tiled = (
            feats[:, :1].expand(-1, 3, -1).flatten(1)
            + feats[:, :3].repeat(1, 1, 1).flatten(1)
            + feats[:, 1:2].repeat(1, 3, 1).flatten(1)
        )
        stretched = F.interpolate(feats, size=10, mode="linear", align_corners=False).flatten(1)
        return pooled, torch.cat([z.flatten(1), t.flatten(1), q, s3.flatten(1), r[:, 0], tiled, stretched], dim=1), ps


class Tokens(nn.Module):
    """Integer ids, an embedding, a learned parameter used directly, select and slices."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.pos = nn.Parameter(torch.randn(1, 6, 8))
        self.fc = nn.Linear(8, 4)

    def forward(self, ids):
        x = self.embed(ids) + self.pos
        return self.fc(x[:, 0] + x[:, 1:].mean(1))


class Attention(nn.Module):
    """Self- and cross-attention with nn.MultiheadAttention, and F.scaled_dot_product_attention."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.self_attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))

    def forward(self, x, memory):
        h = self.norm(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        x = x + self.cross_attn(x, memory, memory, need_weights=False)[0]
        x = x + self.mlp(x)
        q, k, v = (x.unflatten(-1, (4, 4)).transpose(1, 2) for _ in range(3))
        return F.scaled_dot_product_attention(q, k * 0.5, v).flatten(2)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.head = nn.Linear(16 * 8 * 8, 5)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


def small_cnn() -> SmallCNN:
    """A factory for the `module:factory` source."""
    torch.manual_seed(0)
    return SmallCNN()


# -- parity per family ------------------------------------------------------------------------
def test_convolutions(tmp_path):
    result = convert(Convs(), (torch.randn(2, 3, 17, 15),), tmp_path / "convs")
    assert result.parity.worst_rel <= 1e-4
    code = build_source(result)
    assert "layers.ZeroPadding2D(padding=(2, 1)" in code  # PyTorch's (2, 1) padding, then a valid conv
    assert "layers.DepthwiseConv2D(" in code and "depth_multiplier=2" in code
    assert "groups=4" in code
    assert "dilation_rate=2" in code
    assert "layers.Conv2DTranspose(" in code and "layers.Cropping2D(" in code
    assert "momentum=0.7" in code and "epsilon=0.001" in code  # Keras momentum = 1 - torch momentum
    assert code.count('mode="reflect"') == 2
    assert "Permute" not in code and "transpose" not in code


class Replicate(nn.Module):
    """Replicate (edge) padding: nn.ReplicationPad2d and F.pad(mode="replicate"), 1-D too."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ReplicationPad2d((1, 2, 0, 3))
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = F.pad(self.conv(self.pad(x)), (2, 1, 1, 0), mode="replicate")
        return y, F.pad(y.mean(dim=2), (0, 2), mode="replicate")


def test_replicate_padding(tmp_path):
    result = convert(Replicate(), (torch.randn(2, 3, 8, 9),), tmp_path / "replicate")
    assert result.parity.worst_rel <= 1e-6  # copies of the edge: exact
    code = build_source(result)
    assert "keras.ops.concatenate(" in code
    assert code.count("layers.Permute(") == 1  # the (N, C, W) output: the image part has none


def test_conv1d_conv3d_two_inputs(tmp_path):
    result = convert(Conv1d3d(), (torch.randn(2, 4, 19), torch.randn(2, 2, 4, 5, 6)), tmp_path / "c13")
    assert result.parity.worst_rel <= 1e-4
    assert [s.get("perm") for s in result.manifest["inputs"]] == [[0, 2, 1], [0, 2, 3, 4, 1]]
    assert len(result.parity.outputs) == 2


def test_pooling(tmp_path):
    result = convert(Pools(), (torch.randn(2, 3, 13, 11),), tmp_path / "pools")
    assert result.parity.worst_rel <= 1e-4
    code = build_source(result)
    assert 'constant_values=float("-inf")' in code  # max pooling pads with -inf, as PyTorch does
    assert 'padding="same"' in code  # averages that exclude the padding
    assert "AdaptivePooling(" in code  # 13 -> 3 rows: unequal windows


def test_activations(tmp_path):
    result = convert(Activations(), (torch.randn(2, 3, 5, 5),), tmp_path / "acts")
    assert result.parity.worst_rel <= 1e-4
    code = build_source(result)
    assert 'activation="gelu"' in code and "approximate=True" in code
    assert 'activation="hard_silu"' in code and 'activation="hard_sigmoid"' in code
    assert "layers.PReLU(shared_axes=[1, 2]" in code
    assert result.manifest["layout"]["transposes"] == 0


@pytest.fixture(scope="module")
def functional_result(tmp_path_factory):
    torch.manual_seed(0)
    return convert(
        Functional(), (torch.randn(2, 4, 6, 8), torch.randn(2, 7, 6)), tmp_path_factory.mktemp("func") / "func"
    )


def test_functional_ops_multi_io(functional_result):
    result = functional_result
    assert result.parity.worst_rel <= 1e-4
    assert len(result.parity.outputs) == 3
    code = build_source(result)
    for expected in (
        "keras.ops.split(",
        "keras.ops.einsum(",
        "keras.ops.concatenate(",
        "keras.ops.floor_divide(",
        "keras.ops.trunc(",
        "keras.ops.tile(",
        "Interpolate(",
        "PixelShuffle(",
        "layers.UpSampling2D(",
        "layers.GroupNormalization(groups=8",
    ):
        assert expected in code, expected  # fmt: skip
    # feats.transpose(1, 2) @ feats is one einsum that reads feats as it is: no transpose
    assert code.count("keras.ops.einsum(") == 2 and "keras.ops.matmul(" not in code
    # the (N, 7, 6) sequence input has no channels: it keeps PyTorch's order
    assert "perm" not in result.manifest["inputs"][1]
    assert result.manifest["outputs"][2]["perm"] == [0, 2, 3, 1]


@pytest.fixture(scope="module")
def tokens_result(tmp_path_factory):
    torch.manual_seed(0)
    return convert(Tokens(), (torch.randint(0, 20, (2, 6)),), tmp_path_factory.mktemp("tokens") / "tokens")


def test_embedding_and_parameter(tokens_result):
    result = tokens_result
    assert result.parity.worst_rel <= 1e-4
    code = (result.out / "model.py").read_text()
    assert "class Parameter(layers.Layer)" in code and "def get_config" in code
    assert 'dtype="int64"' in code


def test_attention(tmp_path):
    result = convert(Attention(), (torch.randn(2, 5, 16), torch.randn(2, 7, 16)), tmp_path / "attn")
    assert result.parity.worst_rel <= 1e-4
    code = build_source(result)
    assert code.count("layers.MultiHeadAttention(") == 2
    assert "num_heads=4, key_dim=4" in code and "num_heads=2, key_dim=8" in code
    assert 'name="self_attn"' in code and 'name="cross_attn"' in code


class PatchEmbedding(nn.Module):
    """ViT's stem: patches by a strided conv, (N, C, H, W) -> (N, H * W, C) by flatten + transpose."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 16, 4, stride=4)
        self.norm = nn.LayerNorm(16)

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


def test_patch_embedding_needs_no_permute(tmp_path):
    """Held channels-last, the conv's output (N, H, W, C) reshapes straight to (N, H * W, C)."""
    result = convert(PatchEmbedding(), (torch.randn(2, 3, 16, 16),), tmp_path / "patches")
    assert result.parity.worst_rel <= 1e-4
    assert result.manifest["layout"]["transposes"] == 0
    assert "layers.Permute(" not in build_source(result)


class ShiftedWindows(nn.Module):
    """Two Swin blocks (the second shifted: roll, mask) and a patch merging: the windows are
    folded into the batch axis, (N, H, W, C) -> (N * windows, tokens, C)."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models.swin_transformer import (
            PatchMerging,
            SwinTransformerBlock,
        )

        self.stem = nn.Conv2d(3, 16, 4, stride=4)
        self.block = SwinTransformerBlock(16, 2, window_size=[4, 4], shift_size=[0, 0])
        self.shifted = SwinTransformerBlock(16, 2, window_size=[4, 4], shift_size=[2, 2])
        self.merge = PatchMerging(16)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        x = self.merge(self.shifted(self.block(x)))
        return self.head(x.mean(dim=(1, 2)))


def test_shifted_window_attention(tmp_path):
    pytest.importorskip("torchvision")
    module = ShiftedWindows().eval()
    result = convert(module, (torch.randn(2, 3, 24, 24),), tmp_path / "swin")
    assert result.parity.worst_rel <= 1e-4
    code = build_source(result)
    # 6 x 6 patches padded to 8 x 8: 4 windows of 16 tokens, on an axis after the batch
    assert "target_shape=(4, 16, 16)" in code and code.count("keras.ops.roll(") == 4
    for batch in (1, 3):  # the batch stays dynamic
        x = np.random.default_rng(batch).standard_normal((batch, 3, 24, 24)).astype("float32")
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        got = np.asarray(result.keras_model(x.transpose(0, 2, 3, 1)))
        assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))


def test_static_batch_only_for_a_fixed_batch_export():
    """A dynamic batch export has no static batch (int() of its symbolic size is the example's)."""
    from ktorch.translate.torch_reader import read_program

    module, x = nn.Linear(4, 3).eval(), torch.randn(2, 4)
    dynamic = torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert read_program(dynamic).meta["static_batch"] is None
    assert read_program(torch.export.export(module, (x,))).meta["static_batch"] == 2


def test_batch_merged_into_another_axis_is_held_apart():
    """A reshape (N, H, W, C) -> (N * windows, tokens, C) reads as (N, windows, tokens, C)."""
    from ktorch.translate.torch_reader.merged import batch_target
    from ktorch.translate.torch_reader.reader import BATCH, BatchExpr

    assert batch_target([BatchExpr("b * 9", 9), 49, 96], 21 * 21 * 96, None) == (9, (49, 96))
    assert batch_target([-1, 49, 96], 21 * 21 * 96, None) == (9, (49, 96))
    assert batch_target([BATCH, -1], 12, None) == (1, (12,))
    assert batch_target([18, 49, 96], 21 * 21 * 96, 2) == (9, (49, 96))  # a fixed batch of 2
    assert batch_target([7, 49, 96], 21 * 21 * 96, None) is None  # a number on a dynamic batch
    assert batch_target([BATCH, 5, 7], 36, None) is None


@pytest.mark.slow  # a fresh interpreter with Keras on torch: ~25 s
def test_emitted_code_runs_on_the_torch_backend(functional_result, tmp_path):
    """model.py uses keras.ops only: under KERAS_BACKEND=torch (custom layers included) it
    computes what it computes on TensorFlow."""
    rng = np.random.default_rng(0)
    image, feats = rng.standard_normal((2, 6, 8, 4)).astype("float32"), rng.standard_normal((2, 7, 6)).astype("float32")
    expected = [np.asarray(o) for o in functional_result.keras_model([image, feats], training=False)]
    np.savez(tmp_path / "inputs.npz", image=image, feats=feats)
    script = textwrap.dedent(
        f"""
        import os, sys
        os.environ["KERAS_BACKEND"] = "torch"
        sys.path.insert(0, {str(functional_result.out)!r})
        import numpy as np, keras, model
        assert keras.backend.backend() == "torch"
        data = np.load({str(tmp_path / "inputs.npz")!r})
        outs = model.load()([data["image"], data["feats"]], training=False)
        np.savez({str(tmp_path / "outputs.npz")!r}, *[keras.ops.convert_to_numpy(o) for o in outs])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got = np.load(tmp_path / "outputs.npz")
    for i, e in enumerate(expected):
        assert np.max(np.abs(got[f"arr_{i}"] - e)) <= 1e-4 * np.max(np.abs(e))


class IntegerIds(nn.Module):
    """Integer arithmetic stays integer: floor division and offsets on token ids."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 4)

    def forward(self, ids):
        return self.embed((ids + 3) // 2 + torch.div(ids, 2, rounding_mode="floor"))


def test_integer_arithmetic(tmp_path):
    result = convert(IntegerIds(), (torch.randint(0, 2, (2, 5)),), tmp_path / "ids")
    code = build_source(result)
    assert "ids + 3" in code and "keras.ops.floor_divide(add, 2)" in code  # int literals, not 3.0
    # ids beyond the verification's range: same lookups as PyTorch with the same table
    ids = np.array([[0, 1, 2, 3, 4], [7, 6, 5, 4, 3]])
    module = IntegerIds()
    module.load_state_dict({"embed.weight": torch.from_numpy(result.keras_model.get_layer("embed").get_weights()[0])})
    with torch.no_grad():
        expected = module(torch.from_numpy(ids)).numpy()
    np.testing.assert_array_equal(np.asarray(result.keras_model(ids)), expected)


# -- the emitted model's contract ------------------------------------------------------------
@pytest.fixture(scope="module")
def cnn_result(tmp_path_factory):
    torch.manual_seed(0)
    return convert(SmallCNN(), (torch.randn(2, 3, 32, 32),), tmp_path_factory.mktemp("cnn") / "cnn_keras")


def test_cnn_reads_as_written(cnn_result):
    code = (cnn_result.out / "model.py").read_text()
    imports = [line for line in code.splitlines() if line.startswith(("import ", "from "))]
    assert imports == [
        "from __future__ import annotations",
        "from pathlib import Path",
        "import keras",
        "from keras import layers",
    ]
    for name in ("features_0", "features_1", "features_2", "features_3", "head"):
        assert f'name="{name}"' in code
    assert "Permute" not in code and "transpose" not in code
    assert cnn_result.manifest["inputs"][0]["perm"] == [0, 2, 3, 1]
    assert cnn_result.manifest["inputs"][0]["layout"] == "NHWC"


def test_dynamic_batch(cnn_result):
    module = randomize_bn(small_cnn().eval())
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype("float32")
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        got = np.asarray(cnn_result.keras_model(x.transpose(0, 2, 3, 1), training=False))
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))


def test_trainable_and_saves_as_keras(cnn_result, tmp_path):
    import keras

    model = cnn_result.keras_model
    x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype("float32")
    before = np.asarray(model(x, training=False))
    assert len(model.trainable_weights) == 10  # 2 conv + 2 bn (gamma, beta) + dense, kernels and biases
    path = tmp_path / "cnn.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded(x, training=False)), before, rtol=0, atol=1e-6)
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(x, np.zeros((4, 5), "float32"), epochs=2, verbose=0)
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert not np.allclose(np.asarray(model(x, training=False)), before)  # the weights moved


def test_layout_keep(tmp_path):
    result = convert(SmallCNN(), (torch.randn(2, 3, 32, 32),), tmp_path / "keep", layout="keep")
    assert "perm" not in result.manifest["inputs"][0]
    code = build_source(result)
    assert "keras.Input(shape=(3, 32, 32)" in code
    assert result.manifest["layout"]["transposes"] == 1  # NCHW -> NHWC at the input, then channels-last inside


def test_custom_layers_save_and_reload(tokens_result, functional_result, tmp_path):
    """Custom layers (Parameter, Interpolate, PixelShuffle) serialise with get_config."""
    import keras

    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((2, 6, 8, 4)).astype("float32"), rng.standard_normal((2, 7, 6)).astype("float32")]
    functional_result.keras_model.save(tmp_path / "func.keras")
    reloaded = keras.models.load_model(tmp_path / "func.keras")
    for a, b in zip(reloaded(inputs), functional_result.keras_model(inputs)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    result = tokens_result
    ids = np.random.default_rng(0).integers(0, 20, (3, 6))
    path = tmp_path / "tok.keras"
    result.keras_model.save(path)
    np.testing.assert_allclose(
        np.asarray(keras.models.load_model(path)(ids)), np.asarray(result.keras_model(ids)), atol=1e-6
    )


# -- sources and errors ----------------------------------------------------------------------
def test_pt2_file_and_cli(tmp_path):
    module = randomize_bn(small_cnn().eval())
    program = torch.export.export(
        module, (torch.randn(2, 3, 32, 32),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    path = tmp_path / "cnn.pt2"
    torch.export.save(program, path)
    done = subprocess.run(
        [sys.executable, "-m", "ktorch.cli", "convert", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "cnn_keras"
    manifest = json.loads((out / "ktorch.json").read_text())
    assert manifest["direction"] == "torch->keras" and manifest["parity"]["passed"]
    assert manifest["parity"]["max_rel"] <= 1e-4
    assert {"model.py", "model.weights.h5", "ktorch.json"} <= {p.name for p in out.iterdir()}


def test_factory_string(tmp_path, monkeypatch):
    import ktorch

    (tmp_path / "userpkg.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def make():
                torch.manual_seed(0)
                return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import userpkg

    trained = userpkg.make()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    torch.save(trained.state_dict(), tmp_path / "trained.pt")
    result = ktorch.convert(
        "userpkg:make", tmp_path / "made", input_shapes=[[1, 3, 16, 16]], weights=tmp_path / "trained.pt"
    )
    assert result.parity.passed and result.parity.worst_rel <= 1e-4
    assert result.manifest["inputs"][0]["shape"] == [None, 3, 16, 16]
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype("float32")
    with torch.no_grad():
        expected = trained.eval()(torch.from_numpy(x)).numpy()
    got = np.asarray(result.keras_model(x.transpose(0, 2, 3, 1)))
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))  # the --weights, not the factory's


def test_unsupported_op_names_the_module(tmp_path):
    import ktorch
    from ktorch.graph.errors import UnsupportedOpError

    class Sorts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return torch.sort(self.conv(x), dim=1).values

    with pytest.raises(UnsupportedOpError, match=r"aten\.sort.*Sorts"):
        ktorch.convert(Sorts().eval(), tmp_path / "sorts", example_inputs=(torch.randn(2, 3, 4, 4),), to="keras")
    assert not (tmp_path / "sorts").exists()


def test_parity_error_over_tolerance(tmp_path):
    """A tolerance below float32 rounding fails the conversion, after writing the output."""
    import ktorch
    from ktorch.graph.errors import ParityError

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 3)).eval()
    with pytest.raises(ParityError, match="relative error"):
        ktorch.convert(
            module, tmp_path / "strict", example_inputs=(torch.randn(2, 3, 6, 6),), to="keras", tolerance=1e-30
        )
    manifest = json.loads((tmp_path / "strict" / "ktorch.json").read_text())
    assert manifest["parity"]["passed"] is False and manifest["parity"]["max_rel"] > 1e-30


def test_training_mode_batchnorm_is_refused(tmp_path):
    import ktorch
    from ktorch.graph.errors import UnsupportedOpError

    module = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    program = torch.export.export(module.train(), (torch.randn(2, 3, 4, 4),))
    with pytest.raises(UnsupportedOpError, match="model.eval"):
        ktorch.convert(program, tmp_path / "bn", to="keras")
