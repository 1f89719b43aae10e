"""Conversion options shared by every direction, normalised in one place.

Imports nothing from ktorch's pipelines, so the CLI can check options before loading them.
"""

from __future__ import annotations

from enum import Enum

from .graph.errors import KtorchError

FRAMEWORKS = ("torch", "keras")
DEFAULT_TARGET = {"keras": "torch", "torch": "keras", "onnx": "torch"}  # source kind -> target when `to` is not given


class OptionError(KtorchError, ValueError):
    """An option value, or a combination of options, that ktorch cannot honour."""

    exit_code = 2


class Layout(str, Enum):
    """The emitted model's input/output layout: its own framework's (NATIVE) or the source's (KEEP)."""

    NATIVE = "native"
    KEEP = "keep"

    def __str__(self) -> str:
        return self.value


LAYOUT_CHOICES = ("native", "keep", *FRAMEWORKS)  # a framework name is an alias of native, for its own target


def normalize_layout(value: str | Layout, *, target: str) -> Layout:
    """'native' | 'keep' | the target framework's name (an alias of 'native') -> Layout.

    The other framework's name is refused: `layout="keras"` converting to PyTorch would
    otherwise silently mean something it does not say.
    """
    if target not in FRAMEWORKS:
        raise OptionError(f"the target framework must be 'torch' or 'keras', not {target!r}")
    if isinstance(value, Layout):
        return value
    text = str(value).lower()
    if text == target:
        return Layout.NATIVE
    if text in FRAMEWORKS:
        raise OptionError(
            f"layout {value!r} does not apply when converting to {target}: use 'native' (or {target!r}) for "
            f"{target}'s own layout, or 'keep' for the source's"
        )
    try:
        return Layout(text)
    except ValueError:
        raise OptionError(f"layout must be 'native', 'keep' or {target!r}, not {value!r}") from None


# sizes besides the batch a PyTorch export may keep symbolic (verify/torch_structure.DYNAMIC_AXES
# says which axis each names); "auto" asks for all of them
DYNAMIC_SIZES = ("seq", "height", "width")


def normalize_dynamic(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """'seq,height,width' | ['seq'] | 'auto' | None -> the size names, checked ('auto': ("auto",),
    every size that applies to the model's inputs, with no note for those that do not)."""
    if value is None:
        return ()
    names = [n.strip().lower() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
    if names == ["auto"]:
        return ("auto",)
    unknown = [n for n in names if n not in DYNAMIC_SIZES]
    if unknown:
        raise OptionError(
            f"dynamic sizes are {', '.join(DYNAMIC_SIZES)} (or 'auto' for all of them), not {', '.join(unknown)}"
        )
    return tuple(dict.fromkeys(names))


__all__ = [
    "DEFAULT_TARGET", "DYNAMIC_SIZES", "FRAMEWORKS", "LAYOUT_CHOICES", "Layout", "OptionError", "normalize_dynamic",
    "normalize_layout",
]  # fmt: skip
