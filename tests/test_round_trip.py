"""Round trips Keras -> PyTorch -> Keras: each leg is verified by the conversion itself, and
the model that comes back is compared with the original Keras model end to end, on the
same channels-last inputs, with the original layer names."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import randomize_batchnorm, randomize_weights

pytest.importorskip("torch")


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
