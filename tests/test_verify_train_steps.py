"""Training parity in the verifier (`ktorch verify --train-steps K`): the issue-14 matrix, run through
the verifier itself, and the verifier failing (naming the step and parameter) on a tampered output.

Each case compiles a small Keras model (BatchNorm with random moving statistics, Dropout, an L2
kernel_regularizer and one frozen layer), converts it, and asks `verify_conversion(train_steps=5)`
to take 5 identical training steps on both sides and compare the loss, every weight and the
optimizer state after each. A representative subset runs by default; the full matrix is slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo  # noqa: F401

keras = pytest.importorskip("keras")

from conftest import randomize_batchnorm  # noqa: E402

import ktorch  # noqa: E402
from ktorch.verify import validate_report, verify_conversion  # noqa: E402
from ktorch.verify.training import TrainingStructureError  # noqa: E402

STEPS = 5
DONE_WHEN = 1e-4  # the bar: every weight within 1e-4 (relative) after each of 5 steps


def l2() -> keras.regularizers.Regularizer:
    return keras.regularizers.L2(0.01)


def cnn():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, use_bias=False, kernel_regularizer=l2(), name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Dropout(0.3, name="drop")(x)
    x = keras.layers.Conv2D(4, 3, name="frozen_conv", trainable=False)(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_regularizer=l2(), name="head")(x)
    return keras.Model(inputs, outputs), "categorical_crossentropy"


def text():
    inputs = keras.Input((7,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="embed", trainable=False)(inputs)
    x = keras.layers.LSTM(
        8, return_sequences=True, dropout=0.2, recurrent_dropout=0.1, kernel_regularizer=l2(), name="lstm"
    )(x)
    x = keras.layers.GRU(6, recurrent_regularizer=l2(), name="gru")(x)
    outputs = keras.layers.Dense(4, activation="softmax", kernel_regularizer=l2(), name="head")(x)
    return keras.Model(inputs, outputs), "sparse_categorical_crossentropy"


def transformer():
    inputs = keras.Input((5, 8))
    a = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.1, kernel_regularizer=l2(), name="mha")(
        inputs, inputs
    )
    x = keras.layers.LayerNormalization(name="ln1")(keras.layers.Add()([inputs, a]))
    f = keras.layers.Dense(16, activation="relu", kernel_regularizer=l2(), name="ff1")(x)
    f = keras.layers.Dropout(0.2, name="drop")(f)
    f = keras.layers.Dense(8, name="ff2", trainable=False)(f)
    x = keras.layers.LayerNormalization(name="ln2")(keras.layers.Add()([x, f]))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x)), "mse"


FAMILIES = {"cnn": cnn, "text": text, "transformer": transformer}


def rate(schedule: bool, initial: float):
    return keras.optimizers.schedules.ExponentialDecay(initial, 2, 0.7) if schedule else initial


OPTIMIZERS = {
    "sgd-momentum": lambda s: keras.optimizers.SGD(rate(s, 0.05), momentum=0.9),
    "adam": lambda s: keras.optimizers.Adam(rate(s, 0.01)),
    "adamw": lambda s: keras.optimizers.AdamW(rate(s, 0.01), weight_decay=0.05),
    "rmsprop": lambda s: keras.optimizers.RMSprop(rate(s, 0.005)),
}

MATRIX = [(f, o, s) for f in FAMILIES for o in OPTIMIZERS for s in (False, True)]
FAST = {("cnn", "adam", True), ("text", "sgd-momentum", False), ("transformer", "rmsprop", True)}


def save_compiled(family: str, optimizer: str, schedule: bool, path: Path) -> Path:
    keras.utils.set_random_seed(0)
    model, loss = FAMILIES[family]()
    randomize_batchnorm(model, seed=1)
    model.compile(optimizer=OPTIMIZERS[optimizer](schedule), loss=loss)
    model.save(path)
    return path


def converted(tmp_path: Path, family: str, optimizer: str = "adam", schedule: bool = False) -> tuple[Path, Path]:
    src = save_compiled(family, optimizer, schedule, tmp_path / f"{family}.keras")
    out = tmp_path / "out"
    ktorch.convert(src, out, verify=False)
    return src, out


def train_check(src: Path, out: Path, steps: int = STEPS, **options):
    report = verify_conversion(src, out, train_steps=steps, mode="outputs", **options)
    validate_report(json.loads(json.dumps(report.to_dict())))
    return report


@pytest.mark.parametrize(
    ("family", "optimizer", "schedule"),
    [pytest.param(*case, marks=() if case in FAST else pytest.mark.slow) for case in MATRIX],
    ids=[f"{f}-{o}-{'schedule' if s else 'constant'}" for f, o, s in MATRIX],
)
def test_training_parity_matrix(family: str, optimizer: str, schedule: bool, tmp_path: Path) -> None:
    src, out = converted(tmp_path, family, optimizer, schedule)
    report = train_check(src, out)
    assert report.exit_code == 0, report.summary()
    (training,) = report.training
    assert len(training.results) == STEPS
    assert any("rate=" in d for d in training.disabled) and any(" p=" in d for d in training.disabled)
    for step in training.results:
        names = {c.name for c in step.weights}
        assert step.worst("weight") <= DONE_WHEN, f"step {step.step}: {step.worst('weight')}"
        assert step.worst("loss") <= DONE_WHEN
        assert step.optimizer, "no optimizer state compared"
        assert {"head.weight", "head.bias"} <= names
    if family == "cnn":  # the moving statistics (random, updated in training) are compared too
        assert {"bn1.running_mean", "bn1.running_var", "frozen_conv.weight"} <= names


def test_verifier_names_a_lost_regularizer(tmp_path: Path) -> None:
    src, out = converted(tmp_path, "cnn", "sgd-momentum")
    model_py = out / "model.py"
    text = model_py.read_text()
    line = "loss = loss + 0.01 * self.head.weight.square().sum()"
    assert line in text
    model_py.write_text(text.replace(line, "loss = loss + 0.0 * self.head.weight.square().sum()"))
    report = train_check(src, out, steps=2)
    assert report.exit_code == 1
    step, kind, c = report.training[0].first_divergence
    assert (step, kind, c.name) == (1, "weight", "head.weight"), report.summary()
    assert "step 1" in report.summary() and "'head.weight'" in report.summary()
    assert not report.training[0].results[0].loss.passed  # the regularization loss is part of the loss


def test_verifier_names_a_wrong_learning_rate_and_momentum(tmp_path: Path) -> None:
    src, out = converted(tmp_path, "transformer", "sgd-momentum")
    train_py = out / "train.py"
    original = train_py.read_text()
    assert "lr=0.05, momentum=0.9" in original
    train_py.write_text(original.replace("lr=0.05, momentum=0.9", "lr=0.0501, momentum=0.9"))
    report = train_check(src, out, steps=2)
    step, kind, c = report.training[0].first_divergence
    assert report.exit_code == 1 and (step, kind) == (1, "weight"), report.summary()
    assert c.name == "mha.query.weight"  # the first parameter in the emitted model's order
    # a wrong momentum: the first step (v = -lr * g) agrees, the second does not
    train_py.write_text(original.replace("lr=0.05, momentum=0.9", "lr=0.05, momentum=0.8"))
    report = train_check(src, out, steps=3)
    step, kind, _ = report.training[0].first_divergence
    assert report.exit_code == 1 and (step, kind) == (2, "weight"), report.summary()
    assert report.training[0].results[0].worst("weight") <= DONE_WHEN


def test_verifier_names_a_lost_frozen_flag(tmp_path: Path) -> None:
    src, out = converted(tmp_path, "cnn", "adam")
    model_py = out / "model.py"
    model_py.write_text(model_py.read_text().replace("self.frozen_conv.requires_grad_(False)", "pass"))
    report = train_check(src, out, steps=1)
    step, kind, c = report.training[0].first_divergence
    assert report.exit_code == 1 and (step, kind, c.name) == (1, "weight", "frozen_conv.weight"), report.summary()


def test_resume_from_migrated_optimizer_state_matches_keras_next_steps(tmp_path: Path) -> None:
    """A Keras model compiled, trained for one epoch with fit and saved: the conversion migrates its
    optimizer state, and the verifier's next 5 steps (Keras resumes from the saved state, train.py
    from optimizer.safetensors) agree, moments and step counts included."""
    keras.utils.set_random_seed(0)
    model, loss = cnn()
    randomize_batchnorm(model, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(rate(True, 0.01)), loss=loss)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 8, 8, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 12)]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    src = tmp_path / "trained.keras"
    model.save(src)
    out = tmp_path / "out"
    ktorch.convert(src, out, verify=False)
    manifest = json.loads((out / "ktorch.json").read_text())
    assert manifest["training"]["optimizer_state"]["step"] == 3
    report = train_check(src, out)
    assert report.exit_code == 0, report.summary()
    first = report.training[0].results[0]
    steps = {c.name: c for c in first.optimizer if c.name.endswith(".step")}
    assert steps and all(c.passed for c in steps.values())
    assert any(c.name == "head.weight.exp_avg" for c in first.optimizer)
    assert max(r.worst("weight") for r in report.training[0].results) <= DONE_WHEN
    # a migrated state that is wrong is found at the first step
    from safetensors.numpy import load_file, save_file

    state = load_file(str(out / "optimizer.safetensors"))
    state["head.weight.exp_avg_sq"] = state["head.weight.exp_avg_sq"] * 1.5
    save_file(state, str(out / "optimizer.safetensors"))
    report = train_check(src, out, steps=1)
    step, kind, c = report.training[0].first_divergence
    assert report.exit_code == 1 and step == 1 and c.name.startswith("head.weight"), report.summary()


def test_a_source_without_training_setup_is_a_structural_error(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model, _ = cnn()
    model.save(tmp_path / "plain.keras")  # never compiled
    ktorch.convert(tmp_path / "plain.keras", tmp_path / "out", verify=False)
    report = verify_conversion(tmp_path / "plain.keras", tmp_path / "out", train_steps=2, mode="outputs")
    assert report.exit_code == 2
    assert "no training setup" in report.summary() and "compile" in report.summary()
    with pytest.raises(TrainingStructureError, match="no training setup"):
        ktorch.verify.assert_parity(tmp_path / "plain.keras", tmp_path / "out", train_steps=2, mode="outputs")


def test_cli_train_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ktorch.cli import main

    src, out = converted(tmp_path, "transformer", "adamw", schedule=True)
    code = main(
        ["verify", str(src), str(out), "--train-steps", "2", "--mode", "outputs", "--json", str(tmp_path / "r.json")]
    )
    assert code == 0
    data = json.loads((tmp_path / "r.json").read_text())
    validate_report(data)
    assert data["training"][0]["steps"] == 2 and data["training"][0]["passed"]
    assert "training parity over 2 step(s)" in capsys.readouterr().out


def test_conversion_records_whether_training_parity_was_checked(tmp_path: Path) -> None:
    src = save_compiled("cnn", "rmsprop", False, tmp_path / "cnn.keras")
    result = ktorch.convert(src, tmp_path / "unchecked", verify=False)
    assert result.manifest["training"]["parity"] == {"checked": False, "how": "ktorch verify SRC OUT --train-steps K"}
    result = ktorch.convert(src, tmp_path / "checked", verify=False, train_steps=2)
    parity = json.loads((tmp_path / "checked" / "ktorch.json").read_text())["training"]["parity"]
    assert parity["checked"] and parity["passed"] and parity["steps"] == 2
    assert parity["worst"]["weight"] <= DONE_WHEN and "training parity over 2 step(s)" in parity["summary"]
