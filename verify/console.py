"""The consoles the CLI (`ktorch verify` included) prints through: a terminal's own width, or
unlimited width when the stream is a file or a pipe (CI logs), so that tables and lines are
never wrapped or cut at 80 columns."""

from __future__ import annotations

import sys
from typing import Any

UNWRAPPED = 100_000  # columns: wide enough that nothing wraps; tables still take only their content's width


def is_terminal(stderr: bool = False) -> bool:
    stream = sys.stderr if stderr else sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def make_console(*, stderr: bool = False) -> Any:
    """A rich Console on stdout (or stderr): the terminal's width, or no wrapping when not a TTY."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, width=None if is_terminal(stderr) else UNWRAPPED)
