"""Parity checks between a source model and its translation.

`verify_conversion` runs both sides and returns a `VerifyReport`; `assert_parity` raises
unless the conversion verifies (for tests); with `train_steps=K` both also check training parity,
which `check_training` runs on its own. `ktorch verify` is the command-line shell.
"""

from __future__ import annotations

from ..graph.errors import ParityError
from .compare import DEFAULT_RTOL, Comparison, compare
from .profiles import PROFILES, Profile, select_profile
from .report import REPORT_SCHEMA, VerifyReport, validate_report
from .runners import RunError
from .training import TrainingResult, TrainingStructureError
from .verifier import SourceMismatchError, StructuralError, assert_parity, check_training, verify_conversion

__all__ = [
    "DEFAULT_RTOL",
    "PROFILES",
    "REPORT_SCHEMA",
    "Comparison",
    "ParityError",
    "Profile",
    "RunError",
    "SourceMismatchError",
    "StructuralError",
    "TrainingResult",
    "TrainingStructureError",
    "VerifyReport",
    "assert_parity",
    "check_training",
    "compare",
    "select_profile",
    "validate_report",
    "verify_conversion",
]
