"""What the Keras reader's translators receive: a `LayerCall` (one call of a Keras layer,
with its config, weights and input values), and the `activation=` argument every layer
family shares. This module imports nothing from the reader, so that the layer families
(which import it) and the reader (which imports them) form no cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from ...graph import Graph, Value
from ...graph.errors import KtorchError
from ..codegen import identifier as python_identifier

# node names from layer names; an empty name is "layer", a leading digit stays
identifier = partial(python_identifier, default="layer", digit_prefix=False)


class KerasLayerError(KtorchError):
    """A layer's config or weights do not make sense."""


# Options that do not change what a layer computes at inference.
_INFERENCE_IRRELEVANT = frozenset(
    {
        "name",
        "trainable",
        "dtype",
        "autocast",
        "input_dtype",
        "activity_regularizer",
        "seed",
        "noise_shape",
        "rate",
        "stddev",
        "l1",
        "l2",
        "synchronized",
        "renorm_clipping",
        "renorm_momentum",
        "batch_input_shape",
        "batch_shape",
        "input_shape",
        "sparse",
        "ragged",
    }
)


_INFERENCE_IRRELEVANT_SUFFIXES = ("_initializer", "_regularizer", "_constraint")


class TrackedConfig(dict):
    """A layer config that remembers which options its translator looked at, so that an
    option no translator understood is reported instead of silently ignored."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def unread_options(self) -> dict[str, Any]:
        """Options not looked at whose value could change the result."""
        return {
            k: v
            for k, v in self.items()
            if k not in self.read
            and k not in _INFERENCE_IRRELEVANT
            and not k.endswith(_INFERENCE_IRRELEVANT_SUFFIXES)
            and v not in (None, False, "", [], {})
        }


@dataclass
class LayerCall:
    """One call of a Keras layer, as seen by its translator."""

    graph: Graph
    name: str  # the layer's name, prefixed by enclosing model names ("inner/conv")
    class_name: str
    config: dict[str, Any]
    args: list[Any]  # call arguments, with Values for tensors
    kwargs: dict[str, Any]
    weights: list[tuple[str, np.ndarray]]
    keras2: bool
    call_index: int = 0
    masks: list[Value | None] = field(default_factory=list)  # Keras masks of `inputs`, aligned
    output_masks: list[Value | None] | None = None  # set by a translator that computes masks
    known_masks: dict[int, Value] = field(default_factory=dict, repr=False)  # id(value) -> mask
    _emitted: list = field(default_factory=list)

    @property
    def emitted(self) -> list:
        """The nodes this call has emitted so far, in order."""
        return self._emitted

    # -- inputs ---------------------------------------------------------------------
    @property
    def inputs(self) -> list[Value]:
        """All tensors among the positional arguments, flattened in order."""
        return [v for v in flatten(self.args) if isinstance(v, Value)]

    @property
    def mask(self) -> Value | None:
        """The Keras mask of the first input ((batch, time) bool), or an explicit `mask=`.
        Keras 3 fills an implicit `mask=` only into a call with one tensor argument (an RNN
        called with `initial_state=` ignores its input's mask); Keras 2 always does."""
        explicit = self.kwargs.get("mask")
        if isinstance(explicit, Value):
            return explicit
        tensor_args = [a for a in [*self.args, *self.kwargs.values()] if any(isinstance(v, Value) for v in flatten(a))]
        if not self.keras2 and len(tensor_args) != 1:
            return None
        return self.masks[0] if self.masks else None

    def mask_of(self, value: Any) -> Value | None:
        """The Keras mask carried by any tensor of this call (e.g. a `key=` argument)."""
        return self.known_masks.get(id(value)) if isinstance(value, Value) else None

    @property
    def x(self) -> Value:
        ins = self.inputs
        if not ins:
            raise self.error("is called without an input tensor")
        return ins[0]

    # -- config -----------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)

    def error(self, message: str) -> KerasLayerError:
        return KerasLayerError(f"layer {self.name!r} ({self.class_name}): {message}")

    def weight(self, index: int, *, expect: tuple | None = None) -> np.ndarray:
        if index >= len(self.weights):
            raise self.error(f"expected at least {index + 1} weight tensors, the file has {len(self.weights)}")
        array = self.weights[index][1]
        if expect is not None and tuple(array.shape) != tuple(expect):
            raise self.error(f"weight {self.weights[index][0]!r} has shape {array.shape}, expected {expect}")
        if is_float(array) and not np.all(np.isfinite(array.astype(np.float32, copy=False))):
            raise self.error(f"weight {self.weights[index][0]!r} holds NaN or Inf values")
        return array

    def expect_weights(self, count: int) -> None:
        if len(self.weights) != count:
            raise self.error(f"expected {count} weight tensors, the file has {len(self.weights)}")

    # -- emission -----------------------------------------------------------------------
    def emit(
        self,
        op: str,
        inputs: list[Value],
        attrs: dict[str, Any] | None = None,
        weights: dict[str, np.ndarray] | None = None,
        *,
        suffix: str = "",
    ) -> Value:
        """Add a node for this layer and return its (first) output."""
        node = self.graph.add_node(
            op,
            inputs,
            attrs,
            weights,
            name=node_name(self.name) + suffix,
            source=self.name,
            source_class=self.class_name,
        )
        self._emitted.append(node)
        return node.outputs[0]

    def activate(self, x: Value, spec: Any) -> Value:
        """Apply a Keras `activation=` spec to x (nothing for linear)."""
        return activation_nodes(self, x, spec)


def is_float(array: np.ndarray) -> bool:
    """Floating point, bfloat16 (an ml_dtypes type numpy does not count as floating) included."""
    return np.issubdtype(array.dtype, np.floating) or array.dtype.name == "bfloat16"


def flatten(obj: Any) -> list[Any]:
    if isinstance(obj, (list, tuple)):
        return [i for o in obj for i in flatten(o)]
    if isinstance(obj, dict):
        return [i for o in obj.values() for i in flatten(o)]
    return [obj]


def node_name(path: str) -> str:
    """An identifier for a layer at `path` ("outer/inner"): the parts joined by "_", except
    that a part already starting with the enclosing model's name (Keras names the layers of
    a nested model "convnext_tiny_stem_conv" inside "convnext_tiny_stem") replaces it."""
    # a TFOpLambda is named after its function: "tf.math.reduce_mean_2" -> "reduce_mean_2"
    parts = [identifier(p.rsplit(".", 1)[-1] if p.startswith("tf.") else p) for p in path.split("/")]
    out = parts[0]
    for part in parts[1:]:
        out = part if part.startswith(out + "_") else f"{out}_{part}"
    return out


# name -> (op kind, attrs); Keras 3 definitions (keras/src/activations/activations.py)
SIMPLE_ACTIVATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "relu": ("relu", {}),
    "relu6": ("relu", {"max_value": 6.0}),
    "elu": ("elu", {"alpha": 1.0}),
    "selu": ("selu", {}),
    "gelu": ("gelu", {"approximate": False}),
    "silu": ("silu", {}),
    "swish": ("silu", {}),
    "hard_silu": ("hard_silu", {}),
    "hard_swish": ("hard_silu", {}),
    "softplus": ("softplus", {}),
    "softsign": ("softsign", {}),
    "tanh": ("tanh", {}),
    "sigmoid": ("sigmoid", {}),
    "log_sigmoid": ("log_sigmoid", {}),
    "exponential": ("exp", {}),
    "mish": ("mish", {}),
    "leaky_relu": ("relu", {"negative_slope": 0.2}),
    "hard_tanh": ("clip", {"min": -1.0, "max": 1.0}),
    "celu": ("celu", {"alpha": 1.0}),
    "squareplus": ("squareplus", {"b": 4.0}),
    "soft_shrink": ("soft_shrink", {"threshold": 0.5}),
    "hard_shrink": ("hard_shrink", {"threshold": 0.5}),
    "tanh_shrink": ("tanh_shrink", {}),
    "sparse_plus": ("sparse_plus", {}),
    "sparse_sigmoid": ("hard_sigmoid", {"slope": 0.5, "offset": 0.5}),
}


_LINEAR = ("linear", None, "")
_AXIS_ACTIVATIONS = ("softmax", "log_softmax", "glu")

# Functions registered with keras.saving.register_keras_serializable ("Package>name"): known by
# the name's suffix only where the name fixes the formula (keras-cv-attention-models'
# kecamCommon>hard_swish is x * relu6(x + 3) / 6, hard_sigmoid_torch is clip(x / 6 + 0.5, 0, 1)).
_REGISTERED: dict[str, tuple[str, dict[str, Any]]] = {
    "hard_swish": ("hard_silu", {}),
    "hardswish": ("hard_silu", {}),
    "hard_silu": ("hard_silu", {}),
    "swish": ("silu", {}),
    "silu": ("silu", {}),
    "mish": ("mish", {}),
    "hard_sigmoid_torch": ("hard_sigmoid", {"slope": 1.0 / 6.0, "offset": 0.5}),
    "relu6": ("relu", {"max_value": 6.0}),
}


def _registered(name: str) -> tuple[str, dict[str, Any]] | None:
    if ">" not in name:
        return None
    return _REGISTERED.get(name.rsplit(">", 1)[1].lower())


def known_activation(spec: Any) -> bool:
    """Whether `activation_nodes` can translate the serialized activation `spec`."""
    name = activation_name(spec)
    if name in _LINEAR or name in _AXIS_ACTIVATIONS or name == "hard_sigmoid" or name in SIMPLE_ACTIVATIONS:
        return True
    return _registered(str(name)) is not None


def activation_name(spec: Any) -> str | None:
    """The name of a serialized activation (string, or a Keras 3 function dict)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        cfg = spec.get("config")
        if isinstance(cfg, str):
            return cfg
        if isinstance(cfg, dict) and "name" in cfg:
            return str(cfg["name"])
        return str(spec.get("class_name"))
    return str(spec)


def activation_nodes(call: LayerCall, x: Value, spec: Any, *, suffix: str = "_act") -> Value:
    """Emit the activation named by `spec` on x; linear emits nothing."""
    name = activation_name(spec)
    if name in _LINEAR:
        return x
    if name in _AXIS_ACTIVATIONS:
        return call.emit(name, [x], {"axis": (x.rank - 1,)}, suffix=suffix)
    if name == "hard_sigmoid":
        # Keras 2 (and TF1): clip(0.2 x + 0.5); Keras 3: relu6(x + 3) / 6
        attrs = {"slope": 0.2, "offset": 0.5} if call.keras2 else {"slope": 1.0 / 6.0, "offset": 0.5}
        return call.emit("hard_sigmoid", [x], attrs, suffix=suffix)
    found = SIMPLE_ACTIVATIONS.get(str(name)) or _registered(str(name))
    if found is None:
        raise call.error(f"activation {name!r} is not supported")
    op, attrs = found
    return call.emit(op, [x], dict(attrs), suffix=suffix)
