"""Percentiles and medians over noisy runs: every reported figure is the median of ``--repeats`` runs."""

from __future__ import annotations

import statistics
from typing import Any, Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-field median over runs of the same measurement; fields missing from a run are skipped."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
        out[key] = round(statistics.median(values), 3) if values else runs[0][key]
    return out


def merge_measurements(measurements: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per measurement key (``c1``, ``c16_stream``, ...), the field-wise median over several measurements
    of one system (the baseline runs before and after another system, say)."""
    return {key: median_runs([m[key] for m in measurements if key in m]) for key in measurements[0]}
