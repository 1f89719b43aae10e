"""Write train.py: the Keras training setup (optimizer, learning-rate schedule, loss, metrics and a
`fit` loop) as PyTorch code that takes the same steps Keras's `train_on_batch` takes.

Every formula follows the Keras 3 source (keras/src/optimizers/*.py, schedules, losses). Where
torch.optim computes the same update (SGD at a constant learning rate, Adadelta) train.py uses it;
where it does not (Adam's epsilon is added to sqrt(v) before the bias correction in Keras and after
it in torch; RMSprop, Adagrad and Adamax put epsilon elsewhere; Keras's Nadam has its own momentum
schedule; SGD's momentum under a schedule accumulates lr * g in Keras) train.py holds a short
torch.optim.Optimizer with Keras's update.
"""

from __future__ import annotations

from typing import Any

from ..codegen import py_literal


class Shown(str):
    """Text shown as is inside a repr-built description."""

    def __repr__(self) -> str:
        return str(self)


_HEADER = '''"""Training setup of {cls}, translated by ktorch {version} from the compile configuration of {source}.

Keras compiled the model with
    optimizer: {optimizer}
    loss: {loss}
    metrics: {metrics}
`fit` takes the steps Keras's `fit` takes: per batch the loss averaged over the batch (plus the
model's regularization losses), {clip}decoupled weight decay (Keras applies `weight_decay` as
w -= lr * weight_decay * w before the update), the optimizer update and the learning-rate schedule
stepped once per batch; the epoch's loss and metrics are averaged over its samples.

    from model import load
    from train import fit
    model = load()
    history = fit(model, train_loader, epochs=10, validation_loader=val_loader)
{resume}"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
'''

_RESUME = """
The optimizer state Keras saved with the model (step {step}) is in optimizer.safetensors; `fit`
resumes from it by default (`resume=False` starts afresh).
"""

# -- learning-rate schedules, as keras/src/optimizers/schedules/learning_rate_schedule.py -------
_SCHEDULES = {
    "ExponentialDecay": '''def learning_rate(step: int) -> float:
    """ExponentialDecay: initial * decay_rate ** (step / decay_steps){floor_doc}."""
    p = step / {decay_steps}
    {floor}return {initial_learning_rate} * {decay_rate} ** p
''',
    "InverseTimeDecay": '''def learning_rate(step: int) -> float:
    """InverseTimeDecay: initial / (1 + decay_rate * step / decay_steps){floor_doc}."""
    p = step / {decay_steps}
    {floor}return {initial_learning_rate} / (1 + {decay_rate} * p)
''',
    "PiecewiseConstantDecay": '''BOUNDARIES = {boundaries}
VALUES = {values}


def learning_rate(step: int) -> float:
    """PiecewiseConstantDecay: VALUES[i] for BOUNDARIES[i - 1] < step <= BOUNDARIES[i]."""
    for boundary, value in zip(BOUNDARIES, VALUES):
        if step <= boundary:
            return value
    return VALUES[-1]
''',
    "PolynomialDecay": '''def learning_rate(step: int) -> float:
    """PolynomialDecay(cycle={cycle}): from initial to end over decay_steps, (1 - p) ** power."""
    decay_steps = {decay_steps}
    {cycle_code}p = step / decay_steps
    return ({initial_learning_rate} - {end_learning_rate}) * (1 - p) ** {power} + {end_learning_rate}
''',
    "CosineDecay": '''def learning_rate(step: int) -> float:
    """CosineDecay: cosine decay over decay_steps from the initial rate down to alpha times it."""
    decay_steps, alpha = {decay_steps}, {alpha}
    step = min(step, decay_steps)
    decayed = (1 - alpha) * 0.5 * (1.0 + math.cos(math.pi * step / decay_steps)) + alpha
    return {initial_learning_rate} * decayed
''',
    "CosineDecayWarmup": '''def learning_rate(step: int) -> float:
    """CosineDecay: linear warmup over warmup_steps from the initial rate to warmup_target, then
    cosine decay over decay_steps down to alpha times warmup_target."""
    decay_steps, warmup_steps, alpha = {decay_steps}, {warmup_steps}, {alpha}
    step = min(step, decay_steps + warmup_steps)
    if step < warmup_steps:
        return ({warmup_target} - {initial_learning_rate}) * (step / warmup_steps) + {initial_learning_rate}
    step -= warmup_steps
    decayed = (1 - alpha) * 0.5 * (1.0 + math.cos(math.pi * step / decay_steps)) + alpha
    return {warmup_target} * decayed
''',
}

# -- optimizers: torch.optim subclasses with Keras's update rule ------------------------------
_OPTIMIZERS = {
    "SGD": '''class KerasSGD(torch.optim.Optimizer):
    """SGD as Keras updates it: v = momentum * v - lr * g; w += v (Nesterov: w += momentum * v - lr * g).

    The velocity holds lr * g, so a learning rate that changes over time weighs each past gradient
    by the rate of its own step (torch.optim.SGD's buffer holds plain gradients and is scaled by
    the current rate). State per parameter: "velocity" (Keras's momentum variable)."""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if momentum == 0:
                    p.sub_(p.grad * lr)
                    continue
                state = self.state[p]
                if not state:
                    state["velocity"] = torch.zeros_like(p)
                v = state["velocity"]
                v.mul_(momentum).sub_(p.grad * lr)
                p.add_(v * momentum - p.grad * lr if group["nesterov"] else v)
''',
    "Adam": '''class KerasAdam(torch.optim.Optimizer):
    """Adam (and AdamW, whose decoupled weight decay fit applies) as Keras updates it:

        alpha = lr * sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        w -= alpha * m / (sqrt(v) + epsilon)

    torch.optim.Adam divides by sqrt(v / (1 - beta_2 ** t)) + eps instead: its epsilon is not
    scaled by the bias correction, so the two differ early in training. State per parameter, named
    as torch.optim.Adam names it: "step", "exp_avg" (m), "exp_avg_sq" (v), "max_exp_avg_sq" (amsgrad)."""

    def __init__(self, params, lr: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False) -> None:
        super().__init__(params, {"lr": lr, "beta_1": beta_1, "beta_2": beta_2, "epsilon": epsilon, "amsgrad": amsgrad})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta_1, beta_2 = group["beta_1"], group["beta_2"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                alpha = group["lr"] * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.add_((p.grad - m) * (1 - beta_1))
                v.add_((p.grad.square() - v) * (1 - beta_2))
                if group["amsgrad"]:
                    v = torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                p.sub_(m * alpha / (v.sqrt() + group["epsilon"]))
''',
    "RMSprop": '''class KerasRMSprop(torch.optim.Optimizer):
    """RMSprop as Keras updates it: v = rho * v + (1 - rho) * g**2 (centered: minus the squared mean
    gradient), increment = lr * g / sqrt(v + epsilon), and with momentum m = momentum * m + increment.

    torch.optim.RMSprop adds eps outside the square root and scales its momentum buffer by the
    current rate. State per parameter: "square_avg" (v), "grad_avg" (centered), "momentum_buffer"
    (Keras's momentum variable, which already holds the learning rate)."""

    def __init__(self, params, lr: float = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False) -> None:
        super().__init__(params, {"lr": lr, "rho": rho, "momentum": momentum, "epsilon": epsilon, "centered": centered})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            rho, momentum = group["rho"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.zeros_like(p)
                    if momentum > 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    if group["centered"]:
                        state["grad_avg"] = torch.zeros_like(p)
                v = state["square_avg"]
                v.mul_(rho).add_(p.grad.square() * (1 - rho))
                if group["centered"]:
                    g_avg = state["grad_avg"]
                    g_avg.mul_(rho).add_(p.grad * (1 - rho))
                    denominator = v - g_avg.square() + group["epsilon"]
                else:
                    denominator = v + group["epsilon"]
                increment = group["lr"] * p.grad / denominator.sqrt()
                if momentum > 0:
                    buf = state["momentum_buffer"]
                    buf.mul_(momentum).add_(increment)
                    p.sub_(buf)
                else:
                    p.sub_(increment)
''',
    "Adagrad": '''class KerasAdagrad(torch.optim.Optimizer):
    """Adagrad as Keras updates it: sum += g**2; w -= lr * g / sqrt(sum + epsilon).

    torch.optim.Adagrad adds eps outside the square root. State per parameter: "sum"."""

    def __init__(self, params, lr: float = 0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7) -> None:
        super().__init__(params, {"lr": lr, "initial_accumulator_value": initial_accumulator_value, "epsilon": epsilon})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["sum"] = torch.full_like(p, group["initial_accumulator_value"])
                state["sum"].add_(p.grad.square())
                p.sub_(group["lr"] * p.grad / (state["sum"] + group["epsilon"]).sqrt())
''',
    "Adamax": '''class KerasAdamax(torch.optim.Optimizer):
    """Adamax as Keras updates it: m += (g - m) * (1 - beta_1); u = max(beta_2 * u, |g|);
    w -= lr * m / ((1 - beta_1 ** t) * (u + epsilon)).

    torch.optim.Adamax adds eps inside the max. State per parameter: "step", "exp_avg" (m), "exp_inf" (u)."""

    def __init__(self, params, lr: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7) -> None:
        super().__init__(params, {"lr": lr, "beta_1": beta_1, "beta_2": beta_2, "epsilon": epsilon})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta_1, beta_2 = group["beta_1"], group["beta_2"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_inf"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                m, u = state["exp_avg"], state["exp_inf"]
                m.add_((p.grad - m) * (1 - beta_1))
                torch.maximum(u * beta_2, p.grad.abs(), out=u)
                p.sub_(group["lr"] * m / ((1 - beta_1**t) * (u + group["epsilon"])))
''',
    "Nadam": '''class KerasNadam(torch.optim.Optimizer):
    """Nadam as Keras updates it, with Keras's momentum schedule u_t = beta_1 * (1 - 0.5 * 0.96 ** t)
    (torch.optim.NAdam uses 0.96 ** (0.004 * t)) and epsilon added to sqrt(v_hat).

    State per parameter: "step", "exp_avg" (m), "exp_avg_sq" (v), "mu_product" (Keras's u_product)."""

    def __init__(self, params, lr: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7) -> None:
        super().__init__(params, {"lr": lr, "beta_1": beta_1, "beta_2": beta_2, "epsilon": epsilon})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta_1, beta_2 = group["beta_1"], group["beta_2"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["mu_product"] = torch.tensor(1.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                u_t = beta_1 * (1.0 - 0.5 * 0.96**t)
                u_t_1 = beta_1 * (1.0 - 0.5 * 0.96 ** (t + 1))
                state["mu_product"] *= u_t
                u_product_t = state["mu_product"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.add_((p.grad - m) * (1 - beta_1))
                v.add_((p.grad.square() - v) * (1 - beta_2))
                m_hat = u_t_1 * m / (1 - u_product_t * u_t_1) + (1 - u_t) * p.grad / (1 - u_product_t)
                v_hat = v / (1 - beta_2**t)
                p.sub_(m_hat * group["lr"] / (v_hat.sqrt() + group["epsilon"]))
''',
}
_OPTIMIZERS["AdamW"] = _OPTIMIZERS["Adam"]
_CLASS = {"SGD": "KerasSGD", "Adam": "KerasAdam", "AdamW": "KerasAdam", "RMSprop": "KerasRMSprop"}
_CLASS.update({"Adagrad": "KerasAdagrad", "Adamax": "KerasAdamax", "Nadam": "KerasNadam"})
# the constructor arguments each emitted optimizer takes, besides lr
_ARGS = {
    "SGD": ("momentum", "nesterov"),
    "Adam": ("beta_1", "beta_2", "epsilon", "amsgrad"),
    "AdamW": ("beta_1", "beta_2", "epsilon", "amsgrad"),
    "RMSprop": ("rho", "momentum", "epsilon", "centered"),
    "Adagrad": ("initial_accumulator_value", "epsilon"),
    "Adadelta": ("rho", "epsilon"),
    "Adamax": ("beta_1", "beta_2", "epsilon"),
    "Nadam": ("beta_1", "beta_2", "epsilon"),
}
# Keras's per-variable slots, in the order Keras creates them (add_optimizer_variables interleaves
# the names of one call over the variables; separate calls follow one another), named as the
# emitted optimizer names its state.
_TORCH_SGD_ARGS = {"momentum": "momentum", "nesterov": "nesterov"}


def uses_torch_optimizer(opt: dict[str, Any]) -> str | None:
    """The torch.optim class that computes exactly Keras's update, if one does."""
    if opt["class"] == "SGD" and (opt["schedule"] is None or not opt["config"]["momentum"]):
        return "torch.optim.SGD"  # constant rate: Keras's velocity is -lr times torch's buffer
    if opt["class"] == "Adadelta":
        return "torch.optim.Adadelta"  # same formulas, epsilon inside both square roots
    return None


def slot_groups(opt: dict[str, Any]) -> tuple[list[tuple[str, ...]], list[str]]:
    """([names interleaved over the variables, per add_optimizer_variables call], [global scalars
    after them]) of Keras's optimizer variables, in the emitted optimizer's state names."""
    c, cls = opt["config"], opt["class"]
    torch_sgd = uses_torch_optimizer(opt) == "torch.optim.SGD"
    groups: dict[str, list[tuple[str, ...]]] = {
        "SGD": [("momentum_buffer" if torch_sgd else "velocity",)] if c.get("momentum") else [],
        "Adam": [("exp_avg", "exp_avg_sq")] + ([("max_exp_avg_sq",)] if c.get("amsgrad") else []),
        "RMSprop": [("square_avg",)]
        + ([("momentum_buffer",)] if c.get("momentum", 0) > 0 else [])
        + ([("grad_avg",)] if c.get("centered") else []),
        "Adagrad": [("sum",)],
        "Adadelta": [("square_avg", "acc_delta")],
        "Adamax": [("exp_avg", "exp_inf")],
        "Nadam": [("exp_avg", "exp_avg_sq")],
    }
    groups["AdamW"] = groups["Adam"]
    ema = [("ema",)] if c.get("use_ema") else []  # the base optimizer's build creates the averages first
    return ema + groups[cls], (["mu_product"] if cls == "Nadam" else [])


def _describe(obj: dict[str, Any] | None, keys: dict[str, Any]) -> str:
    if obj is None:
        return "none"
    args = ", ".join(f"{k}={v!r}" for k, v in keys.items())
    return f"{obj['class']}({args})"


def render_schedule(schedule: dict[str, Any]) -> str:
    cls, c = schedule["class"], dict(schedule["config"])
    if cls in ("ExponentialDecay", "InverseTimeDecay"):
        floor = "p = math.floor(p)  # staircase\n    " if c["staircase"] else ""
        return _SCHEDULES[cls].format(floor=floor, floor_doc=", p floored (staircase)" if c["staircase"] else "", **c)
    if cls == "PiecewiseConstantDecay":
        return _SCHEDULES[cls].format(
            boundaries=py_literal(list(c["boundaries"])), values=py_literal(list(c["values"]))
        )
    if cls == "PolynomialDecay":
        cycle_code = (
            "# cycle: the first multiple of decay_steps not below step (decay_steps itself at step 0)\n"
            "    decay_steps = decay_steps * (1.0 if step == 0 else math.ceil(step / decay_steps))\n    "
            if c["cycle"]
            else "step = min(step, decay_steps)\n    "
        )
        return _SCHEDULES[cls].format(cycle_code=cycle_code, **c)
    if cls == "CosineDecay":
        return _SCHEDULES["CosineDecay" if c["warmup_target"] is None else "CosineDecayWarmup"].format(**c)
    raise ValueError(f"no translation for the schedule {cls}")


def render_optimizer(opt: dict[str, Any]) -> tuple[str, str]:
    """(module-level code, the body of make_optimizer) for the optimizer spec."""
    c = opt["config"]
    lr = "learning_rate(0)" if opt["schedule"] is not None else py_literal(opt["learning_rate"])
    torch_cls = uses_torch_optimizer(opt)
    if torch_cls == "torch.optim.SGD":
        kwargs = {"momentum": c["momentum"], "nesterov": c["nesterov"]} if c["momentum"] else {}
        note = "    # Keras's velocity v = momentum * v - lr * g is -lr times torch's buffer: the same steps\n"
        code, cls = "", torch_cls
    elif torch_cls == "torch.optim.Adadelta":
        kwargs = {"rho": c["rho"], "eps": c["epsilon"]}
        note = "    # torch.optim.Adadelta computes Keras's Adadelta update (epsilon inside both square roots)\n"
        code, cls = "", torch_cls
    else:
        kwargs = {k: c[k] for k in _ARGS[opt["class"]]}
        note, code, cls = "", _OPTIMIZERS[opt["class"]], _CLASS[opt["class"]]
    args = ", ".join([f"lr={lr}"] + [f"{k}={py_literal(v)}" for k, v in kwargs.items()])
    body = f"{note}    optimizer = {cls}(model.parameters(), {args})\n"
    if opt["schedule"] is not None:
        body += (
            "    # Keras evaluates the schedule at the optimizer's step count before each update\n"
            "    for group in optimizer.param_groups:\n"
            '        group.setdefault("initial_lr", group["lr"])\n'
            "    scheduler = torch.optim.lr_scheduler.LambdaLR(\n"
            "        optimizer, lambda step: learning_rate(step) / learning_rate(0), last_epoch=start_step - 1\n"
            "    )\n"
        )
    else:
        body += "    scheduler = None\n"
    return code, body


_CLIP = {
    "clipnorm": '''def clip_gradients(model: nn.Module) -> None:
    """Keras's clipnorm: each gradient tensor on its own is scaled to an L2 norm of at most CLIPNORM."""
    for p in model.parameters():
        if p.grad is not None:
            norm = p.grad.square().sum().sqrt()
            p.grad.mul_(CLIPNORM / torch.maximum(norm, torch.tensor(CLIPNORM)))
''',
    "global_clipnorm": '''def clip_gradients(model: nn.Module) -> None:
    """Keras's global_clipnorm: all gradients together are scaled to a global L2 norm of at most GLOBAL_CLIPNORM."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.sqrt(sum(g.square().sum() for g in grads))
    scale = GLOBAL_CLIPNORM * torch.minimum(1.0 / norm, torch.tensor(1.0 / GLOBAL_CLIPNORM))
    for g in grads:
        g.mul_(scale)
''',
    "clipvalue": '''def clip_gradients(model: nn.Module) -> None:
    """Keras's clipvalue: every gradient element is clipped to [-CLIPVALUE, CLIPVALUE]."""
    torch.nn.utils.clip_grad_value_(model.parameters(), CLIPVALUE)
''',
}

_DECAY = '''def decay_weights(optimizer: torch.optim.Optimizer) -> None:
    """Keras's weight_decay, decoupled from the gradient: w -= w * WEIGHT_DECAY * lr, before the update.
    (torch.optim.SGD's and Adam's weight_decay add it to the gradient instead.)"""
    with torch.no_grad():
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.sub_(p * WEIGHT_DECAY * group["lr"])
'''

_EMA = '''def update_weight_average(optimizer: torch.optim.Optimizer) -> None:
    """Keras's use_ema: after each update, average = EMA_MOMENTUM * average + (1 - EMA_MOMENTUM) * w
    (the first step copies w){overwrite_doc}. The average lives in the optimizer's state ("ema")."""
    with torch.no_grad():
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = optimizer.state[p]
                if "ema" not in state:
                    state["ema"], state["ema_step"] = p.detach().clone(), torch.tensor(0.0)
                else:
                    state["ema"].mul_(EMA_MOMENTUM).add_(p * (1 - EMA_MOMENTUM))
                state["ema_step"] += 1
{overwrite}

def use_weight_average(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Give the model its averaged weights, as Keras's fit does when it ends (finalize_variable_values)."""
    with torch.no_grad():
        for p in model.parameters():
            if "ema" in optimizer.state[p]:
                p.copy_(optimizer.state[p]["ema"])
'''
_EMA_OVERWRITE = """                if int(state["ema_step"]) % EMA_OVERWRITE_FREQUENCY == 0:
                    p.copy_(state["ema"])
"""


# -- losses, as keras/src/losses/losses.py and keras/src/backend/tensorflow/nn.py --------------
_LOSSES = {
    "CategoricalCrossentropy": '''def loss_fn(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """CategoricalCrossentropy(from_logits={from_logits}, label_smoothing={label_smoothing}), {reduction_doc}."""
    y_true = y_true.to(y_pred.dtype)
{smoothing}{body}    return {reduce}
''',
    "SparseCategoricalCrossentropy": '''def loss_fn(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """SparseCategoricalCrossentropy(from_logits={from_logits}), {reduction_doc}."""
    if y_true.dim() == y_pred.dim() and y_true.shape[{axis}] == 1:
        y_true = y_true.squeeze({axis})
{body}    return {reduce}
''',
    "BinaryCrossentropy": '''def loss_fn(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """BinaryCrossentropy(from_logits={from_logits}, label_smoothing={label_smoothing}), {reduction_doc}."""
    y_true = y_true.to(y_pred.dtype)
{smoothing}{body}    return {reduce}
''',
    "MeanSquaredError": '''def loss_fn(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """MeanSquaredError: the mean of (y_true - y_pred) ** 2 over the last axis, {reduction_doc}."""
    per_sample = (y_true.to(y_pred.dtype).reshape(y_pred.shape) - y_pred).square().mean({axis})
    return {reduce}
''',
    "MeanAbsoluteError": '''def loss_fn(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """MeanAbsoluteError: the mean of |y_true - y_pred| over the last axis, {reduction_doc}."""
    per_sample = (y_true.to(y_pred.dtype).reshape(y_pred.shape) - y_pred).abs().mean({axis})
    return {reduce}
''',
    "Huber": '''def loss_fn(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """Huber(delta={delta}): 0.5 * e**2 where |e| <= delta, else delta * |e| - 0.5 * delta**2;
    the mean over the last axis, {reduction_doc}."""
    error = (y_pred - y_true.to(y_pred.dtype).reshape(y_pred.shape)).abs()
    per_sample = torch.where(error <= {delta}, 0.5 * error.square(), {delta} * error - 0.5 * {delta} ** 2).mean({axis})
    return {reduce}
''',
}
_REDUCE = {"sum_over_batch_size": "per_sample.mean()", "mean": "per_sample.mean()", "sum": "per_sample.sum()"}
_REDUCE["mean_with_sample_weight"] = "per_sample.mean()"


def render_loss(loss: dict[str, Any], class_axis: int) -> str:
    c, cls = loss["config"], loss["class"]
    axis = class_axis
    fields: dict[str, Any] = {
        **c,
        "axis": axis,
        "reduce": _REDUCE[loss["reduction"]],
        "reduction_doc": {"sum": "summed over the batch"}.get(
            loss["reduction"], "averaged over the batch (Keras's sum_over_batch_size)"
        ),
    }
    if cls == "CategoricalCrossentropy":
        fields["smoothing"] = (
            f"    # label smoothing over the class axis: y * (1 - s) + s / num_classes\n"
            f"    y_true = y_true * (1.0 - {c['label_smoothing']}) + {c['label_smoothing']} / y_true.shape[{axis}]\n"
            if c["label_smoothing"]
            else ""
        )
        if c["from_logits"]:
            fields["body"] = f"    per_sample = -(y_true * torch.log_softmax(y_pred, dim={axis})).sum({axis})\n"
        else:
            fields["body"] = (
                "    # probabilities: renormalised, clipped to [EPSILON, 1 - EPSILON], then the log (no second\n"
                "    # softmax); TensorFlow's Keras takes the log-softmax of a softmax layer's input instead,\n"
                "    # which agrees unless a probability is below EPSILON\n"
                f"    p = y_pred / y_pred.sum({axis}, keepdim=True)\n"
                f"    per_sample = -(y_true * p.clamp(EPSILON, 1.0 - EPSILON).log()).sum({axis})\n"
            )
    elif cls == "SparseCategoricalCrossentropy":
        if c["from_logits"]:
            fields["body"] = (
                f"    logits = y_pred.movedim({axis}, 1)\n"
                '    per_sample = nn.functional.cross_entropy(logits, y_true.long(), reduction="none")\n'
            )
        else:
            fields["body"] = (
                "    # probabilities: clipped to [EPSILON, 1 - EPSILON]; their log is taken as logits, as Keras does\n"
                f"    log_p = y_pred.clamp(EPSILON, 1.0 - EPSILON).log()\n"
                f"    log_p = log_p.movedim({axis}, 1)\n"
                '    per_sample = nn.functional.cross_entropy(log_p, y_true.long(), reduction="none")\n'
            )
    elif cls == "BinaryCrossentropy":
        fields["smoothing"] = (
            f"    y_true = y_true * (1.0 - {c['label_smoothing']}) + 0.5 * {c['label_smoothing']}  # label smoothing\n"
            if c["label_smoothing"]
            else ""
        )
        if c["from_logits"]:
            fields["body"] = (
                "    y_true = y_true.reshape(y_pred.shape)\n"
                '    bce = nn.functional.binary_cross_entropy_with_logits(y_pred, y_true, reduction="none")\n'
                f"    per_sample = bce.mean({axis})\n"
            )
        else:
            fields["body"] = (
                "    # probabilities clipped to [EPSILON, 1 - EPSILON] before the logs (TensorFlow's Keras uses a\n"
                "    # sigmoid layer's input as logits instead: the same unless a probability is below EPSILON)\n"
                "    p = y_pred.clamp(EPSILON, 1.0 - EPSILON)\n"
                "    y_true = y_true.reshape(p.shape)\n"
                f"    per_sample = -(y_true * p.log() + (1 - y_true) * (1 - p).log()).mean({axis})\n"
            )
    return _LOSSES[cls].format(**fields)


# -- metrics, as keras/src/metrics/accuracy_metrics.py -----------------------------------------
_METRICS = {
    "accuracy": '''def accuracy(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """Keras's "accuracy", resolved as Keras resolves it from the shapes: binary when the model
    outputs one value per sample, sparse when the labels have one axis less (or size 1), else categorical."""
    if y_pred.shape[{axis}] == 1:
        return binary_accuracy(y_pred, y_true)
    if y_true.dim() < y_pred.dim() or (y_true.shape[{axis}] == 1 and y_pred.shape[{axis}] > 1):
        return sparse_categorical_accuracy(y_pred, y_true)
    return categorical_accuracy(y_pred, y_true)
''',
    "binary_accuracy": '''def binary_accuracy(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """1.0 where (y_pred > 0.5) equals the label, per element."""
    return ((y_pred > 0.5).to(y_true.dtype) == y_true.reshape(y_pred.shape)).float()
''',
    "sparse_categorical_accuracy": '''def sparse_categorical_accuracy(
    y_pred: torch.Tensor, y_true: torch.Tensor
) -> torch.Tensor:
    """1.0 where the arg-max class equals the integer label."""
    if y_true.dim() == y_pred.dim():
        y_true = y_true.squeeze({axis})
    return (y_pred.argmax({axis}) == y_true.long()).float()
''',
    "categorical_accuracy": '''def categorical_accuracy(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """1.0 where the arg-max class equals the arg-max of the one-hot label."""
    return (y_pred.argmax({axis}) == y_true.argmax({axis})).float()
''',
    "mean_squared_error": """def mean_squared_error(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    return (y_true.reshape(y_pred.shape) - y_pred).square().mean({axis})
""",
    "mean_absolute_error": """def mean_absolute_error(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    return (y_true.reshape(y_pred.shape) - y_pred).abs().mean({axis})
""",
}
_METRIC_NEEDS = {"accuracy": ("binary_accuracy", "sparse_categorical_accuracy", "categorical_accuracy")}

_LOOP = '''
def make_optimizer(model: nn.Module, start_step: int = 0):
    """The optimizer Keras compiled with, and its learning-rate scheduler (None for a constant rate);
    `start_step` is the number of steps already taken (Keras's `optimizer.iterations`)."""
{optimizer_body}    return optimizer, scheduler


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, path: str | Path | None = None) -> int:
    """Fill `optimizer`'s state from the optimizer.safetensors ktorch migrated from the Keras file
    (tensors named <parameter>.<state>); returns the step count Keras had reached."""
    path = Path(path) if path is not None else Path(__file__).with_name("optimizer.safetensors")
    tensors = load_file(str(path))
    step = int(tensors.pop("step").item())
    parameters = dict(model.named_parameters())
    for key, tensor in tensors.items():
        name, slot = key.rsplit(".", 1)
        state = optimizer.state[parameters[name]]
        if slot in ("step", "mu_product", "ema_step"):  # per-parameter scalars
            state[slot] = tensor.clone().float()
        else:
            state[slot] = tensor.to(parameters[name].device, parameters[name].dtype).clone()
    return step


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, x, y
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Keras training step on the batch (x, y); returns the loss and the predictions."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    y_pred = model(*x) if isinstance(x, (tuple, list)) else model(x)
    loss = loss_fn(y_pred, y)
    # the Keras layers' regularizers, when model.py carries them (Keras adds them to the loss)
    if hasattr(model, "regularization_loss"):
        loss = loss + model.regularization_loss()
    loss.backward()
{clip_call}{decay_call}    optimizer.step()
{ema_call}    if hasattr(model, "apply_constraints"):  # Keras applies the weight constraints after the update
        model.apply_constraints()
    if scheduler is not None:
        scheduler.step()
    return loss.detach(), y_pred.detach()


class Average:
    """A running mean weighted by the number of samples, as Keras's Mean metric keeps it."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, value: torch.Tensor, count: int) -> None:
        self.total += float(value) * count
        self.count += count

    def result(self) -> float:
        return self.total / max(self.count, 1)


def evaluate(model: nn.Module, loader) -> dict[str, float]:
    """The loss and metrics over `loader`, averaged over its samples, in eval mode."""
    model.eval()
    averages = {{name: Average() for name in ["loss", *METRICS]}}
    with torch.no_grad():
        for x, y in loader:
            y_pred = model(*x) if isinstance(x, (tuple, list)) else model(x)
            loss = loss_fn(y_pred, y)
            if hasattr(model, "regularization_loss"):
                loss = loss + model.regularization_loss()
            n = len(y)
            averages["loss"].update(loss, n)
            for name, metric in METRICS.items():
                values = metric(y_pred, y)
                averages[name].update(values.mean(), values.numel())
    return {{name: a.result() for name, a in averages.items()}}


def fit(
    model: nn.Module,
    train_loader,
    epochs: int,
    validation_loader=None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    resume: bool = True,
    verbose: bool = True,
) -> dict[str, list[float]]:
    """Train as Keras's `model.fit` does and return the history (per-epoch loss, metrics and, with
    `validation_loader`, their "val_" counterparts). `train_loader` yields (x, y) batches.
    Without `optimizer`, the compiled one is built{resume_doc}."""
    if optimizer is None:
        start = 0
{resume_code}        optimizer, scheduler = make_optimizer(model, start_step=start)
{resume_load}    history: dict[str, list[float]] = {{}}
    for epoch in range(epochs):
        averages = {{name: Average() for name in ["loss", *METRICS]}}
        for x, y in train_loader:
            loss, y_pred = train_step(model, optimizer, scheduler, x, y)
            averages["loss"].update(loss, len(y))
            for name, metric in METRICS.items():
                values = metric(y_pred, y)
                averages[name].update(values.mean(), values.numel())
        logs = {{name: a.result() for name, a in averages.items()}}
        if validation_loader is not None:
            logs.update({{f"val_{{k}}": v for k, v in evaluate(model, validation_loader).items()}})
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        if verbose:
            print(f"epoch {{epoch + 1}}/{{epochs}}: " + ", ".join(f"{{k}}={{v:.4f}}" for k, v in logs.items()))
{ema_final}    return history
'''


def render_train(
    spec: dict[str, Any],
    *,
    class_name: str,
    source: str,
    version: str,
    class_axis: int = -1,
    state_step: int | None = None,
) -> str:
    """The source of train.py for the training spec (see translate/keras_reader/training.py)."""
    opt, loss = spec.get("optimizer"), spec.get("loss")
    if opt is None or loss is None:
        raise ValueError("train.py needs a translated optimizer and loss")
    c = opt["config"]
    schedule = opt["schedule"]
    shown: dict[str, Any] = {"learning_rate": opt["learning_rate"]}
    if schedule is not None:
        args = ", ".join(f"{k}={v!r}" for k, v in schedule["config"].items())
        shown = {"learning_rate": Shown(f"{schedule['class']}({args})")}
    shown.update({k: v for k, v in c.items() if v not in (None, False) and k not in ("ema_momentum",)})
    clip_kind = next((k for k in ("clipnorm", "global_clipnorm", "clipvalue") if c.get(k)), None)
    parts = [
        _HEADER.format(
            cls=class_name,
            version=version,
            source=source,
            optimizer=_describe(opt, shown),
            loss=_describe(loss, {**loss["config"], "reduction": loss["reduction"]}),
            metrics=spec.get("metrics") or [],
            clip=f"gradient clipping ({clip_kind}), " if clip_kind else "",
            resume=_RESUME.format(step=state_step) if state_step is not None else "",
        )
    ]
    constants = ["EPSILON = 1e-7  # keras.backend.epsilon(): probabilities are clipped to [EPSILON, 1 - EPSILON]"]
    if clip_kind:
        constants.append(f"{clip_kind.upper()} = {py_literal(float(c[clip_kind]))}")
    if c.get("weight_decay"):
        constants.append(f"WEIGHT_DECAY = {py_literal(float(c['weight_decay']))}")
    if c.get("use_ema"):
        constants.append(f"EMA_MOMENTUM = {py_literal(float(c['ema_momentum']))}")
        if c.get("ema_overwrite_frequency"):
            constants.append(f"EMA_OVERWRITE_FREQUENCY = {int(c['ema_overwrite_frequency'])}")
    parts.append("\n" + "\n".join(constants) + "\n")
    if opt["schedule"] is not None:
        parts.append("\n\n" + render_schedule(opt["schedule"]))
    code, body = render_optimizer(opt)
    if code:
        parts.append("\n\n" + code)
    if clip_kind:
        parts.append("\n\n" + _CLIP[clip_kind])
    if c.get("weight_decay"):
        parts.append("\n\n" + _DECAY)
    if c.get("use_ema"):
        every = c.get("ema_overwrite_frequency")
        parts.append(
            "\n\n"
            + _EMA.format(
                overwrite_doc=", and every EMA_OVERWRITE_FREQUENCY steps the weights become the average"
                if every
                else "",
                overwrite=_EMA_OVERWRITE if every else "",
            )
        )
    parts.append("\n\n" + render_loss(loss, class_axis))
    names: list[str] = []
    for m in spec.get("metrics") or []:
        for dep in (*_METRIC_NEEDS.get(m, ()), m):
            if dep not in names:
                names.append(dep)
    for name in names:
        parts.append("\n\n" + _METRICS[name].format(axis=class_axis))
    metrics = ", ".join(f'"{m}": {m}' for m in dict.fromkeys(spec.get("metrics") or []))
    parts.append(f"\n\nMETRICS = {{{metrics}}}  # name -> per-sample values, averaged over the epoch\n")
    resume = state_step is not None
    parts.append(
        _LOOP.format(
            optimizer_body=body,
            clip_call="    clip_gradients(model)\n" if clip_kind else "",
            decay_call="    decay_weights(optimizer)\n" if c.get("weight_decay") else "",
            ema_call="    update_weight_average(optimizer)\n" if c.get("use_ema") else "",
            ema_final="    use_weight_average(model, optimizer)  # Keras's fit ends on the averaged weights\n"
            if c.get("use_ema")
            else "",
            resume_doc=", resuming from optimizer.safetensors when `resume`" if resume else "",
            resume_code=(
                '        state_file = Path(__file__).with_name("optimizer.safetensors")\n'
                "        if resume and state_file.is_file():\n"
                '            start = int(load_file(str(state_file))["step"].item())\n'
            )
            if resume
            else "",
            resume_load=("        if start:\n            load_optimizer_state(model, optimizer, state_file)\n")
            if resume
            else "",
        )
    )
    return "".join(parts)


def class_axis_of(graph: Any) -> int:
    """Where the emitted model's single output keeps the source's last (class) axis."""
    value = graph.outputs[0]
    rank = len(value.shape) if value.shape is not None else 0
    if not value.perm or rank == 0:
        return -1
    position = list(value.perm).index(rank - 1)
    return -1 if position == rank - 1 else position


def render_training(output: Any, graph: Any, *, source: str, version: str) -> None:
    """Fill output.train_source, optimizer_state and training (the manifest entry) from graph.meta."""
    spec = graph.meta["training"]
    warnings = list(spec.get("warnings", []))
    entry: dict[str, Any] = {"optimizer": None, "loss": None, "metrics": spec.get("metrics", []), "warnings": warnings}
    opt, loss = spec.get("optimizer"), spec.get("loss")
    if opt is not None:
        entry["optimizer"] = {
            "keras": opt["class"],
            "torch": uses_torch_optimizer(opt) or f"train.{_CLASS.get(opt['class'], opt['class'])}",
            "schedule": opt["schedule"]["class"] if opt["schedule"] else None,
        }
    if loss is not None:
        entry["loss"] = loss["class"]
    if len(graph.outputs) != 1:
        warnings.append("train.py is written for single-output models; this model has several outputs")
    elif opt is not None and loss is not None:
        state = graph.meta.get("training_state")
        step = int(state["step"]) if state is not None else None
        output.train_source = format_training(
            render_train(
                spec,
                class_name=output.class_name,
                source=source,
                version=version,
                class_axis=class_axis_of(graph),
                state_step=step,
            )
        )
        entry["file"] = "train.py"
        if state is not None:
            output.optimizer_state = state
            entry["optimizer_state"] = {"file": "optimizer.safetensors", "step": step}
    output.training = entry


def format_training(code: str) -> str:
    from ..format import format_source

    return format_source(code)
