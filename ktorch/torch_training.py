"""The training setup of a PyTorch source, carried into the Keras output (issue 14): the optimizer,
learning-rate scheduler and loss given to `ktorch.convert(..., optimizer=, lr_scheduler=, loss=)`
(objects, or the CLI's text such as "adamw:lr=1e-3,weight_decay=0.01") are read into a plain
description (translate/torch_reader/optim.py), which the Keras writer turns into train.py and a
compiled model.keras (translate/keras_writer/compile.py).

The optimizer's state is migrated the way ktorch/training.py migrates Keras's: the conversion is
run once more on parameters replaced by their element numbers, so each emitted Keras weight says
which torch parameter and element it holds, and every state tensor is gathered the same way.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .graph import Graph
from .graph.errors import KtorchError
from .training import trace_elements
from .translate.keras_writer.compile import keras_optimizer
from .translate.torch_reader.optim import read_loss, read_optimizer, read_optimizer_state, read_scheduler

OPTIMIZER_NAMES = {name.lower(): name for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "NAdam", "Adadelta")}  # fmt: skip
SCHEDULER_NAMES = {
    "step": "StepLR", "multistep": "MultiStepLR", "exponential": "ExponentialLR", "cosine": "CosineAnnealingLR",
    "linear": "LinearLR", "constant": "ConstantLR",
}  # fmt: skip
LOSS_NAMES = {
    "cross_entropy": "CrossEntropyLoss", "nll": "NLLLoss", "mse": "MSELoss", "l1": "L1Loss", "huber": "HuberLoss",
    "smooth_l1": "SmoothL1Loss", "bce_with_logits": "BCEWithLogitsLoss", "bce": "BCELoss",
}  # fmt: skip
TEXT_HELP = 'NAME or "NAME:key=value,key=value" (values are Python literals, e.g. betas=(0.9,0.99))'


def parse_text(text: str, names: dict[str, str], what: str) -> tuple[str, dict[str, Any]]:
    """ "adamw:lr=1e-3,betas=(0.9,0.99)" -> ("AdamW", {"lr": 0.001, "betas": (0.9, 0.99)})."""
    name, _, rest = text.partition(":")
    key = name.strip().lower().replace("-", "_")
    cls = names.get(key) or next((v for v in names.values() if v.lower() == key), None)
    if cls is None:
        raise KtorchError(f"unknown {what} {name!r}; one of: {', '.join(sorted(names))}")
    kwargs: dict[str, Any] = {}
    if rest.strip():
        try:
            call = ast.parse(f"f({rest})", mode="eval").body
            if not isinstance(call, ast.Call) or call.args:
                raise ValueError("expected key=value pairs")
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
        except (SyntaxError, ValueError) as exc:
            raise KtorchError(f"{what} {text!r}: cannot read the settings ({exc}); write {TEXT_HELP}") from None
    return cls, kwargs


def objects_from_text(optimizer: Any, lr_scheduler: Any, loss: Any) -> tuple[Any, Any, Any]:
    """PyTorch objects for the options given as text, built on a placeholder parameter (their
    constructors check the settings); objects pass through."""
    import torch

    placeholder = [torch.nn.Parameter(torch.zeros(1))]
    try:
        if isinstance(optimizer, str):
            cls, kwargs = parse_text(optimizer, OPTIMIZER_NAMES, "optimizer")
            optimizer = getattr(torch.optim, cls)(placeholder, **kwargs)
        if isinstance(lr_scheduler, str):
            if optimizer is None:
                raise KtorchError("a learning-rate scheduler needs an optimizer (optimizer=...)")
            cls, kwargs = parse_text(lr_scheduler, SCHEDULER_NAMES, "learning-rate scheduler")
            lr_scheduler = getattr(torch.optim.lr_scheduler, cls)(optimizer, **kwargs)
        if isinstance(loss, str):
            cls, kwargs = parse_text(loss, LOSS_NAMES, "loss")
            loss = getattr(torch.nn, cls)(**kwargs)
    except (TypeError, ValueError) as exc:
        raise KtorchError(f"training option: {exc}") from None
    return optimizer, lr_scheduler, loss


def cumulative_batch_norms(module: Any) -> list[str]:
    """The BatchNorm layers of `module` with momentum=None: PyTorch updates their running statistics
    with a cumulative average (weight 1 / batches seen), which Keras's BatchNormalization (a fixed
    momentum) has no counterpart for; exported in eval mode they read as momentum 0."""
    import torch

    kinds = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)
    modules = module.named_modules() if isinstance(module, torch.nn.Module) else ()
    return [
        path or "the model"
        for path, m in modules
        if isinstance(m, kinds) and m.track_running_stats and m.momentum is None
    ]


def read_setup(
    module: Any, optimizer: Any, lr_scheduler: Any, loss: Any, steps_per_epoch: int | None
) -> tuple[dict[str, Any], list[str]]:
    """(the description recorded as ktorch.json training.source, warnings)."""
    from_text = isinstance(optimizer, str)
    optimizer, lr_scheduler, loss = objects_from_text(optimizer, lr_scheduler, loss)
    if optimizer is None:
        raise KtorchError("the training setup needs the optimizer (optimizer=...); loss= and lr_scheduler= go with it")
    cumulative = cumulative_batch_norms(module)
    if cumulative:
        raise KtorchError(
            f"{', '.join(cumulative[:5])}: BatchNorm with momentum=None (a cumulative average of the batch statistics) "
            "has no Keras BatchNormalization counterpart; give it a momentum (PyTorch's default is 0.1) to convert "
            "the training setup"
        )
    named = dict(module.named_parameters()) if hasattr(module, "named_parameters") and not from_text else None
    names = {id(p): n for n, p in named.items()} if named is not None else None
    notes: list[str] = []
    spec: dict[str, Any] = {"optimizer": read_optimizer(optimizer, names), "lr_scheduler": None, "loss": None}
    if lr_scheduler is not None:
        if lr_scheduler.optimizer is not optimizer:
            raise KtorchError("the learning-rate scheduler belongs to another optimizer than optimizer=")
        spec["lr_scheduler"] = read_scheduler(lr_scheduler, steps_per_epoch)
    elif steps_per_epoch is not None:
        raise KtorchError("steps_per_epoch applies to a scheduler stepped per epoch; no lr_scheduler was given")
    if loss is not None:
        spec["loss"] = read_loss(loss)
    if named is not None and spec["optimizer"]["params"] is not None:
        held = set(spec["optimizer"]["params"])
        left = [n for n, p in named.items() if p.requires_grad and n not in held]
        if left:
            notes.append(
                f"{', '.join(left[:5])} require grad but are not in the optimizer, so torch never updates them; "
                "Keras trains every trainable layer: freeze them (requires_grad=False) to match"
            )
    if named is None and not from_text:
        notes.append("the source is not an nn.Module, so the optimizer's parameters cannot be named: it is taken to "
                     "hold all of them, and its state is not migrated")  # fmt: skip
    return spec, notes


class NumberedProgram:
    """An ExportedProgram whose parameters read as given numbers, and whose other tensors read as
    0.5 (never an element number), for tracing where each element lands."""

    def __init__(self, program: Any, numbers: dict[str, np.ndarray]) -> None:
        import torch

        self.program = program
        state = {}
        params = set(program.graph_signature.parameters)
        for name, tensor in program.state_dict.items():
            if name in numbers:
                value = torch.from_numpy(numbers[name].reshape(tuple(tensor.shape)).astype(np.float32))
            elif tensor.is_floating_point():
                value = torch.full_like(tensor, 0.5)
            else:
                value = tensor
            state[name] = torch.nn.Parameter(value, requires_grad=tensor.requires_grad) if name in params else value
        self.state_dict = state

    def __getattr__(self, name: str) -> Any:
        return getattr(self.program, name)


Pieces = list[tuple[str, np.ndarray, np.ndarray]]  # (parameter, positions in the Keras weight, its elements there)


def trace_keras_weights(
    program: Any, params: list[str], emit: Callable[[Any], dict[str, list[np.ndarray]]]
) -> tuple[dict[str, Pieces], list[str], dict[str, tuple]]:
    """For each emitted Keras weight ("layer/i": the i-th of the layer's weights) whose elements
    are elements of `params`, each copied once (a rearrangement of one parameter, a slice of one:
    MultiHeadAttention's query kernel from torch's in_proj_weight, or several side by side: a GRU's
    two biases): the pieces (parameter, positions, element numbers in the parameter), so that
    keras.flat[positions] == param.flat[elements]; the weights computed from several elements (a
    sum of two parameters); the weights' shapes. `emit(program)` converts a program and returns
    the Keras writer's weights by layer."""
    state = program.state_dict
    sizes = [int(state[p].numel()) for p in params]

    def run(numbers: Callable[[int], np.ndarray]) -> dict[str, np.ndarray]:
        weights = emit(NumberedProgram(program, {p: numbers(k) for k, p in enumerate(params)}))
        return {f"{layer}/{i}": a for layer, arrays in weights.items() for i, a in enumerate(arrays)}

    traced, problems, shapes, offsets = trace_elements(sizes, run)
    out: dict[str, Pieces] = {}
    for key, ids in traced.items():
        owner = np.searchsorted(offsets, ids, side="right") - 1
        out[key] = [
            (params[k], np.flatnonzero(owner == k), ids[owner == k] - offsets[k]) for k in np.unique(owner).tolist()
        ]
    return out, problems, shapes


def migrate_state(
    spec: dict[str, Any],
    state: dict[str, dict[str, Any]],
    mapping: dict[str, Pieces],
    shapes: dict[str, tuple],
) -> dict[str, dict[str, np.ndarray]]:
    """{"layer/i": {Keras slot name: array in the Keras weight's layout}} from torch's state."""
    slots = keras_optimizer(spec)["slots"]
    lr = float(spec["optimizer"]["defaults"]["lr"])
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, pieces in mapping.items():
        entry: dict[str, np.ndarray] = {}
        for param, positions, elements in pieces:
            for name, value in state.get(param, {}).items():
                if name not in slots:
                    raise KtorchError(f"the optimizer state {name!r} of {param} has no Keras counterpart")
                slot, factor = slots[name]
                scale = np.float32(-lr if factor == "-lr" else factor)
                if isinstance(value, float):  # a per-parameter scalar (NAdam's mu_product)
                    entry[slot] = np.asarray(value * scale, dtype=np.float32)
                    continue
                flat = entry.setdefault(slot, np.zeros(int(np.prod(shapes[key])), np.float32)).reshape(-1)
                flat[positions] = np.asarray(value, np.float32).reshape(-1)[elements] * scale
                entry[slot] = flat.reshape(shapes[key])
        if entry:
            out[key] = entry
    return out


def attach_compile(graph: Graph, src: Any, program: Any, request: dict[str, Any], emit: Callable[[Any], Any]) -> None:
    """Read the training setup `request` ({optimizer, lr_scheduler, loss, steps_per_epoch}) into
    graph.meta["compile"]: {"spec", "state" ({"step", "slots"}) or None, "warnings"}. `emit`
    converts a program to the Keras writer's weights (for the state's tracing)."""
    spec, notes = read_setup(
        src, request.get("optimizer"), request.get("lr_scheduler"), request.get("loss"), request.get("steps_per_epoch")
    )
    migrated = None
    optimizer = request.get("optimizer")
    if spec["optimizer"]["params"] is not None and not isinstance(optimizer, str):
        named = dict(src.named_parameters())
        names = {id(p): n for n, p in named.items()}
        state, step = read_optimizer_state(optimizer, names)
        schedule = spec["lr_scheduler"]
        if step is None and schedule is not None:  # SGD and RMSprop count no steps: the scheduler does
            step = schedule["last_epoch"] * schedule.get("steps_per_epoch", 1)  # per epoch: at an epoch's end
        if step is None:
            step = 1 if state else 0  # only "has a step been taken" matters to SGD's first momentum step
        if schedule is not None:
            position = step if schedule["per"] == "batch" else step // schedule["steps_per_epoch"]
            if position != schedule["last_epoch"]:
                notes.append(
                    f"the scheduler has taken {schedule['last_epoch']} steps, the optimizer {step}: Keras evaluates the "
                    f"schedule at its own step count ({step}{' batches' if schedule['per'] == 'epoch' else ''})"
                )
        if state:
            held = [n for n in spec["optimizer"]["params"] if n in program.graph_signature.parameters]
            mapping, problems, shapes = trace_keras_weights(program, held, emit)
            slots = migrate_state(spec, state, mapping, shapes)
            covered = {n: np.zeros(int(program.state_dict[n].numel()), bool) for n in held}
            for pieces in mapping.values():
                for param, _, elements in pieces:
                    covered[param][elements] = True
            lost = [n for n in state if n in covered and not covered[n].all()]
            if lost:
                notes.append(
                    f"no optimizer state for {', '.join(lost[:5])}: no Keras weight holds its elements as they are "
                    "(a Keras weight computed from several of its elements), so Keras also trains it differently"
                )
            migrated = {"step": int(step), "slots": slots, "problems": problems}
        else:
            migrated = {"step": int(step), "slots": {}, "problems": []}
    for note in notes:
        warnings.warn(f"training setup: {note}", stacklevel=3)
    graph.meta["compile"] = {"spec": spec, "state": migrated, "warnings": notes}


__all__ = ["LOSS_NAMES", "OPTIMIZER_NAMES", "SCHEDULER_NAMES", "TEXT_HELP", "attach_compile",
           "cumulative_batch_norms", "migrate_state",
           "objects_from_text", "parse_text", "read_setup", "trace_keras_weights"]  # fmt: skip
