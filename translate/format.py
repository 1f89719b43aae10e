"""Formatting of emitted source with ruff (black-compatible), when it is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys

LINE_LENGTH = 100


def format_source(code: str) -> str:
    """Return `code` formatted by `ruff format`; unchanged if ruff is unavailable.
    The code is compiled first, so a generator bug surfaces here, not at import time."""
    try:
        compile(code, "<emitted model.py>", "exec")
    except SyntaxError as exc:
        from ..graph.errors import GraphError

        raise GraphError(f"internal error: the generated source does not compile ({exc.msg}, line {exc.lineno}); please report it") from exc
    cmd = [shutil.which("ruff")] if shutil.which("ruff") else [sys.executable, "-m", "ruff"]
    try:
        done = subprocess.run(
            [*cmd, "format", "--isolated", f"--line-length={LINE_LENGTH}", "-"],
            input=code,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return code
    return done.stdout if done.returncode == 0 and done.stdout else code
