"""Round trips Keras -> PyTorch -> Keras: each leg is verified by the conversion itself, and
the model that comes back is compared with the original Keras model end to end, on the
same channels-last inputs, with the original layer names. And PyTorch -> Keras -> PyTorch:
the Keras directory ktorch wrote is itself the source of the way back."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import randomize_batchnorm, randomize_weights

torch = pytest.importorskip("torch")


def small_cnn(keras):
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="block_conv1")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="block_dw")(y)
    x = keras.layers.Add(name="block_add")([x, y])
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="small_cnn")
    randomize_weights(model)
    randomize_batchnorm(model)
    return model


def multi_input(keras):
    image = keras.Input((16, 16, 1), name="image")
    features = keras.Input((5,), name="features")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(image)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    f = keras.layers.Dense(8, activation="tanh", name="feature_dense")(features)
    joined = keras.layers.Concatenate(name="concat")([x, f])
    score = keras.layers.Dense(1, activation="sigmoid", name="score")(joined)
    embedding = keras.layers.Dense(4, name="embedding")(joined)
    model = keras.Model([image, features], [score, embedding], name="multi_input")
    randomize_weights(model)
    return model


def round_trip(model, tmp_path, arrays: list[np.ndarray], fmt: str = "keras", tolerance: float = 1e-4):
    import ktorch

    src = tmp_path / f"{model.name}.{fmt}"
    model.save(src)
    there = ktorch.convert(src, tmp_path / "torch", tolerance=tolerance)
    assert there.manifest["direction"] == "keras->torch" and there.parity.passed
    back = ktorch.convert(there.out, tmp_path / "back", tolerance=tolerance)
    assert back.manifest["direction"] == "torch->keras" and back.parity.passed
    feed = arrays if len(arrays) > 1 else arrays[0]
    expected = model(feed, training=False)
    got = back.keras_model(feed, training=False)
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    got = got if isinstance(got, (list, tuple)) else [got]
    assert len(got) == len(expected)
    errors = []
    for e, g in zip(expected, got):
        e, g = np.asarray(e), np.asarray(g)
        assert e.shape == g.shape
        errors.append(float(np.max(np.abs(e - g)) / max(np.max(np.abs(e)), 1e-12)))
    assert max(errors) <= tolerance, errors
    return there, back, max(errors)


def test_round_trip_small_cnn(keras, tmp_path):
    model = small_cnn(keras)
    x = np.random.default_rng(0).standard_normal((3, 32, 32, 3)).astype("float32")
    _, back, _ = round_trip(model, tmp_path, [x])
    code = (back.out / "model.py").read_text()
    for name in ("stem_conv", "stem_bn", "block_conv1", "block_dw", "predictions"):
        assert f'name="{name}"' in code, name
    assert "keras.Input(shape=(32, 32, 3)" in code  # channels-last again, as the original
    assert back.manifest["layout"]["transposes"] == 0
    assert "layers.DepthwiseConv2D(" in code
    # the activations PyTorch writes functionally come back as the layers' activation=
    assert 'activation="relu", name="block_conv1"' in code
    assert 'activation="softmax", name="predictions"' in code
    assert back.manifest["outputs"][0]["emitted_name"] == "predictions"


def test_round_trip_multi_input(keras, tmp_path):
    model = multi_input(keras)
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((2, 16, 16, 1)).astype("float32"), rng.standard_normal((2, 5)).astype("float32")]
    _, back, _ = round_trip(model, tmp_path, arrays, fmt="h5")
    assert len(back.manifest["outputs"]) == 2
    assert [s["shape"][1:] for s in back.manifest["inputs"]] == [[1, 16, 16], [5]]  # PyTorch's shapes, recorded


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MobileNetV2", "ResNet50"])
def test_round_trip_applications(keras, tmp_path, name):
    model = getattr(keras.applications, name)(weights=None, input_shape=(96, 96, 3), classes=10)
    randomize_batchnorm(model)
    x = np.random.default_rng(0).standard_normal((2, 96, 96, 3)).astype("float32")
    _, back, _ = round_trip(model, tmp_path, [x], fmt="h5")
    assert back.manifest["layout"]["transposes"] == 0


# -- PyTorch -> Keras -> PyTorch ------------------------------------------------------------------
class LSTMClassifier(torch.nn.Module):
    """A sequence classifier: a two-layer LSTM read at its last step, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(6, 12, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(12, 3)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y[:, -1])


class ResamplingNet(torch.nn.Module):
    """The layers the Keras writer emits as custom classes: adaptive pooling over windows of
    unequal size, pixel (un)shuffle, bicubic interpolation by a non-integer factor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.unshuffle = torch.nn.PixelUnshuffle(2)
        self.mix = torch.nn.Conv2d(32, 8, 1)
        self.shuffle = torch.nn.PixelShuffle(2)
        self.pool = torch.nn.AdaptiveAvgPool2d((4, 5))
        self.head = torch.nn.Linear(2 * 4 * 5, 4)

    def forward(self, x):
        x = self.shuffle(self.mix(self.unshuffle(torch.relu(self.conv(x)))))
        x = torch.nn.functional.interpolate(x, scale_factor=1.5, mode="bicubic")
        return self.head(self.pool(x)[:, :2].flatten(1))


def resampling_net():
    return ResamplingNet().eval(), (torch.randn(2, 3, 14, 10),), ["conv", "unshuffle", "shuffle", "pool", "head"]


def torchvision_resnet18():
    import torchvision

    model = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():  # BatchNorm statistics and affines that are not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    return model.eval(), (torch.randn(2, 3, 32, 32),), ["conv1", "layer1_0_conv1", "layer4_1_bn2", "fc"]


def timm_deit_tiny():
    timm = pytest.importorskip("timm")
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2)
    model.reset_classifier(10)
    return (
        model.eval(),
        (torch.randn(2, 3, 32, 32),),
        ["patch_embed_proj", "blocks_0_attn_qkv", "blocks_1_mlp_fc2", "head"],
    )


def hf_bert_tiny():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=64,
    )  # fmt: skip
    ids = torch.randint(0, 99, (2, 8), generator=torch.Generator().manual_seed(1))
    names = ["embeddings_word_embeddings", "encoder_layer_1_attention_self_query", "pooler_dense"]
    return transformers.BertModel(config).eval(), {"input_ids": ids}, names


def lstm_classifier():
    return LSTMClassifier().eval(), (torch.randn(2, 5, 6),), ["lstm_l0", "lstm_l1", "head"]  # one Keras LSTM per layer


def _flat(out) -> list:
    if hasattr(out, "to_tuple"):  # a Hugging Face ModelOutput
        out = out.to_tuple()
    return [o.detach().numpy() for o in (out if isinstance(out, (list, tuple)) else [out])]


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(torchvision_resnet18, marks=pytest.mark.slow),
        pytest.param(timm_deit_tiny, marks=pytest.mark.slow),
        pytest.param(hf_bert_tiny, marks=pytest.mark.slow),
        lstm_classifier,
        resampling_net,
    ],
    ids=["resnet18", "deit_tiny", "bert_tiny", "lstm", "resampling"],
)
def test_round_trip_from_pytorch(tmp_path, factory):
    """PyTorch -> Keras -> PyTorch: the Keras directory ktorch wrote (its model.py with keras.ops
    calls and `Parameter` layers) is read back by the direct Keras reader; the PyTorch model that
    comes back matches the original at 1e-4 on new inputs and reads as hand-written code."""
    import ktorch
    from ktorch.verify.runners import import_emitted

    torch.manual_seed(0)
    model, example, names = factory()
    there = ktorch.convert(model, tmp_path / "keras", to="keras", example_inputs=example)
    assert there.manifest["direction"] == "torch->keras" and there.parity.passed
    back = ktorch.convert(there.out, tmp_path / "torch")  # the directory itself is the source
    assert back.manifest["direction"] == "keras->torch" and back.parity.passed
    assert back.parity.worst_rel <= 1e-4
    assert back.manifest["route"]["name"] == "direct"
    assert back.manifest["source"]["format"].startswith("ktorch Keras output")

    code = (back.out / "model.py").read_text()
    assert "import ktorch" not in code and "from ktorch" not in code and "keras" not in code.split('"""', 2)[2]
    for name in names:  # the original module paths, as attributes
        assert f"self.{name} = " in code, name
    if factory is torchvision_resnet18:
        assert back.manifest["layout"]["transposes"] == 0
        assert back.manifest["inputs"][0]["layout"] == "NCHW"  # channels-first again, as the original
    if factory in (lstm_classifier, resampling_net):  # `ktorch verify` takes the Keras directory as the source too
        report = ktorch.verify.verify_conversion(there.out, back.out)
        assert report.exit_code == 0 and report.runs[0].layers, report.error
    if factory is hf_bert_tiny:  # learned tables stay parameters (position embeddings are sliced, not folded)
        source = sum(p.numel() for p in model.parameters())
        assert sum(p.numel() for p in import_emitted(back.out).load().parameters() if p.requires_grad) == source

    # new inputs (another batch size) through the original and the model that came back
    if isinstance(example, dict):
        inputs = {k: torch.cat([v, v.flip(0)[:1]]) for k, v in example.items()}
        expected = _flat(model(**inputs))
        args = list(inputs.values())
    else:
        args = [torch.randn(3, *x.shape[1:]) for x in example]
        expected = _flat(model(*args))
    with torch.no_grad():
        got = _flat(import_emitted(back.out).load()(*args))
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        assert np.max(np.abs(e - g)) <= 1e-4 * max(np.max(np.abs(e)), 1.0)
