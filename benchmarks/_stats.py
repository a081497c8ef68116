"""Summary statistics over timing samples (pure code, no I/O)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `samples`, `fraction` in [0, 1] (0.95 for p95).

    Nearest rank (no interpolation) so that every reported number is one that was measured.

    Raises:
        ValueError: If `samples` is empty or `fraction` is outside [0, 1].
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarise(samples: Sequence[float]) -> dict[str, float | int]:
    """Median, p95, mean, min, max and count of `samples` (same unit as the samples).

    Raises:
        ValueError: If `samples` is empty.
    """
    if not samples:
        raise ValueError("summary of no samples")
    return {
        "n": len(samples),
        "median": statistics.median(samples),
        "p95": percentile(samples, 0.95),
        "mean": statistics.fmean(samples),
        "min": min(samples),
        "max": max(samples),
    }


def ratio(value: float | None, reference: float | None) -> float | None:
    """`value / reference`, or None when either is missing or the reference is not positive."""
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference
