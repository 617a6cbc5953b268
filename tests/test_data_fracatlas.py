"""FracAtlas reader: a mini copy built in tmp_path, and the real folder in ../shared."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from fracsight.data import FRACTURE, REGION, load_dataset, straddling_groups
from fracsight.errors import DatasetError

COLUMNS = [
    "image_id", "hand", "leg", "hip", "shoulder", "mixed", "hardware", "multiscan", "fractured",
    "fracture_count", "frontal", "lateral", "oblique", "split", "dup_group",
]  # fmt: skip


def _row(i: int, fractured: int, split: str, group: str | None = None, **flags: int) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(COLUMNS, 0)
    row.update(
        image_id=f"IMG{i:07d}.jpg", fractured=fractured, split=split, dup_group=group or f"IMG{i:07d}.jpg"
    )
    row.update(flags)
    return row


def make_fracatlas(
    root: Path, rows: list[dict[str, object]], folder_of: dict[str, str] | None = None
) -> Path:
    """A FracAtlas-shaped folder: dataset.csv, images/<class>/*.jpg (tiny synthetic), yolo boxes."""
    folder_of = folder_of or {}
    (root / "annotations" / "yolo").mkdir(parents=True)
    with (root / "dataset.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        name = str(row["image_id"])
        folder = folder_of.get(name, "Fractured" if row["fractured"] else "Non_fractured")
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        Image.new("L", (40, 50), color=int(row["fracture_count"]) * 10).save(root / "images" / folder / name)
        box = "0 0.5 0.25 0.2 0.1\n" if row["fractured"] else ""
        (root / "annotations" / "yolo" / name.replace(".jpg", ".txt")).write_text(box)
    return root


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    rows = [
        _row(0, 0, "train", leg=1, frontal=1),
        _row(1, 1, "train", hand=1, lateral=1, fracture_count=1),
        _row(2, 0, "val", hip=1, shoulder=1, mixed=1, frontal=1, oblique=1),
        _row(3, 1, "test", leg=1, frontal=1, fracture_count=2),
        _row(4, 0, "train", "GROUP_A", hand=1),
        _row(5, 0, "train", "GROUP_A", hand=1),
        _row(6, 0, "valid", leg=1),
        _row(7, 1, "train", shoulder=1),
        _row(8, 0, "test", hip=1),
        _row(9, 0, "train", leg=1),
    ]
    return make_fracatlas(tmp_path / "fa", rows)


def test_mini_copy_is_read(mini: Path) -> None:
    ds = load_dataset(mini)
    assert ds.layout == "fracatlas"
    assert len(ds.samples) == 10
    assert ds.class_names[FRACTURE] == ("not fractured", "fractured")
    assert ds.class_names[REGION] == ("hand", "leg", "hip", "shoulder")
    by_id = {s.image_id: s for s in ds.samples}
    s1 = by_id["IMG0000001.jpg"]
    assert s1.labels == {FRACTURE: 1}
    assert s1.regions == ("hand",) and s1.view == "lateral" and s1.split == "train"
    assert len(s1.boxes) == 1
    box = s1.boxes[0]
    assert box.x0 == pytest.approx(0.4) and box.x1 == pytest.approx(0.6)
    assert box.y0 == pytest.approx(0.2) and box.y1 == pytest.approx(0.3)
    s2 = by_id["IMG0000002.jpg"]
    assert s2.regions == ("hip", "shoulder") and s2.view == "frontal+oblique" and s2.boxes == ()
    assert by_id["IMG0000006.jpg"].split == "val"  # "valid" normalized
    assert by_id["IMG0000004.jpg"].group == by_id["IMG0000005.jpg"].group == "GROUP_A"
    assert {n: len(ds.split(n)) for n in ds.splits} == {"train": 6, "val": 2, "test": 2}


def test_coco_fallback_when_no_yolo(mini: Path) -> None:
    for txt in (mini / "annotations" / "yolo").iterdir():
        txt.unlink()
    (mini / "annotations" / "yolo").rmdir()
    coco = {
        "images": [{"id": 7, "width": 40, "height": 50, "file_name": "IMG0000001.jpg"}],
        "annotations": [{"id": 0, "image_id": 7, "category_id": 0, "bbox": [10, 5, 20, 10]}],
        "categories": [{"id": 0, "name": "fractured"}],
    }
    (mini / "annotations" / "coco.json").write_text(json.dumps(coco))
    by_id = {s.image_id: s for s in load_dataset(mini).samples}
    (box,) = by_id["IMG0000001.jpg"].boxes
    assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx((0.25, 0.1, 0.75, 0.3))
    assert by_id["IMG0000003.jpg"].boxes == ()


def test_boxes_that_reach_no_image_are_said(mini: Path, caplog: pytest.LogCaptureFixture) -> None:
    """YOLO files named in another case (or Roboflow's IMG..._jpg.rf.<hash>.txt), or only PASCAL VOC
    files: every box was lost without a word, and training learnt without them."""
    yolo = mini / "annotations" / "yolo"
    for txt in yolo.iterdir():
        txt.rename(yolo / txt.name.lower())
    with caplog.at_level("WARNING", logger="fracsight.data"):
        ds = load_dataset(mini)
    assert not any(s.boxes for s in ds.samples)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert (
        "10 YOLO file(s) in" in said and "img0000001.txt (image IMG0000001: names are case-sensitive)" in said
    )
    assert "gives none of the fractured images a box" in said and "found: yolo" in said
    caplog.clear()
    for txt in yolo.iterdir():
        txt.rename(yolo / txt.name.upper().replace(".TXT", ".txt"))
    with caplog.at_level("WARNING", logger="fracsight.data"):
        assert any(s.boxes for s in load_dataset(mini).samples)
    assert not [r for r in caplog.records if "YOLO" in r.getMessage() or "none of the" in r.getMessage()]
    # (review) labelImg's classes.txt, and YOLO files read that hold no box (a set without boxes): no word
    (yolo / "classes.txt").write_text("fracture\n")
    for txt in yolo.glob("IMG*.txt"):
        txt.write_text("")
    caplog.clear()
    with caplog.at_level("WARNING", logger="fracsight.data"):
        assert not any(s.boxes for s in load_dataset(mini).samples)
    assert not [r for r in caplog.records if "YOLO" in r.getMessage() or "none of the" in r.getMessage()]
    # (review) the fractured images' files gone, the normal ones' empty files left (as FracAtlas ships)
    for stem in ("IMG0000001", "IMG0000003", "IMG0000007"):
        (yolo / f"{stem}.txt").unlink()
    caplog.clear()
    with caplog.at_level("WARNING", logger="fracsight.data"):
        load_dataset(mini)
    assert any("gives none of the fractured images a box" in r.getMessage() for r in caplog.records)


def test_an_images_folder_in_another_case_is_fracatlas(mini: Path) -> None:
    """`Images/`: taken for a class folder, "class folders need at least two classes"."""
    (mini / "images").rename(mini / "Images")
    ds = load_dataset(mini)
    assert ds.layout == "fracatlas" and len(ds.samples) == 10


def test_csv_is_the_label_source_and_disagreement_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [_row(0, 0, "train"), _row(1, 1, "train"), _row(3298, 0, "test")]
    root = make_fracatlas(tmp_path / "fa", rows, folder_of={"IMG0003298.jpg": "Fractured"})
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(root)
    assert {s.image_id: s.labels[FRACTURE] for s in ds.samples}["IMG0003298.jpg"] == 0
    assert "IMG0003298.jpg" in caplog.text and "disagrees" in caplog.text


def test_missing_image_raises_naming_it(mini: Path) -> None:
    (mini / "images" / "Fractured" / "IMG0000003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\).*missing.*IMG0000003\.jpg") as info:
        load_dataset(mini)
    assert "case" not in str(info.value)


def test_an_image_named_in_another_case_is_pointed_at(mini: Path) -> None:
    """A copy made on Windows named IMG0000003.JPG: "missing" alone did not say why."""
    folder = mini / "images" / "Fractured"
    (folder / "IMG0000003.jpg").rename(folder / "IMG0000003.JPG")
    with pytest.raises(
        DatasetError, match=r"IMG0000003\.jpg \(on disk as IMG0000003\.JPG\); file names are case"
    ):
        load_dataset(mini)


def test_bad_flag_and_missing_column_raise(tmp_path: Path) -> None:
    root = make_fracatlas(tmp_path / "a", [_row(0, 0, "train", hand=2)])
    with pytest.raises(DatasetError, match="'hand' should be 0 or 1"):
        load_dataset(root)
    (root / "dataset.csv").write_text("image_id,hand\nIMG0000000.jpg,1\n")
    with pytest.raises(DatasetError, match="lacks column"):
        load_dataset(root)


def _csv_lines(root: Path) -> list[str]:
    return (root / "dataset.csv").read_text().splitlines()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        # a row listed twice was counted twice, with two labels if they differ
        (lambda lines: [*lines, lines[2]], r"line 12: IMG0000001\.jpg is listed already on line 3"),
        # a column twice (two exports pasted side by side): csv kept the last one silently
        (lambda lines: [f"{line},{line.split(',')[8]}" for line in lines], "fractured more than once"),
        # more values than columns (a shifted row) was an AttributeError traceback
        (lambda lines: [*lines[:2], lines[2] + ",1", *lines[3:]], "line 3 has 16 values for 15 columns"),
        # a row without its image_id: was 'missing: ' naming nothing (a row of separators only, a
        # spreadsheet's empty row, holds nothing and is skipped)
        (
            lambda lines: [*lines[:3], "," + lines[3].split(",", 1)[1], *lines[3:]],
            "line 4: image_id is empty",
        ),
    ],
)
def test_damaged_dataset_csv_is_refused_with_the_line(mini: Path, damage, message: str) -> None:
    (mini / "dataset.csv").write_text("\n".join(damage(_csv_lines(mini))) + "\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset(mini)


def test_undecodable_dataset_csv_or_yolo_file_is_a_dataset_error(mini: Path) -> None:
    """Both were a UnicodeDecodeError traceback (a latin-1 export, a file damaged on copy)."""
    csv_bytes = (mini / "dataset.csv").read_bytes()
    (mini / "dataset.csv").write_bytes(csv_bytes.replace(b"IMG0000001", b"IMG\xe900001"))
    with pytest.raises(DatasetError, match=r"cannot read .*dataset\.csv"):
        load_dataset(mini)
    (mini / "dataset.csv").write_bytes(csv_bytes)
    (mini / "annotations" / "yolo" / "IMG0000001.txt").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(DatasetError, match=r"IMG0000001\.txt is not a YOLO label file"):
        load_dataset(mini)


def test_yolo_boxes_in_pixels_are_refused_not_dropped(mini: Path) -> None:
    """`0 120 80 40 30` (pixels, not fractions): clipped to nothing and skipped as "empty box", or
    clipped to the whole image, without a word of why; a data set's every box lost or wrong."""
    label = mini / "annotations" / "yolo" / "IMG0000001.txt"
    for line in ("0 120 80 40 30", "0 0.5 0.5 3 3"):
        label.write_text(line + "\n")
        with pytest.raises(
            DatasetError, match=r"IMG0000001\.txt:1: YOLO values are fractions .*pixel coordinates"
        ):
            load_dataset(mini)
    label.write_text("0 0.5 0.5 1.02 0.2\n")  # a hair over the edge: clipped, as before
    (sample,) = [s for s in load_dataset(mini).samples if s.path.name == "IMG0000001.jpg"]
    assert sample.boxes and sample.boxes[0].x0 == 0.0 and sample.boxes[0].x1 == 1.0


@pytest.mark.fracatlas
def test_real_fracatlas(fracatlas_dir: Path) -> None:
    ds = load_dataset(fracatlas_dir)
    assert ds.layout == "fracatlas"
    assert len(ds.samples) == 3232
    folders = [s.path.parent.name for s in ds.samples]
    assert folders.count("Fractured") == 554 and folders.count("Non_fractured") == 2678
    assert {n: len(ds.split(n)) for n in ds.splits} == {"train": 2216, "val": 329, "test": 687}
    fractured = [s for s in ds.samples if s.labels[FRACTURE] == 1]
    assert len(fractured) == 553  # IMG0003298 sits in Fractured/ but the csv says 0
    assert all(s.boxes for s in fractured)
    assert all(0 <= b.x0 < b.x1 <= 1 and 0 <= b.y0 < b.y1 <= 1 for s in fractured for b in s.boxes)
    assert all(s.regions for s in ds.samples)
    assert straddling_groups(ds.samples) == {}  # dup_group never straddles splits
