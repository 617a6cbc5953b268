"""A researcher's first runs of `train` and `evaluate` on their own data (audit of 2026-12-03): a val
split without fractured images, `--bootstrap 0` as the docs give it, and intervals a bootstrap
cannot have (one group of related images, one image of each label)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fracsight.cli import app
from fracsight.evaluation.report import evaluate_predictions


def _link(images: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        (folder / image.name).symlink_to(image)


@pytest.mark.parametrize("empty_folder", [False, True])
def test_train_refuses_a_val_split_without_fractured_images(fracatlas_dir, tmp_path, empty_folder):
    """Trained on, every epoch scored -inf: no best.pt was written, yet the command said where its
    checkpoint was, and export then said "train first"."""
    pytest.importorskip("torch")
    fractured = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:8]
    normal = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:12]
    data = tmp_path / "data"
    _link(fractured, data / "train" / "fractured")
    _link(normal[:8], data / "train" / "normal")
    _link(normal[8:], data / "val" / "normal")
    if empty_folder:
        (data / "val" / "fractured").mkdir()
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(run), "--set", "device=cpu"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "best epoch" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "the val split has no 'fractured' images (it holds 4)" in errors[0]
    assert "or leave the val split out and fracsight carves one" in errors[0]
    assert not run.exists()  # refused before anything was written


def test_a_val_split_carved_too_small_says_it_was_carved(fracatlas_dir, tmp_path):
    """3 fractured and 25 normal images, no split folders: the error advised leaving out the val
    split the user never gave, and "(3 images)" read as the count of fractured ones."""
    pytest.importorskip("torch")
    fractured = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:3]
    normal = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:25]
    data = tmp_path / "data"
    _link(fractured, data / "fractured")
    _link(normal, data / "normal")
    result = CliRunner().invoke(
        app, ["train", str(data), "--out", str(tmp_path / "run"), "--set", "device=cpu"]
    )
    assert result.exit_code == 2, result.output
    assert "fracsight carved it out of train (the data give none)" in result.stderr, result.stderr
    assert "leave the val split out" not in result.stderr


def test_train_refuses_a_train_split_of_one_label(fracatlas_dir, tmp_path):
    pytest.importorskip("torch")
    fractured = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:6]
    normal = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:10]
    data = tmp_path / "data"
    _link(normal[:6], data / "train" / "normal")
    (data / "train" / "fractured").mkdir()
    _link(fractured, data / "val" / "fractured")
    _link(normal[6:], data / "val" / "normal")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(run), "--set", "device=cpu"])
    assert result.exit_code == 2, result.output
    assert "the train split has no 'fractured' images" in result.stderr  # (a test split is carved out)
    assert not run.exists()


def test_evaluate_takes_bootstrap_0_as_the_docs_say(tiny_bundle, tiny_dataset):
    """`--bootstrap 0` (no intervals) was refused as "greater than or equal to 100"."""
    args = ["evaluate", str(tiny_bundle), str(tiny_dataset), "--split", "val", "--bootstrap", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "AUROC" in result.output and "95% CI" not in result.output
    assert "confidence intervals understate" not in result.output  # there are none to understate
    too_few = CliRunner().invoke(app, [*args[:-1], "50"])
    assert too_few.exit_code == 2 and "give 0 (none) or 100 or more" in too_few.stderr


def test_no_interval_where_every_resample_is_the_same():
    """One group of related images (one patient's four views) was resampled into "0.500-0.500", as
    though the figure were certain; so were two studies, one of each label."""
    y, p = np.array([1, 0, 1, 0]), np.array([0.6, 0.7, 0.3, 0.2])
    one_group = evaluate_predictions(y, p, groups=["patient1"] * 4, n_bootstrap=200)
    assert one_group["auroc"] == {"value": 0.5, "ci_low": None, "ci_high": None}
    pair = evaluate_predictions(np.array([1, 0]), np.array([0.4, 0.6]), n_bootstrap=200)
    assert pair["auroc"]["value"] == 0.0 and pair["auroc"]["ci_low"] is None
    two_groups = evaluate_predictions(y, p, groups=["a", "a", "b", "b"], n_bootstrap=200)
    assert two_groups["auroc"]["ci_low"] is not None  # groups that can be drawn differently keep theirs
    # one study all fractured and one all other: every draw of both classes is the pair itself (the
    # draws of one class are not used), and MURA's test split of two studies said "0.500-0.500"
    pure = evaluate_predictions(np.array([1, 1, 0, 0]), p, groups=["a", "a", "b", "b"], n_bootstrap=200)
    assert pure["auroc"]["ci_low"] is None and pure["average_precision"]["ci_low"] is None


def test_compare_draws_no_grouped_interval_from_one_group(tmp_path):
    """Four views of one patient: the paired group bootstrap drew that one group every time."""
    from fracsight.data import Sample, split_keys
    from fracsight.evaluation.compare import _grouped_difference

    kept = []
    for i in range(4):
        path = tmp_path / f"image{i}.png"
        path.write_bytes(bytes([i]) * (10 + i))
        kept.append(Sample(path, labels={"fracture": i % 2}, group="patient1"))
    y = np.array([0, 1, 0, 1])
    probs = [np.array([0.2, 0.6, 0.7, 0.3]), np.array([0.1, 0.9, 0.4, 0.5])]
    assert _grouped_difference(split_keys(kept), y, probs) == {}
    two = [*kept[:2], *(Sample(s.path, s.labels, group="patient2") for s in kept[2:])]
    assert _grouped_difference(split_keys(two), y, probs)["grouped"]["n_groups"] == 2


def test_compare_names_two_bundles_of_one_name_by_what_was_typed(tiny_bundle, tiny_dataset, tmp_path):
    """Two runs of one recipe share name and version: the summary read "A: tiny-test v1 ...; B:
    tiny-test v1 ...", and which was which could not be told."""
    other = tmp_path / "other-bundle"
    shutil.copytree(tiny_bundle, other)
    args = ["compare", str(tiny_bundle), str(other), str(tiny_dataset), "--split", "val"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert f"A: tiny-test v1 ({tiny_bundle})" in first and f"B: tiny-test v1 ({other})" in first
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert json.loads(as_json.stdout)["models"]["b"]["model"] == str(other)


def test_compare_says_which_model_lacks_the_split(tiny_bundle, tiny_dataset, tmp_path):
    """`--split test` on data only one model was trained on: "the model was not trained on" it."""
    data = tmp_path / "unsplit"
    for image in sorted(tiny_dataset.rglob("*.jpg")):
        folder = data / image.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / image.name).exists():
            (folder / image.name).symlink_to(image.resolve())
    result = CliRunner().invoke(app, ["compare", "default", str(tiny_bundle), str(data)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error (dataset_error): model A (default): ")


def test_a_max_samples_run_is_not_said_to_have_another_split(tmp_path):
    """The bundle counts the images trained on (N of `max_samples`), not the train split: every such
    run measured on its carved test split got the note "the split carved now differs from the
    training run's ... some of these images may have been training images"."""
    from types import SimpleNamespace

    from fracsight.data import Dataset, Sample
    from fracsight.evaluation.run import _split_as_recorded

    samples = [
        Sample(tmp_path / f"{i}.png", {"fracture": i % 2}, split="val" if i < 4 else "train")
        for i in range(34)
    ]
    carved = Dataset(tmp_path, "class-folders", tuple(samples), {"fracture": ("normal", "fractured")})

    def spec(n_train: int, max_samples: int) -> SimpleNamespace:
        config = {"max_samples": max_samples, "seed": 0}
        return SimpleNamespace(training={"n_train": n_train, "n_val": 4, "config": config})

    assert _split_as_recorded(spec(20, 20), carved)
    assert _split_as_recorded(spec(30, 0), carved) and _split_as_recorded(spec(30, 50), carved)
    assert not _split_as_recorded(spec(29, 0), carved)  # the data changed: still said
    # nor that its whole train split was trained on (`evaluate --split train` said so of 48 images)
    from fracsight.evaluation.run import seen_by_model

    assert "20 of whose images it was trained on (max_samples)" in seen_by_model("train", spec(20, 20))
    assert seen_by_model("train", spec(30, 0)).endswith("the images it was trained on")


@pytest.mark.parametrize(("names", "warned"), [(("0", "1"), True), (("Fractured", "Normal"), False)])
def test_two_class_folders_that_are_not_fracture_labels_are_said_to_train_no_fracture_head(
    tmp_path, caplog, names, warned
):
    """`train/0` + `train/1` (a common export) trained a two-class head without a word: no fracture
    head, no AUROC and no operating points for someone who meant a fracture model."""
    import logging

    from fracsight.data import load_dataset

    for name in names:
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "d" / name / f"{name}{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(tmp_path / "d")
    assert ("two class folders '0' and '1' do not read as fractured / not fractured" in caplog.text) is warned
    assert ("class" in ds.class_names) is warned


def test_evaluate_says_why_auroc_is_missing_on_images_of_one_label(tiny_bundle, tiny_dataset, tmp_path):
    """A folder of fractured cases only (to check sensitivity) printed "AUROC n/a" without a word."""
    data = tmp_path / "positives"
    (data / "images").mkdir(parents=True)
    rows = ["image,fracture"]
    for image in sorted((tiny_dataset / "val" / "fractured").iterdir()):
        (data / "images" / image.name).symlink_to(image.resolve())
        rows.append(f"images/{image.name},1")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(
        app, ["evaluate", str(tiny_bundle), str(data), "--split", "all", "--bootstrap", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "AUROC n/a" in result.output
    assert f"note: all {len(rows) - 1} images are fractured: AUROC, average precision" in result.output
