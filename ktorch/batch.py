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
    refused: str = ""  # why the output may not be written (checked before any worker starts)
    refused_code: int = EXIT_OK


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


def default_out(src: str, to: str | None) -> str:
    """Where a single conversion writes `src` by default: beside a path source, in the
    current directory for a 'package.module:factory'."""
    from .sources import is_factory_string

    name = output_name(src, to)
    if is_factory_string(src):
        return name
    path = Path(src) if Path(src).name not in ("", "..") else Path(src).resolve()
    return str(path.with_name(name))


def plan(sources: Sequence[str], outdir: Path | None, to: str | None, options: dict[str, Any]) -> list[Job]:
    """One job per source; two sources that would write the same directory are refused.
    Each job's output is checked (translate.output.check_output, against every source of the
    batch) before any worker starts: a job whose output may not be written is marked
    `refused` and reported as failed without running."""
    from .graph.errors import KtorchError
    from .sources import is_factory_string
    from .translate.output import check_output

    read = [s for s in sources if not is_factory_string(s)] + [options.get("weights")]
    jobs, owners = [], {}
    for src in sources:
        out = default_out(src, to) if outdir is None else str(outdir / output_name(src, to))
        key = os.path.abspath(out)
        if key in owners:
            raise ModelFileError(
                f"{owners[key]} and {src} would both be written to {out}; convert them in separate runs or rename one"
            )
        owners[key] = src
        job = Job(src, out, dict(options, to=to))
        try:
            check_output(Path(out), force=bool(options.get("force")), sources=read)
        except KtorchError as exc:
            job.refused, job.refused_code = _one_line(str(exc)), exc.exit_code
        jobs.append(job)
    return jobs


# -- the worker side --------------------------------------------------------------------------
def _init_worker(plugins: Sequence[str], threads: int) -> None:
    """Runs once in each worker before any framework is imported (the conversions import
    what they need themselves, Triton before TensorFlow)."""
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ.setdefault(var, str(threads))  # the workers share the cores
    if plugins:
        from .capture import prepare_torch
        from .plugins import load_plugin

        prepare_torch()  # a plugin may import TensorFlow: Triton first
        for module in plugins:
            load_plugin(module)


_interrupted = False  # this worker saw Ctrl-C: the jobs already queued to it are not started


def convert_one(job: Job) -> Outcome:
    """Convert one model (in a worker); every error becomes an Outcome, never an exception
    (Ctrl-C excepted: it stops the batch)."""
    global _interrupted
    from .api import convert
    from .graph.errors import KtorchError
    from .sources import is_factory_string

    if _interrupted:
        return Outcome(job.src, job.out, False, 0.0, EXIT_INTERRUPTED, "not started: interrupted")
    t0 = time.perf_counter()
    src: Any = job.src if is_factory_string(job.src) else Path(job.src)
    try:
        result = convert(src, job.out, **job.options)
    except KeyboardInterrupt:
        _interrupted = True
        raise
    except KtorchError as exc:
        return Outcome(
            job.src,
            job.out,
            False,
            time.perf_counter() - t0,
            exc.exit_code,
            _one_line(str(exc)),
            traceback.format_exc(),
        )
    except Exception as exc:  # noqa: BLE001 - an internal error is this model's failure, not the batch's
        reason = f"internal error: {type(exc).__name__}: {_one_line(str(exc))}"
        return Outcome(
            job.src, job.out, False, time.perf_counter() - t0, EXIT_CANNOT_RUN, reason, traceback.format_exc()
        )
    m = result.manifest["model"]
    worst = None if result.parity is None else float(result.parity.worst_rel)
    return Outcome(
        job.src,
        str(result.out),
        True,
        time.perf_counter() - t0,
        nodes=m.get("nodes"),
        parameters=m.get("parameters"),
        worst_rel=worst,
    )


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

    before = [_identity(job.out) for job in jobs]
    print(f"converting {total} model(s) with {workers} process(es)", file=stream, flush=True)
    try:
        for index, job in enumerate(jobs):
            if job.refused:
                report(index, Outcome(job.src, job.out, False, 0.0, job.refused_code, job.refused))
        runnable = [i for i in range(total) if not jobs[i].refused]
        suspects = _run_pool(jobs, runnable, workers, plugins, threads, report) if runnable else []
        for index in suspects:  # in flight when a worker died: alone, each in a fresh worker
            if index in outcomes:
                continue
            left = _run_pool(jobs, [index], 1, plugins, threads, report)
            for i in left:
                report(
                    i,
                    Outcome(
                        jobs[i].src,
                        jobs[i].out,
                        False,
                        0.0,
                        EXIT_CANNOT_RUN,
                        "the worker process died while converting it (a crash in a native library?)",
                    ),
                )
    except KeyboardInterrupt:
        _print_interrupted(stream, jobs, before)
        return [outcomes[i] for i in sorted(outcomes)], EXIT_INTERRUPTED
    ordered = [outcomes[i] for i in range(total)]
    failed = [o for o in ordered if not o.ok]
    seconds = time.perf_counter() - t0
    if failed:
        print(
            f"converted {total - len(failed)} of {total} model(s) in {seconds:.1f}s; {len(failed)} failed:", file=stream
        )
        for o in failed:
            print(f"  {o.src}: {_reason(o)}", file=stream)
    else:
        print(f"converted {total} of {total} model(s) in {seconds:.1f}s", file=stream)
    stream.flush()
    return ordered, max((o.exit_code for o in failed), default=EXIT_OK)


def _identity(out: str | None) -> tuple[int, int] | None:
    """The output directory's (device, inode), or None when there is none: each conversion
    moves a new directory into place, so a changed identity means a completed output."""
    if out is None:
        return None
    try:
        st = os.stat(out, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _print_interrupted(stream: TextIO, jobs: Sequence[Job], before: Sequence[tuple[int, int] | None]) -> None:
    """Which outputs a Ctrl-C left written completely and which it did not, read from the
    disk once the workers have stopped (a worker may finish a model that the parent never
    heard of). An output is moved into place only when complete, so there is nothing between."""
    from .translate.output import MANIFEST

    written, unwritten = [], []
    for job, old in zip(jobs, before):
        now = _identity(job.out)
        done = now is not None and now != old and job.out is not None and (Path(job.out) / MANIFEST).is_file()
        (written if done else unwritten).append(str(job.out))
    print(f"ktorch: interrupted; {len(written)} of {len(jobs)} output(s) written completely", file=stream, end="")
    print(f": {', '.join(written)}" if written else "", file=stream)
    if unwritten:
        print(f"ktorch: not written (whatever was there before is unchanged): {', '.join(unwritten)}", file=stream)
    stream.flush()


def _run_pool(
    jobs: Sequence[Job],
    indices: Sequence[int],
    workers: int,
    plugins: Sequence[str],
    threads: int,
    report: Callable[[int, Outcome], None],
) -> list[int]:
    """Run the jobs at `indices`; returns the indices left unfinished because a worker died."""
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(tuple(plugins), threads),
    )
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
