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
