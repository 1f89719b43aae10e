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
`ktorch convert model.keras --plugin my_translators` (which imports `my_translators` from
sys.path or the current directory, or `--plugin path/to/my_translators.py`: it runs your code,
on your explicit request). Keras itself still needs the layer class to run
the source for verification: register it with `keras.saving.register_keras_serializable`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
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
    """Import a module of translators (this runs that module's code): a module name, found
    on sys.path or, as `python -m` would, in the current directory; or the path to a .py file."""
    from .graph.errors import KtorchError

    how = (
        "give a module name importable from the current directory or sys.path (set PYTHONPATH to its folder, "
        "or pip install its package), or the path to its .py file"
    )
    if module.endswith(".py") or os.sep in module or (os.altsep and os.altsep in module):
        _load_file(Path(module), how)
        return
    try:
        importlib.import_module(module)
        return
    except ModuleNotFoundError as exc:
        top = module.partition(".")[0]
        if exc.name != top or os.getcwd() in sys.path or "" in sys.path:
            raise KtorchError(f"cannot import plugin module {module!r}: {exc}; {how}") from None
    except ImportError as exc:
        raise KtorchError(f"cannot import plugin module {module!r}: {exc}") from None
    sys.path.insert(0, os.getcwd())  # what `python -m` does; the console script does not
    try:
        importlib.import_module(module)
    except ImportError as exc:
        sys.path.remove(os.getcwd())
        raise KtorchError(f"cannot import plugin module {module!r}: {exc}; {how}") from None


def _load_file(path: Path, how: str) -> None:
    """Import a plugin from its .py file, as a module named after the file."""
    from .graph.errors import KtorchError

    if not path.is_file() or path.suffix != ".py":
        raise KtorchError(f"cannot import plugin {str(path)!r}: no such .py file; {how}")
    name = path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path.resolve()):
        return
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        raise KtorchError(f"cannot import plugin {str(path)!r}; {how}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except ImportError as exc:
        del sys.modules[name]
        raise KtorchError(f"cannot import plugin {str(path)!r}: {exc}") from None


__all__ = ["keras_layer", "load_plugin", "torch_module", "torch_writer", "unregister"]
