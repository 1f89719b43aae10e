"""Keras 3 operations in functional graphs (keras.ops.mean, x[:, 0], ops.pad, ...), read
directly from .keras/.h5 files as "ops.<class>" nodes: each model is saved, converted with
verification, and must match Keras; plus augmentation layers, custom activations and
reduced-precision weights, which the same functional configs carry."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import convert_keras, forward_source, randomize_weights


def _conv_input(keras, shape=(6, 5, 4)):
    inp = keras.Input(shape)
    return inp, keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)


def _reductions(keras):
    ops = keras.ops
    inp, x = _conv_input(keras)
    outs = [
        ops.mean(x, axis=[1, 2], keepdims=True),
        ops.sum(x, axis=-1),
        ops.max(x, axis=(1, 2)),
        ops.min(x, axis=2, keepdims=True),
        ops.prod(ops.sigmoid(x), axis=[1, 3]),
    ]
    return keras.Model(inp, outs, name="reductions")


def _indexing(keras):
    ops = keras.ops
    inp, x = _conv_input(keras)
    seq = ops.reshape(x, (-1, 30, 4))  # keras.ops.reshape (not the Reshape layer)
    outs = [
        seq[:, 0],
        seq[:, -1, 1:3],
        seq[:, 1:9:3, None, ...],
        x[..., ::2],
        x[:, 1:-1, :, -1],
        ops.take(seq, [0, 4, 2], axis=1),
        ops.transpose(x, (0, 3, 1, 2)),
        ops.squeeze(ops.expand_dims(seq, 2), axis=2),
        ops.concatenate([seq[:, :3], seq[:, -2:]], axis=1),
        ops.stack([seq[:, 0], seq[:, 1]], axis=1),
        *ops.split(seq, [10, 25], axis=1),
        ops.matmul(seq, ops.transpose(seq, (0, 2, 1))),
        ops.einsum("bnc,bmc->bnm", seq, seq),
    ]
    return keras.Model(inp, outs, name="indexing")


def _padding(keras):
    ops = keras.ops
    inp, x = _conv_input(keras)
    outs = [
        ops.pad(x, [[0, 0], [1, 2], [2, 1], [0, 0]]),
        ops.pad(x, [[0, 0], [1, 1], [0, 0], [0, 0]], constant_values=0.5),
        ops.pad(x, [[0, 0], [2, 1], [1, 3], [0, 0]], mode="reflect"),
        ops.pad(x, [[0, 0], [2, 0], [1, 2], [0, 0]], mode="symmetric"),
        ops.pad(x, [[0, 0], [0, 0], [0, 0], [1, 2]], mode="reflect"),
    ]
    return keras.Model(inp, outs, name="padding")


def _elementwise(keras):
    ops = keras.ops
    inp, x = _conv_input(keras)
    seq = ops.reshape(x, (-1, 30, 4))
    outs = [
        ops.relu(x - 0.1),
        ops.gelu(x),
        ops.gelu(x, approximate=False),
        ops.silu(x) * ops.tanh(x),
        ops.softmax(seq, axis=1),
        ops.log_softmax(x, axis=-1),
        ops.erf(x) + ops.hard_sigmoid(x),
        ops.sin(3.0 * x) * ops.cos(x),
        ops.clip(x, -0.5, 0.25),
        ops.where(x > 0.0, x, 0.1 * x),
        ops.where(ops.less_equal(x, seq[:, :1, None, :1]), 1.0, x),
        ops.cast(x >= 0.2, "float32") + ops.cast(ops.equal(x, x), "float32"),
        x**2 + ops.power(ops.abs(x), 1.5) + 2.0**x,
        1.0 / (ops.abs(x) + 1.0) - 3.0 / (ops.abs(x) + 2.0),
        ops.maximum(x, 0.0) + ops.minimum(x, ops.sigmoid(x)),
        ops.sqrt(ops.abs(x)) * ops.rsqrt(ops.abs(x) + 1.0) - ops.exp(-ops.square(x)),
    ]
    return keras.Model(inp, outs, name="elementwise")


@pytest.mark.parametrize("build", [_reductions, _indexing, _padding, _elementwise], ids=lambda f: f.__name__.strip("_"))
def test_ops_nodes(keras, tmp_path, build):
    model = build(keras)
    randomize_weights(model)
    result = convert_keras(model, tmp_path, fmt="keras")
    assert result.parity.passed and result.parity.worst_rel <= 1e-4, result.parity


def test_ops_reshape_from_h5_is_not_the_reshape_layer(keras, tmp_path):
    """keras.ops.reshape used to reach the Reshape *layer* translator and fail. A Keras 3
    .h5 records no module (nor can Keras reload it): checked against the in-memory model."""
    import ktorch
    from ktorch.verify.parity import check_keras_to_torch

    ops = keras.ops
    inp, x = _conv_input(keras)
    out = ops.mean(ops.reshape(x, (-1, 30, 4))[:, 1:], axis=1)
    model = keras.Model(inp, out, name="ops_h5")
    randomize_weights(model)
    model.save(tmp_path / "ops.h5")
    result = ktorch.convert(tmp_path / "ops.h5", tmp_path / "out", verify=False)
    parity = check_keras_to_torch(tmp_path / "ops.h5", result.out, manifest=result.manifest, keras_model=model)
    assert parity.passed and parity.worst_rel <= 1e-4, parity
    forward = forward_source(result)
    assert ".reshape(" in forward and ".mean(" in forward, forward


def test_channel_axis_ops_need_no_transpose(keras, tmp_path):
    """Axis-bearing ops on a feature map follow the NCHW layout (their axes remapped)."""
    ops = keras.ops
    inp, x = _conv_input(keras)
    y = ops.mean(x, axis=[1, 2], keepdims=True)
    z = keras.layers.Conv2D(4, 1, name="proj")(ops.sigmoid(y) * x)
    model = keras.Model(inp, ops.softmax(z, axis=-1), name="se")
    randomize_weights(model)
    result = convert_keras(model, tmp_path, fmt="keras")
    assert result.manifest["layout"]["transposes"] == 0, forward_source(result)


def test_unsupported_ops_are_listed_at_once(keras, tmp_path):
    import ktorch
    from ktorch.graph.errors import UnsupportedOpError

    ops = keras.ops
    inp = keras.Input((5,))
    model = keras.Model(inp, [ops.cumsum(inp, axis=1), ops.argsort(inp, axis=1), ops.mean(inp, axis=1)])
    model.save(tmp_path / "m.keras")
    with pytest.raises(UnsupportedOpError) as err:
        ktorch.convert(tmp_path / "m.keras", tmp_path / "out", verify=False)
    message = str(err.value)
    assert "ops.Cumsum" in message and "ops.Argsort" in message and "ops.Mean" not in message, message


def test_augmentation_layers_are_inference_identities(keras, tmp_path):
    inp = keras.Input((8, 8, 3))
    x = keras.layers.RandomFlip(name="flip")(inp)
    x = keras.layers.RandomRotation(0.1, name="rotate")(x)
    x = keras.layers.RandomZoom(0.1, name="zoom")(x)
    x = keras.layers.RandomContrast(0.2, name="contrast")(x)
    out = keras.layers.Conv2D(2, 3, name="conv")(x)
    model = keras.Model(inp, out, name="augment")
    randomize_weights(model)
    result = convert_keras(model, tmp_path, fmt="keras")
    assert result.manifest["model"]["inference_identities"] == ["flip", "rotate", "zoom", "contrast"]


def test_random_crop_is_not_an_identity(keras, tmp_path):
    """Keras 3 keeps the whole image at inference although the graph recorded the cropped
    shape (and tf_keras crops the centre and resizes): refused, not silently dropped."""
    import ktorch
    from ktorch.graph.errors import UnsupportedOpError

    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.RandomCrop(4, 4, name="crop")(inp))
    model.save(tmp_path / "m.keras")
    with pytest.raises(UnsupportedOpError, match="RandomCrop"):
        ktorch.convert(tmp_path / "m.keras", tmp_path / "out", verify=False)


def test_registered_activation_by_name(keras, tmp_path):
    """A function registered as "Package>hard_swish" is read by its well-known name; an
    unknown registered function is listed as unsupported, naming the activation."""
    import ktorch
    from ktorch.graph.errors import UnsupportedOpError

    @keras.saving.register_keras_serializable(package="ktorchTest")
    def hard_swish(x):
        return x * keras.ops.relu6(x + 3.0) / 6.0

    @keras.saving.register_keras_serializable(package="ktorchTest")
    def squash(x):
        return x / (1.0 + keras.ops.abs(x)) ** 2

    inp = keras.Input((6,))
    model = keras.Model(inp, keras.layers.Dense(5, activation=hard_swish, name="dense")(inp), name="hswish")
    randomize_weights(model, scale=2.0)
    convert_keras(model, tmp_path, fmt="keras")

    model = keras.Model(inp, keras.layers.Dense(5, activation=squash, name="dense")(inp), name="squash")
    model.save(tmp_path / "squash.keras")
    with pytest.raises(UnsupportedOpError, match="ktorchTest>squash"):
        ktorch.convert(tmp_path / "squash.keras", tmp_path / "out", verify=False)


@pytest.mark.parametrize("policy", ["bfloat16", "mixed_float16"])
def test_reduced_precision(keras, tmp_path, policy):
    """bfloat16 weights are read and kept; a mixed_float16 model is judged by its float16
    compute dtype."""
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        inp = keras.Input((8,))
        x = keras.layers.Dense(16, activation="relu", name="hidden")(inp)
        model = keras.Model(inp, keras.layers.Dense(4, name="out")(x), name=f"m_{policy}")
    finally:
        keras.config.set_dtype_policy(old)
    result = convert_keras(model, tmp_path, fmt="keras")
    compute = "bfloat16" if policy == "bfloat16" else "float16"
    assert result.manifest["model"]["compute_dtype"] == compute
    if policy == "bfloat16":
        header = (result.out / "model.safetensors").read_bytes()[:400]
        assert b"BF16" in header and b"F32" not in header
    assert np.isfinite(result.parity.worst_rel)


def test_constant_tensor_operand(keras, tmp_path):
    """Keras 3 evaluates ops on constants eagerly (Embedding(ops.arange(n)) for position
    ids) and serializes the result into the next operation's arguments as a `__tensor__`."""
    ops = keras.ops
    inp = keras.Input((6,), dtype="int32")
    tok = keras.layers.Embedding(10, 4, name="tokens")(inp)
    pos = keras.layers.Embedding(6, 4, name="positions")(ops.arange(0, 6))
    model = keras.Model(inp, ops.mean(tok + pos, axis=1), name="positions")
    randomize_weights(model)
    result = convert_keras(model, tmp_path, fmt="keras")
    assert "+ self." in forward_source(result)
