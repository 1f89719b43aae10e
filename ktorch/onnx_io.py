"""ONNX out: a Keras file or a PyTorch model -> model.onnx through the source framework's own
exporter (tf2onnx, torch.onnx.export), verified on ONNX Runtime against the source.
(ONNX in is a conversion direction: ktorch/directions.py.)
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .graph.errors import ModelFileError, ParityError
from .sources import KERAS_SUFFIXES, is_factory_string, is_torch_source, source_paths
from .translate.output import check_output_file, read_manifest, staged_file
from .verify.compare import DEFAULT_RTOL

EXPORT_OPSET = 17


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
        raise ModelFileError(
            f"{src}: exporting Keras to ONNX needs tf2onnx ({exc}); pip install 'ktorch[onnx]'"
        ) from None
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=_keras_signature(model), opset=opset)
    dst.write_bytes(proto.SerializeToString())
    return model, f"tf2onnx {tf2onnx.__version__}"


def _torch_module(
    src: Any, input_shapes: Sequence[Sequence[int]] | None
) -> tuple[Any, list[list[int]], list[str], list[str]]:
    """(nn.Module, input shapes with a batch of 2, input names, output names)."""
    if isinstance(src, (str, Path)) and Path(src).is_dir() and not is_factory_string(src):
        from .verify.runners import import_emitted

        manifest = read_manifest(Path(src))
        module = import_emitted(src).load()
        shapes = [[2] + [8 if d is None else int(d) for d in spec["shape"][1:]] for spec in manifest["inputs"]]
        shapes = [
            [s[p] for p in spec["perm"]] if spec.get("perm") else s for s, spec in zip(shapes, manifest["inputs"])
        ]
        return (
            module,
            shapes,
            [s["emitted_name"] for s in manifest["inputs"]],
            [s["emitted_name"] for s in manifest["outputs"]],
        )
    from .capture import capture

    program, _, _ = capture(src, input_shapes=input_shapes)
    shapes = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in {
            s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"
        }:
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


def _export_torch(
    src: Any, dst: Path, opset: int, input_shapes: Sequence[Sequence[int]] | None
) -> tuple[Any, list[np.ndarray], str]:
    import torch

    module, shapes, in_names, out_names = _torch_module(src, input_shapes)
    gen = torch.Generator().manual_seed(0)
    examples = tuple(torch.randn(*s, generator=gen) for s in shapes)
    with torch.no_grad():
        probe = module(*examples)
    n_out = len(probe) if isinstance(probe, (list, tuple)) else 1
    out_names = out_names if len(out_names) == n_out else ["output" if i == 0 else f"output_{i}" for i in range(n_out)]
    axes = {name: {0: "batch"} for name in [*in_names, *out_names]}
    with warnings.catch_warnings():
        # strided slices are left to ONNX Runtime rather than folded: a note on speed, not on correctness
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        torch.onnx.export(
            module,
            examples,
            str(dst),
            input_names=in_names,
            output_names=out_names,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return module, [e.numpy() for e in examples], f"torch.onnx.export (torch {torch.__version__})"


def export(
    src: Any,
    dst: str | Path,
    *,
    opset: int = EXPORT_OPSET,
    input_shapes: Sequence[Sequence[int]] | None = None,
    verify: bool = True,
    tolerance: float = DEFAULT_RTOL,
    seed: int = 0,
    trust_code: bool = False,
    force: bool = False,
) -> ExportResult:
    """Export a Keras file (with tf2onnx) or a PyTorch model (.pt2, factory string,
    nn.Module or a ktorch PyTorch directory, with torch.onnx.export) to `dst`, then run
    the source and ONNX Runtime on the same seeded inputs and compare (unless verify=False).
    An existing `dst` is replaced only with `force` (never a link, a directory or the source); the
    file appears only once complete. Raises ParityError when the exported model differs from the
    source (the file is kept for inspection)."""
    dst = Path(dst)
    check_output_file(dst, force=force, sources=source_paths(src))
    with staged_file(dst) as staging:
        result, comparisons = _export_and_check(src, staging, opset, input_shapes, verify, tolerance, seed, trust_code)
    result.path = dst
    if result.parity is not None and not result.parity.passed:
        worst = max(comparisons, key=lambda c: c.max_rel)
        raise ParityError(
            f"{dst}: the exported ONNX model differs from the source: {worst.name} has relative error "
            f"{worst.max_rel:.3g} > {tolerance:g}"
        )
    return result


def _export_and_check(
    src: Any, dst: Path, opset: int, input_shapes: Sequence[Sequence[int]] | None, verify: bool, tolerance: float,
    seed: int, trust_code: bool,
) -> tuple[ExportResult, list[Any]]:  # fmt: skip
    from .verify.compare import compare
    from .verify.onnx_referee import run_onnx
    from .verify.parity import ParityResult

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
        raise ModelFileError(
            f"{src}: cannot export this to ONNX: expected a Keras .h5/.keras file or a PyTorch source (.pt2, package.module:factory, a ktorch PyTorch directory)"
        )
    timings = {"export": time.perf_counter() - t0}
    result = ExportResult(dst, exporter, opset, timings=timings)
    if not verify:
        return result, []
    t1 = time.perf_counter()
    expected = run_source()
    got = run_onnx(dst, arrays)
    if len(got) != len(expected):
        raise ParityError(f"{dst}: the ONNX model returns {len(got)} outputs, the source {len(expected)}")
    comparisons = [compare(f"output_{i}", ref, g, tolerance) for i, (ref, g) in enumerate(zip(expected, got))]
    result.parity = ParityResult(comparisons, "cpu", backend, seed, 2, {"onnx": "onnxruntime"})
    timings["verify"] = time.perf_counter() - t1
    return result, comparisons
