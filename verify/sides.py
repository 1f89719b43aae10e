"""The two sides of a verification: the source model and the emitted one.

A direction ("keras->torch", "torch->keras", as recorded in the manifest) names one
source side and one emitted side. A source side runs the original model and captures
the outputs of its layers by name (in the source's layout); an emitted side runs the
translation and, to localise errors, runs it with the source's intermediates fed in
(isolated mode). Adding a direction means adding the two classes and one line to
`DIRECTIONS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .runners import (
    RunError,
    declared_output,
    from_numpy,
    import_emitted,
    keras_backend,
    keras_device,
    keras_outputs,
    load_keras_model,
    output_keys,
    to_numpy,
)
from .stepper import Stepper, parse_forward


@dataclass
class Capture:
    """What one side computed for one batch of inputs."""

    outputs: list[np.ndarray]
    values: dict[str, np.ndarray] = field(default_factory=dict)  # source layer name -> array (source layout)
    skipped: dict[str, str] = field(default_factory=dict)  # source layer name -> why it was not captured
    classes: dict[str, str] = field(default_factory=dict)  # source layer name -> its class


class SourceSide(Protocol):
    backend: str

    def run(self, inputs: Sequence[np.ndarray], names: Sequence[str]) -> Capture:
        """Outputs, and the outputs of the layers `names` (not the model's inputs)."""
        ...


class EmittedSide(Protocol):
    backend: str

    def run(self, inputs: Sequence[np.ndarray]) -> tuple[list[np.ndarray], dict[str, Any]]: ...

    def isolated(self, propagated: dict[str, Any], feeds: dict[str, np.ndarray]) -> dict[str, Any]: ...

    def statement_of(self, variable: str) -> str | None:
        """The emitted source text that computes `variable`."""
        ...

    def order(self) -> list[str]:
        """The emitted locals in the order the emitted model computes them."""
        ...

    def to_numpy(self, value: Any) -> np.ndarray: ...


class KerasSource:
    """A Keras model file, run on TensorFlow when installed, else on the torch backend."""

    def __init__(self, path: str | Path, *, device: str = "cpu", trust_code: bool = False) -> None:
        self.backend = keras_backend()
        self.device = device
        if device.startswith("cuda") and self.backend == "tensorflow":
            import tensorflow as tf

            if not tf.config.list_physical_devices("GPU"):
                raise RunError(
                    "cannot run the Keras source on cuda: TensorFlow sees no GPU; use --device cpu, or KERAS_BACKEND=torch"
                )
        with keras_device(device):
            try:
                self.model = load_keras_model(path, trust_code=trust_code)
            except RunError as exc:
                raise RunError(_load_hint(path, str(exc))) from None
        self._captures: dict[tuple[str, ...], tuple[Any, list[str], dict[str, str]]] = {}
        self.calls = _call_counts(self.model)

    def layer_class(self, name: str) -> str | None:
        try:
            return type(self.model.get_layer(name)).__name__
        except ValueError:
            return None

    def _capture_model(self, names: Sequence[str]) -> tuple[Any, list[str], dict[str, str]]:
        import keras

        wanted, tensors, skipped = [], [], {}
        for name in names:
            if "/" in name:
                skipped[name] = "a layer inside a nested model (its outer model's output is compared)"
                continue
            try:
                layer = self.model.get_layer(name)
            except ValueError:
                skipped[name] = "no layer of this name in the Keras model"
                continue
            if self.calls.get(name, 1) > 1:
                skipped[name] = f"a shared layer (called {self.calls[name]} times)"
                continue
            try:
                out = layer.output
            except (AttributeError, ValueError) as exc:
                skipped[name] = f"its output cannot be captured ({exc})"
                continue
            if isinstance(out, (list, tuple, dict)):
                skipped[name] = "a layer with several outputs"
                continue
            wanted.append(name)
            tensors.append(out)
        declared = declared_output(self.model)
        outputs = keras_outputs(declared, output_keys(declared))  # dict outputs: as the model declares them
        with keras_device(self.device):
            model = keras.Model(self.model.inputs, outputs + tensors, name=f"{self.model.name}_capture")
        return model, wanted, skipped

    def run(self, inputs: Sequence[np.ndarray], names: Sequence[str]) -> Capture:
        import keras

        key = tuple(names)
        if key not in self._captures:
            self._captures[key] = self._capture_model(names)
        model, wanted, skipped = self._captures[key]
        with keras_device(self.device):
            out = model(list(inputs), training=False)
        arrays = [keras.ops.convert_to_numpy(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
        n = len(self.model.outputs)
        values = dict(zip(wanted, arrays[n:]))
        classes = {name: cls for name in [*wanted, *skipped] if (cls := self.layer_class(name)) is not None}
        return Capture(arrays[:n], values, dict(skipped), classes)


def _load_hint(path: str | Path, message: str) -> str:
    """One line for a Keras load failure; names the way out for unregistered layers."""
    import re

    missing = re.search(r"Could not locate (?:class|function) '([^']+)'", message)
    if missing:
        return (
            f"{path}: Keras cannot load the source to run it: custom class {missing.group(1)!r} is not registered; "
            "pass --plugin MODULE naming a module that defines it with @keras.saving.register_keras_serializable"
        )
    return message.splitlines()[0] if message else message


def _call_counts(model: Any) -> dict[str, int]:
    """How many times each top-level layer is called in a functional model's config."""
    try:
        config = model.get_config()
    except Exception:  # noqa: BLE001 - subclassed models have no config to read
        return {}
    counts = {}
    for layer in config.get("layers", []) if isinstance(config, dict) else []:
        name = layer.get("name") or layer.get("config", {}).get("name")
        counts[name] = max(1, len(layer.get("inbound_nodes") or []))
    return counts


class TorchEmitted:
    """An emitted PyTorch directory: model.py + model.safetensors."""

    def __init__(self, directory: str | Path, manifest: dict[str, Any], *, device: str = "cpu") -> None:
        import torch

        self.backend = f"torch {torch.__version__}"
        self.device = device
        directory = Path(directory)
        self.module = import_emitted(directory)
        try:
            self.model = self.module.load(directory / "model.safetensors", device=device)
        except Exception as exc:
            raise RunError(f"{directory}: the emitted model could not be built ({type(exc).__name__}: {exc})") from exc
        class_name = manifest.get("model", {}).get("class_name")
        self.forward = parse_forward(directory / "model.py", class_name)
        self.stepper = Stepper(self.forward, vars(self.module), self.model)
        self._statement = {name: s.text for s in self.forward.statements for name in s.writes}

    def to_numpy(self, value: Any) -> np.ndarray:
        return to_numpy(value) if hasattr(value, "detach") else np.asarray(value)

    def _tensor(self, array: np.ndarray, like: Any = None) -> Any:

        tensor = from_numpy(array)
        if like is not None and hasattr(like, "dtype"):
            tensor = tensor.to(like.dtype)
        return tensor.to(self.device)

    def run(self, inputs: Sequence[np.ndarray]) -> tuple[list[np.ndarray], dict[str, Any]]:
        outputs, env = self.stepper.propagate([self._tensor(a) for a in inputs])
        return [self.to_numpy(o) for o in outputs], env

    def isolated(self, propagated: dict[str, Any], feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        def feed(name: str) -> Any | None:
            array = feeds.get(name)
            return None if array is None else self._tensor(array, propagated.get(name))

        return self.stepper.isolate(propagated, feed)

    def statement_of(self, variable: str) -> str | None:
        return self._statement.get(variable)

    def order(self) -> list[str]:
        return [name for statement in self.forward.statements for name in statement.writes]


class TorchSource:
    """A PyTorch source: a torch.export `.pt2` file, or a directory ktorch emitted for
    PyTorch (a round trip). Layer outputs are captured per leaf module path (the names
    the PyTorch reader gives leaf modules) and per fx node name."""

    def __init__(self, path: str | Path, *, device: str = "cpu", trust_code: bool = False) -> None:
        import torch

        self.backend = f"torch {torch.__version__}"
        self.device = device
        path = Path(path)
        if path.is_dir():
            emitted = TorchEmitted(path, _read_manifest(path), device=device)
            self.module, self.stepper = emitted.model, emitted.stepper
        elif path.suffix.lower() == ".pt2":
            try:
                program = torch.export.load(str(path))
            except Exception as exc:  # noqa: BLE001 - reported as a RunError, whatever failed
                raise RunError(
                    f"{path}: torch.export could not load the program ({type(exc).__name__}: {exc})"
                ) from None
            self.module, self.stepper = program.module().to(device), None
        else:
            raise RunError(
                f"{path}: a PyTorch source must be a .pt2 file (torch.export.save) or a ktorch PyTorch output directory"
            )

    def run(self, inputs: Sequence[np.ndarray], names: Sequence[str]) -> Capture:
        import torch

        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in inputs]
        wanted = set(names)
        classes: dict[str, str] = {}
        if self.stepper is not None:
            outputs, env = self.stepper.propagate(tensors)
            values = {k: to_numpy(v) for k, v in env.items() if k in wanted and hasattr(v, "detach")}
        else:
            outputs, values = _interpret(self.module, tensors, wanted, classes)
        skipped = {name: "not a module or fx node of the source" for name in names if name not in values}
        return Capture([to_numpy(o) for o in outputs], values, skipped, classes)


def _interpret(
    module: Any, tensors: list[Any], wanted: set[str], classes: dict[str, str]
) -> tuple[list[Any], dict[str, np.ndarray]]:
    """Run an fx GraphModule, keeping the outputs of the nodes (by name) and of the last
    node of each module call (by module path) that are `wanted`; fills `classes` with
    each module path's class name."""
    import torch
    import torch.fx

    from ..translate.torch_reader.reader import module_of

    last_of: dict[str, str] = {}
    for node in module.graph.nodes:
        path, cls = module_of(node)
        if path and node.op == "call_function":
            last_of[path] = node.name
            classes[path] = cls.rsplit(".", 1)[-1]
    by_node = {node_name: path for path, node_name in last_of.items() if path in wanted}
    values: dict[str, np.ndarray] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                for key in (n.name, by_node.get(n.name)):
                    if key in wanted:
                        values[key] = out.detach().cpu().numpy().copy()  # later in-place ops must not change it
            return out

    with torch.no_grad():
        out = Recorder(module).run(*tensors)
    outputs = list(out) if isinstance(out, (list, tuple)) else [out]
    return outputs, values


def _read_manifest(directory: Path) -> dict[str, Any]:
    from ..translate.output import read_manifest

    return read_manifest(directory)


class KerasEmitted:
    """An emitted Keras directory: model.py (functional build()) + model.weights.h5. Its
    build() statements run eagerly, each layer being the loaded model's own."""

    def __init__(self, directory: str | Path, manifest: dict[str, Any], *, device: str = "cpu") -> None:
        self.backend = f"keras {keras_backend()}"
        self.device = device
        directory = Path(directory)
        self.module = import_emitted(directory)
        try:
            with keras_device(device):
                self.model = self.module.load(directory / "model.weights.h5")
        except Exception as exc:
            raise RunError(
                f"{directory}: the emitted Keras model could not be built ({type(exc).__name__}: {exc})"
            ) from exc
        from .stepper import parse_build

        self.forward = parse_build(directory / "model.py", {layer.name for layer in self.model.layers})
        self.stepper = Stepper(self.forward, vars(self.module), self.model)
        self._statement = {name: s.text for s in self.forward.statements for name in s.writes}

    def to_numpy(self, value: Any) -> np.ndarray:
        import keras

        return np.asarray(keras.ops.convert_to_numpy(value))

    def _tensor(self, array: np.ndarray, like: Any = None) -> Any:
        import keras

        with keras_device(self.device):
            tensor = keras.ops.convert_to_tensor(np.ascontiguousarray(array))
            if like is not None and hasattr(like, "dtype"):
                tensor = keras.ops.cast(tensor, like.dtype)
        return tensor

    def run(self, inputs: Sequence[np.ndarray]) -> tuple[list[np.ndarray], dict[str, Any]]:
        with keras_device(self.device):
            outputs, env = self.stepper.propagate([self._tensor(a) for a in inputs])
        return [self.to_numpy(o) for o in outputs], env

    def isolated(self, propagated: dict[str, Any], feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        def feed(name: str) -> Any | None:
            array = feeds.get(name)
            return None if array is None else self._tensor(array, propagated.get(name))

        with keras_device(self.device):
            return self.stepper.isolate(propagated, feed)

    def statement_of(self, variable: str) -> str | None:
        return self._statement.get(variable)

    def order(self) -> list[str]:
        return [name for statement in self.forward.statements for name in statement.writes]
