"""Hand-computed cases for fracsight.evaluation.metrics."""

from __future__ import annotations

import numpy as np
import pytest

from fracsight.evaluation.metrics import (
    auroc,
    average_precision,
    binary_metrics_at,
    bootstrap_ci,
    cohen_kappa,
    confusion_matrix,
    multiclass_metrics,
    multilabel_metrics,
    pr_curve,
    regions_to_targets,
    roc_curve,
)

Y4 = [0, 0, 1, 1]
P4 = [0.1, 0.4, 0.35, 0.8]


def _pairwise_auroc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _random_case(seed: int = 1, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.round(np.clip(0.25 * y + rng.random(n) * 0.75, 0, 1), 2)  # rounding makes ties
    return y, p


def test_roc_curve_small_example() -> None:
    fpr, tpr, thr = roc_curve(Y4, P4)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thr[0] == np.inf
    assert thr[1:].tolist() == [0.8, 0.4, 0.35, 0.1]


@pytest.mark.parametrize(
    ("y", "p", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),  # perfect
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 0.0),  # inverted
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied
        (Y4, P4, 0.75),  # 3 of 4 pairs ordered correctly
        ([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9], 0.875),  # one tied pair counts 1/2
        ([True, False, True], [3.0, -1.0, 10.0], 1.0),  # bool labels, unbounded scores
    ],
)
def test_auroc_hand_computed(y: list, p: list, expected: float) -> None:
    assert auroc(y, p) == pytest.approx(expected)


def test_auroc_matches_pairwise_count_and_trapezoid() -> None:
    y, p = _random_case()
    value = auroc(y, p)
    assert value == pytest.approx(_pairwise_auroc(y, p))
    fpr, tpr, _ = roc_curve(y, p)
    assert value == pytest.approx(np.trapezoid(tpr, fpr))


def test_auroc_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="both positive and negative"):
        auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="binary"):
        auroc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="differ in length"):
        auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        auroc([0, 1], [0.1, np.nan])


def test_pr_curve_and_average_precision() -> None:
    precision, recall, thr = pr_curve(Y4, P4)
    assert recall.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert precision.tolist() == pytest.approx([1.0, 1.0, 0.5, 2 / 3, 0.5])
    assert thr[0] == np.inf
    # AP = 0.5 * 1 + 0.5 * 2/3
    assert average_precision(Y4, P4) == pytest.approx(5 / 6)
    assert average_precision([0, 1, 1], [0.1, 0.8, 0.9]) == pytest.approx(1.0)


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    y, p = _random_case()
    point = auroc(y, p)
    low, high = bootstrap_ci(auroc, y, p, n=300, seed=3)
    assert low < point < high
    assert 0.0 < high - low < 0.3
    assert bootstrap_ci(auroc, y, p, n=300, seed=3) == (low, high)
    assert bootstrap_ci(auroc, y, p, n=300, seed=4) != (low, high)
    plain = bootstrap_ci(auroc, y, p, n=300, seed=3, stratified=False)
    assert plain[0] < point < plain[1]
    ap_low, ap_high = bootstrap_ci(average_precision, y, p, n=200)
    assert ap_low < average_precision(y, p) < ap_high


def test_bootstrap_plain_skips_single_class_resamples() -> None:
    # with 1 positive in 4, many plain resamples hold one class only; they must be skipped
    low, high = bootstrap_ci(auroc, [0, 0, 0, 1], [0.1, 0.2, 0.3, 0.9], n=200, stratified=False)
    assert low == high == 1.0
    with pytest.raises(ValueError, match="both classes"):
        bootstrap_ci(auroc, [1, 1], [0.1, 0.2], n=10)


def test_binary_metrics_at_hand_computed() -> None:
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    p = [0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.6, 0.55]
    m = binary_metrics_at(y, p, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 2, 2, 1)
    assert m["sensitivity"] == m["recall"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.6)
    assert m["npv"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(0.625)
    # p_o = 5/8, p_e = 4/8 * 5/8 + 4/8 * 3/8 = 1/2
    assert m["cohen_kappa"] == pytest.approx(0.25)
    # p exactly at the threshold counts as positive
    assert binary_metrics_at([1], [0.5], 0.5)["tp"] == 1


def test_binary_metrics_at_undefined_ratios_are_none() -> None:
    m = binary_metrics_at([0, 0, 0], [0.1, 0.2, 0.3], 0.9)
    assert m["sensitivity"] is None and m["precision"] is None and m["f1"] is None
    assert m["specificity"] == 1.0 and m["cohen_kappa"] is None


def test_cohen_kappa_known_values() -> None:
    # Wikipedia's example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> 0.4
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    # 3 classes: p_o = 4/6, p_e = 1/3 -> 0.5
    assert cohen_kappa([0, 1, 2, 0, 1, 2], [0, 2, 1, 0, 1, 2]) == pytest.approx(0.5)
    assert cohen_kappa([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    assert cohen_kappa([0, 1], [1, 0]) == pytest.approx(-1.0)
    assert cohen_kappa([1, 1], [1, 1]) is None


def test_confusion_matrix() -> None:
    cm = confusion_matrix([0, 1, 2, 2, 1], [0, 2, 2, 2, 1], 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 2]]
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 3)


def test_multiclass_metrics() -> None:
    y = [0, 0, 1, 1, 2, 2]
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.6, 0.3], [0.1, 0.2, 0.7], [0.6, 0.2, 0.2]]
    )
    m = multiclass_metrics(y, probs, ["a", "b", "c"])
    # predictions 0,1,1,1,2,0
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["b"]["recall"] == pytest.approx(1.0)
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.8)  # 2*2 / (4 + 1 + 0)
    f1s = [0.5, 0.8, 2 / 3]
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))
    assert m["per_class"]["c"]["support"] == 2
    assert m["per_class"]["c"]["auroc"] == pytest.approx(auroc([0, 0, 0, 0, 1, 1], probs[:, 2]))
    # p_o = 4/6; row sums 2,2,2; column sums 2,3,1 -> p_e = 12/36
    assert m["cohen_kappa"] == pytest.approx((4 / 6 - 1 / 3) / (2 / 3))


def test_multilabel_metrics_region_accuracy() -> None:
    names = ["hand", "leg", "hip"]
    regions = [("hand",), ("leg", "hip"), ("hip",), (), ("leg",)]
    targets = regions_to_targets(regions, names)
    assert targets.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1], [0, 0, 0], [0, 1, 0]]
    probs = np.array([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.6, 0.1, 0.3], [0.5, 0.3, 0.2], [0.1, 0.8, 0.1]])
    m = multilabel_metrics(targets, probs, names)
    # top-1 regions: hand (hit), hip (hit: one of leg/hip), hand (miss), skipped (no truth), leg (hit)
    assert m["n_evaluated"] == 4
    assert m["region_accuracy"] == pytest.approx(0.75)
    assert m["per_region"]["hand"]["auroc"] == pytest.approx(auroc(targets[:, 0], probs[:, 0]))
    assert m["per_region"]["leg"]["n_positive"] == 2
    with pytest.raises(ValueError, match="unknown region"):
        regions_to_targets([("skull",)], names)


def test_bootstrap_cluster_resamples_whole_groups() -> None:
    y, p = _random_case(n=120)
    # every image appears three times in its study: copies add no information
    y3, p3 = np.repeat(y, 3), np.repeat(p, 3)
    groups = np.repeat(np.arange(y.size), 3).tolist()
    naive = bootstrap_ci(auroc, y3, p3, n=400, seed=0)
    cluster = bootstrap_ci(auroc, y3, p3, n=400, seed=0, groups=groups)
    assert cluster == bootstrap_ci(auroc, y3, p3, n=400, seed=0, groups=groups)
    assert cluster[0] < auroc(y3, p3) < cluster[1]
    assert cluster[1] - cluster[0] > 1.4 * (naive[1] - naive[0])
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci(auroc, y, p, groups=[0, 1])
