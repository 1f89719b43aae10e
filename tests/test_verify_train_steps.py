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
import torch._dynamo

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
    training = ktorch.verify.check_training(src, out, steps=STEPS)
    assert training.passed, training.summary()
    assert len(training.results) == STEPS
    assert any("rate=" in d or "dropout=" in d for d in training.disabled)  # the Keras side
    assert family == "text" or any(" p=" in d for d in training.disabled)  # model.py's Dropout (LSTM has none)
    for step in training.results:
        names = {c.name for c in step.weights}
        assert step.worst("weight") <= DONE_WHEN, f"step {step.step}: {step.worst('weight')}"
        assert step.worst("loss") <= DONE_WHEN
        assert step.optimizer, "no optimizer state compared"
        assert {"head.weight", "head.bias"} <= names
    set_aside = [n.split(":")[0] for n in training.notes if "rounding noise" in n]
    # the attention key bias has no gradient in exact arithmetic (softmax cancels it): it alone is set aside
    assert set_aside == (["mha.key.bias"] if family == "transformer" else []), training.notes
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
    train_py.write_text(original.replace("lr=0.05, momentum=0.9", "lr=0.055, momentum=0.9"))
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


# -- PyTorch -> Keras ---------------------------------------------------------------------------
nn = torch.nn


class TorchCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(6 * 6 * 6, 5)
        with torch.no_grad():
            self.bn1.running_mean.normal_(0, 0.5)
            self.bn1.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.fc(self.drop(torch.flatten(torch.relu(self.bn1(self.conv1(x))), 1)))

    example = (4, 3, 6, 6)
    frozen, regularized = "conv1", "fc.weight"


class TorchText(nn.Module):
    """Embedding + LSTM + GRU (the LSTM's two biases are TorchLSTMCell's `bias` and `recurrent_bias`,
    trained apart as torch trains them; a GRU's are the rows of its (2, 3 * units) bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 6, batch_first=True)
        self.gru = nn.GRU(6, 6, batch_first=True)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(6, 4)

    def forward(self, tokens):
        out, _ = self.gru(self.lstm(self.embed(tokens))[0])
        return self.fc(self.drop(out[:, -1]))

    example = (4, 7)
    frozen, regularized = "embed", "fc.weight"


class TorchTransformer(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(5, d)
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.mlp = nn.Linear(d, d)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        x = self.proj(x)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return self.head(self.drop(torch.relu(self.mlp(x))).mean(1))

    example = (4, 6, 5)
    frozen, regularized = "proj", "head.weight"


TORCH_OPTIMIZERS = {
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.005),
}
TORCH_FAMILIES = {"text": TorchText, "transformer": TorchTransformer}
# the matrix is Keras -> PyTorch (above); here each optimizer once, with and without a schedule
TORCH_MATRIX = [
    ("text", "adam", True),
    ("transformer", "sgd-momentum", False),
    ("text", "rmsprop", False),
    ("transformer", "adamw", True),
]
TORCH_FAST = set(TORCH_MATRIX[:2])


def torch_source(cls, optimizer: str, schedule: bool):
    torch.manual_seed(0)
    net = cls()
    for p in getattr(net, cls.frozen).parameters():
        p.requires_grad_(False)
    opt = TORCH_OPTIMIZERS[optimizer](list(net.parameters()))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5) if schedule else None
    shape = cls.example
    example = torch.randint(0, 20, shape) if cls is TorchText else torch.randn(*shape)
    return net, opt, sched, example


@pytest.mark.parametrize(
    ("family", "optimizer", "schedule"),
    [pytest.param(*case, marks=() if case in TORCH_FAST else pytest.mark.slow) for case in TORCH_MATRIX],
    ids=[f"{f}-{o}-{'schedule' if s else 'constant'}" for f, o, s in TORCH_MATRIX],
)
def test_torch_to_keras_training_parity(family: str, optimizer: str, schedule: bool, tmp_path: Path) -> None:
    cls = TORCH_FAMILIES[family]
    net, opt, sched, example = torch_source(cls, optimizer, schedule)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = ktorch.convert(
        net, tmp_path / "out", to="keras", example_inputs=(example,), optimizer=opt, lr_scheduler=sched,
        loss=nn.CrossEntropyLoss(), regularizers={cls.regularized: ("l2", 0.01)}, verify=False, train_steps=STEPS,
    )  # fmt: skip
    parity = result.manifest["training"]["parity"]
    assert parity["checked"] and parity["passed"], parity["summary"]
    assert parity["worst"]["weight"] <= DONE_WHEN and parity["worst"]["loss"] <= DONE_WHEN
    assert parity["worst"]["optimizer"] <= DONE_WHEN  # slot by slot (see the BatchNorm test below)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the check trains a copy


def test_torch_to_keras_verifier_finds_a_wrong_beta_1(tmp_path: Path) -> None:
    import zipfile

    net, opt, _, example = torch_source(TorchTransformer, "adam", False)
    out = tmp_path / "out"
    ktorch.convert(
        net, out, to="keras", example_inputs=(example,), optimizer=opt, loss=nn.CrossEntropyLoss(), verify=False
    )
    assert ktorch.verify.check_training(net, out, steps=2).passed
    # model.keras (what train.load() returns) compiled with Adam's beta_1 at 0.8: the bias correction
    # makes the first step the same, the second is not
    archive = out / "model.keras"
    with zipfile.ZipFile(archive) as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = json.loads(files["config.json"])
    assert config["compile_config"]["optimizer"]["config"]["beta_1"] == pytest.approx(0.9)
    config["compile_config"]["optimizer"]["config"]["beta_1"] = 0.8
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    result = ktorch.verify.check_training(net, out, steps=2)
    # the first step moves the weights alike; Adam's first moment (1 - beta_1) * g already differs,
    # and the verifier compares the optimizer's variables slot by slot
    step, kind, c = result.first_divergence
    assert (step, kind) == (1, "optimizer") and c.name.endswith(".exp_avg"), result.summary()
    assert "training diverges at step 1" in result.summary() and "'exp_avg'" in result.summary()


def test_torch_to_keras_batchnorm_moving_variance(tmp_path: Path) -> None:
    """torch updates running_var with the unbiased batch variance (n / (n - 1) times the biased one it
    normalises with); the emitted TorchBatchNormalization does too, so 5 steps agree, the moving
    statistics included. Put Keras's own BatchNormalization back in model.keras and the verifier names
    the moving variance at step 1 (the step, the torch buffer and the Keras weight)."""
    import io
    import zipfile

    import h5py

    net, opt, sched, example = torch_source(TorchCNN, "adamw", True)
    out = tmp_path / "out"
    ktorch.convert(
        net, out, to="keras", example_inputs=(example,), optimizer=opt, lr_scheduler=sched, loss=nn.CrossEntropyLoss(),
        regularizers={"fc.weight": ("l2", 0.01)}, verify=False,
    )  # fmt: skip
    code = (out / "model.py").read_text()
    assert "class TorchBatchNormalization(layers.BatchNormalization):" in code
    assert "import ktorch" not in code and "from ktorch" not in code
    result = ktorch.verify.check_training(net, out, steps=STEPS)
    assert result.passed and result.first_divergence is None, result.summary()
    for r in result.results:
        names = {w.name for w in r.weights if "moving_" in w.name}
        assert names == {"bn1.running_mean -> bn1 moving_mean", "bn1.running_var -> bn1 moving_variance"}
        assert r.loss.max_rel <= DONE_WHEN and max(w.max_rel for w in r.weights) <= DONE_WHEN
        # AdamW's moments, slot by slot, for every trainable weight (the frozen conv has none)
        slots = {c.name.rpartition(".")[2] for c in r.optimizer}
        assert slots == {"exp_avg", "exp_avg_sq"}, slots
        assert max(c.max_rel for c in r.optimizer) <= DONE_WHEN

    archive = out / "model.keras"
    with zipfile.ZipFile(archive) as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = json.loads(files["config.json"])
    (layer,) = [entry for entry in config["config"]["layers"] if entry["config"].get("name") == "bn1"]
    assert layer["registered_name"] == "ktorch>TorchBatchNormalization"
    layer.update(class_name="BatchNormalization", module="keras.layers", registered_name=None)
    files["config.json"] = json.dumps(config).encode()
    weights = io.BytesIO(files["model.weights.h5"])
    with h5py.File(weights, "a") as h5:  # the weights file names a layer's group after its class
        h5.move("layers/torch_batch_normalization", "layers/batch_normalization")
    files["model.weights.h5"] = weights.getvalue()
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    result = ktorch.verify.check_training(net, out, steps=3)
    step, kind, c = result.first_divergence
    assert (step, kind, c.name) == (1, "weight", "bn1.running_var -> bn1 moving_variance"), result.summary()
    for r in result.results:  # Keras's own rule: only the moving variance drifts
        assert max(w.max_rel for w in r.weights if "running_var" not in w.name) <= DONE_WHEN
