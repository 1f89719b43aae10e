"""Merge layers (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot) and
Keras 3 arithmetic on symbolic tensors (`x + 3.0`, `x / y`), in MLPs and in CNNs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import forward_source, randomize_weights

MERGES = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"]
INFIX = {
    "Add": " + ",
    "Subtract": " - ",
    "Multiply": " * ",
    "Average": ") / 2",
    "Maximum": "torch.maximum(",
    "Minimum": "torch.minimum(",
}


@pytest.mark.parametrize("name", MERGES)
def test_merge_of_two_dense(keras, convert, name):
    inp = keras.Input((6,))
    a = keras.layers.Dense(4, name="a")(inp)
    b = keras.layers.Dense(4, name="b")(inp)
    out = getattr(keras.layers, name)(name="merge")([a, b])
    model = keras.Model(inp, out)
    randomize_weights(model)
    result = convert(model)
    assert INFIX[name] in forward_source(result)


@pytest.mark.parametrize("name", ["Add", "Multiply", "Average", "Maximum", "Minimum"])
def test_merge_of_three_feature_maps(keras, convert, name):
    inp = keras.Input((6, 6, 2))
    branches = [keras.layers.Conv2D(3, 3, padding="same", name=f"conv_{i}")(inp) for i in range(3)]
    out = getattr(keras.layers, name)(name="merge")(branches)
    model = keras.Model(inp, out)
    randomize_weights(model)
    result = convert(model)
    assert "permute(" not in forward_source(result)


@pytest.mark.parametrize("axis", [-1, 1, 2, 3])
def test_concatenate_feature_maps(keras, convert, axis):
    inp = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(3, 3, padding="same", name="conv_a")(inp)
    b = keras.layers.Conv2D(3, 3, padding="same", name="conv_b")(inp)
    out = keras.layers.Concatenate(axis=axis, name="concat")([a, b])
    model = keras.Model(inp, out)
    randomize_weights(model)
    result = convert(model)
    forward = forward_source(result)
    emitted = {-1: 1, 3: 1, 1: 2, 2: 3}[axis]
    assert f"dim={emitted})" in forward and "permute(" not in forward


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_concatenate_sequences(keras, convert, axis):
    inp = keras.Input((4, 5))
    a = keras.layers.Dense(5, name="a")(inp)
    b = keras.layers.Dense(5, name="b")(inp)
    out = keras.layers.Concatenate(axis=axis, name="concat")([a, b, inp])
    model = keras.Model(inp, out)
    randomize_weights(model)
    convert(model)


def test_add_of_different_ranks(keras, convert):
    """Keras merge layers give the lower-rank operand new axes after the batch axis."""
    inp = keras.Input((4, 5))
    a = keras.layers.Dense(5, name="a")(inp)
    b = keras.layers.Dense(5, name="b")(keras.layers.Flatten()(inp))
    out = keras.layers.Add(name="add")([a, b])
    model = keras.Model(inp, out)
    randomize_weights(model)
    convert(model)


def test_multiply_feature_map_by_channel_weights(keras, convert):
    """Squeeze-and-excitation without an explicit Reshape: (N, H, W, C) * (N, C), the
    vector becoming (N, 1, 1, C) in Keras and (N, C, 1, 1) in the emitted model."""
    inp = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    se = keras.layers.GlobalAveragePooling2D(name="squeeze")(x)
    se = keras.layers.Dense(4, activation="sigmoid", name="excite")(se)
    out = keras.layers.Multiply(name="scale")([x, se])
    model = keras.Model(inp, out)
    randomize_weights(model)
    result = convert(model)
    assert "permute(" not in forward_source(result)


@pytest.mark.parametrize(
    "axes,normalize,shapes",
    [
        (1, False, ((5,), (5,))),
        (1, True, ((5,), (5,))),
        (-1, False, ((5,), (5,))),
        ((2, 2), False, ((3, 5), (4, 5))),
        ((1, 1), False, ((3, 5), (3, 4))),
        ((2, 1), False, ((3, 5), (5, 4))),
        ((1, 2), True, ((3, 5), (4, 3))),
        (2, True, ((3, 5), (4, 5))),
    ],
    ids=["vec", "vec-cos", "vec-neg", "seq-22", "seq-11", "seq-21", "seq-12-cos", "seq-2-cos"],
)
def test_dot(keras, convert, axes, normalize, shapes):
    a_in, b_in = keras.Input(shapes[0]), keras.Input(shapes[1])
    a = keras.layers.Dense(shapes[0][-1], name="a")(a_in)
    b = keras.layers.Dense(shapes[1][-1], name="b")(b_in)
    out = keras.layers.Dot(axes=axes, normalize=normalize, name="dot")([a, b])
    model = keras.Model([a_in, b_in], out)
    randomize_weights(model)
    result = convert(model)
    if normalize:
        assert "F.normalize(" in forward_source(result)


def test_dot_normalize_values(keras, tmp_path):
    """Dot(normalize=True) is the cosine similarity: check against numpy as well."""
    import ktorch
    from ktorch.verify.runners import import_emitted

    a_in, b_in = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a_in, b_in], keras.layers.Dot(axes=1, normalize=True)([a_in, b_in]))
    model.save(tmp_path / "cos.h5")
    result = ktorch.convert(tmp_path / "cos.h5", tmp_path / "out")
    import torch

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(3, 4)).astype("float32")
    got = import_emitted(result.out).load()(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(got[:, 0], cos, rtol=1e-5)


def _constant_ops_model(keras):
    """Keras 3 records these as operations (not layers) named Add, Subtract, ..."""
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inp)
    y = keras.layers.Conv2D(3, 3, padding="same", name="conv_2")(inp)
    a = x + 3.0
    b = 2.0 - a
    c = b * 0.25
    d = c / 4.0
    e = d - 1.5
    f = 0.5 * e
    g = 1.0 + f
    h = g / y
    i = h * x
    out = keras.layers.ReLU(name="relu")(i - y)
    model = keras.Model(inp, out)
    randomize_weights(model)
    return model


def test_arithmetic_with_constants(keras, convert):
    model = _constant_ops_model(keras)
    # Keras cannot reload its own .h5 of a constant operand (it calls the Add layer): .keras
    result = convert(model, fmt="keras")
    forward = forward_source(result)
    for fragment in ("conv + 3.0", "* -1.0 + 2.0", "* 0.25", "+ -1.5", "+ 1.0", " / conv_2", " * conv"):
        assert fragment in forward, (fragment, forward)
    assert "permute(" not in forward


def test_arithmetic_with_constants_from_h5(keras, tmp_path):
    """The .h5 of the same model (which Keras itself cannot reload) converts and matches
    the in-memory model."""
    import ktorch
    from ktorch.verify.parity import check_keras_to_torch

    model = _constant_ops_model(keras)
    src = tmp_path / "ops.h5"
    model.save(src)
    result = ktorch.convert(src, tmp_path / "out", verify=False)
    parity = check_keras_to_torch(src, result.out, manifest=result.manifest, keras_model=model)
    assert parity.passed and parity.worst_rel <= 1e-4, parity


@pytest.mark.parametrize("name", ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"])
def test_keras2_merge(tmp_path, name):
    tf_keras = pytest.importorskip("tf_keras")
    from conftest import convert_tf_keras

    inp = tf_keras.Input((5, 5, 2))
    a = tf_keras.layers.Conv2D(3, 3)(inp)
    b = tf_keras.layers.Conv2D(3, 3)(inp)
    out = getattr(tf_keras.layers, name)()([a, b])
    model = tf_keras.Model(inp, out, name=f"k2_{name.lower()}")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity


def test_keras2_tf_op_lambda_arithmetic(tmp_path):
    """tf.keras 2 saves `x + 3.0`, `x * y`, tf.nn.relu6(x) ... as TFOpLambda layers that
    name a TensorFlow function: read without --trust-code, at parity."""
    tf_keras = pytest.importorskip("tf_keras")
    import tensorflow as tf
    from conftest import convert_tf_keras

    inp = tf_keras.Input((5, 5, 2))
    x = tf_keras.layers.Conv2D(3, 3, padding="same")(inp)
    y = tf_keras.layers.Conv2D(3, 3, padding="same")(inp)
    a = tf.nn.relu6(x + 3.0) * (1.0 / 6.0)
    b = (a - 0.25) / 2.0
    c = tf.math.maximum(b * y, -0.1)
    d = tf.math.sigmoid(c) + x
    out = tf.math.minimum(d, 0.8)
    model = tf_keras.Model(inp, out, name="k2_tfops")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity
    forward = forward_source(type("R", (), {"out": tmp_path / "k2_tfops_torch"})())
    assert "+ 3.0" in forward and "permute(" not in forward


def test_keras2_unknown_tf_function_is_refused(tmp_path):
    """A TFOpLambda naming a function ktorch does not know is reported as unsupported (it
    holds no code: no --trust-code is involved)."""
    tf_keras = pytest.importorskip("tf_keras")
    import tensorflow as tf

    import ktorch
    from ktorch.graph.errors import UnsupportedOpError

    inp = tf_keras.Input((4,))
    model = tf_keras.Model(inp, tf.math.cumsum(inp, axis=1), name="k2_cumsum")
    model.save(tmp_path / "m.h5")
    with pytest.raises(UnsupportedOpError, match="cumsum"):
        ktorch.convert(tmp_path / "m.h5", tmp_path / "out", verify=False)
