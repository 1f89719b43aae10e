"""Training-time behaviour survives conversion, both directions (issue 14): dropout and noise
layers, frozen layers, weight/activity regularizers, weight constraints, BatchNorm's
running statistics, and a 5-step SGD run that trains the same in Keras and in the emitted
PyTorch model.

How the training-parity test makes dropout identical: the model keeps its Dropout (its
conversion is checked), and the rate is set to 0 at run time on both sides (Keras
`layer.rate = 0.0`, whose call skips dropout at rate 0; torch `module.p = 0.0`), so both
sides compute the same deterministic training-mode forward.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import randomize_batchnorm, randomize_weights

import ktorch
from ktorch.verify.runners import import_emitted


def _emitted(result):
    return import_emitted(result.out)


def _code(result) -> str:
    return (result.out / "model.py").read_text()


# -- dropout and noise layers, Keras -> PyTorch ---------------------------------------------

KERAS_TRAINING_LAYERS = {
    "Dropout": (lambda k: k.layers.Dropout(0.35, name="t"), "self.t = nn.Dropout(0.35)"),
    "SpatialDropout2D": (lambda k: k.layers.SpatialDropout2D(0.25, name="t"), "self.t = nn.Dropout2d(0.25)"),
    "AlphaDropout": (lambda k: k.layers.AlphaDropout(0.125, name="t"), "self.t = nn.AlphaDropout(0.125)"),
    "GaussianNoise": (lambda k: k.layers.GaussianNoise(0.3, name="t"), "self.t = GaussianNoise(0.3)"),
    "GaussianDropout": (lambda k: k.layers.GaussianDropout(0.2, name="t"), "self.t = GaussianDropout(0.2)"),
    "noise_shape": (
        lambda k: k.layers.Dropout(0.5, noise_shape=(None, 1, 6, 1), name="t"),
        "self.t = SharedDropout(0.5, (1, 2))",
    ),  # NHWC (1, 3) -> NCHW
}


@pytest.mark.parametrize("name", list(KERAS_TRAINING_LAYERS))
def test_keras_training_layers_become_torch_modules(keras, convert, name):
    make, expected = KERAS_TRAINING_LAYERS[name]
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inp)
    x = make(keras)(x)
    out = keras.layers.Conv2D(2, 3, name="conv_2")(x)
    model = keras.Model(inp, out, name=f"m_{name.lower()}")
    randomize_weights(model)
    result = convert(model)  # parity in eval mode: the identity
    assert expected in _code(result)
    assert result.manifest["training"]["layers"] == ["t"]
    assert "t = self.t(conv)" in _code(result)


def test_spatial_dropout_drops_whole_channels(keras, convert):
    """SpatialDropout2D (channels-last in Keras) drops whole channels of the NCHW tensor."""
    import torch

    inp = keras.Input((5, 5, 8))
    x = keras.layers.Conv2D(8, 1, name="conv")(inp)  # the identity, so that the model runs NCHW
    out = keras.layers.SpatialDropout2D(0.5, name="drop")(x)
    model = keras.Model(inp, out, name="sd")
    model.get_layer("conv").set_weights([np.eye(8, dtype="float32").reshape(1, 1, 8, 8), np.zeros(8, "float32")])
    result = convert(model)
    model = _emitted(result).load().train()
    torch.manual_seed(0)
    y = model(torch.ones(16, 8, 5, 5))
    per_channel = y.flatten(2)
    assert torch.all((per_channel == 0).all(-1) | (per_channel == 2).all(-1))  # one decision per (example, channel)
    assert 0 < (per_channel == 0).all(-1).float().mean() < 1


def test_activity_regularization_kept(keras, convert):
    inp = keras.Input((4,))
    x = keras.layers.Dense(5, name="fc")(inp)
    out = keras.layers.ActivityRegularization(l1=0.01, l2=0.02, name="act")(x)
    result = convert(keras.Model(inp, out, name="actreg"))
    code = _code(result)
    assert 'self.activations["act"] = fc' in code and "def regularization_loss" in code


# -- PyTorch -> Keras ----------------------------------------------------------------------


def _torch_net(kind: str):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.drop = {
                "Dropout": nn.Dropout(0.3),
                "Dropout2d": nn.Dropout2d(0.3),
                "AlphaDropout": nn.AlphaDropout(0.3),
                "FeatureAlphaDropout": nn.FeatureAlphaDropout(0.3),
            }[kind]
            self.fc = nn.Linear(4 * 6 * 6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(self.drop(torch.relu(self.conv(x))), 1))

    return Net()


TORCH_DROPOUTS = {
    "Dropout": 'layers.Dropout(rate=0.3, name="drop")',
    "Dropout2d": 'layers.SpatialDropout2D(rate=0.3, name="drop")',
    "AlphaDropout": 'layers.AlphaDropout(rate=0.3, name="drop")',
    "FeatureAlphaDropout": 'layers.AlphaDropout(rate=0.3, noise_shape=(None, 1, 1, None), name="drop")',
}


@pytest.mark.parametrize("kind", list(TORCH_DROPOUTS))
def test_torch_dropouts_become_keras_layers(tmp_path, kind):
    """torch.export in eval mode keeps dropout as an ATen call with train=False, named after
    its module: it becomes the Keras layer with the exact rate."""
    import torch

    result = ktorch.convert(_torch_net(kind), tmp_path / "k", example_inputs=(torch.randn(2, 3, 6, 6),))
    assert TORCH_DROPOUTS[kind] in _code(result)
    assert result.manifest["training"]["layers"] == ["drop"]


def test_round_trip_keeps_dropout_frozen_layers_and_regularizers(keras, tmp_path):
    """Keras -> PyTorch -> Keras: Dropout, SpatialDropout2D, trainable=False and the kernel
    regularizer survive."""
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv", trainable=False)(inp)
    x = keras.layers.SpatialDropout2D(0.2, name="sdrop")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    out = keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L1L2(1e-3, 1e-4), name="fc")(x)
    model = keras.Model(inp, out, name="rt")
    randomize_weights(model)
    model.save(tmp_path / "rt.keras")
    there = ktorch.convert(tmp_path / "rt.keras", tmp_path / "rt_torch")
    back = ktorch.convert(tmp_path / "rt_torch", tmp_path / "rt_keras")
    layers = {layer.name: layer for layer in back.keras_model.layers}
    assert type(layers["sdrop"]).__name__ == "SpatialDropout2D" and layers["sdrop"].rate == 0.2
    assert type(layers["drop"]).__name__ == "Dropout" and layers["drop"].rate == 0.5
    assert layers["conv"].trainable is False and layers["fc"].trainable is True
    assert there.manifest["training"]["frozen"] == ["conv"] == back.manifest["training"]["frozen"]
    # regularizers are code in PyTorch (regularization_loss()); ktorch.json carries them back
    assert there.manifest["training"]["parameter_regularizers"] == {"fc.weight": {"l1": 0.001, "l2": 0.0001}}
    assert layers["fc"].kernel_regularizer.get_config() == {"l1": 0.001, "l2": 0.0001}


# -- frozen layers ---------------------------------------------------------------------------


def test_frozen_keras_layers_and_batchnorm(keras, convert):
    """trainable=False: requires_grad_(False); a frozen BatchNormalization normalises with its
    moving statistics in training (Keras 3: `if training and self.trainable`), so the emitted
    module keeps it in eval mode."""
    import torch

    inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv", trainable=False)(inp)
    x = keras.layers.BatchNormalization(name="bn", trainable=False)(x)
    x = keras.layers.BatchNormalization(name="bn_live")(x)
    out = keras.layers.Dense(2, name="fc")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out, name="frozen")
    randomize_weights(model)
    randomize_batchnorm(model)
    result = convert(model)
    net = _emitted(result).load()
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"conv.weight", "bn.weight", "bn.bias"}  # conv's bias is folded into bn's running mean
    net.train()
    assert net.bn.training is False and net.bn_live.training is True and net.training is True
    x = np.random.default_rng(1).normal(size=(4, 6, 6, 3)).astype("float32")
    expected = model(x, training=True).numpy()
    got = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert result.manifest["training"]["frozen"] == ["bn", "conv"]


def test_frozen_nested_model(keras, convert):
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")], name="inner")
    inner.trainable = False
    inp = keras.Input((4,))
    out = keras.layers.Dense(2, name="head")(inner(inp))
    result = convert(keras.Model(inp, out, name="outer"))
    net = _emitted(result).load()
    assert {n for n, p in net.named_parameters() if not p.requires_grad} == {"inner_d.weight", "inner_d.bias"}


def test_torch_requires_grad_false_becomes_trainable_false(tmp_path):
    import torch

    net = _torch_net("Dropout")
    net.conv.requires_grad_(False)
    result = ktorch.convert(net, tmp_path / "k", example_inputs=(torch.randn(2, 3, 6, 6),))
    layers = {layer.name: layer for layer in result.keras_model.layers}
    assert layers["conv"].trainable is False and layers["fc"].trainable is True
    assert "trainable=False" in _code(result)


# -- regularizers ---------------------------------------------------------------------------


def test_keras_regularizers_become_regularization_loss(keras, convert):
    """Kernel, bias and activity regularizers (L1, L2, L1L2 with exact factors; the activity
    loss divided by the batch size as Keras 3 does) sum to Keras's model.losses."""
    import torch

    regs = keras.regularizers
    inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, kernel_regularizer=regs.L2(1e-2), bias_regularizer=regs.L1(1e-2), name="conv")(inp)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(
        5, activation="relu", kernel_regularizer=regs.L1L2(1e-3, 2e-3), activity_regularizer=regs.L2(1e-2), name="fc"
    )(x)
    x = keras.layers.Dense(4, kernel_regularizer=regs.L2(0.5), name="frozen", trainable=False)(x)
    out = keras.layers.ActivityRegularization(l1=0.03, name="act")(x)
    model = keras.Model(inp, out, name="regs")
    randomize_weights(model)
    result = convert(model)
    x = np.random.default_rng(2).normal(size=(3, 6, 6, 3)).astype("float32")
    model(x, training=True)
    expected = float(sum(float(v) for v in model.losses))  # the frozen kernel's L2 is not counted
    net = _emitted(result).load().train()
    net(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    got = float(net.regularization_loss().detach())
    assert got == pytest.approx(expected, rel=1e-5)
    assert "0.01 * self.conv.bias.abs().sum()" in _code(result)


def test_unsupported_regularizer_is_reported(keras, convert):
    """A regularizer ktorch cannot carry over is named in a warning and in ktorch.json, never lost silently."""
    inp = keras.Input((4,))
    out = keras.layers.Dense(4, kernel_regularizer=keras.regularizers.OrthogonalRegularizer(0.01), name="fc")(inp)
    with pytest.warns(UserWarning, match="kernel_regularizer OrthogonalRegularizer"):
        result = convert(keras.Model(inp, out, name="ortho"))
    assert result.manifest["training"]["dropped"] == [
        "fc (Dense): kernel_regularizer OrthogonalRegularizer (only L1, L2, L1L2)"
    ]


def test_regularizers_argument_for_torch_sources(tmp_path):
    import torch

    net = _torch_net("Dropout")
    result = ktorch.convert(
        net,
        tmp_path / "k",
        example_inputs=(torch.randn(2, 3, 6, 6),),
        regularizers={"fc.weight": ("l2", 1e-4), "conv.bias": ("l1l2", 1e-3, 2e-3)},
    )
    code = _code(result)
    assert "kernel_regularizer=keras.regularizers.L2(0.0001)" in code
    assert "bias_regularizer=keras.regularizers.L1L2(l1=0.001, l2=0.002)" in code
    layers = {layer.name: layer for layer in result.keras_model.layers}
    expected = (
        1e-4 * float((net.fc.weight.detach() ** 2).sum())
        + 1e-3 * float(net.conv.bias.detach().abs().sum())
        + 2e-3 * float((net.conv.bias.detach() ** 2).sum())
    )
    got = sum(float(layer.kernel_regularizer(layer.kernel)) for layer in [layers["fc"]]) + float(
        layers["conv"].bias_regularizer(layers["conv"].bias)
    )
    assert got == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ktorch.graph.KtorchError, match="no layer holds the parameter 'fc.kernel'"):
        ktorch.convert(
            net, tmp_path / "k2", example_inputs=(torch.randn(2, 3, 6, 6),), regularizers={"fc.kernel": ("l2", 1e-4)}
        )


# -- constraints ----------------------------------------------------------------------------

CONSTRAINTS = {
    "max_norm_conv": lambda k: {"kernel_constraint": k.constraints.MaxNorm(0.5, axis=[0, 1, 2])},
    "unit_norm_conv": lambda k: {"kernel_constraint": k.constraints.UnitNorm(axis=3)},
    "min_max_norm": lambda k: {"kernel_constraint": k.constraints.MinMaxNorm(0.2, 0.4, rate=0.7, axis=0)},
    "non_neg_bias": lambda k: {"bias_constraint": k.constraints.NonNeg()},
}


@pytest.mark.parametrize("name", list(CONSTRAINTS))
def test_constraints_project_like_keras(keras, convert, name):
    """apply_constraints() projects the torch weights as Keras's constraint projects the
    Keras kernel, with its axes mapped through the kernel's layout permutation."""
    import torch

    kwargs = CONSTRAINTS[name](keras)
    inp = keras.Input((5, 5, 3))
    x = keras.layers.Conv2D(4, 3, name="conv", **kwargs)(inp)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x), name=name)
    randomize_weights(model, scale=1.0)
    result = convert(model)
    net = _emitted(result).load()
    net.apply_constraints()
    layer = model.get_layer("conv")
    kernel, bias = layer.kernel, layer.bias
    if layer.kernel_constraint is not None:
        kernel = layer.kernel_constraint(kernel)
    if layer.bias_constraint is not None:
        bias = layer.bias_constraint(bias)
    np.testing.assert_allclose(
        net.conv.weight.detach().numpy(), np.asarray(kernel).transpose(3, 2, 0, 1), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(net.conv.bias.detach().numpy(), np.asarray(bias), rtol=1e-6, atol=1e-6)
    assert (
        not torch.equal(net.conv.weight, torch.from_numpy(layer.get_weights()[0].transpose(3, 2, 0, 1)))
        or name == "non_neg_bias"
    )


def test_dense_constraint_axis(keras, convert):
    """A Dense kernel (in, units) is (units, in) in torch: Keras axis 0 is torch dim 1."""
    inp = keras.Input((6,))
    out = keras.layers.Dense(4, kernel_constraint=keras.constraints.MaxNorm(0.3, axis=0), name="fc")(inp)
    model = keras.Model(inp, out, name="dense_c")
    randomize_weights(model, scale=1.0)
    result = convert(model)
    assert "self.fc.weight.square().sum(dim=1, keepdim=True)" in _code(result)
    net = _emitted(result).load()
    net.apply_constraints()
    layer = model.get_layer("fc")
    np.testing.assert_allclose(
        net.fc.weight.detach().numpy(), np.asarray(layer.kernel_constraint(layer.kernel)).T, rtol=1e-6, atol=1e-6
    )


# -- BatchNorm running statistics -----------------------------------------------------------


@pytest.mark.parametrize("rank", [2, 4])
def test_batchnorm_training_forward_updates_running_stats_like_keras(keras, convert, rank):
    """Keras momentum m is PyTorch momentum 1 - m, and Keras 3 updates the moving variance
    with the biased batch variance, as the emitted module does: one training-mode forward
    leaves the same running statistics, and the same output."""
    import torch

    shape = (6,) if rank == 2 else (5, 5, 6)
    inp = keras.Input(shape)
    out = keras.layers.BatchNormalization(momentum=0.8, epsilon=1e-3, name="bn")(inp)
    model = keras.Model(inp, out, name=f"bn{rank}")
    randomize_batchnorm(model)
    result = convert(model)
    net = _emitted(result).load().train()
    x = np.random.default_rng(3).normal(1.0, 2.0, size=(4, *shape)).astype("float32")
    expected = model(x, training=True).numpy()
    perm = result.manifest["inputs"][0].get("perm")  # the emitted model's axis order, if not the source's
    got = net(torch.from_numpy(x.transpose(perm) if perm else x)).detach().numpy()
    np.testing.assert_allclose(got.transpose(np.argsort(perm)) if perm else got, expected, rtol=1e-4, atol=1e-5)
    mean, var = (np.asarray(w) for w in model.get_layer("bn").get_weights()[2:])
    np.testing.assert_allclose(net.bn.running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.bn.running_var.numpy(), var, rtol=1e-5)  # PyTorch's own BN: off by n / (n - 1)


def test_batchnorm_momentum_torch_to_keras(tmp_path):
    import torch
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.3))
    result = ktorch.convert(net, tmp_path / "k", example_inputs=(torch.randn(2, 3, 4, 4),))
    assert result.keras_model.layers[-1].momentum == pytest.approx(0.7)


# -- five SGD steps ---------------------------------------------------------------------------


def _keras_to_torch_weights(model, hw: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Every Keras weight as the emitted state_dict holds it: conv kernels (kh, kw, in, out)
    -> (out, in, kh, kw); the Dense after Flatten has its input rows in NCHW order; conv1's
    bias is folded into bn1's running mean (fold_bias_into_batch_norm)."""
    h, w, c = hw
    flat = np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)  # torch row j reads Keras row flat[j]
    g = {layer.name: [np.asarray(v) for v in layer.weights] for layer in model.layers if layer.weights}
    conv1_bias = g["conv1"][1]
    return {
        "conv1.weight": g["conv1"][0].transpose(3, 2, 0, 1),
        "bn1.weight": g["bn1"][0],
        "bn1.bias": g["bn1"][1],
        "bn1.running_mean": g["bn1"][2] - conv1_bias,
        "bn1.running_var": g["bn1"][3],
        "conv2.weight": g["conv2"][0].transpose(3, 2, 0, 1),
        "bn2.weight": g["bn2"][0],
        "bn2.bias": g["bn2"][1],
        "bn2.running_mean": g["bn2"][2],
        "bn2.running_var": g["bn2"][3],
        "fc.weight": g["fc"][0][flat].T,
        "fc.bias": g["fc"][1],
    }


def test_five_sgd_steps_match(keras, tmp_path):
    """A CNN with BatchNorm, Dropout (rate 0 at run time, see the module doc), an L2
    regularizer, a frozen conv and a frozen BatchNorm: five SGD steps on the same batches in
    Keras (compile + train_on_batch) and in the emitted PyTorch module (torch.optim.SGD on
    loss + regularization_loss()) give the same losses and the same weights."""
    import torch

    regs = keras.regularizers
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", kernel_regularizer=regs.L2(1e-2), name="conv1")(inp)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False, name="conv2", trainable=False)(x)
    x = keras.layers.BatchNormalization(name="bn2", trainable=False)(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    out = keras.layers.Dense(3, kernel_regularizer=regs.L2(1e-3), name="fc")(x)
    model = keras.Model(inp, out, name="train_cnn")
    randomize_weights(model, scale=0.3)
    randomize_batchnorm(model)
    model.save(tmp_path / "train_cnn.keras")
    result = ktorch.convert(tmp_path / "train_cnn.keras", tmp_path / "torch")

    net = _emitted(result).load().train()
    assert isinstance(net.drop, torch.nn.Dropout) and net.drop.p == 0.5
    net.drop.p = 0.0
    model.get_layer("drop").rate = 0.0
    lr = 0.05
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr)

    rng = np.random.default_rng(4)
    keras_losses, torch_losses = [], []
    for _ in range(5):
        xb = rng.normal(size=(8, 8, 8, 3)).astype("float32")
        yb = rng.normal(size=(8, 3)).astype("float32")
        keras_losses.append(float(model.train_on_batch(xb, yb)))
        opt.zero_grad()
        pred = net(torch.from_numpy(xb.transpose(0, 3, 1, 2).copy()))
        loss = torch.nn.functional.mse_loss(pred, torch.from_numpy(yb)) + net.regularization_loss()
        loss.backward()
        opt.step()
        torch_losses.append(float(loss))

    np.testing.assert_allclose(torch_losses, keras_losses, rtol=1e-4)
    assert keras_losses[-1] < keras_losses[0]
    expected = _keras_to_torch_weights(model, (4, 4, 4))
    state = {k: v.detach().numpy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert set(state) == set(expected)
    errors = {}
    for key, value in expected.items():
        scale = max(float(np.abs(value).max()), 1e-6)
        errors[key] = float(np.abs(state[key] - value).max()) / scale
    print("losses keras", keras_losses, "torch", torch_losses, "weight errors", errors)
    assert max(errors.values()) <= 1e-4, errors
    # the frozen layers did not move
    original = keras.models.load_model(tmp_path / "train_cnn.keras")
    np.testing.assert_array_equal(
        model.get_layer("conv2").get_weights()[0], original.get_layer("conv2").get_weights()[0]
    )
