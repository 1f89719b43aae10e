"""The PyTorch -> Keras pipeline: capture with torch.export, read the ATen graph, lay it
out channels-last, write Keras code and weights, verify against the PyTorch source.

Sources: a `.pt2` file (torch.export.save), an `nn.Module` or ExportedProgram object, a
`package.module:factory` string (imports and runs that code), or a directory that ktorch
emitted for PyTorch (a round trip: its model.py is imported and `load()`ed).
"""

from __future__ import annotations

import gc
import importlib
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .graph import Graph, validate
from .graph.errors import KtorchError, ModelFileError, UntrustedCodeError
from .graph.passes import absorb_activation, assign_layout, count_transposes, eliminate_dead, remove_noops
from .graph.queries import id_range, is_spatial, layout_name
from .translate.output import raise_on_mismatch, read_manifest, write_verified


class ImportOrderError(KtorchError):
    """TensorFlow was imported before Triton; torch.export would crash."""

    exit_code = 3


NATIVE_LAYOUTS = ("keras", "native", "torch")  # "torch" is the API's historical default: the target's own idiom


def is_factory_string(src: Any) -> bool:
    """`package.module:factory` (and not an existing path)."""
    if not isinstance(src, str) or ":" not in src or Path(src).exists():
        return False
    module, _, factory = src.partition(":")
    return bool(module) and factory.isidentifier() and all(p.isidentifier() for p in module.split("."))


def is_torch_source(src: Any) -> bool:
    """Whether `src` is something this pipeline reads."""
    if hasattr(src, "graph_signature") or _is_module(src) or is_factory_string(src):
        return True
    if isinstance(src, (str, Path)):
        path = Path(src)
        if path.suffix.lower() in (".pt2", *PICKLE_SUFFIXES):
            return True
        if path.is_dir() and (path / "ktorch.json").is_file() and (path / "model.py").is_file():
            try:
                return read_manifest(path).get("direction") == "keras->torch"
            except (OSError, ValueError):
                return False
    return False


def prepare_torch(src: Any = None) -> None:
    """Load torch.export's native dependencies before TensorFlow when `src` (if given) is
    a PyTorch source (see verify.runners.preload_before_tensorflow: the other order crashes)."""
    if src is None or is_torch_source(src):
        from .verify.runners import preload_before_tensorflow

        preload_before_tensorflow()


def _tensorflow_first() -> bool:
    """TensorFlow was loaded before Triton in this process: torch.export would crash."""
    import importlib.util

    return "tensorflow" in sys.modules and "triton" not in sys.modules and importlib.util.find_spec("triton") is not None


def _is_module(obj: Any) -> bool:
    if isinstance(obj, (str, Path)) or "torch" not in sys.modules:
        return False  # an nn.Module exists only once torch is imported: don't import it to ask
    try:
        import torch

        return isinstance(obj, torch.nn.Module)
    except ImportError:  # pragma: no cover
        return False


# -- capture ----------------------------------------------------------------------------------
def _example_inputs(shapes: Sequence[Sequence[int]], dtypes: Sequence[str] | None, seed: int) -> tuple:
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, shape in enumerate(shapes):
        dtype = (dtypes[i] if dtypes and i < len(dtypes) else dtypes[-1] if dtypes else "float32") or "float32"
        tdtype = getattr(torch, dtype)
        if tdtype.is_floating_point:
            out.append(torch.randn(*shape, generator=gen).to(tdtype))
        else:
            out.append(torch.randint(0, 2, tuple(shape), generator=gen).to(tdtype))
    return tuple(out)


def export_module(module: Any, example_inputs: Any) -> Any:
    """torch.export with a dynamic batch axis (falls back to the examples' static batch
    when the model cannot be exported with a symbolic batch, e.g. a batch of 1). A dict of
    examples is passed as keyword arguments; `use_cache` is off during the capture
    (torch_structure.capture_settings), and what changed is kept in `program.ktorch_capture`."""
    import torch

    from .torch_structure import capture_settings, dynamic_batch, split_example

    module = module.eval()
    args, kwargs = split_example(example_inputs)
    dims, dynamic = dynamic_batch(args, kwargs)
    with capture_settings(module) as changed:
        program = None
        if dynamic:
            try:
                program = torch.export.export(module, args, kwargs, dynamic_shapes=dims)
            except Exception as exc:  # noqa: BLE001 - torch raises many kinds; a static export may still work
                warnings.warn(f"exporting with a dynamic batch failed ({type(exc).__name__}); exporting with the examples' batch size", stacklevel=2)
        if program is None:
            program = torch.export.export(module, args, kwargs)
    program.ktorch_capture = {**changed, **({"kwargs": list(kwargs)} if kwargs else {})}
    return program


PICKLE_SUFFIXES = (".pt", ".pth")


def _load_pickled_module(path: Path, trust_code: bool) -> Any:
    """A whole module saved with torch.save(model): unpickling runs code from the file, so it
    is refused unless the user trusts the file (--trust-code)."""
    import torch

    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    if not trust_code:
        try:
            torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - weights_only refuses arbitrary pickled objects
            raise UntrustedCodeError(
                f"{path}: holds pickled Python objects (a whole module saved with torch.save(model)); "
                "unpickling runs code from the file, so ktorch does not do it by default. Pass --trust-code "
                "if you trust this file, or save a torch.export program (.pt2) instead"
            ) from None
        raise ModelFileError(
            f"{path}: holds only weights (a state dict); convert the module that uses them: "
            f"`ktorch convert package.module:factory --input-shape ... --weights {path.name}`"
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"{path}: cannot be loaded by torch.load ({type(exc).__name__}: {exc})") from None
    if not _is_module(obj):
        raise ModelFileError(f"{path}: holds a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def _load_weights(module: Any, weights: str | Path) -> None:
    import torch

    path = Path(weights)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: does not match the model's state_dict ({str(exc).splitlines()[0]})") from None


def capture(
    src: Any,
    *,
    example_inputs: Sequence[Any] | None = None,
    input_shapes: Sequence[Sequence[int]] | None = None,
    input_dtypes: Sequence[str] | None = None,
    weights: str | Path | None = None,
    seed: int = 0,
    trust_code: bool = False,
) -> tuple[Any, str, str]:
    """(ExportedProgram, a description of the source, a model name) for any supported source."""
    import torch

    if hasattr(src, "graph_signature"):
        return src, "ExportedProgram", "model"
    if isinstance(src, (str, Path)) and Path(src).suffix.lower() == ".pt2" and not is_factory_string(src):
        path = Path(src)
        if not path.is_file():
            raise ModelFileError(f"{path}: no such file")
        import logging
        import zipfile

        if not zipfile.is_zipfile(path):
            raise ModelFileError(f"{path}: not a torch.export program (not a zip archive; it may be truncated); save one with torch.export.save")
        export_log = logging.getLogger("torch.export")
        level = export_log.level
        export_log.setLevel(logging.CRITICAL)  # torch logs its own traceback before raising
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ModelFileError(f"{path}: not a torch.export program ({type(exc).__name__}: {exc}); save one with torch.export.save") from None
        finally:
            export_log.setLevel(level)
        return program, path.name, path.stem
    if isinstance(src, (str, Path)) and Path(src).is_dir():
        return _capture_emitted(Path(src), example_inputs, seed)
    if isinstance(src, (str, Path)) and Path(src).suffix.lower() in PICKLE_SUFFIXES and not is_factory_string(src):
        module, name, desc = _load_pickled_module(Path(src), trust_code), Path(src).stem, Path(src).name
    elif is_factory_string(src):
        module_name, _, factory = str(src).partition(":")
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, ".")
        try:
            obj = getattr(importlib.import_module(module_name), factory)
        except (ImportError, AttributeError) as exc:
            raise ModelFileError(f"{src}: cannot import {factory!r} from {module_name!r} ({exc})") from None
        module = obj() if callable(obj) and not _is_module(obj) else obj
        if not _is_module(module):
            raise ModelFileError(f"{src}: {factory}() returned a {type(module).__name__}, not a torch.nn.Module")
        name, desc = factory, str(src)
    elif _is_module(src):
        module, name, desc = src, type(src).__name__, f"{type(src).__module__}.{type(src).__qualname__}"
    else:
        raise ModelFileError(f"{src!r}: expected a .pt2 file, a 'package.module:factory' string, an nn.Module or a ktorch output directory")
    if weights is not None:
        _load_weights(module, weights)
    if example_inputs is None:
        if not input_shapes:
            raise ModelFileError(f"{desc}: pass the input shapes (--input-shape 1,3,224,224) or example_inputs to export the model")
        # a batch of at least 2 lets torch.export keep the batch axis symbolic
        shapes = [[max(int(s[0]), 2), *s[1:]] if len(s) else list(s) for s in input_shapes]
        example_inputs = _example_inputs(shapes, input_dtypes, seed)
    return export_module(module, example_inputs if isinstance(example_inputs, dict) else tuple(example_inputs)), desc, name


def _capture_emitted(directory: Path, example_inputs: Sequence[Any] | None, seed: int) -> tuple[Any, str, str]:
    """A directory ktorch emitted for PyTorch: import its model.py and export `load()`."""
    from .verify.runners import import_emitted

    manifest = read_manifest(directory)
    module = import_emitted(directory).load()
    if example_inputs is None:
        shapes, dtypes = [], []
        for spec in manifest["inputs"]:
            shape = [2 if i == 0 else (8 if d is None else int(d)) for i, d in enumerate(spec["shape"])]
            perm = spec.get("perm")
            shapes.append([shape[p] for p in perm] if perm else shape)
            dtypes.append("float32" if spec.get("range") is None and str(spec.get("dtype", "float32")).startswith("float") else "int64")
        example_inputs = _example_inputs(shapes, dtypes, seed)
        for i, spec in enumerate(manifest["inputs"]):
            if spec.get("range") is not None:
                import torch

                low, high = spec["range"]
                example_inputs[i].copy_(torch.randint(low, high, tuple(example_inputs[i].shape)))
    name = manifest.get("model", {}).get("name") or directory.name
    return export_module(module, tuple(example_inputs)), f"{directory.name}/model.py", str(name)


def inspect_torch(src: Any) -> list[dict[str, Any]]:
    """The ATen calls of a PyTorch source (.pt2 or a ktorch PyTorch directory), each with its
    module, output shape and whether a translator exists; nothing is converted."""
    from .translate.registry import lookup
    from .translate.torch_reader import families  # noqa: F401  (registers the translators)
    from .translate.torch_reader.reader import (
        IGNORED,
        PASS_THROUGH,
        _module_of,
        aten_key,
    )

    prepare_torch(src)
    program, _, _ = capture(src)
    rows: list[dict[str, Any]] = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in {s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"}:
            rows.append({"name": node.name, "class": "input", "shape": tuple(node.meta["val"].shape), "status": "input"})
        if node.op != "call_function":
            continue
        key = aten_key(node.target)
        if not key.startswith("aten.") or key in IGNORED:
            continue
        module, cls = _module_of(node)
        val = node.meta.get("val")
        shape = tuple(val.shape) if hasattr(val, "shape") else None
        ok = key in PASS_THROUGH or lookup("torch->ir", key) is not None
        rows.append({"name": module or node.name, "class": f"{key} ({cls.rsplit('.', 1)[-1] or 'forward'})", "shape": shape, "status": "ok" if ok else "no translator"})
    return rows


# -- conversion -------------------------------------------------------------------------------
def fold_constant_transposes(graph: Graph) -> int:
    """Permute constant arrays once instead of transposing them in the model."""
    folded = 0
    for node in list(graph.nodes):
        if node.op != "transpose" or node.inputs[0].producer is None or node.inputs[0].producer.op != "constant":
            continue
        const = node.inputs[0].producer
        if len(node.inputs[0].users) != 1:
            continue
        const.weights["value"] = np.ascontiguousarray(const.weights["value"].transpose(node.attrs["perm"]))
        out = const.output
        out.shape = tuple(node.output.shape)
        out.perm = node.output.perm
        graph.replace_uses(node.output, out)
        graph.remove_node(node)
        folded += 1
    return folded


def fold_pads_into_convs(graph: Graph) -> int:
    """A zero `pad` read only by a convolution becomes part of the convolution's padding
    (F.pad before a conv, as the PyTorch code ktorch emits for TensorFlow's "same")."""
    folded = 0
    for node in list(graph.nodes):
        if node.op != "pad" or float(node.attrs["value"]) != 0.0 or node.output in graph.outputs:
            continue
        users = node.output.users
        if len(users) != 1 or users[0].op != "conv" or users[0].attrs["padding"] == "same":
            continue
        conv = users[0]
        if conv.attrs["data_format"] != node.attrs["data_format"]:
            continue
        conv.attrs["padding"] = tuple((b + pb, e + pe) for (b, e), (pb, pe) in zip(conv.attrs["padding"], node.attrs["pads"]))
        graph.set_input(conv, 0, node.inputs[0])
        graph.remove_node(node)
        folded += 1
    return folded


# activations Keras layers take by name (`activation="relu"`), with the attributes that name means
KERAS_ACTIVATION_NAMES = {
    "relu": ("relu", {"max_value": None, "threshold": 0.0, "negative_slope": 0.0}),
    "sigmoid": ("sigmoid", {}),
    "tanh": ("tanh", {}),
    "silu": ("silu", {}),
    "hard_silu": ("hard_silu", {}),
    "gelu": ("gelu", {"approximate": False}),
    "softmax": ("softmax", None),
}


def fuse_functional_activations(graph: Graph) -> int:
    """An activation written functionally right after a Dense/Conv (`torch.softmax(self.fc(x), 1)`,
    `F.relu(self.conv(x))`) becomes that Keras layer's `activation=`; activation modules
    (nn.ReLU) stay layers of their own, named after the module. Runs after the layout pass."""
    fused = 0
    for node in list(graph.nodes):
        if node.op not in ("dense", "conv", "conv_transpose") or node.attrs.get("activation") is not None:
            continue
        out = node.output
        if len(out.users) != 1 or out in graph.outputs:
            continue
        act = out.users[0]
        spec = KERAS_ACTIVATION_NAMES.get(act.op)
        if spec is None or not (act.source_class or "").startswith("aten.") or act.inputs != [out]:
            continue
        name, defaults = spec
        if defaults is None:  # softmax: over the last axis only
            if tuple(act.attrs["axis"]) != (out.rank - 1,):
                continue
        elif any(act.attrs.get(k) != v for k, v in defaults.items()):
            continue
        absorb_activation(graph, node, act, name=name)
        fused += 1
    return fused


def read_torch_graph(program: Any, name: str) -> Graph:
    from .translate.torch_reader import read_program

    return read_program(program, name=name)


def convert_torch(
    src: Any,
    out: str | Path | None = None,
    *,
    example_inputs: Sequence[Any] | None = None,
    input_shapes: Sequence[Sequence[int]] | None = None,
    input_dtypes: Sequence[str] | None = None,
    weights: str | Path | None = None,
    layout: str = "keras",
    verify: bool = True,
    force: bool = False,
    tolerance: float = 1e-4,
    inputs: list | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    trust_code: bool = False,
) -> Any:
    """Convert a PyTorch source into a Keras output directory (see the module doc).

    Returns a ConversionResult whose `keras_model` is the emitted model with its weights.
    Raises ParityError (after writing the output) when verification finds an error above
    `tolerance`.
    """
    from .api import ConversionResult
    from .translate.keras_writer import writer

    step = progress or (lambda message: None)
    if _tensorflow_first():
        raise ImportOrderError(
            "TensorFlow was imported before Triton in this process, and torch.export would crash (segfault); "
            "import triton (or torch.export a model once) before importing keras/tensorflow, or run `ktorch convert`"
        )
    prepare_torch()
    if layout not in (*NATIVE_LAYOUTS, "keep"):
        raise ValueError(f"layout must be 'keras' or 'keep', not {layout!r}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    step("exporting the PyTorch model")
    program, desc, name = capture(
        src, example_inputs=example_inputs, input_shapes=input_shapes, input_dtypes=input_dtypes, weights=weights, seed=seed, trust_code=trust_code
    )
    timings["export"] = time.perf_counter() - t0
    if out is None:
        if isinstance(src, (str, Path)) and not is_factory_string(src):
            path = Path(src)
            out = path.with_name(path.name.rstrip("/") + "_keras") if path.is_dir() else path.with_name(path.stem + "_keras")
        else:
            out = Path(f"{name}_keras")
    out = Path(out)

    t1 = time.perf_counter()
    step("reading the ATen graph")
    graph = read_torch_graph(program, name)
    _name_outputs(graph, program)
    source_io = {id(v): (tuple(v.shape), v.dtype) for v in [*graph.inputs, *graph.outputs]}
    spatial = {id(v) for v in [*graph.inputs, *graph.outputs] if is_spatial(v)}
    timings["read"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    step("rewriting the graph")
    remove_noops(graph)
    fold_pads_into_convs(graph)
    eliminate_dead(graph)
    assign_layout(graph, "channels_last", keep_io=(layout == "keep"))
    fold_constant_transposes(graph)
    fuse_functional_activations(graph)
    validate(graph)
    timings["passes"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    step("writing Keras code")
    rendered = writer.render(graph, source=desc, version=__version__)
    timings["render"] = time.perf_counter() - t3

    def io(values) -> list[dict[str, Any]]:
        specs = []
        fields = graph.meta.get("output_names") if values is graph.outputs else None
        for i, v in enumerate(values):
            shape, dtype = source_io.get(id(v), (tuple(v.shape), v.dtype))
            spec: dict[str, Any] = {"name": fields[i] if fields else v.source or v.name, "emitted_name": rendered.value_names.get(v.name, v.name), "shape": list(shape), "dtype": dtype}
            if v.perm is not None:
                spec["perm"] = list(v.perm)
            name = layout_name(len(shape), channels_first=v.perm is None)
            if name is not None and id(v) in spatial:
                spec["layout"] = name
            vocab = id_range(v) if v in graph.inputs else None
            if vocab is not None:
                spec["range"] = list(vocab)
            specs.append(spec)
        return specs

    source_info: dict[str, Any] = {"file": desc, "format": "torch.export"}
    batch = graph.meta.get("static_batch")  # None for an export with a dynamic batch
    if batch is not None:  # the program itself runs only this batch size
        source_info["batch"] = batch
    if isinstance(src, (str, Path)) and Path(src).is_file():
        from .translate.keras_reader.file import sha256

        source_info["sha256"] = sha256(Path(src))
    manifest: dict[str, Any] = {
        "ktorch_version": __version__,
        "direction": "torch->keras",
        "source": source_info,
        "model": {
            "name": graph.name,
            "nodes": len(graph.nodes),
            "layers": rendered.layer_count,
            "custom_layers": rendered.custom_layers,
            "parameters": int(sum(a.size for arrays in rendered.weights.values() for a in arrays)),
        },
        "layout": {"mode": "keep" if layout == "keep" else "keras", "transposes": count_transposes(graph)},
        "inputs": io(graph.inputs),
        "outputs": io(graph.outputs),
        # source module path -> emitted variable in build() (the last value a module produced
        # is its output), for the verifier's layer-by-layer comparison
        "values": _value_map(graph, rendered.value_names),
        "parity": None,
    }
    if getattr(program, "ktorch_capture", None):
        manifest["capture"] = program.ktorch_capture  # what the capture switched (use_cache), keyword inputs

    keras_model = None
    if not verify:
        # Only the verification runs the source again: let go of the captured program, so its
        # weights (when this call loaded them) are freed before the Keras model is built.
        program = None
        gc.collect()  # an ExportedProgram sits in reference cycles

    def write(staging: Path) -> None:
        # The rendered output holds every array the Keras model needs: the graph lets go of
        # its own references, and each layer's arrays are dropped as the Keras model takes
        # them, so that the weights are not held twice while the model fills up; the Keras
        # model loaded next (for verification or as `keras_model`) sits beside no other copy.
        for node in graph.nodes:
            node.weights = {}
        writer.write(rendered, staging, release=True)
        rendered.weights.clear()
        if verify:
            rendered.model = None  # verification loads the written files themselves
        gc.collect()  # and the model write() built (TensorFlow variables wait for a collection)

    def check(staging: Path):
        nonlocal keras_model
        step("verifying parity")
        from .verify.torch_source import check_torch_to_keras, load_emitted_keras

        keras_model = load_emitted_keras(staging)
        # the export example's axis-0 size (a fixed-batch program runs only that one)
        batch = graph.meta.get("static_batch") or graph.meta.get("example_batch") or 2
        return check_torch_to_keras(program, staging, manifest=manifest, inputs=inputs, seed=seed, batch=batch, tolerance=tolerance, keras_model=keras_model)

    parity = write_verified(out, force=force, manifest=manifest, write=write, verify=check if verify else None, timings=timings)
    timings["total"] = time.perf_counter() - t0
    if keras_model is None and rendered.model is not None:
        keras_model = rendered.model  # unverified: the model write() built holds the weights already
    if keras_model is None:
        from .verify.torch_source import load_emitted_keras

        keras_model = load_emitted_keras(out)
    result = ConversionResult(out, graph, manifest, parity, timings, keras_model=keras_model)
    raise_on_mismatch(parity, what=f"{desc}: the emitted Keras model differs from the PyTorch source", tolerance=tolerance, out=out)
    return result


def _name_outputs(graph: Graph, program: Any) -> None:
    """Outputs of a structured result (a Hugging Face ModelOutput, a dict) keep their field
    names: graph.meta["output_names"] lists them, one per graph output, in order."""
    from .torch_structure import output_names

    spec = getattr(getattr(program, "call_spec", None), "out_spec", None)
    names = output_names(spec) if spec is not None else None
    if names and len(names) == len(graph.outputs):
        graph.meta["output_names"] = list(names)


def _value_map(graph: Graph, names: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Source module path -> the emitted variable holding that module's output (the last
    value its nodes produce) and its perm, for the verifier's layer-by-layer comparison."""
    out: dict[str, dict[str, Any]] = {}
    for v in graph.values():
        if v in graph.inputs or v.name not in names:
            continue
        key = v.source or (v.producer.source if v.producer is not None else None)
        cls = v.producer.source_class if v.producer is not None else None
        if not key or (cls or "").startswith("aten."):  # functional code has no module path to match
            continue
        entry: dict[str, Any] = {"emitted": names[v.name]}
        if v.perm:
            entry["perm"] = list(v.perm)
        if v.producer is not None and v.producer.source_class:
            entry["class"] = v.producer.source_class
        out[key] = entry
    return out
