"""Activations: every built-in Keras activation (as `activation=` and as an Activation
layer), the activation layers, and the Keras 2 vs Keras 3 definitions of hard_sigmoid.

Pre-activations are spread wide (weights ~N(0, 1.5), inputs ~N(0, 1)) so that clipping
regions (relu6 above 6, hard_sigmoid's flat parts, shrink thresholds) are exercised.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import convert_tf_keras, forward_source, randomize_weights

# Keras 3 activation names -> a fragment the emitted forward must contain
KERAS3 = {
    "relu": "F.relu(",
    "relu6": "F.relu6(",
    "leaky_relu": "F.leaky_relu(",
    "elu": "F.elu(",
    "selu": "F.selu(",
    "celu": "F.celu(",
    "gelu": "F.gelu(",
    "silu": "F.silu(",
    "swish": "F.silu(",
    "hard_silu": "F.hardswish(",
    "hard_swish": "F.hardswish(",
    "hard_sigmoid": "F.hardsigmoid(",
    "sparse_sigmoid": "torch.clamp(",
    "softplus": "F.softplus(",
    "softsign": "F.softsign(",
    "squareplus": "squareplus(",
    "sparse_plus": "sparse_plus(",
    "soft_shrink": "F.softshrink(",
    "hard_shrink": "F.hardshrink(",
    "tanh_shrink": "F.tanhshrink(",
    "hard_tanh": "torch.clamp(",
    "tanh": "torch.tanh(",
    "sigmoid": "torch.sigmoid(",
    "log_sigmoid": "F.logsigmoid(",
    "exponential": "torch.exp(",
    "mish": "F.mish(",
    "softmax": "torch.softmax(",
    "log_softmax": "torch.log_softmax(",
    "linear": None,
}


def _dense_model(keras, activation, *, rank: int = 2):
    """Dense(activation=...) then Activation(...): the fused and the standalone forms."""
    shape = (6,) if rank == 2 else (5, 6)
    inp = keras.Input(shape, name="x")
    x = keras.layers.Dense(8, activation=activation, name="dense")(inp)
    x = keras.layers.Dense(8, name="dense_2")(x)
    out = keras.layers.Activation(activation, name="act")(x)
    model = keras.Model(inp, out, name=f"act_{activation}")
    randomize_weights(model, scale=1.5)
    return model


@pytest.mark.parametrize("name", list(KERAS3))
def test_keras3_activation(keras, convert, name):
    keras.utils.set_random_seed(0)
    result = convert(_dense_model(keras, name, rank=3))
    forward = forward_source(result)
    if KERAS3[name] is not None:
        # once fused into the Dense statement, once as the Activation layer's own statement
        assert forward.count(KERAS3[name]) == 2, forward
    else:
        assert "act = " not in forward  # linear: nothing to compute


def test_glu_halves_the_last_axis(keras, convert):
    """glu splits the last axis: it is never fused into the Dense before it."""
    inp = keras.Input((5, 6))
    x = keras.layers.Dense(8, activation="glu", name="dense")(inp)
    out = keras.layers.Activation("glu", name="act")(x)
    model = keras.Model(inp, out)
    randomize_weights(model, scale=1.5)
    result = convert(model)
    assert result.parity.outputs[0].shape == (2, 5, 2)
    assert forward_source(result).count("F.glu(") == 2


@pytest.mark.parametrize("axis", [1, 2, 3, -1, (1, 2)])
def test_softmax_layer_axis_in_cnn(keras, convert, axis):
    """Softmax over any axis of a channels-last image tensor: the axis follows the
    layout change (channels -1 -> 1), and several axes use logsumexp."""
    inp = keras.Input((6, 5, 4))
    x = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inp)
    out = keras.layers.Softmax(axis=axis, name="softmax")(x)
    model = keras.Model(inp, out)
    randomize_weights(model, scale=1.5)
    # Keras reloads a list axis from .h5 as -1 (its legacy loader drops it): use .keras
    result = convert(model, fmt="keras" if isinstance(axis, tuple) else "h5")
    forward = forward_source(result)
    assert "permute(" not in forward
    if isinstance(axis, int):
        emitted_dim = {1: 2, 2: 3, 3: 1, -1: 1}[axis]
        assert f"torch.softmax(conv, dim={emitted_dim})" in forward, forward
    else:
        assert "torch.logsumexp(conv, dim=(2, 3)" in forward, forward


@pytest.mark.parametrize("activation", ["softmax", "log_softmax"])
def test_softmax_activation_on_channels(keras, convert, activation):
    """activation='softmax' on a conv is over Keras's last axis, the channels: dim=1."""
    inp = keras.Input((6, 5, 4))
    out = keras.layers.Conv2D(3, 3, activation=activation, name="conv")(inp)
    model = keras.Model(inp, out)
    randomize_weights(model, scale=1.5)
    forward = forward_source(convert(model))
    assert re.search(rf"= torch\.{activation}\(conv, dim=1\)", forward), forward


RELU_CASES = [
    {},
    {"max_value": 6.0},
    {"max_value": 2.5},
    {"negative_slope": 0.1},
    {"threshold": 0.5},
    {"threshold": 0.5, "negative_slope": 0.2},
    {"threshold": 0.7, "max_value": 2.0},
    {"threshold": 0.3, "negative_slope": 0.1, "max_value": 3.0},
    {"negative_slope": 0.1, "max_value": 6.0},
]


@pytest.mark.parametrize("kwargs", RELU_CASES, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()) or "plain")
def test_relu_layer(keras, convert, kwargs):
    inp = keras.Input((4, 6))
    x = keras.layers.Dense(16, name="dense")(inp)
    out = keras.layers.ReLU(**kwargs, name="relu")(x)
    model = keras.Model(inp, out)
    randomize_weights(model, scale=2.0)
    result = convert(model)
    if not kwargs.get("threshold") and not kwargs.get("negative_slope"):
        assert "keras_relu" not in forward_source(result)


def test_relu_layer_values_match_the_definition(keras, tmp_path):
    """A hand-computed check of the general relu on chosen points (not only Keras vs
    emitted): threshold 0.5, slope 0.1, max 2."""
    import ktorch
    from ktorch.verify.runners import import_emitted

    inp = keras.Input((7,))
    out = keras.layers.ReLU(max_value=2.0, threshold=0.5, negative_slope=0.1)(inp)
    model = keras.Model(inp, out)
    model.save(tmp_path / "relu.h5")
    result = ktorch.convert(tmp_path / "relu.h5", tmp_path / "out")
    import torch

    net = import_emitted(result.out).load()
    x = torch.tensor([[-2.0, 0.0, 0.5, 0.7, 1.0, 2.0, 3.0]])
    expected = [0.1 * (-2.0 - 0.5), 0.1 * (0.0 - 0.5), 0.0, 0.7, 1.0, 2.0, 2.0]
    np.testing.assert_allclose(net(x).detach().numpy()[0], expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model(x.numpy()))[0], expected, atol=1e-6)


@pytest.mark.parametrize(
    "layer",
    [
        lambda k: k.layers.LeakyReLU(negative_slope=0.15),
        lambda k: k.layers.LeakyReLU(),
        lambda k: k.layers.ELU(alpha=0.5),
        lambda k: k.layers.ELU(),
    ],
    ids=["leaky-0.15", "leaky-default", "elu-0.5", "elu-default"],
)
def test_activation_layers(keras, convert, layer):
    inp = keras.Input((6,))
    x = keras.layers.Dense(8, name="dense")(inp)
    out = layer(keras)(x)
    model = keras.Model(inp, out)
    randomize_weights(model, scale=1.5)
    convert(model)


@pytest.mark.parametrize(
    "shared_axes", [None, [1, 2], [1], [3]], ids=["unshared", "per-channel", "shared-h", "shared-c"]
)
def test_prelu_on_images(keras, convert, shared_axes):
    inp = keras.Input((6, 5, 4))
    x = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inp)
    out = keras.layers.PReLU(shared_axes=shared_axes, name="prelu")(x)
    model = keras.Model(inp, out)
    randomize_weights(model, scale=1.0)
    result = convert(model)
    forward = forward_source(result)
    assert "permute(" not in forward
    code = (result.out / "model.py").read_text()
    if shared_axes == [1, 2]:
        assert "nn.PReLU(num_parameters=3)" in code  # per-channel: the torch idiom
    else:
        assert "nn.Parameter(" in code


def test_prelu_dense(keras, convert):
    inp = keras.Input((6,))
    x = keras.layers.Dense(5, name="dense")(inp)
    out = keras.layers.PReLU(name="prelu")(x)
    model = keras.Model(inp, out)
    randomize_weights(model, scale=1.0)
    result = convert(model)
    assert "nn.PReLU(num_parameters=5)" in (result.out / "model.py").read_text()


def test_hard_sigmoid_keras3_definition(keras, convert):
    """Keras 3: relu6(x + 3) / 6, which is torch's hardsigmoid."""
    result = convert(_dense_model(keras, "hard_sigmoid"))
    assert "F.hardsigmoid(" in forward_source(result)


# tf.keras 2 (tf_keras) activation names; hard_sigmoid there is clip(0.2 x + 0.5, 0, 1)
KERAS2 = [
    "relu",
    "elu",
    "selu",
    "gelu",
    "swish",
    "softplus",
    "softsign",
    "tanh",
    "sigmoid",
    "hard_sigmoid",
    "exponential",
    "mish",
    "linear",
    "softmax",
]


@pytest.fixture(scope="module")
def tf_keras():
    return pytest.importorskip("tf_keras")


@pytest.mark.parametrize("name", KERAS2)
def test_keras2_activation(tf_keras, tmp_path, name):
    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((6,))
    x = tf_keras.layers.Dense(8, activation=name, name="dense")(inp)
    x = tf_keras.layers.Dense(8, name="dense_2")(x)
    out = tf_keras.layers.Activation(name, name="act")(x)
    model = tf_keras.Model(inp, out, name=f"k2_{name}")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 1.5, w.shape).astype("float32") for w in model.get_weights()])
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity


def test_keras2_hard_sigmoid_is_not_keras3(tf_keras, tmp_path):
    """The Keras 2 file gets 0.2 x + 0.5, not torch's hardsigmoid (x / 6 + 0.5)."""
    inp = tf_keras.Input((6,))
    out = tf_keras.layers.Activation("hard_sigmoid")(tf_keras.layers.Dense(8)(inp))
    model = tf_keras.Model(inp, out, name="k2_hs")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 2.0, w.shape).astype("float32") for w in model.get_weights()])
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed
    code = (tmp_path / "k2_hs_torch" / "model.py").read_text()
    assert "* 0.2 + 0.5, 0.0, 1.0)" in code and "hardsigmoid" not in code


@pytest.mark.parametrize("layer", ["LeakyReLU", "ReLU", "ELU", "PReLU", "Softmax", "ThresholdedReLU"])
def test_keras2_activation_layers(tf_keras, tmp_path, layer):
    kwargs = {
        "LeakyReLU": {"alpha": 0.2},
        "ReLU": {"max_value": 4.0, "threshold": 0.2, "negative_slope": 0.1},
        "ELU": {"alpha": 0.7},
        "PReLU": {},
        "Softmax": {"axis": 1},
        "ThresholdedReLU": {"theta": 0.4},
    }[layer]
    inp = tf_keras.Input((4, 6))
    x = tf_keras.layers.Dense(8)(inp)
    out = getattr(tf_keras.layers, layer)(**kwargs)(x)
    model = tf_keras.Model(inp, out, name=f"k2_{layer}")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 1.5, w.shape).astype("float32") for w in model.get_weights()])
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity
