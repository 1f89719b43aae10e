"""The conversion skeleton every direction runs: the output is checked, the source read into
the graph, the graph rewritten, rendered by the target's writer, described by the manifest,
verified and written atomically. A direction (ktorch/directions.py) is a short declaration of
its reader, passes and parity check, not a copy of this skeleton.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .graph import Graph, validate
from .graph.errors import ModelFileError, ParityError
from .graph.ir import Value
from .graph.training import summary as training_summary
from .manifest import Perm, SourceIO, build_manifest, io_specs, layout_of, model_info
from .options import Layout
from .result import ConversionResult
from .sources import default_output, is_factory_string, source_paths
from .translate.output import check_output, raise_on_mismatch, write_manifest, write_verified
from .verify.profiles import select_profile
from .version import __version__

TARGET_NAMES = {"torch": "PyTorch", "keras": "Keras"}


@dataclass
class Options:
    """What the user asked for, shared by every direction."""

    keep_layout: bool = False
    verify: bool = True
    force: bool = False
    tolerance: float | None = None  # None: the verification profile of the outputs' dtypes (verify/profiles.py)
    trust_code: bool = False
    inputs: list | None = None  # verification inputs, one array per source input
    seed: int = 0
    progress: Callable[[str], None] | None = None
    # PyTorch sources that still need torch.export
    example_inputs: Sequence[Any] | None = None
    input_shapes: Sequence[Sequence[int]] | None = None
    input_dtypes: Sequence[str] | None = None
    weights: str | Path | None = None
    dynamic: tuple[str, ...] = ()  # sizes besides the batch kept symbolic where the model allows ("seq", ...)
    # PyTorch -> Keras: {"fc.weight": ("l2", 1e-4)} (translate/torch_reader/regularization.py)
    regularizers: dict[str, Any] | None = None
    train_steps: int = 0  # > 0: check training parity over that many steps once written (verify/training.py)
    # PyTorch -> Keras: {"optimizer", "lr_scheduler", "loss", "steps_per_epoch"}, objects or text
    # (ktorch/torch_training.py); the Keras output is then saved compiled
    training: dict[str, Any] | None = None

    def step(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)


@dataclass
class Read:
    """A source read into the graph."""

    graph: Graph
    label: str  # how messages name the source
    desc: str  # where the emitted code says it came from
    source: dict[str, Any]  # the manifest's `source`
    state: dict[str, Any] = field(default_factory=dict)  # what the direction's check needs later
    route: dict[str, str] | None = None  # Keras sources: {name, reason} of the route into the graph


@dataclass(frozen=True)
class Direction:
    """One conversion direction: the reader, the passes and the parity check it plugs in."""

    name: str  # the manifest's `direction`, e.g. "keras->torch"
    target: str  # "torch" or "keras"
    read: Callable[[Any, Options, dict[str, float]], Read]
    io_format: Callable[[Value], str | None]  # a source input's/output's data format, before the passes
    rewrite: Callable[[Graph, Read, Options], int]  # the passes; returns the transposes left
    check: Callable[[Read, Path, dict[str, Any], Options], Any]  # verifies a staged output -> ParityResult
    mismatch: str  # "the emitted model differs from ..."
    values: Callable[[Graph, dict[str, str]], dict[str, Any]] | None = None  # the verifier's value map
    perm_of: Callable[[Value, Read], Perm | None] = lambda value, read: value.perm
    layout: Callable[[int, str | None, Perm | None, bool], str | None] = lambda rank, fmt, perm, keep: layout_of(
        rank, fmt, perm
    )
    ranges: bool = True  # record the id range of integer inputs that feed embeddings
    verifying: str = "verifying parity"
    hint: str = ""


@contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t0


def convert(direction: Direction, src: Any, out: str | Path | None, options: Options) -> ConversionResult:
    """Run `direction` on `src` into `out` (see the module doc). Raises ParityError, after
    writing the output with the failed result in ktorch.json, above the tolerance."""
    if isinstance(src, (str, Path)) and not is_factory_string(str(src)) and not Path(src).exists():
        raise ModelFileError(f"{src}: no such file")
    out = Path(out) if out is not None else default_output(src, direction.target)
    sources = [*source_paths(src), options.weights]  # what the conversion reads: never written over
    check_output(out, force=options.force, sources=sources)  # before any expensive work
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    read = direction.read(src, options, timings)
    graph = read.graph
    source_io = SourceIO.record(graph, direction.io_format)
    timings["read"] = time.perf_counter() - t0 - timings.get("export", 0.0)
    options.step("rewriting the graph")
    with timed(timings, "passes"):
        transposes = direction.rewrite(graph, read, options)
        validate(graph)
    options.step(f"writing {TARGET_NAMES[direction.target]} code")
    writer = target_writer(direction.target)
    with timed(timings, "render"):
        rendered = writer.render(graph, source=read.desc, version=__version__)

    def specs(values: list[Value]) -> list[dict[str, Any]]:
        return io_specs(
            values, graph, rendered.value_names, source_io, perm_of=lambda v: direction.perm_of(v, read),
            layout=lambda rank, fmt, perm: direction.layout(rank, fmt, perm, options.keep_layout), ranges=direction.ranges,
        )  # fmt: skip

    manifest = build_manifest(
        direction=direction.name, source=read.source, model=model_info(graph, rendered, direction.target),
        layout_mode=(Layout.KEEP if options.keep_layout else Layout.NATIVE).value, transposes=transposes,
        inputs=specs(graph.inputs), outputs=specs(graph.outputs),
        values=None if direction.values is None else direction.values(graph, rendered.value_names),
        training=getattr(rendered, "training", None), route=read.route,
    )  # fmt: skip
    training = training_summary(graph)  # frozen layers, regularizers, constraints, dropout (graph/training.py)
    if training:  # beside train.py's entry (optimizer, loss, metrics), when the source was compiled
        manifest["training"] = {**manifest.get("training", {}), **training}
    if manifest.get("training", {}).get("file"):  # overwritten once checked (check_training below)
        manifest["training"]["parity"] = {"checked": False, "how": "ktorch verify SRC OUT --train-steps K"}
    if options.tolerance is None:
        compute = manifest["model"].get("compute_dtype")
        options.tolerance = select_profile("cpu", [o["dtype"] for o in manifest["outputs"]], compute=compute).rtol
    if not options.verify:
        read.state.clear()  # only verification runs the source again: let go of it (and its weights)
        gc.collect()  # an ExportedProgram sits in reference cycles

    def check(staging: Path) -> Any:
        options.step(direction.verifying)
        return direction.check(read, staging, manifest, options)

    write = (
        write_lean(writer, rendered, graph, options)
        if direction.target == "keras"
        else lambda d: writer.write(rendered, d)
    )
    verify = check if options.verify else None

    def write_counted(staging: Path) -> None:
        write(staging)
        trainable = getattr(rendered, "trainable_parameters", None)  # the Keras writer counts its model's
        if trainable is not None:
            manifest["model"]["trainable_parameters"] = trainable

    parity = write_verified(
        out,
        force=options.force,
        manifest=manifest,
        write=write_counted,
        verify=verify,
        timings=timings,
        sources=sources,
    )
    timings["total"] = time.perf_counter() - t0
    keras_model = emitted_keras_model(read, rendered, out) if direction.target == "keras" else None
    result = ConversionResult(out, graph, manifest, parity, timings, keras_model=keras_model)
    raise_on_mismatch(
        parity, what=f"{read.label}: {direction.mismatch}", tolerance=options.tolerance, out=out, hint=direction.hint
    )
    if options.train_steps:
        check_training(src, out, manifest, options, label=read.label)
    return result


def check_training(src: Any, out: Path, manifest: dict[str, Any], options: Options, *, label: str) -> None:
    """Training parity over options.train_steps steps on the written output; the result goes into
    ktorch.json's training.parity. Raises ParityError (after recording it) when it fails."""
    from .verify.verifier import check_training as run_check

    options.step(f"checking training parity over {options.train_steps} steps")
    result = run_check(src, out, steps=options.train_steps, seed=options.seed, trust_code=options.trust_code)
    manifest.setdefault("training", {})["parity"] = {
        "checked": True,
        "steps": result.steps,
        "passed": result.passed,
        "worst": {kind: result.worst(kind) for kind in ("weight", "optimizer", "loss")},
        "rtol": result.rtol,
        "growth": result.growth,
        "summary": result.summary(),
    }
    write_manifest(out, manifest)
    if not result.passed:
        raise ParityError(f"{label}: {result.summary()}; the output was written to {out} for inspection")


def target_writer(target: str) -> Any:
    if target == "torch":
        from .translate.torch_writer import writer
    else:
        from .translate.keras_writer import writer  # type: ignore[no-redef]
    return writer


def write_lean(writer: Any, rendered: Any, graph: Graph, options: Options) -> Callable[[Path], None]:
    """The Keras writer's write, holding the weights once: the rendered output holds every array
    the Keras model needs, so the graph lets go of its own references, and each layer's arrays
    are dropped as the Keras model takes them; the Keras model loaded next (for verification or
    as `keras_model`) sits beside no other copy."""

    def write(staging: Path) -> None:
        for node in graph.nodes:
            node.weights = {}
        writer.write(rendered, staging, release=True)
        rendered.weights.clear()
        if options.verify:
            rendered.model = None  # verification loads the written files themselves
        gc.collect()  # and the model write() built (TensorFlow variables wait for a collection)

    return write


def emitted_keras_model(read: Read, rendered: Any, out: Path) -> Any:
    """The emitted Keras model with its weights: compiled from model.keras when the source came
    with its training setup, else the one verification loaded, else the one the writer built,
    else loaded from `out`."""
    if getattr(rendered, "train_source", None):
        from .translate.runtime import import_emitted, keras_backend

        keras_backend()
        import_emitted(out, "train.py")  # registers its optimizer, schedule and loss with Keras
        import keras

        return keras.models.load_model(out / "model.keras")
    if read.state.get("keras_model") is not None:
        return read.state["keras_model"]
    if rendered.model is not None:
        return rendered.model
    from .verify.torch_source import load_emitted_keras

    return load_emitted_keras(out)
