"""Model structure: Sequential and functional models, nested models (the transfer-learning
pattern, a model called twice, Sequential inside functional), shared layers, several
inputs and outputs; Keras 3 `.keras` / `.h5` and tf.keras 2 `.h5` files."""

from __future__ import annotations

import pytest
from conftest import convert_keras, forward_source


def nested_base(keras):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, keras.layers.ReLU(name="relu")(x), name="base")


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_transfer_learning_pattern(keras, tmp_path, fmt):
    from conftest import randomize_batchnorm

    base = nested_base(keras)
    inputs = keras.Input((8, 8, 3), name="image")
    x = base(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs, name="transfer")
    randomize_batchnorm(model)
    result = convert_keras(model, tmp_path, fmt=fmt)
    assert (
        "self.base_conv = nn.Conv2d(3, 4, kernel_size=3, bias=False)" in (result.out / "model.py").read_text()
    )  # bias folded into base_bn


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_nested_model_called_twice_and_returned(keras, tmp_path, fmt):
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(3, activation="tanh", name="dense")(inner_in), name="inner")
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    x, y = inner(a), inner(b)
    total = keras.layers.Add(name="add")([x, y])
    model = keras.Model([a, b], [total, y, x], name="twice")
    result = convert_keras(model, tmp_path, fmt=fmt)
    forward = forward_source(result)
    assert forward.count("self.inner_dense(") == 2  # one module, called twice
    assert len(result.manifest["outputs"]) == 3


def test_sequential_inside_functional(keras, tmp_path):
    block = keras.Sequential(
        [keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, name="c"), keras.layers.Flatten(name="f")], name="block"
    )
    inputs = keras.Input((6, 6, 2), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(block(inputs)), name="seq_in_func")
    convert_keras(model, tmp_path, fmt="keras")


def test_shared_layer_is_one_module(keras, tmp_path):
    shared = keras.layers.Conv2D(4, 3, padding="same", name="shared_conv")
    a, b = keras.Input((5, 5, 2), name="a"), keras.Input((5, 5, 2), name="b")
    merged = keras.layers.Concatenate(name="cat")([shared(a), shared(b)])
    model = keras.Model([a, b], merged, name="siamese")
    result = convert_keras(model, tmp_path)
    code = (result.out / "model.py").read_text()
    assert code.count("nn.Conv2d(") == 1 and forward_source(result).count("self.shared_conv(") == 2
    assert result.manifest["outputs"][0]["perm"] == [0, 3, 1, 2]


@pytest.mark.parametrize("nested", [False, True])
def test_tf_keras2_functional(tmp_path, nested):
    tf_keras = pytest.importorskip("tf_keras")
    inputs = tf_keras.Input((8, 8, 3), name="image")
    if nested:
        bi = tf_keras.Input((8, 8, 3))
        base = tf_keras.Model(bi, tf_keras.layers.Conv2D(4, 3, name="conv")(bi), name="base")
        x = base(inputs)
    else:
        x = tf_keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = tf_keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(2, name="head")(x), name="k2")
    convert_keras(model, tmp_path, fmt="h5")


def test_manifest_layout_names_follow_the_source_data_format(keras, tmp_path):
    inputs = keras.Input((3, 7, 9), name="chw")
    x = keras.layers.Conv2D(4, 3, data_format="channels_first", name="conv")(inputs)
    model = keras.Model(inputs, x, name="cf_model")
    result = convert_keras(model, tmp_path)
    (spec,) = result.manifest["inputs"]
    assert spec["layout"] == "NCHW" and "perm" not in spec
    (out,) = result.manifest["outputs"]
    assert out["layout"] == "NCHW" and "perm" not in out


def test_manifest_layout_of_a_moved_channels_last_input(keras, tmp_path):
    inputs = keras.Input((7, 9, 3), name="hwc")
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs), name="cl_model")
    result = convert_keras(model, tmp_path)
    (spec,) = result.manifest["inputs"]
    assert spec["layout"] == "NCHW" and spec["perm"] == [0, 3, 1, 2] and spec["shape"] == [None, 7, 9, 3]


def test_nested_layer_names_are_not_doubled(keras, tmp_path):
    stem_in = keras.Input((6, 6, 3))
    stem = keras.Sequential([stem_in, keras.layers.Conv2D(4, 3, name="stem_conv")], name="stem")
    inputs = keras.Input((6, 6, 3), name="image")
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(stem(inputs)), name="named")
    code = (convert_keras(model, tmp_path, fmt="keras").out / "model.py").read_text()
    assert "self.stem_conv = nn.Conv2d(" in code and "stem_stem_conv" not in code
