"""keras.applications: every family converts at parity, with no transpose in forward.

Weights are random (weights=None, seeded), BatchNormalization statistics (random, on the
scale of the activations: see normalize_batchnorm_scale), EfficientNet's
Normalization statistics and ConvNeXt's LayerScale gammas are randomised (Keras
initialises the gammas at 1e-6, which would hide a wrong residual branch), and the
classifier returns logits (a softmax over 1000 near-uniform classes would hide errors).
Models that start with their own preprocessing get pixel inputs in [0, 255] (see
sample_images). Each model uses the smallest input its family accepts. The default run converts the
smallest member of each family; the `slow` run converts all 40 constructors.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import convert_keras, forward_source, randomize_batchnorm

# constructor -> (smallest input size, file format). Keras cannot reload its own .h5 of
# MobileNetV3 (`x + 3.0` is saved as an Add with a constant argument) nor of ConvNeXt,
# so those are verified from .keras; test_h5_with_constant_operands reads their .h5.
ZOO: dict[str, tuple[int, str]] = {
    "ResNet50": (32, "h5"),
    "ResNet101": (32, "h5"),
    "ResNet152": (32, "h5"),
    "ResNet50V2": (32, "h5"),
    "ResNet101V2": (32, "h5"),
    "ResNet152V2": (32, "h5"),
    "MobileNet": (32, "h5"),
    "MobileNetV2": (32, "h5"),
    "MobileNetV3Small": (32, "keras"),
    "MobileNetV3Large": (32, "keras"),
    "EfficientNetB0": (32, "h5"),
    "EfficientNetB1": (32, "h5"),
    "EfficientNetB2": (32, "h5"),
    "EfficientNetB3": (32, "h5"),
    "EfficientNetB4": (32, "h5"),
    "EfficientNetB5": (32, "h5"),
    "EfficientNetB6": (32, "h5"),
    "EfficientNetB7": (32, "h5"),
    "EfficientNetV2B0": (32, "h5"),
    "EfficientNetV2B1": (32, "h5"),
    "EfficientNetV2B2": (32, "h5"),
    "EfficientNetV2B3": (32, "h5"),
    "EfficientNetV2S": (32, "h5"),
    "EfficientNetV2M": (32, "h5"),
    "EfficientNetV2L": (32, "h5"),
    "DenseNet121": (32, "h5"),
    "DenseNet169": (32, "h5"),
    "DenseNet201": (32, "h5"),
    "InceptionV3": (75, "h5"),
    "InceptionResNetV2": (75, "h5"),
    "Xception": (71, "h5"),
    "VGG16": (32, "h5"),
    "VGG19": (32, "h5"),
    "NASNetMobile": (32, "h5"),
    "NASNetLarge": (32, "h5"),
    "ConvNeXtTiny": (32, "keras"),
    "ConvNeXtSmall": (32, "keras"),
    "ConvNeXtBase": (32, "keras"),
    "ConvNeXtLarge": (32, "keras"),
    "ConvNeXtXLarge": (32, "keras"),
}

SMALLEST = [
    "ResNet50",
    "ResNet50V2",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "EfficientNetB0",
    "EfficientNetV2B0",
    "DenseNet121",
    "InceptionV3",
    "InceptionResNetV2",
    "Xception",
    "VGG16",
    "NASNetMobile",
    "ConvNeXtTiny",
]


def randomize_application_state(model, seed: int = 1) -> None:
    """Seeded values for the state Keras leaves trivial without trained weights:
    adaptable Normalization statistics (zeros/ones) and LayerScale gammas (1e-6)."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Normalization) and layer.weights:
            mean, var, count = layer.get_weights()
            layer.set_weights(
                [
                    rng.normal(0.0, 0.5, mean.shape).astype("float32"),
                    rng.uniform(0.5, 2.0, var.shape).astype("float32"),
                    count,
                ]
            )
        elif type(layer).__name__ == "LayerScale":
            layer.set_weights([rng.normal(0.0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])


def takes_pixels(name: str) -> bool:
    """Families whose models begin with their own preprocessing (Rescaling, Normalization)
    and so expect pixel values in [0, 255]."""
    return name.lower().startswith(("efficientnet", "mobilenetv3", "mobilenet_v3", "convnext"))


def sample_images(name: str, shape: tuple, seed: int = 0):
    """Seeded inputs on the scale the model expects: pixels in [0, 255] for models with
    built-in preprocessing (N(0, 1) would be a near-constant image after it, whose tiny
    variations carry all the signal and all the float32 rounding), else N(0, 1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if takes_pixels(name):
        return rng.uniform(0.0, 255.0, shape).astype("float32")
    return rng.standard_normal(shape).astype("float32")


def normalize_batchnorm_scale(model, batchnorm_class, seed: int = 2) -> None:
    """Random moving statistics on the scale of the activations they normalise.

    With independent random statistics every BatchNormalization passes on a random gain,
    and through the hundreds of them in EfficientNetV2 the activations reach 1e3 while
    its squeeze-excite gates stay O(1): the gates cancel large numbers, and float32
    rounding (the emitted model agrees layer by layer to 1e-6) grows past 1e-4 at the
    output. So one training-mode pass with momentum 0 measures each layer's batch
    statistics; the moving mean becomes the batch mean shifted by N(0, 0.3) standard
    deviations and the moving variance the batch variance (floored at the layer's mean
    variance, so that a near-constant channel is not blown up) times U(0.5, 2). The
    random gamma/beta stay; a wrong epsilon, axis or weight order still shows."""
    import numpy as np

    layers = [layer for layer in model._flatten_layers() if isinstance(layer, batchnorm_class)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(sample_images(model.name, (8, *model.input_shape[1:]), seed=seed), training=True)
    rng = np.random.default_rng(seed)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
        weights = layer.get_weights()
        mean, var = weights[-2], np.maximum(weights[-1], weights[-1].mean())
        weights[-2] = (mean + rng.normal(0.0, 0.3, mean.shape) * np.sqrt(var)).astype("float32")
        weights[-1] = (var * rng.uniform(0.5, 2.0, var.shape)).astype("float32")
        layer.set_weights(weights)


def build(keras, name: str):
    size, _ = ZOO[name]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    randomize_batchnorm(model)
    randomize_application_state(model)
    normalize_batchnorm_scale(model, keras.layers.BatchNormalization)
    return model


def check_zoo_model(keras, name: str, tmp_path) -> float:
    model = build(keras, name)
    images = sample_images(name, (2, *model.input_shape[1:]))
    result = convert_keras(model, tmp_path, fmt=ZOO[name][1], inputs=[images])
    forward = forward_source(result)
    assert "permute(" not in forward and "transpose(" not in forward, f"{name}: the emitted forward transposes"
    assert result.manifest["layout"]["transposes"] == 0
    assert result.manifest["inputs"][0]["layout"] == "NCHW"
    assert result.parity.worst_rel <= 1e-4
    print(f"\n{name}: worst relative error {result.parity.worst_rel:.2e}")
    return result.parity.worst_rel


@pytest.mark.parametrize("name", SMALLEST)
def test_smallest_of_each_family(keras, tmp_path, name):
    check_zoo_model(keras, name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_every_application(keras, tmp_path, name):
    check_zoo_model(keras, name, tmp_path)


def test_zoo_lists_every_family(keras):
    """The slow test covers every image classifier keras.applications exports."""
    exported = {n for n in dir(keras.applications) if n[:1].isupper()}
    assert exported <= set(ZOO), sorted(exported - set(ZOO))


@pytest.mark.parametrize("name", ["MobileNetV3Small"])
def test_h5_with_constant_operands(keras, tmp_path, name):
    """The .h5 that Keras itself cannot reload (`x + 3.0` saved as an Add op with a
    number argument) converts, and matches the in-memory model."""
    import ktorch
    from ktorch.verify.parity import check_keras_to_torch

    model = build(keras, name)
    src = tmp_path / f"{name}.h5"
    model.save(src)
    result = ktorch.convert(src, tmp_path / "out", verify=False)
    forward = forward_source(result)
    assert " + 3.0" in forward and "* 0.16666666666666666" in forward
    parity = check_keras_to_torch(src, result.out, manifest=result.manifest, keras_model=model)
    assert parity.passed and parity.worst_rel <= 1e-4, parity


def test_layer_scale_is_a_parameter(keras, tmp_path):
    """ConvNeXt's LayerScale becomes a trained nn.Parameter, its LayerNormalization a
    channel-axis LayerNorm and its pointwise Dense layers 1x1 convolutions."""
    model = build(keras, "ConvNeXtTiny")
    result = convert_keras(model, tmp_path, fmt="keras")
    code = "".join((result.out / "model.py").read_text().split())  # whatever the formatter wrapped
    assert "self.convnext_tiny_stage_0_block_0_layer_scale=nn.Parameter(torch.zeros((1,96,1,1)))" in code
    assert "*self.convnext_tiny_stage_0_block_0_layer_scale" in code
    assert "ChannelLayerNorm(96,eps=1e-06)" in code
    assert "self.convnext_tiny_stage_0_block_0_pointwise_conv_1=nn.Conv2d(96,384,kernel_size=1)" in code


# -- tf.keras 2 (tf_keras) applications: .h5 files as most trained models were saved --------
KERAS2_ZOO = {
    "MobileNetV3Small": 32,  # hard-swish written as tf.__operators__.add / tf.math.multiply (TFOpLambda)
    "ResNet50": 32,
    "MobileNetV2": 32,
    "EfficientNetB0": 32,
    "EfficientNetV2B0": 32,
    "DenseNet121": 32,
    "InceptionV3": 75,
    "Xception": 71,
    "NASNetMobile": 32,
    "ConvNeXtTiny": 32,
}


def check_keras2_model(name: str, tmp_path) -> float:
    tf_keras = pytest.importorskip("tf_keras")
    from conftest import convert_tf_keras

    tf_keras.utils.set_random_seed(0)
    size = KERAS2_ZOO[name]
    model = getattr(tf_keras.applications, name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    randomize_batchnorm(model, seed=0)  # handles tf_keras BatchNormalization too
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if type(layer).__name__ == "LayerScale":
            layer.set_weights([rng.normal(0.0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity
    forward = (tmp_path / f"{model.name}_torch" / "model.py").read_text()
    forward = forward[forward.index("def forward") :]
    assert "permute(" not in forward and "transpose(" not in forward
    return parity.worst_rel


def test_keras2_mobilenet_v3(tmp_path):
    check_keras2_model("MobileNetV3Small", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(KERAS2_ZOO))
def test_keras2_applications(tmp_path, name):
    check_keras2_model(name, tmp_path)
