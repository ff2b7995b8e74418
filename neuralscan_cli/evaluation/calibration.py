"""Temperature scaling (Guo et al. 2017): one scalar T that makes a classifier's probabilities honest.

A network trained with label smoothing, or an average of several networks, is under-confident: it says 70%
where it is right 90% of the time. Dividing its log-probabilities by T < 1 (then renormalising) sharpens them;
T > 1 softens an over-confident one. The predicted class never changes (the map is monotonic), so accuracy,
macro-F1 and every argmax-based rule (the segmenter's no_tumor gate) are untouched; only the probabilities,
the confidence column and the calibration error move. T is fitted by minimising the negative log-likelihood
on labelled images the network did not train on.
"""
from __future__ import annotations

import numpy as np

T_BOUNDS = (0.05, 20.0)  # beyond these a fit has gone wrong (a degenerate or tiny fitting set)
_EPS = 1e-12


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """softmax(log(p) / T) row by row: (N, C) probabilities in, (N, C) float32 probabilities out."""
    p = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0 or p.size == 0:
        return p.astype(np.float32)
    z = np.log(np.clip(p, _EPS, 1.0)) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(y_true, probs) -> float:
    """Mean -log p(true class)."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], _EPS, 1.0))))


def fit_temperature(y_true, probs) -> float:
    """The T in `T_BOUNDS` minimising the NLL of `apply_temperature(probs, T)` against integer labels y_true.

    The NLL is convex in 1/T, so a bounded scalar search on log T finds the optimum."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(y) != len(p) or len(y) == 0:
        raise ValueError(f"need (N, C) probabilities and N labels, got {p.shape} and {len(y)}")
    logp = np.log(np.clip(p, _EPS, 1.0))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(log_norm - z[np.arange(len(y)), y]))

    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))
