"""Comparing tensors: errors relative to the reference's scale, with exact integer checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .profiles import PROFILES

DEFAULT_RTOL = PROFILES["cpu-fp32"].rtol  # max |a - b| <= rtol * max(|reference|), fp32 on CPU


@dataclass
class Comparison:
    name: str
    shape: tuple
    max_abs: float
    max_rel: float  # max |a - b| / scale, scale = max |reference| (1 if all zero)
    tolerance: float
    passed: bool
    problem: str = ""
    worst: list[dict] = field(default_factory=list)  # the largest differences: index, expected, got
    exact: bool = False  # integer/bool tensors (or a NaN/Inf mismatch): no tolerance can pass

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        if not self.worst:
            d.pop("worst")
        return d


def compare(
    name: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float = DEFAULT_RTOL, *, worst: int = 0
) -> Comparison:
    """Compare `candidate` with `reference` (same layout): floats within `tolerance`
    relative to the reference's scale, integers and bools exactly, NaN/Inf at the same
    positions. `worst` > 0 records that many of the largest differences."""
    ref, got = (_widen(np.asarray(a)) for a in (reference, candidate))
    if ref.shape != got.shape:
        return Comparison(
            name,
            ref.shape,
            float("inf"),
            float("inf"),
            tolerance,
            False,
            f"shape {got.shape} != {ref.shape}",
            exact=True,
        )
    if ref.size == 0:
        return Comparison(name, ref.shape, 0.0, 0.0, tolerance, True)
    if not np.issubdtype(ref.dtype, np.floating) or not np.issubdtype(got.dtype, np.floating):
        equal = np.array_equal(ref, got)
        full = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        diff = float(np.max(full))
        return Comparison(
            name,
            ref.shape,
            diff,
            diff,
            0.0,
            equal,
            "" if equal else "integer values differ",
            worst_elements(ref, got, full, worst),
            exact=True,
        )
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    bad_ref, bad_got = ~np.isfinite(ref64), ~np.isfinite(got64)
    if not np.array_equal(bad_ref, bad_got) or not np.array_equal(ref64[bad_ref], got64[bad_got], equal_nan=True):
        mismatch = (bad_ref != bad_got) | (bad_ref & bad_got & ~np.isclose(ref64, got64, equal_nan=True))
        return Comparison(
            name, ref.shape, float("inf"), float("inf"), tolerance, False, "NaN/Inf positions differ",
            worst_elements(ref, got, mismatch.astype(np.float64), worst), exact=True,
        )  # fmt: skip
    finite = ~bad_ref
    full = np.where(finite, np.abs(np.where(finite, ref64, 0.0) - np.where(finite, got64, 0.0)), 0.0)
    max_abs = float(full.max()) if finite.any() else 0.0
    scale = float(np.max(np.abs(ref64[finite]))) if finite.any() else 0.0
    max_rel = max_abs / (scale if scale > 0 else 1.0)
    passed = max_rel <= tolerance
    return Comparison(
        name,
        ref.shape,
        max_abs,
        max_rel,
        tolerance,
        passed,
        "",
        worst_elements(ref, got, full, worst) if max_abs > 0 else [],
    )


def _widen(array: np.ndarray) -> np.ndarray:
    """bfloat16 (an ml_dtypes type that numpy does not count as floating) as float32."""
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array


def worst_elements(reference: np.ndarray, candidate: np.ndarray, diff: np.ndarray, count: int) -> list[dict]:
    """The `count` positions with the largest `diff`, as {index, expected, got, abs_err}."""
    if count <= 0 or diff.size == 0 or not np.any(diff > 0):
        return []
    flat = diff.ravel()
    top = np.argsort(-flat, kind="stable")[:count]
    rows = []
    for i in top:
        if flat[i] <= 0:
            break
        index = tuple(int(x) for x in np.unravel_index(int(i), diff.shape))
        rows.append(
            {
                "index": list(index),
                "expected": _scalar(reference[index]),
                "got": _scalar(candidate[index]),
                "abs_err": _scalar(np.abs(np.float64(reference[index]) - np.float64(candidate[index]))),
            }
        )
    return rows


def _scalar(x: object) -> float | int | bool | str:
    """A JSON-friendly scalar (non-finite floats as strings, which JSON cannot hold)."""
    value = np.asarray(x).item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value
