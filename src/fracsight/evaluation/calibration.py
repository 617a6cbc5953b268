"""Calibration: expected calibration error, reliability table, temperature and Platt scaling.

All functions work on the binary fracture output. ``expected_calibration_error``
uses the positive-class probability (the reliability-diagram form), not the
max-class confidence.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fracsight.evaluation.metrics import _binary_inputs

__all__ = [
    "Calibration",
    "apply_temperature",
    "brier_score",
    "expected_calibration_error",
    "fit_calibration",
    "fit_platt",
    "fit_temperature",
    "probability_to_logit",
]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_LOW_T = 0.05  # the lowest temperature searched: below it, probabilities are near 0 or 1 only
log = logging.getLogger(__name__)


def expected_calibration_error(
    y: ArrayLike, p: ArrayLike, n_bins: int = 10
) -> tuple[float, list[dict[str, Any]]]:
    """ECE over ``n_bins`` equal-width bins of ``p`` in [0, 1], and the reliability table.

    ``ECE = sum_b (n_b / N) * |mean(y in b) - mean(p in b)|``. Bins are
    ``[k/n, (k+1)/n)`` with the edges ``k/n`` computed in floating point as the table
    reports them; the last bin also holds ``p == 1``. Each table row has
    ``bin_lower``, ``bin_upper``, ``count``, ``mean_predicted`` and
    ``fraction_positive`` (the last two ``None`` for empty bins).
    """
    ya, pa = _binary_inputs(y, p)
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    if pa.min() < 0.0 or pa.max() > 1.0:
        raise ValueError("p must be probabilities in [0, 1]")
    # bin b holds edges[b] <= p < edges[b + 1], exactly the edges the table reports; ``p * n_bins``
    # truncated would put e.g. p = 0.8999999999999999 in the bin from 0.9
    edges = np.arange(n_bins + 1) / n_bins
    bins = np.minimum(np.searchsorted(edges, pa, side="right") - 1, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=pa, minlength=n_bins)
    sum_y = np.bincount(bins, weights=ya.astype(np.float64), minlength=n_bins)
    table: list[dict[str, Any]] = []
    ece = 0.0
    for b in range(n_bins):
        count = int(counts[b])
        mean_p = float(sum_p[b] / count) if count else None
        frac_y = float(sum_y[b] / count) if count else None
        if count:
            ece += count / ya.size * abs(frac_y - mean_p)  # type: ignore[operator]
        # the observed fraction's 95% Wilson interval: a bin of a dozen images swings by 0.3 by chance
        low, high = wilson_interval(round(sum_y[b]), count) if count else (None, None)
        table.append(
            {
                "bin_lower": float(edges[b]),
                "bin_upper": float(edges[b + 1]),
                "count": count,
                "mean_predicted": mean_p,
                "fraction_positive": frac_y,
                "fraction_ci_low": low,
                "fraction_ci_high": high,
            }
        )
    return float(ece), table


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion ``successes / n``; (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"{successes} successes of {n}")
    phat = successes / n
    denominator = 1.0 + z * z / n
    centre = (phat + z * z / (2 * n)) / denominator
    half = z * math.sqrt(phat * (1.0 - phat) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    return low, 1.0 if successes == n else min(1.0, centre + half)


def brier_score(y: ArrayLike, p: ArrayLike) -> float:
    """Mean squared difference between probability and outcome (lower is better)."""
    ya, pa = _binary_inputs(y, p)
    return float(np.mean((pa - ya) ** 2))


def probability_to_logit(p: ArrayLike, eps: float = 1e-7) -> NDArray[np.float64]:
    """``log(p / (1 - p))`` with ``p`` clipped to ``[eps, 1 - eps]``."""
    pa = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(pa) - np.log1p(-pa)


def apply_temperature(logits: ArrayLike, temperature: float, bias: float = 0.0) -> NDArray[np.float64]:
    """Calibrated probabilities ``sigmoid(logits / temperature + bias)``."""
    if not temperature > 0:
        raise ValueError("temperature must be positive")
    z = np.asarray(logits, dtype=np.float64) / temperature + bias
    # numerically stable sigmoid
    return np.exp(-np.logaddexp(0.0, -z))


def _nll(z: NDArray[np.float64], y: NDArray[np.float64], log_t: float, bias: float = 0.0) -> float:
    """Mean binary NLL of ``sigmoid(z / exp(log_t) + bias)`` against ``y``."""
    s = z * math.exp(-log_t) + bias
    return float(np.mean(np.logaddexp(0.0, s) - y * s))


def fit_temperature(
    logits: ArrayLike,
    y: ArrayLike,
    *,
    bounds: tuple[float, float] = (_LOW_T, 20.0),
    tol: float = 1e-6,
) -> float:
    """Temperature ``T`` minimizing the binary NLL of ``sigmoid(logits / T)`` against ``y``.

    The NLL is convex in ``1/T``, hence unimodal in ``log T``: a coarse grid
    over ``log T`` in ``bounds`` brackets the minimum, then golden-section search
    refines it to ``tol``. If the optimum lies outside ``bounds`` (for example
    perfectly separated data wants ``T -> 0``) the nearest bound is returned.
    """
    ya, z = _binary_inputs(y, logits)
    yf = ya.astype(np.float64)
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    if not lo < hi:
        raise ValueError("bounds must be (low, high) with 0 < low < high")
    grid = np.linspace(lo, hi, 41)
    values = [_nll(z, yf, g) for g in grid]
    best = int(np.argmin(values))
    a = grid[max(best - 1, 0)]
    b = grid[min(best + 1, grid.size - 1)]
    c = b - _GOLDEN * (b - a)
    d = a + _GOLDEN * (b - a)
    fc, fd = _nll(z, yf, c), _nll(z, yf, d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = _nll(z, yf, c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = _nll(z, yf, d)
    return float(math.exp((a + b) / 2.0))


def fit_platt(
    logits: ArrayLike, y: ArrayLike, *, bounds: tuple[float, float] = (0.05, 20.0)
) -> tuple[float, float] | None:
    """Platt scaling: ``(temperature, bias)`` minimizing the NLL of ``sigmoid(logits / T + bias)``.

    Logistic regression of ``y`` on the logit (slope ``1/T``, intercept ``bias``)
    by Newton's method. Unlike a temperature alone, the bias can correct a model
    whose logits are shifted as a whole, e.g. by the positive-class weighting of
    its training loss. None when the fit does not give a temperature inside
    ``bounds`` (a slope that is not positive, or perfectly separated data).
    """
    ya, z = _binary_inputs(y, logits)
    yf = ya.astype(np.float64)
    x = np.stack([z, np.ones_like(z)], axis=1)
    w = np.array([1.0, 0.0])
    for _ in range(100):
        p = np.exp(-np.logaddexp(0.0, -(x @ w)))
        gradient = x.T @ (p - yf) / len(yf)
        hessian = (x.T * (p * (1.0 - p))) @ x / len(yf) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w = w - step
        if not np.all(np.isfinite(w)):
            return None
        if float(np.abs(step).max()) < 1e-10:
            break
    slope, bias = float(w[0]), float(w[1])
    if not bounds[0] <= (1.0 / slope if slope > 0 else -1.0) <= bounds[1]:
        return None
    return 1.0 / slope, bias


_SEPARATED = 0.95  # the share of logits of the right sign above which the data are nearly separated


def _at_the_floor(z: NDArray[np.float64], ya: NDArray[np.int64]) -> str:
    """Why the temperature sits at the floor of its search (warned, and said in the card): data
    separated perfectly or nearly (overconfident probabilities), or logits too small for the floor
    (a network whose outputs barely differ between images: underconfident ones, which the warning
    for separated data called overconfident)."""
    p = apply_temperature(z, _LOW_T)
    confidence = float(np.mean(np.maximum(p, 1.0 - p)))
    accuracy = float(np.mean((z > 0) == (ya == 1)))
    # data separated or nearly want T -> 0; data that are not can want it only where the logits
    # are too small for the floor (their probabilities there are less sure than they are right)
    if accuracy < _SEPARATED:
        log.warning(
            "calibration: the temperature sits at the floor of its search (%g): the logits on the %d "
            "calibration images are too small for it (the network's outputs barely differ between "
            "images: is it trained?); the probabilities are underconfident (mean confidence %.2f, "
            "accuracy %.2f)",
            _LOW_T,
            len(ya),
            confidence,
            accuracy,
        )
        return (
            f"; at the floor of its search ({_LOW_T:g}): the logits are too small for it, and the "
            "probabilities are underconfident"
        )
    log.warning(
        "calibration: the temperature sits at the floor of its search (%g): the %d calibration "
        "images are separated perfectly or nearly, too few or too easy to calibrate on; the "
        "probabilities and thresholds fitted on them are overconfident: calibrate on more images",
        _LOW_T,
        len(ya),
    )
    return (
        f"; at the floor of its search ({_LOW_T:g}): the calibration data are separated perfectly "
        "or nearly, too few or too easy to calibrate on, and the probabilities are overconfident"
    )


@dataclass(frozen=True)
class Calibration:
    """How logits become probabilities: ``sigmoid(logit / temperature + bias)``."""

    temperature: float
    bias: float
    method: str  # "platt" or "temperature"
    description: str


def fit_calibration(logits: ArrayLike, y: ArrayLike, folds: int = 5, seed: int = 0) -> Calibration:
    """Temperature scaling, or Platt scaling when it predicts held-out labels better.

    Both are fitted; Platt scaling (temperature and bias) is kept only if its
    ``folds``-fold cross-validated NLL on these data is lower than that of the
    temperature alone. With fewer than 10 examples of each class, the temperature
    alone (one parameter) is used.
    """
    ya, z = _binary_inputs(y, logits)
    temperature = fit_temperature(z, ya)
    described = f"temperature scaling (T = {temperature:.3f})"
    if temperature <= _LOW_T * 1.001:  # the search's floor: the data want T -> 0
        described += _at_the_floor(z, ya)
    only_t = Calibration(temperature, 0.0, "temperature", described)
    platt = fit_platt(z, ya)
    if platt is None or min(int(ya.sum()), int((1 - ya).sum())) < 2 * folds:
        return only_t
    parts = np.array_split(np.random.default_rng(seed).permutation(len(ya)), folds)
    yf = ya.astype(np.float64)
    held_out = {"temperature": 0.0, "platt": 0.0}
    for k, part in enumerate(parts):
        rest = np.concatenate([q for j, q in enumerate(parts) if j != k])
        t_k = fit_temperature(z[rest], ya[rest])
        held_out["temperature"] += _nll(z[part], yf[part], math.log(t_k)) * len(part)
        t_p, b_p = fit_platt(z[rest], ya[rest]) or (t_k, 0.0)
        held_out["platt"] += _nll(z[part], yf[part], math.log(t_p), b_p) * len(part)
    n = len(ya)
    nll_t, nll_p = held_out["temperature"] / n, held_out["platt"] / n
    if nll_p >= nll_t:
        return only_t
    t, b = platt
    return Calibration(
        t,
        b,
        "platt",
        f"Platt scaling (T = {t:.3f}, bias = {b:+.3f}), chosen over temperature scaling by "
        f"{folds}-fold cross-validated NLL on the calibration data ({nll_p:.4f} against {nll_t:.4f})",
    )
