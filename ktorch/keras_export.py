"""Capture a Keras model as a torch.export program, in a worker process (the export route).

Keras 3 runs on PyTorch: its layers are `torch.nn.Module`s, and `torch.export` captures a
model whose layers the Keras reader cannot translate (KerasHub backbones, custom layers,
subclassed models). The Keras backend is chosen once per process, so the capture runs in
a worker (`python -m ktorch.keras_export`) with KERAS_BACKEND=torch; it writes

- `program.pt2`: the ExportedProgram (axis 0 of every input dynamic where possible), and
- `capture.json`: what the program itself forgets (see DESIGN.md, "Routes into the graph").

The program has no parameters and no module structure: every Keras variable is a lifted
constant, and every node's `nn_module_stack` holds only the top-level model, because Keras
layers run through `Operation.__call__`, not `nn.Module.__call__`. So while tracing, the
worker wraps `keras.Layer.__call__` to annotate each op with the Keras layer that is active
(`torch.fx.traceback.annotate`, kept on the nodes under `preserve_node_meta`), and rewrites
`nn_module_stack` from it: the PyTorch reader then names every op after its Keras layer
(`stack0_block0_1_conv` ...). Lifted constants are matched to `model.weights` by the
storage of their tensor (the same torch tensor as the Keras variable's), not by value.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .graph.errors import KtorchError, ModelFileError, UntrustedCodeError
from .graph.queries import is_padding_mask
from .translate.runtime import keras_outputs, output_keys

PROGRAM = "program.pt2"
SIDECAR = "capture.json"
SEQUENCE_LENGTH = 8  # an unknown (None) sequence axis of an integer input is exported at this size
SPATIAL_SIZE = 32  # an unknown spatial axis of a float input
LAYER_CLASS_PREFIX = "keras:"  # nn_module_stack class of a Keras layer: "keras:Conv1D" (no dot: the reader's
# module translators, keyed by the last dotted part, must not take a Keras Conv1D for transformers' Conv1D)


class ExportCaptureError(KtorchError):
    """The worker could not load or capture the Keras model."""

    exit_code = 2


class MissingClassError(ModelFileError):
    """The model file names a layer or model class that is not importable here."""


@dataclass
class Capture:
    """A captured Keras model: the program and what the worker recorded beside it."""

    program: Any  # torch.export.ExportedProgram
    info: dict[str, Any]  # capture.json: inputs, layers, constants, model class


# -- parent side --------------------------------------------------------------------------------
def model_classes(path: Path) -> list[tuple[str, str]]:
    """(module, class_name) of every object a `.keras` file's config names (empty for .h5)."""
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
    except (OSError, KeyError, zipfile.BadZipFile, ValueError):
        return []
    found: list[tuple[str, str]] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            if isinstance(obj.get("class_name"), str) and "config" in obj:
                entry = (str(obj.get("module") or ""), obj["class_name"])
                if entry not in found:
                    found.append(entry)
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(config)
    return found


def top_level_class(path: Path) -> tuple[str, str] | None:
    """(module, class_name) of the object a `.keras` file holds, or None."""
    classes = model_classes(path)
    return classes[0] if classes else None


def capture_keras(
    src: str | Path,
    *,
    custom_objects: str | None = None,
    trust_code: bool = False,
    seed: int = 0,
    timeout: float = 900,
) -> Capture:
    """Load `src` with Keras on its torch backend in a worker process and capture it."""
    import torch

    src = Path(src).absolute()
    if not (src.is_file() or (src / "model.py").is_file()):  # a file, or a directory ktorch wrote for Keras
        raise ModelFileError(f"{src}: no such file")
    if custom_objects and not trust_code:
        raise UntrustedCodeError(
            f"--custom-objects {custom_objects}: importing it runs its code; pass --trust-code as well"
        )
    with tempfile.TemporaryDirectory(prefix="ktorch_export_") as tmp:
        cmd = [sys.executable, "-m", "ktorch.keras_export", str(src), tmp, "--seed", str(seed)]
        if custom_objects:
            cmd += ["--custom-objects", custom_objects]
        if trust_code:
            cmd.append("--trust-code")
        env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), env.get("PYTHONPATH", "")] if p)
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ExportCaptureError(
                f"{src}: capturing the model with torch.export took over {timeout:.0f} s"
            ) from None
        error = Path(tmp) / "error.json"
        if error.is_file():
            problem = json.loads(error.read_text())
            kind = {"missing_class": MissingClassError, "untrusted": UntrustedCodeError}.get(
                problem["kind"], ExportCaptureError
            )
            raise kind(problem["message"])
        if proc.returncode != 0 or not (Path(tmp) / SIDECAR).is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise ExportCaptureError(f"{src}: the export worker failed (exit {proc.returncode}):\n{tail}")
        info = json.loads((Path(tmp) / SIDECAR).read_text())
        program = torch.export.load(str(Path(tmp) / PROGRAM))
    return Capture(program, info)


# -- worker side --------------------------------------------------------------------------------
def _missing_class_message(src: Path, exc: Exception) -> str | None:
    """One line naming the class Keras could not find and what would provide it."""
    import re

    text = str(exc)
    found = re.search(r"[Cc]ould not locate (?:class|function) '([^']+)'", text) or re.search(
        r"Unknown layer: '([^']+)'", text
    )
    if found is None:
        return None
    cls = found.group(1).rsplit(">", 1)[-1]
    module = next((m for m, c in model_classes(src) if c == cls), "")
    package = module.split(".", 1)[0] if module else ""
    if package in ("keras_hub", "keras_nlp", "keras_cv"):
        way = f"install {package.replace('_', '-')} (pip install {package.replace('_', '-')})"
    else:
        way = "pass --custom-objects MODULE --trust-code naming the Python module that defines it"
    return f"{src.name}: uses class {cls}{f' from {module}' if module else ''}, which is not importable here; {way}"


def _import_packages(src: Path, custom_objects: str | None) -> dict[str, Any]:
    """Import the packages whose classes the config names (KerasHub registers its classes on
    import) and the user's module of custom objects; returns the custom objects."""
    import importlib

    for module, _ in model_classes(src):
        package = module.split(".", 1)[0]
        if package in ("keras_hub", "keras_nlp", "keras_cv"):
            with contextlib.suppress(ImportError):  # the load fails below, naming the class
                importlib.import_module(package)
    objects: dict[str, Any] = {}
    if custom_objects:
        if "" not in sys.path:
            sys.path.insert(0, "")
        mod = importlib.import_module(custom_objects)
        objects = {k: v for k, v in vars(mod).items() if isinstance(v, type)}
    return objects


def _example_inputs(model: Any, seed: int) -> tuple[list[Any], list[dict[str, Any]]]:
    """Seeded example tensors (batch 2) for the model's inputs, and their specs."""
    import keras
    import numpy as np
    import torch

    from .verify.runners import padding_masks

    gen = torch.Generator().manual_seed(seed)
    config = model.get_config() if hasattr(model, "get_config") else {}
    vocabulary = config.get("vocabulary_size") if isinstance(config, dict) else None
    embeddings = [layer.input_dim for layer in model._flatten_layers() if hasattr(layer, "input_dim")]
    tensors, specs = [], []
    for kt in keras.tree.flatten(model.input):
        dtype = str(kt.dtype)
        integer = "int" in dtype or dtype == "bool"
        shape = [2] + [
            d if d is not None else (SEQUENCE_LENGTH if integer or len(kt.shape) <= 3 else SPATIAL_SIZE)
            for d in kt.shape[1:]
        ]
        name = kt.name
        spec: dict[str, Any] = {"name": name, "shape": [None, *shape[1:]], "dtype": dtype}
        if integer:
            if "mask" in name:
                low, high = 0, 2
            elif "segment" in name or "type" in name:
                low, high = 0, int(config.get("num_segments", 2)) if isinstance(config, dict) else 2
            else:
                low, high = 0, int(vocabulary or (min(embeddings) if embeddings else 2))
            spec["range"] = [low, high]
            if is_padding_mask(name, dtype, len(shape)):
                spec["padding_mask"] = True
                t = torch.from_numpy(padding_masks(np.random.default_rng(seed), shape[0], shape[1]))
            else:
                t = torch.randint(low, high, tuple(shape), generator=gen)
            tensors.append(t.to(getattr(torch, dtype)))
        else:
            tensors.append(torch.randn(*shape, generator=gen).to(getattr(torch, dtype)))
        specs.append(spec)
    return tensors, specs


CONFIG_KEYS = ("axis", "epsilon", "momentum", "center", "scale", "rms_scaling")  # what the re-forming reads


def _layer_annotation() -> tuple[Any, dict[str, str], dict[str, dict]]:
    """Patch keras.Layer.__call__ so every op traced inside a layer call carries the layer's
    path; returns the undo function, and the path -> class and path -> config maps it fills."""
    import keras
    import torch.fx.traceback as fx_traceback

    original = keras.Layer.__call__
    stack: list[str] = []
    classes: dict[str, str] = {}
    configs: dict[str, dict] = {}

    def annotated_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        stack.append(self.name)
        path = ".".join(stack[1:])  # the top-level model is the program itself
        if path and path not in classes:
            classes[path] = type(self).__name__
            try:
                config = self.get_config()
            except Exception:  # noqa: BLE001 - a custom layer without get_config
                config = {}
            configs[path] = {
                k: v for k, v in config.items() if k in CONFIG_KEYS and isinstance(v, (int, float, bool, list))
            }
        try:
            if not path:
                return original(self, *args, **kwargs)
            with fx_traceback.annotate({"keras_path": path}):
                return original(self, *args, **kwargs)
        finally:
            stack.pop()

    keras.Layer.__call__ = annotated_call

    def undo() -> None:
        keras.Layer.__call__ = original

    return undo, classes, configs


KERAS_HUB_FUSED_CHECK = ("keras_hub.src.utils.keras_utils", "fused_attention_op_available")


@contextlib.contextmanager
def tensorflow_attention_path() -> Any:
    """Make KerasHub's attention layers take the path they take on TensorFlow; yields a list that
    records each time a layer asked (empty when no layer of the model has the choice).

    Llama, Mistral, Qwen, Phi-3, GPT-NeoX, Gemma... ask KerasHub's
    `fused_attention_op_available()` whether to call `ops.dot_product_attention`. It answers by
    backend alone (True on torch and JAX, False on TensorFlow; `keras.config.
    disable_flash_attention()` does not change the answer, and KerasHub has no switch for it).
    The two paths differ on a query row whose keys are all masked (left padding): the fused op
    averages every value there, the masked softmax (`keras.layers.Softmax` with a mask) gives
    zeros. ktorch's reference is Keras on TensorFlow, so the capture answers False in every
    KerasHub module that imported the function, for the duration of the capture."""
    module_name, function = KERAS_HUB_FUSED_CHECK
    original = getattr(sys.modules.get(module_name), function, None)
    changed: list[str] = []
    asked: list[str] = []

    def answer_no() -> bool:
        asked.append(function)
        return False

    if original is not None:
        for name, module in list(sys.modules.items()):
            if name.startswith(("keras_hub.", "keras_nlp.")) and getattr(module, function, None) is original:
                setattr(module, function, answer_no)
                changed.append(name)
    try:
        yield asked
    finally:
        for name in changed:
            setattr(sys.modules[name], function, original)


@contextlib.contextmanager
def stored_values() -> Any:
    """While Keras loads a file: where a layer's own `load_own_variables` sets a variable to
    something else than the file stores for it, put the stored value back; yields the paths of
    those variables. The capture then holds the file's weights.

    DINOv2 (and SAM3) recompute their resized position embeddings when loaded, with a bicubic
    resize whose kernel differs between Keras's backends (a = -0.75 on torch, -0.5 on
    TensorFlow), so Keras on torch would hold other numbers than Keras on TensorFlow, ktorch's
    reference, which recomputes exactly the stored value from a file saved there. Only layers
    defined outside Keras itself (KerasHub, user code) are watched; a layer's store holds its own
    variables by position, as Keras's default `load_own_variables` reads them."""
    import keras
    import numpy as np

    restored: list[str] = []
    classes, pending = [], [keras.Layer]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        module = cls.__module__ or ""
        if "load_own_variables" in vars(cls) and not (module == "keras" or module.startswith("keras.")):
            classes.append(cls)

    def watched(original: Any) -> Any:
        def load_own_variables(self: Any, store: Any) -> None:
            original(self, store)
            own = list(getattr(self, "_trainable_variables", [])) + list(getattr(self, "_non_trainable_variables", []))
            for i, variable in enumerate(own):
                if str(i) not in store:
                    continue
                stored = np.asarray(store[str(i)])
                current = keras.ops.convert_to_numpy(variable.value)
                if (
                    stored.shape == current.shape
                    and stored.dtype == current.dtype
                    and not np.array_equal(stored, current)
                ):
                    variable.assign(stored)
                    if variable.path not in restored:
                        restored.append(variable.path)

        return load_own_variables

    originals = {cls: vars(cls)["load_own_variables"] for cls in classes}
    for cls, original in originals.items():
        cls.load_own_variables = watched(original)
    try:
        yield restored
    finally:
        for cls, original in originals.items():
            cls.load_own_variables = original


def _export(model: Any, examples: list[Any]) -> Any:
    import keras
    import torch
    import torch.fx.traceback as fx_traceback

    structure = model.input
    declared = model.output

    class Wrapper(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *xs: Any) -> Any:
            feed = keras.tree.pack_sequence_as(structure, list(xs))
            return tuple(keras_outputs(self.inner(feed, training=False), output_keys(declared)))

    wrapper = Wrapper(model).eval()
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), fx_traceback.preserve_node_meta():
        try:
            return torch.export.export(
                wrapper, tuple(examples), dynamic_shapes=(tuple({0: batch} for _ in examples),), strict=False
            )
        except Exception as exc:  # noqa: BLE001 - a model may not export with a symbolic batch; try the examples' batch
            program = torch.export.export(wrapper, tuple(examples), strict=False)
            lines = [  # the first line of torch's own message, not its advice to try draft_export
                line.strip()
                for line in str(exc).splitlines()
                if line.strip() and not line.startswith("The error above occurred")
            ]
            program.ktorch_static_reason = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
            return program


def _name_constants(program: Any, model: Any) -> dict[str, dict[str, Any]]:
    """Lifted constant -> the Keras variable it is, by the storage of the tensor, and every
    call computed from exactly one such constant (a kernel's permute) -> that variable."""
    import torch
    from torch.export.graph_signature import InputKind

    by_storage: dict[int, Any] = {}
    for v in model.weights:
        t = v.value
        by_storage.setdefault(t.untyped_storage().data_ptr(), v)
    names: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}  # fx node -> lifted constant it derives from
    for spec in program.graph_signature.input_specs:
        if (
            spec.kind != InputKind.CONSTANT_TENSOR
            and spec.kind != InputKind.PARAMETER
            and spec.kind != InputKind.BUFFER
        ):
            continue
        tensor = (
            program.constants.get(spec.target)
            if spec.target in program.constants
            else program.state_dict.get(spec.target)
        )
        if tensor is None:
            continue
        v = by_storage.get(tensor.untyped_storage().data_ptr())
        if v is None:
            continue
        entry = {"path": v.path, "trainable": bool(v.trainable), "shape": list(v.shape)}
        names[spec.target] = entry
        origin[spec.arg.name] = spec.target
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        # tensor arguments only: broadcast_to(table, [batch, 8, 16]) also reads the symbolic batch size
        tensors = [a for a in node.all_input_nodes if isinstance(a.meta.get("val"), torch.Tensor)]
        sources = {origin.get(a.name) for a in tensors}
        if len(sources) == 1 and None not in sources and len(tensors) == 1:
            target = sources.pop()
            origin[node.name] = target
            names.setdefault(node.name, names[target])
    return names


def _restack(program: Any, classes: dict[str, str]) -> None:
    """nn_module_stack from the Keras layer annotations, outermost layer first."""
    for node in program.graph.nodes:
        custom = node.meta.get("custom") or {}
        path = custom.get("keras_path")
        stack = dict(list((node.meta.get("nn_module_stack") or {}).items())[:1])
        if path:
            parts = path.split(".")
            for i in range(len(parts)):
                prefix = ".".join(parts[: i + 1])
                stack[f"keras_{prefix}"] = (prefix, LAYER_CLASS_PREFIX + classes.get(prefix, "Layer"))
        if stack:
            node.meta["nn_module_stack"] = stack


def worker(src: Path, out: Path, *, custom_objects: str | None, trust_code: bool, seed: int) -> None:
    import keras
    import torch

    if keras.backend.backend() != "torch":
        raise ExportCaptureError(f"the export worker needs KERAS_BACKEND=torch, not {keras.backend.backend()}")
    objects = _import_packages(src, custom_objects)
    restored: list[str] = []
    try:
        if src.is_dir():  # a Keras model ktorch wrote: its model.py builds it (on any backend)
            from .translate.runtime import import_emitted

            model = import_emitted(src).load()
        else:
            with stored_values() as restored:
                model = keras.saving.load_model(
                    str(src), custom_objects=objects, compile=False, safe_mode=not trust_code
                )
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds
        missing = _missing_class_message(src, exc)
        if missing is not None:
            raise MissingClassError(missing) from None
        if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
            raise UntrustedCodeError(
                f"{src.name}: holds Python code (a Lambda); pass --trust-code if you trust it"
            ) from None
        raise ExportCaptureError(
            f"{src.name}: Keras could not load it ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
    keras.utils.set_random_seed(seed)
    examples, specs = _example_inputs(model, seed)
    undo, classes, configs = _layer_annotation()
    try:
        with tensorflow_attention_path() as unfused:
            program = _export(model, examples)
    finally:
        undo()
    _restack(program, classes)
    constants = _name_constants(program, model)
    keys = output_keys(model.output)  # a dict's outputs are named by their keys
    outputs = [
        {"name": keys[i] if keys else getattr(t, "name", f"output_{i}")}
        for i, t in enumerate(keras_outputs(model.output, keys))
    ]
    info = {
        "model": {"name": model.name, "class": type(model).__name__, "module": type(model).__module__},
        "keras_version": keras.__version__,
        "inputs": specs,
        "outputs": outputs,
        "layers": classes,
        "configs": configs,
        "constants": constants,
        "output_keys": keys,  # a dict's keys, in the order of `outputs` (None: not a dict)
    }
    reason = getattr(program, "ktorch_static_reason", None)
    if reason:  # exported at the examples' batch only: why a symbolic batch failed
        info["static_batch"] = {"size": len(examples[0]) if examples else None, "why": reason}
    if restored:  # variables a layer recomputes when loaded: the capture holds the file's values
        info["stored_values"] = restored
    if unfused:
        info["attention"] = "masked softmax, as KerasHub computes it on TensorFlow (not its fused path)"
    torch.export.save(program, str(out / PROGRAM))
    (out / SIDECAR).write_text(json.dumps(info))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ktorch.keras_export", description="Capture a Keras model (worker)."
    )
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--custom-objects")
    parser.add_argument("--trust-code", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ["KERAS_BACKEND"] = "torch"
    try:
        worker(args.src, args.out, custom_objects=args.custom_objects, trust_code=args.trust_code, seed=args.seed)
    except KtorchError as exc:
        kind = (
            "missing_class"
            if isinstance(exc, MissingClassError)
            else "untrusted"
            if isinstance(exc, UntrustedCodeError)
            else "error"
        )
        (args.out / "error.json").write_text(json.dumps({"kind": kind, "message": str(exc)}))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
