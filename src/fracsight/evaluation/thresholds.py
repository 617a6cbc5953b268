"""Choosing operating points (decision thresholds) on validation data.

A sample is predicted positive when ``p >= threshold``. Every chooser returns a
:class:`ThresholdChoice` whose fields (``threshold``, ``description``,
``sensitivity``, ``specificity``) match :class:`fracsight.bundle.OperatingPoint`,
so ``OperatingPoint(name="high_sensitivity", **asdict(choice))`` records it.
The sensitivity and specificity are those measured on the data the threshold
was chosen on; expect them to move on new data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from fracsight.evaluation.metrics import roc_curve

__all__ = [
    "ClassThresholdChoice",
    "ThresholdChoice",
    "class_confidence_threshold",
    "selective_accuracy",
    "sensitivity_at_specificity",
    "specificity_at_sensitivity",
    "threshold_for_sensitivity",
    "threshold_for_specificity",
    "youden_threshold",
]


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold and the sensitivity/specificity it achieved where it was chosen."""

    threshold: float
    description: str
    sensitivity: float
    specificity: float


def _check_target(target: float) -> None:
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be in [0, 1], got {target}")


def threshold_for_sensitivity(y: ArrayLike, p: ArrayLike, target: float = 0.9) -> ThresholdChoice:
    """Highest threshold whose sensitivity is at least ``target``.

    The highest such threshold gives the best specificity for that sensitivity.
    """
    _check_target(target)
    fpr, tpr, thr = roc_curve(y, p)
    # skip the +inf point; tpr is non-decreasing as thresholds fall
    i = 1 + int(np.argmax(tpr[1:] >= target - 1e-12))
    return ThresholdChoice(
        threshold=float(thr[i]),
        description=f"highest threshold with sensitivity >= {target:g} on validation data",
        sensitivity=float(tpr[i]),
        specificity=float(1.0 - fpr[i]),
    )


def threshold_for_specificity(y: ArrayLike, p: ArrayLike, target: float = 0.9) -> ThresholdChoice:
    """Lowest threshold whose specificity is at least ``target`` (best sensitivity there).

    When only "predict nothing positive" reaches the target, the threshold is the
    next float above the highest score.
    """
    _check_target(target)
    fpr, tpr, thr = roc_curve(y, p)
    ok = np.flatnonzero(1.0 - fpr >= target - 1e-12)
    i = int(ok[-1])  # index 0 (threshold +inf, specificity 1) always qualifies
    threshold = float(thr[i]) if i > 0 else float(np.nextafter(thr[1], np.inf))
    return ThresholdChoice(
        threshold=threshold,
        description=f"lowest threshold with specificity >= {target:g} on validation data",
        sensitivity=float(tpr[i]),
        specificity=float(1.0 - fpr[i]),
    )


def youden_threshold(y: ArrayLike, p: ArrayLike) -> ThresholdChoice:
    """Threshold maximizing Youden's J = sensitivity + specificity - 1 (highest one on ties)."""
    fpr, tpr, thr = roc_curve(y, p)
    j = tpr[1:] - fpr[1:]
    i = 1 + int(np.argmax(j))
    return ThresholdChoice(
        threshold=float(thr[i]),
        description="maximum Youden's J (sensitivity + specificity - 1) on validation data",
        sensitivity=float(tpr[i]),
        specificity=float(1.0 - fpr[i]),
    )


def sensitivity_at_specificity(y: ArrayLike, p: ArrayLike, spec: float = 0.9) -> float:
    """Largest sensitivity among thresholds whose specificity is at least ``spec``."""
    _check_target(spec)
    fpr, tpr, _ = roc_curve(y, p)
    return float(tpr[1.0 - fpr >= spec - 1e-12].max())


def specificity_at_sensitivity(y: ArrayLike, p: ArrayLike, sens: float = 0.9) -> float:
    """Largest specificity among thresholds whose sensitivity is at least ``sens``."""
    _check_target(sens)
    fpr, tpr, _ = roc_curve(y, p)
    return float((1.0 - fpr[tpr >= sens - 1e-12]).max())


@dataclass(frozen=True)
class ClassThresholdChoice:
    """A minimum top-1 probability for an N-class head and what it gave where it was chosen.

    Fields match :class:`fracsight.bundle.ClassOperatingPoint`.
    """

    min_probability: float
    description: str
    accuracy: float | None  # of the images whose top class reached min_probability
    coverage: float  # share of images whose top class reached it


def selective_accuracy(y: ArrayLike, probs: ArrayLike, min_probability: float) -> tuple[float | None, float]:
    """``(accuracy, coverage)`` of top-1 predictions whose probability reaches ``min_probability``."""
    ya = np.asarray(y).astype(np.int64).ravel()
    pa = np.asarray(probs, dtype=np.float64)
    confident = pa.max(axis=1) >= min_probability
    if not confident.any():
        return None, 0.0
    correct = pa.argmax(axis=1) == ya
    return float(correct[confident].mean()), float(confident.mean())


def class_confidence_threshold(
    y: ArrayLike,
    probs: ArrayLike,
    target_accuracy: float = 0.9,
    fallback_coverage: float = 0.5,
    min_confident: int = 10,
) -> ClassThresholdChoice:
    """The lowest minimum top-1 probability at which the stated classes are right ``target_accuracy``
    of the time; below it a class is reported as uncertain.

    When the whole set already reaches the target, nothing is held back (the threshold is
    ``1 / number of classes``). A threshold counts only where it states a class for at least
    ``min_confident`` images (or half of them, in a smaller set): one right image at 0.35 was
    "accuracy 1.000" on validation, and stated no class at all on test. When no threshold
    reaches the target, the one that keeps the most confident ``fallback_coverage`` of the images
    is taken and the description says so.
    """
    _check_target(target_accuracy)
    ya = np.asarray(y).astype(np.int64).ravel()
    pa = np.asarray(probs, dtype=np.float64)
    if ya.size == 0:
        raise ValueError("y is empty")
    top = pa.max(axis=1)
    floor = 1.0 / pa.shape[1]
    fewest = min(min_confident, math.ceil(ya.size / 2))
    for t in [floor, *np.unique(top)]:
        accuracy, coverage = selective_accuracy(ya, pa, t)
        if int((top >= t).sum()) < fewest:
            break  # higher thresholds state a class for fewer still
        if accuracy is not None and accuracy >= target_accuracy - 1e-12:
            return ClassThresholdChoice(
                float(t),
                f"lowest top-1 probability whose classes were right >= {target_accuracy:g} of the time "
                "on validation data; below it the class is uncertain",
                accuracy,
                coverage,
            )
    t = float(np.quantile(top, 1.0 - fallback_coverage))
    accuracy, coverage = selective_accuracy(ya, pa, t)
    return ClassThresholdChoice(
        t,
        f"no threshold reached accuracy {target_accuracy:g} on validation data; this one states a class "
        f"for the most confident {fallback_coverage:.0%} of images only",
        accuracy,
        coverage,
    )
