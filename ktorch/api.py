"""The public API: convert and inspect. The CLI is a thin shell over these."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .graph import Graph, validate
from .graph.errors import ModelFileError
from .graph.passes import assign_layout, eliminate_dead, fold_bias_into_batch_norm, fold_padding, fuse_activations, remove_noops
from .graph.queries import id_range, layout_name, spatial_format
from .translate.output import raise_on_mismatch, write_verified

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")



@dataclass
class ConversionResult:
    out: Path
    graph: Graph  # the intermediate graph (PyTorch -> Keras: its weights are let go once written)
    manifest: dict[str, Any]
    parity: Any = None  # verify.parity.ParityResult, when verified
    timings: dict[str, float] = field(default_factory=dict)
    keras_model: Any = None  # PyTorch -> Keras: the emitted model, weights loaded


def detect_source(path: Path) -> str:
    """Which reader a source path needs: 'keras', or 'torch' (a .pt2 program or a
    directory ktorch emitted for PyTorch)."""
    from .torch_to_keras import is_torch_source

    if path.suffix.lower() == ".onnx":
        return "onnx"
    if is_torch_source(path):
        return "torch"
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory; expected a Keras model file (.h5 or .keras)")
    if path.suffix.lower() in KERAS_SUFFIXES:
        return "keras"
    if path.exists():
        with open(path, "rb") as f:
            head = f.read(8)
        if head.startswith(b"\x89HDF") or head.startswith(b"PK\x03\x04"):
            return "keras"
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    raise ModelFileError(f"{path}: unknown model format (expected .h5 or .keras)")


def read_graph(src: str | Path, *, trust_code: bool = False) -> Graph:
    from .translate.keras_reader import ReadOptions, read_keras

    path = Path(src)
    if detect_source(path) == "onnx":
        from .translate.onnx_reader import read_onnx

        return read_onnx(path)
    return read_keras(path, ReadOptions(trust_code=trust_code))




def convert(
    src: Any,
    out: str | Path | None = None,
    *,
    to: str | None = None,
    example_inputs: Any = None,
    input_shapes: list | None = None,
    input_dtypes: list | None = None,
    weights: str | Path | None = None,
    layout: str = "torch",
    verify: bool = True,
    force: bool = False,
    tolerance: float = 1e-4,
    trust_code: bool = False,
    inputs: list | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> ConversionResult:
    """Convert a Keras model file into a PyTorch output directory, or a PyTorch model
    (.pt2 file, nn.Module, 'package.module:factory', a ktorch PyTorch output directory)
    into a Keras one (see DESIGN.md). `to` ("torch" or "keras") states the target; the
    source decides it when omitted. `example_inputs` / `input_shapes` / `input_dtypes` /
    `weights` only apply to PyTorch sources that still need torch.export; the result's
    `keras_model` is the emitted Keras model.

    Raises ParityError (after writing the output, with the failed result recorded in
    ktorch.json) when verification finds an error above `tolerance`.
    """
    from .torch_to_keras import convert_torch, is_torch_source

    if to not in (None, "torch", "keras"):
        raise ValueError(f"to must be 'torch' or 'keras', not {to!r}")
    from .onnx_io import convert_onnx, is_onnx_source

    if is_onnx_source(src):
        return convert_onnx(
            src, out, to=to or "torch", layout="keep" if layout == "keep" else "native", verify=verify, force=force,
            tolerance=tolerance, inputs=inputs, seed=seed, progress=progress,
        )  # fmt: skip
    if is_torch_source(src):
        if to == "torch":
            raise ModelFileError(f"{src}: is a PyTorch model; it converts to Keras (to='keras')")
        return convert_torch(
            src,
            out,
            example_inputs=example_inputs,
            input_shapes=input_shapes,
            input_dtypes=input_dtypes,
            weights=weights,
            layout="keep" if layout == "keep" else "keras",
            verify=verify,
            force=force,
            trust_code=trust_code,
            tolerance=tolerance,
            inputs=inputs,
            seed=seed,
            progress=progress,
        )
    if to == "keras":
        raise ModelFileError(f"{src}: is not a PyTorch source (.pt2, nn.Module, 'package.module:factory' or a ktorch PyTorch directory)")
    from .translate.keras_reader.file import sha256
    from .translate.torch_writer import writer

    step = progress or (lambda message: None)
    src = Path(src)
    out = Path(out) if out is not None else src.with_name(src.stem + "_torch")
    if layout not in ("torch", "keep"):
        raise ValueError(f"layout must be 'torch' or 'keep', not {layout!r}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    step(f"reading {src.name}")
    graph = read_graph(src, trust_code=trust_code)
    source_io = {id(v): (tuple(v.shape), v.dtype) for v in [*graph.inputs, *graph.outputs]}
    formats = {id(v): spatial_format(v) for v in [*graph.inputs, *graph.outputs]}  # before the layout pass
    timings["read"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    step("rewriting the graph")
    remove_noops(graph)
    fold_padding(graph)
    fold_bias_into_batch_norm(graph)
    fuse_activations(graph)
    eliminate_dead(graph)
    report = assign_layout(graph, "channels_first", keep_io=(layout == "keep"))
    validate(graph)
    timings["passes"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    step("writing PyTorch code")
    rendered = writer.render(graph, source=src.name, version=__version__)
    timings["render"] = time.perf_counter() - t2

    def io(values) -> list[dict[str, Any]]:
        specs = []
        for v in values:
            shape, dtype = source_io.get(id(v), (tuple(v.shape), v.dtype))
            if v.perm is not None and id(v) not in source_io:
                shape = tuple(v.shape[v.perm.index(i)] for i in range(len(v.shape)))
            spec: dict[str, Any] = {
                "name": v.source or v.name,
                "emitted_name": rendered.value_names.get(v.name, v.name),
                "shape": list(shape),
                "dtype": dtype,
            }
            if v.perm is not None:
                spec["perm"] = list(v.perm)
            fmt = formats.get(id(v))
            # the emitted tensor's layout: the source's, moved by perm if there is one
            name = None if fmt is None else layout_name(len(shape), (fmt == "channels_first") != (v.perm is not None))
            if name is not None:
                spec["layout"] = name
            vocab = id_range(v) if v in graph.inputs else None
            if vocab is not None:
                spec["range"] = list(vocab)
            specs.append(spec)
        return specs

    merged = graph.meta.get("merged_layers", {})  # source layers computed inside another's statement
    manifest: dict[str, Any] = {
        "ktorch_version": __version__,
        "direction": "keras->torch",
        "source": {"file": src.name, "sha256": sha256(src), "format": graph.meta.get("source_format"), "keras_version": graph.meta.get("keras_version")},
        "model": {"name": graph.name, "class_name": rendered.class_name, "nodes": len(graph.nodes), "parameters": int(sum(a.size for a in rendered.state.values()))},
        "layout": {"mode": layout, "transposes": report.transposes},
        "inputs": io(graph.inputs),
        "outputs": io(graph.outputs),
        "values": {
            v.source: {
                "emitted": rendered.value_names[v.name],
                **({"perm": list(v.perm)} if v.perm else {}),
                "class": v.producer.source_class if v.producer is not None and v.producer.source_class else "InputLayer" if v in graph.inputs else None,
                **({"merged": merged[v.source]} if v.source in merged else {}),
            }
            for v in graph.values()
            if v.source and v.name in rendered.value_names
        },
        "parity": None,
    }
    if graph.meta.get("compute_dtype"):  # layers computing in float16/bfloat16 (a mixed precision policy)
        manifest["model"]["compute_dtype"] = graph.meta["compute_dtype"]
    if graph.meta.get("inference_identities"):  # augmentation layers dropped as inference identities
        manifest["inference_identities"] = list(graph.meta["inference_identities"])

    def check(staging: Path):
        step("verifying parity")
        from .verify.parity import check_keras_to_torch

        return check_keras_to_torch(src, staging, manifest=manifest, inputs=inputs, seed=seed, tolerance=tolerance, trust_code=trust_code)

    parity = write_verified(
        out, force=force, manifest=manifest, write=lambda d: writer.write(rendered, d), verify=check if verify else None, timings=timings
    )
    timings["total"] = time.perf_counter() - t0
    result = ConversionResult(out, graph, manifest, parity, timings)
    raise_on_mismatch(
        parity,
        what=f"{src}: the emitted model differs from the source",
        tolerance=tolerance,
        out=out,
        hint="; run `ktorch verify` for a layer-by-layer report",
    )
    return result




def inspect(src: str | Path, *, trust_code: bool = False) -> list[dict[str, Any]]:
    """The source model's layers, with output shapes and whether each is supported,
    without converting anything. Unsupported layers are listed, not raised."""
    from .translate.keras_reader.inspect import inspect_keras

    path = Path(src)
    kind = detect_source(path)
    if kind == "onnx":
        from .translate.onnx_reader.inspect import inspect_onnx

        return inspect_onnx(path)
    if kind == "torch":
        from .torch_to_keras import inspect_torch

        return inspect_torch(path)
    return inspect_keras(path, trust_code=trust_code)
