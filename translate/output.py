"""The output directory contract, shared by both directions.

The directory is built in a temporary sibling and renamed into place at the end, so a
failure or Ctrl-C never leaves a half-written output; an existing non-empty directory is
replaced only with `force`, and only after the new one is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..graph.errors import OutputExistsError

MANIFEST = "ktorch.json"
MANIFEST_VERSION = 1


def check_target(target: Path, force: bool) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise OutputExistsError(f"{target}: exists and is not empty; pass --force to replace it")


@contextmanager
def staged_directory(target: Path, *, force: bool) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `target`; on success it replaces `target`."""
    target = Path(target).absolute()
    check_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
        check_target(target, force)
        if target.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            backup.rmdir()
            os.replace(target, backup)
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(backup, target)
                raise
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


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
) -> Any:
    """Build the output directory: `write(staging)`, then `verify(staging)` (if given) whose
    result goes into the manifest's `parity`, then the manifest; the directory replaces
    `out` only when all of that succeeded. Returns the parity result (or None)."""
    parity = None
    with staged_directory(out, force=force) as staging:
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
