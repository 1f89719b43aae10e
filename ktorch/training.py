"""The training setup of a Keras source, carried into the PyTorch output (train.py and the optimizer's
state in optimizer.safetensors).

The optimizer's per-variable slots are in the layout of the Keras weights; the emitted module's
parameters are those weights transposed, permuted (layout), reordered (gates) or shared. Rather than
re-deriving each translator's arithmetic, the conversion is run once more on weights replaced by
their element numbers: each emitted tensor then says, element by element, which Keras weight and
element it holds, and the slots are gathered the same way. An emitted tensor that is not a pure
rearrangement of one Keras weight (a folded bias, say) is reported, not approximated.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .graph import Graph
from .graph.errors import KtorchError
from .translate.keras_reader.file import KerasFile, open_keras_file
from .translate.keras_reader.training import TrainingSetup, read_training_setup
from .translate.torch_writer.training import slot_groups, uses_torch_optimizer

DIGIT = 1 << 22  # element numbers are traced in base-2**22 digits: exact even in float32
STEP_SLOTS = {"Adam", "AdamW", "Adamax", "Nadam", "Adadelta"}  # optimizers whose state counts steps per parameter


class NumberedWeights:
    """A KerasFile whose trainable weights read as given numbers (one digit of their element numbers)."""

    def __init__(self, kfile: KerasFile, numbers: dict[tuple[tuple[str, ...], int], np.ndarray]) -> None:
        self.kfile, self.numbers = kfile, numbers

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kfile, name)

    def layer_weights(self, path: tuple[str, ...]) -> list[tuple[str, np.ndarray]]:
        out = []
        for i, (name, array) in enumerate(self.kfile.layer_weights(path)):
            ids = self.numbers.get((path, i))
            if ids is not None:
                array = ids.astype(np.float64).reshape(array.shape)
            out.append((name, array))
        return out


def trace_elements(
    sizes: list[int], run: Callable[[Callable[[int], np.ndarray]], dict[str, np.ndarray]]
) -> tuple[dict[str, np.ndarray], list[str], dict[str, tuple], np.ndarray]:
    """Where the elements of the source weights (of `sizes` elements each) land in the emitted
    tensors. `run(numbers)` converts the model with source weight k replaced by `numbers(k)` (one
    base-DIGIT digit of its element numbers, plus 1, flat) and returns the emitted tensors by key;
    it is called once per digit. Returns ({emitted key: the global number of the source element
    each of its elements holds (flat)}, the keys whose values are computed from source elements
    rather than copied, {emitted key: shape}, the offsets of the source weights in the global
    numbering); keys holding no numbered element are left out."""
    offsets = np.cumsum([0, *sizes])
    total = int(offsets[-1])
    digits = max(1, int(np.ceil(np.log(max(total, 2)) / np.log(DIGIT))))
    decoded: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple] = {}
    valid: dict[str, np.ndarray] = {}
    for d in range(digits):
        state = run(lambda k: (np.arange(offsets[k], offsets[k + 1]) // DIGIT**d) % DIGIT + 1.0)  # noqa: B023
        for key, array in state.items():
            shapes[key] = tuple(np.shape(array))
            a = np.asarray(array, dtype=np.float64).reshape(-1)
            ok = (a >= 1) & (a <= DIGIT) & (a == np.rint(a))
            digit = np.where(ok, np.rint(a) - 1, 0).astype(np.int64)
            decoded[key] = decoded.get(key, 0) + digit * DIGIT**d
            valid[key] = valid.get(key, True) & ok
    out: dict[str, np.ndarray] = {}
    problems = []
    for key, ids in decoded.items():
        if not valid[key].any():
            continue  # not a numbered weight (running statistics, constants)
        if not valid[key].all() or ids.max() >= total or len(np.unique(ids)) != len(ids):
            problems.append(key)
            continue
        out[key] = ids
    return out, problems, shapes, offsets


def trace_parameters(
    path: Path, setup: TrainingSetup, emit: Callable[[Any], dict[str, np.ndarray]]
) -> tuple[dict[int, tuple[str, np.ndarray]], list[str], dict[str, tuple]]:
    """For each trainable Keras variable (by its index in setup.trainable): the emitted state-dict
    key holding it and the gather index (emitted.flat == keras.flat[index]). `emit(kfile)` runs the
    conversion on a KerasFile and returns the emitted state dict."""
    sizes = [int(np.prod(shape)) for _, _, shape in setup.trainable]
    with open_keras_file(path) as kfile:

        def run(numbers: Callable[[int], np.ndarray]) -> dict[str, np.ndarray]:
            replaced = {(layer, i): numbers(k) for k, (layer, i, _) in enumerate(setup.trainable)}
            return emit(NumberedWeights(kfile, replaced))

        traced, problems, shapes, offsets = trace_elements(sizes, run)
    out: dict[int, tuple[str, np.ndarray]] = {}
    for key, ids in traced.items():
        k = int(np.searchsorted(offsets, ids[0], side="right") - 1)
        index = ids - offsets[k]
        if index.min() < 0 or index.max() >= sizes[k] or len(ids) != sizes[k]:
            problems.append(key)  # not one whole Keras weight
            continue
        out[k] = (key, index)
    return out, problems, shapes


def keras_slots(
    setup: TrainingSetup, spec: dict[str, Any]
) -> tuple[int, dict[str, list[np.ndarray]], dict[str, np.ndarray], float | None]:
    """Split the Keras optimizer's variables: (iterations, {state name: one array per trainable
    variable}, {global scalar name: value}, the stored learning rate or None)."""
    opt = spec["optimizer"]
    variables = list(setup.optimizer_variables or [])
    count = len(setup.trainable)
    iterations = int(np.asarray(variables.pop(0)))
    lr = float(np.asarray(variables.pop(0))) if opt["schedule"] is None else None
    groups, scalars = slot_groups(opt)
    slots: dict[str, list[np.ndarray]] = {}
    for names in groups:
        chunk, variables = variables[: len(names) * count], variables[len(names) * count :]
        for j, name in enumerate(names):
            slots[name] = chunk[j :: len(names)]
    globals_ = {name: np.asarray(variables.pop(0)) for name in scalars}
    if variables:
        raise ValueError(f"{len(variables)} optimizer variables left over")
    return iterations, slots, globals_, lr


def migrate_state(
    setup: TrainingSetup, spec: dict[str, Any], mapping: dict[int, tuple[str, np.ndarray]], shapes: dict[str, tuple]
) -> dict[str, np.ndarray]:
    """optimizer.safetensors' tensors: "<parameter>.<state>" in the emitted optimizer's conventions, and "step"."""
    opt = spec["optimizer"]
    iterations, slots, scalars, lr = keras_slots(setup, spec)
    torch_sgd = uses_torch_optimizer(opt) == "torch.optim.SGD"
    tensors: dict[str, np.ndarray] = {"step": np.asarray(iterations, dtype=np.int64)}
    for k, (key, index) in mapping.items():
        for name, arrays in slots.items():
            value = np.asarray(arrays[k], dtype=np.float32).reshape(-1)[index].reshape(shapes[key])
            if torch_sgd and name == "momentum_buffer":  # Keras's velocity holds -lr * torch's buffer
                value = -value / np.float32(lr if lr is not None else opt["learning_rate"])
            tensors[f"{key}.{name}"] = np.ascontiguousarray(value)
        if opt["class"] in STEP_SLOTS:
            tensors[f"{key}.step"] = np.asarray(float(iterations), dtype=np.float32)
        if "ema" in slots:
            tensors[f"{key}.ema_step"] = np.asarray(float(iterations), dtype=np.float32)
        for name, value in scalars.items():
            tensors[f"{key}.{name}"] = np.asarray(value, dtype=np.float32)
    return tensors


def attach_training(path: Path, graph: Graph, emit: Callable[[Any], dict[str, np.ndarray]]) -> None:
    """Read the file's training setup into graph.meta["training"] (the spec; its warnings also go
    out as Python warnings) and, with the optimizer's saved variables, the migrated optimizer state
    into graph.meta["training_state"]. `emit` converts a KerasFile to the emitted state dict."""
    with open_keras_file(path) as kfile:
        setup = read_training_setup(kfile)
    if setup is None:
        return
    spec = setup.spec
    opt = spec["optimizer"]
    notes: list[str] = spec["warnings"]
    leading = 1 if opt is None or opt["schedule"] is not None else 2  # iterations, the learning rate
    if opt is not None and len(setup.optimizer_variables or []) > leading:  # saved after the optimizer was built
        try:
            _, slots, _, lr = keras_slots(setup, spec)
            for name, arrays in slots.items():
                if [tuple(np.shape(a)) for a in arrays] != [shape for _, _, shape in setup.trainable]:
                    raise ValueError(f"the {name} slots do not match the model's trainable weights")
            if (
                lr is not None
                and opt["learning_rate"] is not None
                and not np.isclose(lr, opt["learning_rate"], rtol=1e-6)
            ):
                notes.append(
                    f"the saved learning rate {lr:g} (set after compile) replaces the compiled {opt['learning_rate']:g}"
                )
                opt["learning_rate"] = lr
            if opt["config"].get("gradient_accumulation_steps"):
                raise ValueError("gradient-accumulation variables are not migrated")
            mapping, problems, shapes = trace_parameters(path, setup, emit)
            state = migrate_state(setup, spec, mapping, shapes)
            missing = [f"{'/'.join(setup.trainable[k][0])} #{setup.trainable[k][1]}" for k in range(len(setup.trainable))
                       if k not in mapping]  # fmt: skip
            if missing:
                notes.append(
                    f"no optimizer state for {', '.join(missing[:5])}: model.py holds no tensor of its own for "
                    "this Keras weight (folded into another layer by the conversion)"
                )
            if problems:
                notes.append(
                    f"no optimizer state for {', '.join(problems[:5])}: the tensor is computed from several Keras "
                    "weights, not a rearrangement of one"
                )
            graph.meta["training_state"] = state
        except (KtorchError, ValueError, IndexError, KeyError, TypeError) as exc:  # the model still converts
            notes.append(f"the optimizer state is not migrated: {exc}")
    for note in notes:
        warnings.warn(f"training setup: {note}", stacklevel=2)
    graph.meta["training"] = spec


def training_reference(emit: Callable[[Any], dict[str, np.ndarray]]) -> Callable[[Path], tuple[dict, dict]]:
    """For the verifier's training parity: a function that reads a Keras file saved during training
    and returns (the emitted state dict its weights convert to, its optimizer state migrated as
    optimizer.safetensors would hold it: "<parameter>.<slot>"). The element-number trace is taken
    once, on the first file (every later one has the same structure)."""
    traced: list[tuple[dict[int, tuple[str, np.ndarray]], list[str], dict[str, tuple]]] = []

    def reference(saved: Path) -> tuple[dict, dict]:
        with open_keras_file(saved) as kfile:
            state = emit(kfile)
            setup = read_training_setup(kfile)
        if setup is None or setup.spec["optimizer"] is None:
            return state, {}
        if not traced:
            traced.append(trace_parameters(saved, setup, emit))
        mapping, _, shapes = traced[0]
        opt = setup.spec["optimizer"]
        leading = 1 if opt["schedule"] is not None else 2  # iterations, the learning rate
        if len(setup.optimizer_variables or []) <= leading:  # not built yet: no state
            return state, {}
        return state, migrate_state(setup, setup.spec, mapping, shapes)

    return reference


# -- PyTorch -> Keras: the source side, rebuilt from ktorch.json ------------------------------
def source_training(manifest_training: dict[str, Any], module: Any) -> tuple[Any, Any, Any]:
    """(optimizer, lr_scheduler or None, loss_fn or None): fresh PyTorch objects built from
    ktorch.json's `training` entry of a PyTorch -> Keras conversion (its `source`, see
    translate/torch_reader/optim.py) over `module`'s parameters (those the source optimizer held,
    by name). The optimizer starts from an empty state and the scheduler from step 0; a scheduler
    recorded with `"per": "epoch"` is meant to be stepped once every `steps_per_epoch` batches."""
    import torch

    source = manifest_training.get("source") if manifest_training else None
    if not source or not source.get("optimizer"):
        raise KtorchError("ktorch.json records no PyTorch optimizer (training.source.optimizer)")
    opt = source["optimizer"]
    cls = getattr(torch.optim, opt["class"].rsplit(".", 1)[-1])
    named = dict(module.named_parameters())
    if opt.get("params") is None:
        params = list(named.values())
    else:
        missing = [n for n in opt["params"] if n not in named]
        if missing:
            raise KtorchError(f"the module has no parameter(s) {', '.join(missing[:5])} that the optimizer held")
        params = [named[n] for n in opt["params"]]
    import inspect

    accepted = inspect.signature(cls).parameters
    # a default the constructor does not take (AdamW records decoupled_weight_decay=True, which it sets itself)
    defaults = {k: tuple(v) if isinstance(v, list) else v for k, v in opt["defaults"].items() if k in accepted}
    optimizer = cls(params, **defaults)
    scheduler = None
    sched = source.get("lr_scheduler")
    if sched:
        sched_cls = getattr(torch.optim.lr_scheduler, sched["class"].rsplit(".", 1)[-1])
        scheduler = sched_cls(optimizer, **sched["kwargs"])
    loss_fn = None
    loss = source.get("loss")
    if loss:
        kwargs = dict(loss["kwargs"])
        for key in ("weight", "pos_weight"):
            if kwargs.get(key) is not None:
                kwargs[key] = torch.tensor(kwargs[key], dtype=torch.float32)
        loss_fn = getattr(torch.nn, loss["class"].rsplit(".", 1)[-1])(**kwargs)
    return optimizer, scheduler, loss_fn
