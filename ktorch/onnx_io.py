"""ONNX in and out.

* `convert_onnx`: an ONNX model (opsets 13-21) -> readable PyTorch or Keras code with
  the weights, verified against ONNX Runtime. The reader keeps ONNX's channels-first
  semantics; the layout pass then gives the emitted model its own framework's layout.
  An input that the exporter transposes straight away (tf2onnx's NHWC -> NCHW) is taken
  in the order the model uses it, so that the transpose disappears; `ktorch.json`
  records the permutation from the ONNX input (`emitted = source.transpose(perm)`).
* `export`: a Keras file or a PyTorch model -> model.onnx through the source
  framework's own exporter (tf2onnx, torch.onnx.export), verified on ONNX Runtime
  against the source.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .graph import validate
from .graph.errors import ModelFileError, ParityError
from .graph.passes import (
    absorb_input_transposes,
    assign_layout,
    count_transposes,
    eliminate_dead,
    fuse_activations,
    remove_noops,
)
from .graph.queries import is_spatial, layout_name
from .translate.output import raise_on_mismatch, read_manifest, write_verified
from .version import __version__

ONNX_SUFFIX = ".onnx"
EXPORT_OPSET = 17


def is_onnx_source(src: Any) -> bool:
    """An .onnx path or an in-memory ModelProto."""
    if hasattr(src, "graph") and hasattr(src, "opset_import"):
        return True
    return isinstance(src, (str, Path)) and Path(src).suffix.lower() == ONNX_SUFFIX


def _compose(first: Sequence[int] | None, then: Sequence[int] | None) -> tuple[int, ...] | None:
    """The perm of source.transpose(first).transpose(then); None for the identity."""
    if first is None and then is None:
        return None
    rank = len(first if first is not None else then)  # type: ignore[arg-type]
    a = tuple(first) if first is not None else tuple(range(rank))
    b = tuple(then) if then is not None else tuple(range(rank))
    out = tuple(a[i] for i in b)
    return None if out == tuple(range(rank)) else out


def convert_onnx(
    src: Any,
    out: str | Path | None = None,
    *,
    to: str = "torch",
    layout: str = "native",
    verify: bool = True,
    force: bool = False,
    tolerance: float = 1e-4,
    inputs: list | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Any:
    """Convert an ONNX model into a PyTorch (`to="torch"`) or Keras (`to="keras"`) output
    directory, verified against ONNX Runtime. `layout="keep"` keeps the ONNX inputs'
    axis order. Raises ParityError (after writing the output) above `tolerance`."""
    from .api import ConversionResult
    from .translate.keras_reader.file import sha256
    from .translate.onnx_reader import read_onnx

    if to not in ("torch", "keras"):
        raise ValueError(f"to must be 'torch' or 'keras', not {to!r}")
    keep = layout == "keep"
    step = progress or (lambda message: None)
    path = Path(src) if isinstance(src, (str, Path)) else None
    if path is not None and not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    if out is None:
        out = path.with_name(f"{path.stem}_{to}") if path is not None else Path(f"model_{to}")
    out = Path(out)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    step(f"reading {path.name if path else 'the ONNX model'}")
    graph = read_onnx(src)
    source_io = {id(v): (tuple(v.shape), v.dtype) for v in [*graph.inputs, *graph.outputs]}
    spatial = {id(v) for v in [*graph.inputs, *graph.outputs] if is_spatial(v)}
    timings["read"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    step("rewriting the graph")
    taken = {} if keep else absorb_input_transposes(graph)
    remove_noops(graph)
    if to == "torch":
        fuse_activations(graph)
    eliminate_dead(graph)
    assign_layout(graph, "channels_first" if to == "torch" else "channels_last", keep_io=keep)
    if to == "keras":
        from .torch_to_keras import fold_constant_transposes

        fold_constant_transposes(graph)
    validate(graph)
    timings["passes"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    step(f"writing {'PyTorch' if to == 'torch' else 'Keras'} code")
    desc = path.name if path is not None else "an ONNX model"
    if to == "torch":
        from .translate.torch_writer import writer
    else:
        from .translate.keras_writer import writer  # type: ignore[no-redef]
    rendered = writer.render(graph, source=desc, version=__version__)
    timings["render"] = time.perf_counter() - t2

    def io(values: list[Any]) -> list[dict[str, Any]]:
        specs = []
        for v in values:
            shape, dtype = source_io.get(id(v), (tuple(v.shape), v.dtype))
            perm = _compose(taken.get(id(v)), v.perm)
            spec: dict[str, Any] = {"name": v.source or v.name, "emitted_name": rendered.value_names.get(v.name, v.name), "shape": list(shape), "dtype": dtype}
            if perm is not None:
                spec["perm"] = list(perm)
            native = layout_name(len(shape), channels_first=(to == "torch"))
            if native is not None and id(v) in spatial:
                spec["layout"] = native if not keep else ("source order")
            specs.append(spec)
        return specs

    if to == "torch":
        parameters = int(sum(a.size for a in rendered.state.values()))
        model_info: dict[str, Any] = {"name": graph.name, "class_name": rendered.class_name, "nodes": len(graph.nodes), "parameters": parameters}
    else:
        parameters = int(sum(a.size for arrays in rendered.weights.values() for a in arrays))
        model_info = {"name": graph.name, "nodes": len(graph.nodes), "layers": rendered.layer_count, "parameters": parameters}
    source_info: dict[str, Any] = {"file": desc, "format": "onnx", "opset": graph.meta.get("opset"), "producer": graph.meta.get("producer")}
    if path is not None:
        source_info["sha256"] = sha256(path)
    manifest: dict[str, Any] = {
        "ktorch_version": __version__,
        "direction": f"onnx->{to}",
        "source": source_info,
        "model": model_info,
        "layout": {"mode": "keep" if keep else to, "transposes": count_transposes(graph)},
        "inputs": io(graph.inputs),
        "outputs": io(graph.outputs),
        "parity": None,
    }

    def check(staging: Path):
        step("verifying parity against ONNX Runtime")
        from .verify.onnx_referee import check_onnx_parity

        onnx_path = path
        if onnx_path is None:
            onnx_path = staging / ".source.onnx"
            onnx_path.write_bytes(src.SerializeToString())
        try:
            batch = graph.meta.get("static_batch") or 2  # a model exported with a fixed batch runs only that batch
            return check_onnx_parity(onnx_path, staging, manifest=manifest, inputs=inputs, seed=seed, batch=batch, tolerance=tolerance)
        finally:
            if path is None:
                onnx_path.unlink()

    parity = write_verified(
        out, force=force, manifest=manifest, write=lambda d: writer.write(rendered, d), verify=check if verify else None, timings=timings
    )
    timings["total"] = time.perf_counter() - t0
    result = ConversionResult(out, graph, manifest, parity, timings)
    raise_on_mismatch(parity, what=f"{desc}: the emitted model differs from ONNX Runtime's run of the source", tolerance=tolerance, out=out)
    return result


# -- export -----------------------------------------------------------------------------------
@dataclass
class ExportResult:
    path: Path
    exporter: str  # "tf2onnx 1.17.0" / "torch.onnx.export (torch 2.x)"
    opset: int
    parity: Any = None  # verify.parity.ParityResult: ONNX Runtime against the source
    timings: dict[str, float] = field(default_factory=dict)


def _keras_signature(model: Any) -> tuple:
    import tensorflow as tf

    specs = []
    for i, t in enumerate(model.inputs):
        shape = (None, *tuple(t.shape)[1:])
        name = getattr(t, "name", None) or f"input_{i}"
        specs.append(tf.TensorSpec(shape, getattr(tf, str(t.dtype).replace("tf.", "")), name=name.split(":")[0]))
    return tuple(specs)


def _export_keras(src: Path, dst: Path, opset: int, trust_code: bool) -> tuple[Any, str]:
    from .verify.runners import load_keras_model, preload_before_tensorflow

    preload_before_tensorflow()
    model = load_keras_model(src, trust_code=trust_code)
    try:
        import tf2onnx
    except ImportError as exc:
        raise ModelFileError(f"{src}: exporting Keras to ONNX needs tf2onnx ({exc}); pip install 'ktorch[onnx]'") from None
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=_keras_signature(model), opset=opset)
    dst.write_bytes(proto.SerializeToString())
    return model, f"tf2onnx {tf2onnx.__version__}"


def _torch_module(src: Any, input_shapes: Sequence[Sequence[int]] | None) -> tuple[Any, list[list[int]], list[str], list[str]]:
    """(nn.Module, input shapes with a batch of 2, input names, output names)."""
    from .torch_to_keras import is_factory_string

    if isinstance(src, (str, Path)) and Path(src).is_dir() and not is_factory_string(src):
        from .verify.runners import import_emitted

        manifest = read_manifest(Path(src))
        module = import_emitted(src).load()
        shapes = [[2] + [8 if d is None else int(d) for d in spec["shape"][1:]] for spec in manifest["inputs"]]
        shapes = [[s[p] for p in spec["perm"]] if spec.get("perm") else s for s, spec in zip(shapes, manifest["inputs"])]
        return module, shapes, [s["emitted_name"] for s in manifest["inputs"]], [s["emitted_name"] for s in manifest["outputs"]]
    from .torch_to_keras import capture

    program, _, _ = capture(src, input_shapes=input_shapes)
    shapes = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in {s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"}:
            val = node.meta["val"]
            shapes.append([2] + [int(d) for d in val.shape[1:]])
    return _eval_only(program.module()), shapes, [f"input_{i}" if i else "input" for i in range(len(shapes))], []


def _eval_only(module: Any) -> Any:
    """An exported program's module, wrapped for the TorchScript-based exporter, which
    switches the model to eval mode: an exported program already is, and refuses train()."""
    import torch

    class ExportedModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.program = module

        def train(self, mode: bool = True) -> ExportedModule:
            return self

        def forward(self, *args: Any) -> Any:
            return self.program(*args)

    return ExportedModule()


def _export_torch(src: Any, dst: Path, opset: int, input_shapes: Sequence[Sequence[int]] | None) -> tuple[Any, list[np.ndarray], str]:
    import torch

    module, shapes, in_names, out_names = _torch_module(src, input_shapes)
    gen = torch.Generator().manual_seed(0)
    examples = tuple(torch.randn(*s, generator=gen) for s in shapes)
    with torch.no_grad():
        probe = module(*examples)
    n_out = len(probe) if isinstance(probe, (list, tuple)) else 1
    out_names = out_names if len(out_names) == n_out else ["output" if i == 0 else f"output_{i}" for i in range(n_out)]
    axes = {name: {0: "batch"} for name in [*in_names, *out_names]}
    torch.onnx.export(module, examples, str(dst), input_names=in_names, output_names=out_names, dynamic_axes=axes, opset_version=opset, dynamo=False)
    return module, [e.numpy() for e in examples], f"torch.onnx.export (torch {torch.__version__})"


def export(
    src: Any,
    dst: str | Path,
    *,
    opset: int = EXPORT_OPSET,
    input_shapes: Sequence[Sequence[int]] | None = None,
    verify: bool = True,
    tolerance: float = 1e-4,
    seed: int = 0,
    trust_code: bool = False,
) -> ExportResult:
    """Export a Keras file (with tf2onnx) or a PyTorch model (.pt2, factory string,
    nn.Module or a ktorch PyTorch directory, with torch.onnx.export) to `dst`, then run
    the source and ONNX Runtime on the same seeded inputs and compare (unless verify=False).
    Raises ParityError when the exported model differs from the source."""
    from .api import KERAS_SUFFIXES
    from .torch_to_keras import is_torch_source
    from .verify.compare import compare
    from .verify.onnx_referee import run_onnx
    from .verify.parity import ParityResult

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    if isinstance(src, (str, Path)) and Path(src).suffix.lower() in KERAS_SUFFIXES:
        model, exporter = _export_keras(Path(src), dst, opset, trust_code)
        from .verify.runners import keras_backend, run_keras

        arrays = [rng.standard_normal((2, *tuple(t.shape)[1:])).astype("float32") for t in model.inputs]

        def run_source() -> list[np.ndarray]:
            return run_keras(model, arrays)

        backend = f"keras on {keras_backend()}"
    elif is_torch_source(src):
        module, examples, exporter = _export_torch(src, dst, opset, input_shapes)
        arrays = [rng.standard_normal(e.shape).astype("float32") for e in examples]
        from .verify.torch_source import run_torch_source

        def run_source() -> list[np.ndarray]:
            return run_torch_source(module, arrays)

        backend = "pytorch"
    else:
        raise ModelFileError(f"{src}: cannot export this to ONNX: expected a Keras .h5/.keras file or a PyTorch source (.pt2, package.module:factory, a ktorch PyTorch directory)")
    timings = {"export": time.perf_counter() - t0}
    result = ExportResult(dst, exporter, opset, timings=timings)
    if not verify:
        return result
    t1 = time.perf_counter()
    expected = run_source()
    got = run_onnx(dst, arrays)
    if len(got) != len(expected):
        raise ParityError(f"{dst}: the ONNX model returns {len(got)} outputs, the source {len(expected)}")
    comparisons = [compare(f"output_{i}", ref, g, tolerance) for i, (ref, g) in enumerate(zip(expected, got))]
    result.parity = ParityResult(comparisons, "cpu", backend, seed, 2, {"onnx": "onnxruntime"})
    timings["verify"] = time.perf_counter() - t1
    if not result.parity.passed:
        worst = max(comparisons, key=lambda c: c.max_rel)
        raise ParityError(f"{dst}: the exported ONNX model differs from the source: {worst.name} has relative error {worst.max_rel:.3g} > {tolerance:g}")
    return result
