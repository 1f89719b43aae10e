"""Batch conversion: many sources, a process pool, one line of progress per finished model.

`ktorch convert a.h5 b.h5 "models/*.h5" -o outdir/` converts each source into
`outdir/<stem>_torch/` (or `<stem>_keras/`), `--jobs` at a time, each in a worker process
of its own (spawned, so Triton and TensorFlow load in the right order there). A model that
fails does not stop the others; the summary lists every failure with its one-line reason,
and the exit code is the most severe of the failures' codes (3 could not run > 2 structure
> 1 numeric mismatch).

A worker that dies (a segmentation fault in a native library) breaks the whole pool; the
models that were still in flight are then run again one at a time, each in a fresh worker,
so that only the model that crashes is reported as failed.
"""

from __future__ import annotations

import glob
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TextIO

from .graph.errors import ModelFileError

EXIT_OK, EXIT_CANNOT_RUN, EXIT_INTERRUPTED = 0, 3, 130
GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    """A pattern for ktorch to expand (quoted on the command line), not an existing path."""
    return any(c in pattern for c in GLOB_CHARS) and not Path(pattern).exists()


def expand_sources(patterns: Sequence[str]) -> list[str]:
    """The sources named by `patterns`, in order, glob patterns expanded (sorted) and
    duplicates dropped. A pattern that matches nothing is an error (nothing is converted)."""
    sources: list[str] = []
    seen: set[str] = set()
    for pattern in patterns:
        if is_glob(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise ModelFileError(f"{pattern}: matches no file")
        else:
            matches = [pattern]
        for m in matches:
            key = os.path.abspath(m) if os.path.exists(m) else m
            if key not in seen:
                seen.add(key)
                sources.append(m)
    return sources


@dataclass
class Job:
    """One model to convert: the source, its output directory and the convert() keywords."""

    src: str
    out: str | None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    src: str
    out: str | None
    ok: bool
    seconds: float
    exit_code: int = EXIT_OK
    reason: str = ""
    detail: str = ""  # traceback, shown with --debug
    nodes: int | None = None
    parameters: int | None = None
    worst_rel: float | None = None


def output_name(src: str, to: str | None) -> str:
    """`<stem>_torch` or `<stem>_keras`, as a single conversion names its default output."""
    from .sources import is_factory_string

    if is_factory_string(src):
        return src.partition(":")[2] + "_keras"
    path = Path(src)
    stem = path.name.rstrip("/") if path.is_dir() else path.stem
    if to is None:
        keras_out = path.suffix.lower() in (".pt2", ".pt", ".pth") or (path.is_dir() and (path / "model.py").is_file())
        to = "keras" if keras_out else "torch"
    return f"{stem}_{to}"


def plan(sources: Sequence[str], outdir: Path | None, to: str | None, options: dict[str, Any]) -> list[Job]:
    """One job per source; two sources that would write the same directory are refused."""
    jobs, owners = [], {}
    for src in sources:
        out = None if outdir is None else str(outdir / output_name(src, to))
        if out is not None:
            if out in owners:
                raise ModelFileError(f"{owners[out]} and {src} would both be written to {out}; convert them in separate runs or rename one")
            owners[out] = src
        jobs.append(Job(src, out, dict(options, to=to)))
    return jobs


# -- the worker side --------------------------------------------------------------------------
def _init_worker(plugins: Sequence[str], threads: int) -> None:
    """Runs once in each worker before any framework is imported (the conversions import
    what they need themselves, Triton before TensorFlow)."""
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ.setdefault(var, str(threads))  # the workers share the cores
    if plugins:
        from .plugins import load_plugin
        from .capture import prepare_torch

        prepare_torch()  # a plugin may import TensorFlow: Triton first
        for module in plugins:
            load_plugin(module)


def convert_one(job: Job) -> Outcome:
    """Convert one model (in a worker); every error becomes an Outcome, never an exception."""
    from .api import convert
    from .graph.errors import KtorchError
    from .sources import is_factory_string

    t0 = time.perf_counter()
    src: Any = job.src if is_factory_string(job.src) else Path(job.src)
    try:
        result = convert(src, job.out, **job.options)
    except KtorchError as exc:
        return Outcome(job.src, job.out, False, time.perf_counter() - t0, exc.exit_code, _one_line(str(exc)), traceback.format_exc())
    except Exception as exc:  # noqa: BLE001 - an internal error is this model's failure, not the batch's
        reason = f"internal error: {type(exc).__name__}: {_one_line(str(exc))}"
        return Outcome(job.src, job.out, False, time.perf_counter() - t0, EXIT_CANNOT_RUN, reason, traceback.format_exc())
    m = result.manifest["model"]
    worst = None if result.parity is None else float(result.parity.worst_rel)
    return Outcome(job.src, str(result.out), True, time.perf_counter() - t0, nodes=m.get("nodes"), parameters=m.get("parameters"), worst_rel=worst)


def _one_line(message: str) -> str:
    """The first line of an error, with the count of the lines it had (unsupported layers)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    if len(lines) > 1 and lines[0].endswith(":"):  # "3 unsupported layer(s) in x.h5:" + one per layer
        items = [line.lstrip("- ") for line in lines[1:] if line.startswith("-")]
        return lines[0] + " " + "; ".join(items[:3]) + (f"; ... ({len(items) - 3} more)" if len(items) > 3 else "")
    return lines[0]


# -- the parent side --------------------------------------------------------------------------
def run_batch(
    jobs: Sequence[Job],
    *,
    workers: int,
    plugins: Sequence[str] = (),
    stream: TextIO | None = None,
    debug: bool = False,
) -> tuple[list[Outcome], int]:
    """Convert `jobs` with `workers` processes, print progress and a summary on `stream`
    (stderr); returns the outcomes (in the jobs' order) and the exit code."""
    stream = stream or sys.stderr
    total = len(jobs)
    workers = max(1, min(workers, total))
    threads = max(1, (os.cpu_count() or 1) // workers)
    outcomes: dict[int, Outcome] = {}
    t0 = time.perf_counter()

    def report(index: int, outcome: Outcome) -> None:
        outcomes[index] = outcome
        _print_progress(stream, len(outcomes), total, outcome, debug)

    print(f"converting {total} model(s) with {workers} process(es)", file=stream, flush=True)
    try:
        suspects = _run_pool(jobs, range(total), workers, plugins, threads, report)
        for index in suspects:  # in flight when a worker died: alone, each in a fresh worker
            if index in outcomes:
                continue
            left = _run_pool(jobs, [index], 1, plugins, threads, report)
            for i in left:
                report(i, Outcome(jobs[i].src, jobs[i].out, False, 0.0, EXIT_CANNOT_RUN, "the worker process died while converting it (a crash in a native library?)"))
    except KeyboardInterrupt:
        print(f"ktorch: interrupted after {len(outcomes)} of {total} model(s); unfinished outputs were not written", file=stream, flush=True)
        return [outcomes[i] for i in sorted(outcomes)], EXIT_INTERRUPTED
    ordered = [outcomes[i] for i in range(total)]
    failed = [o for o in ordered if not o.ok]
    seconds = time.perf_counter() - t0
    if failed:
        print(f"converted {total - len(failed)} of {total} model(s) in {seconds:.1f}s; {len(failed)} failed:", file=stream)
        for o in failed:
            print(f"  {o.src}: {_reason(o)}", file=stream)
    else:
        print(f"converted {total} of {total} model(s) in {seconds:.1f}s", file=stream)
    stream.flush()
    return ordered, max((o.exit_code for o in failed), default=EXIT_OK)


def _run_pool(
    jobs: Sequence[Job], indices: Sequence[int], workers: int, plugins: Sequence[str], threads: int, report: Callable[[int, Outcome], None]
) -> list[int]:
    """Run the jobs at `indices`; returns the indices left unfinished because a worker died."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(tuple(plugins), threads))
    pending: dict[Future, int] = {}
    try:
        pending = {pool.submit(convert_one, jobs[i]): i for i in indices}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                try:
                    report(index, future.result())
                except BrokenProcessPool:
                    return sorted([index, *pending.values()])
        return []
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _reason(o: Outcome) -> str:
    """The reason without the source's name in front (the line starts with it already)."""
    for prefix in (f"{o.src}: ", f"{Path(o.src)}: ", f"{Path(o.src).absolute()}: "):
        if o.reason.startswith(prefix):
            return o.reason[len(prefix) :]
    return o.reason


def _print_progress(stream: TextIO, count: int, total: int, o: Outcome, debug: bool) -> None:
    width = len(str(total))
    tag = f"[{count:>{width}}/{total}]"
    if o.ok:
        parity = "" if o.worst_rel is None else f", parity {o.worst_rel:.1e}"
        print(f"{tag} ok      {o.src} -> {o.out} ({o.seconds:.1f}s{parity})", file=stream, flush=True)
    else:
        print(f"{tag} FAILED  {o.src} ({o.seconds:.1f}s): {_reason(o)}", file=stream, flush=True)
        if debug and o.detail:
            print(o.detail.rstrip(), file=stream, flush=True)
