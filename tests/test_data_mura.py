"""MURA reader: study folders, patient groups, optional labeled-studies csv."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from fracsight.data import FRACTURE, REGION, group_split, load_dataset, straddling_groups
from fracsight.errors import DatasetError

STUDIES = [
    ("train", "XR_ELBOW", "patient00011", "study1_negative", 2),
    ("train", "XR_ELBOW", "patient00011", "study2_positive", 1),
    ("train", "XR_WRIST", "patient00011", "study1_positive", 3),
    ("train", "XR_WRIST", "patient00012", "study1_negative", 1),
    ("train", "XR_HUMERUS", "patient00013", "study1_positive", 2),
    ("valid", "XR_ELBOW", "patient11185", "study1_positive", 2),
    ("valid", "XR_FINGER", "patient11186", "study1_negative", 1),
]


def make_mura(root: Path, with_splits: bool = True) -> Path:
    for split, part, patient, study, n in STUDIES:
        folder = (root / split if with_splits else root) / part / patient / study
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(1, n + 1):
            Image.new("L", (8, 8)).save(folder / f"image{k}.png")
        (folder / f"._image{k}.png").write_bytes(b"macOS junk")
    return root


def test_mura_without_csv(tmp_path: Path) -> None:
    ds = load_dataset(make_mura(tmp_path / "MURA-v1.1"))
    assert ds.layout == "mura"
    assert len(ds.samples) == 12
    assert ds.class_names[FRACTURE] == ("normal", "abnormal")
    assert ds.class_names[REGION] == ("elbow", "finger", "humerus", "wrist")
    assert {n: len(ds.split(n)) for n in ds.splits} == {"train": 9, "val": 3}
    s = next(s for s in ds.samples if "XR_WRIST/patient00011" in s.path.as_posix())
    assert s.labels == {FRACTURE: 1}
    assert s.regions == ("wrist",)
    assert s.study_id == "XR_WRIST/patient00011/study1"
    assert s.group == "patient00011"
    assert sum(x.labels[FRACTURE] for x in ds.samples) == 1 + 3 + 2 + 2


def test_mura_without_split_folders_and_wrapper(tmp_path: Path) -> None:
    make_mura(tmp_path / "download" / "MURA", with_splits=False)
    ds = load_dataset(tmp_path / "download")  # one wrapper folder is looked through
    assert ds.layout == "mura" and ds.root == tmp_path / "download" / "MURA"
    assert ds.splits == ()
    parts = group_split(ds.samples, seed=3)
    assert straddling_groups([s for p in parts.values() for s in p]) == {}


def test_mura_csv_is_the_label_source(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_mura(tmp_path / "MURA-v1.1")
    lines = []
    for split, part, patient, study, _ in STUDIES:
        label = int(study.endswith("positive"))
        if (part, patient, study) == ("XR_WRIST", "patient00012", "study1_negative"):
            label = 1  # csv disagrees with the folder suffix
        lines.append(f"MURA-v1.1/{split}/{part}/{patient}/{study}/,{label}")
    (root / "train_labeled_studies.csv").write_text("\n".join(lines[:5]) + "\n")
    (root / "valid_labeled_studies.csv").write_text("\n".join(lines[5:]) + "\n")
    # a study without suffix, labeled only by the csv
    bare = root / "valid" / "XR_HAND" / "patient11190" / "study1"
    bare.mkdir(parents=True)
    Image.new("L", (8, 8)).save(bare / "image1.png")
    with (root / "valid_labeled_studies.csv").open("a") as f:
        f.write("MURA-v1.1/valid/XR_HAND/patient11190/study1/,1\n")

    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(root)
    by_study = {s.study_id: s.labels[FRACTURE] for s in ds.samples}
    assert by_study["XR_WRIST/patient00012/study1"] == 1
    assert by_study["XR_HAND/patient11190/study1"] == 1
    assert "disagree" in caplog.text
    assert "hand" in ds.class_names[REGION]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # not UTF-8 (a latin-1 export, a file damaged on copy): was a UnicodeDecodeError traceback
        (b"MURA-v1.1/valid/XR_ELBOW/patient11185/study1_positive/,1\n\xe9\xff\n", "cannot read"),
        # one study twice with both labels (two csvs concatenated): the first one won silently
        (
            b"MURA-v1.1/valid/XR_ELBOW/patient11185/study1_positive/,1\n"
            b"MURA-v1.1/valid/XR_ELBOW/patient11185/study1_positive/,0\n",
            r"valid_labeled_studies\.csv:2: .*study1_positive/ is labelled 0 and 1",
        ),
        # a bad label on line 1 was skipped as if it were a header (the folder suffix used instead)
        (
            b"MURA-v1.1/valid/XR_ELBOW/patient11185/study1_positive/,2\n",
            r"valid_labeled_studies\.csv:1: expected",
        ),
    ],
)
def test_damaged_labeled_studies_csv_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    root = make_mura(tmp_path / "MURA-v1.1")
    (root / "valid_labeled_studies.csv").write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(root)


def test_one_patients_study1_positive_and_study1_negative_are_two_studies(tmp_path: Path) -> None:
    """Both folders had study id XR_WRIST/patient00001/study1: one study of two labels, which the
    study-level figures counted as one abnormal study (a study is abnormal when any image is)."""
    from fracsight.evaluation.aggregate import aggregate_labels

    root = tmp_path / "MURA-v1.1"
    for study, n in (("study1_positive", 2), ("study1_negative", 1), ("study2_negative", 1)):
        folder = root / "train" / "XR_WRIST" / "patient00001" / study
        folder.mkdir(parents=True)
        for k in range(1, n + 1):
            Image.new("L", (8, 8)).save(folder / f"image{k}.png")
    ds = load_dataset(root)
    by_study = {s.study_id: s.labels[FRACTURE] for s in ds.samples}
    assert by_study == {
        "XR_WRIST/patient00001/study1_positive": 1,
        "XR_WRIST/patient00001/study1_negative": 0,
        "XR_WRIST/patient00001/study2": 0,  # alone: named as before
    }
    _, labels = aggregate_labels([s.study_id for s in ds.samples], [s.labels[FRACTURE] for s in ds.samples])
    assert sorted(labels.tolist()) == [0, 0, 1]


def test_images_listed_in_image_paths_csv_but_missing_and_empty_studies_are_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MURA ships `*_image_paths.csv`; a partial copy lost images and emptied study folders without a word."""
    root = make_mura(tmp_path / "MURA-v1.1")
    listed = [
        "MURA-v1.1/valid/XR_ELBOW/patient11185/study1_positive/image1.png",  # on disk
        "MURA-v1.1/valid/XR_ELBOW/patient11185/study1_positive/image7.png",  # lost
        "MURA-v1.1/valid/XR_ELBOW/patient11185/study1_positive/IMAGE1.PNG",  # on disk, read, in other case
    ]
    (root / "valid_image_paths.csv").write_text("\n".join(listed) + "\n")
    (root / "train" / "XR_HAND" / "patient00014" / "study1_negative").mkdir(parents=True)
    absent = "MURA-v1.1/valid/XR_ELBOW/patient99999/study1_positive/,1\n"
    (root / "valid_labeled_studies.csv").write_text(absent)
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(root)
    assert len(ds.samples) == 12
    assert "1 image(s) listed in the *_image_paths.csv are not on disk" in caplog.text
    assert "study1_positive/image7.png" in caplog.text and "image1.png," not in caplog.text
    assert "1 labelled study folder(s) hold no images" in caplog.text
    assert "train/XR_HAND/patient00014/study1_negative" in caplog.text
    assert "not on disk: XR_ELBOW/patient99999/study1_positive" in caplog.text  # named, not only counted


def test_images_outside_a_study_folder_are_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Images beside the patient or study folders were left out without a word (class folders warn)."""
    root = make_mura(tmp_path / "MURA-v1.1")
    before = len(load_dataset(root).samples)
    wrist = root / "train" / "XR_WRIST"
    Image.new("L", (8, 8)).save(wrist / "patient00012" / "image_loose.png")
    Image.new("L", (8, 8)).save(wrist / "loose2.png")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        assert len(load_dataset(root).samples) == before
    assert "2 image(s) outside a study folder are left out (no study, so no label)" in caplog.text
    assert "train/XR_WRIST/patient00012/image_loose.png" in caplog.text


def test_leakage_check_takes_muras_valid_split_name(tmp_path: Path) -> None:
    """`split_leakage(samples, "valid")` (evaluate --split valid) compared `valid` with the samples'
    `val` and found nothing."""
    from fracsight.data.leakage import split_leakage

    root = make_mura(tmp_path / "MURA-v1.1")
    moved = root / "valid" / "XR_WRIST" / "patient00012" / "study2_negative"  # patient00012 is in train
    moved.mkdir(parents=True)
    Image.new("L", (8, 8), 3).save(moved / "image1.png")
    samples = load_dataset(root).samples
    assert split_leakage(samples, "valid") == split_leakage(samples, "val")
    assert "1 val group (patient, study) lies in train too" in str(split_leakage(samples, "valid"))
    warning = split_leakage(samples, "valid").warning(root, trained_here=False)
    assert (
        "inflated by them only if it saw these images elsewhere" in warning
        and "figures measured on them are inflated" not in warning
    )


def test_audit_counts_muras_label_as_abnormality(tmp_path: Path) -> None:
    from rich.console import Console

    from fracsight.data.audit import audit, render_audit

    console = Console(width=200, record=True)
    for part in render_audit(audit(make_mura(tmp_path / "MURA-v1.1"), workers=1)):
        console.print(part)
    text = console.export_text()
    assert "Images per split and abnormality class" in text and "fracture class" not in text


def test_a_study_missing_from_its_splits_csv_takes_no_label_of_another_split(tmp_path: Path) -> None:
    """valid/XR_WRIST/patient00001/study1_positive, absent from valid_labeled_studies.csv, took the
    label of train's study of the same name (0), against its own folder's suffix."""
    root = tmp_path / "MURA-v1.1"
    for split in ("train", "valid"):
        folder = root / split / "XR_WRIST" / "patient00001" / "study1_positive"
        folder.mkdir(parents=True)
        Image.new("L", (8, 8)).save(folder / "image1.png")
    (root / "train_labeled_studies.csv").write_text(
        "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/,0\n"
    )
    (root / "valid_labeled_studies.csv").write_text("")
    labels = {s.split: s.labels[FRACTURE] for s in load_dataset(root).samples}
    assert labels == {"train": 0, "val": 1}  # the csv for train's; its own suffix for valid's


def test_a_study_listed_twice_without_its_split_keeps_the_files_label(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reproduction: rows naming no split (``XR_HAND/patient00007/study1_positive/,0``) given
    twice lost the study its label from the file (its folder's suffix, 1, was used instead) and
    the study was said to be "not on disk"; without a suffix it was dropped from every count."""
    root = tmp_path / "m"
    for study in ("study1_positive", "study2"):
        folder = root / "valid" / "XR_HAND" / "patient00007" / study
        folder.mkdir(parents=True)
        Image.new("L", (8, 8)).save(folder / "image1.png")
    rows = ["XR_HAND/patient00007/study1_positive/,0", "XR_HAND/patient00007/study2/,1"]
    (root / "valid_labeled_studies.csv").write_text("\n".join(rows + rows) + "\n")
    with caplog.at_level(logging.WARNING):
        labels = {s.study_id: s.labels[FRACTURE] for s in load_dataset(root).samples}
    assert labels == {"XR_HAND/patient00007/study1": 0, "XR_HAND/patient00007/study2": 1}
    assert "not on disk" not in caplog.text


def test_studies_copied_out_of_their_split_folder_take_the_csvs_labels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MURA's XR_* folders copied without train/ beside its CSV, whose rows always name a split:
    every study was "not on disk" though there, the CSV skipped (the suffix used, a disagreement
    not said), and a suffix-less study, labelled by the CSV only, was dropped."""
    root = make_mura(tmp_path / "m", with_splits=False)
    bare = root / "XR_HAND" / "patient11190" / "study1"
    bare.mkdir(parents=True)
    Image.new("L", (8, 8)).save(bare / "image1.png")
    rows = [f"MURA-v1.1/{split}/{part}/{patient}/{study}/,{int(study.endswith('positive'))}"
            for split, part, patient, study, _ in STUDIES]  # fmt: skip
    rows[3] = rows[3].replace(",0", ",1")  # XR_WRIST/patient00012/study1_negative: the CSV says 1
    rows.append("MURA-v1.1/valid/XR_HAND/patient11190/study1/,1")
    (root / "train_labeled_studies.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8-sig"))
    with caplog.at_level(logging.WARNING):
        labels = {s.study_id: s.labels[FRACTURE] for s in load_dataset(root).samples}
    assert labels["XR_WRIST/patient00012/study1"] == 1 and labels["XR_HAND/patient11190/study1"] == 1
    assert "not on disk" not in caplog.text and "disagree with the labeled-studies csv" in caplog.text
    caplog.clear()
    # the same study labelled apart in train's and valid's CSV: neither taken, and said so
    (root / "valid_labeled_studies.csv").write_text("MURA-v1.1/train/XR_HAND/patient11190/study1/,0\n")
    with caplog.at_level(logging.WARNING):
        labels = {s.study_id: s.labels[FRACTURE] for s in load_dataset(root).samples}
    assert "XR_HAND/patient11190/study1" not in labels and "not on disk" not in caplog.text
    assert "labelled 0 in one split's labeled-studies csv and 1 in another's" in caplog.text


def test_images_outside_the_body_part_folders_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stray image in the root or a split folder, ``train/XR-ANKLE/`` (a hyphen) and
    ``train/misc/XR_ELBOW/`` were read by nothing, without a word."""
    root = make_mura(tmp_path / "MURA-v1.1")
    before = len(load_dataset(root).samples)
    Image.new("L", (8, 8)).save(root / "loose.png")
    Image.new("L", (8, 8)).save(root / "train" / "stray.png")
    for folder in ("XR-ANKLE/patient1/study1_positive", "misc/XR_ELBOW/patient2/study1_negative"):
        (root / "train" / folder).mkdir(parents=True)
        Image.new("L", (8, 8)).save(root / "train" / folder / "image1.png")
    (root / "train" / "notes").mkdir()  # no images: nothing to say
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        assert len(load_dataset(root).samples) == before
    assert "4 image(s) or image folder(s) outside the XR_<PART> folders are left out" in caplog.text
    for name in ("loose.png", "train/stray.png", "train/XR-ANKLE/", "train/misc/"):
        assert name in caplog.text
    assert "train/notes" not in caplog.text


def test_one_body_part_or_patient_folder_is_named_with_a_way_to_use_it(tmp_path: Path) -> None:
    """`fracsight train MURA-v1.1/train/XR_WRIST` ("wrists only") read the patients as classes and
    trained a classifier of patient IDs without a word; the links the message gives do work."""
    import shlex
    import subprocess

    root = make_mura(tmp_path / "MURA-v1.1")
    with pytest.raises(DatasetError, match=r"XR_ELBOW is MURA's XR_ELBOW folder, not a whole data set") as e:
        load_dataset(root / "train" / "XR_ELBOW")
    recipe = str(e.value).split("make a folder of links to it and give that: ")[1]
    assert recipe.startswith("mkdir -p elbow/train elbow/valid && ln -s ")
    subprocess.run(recipe, shell=True, cwd=tmp_path, check=True)  # the message's own command
    elbows = load_dataset(tmp_path / "elbow")
    assert elbows.layout == "mura"
    assert {n: len(elbows.split(n)) for n in elbows.splits} == {"train": 3, "val": 2}
    with pytest.raises(DatasetError, match="a MURA patient's folder, not a whole data set"):
        load_dataset(root / "train" / "XR_WRIST" / "patient00011")
    (tmp_path / "flat").mkdir()
    (root / "train" / "XR_WRIST").rename(tmp_path / "flat" / "XR_WRIST")
    with pytest.raises(DatasetError) as e:  # a part alone: one link
        load_dataset(tmp_path / "flat" / "XR_WRIST")
    target = shlex.quote(str((tmp_path / "flat" / "XR_WRIST").resolve()))
    assert str(e.value).endswith(f"give that: mkdir wrist && ln -s {target} wrist/")


def test_class_folders_named_like_mura_are_still_class_folders(tmp_path: Path) -> None:
    """Review: a class-folder set called XR_HANDS_mine, or one grouping its images in `study<N>`
    folders, was refused as a piece of MURA: only `patient<ID>` folders holding studies are."""
    for folder in ("XR_HANDS_mine/fractured/study1", "XR_HANDS_mine/normal/study2", "s/study1", "s/study2"):
        (tmp_path / folder).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / folder / "a.png")
    assert load_dataset(tmp_path / "XR_HANDS_mine").layout == "class-folders"
    assert load_dataset(tmp_path / "s").class_names  # classes study1 and study2, as their folders say
