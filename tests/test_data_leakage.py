"""Leakage between a data set's own splits (fracsight.data.leakage): the same bytes or the same patient
in two splits, found as cheaply as `train` and `evaluate` need, and as the audit lists them."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracsight.data import load_dataset
from fracsight.data.audit import audit
from fracsight.data.leakage import DUPLICATES, GROUPS, Leak, SplitLeakage, label_conflicts, split_leakage


def leaky_class_folders(fracatlas_dir: Path, root: Path, per_class: int = 4, start: int = 0) -> Path:
    """train/val/test x fractured/not fractured linked from FracAtlas, leaking on purpose: test holds
    a copy of a train image under another name and a link to another, val a link to a train image.
    ``start``: the first image of each folder's list taken (past those a tiny model trained on)."""
    images = {
        "fractured": sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg")),
        # from the 11th on: the first ones hold FracAtlas's own exact duplicates (IMG0000003 = IMG0000005)
        "not fractured": sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[10:],
    }
    for name, files in images.items():
        for k, split in enumerate(("train", "val", "test")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for path in files[start + k * per_class : start + (k + 1) * per_class]:
                (folder / path.name).symlink_to(path)
    train = sorted((root / "train" / "fractured").iterdir())
    shutil.copyfile(train[0], root / "test" / "fractured" / "copy_of_a_train_image.jpg")
    (root / "test" / "fractured" / "linked.jpg").symlink_to(train[1].resolve())
    (root / "val" / "fractured" / "linked.jpg").symlink_to(train[2].resolve())
    return root


def test_images_of_a_later_split_held_by_an_earlier_one_are_counted(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    samples = load_dataset(leaky_class_folders(fracatlas_dir, tmp_path / "leaky")).samples
    leakage = split_leakage(samples)
    assert leakage.leaks == (
        Leak("val", DUPLICATES, 1, ("train",)),
        Leak("test", DUPLICATES, 2, ("train",)),
    )
    assert str(leakage) == (
        "1 val image is byte-identical to (or the same file as) train images; "
        "2 test images are byte-identical to (or the same file as) train images"
    )
    assert SplitLeakage.from_dict(leakage.to_dict()) == leakage
    # what `evaluate --split test` measures: the test images, against train and val
    assert split_leakage(samples, "test").leaks == (Leak("test", DUPLICATES, 2, ("train",)),)
    assert split_leakage(samples, "val").leaks == (Leak("val", DUPLICATES, 1, ("train",)),)
    assert split_leakage(samples, "train").leaks == (Leak("train", DUPLICATES, 1, ("val",)),)
    assert not split_leakage([s for s in samples if s.split == "test"], "test")  # nothing to leak from
    assert not split_leakage(
        [s for s in samples if s.path.name not in ("linked.jpg", "copy_of_a_train_image.jpg")]
    )


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, dtype=np.uint8)).save(path)


def test_a_patient_in_two_splits_is_a_leaking_group(tmp_path: Path) -> None:
    """MURA: one patient's studies in train and in valid (other images, other bytes)."""
    root = tmp_path / "mura"
    for k, (split, patient, study) in enumerate(
        [
            ("train", "patient00001", "study1_positive"),
            ("train", "patient00002", "study1_negative"),
            ("valid", "patient00001", "study2_negative"),
            ("valid", "patient00003", "study1_positive"),
        ]
    ):
        _png(root / split / "XR_WRIST" / patient / study / "image1.png", 40 * k)
    samples = load_dataset(root).samples
    assert split_leakage(samples).leaks == (Leak("val", GROUPS, 1, ("train",)),)
    assert "1 val group (patient, study) lies in train too" in str(split_leakage(samples, "val"))
    assert audit(root).declared_groups_straddling == {"patient00001": ["train", "val"]}  # the audit's list


@pytest.mark.fracatlas
def test_fracatlas_splits_do_not_leak_and_the_check_is_cheap(fracatlas_dir: Path) -> None:
    """Its 9 groups of exact duplicates lie within one split each (docs/data.md's audit)."""
    samples = load_dataset(fracatlas_dir).samples
    start = time.perf_counter()
    assert not split_leakage(samples)
    assert time.perf_counter() - start < 5  # measured 0.03-0.15 s on the 2-core machine


def test_a_picture_filed_under_two_labels_is_warned_about(tmp_path: Path, caplog) -> None:
    """A copy of a `leg` image under `normal/` (and the same in a labels.csv) trained and was
    measured without a word: the model was taught two answers for one picture."""
    for k, name in enumerate(("hand", "leg", "normal")):
        for i in range(3):
            _png(tmp_path / "folders" / name / f"{i}.png", 60 * k + 10 * i)
    shutil.copyfile(tmp_path / "folders" / "leg" / "1.png", tmp_path / "folders" / "normal" / "copy.png")
    shutil.copyfile(tmp_path / "folders" / "hand" / "2.png", tmp_path / "folders" / "hand" / "same.png")
    with caplog.at_level("WARNING", logger="fracsight.data"):
        dataset = load_dataset(tmp_path / "folders")
    assert label_conflicts(dataset) == [["leg/1.png (leg)", "normal/copy.png (normal)"]]  # not hand's copy
    assert "1 picture(s) in" in caplog.text
    assert "leg/1.png (leg) = normal/copy.png (normal)" in caplog.text

    csv_root = tmp_path / "csv"
    shutil.copytree(tmp_path / "folders", csv_root / "images")
    rows = [
        "image,fracture,class",
        "images/leg/1.png,1,leg",
        "images/normal/copy.png,0,",
        "images/hand/0.png,1,hand",
    ]
    (csv_root / "labels.csv").write_text("\n".join(rows) + "\n")
    assert label_conflicts(load_dataset(csv_root)) == [
        ["images/leg/1.png (fractured, leg)", "images/normal/copy.png (not fractured)"]
    ]
    caplog.clear()
    (tmp_path / "folders" / "normal" / "copy.png").unlink()
    with caplog.at_level("WARNING", logger="fracsight.data"):
        assert label_conflicts(load_dataset(tmp_path / "folders")) == []
    assert "different labels" not in caplog.text


def test_a_run_split_before_patient_folders_keeps_its_split(tmp_path: Path, caplog) -> None:
    """Class folders' patient sub-folders became groups (2026-12-06), which split a set without given
    splits anew: a run trained before then found its own unchanged data "not the data it trained
    on" (export and --resume refused it) and evaluate measured on another carved test split."""
    import logging
    from types import SimpleNamespace

    from fracsight.data import ensure_splits
    from fracsight.data.leakage import images_record, split_as_trained, without_folder_groups
    from fracsight.data.splits import train_val_samples
    from fracsight.evaluation.run import held_out

    for i in range(24):
        for view in range(2):
            folder = tmp_path / "set" / ("Fractured", "Normal")[i % 2] / f"patient{i:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8), color=10 * view + i).save(folder / f"v{view}.png")
    dataset = load_dataset(tmp_path / "set")
    flat = without_folder_groups(dataset)
    assert flat is not None and all(s.group is None for s in flat.samples)

    def record(data) -> str:
        train, val = train_val_samples(data, 0)
        return images_record(data.root, train + val)["images_sha256"]

    before, now = record(flat), record(dataset)
    assert before != now  # the premise: the groups split the set anew
    with caplog.at_level(logging.WARNING, logger="fracsight.data.leakage"):
        kept = split_as_trained(dataset, 0, 0, before)
    assert kept.samples == flat.samples
    assert "the run trained before class folders' sub-folders were taken as patients" in caplog.text
    assert split_as_trained(dataset, 0, 0, now) is dataset  # a run of today
    assert split_as_trained(dataset, 0, 0, "0" * 64) is dataset  # other images: the callers refuse
    # evaluate: the bundle's train/validation counts tell the older split
    carved = ensure_splits(flat, seed=0)
    spec = SimpleNamespace(
        training={
            "data": str(tmp_path / "set"),
            "n_train": len(carved.split("train")),
            "n_val": len(carved.split("val")),
            "config": {"seed": 0},
        }
    )
    held = held_out(dataset, "test", spec, tmp_path / "set")
    assert held.own and [s.path for s in held.samples] == [s.path for s in carved.split("test")]
    assert held.samples != list(ensure_splits(dataset, seed=0).split("test"))
    # the bundle's digest of its images tells the split where the counts would not (they coincide
    # where most patients have one image): counts of today's split, the digest of the older one
    grouped = ensure_splits(dataset, seed=0)
    spec.training.update(
        n_train=len(grouped.split("train")), n_val=len(grouped.split("val")), images_sha256=before
    )
    held = held_out(dataset, "test", spec, tmp_path / "set")
    assert [s.path for s in held.samples] == [s.path for s in carved.split("test")]


def test_the_trained_data_sets_own_notes_stay_quiet(tmp_path: Path, caplog) -> None:
    """The check for trained-on images read the run's data set with its logger's level set as a bare
    attribute, which Python's cached levels ignore: once fracsight.data had warned once, the run's
    data set's own notes ("holds no images") came out during an export of other data."""
    import logging

    from fracsight.data.leakage import trained_images_among

    for label in ("Fractured", "Normal"):
        folder = tmp_path / "trained" / label
        folder.mkdir(parents=True)
        for i in range(6):
            Image.new("L", (8, 8), color=i + (40 if label == "Normal" else 0)).save(folder / f"{i}.png")
    (tmp_path / "trained" / "empty_class").mkdir()
    caplog.set_level(logging.WARNING)
    logging.getLogger("fracsight.data.folders").warning("an earlier note")  # fills the level cache
    caplog.clear()
    trained_images_among(tmp_path / "trained", "auto", 0, 0, [], "0" * 64)
    assert "holds no images" not in caplog.text, caplog.text


def test_why_trained_images_could_not_be_checked_is_said(tmp_path: Path, caplog) -> None:
    """Every bundle without a record of its images (all the packaged ones) was said to have training
    data "gone, or changed since, or not recorded", and a training folder recorded relative to where
    training ran was called gone while it was the very data given."""
    import logging

    from fracsight.data.leakage import refuse_images_trained_on

    caplog.set_level(logging.WARNING, logger="fracsight.data.leakage")
    refuse_images_trained_on({"data": str(tmp_path)}, None, tmp_path / "other", [], "m v1")
    assert "m v1 trained on: it does not record which images it trained on" in caplog.text
    caplog.clear()
    refuse_images_trained_on({"data": "../nowhere/data"}, "0" * 64, tmp_path / "other", [], "m v1")
    assert (
        "its training data (../nowhere/data, recorded relative to where training ran) is not a folder"
        in caplog.text
    )
    caplog.clear()
    refuse_images_trained_on({"data": str(tmp_path)}, "0" * 64, tmp_path / "other", [], "m v1")
    assert f"its training data ({tmp_path}) has changed since" in caplog.text
