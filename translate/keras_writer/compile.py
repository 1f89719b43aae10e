"""Write the Keras output's train.py: the PyTorch training setup (translate/torch_reader/optim.py)
as the Keras optimizer, learning-rate schedule and loss that take the steps torch takes, and
`compile_model(model)`; the writer saves the compiled model, with the migrated optimizer state, as
model.keras.

Every formula follows torch.optim's single-tensor code (torch/optim/*.py). Keras's own optimizer
is used where it computes the same update (SGD at a constant rate without dampening or weight
decay; Adadelta without weight decay); elsewhere train.py holds a short registered
`keras.optimizers.Optimizer` subclass with torch's update: torch's Adam adds eps after dividing
sqrt(v) by its bias correction (Keras before), its weight_decay is L2 added to the gradient
(Keras decays decoupled), RMSprop and Adagrad add eps outside the square root, Adamax inside the
max, NAdam has its own momentum schedule. Schedules are registered `LearningRateSchedule`s with
torch's closed forms, evaluated at Keras's step count (once per batch, or per epoch of
`steps_per_epoch` batches).
"""

from __future__ import annotations

from typing import Any

from ..codegen import py_literal

_REGISTER = '@keras.saving.register_keras_serializable(package="ktorch")\n'

_HEADER = '''"""Training setup of {model}, translated by ktorch {version} from PyTorch.

PyTorch trained with
    optimizer: {optimizer}
    lr_scheduler: {scheduler}
    loss: {loss}
`compile_model(model)` compiles the Keras model so that `train_on_batch` and `fit` take the steps
PyTorch takes for `loss_fn(module(x), y)`, `loss.backward()`, `optimizer.step()`{sched_step}.
{labels}
model.keras beside this file is the compiled model{state}:

    import train
    model = train.load()  # keras.models.load_model("model.keras") once train.py is imported
    model.fit(x, y, batch_size=32, epochs=1)
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import ops
'''

# -- optimizers with torch's update rule -------------------------------------------------------
_OPTIMIZERS = {
    "SGD": '''class TorchSGD(keras.optimizers.Optimizer):
    """torch.optim.SGD's update: g += weight_decay * w (L2, coupled); buf = g on the first step, then
    buf = momentum * buf + (1 - dampening) * g; g = g + momentum * buf (nesterov) or buf; w -= lr * g.

    Keras's SGD keeps lr * g in its velocity and decays weights decoupled, so it parts from torch
    under a schedule, with dampening or with weight decay. State per variable: "momentum_buffer"."""

    def __init__(self, learning_rate=0.001, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov
        self.torch_weight_decay = weight_decay

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.momentum_buffers = self.add_optimizer_variables(var_list, "momentum_buffer") if self.momentum else []

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        if self.torch_weight_decay:
            g = g + variable * self.torch_weight_decay
        if self.momentum:
            buf = self.momentum_buffers[self._get_variable_index(variable)]
            first = ops.equal(self.iterations, 0)
            self.assign(buf, ops.where(first, g, buf * self.momentum + g * (1 - self.dampening)))
            g = g + buf * self.momentum if self.nesterov else buf
        self.assign_sub(variable, lr * g)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, dampening=self.dampening, weight_decay=self.torch_weight_decay,
                      nesterov=self.nesterov)
        return config
''',
    "Adam": '''class TorchAdam(keras.optimizers.Optimizer):
    """torch.optim.Adam's and AdamW's update: w *= 1 - lr * weight_decay (decoupled, AdamW) or
    g += weight_decay * w (Adam); m = beta_1 * m + (1 - beta_1) * g; v = beta_2 * v + (1 - beta_2) * g**2;
    w -= lr / (1 - beta_1**t) * m / (sqrt(v) / sqrt(1 - beta_2**t) + epsilon).

    Keras's Adam adds epsilon before the bias correction (torch after it), so the two differ
    while v is small. State per variable: "exp_avg", "exp_avg_sq", "max_exp_avg_sq" (amsgrad)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, amsgrad=False, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = beta_1, beta_2, epsilon, amsgrad
        self.torch_weight_decay, self.decoupled_weight_decay = weight_decay, decoupled_weight_decay

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.exp_avgs, self.exp_avg_sqs = self.add_optimizer_variables(var_list, ["exp_avg", "exp_avg_sq"])
        self.max_exp_avg_sqs = self.add_optimizer_variables(var_list, "max_exp_avg_sq") if self.amsgrad else []

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        i = self._get_variable_index(variable)
        if self.torch_weight_decay and self.decoupled_weight_decay:
            self.assign(variable, variable * (1 - lr * self.torch_weight_decay))
        elif self.torch_weight_decay:
            g = g + variable * self.torch_weight_decay
        t = ops.cast(self.iterations + 1, "float64")  # the bias corrections in float64, as torch's Python floats
        bias_correction1 = ops.cast(1 - ops.power(ops.cast(self.beta_1, "float64"), t), variable.dtype)
        bias_correction2_sqrt = ops.cast(ops.sqrt(1 - ops.power(ops.cast(self.beta_2, "float64"), t)), variable.dtype)
        m, v = self.exp_avgs[i], self.exp_avg_sqs[i]
        self.assign_add(m, (g - m) * (1 - self.beta_1))
        self.assign(v, v * self.beta_2 + g * g * (1 - self.beta_2))
        if self.amsgrad:
            self.assign(self.max_exp_avg_sqs[i], ops.maximum(self.max_exp_avg_sqs[i], v))
            v = self.max_exp_avg_sqs[i]
        denominator = ops.sqrt(v) / bias_correction2_sqrt + self.epsilon
        self.assign_sub(variable, lr / bias_correction1 * m / denominator)

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon, weight_decay=self.torch_weight_decay,
                      decoupled_weight_decay=self.decoupled_weight_decay, amsgrad=self.amsgrad)
        return config
''',
    "RMSprop": '''class TorchRMSprop(keras.optimizers.Optimizer):
    """torch.optim.RMSprop's update: g += weight_decay * w; v = alpha * v + (1 - alpha) * g**2;
    avg = sqrt(v - g_avg**2) (centered, g_avg = alpha * g_avg + (1 - alpha) * g) or sqrt(v), plus epsilon;
    with momentum buf = momentum * buf + g / avg, w -= lr * buf; else w -= lr * g / avg.

    Keras's RMSprop adds epsilon inside the square root and keeps lr in its momentum. State per
    variable: "square_avg", "momentum_buffer" (momentum > 0), "grad_avg" (centered)."""

    def __init__(self, learning_rate=0.01, alpha=0.99, epsilon=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.alpha, self.epsilon, self.momentum, self.centered = alpha, epsilon, momentum, centered
        self.torch_weight_decay = weight_decay

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.square_avgs = self.add_optimizer_variables(var_list, "square_avg")
        self.momentum_buffers = self.add_optimizer_variables(var_list, "momentum_buffer") if self.momentum > 0 else []
        self.grad_avgs = self.add_optimizer_variables(var_list, "grad_avg") if self.centered else []

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        i = self._get_variable_index(variable)
        if self.torch_weight_decay:
            g = g + variable * self.torch_weight_decay
        v = self.square_avgs[i]
        self.assign(v, v * self.alpha + g * g * (1 - self.alpha))
        if self.centered:
            g_avg = self.grad_avgs[i]
            self.assign_add(g_avg, (g - g_avg) * (1 - self.alpha))
            avg = ops.sqrt(v - g_avg * g_avg) + self.epsilon
        else:
            avg = ops.sqrt(v) + self.epsilon
        if self.momentum > 0:
            buf = self.momentum_buffers[i]
            self.assign(buf, buf * self.momentum + g / avg)
            self.assign_sub(variable, lr * buf)
        else:
            self.assign_sub(variable, lr * g / avg)

    def get_config(self):
        config = super().get_config()
        config.update(alpha=self.alpha, epsilon=self.epsilon, weight_decay=self.torch_weight_decay,
                      momentum=self.momentum, centered=self.centered)
        return config
''',
    "Adagrad": '''class TorchAdagrad(keras.optimizers.Optimizer):
    """torch.optim.Adagrad's update: g += weight_decay * w; sum += g**2;
    w -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(sum) + epsilon).

    Keras's Adagrad adds epsilon inside the square root. State per variable: "sum"."""

    def __init__(self, learning_rate=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 epsilon=1e-10, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.lr_decay, self.initial_accumulator_value, self.epsilon = lr_decay, initial_accumulator_value, epsilon
        self.torch_weight_decay = weight_decay

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        initial = keras.initializers.Constant(self.initial_accumulator_value)
        self.sums = self.add_optimizer_variables(var_list, "sum", initializer=initial)

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        if self.torch_weight_decay:
            g = g + variable * self.torch_weight_decay
        t = ops.cast(self.iterations + 1, variable.dtype)
        s = self.sums[self._get_variable_index(variable)]
        self.assign_add(s, g * g)
        self.assign_sub(variable, lr / (1 + (t - 1) * self.lr_decay) * g / (ops.sqrt(s) + self.epsilon))

    def get_config(self):
        config = super().get_config()
        config.update(lr_decay=self.lr_decay, weight_decay=self.torch_weight_decay,
                      initial_accumulator_value=self.initial_accumulator_value, epsilon=self.epsilon)
        return config
''',
    "Adamax": '''class TorchAdamax(keras.optimizers.Optimizer):
    """torch.optim.Adamax's update: g += weight_decay * w; m = beta_1 * m + (1 - beta_1) * g;
    u = max(beta_2 * u, |g| + epsilon); w -= lr / (1 - beta_1**t) * m / u.

    Keras's Adamax adds epsilon outside the max. State per variable: "exp_avg", "exp_inf"."""

    def __init__(self, learning_rate=0.002, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=0.0, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.torch_weight_decay = weight_decay

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.exp_avgs, self.exp_infs = self.add_optimizer_variables(var_list, ["exp_avg", "exp_inf"])

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        i = self._get_variable_index(variable)
        if self.torch_weight_decay:
            g = g + variable * self.torch_weight_decay
        t = ops.cast(self.iterations + 1, "float64")
        bias_correction = ops.cast(1 - ops.power(ops.cast(self.beta_1, "float64"), t), variable.dtype)
        m, u = self.exp_avgs[i], self.exp_infs[i]
        self.assign_add(m, (g - m) * (1 - self.beta_1))
        self.assign(u, ops.maximum(u * self.beta_2, ops.abs(g) + self.epsilon))
        self.assign_sub(variable, lr / bias_correction * m / u)

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon, weight_decay=self.torch_weight_decay)
        return config
''',
    "NAdam": '''class TorchNAdam(keras.optimizers.Optimizer):
    """torch.optim.NAdam's update, with torch's momentum schedule
    mu_t = beta_1 * (1 - 0.5 * 0.96 ** (t * momentum_decay)) (Keras's Nadam uses 0.96 ** t) and
    epsilon added to sqrt(v / (1 - beta_2**t)); weight_decay is L2 on the gradient, or decoupled
    (w *= 1 - lr * weight_decay) with decoupled_weight_decay. State per variable: "exp_avg",
    "exp_avg_sq", "mu_product" (a scalar)."""

    def __init__(self, learning_rate=0.002, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=0.0,
                 momentum_decay=0.004, decoupled_weight_decay=False, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon, self.momentum_decay = beta_1, beta_2, epsilon, momentum_decay
        self.torch_weight_decay, self.decoupled_weight_decay = weight_decay, decoupled_weight_decay

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.exp_avgs, self.exp_avg_sqs = self.add_optimizer_variables(var_list, ["exp_avg", "exp_avg_sq"])
        self.mu_products = [
            self.add_variable((), initializer="ones", name=f"{v.path.replace('/', '_')}_mu_product") for v in var_list
        ]

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        i = self._get_variable_index(variable)
        if self.torch_weight_decay and self.decoupled_weight_decay:
            self.assign(variable, variable * (1 - lr * self.torch_weight_decay))
        elif self.torch_weight_decay:
            g = g + variable * self.torch_weight_decay
        t = ops.cast(self.iterations + 1, "float64")
        beta_1 = ops.cast(self.beta_1, "float64")
        mu = beta_1 * (1 - 0.5 * ops.power(ops.cast(0.96, "float64"), t * self.momentum_decay))
        mu_next = beta_1 * (1 - 0.5 * ops.power(ops.cast(0.96, "float64"), (t + 1) * self.momentum_decay))
        self.assign(self.mu_products[i], self.mu_products[i] * ops.cast(mu, variable.dtype))
        mu_product = ops.cast(self.mu_products[i], "float64")
        bias_correction2 = ops.cast(1 - ops.power(ops.cast(self.beta_2, "float64"), t), variable.dtype)
        m, v = self.exp_avgs[i], self.exp_avg_sqs[i]
        self.assign_add(m, (g - m) * (1 - self.beta_1))
        self.assign(v, v * self.beta_2 + g * g * (1 - self.beta_2))
        denominator = ops.sqrt(v / bias_correction2) + self.epsilon
        grad_step = ops.cast((1 - mu) / (1 - mu_product), variable.dtype)
        avg_step = ops.cast(mu_next / (1 - mu_product * mu_next), variable.dtype)
        self.assign_sub(variable, lr * grad_step * g / denominator)
        self.assign_sub(variable, lr * avg_step * m / denominator)

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon, weight_decay=self.torch_weight_decay,
                      momentum_decay=self.momentum_decay, decoupled_weight_decay=self.decoupled_weight_decay)
        return config
''',
    "Adadelta": '''class TorchAdadelta(keras.optimizers.Optimizer):
    """torch.optim.Adadelta's update with its weight decay (L2 on the gradient): g += weight_decay * w;
    v = rho * v + (1 - rho) * g**2; delta = sqrt(u + epsilon) / sqrt(v + epsilon) * g;
    u = rho * u + (1 - rho) * delta**2; w -= lr * delta. State per variable: "square_avg", "acc_delta"."""

    def __init__(self, learning_rate=1.0, rho=0.9, epsilon=1e-6, weight_decay=0.0, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.rho, self.epsilon, self.torch_weight_decay = rho, epsilon, weight_decay

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.square_avgs, self.acc_deltas = self.add_optimizer_variables(var_list, ["square_avg", "acc_delta"])

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype) + variable * self.torch_weight_decay
        i = self._get_variable_index(variable)
        v, u = self.square_avgs[i], self.acc_deltas[i]
        self.assign(v, v * self.rho + g * g * (1 - self.rho))
        delta = ops.sqrt(u + self.epsilon) / ops.sqrt(v + self.epsilon) * g
        self.assign(u, u * self.rho + delta * delta * (1 - self.rho))
        self.assign_sub(variable, lr * delta)

    def get_config(self):
        config = super().get_config()
        config.update(rho=self.rho, epsilon=self.epsilon, weight_decay=self.torch_weight_decay)
        return config
''',
}
_OPTIMIZERS["AdamW"] = _OPTIMIZERS["Adam"]
_CUSTOM = {"SGD": "TorchSGD", "Adam": "TorchAdam", "AdamW": "TorchAdam", "RMSprop": "TorchRMSprop"}
_CUSTOM.update({"Adagrad": "TorchAdagrad", "Adamax": "TorchAdamax", "NAdam": "TorchNAdam", "Adadelta": "TorchAdadelta"})


def keras_optimizer(spec: dict[str, Any]) -> dict[str, Any]:
    """How the torch optimizer `spec` (translate/torch_reader/optim.py) is built in Keras:
    {"class": the Keras expression's class, "code": a class to emit or "", "kwargs": {name: value},
    "slots": {torch state name: (Keras slot name, factor or "-lr")}}."""
    opt, schedule = spec["optimizer"], spec.get("lr_scheduler")
    cls = opt["class"].rsplit(".", 1)[-1]
    d = opt["defaults"]
    if cls == "SGD" and not d["dampening"] and not d["weight_decay"] and (schedule is None or not d["momentum"]):
        # a constant rate: Keras's velocity v = momentum * v - lr * g is -lr times torch's buffer
        kwargs = {"momentum": float(d["momentum"]), "nesterov": bool(d["nesterov"])}
        return {"class": "keras.optimizers.SGD", "code": "", "kwargs": kwargs,
                "slots": {"momentum_buffer": ("momentum", "-lr")} if d["momentum"] else {}}  # fmt: skip
    if cls == "Adadelta" and not d["weight_decay"]:
        kwargs = {"rho": d["rho"], "epsilon": d["eps"]}  # the same formulas, epsilon inside both square roots
        slots = {"square_avg": ("accumulated_grad", 1.0), "acc_delta": ("accumulated_delta_var", 1.0)}
        return {"class": "keras.optimizers.Adadelta", "code": "", "kwargs": kwargs, "slots": slots}
    if cls == "SGD":
        kwargs = {k: d[k] for k in ("momentum", "dampening", "weight_decay", "nesterov")}
        slots = {"momentum_buffer": ("momentum_buffer", 1.0)}
    elif cls in ("Adam", "AdamW"):
        kwargs = {"beta_1": d["betas"][0], "beta_2": d["betas"][1], "epsilon": d["eps"]}
        kwargs.update({k: d[k] for k in ("weight_decay", "decoupled_weight_decay", "amsgrad")})
        slots = {k: (k, 1.0) for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")}
    elif cls == "RMSprop":
        kwargs = {
            "alpha": d["alpha"],
            "epsilon": d["eps"],
            **{k: d[k] for k in ("weight_decay", "momentum", "centered")},
        }
        slots = {k: (k, 1.0) for k in ("square_avg", "momentum_buffer", "grad_avg")}
    elif cls == "Adagrad":
        kwargs = {k: d[k] for k in ("lr_decay", "weight_decay", "initial_accumulator_value")}
        kwargs["epsilon"] = d["eps"]
        slots = {"sum": ("sum", 1.0)}
    elif cls == "Adamax":
        kwargs = {
            "beta_1": d["betas"][0],
            "beta_2": d["betas"][1],
            "epsilon": d["eps"],
            "weight_decay": d["weight_decay"],
        }
        slots = {"exp_avg": ("exp_avg", 1.0), "exp_inf": ("exp_inf", 1.0)}
    elif cls == "NAdam":
        kwargs = {"beta_1": d["betas"][0], "beta_2": d["betas"][1], "epsilon": d["eps"]}
        kwargs.update({k: d[k] for k in ("weight_decay", "momentum_decay", "decoupled_weight_decay")})
        slots = {k: (k, 1.0) for k in ("exp_avg", "exp_avg_sq", "mu_product")}
    else:  # Adadelta with weight decay
        kwargs = {"rho": d["rho"], "epsilon": d["eps"], "weight_decay": d["weight_decay"]}
        slots = {"square_avg": ("square_avg", 1.0), "acc_delta": ("acc_delta", 1.0)}
    return {"class": _CUSTOM[cls], "code": _OPTIMIZERS[cls], "kwargs": kwargs, "slots": slots}


# -- learning-rate schedules: torch's closed forms of the epoch count --------------------------
_SCHEDULE_BASE = '''class TorchSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A torch.optim.lr_scheduler as a Keras schedule: Keras evaluates it at its step count before
    each update, as a torch scheduler stepped after each `optimizer.step()` gives the next rate.
    `steps_per_epoch` batches make one scheduler step (1: stepped per batch)."""

    def __init__(self, base_lr, steps_per_epoch=1, **kwargs):
        self.base_lr, self.steps_per_epoch, self.kwargs = base_lr, steps_per_epoch, kwargs

    def __call__(self, step):
        epoch = ops.cast(ops.floor_divide(ops.cast(step, "int64"), self.steps_per_epoch), "float64")
        return ops.cast(self.factor(epoch, **self.kwargs), "float32")

    def get_config(self):
        return {"base_lr": self.base_lr, "steps_per_epoch": self.steps_per_epoch, **self.kwargs}
'''
_SCHEDULES = {
    "StepLR": ("base_lr * gamma ** floor(epoch / step_size)", """def factor(self, epoch, step_size, gamma):
        return self.base_lr * ops.power(gamma, ops.floor(epoch / step_size))"""),
    "MultiStepLR": ("base_lr * gamma ** (the number of milestones <= epoch)", """def factor(self, epoch, milestones, gamma):
        passed = ops.sum(ops.cast(ops.less_equal(ops.convert_to_tensor(milestones, "float64"), epoch), "float64"))
        return self.base_lr * ops.power(gamma, passed)"""),
    "ExponentialLR": ("base_lr * gamma ** epoch", """def factor(self, epoch, gamma):
        return self.base_lr * ops.power(gamma, epoch)"""),
    "CosineAnnealingLR": ("eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2", """def factor(self, epoch, T_max, eta_min):
        return eta_min + (self.base_lr - eta_min) * (1 + ops.cos(3.141592653589793 * epoch / T_max)) / 2"""),
    "LinearLR": ("base_lr * (start_factor + (end_factor - start_factor) * min(epoch, total_iters) / total_iters)", """def factor(self, epoch, start_factor, end_factor, total_iters):
        progress = ops.minimum(epoch, total_iters) / total_iters
        return self.base_lr * (start_factor + (end_factor - start_factor) * progress)"""),
    "ConstantLR": ("base_lr * factor until epoch total_iters, then base_lr", """def factor(self, epoch, factor, total_iters):
        return self.base_lr * ops.where(ops.less(epoch, total_iters), factor, 1.0)"""),
}  # fmt: skip


def render_schedule(schedule: dict[str, Any]) -> tuple[str, str]:
    """(the class code, the constructor expression) of a torch scheduler spec."""
    cls = schedule["class"].rsplit(".", 1)[-1]
    doc, method = _SCHEDULES[cls]
    code = f'class Torch{cls}(TorchSchedule):\n    """torch.optim.lr_scheduler.{cls}: {doc}."""\n\n    {method}\n'
    kwargs = {"base_lr": schedule["base_lr"], "steps_per_epoch": schedule.get("steps_per_epoch", 1)}
    kwargs.update(schedule["kwargs"])
    args = ", ".join(f"{k}={py_literal(v)}" for k, v in kwargs.items())
    return code, f"Torch{cls}({args})"


# -- losses -----------------------------------------------------------------------------------
_CROSS_ENTROPY = '''class TorchCrossEntropy(keras.losses.Loss):
    """torch.nn.CrossEntropyLoss (log_probabilities=False, on logits) and NLLLoss (True, on
    log-probabilities) with integer class labels: per sample -(1 - s) * w[y] * log p[y] - s / C *
    sum_c w[c] * log p[c], labels equal to ignore_index left out; reduction "mean" divides the sum by
    the total weight w[y] of the counted samples (their number without weights), as torch does."""

    def __init__(self, weight=None, ignore_index=-100, label_smoothing=0.0, log_probabilities=False, axis=-1,
                 torch_reduction="mean", name="cross_entropy", **kwargs):
        super().__init__(name=name, reduction="sum")  # call() returns each sample's share of the reduced loss
        self.weight, self.ignore_index, self.label_smoothing = weight, ignore_index, label_smoothing
        self.log_probabilities, self.axis, self.torch_reduction = log_probabilities, axis, torch_reduction

    def call(self, y_true, y_pred):
        log_p = ops.moveaxis(y_pred, self.axis, -1)
        if not self.log_probabilities:
            log_p = ops.log_softmax(log_p, axis=-1)
        classes = ops.shape(log_p)[-1]
        labels = ops.cast(ops.reshape(y_true, ops.shape(log_p)[:-1]), "int32")
        keep = ops.cast(ops.not_equal(labels, self.ignore_index), log_p.dtype)
        one_hot = ops.one_hot(ops.where(ops.not_equal(labels, self.ignore_index), labels, 0), classes)
        w = ops.ones((classes,), log_p.dtype) if self.weight is None else ops.convert_to_tensor(self.weight, log_p.dtype)
        sample_weight = ops.sum(one_hot * w, axis=-1) * keep
        loss = -ops.sum(one_hot * log_p * w, axis=-1) * keep * (1 - self.label_smoothing)
        if self.label_smoothing:
            loss = loss - ops.sum(log_p * w, axis=-1) * keep * (self.label_smoothing / ops.cast(classes, log_p.dtype))
        if self.torch_reduction == "mean":
            loss = loss / ops.sum(sample_weight)
        return loss

    def get_config(self):
        return {"name": self.name, "weight": self.weight, "ignore_index": self.ignore_index,
                "label_smoothing": self.label_smoothing, "log_probabilities": self.log_probabilities,
                "axis": self.axis, "torch_reduction": self.torch_reduction}
'''


def keras_loss(loss: dict[str, Any], class_axis: int) -> tuple[str, str | None, str, list[str]]:
    """(class code or "", the Keras loss expression or None, the label format, notes) for a torch
    loss spec; None with a note when no Keras loss computes the same value."""
    cls = loss["class"].rsplit(".", 1)[-1]
    k = loss["kwargs"]
    reduction = k.get("reduction", "mean")
    same_layout = "targets in the Keras model's output layout (ktorch.json outputs[0].perm), as floats"
    if cls in ("CrossEntropyLoss", "NLLLoss"):
        labels = "integer class indices (as torch's class-index targets), one per sample (and position)"
        if reduction not in ("mean", "sum"):
            return "", None, labels, [f"{cls}(reduction={reduction!r}) has no Keras loss: Keras reduces to a scalar"]
        if cls == "CrossEntropyLoss" and k.get("weight") is None and not k.get("label_smoothing"):
            args = f"from_logits=True, ignore_class={k['ignore_index']}"
            if class_axis != -1:
                args += f", axis={class_axis}"
            if reduction == "sum":
                args += ', reduction="sum"'
            return "", f"keras.losses.SparseCategoricalCrossentropy({args})", labels, []
        args = {"weight": k.get("weight"), "ignore_index": k["ignore_index"],
                "label_smoothing": k.get("label_smoothing") or 0.0, "log_probabilities": cls == "NLLLoss",
                "axis": class_axis, "torch_reduction": reduction}  # fmt: skip
        text = ", ".join(f"{a}={py_literal(v)}" for a, v in args.items())
        return _CROSS_ENTROPY, f"TorchCrossEntropy({text})", labels, []
    if reduction != "mean":
        return (
            "",
            None,
            same_layout,
            [
                f"{cls}(reduction={reduction!r}) is not carried: Keras's 'sum' adds per-sample means over the last "
                "axis, not every element"
            ],
        )
    if cls in ("BCEWithLogitsLoss", "BCELoss") and (k.get("weight") is not None or k.get("pos_weight") is not None):
        return (
            "",
            None,
            same_layout,
            [f"{cls} with weight/pos_weight is not carried: Keras's BinaryCrossentropy has none"],
        )
    if cls == "SmoothL1Loss" and k["beta"] not in (0.0, 1.0):
        return (
            "",
            None,
            same_layout,
            [
                f"SmoothL1Loss(beta={k['beta']}) is not carried: it is Huber(delta=beta) / beta, and Keras's Huber is not divided"
            ],
        )
    notes = []
    expr = {
        "MSELoss": "keras.losses.MeanSquaredError()",
        "L1Loss": "keras.losses.MeanAbsoluteError()",
        "HuberLoss": f"keras.losses.Huber(delta={py_literal(float(k.get('delta', 1.0)))})",
        "SmoothL1Loss": "keras.losses.Huber(delta=1.0)" if k.get("beta") == 1.0 else "keras.losses.MeanAbsoluteError()",
        "BCEWithLogitsLoss": "keras.losses.BinaryCrossentropy(from_logits=True)",
        "BCELoss": "keras.losses.BinaryCrossentropy()",
    }[cls]
    if cls == "BCELoss":
        notes.append(
            "BCELoss -> BinaryCrossentropy(): the same unless a probability is within 1e-7 of 0 or 1 (Keras clips "
            "probabilities to [1e-7, 1 - 1e-7], torch clamps the log at -100)"
        )
    labels = "targets of the output's shape (0/1 floats)" if cls.startswith("BCE") else same_layout
    return "", expr, labels, notes


def describe(obj: dict[str, Any] | None, key: str) -> str:
    if obj is None:
        return "none"
    args = ", ".join(f"{k}={v!r}" for k, v in obj[key].items())
    return f"{obj['class']}({args})"


def render_compile(spec: dict[str, Any], *, model: str, version: str, class_axis: int, custom_layers: bool,
                   state_step: int | None) -> tuple[str, dict[str, Any], list[str]]:  # fmt: skip
    """(train.py's source, the Keras side's description for ktorch.json, notes) for the torch
    training spec."""
    notes: list[str] = []
    parts: list[str] = []
    optimizer = keras_optimizer(spec)
    lr: str = py_literal(float(spec["optimizer"]["defaults"]["lr"]))
    schedule = spec.get("lr_scheduler")
    if schedule is not None:
        code, lr = render_schedule(schedule)
        parts += [_REGISTER + _SCHEDULE_BASE, _REGISTER + code]
    if optimizer["code"]:
        parts.append(_REGISTER + optimizer["code"])
    kwargs = ", ".join([f"learning_rate={lr}"] + [f"{k}={py_literal(v)}" for k, v in optimizer["kwargs"].items()])
    loss_expr, labels = None, ""
    if spec.get("loss") is not None:
        loss_code, loss_expr, labels, loss_notes = keras_loss(spec["loss"], class_axis)
        notes += loss_notes
        if loss_code:
            parts.append(_REGISTER + loss_code)
    per = ""
    if schedule is not None:
        per = (
            " and `scheduler.step()` once per batch"
            if schedule["per"] == "batch"
            else f" and `scheduler.step()` once per epoch of {schedule['steps_per_epoch']} batches"
        )
    header = _HEADER.format(
        model=model, version=version,
        optimizer=describe(spec["optimizer"], "defaults"),
        scheduler=describe(schedule, "kwargs") + (f", stepped per {schedule['per']}" if schedule else ""),
        loss=describe(spec.get("loss"), "kwargs"),
        sched_step=per,
        labels=f"Labels: {labels}.\n" if labels else "",
        state=f", with the optimizer's state after {state_step} PyTorch steps" if state_step is not None else "",
    )  # fmt: skip
    body = [
        "",
        "",
        "def make_optimizer() -> keras.optimizers.Optimizer:",
        f"    return {optimizer['class']}({kwargs})",
        "",
        "",
        "def compile_model(model: keras.Model) -> keras.Model:",
        '    """Compile `model` with the optimizer and loss PyTorch trained with."""',
        f"    model.compile(optimizer=make_optimizer(), loss={loss_expr if loss_expr else 'None'})",
        "    return model",
        "",
        "",
        "def load(path: str | Path | None = None) -> keras.Model:",
        '    """The compiled model (default: model.keras beside this file), with its optimizer state."""',
    ]
    if custom_layers:
        body.append("    import model  # noqa: F401  (registers model.py's layers with Keras)")
    body += [
        '    return keras.models.load_model(Path(path) if path is not None else Path(__file__).with_name("model.keras"))',
        "",
    ]
    source = header + "".join("\n\n" + p for p in parts) + "\n".join(body)
    keras_side = {
        "optimizer": optimizer["class"] if optimizer["class"].startswith("keras.") else f"train.{optimizer['class']}",
        "schedule": lr.split("(", 1)[0] if schedule is not None else None,
        "loss": loss_expr.split("(", 1)[0] if loss_expr else None,
        "labels": labels or None,
    }
    return source, keras_side, notes


__all__ = ["keras_loss", "keras_optimizer", "render_compile", "render_schedule"]
