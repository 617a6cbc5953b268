"""Operating-point choosers hit their targets."""

from __future__ import annotations

import numpy as np
import pytest

from fracsight.evaluation.metrics import binary_metrics_at
from fracsight.evaluation.thresholds import (
    sensitivity_at_specificity,
    specificity_at_sensitivity,
    threshold_for_sensitivity,
    threshold_for_specificity,
    youden_threshold,
)

Y4 = [0, 0, 1, 1]
P4 = [0.1, 0.4, 0.35, 0.8]


def _case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.3 * y + 0.7 * rng.random(500), 0, 1)
    return y, p


def test_hand_computed_thresholds() -> None:
    c = threshold_for_sensitivity(Y4, P4, 0.9)
    assert (c.threshold, c.sensitivity, c.specificity) == (0.35, 1.0, 0.5)
    c = threshold_for_specificity(Y4, P4, 0.9)
    assert (c.threshold, c.sensitivity, c.specificity) == (0.8, 0.5, 1.0)
    c = youden_threshold(Y4, P4)  # J = 0.5 at 0.8 and at 0.35: the higher one wins
    assert (c.threshold, c.sensitivity, c.specificity) == (0.8, 0.5, 1.0)
    assert sensitivity_at_specificity(Y4, P4, 0.9) == 0.5
    assert specificity_at_sensitivity(Y4, P4, 0.9) == 0.5


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_threshold_for_sensitivity_is_highest_reaching_target(target: float) -> None:
    y, p = _case()
    c = threshold_for_sensitivity(y, p, target)
    m = binary_metrics_at(y, p, c.threshold)
    assert m["sensitivity"] >= target
    assert (m["sensitivity"], m["specificity"]) == pytest.approx((c.sensitivity, c.specificity))
    higher = np.min(p[p > c.threshold])
    assert binary_metrics_at(y, p, higher)["sensitivity"] < target
    assert "sensitivity >= " in c.description


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_threshold_for_specificity_is_lowest_reaching_target(target: float) -> None:
    y, p = _case()
    c = threshold_for_specificity(y, p, target)
    m = binary_metrics_at(y, p, c.threshold)
    assert m["specificity"] >= target
    assert (m["sensitivity"], m["specificity"]) == pytest.approx((c.sensitivity, c.specificity))
    lower = np.max(p[p < c.threshold])
    assert binary_metrics_at(y, p, lower)["specificity"] < target
    assert sensitivity_at_specificity(y, p, target) == pytest.approx(c.sensitivity)


def test_unreachable_specificity_predicts_nothing_positive() -> None:
    c = threshold_for_specificity([1, 0], [0.2, 0.9], 0.9)
    assert c.threshold > 0.9
    assert (c.sensitivity, c.specificity) == (0.0, 1.0)
    assert binary_metrics_at([1, 0], [0.2, 0.9], c.threshold)["tp"] == 0


def test_youden_maximizes_j() -> None:
    y, p = _case()
    c = youden_threshold(y, p)
    best = c.sensitivity + c.specificity
    for t in np.unique(p):
        m = binary_metrics_at(y, p, t)
        assert m["sensitivity"] + m["specificity"] <= best + 1e-12


def test_choice_fits_bundle_operating_point() -> None:
    from dataclasses import asdict

    from fracsight.bundle import OperatingPoint

    op = OperatingPoint(name="high_sensitivity", **asdict(threshold_for_sensitivity(Y4, P4)))
    assert op.threshold == 0.35


def test_class_threshold_holds_nothing_back_when_the_target_is_met() -> None:
    from fracsight.evaluation.thresholds import class_confidence_threshold

    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6]])
    choice = class_confidence_threshold([0, 1, 2], probs, target_accuracy=0.9)
    assert choice.min_probability == pytest.approx(1 / 3)
    assert choice.accuracy == 1.0 and choice.coverage == 1.0


def test_class_threshold_is_the_lowest_reaching_the_target() -> None:
    from fracsight.evaluation.thresholds import class_confidence_threshold, selective_accuracy

    # confident ones right, unsure ones wrong
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.85, 0.15], [0.6, 0.4], [0.55, 0.45]])
    y = [0, 0, 0, 1, 1]
    choice = class_confidence_threshold(y, probs, target_accuracy=0.9)
    assert choice.min_probability == pytest.approx(0.85)
    assert (choice.accuracy, choice.coverage) == (1.0, 0.6)
    assert selective_accuracy(y, probs, 0.99) == (None, 0.0)


def test_class_threshold_is_never_chosen_on_a_handful_of_images() -> None:
    """19 validation images, the one most confident right: "accuracy 1.000, coverage 0.053" chose
    the threshold, and on test no class was stated at all (top-1 accuracy there 0.526)."""
    from fracsight.evaluation.thresholds import class_confidence_threshold

    top = np.linspace(0.4, 0.9, 19)
    probs = np.stack([top, (1 - top) / 2, (1 - top) / 2], axis=1)
    y = [0 if k == 18 else 1 + k % 2 for k in range(19)]  # only the most confident one right
    choice = class_confidence_threshold(y, probs, target_accuracy=0.9)
    assert "no threshold reached" in choice.description and choice.coverage == pytest.approx(10 / 19)


def test_class_threshold_falls_back_to_the_confident_half_and_says_so() -> None:
    from fracsight.evaluation.thresholds import class_confidence_threshold

    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    choice = class_confidence_threshold([1, 1, 1, 1], probs, target_accuracy=0.9)
    assert choice.accuracy == 0.0 and choice.coverage == 0.5
    assert "no threshold reached" in choice.description


def test_triage_is_never_above_balanced() -> None:
    """Where Youden's point already reaches sensitivity 0.90 on validation data, the highest
    threshold that does was above it: "triage (fewer misses)" missed more than balanced."""
    from fracsight.training.refit import fracture_operating_points

    # 10 fractured, 10 normal: Youden's best cut (0.30) keeps every fractured image; the highest
    # cut that keeps 9 of them (0.55) is above it and gains no normal image
    y = np.array([1] * 10 + [0] * 10)
    p = np.array([0.30, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95] + [0.1] * 9 + [0.6])
    balanced, triage = fracture_operating_points(y, p)
    assert triage.threshold <= balanced.threshold
    assert triage.sensitivity >= balanced.sensitivity >= 0.9
    assert "already reaches" in triage.description
    # where balanced misses more than 10 %, triage is the lower threshold that does not
    p = np.array([0.2, 0.25, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95] + [0.1] * 7 + [0.3, 0.35, 0.4])
    balanced, triage = fracture_operating_points(y, p)
    assert triage.threshold < balanced.threshold and triage.sensitivity >= 0.9 > balanced.sensitivity
    assert "fewer misses" in triage.description
