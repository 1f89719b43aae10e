"""What both the writers and the verifier need at run time: importing an emitted model.py,
choosing the Keras backend before Keras is first imported, loading Triton's native library
before TensorFlow's, and the one order of a Keras model's outputs. Importing this module
imports no framework."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..graph.errors import KtorchError

__all__ = [
    "RunError",
    "import_emitted",
    "keras_backend",
    "keras_outputs",
    "output_keys",
    "preload_before_tensorflow",
    "tensorflow_cpu_defaults",
]


class RunError(KtorchError):
    """A model could not be run (missing dependency, bad file)."""

    exit_code = 3


def preload_before_tensorflow() -> None:
    """Load Triton's native library (used by torch.export, torch.compile, torchvision) before
    TensorFlow's: the other way round, the process dies with a segmentation fault."""
    if "tensorflow" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    with contextlib.suppress(Exception):  # a broken triton only matters to code that needs it
        import triton  # noqa: F401


def keras_backend() -> str:
    """The backend Keras uses in this process (chosen now if Keras is not imported yet)."""
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    tensorflow_cpu_defaults()
    if "KERAS_BACKEND" not in os.environ:
        os.environ["KERAS_BACKEND"] = "tensorflow" if importlib.util.find_spec("tensorflow") else "torch"
    if os.environ["KERAS_BACKEND"] == "tensorflow":
        preload_before_tensorflow()
        _import_tensorflow_quietly()
    return os.environ["KERAS_BACKEND"]


def tensorflow_cpu_defaults() -> None:
    """Turn on TensorFlow's oneDNN CPU kernels unless the user chose otherwise. TensorFlow enables
    them by default only on some CPUs (recent Intel ones); without them its CPU kernels run no
    channels-first (NCHW) convolution, so a `data_format="channels_first"` Keras model could
    not be run, and so not verified, on other machines (AMD, older Intel). Read by TensorFlow
    when it is first imported."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with the native start-up chatter (oneDNN, CUDA stubs, absl) sent to
    /dev/null: those lines are written to file descriptor 2 by C++ before any Python-level
    logging setting applies. Errors still surface as Python exceptions."""
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None or os.environ.get("KTORCH_DEBUG"):
        return
    try:
        saved = os.dup(2)
    except OSError:
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def import_emitted(directory: str | Path, filename: str = "model.py") -> Any:
    """Import an emitted model.py (or train.py) as a fresh module (never cached under a shared name)."""
    path = Path(directory) / filename
    name = f"ktorch_emitted_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RunError(f"{path}: cannot import the emitted {path.stem}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def output_keys(declared: Any) -> list[str] | None:
    """The names of a Keras model's outputs when it declares them as a dict (`model.output`),
    in the order it declares them; None for a tensor or a list of them."""
    if isinstance(declared, dict) and all(isinstance(k, str) for k in declared):
        return list(declared)
    return None


def keras_outputs(result: Any, *orders: Sequence[str] | None) -> list[Any]:
    """A Keras model's outputs as a list, in the one order ktorch gives them everywhere (the
    readers, the export worker, the manifest, the verifier). Dict outputs are paired by name:
    taken in the first of `orders` (a manifest's output names, the model's declared keys) that
    names exactly the result's keys, else sorted by key as `keras.tree.flatten` does. The order
    of the returned dict itself is never used: Keras on TensorFlow returns the declared order,
    Keras on torch sorts the keys. Anything else is flattened."""
    if isinstance(result, dict):
        for keys in orders:
            if keys is not None and sorted(keys) == sorted(result):
                return [result[k] for k in keys]
        return [result[k] for k in sorted(result)]
    if isinstance(result, (list, tuple)):
        return [leaf for item in result for leaf in keras_outputs(item)]
    return [result]
