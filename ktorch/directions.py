"""The conversion directions, each a declaration of its reader, passes and parity check for the
skeleton in ktorch/pipeline.py. A new source format or target is one more declaration here.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .capture import ImportOrderError, capture, dynamic_sizes, prepare_torch, tensorflow_first
from .graph import Graph
from .graph.errors import KtorchError, ModelFileError
from .graph.ir import Value
from .graph.passes import (
    absorb_input_transposes,
    assign_layout,
    count_transposes,
    eliminate_dead,
    fold_bias_into_batch_norm,
    fold_constant_transposes,
    fold_padding,
    fold_transposes_into_einsum,
    fuse_activations,
    fuse_functional_activations,
    remove_noops,
)
from .graph.queries import is_spatial, layout_name, spatial_format
from .manifest import Perm
from .pipeline import Direction, Options, Read
from .training import attach_training, training_reference
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
    state: dict[str, Any] = {"path": path}
    if path.is_dir():  # a Keras model ktorch wrote (a round trip): built by its model.py, read as .keras
        graph, state["source_model"] = read_keras_output(path, options)
    else:
        graph = read_keras(path, ReadOptions(trust_code=options.trust_code))
        attach_training(path, graph, lambda kfile: emitted_state(kfile, options))
    meta = graph.meta
    source = {
        "file": path.name,
        "sha256": sha256(path),
        "format": meta.get("source_format"),
        "keras_version": meta.get("keras_version"),
    }
    return Read(graph, label=str(src), desc=path.name, source=source, state=state)


def read_keras_output(directory: Path, options: Options) -> tuple[Graph, Any]:
    """A directory ktorch wrote for Keras (PyTorch -> Keras), read for the way back: its model.py
    builds the model with the weights (its custom layers, `Parameter`..., register themselves under
    the "ktorch>" package, which the Keras reader translates), Keras saves it as a .keras file in a
    scratch directory, and the direct reader reads that file as any other. Returns the graph and
    the built Keras model (the verification runs it rather than building it again)."""
    import tempfile

    from .translate.keras_reader import ReadOptions, read_keras
    from .verify.runners import load_keras_model

    model = load_keras_model(directory)
    with tempfile.TemporaryDirectory(prefix="ktorch_") as scratch:
        path = Path(scratch) / f"{model.name or 'model'}.keras"
        model.save(path)
        graph = read_keras(path, ReadOptions(trust_code=options.trust_code))
        attach_training(path, graph, lambda kfile: emitted_state(kfile, options))
    graph.meta["source_format"] = "ktorch Keras output (model.py, model.weights.h5)"
    return graph, model


def emitted_state(kfile: Any, options: Options) -> dict[str, Any]:
    """The state dict the Keras -> PyTorch conversion emits for an opened Keras file (ktorch/training.py
    runs it on weights replaced by their element numbers, to see where each element goes)."""
    from .translate.keras_reader import ReadOptions
    from .translate.keras_reader.reader import KerasReader
    from .translate.torch_writer import writer

    graph = KerasReader(kfile, ReadOptions(trust_code=options.trust_code)).read()
    rewrite_for_torch(graph, None, options)  # type: ignore[arg-type]
    return writer.render(graph, source="", version="").state


def keras_training_reference(src: Path, manifest: dict[str, Any]) -> Any:
    """The verifier's training reference for a Keras -> PyTorch output (verify/training.py): the
    trained Keras weights and optimizer variables converted as this output's were."""
    options = Options(keep_layout=manifest.get("layout", {}).get("mode") == "keep")
    return training_reference(lambda kfile: emitted_state(kfile, options))


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
        tolerance=options.tolerance, trust_code=options.trust_code, keras_model=read.state.get("source_model"),
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
    from .translate.torch_reader.training import trainable_count

    if tensorflow_first():
        raise ImportOrderError(
            "TensorFlow was imported before Triton in this process, and torch.export would crash (segfault); "
            "import triton (or torch.export a model once) before importing keras/tensorflow, or run `ktorch convert`"
        )
    prepare_torch()
    t0 = time.perf_counter()
    options.step("exporting the PyTorch model")

    def export(dynamic: tuple[str, ...]) -> tuple[Any, str, str]:
        return capture(
            src, example_inputs=options.example_inputs, input_shapes=options.input_shapes,
            input_dtypes=options.input_dtypes, weights=options.weights, seed=options.seed,
            trust_code=options.trust_code, dynamic=dynamic,
        )  # fmt: skip

    program, desc, name = export(options.dynamic)
    timings["export"] = time.perf_counter() - t0
    options.step("reading the ATen graph")
    try:
        graph = read_program(program, name=name)
    except KtorchError as exc:
        kept, _ = dynamic_sizes(program)
        if not options.dynamic or not kept:
            raise
        # the model takes these sizes at any value, but a translation needs them fixed: export
        # again with the example's sizes (the batch stays dynamic), and say why in ktorch.json
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        reason = f"the conversion needs a fixed size ({detail[:400]})"
        static = {**(getattr(program, "ktorch_capture", None) or {}).get("static", {}), **dict.fromkeys(kept, reason)}
        program, desc, name = export(())
        program.ktorch_capture = {**(getattr(program, "ktorch_capture", None) or {}), "static": static}
        graph = read_program(program, name=name)
    name_outputs(graph, program)
    regularizers = options.regularizers
    if regularizers is None and isinstance(src, (str, Path)) and Path(src).is_dir():
        # a round trip: the regularizers ktorch wrote as regularization_loss(), by parameter
        regularizers = read_manifest(Path(src)).get("training", {}).get("parameter_regularizers")
    if regularizers:
        from .translate.torch_reader.training import attach_regularizers

        attach_regularizers(graph, regularizers)
    if options.training is None:
        from .torch_training import cumulative_batch_norms

        for path in cumulative_batch_norms(src):  # the training setup refuses them (read_setup)
            warnings.warn(
                f"{path}: BatchNorm with momentum=None (a cumulative average) becomes a Keras BatchNormalization "
                "whose moving statistics stay fixed in training (momentum=1.0); inference is the same",
                stacklevel=2,
            )
        if not hasattr(src, "named_modules"):  # a saved program: momentum=None reads as momentum 0
            still = [n.source or n.name for n in graph.nodes if n.op == "batch_norm" and n.attrs["momentum"] == 0]
            if still:
                warnings.warn(
                    f"{', '.join(still[:5])}: BatchNorm with momentum 0 in the program (momentum=0, or momentum=None "
                    "exported in eval mode) becomes a Keras BatchNormalization whose moving statistics stay fixed "
                    "in training (momentum=1.0); if the module had momentum=None (a cumulative average), training "
                    "differs; inference is the same",
                    stacklevel=2,
                )
    else:  # optimizer=, lr_scheduler=, loss= (ktorch/torch_training.py)
        from .torch_training import attach_compile

        attach_compile(graph, src, program, options.training, lambda p: emitted_keras_weights(p, name, options))
    source: dict[str, Any] = {"file": desc, "format": "torch.export", "trainable_parameters": trainable_count(program)}
    capture_record = dict(getattr(program, "ktorch_capture", None) or {})
    kept, graph.meta["input_sizes"] = dynamic_sizes(program)  # which axis of which input is dynamic
    for info in kept.values():  # tables cut to a length at run time (position ids, masks) bound it
        table = graph.meta.get("size_tables", {}).get(info.pop("symbol", None))
        if table is not None and (info["max"] is None or info["max"] > table):
            info["max"] = table
    sizes = {"dynamic": kept, "static": capture_record.pop("static", None)}
    if capture_record:
        source["capture"] = capture_record  # what the capture switched off (use_cache), keyword inputs
    source.update({k: v for k, v in sizes.items() if v})  # sizes besides the batch: symbolic, or fixed and why
    if graph.meta.get("static_batch") is not None:  # the program itself runs only this batch size
        source["batch"] = graph.meta["static_batch"]
    if isinstance(src, (str, Path)) and Path(src).is_file():
        source["sha256"] = sha256(Path(src))
    return Read(graph, label=desc, desc=desc, source=source, state={"program": program})


def emitted_keras_weights(program: Any, name: str, options: Options) -> dict[str, Any]:
    """The Keras writer's weights (by layer) for a program (ktorch/torch_training.py runs it on
    parameters replaced by their element numbers, to see where each element goes)."""
    from .translate.keras_writer import writer
    from .translate.torch_reader import read_program

    graph = read_program(program, name=name)
    rewrite_for_keras(graph, None, options)  # type: ignore[arg-type]
    return writer.render(graph, source="", version="").weights


class TorchTrainingReference:
    """The verifier's training reference for a PyTorch -> Keras output (verify/training.py): the
    source's optimizer, scheduler and loss rebuilt from ktorch.json, and its current parameters (and
    BatchNorm statistics) as the emitted Keras weights ("layer/i"), gathered through the conversion's
    element-number trace, taken once."""

    def __init__(self, module: Any, manifest: dict[str, Any]) -> None:
        import torch

        from .torch_training import trace_keras_weights
        from .verify.runners import make_inputs

        self.module, self.manifest = module, manifest
        example = tuple(torch.from_numpy(a) for a in make_inputs(manifest["inputs"], batch=2))
        program, _, name = capture(module, example_inputs=example)
        options = Options(keep_layout=manifest.get("layout", {}).get("mode") == "keep")
        params = [n for n, _ in module.named_parameters()]
        self.mapping, _, self.shapes = trace_keras_weights(
            program, params, lambda p: emitted_keras_weights(p, name, options)
        )
        module.train()
        self.statistics: dict[str, tuple[str, str]] = {}  # Keras moving mean/variance <- torch buffers
        by_param = {pieces[0][0]: key for key, pieces in self.mapping.items() if len(pieces) == 1}
        for path, m in module.named_modules():
            key = by_param.get(f"{path}.weight")
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)) and key:
                layer = key.rpartition("/")[0]
                self.statistics[f"{layer}/2"] = (f"{path}.running_mean", f"{layer} moving_mean")
                self.statistics[f"{layer}/3"] = (f"{path}.running_var", f"{layer} moving_variance")

    def setup(self) -> tuple[Any, Any, Any]:
        from .training import source_training

        return source_training(self.manifest.get("training") or {}, self.module)

    def weights(self) -> dict[str, Any]:
        params = {n: p.detach().cpu().numpy().reshape(-1) for n, p in self.module.named_parameters()}
        return {**self.gather(params), **self.buffers()}

    def gradients(self) -> dict[str, Any]:
        """The parameters' current gradients, gathered as the Keras weights (zero where there is none)."""
        return self.gather(
            {
                n: (p.grad if p.grad is not None else p.new_zeros(p.shape)).detach().cpu().numpy().reshape(-1)
                for n, p in self.module.named_parameters()
            }
        )

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        """`optimizer`'s state as the emitted Keras optimizer's variables ("layer/i.slot"), mapped
        as the conversion migrates it (velocity scaled, elements traced)."""
        from .torch_training import migrate_state
        from .translate.torch_reader.optim import read_optimizer_state

        names = {id(p): n for n, p in self.module.named_parameters()}
        state, _ = read_optimizer_state(optimizer, names)
        spec = (self.manifest.get("training") or {}).get("source")
        if not state or not spec:
            return {}
        slots = migrate_state(spec, state, self.mapping, self.shapes)
        return {f"{key}.{slot}": value for key, entry in slots.items() for slot, value in entry.items()}

    def buffers(self) -> dict[str, Any]:
        buffers = {n: b.detach().cpu().numpy() for n, b in self.module.named_buffers()}
        return {key: buffers[name] for key, (name, _) in self.statistics.items() if name in buffers}

    def gather(self, params: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, pieces in self.mapping.items():  # keras.flat[positions] == param.flat[elements]
            flat = np.empty(int(np.prod(self.shapes[key])), dtype=np.float32)
            for param, positions, elements in pieces:
                flat[positions] = params[param][elements]
            out[key] = flat.reshape(self.shapes[key])
        return out

    def labels(self) -> dict[str, str]:
        labels = {key: f"{' + '.join(p for p, _, _ in pieces)} -> {key}" for key, pieces in self.mapping.items()}
        labels.update({key: f"{name} -> {what}" for key, (name, what) in self.statistics.items()})
        return labels


def rewrite_for_keras(graph: Graph, read: Read, options: Options) -> int:
    remove_noops(graph)
    fold_padding(graph, pools=False)
    eliminate_dead(graph)
    assign_layout(graph, "channels_last", keep_io=options.keep_layout)
    fold_constant_transposes(graph)
    fold_transposes_into_einsum(graph)  # attention: no permutes around q, k, v and the result
    fuse_functional_activations(graph)
    return count_transposes(graph)


def check_torch_source(read: Read, staging: Path, manifest: dict[str, Any], options: Options) -> Any:
    from .verify.torch_source import check_torch_sizes, check_torch_to_keras, load_emitted_keras

    read.state["keras_model"] = keras_model = load_emitted_keras(staging)
    # the export example's axis-0 size (a fixed-batch program runs only that one)
    meta = read.graph.meta
    batch = meta.get("static_batch") or meta.get("example_batch") or 2
    if options.inputs is None and meta.get("static_batch") is None:  # also at other sizes where dynamic
        return check_torch_sizes(
            read.state["program"], staging, manifest=manifest, seed=options.seed, batch=batch,
            tolerance=options.tolerance, keras_model=keras_model,
        )  # fmt: skip
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
