"""Normalisation and preprocessing layers: BatchNormalization, LayerNormalization,
GroupNormalization, UnitNormalization, Rescaling and Normalization.

Statistics and affine weights are random (seeded); BatchNormalization's moving
statistics are randomised, so that a wrong epsilon, axis or order of weights shows.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    convert_tf_keras,
    forward_source,
    randomize_batchnorm,
    randomize_weights,
)


def _randomized(model):
    """Random kernels, biases and affine weights; random BatchNormalization statistics.
    Normalization layers keep their (adapted or given) statistics."""
    import keras

    kept = {layer.name: layer.get_weights() for layer in model.layers if isinstance(layer, keras.layers.Normalization)}
    randomize_weights(model)
    randomize_batchnorm(model)
    for name, weights in kept.items():
        model.get_layer(name).set_weights(weights)
    return model


# -- BatchNormalization ----------------------------------------------------------------
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
def test_batchnorm_after_conv(keras, convert, center, scale):
    inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    out = keras.layers.BatchNormalization(center=center, scale=scale, epsilon=1e-2, name="bn")(x)
    result = convert(_randomized(keras.Model(inp, out)))
    code = (result.out / "model.py").read_text()
    assert "self.bn = KerasBatchNorm2d(4, eps=0.01, momentum=0.01" in code
    assert "permute(" not in forward_source(result)


def test_conv_bias_folded_into_batchnorm(keras, convert):
    """Conv2D(use_bias=True) + BatchNormalization becomes Conv2d(bias=False) + BatchNorm2d
    with running_mean - bias: the same numbers at inference and, with batch statistics,
    in training mode (the batch mean absorbs the bias), so it stays trainable."""
    import torch

    from ktorch.verify.runners import import_emitted

    inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    out = keras.layers.BatchNormalization(epsilon=1e-3, name="bn")(x)
    model = _randomized(keras.Model(inp, out))
    result = convert(model)
    code = (result.out / "model.py").read_text()
    assert "self.conv = nn.Conv2d(3, 4, kernel_size=3, bias=False)" in code
    net = import_emitted(result.out).load()
    bias = model.get_layer("conv").get_weights()[1]
    mean = model.get_layer("bn").moving_mean.numpy()
    np.testing.assert_allclose(net.bn.running_mean.numpy(), mean - bias, rtol=1e-6, atol=1e-6)
    assert "conv" not in result.manifest["values"] and "bn" in result.manifest["values"]  # no longer the layer's output

    x = np.random.default_rng(1).standard_normal((4, 6, 6, 3)).astype("float32")
    expected = np.asarray(model(x, training=True))
    got = net.train()(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_batchnorm_on_sequences(keras, convert, axis):
    inp = keras.Input((5, 4))
    x = keras.layers.Dense(4, name="dense")(inp)
    out = keras.layers.BatchNormalization(axis=axis, name="bn")(x)
    result = convert(_randomized(keras.Model(inp, out)))
    assert "KerasBatchNorm1d(" in (result.out / "model.py").read_text()


@pytest.mark.parametrize("rank", [1, 3])
def test_batchnorm_conv_1d_and_3d(keras, convert, rank):
    shape = (8, 3) if rank == 1 else (4, 4, 4, 2)
    inp = keras.Input(shape)
    x = getattr(keras.layers, f"Conv{rank}D")(3, 3, name="conv")(inp)
    out = keras.layers.BatchNormalization(name="bn")(x)
    result = convert(_randomized(keras.Model(inp, out)))
    assert f"KerasBatchNorm{rank}d(3" in (result.out / "model.py").read_text()


def test_batchnorm_dense(keras, convert):
    inp = keras.Input((6,))
    out = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(5, name="dense")(inp))
    convert(_randomized(keras.Model(inp, out)))


def test_keras2_batchnorm(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    inp = tf_keras.Input((6, 6, 3))
    x = tf_keras.layers.Conv2D(4, 3)(inp)
    x = tf_keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.9)(x)
    out = tf_keras.layers.BatchNormalization(axis=[3], center=False)(x)
    model = tf_keras.Model(inp, out, name="k2_bn")
    rng = np.random.default_rng(0)
    weights = []
    for w in model.get_weights():
        weights.append(
            rng.uniform(0.5, 2.0, w.shape).astype("float32")
            if w.ndim == 1
            else rng.normal(0, 0.5, w.shape).astype("float32")
        )
    model.set_weights(weights)
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity


# -- LayerNormalization -----------------------------------------------------------------
@pytest.mark.parametrize(
    "axis,expect",
    [(-1, "nn.LayerNorm(6, eps=0.001)"), ([1, 2], "nn.LayerNorm((5, 6), eps=0.001)"), (1, "ChannelLayerNorm(5,")],
    ids=["last", "trailing-two", "time"],
)
def test_layernorm_on_sequences(keras, convert, axis, expect):
    inp = keras.Input((5, 6))
    x = keras.layers.Dense(6, name="dense")(inp)
    out = keras.layers.LayerNormalization(axis=axis, name="ln")(x)
    # Keras reloads a list `axis` from .h5 as a single int (its legacy loader): use .keras
    result = convert(_randomized(keras.Model(inp, out)), fmt="keras" if isinstance(axis, list) else "h5")
    assert expect in (result.out / "model.py").read_text()


@pytest.mark.parametrize(
    "axis,expect",
    [
        (-1, "ChannelLayerNorm(4"),
        ([1, 2, 3], "nn.LayerNorm((4, 5, 5)"),
        ([1, 2], "nn.LayerNorm((5, 5)"),
        ([1, 3], "layer_norm_over("),
    ],
    ids=["channels", "all", "spatial", "height-and-channels"],
)
def test_layernorm_on_feature_maps(keras, convert, axis, expect):
    """On images the normalised axes follow the NCHW layout: no transpose in forward."""
    inp = keras.Input((7, 7, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    out = keras.layers.LayerNormalization(axis=axis, epsilon=1e-6, name="ln")(x)
    result = convert(_randomized(keras.Model(inp, out)), fmt="keras")
    assert expect in (result.out / "model.py").read_text()
    assert "permute(" not in forward_source(result)


@pytest.mark.parametrize("center,scale", [(False, True), (True, False), (False, False)])
def test_layernorm_without_affine(keras, convert, center, scale):
    inp = keras.Input((5, 6))
    x = keras.layers.Dense(6, name="dense")(inp)
    out = keras.layers.LayerNormalization(center=center, scale=scale, name="ln")(x)
    convert(_randomized(keras.Model(inp, out)))


@pytest.mark.parametrize("axis", [-1, [1, 2]])
def test_layernorm_rms_scaling(keras, convert, axis):
    """Keras's deprecated rms_scaling: x * rsqrt(var(x) + eps) * gamma (no centring, no beta)."""
    inp = keras.Input((5, 6))
    x = keras.layers.Dense(6, name="dense")(inp)
    x = keras.layers.Dense(6, name="dense_2")(x)
    out = keras.layers.LayerNormalization(axis=axis, rms_scaling=True, name="ln")(x + 1.0)
    result = convert(_randomized(keras.Model(inp, out)), fmt="keras")
    assert "keras_rms_scaling(" in forward_source(result)


def test_keras2_layernorm(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    inp = tf_keras.Input((5, 6))
    x = tf_keras.layers.Dense(6)(inp)
    x = tf_keras.layers.LayerNormalization(epsilon=1e-5)(x)
    out = tf_keras.layers.LayerNormalization(axis=[1, 2])(x)
    model = tf_keras.Model(inp, out, name="k2_ln")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0.5, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity


# -- RMSNormalization ---------------------------------------------------------------------
def test_rms_normalization_on_sequences(keras, convert):
    inp = keras.Input((5, 6))
    x = keras.layers.Dense(6, name="dense")(inp)
    out = keras.layers.RMSNormalization(epsilon=1e-5, name="rms")(x + 0.5)
    result = convert(_randomized(keras.Model(inp, out)), fmt="keras")
    assert "self.rms = nn.RMSNorm(6, eps=1e-05)" in (result.out / "model.py").read_text()


def test_rms_normalization_on_channels(keras, convert):
    """On the channel axis of a feature map: axis 1 of the emitted NCHW tensor."""
    inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    out = keras.layers.RMSNormalization(name="rms")(x)
    result = convert(_randomized(keras.Model(inp, out)))
    forward = forward_source(result)
    assert "rms_norm_over(conv, (1,)" in forward and "permute(" not in forward


# -- GroupNormalization -----------------------------------------------------------------
@pytest.mark.parametrize("groups", [1, 2, 3, -1])
def test_groupnorm_on_feature_maps(keras, convert, groups):
    inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(6, 3, name="conv")(inp)
    out = keras.layers.GroupNormalization(groups=groups, epsilon=1e-4, name="gn")(x)
    result = convert(_randomized(keras.Model(inp, out)))
    expected_groups = 6 if groups == -1 else groups
    assert f"self.gn = nn.GroupNorm({expected_groups}, 6, eps=0.0001)" in (result.out / "model.py").read_text()
    assert "permute(" not in forward_source(result)


@pytest.mark.parametrize("center,scale", [(True, True), (False, False)])
def test_groupnorm_on_sequences(keras, convert, center, scale):
    inp = keras.Input((5, 4))
    x = keras.layers.Dense(4, name="dense")(inp)
    out = keras.layers.GroupNormalization(groups=2, center=center, scale=scale, name="gn")(x)
    convert(_randomized(keras.Model(inp, out)))


# -- UnitNormalization ------------------------------------------------------------------
@pytest.mark.parametrize("axis", [-1, [1, 2]])
def test_unit_normalization_on_sequences(keras, convert, axis):
    inp = keras.Input((5, 6))
    x = keras.layers.Dense(6, name="dense")(inp)
    out = keras.layers.UnitNormalization(axis=axis, name="unit")(x)
    result = convert(_randomized(keras.Model(inp, out)), fmt="keras")
    assert "F.normalize(" in forward_source(result)


def test_unit_normalization_on_channels(keras, convert):
    inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    out = keras.layers.UnitNormalization(name="unit")(x)
    result = convert(_randomized(keras.Model(inp, out)))
    assert "F.normalize(conv, dim=1" in forward_source(result)


# -- Rescaling and Normalization ----------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"scale": 1 / 255.0}, "* 0.00392156"),
        ({"scale": 1 / 127.5, "offset": -1.0}, "+ -1.0"),
        ({"scale": [0.5, 2.0, -1.0]}, "rescaling_scale"),
        ({"scale": 2.0, "offset": [0.1, 0.2, 0.3]}, "rescaling_offset"),
    ],
    ids=["scale", "scale-offset", "per-channel-scale", "per-channel-offset"],
)
def test_rescaling(keras, convert, kwargs, fragment):
    inp = keras.Input((6, 6, 3))
    x = keras.layers.Rescaling(**kwargs, name="rescaling")(inp)
    out = keras.layers.Conv2D(2, 3, name="conv")(x)
    result = convert(_randomized(keras.Model(inp, out)))
    forward = forward_source(result)
    assert fragment in forward and "permute(" not in forward


def test_normalization_adapted(keras, convert):
    rng = np.random.default_rng(0)
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(rng.normal(3.0, 2.0, (64, 6, 6, 3)).astype("float32"))
    inp = keras.Input((6, 6, 3))
    out = keras.layers.Conv2D(2, 3, name="conv")(norm(inp))
    result = convert(_randomized(keras.Model(inp, out)))
    assert "permute(" not in forward_source(result)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mean": [1.0, 2.0, 3.0], "variance": [4.0, 0.25, 1.0]},
        {"mean": [1.0, 2.0, 3.0], "variance": [4.0, 0.25, 1.0], "invert": True},
        {"mean": 2.0, "variance": 9.0, "axis": None},
        {"mean": [1.0, 2.0, 3.0], "variance": [0.0, 1e-20, 4.0]},
    ],
    ids=["given", "invert", "scalar", "zero-variance"],
)
def test_normalization_given(keras, convert, kwargs):
    inp = keras.Input((5, 3))
    out = keras.layers.Normalization(**kwargs, name="norm")(inp)
    result = convert(keras.Model(inp, out), fmt="keras")
    assert "self.norm_mean" in (result.out / "model.py").read_text()


def test_normalization_adapted_on_several_axes(keras, convert):
    rng = np.random.default_rng(1)
    norm = keras.layers.Normalization(axis=(1, 2), name="norm")
    norm.adapt(rng.normal(-1.0, 3.0, (32, 4, 5)).astype("float32"))
    inp = keras.Input((4, 5))
    out = keras.layers.Dense(3, name="dense")(norm(inp))
    convert(_randomized(keras.Model(inp, out)), fmt="keras")


def test_keras2_rescaling_and_normalization(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    rng = np.random.default_rng(0)
    norm = tf_keras.layers.Normalization()
    norm.adapt(rng.normal(2.0, 3.0, (32, 6, 6, 3)).astype("float32"))
    inp = tf_keras.Input((6, 6, 3))
    x = tf_keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = norm(x)
    out = tf_keras.layers.Conv2D(2, 3)(x)
    model = tf_keras.Model(inp, out, name="k2_pre")
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity


@pytest.mark.parametrize("size", [(5, 5), (4, 6), (7, 7)], ids=["odd", "mixed", "none"])
def test_center_crop(keras, convert, size):
    inp = keras.Input((7, 8, 3))
    x = keras.layers.CenterCrop(*size, name="crop")(inp)
    out = keras.layers.Conv2D(2, 3, name="conv")(x)
    result = convert(_randomized(keras.Model(inp, out)))
    assert result.parity.outputs[0].shape == (2, size[0] - 2, size[1] - 2, 2)
    assert "permute(" not in forward_source(result)
