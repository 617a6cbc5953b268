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
