"""Output-level parity of a converted directory against its source."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..translate.output import read_manifest
from .compare import DEFAULT_RTOL, Comparison, compare
from .profiles import select_profile
from .runners import (
    RunError,
    example_sizes,
    import_emitted,
    keras_device,
    load_keras_model,
    make_inputs,
    run_keras,
    run_torch,
    to_emitted,
    to_source,
)


@dataclass
class ParityResult:
    outputs: list[Comparison]
    device: str
    backend: str
    seed: int
    batch: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.outputs)

    @property
    def worst_rel(self) -> float:
        return max((c.max_rel for c in self.outputs), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "device": self.device,
            "source_backend": self.backend,
            "seed": self.seed,
            "batch": self.batch,
            "max_rel": self.worst_rel,
            "outputs": [c.to_dict() for c in self.outputs],
            **({"settings": self.settings} if self.settings else {}),
        }


Runner = Callable[[list[np.ndarray]], list[np.ndarray]]


def check_outputs(
    run_source: Runner,
    run_emitted: Runner,
    manifest: dict[str, Any],
    *,
    inputs: Sequence[np.ndarray] | None,
    seed: int,
    batch: int,
    tolerance: float,
    device: str,
    backend: Callable[[], str],
    settings: dict[str, Any] | None = None,
    source_name: str = "the source",
    sizes: dict[str, int] | None = None,
) -> ParityResult:
    """The one output-parity check: run the source (inputs in its layout) and the emitted model
    (inputs moved by each input's perm) on the same inputs, seeded ones unless given, and compare
    every output in the source's axis order. `sizes` gives the dynamic sizes of seeded inputs
    (default: the export example's)."""
    specs = manifest["inputs"]
    sizes = example_sizes(manifest) if sizes is None else sizes
    arrays = list(inputs) if inputs is not None else make_inputs(specs, seed=seed, batch=batch, sizes=sizes)
    if len(arrays) != len(specs):
        raise RunError(f"the model has {len(specs)} inputs, {len(arrays)} were given")
    expected = run_source(arrays)
    got = run_emitted([to_emitted(a, s.get("perm")) for a, s in zip(arrays, specs)])
    outs = manifest["outputs"]
    if len(got) != len(expected) or len(got) != len(outs):
        raise RunError(f"{source_name} returns {len(expected)} outputs, the emitted model {len(got)}")
    compute = manifest.get("model", {}).get("compute_dtype")
    if compute:  # a float16/bfloat16 source is judged by its compute dtype's profile, at least
        tolerance = max(tolerance, select_profile(device, compute=compute).rtol)
    comparisons = [
        compare(spec["name"], ref, to_source(g, spec.get("perm")), tolerance)
        for spec, ref, g in zip(outs, expected, got)
    ]
    used_batch = len(arrays[0]) if arrays and arrays[0].ndim else batch
    return ParityResult(comparisons, device, backend(), seed, used_batch, settings or {})


def check_keras_to_torch(
    source: str | Path,
    converted: str | Path,
    *,
    inputs: Sequence[np.ndarray] | None = None,
    seed: int = 0,
    batch: int = 2,
    tolerance: float = DEFAULT_RTOL,
    device: str = "cpu",
    trust_code: bool = False,
    manifest: dict[str, Any] | None = None,
    keras_model: Any = None,
) -> ParityResult:
    """Run the Keras source and the emitted PyTorch module on the same inputs and compare
    every output (emitted outputs are brought back to the source's axis order)."""
    from .runners import keras_backend

    manifest = manifest or read_manifest(Path(converted))
    names = [spec["name"] for spec in manifest["outputs"]]  # dict outputs are paired by these names

    def run_source(arrays: list[np.ndarray]) -> list[np.ndarray]:
        if keras_model is not None:
            return run_keras(keras_model, arrays, names)
        # the source runs where the emitted model runs (Keras's torch backend would
        # otherwise pick CUDA, with cuDNN's TF32, on a GPU machine)
        with keras_device(device):
            return run_keras(load_keras_model(source, trust_code=trust_code), arrays, names)

    def run_emitted(arrays: list[np.ndarray]) -> list[np.ndarray]:
        torch_model = import_emitted(converted).load(Path(converted) / "model.safetensors", device=device)
        return run_torch(torch_model, arrays, device=device)

    return check_outputs(
        run_source, run_emitted, manifest, inputs=inputs, seed=seed, batch=batch,
        tolerance=tolerance, device=device, backend=keras_backend,
    )  # fmt: skip
