"""Keras model config -> intermediate graph.

The reader walks the model config (Sequential or Functional, nested models inlined),
resolves each layer call's input tensors, and hands each call to the translator
registered for the layer's class under "keras->ir". Translators see a `LayerCall`.
Before anything is translated, every layer class is checked, so that all unsupported
layers are reported at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...graph import Graph, Value
from ...graph.errors import (
    GraphError,
    KtorchError,
    ModelFileError,
    UnsupportedOpError,
    UntrustedCodeError,
)
from ...graph.queries import is_padding_mask
from ..registry import lookup
from .calls import (
    KerasLayerError,
    LayerCall,
    TrackedConfig,
    activation_name,
    flatten,
    identifier,
    known_activation,
)
from .file import KerasFile, open_keras_file

# Layers that hold other layers: handled by the reader itself.
MODEL_CLASSES = ("Functional", "Sequential", "Model")
UNTRUSTED_CLASSES = ("Lambda",)
# tf.keras 2 layers that call a TensorFlow function by name (no code): read as "tf.<function>"
TF_FUNCTION_CLASSES = ("TFOpLambda", "SlicingOpLambda")
# Keras 3 operations on symbolic tensors (keras.ops.mean, x[:, 0]) are recorded in a functional
# config like layers, with module "keras.src.ops.numpy" etc.; they are read as "ops.<class>"
# (ops.Reshape is keras.ops.reshape, not the Reshape layer).
OPS_PREFIX = "ops."


def translator_key(layer: dict[str, Any], keras2: bool = False) -> str:
    """The registry key of a config entry: its class name ("package>Class" for a class
    registered with register_keras_serializable, where ktorch knows it), "ops.<class>" for a Keras 3
    operation, "tf.<function>" for a tf.keras 2 TFOpLambda / SlicingOpLambda."""
    cls = str(layer.get("class_name", "?"))
    if cls in TF_FUNCTION_CLASSES:
        return "tf." + str(layer.get("config", {}).get("function"))
    registered = layer.get("registered_name")
    if isinstance(registered, str) and ">" in registered and lookup("keras->ir", registered) is not None:
        return registered  # a registered class named "package>Class" (ktorch>Parameter, kecam layers)
    module = layer.get("module")
    if module is not None:
        return OPS_PREFIX + cls if str(module).startswith(("keras.src.ops.", "keras.ops.")) else cls
    config = layer.get("config")
    # a Keras 3 legacy .h5 writes no module: a layer's config always holds `trainable` and
    # `dtype`, an operation's only its own arguments (tf.keras 2 has no operations)
    if not keras2 and isinstance(config, dict) and "trainable" not in config and "dtype" not in config:
        return OPS_PREFIX + cls
    return cls


FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
# Layers that leave their floating inputs as they come (`self.autocast = False` in Keras: they
# compute in float32 at least and cast their result to the compute dtype)
NO_INPUT_AUTOCAST = frozenset({"LayerNormalization", "GroupNormalization"})


def policy_dtypes(policy: Any) -> tuple[str | None, str | None]:
    """(compute dtype, variable dtype) of a layer config's `dtype`: a dtype name, a Keras 3
    DTypePolicy or a tf.keras Policy config; "mixed_float16" computes in float16 with float32
    variables. (None, None) for what is not a floating policy (an int layer, a quantized one)."""
    if isinstance(policy, dict):
        policy = policy.get("config", {}).get("name")
    name = str(policy or "")
    if name.startswith("mixed_") and name.removeprefix("mixed_") in FLOAT_DTYPES:
        return name.removeprefix("mixed_"), "float32"
    if name in FLOAT_DTYPES:
        return name, name
    return None, None


# Layers that hand their input's Keras mask on unchanged (supports_masking, default compute_mask).
MASK_MERGING = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"})
MASK_PASSING = MASK_MERGING | frozenset(
    {
        "Dense",
        "Activation",
        "ReLU",
        "LeakyReLU",
        "ELU",
        "PReLU",
        "Softmax",
        "Dropout",
        "SpatialDropout1D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "Identity",
        "LayerNormalization",
        "BatchNormalization",
        "GroupNormalization",
        "UnitNormalization",
        "Rescaling",
        "Normalization",
        "TimeDistributed",
    }
)


# -- config helpers -------------------------------------------------------------------
def _batch_shape(config: dict[str, Any]) -> tuple | None:
    for key in ("batch_shape", "batch_input_shape"):
        if config.get(key) is not None:
            return tuple(config[key])
    if config.get("input_shape") is not None:
        return (None, *config["input_shape"])
    return None


def _dtype_name(value: Any) -> str:
    if isinstance(value, dict):  # a DTypePolicy
        value = value.get("config", {}).get("name", "float32")
    value = str(value or "float32")
    if value.startswith("mixed_"):
        return "float32"
    return value


@dataclass
class ReadOptions:
    trust_code: bool = False
    input_shapes: dict[str, tuple] | None = None  # override dynamic input shapes


class KerasReader:
    """Builds a Graph from an opened KerasFile."""

    def __init__(self, kfile: KerasFile, options: ReadOptions | None = None) -> None:
        self.kfile = kfile
        self.options = options or ReadOptions()
        self.graph = Graph()
        self._weights: dict[tuple[str, ...], list] = {}  # one set of arrays per layer, shared by its calls
        self._nested: set[str] = set()  # names of the functional models nested in the model being read
        self._layer_names: set[str] = set()  # names of the layers of the functional model being read
        self._masks: dict[int, Value] = {}  # id(value) -> its Keras mask, flowing implicitly in Keras
        self._frozen = False  # inside a model saved with trainable=False: every layer is frozen
        self._casts: dict[tuple[int, str], Value] = {}  # (id(value), dtype) -> the value cast to dtype

    # -- entry ----------------------------------------------------------------------
    def read(self) -> Graph:
        cfg = self.kfile.config
        if not isinstance(cfg, dict) or "class_name" not in cfg:
            raise ModelFileError(f"{self.kfile.path}: the model config has no class_name")
        self.check_supported(cfg)
        model_cfg = cfg.get("config", {})
        self._frozen = model_cfg.get("trainable", True) is False
        self.graph.name = str(model_cfg.get("name") or Path(self.kfile.path).stem)
        if cfg["class_name"] == "Sequential":
            inputs = self._sequential_inputs(model_cfg)
            outputs = self._run_model(cfg, (), inputs, top=True)
        elif cfg["class_name"] in MODEL_CLASSES:
            outputs = self._run_model(cfg, (), None, top=True)
        else:
            raise ModelFileError(f"{self.kfile.path}: the top-level object is a {cfg['class_name']}, not a model")
        self.graph.outputs = outputs
        masks = [v.source or v.name for v in self.graph.inputs if is_padding_mask(v.source or v.name, v.dtype, v.rank)]
        if masks:  # checked with left- and right-padded rows (verify.runners.padding_masks)
            self.graph.meta["padding_masks"] = masks
        declared = model_cfg.get("output_layers")
        if isinstance(declared, dict) and len(declared) == len(outputs):
            # dict outputs are named by their keys, in the order the model declares them (see
            # translate.runtime.keras_outputs, which the verifier pairs them by)
            self.graph.meta["output_names"] = [str(key) for key in declared]
        if not self.graph.inputs or not self.graph.outputs:
            raise ModelFileError(f"{self.kfile.path}: the model config defines no inputs or no outputs")
        self.graph.meta.update(
            {
                "source_format": self.kfile.kind,
                "source_framework": "keras",
                "keras_version": self.kfile.keras_version,
            }
        )
        return self.graph

    # -- support check ------------------------------------------------------------------
    def check_supported(self, cfg: dict[str, Any]) -> None:
        problems: list[tuple[str, str, str]] = []
        untrusted: list[tuple[str, str]] = []

        def walk(model_cfg: dict[str, Any], prefix: str) -> None:
            for layer in model_cfg.get("config", {}).get("layers", []):
                cls = layer.get("class_name", "?")
                name = prefix + str(layer.get("config", {}).get("name") or layer.get("name") or "?")
                key = translator_key(layer, self.kfile.keras2)
                if cls in MODEL_CLASSES:
                    walk(layer, name + "/")
                elif cls == "InputLayer":
                    continue
                elif cls in TF_FUNCTION_CLASSES:
                    # names a TensorFlow function (tf.math.multiply): no code to trust
                    if lookup("keras->ir", key) is None:
                        problems.append((name, key, f"no translator for the TensorFlow function {key}"))
                elif cls in UNTRUSTED_CLASSES and not self.options.trust_code:
                    untrusted.append((name, cls))
                elif lookup("keras->ir", key) is None:
                    what = "Keras operation" if key.startswith(OPS_PREFIX) else "layer class"
                    problems.append((name, key, f"no translator for this {what}"))
                problems.extend(self._activation_problems(layer, name))

        walk(cfg, "")
        if untrusted:
            names = ", ".join(f"{n} ({c})" for n, c in untrusted)
            raise UntrustedCodeError(
                f"{self.kfile.path}: the model contains Python code that ktorch does not run by default: {names}. "
                "Lambda layers hold serialized bytecode; rewrite them as regular layers, or pass --trust-code "
                "if you trust this file"
            )
        if problems:
            raise UnsupportedOpError(
                problems,
                where=str(self.kfile.path),
                hint="Nothing was written. Teach ktorch a custom layer with a translator registered by "
                "@ktorch.plugins.keras_layer(...) and `--plugin MODULE` (see README, 'Custom layers').",
            )

    @staticmethod
    def _activation_problems(layer: dict[str, Any], name: str) -> list[tuple[str, str, str]]:
        """A layer's `activation=` (and RNN `recurrent_activation=`) that no translator knows:
        a registered custom function (`kecamCommon>hard_swish`) is reported with the layers."""
        out = []
        config = layer.get("config", {})
        for key in ("activation", "recurrent_activation"):
            spec = config.get(key) if isinstance(config, dict) else None
            if spec is not None and not known_activation(spec):
                what = f"activation {activation_name(spec)!r}"
                out.append((name, what, "no translator for this activation function"))
        return out

    # -- models ---------------------------------------------------------------------------
    def _sequential_inputs(self, model_cfg: dict[str, Any]) -> list[Value]:
        layers = model_cfg.get("layers", [])
        shape = None
        dtype = "float32"
        name = "input"
        if layers and layers[0].get("class_name") == "InputLayer":
            shape = _batch_shape(layers[0]["config"])
            dtype = _dtype_name(layers[0]["config"].get("dtype"))
            name = layers[0]["config"].get("name", name)
        elif model_cfg.get("build_input_shape") is not None:
            shape = tuple(model_cfg["build_input_shape"])
        elif layers:
            shape = _batch_shape(layers[0].get("config", {}))
            dtype = _dtype_name(layers[0].get("config", {}).get("dtype"))
        if shape is None:
            raise ModelFileError(
                f"{self.kfile.path}: the Sequential model has no input shape (it was never built); "
                "build it with keras.Input(...) before saving"
            )
        return [self.graph.add_input(identifier(name), self._override(name, shape), dtype)]

    def _override(self, name: str, shape: tuple) -> tuple:
        given = (self.options.input_shapes or {}).get(name)
        return tuple(given) if given is not None else tuple(shape)

    def _run_model(
        self, cfg: dict[str, Any], prefix: tuple[str, ...], inputs: list[Value] | None, top: bool = False
    ) -> list[Value]:
        model_cfg = cfg.get("config", {})
        if cfg["class_name"] == "Sequential":
            return self._run_sequential(model_cfg, prefix, inputs)
        return self._run_functional(model_cfg, prefix, inputs)

    def _run_sequential(self, model_cfg: dict[str, Any], prefix: tuple[str, ...], inputs: list[Value]) -> list[Value]:
        x: Any = inputs[0] if len(inputs) == 1 else inputs
        for layer in model_cfg.get("layers", []):
            if layer.get("class_name") == "InputLayer":
                continue
            outs = self._call_layer(layer, prefix, [x], {}, call_index=0)
            x = outs[0] if len(outs) == 1 else outs
        return [x] if isinstance(x, Value) else list(x)

    def _run_functional(
        self, model_cfg: dict[str, Any], prefix: tuple[str, ...], inputs: list[Value] | None
    ) -> list[Value]:
        layers = {self._layer_name(layer): layer for layer in model_cfg.get("layers", [])}
        # A nested functional model's node 0 is its own creation, so references to its calls
        # count from 1 in output_layers (and everywhere in tf.keras 2 files); Keras 3 writes
        # the plain call index in inbound nodes' keras_history.
        outer_nested, outer_names = self._nested, self._layer_names
        self._layer_names = set(layers)
        self._nested = {
            name
            for name, layer in layers.items()
            if layer.get("class_name") in ("Functional", "Model") or self._keras2_graph_sequential(layer)
        }
        try:
            return self._run_functional_body(model_cfg, prefix, inputs, layers)
        finally:
            self._nested, self._layer_names = outer_nested, outer_names

    def _keras2_graph_sequential(self, layer: dict[str, Any]) -> bool:
        """A tf.keras 2 Sequential built on an InputLayer is a graph network: like a
        functional model, its node 0 is its own creation (ConvNeXt's stem)."""
        inner = layer.get("config", {}).get("layers", []) if layer.get("class_name") == "Sequential" else []
        return self.kfile.keras2 and bool(inner) and inner[0].get("class_name") == "InputLayer"

    def _run_functional_body(
        self, model_cfg: dict[str, Any], prefix: tuple[str, ...], inputs: list[Value] | None, layers: dict[str, Any]
    ) -> list[Value]:
        tensors: dict[tuple[str, int, int], Value] = {}
        declared_inputs = model_cfg.get("input_layers", [])
        if inputs is None and isinstance(declared_inputs, dict):
            # a dict of inputs is taken in Keras's flat order (sorted keys, `model.inputs`): the
            # order Keras maps a list of arrays to them, as the verifier and the export route do
            declared_inputs = [declared_inputs[key] for key in sorted(declared_inputs)]
        input_refs = _refs(declared_inputs)
        output_refs = _refs(model_cfg.get("output_layers", []))
        if inputs is not None and len(inputs) != len(input_refs):
            raise GraphError(f"nested model {'/'.join(prefix)} expects {len(input_refs)} inputs, got {len(inputs)}")
        for i, ref in enumerate(input_refs):
            layer = layers.get(ref[0])
            if layer is None:
                raise ModelFileError(f"{self.kfile.path}: input layer {ref[0]!r} is not in the config")
            if inputs is None:
                shape = _batch_shape(layer["config"])
                if shape is None:
                    raise ModelFileError(f"{self.kfile.path}: input {ref[0]!r} has no shape")
                value = self.graph.add_input(
                    identifier(ref[0]), self._override(ref[0], shape), _dtype_name(layer["config"].get("dtype"))
                )
                value.source = ref[0]
            else:
                value = inputs[i]
            tensors[(ref[0], 0, 0)] = value

        # layer calls, in config order; a call waits until its inputs exist
        pending: list[tuple[dict[str, Any], int, Any]] = []
        for layer in model_cfg.get("layers", []):
            if layer.get("class_name") == "InputLayer":
                continue
            for node_index, node in enumerate(layer.get("inbound_nodes", [])):
                pending.append((layer, node_index, node))
        while pending:
            progressed = False
            remaining = []
            for layer, node_index, node in pending:
                args, kwargs = self._resolve_node(node, tensors)
                if args is None:
                    remaining.append((layer, node_index, node))
                    continue
                name = self._layer_name(layer)
                outs = self._call_layer(layer, prefix, args, kwargs, call_index=node_index)
                for t, value in enumerate(outs):
                    tensors[(name, node_index, t)] = value
                progressed = True
            if not progressed:
                missing = ", ".join(self._layer_name(layer) for layer, _, _ in remaining[:5])
                raise ModelFileError(f"{self.kfile.path}: cannot resolve the inputs of layer(s) {missing}")
            pending = remaining
        outputs = []
        for ref in output_refs:
            key = (ref[0], ref[1] - (ref[0] in self._nested), ref[2])
            if key not in tensors:
                raise ModelFileError(f"{self.kfile.path}: output {ref[0]!r} is not produced by any layer")
            outputs.append(tensors[key])
        return outputs

    def _layer_weights(self, path: tuple[str, ...], *, shared: bool) -> list[tuple[str, np.ndarray]]:
        """The layer's arrays, read from the file; kept for a layer called several times (one
        set of arrays, so that the writer sees one shared module), else dropped with the call
        (the graph keeps only the converted copies: conversion holds no third copy)."""
        if not shared:
            return self.kfile.layer_weights(path)
        if path not in self._weights:
            self._weights[path] = self.kfile.layer_weights(path)
        return self._weights[path]

    @staticmethod
    def _layer_name(layer: dict[str, Any]) -> str:
        return str(layer.get("name") or layer.get("config", {}).get("name"))

    def _resolve_node(self, node: Any, tensors: dict) -> tuple[list | None, dict]:
        """Call arguments of one inbound node, with Values for tensors (None if not ready)."""
        missing = False

        def sub(obj: Any) -> Any:
            nonlocal missing
            if isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__":
                hist = obj["config"]["keras_history"]
                key = (hist[0], hist[1], hist[2])
                if key not in tensors:
                    missing = True
                    return None
                return tensors[key]
            if isinstance(obj, dict):
                return {k: sub(v) for k, v in obj.items()}
            if isinstance(obj, list):
                return [sub(v) for v in obj]
            return obj

        if isinstance(node, dict):  # Keras 3
            args = sub(node.get("args", []))
            kwargs = sub(node.get("kwargs", {}))
        else:  # Keras 2: [[layer, node_index, tensor_index, kwargs], ...]
            if node and isinstance(node[0], str):  # a TFOpLambda's node is one entry, unwrapped
                node = [node]
            values = []
            kwargs = {}
            for entry in node:
                if entry[0] == "_CONSTANT_VALUE":  # a TFOpLambda whose first argument is a constant
                    values.append(entry[2])
                    if len(entry) > 3 and entry[3]:
                        kwargs.update(entry[3])
                    continue
                key = (entry[0], entry[1] - (entry[0] in self._nested), entry[2])
                if key not in tensors:
                    missing = True
                    values.append(None)
                else:
                    values.append(tensors[key])
                if len(entry) > 3 and entry[3]:
                    kwargs.update(entry[3])
            args = [values[0]] if len(values) == 1 else [values]
            kwargs = self._keras2_kwargs(kwargs, tensors)
            if kwargs is None:
                missing = True
        return (None, {}) if missing else (args, kwargs)

    def _keras2_kwargs(self, kwargs: dict[str, Any], tensors: dict) -> dict[str, Any] | None:
        """Call kwargs with tensor references ([layer, node, tensor]) resolved, also inside
        lists (tf.reshape(x, [tf.shape(x)[0], -1])); None if one is not computed yet."""
        missing = False

        def sub(v: Any, top: bool) -> Any:
            nonlocal missing
            is_ref = isinstance(v, list) and len(v) >= 3 and isinstance(v[0], str) and isinstance(v[1], int)
            if is_ref and (top or v[0] in self._layer_names):
                key = (v[0], v[1] - (v[0] in self._nested), v[2])
                if key not in tensors:
                    missing = True
                    return None
                return tensors[key]
            if isinstance(v, list):
                return [sub(i, False) for i in v]
            return v

        out = {k: sub(v, True) for k, v in kwargs.items()}
        return None if missing else out

    def _call_layer(
        self, layer: dict[str, Any], prefix: tuple[str, ...], args: list, kwargs: dict, call_index: int
    ) -> list[Value]:
        cls = layer["class_name"]
        name = self._layer_name(layer)
        path = prefix + (name,)
        if cls in MODEL_CLASSES:
            inner_inputs = [v for v in flatten(args) if isinstance(v, Value)]
            outer_frozen = self._frozen
            self._frozen = outer_frozen or layer.get("config", {}).get("trainable", True) is False
            try:
                outs = self._run_model(layer, path, inner_inputs)
            finally:
                self._frozen = outer_frozen
            for v in outs:
                v.source = "/".join(path)
            return outs
        key = translator_key(layer, self.kfile.keras2)
        translator: Callable | None = lookup("keras->ir", key)
        if translator is None:  # check_supported ran first; only plugins removed since reach here
            problem = ("/".join(path), key, "no translator for this layer class")
            raise UnsupportedOpError([problem], where=str(self.kfile.path))
        config = layer.get("config", {})
        compute, variables = (None, None) if key.startswith((OPS_PREFIX, "tf.")) else policy_dtypes(config.get("dtype"))
        # a layer that does not cast its inputs (LayerNormalization) computes in float32 with its
        # variables upcast; PyTorch's layer_norm cannot mix a float32 input with float16/bfloat16
        # weights, so there the input is cast to the weights' dtype (a rounding within the profile)
        if compute is not None and (cls not in NO_INPUT_AUTOCAST or variables != "float32"):
            args = self._cast_floats(args, compute, path, cls)
            kwargs = self._cast_floats(kwargs, compute, path, cls)
        call = LayerCall(
            graph=self.graph,
            name="/".join(path),
            class_name=key if key.startswith((OPS_PREFIX, "tf.")) else cls,
            config=TrackedConfig(config),
            args=args,
            kwargs={k: v for k, v in kwargs.items() if k not in ("training",)},
            weights=self._layer_weights(path, shared=len(layer.get("inbound_nodes") or []) > 1),
            keras2=self.kfile.keras2,
            call_index=call_index,
            masks=[self._masks.get(id(v)) for v in flatten(args) if isinstance(v, Value)],
            known_masks=self._masks,
        )
        if cls in TF_FUNCTION_CLASSES:
            call.config.get("function")  # read as the translator key
        self._note_compute_dtype(config.get("dtype"))
        try:
            result = translator(call)
        except KtorchError as exc:
            if isinstance(exc, (KerasLayerError, UnsupportedOpError, UntrustedCodeError)):
                raise
            raise KerasLayerError(f"{self.kfile.path}: layer {call.name!r} ({cls}): {exc}") from exc
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise KerasLayerError(
                f"{self.kfile.path}: layer {call.name!r} ({cls}) has a config ktorch cannot read ({type(exc).__name__}: {exc})"
            ) from exc
        unread = call.config.unread_options() if isinstance(call.config, TrackedConfig) else {}
        if unread:
            options = ", ".join(f"{k}={v!r}" for k, v in sorted(unread.items()))
            raise KerasLayerError(
                f"{self.kfile.path}: layer {call.name!r} ({cls}) has option(s) ktorch does not understand: {options}. "
                "Converting it could silently change the result; remove the option(s) or register your own "
                "translator with @ktorch.plugins.keras_layer"
            )
        outs = [result] if isinstance(result, Value) else list(result)
        if compute is not None:  # a layer returns its compute dtype (LayerNormalization casts its result)
            outs = self._cast_floats(outs, compute, path, cls)
        from .regularization import apply_layer_training

        outs = apply_layer_training(call, outs, self._frozen)
        for v in outs:
            v.source = call.name
        self._propagate_masks(call, outs)
        return outs

    def _note_compute_dtype(self, policy: Any) -> None:
        """Record in graph.meta['compute_dtype'] the narrowest float type a layer computes in
        (a mixed_float16 policy computes in float16 while its variables stay float32): the
        verification judges the model by it, not only by its outputs' dtype. A mixed policy
        (float32 variables, float16/bfloat16 computation) also sets graph.meta['autocast']:
        the PyTorch writer runs forward under torch.autocast, which casts the weights at each
        matmul/convolution as Keras's AutocastScope casts the variables when a layer reads them."""
        compute, variables = policy_dtypes(policy)
        if compute not in ("float16", "bfloat16"):
            return
        name = policy.get("config", {}).get("name") if isinstance(policy, dict) else policy
        policies = self.graph.meta.setdefault("dtype_policies", [])
        if name not in policies:
            policies.append(name)
        if self.graph.meta.get("compute_dtype") != "bfloat16":  # bfloat16 is the looser of the two
            self.graph.meta["compute_dtype"] = compute
        if variables != compute:
            self.graph.meta["autocast"] = self.graph.meta["compute_dtype"]

    def _cast_floats(self, tree: Any, dtype: str, path: tuple[str, ...], cls: str) -> Any:
        """`tree` (a layer's arguments or results) with every floating Value of another dtype
        cast to `dtype`, as Keras's Layer.__call__ converts a layer's floating inputs to its
        compute dtype (dtype_policy.convert_input); one cast per value and dtype."""
        if isinstance(tree, Value):
            if tree.dtype not in FLOAT_DTYPES or tree.dtype == dtype:
                return tree
            key = (id(tree), dtype)
            if key not in self._casts:
                node = self.graph.add_node(
                    "cast", [tree], {"dtype": dtype}, name=f"{tree.name}_{dtype}",
                    source="/".join(path), source_class=cls,
                )  # fmt: skip
                self._casts[key] = node.output
            return self._casts[key]
        if isinstance(tree, (list, tuple)):
            return type(tree)(self._cast_floats(v, dtype, path, cls) for v in tree)
        if isinstance(tree, dict):
            return {k: self._cast_floats(v, dtype, path, cls) for k, v in tree.items()}
        return tree

    def _propagate_masks(self, call: LayerCall, outs: list[Value]) -> None:
        """Attach Keras masks to a layer's outputs: the ones its translator computed, else
        the input's mask for layers that pass it on (Keras `supports_masking` without a
        `compute_mask` of their own). A merge layer's output is masked only if every input
        is, by the OR of their masks (Keras 3 `Merge.compute_mask`; Concatenate on the last
        axis alike: an unmasked input counts as all True)."""
        masks = call.output_masks
        if masks is None:
            given = [m for m in call.masks if m is not None]
            if not given or call.class_name not in MASK_PASSING:
                return
            mask = given[0]
            if call.class_name in MASK_MERGING:
                if call.class_name == "Concatenate" and int(call.config.get("axis", -1)) not in (-1, call.x.rank - 1):
                    raise call.error("concatenating masked sequences along the time axis is not supported yet")
                if len(given) != len(call.masks):
                    return
                for other in given[1:]:
                    if other is not mask:
                        mask = self.graph.add_node(
                            "mask_merge", [mask, other], {"mode": "or"}, name=f"{identifier(call.name)}_mask"
                        ).output
            masks = [mask] + [None] * (len(outs) - 1)
        for value, mask in zip(outs, masks):
            if mask is not None:
                self._masks[id(value)] = mask


def _refs(spec: Any) -> list[tuple[str, int, int]]:
    """input_layers/output_layers: either one [name, node, tensor] or a list of them."""
    if not spec:
        return []
    if isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str) and isinstance(spec[1], int):
        return [(spec[0], spec[1], spec[2])]
    if isinstance(spec, dict):
        spec = list(spec.values())
    return [tuple(ref) for ref in spec]  # type: ignore[misc]


def read_keras(path: str | Path, options: ReadOptions | None = None) -> Graph:
    """Read a Keras `.h5` / `.keras` file into a graph. Does not import TensorFlow or Keras."""
    with open_keras_file(path) as kfile:
        try:
            return KerasReader(kfile, options).read()
        except KtorchError:
            raise
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            IndexError,
            OSError,
            RuntimeError,
            RecursionError,
        ) as exc:
            # a config or weights layout this reader does not understand: say so, in one line
            raise ModelFileError(
                f"{path}: the model config or weights are malformed or of an unknown layout ({type(exc).__name__}: {exc})"
            ) from exc
