"""The labels.csv layout: any mix of fracture, class and region labels per image."""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from fracsight.data import CLASS, FRACTURE, REGION, load_dataset
from fracsight.errors import DatasetError


def _write(root: Path, header: str, rows: list[str], images: list[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for row in rows:
        name = row.split(",")[0]
        if images is None or name in images:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8)).save(root / name)
    (root / "labels.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return root


def test_fracture_class_region_and_split(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "d",
        "image,fracture,class,region,split",
        [
            "img/a.png,1,Spiral,leg,train",
            "img/b.png,fractured,Avulsion,hand;shoulder,valid",
            "img/c.png,0,,leg,test",
            "img/d.png,no,,hip,train",
            'img/e.png,0,,"hand, leg",train',  # a spreadsheet's list in one cell: was one region "hand,leg"
        ],
    )
    ds = load_dataset(root)
    assert ds.layout == "labels-csv"
    assert ds.class_names == {
        FRACTURE: ("not fractured", "fractured"),
        CLASS: ("Avulsion", "Spiral"),
        REGION: ("hand", "hip", "leg", "shoulder"),
    }
    by_name = {s.path.name: s for s in ds.samples}
    assert by_name["a.png"].labels == {FRACTURE: 1, CLASS: 1}
    assert by_name["b.png"].labels == {FRACTURE: 1, CLASS: 0}
    assert by_name["b.png"].regions == ("hand", "shoulder") and by_name["b.png"].split == "val"
    assert by_name["c.png"].labels == {FRACTURE: 0}
    assert by_name["d.png"].split == "train"
    assert by_name["e.png"].regions == ("hand", "leg")


def test_missing_value_words_are_empty_cells_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """R writes NA in an empty cell, pandas nan: read as a class "NA" (a model that named it as the
    most likely type), a region "nan", and 43 images of one "patient" NA kept in train together."""
    root = _write(
        tmp_path / "d",
        "image,fracture,class,region,group",
        [
            "img/a.png,1,Spiral,leg,p1",
            "img/b.png,1,Avulsion,hand,NA",
            "img/c.png,0,NA,nan,NA",
            "img/d.png,0,#N/A,-,",
        ],
    )
    with caplog.at_level("WARNING", logger="fracsight.data"):
        ds = load_dataset(root)
    assert ds.class_names[CLASS] == ("Avulsion", "Spiral") and ds.class_names[REGION] == ("hand", "leg")
    by_name = {s.path.name: s for s in ds.samples}
    assert by_name["c.png"].labels == {FRACTURE: 0} and by_name["c.png"].regions == ()
    assert by_name["b.png"].group is None and by_name["c.png"].group is None
    assert "class value(s) #N/A, NA read as empty" in caplog.text
    assert "region value(s) -, nan read as empty" in caplog.text
    assert "group value(s) NA read as empty" in caplog.text


def test_only_the_columns_present_become_labels(tmp_path: Path) -> None:
    root = _write(tmp_path / "d", "image,class,region", ["a.png,frontal,hand", "b.png,lateral,leg"])
    ds = load_dataset(root)
    assert set(ds.class_names) == {CLASS, REGION}
    assert all(FRACTURE not in s.labels for s in ds.samples)


def test_a_column_fracsight_does_not_read_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A misspelt label column ("clas") would otherwise train a model without that head, silently."""
    root = _write(tmp_path / "d", "image,fracture,clas,Notes", ["a.png,1,Spiral,x", "b.png,0,,y"])
    with caplog.at_level("WARNING", logger="fracsight.data"):
        ds = load_dataset(root)
    assert set(ds.class_names) == {FRACTURE}
    assert "labels.csv: column(s) 'clas', 'notes' ignored; fracsight reads image, fracture" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="fracsight.data"):
        load_dataset(_write(tmp_path / "e", "image,fracture,split", ["a.png,1,train", "b.png,0,test"]))
    assert "ignored" not in caplog.text


def test_images_beside_the_listed_ones_that_the_csv_leaves_out_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 images in img/, 22 rows: "22 images" and not a word of the other two."""
    root = _write(tmp_path / "d", "image,fracture", ["img/a.png,1", "img/b.png,0"])
    Image.new("L", (8, 8)).save(root / "img" / "forgotten.png")
    (root / "img" / "notes.txt").write_text("not an image")
    with caplog.at_level("WARNING", logger="fracsight.data"):
        assert len(load_dataset(root).samples) == 2
    assert (
        "1 image(s) beside those labels.csv lists are not in it and are ignored: img/forgotten.png"
        in caplog.text
    )

    def unlistable(folder: Path):  # mode 711: read by name, as the CSV names them, but not listed
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(Path, "iterdir", unlistable)
    assert (
        len(load_dataset(root, layout="labels-csv").samples) == 2
    )  # the warning's check never stops the read


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        ("file,fracture", ["a.png,1"], "needs an 'image' column"),
        ("image,split", ["a.png,train"], "no label column"),
        ("image,fracture", ["a.png,maybe"], "line 2: fracture must be"),
        ("image,fracture", ["a.png,0", "b.png,fracture ruled out"], "line 3: fracture must be"),
        ("image,fracture", ["a.png,1", "b.png,non-displaced fracture"], "kinds go in a `class` column"),
        ("image,fracture,split", ["a.png,1,holdout"], "split must be"),
        ("image,class", ["a.png,x", "b.png,x"], "at least two classes"),
        ("image,fracture", ["../outside.png,1"], "must be a path inside"),
    ],
)
def test_bad_labels_are_refused_with_the_line(
    tmp_path: Path, header: str, rows: list[str], message: str
) -> None:
    root = _write(tmp_path / "d", header, rows, images=[])
    for row in rows:
        name = row.split(",")[0]
        if not name.startswith(".."):
            Image.new("L", (8, 8)).save(root / name)
    with pytest.raises(DatasetError, match=message):
        load_dataset(root)


def test_another_tools_labels_csv_beside_class_folders_says_how_to_read_them(tmp_path: Path) -> None:
    """A Kaggle-style labels.csv (filename,label) beside train/Fractured/... made the set unreadable,
    with no word of its class folders (evaluate and compare have no option to choose the layout)."""
    root = tmp_path / "d"
    for klass in ("Fractured", "Non_fractured"):
        (root / "train" / klass).mkdir(parents=True)
        Image.new("L", (8, 8)).save(root / "train" / klass / "a.png")
    (root / "labels.csv").write_text("filename,label\nFractured/a.png,1\n")
    with pytest.raises(DatasetError, match=r"needs an 'image' column.*also holds class folders.*rename it"):
        load_dataset(root)
    (root / "labels.csv").rename(root / "kaggle-labels.csv")
    assert load_dataset(root).layout == "class-folders"
    # the usual images/ folder beside a labels.csv is no class-folder set: no such advice
    (root / "labels.csv").write_text("filename,fracture\nimages/a.png,1\n")
    for klass in ("Fractured", "Non_fractured"):
        shutil.rmtree(root / "train" / klass)
    (root / "train").rmdir()
    (root / "images").mkdir()
    Image.new("L", (8, 8)).save(root / "images" / "a.png")
    with pytest.raises(DatasetError, match="needs an 'image' column") as info:
        load_dataset(root)
    assert "class folders" not in str(info.value)


def test_missing_images_are_named(tmp_path: Path) -> None:
    root = _write(tmp_path / "d", "image,fracture", ["a.png,1", "gone.png,0"], images=["a.png"])
    with pytest.raises(DatasetError, match=r"1 image\(s\) not found.*gone.png$"):
        load_dataset(root)
    (root / "a.png").rename(root / "GONE.PNG")  # a copy made on Windows: the case differs
    (root / "labels.csv").write_text("image,fracture\ngone.png,0\n")
    with pytest.raises(
        DatasetError, match=r"gone.png \(on disk as GONE.PNG\); file names are case-sensitive"
    ):
        load_dataset(root)


def test_a_folder_is_listed_for_the_names_shown_only(tmp_path: Path, monkeypatch) -> None:
    """Every row not found listed its whole folder for a name in another case: quadratic, 45 s for
    6000 rows whose names differ in case only, before an error that shows three of them."""
    rows = [f"img/im{i}.png,{i % 2}" for i in range(40)]
    root = _write(tmp_path / "d", "image,fracture", rows, images=[])
    (root / "img").mkdir()
    for i in range(40):
        (root / "img" / f"IM{i}.PNG").write_bytes(b"")
    listed = []
    iterdir = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: listed.append(self) or iterdir(self))
    with pytest.raises(DatasetError, match=r"40 image\(s\) not found.*im0.png \(on disk as IM0.PNG\)"):
        load_dataset(root)
    assert listed.count(root / "img") <= 3


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    """csv skips blank lines; the line named was the row's number, here 3 where the file says 5."""
    root = _write(tmp_path / "d", "image,fracture", ["a.png,1", "b.png,2"])
    (root / "labels.csv").write_text("image,fracture\na.png,1\n\n\nb.png,2\n")
    with pytest.raises(DatasetError, match="line 5: fracture must be"):
        load_dataset(root)


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        # a column twice (two sheets pasted side by side): the last copy was used silently, here
        # every image in train and none in test
        ("image,fracture,split,split", ["a.png,1,test,train", "b.png,0,val,train"], "split more than once"),
        ("image,Fracture,fracture ", ["a.png,1,0", "b.png,0,1"], "fracture more than once"),
        # more values than columns (an unquoted comma: 'hand,leg'): the extra ones were dropped
        ("image,fracture,split,region", ["a.png,1,test,hand,leg", "b.png,0,test,hip"], "line 2 has 5 values"),
    ],
)
def test_shifted_rows_and_repeated_columns_are_refused(
    tmp_path: Path, header: str, rows: list[str], message: str
) -> None:
    root = _write(tmp_path / "d", header, rows)
    with pytest.raises(DatasetError, match=message):
        load_dataset(root)


def test_class_values_with_accents_encoded_two_ways_are_one_class_sorted_with_their_letter(
    tmp_path: Path,
) -> None:
    """A csv pasted together from a Mac's file names (NFD) and typed values (NFC) gave two classes
    that look the same; and `Épiphysaire` sorted after `spiral`."""
    nfd, nfc = unicodedata.normalize("NFD", "Épiphysaire"), unicodedata.normalize("NFC", "Épiphysaire")
    rows = [f"a.png,{nfd}", f"b.png,{nfc}", "c.png,spiral", "d.png,Avulsion"]
    ds = load_dataset(_write(tmp_path / "d", "image,class", rows))
    assert ds.class_names == {CLASS: ("Avulsion", nfc, "spiral")}
    assert [s.labels[CLASS] for s in sorted(ds.samples, key=lambda s: s.image_id)] == [1, 1, 2, 0]


def test_a_class_a_split_lacks_is_named_as_for_class_folders(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A class only test rows have trained a head that never saw it, without a word (class folders
    said "split 'train' lacks class(es) ..."); an empty class column said what it found, not what to do."""
    rows = ["a.png,1,Spiral,train", "b.png,1,Avulsion,train", "c.png,1,Spiral,val", "d.png,1,Avulsion,val"]
    rows.append("e.png,1,Rare,test")
    with caplog.at_level("WARNING", logger="fracsight.data"):
        load_dataset(_write(tmp_path / "d", "image,fracture,class,split", rows))
    assert (
        "split 'train' lacks class(es) Rare" in caplog.text
        and "split 'val' lacks class(es) Rare" in caplog.text
    )
    assert "split 'test'" in caplog.text  # it lacks the other two
    with pytest.raises(DatasetError, match="fill it in, or leave the column out"):
        load_dataset(_write(tmp_path / "e", "image,fracture,class", ["a.png,1,", "b.png,0,"]))


def test_a_normal_abnormal_column_is_an_abnormality_label(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`abnormal` / `normal` values were read as fractured / not fractured: a model trained on them
    said "fracture suspected" of MURA-style abnormality, where class folders so named say abnormal."""
    root = _write(tmp_path / "d", "image,fracture", ["a.png,abnormal", "b.png,Abnormal", "c.png,normal"])
    ds = load_dataset(root)
    assert ds.class_names[FRACTURE] == ("normal", "abnormal")
    assert [s.labels[FRACTURE] for s in sorted(ds.samples, key=lambda s: s.path.name)] == [1, 1, 0]
    plain = _write(tmp_path / "e", "image,fracture", ["a.png,1", "b.png,fractured", "c.png,0"])
    assert load_dataset(plain).class_names[FRACTURE] == ("not fractured", "fractured")
    assert "mixes" not in caplog.text
    # both pairs of words in one column: read as abnormality, without a word until 2026-12-05
    mixed = _write(tmp_path / "f", "image,fracture", ["a.png,abnormal", "b.png,Fractured", "c.png,normal"])
    with caplog.at_level("WARNING", logger="fracsight.data"):
        assert load_dataset(mixed).class_names[FRACTURE] == ("normal", "abnormal")
    assert "the fracture column mixes normal/abnormal with Fractured" in caplog.text


def test_accented_names_composed_otherwise_than_on_disk_are_found(tmp_path: Path) -> None:
    """macOS keeps file names decomposed (NFD), Excel writes the CSV composed (NFC): the rows named
    files that look the same and were "not found"."""
    root = tmp_path / "d"
    root.mkdir()
    for i in range(2):
        Image.new("L", (8, 8)).save(root / unicodedata.normalize("NFD", f"Éric_{i}.png"))
    rows = [unicodedata.normalize("NFC", f"Éric_{i}.png,{i}") for i in range(2)]
    (root / "labels.csv").write_text("\n".join(["image,fracture", *rows]) + "\n", encoding="utf-8")
    assert len(load_dataset(root).samples) == 2


def test_a_split_lacking_many_classes_names_ten(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A type set of 300 classes whose test split lacked 297 listed every one of them."""
    import logging

    rows = [f"t{i:02d}.png,type{i:02d},train" for i in range(30)] + ["v.png,type00,val"]
    root = _write(tmp_path / "d", "image,class,split", rows)
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        load_dataset(root)
    (line,) = [r.getMessage() for r in caplog.records if "lacks" in r.getMessage()]
    assert (
        line
        == "split 'val' lacks class(es) " + ", ".join(f"type{i:02d}" for i in range(1, 11)) + " and 19 more"
    )


def test_fracture_free_is_not_fractured(tmp_path: Path) -> None:
    """`fracture-free` was read as fractured (the word "fracture" counted, "free" passed over):
    evaluate then counted every normal image a missed fracture."""
    rows = ["a.png,fracture", "b.png,fracture-free", "c.png,Fracture absent", "d.png,no fracture"]
    ds = load_dataset(_write(tmp_path / "d", "image,fracture", rows))
    assert [s.labels[FRACTURE] for s in sorted(ds.samples, key=lambda s: s.path.name)] == [1, 0, 0, 0]
