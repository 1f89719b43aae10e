"""PyTorch writer: laid-out graph -> model.py (nn.Module) + model.safetensors."""

from __future__ import annotations

from . import families  # noqa: F401  (imports the op families, which register their translators)
