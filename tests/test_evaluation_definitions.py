"""What `fracsight evaluate` reports is defined where it is reported, and its intervals treat
related images (a patient's, near-duplicates, identical files) as one unit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fracsight.cli import app
from fracsight.evaluation.metrics import auroc, bootstrap_ci
from fracsight.evaluation.report import evaluate_predictions, write_report


def _scores(n: int = 40, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.array([1] * (n // 4) + [0] * (n - n // 4))
    p = np.clip(0.25 + 0.35 * y + rng.normal(0, 0.2, n), 0.0, 1.0)
    return y, p


def test_repeated_images_in_groups_do_not_narrow_the_interval() -> None:
    """Each image five times over (as FracAtlas's near-duplicate groups, or a patient's views): taken
    as 200 independent images, the interval came out about sqrt(5) times too narrow."""
    y, p = _scores()
    y5, p5 = np.repeat(y, 5), np.repeat(p, 5)
    groups = np.repeat(np.arange(y.size), 5).tolist()
    as_independent = evaluate_predictions(y5, p5, n_bootstrap=400)
    grouped = evaluate_predictions(y5, p5, groups=groups, n_bootstrap=400)
    once = evaluate_predictions(y, p, n_bootstrap=400)

    def width(m: dict) -> float:
        return m["auroc"]["ci_high"] - m["auroc"]["ci_low"]

    assert as_independent["ci_method"] == "percentile bootstrap, stratified by label"
    assert "whole groups" in grouped["ci_method"] and "40 groups" in grouped["ci_method"]
    assert grouped["auroc"]["value"] == pytest.approx(auroc(y, p))
    assert width(grouped) > 1.8 * width(as_independent)
    assert width(grouped) == pytest.approx(width(once), rel=0.35)  # as wide as the 40 distinct images
    expected = bootstrap_ci(auroc, y5, p5, n=400, seed=0, groups=groups)
    assert (grouped["auroc"]["ci_low"], grouped["auroc"]["ci_high"]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="groups has 3 entries"):
        evaluate_predictions(y, p, groups=[0, 1, 2], n_bootstrap=100)


def test_a_patients_studies_are_resampled_together_at_the_study_level() -> None:
    """MURA: a patient has several studies; the study-level interval resampled studies as independent
    even when the groups given (patients) join them."""
    y, p = _scores()
    studies = [f"s{i}" for i in range(y.size)]  # one image per study, five studies per patient
    views = evaluate_predictions(
        np.repeat(y, 5), np.repeat(p, 5), study_ids=np.repeat(studies, 5).tolist(), n_bootstrap=300
    )
    assert views["study"]["ci_method"] == "percentile bootstrap, stratified by label"
    patients = [f"patient{i // 5}" for i in range(y.size)]
    y5, p5 = np.repeat(y, 5), np.repeat(p, 5)  # each study of five patients' images, alike
    grouped = evaluate_predictions(
        y5,
        p5,
        study_ids=np.repeat(studies, 5).tolist(),
        groups=np.repeat(patients, 5).tolist(),
        n_bootstrap=300,
    )
    assert grouped["study"]["ci_method"] == "percentile bootstrap, resampling whole groups of related studies"
    expected = bootstrap_ci(auroc, y, p, n=300, seed=0, groups=patients)
    assert (grouped["study"]["auroc"]["ci_low"], grouped["study"]["auroc"]["ci_high"]) == pytest.approx(
        expected
    )


def test_definitions_are_in_metrics_json_and_the_report(tmp_path: Path) -> None:
    """ECE's bins, how sensitivity at a specificity is read off the ROC curve and the bootstrap's seed
    were nowhere in metrics.json or report.html: a reader could not tell an interpolated figure from
    one at a real threshold, or equal-width bins from equal-mass ones."""
    y, p = _scores()
    m = evaluate_predictions(y, p, threshold_points={"balanced": 0.5}, n_bootstrap=200, ece_bins=10)
    assert "equal-width" in m["calibration"]["definition"] and m["calibration"]["n_bins"] == 10
    sas = m["sensitivity_at_specificity"]
    assert "attainable threshold" in sas["definition"] and "not interpolated" in sas["definition"]
    assert sas["specificity"] >= 0.9 and np.mean(p[y == 0] < sas["threshold"]) == sas["specificity"]
    assert "not interpolated" in m["average_precision"]["definition"]
    assert (m["bootstrap_seed"], m["n_bootstrap"]) == (0, 200)
    html = write_report(m, tmp_path).read_text(encoding="utf-8")
    assert "Expected calibration error (10 equal-width bins)" in html
    assert "(at a threshold chosen on these images)" in html
    assert "stratified by label; 200 resamples, seed 0." in html
    assert json.loads((tmp_path / "metrics.json").read_text()) == m


def _distinct(paths: list[Path], n: int) -> list[Path]:
    """The first ``n`` of ``paths`` whose bytes differ (FracAtlas holds identical files)."""
    seen: dict[str, Path] = {}
    for path in paths:
        seen.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), path)
        if len(seen) == n:
            break
    return list(seen.values())


def _labelled_set(fracatlas_dir: Path, root: Path, *, copies: int, group_column: bool) -> Path:
    """A labels.csv set of 6 fractured and 10 normal FracAtlas images, each linked ``copies`` times
    under other names (as one patient's images, or the same file filed twice)."""
    # two missed fractures and two confident false alarms (of the default model), so that the
    # AUROC is not a perfect 1.0 with a 1.0-1.0 interval either way
    hard = [("Fractured", "IMG0001200.jpg"), ("Fractured", "IMG0001391.jpg")]
    hard += [("Non_fractured", "IMG0000016.jpg"), ("Non_fractured", "IMG0000018.jpg")]
    images = [fracatlas_dir / "images" / folder / name for folder, name in hard]
    images += _distinct(sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:20], 4)
    images += _distinct(sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[20:], 8)
    root.mkdir()
    rows = ["image,fracture" + (",group" if group_column else "")]
    for image in images:
        for k in range(copies):
            name = f"{image.stem}_{k}.jpg"
            (root / name).symlink_to(image)
            label = int(image.parent.name == "Fractured")
            rows.append(f"{name},{label}" + (f",{image.stem}" if group_column else ""))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("group_column", [True, False], ids=["group column", "identical files"])
def test_evaluate_resamples_the_groups_the_data_is_split_by(fracatlas_dir, tmp_path, group_column) -> None:
    """`evaluate` on images that come three at a time (a labels.csv `group`, or the same file under
    three names): its CIs treated the 48 images as independent; they resample the 16 groups, as the
    split does, and give the interval of the 16 distinct images."""
    data = _labelled_set(fracatlas_dir, tmp_path / "copies", copies=3, group_column=group_column)
    once = _labelled_set(fracatlas_dir, tmp_path / "once", copies=1, group_column=False)
    args = ["evaluate", "default", "--split", "all", "--bootstrap", "300", "--json"]
    result = CliRunner().invoke(app, [*args[:2], str(data), *args[2:]])
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    single = CliRunner().invoke(app, [*args[:2], str(once), *args[2:]])
    assert single.exit_code == 0, single.output
    s = json.loads(single.stdout)
    assert m["n"] == 48 and s["n"] == 16
    assert "16 groups" in m["ci_method"] and s["ci_method"] == "percentile bootstrap, stratified by label"
    assert m["auroc"]["value"] == pytest.approx(s["auroc"]["value"])
    # 48 "independent" images would give an interval about sqrt(3) times narrower than 16 do
    assert m["auroc"]["ci_high"] - m["auroc"]["ci_low"] > 0.7 * (s["auroc"]["ci_high"] - s["auroc"]["ci_low"])


def test_labels_csv_without_boxes_reports_no_box_metrics(fracatlas_dir, tmp_path) -> None:
    """A data set without box annotations has no box figures at all (not zeros), in metrics.json, the
    summary and the report."""
    data = _labelled_set(fracatlas_dir, tmp_path / "data", copies=1, group_column=False)
    out = tmp_path / "eval"
    args = ["evaluate", "default", str(data), "--split", "all", "--bootstrap", "100", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert "localization" not in m and "localization" not in result.stdout
    assert "Box AP" not in (out / "report.html").read_text(encoding="utf-8")


def test_without_resamples_no_interval_method_is_named_and_nothing_flagged_is_said() -> None:
    """`evaluate --bootstrap 0` wrote "ci_method: percentile bootstrap, ..." beside no interval; an
    all-equal set's sensitivity at specificity 0.90 was said to be read at "threshold 0.489", which
    flags every image when rerun as p >= 0.489 (it is one float step above every score)."""
    from fracsight.evaluation.report import where_read_off

    y, p = _scores()
    m = evaluate_predictions(y, p, study_ids=[str(i // 2) for i in range(y.size)], n_bootstrap=0)
    assert m["ci_method"] is None and m["study"]["ci_method"] is None and m["auroc"]["ci_low"] is None
    tied = evaluate_predictions(np.array([1] * 5 + [0] * 15), np.full(20, 0.489), n_bootstrap=0)
    sas = tied["sensitivity_at_specificity"]
    assert sas["threshold"] > 0.489 and "nothing flagged" in where_read_off(sas)
    assert where_read_off(m["sensitivity_at_specificity"]).startswith("threshold 0.")
