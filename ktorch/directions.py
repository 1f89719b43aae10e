"""The conversion directions, each a declaration of its reader, passes and parity check for the
skeleton in ktorch/pipeline.py. A new source format or target is one more declaration here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .capture import ImportOrderError, capture, prepare_torch, tensorflow_first
from .graph import Graph
from .graph.errors import ModelFileError
from .graph.ir import Value
from .graph.passes import (
    absorb_input_transposes,
    assign_layout,
    count_transposes,
    eliminate_dead,
    fold_bias_into_batch_norm,
    fold_constant_transposes,
    fold_padding,
    fuse_activations,
    fuse_functional_activations,
    remove_noops,
)
from .graph.queries import is_spatial, layout_name, spatial_format
from .manifest import Perm
from .pipeline import Direction, Options, Read
from .training import attach_training
from .translate.output import read_manifest
from .verify.torch_structure import name_outputs


def channels_first_if_spatial(value: Value) -> str | None:
    """PyTorch and ONNX sources: image and sequence data is channels-first."""
    return "channels_first" if is_spatial(value) else None


# -- Keras -> PyTorch --------------------------------------------------------------------------
def read_keras_file(src: Any, options: Options, timings: dict[str, float]) -> Read:
    from .translate.keras_reader import ReadOptions, read_keras
    from .translate.keras_reader.file import sha256

    path = Path(src)
    options.step(f"reading {path.name}")
    graph = read_keras(path, ReadOptions(trust_code=options.trust_code))
    attach_training(path, graph, lambda kfile: emitted_state(kfile, options))
    meta = graph.meta
    source = {
        "file": path.name,
        "sha256": sha256(path),
        "format": meta.get("source_format"),
        "keras_version": meta.get("keras_version"),
    }
    return Read(graph, label=str(src), desc=path.name, source=source, state={"path": path})


def emitted_state(kfile: Any, options: Options) -> dict[str, Any]:
    """The state dict the Keras -> PyTorch conversion emits for an opened Keras file (ktorch/training.py
    runs it on weights replaced by their element numbers, to see where each element goes)."""
    from .translate.keras_reader import ReadOptions
    from .translate.keras_reader.reader import KerasReader
    from .translate.torch_writer import writer

    graph = KerasReader(kfile, ReadOptions(trust_code=options.trust_code)).read()
    rewrite_for_torch(graph, None, options)  # type: ignore[arg-type]
    return writer.render(graph, source="", version="").state


def rewrite_for_torch(graph: Graph, read: Read, options: Options) -> int:
    remove_noops(graph)
    fold_padding(graph)
    fold_bias_into_batch_norm(graph)
    fuse_activations(graph)
    eliminate_dead(graph)
    assign_layout(graph, "channels_first", keep_io=options.keep_layout)
    fold_constant_transposes(graph)  # a positional table added to a channels-first image
    return count_transposes(graph)


def check_keras_source(read: Read, staging: Path, manifest: dict[str, Any], options: Options) -> Any:
    from .verify.parity import check_keras_to_torch

    return check_keras_to_torch(
        read.state["path"], staging, manifest=manifest, inputs=options.inputs, seed=options.seed,
        tolerance=options.tolerance, trust_code=options.trust_code,
    )  # fmt: skip


def keras_value_map(graph: Graph, names: dict[str, str]) -> dict[str, Any]:
    """Source layer name -> the emitted variable holding its output, its perm and class."""
    merged = graph.meta.get("merged_layers", {})  # source layers computed inside another's statement
    values: dict[str, Any] = {}
    for v in graph.values():
        if not v.source or v.name not in names:
            continue
        producer = v.producer
        cls = producer.source_class if producer is not None and producer.source_class else None
        values[v.source] = {
            "emitted": names[v.name],
            **({"perm": list(v.perm)} if v.perm else {}),
            "class": cls if cls else "InputLayer" if v in graph.inputs else None,
            **({"merged": merged[v.source]} if v.source in merged else {}),
        }
    return values


KERAS_TO_TORCH = Direction(
    name="keras->torch",
    target="torch",
    read=read_keras_file,
    io_format=spatial_format,
    rewrite=rewrite_for_torch,
    check=check_keras_source,
    values=keras_value_map,
    mismatch="the emitted model differs from the source",
    hint="; run `ktorch verify` for a layer-by-layer report",
)


# -- PyTorch -> Keras --------------------------------------------------------------------------
def read_torch_source(src: Any, options: Options, timings: dict[str, float]) -> Read:
    from .translate.keras_reader.file import sha256
    from .translate.torch_reader import read_program

    if tensorflow_first():
        raise ImportOrderError(
            "TensorFlow was imported before Triton in this process, and torch.export would crash (segfault); "
            "import triton (or torch.export a model once) before importing keras/tensorflow, or run `ktorch convert`"
        )
    prepare_torch()
    t0 = time.perf_counter()
    options.step("exporting the PyTorch model")
    program, desc, name = capture(
        src, example_inputs=options.example_inputs, input_shapes=options.input_shapes,
        input_dtypes=options.input_dtypes, weights=options.weights, seed=options.seed, trust_code=options.trust_code,
    )  # fmt: skip
    timings["export"] = time.perf_counter() - t0
    options.step("reading the ATen graph")
    graph = read_program(program, name=name)
    name_outputs(graph, program)
    regularizers = options.regularizers
    if regularizers is None and isinstance(src, (str, Path)) and Path(src).is_dir():
        # a round trip: the regularizers ktorch wrote as regularization_loss(), by parameter
        regularizers = read_manifest(Path(src)).get("training", {}).get("parameter_regularizers")
    if regularizers:
        from .translate.torch_reader.training import attach_regularizers

        attach_regularizers(graph, regularizers)
    source: dict[str, Any] = {"file": desc, "format": "torch.export"}
    if getattr(program, "ktorch_capture", None):
        source["capture"] = program.ktorch_capture  # what the capture switched off (use_cache), keyword inputs
    if graph.meta.get("static_batch") is not None:  # the program itself runs only this batch size
        source["batch"] = graph.meta["static_batch"]
    if isinstance(src, (str, Path)) and Path(src).is_file():
        source["sha256"] = sha256(Path(src))
    return Read(graph, label=desc, desc=desc, source=source, state={"program": program})


def rewrite_for_keras(graph: Graph, read: Read, options: Options) -> int:
    remove_noops(graph)
    fold_padding(graph, pools=False)
    eliminate_dead(graph)
    assign_layout(graph, "channels_last", keep_io=options.keep_layout)
    fold_constant_transposes(graph)
    fuse_functional_activations(graph)
    return count_transposes(graph)


def check_torch_source(read: Read, staging: Path, manifest: dict[str, Any], options: Options) -> Any:
    from .verify.torch_source import check_torch_to_keras, load_emitted_keras

    read.state["keras_model"] = keras_model = load_emitted_keras(staging)
    # the export example's axis-0 size (a fixed-batch program runs only that one)
    meta = read.graph.meta
    batch = meta.get("static_batch") or meta.get("example_batch") or 2
    return check_torch_to_keras(
        read.state["program"], staging, manifest=manifest, inputs=options.inputs, seed=options.seed, batch=batch,
        tolerance=options.tolerance, keras_model=keras_model,
    )  # fmt: skip


def torch_value_map(graph: Graph, names: dict[str, str]) -> dict[str, dict[str, Any]]:
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


TORCH_TO_KERAS = Direction(
    name="torch->keras",
    target="keras",
    read=read_torch_source,
    io_format=channels_first_if_spatial,
    rewrite=rewrite_for_keras,
    check=check_torch_source,
    values=torch_value_map,
    mismatch="the emitted Keras model differs from the PyTorch source",
)


# -- ONNX -> PyTorch / Keras -------------------------------------------------------------------
def read_onnx_source(src: Any, options: Options, timings: dict[str, float]) -> Read:
    from .translate.keras_reader.file import sha256
    from .translate.onnx_reader import read_onnx

    path = Path(src) if isinstance(src, (str, Path)) else None
    if path is not None and not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    options.step(f"reading {path.name if path else 'the ONNX model'}")
    graph = read_onnx(src)
    desc = path.name if path is not None else "an ONNX model"
    source: dict[str, Any] = {
        "file": desc,
        "format": "onnx",
        "opset": graph.meta.get("opset"),
        "producer": graph.meta.get("producer"),
    }
    if path is not None:
        source["sha256"] = sha256(path)
    return Read(graph, label=desc, desc=desc, source=source, state={"path": path, "proto": src, "taken": {}})


def onnx_rewrite(target: str):
    def rewrite(graph: Graph, read: Read, options: Options) -> int:
        # an input the exporter transposes straight away (tf2onnx's NHWC -> NCHW) is taken in the
        # order the model uses it, so that the transpose disappears
        read.state["taken"] = {} if options.keep_layout else absorb_input_transposes(graph)
        remove_noops(graph)
        if target == "torch":
            fuse_activations(graph)
        eliminate_dead(graph)
        assign_layout(graph, "channels_first" if target == "torch" else "channels_last", keep_io=options.keep_layout)
        if target == "keras":
            fold_constant_transposes(graph)
        return count_transposes(graph)

    return rewrite


def compose(first: Perm | None, then: Perm | None) -> Perm | None:
    """The perm of source.transpose(first).transpose(then); None for the identity."""
    if first is None and then is None:
        return None
    rank = len(first if first is not None else then)  # type: ignore[arg-type]
    a = tuple(first) if first is not None else tuple(range(rank))
    b = tuple(then) if then is not None else tuple(range(rank))
    out = tuple(a[i] for i in b)
    return None if out == tuple(range(rank)) else out


def check_onnx_source(read: Read, staging: Path, manifest: dict[str, Any], options: Options) -> Any:
    from .verify.onnx_referee import check_onnx_parity

    emitted = None
    if manifest["direction"].endswith("->keras"):
        from .verify.torch_source import load_emitted_keras

        read.state["keras_model"] = emitted = load_emitted_keras(staging)
    path = read.state["path"]
    onnx_path = path if path is not None else staging / ".source.onnx"
    if path is None:
        onnx_path.write_bytes(read.state["proto"].SerializeToString())
    try:
        batch = read.graph.meta.get("static_batch") or 2  # a model exported with a fixed batch runs only that batch
        return check_onnx_parity(
            onnx_path, staging, manifest=manifest, inputs=options.inputs, seed=options.seed, batch=batch,
            tolerance=options.tolerance, emitted_model=emitted,
        )  # fmt: skip
    finally:
        if path is None:
            onnx_path.unlink()


def onnx_direction(target: str) -> Direction:
    def layout(rank: int, fmt: str | None, perm: Perm | None, keep: bool) -> str | None:
        native = layout_name(rank, channels_first=(target == "torch"))
        if native is None or fmt is None:
            return None
        return "source order" if keep else native

    return Direction(
        name=f"onnx->{target}",
        target=target,
        read=read_onnx_source,
        io_format=channels_first_if_spatial,
        rewrite=onnx_rewrite(target),
        check=check_onnx_source,
        perm_of=lambda value, read: compose(read.state["taken"].get(id(value)), value.perm),
        layout=layout,
        ranges=False,
        verifying="verifying parity against ONNX Runtime",
        mismatch="the emitted model differs from ONNX Runtime's run of the source",
    )


ONNX_TO_TORCH = onnx_direction("torch")
ONNX_TO_KERAS = onnx_direction("keras")
DIRECTIONS = {d.name: d for d in (KERAS_TO_TORCH, TORCH_TO_KERAS, ONNX_TO_TORCH, ONNX_TO_KERAS)}
