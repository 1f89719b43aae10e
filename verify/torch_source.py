"""Running a PyTorch source (an ExportedProgram or nn.Module) against an emitted Keras
directory: seeded inputs in PyTorch's layout, outputs compared in PyTorch's layout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..translate.output import read_manifest
from .compare import DEFAULT_RTOL, compare
from .parity import ParityResult
from .runners import (
    RunError,
    import_emitted,
    keras_backend,
    make_inputs,
    run_keras,
    to_emitted,
    to_source,
)


def run_torch_source(source: Any, inputs: Sequence[np.ndarray], capture: dict[str, Any] | None = None) -> list[np.ndarray]:
    """Outputs of an ExportedProgram (via its module()) or an nn.Module, as numpy arrays:
    structured results (a Hugging Face ModelOutput, dicts, nested tuples) flattened in
    pytree order; `capture` is the manifest's record of how the source was captured
    (keyword inputs, use_cache off)."""
    import torch

    from ..torch_structure import run_structured

    tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
    return [o.detach().cpu().numpy() for o in run_structured(source, tensors, capture)]


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
    manifest = manifest or read_manifest(Path(converted))
    specs = manifest["inputs"]
    arrays = list(inputs) if inputs is not None else make_inputs(specs, seed=seed, batch=batch)
    if len(arrays) != len(specs):
        raise RunError(f"the model has {len(specs)} inputs, {len(arrays)} were given")
    expected = run_torch_source(source, arrays, manifest.get("capture"))
    model = keras_model if keras_model is not None else load_emitted_keras(converted)
    got = run_keras(model, [to_emitted(a, s.get("perm")) for a, s in zip(arrays, specs)])
    outs = manifest["outputs"]
    if len(got) != len(expected) or len(got) != len(outs):
        raise RunError(f"the source returns {len(expected)} outputs, the emitted model {len(got)}")
    comparisons = [compare(spec["name"], ref, to_source(g, spec.get("perm")), tolerance) for spec, ref, g in zip(outs, expected, got)]
    return ParityResult(comparisons, "cpu", keras_backend(), seed, len(arrays[0]) if arrays and arrays[0].ndim else batch, {"source": "pytorch"})
