"""Core layers: Dense, Embedding, Flatten, Reshape, Permute, RepeatVector, and the layers
that do nothing at inference (removed from the emitted model)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import forward_source, randomize_weights


@pytest.mark.parametrize("shape", [(6,), (5, 6), (4, 5, 6)], ids=["rank2", "rank3", "rank4"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense(keras, convert, shape, use_bias):
    inp = keras.Input(shape)
    out = keras.layers.Dense(7, use_bias=use_bias, activation="tanh", name="dense")(inp)
    model = keras.Model(inp, out)
    randomize_weights(model)
    result = convert(model)
    code = (result.out / "model.py").read_text()
    bias = "" if use_bias else ", bias=False"
    if len(shape) < 3:
        assert f"self.dense = nn.Linear(6, 7{bias})" in code
    else:
        # a Dense on image features is a 1x1 convolution over the channel axis
        assert f"self.dense = nn.Conv2d(6, 7, kernel_size=1{bias})" in code
    assert "torch.tanh(self.dense(" in forward_source(result)


def test_dense_on_volumes(keras, convert):
    inp = keras.Input((3, 4, 5, 6))
    out = keras.layers.Dense(2, name="dense")(inp)
    model = keras.Model(inp, out)
    randomize_weights(model)
    result = convert(model)
    assert "self.dense = nn.Conv3d(6, 2, kernel_size=1)" in (result.out / "model.py").read_text()


def test_dense_on_conv_features_has_no_transpose(keras, convert):
    """Conv -> Dense(channels) -> Conv, as in ConvNeXt's pointwise MLP."""
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    x = keras.layers.Dense(6, activation="gelu", name="pointwise")(x)
    out = keras.layers.Conv2D(2, 3, name="conv_2")(x)
    model = keras.Model(inp, out)
    randomize_weights(model)
    result = convert(model)
    assert "permute(" not in forward_source(result)
    assert result.manifest["layout"]["transposes"] == 0


def test_embedding(keras, convert):
    inp = keras.Input((7,), dtype="int32")
    x = keras.layers.Embedding(11, 4, name="embedding")(inp)
    out = keras.layers.Dense(3, name="dense")(x)
    model = keras.Model(inp, out)
    randomize_weights(model)
    result = convert(model)
    assert result.manifest["inputs"][0]["range"] == [0, 11]
    assert "self.embedding = nn.Embedding(11, 4)" in (result.out / "model.py").read_text()


def test_embedding_with_float_ids(keras, convert):
    """Keras casts float ids; the emitted model casts to int64 first."""
    inp = keras.Input((5,))
    out = keras.layers.Embedding(9, 3, name="embedding")(inp)
    model = keras.Model(inp, out)
    randomize_weights(model)
    result = convert(model)
    assert ".to(torch.int64)" in forward_source(result)


def test_flatten_after_conv_folds_into_dense(keras, convert):
    """Flatten of an NCHW tensor feeding a Dense: the Dense rows are permuted once at
    conversion time; no transpose at run time."""
    inp = keras.Input((6, 5, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    x = keras.layers.Flatten(name="flatten")(x)
    out = keras.layers.Dense(5, name="dense")(x)
    model = keras.Model(inp, out)
    randomize_weights(model)
    result = convert(model)
    forward = forward_source(result)
    assert "permute(" not in forward and ".flatten(1)" in forward


def test_flatten_as_output_keeps_keras_order(keras, convert):
    """A Flatten whose result is returned must be in Keras's (channels-last) element order."""
    inp = keras.Input((6, 5, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    out = keras.layers.Flatten(name="flatten")(x)
    model = keras.Model(inp, out)
    randomize_weights(model)
    convert(model)


def test_flatten_channels_first(keras, convert):
    inp = keras.Input((3, 6, 5))
    x = keras.layers.Permute((2, 3, 1))(inp)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.Permute((3, 1, 2))(x)
    out = keras.layers.Flatten(data_format="channels_first", name="flatten")(x)
    model = keras.Model(inp, out)
    randomize_weights(model)
    convert(model)


@pytest.mark.parametrize("target", [(30,), (5, 6), (3, 10), (-1, 2), (2, 3, 5)])
def test_reshape(keras, convert, target):
    inp = keras.Input((5, 6))
    x = keras.layers.Dense(6, name="dense")(inp)
    out = keras.layers.Reshape(target, name="reshape")(x)
    model = keras.Model(inp, out)
    randomize_weights(model)
    convert(model)


def test_reshape_in_cnn(keras, convert):
    """A Reshape that mixes channel and spatial axes needs Keras's element order."""
    inp = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    x = keras.layers.Reshape((8, 8), name="reshape")(x)
    out = keras.layers.Dense(2, name="dense")(x)
    model = keras.Model(inp, out)
    randomize_weights(model)
    convert(model)


@pytest.mark.parametrize("dims", [(2, 1), (1, 3, 2), (3, 1, 2), (2, 3, 1)])
def test_permute(keras, convert, dims):
    shape = (4, 5) if len(dims) == 2 else (4, 5, 3)
    inp = keras.Input(shape)
    x = keras.layers.Dense(3, name="dense")(inp)
    out = keras.layers.Permute(dims, name="permute")(x)
    model = keras.Model(inp, out)
    randomize_weights(model)
    result = convert(model)
    assert result.parity.outputs[0].shape == (2, *[(*shape[:-1], 3)[d - 1] for d in dims])


def test_repeat_vector(keras, convert):
    inp = keras.Input((6,))
    x = keras.layers.Dense(4, name="dense")(inp)
    x = keras.layers.RepeatVector(3, name="repeat")(x)
    out = keras.layers.Dense(2, name="dense_2")(x)
    model = keras.Model(inp, out)
    randomize_weights(model)
    result = convert(model)
    assert result.parity.outputs[0].shape == (2, 3, 2)


# Dropout, noise and ActivityRegularization act in training: they are kept
# (tests/test_training_layers.py)
NOOPS = {
    "Identity": lambda k: k.layers.Identity(),
}


@pytest.mark.parametrize("name", list(NOOPS))
def test_inference_noops_are_removed(keras, convert, name):
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inp)
    x = NOOPS[name](keras)(x)
    out = keras.layers.Conv2D(2, 3, name="conv_2")(x)
    model = keras.Model(inp, out)
    randomize_weights(model)
    result = convert(model)
    forward = forward_source(result)
    assert forward.count(" = ") == 2, forward  # the two convolutions only
    assert name.lower() not in (result.out / "model.py").read_text().lower().replace("dropout_", "")


def test_noop_as_the_output(keras, convert):
    """An Identity that is the model's output: removed, the conv's result is returned."""
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inp)
    out = keras.layers.Identity()(x)
    model = keras.Model(inp, out)
    randomize_weights(model)
    result = convert(model)
    assert "return conv" in forward_source(result)


def test_sequential_mlp(keras, convert):
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="mlp",
    )
    randomize_weights(model)
    result = convert(model)
    values = result.parity.outputs[0]
    assert values.max_rel <= 1e-5 and np.isfinite(values.max_abs)


def test_keras2_core_layers(tmp_path):
    """A tf.keras 2 .h5: Embedding with input_length, Flatten, Reshape, Permute,
    RepeatVector, Dropout and Dense."""
    tf_keras = pytest.importorskip("tf_keras")
    from conftest import convert_tf_keras

    inp = tf_keras.Input((6,), dtype="int32")
    x = tf_keras.layers.Embedding(10, 4, input_length=6)(inp)
    x = tf_keras.layers.Flatten()(x)
    x = tf_keras.layers.Dropout(0.3)(x)
    x = tf_keras.layers.Dense(12, activation="relu")(x)
    x = tf_keras.layers.Reshape((3, 4))(x)
    x = tf_keras.layers.Permute((2, 1))(x)
    x = tf_keras.layers.Flatten()(x)
    x = tf_keras.layers.RepeatVector(2)(x)
    out = tf_keras.layers.Dense(3)(x)
    model = tf_keras.Model(inp, out, name="k2_core")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity
