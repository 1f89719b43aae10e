"""Training parity: K identical training steps on the source and on the emitted model.

Both sides start from the converted weights (and the migrated optimizer state, when the source
was saved after training), take the same seeded batches, and after every step the verifier
compares the loss, every weight (parameters and buffers such as BatchNorm's moving statistics)
and the optimizer's state (moments, step counts), in the emitted model's names and layout. The
report names the first step, parameter and optimizer slot that diverge.

Randomness is made identical by switching it off on both sides: every dropout and noise layer
(Dropout, SpatialDropout, AlphaDropout, GaussianDropout, GaussianNoise, and the `dropout` /
`recurrent_dropout` of recurrent and attention layers) runs at rate 0, while everything else
trains as it does (BatchNorm updates its moving statistics, frozen layers stay frozen).

A direction plugs in its two training sides (`TrainingSides`, in the verifier's SIDES table).
The Keras -> PyTorch source side needs the conversion itself, to express the trained Keras
weights and optimizer variables in the emitted model's names; the verifier never imports the
pipeline, so ktorch registers that function here (`register_reference`) when it is imported.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..graph.errors import KtorchError
from .compare import Comparison, compare
from .profiles import Profile
from .runners import RunError, import_emitted, keras_device, load_keras_model, make_inputs, to_emitted

WORST = 3  # worst elements kept per failing comparison
# a parameter whose gradient stays below this fraction of the largest one has no gradient in exact
# arithmetic (a key-projection bias, which softmax cancels): its steps are rounding noise, which Adam
# and RMSprop scale up to steps of about lr in either direction, differently on each side
NOISE_GRADIENT = 1e-6
# Keras layers whose whole job is training-time randomness, and the config key that sets its amount
NOISE_LAYERS = {
    "Dropout": "rate",
    "SpatialDropout1D": "rate",
    "SpatialDropout2D": "rate",
    "SpatialDropout3D": "rate",
    "AlphaDropout": "rate",
    "GaussianDropout": "rate",
    "GaussianNoise": "stddev",
}
DROPOUT_OPTIONS = ("dropout", "recurrent_dropout")  # of LSTM/GRU/SimpleRNN, MultiHeadAttention, Attention
# emitted PyTorch modules that draw random numbers in training, and the attribute that sets how much
TORCH_NOISE = {
    "Dropout": "p",
    "Dropout1d": "p",
    "Dropout2d": "p",
    "Dropout3d": "p",
    "AlphaDropout": "p",
    "FeatureAlphaDropout": "p",
    "SharedDropout": "p",
    "GaussianDropout": "p",
    "GaussianNoise": "stddev",
}


class TrainingStructureError(KtorchError):
    """Training parity cannot be checked for this pair (no training setup, no train.py, a direction
    without training sides); the verify exit code 2."""

    exit_code = 2


class TrainingSide(Protocol):
    """One side of a training-parity check, in the emitted model's names and layout."""

    backend: str
    disabled: list[str]  # the dropout/noise switched off, for the report

    def step(self, inputs: Sequence[np.ndarray], labels: np.ndarray) -> float:
        """One training step on a batch in the source's layout; returns the loss."""
        ...

    def weights(self) -> dict[str, np.ndarray]:
        """Every weight, by the emitted state-dict key."""
        ...

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer's per-parameter state, as "<parameter>.<slot>"."""
        ...

    def gradient_free(self) -> dict[str, float]:
        """Parameters whose gradient has been rounding noise at every step so far (see
        NOISE_GRADIENT): name -> the largest ratio to the largest gradient seen."""
        ...


@dataclass(frozen=True)
class TrainingSides:
    """The source and emitted training sides of one conversion direction."""

    source: Callable[..., TrainingSide]  # (src, converted, manifest, device=, trust_code=)
    emitted: Callable[..., TrainingSide]  # (converted, manifest, device=)


# direction -> factory(source file, manifest) -> reference(saved source file) -> (weights, optimizer state),
# both in the emitted model's names; registered by ktorch (the conversion lives above the verifier)
REFERENCES: dict[str, Callable[[Path, dict[str, Any]], Callable[[Path], tuple[dict, dict]]]] = {}


def register_reference(direction: str, factory: Callable[[Path, dict[str, Any]], Any]) -> None:
    REFERENCES[direction] = factory


def registered_reference(direction: str) -> Callable[..., Any]:
    """The reference factory `direction`'s conversion registered (importing ktorch registers them)."""
    factory = REFERENCES.get(direction)
    if factory is None:
        raise RunError(f"no reference conversion is registered for {direction}; import ktorch first")
    return factory


# -- results -----------------------------------------------------------------------------------
@dataclass
class StepResult:
    """The comparisons after one training step."""

    step: int  # 1-based
    rtol: float
    loss: Comparison
    weights: list[Comparison] = field(default_factory=list)
    optimizer: list[Comparison] = field(default_factory=list)  # named "<parameter>.<slot>"

    def first_failure(self) -> tuple[str, Comparison] | None:
        """("weight" | "optimizer" | "loss", the comparison) of the first failing tensor: weights
        in the emitted model's order, then optimizer slots, then the loss."""
        for kind, items in (("weight", self.weights), ("optimizer", self.optimizer), ("loss", [self.loss])):
            for c in items:
                if not c.passed:
                    return kind, c
        return None

    def worst(self, kind: str) -> float:
        items = {"weight": self.weights, "optimizer": self.optimizer, "loss": [self.loss]}[kind]
        return max((c.max_rel for c in items if not c.exact), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "rtol": self.rtol,
            "loss": _comparison(self.loss),
            "worst_weight_rel": self.worst("weight"),
            "worst_optimizer_rel": self.worst("optimizer"),
            "weights": [_comparison(c) for c in self.weights],
            "optimizer": [_comparison(c) for c in self.optimizer],
        }


@dataclass
class TrainingResult:
    """K training steps on both sides, compared after each."""

    device: str
    steps: int
    batch: int
    seed: int
    profile: str
    rtol: float  # after step 1
    growth: float  # per further step
    source_backend: str
    emitted_backend: str
    results: list[StepResult] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # structural: a weight or optimizer slot missing on one side
    notes: list[str] = field(default_factory=list)

    @property
    def first_divergence(self) -> tuple[int, str, Comparison] | None:
        """(step, kind, comparison) of the first failing tensor, or None."""
        for result in self.results:
            failure = result.first_failure()
            if failure is not None:
                return result.step, failure[0], failure[1]
        return None

    @property
    def passed(self) -> bool:
        return not self.problems and self.first_divergence is None

    def worst(self, kind: str) -> float:
        return max((r.worst(kind) for r in self.results), default=0.0)

    def summary(self) -> str:
        if self.problems:
            return f"training: structural mismatch: {self.problems[0]}"
        first = self.first_divergence
        if first is None:
            return (
                f"training parity over {self.steps} step(s): worst relative error {self.worst('weight'):.3g} (weights), "
                f"{self.worst('optimizer'):.3g} (optimizer state), {self.worst('loss'):.3g} (loss)"
            )
        step, kind, c = first
        what = {"weight": "weight", "optimizer": "optimizer state", "loss": "the loss"}[kind]
        name = "" if kind == "loss" else f" {c.name!r}"
        if kind == "optimizer":
            parameter, _, slot = c.name.rpartition(".")
            name = f" {slot!r} of parameter {parameter!r}"
        detail = c.problem or f"relative error {c.max_rel:.3g} > {c.tolerance:.3g}"
        text = f"training diverges at step {step}: {what}{name} ({detail})"
        loss = self.results[step - 1].loss
        if kind != "loss" and not loss.passed:
            text += f"; the loss differs too ({loss.max_rel:.3g})"
        return text

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergence
        return {
            "device": self.device,
            "steps": self.steps,
            "batch": self.batch,
            "seed": self.seed,
            "profile": self.profile,
            "rtol": self.rtol,
            "growth": self.growth,
            "source_backend": self.source_backend,
            "emitted_backend": self.emitted_backend,
            "passed": self.passed,
            "summary": self.summary(),
            "worst": {kind: self.worst(kind) for kind in ("weight", "optimizer", "loss")},
            "first_divergence": None
            if first is None
            else {"step": first[0], "kind": first[1], **(_comparison(first[2]) or {})},
            "disabled": list(self.disabled),
            "problems": list(self.problems),
            "notes": list(self.notes),
            "steps_results": [r.to_dict() for r in self.results],
        }


def _comparison(c: Comparison | None) -> dict[str, Any] | None:
    if c is None:
        return None
    d = c.to_dict()
    d.setdefault("worst", [])
    for key in ("max_abs", "max_rel"):  # JSON has no infinity (a shape mismatch)
        d[key] = d[key] if np.isfinite(d[key]) else None
    return d


# -- batches -----------------------------------------------------------------------------------
# the label format each loss takes: one-hot rows, class numbers, 0/1 targets (else N(0, 1) targets)
LABELS = {
    "CategoricalCrossentropy": "onehot",
    "SparseCategoricalCrossentropy": "classes",
    "BinaryCrossentropy": "binary",
    "CrossEntropyLoss": "classes",
    "NLLLoss": "classes",
    "BCELoss": "binary",
    "BCEWithLogitsLoss": "binary",
}


def loss_of(manifest: dict[str, Any]) -> tuple[str | None, int]:
    """(the source's loss class, the source's class axis): Keras sources keep classes last, PyTorch
    sources on axis 1."""
    training = manifest.get("training") or {}
    source = training.get("source")
    if isinstance(source, dict) and source.get("loss"):
        return str(source["loss"]["class"]).rsplit(".", 1)[-1], 1
    loss = training.get("loss")
    return (loss if isinstance(loss, str) else None), -1


def make_labels(
    loss: str | None, output: dict[str, Any], *, batch: int, rng: np.random.Generator, class_axis: int = -1
) -> np.ndarray:
    """Seeded labels in the source's layout, in the format the loss takes (LABELS): one-hot rows,
    class numbers (the class axis removed), 0/1 targets, or N(0, 1) targets for regression losses."""
    shape = [batch if i == 0 else (8 if d is None else int(d)) for i, d in enumerate(output["shape"])]
    axis = class_axis % len(shape) if len(shape) > 1 else 0
    classes = shape[axis] if len(shape) > 1 else 1
    kind = LABELS.get(loss or "")
    if kind == "onehot":
        return np.moveaxis(
            np.eye(classes, dtype="float32")[rng.integers(0, classes, shape[:axis] + shape[axis + 1 :])], -1, axis
        )
    if kind == "classes":
        return rng.integers(0, classes, shape[:axis] + shape[axis + 1 :]).astype("int64")
    if kind == "binary":
        return rng.integers(0, 2, shape).astype("float32")
    return rng.standard_normal(shape).astype("float32")


def make_batches(
    manifest: dict[str, Any], *, steps: int, batch: int, seed: int
) -> list[tuple[list[np.ndarray], np.ndarray]]:
    """`steps` seeded (inputs, labels) batches in the source's layout."""
    loss, class_axis = loss_of(manifest)
    rng = np.random.default_rng(seed + 1)
    out = []
    for k in range(steps):
        inputs = make_inputs(manifest["inputs"], seed=seed + 1000 * (k + 1), batch=batch)
        labels = make_labels(loss, manifest["outputs"][0], batch=batch, rng=rng, class_axis=class_axis)
        out.append((inputs, labels))
    return out


def label_perm(output: dict[str, Any], labels: np.ndarray, class_axis: int = -1) -> list[int] | None:
    """The emitted layout of the labels: the output's perm, or (class numbers, one axis less than
    the output) the output's perm without the source's class axis."""
    perm = output.get("perm")
    if not perm:
        return None
    if labels.ndim == len(perm):
        return list(perm)
    if labels.ndim == len(perm) - 1:
        removed = class_axis % len(perm)
        reduced = [a - (a > removed) for a in perm if a != removed]
        return None if reduced == sorted(reduced) else reduced
    return None


# -- the check ---------------------------------------------------------------------------------
def check_training_setup(manifest: dict[str, Any], converted: Path) -> None:
    """Raise TrainingStructureError unless the output carries a training setup to check."""
    training = manifest.get("training") or {}
    direction = manifest.get("direction", "keras->torch")
    if not training.get("file") and not training.get("source"):
        why = "; ".join(training.get("warnings", [])) or "the source was saved without a compiled training setup"
        raise TrainingStructureError(
            f"{converted}: no training setup to check ({why}); --train-steps needs a source compiled with an "
            "optimizer and a loss (Keras: model.compile(...) before saving)"
        )
    if training.get("file") and not (converted / training["file"]).is_file():
        raise TrainingStructureError(
            f"{converted / training['file']}: missing ({direction} output without its train.py)"
        )
    if manifest.get("route", {}).get("name", "direct") != "direct":
        raise TrainingStructureError(
            f"{converted}: training parity is checked for direct conversions only (this one took the "
            f"{manifest['route']['name']} route)"
        )
    if len(manifest.get("outputs", [])) != 1:
        raise TrainingStructureError(f"{converted}: training parity is checked for single-output models only")


def run_training(
    sides: TrainingSides,
    src: Path,
    converted: Path,
    manifest: dict[str, Any],
    *,
    device: str,
    steps: int,
    batch: int,
    seed: int,
    profile: Profile,
    tolerance: float | None,
    trust_code: bool = False,
) -> TrainingResult:
    """Build both training sides, take `steps` steps on the same batches, compare after each."""
    # the source first: a PyTorch source is captured with torch.export, which must run before TensorFlow loads
    source = sides.source(src, converted, manifest, device=device, trust_code=trust_code)
    emitted = sides.emitted(converted, manifest, device=device)
    base = tolerance if tolerance is not None else profile.rtol
    result = TrainingResult(
        device, steps, batch, seed, profile.name, base, profile.train_growth, source.backend, emitted.backend
    )
    result.disabled = sorted(set(source.disabled) | set(emitted.disabled))
    names = source.labels() if hasattr(source, "labels") else {}
    for k, (inputs, labels) in enumerate(make_batches(manifest, steps=steps, batch=batch, seed=seed), start=1):
        rtol = profile.train_rtol(k, base)
        expected_loss = _run_step(source, "source", inputs, labels, k)
        got_loss = _run_step(emitted, "emitted", inputs, labels, k)
        step = StepResult(k, rtol, compare("loss", np.float64(expected_loss), np.float64(got_loss), rtol))
        step.weights = _compare_all(source.weights(), emitted.weights(), rtol, "weight", result.problems)
        step.optimizer = _compare_all(
            source.optimizer_state(), emitted.optimizer_state(), rtol, "optimizer slot", result.problems
        )
        _set_aside_noise(step, {**source.gradient_free(), **emitted.gradient_free()}, result.notes)
        for c in step.weights:  # a PyTorch source names the Keras weights after its parameters
            c.name = names.get(c.name, c.name)
        result.results.append(step)
        if result.problems:
            break
    return result


def noise_gradients(grads: dict[str, np.ndarray], so_far: dict[str, float] | None) -> dict[str, float]:
    """The tensors whose gradient is below NOISE_GRADIENT of the largest one, at this step and every
    one before (`so_far`, None at the first): name -> the largest such ratio seen."""
    peaks = {n: float(np.abs(g).max()) if g.size else 0.0 for n, g in grads.items()}
    largest = max(peaks.values(), default=0.0)
    ratios = {n: v / largest for n, v in peaks.items() if largest > 0 and v <= NOISE_GRADIENT * largest}
    if so_far is None:
        return ratios
    return {n: max(r, ratios[n]) for n, r in so_far.items() if n in ratios}


def _set_aside_noise(step: StepResult, noise: dict[str, float], notes: list[str]) -> None:
    """Drop the failing comparisons of parameters whose gradient is rounding noise (and of their
    optimizer slots), with a note: they follow no signal on either side. Whatever they do cannot
    reach the outputs unnoticed: the loss and every other weight are still compared."""
    for attr in ("weights", "optimizer"):
        kept = []
        for c in getattr(step, attr):
            name = c.name if attr == "weights" else c.name.rpartition(".")[0]
            if not c.passed and name in noise:
                note = (
                    f"{name}: not compared once it differs (step {step.step}): its gradient is rounding noise "
                    f"(at most {noise[name]:.2g} of the largest gradient), e.g. an attention key bias that the "
                    "softmax cancels; Adam and RMSprop scale such noise up to steps of about lr on each side"
                )
                if not any(n.startswith(f"{name}: ") for n in notes):
                    notes.append(note)
                continue
            kept.append(c)
        setattr(step, attr, kept)


def _run_step(side: TrainingSide, which: str, inputs: list[np.ndarray], labels: np.ndarray, k: int) -> float:
    try:
        return float(side.step(inputs, labels))
    except KtorchError:
        raise
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else ""
        raise RunError(f"training step {k} failed on the {which} side: {type(exc).__name__}: {message}") from exc


def _compare_all(
    expected: dict[str, np.ndarray], got: dict[str, np.ndarray], rtol: float, what: str, problems: list[str]
) -> list[Comparison]:
    """Compare every expected tensor (in its order); a missing one is a structural problem."""
    out = []
    for name, reference in expected.items():
        if name not in got:
            problems.append(f"the emitted side has no {what} {name!r} (the source has one)")
            continue
        out.append(compare(name, np.asarray(reference), np.asarray(got[name]), rtol, worst=WORST))
    return out


# -- Keras -> PyTorch --------------------------------------------------------------------------
def zero_keras_noise(config: Any, disabled: list[str]) -> None:
    """Set every dropout/noise rate in a Keras model config to 0 (in place), noting each layer."""
    if isinstance(config, list):
        for item in config:
            zero_keras_noise(item, disabled)
        return
    if not isinstance(config, dict):
        return
    cls, inner = config.get("class_name"), config.get("config")
    if isinstance(cls, str) and isinstance(inner, dict):
        keys = [NOISE_LAYERS[cls]] if cls in NOISE_LAYERS else []
        keys += [k for k in DROPOUT_OPTIONS if k in inner]
        for key in keys:
            value = inner.get(key)
            if isinstance(value, (int, float)) and value > 0:
                disabled.append(f"{inner.get('name', cls)} ({cls} {key}={value:g})")
                inner[key] = 0.0
    for value in config.values():
        zero_keras_noise(value, disabled)


def zero_torch_noise(model: Any, disabled: list[str]) -> None:
    """Set every dropout/noise module's rate (TORCH_NOISE) to 0, noting each."""
    for name, m in model.named_modules():
        attr = TORCH_NOISE.get(type(m).__name__)
        value = getattr(m, attr, None) if attr else None
        if isinstance(value, (int, float)) and value > 0:
            setattr(m, attr, 0.0)
            disabled.append(f"{name} ({type(m).__name__} {attr}={value:g})")


def zero_keras_layer_noise(model: Any, disabled: list[str]) -> None:
    """Set the rate of a built Keras model's dropout/noise layers (NOISE_LAYERS) and the dropout of
    its other layers to 0 before its training function is traced, noting each."""
    for layer in model.layers:
        cls = type(layer).__name__
        keys = ([NOISE_LAYERS[cls]] if cls in NOISE_LAYERS else []) + [k for k in DROPOUT_OPTIONS if hasattr(layer, k)]
        for key in keys:
            value = getattr(layer, key, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                setattr(layer, key, 0.0)
                disabled.append(f"{layer.name} ({cls} {key}={value:g})")


class KerasTrainer:
    """The Keras source, compiled from its saved compile configuration, trained with
    `train_on_batch`; its weights and optimizer variables are expressed in the emitted model's
    names by the conversion itself (the registered reference)."""

    direction = "keras->torch"

    def __init__(
        self, src: Path, converted: Path, manifest: dict[str, Any], *, device: str = "cpu", trust_code: bool = False
    ) -> None:
        import keras

        factory = registered_reference(self.direction)
        self.device, self.disabled = device, []
        with keras_device(device), warnings.catch_warnings():
            # a model compiled but never trained saved its optimizer unbuilt: nothing to restore
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = load_keras_model(src, trust_code=trust_code, compile=True)
            if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", True):
                raise TrainingStructureError(f"{src}: Keras loads the model uncompiled: no training setup to check")
            config = model.get_config()
            zero_keras_noise(config, self.disabled)
            if self.disabled:  # rebuild with rate 0, the same weights, the same compiled optimizer and its state
                clone = type(model).from_config(config)
                clone.set_weights(model.get_weights())
                clone.compile_from_config(model.get_compile_config())
                if model.optimizer.built:
                    if not clone.optimizer.built:
                        clone.optimizer.build(clone.trainable_variables)
                    for target, value in zip(clone.optimizer.variables, model.optimizer.variables, strict=True):
                        target.assign(value)
                model = clone
        self.model = model
        self.backend = f"keras {keras.__version__} ({keras.backend.backend()})"
        self._dir = tempfile.TemporaryDirectory(prefix="ktorch-train-")
        self._taken = 0
        self._cache: tuple[int, dict, dict] | None = None
        self.reference = factory(self._save(), manifest)

    def _save(self) -> Path:
        path = Path(self._dir.name) / f"step{self._taken}.keras"
        with keras_device(self.device):
            self.model.save(path)
        return path

    def step(self, inputs: Sequence[np.ndarray], labels: np.ndarray) -> float:
        with keras_device(self.device):
            logs = self.model.train_on_batch(list(inputs) if len(inputs) > 1 else inputs[0], labels, return_dict=True)
        self._taken += 1
        return float(logs["loss"])

    def _current(self) -> tuple[dict, dict]:
        if self._cache is None or self._cache[0] != self._taken:
            weights, state = self.reference(self._save())
            self._cache = (self._taken, weights, state)
        return self._cache[1], self._cache[2]

    def weights(self) -> dict[str, np.ndarray]:
        weights, _ = self._current()
        # integer buffers (BatchNorm's num_batches_tracked) hold nothing Keras has
        return {k: np.asarray(v) for k, v in weights.items() if np.issubdtype(np.asarray(v).dtype, np.floating)}

    def optimizer_state(self) -> dict[str, np.ndarray]:
        _, state = self._current()
        return {k: np.asarray(v) for k, v in state.items() if "." in k}  # not the global "step"

    def gradient_free(self) -> dict[str, float]:
        return {}  # train_on_batch keeps no gradients; the emitted side measures them


class TorchTrainer:
    """An emitted PyTorch directory trained by its own train.py: make_optimizer (resuming from
    optimizer.safetensors when the conversion migrated the state) and train_step."""

    def __init__(self, converted: Path, manifest: dict[str, Any], *, device: str = "cpu") -> None:
        import torch

        self.device, self.disabled = device, []
        self.manifest = manifest
        training = manifest.get("training") or {}
        module = import_emitted(converted)
        self.train = import_emitted(converted, training.get("file", "train.py"))
        try:
            self.model = module.load(converted / "model.safetensors", device=device)
        except Exception as exc:
            raise RunError(f"{converted}: the emitted model could not be built ({type(exc).__name__}: {exc})") from exc
        zero_torch_noise(self.model, self.disabled)
        state = training.get("optimizer_state")
        start = int(state["step"]) if state else 0
        self.optimizer, self.scheduler = self.train.make_optimizer(self.model, start_step=start)
        self._noise: dict[str, float] | None = None  # gradient-free parameters so far
        if state:
            self.train.load_optimizer_state(self.model, self.optimizer, converted / state["file"])
        self.backend = f"torch {torch.__version__}"

    def _tensor(self, array: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def step(self, inputs: Sequence[np.ndarray], labels: np.ndarray) -> float:
        specs, output = self.manifest["inputs"], self.manifest["outputs"][0]
        x = [self._tensor(to_emitted(a, s.get("perm"))) for a, s in zip(inputs, specs)]
        y = self._tensor(to_emitted(labels, label_perm(output, labels)))
        loss, _ = self.train.train_step(self.model, self.optimizer, self.scheduler, x[0] if len(x) == 1 else x, y)
        grads = {n: p.grad for n, p in self.model.named_parameters() if p.grad is not None}
        self._noise = noise_gradients({n: g.detach().cpu().numpy() for n, g in grads.items()}, self._noise)
        return float(loss)

    def gradient_free(self) -> dict[str, float]:
        return dict(self._noise or {})

    def weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def optimizer_state(self) -> dict[str, np.ndarray]:
        names = {id(p): name for name, p in self.model.named_parameters()}
        out: dict[str, np.ndarray] = {}
        for parameter, state in self.optimizer.state.items():
            for slot, value in state.items():
                array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
                out[f"{names.get(id(parameter), '?')}.{slot}"] = array
        return out


KERAS_TO_TORCH = TrainingSides(KerasTrainer, TorchTrainer)


# -- PyTorch -> Keras --------------------------------------------------------------------------
class TorchSourceTrainer:
    """The PyTorch source module, trained as ktorch.json's `training.source` describes (the optimizer,
    scheduler and loss rebuilt by ktorch.training.source_training, the regularizers given to the
    conversion added to the loss); its parameters and BatchNorm statistics are expressed as the
    emitted Keras weights ("layer/i") by the conversion's element-number trace (the registered
    reference), and its optimizer state as the Keras optimizer's variables, mapped as the conversion
    migrates it."""

    direction = "torch->keras"

    def __init__(
        self, src: Any, converted: Path, manifest: dict[str, Any], *, device: str = "cpu", trust_code: bool = False
    ) -> None:
        import copy

        import torch

        factory = registered_reference(self.direction)
        self.device, self.disabled, self.manifest = device, [], manifest
        if isinstance(src, torch.nn.Module):
            module = copy.deepcopy(src)  # the caller's module is not trained
        elif isinstance(src, (str, Path)) and Path(src).is_dir():
            module = import_emitted(Path(src)).load(Path(src) / "model.safetensors", device=device)
        else:
            raise TrainingStructureError(
                f"{src}: training parity for a PyTorch source needs the module itself (ktorch.convert(module, ..., "
                "train_steps=K) or ktorch.verify.check_training(module, OUT, steps=K)) or a ktorch PyTorch output "
                "directory; a torch.export program does not train as its module did"
            )
        self.module = module.to(device)
        zero_torch_noise(self.module, self.disabled)
        self.reference = factory(self.module, manifest)
        self.optimizer, self.scheduler, self.loss_fn = self.reference.setup()
        training = manifest.get("training") or {}
        sched = (training.get("source") or {}).get("lr_scheduler") or {}
        self.every = int(sched.get("steps_per_epoch") or 1) if sched.get("per") == "epoch" else 1
        named = dict(self.module.named_parameters())
        self.regularizers = [
            (named[name], factors) for name, factors in (training.get("source_regularizers") or {}).items()
        ]
        self.taken = 0
        self._noise: dict[str, float] | None = None
        self.backend = f"torch {torch.__version__}"

    def step(self, inputs: Sequence[np.ndarray], labels: np.ndarray) -> float:
        import torch

        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        x = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in inputs]
        loss = self.loss_fn(self.module(*x), torch.from_numpy(labels).to(self.device))
        for parameter, factors in self.regularizers:
            if factors.get("l1"):
                loss = loss + factors["l1"] * parameter.abs().sum()
            if factors.get("l2"):
                loss = loss + factors["l2"] * parameter.square().sum()
        loss.backward()
        self._noise = noise_gradients(self.reference.gradients(), self._noise)  # by Keras weight
        self.optimizer.step()
        self.taken += 1
        if self.scheduler is not None and self.taken % self.every == 0:
            self.scheduler.step()
        return float(loss.detach())

    def weights(self) -> dict[str, np.ndarray]:
        return self.reference.weights()

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return self.reference.optimizer_state(self.optimizer)

    def gradient_free(self) -> dict[str, float]:
        return dict(self._noise or {})

    def labels(self) -> dict[str, str]:
        return self.reference.labels()


class KerasEmittedTrainer:
    """An emitted Keras directory trained as its train.py says: `train.load()` (the compiled
    model.keras, with the migrated optimizer state) and `train_on_batch`."""

    def __init__(self, converted: Path, manifest: dict[str, Any], *, device: str = "cpu") -> None:
        import sys

        import keras

        self.device, self.disabled, self.manifest = device, [], manifest
        training = manifest.get("training") or {}
        train = import_emitted(converted, training.get("file", "train.py"))
        sys.path.insert(0, str(converted))  # train.load() imports model.py beside it
        try:
            with keras_device(device):
                self.model = train.load()
        finally:
            sys.path.remove(str(converted))
        zero_keras_layer_noise(self.model, self.disabled)
        self.backend = f"keras {keras.__version__} ({keras.backend.backend()})"

    def step(self, inputs: Sequence[np.ndarray], labels: np.ndarray) -> float:
        specs, output = self.manifest["inputs"], self.manifest["outputs"][0]
        x = [to_emitted(a, s.get("perm")) for a, s in zip(inputs, specs)]
        _, class_axis = loss_of(self.manifest)
        y = to_emitted(labels, label_perm(output, labels, class_axis))
        with keras_device(self.device):
            logs = self.model.train_on_batch(x[0] if len(x) == 1 else x, y, return_dict=True)
        return float(logs["loss"])

    def weights(self) -> dict[str, np.ndarray]:
        import keras

        return {
            f"{layer.name}/{i}": np.asarray(keras.ops.convert_to_numpy(w))
            for layer in self.model.layers
            for i, w in enumerate(layer.weights)
        }

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer's variables by weight, "layer/i.slot" (Keras names each one after its
        weight's path, "layer_kernel_<slot>")."""
        import keras

        prefixes = {
            f"{w.path.replace('/', '_')}_": f"{layer.name}/{i}"
            for layer in self.model.layers
            for i, w in enumerate(layer.weights)
            if w.trainable
        }
        out = {}
        for variable in self.model.optimizer.variables:
            owners = [p for p in prefixes if variable.name.startswith(p)]
            if owners:
                prefix = max(owners, key=len)  # "dense_1_kernel_" before "dense_1_"
                out[f"{prefixes[prefix]}.{variable.name[len(prefix) :]}"] = np.asarray(
                    keras.ops.convert_to_numpy(variable)
                )
        return out

    def gradient_free(self) -> dict[str, float]:
        return {}


TORCH_TO_KERAS = TrainingSides(TorchSourceTrainer, KerasEmittedTrainer)
