"""A PyTorch training setup (a torch.optim optimizer, an lr_scheduler and a loss module) read
into a plain description: class names and the constructor arguments that rebuild each object,
plus the optimizer's per-parameter state. The Keras writer (translate/keras_writer/compile.py)
turns the description into Keras code; ktorch.training.source_training rebuilds the PyTorch
objects from it.

The description, as ktorch.json records it under training.source:

    {"optimizer": {"class": "torch.optim.AdamW", "defaults": {...}, "params": [names] | None},
     "lr_scheduler": {"class": "torch.optim.lr_scheduler.StepLR", "kwargs": {...}, "per": "batch"}
                     | {..., "per": "epoch", "steps_per_epoch": N} | None,
     "loss": {"class": "torch.nn.CrossEntropyLoss", "kwargs": {...}} | None}
"""

from __future__ import annotations

from typing import Any

from ...graph.errors import KtorchError

# torch.optim class -> the hyperparameters of its param groups the Keras side reproduces
OPTIMIZERS: dict[str, tuple[str, ...]] = {
    "SGD": ("lr", "momentum", "dampening", "weight_decay", "nesterov"),
    "Adam": ("lr", "betas", "eps", "weight_decay", "amsgrad", "decoupled_weight_decay"),
    "AdamW": ("lr", "betas", "eps", "weight_decay", "amsgrad", "decoupled_weight_decay"),
    "RMSprop": ("lr", "alpha", "eps", "weight_decay", "momentum", "centered"),
    "Adagrad": ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"),
    "Adamax": ("lr", "betas", "eps", "weight_decay"),
    "NAdam": ("lr", "betas", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay"),
    "Adadelta": ("lr", "rho", "eps", "weight_decay"),
}
# group settings that change only how torch computes (not what): ignored; "maximize" is refused
_IMPLEMENTATION = {"foreach", "fused", "differentiable", "capturable", "params", "initial_lr", "maximize"}
# torch.optim.lr_scheduler class -> its constructor arguments, read back from the scheduler's attributes
SCHEDULERS: dict[str, tuple[str, ...]] = {
    "StepLR": ("step_size", "gamma"),
    "MultiStepLR": ("milestones", "gamma"),
    "ExponentialLR": ("gamma",),
    "CosineAnnealingLR": ("T_max", "eta_min"),
    "LinearLR": ("start_factor", "end_factor", "total_iters"),
    "ConstantLR": ("factor", "total_iters"),
}
# torch.nn loss class -> its constructor arguments
LOSSES: dict[str, tuple[str, ...]] = {
    "CrossEntropyLoss": ("weight", "ignore_index", "reduction", "label_smoothing"),
    "NLLLoss": ("weight", "ignore_index", "reduction"),
    "MSELoss": ("reduction",),
    "L1Loss": ("reduction",),
    "HuberLoss": ("reduction", "delta"),
    "SmoothL1Loss": ("reduction", "beta"),
    "BCEWithLogitsLoss": ("weight", "reduction", "pos_weight"),
    "BCELoss": ("weight", "reduction"),
}


def plain(value: Any) -> Any:
    """A JSON-able copy of a hyperparameter (tensors and tuples become lists)."""
    if hasattr(value, "detach"):
        return value.detach().cpu().tolist()
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, float) and value == int(value) and abs(value) < 2**53:
        return float(value)
    return value


def _public_class(obj: Any, namespace: Any, known: dict[str, Any], what: str) -> str:
    name = type(obj).__name__
    if name not in known or getattr(namespace, name, None) is not type(obj):
        choices = ", ".join(sorted(known))
        raise KtorchError(
            f"{what} {type(obj).__module__}.{name} has no Keras translation; supported: {choices} "
            f"(a subclass may change the update, so only these exact classes are accepted)"
        )
    return name


def read_optimizer(optimizer: Any, names: dict[int, str] | None) -> dict[str, Any]:
    """{"class", "defaults", "params"} of a torch.optim optimizer. Every param group must share
    the hyperparameters (Keras has one set per optimizer); `names` maps id(parameter) -> its
    name in the module, or is None when the module is not at hand."""
    import torch

    cls = _public_class(optimizer, torch.optim, OPTIMIZERS, "the optimizer")
    groups = optimizer.param_groups
    keys = OPTIMIZERS[cls]

    def settings(group: dict[str, Any]) -> dict[str, Any]:
        return {k: plain(group.get("initial_lr", group["lr"]) if k == "lr" else group[k]) for k in keys}

    first = settings(groups[0])
    for i, group in enumerate(groups[1:], 1):
        other = settings(group)
        if other != first:
            diff = sorted(k for k in keys if other[k] != first[k])
            raise KtorchError(
                f"the optimizer's param groups 0 and {i} differ in {', '.join(diff)}; a Keras optimizer has one set "
                "of hyperparameters: give the groups the same values, or freeze a layer with requires_grad=False"
            )
    if any(group.get("maximize") for group in groups):
        raise KtorchError(
            "the optimizer maximizes (maximize=True); Keras optimizers minimize the loss: negate the loss"
        )
    params = [p for group in groups for p in group["params"]]
    spec: dict[str, Any] = {"class": f"torch.optim.{cls}", "defaults": first, "params": None}
    if names is not None:
        unknown = [p for p in params if id(p) not in names]
        if unknown:
            raise KtorchError(f"the optimizer holds {len(unknown)} tensor(s) that are not parameters of the model")
        spec["params"] = [names[id(p)] for p in params]
    return spec


def read_optimizer_state(optimizer: Any, names: dict[int, str]) -> tuple[dict[str, dict[str, Any]], int | None]:
    """({parameter name: {state name: numpy array}}, the step count or None when the state keeps
    none, as SGD's). Per-parameter scalars (NAdam's "mu_product") are kept as floats; frozen
    parameters (requires_grad=False), which Keras gives no optimizer variables, are left out."""
    state: dict[str, dict[str, Any]] = {}
    steps: set[int] = set()
    for group in optimizer.param_groups:
        for p in group["params"]:
            own = optimizer.state.get(p)
            if not own or not p.requires_grad:  # a frozen parameter (Adagrad fills its state up front)
                continue
            entry: dict[str, Any] = {}
            for key, value in own.items():
                value = value.detach().cpu() if hasattr(value, "detach") else value
                if key == "step":
                    steps.add(int(round(float(value))))
                elif getattr(value, "ndim", 1) == 0 or not hasattr(value, "numpy"):
                    entry[key] = float(value)
                else:
                    entry[key] = value.float().numpy().copy()
            state[names[id(p)]] = entry
    if len(steps) > 1:
        raise KtorchError(
            f"the optimizer's parameters have taken different numbers of steps ({sorted(steps)}); Keras counts one "
            "step for all of them"
        )
    return state, (steps.pop() if steps else None)


def read_scheduler(scheduler: Any, steps_per_epoch: int | None) -> dict[str, Any]:
    """{"class", "kwargs", "per", "base_lr", "last_epoch"} of a torch.optim.lr_scheduler scheduler;
    `steps_per_epoch` None means it is stepped once per batch."""
    import torch

    cls = _public_class(scheduler, torch.optim.lr_scheduler, SCHEDULERS, "the learning-rate scheduler")
    kwargs: dict[str, Any] = {}
    for key in SCHEDULERS[cls]:
        value = getattr(scheduler, key, None)
        if cls == "MultiStepLR" and key == "milestones":
            value = sorted(scheduler.milestones.elements())  # a Counter: a repeated milestone decays twice
        kwargs[key] = plain(value)
    base = [group.get("initial_lr", group["lr"]) for group in scheduler.optimizer.param_groups]
    if len(set(base)) > 1:
        raise KtorchError("the scheduler's param groups start from different learning rates; Keras has one")
    spec: dict[str, Any] = {
        "class": f"torch.optim.lr_scheduler.{cls}",
        "kwargs": kwargs,
        "per": "batch" if steps_per_epoch is None else "epoch",
        "base_lr": float(base[0]),
        "last_epoch": int(scheduler.last_epoch),
    }
    if steps_per_epoch is not None:
        if int(steps_per_epoch) < 1:
            raise KtorchError(f"steps_per_epoch must be a positive number of batches, not {steps_per_epoch!r}")
        spec["steps_per_epoch"] = int(steps_per_epoch)
    return spec


def read_loss(loss: Any) -> dict[str, Any]:
    """{"class", "kwargs"} of a torch.nn loss module."""
    import torch

    cls = _public_class(loss, torch.nn, LOSSES, "the loss")
    kwargs = {key: plain(getattr(loss, key, None)) for key in LOSSES[cls]}
    return {"class": f"torch.nn.{cls}", "kwargs": kwargs}


__all__ = ["LOSSES", "OPTIMIZERS", "SCHEDULERS", "plain", "read_loss", "read_optimizer", "read_optimizer_state",
           "read_scheduler"]  # fmt: skip
