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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

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
