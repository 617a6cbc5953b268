"""pHash, the data set audit and the ``fracsight audit`` command."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fracsight.cli import app
from fracsight.data import audit as audit_module
from fracsight.data.audit import audit
from fracsight.data.phash import hamming, hash_file, near_pairs, phash, popcount


def _smooth(seed: int, size: int = 96) -> Image.Image:
    """A smooth random grayscale picture: distinct seeds give unrelated pHashes."""
    small = np.random.default_rng(seed).integers(0, 256, (6, 6), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def _save(img: Image.Image, path: Path, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def _hash(img: Image.Image) -> int:
    return phash(np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float32))


def test_phash_near_and_far() -> None:
    a = _smooth(1)
    brighter = Image.fromarray(np.clip(np.asarray(a, dtype=np.int16) + 12, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    a.resize((150, 150)).save(buf, format="JPEG", quality=70)
    reencoded = Image.open(buf)
    assert hamming(_hash(a), _hash(brighter)) <= 4
    assert hamming(_hash(a), _hash(reencoded)) <= 6
    distances = [hamming(_hash(a), _hash(_smooth(s))) for s in range(2, 12)]
    assert min(distances) > 10
    with pytest.raises(ValueError, match="32x32"):
        phash(np.zeros((8, 8)))


def test_popcount_and_near_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, 40).astype(np.uint64)
    hashes = np.concatenate([base, base[:10] ^ flips[:10]])  # 10 planted pairs at distance 1
    assert popcount(np.array([0, 1, 2**64 - 1], dtype=np.uint64)).tolist() == [0, 1, 64]
    expected = [
        (i, j, hamming(hashes[i], hashes[j]))
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
        if hamming(hashes[i], hashes[j]) <= 6
    ]
    i, j, d = near_pairs(hashes, 6, chunk=7)
    assert list(zip(i.tolist(), j.tolist(), d.tolist(), strict=True)) == expected
    assert len(expected) >= 10


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """Class folders with an exact duplicate, a cross-split cross-label near-duplicate,
    an unreadable file and a truncated JPEG."""
    root = tmp_path / "planted"
    for k in range(6):
        _save(_smooth(100 + k), root / "train" / ("fractured" if k % 2 else "not fractured") / f"u{k}.png")
    original = _save(_smooth(7), root / "train" / "fractured" / "twin.png")
    _save(_smooth(7).resize((120, 120)), root / "val" / "not fractured" / "twin_resized.jpg", quality=80)
    copy = root / "train" / "not fractured" / "copy_of_u0.png"
    copy.write_bytes((root / "train" / "not fractured" / "u0.png").read_bytes())
    (root / "val" / "fractured").mkdir(parents=True)
    (root / "val" / "fractured" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    jpeg = io.BytesIO()
    _smooth(9, 256).save(jpeg, format="JPEG", quality=95)
    (root / "val" / "fractured" / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) * 2 // 3])
    assert original.exists()
    return root


def test_audit_finds_what_was_planted(planted: Path) -> None:
    report = audit(planted, threshold=6)
    assert report.layout == "class-folders" and report.images == 11
    assert report.counts == {
        "train": {"not fractured": 4, "fractured": 4},
        "val": {"not fractured": 1, "fractured": 2},
    }
    assert [u["path"] for u in report.unreadable] == ["val/fractured/broken.png"]
    assert report.truncated == report.truncated_filled == ["val/fractured/cut.jpg"]  # cut in its image
    assert report.exact_duplicates == [["train/not fractured/copy_of_u0.png", "train/not fractured/u0.png"]]
    twins = {"train/fractured/twin.png", "val/not fractured/twin_resized.jpg"}
    assert any(set(g) == twins for g in report.near_duplicate_groups)
    assert [{p.a, p.b} for p in report.cross_split_pairs] == [twins]
    assert [{p.a, p.b} for p in report.cross_label_pairs] == [twins]
    assert report.cross_label_pairs[0].label_a != report.cross_label_pairs[0].label_b
    assert report.cross_split_groups == [sorted(twins)]
    assert report.declared_groups_straddling == {}
    json.dumps(report.to_dict())  # serializable


def test_many_copies_of_one_picture_are_counted_in_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2,400 links to one blank picture made 2.9 million pairs, each a tuple and a record: 5.8 GB
    and a 644 MB --json. The pairs are arrays, every one counted, the first MAX_LISTED_PAIRS of
    each kind named; identical pHashes form their group at once."""
    monkeypatch.setattr(audit_module, "MAX_LISTED_PAIRS", 50)
    blank = _save(_smooth(5), tmp_path / "blank.png")
    root = tmp_path / "blank_set"
    for split in ("train", "val"):
        for cls in ("fractured", "normal"):
            for k in range(30):
                (root / split / cls / f"p{k}").mkdir(parents=True)
                (root / split / cls / f"p{k}" / "x.png").symlink_to(blank)
    _save(_smooth(11), root / "train" / "normal" / "other.png")
    report = audit(root, threshold=6)
    assert report.images == 121 and report.near_pairs == 120 * 119 // 2
    assert len(report.near_duplicate_groups) == 1 and len(report.near_duplicate_groups[0]) == 120
    assert report.cross_split_pair_count == 60 * 60  # train x val
    assert report.cross_label_pair_count == 60 * 60  # fractured x normal
    assert len(report.cross_split_pairs) == len(report.cross_label_pairs) == 50
    first = report.cross_split_pairs[0]
    assert first.split_a != first.split_b and first.distance == 0
    data = report.to_dict()
    assert data["cross_split_pair_count"] == 3600 and len(data["cross_split_pairs"]) == 50
    table = CliRunner().invoke(app, ["audit", str(root)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "3600" in table.stdout
    assert "Near-duplicates across splits (first 10 of 3600)" in table.stdout  # not "of 50"


def test_near_pairs_are_counted_a_block_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pair was held at once, with six copies the length of all of them: 20,000 near copies of
    one picture (200 million pairs) took 7.4 GB. Counted a block at a time, the pairs' memory is the
    block's: here 1,200 copies (719,400 pairs) in blocks of 12,000 distances."""
    import tracemalloc

    from fracsight.data import phash as phash_module

    monkeypatch.setattr(phash_module, "BLOCK_DISTANCES", 12_000)
    blank = _save(_smooth(5), tmp_path / "blank.png")
    root = tmp_path / "copies"
    for split in ("train", "val"):
        for cls in ("fractured", "normal"):
            (root / split / cls).mkdir(parents=True)
            for k in range(300):
                (root / split / cls / f"p{k}.png").symlink_to(blank)
    tracemalloc.start()
    try:
        report = audit(root, threshold=6)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.near_pairs == 1200 * 1199 // 2 and report.cross_split_pair_count == 600 * 600
    assert report.cross_label_pair_count == 600 * 600
    assert peak < 15e6, f"{peak / 1e6:.0f} MB"  # 6 MB; all pairs at once: 32 MB


def test_one_picture_filed_under_two_fracture_types_is_label_noise(tmp_path: Path) -> None:
    """A fracture-type set: a re-encoded copy of an Avulsion image filed as Spiral was a near
    duplicate, yet "Near-duplicate pairs with different labels: 0" (only the fracture label was
    compared); a fractured image without a type is no disagreement."""
    root = tmp_path / "types"
    for k in range(4):
        _save(_smooth(200 + k), root / "Fractured" / ("Avulsion" if k % 2 else "Spiral") / f"f{k}.png")
        _save(_smooth(300 + k), root / "Non_fractured" / f"n{k}.png")
    _save(_smooth(7), root / "Fractured" / "Avulsion" / "twin.png")
    _save(_smooth(7).resize((120, 120)), root / "Fractured" / "Spiral" / "twin_again.jpg", quality=60)
    report = audit(root, threshold=6)
    assert report.class_counts  # the types were read
    (noisy,) = report.cross_label_pairs
    assert {noisy.a, noisy.b} == {"Fractured/Avulsion/twin.png", "Fractured/Spiral/twin_again.jpg"}
    assert {noisy.label_a, noisy.label_b} == {"fractured, Avulsion", "fractured, Spiral"}


def test_names_with_brackets_are_printed_as_they_are(tmp_path: Path) -> None:
    """Rich read names as markup: a type folder "Avulsion [b]" was a bold "Avulsion", a pair of
    "hand[lateral].png" files printed as two files that do not exist, and a folder "p[" with a
    file in it ("p[/x.png") ended in a MarkupError traceback."""
    root = tmp_path / "types"
    for k in range(4):
        _save(
            _smooth(200 + k), root / "Fractured" / ("Avulsion [b]" if k % 2 else "p[") / f"f{k}[lateral].png"
        )
        _save(_smooth(300 + k), root / "Non_fractured" / f"n{k}.png")
    _save(_smooth(7), root / "Fractured" / "Avulsion [b]" / "twin[lateral].png")
    _save(_smooth(7).resize((120, 120)), root / "Fractured" / "p[" / "twin[oblique].jpg", quality=60)
    result = CliRunner().invoke(app, ["audit", str(root)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "Avulsion [b]" in result.stdout and "p[/twin[oblique].jpg" in result.stdout
    assert "Fractured/Avulsion [b]/twin[lateral].png" in result.stdout


def test_audit_process_pool_gives_the_same_hashes(planted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = sorted(p for p in planted.rglob("*") if p.is_file())
    monkeypatch.setattr(audit_module, "_SERIAL_BELOW", 0)
    seen: list[tuple[int, int]] = []
    pooled = audit_module._inspect_all(paths, 2, lambda done, total: seen.append((done, total)))
    assert pooled == [hash_file(p) for p in paths]
    assert seen[-1] == (len(paths), len(paths))


def test_cli_audit_human_and_json(planted: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["audit", str(planted)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "class-folders" in result.stdout and "Near-duplicate pairs across splits" in result.stdout
    assert "twin_resized.jpg" in result.stdout
    # the files behind each count are named, not only in --json
    assert "Truncated: val/fractured/cut.jpg" in result.stdout
    assert (
        "Exact duplicates: train/not fractured/copy_of_u0.png = train/not fractured/u0.png" in result.stdout
    )

    result = runner.invoke(app, ["audit", str(planted), "--json", "--threshold", "4"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["threshold"] == 4 and data["images"] == 11
    assert len(data["exact_duplicates"]) == 1 and len(data["unreadable"]) == 1
    # the exact duplicates stay together in any re-split (split_keys): only the twins could leak
    assert data["near_pairs"] == 2 and data["ungrouped_pairs"] == 1


def test_a_threshold_that_pairs_unrelated_images_is_refused(planted: Path) -> None:
    """At 24 bits FracAtlas's unrelated radiographs made 650,419 "near-duplicate" pairs (64: all 5.2
    million, gigabytes): the CLI and the library stop at the same MAX_THRESHOLD."""
    limit = audit_module.MAX_THRESHOLD
    assert audit(planted, threshold=limit).threshold == limit
    with pytest.raises(ValueError, match=f"0..{limit} bits"):
        audit(planted, threshold=limit + 1)
    result = CliRunner().invoke(app, ["audit", str(planted), "--threshold", str(limit + 1)])
    assert result.exit_code == 2 and f"less than or equal to {limit}" in result.output


def test_cli_audit_bad_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["audit", str(tmp_path / "nope")])
    assert result.exit_code == 2  # a missing input is a bad argument
    assert result.stderr.startswith("error (not_found): no such file or folder")
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["audit", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "is empty" in result.stderr  # the user's to correct as well


def test_hash_file_handles_16_bit_png_and_dicom(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    picture = np.asarray(_smooth(3), dtype=np.uint16) * 16  # 12-bit range
    reference = hash_file(_save(_smooth(3), tmp_path / "eight.png")).phash
    sixteen = hash_file(_save(Image.fromarray(picture), tmp_path / "sixteen.png"))
    assert sixteen.error is None and hamming(sixteen.phash, reference) <= 4

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "CR", "MONOCHROME2", 1
    ds.Rows, ds.Columns = picture.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = picture.tobytes()
    ds.save_as(tmp_path / "image.dcm", enforce_file_format=True)
    dicom = hash_file(tmp_path / "image.dcm")
    assert dicom.error is None and hamming(dicom.phash, reference) <= 4


def test_audit_reads_truncated_files_as_train_and_predict_do(tmp_path: Path) -> None:
    """A truncated JPEG is read (filled) and listed as truncated; a truncated PNG or TIFF is refused
    by :func:`read_image`, so the audit lists it as unreadable, with the reader's reason."""
    from fracsight.errors import TruncatedImageError
    from fracsight.io import read_image

    root = tmp_path / "cut"
    for k, fmt in enumerate(("PNG", "JPEG", "TIFF")):
        whole = io.BytesIO()
        _smooth(20 + k, 256).save(whole, format=fmt)
        (root / "fractured").mkdir(parents=True, exist_ok=True)
        (root / "fractured" / f"cut.{fmt.lower()}").write_bytes(
            whole.getvalue()[: len(whole.getvalue()) * 2 // 3]
        )
        _save(_smooth(30 + k), root / "normal" / f"whole.{fmt.lower()}", format=fmt)
    for name in ("cut.png", "cut.tiff"):
        with pytest.raises(TruncatedImageError):
            read_image(root / "fractured" / name)
    assert read_image(root / "fractured" / "cut.jpeg").metadata.truncated

    # a JPEG lacking only its end marker is truncated but whole: read whole, reliable (the audit said
    # "predict marks them not reliable" of all of them)
    jpeg = io.BytesIO()
    _smooth(40, 256).save(jpeg, format="JPEG")
    (root / "normal" / "no_end.jpeg").write_bytes(jpeg.getvalue()[:-2])
    report = audit(root)
    assert report.truncated == ["fractured/cut.jpeg", "normal/no_end.jpeg"]
    assert report.truncated_filled == ["fractured/cut.jpeg"]
    shown = CliRunner().invoke(app, ["audit", str(root)], env={"COLUMNS": "300"}).stdout
    assert "2 │ JPEGs cut short: 1 with a part missing, read filled" in shown, shown
    assert "1 lacking only their end marker, read whole" in " ".join(shown.split())
    assert {u["path"]: u["error"] for u in report.unreadable} == {
        "fractured/cut.png": "truncated_image: cut.png: truncated PNG file cannot be read",
        "fractured/cut.tiff": "truncated_image: cut.tiff: truncated TIFF file cannot be read",
    }


def _two_classes(root: Path) -> None:
    for k in range(4):
        _save(_smooth(200 + k), root / ("fractured" if k % 2 else "normal") / f"u{k}.png")


def test_cli_audit_links_back_to_an_outer_folder_are_skipped(tmp_path: Path) -> None:
    """A link to a folder above (``ln -s .. up``) read every image again until the path grew too
    long (40 times each, no warning); one in each class folder never ended."""
    root = tmp_path / "linked"
    _two_classes(root)
    (root / "normal" / "up").symlink_to("..")
    result = CliRunner().invoke(app, ["audit", str(root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["images"] == 4 and data["exact_duplicates"] == []
    assert data["loader_warnings"] == [f"{root / 'normal' / 'up'} links back to a folder it lies in: skipped"]


def test_cli_audit_one_class_folder_says_so(tmp_path: Path) -> None:
    """One class folder alone was taken for an archive's wrapper: 'not a data set layout'."""
    _save(_smooth(1), tmp_path / "one" / "Fractured" / "a.png")
    result = CliRunner().invoke(app, ["audit", str(tmp_path / "one")])
    assert result.exit_code == 2  # the data folder given is the user's to correct (1 until 2026-12-06)
    assert "need at least two classes with images, found ['Fractured']" in result.stderr


def test_cli_audit_names_non_utf8_files_readably(tmp_path: Path) -> None:
    """A file name in Latin-1 bytes was written to --json as a lone surrogate (``\\udce9``, which
    strict JSON readers refuse) and printed as a replacement character."""
    root = tmp_path / "latin"
    _two_classes(root)
    (root / "normal" / "u0.png").rename(root / "normal" / b"caf\xe9.png".decode(errors="surrogateescape"))
    (root / "normal" / b"bad\xff.jpg".decode(errors="surrogateescape")).write_bytes(b"no image")
    result = CliRunner().invoke(app, ["audit", str(root), "--json"])
    assert result.exit_code == 0, result.output
    assert "\\udc" not in result.stdout
    data = json.loads(result.stdout)
    assert [u["path"] for u in data["unreadable"]] == ["normal/bad\\xff.jpg"]
    assert "bad\\xff.jpg" in data["unreadable"][0]["error"]
    result = CliRunner().invoke(app, ["audit", str(root)], env={"COLUMNS": "200"})
    assert "normal/bad\\xff.jpg" in result.stdout and "\ufffd" not in result.stdout


def test_cli_audit_shows_control_characters_in_names_escaped(tmp_path: Path) -> None:
    """The audit's own tables and lists printed names as they are: an ESC sequence in a file name
    set the terminal's title and colour, or cleared the screen, and a newline split a table row;
    `predict` and the warnings already showed them escaped."""
    root = tmp_path / "odd"
    _two_classes(root)
    shutil.copy(root / "normal" / "u0.png", root / "normal" / "new\nline.png")
    (root / "fractured" / "bad\x1b[2Jclear.jpg").write_bytes(b"no image")
    result = CliRunner().invoke(app, ["audit", str(root)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "new\nline" not in result.stdout
    assert "bad\\x1b[2Jclear.jpg" in result.stdout and "normal/new\\nline.png" in result.stdout
    labelled = tmp_path / "labelled"  # a region from the user's labels.csv
    for name, seed in (("a.png", 1), ("b.png", 2)):
        _save(_smooth(seed), labelled / name)
    (labelled / "labels.csv").write_text("image,fracture,region\na.png,1,hand\nb.png,0,leg\x1b[2J\n")
    result = CliRunner().invoke(app, ["audit", str(labelled)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "leg\\x1b[2J 1" in result.stdout


def test_cli_audit_says_when_it_shows_only_some_loader_warnings(tmp_path: Path) -> None:
    root = tmp_path / "many"
    _two_classes(root)
    for k in range(11):
        (root / f"empty{k:02d}").mkdir()  # each: "holds no images and is ignored"
    result = CliRunner().invoke(app, ["audit", str(root)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.stdout.count("Loader warning:") == 10
    assert "... and 1 more loader warning(s); --json lists all" in result.stdout


def test_cli_audit_counts_fracture_types_even_where_a_split_holds_one_type(tmp_path: Path) -> None:
    """Fracture types under Fractured/ were dropped for the whole set, unsaid, when one split's
    Fractured/ held a single type (a small test split); and the audit never showed the type balance."""
    root = tmp_path / "typed"
    for k, (split, kind) in enumerate([("train", "Spiral"), ("train", "Spiral"), ("train", "Avulsion")]):
        _save(_smooth(300 + k), root / split / "Fractured" / kind / f"f{k}.png")
    _save(_smooth(310), root / "test" / "Fractured" / "Spiral" / "t.png")
    for k, split in enumerate(("train", "train", "test")):
        _save(_smooth(320 + k), root / split / "Normal" / f"n{k}.png")
    result = CliRunner().invoke(app, ["audit", str(root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["counts"] == {
        "train": {"not fractured": 2, "fractured": 3},
        "test": {"not fractured": 1, "fractured": 1},
    }
    assert data["class_counts"] == {
        "train": {"Avulsion": 1, "Spiral": 2},
        "test": {"Avulsion": 0, "Spiral": 1},
    }
    assert "split 'test' lacks fracture type(s) Avulsion" in data["loader_warnings"]
    table = CliRunner().invoke(app, ["audit", str(root)], env={"COLUMNS": "200"}).stdout
    assert "Images with a class label (fracture type) per split" in " ".join(table.split())


def test_cli_audit_titles_the_balance_of_n_class_folders_plainly(tmp_path: Path) -> None:
    """Generic class folders (fracture types) were counted under "Images per split and class class"."""
    root = tmp_path / "types"
    for k, kind in enumerate(["Avulsion", "Avulsion", "Greenstick", "Greenstick", "Spiral", "Spiral"]):
        _save(_smooth(400 + k), root / kind / f"t{k}.png")
    result = CliRunner().invoke(app, ["audit", str(root)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    titles = [line.strip() for line in result.stdout.splitlines() if line.startswith("Images per split")]
    assert titles == ["Images per split and class"], result.stdout
    _two_classes(binary := tmp_path / "binary")
    result = CliRunner().invoke(app, ["audit", str(binary)], env={"COLUMNS": "200"})
    titles = [line.strip() for line in result.stdout.splitlines() if line.startswith("Images per split")]
    assert titles == ["Images per split and fracture class"], result.stdout


def test_cli_audit_many_classes_a_row_each(tmp_path: Path) -> None:
    """A column per class cut every header to `type…` at 8 classes in 80 columns, and left only
    borders at 300: the classes are rows once there are more than a few."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k in range(12):
            folder = tmp_path / "k" / split / f"type_{k}"
            folder.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(folder / f"{split}{k}.png")
    result = CliRunner().invoke(app, ["audit", str(tmp_path / "k")], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ type_")]
    assert len(rows) == 12 and all(line.split("│")[2].strip() == "1" for line in rows), result.stdout
    assert any(line.startswith("│ Total") and "24" in line for line in result.stdout.splitlines())


def test_cli_audit_without_splits_shows_no_split_column(tmp_path: Path) -> None:
    """A data set without splits showed "None / None" in the Splits column of every pair."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    picture = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    for label, noise in (("fractured", 0), ("not fractured", 3)):  # near-identical, opposite labels
        folder = tmp_path / "d" / label
        folder.mkdir(parents=True)
        Image.fromarray(np.clip(picture.astype(int) + noise, 0, 255).astype(np.uint8)).save(folder / "x.png")
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(folder / f"o{k}.png")
    result = CliRunner().invoke(app, ["audit", str(tmp_path / "d")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "x.png" in result.stdout and "None" not in result.stdout, result.stdout


def test_workers_beyond_64_are_refused(tmp_path: Path) -> None:
    """`--workers 5000` forked 5000 processes at once, whatever the work."""
    root = tmp_path / "d"
    _two_classes(root)
    result = CliRunner().invoke(app, ["audit", str(root), "--workers", "65"])
    assert result.exit_code == 2 and "less than or equal to 64" in result.output
    assert CliRunner().invoke(app, ["audit", str(root), "--workers", "64", "--json"]).exit_code == 0


def test_empty_files_are_unreadable_not_duplicates_of_each_other(tmp_path: Path) -> None:
    """Two empty files in two classes were listed as an exact duplicate group (`fractured/e1.jpg =
    normal/e2.jpg`), the same picture filed twice with two labels: there is no picture."""
    root = tmp_path / "bad"
    _two_classes(root)
    (root / "fractured" / "e1.jpg").write_bytes(b"")
    (root / "normal" / "e2.jpg").write_bytes(b"")
    # nor one error page a failed download saved under several names
    for name in ("fractured/dl_1.jpg", "normal/dl_2.jpg"):
        (root / name).write_bytes(b"<html><body>403 Forbidden</body></html>\n")
    result = CliRunner().invoke(app, ["audit", str(root), "--json"])
    data = json.loads(result.stdout)
    assert data["exact_duplicates"] == [] and len(data["unreadable"]) == 4, data
    # an image the reader refuses (too small) copied into the other class is listed, as the loader's
    # warning and the leakage count (which point here) count it
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "fractured" / "thumb.png")
    (root / "normal" / "thumb_copy.png").write_bytes((root / "fractured" / "thumb.png").read_bytes())
    data = json.loads(CliRunner().invoke(app, ["audit", str(root), "--json"]).stdout)
    assert data["exact_duplicates"] == [["fractured/thumb.png", "normal/thumb_copy.png"]], data


def test_audit_lists_a_fracsight_overlay_as_train_refuses_it(tmp_path: Path) -> None:
    """An overlay written beside the images (`predict x.jpg --overlay-dir <its folder>`) was counted
    as a readable training image, while training refuses it and says the audit lists every such file."""
    from fracsight.explain import overlay_save_options

    _two_classes(tmp_path / "d")
    for fmt, suffix in (("PNG", "png"), ("JPEG", "jpg")):
        _smooth(300).convert("RGB").save(
            tmp_path / "d" / "fractured" / f"u1.overlay.{suffix}", format=fmt, **overlay_save_options(fmt)
        )
    report = audit(tmp_path / "d")
    unreadable = sorted(u["path"] for u in report.unreadable)
    assert unreadable == ["fractured/u1.overlay.jpg", "fractured/u1.overlay.png"]
    assert all(u["error"].startswith("fracsight_overlay: ") for u in report.unreadable)
