"""Comparing tensors: errors relative to the reference's scale, with exact integer checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RTOL = 1e-4  # fp32 on CPU: max |a - b| <= rtol * max(|reference|)


@dataclass
class Comparison:
    name: str
    shape: tuple
    max_abs: float
    max_rel: float  # max |a - b| / scale, scale = max |reference| (1 if all zero)
    tolerance: float
    passed: bool
    problem: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def compare(name: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float = DEFAULT_RTOL) -> Comparison:
    ref, got = np.asarray(reference), np.asarray(candidate)
    if ref.shape != got.shape:
        return Comparison(name, ref.shape, float("inf"), float("inf"), tolerance, False, f"shape {got.shape} != {ref.shape}")
    if ref.size == 0:
        return Comparison(name, ref.shape, 0.0, 0.0, tolerance, True)
    if not np.issubdtype(ref.dtype, np.floating) or not np.issubdtype(got.dtype, np.floating):
        equal = np.array_equal(ref, got)
        diff = float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64))))
        return Comparison(name, ref.shape, diff, diff, 0.0, equal, "" if equal else "integer values differ")
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    bad_ref, bad_got = ~np.isfinite(ref64), ~np.isfinite(got64)
    if not np.array_equal(bad_ref, bad_got) or not np.array_equal(ref64[bad_ref], got64[bad_got]):
        return Comparison(name, ref.shape, float("inf"), float("inf"), tolerance, False, "NaN/Inf positions differ")
    finite = ~bad_ref
    diff = np.abs(ref64[finite] - got64[finite])
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.max(np.abs(ref64[finite]))) if diff.size else 0.0
    max_rel = max_abs / (scale if scale > 0 else 1.0)
    return Comparison(name, ref.shape, max_abs, max_rel, tolerance, max_rel <= tolerance)
