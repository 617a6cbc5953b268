"""Layout detection and the errors for folders that are not data sets."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from fracsight.data import detect_layout, load_dataset
from fracsight.errors import DatasetError


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8)).save(path)


def test_detects_each_layout(tmp_path: Path) -> None:
    fa = tmp_path / "fa"
    _img(fa / "images" / "Fractured" / "IMG1.jpg")
    (fa / "dataset.csv").write_text("image_id,fractured\nIMG1.jpg,1\n")
    mura = tmp_path / "mura"
    _img(mura / "train" / "XR_HAND" / "patient1" / "study1_positive" / "image1.png")
    folders = tmp_path / "folders"
    _img(folders / "train" / "a" / "1.png")
    _img(folders / "train" / "b" / "1.png")
    assert detect_layout(fa) == "fracatlas"
    assert detect_layout(mura) == "mura"
    assert detect_layout(folders) == "class-folders"
    assert load_dataset(fa).layout == "fracatlas"


def test_wrapper_folder_is_looked_through_but_not_a_split(tmp_path: Path) -> None:
    inner = tmp_path / "Bone_Fracture" / "Bone_Fracture"
    _img(inner / "train" / "fractured" / "1.png")
    _img(inner / "train" / "not fractured" / "1.png")
    ds = load_dataset(tmp_path)
    assert ds.root == inner and ds.layout == "class-folders"
    assert ds.splits == ("train",)  # "train" is a split level, not a wrapper


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text("x"), "is not a folder"),
        (lambda p: p.mkdir(), "is empty"),
        (lambda p: (p.mkdir(), (p / "notes.txt").write_text("x")), "not a data set layout"),
    ],
    ids=["missing", "file", "empty", "unknown"],
)
def test_bad_folders_raise_with_expectation(tmp_path: Path, setup, message: str) -> None:
    target = tmp_path / "data"
    setup(target)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(target)
    if message in ("is empty", "not a data set layout"):
        assert "dataset.csv" in str(info.value) and "XR_<PART>" in str(info.value)


def test_images_in_split_folders_without_class_folders_are_said(tmp_path: Path) -> None:
    """train/*.png with no class folders got the generic "not a layout fracsight knows" alone."""
    for split in ("test", "train"):
        (tmp_path / split).mkdir()
        for i in range(2):
            Image.new("L", (8, 8)).save(tmp_path / split / f"{i}.png")
    with pytest.raises(DatasetError, match=r"test/ holds 2 image\(s\) directly but no class folders"):
        load_dataset(tmp_path)


def test_explicit_layout_is_checked(tmp_path: Path) -> None:
    _img(tmp_path / "a" / "1.png")
    _img(tmp_path / "b" / "1.png")
    with pytest.raises(DatasetError, match="not a fracatlas folder"):
        load_dataset(tmp_path, layout="fracatlas")
    with pytest.raises(DatasetError, match="unknown layout 'voc'"):
        load_dataset(tmp_path, layout="voc")
    assert load_dataset(tmp_path, layout="class-folders").layout == "class-folders"


@pytest.mark.parametrize("command", ["audit", "evaluate"])
def test_an_empty_or_unknown_folder_is_a_bad_argument(tmp_path: Path, command: str) -> None:
    """An empty folder, or one of no layout fracsight knows, exited 1 ("an error") where a file
    given as the data set exited 2 ("bad arguments"): the user's to correct either way."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    (tmp_path / "empty").mkdir()
    (tmp_path / "odd" / "a" / "b").mkdir(parents=True)
    (tmp_path / "odd" / "notes.txt").write_text("x")
    (tmp_path / "odd" / "a" / "c").mkdir()
    args = [] if command == "audit" else ["default"]
    for folder, said in (("empty", "is empty; expected one of"), ("odd", "is not a data set layout")):
        result = CliRunner().invoke(app, [command, *args, str(tmp_path / folder)])
        assert result.exit_code == 2 and said in result.stderr, result.output
