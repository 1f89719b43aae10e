"""What a conversion returns. Imports nothing from the pipelines, so every layer may use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .graph import Graph


@dataclass
class ConversionResult:
    out: Path
    graph: Graph  # the intermediate graph (a Keras target: its weights are let go once written)
    manifest: dict[str, Any]
    parity: Any = None  # verify.parity.ParityResult, when verified
    timings: dict[str, float] = field(default_factory=dict)
    keras_model: Any = None  # PyTorch -> Keras: the emitted model, weights loaded

    def __repr__(self) -> str:
        """One line (the manifest is in `.manifest`): where, which way, how big, how close."""
        model = self.manifest.get("model", {})
        if self.parity is None:
            parity = "not verified"
        else:
            parity = f"{'passed' if self.parity.passed else 'FAILED'}, worst rel err {self.parity.worst_rel:.3g}"
        return (
            f"ConversionResult(out={str(self.out)!r}, direction={self.manifest.get('direction')!r}, "
            f"nodes={model.get('nodes')}, parity={parity})"
        )
