"""Exception types shared by every part of ktorch.

Each error carries enough context (file, layer, class) to print one clear line; the
CLI prints `str(error)` and exits with `exit_code`.
"""

from __future__ import annotations


class KtorchError(Exception):
    """Base class of every error ktorch raises on purpose."""

    exit_code = 1


class GraphError(KtorchError):
    """The intermediate graph is malformed (a bug in a reader or pass, or a bad model)."""


class ModelFileError(KtorchError):
    """The source file cannot be read: missing, empty, corrupt, or of an unknown kind."""

    exit_code = 3


class UnsupportedOpError(KtorchError):
    """One or more source layers have no translator.

    `items` lists (layer name, class name, reason) for every offending layer, so that
    users see all of them at once.
    """

    exit_code = 2

    def __init__(self, items: list[tuple[str, str, str]], *, where: str = "", hint: str = "") -> None:
        self.items = list(items)
        self.where = where
        self.hint = hint
        lines = [f"{len(self.items)} unsupported layer(s){' in ' + where if where else ''}:"]
        lines += [f"  - {name} ({cls}): {reason}" for name, cls, reason in self.items]
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


class UntrustedCodeError(KtorchError):
    """The model contains code (a Lambda layer, pickled Python) that ktorch will not run
    without an explicit opt-in."""


class ParityError(KtorchError):
    """The emitted model does not compute what the source computes."""


class OutputExistsError(KtorchError):
    """The output directory exists and is not empty, and --force was not given."""

    exit_code = 2


class UnsafeOutputError(OutputExistsError):
    """The output path is one ktorch never writes to, --force or not: a file, a symbolic
    link, the current or home directory (or one above them), a repository root, a place
    that holds or is the source, or a directory holding files ktorch did not write."""
