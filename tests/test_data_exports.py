"""Data sets as researchers export them: labels.csv saved by a spreadsheet, archives unpacked from
macOS and Windows, PACS exports with extensionless DICOM files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dicom_support import make_radiograph_dicom
from fracsight.data import CLASS, FRACTURE, REGION, load_dataset
from fracsight.errors import DatasetError


def _image(path: Path, shade: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), shade, dtype=np.uint8)).save(path, format="PNG")
    return path


def _labels(root: Path, names: list[str], content: bytes) -> Path:
    for i, name in enumerate(names):
        _image(root / name, shade=i)
    (root / "labels.csv").write_bytes(content)
    return root


def _fractures(ds) -> dict[str, int]:
    return {s.path.relative_to(ds.root).as_posix(): s.labels[FRACTURE] for s in ds.samples}


NAMES = ["a.png", "b.png", "c.png", "d.png"]
EXPECTED = {"a.png": 1, "b.png": 0, "c.png": 1, "d.png": 0}


@pytest.mark.parametrize(
    "content",
    [
        # Excel in a European locale: BOM, ';', CRLF, a header in another case
        "\ufeffImage;Fracture\r\na.png;1\r\nb.png;0\r\nc.png;1\r\nd.png;0\r\n".encode(),
        # tab-separated
        b"image\tfracture\na.png\t1\nb.png\t0\nc.png\t1\nd.png\t0\n",
        # Excel's "Unicode text": UTF-16 with a BOM, tab-separated
        "image\tfracture\r\na.png\t1\r\nb.png\t0\r\nc.png\t1\r\nd.png\t0\r\n".encode("utf-16"),
        # empty columns and rows a spreadsheet saved around the table
        b"image,fracture,,\r\na.png,1,,\r\nb.png,0,,\r\nc.png,1,,\r\nd.png,0,,\r\n,,,\r\n,,,\r\n\r\n",
        # a float column (pandas with a NaN elsewhere, a spreadsheet), and a decimal comma
        b"image;fracture\na.png;1.0\nb.png;0.0\nc.png;1,0\nd.png;0,0\n",
        # quoted fields, TRUE/FALSE, yes/no
        b'"image","fracture"\n"a.png","TRUE"\n"b.png","FALSE"\n"c.png","yes"\n"d.png","No"\n\n\n',
    ],
    ids=["excel-semicolon-bom-crlf", "tab", "utf16", "empty-columns-rows", "floats", "quoted"],
)
def test_spreadsheet_exports_read_as_meant(tmp_path: Path, content: bytes) -> None:
    ds = load_dataset(_labels(tmp_path / "d", NAMES, content))
    assert ds.layout == "labels-csv"
    assert _fractures(ds) == EXPECTED


def test_semicolon_file_keeps_quoted_regions(tmp_path: Path) -> None:
    content = b'image;fracture;region\na.png;1;"hand;leg"\nb.png;0;hand\nc.png;1;leg\nd.png;0;leg\n'
    ds = load_dataset(_labels(tmp_path / "d", NAMES, content))
    assert ds.class_names[REGION] == ("hand", "leg")
    assert next(s for s in ds.samples if s.path.name == "a.png").regions == ("hand", "leg")


def test_a_value_in_an_unnamed_column_is_refused(tmp_path: Path) -> None:
    content = b"image,fracture,\na.png,1,\nb.png,0,oops\nc.png,1,\nd.png,0,\n"
    with pytest.raises(DatasetError, match="line 3 has a value in column 3, which has no name"):
        load_dataset(_labels(tmp_path / "d", NAMES, content))


@pytest.mark.parametrize("value", ["0.5", "2", "NA"])
def test_other_numbers_are_still_refused(tmp_path: Path, value: str) -> None:
    content = f"image,fracture\na.png,1\nb.png,{value}\nc.png,1\nd.png,0\n".encode()
    with pytest.raises(DatasetError, match=f"line 3: fracture must be .*got '{value}'"):
        load_dataset(_labels(tmp_path / "d", NAMES, content))


def test_windows_1252_file_is_read_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    names = ["Röntgen café.png", "b.png", "c.png", "d.png"]
    text = "image;fracture\r\nRöntgen café.png;1\r\nb.png;0\r\nc.png;1\r\nd.png;0\r\n"
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(_labels(tmp_path / "d", names, text.encode("cp1252")))
    assert _fractures(ds) == {"Röntgen café.png": 1, "b.png": 0, "c.png": 1, "d.png": 0}
    assert "not UTF-8" in caplog.text and "Windows-1252" in caplog.text


def test_latin1_name_on_disk_is_found(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for name in ["b.png", "c.png", "d.png"]:
        _image(root / name)
    _image(root / os.fsdecode(b"caf\xe9.png"), shade=9)  # a name the disk holds in Latin-1 bytes
    (root / "labels.csv").write_bytes("image,fracture\ncafé.png,1\nb.png,0\nc.png,1\nd.png,0\n".encode())
    ds = load_dataset(root)
    assert os.fsencode(
        next(s.path for s in ds.samples if s.labels[FRACTURE] == 1 and "caf" in s.path.name).name
    ) == (b"caf\xe9.png")


def test_windows_and_absolute_paths_and_spaces(tmp_path: Path) -> None:
    root = tmp_path / "d"
    names = ["sub/a.png", "sub/b b.png", " lead.png", "d.png"]
    rows = ["sub\\a.png,1", "sub\\b b.png,0", " lead.png,1", f"{root / 'd.png'},0"]
    ds = load_dataset(_labels(root, names, ("image,fracture\n" + "\n".join(rows) + "\n").encode()))
    assert _fractures(ds) == {"sub/a.png": 1, "sub/b b.png": 0, " lead.png": 1, "d.png": 0}


def test_absolute_paths_through_a_linked_folder_are_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/home a link to /scratch/home: the CSV written with one path, the folder given with the
    other (or as ``.`` inside the link), was "image must be a path inside" for every image."""
    real = tmp_path / "scratch" / "d"
    link = tmp_path / "home-d"
    link.symlink_to(real)
    rows = [f"{real / 'a.png'},1", f"{link / 'b.png'},0", "c.png,1", f"{real / 'd.png'},0"]
    _labels(real, NAMES, ("image,fracture\n" + "\n".join(rows) + "\n").encode())
    expected = {"a.png": 1, "b.png": 0, "c.png": 1, "d.png": 0}
    assert _fractures(load_dataset(link)) == expected
    assert _fractures(load_dataset(real)) == expected
    monkeypatch.chdir(link)
    assert _fractures(load_dataset(Path("."))) == expected
    # a link inside the folder to an image elsewhere stays allowed; ../ through the link does not pass
    (real / "sub").mkdir()
    _image(tmp_path / "elsewhere.png")
    (real / "sub" / "e.png").symlink_to(tmp_path / "elsewhere.png")
    (real / "big").symlink_to(tmp_path / "big-disk", target_is_directory=True)  # images on another disk
    _image(tmp_path / "big-disk" / "f.png")
    for written in (real, link):  # either name of the folder, the sub-folder a link elsewhere
        (real / "labels.csv").write_text(
            f"image,fracture\n{written / 'big' / 'f.png'},1\nb.png,0\nc.png,1\nd.png,0\n"
        )
        assert _fractures(load_dataset(link))["big/f.png"] == 1 and load_dataset(real)
    outside = f"image,fracture\n{link / 'sub' / 'e.png'},1\n{link / '..' / 'elsewhere.png'},0\n"
    (real / "labels.csv").write_text(outside)
    with pytest.raises(DatasetError, match="line 3: image must be a path inside"):
        load_dataset(link)


def test_paths_outside_the_folder_are_still_refused(tmp_path: Path) -> None:
    _image(tmp_path / "outside.png")
    for bad in ("../outside.png", str(tmp_path / "outside.png"), "..\\outside.png"):
        root = tmp_path / f"d{len(bad)}"
        content = f"image,fracture\n{bad},1\nb.png,0\nc.png,1\nd.png,0\n".encode()
        with pytest.raises(DatasetError, match="line 2: image must be a path inside"):
            load_dataset(_labels(root, NAMES[1:], content))


def test_one_image_in_two_spellings_is_refused(tmp_path: Path) -> None:
    content = b"image,fracture\nsub/a.png,1\nsub\\a.png,0\nc.png,1\nd.png,0\n"
    with pytest.raises(DatasetError, match=r"line 3: image 'sub.+a\.png' is listed already on line 2"):
        load_dataset(_labels(tmp_path / "d", ["sub/a.png", "c.png", "d.png"], content))


def test_class_and_region_values_differing_in_case_are_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = (
        b"image,class,region\na.png,Avulsion,Hand\nb.png,avulsion,hand\nc.png,Spiral,leg\nd.png,spiral ,Leg\n"
    )
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(_labels(tmp_path / "d", NAMES, content))
    assert ds.class_names[CLASS] == ("Avulsion", "Spiral")
    assert ds.class_names[REGION] == ("Hand", "Leg")
    by_name = {s.path.name: (s.labels[CLASS], s.regions) for s in ds.samples}
    assert by_name == {
        "a.png": (0, ("Hand",)),
        "b.png": (0, ("Hand",)),
        "c.png": (1, ("Leg",)),
        "d.png": (1, ("Leg",)),
    }
    assert "Avulsion, avulsion differ only in case" in caplog.text


def _class_folders(root: Path, n: int = 3) -> Path:
    for i in range(n):
        _image(root / "Fractured" / f"x{i}.png", shade=i)
        _image(root / "Normal" / f"y{i}.png", shade=100 + i)
    return root


def test_macos_zip_of_a_folder(tmp_path: Path) -> None:
    """``data/`` zipped on a Mac unpacks to ``data/`` + ``__MACOSX/data/...`` (``._x`` resource forks):
    ``__MACOSX`` was read as a class (``found ['data']``, or a third class beside the real ones)."""
    top = tmp_path / "unzipped"
    _class_folders(top / "data")
    forks = top / "__MACOSX" / "data" / "Fractured"
    forks.mkdir(parents=True)
    (forks / "._x0.png").write_bytes(b"\x00\x05\x16\x07" + bytes(100))
    ds = load_dataset(top)
    assert ds.root == top / "data"
    assert ds.class_names == {FRACTURE: ("not fractured", "fractured")}
    assert len(ds.samples) == 6


def test_system_files_are_neither_classes_nor_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _class_folders(tmp_path / "d")
    (root / "__MACOSX" / "Normal").mkdir(parents=True)
    (root / "__MACOSX" / "Normal" / "._y0.png").write_bytes(b"junk")
    (root / "Normal" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "Fractured" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (root / ".DS_Store").write_bytes(b"x")
    # a copy off a Synology share: #recycle became a class, @eaDir's thumbnails were training images
    _image(root / "#recycle" / "deleted.png", shade=200)
    _image(root / "Fractured" / "@eaDir" / "x0.png" / "SYNOFILE_THUMB_M.png", shade=0)
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(root)
    assert len(ds.samples) == 6 and ds.layout == "class-folders"
    assert ds.class_names == {FRACTURE: ("not fractured", "fractured")}
    assert caplog.text == ""


def test_files_that_are_not_images_are_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _class_folders(tmp_path / "d")
    (root / "Normal" / "y9.webp").write_bytes(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    (root / "Fractured" / "notes.txt").write_text("patient 3 moved")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(root)
    assert len(ds.samples) == 6
    assert "2 file(s)" in caplog.text and "Fractured/notes.txt, Normal/y9.webp" in caplog.text


def test_extensionless_and_upper_case_dicom(tmp_path: Path) -> None:
    """A PACS export names DICOM files ``IM000001``: they were dropped without a word (or, when every
    file was one, the folder was 'not a data set layout')."""
    source = _image(tmp_path / "src.png", shade=50)
    root = tmp_path / "pacs"
    for i in range(2):
        (root / "Fractured").mkdir(parents=True, exist_ok=True)
        (root / "Normal").mkdir(parents=True, exist_ok=True)
        make_radiograph_dicom(source, root / "Fractured" / f"IM{i:06d}", instance_number=i + 1)
        make_radiograph_dicom(source, root / "Normal" / f"1.2.826.0.1.{i}", instance_number=i + 1)
    make_radiograph_dicom(source, root / "Normal" / "X.DCM")
    ds = load_dataset(root)
    assert sorted(s.path.name for s in ds.samples) == [
        "1.2.826.0.1.0",
        "1.2.826.0.1.1",
        "IM000000",
        "IM000001",
        "X.DCM",
    ]
    assert ds.class_names == {FRACTURE: ("not fractured", "fractured")}


def test_extensionless_dicom_in_labels_csv(tmp_path: Path) -> None:
    source = _image(tmp_path / "src.png", shade=50)
    root = tmp_path / "d"
    root.mkdir()
    for name in ("IM1", "IM2"):
        make_radiograph_dicom(source, root / name)
    (root / "labels.csv").write_text("image,fracture\nIM1,1\nIM2,0\n")
    assert _fractures(load_dataset(root)) == {"IM1": 1, "IM2": 0}


def test_windows_archive_with_backslash_names_says_so(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for i in range(2):
        _image(root / f"train\\Fractured\\x{i}.png")
        _image(root / f"train\\Normal\\y{i}.png")
    with pytest.raises(
        DatasetError, match=r"4 file name\(s\) there hold backslashes .*unpack it with `unzip`"
    ):
        load_dataset(root)


def test_loose_images_without_labels_say_so(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for i in range(3):
        _image(root / f"x{i}.png")
    with pytest.raises(DatasetError, match=r"holds 3 image\(s\) directly but no labels"):
        load_dataset(root)


def test_a_split_missing_on_some_rows_names_them(tmp_path: Path) -> None:
    from fracsight.data import ensure_splits

    content = b"image,fracture,split\na.png,1,Train\nb.png,0,\nc.png,1,test\nd.png,0,test\n"
    ds = load_dataset(_labels(tmp_path / "d", NAMES, content))
    with pytest.raises(DatasetError, match=r"some do not \(1 without one, e\.g\. b\.png\); give each"):
        ensure_splits(ds)


def test_fracatlas_as_figshare_gives_it_keeps_its_boxes(fracatlas_dir: Path, tmp_path: Path) -> None:
    """FracAtlas as downloaded holds `Annotations/YOLO/` and `Annotations/COCO JSON/
    COCO_fracture_masks.json`: read as no box source, every box was lost without a word."""
    import json
    import shutil

    from conftest import fracatlas_subset

    ours = fracatlas_subset(fracatlas_dir, tmp_path / "ours", {"test": (4, 2)})
    boxes = {s.path.name: s.boxes for s in load_dataset(ours).samples}
    assert sum(len(b) for b in boxes.values()) >= 4
    figshare = fracatlas_subset(fracatlas_dir, tmp_path / "figshare", {"test": (4, 2)})
    (figshare / "annotations").rename(figshare / "Annotations")
    (figshare / "Annotations" / "yolo").rename(figshare / "Annotations" / "YOLO")
    assert {s.path.name: s.boxes for s in load_dataset(figshare).samples} == boxes
    # COCO only, under its figshare name, with folders in file_name (CVAT, Roboflow): by file name
    shutil.rmtree(figshare / "Annotations" / "YOLO")
    coco = json.loads((fracatlas_dir / "annotations" / "coco.json").read_text(encoding="utf-8"))
    for image in coco["images"]:
        image["file_name"] = f"images/Fractured/{image['file_name']}"
    (figshare / "Annotations" / "COCO JSON").mkdir()
    (figshare / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json").write_text(json.dumps(coco))
    from_coco = {s.path.name: s.boxes for s in load_dataset(figshare).samples}
    assert from_coco.keys() == boxes.keys()
    for name, b in boxes.items():
        assert len(from_coco[name]) == len(b)
        corners = [[(x.x0, x.y0, x.x1, x.y1) for x in boxes] for boxes in (from_coco[name], b)]
        assert np.allclose(*corners, atol=1e-3)


def test_yolo_polygons_are_their_bounds_and_lines_of_no_shape_are_refused(tmp_path: Path) -> None:
    """A segmentation polygon (`0 x1 y1 x2 y2 ...`) was read as `cx cy w h` from its first points:
    a box that was never there."""
    from fracsight.data.fracatlas import _read_yolo

    txt = tmp_path / "a.txt"
    txt.write_text("0 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n0 0.5 0.5 0.2 0.2 0.93\n")
    polygon, with_confidence = ((b.x0, b.y0, b.x1, b.y1) for b in _read_yolo(txt))
    assert np.allclose(polygon, (0.1, 0.1, 0.3, 0.3))
    assert np.allclose(with_confidence, (0.4, 0.4, 0.6, 0.6))
    txt.write_text("0 0.1 0.1 0.3 0.1 0.3 0.3 0.1\n")  # seven numbers: no shape
    with pytest.raises(DatasetError, match=r"a.txt:1: expected 'class cx cy w h' or a polygon"):
        _read_yolo(txt)


def test_a_dicomdir_in_a_class_folder_is_not_an_image(tmp_path: Path) -> None:
    """Every CD or PACS export holds a DICOMDIR (an index, no pixels): counted as an image, it
    stopped `train` (`no_pixel_data`) and `evaluate` (`unreadable_images`)."""
    for label, shade in (("fractured", 0), ("normal", 90)):
        for k in range(2):
            _image(tmp_path / label / f"{k}.png", shade + k)
    (tmp_path / "fractured" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    assert sorted(s.path.name for s in load_dataset(tmp_path).samples) == ["0.png", "0.png", "1.png", "1.png"]


def test_the_training_cache_keys_a_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    """caf\\xe9.jpg (an archive unpacked under Latin-1): `train` stopped with a UnicodeEncodeError."""
    from fracsight.data import Sample
    from fracsight.training.cache import _key

    name = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    with open(name, "wb") as f:
        f.write(b"x")
    sample = Sample(path=Path(os.fsdecode(name)))
    assert len(_key([sample], 64)) == 16


def test_labels_csv_absolute_paths_inside_a_folder_given_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fracsight audit lc` with rows holding absolute paths inside lc: refused as outside it (it
    read them when the folder was given absolute)."""
    images = [_image(tmp_path / "lc" / "imgs" / f"{k}.png", 40 * k) for k in range(4)]
    rows = [f"{p},{k % 2}" for k, p in enumerate(images)]
    (tmp_path / "lc" / "labels.csv").write_text("image,fracture\n" + "\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    relative = load_dataset(Path("lc"))
    assert sorted(s.path.name for s in relative.samples) == ["0.png", "1.png", "2.png", "3.png"]
    (tmp_path / "lc" / "labels.csv").write_text("image,fracture\n ,1\n")
    with pytest.raises(DatasetError, match="line 2: image is empty"):
        load_dataset(Path("lc"))


def test_a_fracatlas_csv_saved_by_a_spreadsheet_with_an_empty_row(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    """Excel saves a trailing `;;;;` row: `dataset.csv line 20: image_id is empty` refused the set."""
    from conftest import fracatlas_subset

    root = fracatlas_subset(fracatlas_dir, tmp_path / "fa", {"test": (2, 2)})
    text = (root / "dataset.csv").read_text(encoding="utf-8")
    (root / "dataset.csv").write_text(text + "," * text.splitlines()[0].count(",") + "\n", encoding="utf-8")
    assert len(load_dataset(root).samples) == 4
