"""The training setup stored in a Keras file: the compile configuration and the optimizer's variables.

A `.keras` archive keeps `compile_config` in config.json and the optimizer's variables under
`optimizer/vars/<i>` of model.weights.h5 (iterations, the learning rate unless it is a schedule,
then the per-variable slots); a full-model `.h5` keeps `training_config` as a file attribute.
Read without Keras or TensorFlow. The setup is normalised into a JSON-able spec that the PyTorch
writer turns into train.py; the optimizer's slots stay numpy arrays in the Keras weights' layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .file import KerasFile

# Optimizer defaults (keras/src/optimizers/*.py, Keras 3.15): a stored config holds every key,
# these fill in what an older file leaves out.
BASE_DEFAULTS: dict[str, Any] = {
    "weight_decay": None,
    "clipnorm": None,
    "clipvalue": None,
    "global_clipnorm": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "SGD": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
    "Adam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False},
    "AdamW": {
        "learning_rate": 0.001,
        "weight_decay": 0.004,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "epsilon": 1e-7,
        "amsgrad": False,
    },
    "RMSprop": {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False},
    "Adagrad": {"learning_rate": 0.001, "initial_accumulator_value": 0.1, "epsilon": 1e-7},
    "Adadelta": {"learning_rate": 0.001, "rho": 0.95, "epsilon": 1e-7},
    "Adamax": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
    "Nadam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
}
SCHEDULES = ("ExponentialDecay", "PiecewiseConstantDecay", "CosineDecay", "InverseTimeDecay", "PolynomialDecay")
SCHEDULE_DEFAULTS: dict[str, dict[str, Any]] = {
    "ExponentialDecay": {"staircase": False},
    "PiecewiseConstantDecay": {},
    "CosineDecay": {"alpha": 0.0, "warmup_target": None, "warmup_steps": 0},
    "InverseTimeDecay": {"staircase": False},
    "PolynomialDecay": {"end_learning_rate": 0.0001, "power": 1.0, "cycle": False},
}
LOSS_NAMES = {
    "categorical_crossentropy": "CategoricalCrossentropy",
    "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
    "binary_crossentropy": "BinaryCrossentropy",
    "mean_squared_error": "MeanSquaredError",
    "mse": "MeanSquaredError",
    "mean_absolute_error": "MeanAbsoluteError",
    "mae": "MeanAbsoluteError",
    "huber": "Huber",
    "huber_loss": "Huber",
}
LOSS_DEFAULTS: dict[str, dict[str, Any]] = {
    "CategoricalCrossentropy": {"from_logits": False, "label_smoothing": 0.0, "axis": -1},
    "SparseCategoricalCrossentropy": {"from_logits": False, "ignore_class": None, "axis": -1},
    "BinaryCrossentropy": {"from_logits": False, "label_smoothing": 0.0, "axis": -1},
    "MeanSquaredError": {},
    "MeanAbsoluteError": {},
    "Huber": {"delta": 1.0},
}
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight")
METRIC_NAMES = {
    "accuracy": "accuracy",
    "acc": "accuracy",
    "categorical_accuracy": "categorical_accuracy",
    "CategoricalAccuracy": "categorical_accuracy",
    "sparse_categorical_accuracy": "sparse_categorical_accuracy",
    "SparseCategoricalAccuracy": "sparse_categorical_accuracy",
    "binary_accuracy": "binary_accuracy",
    "BinaryAccuracy": "binary_accuracy",
    "mse": "mean_squared_error",
    "mean_squared_error": "mean_squared_error",
    "MeanSquaredError": "mean_squared_error",
    "mae": "mean_absolute_error",
    "mean_absolute_error": "mean_absolute_error",
    "MeanAbsoluteError": "mean_absolute_error",
}
# Layers whose last N variables are not trained (Keras saves a layer's trainable variables first).
NON_TRAINABLE_TAIL = {"BatchNormalization": 2, "TorchBatchNormalization": 2}
NON_TRAINABLE_LAYERS = frozenset({"Normalization"})
# Layers whose variables live in sub-objects: Keras tracks (and trains, and keeps optimizer slots for)
# them in creation order, a weights file lists them alphabetically
SUB_OBJECT_ORDER = {
    "MultiHeadAttention": ("query_dense", "key_dense", "value_dense", "output_dense"),
    "Bidirectional": ("forward_layer", "backward_layer"),
}
MODEL_CLASSES = ("Functional", "Sequential", "Model")


@dataclass
class TrainingSetup:
    """The compile configuration of a Keras file, normalised, and the optimizer's variables."""

    spec: dict[str, Any]  # JSON-able: optimizer, schedule, loss, metrics, warnings
    optimizer_variables: list[np.ndarray] | None = None  # optimizer/vars/<i> of a .keras file, in order
    trainable: list[tuple[tuple[str, ...], int, tuple[int, ...]]] = field(default_factory=list)  # (layer, index, shape)


def _name(obj: Any) -> tuple[str, dict[str, Any]]:
    """(class name, config) of a serialized Keras object or a plain string identifier."""
    if isinstance(obj, str):
        return obj, {}
    if isinstance(obj, dict):
        return str(obj.get("class_name", "?")), dict(obj.get("config") or {})
    return repr(obj), {}


def short_float(value: Any) -> Any:
    """A float Keras read back from a float32 variable (0.05000000074505806) as it was written (0.05);
    Keras computes in float32, where the two are the same number."""
    if isinstance(value, float) and not isinstance(value, bool):
        short = float(str(np.float32(value)))
        return short if np.float32(short) == np.float32(value) else value
    return value


def parse_optimizer(obj: Any, warnings: list[str]) -> dict[str, Any] | None:
    cls, config = _name(obj)
    cls = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad"}.get(cls, cls)
    cls = {"adadelta": "Adadelta", "adamax": "Adamax", "nadam": "Nadam"}.get(cls, cls)
    cls = cls.removeprefix("Custom>")
    if cls not in OPTIMIZER_DEFAULTS:
        warnings.append(f"optimizer {cls} has no PyTorch translation; train.py leaves make_optimizer() to you")
        return None
    merged = {**BASE_DEFAULTS, **OPTIMIZER_DEFAULTS[cls]}
    known = set(merged) | {"name", "is_legacy_optimizer", "jit_compile", "decay"}
    options = {k: short_float(config.get(k, v)) for k, v in merged.items()}
    for key, value in config.items():
        if key not in known and value not in (None, False):
            warnings.append(f"optimizer option {key}={value!r} is not translated")
    if config.get("is_legacy_optimizer"):
        warnings.append(
            f"a legacy tf.keras {cls} optimizer: train.py applies the Keras 3 update, which was checked against "
            "Keras 3 only (legacy Adagrad, for one, adds epsilon outside the square root)"
        )
    if config.get("decay"):
        warnings.append(
            f"the legacy optimizer option decay={config['decay']} is not translated (Keras 3 ignores it too)"
        )
    lr = options.pop("learning_rate")
    schedule = None
    if isinstance(lr, dict):
        s_cls, s_config = _name(lr)
        if s_cls not in SCHEDULES:
            warnings.append(f"learning-rate schedule {s_cls} has no translation; train.py uses its initial value")
            lr = float(s_config.get("initial_learning_rate", OPTIMIZER_DEFAULTS[cls]["learning_rate"]))
        else:
            schedule = {
                "class": s_cls,
                "config": {**SCHEDULE_DEFAULTS[s_cls], **{k: v for k, v in s_config.items() if k != "name"}},
            }
            lr = None
    elif lr is not None:
        lr = short_float(float(lr))
    for key, what in (
        ("gradient_accumulation_steps", "gradient accumulation"),
        ("loss_scale_factor", "loss scaling"),
    ):
        if options.get(key):
            warnings.append(f"{what} is not translated: train.py updates the weights at every step without it")
    if cls == "SGD" and options.get("nesterov") and not options.get("momentum"):
        options["nesterov"] = False  # Keras applies Nesterov only with momentum
    return {"class": cls, "learning_rate": lr, "schedule": schedule, "config": options}


def parse_loss(obj: Any, warnings: list[str]) -> dict[str, Any] | None:
    if isinstance(obj, (list, tuple)) and len(obj) == 1:
        obj = obj[0]
    if isinstance(obj, dict) and "class_name" not in obj and len(obj) == 1:
        obj = next(iter(obj.values()))  # {output name: loss} of a one-output model
    if obj is None:
        return None
    cls, config = _name(obj)
    cls = LOSS_NAMES.get(cls, cls)
    if cls not in LOSS_DEFAULTS:
        warnings.append(f"loss {cls} has no PyTorch translation; train.py leaves loss_fn() to you")
        return None
    options = {k: config.get(k, v) for k, v in LOSS_DEFAULTS[cls].items()}
    if cls == "Huber" and "delta" not in config:  # Huber.get_config leaves delta out (Keras 3.15)
        warnings.append("Keras does not store Huber's delta: train.py uses 1.0, as keras.models.load_model does")
    reduction = config.get("reduction", "sum_over_batch_size")
    if reduction not in REDUCTIONS:
        warnings.append(f"loss reduction {reduction!r} is not translated; train.py averages over the batch")
        reduction = "sum_over_batch_size"
    if options.get("axis", -1) != -1:
        warnings.append(f"loss axis={options['axis']} is not translated; train.py reduces over the last source axis")
    if cls == "SparseCategoricalCrossentropy" and options.get("ignore_class") is not None:
        warnings.append("SparseCategoricalCrossentropy(ignore_class=...) is not translated")
    return {"class": cls, "reduction": reduction, "config": options}


def parse_metrics(obj: Any, warnings: list[str]) -> list[str]:
    if obj is None:
        return []
    if isinstance(obj, dict) and "class_name" not in obj:
        obj = [m for ms in obj.values() for m in (ms if isinstance(ms, list) else [ms])]
    out = []

    def flat(items: Any) -> list[Any]:  # tf.keras 2 keeps one list per output
        return [i for x in items for i in (flat(x) if isinstance(x, (list, tuple)) else [x])]

    for m in flat(obj if isinstance(obj, (list, tuple)) else [obj]):
        cls, config = _name(m)
        if cls == "MeanMetricWrapper" and isinstance(config.get("fn"), str):  # tf.keras 2: the function's name
            cls = config["fn"]
        if cls in METRIC_NAMES:
            out.append(METRIC_NAMES[cls])
        else:
            warnings.append(f"metric {cls} is not translated")
    return out


def compile_config(kfile: KerasFile) -> dict[str, Any] | None:
    """The compile configuration as stored, in the Keras 3 `compile_config` form, or None."""
    if kfile.kind == "keras":
        return kfile.config.get("compile_config") or None
    raw = kfile._h5.attrs.get("training_config")
    if raw is None:
        return None
    config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    config.setdefault("optimizer", config.pop("optimizer_config", None))
    return config


def trainable_variables(
    kfile: KerasFile, names: list[str] | None = None
) -> list[tuple[tuple[str, ...], int, tuple[int, ...]]]:
    """model.trainable_variables, in Keras's order, as (layer path, index among its variables, shape);
    a .h5 file's weight names ("sequential/dense/kernel") are appended to `names`."""
    out: list[tuple[tuple[str, ...], int, tuple[int, ...]]] = []

    def walk(model: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for layer in model.get("config", {}).get("layers", []):
            cls = layer.get("class_name")
            config = layer.get("config", {})
            if cls == "InputLayer" or config.get("trainable") is False or cls in NON_TRAINABLE_LAYERS:
                continue
            path = prefix + (str(config.get("name")),)
            if cls in MODEL_CLASSES:
                walk(layer, path)
                continue
            weights = kfile._vars_index.get(path, []) if kfile.kind == "keras" else kfile.layer_weights(path)
            count = len(weights) - NON_TRAINABLE_TAIL.get(str(cls), 0)
            kept = list(enumerate(weights[: max(count, 0)]))
            order = SUB_OBJECT_ORDER.get(str(cls))
            if order is not None and kfile.kind == "keras":
                rank = {child: k for k, child in enumerate(order)}
                kept.sort(key=lambda item: rank.get(item[1][0].split("/")[0], -1))  # own vars/ first (stable)
            out.extend((path, i, tuple(ds.shape)) for i, (_, ds) in kept)
            if names is not None:
                names.extend(name for _, (name, _) in kept)

    walk(kfile.config, ())
    return out


def keras_slot_names(opt: dict[str, Any]) -> list[tuple[str, ...]]:
    """Keras 3's names of the per-variable optimizer slots, one tuple per add_optimizer_variables call, in
    the order build() makes them (torch_writer/training.py's slot_groups gives them their torch names)."""
    c, cls = opt["config"], opt["class"]
    groups = {
        "SGD": [("momentum",)] if c.get("momentum") else [],
        "Adam": [("momentum", "velocity")] + ([("velocity_hat",)] if c.get("amsgrad") else []),
        "RMSprop": [("velocity",)]
        + ([("momentum",)] if c.get("momentum", 0) > 0 else [])
        + ([("average_gradient",)] if c.get("centered") else []),
        "Adagrad": [("accumulator",)],
        "Adadelta": [("accumulated_grad", "accumulated_delta_var")],
        "Adamax": [("momentum", "norm")],
        "Nadam": [("momentum", "velocity")],
    }
    groups["AdamW"] = groups["Adam"]
    return ([("average",)] if c.get("use_ema") else []) + groups[cls]


def h5_optimizer_variables(kfile: KerasFile, opt: dict[str, Any], names: list[str]) -> list[np.ndarray]:
    """A Keras 3 .h5 file's optimizer variables, by name ("adam/sequential_dense_kernel_momentum"), in the
    order of a .keras file's optimizer/vars: iterations, the learning rate, then the slots."""
    (group_name,) = list(kfile._h5["optimizer_weights"].keys())
    group = kfile._h5["optimizer_weights"][group_name]
    out = [np.asarray(group["iteration"])]
    if opt["schedule"] is None:
        out.append(np.asarray(group["learning_rate"]))
    for slots in keras_slot_names(opt):
        for name in names:
            out.extend(np.asarray(group[f"{name.replace('/', '_')}_{slot}"]) for slot in slots)
    if opt["class"] == "Nadam":
        raise KeyError("Nadam's u_product is not named in a .h5 file")
    return out


def optimizer_variables(kfile: KerasFile) -> list[np.ndarray] | None:
    """optimizer/vars/<i> of a .keras file (saved after training), or None."""
    if kfile.kind != "keras" or "optimizer" not in kfile._h5 or "vars" not in kfile._h5["optimizer"]:
        return None
    group = kfile._h5["optimizer"]["vars"]
    return [np.asarray(group[k]) for k in sorted(group.keys(), key=int)] or None


def h5_optimizer_built(kfile: KerasFile) -> bool:
    """Whether a .h5 file holds optimizer variables beyond the step count (and learning rate)."""
    if "optimizer_weights" not in kfile._h5:
        return False
    names: list[str] = []
    kfile._h5["optimizer_weights"].visititems(lambda n, o: names.append(n) if hasattr(o, "shape") else None)
    steps = ("iter", "iteration", "iterations", "learning_rate")
    return any(not n.split(":")[0].endswith(steps) for n in names)


def read_training_setup(kfile: KerasFile) -> TrainingSetup | None:
    """The file's training setup, or None when the model was saved without being compiled."""
    config = compile_config(kfile)
    if not config:
        return None
    warnings: list[str] = []
    spec: dict[str, Any] = {
        "optimizer": parse_optimizer(config.get("optimizer"), warnings) if config.get("optimizer") else None,
        "loss": parse_loss(config.get("loss"), warnings),
        "metrics": parse_metrics(config.get("metrics"), warnings),
    }
    if config.get("loss_weights") not in (None, [], {}, [1.0], 1.0):
        warnings.append(f"loss_weights={config['loss_weights']!r} are not translated")
    if config.get("weighted_metrics"):
        warnings.append("weighted_metrics are not translated")
    spec["warnings"] = warnings
    setup = TrainingSetup(spec)
    if spec["optimizer"] is not None and kfile.kind == "keras":
        setup.optimizer_variables = optimizer_variables(kfile)
        setup.trainable = trainable_variables(kfile)
    elif spec["optimizer"] is not None and kfile.kind == "h5" and h5_optimizer_built(kfile):
        names: list[str] = []
        try:
            if kfile.keras2:
                raise KeyError("a tf.keras 2 file")
            setup.trainable = trainable_variables(kfile, names)
            setup.optimizer_variables = h5_optimizer_variables(kfile, spec["optimizer"], names)
        except KeyError as exc:
            warnings.append(f"the optimizer state of this .h5 file is not migrated ({exc}); a .keras file carries it")
            setup.trainable, setup.optimizer_variables = [], None
    return setup
