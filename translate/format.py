"""Formatting of emitted source: `ruff format` (black-compatible) when ruff is installed,
otherwise `layout`, a small formatter for the statements the writers emit that lays them
out as ruff does: double quotes, and a line longer than LINE_LENGTH broken at its
brackets, left to right, each bracket pair kept on one line if what follows it up to the
next bracket still fits (`f(a, b)(\\n    x\\n)`, `f(\\n    a, b\\n)(x)`), its contents on one
indented line if they fit, else one item a line with a trailing comma."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tokenize
from dataclasses import dataclass, field

LINE_LENGTH = 100
INDENT = 4

__all__ = ["LINE_LENGTH", "format_source", "layout"]


def format_source(code: str) -> str:
    """Return `code` formatted by `ruff format`, or by `layout` when ruff is unavailable.
    The code is compiled first, so a generator bug surfaces here, not at import time."""
    try:
        compile(code, "<emitted model.py>", "exec")
    except SyntaxError as exc:
        from ..graph.errors import GraphError

        raise GraphError(
            f"internal error: the generated source does not compile ({exc.msg}, line {exc.lineno}); please report it"
        ) from exc
    formatted = _ruff_format(code)
    return formatted if formatted is not None else layout(code)


def _ruff_format(code: str) -> str | None:
    """`ruff format` of `code`; None when ruff is not installed or fails."""
    ruff = shutil.which("ruff")
    if ruff is None:
        import importlib.util

        if importlib.util.find_spec("ruff") is None:
            return None
    cmd = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    try:
        done = subprocess.run(
            [*cmd, "format", "--isolated", f"--line-length={LINE_LENGTH}", "-"],
            input=code,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 and done.stdout else None


# -- the fallback -----------------------------------------------------------------------------
_OPEN, _CLOSE = "([{", ")]}"


@dataclass
class _Group:
    """A bracket pair: its items are the comma-separated parts between the brackets."""

    open: str
    close: str
    items: list[list]  # each a sequence of str and _Group
    comma: bool = False  # the contents end with a comma
    parts: list = field(default_factory=list)  # all of it, flat: str and _Group

    @property
    def magic(self) -> bool:
        """A trailing comma that keeps the brackets broken (not that of a 1-tuple)."""
        return self.comma and (len(self.items) > 1 or self.open != "(")


def layout(code: str) -> str:
    """`code` (valid Python, as the writers emit it) with double-quoted strings and its
    statements laid out as ruff lays them out: one that fits on a line is joined onto one
    (unless a trailing comma keeps it open), a longer one is broken at its brackets. A
    statement with a comment or a multi-line string inside stays as it is."""
    code = _double_quotes(code)
    lines = code.split("\n")
    out: list[str] = []
    done = 0  # lines[:done] are in `out`
    for first, last, tokens in _statements(code):
        out.extend(lines[done:first])
        done = last + 1
        original = lines[first : last + 1]
        kinds = [t.type for t in tokens if t.type != tokenize.NL]
        if any(
            t.type == tokenize.COMMENT or (t.type == tokenize.STRING and t.start[0] != t.end[0]) for t in tokens
        ) or any(
            a == b == tokenize.STRING for a, b in zip(kinds, kinds[1:])
        ):  # comments, multi-line strings and implicitly joined ones stay as they are
            out.extend(original)
            continue
        joined = original[0] if first == last else _join(original)
        if len(joined) <= LINE_LENGTH and (first == last or not _has_magic_comma(joined)):
            out.append(joined)
            continue
        try:
            out.extend(_break(joined))
        except (ValueError, IndexError, StopIteration, tokenize.TokenError):
            out.extend(original)
    out.extend(lines[done:])
    return "\n".join(out)


def _statements(code: str):
    """(first row, last row, tokens) of each logical line, rows counted from 0."""
    tokens: list[tokenize.TokenInfo] = []
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER) or (
            tok.type == tokenize.NL and not tokens
        ):
            continue
        if tok.type == tokenize.COMMENT and not tokens:
            continue
        tokens.append(tok)
        if tok.type == tokenize.NEWLINE:
            yield tokens[0].start[0] - 1, tok.start[0] - 1, tokens
            tokens = []


def _join(lines: list[str]) -> str:
    """A statement written over several lines, on one: `f(\n    a,\n)` -> `f(a,)`."""
    out = lines[0].rstrip()
    for line in lines[1:]:
        part = line.strip()
        if not part:
            continue
        if out.endswith(tuple(_OPEN)) or part.startswith(tuple(_CLOSE)):
            out += part
        else:
            out += " " + part
    return out


def _has_magic_comma(line: str) -> bool:
    stack = [_parse(line.strip())]
    while stack:
        for p in stack.pop():
            if isinstance(p, _Group):
                if p.magic:
                    return True
                stack.extend(p.items)
    return False


def _double_quotes(code: str) -> str:
    """'text' -> "text" where the text holds no double quote (ruff's preferred quotes)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    lines = code.split("\n")
    for tok in reversed(tokens):
        if tok.type != tokenize.STRING or tok.start[0] != tok.end[0]:
            continue
        text = tok.string
        prefix = text[: len(text) - len(text.lstrip("rRbBuUfF"))]
        body = text[len(prefix) :]
        if not body.startswith("'") or body.startswith("'''"):
            continue
        inner = body[1:-1]
        if '"' in inner or ("\\" in inner and "r" in prefix.lower()):
            continue
        new = prefix + '"' + inner.replace("\\'", "'") + '"'
        row, (c0, c1) = tok.start[0] - 1, (tok.start[1], tok.end[1])
        lines[row] = lines[row][:c0] + new + lines[row][c1:]
    return "\n".join(lines)


def _parse(text: str) -> list:
    """The line's code as a sequence of str pieces and _Groups (bracket pairs)."""
    tokens = [
        t
        for t in tokenize.generate_tokens(io.StringIO(text).readline)
        if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT)
    ]
    stack: list[tuple[_Group | None, list]] = [(None, [])]
    pos = 0
    for tok in tokens:
        gap = text[pos : tok.start[1]]
        pos = tok.end[1]
        parts = stack[-1][1]
        if gap:
            parts.append(gap)
        if tok.type == tokenize.COMMENT:
            raise ValueError("a comment inside a long line")
        if tok.type == tokenize.OP and tok.string in _OPEN:
            group = _Group(tok.string, _CLOSE[_OPEN.index(tok.string)], [])
            parts.append(group)
            stack.append((group, group.parts))
        elif tok.type == tokenize.OP and tok.string in _CLOSE:
            group, inner = stack.pop()
            if group is None or group.close != tok.string:
                raise ValueError("unbalanced brackets")
            group.items = _split_items(inner)
            code = [q for q in inner if not (isinstance(q, str) and not q.strip())]
            group.comma = bool(code) and code[-1] == ","
        else:
            parts.append(tok.string)
    if len(stack) != 1:
        raise ValueError("unbalanced brackets")
    return _merge(stack[0][1])


def _merge(parts: list) -> list:
    out: list = []
    for p in parts:
        if isinstance(p, str) and out and isinstance(out[-1], str):
            out[-1] += p
        else:
            out.append(p)
    return out


def _split_items(parts: list) -> list[list]:
    """Split a group's contents at its top-level commas (a trailing comma adds no item)."""
    items: list[list] = [[]]
    for p in parts:
        if p == ",":
            items.append([])
        else:
            items[-1].append(p)
    cleaned = []
    for item in (_merge(i) for i in items):
        if item and isinstance(item[0], str):
            item[0] = item[0].lstrip()
            item = item if item[0] else item[1:]
        if item and isinstance(item[-1], str):
            item[-1] = item[-1].rstrip()
            item = item if item[-1] else item[:-1]
        cleaned.append(item)
    if cleaned and not cleaned[-1]:
        cleaned.pop()
    return cleaned


def _flat(parts: list) -> str:
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
        else:
            out.append(p.open + ", ".join(_flat(i) for i in p.items) + ("," if p.comma else "") + p.close)
    return "".join(out)


def _until_break(parts: list) -> str:
    """The flat text of `parts` up to and including the first opening bracket (the next place
    a line may break)."""
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
        else:
            out.append(p.open)
            break
    return "".join(out)


def _break(line: str) -> list[str]:
    indent = len(line) - len(line.lstrip(" "))
    text = line.strip()
    conditional = _conditional_assignment(text)
    if conditional is not None:  # `x = a if c else b`: parenthesized, one part a line
        target, parts = conditional
        inner = " " * (indent + INDENT)
        one = " ".join(parts)
        body = [inner + one] if len(inner) + len(one) <= LINE_LENGTH else [inner + p for p in parts]
        return [" " * indent + target + " = (", *body, " " * indent + ")"]
    parts = _parse(text)
    if text.startswith("def "):  # ruff breaks a signature's parameters, not its return annotation
        first = next(i for i, p in enumerate(parts) if isinstance(p, _Group))
        parts = [*parts[: first + 1], _flat(parts[first + 1 :])]
    return _render(parts, indent, " " * indent, after="")


def _conditional_assignment(text: str) -> tuple[str, list[str]] | None:
    """("x", ["a", "if c", "else b"]) for `x = a if c else b` (a conditional expression
    outside any bracket), else None."""
    depth, equals, cuts = 0, None, []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.OP and tok.string in _OPEN:
            depth += 1
        elif tok.type == tokenize.OP and tok.string in _CLOSE:
            depth -= 1
        elif depth == 0 and tok.type == tokenize.OP and tok.string == "=" and equals is None:
            equals = tok.start[1]
        elif depth == 0 and tok.type == tokenize.NAME and tok.string in ("if", "else", "lambda") and equals is not None:
            if tok.string == "lambda":
                return None
            cuts.append(tok.start[1])
    if equals is None or len(cuts) != 2 or text.startswith(("if ", "for ", "while ", "return ")):
        return None
    (c1, c2) = cuts
    return text[:equals].rstrip(), [text[equals + 1 : c1].strip(), text[c1:c2].strip(), text[c2:].strip()]


def _render(parts: list, indent: int, start: str, *, after: str) -> list[str]:
    """Lines for `parts`, the first of which begins with `start`; `after` is what the caller
    puts after the last line (for the fit of the last bracket pair)."""
    lines: list[str] = []
    current = start
    for i, p in enumerate(parts):
        if isinstance(p, str):
            current += p
            continue
        rest = parts[i + 1 :]
        follow = _until_break(rest) if any(isinstance(r, _Group) for r in rest) else _flat(rest) + after
        flat = _flat([p])
        if not p.magic and len(current) + len(flat) + len(follow) <= LINE_LENGTH:
            current += flat
            continue
        lines.append(current + p.open)
        inner = " " * (indent + INDENT)
        one_line = ", ".join(_flat(item) for item in p.items) + ("," if p.comma and not p.magic else "")
        if p.items and not p.magic and len(inner) + len(one_line) <= LINE_LENGTH:
            lines.append(inner + one_line)
        elif len(p.items) == 1 and not p.comma:  # one item: no comma to split at, none added
            lines.extend(_render(p.items[0], indent + INDENT, inner, after=""))
        else:
            for item in p.items:
                lines.extend(_render(item, indent + INDENT, inner, after=","))
                lines[-1] += ","
        current = " " * indent + p.close
    lines.append(current)
    return lines
