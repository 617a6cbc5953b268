"""Calibration: ECE, reliability table, temperature scaling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fracsight.evaluation.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_calibration,
    fit_platt,
    fit_temperature,
    probability_to_logit,
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def test_ece_hand_computed_and_table() -> None:
    y = [0, 0, 1, 1]
    p = [0.05, 0.15, 0.15, 0.95]
    ece, table = expected_calibration_error(y, p, n_bins=10)
    # bins: 0.05 -> |0 - .05|, two at 0.15 -> |.5 - .15|, 0.95 -> |1 - .95|
    assert ece == pytest.approx(0.25 * 0.05 + 0.5 * 0.35 + 0.25 * 0.05)
    assert len(table) == 10
    assert table[1] == {
        "bin_lower": 0.1,
        "bin_upper": 0.2,
        "count": 2,
        "mean_predicted": pytest.approx(0.15),
        "fraction_positive": 0.5,
        "fraction_ci_low": pytest.approx(0.0945, abs=1e-4),  # Wilson, 1 of 2
        "fraction_ci_high": pytest.approx(0.9055, abs=1e-4),
    }
    assert table[5]["count"] == 0 and table[5]["mean_predicted"] is None
    # p == 1 lands in the last bin
    _, table = expected_calibration_error([1], [1.0], n_bins=4)
    assert table[-1]["count"] == 1


def test_ece_small_when_calibrated_large_when_overconfident() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, 40_000)
    y = (rng.random(z.size) < _sigmoid(z)).astype(int)
    calibrated, _ = expected_calibration_error(y, _sigmoid(z))
    overconfident, _ = expected_calibration_error(y, _sigmoid(4.0 * z))
    assert calibrated < 0.015
    assert overconfident > 0.1


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_temperature_recovers_known_temperature(true_t: float) -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 2.0, 20_000)
    y = (rng.random(z.size) < _sigmoid(z)).astype(int)
    logits = z * true_t  # a model whose logits are off by the factor T
    fitted = fit_temperature(logits, y)
    assert fitted == pytest.approx(true_t, rel=0.1)
    before, _ = expected_calibration_error(y, apply_temperature(logits, 1.0))
    after, _ = expected_calibration_error(y, apply_temperature(logits, fitted))
    assert after < before


def _shifted(n: int, slope: float, bias: float, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a model whose true probability is sigmoid(slope * logit + bias)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-1.0, 2.5, n)
    y = (rng.random(n) < _sigmoid(slope * logits + bias)).astype(int)
    return logits, y


def test_fit_platt_recovers_slope_and_bias() -> None:
    logits, y = _shifted(40_000, slope=0.75, bias=-1.0)
    fitted = fit_platt(logits, y)
    assert fitted is not None
    temperature, bias = fitted
    assert temperature == pytest.approx(1 / 0.75, rel=0.05) and bias == pytest.approx(-1.0, abs=0.08)
    assert fit_platt([-3.0, -1.0, 1.0, 3.0], [0, 0, 1, 1]) is None  # separable: no finite fit


def test_fit_calibration_adds_a_bias_only_where_it_helps() -> None:
    # a model trained with up-weighted positives: its logits are shifted up as a whole
    logits, y = _shifted(2_000, slope=0.75, bias=-1.0)
    shifted = fit_calibration(logits, y)
    assert shifted.method == "platt" and shifted.bias == pytest.approx(-1.0, abs=0.25)
    p_t = apply_temperature(logits, fit_temperature(logits, y))
    p_c = apply_temperature(logits, shifted.temperature, shifted.bias)
    assert expected_calibration_error(y, p_c)[0] < expected_calibration_error(y, p_t)[0]
    # no shift: whichever method wins, the bias stays near zero
    unshifted = fit_calibration(*_shifted(2_000, slope=0.75, bias=0.0))
    assert abs(unshifted.bias) < 0.2
    # too few examples of a class for cross-validation: the temperature alone
    few = fit_calibration(*_shifted(60, slope=0.75, bias=-3.0))
    assert few.method == "temperature" and few.bias == 0.0


def test_a_calibration_at_the_floor_of_its_search_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """18 validation images separated perfectly: T sat at 0.05, both thresholds at 1.000 beside a
    "no fracture" at >0.999, and nothing said the calibration was worthless."""
    with caplog.at_level("WARNING", logger="fracsight.evaluation"):
        separated = fit_calibration([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0] * 3, [0, 0, 0, 1, 1, 1] * 3)
    assert separated.temperature == pytest.approx(0.05, rel=1e-3)
    assert "at the floor of its search (0.05)" in separated.description
    assert "the 18 calibration images are separated perfectly or nearly" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="fracsight.evaluation"):
        fitted = fit_calibration(*_shifted(2_000, slope=0.75, bias=0.0))
    assert "floor" not in fitted.description and not caplog.text
    # logits far too small (a barely trained network): the floor again, but the probabilities are
    # underconfident, and the warning for separated data said overconfident
    y = np.arange(400) % 2
    z = 0.01 * (2 * y - 1) + np.random.default_rng(0).normal(0.0, 0.01, 400)
    with caplog.at_level("WARNING", logger="fracsight.evaluation"):
        small = fit_calibration(z, y)
    assert small.temperature == pytest.approx(0.05, rel=1e-3)
    assert "logits are too small for it, and the probabilities are underconfident" in small.description
    assert "underconfident (mean confidence 0.5" in caplog.text and "overconfident" not in caplog.text
    caplog.clear()
    # logits of 1e-4 with a weak signal (signs right for 0.55): the confidence at the floor is as
    # low as the accuracy, and the margin first chosen called these data separated
    z = 1e-4 * (np.random.default_rng(0).normal(0.0, 1.0, 400) + 0.1 * (2 * y - 1))
    with caplog.at_level("WARNING", logger="fracsight.evaluation"):
        weak = fit_calibration(z, y)
    assert "logits are too small" in weak.description and "overconfident" not in caplog.text


def test_fit_temperature_separable_data_hits_lower_bound() -> None:
    t = fit_temperature([-3.0, -1.0, 1.0, 3.0], [0, 0, 1, 1], bounds=(0.1, 10.0))
    assert t == pytest.approx(0.1, rel=1e-3)


def test_apply_temperature_stable_and_logit_inverse() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probs = apply_temperature([-1000.0, 0.0, 1000.0], 0.5)
    assert probs.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert apply_temperature([2.0], 2.0)[0] == pytest.approx(_sigmoid(np.array(1.0)))
    p = np.array([0.1, 0.5, 0.9])
    assert apply_temperature(probability_to_logit(p), 1.0) == pytest.approx(p)
    with pytest.raises(ValueError):
        apply_temperature([1.0], 0.0)


def test_brier_score() -> None:
    assert brier_score([0, 1], [0.2, 0.6]) == pytest.approx((0.04 + 0.16) / 2)
