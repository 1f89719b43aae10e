"""Running a PyTorch source (an ExportedProgram or nn.Module) against an emitted Keras
directory: seeded inputs in PyTorch's layout, outputs compared in PyTorch's layout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..translate.output import read_manifest
from .compare import DEFAULT_RTOL
from .parity import ParityResult, check_outputs
from .runners import (
    import_emitted,
    keras_backend,
    run_keras,
    to_numpy,
)


def run_torch_source(
    source: Any, inputs: Sequence[np.ndarray], capture: dict[str, Any] | None = None
) -> list[np.ndarray]:
    """Outputs of an ExportedProgram (via its module()) or an nn.Module, as numpy arrays:
    structured results (a Hugging Face ModelOutput, dicts, nested tuples) flattened in
    pytree order; `capture` is the manifest's record of how the source was captured
    (keyword inputs, use_cache off)."""
    import torch

    from .torch_structure import run_structured

    tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
    return [to_numpy(o) for o in run_structured(source, tensors, capture)]


def load_emitted_keras(directory: str | Path) -> Any:
    """Import an emitted Keras model.py and return `load()`'s model."""
    keras_backend()
    module = import_emitted(directory)
    return module.load(Path(directory) / "model.weights.h5")


def check_torch_to_keras(
    source: Any,
    converted: str | Path,
    *,
    inputs: Sequence[np.ndarray] | None = None,
    seed: int = 0,
    batch: int = 2,
    tolerance: float = DEFAULT_RTOL,
    manifest: dict[str, Any] | None = None,
    keras_model: Any = None,
) -> ParityResult:
    """Run the PyTorch source and the emitted Keras model on the same inputs and compare
    every output (emitted outputs are brought back to PyTorch's axis order)."""
    model = keras_model if keras_model is not None else load_emitted_keras(converted)
    manifest = manifest or read_manifest(Path(converted))
    capture = manifest.get("source", {}).get("capture")
    return check_outputs(
        lambda arrays: run_torch_source(source, arrays, capture), lambda arrays: run_keras(model, arrays),
        manifest, inputs=inputs, seed=seed, batch=batch, tolerance=tolerance,
        device="cpu", backend=keras_backend, settings={"source": "pytorch"},
    )  # fmt: skip
