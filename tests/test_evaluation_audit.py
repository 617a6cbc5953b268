"""`fracsight evaluate` as a researcher checks it for a paper: every figure recomputed with scikit-learn
from the per-image files it writes, the files naming the model (checksum), the command and themselves."""

from __future__ import annotations

import csv
import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import fracatlas_subset
from fracsight.cli import app


def _fracatlas_copy(fracatlas: Path, root: Path, test: tuple[int, int]) -> Path:
    """2+2 train and val images, and ``test`` (fractured, other) test images, with their boxes."""
    return fracatlas_subset(fracatlas, root, {"train": (2, 2), "val": (2, 2), "test": test})


@pytest.fixture(scope="module")
def evaluated(fracatlas_dir, tmp_path_factory) -> tuple[Path, dict, str]:
    """One evaluation of the shipped model on 6 fractured and 6 other FracAtlas test images."""
    work = tmp_path_factory.mktemp("audit")
    data = _fracatlas_copy(fracatlas_dir, work / "data", test=(6, 6))
    out = work / "eval"
    args = ["evaluate", "default", str(data), "--split", "test", "--bootstrap", "100", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "metrics.json").read_text()), result.stdout


def _rows(out: Path, name: str) -> list[dict[str, str]]:
    with open(out / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_image_level_figure_is_recomputed_from_predictions_csv(evaluated):
    """Nothing evaluate wrote let a figure be checked: no per-image predictions. predictions.csv has
    one row per image, and AUROC, AP, Brier, ECE, sensitivity and specificity at each operating point
    and by body region, and the sensitivity at specificity 0.90 come out of it as the report has them."""
    sklearn = pytest.importorskip("sklearn.metrics")
    out, m, _ = evaluated
    rows = _rows(out, "predictions.csv")
    assert len(rows) == m["data"]["n_images"] == 12
    assert {r["source"] for r in rows} == {r["source"] for r in rows if r["source"].startswith("images/")}
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["probability"]) for r in rows])
    assert sklearn.roc_auc_score(y, p) == pytest.approx(m["auroc"]["value"], abs=1e-12)
    assert sklearn.average_precision_score(y, p) == pytest.approx(m["average_precision"]["value"], abs=1e-12)
    assert sklearn.brier_score_loss(y, p) == pytest.approx(m["brier"], abs=1e-12)
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(np.mean(bins == b) * abs(y[bins == b].mean() - p[bins == b].mean()) for b in set(bins))
    assert ece == pytest.approx(m["calibration"]["ece"], abs=1e-9)
    for name, threshold in m["operating_points"].items():
        said = np.array([int(r[f"suspected_{name}"]) for r in rows])
        assert (said == (p >= threshold)).all()
        tn, fp, fn, tp = sklearn.confusion_matrix(y, said).ravel()
        assert m["thresholds"][name]["sensitivity"] == pytest.approx(tp / (tp + fn))
        assert m["thresholds"][name]["specificity"] == pytest.approx(tn / (tn + fp))
        assert m["thresholds"][name]["cohen_kappa"] == pytest.approx(sklearn.cohen_kappa_score(y, said))
    fpr, tpr, thresholds = sklearn.roc_curve(y, p, drop_intermediate=False)
    best = np.flatnonzero(1 - fpr >= 0.9 - 1e-12)[-1]
    sas = m["sensitivity_at_specificity"]
    assert (sas["sensitivity"], sas["threshold"]) == pytest.approx((tpr[best], thresholds[best]))
    for region, block in m["regions"].items():
        inside = np.array([region in r["regions"].split(";") for r in rows])
        assert block["n"] == int(inside.sum()) and block["n_positive"] == int(y[inside].sum())
        if 0 < y[inside].sum() < inside.sum():
            assert block["auroc"]["value"] == pytest.approx(sklearn.roc_auc_score(y[inside], p[inside]))


def test_box_ap_is_recomputed_from_boxes_csv(evaluated):
    """AP50 and AP50:95 (COCO's greedy matching, all-point interpolation) from boxes.csv by an
    independent implementation, and the hit rate of the top box."""
    out, m, _ = evaluated
    loc = m["localization"]
    labels = {r["source"]: r["label"] for r in _rows(out, "predictions.csv")}
    preds: dict[str, list] = {}
    trues: dict[str, list] = {}
    for b in _rows(out, "boxes.csv"):
        box = tuple(float(b[k]) for k in ("x0", "y0", "x1", "y1"))
        if b["kind"] == "true":
            assert labels[b["source"]] == "1"  # true boxes of the positive images only
            trues.setdefault(b["source"], []).append(box)
        else:
            preds.setdefault(b["source"], []).append((float(b["score"]), box))

    def iou(a, b) -> float:
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    def ap(images: list[str], thr: float) -> float:
        ranked = sorted(
            ((s, k, j, box) for k, im in enumerate(images) for j, (s, box) in enumerate(preds.get(im, []))),
            key=lambda r: (-r[0], r[1], r[2]),
        )
        used = {im: [False] * len(trues.get(im, [])) for im in images}
        hits = []
        for _, k, _, box in ranked:
            im, best, best_iou = images[k], -1, -1.0
            for t, true in enumerate(trues.get(im, [])):
                v = iou(box, true)
                if not used[im][t] and v >= thr and v >= best_iou:
                    best, best_iou = t, v
            if best >= 0:
                used[im][best] = True
            hits.append(best >= 0)
        found = np.cumsum(hits)
        recall = np.r_[0.0, found / sum(len(trues.get(im, [])) for im in images), 1.0]
        precision = np.r_[0.0, found / np.arange(1, len(found) + 1), 0.0]
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        step = np.flatnonzero(recall[1:] != recall[:-1])
        return float(np.sum((recall[step + 1] - recall[step]) * precision[step + 1]))

    fractured = [s for s, label in labels.items() if label == "1" and s in trues]
    everything = fractured + [s for s, label in labels.items() if label == "0"]
    assert loc["n_images"] == len(fractured) and loc["n_images_all"] == len(everything)
    assert ap(fractured, 0.5) == pytest.approx(loc["ap50"], abs=1e-12)
    coco = [ap(fractured, t) for t in np.linspace(0.5, 0.95, 10)]
    assert float(np.mean(coco)) == pytest.approx(loc["ap50_95"], abs=1e-12)
    assert ap(everything, 0.5) == pytest.approx(loc["ap50_all"], abs=1e-12)


def test_metrics_name_the_model_checksum_the_command_and_the_files(evaluated):
    """metrics.json named the model by name and version only (two exports of one recipe share them),
    and neither the command nor fracsight's version nor the files beside it."""
    from fracsight import __version__
    from fracsight.inference import Predictor

    out, m, stdout = evaluated
    spec = Predictor("default").spec
    assert m["model"]["onnx_sha256"] == spec.onnx_sha256 and len(spec.onnx_sha256) == 64
    assert m["model"]["precision"] == spec.precision
    run = m["run"]
    assert run["command"].startswith("fracsight evaluate default ") and "--split test" in run["command"]
    assert "--bootstrap 100" in run["command"] and run["fracsight_version"] == __version__
    written = sorted(p.name for p in out.iterdir())  # no scratch folder left behind
    assert written == sorted(run["files"])
    assert {"predictions.csv", "boxes.csv", "roc.png", "calibration.png"} <= set(written)
    report = (out / "report.html").read_text()
    assert spec.onnx_sha256 in report and "fracsight evaluate default" in report
    # the summary printed is what the files say
    assert (
        f"AUROC {m['auroc']['value']:.3f} (95% CI {m['auroc']['ci_low']:.3f}-{m['auroc']['ci_high']:.3f})"
        in (stdout)
    )
    assert (
        f"{m['data']['n_evaluated']}/{m['data']['n_images']} images, {m['data']['n_positive']} fractured"
        in (stdout)
    )
    # the command recorded makes the figures again, into the same folder (which it now must overwrite)
    again = CliRunner().invoke(app, shlex.split(run["command"])[1:])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "metrics.json").read_text())["auroc"] == m["auroc"]


def test_a_file_name_that_is_not_utf8_is_written_as_every_csv_of_fracsight_writes_it(fracatlas_dir, tmp_path):
    """A file name that is not UTF-8 (an archive unpacked under Latin-1) made the predictions.csv
    writer raise after every image was predicted: the whole evaluation was lost."""
    images = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:2]
    normals = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:2]
    data = tmp_path / "data"
    (data / "Fractured").mkdir(parents=True)
    (data / "Non_fractured").mkdir()
    os.symlink(images[0], os.path.join(os.fsencode(data / "Fractured"), b"caf\xe9.jpg"))
    (data / "Fractured" / images[1].name).symlink_to(images[1])
    for image in normals:
        (data / "Non_fractured" / image.name).symlink_to(image)
    out = tmp_path / "eval"
    args = ["evaluate", "default", str(data), "--split", "all", "--bootstrap", "0", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        sources = [row["source"] for row in csv.DictReader(f)]
    assert "Fractured/caf\\xe9.jpg" in sources, sources


def test_wilson_interval_and_the_reliability_diagram_draws_it(tmp_path):
    """The reliability diagram drew each bin's observed fraction without its uncertainty: a bin of
    a dozen images swinging by 0.3 read as miscalibration. Each bin now has its 95% Wilson interval."""
    from fracsight.evaluation.calibration import expected_calibration_error, wilson_interval
    from fracsight.evaluation.plots import plot_calibration

    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # none or all positive: the interval ends at the observed 0 or 1 itself (computed, it ended 1e-17
    # beyond it, and matplotlib refused the negative error bar: evaluate failed on such a bin)
    assert wilson_interval(0, 3)[0] == 0.0 and wilson_interval(13, 13)[1] == 1.0
    _, extremes = expected_calibration_error([0] * 3 + [1] * 13, [0.05] * 3 + [0.95] * 13)
    assert plot_calibration(extremes, tmp_path / "extremes.png").is_file()
    y = [0, 1, 0, 1, 1, 0, 0, 1]
    _, table = expected_calibration_error(y, [0.1, 0.15, 0.3, 0.8, 0.9, 0.6, 0.05, 0.55])
    path = plot_calibration(table, tmp_path / "calibration.png", ece=0.1)
    assert path.stat().st_size > 1000


def test_overwriting_an_earlier_evaluation_replaces_its_tables_and_keeps_the_users_files(
    fracatlas_dir, tmp_path
):
    """--overwrite into an earlier evaluation's folder: the new tables replace the old ones (no row
    of the earlier data set stays), a user's own file stays, no scratch folder is left."""
    first = _fracatlas_copy(fracatlas_dir, tmp_path / "first", test=(2, 2))
    second = _fracatlas_copy(fracatlas_dir, tmp_path / "second", test=(3, 1))
    out = tmp_path / "eval"
    args = ["--split", "test", "--bootstrap", "0", "--out", str(out)]
    done = CliRunner().invoke(app, ["evaluate", "default", str(first), *args])
    assert done.exit_code == 0, done.output
    (out / "mine.txt").write_text("mine")
    refused = CliRunner().invoke(app, ["evaluate", "default", str(second), *args])
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    again = CliRunner().invoke(app, ["evaluate", "default", str(second), *args, "--overwrite"])
    assert again.exit_code == 0, again.output
    rows = _rows(out, "predictions.csv")
    assert len(rows) == 4 and sum(r["label"] == "1" for r in rows) == 3
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["root"] == str(second) and (out / "mine.txt").read_text() == "mine"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_sensitivity_and_specificity_at_the_operating_points_have_intervals(tmp_path):
    """A paper states "sensitivity 0.88 (95% CI ...)": the operating points had counts but no interval,
    though AUROC had one. They get the same bootstrap's (groups, resamples, seed), shown in the report."""
    from fracsight.evaluation.report import evaluate_predictions, write_report

    rng = np.random.default_rng(3)
    y = np.r_[np.ones(40, dtype=int), np.zeros(60, dtype=int)]
    p = np.clip(np.r_[rng.normal(0.7, 0.2, 40), rng.normal(0.3, 0.2, 60)], 0, 1)
    groups = [f"patient{i // 2}" for i in range(100)]  # two images a patient
    m = evaluate_predictions(y, p, threshold_points={"balanced": 0.5}, groups=groups, n_bootstrap=300)
    point = m["thresholds"]["balanced"]
    for key in ("sensitivity", "specificity"):
        assert point[f"{key}_ci_low"] < point[key] < point[f"{key}_ci_high"]
    sensitivity = point["sensitivity"]
    assert sensitivity == pytest.approx(np.mean(p[:40] >= 0.5))
    # plausible: about the binomial standard error's width (the groups widen it a little, not tenfold)
    se = np.sqrt(sensitivity * (1 - sensitivity) / 40)
    assert 2.5 * se < point["sensitivity_ci_high"] - point["sensitivity_ci_low"] < 6 * se
    html = write_report(m, tmp_path).read_text(encoding="utf-8")
    low, high = point["sensitivity_ci_low"], point["sensitivity_ci_high"]
    assert f"{sensitivity:.3f}\xa0({point['tp']}/40; {low:.3f}–{high:.3f})" in html
    assert "Sensitivity (n; 95% CI)" in html
    bare = evaluate_predictions(y, p, threshold_points={"balanced": 0.5}, n_bootstrap=0)
    assert bare["thresholds"]["balanced"]["sensitivity_ci_low"] is None
    # a cohort of normal images only (12 negatives): its specificity had no interval, as though
    # both classes were needed; with groups too, and the rate of the absent class stays undefined
    for grouping in (None, groups[60:]):
        normal = evaluate_predictions(
            y[60:], p[60:], threshold_points={"balanced": 0.5}, groups=grouping, n_bootstrap=300
        )["thresholds"]["balanced"]
        assert normal["specificity_ci_low"] < normal["specificity"] < normal["specificity_ci_high"]
        assert normal["sensitivity"] is None and normal["sensitivity_ci_low"] is None
    # one fractured image among many normal ones: its sensitivity is drawn the same every time, no
    # "interval" equal to the value as though certain
    lone = evaluate_predictions(y[39:], p[39:], threshold_points={"balanced": 0.5}, n_bootstrap=300)[
        "thresholds"
    ]["balanced"]
    assert lone["sensitivity_ci_low"] is None and lone["specificity_ci_low"] is not None


def test_every_text_cell_of_predictions_csv_is_written_safe_for_a_spreadsheet(fracatlas_dir, tmp_path):
    """Groups and regions come from the user's labels.csv as file names do, but only source and
    study_id got the apostrophe: `=HYPERLINK(...)` as a group ran as a formula when opened."""
    images = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:2]
    images += sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:2]
    data = tmp_path / "data"
    data.mkdir()
    rows = ["image,fracture,region,group"]
    for k, image in enumerate(images):
        (data / image.name).symlink_to(image)
        region = "-hand" if k % 2 else "+leg"
        rows.append(f'{image.name},{int(k < 2)},{region},"=HYPERLINK(""x"",""p{k % 2}"")"')
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "eval"
    args = ["evaluate", "default", str(data), "--split", "all", "--bootstrap", "0", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        written = list(csv.DictReader(f))
    cells = [v for row in written for v in row.values() if v]
    assert {r["regions"] for r in written} == {"'-hand", "'+leg"}, written
    assert all(r["bootstrap_group"].startswith("'=") for r in written), written
    assert not [v for v in cells if v[0] in "=+-@"], cells
