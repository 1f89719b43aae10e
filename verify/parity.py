"""Output-level parity of a converted directory against its source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..translate.output import read_manifest
from .compare import DEFAULT_RTOL, Comparison, compare
from .profiles import select_profile
from .runners import RunError, import_emitted, load_keras_model, make_inputs, run_keras, run_torch, to_emitted, to_source


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
    manifest = manifest or read_manifest(Path(converted))
    specs = manifest["inputs"]
    arrays = list(inputs) if inputs is not None else make_inputs(specs, seed=seed, batch=batch)
    if len(arrays) != len(specs):
        raise RunError(f"the model has {len(specs)} inputs, {len(arrays)} were given")
    from .runners import keras_backend

    if keras_model is None:
        from .sides import keras_device

        # the source runs where the emitted model runs (Keras's torch backend would
        # otherwise pick CUDA, with cuDNN's TF32, on a GPU machine)
        with keras_device(device):
            model = load_keras_model(source, trust_code=trust_code)
            expected = run_keras(model, arrays)
    else:
        expected = run_keras(keras_model, arrays)
    module = import_emitted(converted)
    torch_model = module.load(Path(converted) / "model.safetensors", device=device)
    emitted_inputs = [to_emitted(a, s.get("perm")) for a, s in zip(arrays, specs)]
    got = run_torch(torch_model, emitted_inputs, device=device)
    outs = manifest["outputs"]
    if len(got) != len(expected) or len(got) != len(outs):
        raise RunError(f"the source returns {len(expected)} outputs, the emitted model {len(got)}")
    compute = manifest.get("model", {}).get("compute_dtype")
    if compute:  # a float16/bfloat16 source is judged by its compute dtype's profile, at least
        tolerance = max(tolerance, select_profile(device, [compute]).rtol)
    comparisons = [
        compare(spec["name"], ref, to_source(g, spec.get("perm")), tolerance) for spec, ref, g in zip(outs, expected, got)
    ]
    return ParityResult(comparisons, device, keras_backend(), seed, len(arrays[0]) if arrays and arrays[0].ndim else batch)
