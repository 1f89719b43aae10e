"""PyTorch -> Keras training setup (issue 14, items 3 and 4): `ktorch.convert(module, out,
optimizer=, lr_scheduler=, loss=)` writes train.py and a compiled model.keras whose
`train_on_batch` takes the steps torch takes, resuming from the migrated optimizer state.

How the parity tests run: the torch module trains on its own copy (loss_fn(module(x), y) plus the
L2 terms named in `regularizers=`, backward, optimizer.step(), scheduler.step()); the Keras model
is `train.load()` (model.keras) and takes `train_on_batch` on the same batches in its layout.
Dropout is kept in both models and its rate set to 0 at run time on both sides, so both compute
the same deterministic training-mode forward. After every step the losses and every trainable
weight (mapped through the conversion's layout changes by ktorch's element-number tracing) are
compared at 1e-4 relative to the weight's scale.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import pytest

import ktorch
from ktorch.capture import capture
from ktorch.directions import emitted_keras_weights
from ktorch.pipeline import Options
from ktorch.torch_training import trace_keras_weights
from ktorch.training import source_training
from ktorch.verify.runners import import_emitted

torch = pytest.importorskip("torch")
nn = torch.nn
RTOL = 1e-4


# -- models ------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """Conv + BatchNorm (random statistics) + Dropout + Linear; conv1 is the frozen group."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 4, 3, stride=2, padding=1)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(4 * 3 * 3, 5)
        with torch.no_grad():
            self.bn1.running_mean.normal_(0, 0.5)
            self.bn1.running_var.uniform_(0.5, 2.0)
            self.bn1.weight.normal_(1.0, 0.3)
            self.bn1.bias.normal_(0, 0.3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(self.drop(torch.flatten(x, 1)))

    frozen = "conv1"
    regularized = "fc.weight"

    @staticmethod
    def batch(rng, n=4):
        x = rng.normal(size=(n, 3, 6, 6)).astype("float32")
        return x, rng.integers(0, 5, size=(n,)).astype("int64")


class TextGRU(nn.Module):
    """Embedding + GRU + Linear on the last step; the embedding is the frozen group."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.gru = nn.GRU(8, 6, batch_first=True)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(6, 4)

    def forward(self, tokens):
        out, _ = self.gru(self.embed(tokens))
        return self.fc(self.drop(out[:, -1]))

    frozen = "embed"
    regularized = "fc.weight"

    @staticmethod
    def batch(rng, n=4):
        return rng.integers(0, 20, size=(n, 7)).astype("int64"), rng.integers(0, 4, size=(n,)).astype("int64")


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + MLP block over a sequence, mean-pooled into a classifier; the
    input projection is the frozen group."""

    def __init__(self, d: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.proj = nn.Linear(5, d)
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.mlp1 = nn.Linear(d, 16)
        self.mlp2 = nn.Linear(16, d)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        x = self.proj(x)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.drop(self.mlp2(torch.relu(self.mlp1(self.norm2(x)))))
        return self.head(x.mean(1))

    frozen = "proj"
    regularized = "head.weight"
    # the key projection's bias shifts every score of a query by the same amount, which softmax
    # removes: its gradient is zero up to rounding, and Adam/RMSprop divide that noise by its own
    # size, so both sides move it by rounding noise; it is left out of the weight comparison
    noise_only = {"attn.in_proj_bias->attn/3"}

    @staticmethod
    def batch(rng, n=4):
        return rng.normal(size=(n, 6, 5)).astype("float32"), rng.integers(0, 3, size=(n,)).astype("int64")


# -- the harness -------------------------------------------------------------------------------
def _set_dropout(net, keras_model) -> None:
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    for layer in keras_model.layers:
        if hasattr(layer, "rate") and type(layer).__name__ == "Dropout":
            layer.rate = 0.0


def _groups(net, frozen: str | None):
    if frozen is None:
        return [p for p in net.parameters()]
    own = [p for n, p in net.named_parameters() if n.startswith(frozen + ".")]
    for p in own:
        p.requires_grad_(False)
    return [{"params": own}, {"params": [p for n, p in net.named_parameters() if not n.startswith(frozen + ".")]}]


def _torch_step(net, opt, sched, loss_fn, x, y, l2):
    net.train()
    opt.zero_grad()
    loss = loss_fn(net(torch.from_numpy(x)), torch.from_numpy(y))
    for name, factor in l2.items():
        loss = loss + factor * dict(net.named_parameters())[name].square().sum()
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    return loss.item()


def _keras_input(x, manifest):
    perm = manifest["inputs"][0].get("perm")
    return np.ascontiguousarray(x.transpose(perm)) if perm else x


def _weight_errors(net, keras_model, mapping, skip=frozenset()) -> dict[str, float]:
    params = {n: p.detach().numpy().reshape(-1) for n, p in net.named_parameters()}
    errors = {}
    for key, pieces in mapping.items():
        layer, _, i = key.rpartition("/")
        kw = np.asarray(keras_model.get_layer(layer).weights[int(i)]).reshape(-1)
        for param, positions, elements in pieces:
            expected = params[param][elements]
            scale = max(float(np.abs(expected).max()), 1e-6)
            if f"{param}->{key}" not in skip:
                errors[f"{param}->{key}"] = float(np.abs(kw[positions] - expected).max()) / scale
    # BatchNorm running statistics: Keras's weights 2 and 3 of the layer that holds the module's weight
    by_param = {pieces[0][0]: key for key, pieces in mapping.items() if len(pieces) == 1}
    for path, m in net.named_modules():
        if isinstance(m, nn.modules.batchnorm.BatchNorm2d) and f"{path}.weight" in by_param:
            layer = keras_model.get_layer(by_param[f"{path}.weight"].rpartition("/")[0])
            for i, buffer in ((2, "running_mean"), (3, "running_var")):
                expected = getattr(m, buffer).numpy()
                scale = max(float(np.abs(expected).max()), 1e-6)
                errors[f"{path}.{buffer}"] = float(np.abs(np.asarray(layer.weights[i]) - expected).max()) / scale
    return errors


def run_parity(
    tmp_path,
    model_cls,
    make_optimizer,
    *,
    make_scheduler=None,
    loss_fn=None,
    frozen: bool = True,
    l2: float = 1e-3,
    pre_steps: int = 0,
    steps: int = 5,
    seed: int = 0,
    steps_per_epoch: int | None = None,
) -> dict[str, Any]:
    """Train `model_cls` `pre_steps` steps in torch, convert with the optimizer (and its state),
    then take `steps` more steps in torch and in the compiled Keras model; returns the worst
    loss and weight errors (asserted below RTOL)."""
    torch.manual_seed(seed)
    net = model_cls()
    opt = make_optimizer(_groups(net, model_cls.frozen if frozen else None))
    sched = make_scheduler(opt) if make_scheduler else None
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    regs = {model_cls.regularized: l2} if l2 else {}
    rng = np.random.default_rng(seed)
    for _ in range(pre_steps):
        _torch_step(net, opt, sched, loss_fn, *model_cls.batch(rng), regs)
    example = model_cls.batch(rng)[0]
    net.eval()
    out = tmp_path / f"{model_cls.__name__}_keras"
    result = ktorch.convert(
        net, out, example_inputs=(torch.from_numpy(example),), to="keras", optimizer=opt, lr_scheduler=sched,
        loss=loss_fn, regularizers={k: ("l2", v) for k, v in regs.items()} or None, steps_per_epoch=steps_per_epoch,
    )  # fmt: skip
    program, _, name = capture(net, example_inputs=(torch.from_numpy(example),))
    mapping, _, _ = trace_keras_weights(
        program, [n for n, _ in net.named_parameters()], lambda p: emitted_keras_weights(p, name, Options())
    )
    covered = {n: np.zeros(p.numel(), bool) for n, p in net.named_parameters()}
    for pieces in mapping.values():
        for param, _, elements in pieces:
            covered[param][elements] = True
    assert all(c.all() for c in covered.values()), {n: int(c.sum()) for n, c in covered.items()}
    train = import_emitted(out, "train.py")
    sys.path.insert(0, str(out))
    try:
        keras_model = train.load()
    finally:
        sys.path.remove(str(out))
    iterations = int(keras_model.optimizer.iterations.numpy())
    if isinstance(opt, torch.optim.SGD) and sched is None:  # SGD counts no steps: only "any taken" matters
        assert iterations == min(pre_steps, 1)
    else:
        assert iterations == pre_steps
    _set_dropout(net, keras_model)
    skip = getattr(model_cls, "noise_only", set())
    assert skip <= set(_weight_errors(net, keras_model, mapping))
    losses, weights = [], []
    for _ in range(steps):
        x, y = model_cls.batch(rng)
        t = _torch_step(net, opt, sched, loss_fn, x, y, regs)
        k = float(keras_model.train_on_batch(_keras_input(x, result.manifest), y))
        losses.append(abs(k - t) / max(abs(t), 1e-6))
        weights.append(max(_weight_errors(net, keras_model, mapping, skip).values()))
    print(model_cls.__name__, type(opt).__name__, "loss errors", losses, "weight errors", weights)
    assert max(losses) <= RTOL, losses
    worst = sorted(_weight_errors(net, keras_model, mapping, skip).items(), key=lambda kv: -kv[1])[:3]
    assert max(weights) <= RTOL, (weights, worst)
    return {"loss": max(losses), "weights": max(weights), "result": result, "net": net, "keras": keras_model}


# -- optimizers, schedules and losses ----------------------------------------------------------
OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "sgd_nesterov_wd_dampening": lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.8, nesterov=False, dampening=0.1, weight_decay=0.01
    ),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
    "adamw_amsgrad": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05, amsgrad=True),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-6),
    "rmsprop_centered_momentum": lambda p: torch.optim.RMSprop(p, lr=0.005, momentum=0.5, centered=True, weight_decay=0.01),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1),
    "adamax": lambda p: torch.optim.Adamax(p, lr=0.01, weight_decay=0.01),
    "nadam": lambda p: torch.optim.NAdam(p, lr=0.01, momentum_decay=0.005),
    "adadelta": lambda p: torch.optim.Adadelta(p, lr=0.5, rho=0.8),
    "adadelta_wd": lambda p: torch.optim.Adadelta(p, lr=0.5, weight_decay=0.01),
}  # fmt: skip
SCHEDULES = {
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    "multistep": lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[1, 3, 3], gamma=0.5),
    "exponential": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8),
    "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=3, eta_min=1e-3),
    "linear": lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.25, total_iters=3),
    "constant": lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=0.5, total_iters=2),
}


def test_cnn_adamw_with_schedule_resumes(tmp_path):
    """A CNN with BatchNorm, a frozen group and L2: AdamW with a StepLR schedule, 3 torch steps,
    converted, then 3 more steps on both sides from the migrated state."""
    out = run_parity(
        tmp_path, SmallCNN, OPTIMIZERS["adamw_amsgrad"], make_scheduler=SCHEDULES["step"], pre_steps=3, steps=3
    )
    training = out["result"].manifest["training"]
    assert training["optimizer_state"]["step"] == 3
    assert int(out["result"].keras_model.optimizer.iterations.numpy()) == 3  # the result is compiled too
    assert training["source"]["optimizer"]["class"] == "torch.optim.AdamW"
    assert training["source"]["lr_scheduler"]["per"] == "batch"
    assert "conv1" in training["frozen"]


# -- each optimizer, schedule and loss against torch, without a conversion ----------------------
def _emitted_train(tmp_path, module, optimizer=None, scheduler=None, loss=None, steps_per_epoch=None, class_axis=-1):
    """train.py rendered for the setup, imported."""
    from ktorch.torch_training import read_setup
    from ktorch.translate.format import format_source
    from ktorch.translate.keras_writer.compile import render_compile

    spec, _ = read_setup(module, optimizer, scheduler, loss, steps_per_epoch)
    source, keras_side, notes = render_compile(
        spec, model="'m'", version="test", class_axis=class_axis, custom_layers=False, state_step=None
    )
    (tmp_path / "train.py").write_text(format_source(source))
    return import_emitted(tmp_path, "train.py"), spec, keras_side, notes


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("schedule", [None, "cosine"])
def test_optimizer_update_rules(tmp_path, keras, name, schedule):
    """Five updates with the same gradients: the emitted Keras optimizer moves the weights as the
    torch optimizer (with its scheduler stepped after each update) does."""
    torch.manual_seed(1)
    module = nn.Linear(3, 4)
    opt = OPTIMIZERS[name](module.parameters())
    sched = SCHEDULES[schedule](opt) if schedule else None
    train, spec, keras_side, _ = _emitted_train(tmp_path, module, opt, sched)
    variables = [keras.Variable(p.detach().numpy().copy()) for p in module.parameters()]
    k_opt = train.make_optimizer()
    if keras_side["optimizer"].startswith("keras."):  # exact built-ins are used where they compute the same
        assert (name == "sgd_momentum" and schedule is None) or name == "adadelta", keras_side
    rng = np.random.default_rng(2)
    errors = []
    for _ in range(5):
        grads = [rng.normal(size=tuple(p.shape)).astype("float32") for p in module.parameters()]
        for p, g in zip(module.parameters(), grads):
            p.grad = torch.from_numpy(g)
        opt.step()
        if sched is not None:
            sched.step()
        k_opt.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], variables))
        for p, v in zip(module.parameters(), variables):
            expected = p.detach().numpy()
            errors.append(float(np.abs(np.asarray(v) - expected).max() / np.abs(expected).max()))
    assert max(errors) <= 1e-5, errors


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("steps_per_epoch", [None, 3])
def test_schedules_match_torch(tmp_path, name, steps_per_epoch):
    """The Keras schedule at Keras's step count equals torch's rate for that step (a scheduler
    stepped once per batch, or once every `steps_per_epoch` batches)."""
    module = nn.Linear(2, 2)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    sched = SCHEDULES[name](opt)
    train, spec, _, _ = _emitted_train(tmp_path, module, opt, sched, steps_per_epoch=steps_per_epoch)
    schedule = train.make_optimizer()._learning_rate
    every = steps_per_epoch or 1
    for step in range(12):
        expected = opt.param_groups[0]["lr"]
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6), (step, expected)
        if (step + 1) % every == 0:
            opt.step()
            sched.step()
    assert spec["lr_scheduler"]["per"] == ("batch" if steps_per_epoch is None else "epoch")


LOSSES = {
    "cross_entropy": (lambda: nn.CrossEntropyLoss(), "int"),
    "cross_entropy_smoothing_weight": (
        lambda: nn.CrossEntropyLoss(weight=torch.tensor([0.5, 1.0, 2.0, 1.5]), label_smoothing=0.2),
        "int",
    ),
    "cross_entropy_ignore": (lambda: nn.CrossEntropyLoss(ignore_index=2), "int"),
    "cross_entropy_sum": (lambda: nn.CrossEntropyLoss(reduction="sum"), "int"),
    "nll": (lambda: nn.NLLLoss(ignore_index=1), "logp"),
    "mse": (lambda: nn.MSELoss(), "float"),
    "l1": (lambda: nn.L1Loss(), "float"),
    "huber": (lambda: nn.HuberLoss(delta=0.7), "float"),
    "smooth_l1": (lambda: nn.SmoothL1Loss(), "float"),
    "bce_with_logits": (lambda: nn.BCEWithLogitsLoss(), "binary"),
    "bce": (lambda: nn.BCELoss(), "probabilities"),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_losses_match_torch(tmp_path, keras, name):
    """The compiled Keras loss on (labels, output) equals the torch loss on (output, labels):
    reduction, ignore_index, label smoothing and class weights included."""
    make, kind = LOSSES[name]
    loss = make()
    module = nn.Linear(2, 2)
    train, spec, keras_side, notes = _emitted_train(tmp_path, module, torch.optim.SGD(module.parameters()), loss=loss)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Identity()])
    train.compile_model(model)
    rng = np.random.default_rng(3)
    out = rng.normal(size=(6, 4)).astype("float32")
    labels = rng.integers(0, 4, size=(6,)).astype("int64")
    if kind == "logp":
        out = torch.log_softmax(torch.from_numpy(out), 1).numpy()
    elif kind == "float":
        labels = rng.normal(size=(6, 4)).astype("float32")
    elif kind in ("binary", "probabilities"):
        labels = rng.integers(0, 2, size=(6, 4)).astype("float32")
        if kind == "probabilities":
            out = torch.sigmoid(torch.from_numpy(out)).numpy()
    expected = float(loss(torch.from_numpy(out), torch.from_numpy(labels)))
    got = float(model.loss(keras.ops.convert_to_tensor(labels), keras.ops.convert_to_tensor(out)))
    assert got == pytest.approx(expected, rel=1e-5), (keras_side["loss"], got, expected)
    assert bool(notes) == (name == "bce")  # only BCELoss's clipping is a (recorded) difference


# -- five training steps on the three model kinds ----------------------------------------------
MATRIX_OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.005, momentum=0.3),
}


@pytest.mark.slow
@pytest.mark.parametrize("model_cls", [SmallCNN, TextGRU, TransformerBlock], ids=lambda c: c.__name__)
@pytest.mark.parametrize("optimizer", list(MATRIX_OPTIMIZERS))
@pytest.mark.parametrize("schedule", [None, "exponential"])
def test_five_steps_match(tmp_path, model_cls, optimizer, schedule):
    """Each model kind, with L2 on one weight and a frozen parameter group, trains the same five
    steps in torch and in the compiled Keras model."""
    run_parity(
        tmp_path, model_cls, MATRIX_OPTIMIZERS[optimizer], make_scheduler=SCHEDULES[schedule] if schedule else None
    )


# -- the contract, and what must not be lost ---------------------------------------------------
def test_resumed_state_and_hyperparameters_are_carried(tmp_path, keras):
    """ktorch.json rebuilds the source side (source_training), model.keras holds torch's moments,
    and a Keras model that lost them (compiled afresh) no longer follows torch: the parity above
    depends on the migrated state."""
    run = run_parity(
        tmp_path, SmallCNN, OPTIMIZERS["adam"], make_scheduler=SCHEDULES["multistep"], pre_steps=2, steps=1
    )
    manifest = json.loads((run["result"].out / "ktorch.json").read_text())
    training = manifest["training"]
    assert training["keras"] == {
        "optimizer": "train.TorchAdam", "schedule": "TorchMultiStepLR",
        "loss": "keras.losses.SparseCategoricalCrossentropy", "labels": training["keras"]["labels"],
    }  # fmt: skip
    net = SmallCNN()
    opt, sched, loss_fn = source_training(training, net)
    assert type(opt) is torch.optim.Adam and type(sched) is torch.optim.lr_scheduler.MultiStepLR
    assert opt.defaults["betas"] == (0.8, 0.99) and opt.defaults["eps"] == 1e-6 and opt.defaults["weight_decay"] == 0.01
    assert sorted(sched.milestones.elements()) == [1, 3, 3] and sched.gamma == 0.5
    assert isinstance(loss_fn, nn.CrossEntropyLoss)
    assert [len(g["params"]) for g in opt.param_groups] == [len(list(net.parameters()))]  # conv1's group too
    keras_opt = run["keras"].optimizer
    assert keras_opt.get_config()["epsilon"] == 1e-6 and keras_opt.get_config()["beta_1"] == 0.8
    # the moments of fc.weight, in Keras's (in, out) layout
    slots = {v.name: np.asarray(v) for v in keras_opt.variables}
    fc_kernel = run["keras"].get_layer("fc").weights[0]
    assert np.abs(slots[f"{fc_kernel.path.replace('/', '_')}_exp_avg_sq"]).max() > 0

    # a model with the migrated state dropped diverges from torch within one step
    torch.manual_seed(0)
    net = SmallCNN()
    opt = OPTIMIZERS["adam"](_groups(net, "conv1"))
    rng = np.random.default_rng(0)
    regs = {"fc.weight": 1e-3}
    for _ in range(2):
        _torch_step(net, opt, None, nn.CrossEntropyLoss(), *SmallCNN.batch(rng), regs)
    fresh = tmp_path / "fresh"
    result = ktorch.convert(
        net.eval(), fresh, example_inputs=(torch.from_numpy(SmallCNN.batch(rng)[0]),), to="keras", verify=False,
        optimizer=opt, loss=nn.CrossEntropyLoss(), regularizers={"fc.weight": ("l2", 1e-3)},
    )  # fmt: skip
    sys.path.insert(0, str(fresh))
    try:
        train = import_emitted(fresh, "train.py")
        resumed, restarted = train.load(), train.compile_model(train.load())
    finally:
        sys.path.remove(str(fresh))
    _set_dropout(net, resumed)
    _set_dropout(net, restarted)
    x, y = SmallCNN.batch(rng)
    _torch_step(net, opt, None, nn.CrossEntropyLoss(), x, y, regs)
    xk = _keras_input(x, result.manifest)
    resumed.train_on_batch(xk, y)
    restarted.train_on_batch(xk, y)
    expected = net.fc.bias.detach().numpy()
    assert np.abs(np.asarray(resumed.get_layer("fc").weights[1]) - expected).max() < 1e-6
    assert np.abs(np.asarray(restarted.get_layer("fc").weights[1]) - expected).max() > 1e-4


def test_refused_and_reported_settings(tmp_path):
    """A class with no Keras translation is an error naming it; a loss without a faithful Keras
    equivalent is a warning and is recorded in ktorch.json."""
    from ktorch.graph.errors import KtorchError
    from ktorch.torch_training import read_setup

    net = nn.Linear(3, 2)
    with pytest.raises(KtorchError, match="LBFGS has no Keras translation"):
        read_setup(net, torch.optim.LBFGS(net.parameters()), None, None, None)

    class MyAdam(torch.optim.Adam):
        pass

    with pytest.raises(KtorchError, match="MyAdam has no Keras translation"):
        read_setup(net, MyAdam(net.parameters()), None, None, None)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(KtorchError, match="LambdaLR has no Keras translation"):
        read_setup(net, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.9**e), None, None)
    two = torch.optim.SGD([{"params": [net.weight], "lr": 0.1}, {"params": [net.bias], "lr": 0.2}])
    with pytest.raises(KtorchError, match="differ in lr"):
        read_setup(net, two, None, None, None)
    with pytest.raises(KtorchError, match="maximize"):
        read_setup(net, torch.optim.Adam(net.parameters(), maximize=True), None, None, None)
    with pytest.raises(KtorchError, match="unknown optimizer 'adamz'"):
        read_setup(net, "adamz:lr=1", None, None, None)

    with pytest.warns(UserWarning, match=r"MSELoss\(reduction='sum'\) is not carried"):
        result = ktorch.convert(
            net, tmp_path / "k", example_inputs=(torch.randn(2, 3),), to="keras", verify=False,
            optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss=nn.MSELoss(reduction="sum"),
        )  # fmt: skip
    training = result.manifest["training"]
    assert training["keras"]["loss"] is None and any("MSELoss" in w for w in training["warnings"])
    assert "loss=None" in (result.out / "train.py").read_text()


def test_cli_training_options(tmp_path, monkeypatch):
    """`ktorch convert pkg:factory --optimizer ... --loss ... --lr-scheduler ...` writes the
    compiled Keras model; the text settings reach torch's constructors (and their defaults)."""
    from ktorch.cli import main

    (tmp_path / "cli_models.py").write_text(
        "import torch\n\n\ndef net():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "cli_keras"
    code = main([
        "convert", "cli_models:net", "--input-shape", "2,4", "-o", str(out), "--no-verify", "--trust-code",
        "--optimizer", "adamw:lr=2e-3,betas=(0.8,0.9)", "--loss", "cross_entropy:label_smoothing=0.1",
        "--lr-scheduler", "step:step_size=10", "--steps-per-epoch", "5",
    ])  # fmt: skip
    assert code == 0
    source = json.loads((out / "ktorch.json").read_text())["training"]["source"]
    assert source["optimizer"] == {
        "class": "torch.optim.AdamW", "params": None,
        "defaults": {"lr": 0.002, "betas": [0.8, 0.9], "eps": 1e-08, "weight_decay": 0.01, "amsgrad": False,
                     "decoupled_weight_decay": True},
    }  # fmt: skip
    assert source["lr_scheduler"]["kwargs"] == {"step_size": 10, "gamma": 0.1}
    assert source["lr_scheduler"]["per"] == "epoch" and source["lr_scheduler"]["steps_per_epoch"] == 5
    assert source["loss"]["kwargs"]["label_smoothing"] == 0.1
    code = (out / "train.py").read_text()
    assert "TorchCrossEntropy(" in code and "steps_per_epoch=5" in code and (out / "model.keras").is_file()


def test_torch_optimizer_works_after_converting_with_a_training_setup(tmp_path):
    """Import-order safety (issue 14, item 6): converting with optimizer= loads Keras on TensorFlow
    in this process (train.py, model.keras); the user's torch optimizer still steps afterwards."""
    import subprocess
    import textwrap

    script = textwrap.dedent(
        f"""
        import torch
        import ktorch

        net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        ktorch.convert(net.eval(), {str(tmp_path / "k")!r}, example_inputs=(torch.randn(2, 4),), to="keras",
                       optimizer=opt, loss=torch.nn.MSELoss(), verify=False)
        import sys
        assert "tensorflow" in sys.modules
        net.train()
        loss = net(torch.randn(3, 4)).square().mean()
        loss.backward()
        opt.step()
        torch.optim.AdamW(net.parameters()).step()
        print("optimizer ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]  # -11 is the segmentation fault
    assert "optimizer ok" in done.stdout


def test_lstm_bias_state_is_migrated(tmp_path):
    """torch's LSTM has two biases, and so has the emitted TorchLSTMCell (`bias` and
    `recurrent_bias`): the optimizer state of each is migrated to its own Keras weight, with no
    warning (a stock Keras LSTM, one bias b_ih + b_hh, could hold neither's)."""

    class TextLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.lstm = nn.LSTM(4, 3, batch_first=True)
            self.fc = nn.Linear(3, 2)

        def forward(self, tokens):
            return self.fc(self.lstm(self.embed(tokens))[0][:, -1])

    torch.manual_seed(0)
    net = TextLSTM()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    tokens = torch.randint(0, 10, (3, 5))
    nn.functional.cross_entropy(net(tokens), torch.tensor([0, 1, 1])).backward()
    opt.step()
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="training setup")
        result = ktorch.convert(
            net.eval(), tmp_path / "k", example_inputs=(tokens,), to="keras", verify=False, optimizer=opt,
            loss=nn.CrossEntropyLoss(),
        )  # fmt: skip
    training = result.manifest["training"]
    assert not training["warnings"]
    assert {"lstm/0", "lstm/1", "lstm/2", "lstm/3"} <= set(training["optimizer_state"]["weights"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer", ["sgd_momentum", "sgd_nesterov_wd_dampening", "rmsprop_centered_momentum", "adagrad", "adamax",
                  "nadam", "adadelta", "adadelta_wd"],
)  # fmt: skip
def test_resume_every_optimizer(tmp_path, optimizer):
    """Three torch steps, converted with the optimizer's state (Keras SGD's velocity is -lr times
    torch's buffer; NAdam's mu_product is a per-parameter scalar), then three more on both sides."""
    run_parity(tmp_path, SmallCNN, OPTIMIZERS[optimizer], pre_steps=3, steps=3)
