"""`ktorch verify`: run a source model and its translation on the same inputs and compare
the outputs and every aligned intermediate, on each requested device and batch size.

Alignment comes from the manifest written at conversion time: `values` maps each source
layer's name to the emitted local that holds its output and the layout `perm` between
them (`emitted = source.transpose(perm)`). Two modes:

* propagated: each side runs on its own; errors accumulate along the network.
* isolated: each emitted statement is run with its inputs replaced by the source's own
  intermediates, so each layer's error is its own; the first layer over tolerance is
  where the translation is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..graph.errors import KtorchError, ModelFileError, ParityError
from ..translate.keras_reader.file import sha256
from ..translate.output import MANIFEST, read_manifest
from .compare import compare
from .profiles import Profile, cuda_available, precision_settings, select_profile
from .report import EXIT_CANNOT_RUN, EXIT_MISMATCH, EXIT_STRUCTURE, LayerResult, RunResult, VerifyReport
from .runners import RunError, example_sizes, make_inputs, to_emitted, to_source
from .sides import Capture, EmittedSide, KerasEmitted, KerasSource, SourceSide, TorchEmitted, TorchSource
from .training import KERAS_TO_TORCH as KERAS_TO_TORCH_TRAINING
from .training import TORCH_TO_KERAS as TORCH_TO_KERAS_TRAINING
from .training import TrainingResult, TrainingSides, TrainingStructureError, check_training_setup, run_training

MODES = ("both", "isolated", "propagated", "outputs")
WORST = 5  # worst elements recorded per failing comparison


class StructuralError(ParityError):
    """The emitted model's outputs do not line up with the source's (count, shape, dtype)."""

    exit_code = EXIT_STRUCTURE


class SourceMismatchError(KtorchError):
    """The source given to verify is not the file the directory was converted from (its sha256 differs)."""

    exit_code = EXIT_STRUCTURE


def resolve_devices(device: str | Sequence[str]) -> tuple[list[str], list[str]]:
    """'cpu' | 'cuda' | 'all' (or a list) -> (devices to run, notes). Asking for cuda
    without one is an error; 'all' runs what there is."""
    names = [device] if isinstance(device, str) else list(device)
    devices, notes = [], []
    for name in names:
        if name == "all":
            devices.append("cpu")
            if cuda_available():
                devices.append("cuda")
            else:
                notes.append("--device all: no CUDA device here (torch.cuda.is_available() is False); ran on CPU only")
        elif name in ("cpu", "cuda"):
            if name == "cuda" and not cuda_available():
                raise RunError(
                    "--device cuda: no CUDA device is available (torch.cuda.is_available() is False); use --device cpu or all"
                )
            devices.append(name)
        else:
            raise RunError(f"unknown device {name!r}: use cpu, cuda or all")
    return list(dict.fromkeys(devices)), notes


def load_inputs(
    data: str | Path | Mapping[str, np.ndarray] | Sequence[np.ndarray], specs: list[dict[str, Any]]
) -> list[np.ndarray]:
    """Real inputs, in the source's layout: an .npz file or a dict keyed by input name (or
    arr_0, arr_1, ... in input order), or a list in input order."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise ModelFileError(
                f"{path}: cannot read the inputs ({exc}); expected an .npz file with one array per model input"
            ) from None
    if isinstance(data, Mapping):
        arrays = []
        for i, spec in enumerate(specs):
            for key in (spec["name"], spec.get("emitted_name"), f"arr_{i}"):
                if key in data:
                    arrays.append(np.asarray(data[key]))
                    break
            else:
                raise ModelFileError(
                    f"the inputs have no array for model input {spec['name']!r} (keys: {sorted(data)}); name them after the inputs"
                )
        return arrays
    arrays = [np.asarray(a) for a in data]
    if len(arrays) != len(specs):
        raise ModelFileError(f"the model has {len(specs)} inputs, {len(arrays)} arrays were given")
    return arrays


def verify_conversion(
    src: str | Path,
    converted: str | Path,
    *,
    device: str | Sequence[str] = "cpu",
    batches: Sequence[int] = (2,),
    inputs: str | Path | Mapping[str, np.ndarray] | Sequence[np.ndarray] | None = None,
    seed: int = 0,
    tolerance: float | None = None,
    output_tolerances: Mapping[str, float] | None = None,
    tf32: bool = False,
    mode: str = "both",
    trust_code: bool = False,
    allow_different_source: bool = False,
    train_steps: int = 0,
    train_batch: int = 4,
) -> VerifyReport:
    """Verify a converted directory against its source; never raises for a failed or
    impossible verification: the report's `exit_code` and `error` say what happened.

    `train_steps` > 0 also checks training parity (verify/training.py): that many training steps
    on both sides with the same seeded batches of `train_batch` samples, dropout and noise at rate
    0 on both, comparing the loss, every weight and the optimizer state after each step, with the
    profile's tolerance growing by `train_growth` per step (`tolerance` replaces its base).

    `tolerance` overrides the device/dtype profile's relative tolerance (verify.profiles)
    for every tensor; `output_tolerances` overrides it per output name. A source file whose
    sha256 differs from the one recorded in ktorch.json is a structural mismatch (exit 2)
    unless `allow_different_source` (then it is a warning).
    """
    from ..version import __version__

    src, converted = Path(src), Path(converted)
    report = VerifyReport(str(src), str(converted), "?", __version__)
    report.tolerance = {"rtol": tolerance, "outputs": dict(output_tolerances or {})}
    try:
        if mode not in MODES:
            raise RunError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        if not (src.is_file() or (src / "model.py").is_file()):  # a file, or a directory ktorch wrote (round trip)
            raise ModelFileError(f"{src}: no such source model file")
        if not (converted / MANIFEST).is_file():
            raise ModelFileError(
                f"{converted}: not a ktorch output directory (no {MANIFEST}); convert first with `ktorch convert`"
            )
        try:
            manifest = read_manifest(converted)
        except ValueError as exc:
            raise ModelFileError(f"{converted / MANIFEST}: not valid JSON ({exc})") from None
        report.direction = manifest.get("direction", "keras->torch")
        expected_sha = manifest.get("source", {}).get("sha256")
        if expected_sha and sha256(src) != expected_sha:
            what = (
                f"{src} is not the file that was converted to {converted} (sha256 differs from {converted / MANIFEST})"
            )
            if not allow_different_source:
                how = "pass --allow-different-source (allow_different_source=True) to compare anyway"
                raise SourceMismatchError(f"{what}; {how}")
            report.warnings.append(what)
        fixed = manifest.get("source", {}).get("batch")
        if fixed and inputs is None and list(batches) != [fixed]:
            report.warnings.append(f"the source was exported with a fixed batch of {fixed}; verifying at that batch")
            batches = [int(fixed)]
        if mode != "outputs" and not manifest.get("values"):
            report.warnings.append(f"{MANIFEST} records no layer map ('values'): only the outputs were compared")
        unknown = set(output_tolerances or {}) - {o["name"] for o in manifest["outputs"]}
        if unknown:
            raise RunError(
                f"--output-tolerance names no output of this model: {sorted(unknown)} (outputs: {[o['name'] for o in manifest['outputs']]})"
            )
        devices, notes = resolve_devices(device)
        report.warnings.extend(notes)
        direction = direction_of(manifest)
        if train_steps < 0 or train_batch < 1:
            raise RunError(f"train_steps must be >= 0 and train_batch >= 1 (got {train_steps}, {train_batch})")
        if train_steps:
            check_training_setup(manifest, converted)
            if direction.training is None:
                raise TrainingStructureError(
                    f"training parity for {report.direction} outputs is not available in this version of ktorch"
                )
        specs = manifest["inputs"]
        given = load_inputs(inputs, specs) if inputs is not None else None
        for dev in devices:
            with precision_settings(dev, tf32=tf32) as settings:
                source = direction.source(src, device=dev, trust_code=trust_code)
                emitted = direction.emitted(converted, manifest, device=dev)
                for batch in [len(given[0]) if given and given[0].ndim else 0] if given is not None else list(batches):
                    arrays = (
                        given
                        if given is not None
                        else make_inputs(specs, seed=seed, batch=batch, sizes=example_sizes(manifest))
                    )
                    how = (
                        str(inputs)
                        if isinstance(inputs, (str, Path))
                        else ("given arrays" if given is not None else f"random(seed={seed})")
                    )
                    report.runs.append(
                        _run_once(
                            manifest,
                            source,
                            emitted,
                            arrays,
                            dict(settings),
                            dev,
                            batch,
                            how,
                            tolerance,
                            dict(output_tolerances or {}),
                            tf32,
                            mode,
                        )
                    )
                if train_steps:
                    report.training.append(
                        run_training(
                            direction.training,
                            src,
                            converted,
                            manifest,
                            device=dev,
                            steps=train_steps,
                            batch=train_batch,
                            seed=seed,
                            profile=manifest_profile(dev, manifest, tf32=tf32),
                            tolerance=tolerance,
                            trust_code=trust_code,
                        )  # fmt: skip
                    )
    except KtorchError as exc:
        report.error = str(exc)
        if isinstance(exc, (SourceMismatchError, TrainingStructureError)):
            report.error_code = EXIT_STRUCTURE
            report.error_kind = "training" if isinstance(exc, TrainingStructureError) else "source"
    except ImportError as exc:
        report.error = f"a dependency is missing: {exc}"
    return report


def check_training(
    src: Any,
    converted: str | Path,
    *,
    steps: int,
    batch: int = 4,
    seed: int = 0,
    device: str = "cpu",
    tolerance: float | None = None,
    trust_code: bool = False,
) -> TrainingResult:
    """Training parity only (what `verify_conversion(train_steps=...)` adds to the output checks), for a
    conversion just written. Raises TrainingStructureError when there is nothing to train or the
    direction has no training sides, RunError when a side cannot run."""
    converted = Path(converted)
    manifest = read_manifest(converted)
    check_training_setup(manifest, converted)
    sides = direction_of(manifest).training
    if sides is None:
        raise TrainingStructureError(
            f"training parity for {manifest.get('direction')} outputs is not available in this version of ktorch"
        )
    with precision_settings(device):
        profile = manifest_profile(device, manifest)
        return run_training(
            sides, src, converted, manifest, device=device, steps=steps, batch=batch, seed=seed, profile=profile,
            tolerance=tolerance, trust_code=trust_code,
        )  # fmt: skip


def _run_once(
    manifest: dict[str, Any],
    source: Any,
    emitted: Any,
    arrays: list[np.ndarray],
    settings: dict[str, Any],
    device: str,
    batch: int,
    how: str,
    tolerance: float | None,
    output_tolerances: dict[str, float],
    tf32: bool,
    mode: str,
) -> RunResult:
    outs = manifest["outputs"]
    profile = manifest_profile(device, manifest, tf32=tf32)
    rtol = tolerance if tolerance is not None else profile.rtol
    run = RunResult(device, batch, how, profile.name, rtol, settings, source.backend, emitted.backend, mode=mode)

    values: dict[str, dict[str, Any]] = manifest.get("values", {})
    input_names = {s["name"] for s in manifest["inputs"]}
    layer_names = [name for name in values if name not in input_names] if mode != "outputs" else []
    shapes = ", ".join(str(tuple(a.shape)) for a in arrays)
    try:
        capture: Capture = source.run(arrays, layer_names)
    except KtorchError:
        raise
    except Exception as exc:
        raise RunError(
            f"the source model failed on inputs of shape {shapes} on {device}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    capture.values.update({s["name"]: a for s, a in zip(manifest["inputs"], arrays)})
    run.skipped.update(capture.skipped)
    try:
        got, env = emitted.run([to_emitted(a, s.get("perm")) for a, s in zip(arrays, manifest["inputs"])])
    except KtorchError:
        raise
    except Exception as exc:
        raise RunError(
            f"the emitted model failed on inputs of shape {shapes} on {device}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc

    # -- outputs ---------------------------------------------------------------------
    if len(got) != len(capture.outputs) or len(got) != len(outs):
        run.problems.append(
            f"the source returns {len(capture.outputs)} output(s), the emitted model {len(got)} (the manifest lists {len(outs)})"
        )
    for spec, ref, out in zip(outs, capture.outputs, got):
        value = to_source(out, spec.get("perm")) if out.ndim == len(spec.get("perm") or [0] * out.ndim) else out
        problem = _structure(spec["name"], ref, value)
        if problem:
            run.problems.append(problem)
        run.outputs.append(compare(spec["name"], ref, value, output_tolerances.get(spec["name"], rtol), worst=WORST))
    if mode == "outputs":
        return run

    # -- layers ------------------------------------------------------------------------
    feeds: dict[str, np.ndarray] = {}
    aligned: dict[str, tuple[str, list[int] | None]] = {}  # emitted local -> (source layer, perm)
    for name, entry in values.items():
        array = capture.values.get(name)
        if array is None:
            continue
        var, perm = entry["emitted"], entry.get("perm")
        own = env.get(var)
        if own is None:
            run.skipped[name] = f"the emitted model has no local {var!r}"
            continue
        shaped = to_emitted(array, perm) if perm and array.ndim == len(perm) else array
        if tuple(shaped.shape) != tuple(own.shape):
            run.skipped[name] = (
                f"shape {tuple(array.shape)} (perm {perm}) does not match the emitted {var!r} {tuple(own.shape)}"
            )
            continue
        feeds[var] = shaped
        if name not in input_names:
            aligned[var] = (name, perm)
    isolated = emitted.isolated(env, feeds) if mode in ("both", "isolated") else {}
    for var in emitted.order():
        if var not in aligned:
            continue
        name, perm = aligned[var]
        reference = capture.values[name]
        entry = values[name]
        layer = LayerResult(
            name,
            entry.get("class") or capture.classes.get(name),
            var,
            emitted.statement_of(var),
            perm,
            list(entry.get("merged", [])),
        )
        if mode in ("both", "propagated"):
            layer.propagated = compare(name, reference, to_source(emitted.to_numpy(env[var]), perm), rtol, worst=WORST)
        if var in isolated:
            layer.isolated = compare(
                name, reference, to_source(emitted.to_numpy(isolated[var]), perm), rtol, worst=WORST
            )
        run.layers.append(layer)
    return run


def manifest_profile(device: str, manifest: dict[str, Any], *, tf32: bool = False) -> Profile:
    """The verification profile of a conversion: its outputs' dtypes and, for a mixed-precision
    source, the dtype it computes in (ktorch.json's model.compute_dtype)."""
    dtypes = [o.get("dtype", "float32") for o in manifest["outputs"]]
    return select_profile(device, dtypes, compute=manifest.get("model", {}).get("compute_dtype"), tf32=tf32)


def _structure(name: str, reference: np.ndarray, got: np.ndarray) -> str:
    """A structural difference between an output of the source and of the emitted model."""
    if reference.shape != got.shape:
        return f"output {name!r}: shape {tuple(got.shape)} in the emitted model, {tuple(reference.shape)} in the source"
    a, b = np.dtype(reference.dtype), np.dtype(got.dtype)
    kinds = {"f": "floating", "i": "integer", "u": "integer", "b": "bool"}
    if kinds.get(a.kind, a.kind) != kinds.get(b.kind, b.kind) or (a.kind == "f" and a.itemsize != b.itemsize):
        return f"output {name!r}: dtype {b} in the emitted model, {a} in the source"
    return ""


def assert_parity(
    src: str | Path,
    converted: str | Path,
    *,
    device: str | Sequence[str] = "cpu",
    batches: Sequence[int] = (2,),
    inputs: Any = None,
    seed: int = 0,
    tolerance: float | None = None,
    output_tolerances: Mapping[str, float] | None = None,
    tf32: bool = False,
    mode: str = "both",
    trust_code: bool = False,
    allow_different_source: bool = False,
    train_steps: int = 0,
    train_batch: int = 4,
) -> VerifyReport:
    """Verify like `ktorch verify` and raise unless it passes: ParityError for a numeric
    mismatch (naming the first diverging layer), StructuralError for missing outputs or
    wrong shapes/dtypes, RunError when it could not run. Returns the report."""
    report = verify_conversion(
        src, converted, device=device, batches=batches, inputs=inputs, seed=seed, tolerance=tolerance,
        output_tolerances=output_tolerances, tf32=tf32, mode=mode, trust_code=trust_code,
        allow_different_source=allow_different_source, train_steps=train_steps, train_batch=train_batch,
    )  # fmt: skip
    code = report.exit_code
    if code == EXIT_CANNOT_RUN:
        raise RunError(f"ktorch verify {src} {converted}: {report.summary()}")
    if code == EXIT_STRUCTURE and report.error_kind == "training":
        raise TrainingStructureError(f"ktorch verify {src} {converted}: {report.summary()}")
    if code == EXIT_STRUCTURE and report.error is not None:
        raise SourceMismatchError(f"ktorch verify {src} {converted}: {report.summary()}")
    if code == EXIT_STRUCTURE:
        raise StructuralError(f"ktorch verify {src} {converted}: {report.summary()}")
    if code == EXIT_MISMATCH:
        error = ParityError(f"ktorch verify {src} {converted}: {report.summary()}")
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report


@dataclass(frozen=True)
class Sides:
    """The verifier's source and emitted sides of one conversion direction."""

    source: Callable[..., SourceSide]
    emitted: Callable[..., EmittedSide]
    training: TrainingSides | None = None  # the two training sides (--train-steps), where the direction has them


def onnx_source(path: str | Path, *, device: str = "cpu", trust_code: bool = False) -> SourceSide:
    from .onnx_referee import OnnxSource  # ONNX Runtime, imported only for ONNX sources

    return OnnxSource(path, device=device, trust_code=trust_code)


SIDES: dict[str, Sides] = {
    "keras->torch": Sides(KerasSource, TorchEmitted, KERAS_TO_TORCH_TRAINING),
    "torch->keras": Sides(TorchSource, KerasEmitted, TORCH_TO_KERAS_TRAINING),
    "onnx->torch": Sides(onnx_source, TorchEmitted),
    "onnx->keras": Sides(onnx_source, KerasEmitted),
}


def direction_of(manifest: dict[str, Any]) -> Sides:
    name = manifest.get("direction", "keras->torch")
    try:
        return SIDES[name]
    except KeyError:
        raise RunError(
            f"ktorch.json: direction {name!r} cannot be verified by this version (supported: {', '.join(SIDES)})"
        ) from None
