"""Parity checks between a source model and its translation."""

from __future__ import annotations

from .compare import DEFAULT_RTOL, Comparison, compare

__all__ = ["DEFAULT_RTOL", "Comparison", "compare"]
