"""Shared fixtures: Keras on TensorFlow (set before Keras is imported), seeded models,
and a helper that saves a Keras model, converts it, and asserts parity."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ktorch.translate.runtime import preload_before_tensorflow, tensorflow_cpu_defaults

tensorflow_cpu_defaults()  # channels-first convolutions on every CPU (see translate/runtime.py)

# Triton's native library (pulled in by torchvision, torch.export, torch.compile) crashes the
# process when it is loaded after TensorFlow's; load it first.
preload_before_tensorflow()

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def keras():
    import keras as keras_module

    return keras_module


def randomize_batchnorm(model: Any, seed: int = 0) -> None:
    """Give every BatchNormalization random moving statistics and affine weights
    (Keras 3 or tf_keras models)."""
    import keras

    rng = np.random.default_rng(seed)
    layers = model._flatten_layers() if hasattr(model, "_flatten_layers") else model.layers
    for layer in layers:
        tf_keras_bn = type(layer).__module__.startswith("tf_keras") and type(layer).__name__ == "BatchNormalization"
        if isinstance(layer, keras.layers.BatchNormalization) or tf_keras_bn:
            weights = layer.get_weights()
            c = weights[-1].shape
            weights[-2] = rng.normal(0.0, 0.5, c).astype("float32")
            weights[-1] = rng.uniform(0.5, 2.0, c).astype("float32")
            for i in range(len(weights) - 2):
                weights[i] = rng.normal(0.0, 0.5, c).astype("float32") + (1.0 if i == 0 and layer.scale else 0.0)
            layer.set_weights(weights)


def randomize_weights(model: Any, seed: int = 0, scale: float = 0.5) -> None:
    """Replace every weight (kernels and biases, which Keras initialises to zeros) with
    seeded normal values, so that a wrong bias or kernel order shows in the numbers."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, scale, np.shape(w)).astype("float32") for w in model.get_weights()])


def convert_keras(model: Any, tmp_path: Path, *, fmt: str = "h5", tolerance: float = 1e-4, **kwargs: Any):
    """Save `model`, convert it with verification, and return the ConversionResult.
    Conversion raises ParityError if the emitted model differs."""
    import ktorch

    src = tmp_path / f"{model.name}.{fmt}"
    model.save(src)
    result = ktorch.convert(src, tmp_path / f"{model.name}_torch", tolerance=tolerance, **kwargs)
    assert result.parity is not None and result.parity.passed, result.parity
    return result


def convert_tf_keras(model: Any, tmp_path: Path, *, tolerance: float = 1e-4, **kwargs: Any):
    """Save a `tf_keras` (Keras 2) model as .h5, convert it, and check parity against the
    in-memory tf_keras model (Keras 3 cannot load every Keras 2 config, e.g. `groups`
    on DepthwiseConv2D). Returns the ParityResult."""
    import ktorch
    from ktorch.verify.parity import check_keras_to_torch

    src = tmp_path / f"{model.name}.h5"
    model.save(src)
    result = ktorch.convert(src, tmp_path / f"{model.name}_torch", verify=False, **kwargs)
    assert result.manifest["source"]["keras_version"].startswith("2."), result.manifest["source"]
    return check_keras_to_torch(src, result.out, manifest=result.manifest, keras_model=model, tolerance=tolerance)


def forward_source(result: Any) -> str:
    """The text of the emitted forward()."""
    code = (result.out / "model.py").read_text()
    return code[code.index("def forward") : code.index("\ndef load")]


@pytest.fixture
def convert(tmp_path):
    def run(model, **kwargs):
        return convert_keras(model, tmp_path, **kwargs)

    return run
