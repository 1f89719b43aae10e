"""ONNX Runtime as a runner and as a referee.

* As a runner: an ONNX source is run on ONNX Runtime, the reference its translation is
  compared with (`check_onnx_parity`).
* As a referee (`ktorch verify SRC OUT --referee onnxruntime`): the source is exported to
  ONNX with its own framework's exporter (tf2onnx for Keras, torch.onnx.export for
  PyTorch) and run on ONNX Runtime next to the source and the emitted model, on the same
  inputs. When source and emitted model disagree, the verdict says which side ONNX
  Runtime agrees with: a third, independent implementation of the same model.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..translate.output import read_manifest
from .compare import DEFAULT_RTOL, Comparison, compare
from .parity import ParityResult, check_outputs
from .runners import RunError, keras_backend, make_inputs, to_emitted, to_source


def ort_session(model: Any) -> Any:
    """An ONNX Runtime CPU session for a path, bytes or ModelProto (all optimisations
    off, so that the session computes what the graph says)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RunError(f"onnxruntime is not installed ({exc}); pip install 'ktorch[onnx]'") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise RunError(f"ONNX Runtime cannot load the model ({type(exc).__name__}: {exc})") from None


def run_onnx(model: Any, inputs: Sequence[np.ndarray], session: Any = None) -> list[np.ndarray]:
    """Outputs of an ONNX model on ONNX Runtime, inputs in the graph's order."""
    session = session or ort_session(model)
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(inputs):
        raise RunError(f"the ONNX model has {len(names)} inputs, {len(inputs)} were given")
    feed = {n: np.ascontiguousarray(a) for n, a in zip(names, inputs)}
    return [np.asarray(o) for o in session.run(None, feed)]


def _ort_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


def check_onnx_parity(
    source: str | Path,
    converted: str | Path,
    *,
    inputs: Sequence[np.ndarray] | None = None,
    seed: int = 0,
    batch: int = 2,
    tolerance: float = DEFAULT_RTOL,
    manifest: dict[str, Any] | None = None,
    emitted_model: Any = None,
) -> ParityResult:
    """Run an ONNX source on ONNX Runtime and the emitted model (PyTorch or Keras, as
    the manifest says) on the same inputs, and compare every output in the source's
    layout."""
    converted = Path(converted)
    manifest = manifest or read_manifest(converted)
    return check_outputs(
        lambda arrays: run_onnx(Path(source), arrays),
        lambda arrays: run_emitted(converted, manifest, arrays, model=emitted_model),
        manifest, inputs=inputs, seed=seed, batch=batch, tolerance=tolerance, device="cpu", backend=_ort_version,
        settings={"source": "onnx"}, source_name="ONNX Runtime",
    )  # fmt: skip


def run_emitted(
    directory: Path, manifest: dict[str, Any], inputs: Sequence[np.ndarray], *, model: Any = None
) -> list[np.ndarray]:
    """Outputs of an emitted directory (PyTorch or Keras), inputs in its own layout."""
    from .runners import import_emitted, run_keras, run_torch

    if manifest["direction"].endswith("->keras"):
        if model is None:
            from .torch_source import load_emitted_keras

            model = load_emitted_keras(directory)
        return run_keras(model, list(inputs))
    if model is None:
        model = import_emitted(directory).load(Path(directory) / "model.safetensors")
    return run_torch(model, list(inputs))


class OnnxSource:
    """An ONNX source for `ktorch verify`: run on ONNX Runtime (CPU). Its intermediates
    are not captured: ONNX tensors rarely line up one to one with the emitted locals."""

    def __init__(self, path: str | Path, *, device: str = "cpu", trust_code: bool = False) -> None:
        self.path = Path(path)
        self.backend = _ort_version()
        self.session = ort_session(self.path)

    def run(self, inputs: Sequence[np.ndarray], names: Sequence[str]) -> Any:
        from .sides import Capture

        skipped = {name: "intermediates of an ONNX source are not captured" for name in names}
        return Capture(run_onnx(self.path, inputs, self.session), {}, skipped)


# -- the referee ------------------------------------------------------------------------------
@dataclass
class RefereeOutput:
    """One output, three ways: source vs emitted, and ONNX Runtime vs each of them."""

    name: str
    emitted: Comparison  # the emitted model against the source
    ort_vs_source: Comparison
    ort_vs_emitted: Comparison

    @property
    def verdict(self) -> str:
        """'agree' (source and emitted agree), 'source' / 'emitted' (ONNX Runtime sides
        with that one), 'neither' or 'both' (ONNX Runtime cannot tell)."""
        if self.emitted.passed:
            return "agree"
        with_source, with_emitted = self.ort_vs_source.passed, self.ort_vs_emitted.passed
        if with_source and not with_emitted:
            return "source"
        if with_emitted and not with_source:
            return "emitted"
        return "both" if with_source else "neither"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "emitted_vs_source": self.emitted.to_dict(),
            "onnxruntime_vs_source": self.ort_vs_source.to_dict(),
            "onnxruntime_vs_emitted": self.ort_vs_emitted.to_dict(),
        }


@dataclass
class RefereeReport:
    outputs: list[RefereeOutput]
    exporter: str
    onnx_file: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        verdicts = {o.verdict for o in self.outputs}
        for v in ("neither", "emitted", "source", "both"):
            if v in verdicts:
                return v
        return "agree"

    def summary(self) -> str:
        worst = max(self.outputs, key=lambda o: o.emitted.max_rel)
        text = {
            "agree": "source and emitted model agree; ONNX Runtime was not needed as a tie-breaker",
            "source": "ONNX Runtime agrees with the SOURCE: the translation is wrong",
            "emitted": "ONNX Runtime agrees with the EMITTED model: the source run (or its framework) is the odd one out",
            "both": "ONNX Runtime is within tolerance of both sides: the difference is at the tolerance's edge",
            "neither": "ONNX Runtime agrees with neither side: the export itself may be wrong",
        }[self.verdict]
        return (
            f"referee ({self.exporter} -> ONNX Runtime): {text} "
            f"(output {worst.name!r}: emitted vs source {worst.emitted.max_rel:.3g}, "
            f"ORT vs source {worst.ort_vs_source.max_rel:.3g}, ORT vs emitted {worst.ort_vs_emitted.max_rel:.3g})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "exporter": self.exporter,
            "verdict": self.verdict,
            "summary": self.summary(),
            "outputs": [o.to_dict() for o in self.outputs],
            "notes": self.notes,
        }


def _run_source(src: Path, manifest: dict[str, Any], arrays: list[np.ndarray], trust_code: bool) -> list[np.ndarray]:
    direction = manifest.get("direction", "keras->torch")
    if direction.startswith("keras"):
        from .runners import load_keras_model, run_keras

        return run_keras(load_keras_model(src, trust_code=trust_code), arrays)
    if direction.startswith("onnx"):
        return run_onnx(src, arrays)
    from .torch_source import run_torch_source

    if src.is_dir():
        from .runners import import_emitted

        return run_torch_source(import_emitted(src).load(), arrays)
    import torch

    return run_torch_source(torch.export.load(str(src)), arrays)


def referee(
    src: str | Path,
    converted: str | Path,
    *,
    inputs: Sequence[np.ndarray] | None = None,
    seed: int = 0,
    batch: int = 2,
    tolerance: float = DEFAULT_RTOL,
    trust_code: bool = False,
    onnx_file: str | Path | None = None,
    exporter: Callable[..., Any] | None = None,
) -> RefereeReport:
    """Export `src` to ONNX with its own framework's exporter (or use `onnx_file`), run
    source, emitted model and ONNX Runtime on the same seeded inputs, and say which side
    ONNX Runtime agrees with. `exporter(src, dst, verify=False, trust_code=...)` is the
    pipeline's ONNX export (`ktorch.onnx_io.export`), passed in: verify/ sits below it."""
    src, converted = Path(src), Path(converted)
    manifest = read_manifest(converted)
    specs = manifest["inputs"]
    arrays = list(inputs) if inputs is not None else make_inputs(specs, seed=seed, batch=batch)
    with tempfile.TemporaryDirectory(prefix="ktorch-referee-") as tmp:
        if onnx_file is None:
            if manifest.get("direction", "").startswith("onnx"):
                onnx_path, exporter = src, "the ONNX source itself"
            else:
                if exporter is None:
                    raise RunError(f"{src}: the referee needs an ONNX file (onnx_file=) or an exporter (exporter=)")
                onnx_path = Path(tmp) / "source.onnx"
                exported = exporter(src, onnx_path, verify=False, trust_code=trust_code)
                exporter = exported.exporter
        else:
            onnx_path, exporter = Path(onnx_file), "given ONNX file"
        ort_out = run_onnx(onnx_path, arrays)
    source_out = _run_source(src, manifest, arrays, trust_code)
    emitted_raw = run_emitted(converted, manifest, [to_emitted(a, s.get("perm")) for a, s in zip(arrays, specs)])
    outs = manifest["outputs"]
    if not (len(source_out) == len(emitted_raw) == len(ort_out) == len(outs)):
        raise RunError(
            f"output counts differ: source {len(source_out)}, emitted {len(emitted_raw)}, ONNX Runtime {len(ort_out)}, manifest {len(outs)}"
        )
    results = []
    for spec, ref, raw, ort in zip(outs, source_out, emitted_raw, ort_out):
        got = to_source(raw, spec.get("perm"))
        name = spec["name"]
        results.append(
            RefereeOutput(
                name,
                compare(name, ref, got, tolerance, worst=3),
                compare(name, ref, ort, tolerance),
                compare(name, got, ort, tolerance),
            )
        )
    notes = [f"Keras ran on {keras_backend()}"] if manifest.get("direction", "").startswith("keras") else []
    return RefereeReport(results, exporter, None if onnx_file is None else str(onnx_file), notes)


def referee_for_cli(args: Any, console: Any, exporter: Callable[..., Any] | None = None) -> dict[str, Any]:
    """`ktorch verify --referee onnxruntime`: run the referee on the first batch size and
    print its verdict; returns the JSON form (an "error" entry when it could not run)."""
    from ..graph.errors import KtorchError

    try:
        report = referee(
            args.src,
            args.converted,
            seed=args.seed,
            batch=args.batch[0],
            tolerance=args.tolerance or DEFAULT_RTOL,
            trust_code=args.trust_code,
            exporter=exporter,
        )
    except (KtorchError, ImportError, OSError) as exc:
        console.print(f"[yellow]referee (ONNX Runtime) could not run[/]: {exc}")
        return {"error": str(exc)}
    colour = {"agree": "green", "source": "red", "emitted": "yellow", "both": "yellow", "neither": "red"}[
        report.verdict
    ]
    console.print(f"[{colour}]{report.summary()}[/]")
    return report.to_dict()
