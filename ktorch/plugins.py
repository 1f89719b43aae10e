"""Translators for your own layers: the plugin API.

A custom Keras layer that ktorch does not know stops conversion with a list of every
unsupported layer. Teach ktorch your layer by writing a translator that expresses it in
graph ops (see `ktorch.graph.all_ops()` for the catalogue):

    import ktorch.plugins

    @ktorch.plugins.keras_layer("ScaleByTwo")
    def scale_by_two(call):                  # call: ktorch.translate.keras_reader.LayerCall
        return call.emit("scale_shift", [call.x], {"scale": 2.0})

PyTorch modules work the same way with `@ktorch.plugins.torch_module("MyBlock")`.
Then convert from Python after importing that module, or from the command line with
`ktorch convert model.keras --plugin my_translators` (which imports `my_translators`, i.e.
runs your code, on your explicit request). Keras itself still needs the layer class to run
the source for verification: register it with `keras.saving.register_keras_serializable`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

from .translate.registry import register, unregister

F = TypeVar("F", bound=Callable)


def keras_layer(class_name: str, *, replace: bool = False) -> Callable[[F], F]:
    """Register the decorated function as the translator of Keras layer class `class_name`.
    `replace=True` overrides a built-in translator on purpose."""
    return register("keras->ir", class_name, replace=replace)


def torch_module(class_name: str, *, replace: bool = False) -> Callable[[F], F]:
    """Register the decorated function as the translator of every call of a PyTorch module
    class `class_name` (PyTorch -> Keras). It receives a ModuleCall (`call.inputs`,
    `call.state` — the module's state_dict as arrays —, `call.emit(op, inputs, attrs, weights)`)
    and returns the list of output values, one per output of the module call."""
    return register("torch->ir", f"module.{class_name}", replace=replace)


def torch_writer(op_kind: str, *, replace: bool = False) -> Callable[[F], F]:
    """Register the decorated function as the PyTorch code writer of graph op `op_kind`."""
    return register("ir->torch", op_kind, replace=replace)


def load_plugin(module: str) -> None:
    """Import a module of translators (this runs that module's code)."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        from .graph.errors import KtorchError

        raise KtorchError(f"cannot import plugin module {module!r}: {exc}") from None


__all__ = ["keras_layer", "load_plugin", "torch_module", "torch_writer", "unregister"]
