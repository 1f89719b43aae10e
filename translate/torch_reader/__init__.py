"""PyTorch reader: torch.export ExportedProgram -> intermediate graph."""

from __future__ import annotations

from .reader import BATCH, AtenCall, Const, ReadOptions, TorchOpError, read_program

__all__ = ["BATCH", "AtenCall", "Const", "ReadOptions", "TorchOpError", "read_program"]
