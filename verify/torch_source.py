"""Running a PyTorch source (an ExportedProgram or nn.Module) against an emitted Keras
directory: seeded inputs in PyTorch's layout, outputs compared in PyTorch's layout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..translate.output import read_manifest
from .compare import DEFAULT_RTOL
from .parity import ParityResult, check_outputs
from .runners import (
    example_sizes,
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
    sizes: dict[str, int] | None = None,
) -> ParityResult:
    """Run the PyTorch source and the emitted Keras model on the same inputs and compare
    every output (emitted outputs are brought back to PyTorch's axis order). Seeded inputs
    take the export example's dynamic sizes, or `sizes` ({"seq": 12})."""
    model = keras_model if keras_model is not None else load_emitted_keras(converted)
    manifest = manifest or read_manifest(Path(converted))
    capture = manifest.get("source", {}).get("capture")
    return check_outputs(
        lambda arrays: run_torch_source(source, arrays, capture), lambda arrays: run_keras(model, arrays),
        manifest, inputs=inputs, seed=seed, batch=batch, tolerance=tolerance,
        device="cpu", backend=keras_backend, settings={"source": "pytorch"}, sizes=sizes,
    )  # fmt: skip


def other_sizes(manifest: dict[str, Any]) -> list[dict[str, int]]:
    """Second values of the dynamic sizes to verify at, best first, inside each size's range:
    half as large again as the export example's (16 -> 24), a quarter larger or smaller, one
    more or less (a program's guards may exclude some sizes inside its range)."""
    sizes = manifest.get("source", {}).get("dynamic") or {}
    options: list[dict[str, int]] = []
    for pick in range(5):
        choice = {}
        for name, info in sizes.items():
            example, low, high = info.get("example"), info.get("min") or 0, info.get("max")
            if example is None:
                continue
            size = (example + max(1, example // 2), example + max(1, example // 4), example - max(1, example // 4),
                    example + 1, example - 1)[pick]  # fmt: skip
            if low <= size and (high is None or size <= high) and size != example:
                choice[name] = size
        if choice and len(choice) == len(sizes) and choice not in options:
            options.append(choice)
    return options


def check_torch_sizes(
    source: Any,
    converted: str | Path,
    *,
    manifest: dict[str, Any],
    seed: int = 0,
    batch: int = 2,
    tolerance: float = DEFAULT_RTOL,
    keras_model: Any = None,
) -> ParityResult:
    """check_torch_to_keras at the export example's sizes and, where the model takes dynamic
    sizes (a sequence length, an image size), again at other sizes (`other_sizes`): the second
    run's outputs are listed after the first's, named with the sizes (`logits @ seq=12`)."""
    first = check_torch_to_keras(
        source, converted, manifest=manifest, seed=seed, batch=batch, tolerance=tolerance, keras_model=keras_model
    )
    options = other_sizes(manifest)
    if not options:
        return first
    for sizes in options:
        try:
            second = check_torch_to_keras(
                source, converted, manifest=manifest, seed=seed + 1, batch=batch + 1, tolerance=tolerance,
                keras_model=keras_model, sizes=sizes,
            )  # fmt: skip
            break
        except AssertionError as exc:  # the program's guards refuse this size (torch: "Guard failed")
            if "Guard failed" not in str(exc):
                raise
    else:
        first.settings["sizes"] = [example_sizes(manifest), "no second size passes the program's guards"]
        return first
    label = ", ".join(f"{k}={v}" for k, v in sizes.items())
    first.outputs += [replace(c, name=f"{c.name} @ {label}") for c in second.outputs]
    first.settings["sizes"] = [example_sizes(manifest), sizes]
    return first
