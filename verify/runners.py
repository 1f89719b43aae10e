"""Running models: the Keras source, an emitted PyTorch directory, and seeded inputs.

Keras runs on TensorFlow when it is installed, else on Keras's torch backend. The
backend is chosen before Keras is first imported (KERAS_BACKEND), so importing this
module does not import TensorFlow or Keras by itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..translate.runtime import (
    RunError,
    import_emitted,
    keras_backend,
    keras_outputs,
    output_keys,
    preload_before_tensorflow,
)

__all__ = [
    "RunError",
    "declared_output",
    "from_numpy",
    "import_emitted",
    "keras_backend",
    "keras_device",
    "keras_device_name",
    "keras_outputs",
    "output_keys",
    "load_keras_model",
    "example_sizes",
    "make_inputs",
    "padding_masks",
    "preload_before_tensorflow",
    "run_keras",
    "run_torch",
    "to_emitted",
    "to_numpy",
    "to_source",
]


def to_numpy(tensor: Any) -> np.ndarray:
    """A torch tensor as numpy; bfloat16, which numpy does not know, as ml_dtypes' bfloat16 (what
    Keras returns), or widened to float32 (exactly) where ml_dtypes is missing."""
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype != torch.bfloat16:
        return tensor.numpy()
    try:
        import ml_dtypes
    except ImportError:
        return tensor.float().numpy()
    return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)


def from_numpy(array: np.ndarray) -> Any:
    """A numpy array as a torch tensor; bfloat16 (ml_dtypes, as Keras returns it) keeps its dtype."""
    import torch

    array = np.ascontiguousarray(array)
    if str(array.dtype) == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def load_keras_model(path: str | Path, *, trust_code: bool = False, compile: bool = False) -> Any:
    """A Keras model file loaded by Keras, or a directory ktorch wrote for Keras built by its
    model.py's load() (code ktorch wrote, imported as an emitted PyTorch model.py is); with
    `compile`, a file is compiled from its saved compile configuration (and optimizer state)."""
    keras_backend()
    if Path(path).is_dir():
        try:
            return import_emitted(path).load()
        except Exception as exc:  # noqa: BLE001 - any error of the emitted code is reported the same way
            raise RunError(
                f"{path}: its model.py could not build the Keras model ({type(exc).__name__}: {exc})"
            ) from None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import keras
    except ImportError as exc:
        raise RunError(f"cannot run the Keras source: keras is not installed ({exc})") from None
    try:
        return keras.models.load_model(
            str(path), compile=compile, safe_mode=not trust_code, custom_objects=_application_layers()
        )
    except Exception as exc:  # noqa: BLE001 - keras raises many types here
        legacy = _load_with_tf_keras(path, trust_code)
        if legacy is not None:
            return legacy
        raise RunError(f"{path}: Keras could not load the model to run it ({type(exc).__name__}: {exc})") from None


def _load_with_tf_keras(path: str | Path, trust_code: bool) -> Any:
    """Keras 3 cannot read every tf.keras 2 `.h5` (nested models, some layer options);
    the tf_keras package (Keras 2 on TensorFlow) can, where it is installed."""
    if not str(path).endswith((".h5", ".hdf5")) or importlib.util.find_spec("tf_keras") is None:
        return None
    import h5py

    try:
        with h5py.File(path, "r") as f:
            version = f.attrs.get("keras_version", b"")
        if not (version.decode() if isinstance(version, bytes) else str(version)).startswith("2."):
            return None
        import tf_keras

        return tf_keras.models.load_model(str(path), compile=False, safe_mode=not trust_code)
    except Exception:  # noqa: BLE001 - the Keras 3 error is the one worth reporting
        return None


def _application_layers() -> dict[str, Any]:
    """Custom layer classes of keras.applications models (ConvNeXt, InceptionResNetV2),
    which Keras does not register, so that it can reload the models it saved."""
    found: dict[str, Any] = {}
    for module, names in (
        ("keras.src.applications.convnext", ("LayerScale", "StochasticDepth")),
        ("keras.src.applications.inception_resnet_v2", ("CustomScaleLayer",)),
    ):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        found.update({name: getattr(mod, name) for name in names if hasattr(mod, name)})
    return found


def run_keras(model: Any, inputs: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Run a Keras model; its outputs in ktorch's order (keras_outputs): dict outputs by name,
    the manifest's output `names` where they are the dict's keys, else as the model declares them."""
    import keras

    feed = list(inputs) if len(inputs) > 1 else inputs[0]
    structure = getattr(model, "_inputs_struct", None)
    if isinstance(structure, dict):  # a KerasHub backbone takes a dict: inputs come in its flattened order
        feed = keras.tree.pack_sequence_as(structure, list(inputs))
    out = model(feed, training=False)
    outs = keras_outputs(out, names, output_keys(declared_output(model)))

    # convert_to_numpy, not np.asarray: on the torch backend outputs may live on CUDA
    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in outs]


def declared_output(model: Any) -> Any:
    """`model.output` (the structure a functional model declares), or None where a model has
    none to give (a subclassed model never called symbolically)."""
    try:
        return model.output
    except (AttributeError, ValueError, RuntimeError):
        return None


def run_torch(model: Any, inputs: Sequence[np.ndarray], device: str = "cpu") -> list[np.ndarray]:
    import torch

    tensors = [torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in inputs]
    with torch.no_grad():
        out = model(*tensors)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [to_numpy(o) for o in outs]


def make_inputs(
    specs: list[dict[str, Any]],
    *,
    seed: int = 0,
    batch: int = 2,
    dynamic: int = 8,
    sizes: dict[str, int] | None = None,
) -> list[np.ndarray]:
    """Seeded random inputs in the source's layout: N(0, 1) floats, integers drawn inside
    `range` (an embedding's vocabulary) for integer inputs, and left- and right-padded masks for
    an input the manifest marks `padding_mask` (see padding_masks). A named dynamic axis (the
    spec's `dynamic`: {"seq": 1}) takes its size from `sizes`, any other unknown size `dynamic`."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        shape = [batch if i == 0 else (dynamic if d is None else int(d)) for i, d in enumerate(spec["shape"])]
        for name, axis in (spec.get("dynamic") or {}).items():
            if sizes and sizes.get(name) is not None:
                shape[int(axis)] = int(sizes[name])
        dtype = spec.get("dtype", "float32")
        low, high = spec.get("range", (0, 2))
        if spec.get("padding_mask") and len(shape) == 2:
            array = padding_masks(rng, shape[0], shape[1]).astype(dtype)
        elif spec.get("range") is not None or dtype.startswith("int") or dtype == "bool":
            array = rng.integers(low, high, size=shape).astype("int64" if dtype.startswith("float") else dtype)
        else:
            array = rng.standard_normal(shape).astype(dtype)
        arrays.append(array)
    return arrays


def padding_masks(rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
    """Padding masks as tokenizers write them (1 = token, 0 = padding): each row holds one run
    of 1 to `length` tokens, padded on the left (row 0), on the right (row 1), then on a random
    side. The first two rows always carry some padding: a left-padded row gives a causal model
    query rows whose keys are all masked, where attention implementations differ."""
    mask = np.zeros((batch, length), dtype="int64")
    for row in range(batch):
        padded = row < 2 and length > 1
        tokens = int(rng.integers(1, length if padded else length + 1))
        left = row == 0 or (row > 1 and bool(rng.integers(0, 2)))
        if left:
            mask[row, length - tokens :] = 1
        else:
            mask[row, :tokens] = 1
    return mask


def example_sizes(manifest: dict[str, Any]) -> dict[str, int]:
    """The export example's value of each dynamic size (a PyTorch source's `source.dynamic`)."""
    sizes = manifest.get("source", {}).get("dynamic") or {}
    return {name: int(info["example"]) for name, info in sizes.items() if info.get("example") is not None}


def to_emitted(array: np.ndarray, perm: Sequence[int] | None) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(perm)) if perm else array


def to_source(array: np.ndarray, perm: Sequence[int] | None) -> np.ndarray:
    if not perm:
        return array
    return np.ascontiguousarray(array.transpose(np.argsort(perm)))


def keras_device_name(device: str) -> str:
    # Keras's torch backend takes torch device names ("cpu:0" there breaks loading
    # models with integer variables); TensorFlow takes "cpu:0" / "gpu:0"
    if keras_backend() == "torch":
        return "cuda" if device.startswith("cuda") else "cpu"
    return "gpu:0" if device.startswith("cuda") else "cpu:0"


@contextlib.contextmanager
def keras_device(device: str) -> Iterator[None]:
    """Run Keras code on `device` ('cpu' or 'cuda'); picks the Keras backend first if
    Keras is not imported yet (TensorFlow when installed, else torch)."""
    name = keras_device_name(device)
    import keras

    with keras.device(name):
        yield
