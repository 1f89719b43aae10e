"""PyTorch reader: torch.export ExportedProgram -> intermediate graph."""

from __future__ import annotations

from . import families  # noqa: F401  (imports the op families, which register their translators)
from .calls import BATCH, AtenCall, Const, ModuleCall, TorchOpError
from .reader import ReadOptions, read_program

__all__ = ["BATCH", "AtenCall", "Const", "ModuleCall", "ReadOptions", "TorchOpError", "read_program"]
