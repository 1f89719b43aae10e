"""Translators, registered explicitly by (direction, key).

Directions: "keras->ir" (key: Keras class name), "ir->torch" (key: op kind),
"torch->ir" (key: ATen op or module class), "ir->keras" (key: op kind), "onnx->ir".
A duplicate key is an error; a missing key raises UnsupportedOpError naming the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ..graph.errors import GraphError, UnsupportedOpError

F = TypeVar("F", bound=Callable)

DIRECTIONS = ("keras->ir", "ir->torch", "torch->ir", "ir->keras", "onnx->ir")

_REGISTRY: dict[str, dict[str, Callable]] = {d: {} for d in DIRECTIONS}


def register(direction: str, *keys: str, replace: bool = False) -> Callable[[F], F]:
    """Register the decorated function as the translator for each of `keys`.

    `replace=True` lets a user's plugin take over a built-in translator on purpose.
    """
    if direction not in _REGISTRY:
        raise GraphError(f"unknown translation direction {direction!r}; expected one of {DIRECTIONS}")
    if not keys:
        raise GraphError("register() needs at least one key")

    def decorate(fn: F) -> F:
        table = _REGISTRY[direction]
        for key in keys:
            if key in table and not replace:
                raise GraphError(
                    f"{direction}: {key!r} is registered twice ({table[key].__module__}.{table[key].__name__} "
                    f"and {fn.__module__}.{fn.__name__}); pass replace=True to override on purpose"
                )
            table[key] = fn
        return fn

    return decorate


def lookup(direction: str, key: str) -> Callable | None:
    return _REGISTRY[direction].get(key)


def require(direction: str, key: str, *, name: str, where: str = "") -> Callable:
    fn = lookup(direction, key)
    if fn is None:
        raise UnsupportedOpError([(name, key, f"no {direction} translator")], where=where)
    return fn


def registered(direction: str) -> dict[str, Callable]:
    return dict(_REGISTRY[direction])


def unregister(direction: str, key: str) -> None:
    """Remove a translator (for plugins and tests); missing keys are ignored."""
    _REGISTRY[direction].pop(key, None)
