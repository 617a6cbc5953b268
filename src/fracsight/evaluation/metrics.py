"""Classification metrics in plain numpy: ROC/PR curves, AUROC, AP, bootstrap CIs, kappa.

Conventions used throughout fracsight:

* ``y`` holds binary labels (0/1 or bool), ``p`` the score for the positive class
  (a probability, or any score where larger means "more likely fractured").
* A sample is predicted positive when ``p >= threshold``.
* Ratios whose denominator is zero (for example sensitivity with no positive
  samples) are ``None``, never NaN, so results serialize to strict JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "auroc",
    "average_precision",
    "binary_metrics_at",
    "bootstrap_ci",
    "cohen_kappa",
    "confusion_matrix",
    "multiclass_metrics",
    "multilabel_metrics",
    "pr_curve",
    "regions_to_targets",
    "roc_curve",
]

FloatArray = NDArray[np.float64]


# --------------------------------------------------------------------------- helpers


def _binary_inputs(y: ArrayLike, p: ArrayLike) -> tuple[NDArray[np.int64], FloatArray]:
    """Validate and convert labels/scores; raise ``ValueError`` with a clear message."""
    ya = np.asarray(y)
    pa = np.asarray(p, dtype=np.float64)
    if ya.ndim != 1 or pa.ndim != 1:
        raise ValueError(f"y and p must be 1-D, got shapes {ya.shape} and {pa.shape}")
    if ya.shape != pa.shape:
        raise ValueError(f"y and p differ in length: {ya.shape[0]} != {pa.shape[0]}")
    if ya.size == 0:
        raise ValueError("y and p are empty")
    if not np.all(np.isfinite(pa)):
        raise ValueError("p contains NaN or infinite values")
    if ya.dtype != bool and not np.all((ya == 0) | (ya == 1)):
        raise ValueError(f"y must be binary (0/1), got values {np.unique(ya)[:10].tolist()}")
    return ya.astype(np.int64), pa


def _class_indices(labels: ArrayLike, name: str) -> NDArray[np.int64]:
    """Class indices as int64, flattened; a value that is no whole number (a probability given
    for a label, NaN, a string) is refused by name: ``astype`` cut 0.7 to class 0, silently."""
    a = np.asarray(labels).ravel()
    if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        return a.astype(np.int64)
    odd = [v for v in a.tolist() if not (isinstance(v, (int, float)) and float(v).is_integer())][:5]
    raise ValueError(f"{name} must hold class indices (whole numbers), got {odd}")


def _threshold(value: Any) -> float:
    """A threshold as a float; a string or NaN named as what it is (numpy's error named a ufunc)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"threshold must be a number, got {type(value).__name__} {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"threshold must be a finite number, got {value}")
    return float(value)


def _require_both_classes(y: NDArray[np.int64], what: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(
            f"{what} needs both positive and negative samples (got {n_pos} of {y.size} positive)"
        )


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def _average_ranks(x: FloatArray) -> FloatArray:
    """1-based ranks of ``x``; tied values share the average of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new_group = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], xs.size]  # exclusive
    mean_rank = (starts + ends - 1) / 2.0 + 1.0
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def _counts_by_threshold(
    y: NDArray[np.int64], p: FloatArray
) -> tuple[FloatArray, NDArray[np.int64], NDArray[np.int64]]:
    """Distinct thresholds (descending) with true/false positive counts at ``p >= t``."""
    order = np.argsort(-p, kind="mergesort")
    ps = p[order]
    ys = y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(ps)), ps.size - 1]
    tps = np.cumsum(ys)[last_of_group]
    fps = (last_of_group + 1) - tps
    return ps[last_of_group], tps, fps


# --------------------------------------------------------------------------- binary curves


def roc_curve(y: ArrayLike, p: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """ROC curve as ``(fpr, tpr, thresholds)``, thresholds descending.

    The first point is ``(0, 0)`` at threshold ``+inf`` (nothing predicted
    positive); each following point is one distinct score used as threshold.

    >>> fpr, tpr, thr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> tpr.tolist(), fpr.tolist()
    ([0.0, 0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5, 1.0])
    """
    ya, pa = _binary_inputs(y, p)
    _require_both_classes(ya, "roc_curve")
    thr, tps, fps = _counts_by_threshold(ya, pa)
    n_pos = float(ya.sum())
    n_neg = float(ya.size - ya.sum())
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    return fpr, tpr, np.r_[np.inf, thr]


def auroc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic.

    Equals the probability that a random positive scores above a random
    negative, counting ties as one half (average ranks). Raises ``ValueError``
    when ``y`` holds only one class.
    """
    ya, pa = _binary_inputs(y, p)
    _require_both_classes(ya, "auroc")
    ranks = _average_ranks(pa)
    n_pos = int(ya.sum())
    n_neg = ya.size - n_pos
    u = ranks[ya == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pr_curve(y: ArrayLike, p: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Precision-recall curve as ``(precision, recall, thresholds)``, thresholds descending.

    The first point is ``precision=1, recall=0`` at threshold ``+inf``; recall
    is non-decreasing along the arrays.
    """
    ya, pa = _binary_inputs(y, p)
    n_pos = int(ya.sum())
    if n_pos == 0:
        raise ValueError("pr_curve needs at least one positive sample")
    thr, tps, fps = _counts_by_threshold(ya, pa)
    precision = np.r_[1.0, tps / (tps + fps)]
    recall = np.r_[0.0, tps / n_pos]
    return precision, recall, np.r_[np.inf, thr]


def average_precision(y: ArrayLike, p: ArrayLike) -> float:
    """Average precision: ``sum_k (R_k - R_{k-1}) * P_k`` over distinct thresholds.

    This is the step-wise (non-interpolated) area under the PR curve. Raises
    ``ValueError`` when there are no positive samples.
    """
    precision, recall, _ = pr_curve(y, p)
    return float(np.sum(np.diff(recall) * precision[1:]))


# --------------------------------------------------------------------------- bootstrap


def _cluster_sampler(
    groups: Sequence[Hashable], n: int, rng: np.random.Generator
) -> Callable[[], NDArray[np.int64]]:
    """A function drawing whole groups with replacement; returns the sample indices."""
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} samples")
    codes: dict[Hashable, int] = {}
    inverse = np.array([codes.setdefault(g, len(codes)) for g in groups], dtype=np.int64)
    order = np.argsort(inverse, kind="mergesort")
    lengths = np.bincount(inverse, minlength=len(codes))
    starts = np.cumsum(lengths) - lengths

    def draw() -> NDArray[np.int64]:
        picks = rng.integers(0, lengths.size, lengths.size)
        lens = lengths[picks]
        offsets = np.cumsum(lens) - lens
        return order[np.repeat(starts[picks] - offsets, lens) + np.arange(lens.sum())]

    return draw


def bootstrap_ci(
    metric_fn: Callable[[FloatArray, FloatArray], float | None],
    y: ArrayLike,
    p: ArrayLike,
    n: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    *,
    stratified: bool = True,
    groups: Sequence[Hashable] | None = None,
    both_classes: bool = True,
) -> tuple[float, float]:
    """Percentile bootstrap ``(low, high)`` interval of ``metric_fn(y, p)``.

    ``stratified=True`` (default) resamples positives and negatives separately,
    keeping their counts fixed; ``False`` resamples all samples together. With
    ``groups`` (for example study or patient ids) whole groups are resampled
    (cluster bootstrap, not stratified), so correlated images of one study do
    not narrow the interval. Unstratified resamples with one class only, and
    resamples where the metric returns ``None`` or NaN, are skipped. ``both_classes=False`` for a
    metric of one class (sensitivity, specificity): data and resamples of one class are kept.
    Deterministic for a given ``seed``.
    """
    ya, pa = _binary_inputs(y, p)
    if n < 1:
        raise ValueError("n must be at least 1")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(ya == 1)
    neg = np.flatnonzero(ya == 0)
    draw_groups = None if groups is None else _cluster_sampler(groups, ya.size, rng)
    if draw_groups is None and stratified and both_classes and (pos.size == 0 or neg.size == 0):
        raise ValueError("stratified bootstrap needs both classes")
    values: list[float] = []
    for _ in range(n):
        if draw_groups is not None:
            idx = draw_groups()
        elif stratified:
            idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        else:
            idx = rng.integers(0, ya.size, ya.size)
        if both_classes and (draw_groups is not None or not stratified):
            s = int(ya[idx].sum())
            if s == 0 or s == idx.size:
                continue
        value = metric_fn(ya[idx].astype(np.float64), pa[idx])
        if value is None or not np.isfinite(value):
            continue
        values.append(float(value))
    if not values:
        raise ValueError("no bootstrap resample gave a defined metric value")
    low, high = np.quantile(np.asarray(values), [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


# --------------------------------------------------------------------------- thresholded


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> NDArray[np.int64]:
    """``n_classes x n_classes`` counts; rows are true classes, columns predicted ones."""
    t = _class_indices(y_true, "y_true")
    q = _class_indices(y_pred, "y_pred")
    if t.shape != q.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} != {q.size}")
    for name, arr in (("y_true", t), ("y_pred", q)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise ValueError(f"{name} has labels outside [0, {n_classes})")
    return np.bincount(t * n_classes + q, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _kappa_from_cm(cm: NDArray[np.int64]) -> float | None:
    total = cm.sum()
    if total == 0:
        return None
    observed = np.trace(cm) / total
    expected = float(np.sum(cm.sum(axis=1) * cm.sum(axis=0))) / float(total) ** 2
    if expected >= 1.0:
        return None  # both raters used one and the same class for everything: undefined
    return float((observed - expected) / (1.0 - expected))


def cohen_kappa(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None) -> float | None:
    """Cohen's kappa (unweighted) between two labelings; binary or multi-class.

    ``kappa = (p_o - p_e) / (1 - p_e)``. Returns ``None`` when undefined
    (``p_e == 1``: both labelings put every sample in the same single class).
    """
    t = _class_indices(y_true, "y_true")
    q = _class_indices(y_pred, "y_pred")
    if n_classes is None:
        n_classes = int(max(t.max(initial=0), q.max(initial=0))) + 1
    return _kappa_from_cm(confusion_matrix(t, q, n_classes))


def binary_metrics_at(y: ArrayLike, p: ArrayLike, threshold: float) -> dict[str, Any]:
    """Counts and rates when predicting positive for ``p >= threshold``.

    Keys: threshold, tp, fp, tn, fn, sensitivity, specificity, precision,
    recall, npv, f1, accuracy, cohen_kappa. Undefined ratios are ``None``.
    """
    ya, pa = _binary_inputs(y, p)
    threshold = _threshold(threshold)
    pred = (pa >= threshold).astype(np.int64)
    tp = int(np.sum((pred == 1) & (ya == 1)))
    fp = int(np.sum((pred == 1) & (ya == 0)))
    tn = int(np.sum((pred == 0) & (ya == 0)))
    fn = int(np.sum((pred == 0) & (ya == 1)))
    sensitivity = _ratio(tp, tp + fn)
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": sensitivity,
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "recall": sensitivity,
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, ya.size),
        "cohen_kappa": cohen_kappa(ya, pred, n_classes=2),
    }


# --------------------------------------------------------------------------- multi-class / label


def _safe_auroc(y: NDArray[np.int64], p: FloatArray) -> float | None:
    n_pos = int(y.sum())
    return None if n_pos in (0, y.size) else auroc(y, p)


def _mean_defined(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def multiclass_metrics(y: ArrayLike, probs: ArrayLike, class_names: Sequence[str]) -> dict[str, Any]:
    """Metrics for a single-label multi-class head (for example fracture type).

    ``y`` holds integer class indices, ``probs`` is ``(N, K)``; the prediction
    is the arg-max. Per class: precision, recall, F1 (``2tp / (2tp + fp + fn)``),
    support and one-vs-rest AUROC. ``macro_f1`` / ``macro_auroc`` average the
    classes where the value is defined (``None`` values are left out).
    """
    ya = _class_indices(y, "y")
    pa = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if pa.ndim != 2 or pa.shape != (ya.size, k):
        raise ValueError(f"probs must have shape ({ya.size}, {k}), got {pa.shape}")
    if ya.size == 0:
        raise ValueError("y is empty")
    pred = np.argmax(pa, axis=1)
    cm = confusion_matrix(ya, pred, k)
    per_class: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(class_names):
        tp = int(cm[i, i])
        fp = int(cm[:, i].sum() - tp)
        fn = int(cm[i, :].sum() - tp)
        per_class[name] = {
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "support": int(cm[i, :].sum()),
            "auroc": _safe_auroc((ya == i).astype(np.int64), pa[:, i]),
        }
    return {
        "n": int(ya.size),
        "class_names": list(class_names),
        "accuracy": float(np.trace(cm) / ya.size),
        "macro_f1": _mean_defined([c["f1"] for c in per_class.values()]),
        "macro_auroc": _mean_defined([c["auroc"] for c in per_class.values()]),
        "cohen_kappa": _kappa_from_cm(cm),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def regions_to_targets(regions: Sequence[Sequence[str]], region_names: Sequence[str]) -> NDArray[np.int64]:
    """Turn per-sample tuples of region names into an ``(N, K)`` 0/1 target matrix."""
    index = {name: i for i, name in enumerate(region_names)}
    targets = np.zeros((len(regions), len(region_names)), dtype=np.int64)
    for row, names in enumerate(regions):
        if isinstance(names, str):
            names = (names,)
        for name in names:
            if name not in index:
                raise ValueError(f"unknown region {name!r}; known: {list(region_names)}")
            targets[row, index[name]] = 1
    return targets


def multilabel_metrics(targets: ArrayLike, probs: ArrayLike, region_names: Sequence[str]) -> dict[str, Any]:
    """Metrics for the multi-label body-region head.

    ``targets`` and ``probs`` are ``(N, K)``. Per region: AUROC (``None`` if the
    region is all-positive or all-negative) with its positive/negative counts.

    ``region_accuracy`` is the share of images whose top-1 predicted region
    (arg-max of ``probs``) is one of their true regions. Images with no true
    region are left out of it; ``n_evaluated`` says how many were counted.
    """
    ta = np.asarray(targets).astype(np.int64)
    pa = np.asarray(probs, dtype=np.float64)
    k = len(region_names)
    if ta.ndim != 2 or ta.shape[1] != k or pa.shape != ta.shape:
        raise ValueError(f"targets and probs must both have shape (N, {k}); got {ta.shape} and {pa.shape}")
    per_region: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(region_names):
        n_pos = int(ta[:, i].sum())
        per_region[name] = {
            "auroc": _safe_auroc(ta[:, i], pa[:, i]),
            "n_positive": n_pos,
            "n_negative": int(ta.shape[0] - n_pos),
        }
    has_region = ta.sum(axis=1) > 0
    top1 = np.argmax(pa, axis=1) if pa.size else np.zeros(0, dtype=np.int64)
    hits = ta[np.arange(ta.shape[0]), top1] == 1 if ta.shape[0] else np.zeros(0, dtype=bool)
    n_eval = int(has_region.sum())
    return {
        "region_names": list(region_names),
        "per_region": per_region,
        "macro_auroc": _mean_defined([r["auroc"] for r in per_region.values()]),
        "region_accuracy": _ratio(int(hits[has_region].sum()), n_eval),
        "n_evaluated": n_eval,
    }
