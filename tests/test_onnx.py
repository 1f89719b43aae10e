"""ONNX -> PyTorch / Keras: models exported by torch.onnx.export and tf2onnx convert, and
the emitted code computes what ONNX Runtime computes on the ONNX file (seeded inputs,
randomised weights and BatchNorm statistics)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_batchnorm, randomize_weights
from torch import nn
from torch.nn import functional as F

import ktorch
from ktorch import convert as convert_onnx
from ktorch.graph.errors import ModelFileError, UnsupportedOpError
from ktorch.onnx_io import export
from ktorch.verify.onnx_referee import run_onnx
from ktorch.verify.runners import import_emitted

TOL = 1e-4


def randomize_torch(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded random BatchNorm statistics and affine weights (the export folds them)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.randn(c, generator=gen) * 0.5 + 1.0)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.5)
    return model.eval()


def torch_to_onnx(model: nn.Module, path: Path, shape: tuple, *, opset: int = 17) -> Path:
    torch.manual_seed(0)
    x = torch.randn(*shape)
    torch.onnx.export(
        model.eval(), (x,), str(path), input_names=["input"], output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=opset, dynamo=False,
    )  # fmt: skip
    return path


def keras_to_onnx(model, path: Path, *, opset: int = 17) -> Path:
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    path.write_bytes(proto.SerializeToString())
    return path


def assert_matches_ort(result, onnx_path: Path, batch: int = 3) -> float:
    """Independently of the conversion's own check: run ONNX Runtime and the emitted model
    on a fresh batch (another size than the check's) and compare."""
    spec = result.manifest["inputs"][0]
    rng = np.random.default_rng(7)
    x = rng.standard_normal([batch, *spec["shape"][1:]]).astype("float32")
    (expected,) = run_onnx(onnx_path, [x])
    perm = spec.get("perm")
    emitted_in = x.transpose(perm) if perm else x
    if result.manifest["direction"] == "onnx->torch":
        model = import_emitted(result.out).load()
        with torch.no_grad():
            got = model(torch.from_numpy(np.ascontiguousarray(emitted_in))).numpy()
    else:
        got = np.asarray(
            result.keras_model(emitted_in)
            if result.keras_model is not None
            else import_emitted(result.out).load()(emitted_in)
        )
    out_perm = result.manifest["outputs"][0].get("perm")
    if out_perm:
        got = got.transpose(np.argsort(out_perm))
    rel = float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))
    assert rel <= TOL, rel
    return rel


def convert_both(onnx_path: Path, tmp_path: Path, targets=("torch", "keras")) -> dict:
    results = {}
    for to in targets:
        result = ktorch.convert(onnx_path, tmp_path / f"{onnx_path.stem}_{to}", to=to)
        assert result.parity is not None and result.parity.passed, result.parity
        assert result.parity.worst_rel <= TOL
        assert result.manifest["direction"] == f"onnx->{to}"
        assert_matches_ort(result, onnx_path)
        results[to] = result
    return results


# -- the done-when models -------------------------------------------------------------------------
# Each model converts to PyTorch in the fast suite and to Keras in the slow one (the Keras
# target builds and runs a second framework's model: half a minute per model on a busy CPU).
TARGETS = ["torch", pytest.param("keras", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_models")


@pytest.fixture(scope="module")
def resnet18_onnx(onnx_dir):
    import torchvision

    torch.manual_seed(0)
    model = randomize_torch(torchvision.models.resnet18(weights=None, num_classes=10))
    return torch_to_onnx(model, onnx_dir / "resnet18.onnx", (2, 3, 32, 32))


@pytest.fixture(scope="module")
def mobilenet_v3_small_onnx(onnx_dir):
    import torchvision

    torch.manual_seed(1)
    model = randomize_torch(torchvision.models.mobilenet_v3_small(weights=None, num_classes=10), seed=1)
    return torch_to_onnx(model, onnx_dir / "mobilenet_v3_small.onnx", (2, 3, 32, 32))


@pytest.fixture(scope="module")
def mobilenet_v2_onnx(onnx_dir):
    import keras

    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)
    randomize_weights(model, seed=2, scale=0.2)
    randomize_batchnorm(model, seed=2)
    return keras_to_onnx(model, onnx_dir / "mobilenet_v2.onnx")


@pytest.mark.parametrize("to", TARGETS)
def test_resnet18(resnet18_onnx, tmp_path, to):
    result = convert_both(resnet18_onnx, tmp_path, targets=(to,))[to]
    assert result.manifest["layout"]["transposes"] == 0
    if to == "keras":
        assert result.manifest["inputs"][0]["perm"] == [0, 2, 3, 1]  # Keras takes NHWC
        return
    code = (result.out / "model.py").read_text()
    # readable: module names recovered from the exporter's node names, no transposes
    assert "self.layer1_0_conv1 = nn.Conv2d(64, 64, kernel_size=3, padding=1)" in code
    assert "self.fc = nn.Linear(512, 10)" in code
    assert "layer1_0_add = layer1_0_conv2.add_(maxpool)" in code  # in place, as torchvision writes `out += identity`
    assert "permute" not in code and "import ktorch" not in code
    assert "perm" not in result.manifest["inputs"][0]


@pytest.mark.parametrize("to", TARGETS)
def test_mobilenet_v3_small(mobilenet_v3_small_onnx, tmp_path, to):
    result = convert_both(mobilenet_v3_small_onnx, tmp_path, targets=(to,))[to]
    code = (result.out / "model.py").read_text()
    if to == "torch":
        assert "F.hardsigmoid(" in code and "F.hardswish(" in code  # PyTorch's own constants, not a clamp
        assert "groups=16" in code


@pytest.mark.parametrize("to", TARGETS)
def test_keras_mobilenet_v2_through_tf2onnx(mobilenet_v2_onnx, tmp_path, to):
    result = convert_both(mobilenet_v2_onnx, tmp_path, targets=(to,))[to]
    # the NHWC -> NCHW transpose tf2onnx puts after the input is gone in both directions
    assert result.manifest["layout"]["transposes"] == 0
    if to == "keras":
        assert "perm" not in result.manifest["inputs"][0]  # Keras keeps NHWC
        return
    assert result.manifest["inputs"][0]["perm"] == [0, 3, 1, 2]  # PyTorch takes NCHW
    code = (result.out / "model.py").read_text()
    # Keras layer names survive tf2onnx; the BatchNorm after each depthwise conv is folded into it
    assert "self.block_1_depthwise = nn.Conv2d(48, 48, kernel_size=3, stride=2, groups=48)" in code
    assert "block_1_pad = F.pad(" in code and "F.relu6(" in code
    assert "_bn" not in code


# -- op families -------------------------------------------------------------------------------------
class Pooling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.avg_ceil = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.avg_incl = nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=True)
        self.max_ceil = nn.MaxPool2d(3, stride=2, ceil_mode=True)

    def forward(self, x):
        x = self.conv(x)
        return self.max_ceil(self.avg_incl(self.avg_ceil(x))).mean(dim=(2, 3))


class Resizing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.conv(x)
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        smooth = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = torch.cat([up, smooth], dim=1)
        x = F.pad(x, (1, 2, 0, 1))
        return self.head(x)


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.prelu = nn.PReLU(6)
        self.deconv = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(16 * 16 * 4, 5)

    def forward(self, x):
        x = self.prelu(self.bn(self.conv(x)))
        x = torch.clamp(x, -1.5, 2.0) * 0.5 + 0.25
        x = F.gelu(F.leaky_relu(self.deconv(x), 0.1))
        x = torch.sigmoid(x) * torch.tanh(x) - F.elu(x) / 2.0 + torch.sin(3.0 * x) * torch.cos(x)
        x = self.norm(x.permute(0, 2, 3, 1))  # channels last for the LayerNorm
        x = x.reshape(x.shape[0], -1)
        return F.softmax(self.fc(x), dim=-1)


@pytest.mark.parametrize(
    "factory, shape, opset",
    [
        (Pooling, (2, 3, 15, 15), 17),
        (Resizing, (2, 3, 8, 8), 17),
        (Mixed, (2, 3, 16, 16), 17),
        (Mixed, (2, 3, 16, 16), 13),
    ],
    ids=["pooling", "resize-pad-concat", "mixed-opset17", "mixed-opset13"],
)
def test_op_families_to_torch(tmp_path, factory, shape, opset):
    torch.manual_seed(3)
    model = randomize_torch(factory(), seed=3)
    onnx_path = torch_to_onnx(model, tmp_path / f"{factory.__name__.lower()}.onnx", shape, opset=opset)
    convert_both(onnx_path, tmp_path, targets=("torch",))


def test_small_keras_cnn_to_both(tmp_path, keras):
    layers = keras.layers
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.Activation("swish", name="dw_act")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(4, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name="small_cnn")
    randomize_weights(model, seed=4, scale=0.3)
    randomize_batchnorm(model, seed=4)
    onnx_path = keras_to_onnx(model, tmp_path / "small_cnn.onnx")
    results = convert_both(onnx_path, tmp_path)
    code = (results["torch"].out / "model.py").read_text()
    assert "self.stem = nn.Conv2d(3, 8, kernel_size=3, padding=1)" in code
    assert "self.head = nn.Linear(512, 4)" in code  # MatMul + Add read back as one Linear
    assert "F.silu(dw)" in code  # tf2onnx's x * sigmoid(x) read back as swish


class ActBatchNorm(nn.Module):
    """A BatchNorm after an activation: the ONNX export cannot fold it into the convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(torch.relu(self.conv(x)))


def test_onnx_batch_norm_keeps_the_spec_variance_update(tmp_path):
    """ONNX's training-mode BatchNormalization updates running_var with the biased (population)
    batch variance, as Keras does and PyTorch does not: the Keras output is a stock
    BatchNormalization, the PyTorch output the biased-update module."""
    model = randomize_torch(ActBatchNorm(), seed=5)
    onnx_path = torch_to_onnx(model, tmp_path / "act_bn.onnx", (2, 3, 8, 8))
    results = convert_both(onnx_path, tmp_path)
    keras_code = (results["keras"].out / "model.py").read_text()
    assert "layers.BatchNormalization(" in keras_code and "TorchBatchNormalization" not in keras_code
    assert "class KerasBatchNorm2d(nn.BatchNorm2d)" in (results["torch"].out / "model.py").read_text()


# -- names, errors, API and CLI ---------------------------------------------------------------------
def test_layout_keep_takes_the_onnx_input_order(tmp_path, keras):
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    outputs = layers.GlobalAveragePooling2D(name="gap")(layers.Conv2D(4, 3, name="conv")(inputs))
    model = keras.Model(inputs, outputs)
    randomize_weights(model, seed=5)
    onnx_path = keras_to_onnx(model, tmp_path / "nhwc.onnx")
    result = convert_onnx(onnx_path, tmp_path / "keep", to="torch", layout="keep")
    assert "perm" not in result.manifest["inputs"][0]
    assert result.manifest["layout"]["transposes"] == 1  # the model's own NHWC -> NCHW stays
    assert result.parity.passed


def test_unsupported_op_names_node_and_op(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Einsum", ["x", "x"], ["y"], name="my_einsum", equation="bij,bjk->bik")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 3])],
    )
    path = tmp_path / "einsum.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(UnsupportedOpError) as info:
        convert_onnx(path, tmp_path / "out")
    assert "my_einsum (Einsum)" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_bad_file_is_a_model_file_error(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelFileError, match="broken.onnx"):
        ktorch.convert(path, tmp_path / "out", to="torch")


def test_cli_convert_onnx(tmp_path):
    from ktorch.cli import main

    torch.manual_seed(6)
    onnx_path = torch_to_onnx(randomize_torch(Pooling(), seed=6), tmp_path / "pool.onnx", (2, 3, 15, 15))
    assert main(["convert", str(onnx_path), "--to", "torch", "-o", str(tmp_path / "pool_torch")]) == 0
    code = (tmp_path / "pool_torch" / "model.py").read_text()
    assert re.search(r"self\.conv = nn\.Conv2d\(3, 8, kernel_size=3, padding=1\)", code)
    # ktorch verify re-checks against ONNX Runtime, and fails on a planted mismatch
    assert main(["verify", str(onnx_path), str(tmp_path / "pool_torch"), "--batch", "1,3", "--quiet"]) == 0
    from safetensors.numpy import load_file, save_file

    weights = tmp_path / "pool_torch" / "model.safetensors"
    state = load_file(str(weights))
    state["conv.bias"] = state["conv.bias"] + np.float32(0.5)
    save_file(state, str(weights))
    assert main(["verify", str(onnx_path), str(tmp_path / "pool_torch"), "--quiet"]) == 1


def test_export_keras_and_pytorch(tmp_path, keras):
    layers = keras.layers
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="conv")(inputs)
    outputs = layers.Dense(3, name="dense")(layers.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inputs, outputs)
    randomize_weights(model, seed=8)
    src = tmp_path / "tiny.keras"
    model.save(src)
    keras_export = export(src, tmp_path / "tiny.onnx")
    assert keras_export.exporter.startswith("tf2onnx") and keras_export.parity.passed
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 12, 12, 3)).astype("float32")
    (onnx_out,) = run_onnx(tmp_path / "tiny.onnx", [x])  # a batch the export never saw
    np.testing.assert_allclose(onnx_out, np.asarray(model(x)), rtol=1e-4, atol=1e-5)

    torch.manual_seed(9)
    program = torch.export.export(randomize_torch(Pooling(), seed=9), (torch.randn(2, 3, 15, 15),))
    torch.export.save(program, str(tmp_path / "pool.pt2"))
    torch_export = export(tmp_path / "pool.pt2", tmp_path / "pool.onnx")
    assert torch_export.exporter.startswith("torch.onnx.export") and torch_export.parity.passed
    assert torch_export.parity.worst_rel <= TOL


def test_handmade_graph_to_torch(tmp_path):
    """ONNX ops exporters rarely combine, built by hand: Gemm with transB=0, alpha and beta,
    constant-first Sub and Div by a constant, one-sided Clip, HardSigmoid with TF's slope,
    Sqrt -> Reciprocal (TensorFlow's Rsqrt), Softmax on axis 1, and a Constant node."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(13)
    w = rng.standard_normal((6, 5)).astype("float32")  # (in, out): transB = 0
    b = rng.standard_normal((5,)).astype("float32")
    per_unit = rng.uniform(0.5, 2.0, (1, 5)).astype("float32")
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "gemm.weight"), (b, "gemm.bias"), (per_unit, "per_unit"))]
    nodes = [
        helper.make_node("Gemm", ["x", "gemm.weight", "gemm.bias"], ["g"], name="/fc/Gemm", alpha=0.5, beta=2.0),
        helper.make_node("Constant", [], ["three"], value=numpy_helper.from_array(np.array(3.0, dtype="float32"))),
        helper.make_node("Sub", ["three", "g"], ["s"], name="/Sub"),
        helper.make_node("Div", ["s", "per_unit"], ["d"], name="/Div"),
        helper.make_node("Clip", ["d", "", "clip_max"], ["c"], name="/clip/Clip"),
        helper.make_node("HardSigmoid", ["c"], ["h"], name="/act/HardSigmoid", alpha=0.2, beta=0.5),
        helper.make_node("Abs", ["d"], ["a"], name="/Abs"),
        helper.make_node("Add", ["a", "one"], ["a1"], name="/Add"),
        helper.make_node("Sqrt", ["a1"], ["sq"], name="/norm/Sqrt"),
        helper.make_node("Reciprocal", ["sq"], ["r"], name="/norm/Reciprocal"),
        helper.make_node("Mul", ["h", "r"], ["m"], name="/Mul"),
        helper.make_node("Softmax", ["m"], ["y"], name="/softmax/Softmax", axis=1),
    ]
    inits += [
        numpy_helper.from_array(np.array(1.5, dtype="float32"), "clip_max"),
        numpy_helper.from_array(np.array([1.0], dtype="float32"), "one"),
    ]
    graph = helper.make_graph(
        nodes, "handmade", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits,
    )  # fmt: skip
    path = tmp_path / "handmade.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    result = convert_both(path, tmp_path, targets=("torch",))["torch"]
    code = (result.out / "model.py").read_text()
    forward = code[code.index("def forward") :]
    assert "self.fc = nn.Linear(6, 5)" in code
    assert "torch.rsqrt(" in forward and "sqrt(a1" not in forward


def test_keras_layer_norm_through_tf2onnx(tmp_path, keras):
    """tf2onnx writes Keras's LayerNormalization out as moments + rsqrt arithmetic; the
    reader fuses it back into one layer norm (over the channel axis of an NCHW image, and
    over the features of a vector) for both targets."""
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = layers.LayerNormalization(epsilon=1e-3, name="ln")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.LayerNormalization(name="ln2")(x)
    outputs = layers.Dense(3, name="out")(x)
    model = keras.Model(inputs, outputs, name="ln_net")
    randomize_weights(model, seed=14, scale=0.6)
    onnx_path = keras_to_onnx(model, tmp_path / "ln_net.onnx")
    results = convert_both(onnx_path, tmp_path)
    code = (results["torch"].out / "model.py").read_text()
    forward = code[code.index("    def forward(self, input_") :]
    assert "ln = self.ln(conv)" in forward and "ln2 = self.ln2(" in forward
    assert "rsqrt" not in forward


def test_keras_sequence_dense_through_tf2onnx(tmp_path, keras):
    """Dense on a (batch, time, features) tensor comes out of tf2onnx as Reshape -> MatMul ->
    Reshape (a Tensordot); it is read back as one Linear on the sequence."""
    layers = keras.layers
    inputs = keras.Input((10, 6))
    x = layers.Dense(8, activation="tanh", name="d1")(inputs)
    x = layers.LayerNormalization(name="ln")(x)
    outputs = layers.Dense(3, name="out")(x)
    model = keras.Model(inputs, outputs, name="seq_net")
    randomize_weights(model, seed=15, scale=0.5)
    onnx_path = keras_to_onnx(model, tmp_path / "seq_net.onnx")
    results = convert_both(onnx_path, tmp_path)
    code = (results["torch"].out / "model.py").read_text()
    assert "self.d1 = nn.Linear(6, 8)" in code and "self.out = nn.Linear(8, 3)" in code
    assert "reshape" not in code[code.index("    def forward(self") :]


@pytest.mark.parametrize("to", ["torch", "keras"])
def test_keras_upsampling2d_through_tf2onnx(tmp_path, keras, to):
    """tf2onnx writes UpSampling2D as one Unsqueeze -> Tile -> Reshape repeat per axis (with
    the NCHW -> NHWC Transpose after the conv pushed inside the first); the reader reads the
    chain back as one nearest upsample, with no transposes left between the convs."""
    layers = keras.layers
    inputs = keras.Input((6, 5, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = layers.UpSampling2D((2, 3), name="up")(x)
    outputs = layers.Conv2D(2, 3, padding="same", name="head")(x)
    model = keras.Model(inputs, outputs, name="up_net")
    randomize_weights(model, seed=16, scale=0.5)
    onnx_path = keras_to_onnx(model, tmp_path / "up_net.onnx")
    result = convert_both(onnx_path, tmp_path, targets=(to,))[to]
    code = (result.out / "model.py").read_text()
    if to == "torch":
        assert 'self.up = nn.Upsample(scale_factor=(2, 3), mode="nearest")' in code
        forward = code[code.index("    def forward(self") :]
        assert "up = self.up(conv)" in forward and "head = self.head(up)" in forward
        assert forward.count(".permute(") == 1  # the model's NHWC output only
    else:
        assert 'layers.UpSampling2D(size=(2, 3), name="up")' in code
        assert result.manifest["layout"]["transposes"] == 0


@pytest.mark.parametrize(
    "layer, shape", [("UpSampling1D", (7, 3)), ("UpSampling2D", (4, 5, 2)), ("UpSampling3D", (2, 3, 4, 2))]
)
def test_keras_upsampling_ranks_through_tf2onnx(tmp_path, keras, layer, shape):
    """Each rank, on the NHWC input itself; a factor of 1 (Unsqueeze -> Reshape, no Tile) joins the chain."""
    size = {"UpSampling1D": 3, "UpSampling2D": (2, 2), "UpSampling3D": (2, 1, 2)}[layer]
    inputs = keras.Input(shape)
    model = keras.Model(inputs, getattr(keras.layers, layer)(size, name="up")(inputs))
    onnx_path = keras_to_onnx(model, tmp_path / f"{layer.lower()}.onnx")
    results = convert_both(onnx_path, tmp_path)
    code = (results["torch"].out / "model.py").read_text()
    scale = size if isinstance(size, int) else (size[0] if len(set(size)) == 1 else size)
    assert f'nn.Upsample(scale_factor={scale}, mode="nearest")' in code
    assert (
        f"layers.{layer}(size={size if isinstance(size, int) else (size[0] if len(set(size)) == 1 else size)}"
        in (results["keras"].out / "model.py").read_text()
    )


def test_tile_that_is_not_a_repeat_is_refused(tmp_path):
    """Unsqueeze -> Tile -> Reshape that tiles H whole (np.tile, not a nearest repeat): the
    chain's shapes do not merge the new axis into the axis before it, so it stays a Tile
    and is refused, naming the node."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = {"axes": np.array([2]), "reps": np.array([1, 1, 2, 1, 1]), "target": np.array([0, 3, 8, 5])}
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axes"], ["u"], name="up/ExpandDims"),
        helper.make_node("Tile", ["u", "reps"], ["t"], name="up/Tile"),
        helper.make_node("Reshape", ["t", "target"], ["y"], name="up/Reshape"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 5])],
        initializer=[numpy_helper.from_array(v.astype(np.int64), k) for k, v in consts.items()],
    )  # fmt: skip
    path = tmp_path / "tile.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(UnsupportedOpError) as info:
        convert_onnx(path, tmp_path / "out")
    assert "up/Tile (Tile)" in str(info.value) and "UpSampling" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_per_channel_affine_to_keras(tmp_path):
    """A per-channel Mul and Add by (C, 1, 1) constants that cannot fold into the conv (a
    ReLU between; ConvNeXt's layer scale is the same): one channel_affine, written for
    Keras as Parameter layers broadcast channels-last, with no transpose."""

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.gamma = nn.Parameter(torch.randn(4, 1, 1))
            self.beta = nn.Parameter(torch.randn(4, 1, 1))

        def forward(self, x):
            return torch.relu(self.conv(x)) * self.gamma + self.beta

    onnx_path = torch_to_onnx(Scaled(), tmp_path / "scaled.onnx", (2, 3, 8, 8))
    result = convert_both(onnx_path, tmp_path)["keras"]
    code = (result.out / "model.py").read_text()
    assert 'name="mul_scale"' in code and 'name="mul_offset"' in code and code.count("shape=(1, 1, 4)") == 2
    assert result.manifest["layout"]["transposes"] == 0
