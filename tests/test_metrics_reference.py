"""The metrics `fracsight evaluate` reports, against reference implementations on the same inputs.

References: scikit-learn (ROC/PR curves, AUROC, AP, confusion matrices, precision/recall/F1,
Cohen's kappa, calibration_curve, Brier score) and pycocotools (box matching and COCO's
101-point AP); where the project documents a different convention (all-point box AP, ECE bins
``[k/n, (k+1)/n)``), against an independent computation written here. Both references are in
the ``dev`` extra, so a missing one fails these tests rather than skipping them.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

import numpy as np
import pycocotools.coco
import pycocotools.cocoeval
import pytest
import sklearn.calibration
import sklearn.metrics

from fracsight.evaluation.aggregate import aggregate_study_predictions
from fracsight.evaluation.calibration import brier_score, expected_calibration_error
from fracsight.evaluation.metrics import (
    _cluster_sampler,
    auroc,
    average_precision,
    binary_metrics_at,
    bootstrap_ci,
    cohen_kappa,
    confusion_matrix,
    multiclass_metrics,
    multilabel_metrics,
    pr_curve,
    roc_curve,
)
from fracsight.evaluation.report import evaluate_predictions
from fracsight.evaluation.thresholds import (
    sensitivity_at_specificity,
    specificity_at_sensitivity,
    threshold_for_sensitivity,
    threshold_for_specificity,
    youden_threshold,
)
from fracsight.explain import DetectedBox
from fracsight.explain.boxes import iou
from fracsight.explain.localization import (
    COCO_IOU_THRESHOLDS,
    average_precision_boxes,
    average_precision_boxes_coco,
    hit_rate,
)


def _sk() -> Any:
    return sklearn.metrics


def _binary_cases(n_cases: int = 200, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random labels with both classes and scores with many ties (rounded), plus small cases."""
    rng = np.random.default_rng(seed)
    cases = [
        (np.array([0, 1]), np.array([0.5, 0.5])),  # one tie across the classes
        (np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])),
        (np.array([1, 0, 1, 0, 1]), np.array([0.3, 0.3, 0.3, 0.3, 0.3])),  # every score tied
        (np.array([0, 0, 0, 1]), np.array([0.0, 0.0, 1.0, 1.0])),
        (np.array([0, 1, 1, 1]), np.array([0.9, 0.1, 0.2, 0.3])),  # perfectly wrong
    ]
    while len(cases) < n_cases:
        n = int(rng.integers(2, 80))
        y = rng.integers(0, 2, n)
        if y.sum() in (0, n):
            continue
        p = np.round(rng.random(n) * 0.6 + 0.4 * y * rng.random(n), int(rng.integers(1, 4)))
        cases.append((y, p))
    return cases


# --------------------------------------------------------------------------- ranking metrics


def test_auroc_ap_and_curves_match_sklearn_with_ties() -> None:
    skm = _sk()
    for y, p in _binary_cases():
        assert auroc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
        assert average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
        fpr, tpr, thr = roc_curve(y, p)
        fpr_ref, tpr_ref, thr_ref = skm.roc_curve(y, p, drop_intermediate=False)
        np.testing.assert_allclose(fpr, fpr_ref)
        np.testing.assert_allclose(tpr, tpr_ref)
        np.testing.assert_allclose(thr[1:], thr_ref[1:])  # first: +inf here, max + 1 in old sklearn
        precision, recall, pthr = pr_curve(y, p)
        prec_ref, rec_ref, pthr_ref = skm.precision_recall_curve(y, p)
        # sklearn: thresholds ascending, ending in (precision 1, recall 0) without a threshold
        np.testing.assert_allclose(precision[1:], prec_ref[::-1][1:])
        np.testing.assert_allclose(recall, rec_ref[::-1])
        np.testing.assert_allclose(pthr[1:], pthr_ref[::-1])


def test_bool_and_float_labels_give_the_same_metrics() -> None:
    y, p = _binary_cases()[10]
    for labels in (y.astype(bool), y.astype(np.float64)):
        assert auroc(labels, p) == auroc(y, p)
        assert average_precision(labels, p) == average_precision(y, p)


def test_single_class_nan_and_empty_inputs_raise_instead_of_giving_a_number() -> None:
    skm = _sk()
    p = np.array([0.2, 0.4, 0.6])
    for y in ([1, 1, 1], [0, 0, 0]):
        with pytest.raises(ValueError):
            auroc(y, p)
        with pytest.raises(ValueError):
            roc_curve(y, p)
        with warnings.catch_warnings():  # sklearn: a warning and NaN (older releases: ValueError)
            warnings.simplefilter("ignore")
            with contextlib.suppress(ValueError):
                assert np.isnan(skm.roc_auc_score(y, p))
    # all positive: AP is 1 (every threshold has precision 1), as in sklearn
    assert average_precision([1, 1, 1], p) == skm.average_precision_score([1, 1, 1], p) == 1.0
    with pytest.raises(ValueError):  # no positives: undefined (sklearn warns and returns -0.0)
        average_precision([0, 0, 0], p)
    for bad_p in ([0.1, np.nan, 0.3], [0.1, np.inf, 0.3]):
        with pytest.raises(ValueError, match="NaN"):
            auroc([0, 1, 1], bad_p)
        with pytest.raises(ValueError, match="NaN"):
            expected_calibration_error([0, 1, 1], bad_p)
    with pytest.raises(ValueError, match="binary"):
        auroc([0, np.nan, 1], p)
    with pytest.raises(ValueError, match="empty"):
        auroc([], [])


# --------------------------------------------------------------------------- thresholded


def test_binary_metrics_at_match_sklearn_and_ties_at_the_threshold_are_positive() -> None:
    skm = _sk()
    rng = np.random.default_rng(1)
    for y, p in _binary_cases(120, seed=1):
        for t in (float(rng.choice(p)), float(rng.random()), 0.0, 1.0 + 1e-9):
            m = binary_metrics_at(y, p, t)
            pred = (p >= t).astype(int)  # p == threshold is predicted positive
            tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
            assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = {
                    "sensitivity": skm.recall_score(y, pred, zero_division=np.nan),
                    "specificity": skm.recall_score(1 - y, 1 - pred, zero_division=np.nan),
                    "precision": skm.precision_score(y, pred, zero_division=np.nan),
                    "npv": skm.precision_score(1 - y, 1 - pred, zero_division=np.nan),
                    "f1": skm.f1_score(y, pred, zero_division=np.nan),
                    "accuracy": skm.accuracy_score(y, pred),
                    "cohen_kappa": skm.cohen_kappa_score(y, pred),
                }
            for key, value in ref.items():
                if np.isnan(value):
                    assert m[key] is None, key
                else:
                    assert m[key] == pytest.approx(value, abs=1e-12), key


def test_confusion_matrix_and_kappa_match_sklearn_for_many_classes() -> None:
    skm = _sk()
    rng = np.random.default_rng(2)
    for _ in range(50):
        k = int(rng.integers(2, 6))
        t = rng.integers(0, k, 40)
        q = np.where(rng.random(40) < 0.6, t, rng.integers(0, k, 40))
        np.testing.assert_array_equal(confusion_matrix(t, q, k), skm.confusion_matrix(t, q, labels=range(k)))
        assert cohen_kappa(t, q, k) == pytest.approx(skm.cohen_kappa_score(t, q), abs=1e-12)
    # both labelings one class only: undefined (sklearn: NaN)
    assert cohen_kappa([1, 1], [1, 1], 2) is None


def test_multiclass_metrics_match_sklearn() -> None:
    skm = _sk()
    rng = np.random.default_rng(3)
    names = ["a", "b", "c", "d"]
    for trial in range(40):
        n = int(rng.integers(5, 60))
        y = rng.integers(0, 3 if trial % 4 == 0 else 4, n)  # sometimes class d never occurs
        probs = rng.dirichlet(np.ones(4), n)
        probs[np.arange(n), y] += rng.random(n)  # some skill
        probs = np.round(probs / probs.sum(1, keepdims=True), 2)  # ties, also in the arg-max
        m = multiclass_metrics(y, probs, names)
        pred = np.argmax(probs, axis=1)  # first of tied maxima, as sklearn would need it
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prec, rec, f1, support = skm.precision_recall_fscore_support(
                y, pred, labels=range(4), zero_division=np.nan
            )
            macro = skm.f1_score(y, pred, labels=range(4), average="macro", zero_division=np.nan)
        for i, name in enumerate(names):
            c = m["per_class"][name]
            for got, ref in ((c["precision"], prec[i]), (c["recall"], rec[i]), (c["f1"], f1[i])):
                assert (got is None) if np.isnan(ref) else got == pytest.approx(ref, abs=1e-12)
            assert c["support"] == support[i]
            col = (y == i).astype(int)
            if 0 < col.sum() < n:
                assert c["auroc"] == pytest.approx(skm.roc_auc_score(col, probs[:, i]), abs=1e-12)
            else:
                assert c["auroc"] is None
        assert m["macro_f1"] == pytest.approx(macro, abs=1e-12)
        assert m["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred), abs=1e-12)
        assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(4)).tolist()


def test_region_accuracy_and_per_region_auroc_against_an_independent_count() -> None:
    skm = _sk()
    rng = np.random.default_rng(4)
    regions = ["hand", "leg", "hip", "shoulder"]
    for _ in range(30):
        n = int(rng.integers(3, 50))
        targets = (rng.random((n, 4)) < 0.3).astype(int)  # some rows with no region, some with two
        probs = np.round(rng.random((n, 4)) + 0.5 * targets, 1)
        m = multilabel_metrics(targets, probs, regions)
        hits = [targets[i, int(np.argmax(probs[i]))] == 1 for i in range(n) if targets[i].any()]
        assert m["n_evaluated"] == len(hits)
        assert m["region_accuracy"] == (pytest.approx(np.mean(hits)) if hits else None)
        for i, name in enumerate(regions):
            r = m["per_region"][name]
            assert (r["n_positive"], r["n_negative"]) == (targets[:, i].sum(), n - targets[:, i].sum())
            if 0 < targets[:, i].sum() < n:
                assert r["auroc"] == pytest.approx(skm.roc_auc_score(targets[:, i], probs[:, i]))
            else:
                assert r["auroc"] is None


# --------------------------------------------------------------------------- calibration


def _ece_reference(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    """ECE with the documented bins [k/n, (k+1)/n), the last one closed, by direct comparison."""
    total = 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        inside = (p >= lo) & ((p < hi) | ((k == n_bins - 1) & (p <= hi)))
        if inside.any():
            total += inside.sum() / p.size * abs(y[inside].mean() - p[inside].mean())
    return total


def test_brier_and_ece_match_sklearn_away_from_bin_edges() -> None:
    skm = _sk()
    calibration_curve = sklearn.calibration.calibration_curve
    rng = np.random.default_rng(5)
    for n_bins in (1, 5, 10, 15):
        for _ in range(40):
            n = int(rng.integers(2, 200))
            p = rng.random(n)
            y = (rng.random(n) < p**1.5).astype(int)
            assert brier_score(y, p) == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
            ece, table = expected_calibration_error(y, p, n_bins)
            frac, mean_p = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
            rows = [r for r in table if r["count"]]
            np.testing.assert_allclose([r["fraction_positive"] for r in rows], frac)
            np.testing.assert_allclose([r["mean_predicted"] for r in rows], mean_p)
            counts = np.array([r["count"] for r in rows])
            assert ece == pytest.approx(float(np.sum(counts / n * np.abs(frac - mean_p))), abs=1e-12)


def test_ece_puts_probabilities_on_a_bin_edge_in_the_bin_the_table_says() -> None:
    """Bins are [k/n, (k+1)/n) as documented (sklearn's calibration_curve closes them on the right)."""
    for n_bins in (3, 6, 7, 10, 12, 20):
        edges = [k / n_bins for k in range(n_bins + 1)]
        p = np.array(sorted({float(q) for e in edges for q in (np.nextafter(e, 0), e, np.nextafter(e, 1))}))
        p = p[(p >= 0) & (p <= 1)]
        y = (np.arange(p.size) % 3 == 0).astype(int)
        ece, table = expected_calibration_error(y, p, n_bins)
        assert sum(r["count"] for r in table) == p.size
        for k, row in enumerate(table):
            last = k == n_bins - 1
            inside = (p >= row["bin_lower"]) & ((p < row["bin_upper"]) | (last & (p <= row["bin_upper"])))
            assert row["count"] == inside.sum(), (n_bins, k)
            if inside.any():
                assert row["mean_predicted"] == pytest.approx(p[inside].mean())
        assert ece == pytest.approx(_ece_reference(y, p, n_bins), abs=1e-12)
    # the case that was wrong: p just below 0.9 fell into the bin from 0.9
    _, table = expected_calibration_error([0], [np.nextafter(0.9, 0)], 10)
    assert table[8]["count"] == 1 and table[9]["count"] == 0


# --------------------------------------------------------------------------- operating points


def _roc_reference(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    skm = _sk()
    fpr, tpr, thr = skm.roc_curve(y, p, drop_intermediate=False)
    return fpr[1:], tpr[1:], thr[1:]  # the distinct scores as thresholds, without "nothing positive"


def test_sensitivity_at_specificity_and_its_operating_point_really_reach_the_specificity() -> None:
    for y, p in _binary_cases(150, seed=6):
        fpr, tpr, thr = _roc_reference(y, p)
        for target in (0.0, 0.5, 0.8, 0.9, 0.95, 1.0):
            ok = (1 - fpr) >= target
            expected = float(tpr[ok].max()) if ok.any() else 0.0  # else only "predict nothing" reaches it
            assert sensitivity_at_specificity(y, p, target) == pytest.approx(expected)
            choice = threshold_for_specificity(y, p, target)
            m = binary_metrics_at(y, p, choice.threshold)  # re-count at the reported threshold
            assert m["specificity"] >= target
            assert (m["sensitivity"], m["specificity"]) == pytest.approx(
                (choice.sensitivity, choice.specificity)
            )
            assert choice.sensitivity == pytest.approx(expected)
            # it is the lowest such threshold: one score lower breaks the target or gains nothing
            lower = p[p < choice.threshold]
            if lower.size:
                below = binary_metrics_at(y, p, float(lower.max()))
                assert below["specificity"] < target
        for target in (0.0, 0.5, 0.9, 1.0):
            ok = tpr >= target
            spec = float((1 - fpr[ok]).max())
            if target == 0:  # "predict nothing" (specificity 1) has sensitivity 0 >= 0 too
                spec = 1.0
            assert specificity_at_sensitivity(y, p, target) == pytest.approx(spec)
            choice = threshold_for_sensitivity(y, p, target)
            assert binary_metrics_at(y, p, choice.threshold)["sensitivity"] >= target
            assert choice.threshold == pytest.approx(float(thr[ok].max()))


def test_youden_threshold_is_sklearns_argmax_highest_on_ties() -> None:
    for y, p in _binary_cases(150, seed=7):
        fpr, tpr, thr = _roc_reference(y, p)
        j = tpr - fpr
        choice = youden_threshold(y, p)
        assert choice.threshold == thr[int(np.argmax(j))]  # thr descending: first maximum is highest
        m = binary_metrics_at(y, p, choice.threshold)
        assert m["sensitivity"] + m["specificity"] - 1 == pytest.approx(j.max())


def test_evaluate_predictions_reports_what_the_references_compute() -> None:
    skm = _sk()
    rng = np.random.default_rng(8)
    n = 300
    y = (rng.random(n) < 0.25).astype(int)
    p = np.round(np.clip(0.2 + 0.5 * y + 0.25 * rng.standard_normal(n), 0, 1), 2)
    regions = [("hand",) if i % 3 else ("leg", "hip") for i in range(n)]
    regions[0] = ()
    studies = [f"s{i // 3}" for i in range(n)]
    m = evaluate_predictions(
        y, p, threshold_points={"a": 0.5}, regions=regions, study_ids=studies, n_bootstrap=200
    )
    assert m["auroc"]["value"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["average_precision"]["value"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert m["calibration"]["ece"] == pytest.approx(_ece_reference(y, p, 10))
    sas = m["sensitivity_at_specificity"]
    at = binary_metrics_at(y, p, sas["threshold"])
    assert at["specificity"] == sas["specificity"] >= 0.9
    assert at["sensitivity"] == sas["sensitivity"] == sensitivity_at_specificity(y, p, 0.9)
    for name in ("hand", "leg", "hip"):
        mask = np.array([name in r for r in regions])
        assert m["regions"][name]["auroc"]["value"] == pytest.approx(skm.roc_auc_score(y[mask], p[mask]))
        assert m["regions"][name]["n"] == mask.sum()
    # study level: mean probability, positive if any image is
    ids = sorted(set(studies), key=studies.index)
    ys = np.array([max(y[i] for i in range(n) if studies[i] == s) for s in ids])
    ps = np.array([np.mean([p[i] for i in range(n) if studies[i] == s]) for s in ids])
    assert m["study"]["n"] == len(ids)
    assert m["study"]["auroc"]["value"] == pytest.approx(skm.roc_auc_score(ys, ps))
    _, ys2, ps2 = aggregate_study_predictions(studies, y, p, "max")
    np.testing.assert_array_equal(ys2, ys)
    np.testing.assert_allclose(ps2, [max(p[i] for i in range(n) if studies[i] == s) for s in ids])


# --------------------------------------------------------------------------- bootstrap


def _stratified_reference(
    y: np.ndarray, p: np.ndarray, fn: Any, n: int, seed: int, alpha: float
) -> tuple[float, float]:
    rng = np.random.default_rng(seed + 12345)  # another stream than fracsight's
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    values = []
    for _ in range(n):
        idx = np.r_[pos[rng.integers(0, pos.size, pos.size)], neg[rng.integers(0, neg.size, neg.size)]]
        values.append(fn(y[idx], p[idx]))
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def test_bootstrap_ci_is_reproducible_and_agrees_with_an_independent_bootstrap() -> None:
    skm = _sk()
    rng = np.random.default_rng(9)
    y = (rng.random(400) < 0.3).astype(int)
    p = np.round(np.clip(0.3 + 0.3 * y + 0.25 * rng.standard_normal(400), 0, 1), 2)
    for fn, ref_fn in ((auroc, skm.roc_auc_score), (average_precision, skm.average_precision_score)):
        ci = bootstrap_ci(fn, y, p, n=2000, seed=3)
        assert ci == bootstrap_ci(fn, y, p, n=2000, seed=3)  # same seed, same interval
        assert ci != bootstrap_ci(fn, y, p, n=2000, seed=4)
        assert ci[0] < fn(y, p) < ci[1]
        ref = _stratified_reference(y, p, ref_fn, 2000, 3, 0.05)
        assert ci == pytest.approx(ref, abs=0.012)  # Monte Carlo error of the 2.5/97.5% quantiles
        narrow = bootstrap_ci(fn, y, p, n=2000, seed=3, alpha=0.5)
        assert ci[0] < narrow[0] < narrow[1] < ci[1]
    # perfectly separated: every resample has AUROC 1
    assert bootstrap_ci(auroc, [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n=200) == (1.0, 1.0)


def test_cluster_bootstrap_draws_whole_groups() -> None:
    groups = ["a"] * 3 + ["b"] + ["c"] * 2 + ["d"] * 4
    draw = _cluster_sampler(groups, len(groups), np.random.default_rng(0))
    members = {g: {i for i, h in enumerate(groups) if h == g} for g in set(groups)}
    for _ in range(200):
        idx = draw()
        picked = [groups[i] for i in idx]
        for g in set(picked):  # each drawn group comes whole, as often as it was drawn
            times = picked.count(g) / len(members[g])
            assert times == int(times)
            assert {i for i in idx if groups[i] == g} == members[g]
        assert sum(picked.count(g) / len(members[g]) for g in set(picked)) == len(members)


# --------------------------------------------------------------------------- boxes


def _all_point_ap(tps: np.ndarray, n_true: int) -> float:
    """All-point interpolated AP from a ranked TP/FP sequence, written out step by step."""
    ap, reached = 0.0, 0.0
    cum = np.cumsum(tps)
    precision = cum / np.arange(1, tps.size + 1)
    recall = cum / n_true
    for i in range(tps.size):
        if recall[i] > reached:
            ap += (recall[i] - reached) * precision[i:].max()
            reached = recall[i]
    return float(ap)


def _coco(
    preds: list[list[DetectedBox]], trues: list[list[tuple[float, ...]]], thresholds: tuple[float, ...]
) -> tuple[list[float], list[float]]:
    """pycocotools on the same boxes: ``(all-point AP from COCO's own matches, COCO's 101-point AP)``
    per IoU threshold."""
    coco_mod, cocoeval = pycocotools.coco, pycocotools.cocoeval
    images = [{"id": i + 1, "width": 1000, "height": 1000} for i in range(len(trues))]
    anns = [
        {
            "id": k + 1,
            "image_id": i + 1,
            "category_id": 1,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": (x1 - x0) * (y1 - y0),
            "iscrowd": 0,
        }
        for k, (i, (x0, y0, x1, y1)) in enumerate((i, t) for i, ts in enumerate(trues) for t in ts)
    ]
    dets = [
        {"image_id": i + 1, "category_id": 1, "bbox": [b.x0, b.y0, b.width, b.height], "score": b.score}
        for i, bs in enumerate(preds)
        for b in bs
    ]
    gt = coco_mod.COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "fracture"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = cocoeval.COCOeval(gt, dt, "bbox")
        ev.params.imgIds = [im["id"] for im in images]
        ev.params.iouThrs = np.array(thresholds)
        ev.evaluate()
        ev.accumulate()
    # the evaluated images of area range "all", in image order, as COCOeval.accumulate reads them
    n_img = len(images)
    per_image = [e for e in ev.evalImgs[:n_img] if e is not None]
    scores = np.concatenate([e["dtScores"] for e in per_image])
    order = np.argsort(-scores, kind="mergesort")
    matches = np.concatenate([e["dtMatches"] for e in per_image], axis=1)[:, order]
    n_true = len(anns)
    all_point = [_all_point_ap((matches[t] > 0).astype(float), n_true) for t in range(len(thresholds))]
    coco101 = [float(ev.eval["precision"][t, :, 0, 0, -1].mean()) for t in range(len(thresholds))]
    return all_point, coco101


def _random_box_set(rng: np.random.Generator, n_images: int) -> tuple[list[list[DetectedBox]], list[list]]:
    """Integer boxes on a small grid (exact IoU ties and IoUs exactly at thresholds), tied scores,
    normal images with false boxes, images without predictions, duplicates, several truths."""
    preds: list[list[DetectedBox]] = []
    trues: list[list[tuple[float, ...]]] = []
    for _ in range(n_images):
        ts = []
        for _ in range(int(rng.choice([0, 0, 1, 1, 2, 3]))):
            x0, y0 = (float(v) for v in rng.integers(0, 8, 2))
            ts.append((x0, y0, x0 + float(rng.integers(1, 5)), y0 + float(rng.integers(1, 5))))
        ps = []
        for _ in range(int(rng.integers(0, 5))):
            if ts and rng.random() < 0.6:  # near a true box
                x0, y0, x1, y1 = ts[int(rng.integers(0, len(ts)))]
                dx, dy, dw, dh = (float(v) for v in rng.integers(-1, 2, 4))
                box = (x0 + dx, y0 + dy, max(x0 + dx + 1, x1 + dx + dw), max(y0 + dy + 1, y1 + dy + dh))
            else:
                x0, y0 = (float(v) for v in rng.integers(0, 10, 2))
                box = (x0, y0, x0 + float(rng.integers(1, 4)), y0 + float(rng.integers(1, 4)))
            ps.append(DetectedBox(*box, score=float(rng.choice([0.3, 0.5, 0.5, 0.7, 0.9]))))
        if ps and rng.random() < 0.2:
            ps.append(ps[0])  # an exact duplicate
        preds.append(ps)
        trues.append(ts)
    return preds, trues


def test_box_ap_matches_pycocotools_matching_with_all_point_interpolation() -> None:
    rng = np.random.default_rng(10)
    largest_gap = 0.0
    for _ in range(60):
        preds, trues = _random_box_set(rng, int(rng.integers(1, 12)))
        if not any(trues) or not any(preds):
            continue
        all_point, coco101 = _coco(preds, trues, (*COCO_IOU_THRESHOLDS, 0.1))
        ours = [average_precision_boxes(preds, trues, iou_thr=t) for t in (*COCO_IOU_THRESHOLDS, 0.1)]
        # COCO's linspace has 0.8999999999999999 for 0.9: no IoU on this grid falls in between
        np.testing.assert_allclose(ours, all_point, atol=1e-12)
        assert average_precision_boxes_coco(preds, trues) == pytest.approx(np.mean(all_point[:10]))
        largest_gap = max(largest_gap, *np.abs(np.array(ours) - np.array(coco101)))
    # COCO's 101 recall points can only miss area where recall steps fall between two samples
    assert largest_gap < 0.1


def test_box_ap_edge_cases() -> None:
    truth = (0.0, 0.0, 2.0, 1.0)
    half = DetectedBox(0, 0, 1, 1, 0.9)  # IoU exactly 0.5 with the truth
    assert iou(half, truth) == 0.5
    assert average_precision_boxes([[half]], [[truth]], iou_thr=0.5) == 1.0  # >= threshold is a hit
    assert average_precision_boxes([[half]], [[truth]], iou_thr=np.nextafter(0.5, 1)) == 0.0
    touching = DetectedBox(2, 0, 4, 1, 0.9)  # shares an edge: IoU 0, never a hit
    assert iou(touching, truth) == 0.0
    assert average_precision_boxes([[touching]], [[truth]], iou_thr=0.0) == 1.0  # IoU 0 >= 0 counts
    assert average_precision_boxes([[touching]], [[truth]], iou_thr=0.1) == 0.0
    exact = DetectedBox(*truth, score=0.8)
    # a duplicate of a found box is a false positive, ranked after the hit: precision 1 at recall 1
    assert average_precision_boxes([[exact, exact]], [[truth]]) == 1.0
    # ... and before it when it scores higher
    dup_first = [[DetectedBox(*truth, score=0.9), DetectedBox(*truth, score=0.8)]]
    assert average_precision_boxes(dup_first, [[truth, (5, 5, 6, 6)]]) == pytest.approx(0.5)
    # no true boxes anywhere: undefined; true boxes but no predictions: 0
    assert np.isnan(average_precision_boxes([[exact]], [[]]))
    assert average_precision_boxes([[], []], [[truth], []]) == 0.0
    # a false box on a normal image, ranked first, halves the precision at the hit
    assert average_precision_boxes([[exact], [DetectedBox(0, 0, 1, 1, 0.95)]], [[truth], []]) == 0.5
    # two true boxes in one image, each found by its own box
    two = [(0.0, 0.0, 2.0, 2.0), (4.0, 4.0, 6.0, 6.0)]
    found = [DetectedBox(*two[1], score=0.5), DetectedBox(*two[0], score=0.6)]
    assert average_precision_boxes([found], [two]) == 1.0
    assert average_precision_boxes([found[:1]], [two]) == 0.5


def test_box_ap_breaks_equal_iou_ties_between_true_boxes_as_pycocotools_does() -> None:
    """A box as close to two true boxes takes the last of them (COCO), leaving the first to a
    later box that only overlaps it; taking the first would make that later box a false positive."""
    trues = [[(0.0, 0.0, 2.0, 1.0), (1.0, 0.0, 3.0, 1.0)]]
    between = DetectedBox(1, 0, 2, 1, 0.9)  # IoU 0.5 with each
    on_first = DetectedBox(0, 0, 2, 1, 0.8)  # IoU 1 with the first, 1/3 with the second
    preds = [[between, on_first]]
    assert average_precision_boxes(preds, trues) == 1.0
    all_point, coco101 = _coco(preds, trues, (0.5,))
    assert all_point == coco101 == [1.0]


def test_box_ap_does_not_depend_on_image_order_without_tied_scores() -> None:
    rng = np.random.default_rng(11)
    preds, trues = _random_box_set(rng, 12)
    k = 0
    distinct: list[list[DetectedBox]] = []
    for bs in preds:
        row = []
        for b in bs:
            k += 1
            row.append(DetectedBox(b.x0, b.y0, b.x1, b.y1, score=b.score + 1e-6 * k))
        distinct.append(row)
    base = average_precision_boxes(distinct, trues)
    for _ in range(10):
        o = rng.permutation(len(trues))
        assert average_precision_boxes([distinct[i] for i in o], [trues[i] for i in o]) == pytest.approx(base)


def _hit_reference(pred: list[DetectedBox], ts: list[tuple[float, ...]], thr: float) -> tuple[bool, bool]:
    if not pred:
        return False, False
    top = max(pred, key=lambda b: b.score)  # first of the highest, as max() keeps
    by_iou = any(iou(top, t) >= thr for t in ts)
    by_centre = any(
        top.x0 <= (t[0] + t[2]) / 2 <= top.x1 and top.y0 <= (t[1] + t[3]) / 2 <= top.y1 for t in ts
    )
    return by_iou, by_centre


def test_hit_rate_against_an_independent_count() -> None:
    rng = np.random.default_rng(12)
    for _ in range(40):
        preds, trues = _random_box_set(rng, int(rng.integers(1, 15)))
        got = hit_rate(preds, trues, iou_thr=0.1)
        rows = [_hit_reference(p, t, 0.1) for p, t in zip(preds, trues, strict=True) if t]
        assert got.n_images == len(rows)
        if not rows:
            assert np.isnan(got.hit_rate_iou)
            continue
        assert got.hit_rate_iou == pytest.approx(np.mean([a for a, _ in rows]))
        assert got.hit_rate_centre == pytest.approx(np.mean([b for _, b in rows]))
        assert got.hit_rate_any == pytest.approx(np.mean([a or b for a, b in rows]))
