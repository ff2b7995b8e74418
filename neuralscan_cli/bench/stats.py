"""Statistics of repeated timings: median and spread, Tukey outliers, bootstrap intervals, ratios with intervals.

Percentiles use linear interpolation between order statistics (numpy's default), so the quartiles of 1..9 are
3 and 7. A ratio is the ratio of two medians; its interval comes from resampling both samples independently.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def _arr(samples: Sequence[float]) -> np.ndarray:
    a = np.asarray(list(samples), dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def summarize(samples: Sequence[float]) -> dict:
    """median, p25, p75, iqr, p99, mean, std, min, max, n and outliers (count outside Tukey's 1.5 IQR fences)."""
    a = _arr(samples)
    if a.size == 0:
        return {"n": 0, "median": None, "p25": None, "p75": None, "iqr": None, "p99": None, "mean": None,
                "std": None, "min": None, "max": None, "outliers": 0}
    p25, med, p75, p99 = np.percentile(a, [25, 50, 75, 99])
    iqr = p75 - p25
    lo, hi = p25 - 1.5 * iqr, p75 + 1.5 * iqr
    return {"n": int(a.size), "median": float(med), "p25": float(p25), "p75": float(p75), "iqr": float(iqr),
            "p99": float(p99), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "outliers": int(((a < lo) | (a > hi)).sum())}


def bootstrap_ci(samples: Sequence[float], stat: Callable[[np.ndarray], float] = np.median, n: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of `stat` over `samples` (None, None for an empty sample)."""
    a = _arr(samples)
    if a.size == 0:
        return None, None
    if a.size == 1:
        v = float(stat(a))
        return v, v
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(int(n), a.size))
    if stat is np.median:
        values = np.median(a[idx], axis=1)
    elif stat is np.mean:
        values = a[idx].mean(axis=1)
    else:
        values = np.array([stat(a[i]) for i in idx])
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def ratio_ci(numerator: Sequence[float], denominator: Sequence[float], n: int = 1000, seed: int = 0,
             level: float = 0.95) -> dict:
    """median(numerator) / median(denominator) with a bootstrap interval (each sample resampled on its own).

    For times, ratio_ci(stock_seconds, accelerated_seconds) is the speed-up (> 1: the accelerated path is
    faster); for rates (images/s), ratio_ci(accelerated, stock).
    """
    a, b = _arr(numerator), _arr(denominator)
    if a.size == 0 or b.size == 0 or np.median(b) <= 0:
        return {"ratio": None, "lo": None, "hi": None}
    ratio = float(np.median(a) / np.median(b))
    rng = np.random.default_rng(seed)
    ma = np.median(a[rng.integers(0, a.size, size=(int(n), a.size))], axis=1)
    mb = np.median(b[rng.integers(0, b.size, size=(int(n), b.size))], axis=1)
    ok = mb > 0
    if not ok.any():
        return {"ratio": ratio, "lo": None, "hi": None}
    r = ma[ok] / mb[ok]
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(r, [alpha, 1 - alpha])
    return {"ratio": ratio, "lo": float(lo), "hi": float(hi)}


def speedup(stock_seconds: Sequence[float], accelerated_seconds: Sequence[float], **kw) -> dict:
    """How many times faster the accelerated path is (ratio of median times, with its interval)."""
    return ratio_ci(stock_seconds, accelerated_seconds, **kw)
