"""`evaluate` on a MURA folder: study figures recomputed from predictions.csv with scikit-learn,
MURA's `valid` split checked for leakage, and a fracture model scored on abnormality labels said so."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from fracsight.evaluation.run import evaluate_model

# (split, part, patient, study folder, views); patient00002 has studies in train and valid
STUDIES = [
    ("train", "XR_WRIST", "patient00001", "study1_positive", 1),
    ("train", "XR_WRIST", "patient00002", "study1_negative", 1),
    ("valid", "XR_WRIST", "patient00002", "study2_positive", 2),
    ("valid", "XR_WRIST", "patient00003", "study1_negative", 3),
    ("valid", "XR_HAND", "patient00003", "study1_positive", 2),
    ("valid", "XR_HAND", "patient00004", "study1_negative", 1),
    ("valid", "XR_HAND", "patient00004", "study2_positive", 2),
]


@pytest.fixture(scope="module")
def mura_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mura") / "MURA-v1.1"
    rng = np.random.default_rng(0)
    for split, part, patient, study, n in STUDIES:
        folder = root / split / part / patient / study
        folder.mkdir(parents=True)
        for k in range(1, n + 1):
            bone = np.zeros((96, 64), np.uint8)
            bone[10:86, 24:40] = 180 + rng.integers(0, 60)  # a bright shaft, so views differ
            pixels = np.clip(bone + rng.normal(0, 12, bone.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).convert("RGB").save(folder / f"image{k}.png")  # MURA ships RGB too
    return root


@pytest.fixture(scope="module")
def evaluated(mura_root: Path) -> tuple[dict, list[dict[str, str]], list[str]]:
    root = mura_root
    warnings: list[str] = []
    out = root.parent / "report"
    metrics = evaluate_model(None, root, out, split="valid", n_bootstrap=0, warn=warnings.append)
    with (out / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return metrics, rows, warnings


def test_study_figures_are_the_mean_of_the_views_recomputed_with_sklearn(evaluated) -> None:
    metrics, rows, _ = evaluated
    studies: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        studies.setdefault(r["study_id"], []).append((int(r["label"]), float(r["probability"])))
    assert len(studies) == 5  # one per study folder: XR_WRIST and XR_HAND patient00003 study1 apart
    labels = np.array([max(y for y, _ in v) for v in studies.values()])
    probs = np.array([np.mean([p for _, p in v]) for v in studies.values()])
    study = metrics["study"]
    assert (study["n"], study["n_positive"]) == (5, 3)
    assert study["auroc"]["value"] == pytest.approx(roc_auc_score(labels, probs))
    for point in study["thresholds"].values():
        kappa = cohen_kappa_score(labels, (probs >= point["threshold"]).astype(int))
        assert point["cohen_kappa"] == pytest.approx(kappa)


def test_valid_split_is_checked_for_a_patient_in_train_too(evaluated) -> None:
    """`--split valid` (MURA's name) found no leakage: the samples' split is `val`, the check
    compared `valid` with it. The packaged model never saw this train split, and the warning says so."""
    metrics, _, warnings = evaluated
    leak = {"split": "val", "kind": "groups", "count": 1, "earlier": ["train"]}
    assert metrics["data"]["leakage"] == [leak]
    (warning,) = [w for w in warnings if "leakage" in w]
    assert "lies in train too" in warning
    assert (
        "records other training data than this folder, so its figures are inflated by them only if" in warning
    )
    assert any(
        "so its figures are inflated by them only if it saw these images elsewhere" in n
        for n in metrics["notes"]
    )


def test_a_fracture_model_on_abnormality_labels_is_noted(evaluated) -> None:
    metrics, _, _ = evaluated
    (note,) = [n for n in metrics["notes"] if "binary head was trained on another label" in n]
    assert "the data's 'abnormal'" in note and "count as its misses" in note
    assert metrics["data"]["positive"] == "abnormal"


def test_compare_notes_a_fracture_model_on_abnormality_labels_and_leakage(mura_root: Path) -> None:
    from fracsight.evaluation.compare import compare_models

    result = compare_models(None, "fracatlas-lite0-384-v5", mura_root, split="valid")
    mismatch = "binary head was trained on another label than the data's 'abnormal'"
    notes = [n for n in result["notes"] if mismatch in n]
    assert [n.split(":")[0] for n in notes] == ["model A (default)", "model B (fracatlas-lite0-384-v5)"]
    assert result["positive"] == "abnormal"
    # the leakage `evaluate` notes, which compare did not check at all
    assert result["data"]["leakage"] == [{"split": "val", "kind": "groups", "count": 1, "earlier": ["train"]}]
    assert any(
        "lies in train too: the model measured records other training data than this folder" in n
        for n in result["notes"]
    )


def test_a_view_given_twice_counts_once_in_the_study_figures_as_predict_counts_it(
    mura_root: Path, tmp_path: Path
) -> None:
    """The reproduction: a study with a copy of one view (image2.png copied to image3.png) was the
    mean of all its files in `evaluate` and `compare` but of its distinct views in `predict`, so
    the same study was cleared by one and suspected by the other, with nothing said."""
    import shutil

    from fracsight.evaluation.compare import compare_models
    from fracsight.inference import Predictor

    root = tmp_path / "MURA-v1.1"
    shutil.copytree(mura_root, root)
    study = root / "valid" / "XR_WRIST" / "patient00003" / "study1_negative"
    shutil.copy(study / "image2.png", study / "image4.png")
    shutil.copy(study / "image2.png", study / "image5.png")
    metrics = evaluate_model(None, root, tmp_path / "report", split="valid", n_bootstrap=0)
    with (tmp_path / "report" / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12  # every image still counts at the image level (10 + 2 copies)
    views = sorted(study.glob("*.png"))
    predictor = Predictor()
    said = predictor.predict_study([predictor.predict(v) for v in views], study.name)
    own = {
        Path(r["source"]).name: float(r["probability"])
        for r in rows
        if "patient00003/study1_neg" in r["source"]
    }
    assert sorted(own) == [v.name for v in views]
    expected = np.mean([own["image1.png"], own["image2.png"], own["image3.png"]])  # 4 and 5 repeat 2
    assert said.fracture_probability == pytest.approx(expected, abs=1e-6)
    assert metrics["study"]["repeats_left_out"] == 2
    assert any("2 image(s) repeat an earlier view of their study" in n for n in metrics["notes"])

    # predictions.csv says which rows the study figures count (it did not: they could not be
    # recomputed from it where a study repeats a view)
    left_out = {r["source"] for r in rows if r["study_view_counted"] == "0"}
    assert {Path(s).name for s in left_out} == {"image4.png", "image5.png"} and len(left_out) == 2
    studies: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["study_view_counted"] == "1":
            studies.setdefault(r["study_id"], []).append((int(r["label"]), float(r["probability"])))
    labels = np.array([max(y for y, _ in v) for v in studies.values()])
    probs = np.array([np.mean([p for _, p in v]) for v in studies.values()])
    assert metrics["study"]["auroc"]["value"] == pytest.approx(roc_auc_score(labels, probs))
    compared = compare_models(None, None, root, split="valid")
    assert compared["study"]["n"] == 5
    assert compared["study"]["auroc"]["a"] == pytest.approx(metrics["study"]["auroc"]["value"])
    assert compared["study"]["repeats_left_out"] == 2
    # a patient's two studies (patient00003's wrist and hand) resampled together, as evaluate does
    # (DeLong alone took studies as independent, though evaluate's intervals do not)
    assert compared["study"]["auroc"]["grouped"]["n_groups"] < compared["study"]["n"]
    from fracsight.evaluation.compare_cli import summary_lines

    assert "groups of related studies: 95% CI" in "\n".join(summary_lines(compared))
    assert any("2 image(s) repeat an earlier view of their study" in n for n in compared["notes"])


def test_the_model_card_gives_the_study_level_figures(evaluated) -> None:
    """MURA's figures are per study (Cohen's kappa): the card gave the image level only, though its
    caution line counted the studies."""
    import dataclasses

    from fracsight import Predictor
    from fracsight.training.card import render_card

    metrics, _, _ = evaluated
    spec = Predictor().spec
    card = render_card(dataclasses.replace(spec, metrics={**spec.metrics, "test": metrics}))
    study = metrics["study"]
    section = card[card.index("Study level (n = 5 studies, 3 fractured") :]
    assert f"- AUROC: {study['auroc']['value']:.3f}" in section
    # the study level's ECE read "n/a": it sits under calibration in evaluate's study block
    assert f"Expected calibration error (10 bins): {study['calibration']['ece']:.3f};" in section
    kappas = [f"{p['cohen_kappa']:.3f} |" for p in study["thresholds"].values()]
    assert all(k in section for k in kappas)
