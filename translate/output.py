"""The output directory contract, shared by both directions.

`check_output` decides, before any expensive work, whether a path may receive ktorch's
output: a missing path or an empty directory always; a directory ktorch itself wrote (a
ktorch.json of ours and nothing but the files ktorch writes) only with `force`; anything
else never (a file, a symbolic link, the current or home directory or one above them, a
repository root, the source or a directory holding it, a directory with other files).

The directory is built in a temporary sibling and renamed into place at the end, so a
failure or Ctrl-C never leaves a half-written output and no temporary litter; a replaced
output is first renamed aside and removed only once the new one is in place.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..graph.errors import OutputExistsError, UnsafeOutputError

MANIFEST = "ktorch.json"
MANIFEST_VERSION = 1
# Every entry ktorch writes in an output directory (translate/torch_writer, translate/keras_writer,
# the manifest, train.py, optimizer.safetensors and the compiled model.keras) and __pycache__/ that importing model.py or
# train.py leaves; keras_writer's scratch `.ktorch_weights.safetensors` never outlives the staging
# directory.
KTORCH_FILES = frozenset(
    {MANIFEST, "model.py", "model.safetensors", "model.weights.h5", "model.keras", "train.py", "optimizer.safetensors"}
)
PYCACHE = "__pycache__"
DIRECTIONS = frozenset({"keras->torch", "torch->keras", "onnx->torch", "onnx->keras"})
REPOSITORY_MARKERS = (".git", ".hg", ".svn")
CHOOSE = "choose another -o"

_written: list[Path] = []  # outputs this process moved into place, in order (for interrupt messages)


def written_outputs() -> list[Path]:
    """The output directories this process has moved into place so far."""
    return list(_written)


def check_output(target: str | Path, *, force: bool, sources: Iterable[str | Path | None] = ()) -> None:
    """Raise UnsafeOutputError when `target` is a place ktorch never writes to, and
    OutputExistsError when it is an earlier ktorch output and `force` is not given.
    `sources` are the paths the conversion reads (non-path sources are skipped). Touches nothing."""
    target = Path(os.path.abspath(target))
    if target.is_symlink():
        raise UnsafeOutputError(
            f"{target}: is a symbolic link; ktorch never replaces a link or writes through one: {CHOOSE}"
        )
    real = Path(os.path.realpath(target))
    _check_protected(target, real)
    _check_sources(target, real, sources)
    if not target.exists():
        _check_creatable(target)
        return
    if not target.is_dir():
        raise UnsafeOutputError(
            f"{target}: is a file, not a directory; ktorch writes a directory and never replaces a file: {CHOOSE}"
        )
    try:
        entries = sorted(os.listdir(target))
    except OSError as exc:
        raise UnsafeOutputError(f"{target}: cannot be read ({exc.strerror}): {CHOOSE}") from None
    if not entries:
        return
    markers = [m for m in REPOSITORY_MARKERS if m in entries]
    if markers:
        raise UnsafeOutputError(
            f"{target}: is a repository root (it holds {markers[0]}); ktorch never replaces one: {CHOOSE}"
        )
    problem = _not_ktorch_output(target, entries)
    if problem:
        raise UnsafeOutputError(
            f"{target}: exists and is not a directory ktorch wrote ({problem}); ktorch replaces only its own outputs, "
            f"even with --force: {CHOOSE} or empty it"
        )
    if not force:
        raise OutputExistsError(f"{target}: exists (an earlier ktorch output); pass --force to replace it")


def _check_sources(target: Path, real: Path, sources: Iterable[str | Path | None]) -> None:
    for src in sources:
        if not isinstance(src, (str, Path)) or not str(src):
            continue
        source = Path(os.path.realpath(src))
        if source == real:
            why = "is the source"
        elif real in source.parents:
            why = f"contains the source {src}"
        elif source in real.parents:
            why = f"is inside the source {src}"
        else:
            continue
        raise UnsafeOutputError(f"{target}: {why}; ktorch never writes there, even with --force: {CHOOSE}")


def _check_protected(target: Path, real: Path) -> None:
    """The current directory, the home directory, and every directory above either."""
    places = [("the current directory", Path(os.path.realpath(os.getcwd())))]
    home = os.environ.get("HOME") or os.path.expanduser("~")
    if home and home != "~":
        places.append(("your home directory", Path(os.path.realpath(home))))
    for what, place in places:
        if real == place:
            raise UnsafeOutputError(f"{target}: is {what}; ktorch never replaces it, even with --force: {CHOOSE}")
        if real in place.parents:
            raise UnsafeOutputError(f"{target}: contains {what}; ktorch never replaces it, even with --force: {CHOOSE}")


def _check_creatable(target: Path) -> None:
    """The nearest existing directory above a missing `target` is a directory (missing
    parents are created)."""
    for parent in target.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise UnsafeOutputError(
                    f"{target}: {parent} is not a directory, so the output cannot be created there: {CHOOSE}"
                )
            return


def _not_ktorch_output(directory: Path, entries: Sequence[str]) -> str:
    """Why `directory` is not an output ktorch wrote ('' when it is one)."""
    foreign = [name for name in entries if not _ktorch_entry(directory / name)]
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        return f"it holds {', '.join(foreign[:3])}{more}"
    try:
        manifest = read_manifest(directory)
    except FileNotFoundError:
        return f"it has no {MANIFEST}"
    except (OSError, ValueError):
        return f"its {MANIFEST} does not parse"
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("ktorch_version"), str)
        or manifest.get("direction") not in DIRECTIONS
    ):
        return f"its {MANIFEST} is not one ktorch wrote"
    return ""


def _ktorch_entry(path: Path) -> bool:
    if path.is_symlink():
        return False
    if path.name in KTORCH_FILES:
        return path.is_file()
    if path.name == PYCACHE and path.is_dir():
        return all(
            p.name.startswith(("model.", "train.")) and p.suffix == ".pyc" and p.is_file() and not p.is_symlink()
            for p in path.iterdir()
        )
    return False


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (/proc), else
    set-and-restore (what os.umask offers)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) for the duration, and raise it afterwards: the renames
    and the clean-up inside happen completely or not at all. Elsewhere than in the main
    thread (where signals cannot be handled) it does nothing."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _sibling(target: Path, suffix: str) -> Path:
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}{suffix}")


def check_output_file(target: str | Path, *, force: bool, sources: Iterable[str | Path | None] = ()) -> None:
    """check_output for a single-file output (`ktorch export`'s .onnx): never a link, a directory
    or the source; an existing file only with `force` (the user named that file to be replaced)."""
    target = Path(os.path.abspath(target))
    if target.is_symlink():
        raise UnsafeOutputError(
            f"{target}: is a symbolic link; ktorch never replaces a link or writes through one: {CHOOSE}"
        )
    _check_sources(target, Path(os.path.realpath(target)), sources)
    if target.is_dir():
        raise UnsafeOutputError(f"{target}: is a directory; ktorch export writes one file: {CHOOSE}")
    if not target.exists():
        _check_creatable(target)
    elif not force:
        raise OutputExistsError(f"{target}: exists; pass --force to replace it")


@contextmanager
def staged_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target` (same suffix); on success it replaces `target` in
    one rename. Whatever happens, no temporary file is left behind."""
    target = Path(os.path.abspath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, ".partial" + target.suffix)
    try:
        yield staging
        with deferred_interrupt():
            os.replace(staging, target)
    finally:
        if staging.exists():
            staging.unlink()


@contextmanager
def staged_directory(target: Path, *, force: bool, sources: Sequence[str | Path | None] = ()) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `target`; on success it replaces `target`.

    `target` is checked (see check_output) before anything is created and again right
    before the swap, which happens with Ctrl-C held back (see _swap). Whatever happens, no
    temporary directory is left behind."""
    target = Path(os.path.abspath(target))
    check_output(target, force=force, sources=sources)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)  # missing parents are created, as --help says
    except OSError as exc:
        raise UnsafeOutputError(f"{target}: cannot create {target.parent} ({exc.strerror}): {CHOOSE}") from None
    staging: Path | None = _sibling(target, ".partial")
    try:
        try:
            staging.mkdir(mode=0o700)
        except OSError as exc:
            staging = None
            raise UnsafeOutputError(f"{target}: cannot write in {target.parent} ({exc.strerror}): {CHOOSE}") from None
        yield staging
        check_output(target, force=force, sources=sources)  # it may have changed during a long verify
        staging.chmod(0o777 & ~current_umask())  # the user's usual mode, not mkdir's private 0700
        with deferred_interrupt():
            _swap(staging, target)
    finally:
        with deferred_interrupt():
            if staging is not None and staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def _swap(staging: Path, target: Path) -> None:
    """Move the finished `staging` to `target`: an existing output is renamed aside, the
    new one into place, then the old one removed. An exception at any point (both renames
    included) leaves the old output in place, or the new one and no old one."""
    aside = _sibling(target, ".old") if target.exists() else None
    try:
        if aside is not None:
            os.replace(target, aside)
        os.replace(staging, target)
    except BaseException:
        if aside is not None and aside.exists() and not target.exists():
            os.replace(aside, target)  # the old output back (if even this fails, it stays aside: never removed)
        raise
    finally:
        if not staging.exists():  # the new output is in place
            _written.append(target)
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8"))


def write_verified(
    out: Path,
    *,
    force: bool,
    manifest: dict[str, Any],
    write: Callable[[Path], Any],
    verify: Callable[[Path], Any] | None,
    timings: dict[str, float],
    sources: Sequence[str | Path | None] = (),
) -> Any:
    """Build the output directory: `write(staging)`, then `verify(staging)` (if given) whose
    result goes into the manifest's `parity`, then the manifest; the directory replaces
    `out` only when all of that succeeded (`out` is checked again then, against `sources`).
    Returns the parity result (or None)."""
    parity = None
    with staged_directory(out, force=force, sources=sources) as staging:
        t0 = time.perf_counter()
        write(staging)
        timings["write"] = time.perf_counter() - t0
        if verify is not None:
            t1 = time.perf_counter()
            parity = verify(staging)
            timings["verify"] = time.perf_counter() - t1
            manifest["parity"] = parity.to_dict()
        write_manifest(staging, manifest)
    return parity


def raise_on_mismatch(parity: Any, *, what: str, tolerance: float, out: Path, hint: str = "") -> None:
    """ParityError naming the worst output when a conversion-time check failed (the output
    was written, with the failed result in its manifest, for inspection)."""
    if parity is None or parity.passed:
        return
    from ..graph.errors import ParityError

    worst = max(parity.outputs, key=lambda c: c.max_rel)
    raise ParityError(
        f"{what}: output {worst.name!r} has relative error {worst.max_rel:.3g} > {tolerance:g} "
        f"({worst.problem or 'numbers differ'}); the output was written to {out} for inspection{hint}"
    )
