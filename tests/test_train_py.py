"""train.py: the Keras compile configuration as PyTorch training code, and the migrated optimizer state.

Each case compiles a small Keras model, saves it, converts it, and takes the same batches through
Keras's `train_on_batch` (TensorFlow backend) and train.py's `train_step`, comparing the loss and
every weight after each step.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo

keras = pytest.importorskip("keras")

import ktorch  # noqa: E402
from ktorch.directions import emitted_state  # noqa: E402
from ktorch.pipeline import Options  # noqa: E402
from ktorch.training import trace_parameters  # noqa: E402
from ktorch.translate.keras_reader.file import open_keras_file  # noqa: E402
from ktorch.translate.keras_reader.training import read_training_setup  # noqa: E402

RTOL = 1e-4
STEPS = 5


def import_file(path: Path):
    name = f"emitted_{path.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def dense_model():
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3, activation="softmax")]
    )


def conv_model(classes: int = 3, activation: str = "softmax"):
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)  # the Dense rows are permuted for NCHW flattening
    outputs = keras.layers.Dense(classes, activation=activation)(x)
    return keras.Model(inputs, outputs)


def batches(model, loss: str, n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    shape = tuple(model.inputs[0].shape[1:])
    classes = model.outputs[0].shape[-1]
    out = []
    for _ in range(n):
        x = rng.normal(size=(8, *shape)).astype("float32")
        labels = rng.integers(0, classes, 8)
        if loss.startswith("sparse"):
            y = labels.astype("int64")
        elif loss in ("mse", "huber"):
            y = rng.normal(size=(8, classes)).astype("float32")
        elif loss == "binary_crossentropy":
            y = rng.integers(0, 2, (8, classes)).astype("float32")
        else:
            y = np.eye(classes, dtype="float32")[labels]
        out.append((x, y))
    return out


def to_torch_input(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x)
    return t.permute(0, 3, 1, 2).contiguous() if t.dim() == 4 else t


class Converted:
    """A saved Keras model converted to PyTorch, with the map from Keras's trainable variables to
    the emitted parameters (checked against the converted weights themselves)."""

    def __init__(self, path: Path, out: Path, strict: bool = True) -> None:
        ktorch.convert(path, out, verify=False)
        self.out = out
        self.model_py = import_file(out / "model.py")
        self.train_py = import_file(out / "train.py")
        with open_keras_file(path) as kfile:
            setup = read_training_setup(kfile)
        self.mapping, problems, self.shapes = trace_parameters(path, setup, lambda kf: emitted_state(kf, Options()))
        assert not problems
        assert strict is False or sorted(self.mapping) == list(range(len(setup.trainable)))

    def keras_as_torch(self, model) -> dict[str, np.ndarray]:
        variables = model.trainable_variables
        return {
            key: np.asarray(variables[k]).reshape(-1)[index].reshape(self.shapes[key])
            for k, (key, index) in self.mapping.items()
        }


def assert_weights(converted: Converted, kmodel, tmodel, what: str) -> float:
    expected = converted.keras_as_torch(kmodel)
    state = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}
    worst = 0.0
    for key, ref in expected.items():
        err = float(np.max(np.abs(state[key] - ref)) / max(np.max(np.abs(ref)), 1e-6))
        assert err <= RTOL, f"{what}: {key} differs by {err:.3g} (relative)"
        worst = max(worst, err)
    return worst


def keras_loss(value) -> float:
    return float(value[0] if isinstance(value, (list, tuple)) else value)


CASES = {
    "sgd-momentum-nesterov": (
        dense_model,
        lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        "categorical_crossentropy",
    ),
    "adam-clipnorm": (conv_model, lambda: keras.optimizers.Adam(0.01, clipnorm=0.05), "categorical_crossentropy"),
    "adamw-cosine-warmup": (
        dense_model,
        lambda: keras.optimizers.AdamW(
            keras.optimizers.schedules.CosineDecay(0.001, 10, alpha=0.1, warmup_target=0.02, warmup_steps=3),
            weight_decay=0.05,
        ),
        "sparse_categorical_crossentropy",
    ),
    "rmsprop-centered-momentum": (
        conv_model,
        lambda: keras.optimizers.RMSprop(0.005, rho=0.8, momentum=0.5, centered=True, global_clipnorm=1.0),
        "categorical_crossentropy",
    ),
    "sgd-exponential-decay-weight-decay": (
        lambda: conv_model(activation="linear"),
        lambda: keras.optimizers.SGD(
            keras.optimizers.schedules.ExponentialDecay(0.05, 2, 0.5, staircase=True), momentum=0.8, weight_decay=0.1
        ),
        "mse",
    ),
    "adagrad-bce": (
        lambda: conv_model(activation="sigmoid"),
        lambda: keras.optimizers.Adagrad(0.05),
        "binary_crossentropy",
    ),
    "adamax-huber": (
        lambda: conv_model(activation="linear"),
        lambda: keras.optimizers.Adamax(0.01, clipvalue=0.1),
        "huber",
    ),
    "nadam": (dense_model, lambda: keras.optimizers.Nadam(0.01), "categorical_crossentropy"),
    "adam-ema-overwrite": (
        conv_model,
        lambda: keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.7, ema_overwrite_frequency=2),
        "categorical_crossentropy",
    ),
    "adadelta": (dense_model, lambda: keras.optimizers.Adadelta(1.0), "categorical_crossentropy"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_training_steps_match_keras(case: str, tmp_path: Path) -> None:
    build, make_optimizer, loss = CASES[case]
    keras.utils.set_random_seed(0)
    kmodel = build()
    kmodel.compile(optimizer=make_optimizer(), loss=loss, metrics=["accuracy"])
    path = tmp_path / "model.keras"
    kmodel.save(path)
    converted = Converted(path, tmp_path / "out")
    tmodel = converted.model_py.load()
    optimizer, scheduler = converted.train_py.make_optimizer(tmodel)
    assert_weights(converted, kmodel, tmodel, "before training")
    for step, (x, y) in enumerate(batches(kmodel, loss, STEPS)):
        expected = keras_loss(kmodel.train_on_batch(x, y))
        got, _ = converted.train_py.train_step(tmodel, optimizer, scheduler, to_torch_input(x), torch.from_numpy(y))
        assert abs(float(got) - expected) <= RTOL * max(abs(expected), 1e-3), (
            f"step {step}: loss {float(got)} vs {expected}"
        )
        assert_weights(converted, kmodel, tmodel, f"after step {step + 1}")


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: keras.optimizers.Adam(0.01, amsgrad=True),
        lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        lambda: keras.optimizers.RMSprop(
            keras.optimizers.schedules.PiecewiseConstantDecay([2, 4], [0.01, 0.005, 0.001]), momentum=0.3
        ),
        lambda: keras.optimizers.SGD(0.05, momentum=0.5, use_ema=True, ema_momentum=0.6, ema_overwrite_frequency=5),
    ],
    ids=["adam-amsgrad", "sgd-momentum", "rmsprop-piecewise", "sgd-ema"],
)
@pytest.mark.parametrize("suffix", [".keras", ".h5"])  # optimizer/vars/<i>, or variables named in a Keras 3 .h5
def test_resume_from_migrated_optimizer_state(make_optimizer, suffix: str, tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    kmodel = conv_model()
    kmodel.compile(optimizer=make_optimizer(), loss="categorical_crossentropy")
    data = batches(kmodel, "categorical_crossentropy", 6)
    for x, y in data[:3]:
        kmodel.train_on_batch(x, y)
    path = tmp_path / f"trained{suffix}"
    kmodel.save(path)
    converted = Converted(path, tmp_path / "out")
    manifest = json.loads((converted.out / "ktorch.json").read_text())
    assert manifest["training"]["optimizer_state"]["step"] == 3
    tmodel = converted.model_py.load()
    step = converted.train_py.load_optimizer_state  # the same path fit(resume=True) takes
    optimizer, scheduler = converted.train_py.make_optimizer(tmodel, start_step=3)
    assert step(tmodel, optimizer) == 3
    for i, (x, y) in enumerate(data[3:]):
        expected = keras_loss(kmodel.train_on_batch(x, y))
        got, _ = converted.train_py.train_step(tmodel, optimizer, scheduler, to_torch_input(x), torch.from_numpy(y))
        assert abs(float(got) - expected) <= RTOL * max(abs(expected), 1e-3), (
            f"resumed step {i}: {float(got)} vs {expected}"
        )
        assert_weights(converted, kmodel, tmodel, f"after resumed step {i + 1}")
    # the output (train.py imported, so with its __pycache__) is ktorch's own: --force replaces it
    ktorch.convert(path, converted.out, verify=False, force=True)
    assert (converted.out / "optimizer.safetensors").is_file()


NON_DEFAULT = {
    "SGD": {"learning_rate": 0.03, "momentum": 0.7, "nesterov": True},
    "Adam": {"learning_rate": 0.003, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-5, "amsgrad": True},
    "AdamW": {
        "learning_rate": 0.003,
        "weight_decay": 0.2,
        "beta_1": 0.8,
        "beta_2": 0.99,
        "epsilon": 1e-5,
        "amsgrad": True,
    },
    "RMSprop": {"learning_rate": 0.003, "rho": 0.7, "momentum": 0.2, "epsilon": 1e-5, "centered": True},
    "Adagrad": {"learning_rate": 0.003, "initial_accumulator_value": 0.3, "epsilon": 1e-5},
    "Adadelta": {"learning_rate": 0.003, "rho": 0.7, "epsilon": 1e-5},
    "Adamax": {"learning_rate": 0.003, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-5},
    "Nadam": {"learning_rate": 0.003, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-5},
}
TORCH_NAMES = {"epsilon": ("epsilon", "eps"), "learning_rate": ("lr",)}


@pytest.mark.parametrize("cls", list(NON_DEFAULT))
def test_no_optimizer_hyperparameter_is_lost(cls: str, tmp_path: Path) -> None:
    options = NON_DEFAULT[cls]
    kmodel = dense_model()
    kmodel.compile(optimizer=getattr(keras.optimizers, cls)(clipnorm=0.7, **options), loss="mse")
    path = tmp_path / "model.keras"
    kmodel.save(path)
    ktorch.convert(path, tmp_path / "out", verify=False)
    train_py = import_file(tmp_path / "out" / "train.py")
    import_file(tmp_path / "out" / "model.py")
    optimizer, _ = train_py.make_optimizer(torch.nn.Linear(2, 2))
    group = optimizer.param_groups[0]
    for key, value in options.items():
        if key == "weight_decay":
            assert pytest.approx(value) == train_py.WEIGHT_DECAY
            continue
        names = TORCH_NAMES.get(key, (key,))
        held = [group[n] for n in names if n in group]
        assert held and held[0] == pytest.approx(value), f"{cls}: {key}={value} lost (param group: {group})"
    assert pytest.approx(0.7) == train_py.CLIPNORM


def exec_code(code: str) -> dict:
    namespace: dict = {}
    exec(  # noqa: S102  (the generated code, as train.py would run it)
        compile("import math\nimport torch\nfrom torch import nn\nEPSILON = 1e-7\n" + code, "<train.py>", "exec"),
        namespace,
    )
    return namespace


SCHEDULES = [
    ("ExponentialDecay", {"initial_learning_rate": 0.1, "decay_steps": 3, "decay_rate": 0.7}),
    ("ExponentialDecay", {"initial_learning_rate": 0.1, "decay_steps": 3, "decay_rate": 0.7, "staircase": True}),
    ("InverseTimeDecay", {"initial_learning_rate": 0.1, "decay_steps": 4, "decay_rate": 0.5}),
    ("InverseTimeDecay", {"initial_learning_rate": 0.1, "decay_steps": 4, "decay_rate": 0.5, "staircase": True}),
    ("PiecewiseConstantDecay", {"boundaries": [3, 7, 12], "values": [0.1, 0.05, 0.01, 0.001]}),
    ("PolynomialDecay", {"initial_learning_rate": 0.1, "decay_steps": 10, "end_learning_rate": 0.01, "power": 2.0}),
    ("PolynomialDecay", {"initial_learning_rate": 0.1, "decay_steps": 7, "power": 0.5, "cycle": True}),
    ("CosineDecay", {"initial_learning_rate": 0.1, "decay_steps": 12, "alpha": 0.2}),
    ("CosineDecay", {"initial_learning_rate": 0.0, "decay_steps": 12, "warmup_target": 0.1, "warmup_steps": 5}),
]


@pytest.mark.parametrize(("cls", "config"), SCHEDULES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(SCHEDULES)])
def test_schedules_follow_keras(cls: str, config: dict) -> None:
    from ktorch.translate.keras_reader.training import parse_optimizer
    from ktorch.translate.torch_writer.training import render_schedule

    schedule = getattr(keras.optimizers.schedules, cls)(**config)
    spec = parse_optimizer(
        {"class_name": "SGD", "config": {"learning_rate": keras.saving.serialize_keras_object(schedule)}}, []
    )
    learning_rate = exec_code(render_schedule(spec["schedule"]))["learning_rate"]
    for step in range(30):
        expected = float(schedule(step))
        assert learning_rate(step) == pytest.approx(expected, rel=1e-5, abs=1e-9)  # Keras: float32, f"step {step}"


LOSSES = [
    (keras.losses.CategoricalCrossentropy(), "onehot", "softmax"),
    (keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2), "onehot", None),
    (keras.losses.CategoricalCrossentropy(label_smoothing=0.1), "onehot", "softmax"),
    (keras.losses.SparseCategoricalCrossentropy(), "sparse", "softmax"),
    (keras.losses.SparseCategoricalCrossentropy(from_logits=True), "sparse", None),
    (keras.losses.BinaryCrossentropy(), "binary", "sigmoid"),
    (keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1), "binary", None),
    (keras.losses.MeanSquaredError(), "real", None),
    (keras.losses.MeanAbsoluteError(), "real", None),
    (keras.losses.Huber(), "real", None),  # Keras does not store delta
    (keras.losses.MeanSquaredError(reduction="sum"), "real", None),
]


@pytest.mark.parametrize(
    ("loss", "labels", "activation"), LOSSES, ids=[f"{type(x[0]).__name__}-{i}" for i, x in enumerate(LOSSES)]
)
def test_losses_follow_keras(loss, labels: str, activation: str | None) -> None:
    from ktorch.translate.keras_reader.training import parse_loss
    from ktorch.translate.torch_writer.training import render_loss

    spec = parse_loss(keras.saving.serialize_keras_object(loss), [])
    loss_fn = exec_code(render_loss(spec, -1))["loss_fn"]
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)).astype("float32") * 3
    y_pred = {"softmax": keras.ops.softmax, "sigmoid": keras.ops.sigmoid}.get(activation, lambda a: a)(logits)
    y_pred = np.array(y_pred)
    y_true = {
        "onehot": np.eye(4, dtype="float32")[rng.integers(0, 4, 6)],
        "sparse": rng.integers(0, 4, 6),
        "binary": rng.integers(0, 2, (6, 4)).astype("float32"),
        "real": rng.normal(size=(6, 4)).astype("float32"),
    }[labels]
    expected = float(loss(y_true, y_pred))
    got = float(loss_fn(torch.from_numpy(y_pred), torch.from_numpy(y_true)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_fit_history_matches_keras_fit(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    kmodel = dense_model()
    kmodel.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    path = tmp_path / "model.keras"
    kmodel.save(path)
    converted = Converted(path, tmp_path / "out")
    data = batches(kmodel, "sparse_categorical_crossentropy", 3)
    data[-1] = (data[-1][0][:5], data[-1][1][:5])  # a short last batch: the epoch averages weigh samples
    x = np.concatenate([b[0] for b in data])
    y = np.concatenate([b[1] for b in data])
    expected = kmodel.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    tmodel = converted.model_py.load()
    loader = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in data]
    history = converted.train_py.fit(tmodel, loader, epochs=2, verbose=False)
    assert set(history) == {"loss", "accuracy"}
    for key in history:
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-4, err_msg=key)


def test_resume_batchnorm_model_whose_conv_bias_is_folded(tmp_path: Path) -> None:
    """The conversion drops the convolution's bias into the BatchNorm: that weight has no optimizer
    state to carry (the manifest says so); the others resume exactly, gamma and beta included (BatchNorm
    in training mode cancels the bias's gradient, so the steps still agree)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    kmodel = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    kmodel.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
    data = batches(kmodel, "categorical_crossentropy", 5)
    for x, y in data[:2]:
        kmodel.train_on_batch(x, y)
    kmodel.save(tmp_path / "bn.keras")
    with pytest.warns(UserWarning, match="no optimizer state for conv #1"):
        converted = Converted(tmp_path / "bn.keras", tmp_path / "out", strict=False)
    warnings = json.loads((converted.out / "ktorch.json").read_text())["training"]["warnings"]
    assert any("conv #1" in w for w in warnings)
    assert len(converted.mapping) == 5  # conv kernel, gamma, beta, dense kernel and bias
    tmodel = converted.model_py.load()
    optimizer, scheduler = converted.train_py.make_optimizer(tmodel, start_step=2)
    converted.train_py.load_optimizer_state(tmodel, optimizer)
    for i, (x, y) in enumerate(data[2:]):
        expected = keras_loss(kmodel.train_on_batch(x, y))
        got, _ = converted.train_py.train_step(tmodel, optimizer, scheduler, to_torch_input(x), torch.from_numpy(y))
        assert abs(float(got) - expected) <= RTOL * abs(expected)
        assert_weights(converted, kmodel, tmodel, f"after resumed step {i + 1}")


def test_tf_keras_h5_training_config(tmp_path: Path) -> None:
    """A tf.keras 2 `.h5` keeps the compile configuration as `training_config` (Custom>Adam, metrics per
    output, MeanMetricWrapper): train.py takes the same steps as tf.keras."""
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(0)
    kmodel = tf_keras.Sequential([tf_keras.Input((6,)), tf_keras.layers.Dense(3, activation="softmax", name="dense")])
    kmodel.compile(
        optimizer=tf_keras.optimizers.Adam(0.01, epsilon=1e-6), loss="sparse_categorical_crossentropy", metrics=["acc"]
    )
    path = tmp_path / "model.h5"
    kmodel.save(path)
    ktorch.convert(path, tmp_path / "out", verify=False)
    manifest = json.loads((tmp_path / "out" / "ktorch.json").read_text())
    assert manifest["training"]["metrics"][0].endswith("accuracy")  # the function tf.keras stored for "acc"
    assert not any("optimizer state" in w for w in manifest["training"]["warnings"])  # never built: none to carry
    train_py = import_file(tmp_path / "out" / "train.py")
    tmodel = import_file(tmp_path / "out" / "model.py").load()
    optimizer, scheduler = train_py.make_optimizer(tmodel)
    assert optimizer.param_groups[0]["epsilon"] == pytest.approx(1e-6)
    for x, y in batches(kmodel, "sparse_categorical_crossentropy", STEPS):
        expected = keras_loss(kmodel.train_on_batch(x, y))
        got, _ = train_py.train_step(tmodel, optimizer, scheduler, torch.from_numpy(x), torch.from_numpy(y))
        assert abs(float(got) - expected) <= RTOL * abs(expected)
        kernel, bias = kmodel.layers[-1].get_weights()
        np.testing.assert_allclose(tmodel.dense.weight.detach().numpy(), kernel.T, rtol=RTOL, atol=1e-6)
        np.testing.assert_allclose(tmodel.dense.bias.detach().numpy(), bias, rtol=RTOL, atol=1e-6)


def test_per_pixel_classes_on_the_channel_axis(tmp_path: Path) -> None:
    """A per-pixel softmax: Keras's class axis is the last, the emitted model's is axis 1 (NCHW); the
    loss (label smoothing included) and accuracy follow it there."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 5, 2))
    outputs = keras.layers.Conv2D(3, 3, padding="same", activation="softmax")(inputs)
    kmodel = keras.Model(inputs, outputs)
    kmodel.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        metrics=["accuracy"],
    )
    path = tmp_path / "seg.keras"
    kmodel.save(path)
    converted = Converted(path, tmp_path / "out")
    tmodel = converted.model_py.load()
    optimizer, scheduler = converted.train_py.make_optimizer(tmodel)
    rng = np.random.default_rng(0)
    for step in range(3):
        x = rng.normal(size=(4, 5, 5, 2)).astype("float32")
        y = np.eye(3, dtype="float32")[rng.integers(0, 3, (4, 5, 5))]
        expected = keras_loss(kmodel.train_on_batch(x, y))
        y_torch = torch.from_numpy(y).permute(0, 3, 1, 2)
        got, y_pred = converted.train_py.train_step(tmodel, optimizer, scheduler, to_torch_input(x), y_torch)
        assert abs(float(got) - expected) <= RTOL * abs(expected), f"step {step}"
        assert_weights(converted, kmodel, tmodel, f"after step {step + 1}")
    keras_accuracy = float(np.mean(np.argmax(kmodel.predict(x, verbose=0), -1) == np.argmax(y, -1)))
    torch_accuracy = float(converted.train_py.accuracy(tmodel.eval()(to_torch_input(x)), y_torch).mean())
    assert torch_accuracy == pytest.approx(keras_accuracy)


def test_resume_with_regularizer_frozen_layer_and_constraint(tmp_path: Path) -> None:
    """train_step adds model.regularization_loss() and calls model.apply_constraints() (model.py
    carries them); a frozen layer has no optimizer state and does not move."""
    keras.utils.set_random_seed(0)
    kmodel = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.01), name="a"),
            keras.layers.Dense(5, name="frozen", trainable=False),
            keras.layers.Dropout(0.0),
            keras.layers.Dense(3, activation="softmax", kernel_constraint=keras.constraints.MaxNorm(0.5), name="b"),
        ]
    )
    kmodel.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy")
    data = batches(kmodel, "categorical_crossentropy", 4)
    kmodel.train_on_batch(*data[0])
    kmodel.save(tmp_path / "m.keras")
    converted = Converted(tmp_path / "m.keras", tmp_path / "out")
    tmodel = converted.model_py.load()
    assert hasattr(tmodel, "regularization_loss") and hasattr(tmodel, "apply_constraints")
    optimizer, scheduler = converted.train_py.make_optimizer(tmodel, start_step=1)
    converted.train_py.load_optimizer_state(tmodel, optimizer)
    frozen = tmodel.frozen.weight.detach().clone()
    for i, (x, y) in enumerate(data[1:]):
        expected = keras_loss(kmodel.train_on_batch(x, y))
        got, _ = converted.train_py.train_step(tmodel, optimizer, scheduler, to_torch_input(x), torch.from_numpy(y))
        assert abs(float(got) - expected) <= RTOL * abs(expected), f"step {i}"
        assert_weights(converted, kmodel, tmodel, f"after resumed step {i + 1}")
    assert torch.equal(tmodel.frozen.weight, frozen)
