"""Class-folder reader: binary (Kaggle style) and N-class, with or without a split level."""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from fracsight.data import CLASS, FRACTURE, load_dataset
from fracsight.data._files import fracture_polarity
from fracsight.data.sample import NotADataFolderError
from fracsight.errors import DatasetError


def _png(path: Path, value: int = 0, suffix: str = ".png") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_suffix(suffix)
    Image.new("L", (8, 8), color=value).save(target, format="PNG" if suffix.lower() == ".png" else None)
    return target


@pytest.mark.parametrize(
    ("name", "polarity"),
    [
        ("fractured", 1), ("Fractured", 1), ("fracture", 1), ("positive", 1), ("ABNORMAL", 1),
        ("not fractured", 0), ("Non_fractured", 0), ("non-fractured", 0), ("nonfractured", 0),
        ("no_fracture", 0), ("normal", 0), ("Negative", 0), ("not_fractured", 0),
        ("Broken", 1), ("Intact", 0), ("unbroken", 0), ("healthy", 0),  # Broken/Intact: was 2 classes
        ("Avulsion", None), ("hand", None), ("", None),
        ("fracture-free", 0), ("Fracture absent", 0), ("without fracture", 0), ("fracture present", 1),
        ("no fracture", 0), ("not abnormal", 0),
        # a word not known is not passed over: each of these read as its opposite or as a label
        ("non-displaced fracture", None), ("Non_displaced_fracture", None), ("displaced_fracture", None),
        ("fracture ruled out", None), ("fracture excluded", None), ("healed fracture", None),
        ("not normal", None), ("fracture 1", None),
        # an index, and words that say nothing of the label, are passed over
        ("0_normal", 0), ("1_fracture", 1), ("fractured_images", 1), ("normal_bone", 0),
        ("no fracture cases", 0), ("xray_fractured", 1), ("broken_bones", 1),
    ],
)  # fmt: skip
def test_fracture_polarity(name: str, polarity: int | None) -> None:
    assert fracture_polarity(name) == polarity


def test_kaggle_binary_with_valid_split(tmp_path: Path) -> None:
    root = tmp_path / "kaggle"
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        for cls in ("fractured", "not fractured"):
            for k in range(n):
                _png(root / split / cls / f"{cls[:3]}{k}")
    _png(root / "train" / "fractured" / "upper", suffix=".JPG")  # extension case ignored
    (root / "train" / "fractured" / ".DS_Store").write_bytes(b"junk")
    _png(root / "train" / "fractured" / "._hidden")
    (root / "train" / "fractured" / "notes.txt").write_text("not an image")

    ds = load_dataset(root)
    assert ds.layout == "class-folders"
    assert ds.class_names == {FRACTURE: ("not fractured", "fractured")}
    assert {n: len(ds.split(n)) for n in ds.splits} == {"train": 7, "val": 4, "test": 2}
    for s in ds.samples:
        assert s.labels == {FRACTURE: int(s.path.parent.name == "fractured")}
    assert not any(s.path.name.startswith(".") for s in ds.samples)


def test_n_class_fracture_types_without_split(tmp_path: Path) -> None:
    root = tmp_path / "types"
    for cls in ("Greenstick", "avulsion", "Comminuted", "Spiral"):
        _png(root / cls / "a")
        _png(root / cls / "nested" / "b")  # sub-folders of a class belong to it
    ds = load_dataset(root)
    assert ds.class_names == {CLASS: ("avulsion", "Comminuted", "Greenstick", "Spiral")}
    assert ds.splits == () and len(ds.samples) == 8
    for s in ds.samples:
        cls = s.path.parent.name if s.path.parent.name != "nested" else s.path.parent.parent.name
        assert ds.class_names[CLASS][s.labels[CLASS]] == cls


def test_two_non_fracture_classes_are_n_class(tmp_path: Path) -> None:
    for cls in ("elbow", "wrist"):
        _png(tmp_path / cls / "a")
    assert load_dataset(tmp_path).class_names == {CLASS: ("elbow", "wrist")}


@pytest.mark.fracatlas
def test_body_region_folders_of_real_images(tmp_path: Path, fracatlas_dir: Path) -> None:
    import csv

    rows = list(csv.DictReader((fracatlas_dir / "dataset.csv").open()))
    regions = ("hand", "leg", "hip", "shoulder")
    for region in regions:
        picked = [r["image_id"] for r in rows if r[region] == "1" and r["mixed"] == "0"][:3]
        for name in picked:
            src = next(fracatlas_dir.glob(f"images/*/{name}"))
            (tmp_path / region).mkdir(exist_ok=True)
            (tmp_path / region / name).symlink_to(src)
    ds = load_dataset(tmp_path)
    assert ds.layout == "class-folders"
    assert ds.class_names == {CLASS: ("hand", "hip", "leg", "shoulder")}
    assert len(ds.samples) == 12
    assert all(ds.class_names[CLASS][s.labels[CLASS]] == s.path.parent.name for s in ds.samples)


def test_loose_and_non_split_folders_are_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for split in ("train", "test"):
        for cls in ("fractured", "normal"):
            _png(tmp_path / split / cls / "a")
    _png(tmp_path / "train" / "loose")
    _png(tmp_path / "extras" / "x" / "a")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(tmp_path)
    assert len(ds.samples) == 4
    assert "extras" in caplog.text and "belong to no class" in caplog.text


def test_single_class_is_refused(tmp_path: Path) -> None:
    _png(tmp_path / "train" / "fractured" / "a")
    with pytest.raises(DatasetError, match="at least two classes"):
        load_dataset(tmp_path, layout="class-folders")


def test_a_data_set_beside_another_folder_is_pointed_to(tmp_path: Path, caplog) -> None:
    """An unpacked archive with a notes folder beside it (`Fracture-Dataset/{train,val,test}/...`
    and `docs/`): "class folders need at least two classes, found ['Fracture-Dataset']", exit 1,
    never saying where the data set is; with images beside it, a two-class head of the archive
    against them was trained without a word."""
    for split in ("train", "test"):
        for label in ("fractured", "normal"):
            _png(tmp_path / "top" / "Fracture-Dataset" / split / label / f"{split}{label}")
    (tmp_path / "top" / "docs").mkdir()
    (tmp_path / "top" / "docs" / "readme.txt").write_text("notes")
    with pytest.raises(
        NotADataFolderError, match="Fracture-Dataset holds train/val/test folders: give it as"
    ):
        load_dataset(tmp_path / "top")
    _png(tmp_path / "top" / "unlabelled" / "new")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        load_dataset(tmp_path / "top")
    assert "Fracture-Dataset holds train/val/test folders: is it the data set?" in caplog.text
    caplog.clear()
    for label in ("Fractured", "Normal"):  # class first, its images in train/ and test/: no data set inside
        for split in ("train", "test"):
            _png(tmp_path / "classfirst" / label / split / f"{label}{split}")
    refused = pytest.raises(NotADataFolderError, match="the class folders hold split folders")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"), refused:
        load_dataset(tmp_path / "classfirst")
    assert "is it the data set?" not in caplog.text


def test_fracture_types_under_fractured_give_both_labels(tmp_path: Path) -> None:
    root = tmp_path / "typed"
    for split in ("train", "val"):
        for kind in ("Spiral", "avulsion", "Greenstick"):
            _png(root / split / "Fractured" / kind / "a")
            _png(root / split / "Fractured" / kind / "deeper" / "b")  # below a type: still that type
        _png(root / split / "Non_fractured" / "n1")
        _png(root / split / "Non_fractured" / "n2")
    ds = load_dataset(root)
    assert ds.class_names == {
        FRACTURE: ("not fractured", "fractured"),
        CLASS: ("avulsion", "Greenstick", "Spiral"),
    }
    for s in ds.samples:
        if "Fractured" in s.path.parts:
            kind = s.path.relative_to(root / s.split / "Fractured").parts[0]
            assert s.labels == {FRACTURE: 1, CLASS: ds.class_names[CLASS].index(kind)}
        else:
            assert s.labels == {FRACTURE: 0}
    assert len(ds.split("train")) == 8


def test_sub_folders_on_both_sides_are_grouping_not_types(tmp_path: Path) -> None:
    root = tmp_path / "by_patient"
    for cls in ("fractured", "not fractured"):
        for patient in ("p1", "p2"):
            _png(root / cls / patient / "img")
    ds = load_dataset(root)
    assert ds.class_names == {FRACTURE: ("not fractured", "fractured")}
    assert all(set(s.labels) == {FRACTURE} for s in ds.samples)


def test_patient_folders_under_fractured_only_are_not_types(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fractured images filed by patient in every split, normal ones loose: read as fracture types,
    a "type" head was trained on patient IDs (validation class accuracy 0 by construction) and
    exit 0. No two splits share such a folder, as types always do: they are groups, said so."""
    root = tmp_path / "patients"
    for split, patients in (("train", ("patient300", "patient301")), ("val", ("patient400", "patient401"))):
        for patient in patients:
            _png(root / split / "Fractured" / patient / "a")
            _png(root / split / "Fractured" / patient / "b")
        _png(root / split / "Non_fractured" / "n1")
        _png(root / split / "Non_fractured" / "n2")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(root)
    assert ds.class_names == {FRACTURE: ("not fractured", "fractured")}
    assert (
        "share no name between the splits" in caplog.text
        and "patient300, patient301, patient400, ..." in caplog.text
    )
    fractured = [s for s in ds.samples if s.labels[FRACTURE] == 1]
    assert len({s.group for s in fractured}) == 4  # one patient's two images kept together
    # one type folder shared between the splits is enough for them to be types
    _png(root / "val" / "Fractured" / "patient300" / "c")
    assert CLASS in load_dataset(root).class_names


def test_one_sub_folder_or_loose_images_are_not_types(tmp_path: Path) -> None:
    root = tmp_path / "loose"
    _png(root / "fractured" / "spiral" / "a")
    _png(root / "fractured" / "spiral" / "b")
    _png(root / "fractured" / "loose")
    _png(root / "normal" / "n")
    assert load_dataset(root).class_names == {FRACTURE: ("not fractured", "fractured")}


def test_fracture_type_gaps_and_stray_images_are_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "typed"
    for kind in ("Spiral", "Greenstick"):
        _png(root / "train" / "Fractured" / kind / "a")
    _png(root / "val" / "Fractured" / "Spiral" / "a")
    _png(root / "val" / "Fractured" / "Oblique" / "a")
    for split in ("train", "val"):
        _png(root / split / "Non_fractured" / "n")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(root)
    assert CLASS in ds.class_names
    assert "split 'train' lacks fracture type(s) Oblique" in caplog.text
    assert "split 'val' lacks fracture type(s) Greenstick" in caplog.text

    caplog.clear()
    _png(root / "train" / "Fractured" / "stray")  # one image beside the type folders
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(root)
    assert CLASS not in ds.class_names
    assert "outside the type folders (greenstick, oblique, spiral)" in caplog.text
    assert "without types" in caplog.text

    caplog.clear()  # a split's fractured images all loose, beside another split's type folders
    (root / "train" / "Fractured" / "stray.png").unlink()
    for kind in ("Spiral", "Oblique"):
        for png in (root / "val" / "Fractured" / kind).iterdir():
            png.rename(root / "val" / "Fractured" / f"{kind}-{png.name}")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(root)
    assert CLASS not in ds.class_names
    assert f"{root / 'val' / 'Fractured'} holds 2 image(s) outside the type folders" in caplog.text


def test_class_folders_differing_in_case_across_splits_are_one_class(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "case_mix"
    for split, spelling in (("train", str.lower), ("val", str.title), ("test", str.title)):
        for cls in ("fractured", "normal"):
            _png(root / split / spelling(cls) / "a")
            _png(root / split / spelling(cls) / "b")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(root)
    assert ds.class_names == {FRACTURE: ("not fractured", "fractured")}
    assert {n: len(ds.split(n)) for n in ds.splits} == {"train": 4, "val": 4, "test": 4}
    for s in ds.samples:
        assert s.labels == {FRACTURE: int(s.path.parent.name.lower() == "fractured")}
    assert "Fractured, fractured differ only in case" in caplog.text


def test_n_class_and_type_folders_match_ignoring_case(tmp_path: Path) -> None:
    n_class = tmp_path / "n_class"
    _png(n_class / "train" / "Avulsion" / "a")
    _png(n_class / "train" / "avulsion" / "b")  # two spellings in one split: still one class
    _png(n_class / "train" / "Spiral" / "a")
    _png(n_class / "val" / "avulsion" / "a")
    _png(n_class / "val" / "SPIRAL" / "a")
    ds = load_dataset(n_class)
    assert ds.class_names == {CLASS: ("Avulsion", "SPIRAL")}
    for s in ds.samples:
        assert s.labels == {CLASS: int(s.path.parent.name.lower() == "spiral")}

    typed = tmp_path / "typed"
    for split, spelling in (("train", str.title), ("val", str.lower)):
        for kind in ("avulsion", "spiral"):
            _png(typed / split / spelling("fractured") / spelling(kind) / "a")
        _png(typed / split / spelling("normal") / "n")
    ds = load_dataset(typed)
    assert ds.class_names == {FRACTURE: ("not fractured", "fractured"), CLASS: ("Avulsion", "Spiral")}
    for s in ds.samples:
        kind = s.path.parent.name.lower()
        expected = (
            {FRACTURE: 0} if kind == "normal" else {FRACTURE: 1, CLASS: ("avulsion", "spiral").index(kind)}
        )
        assert s.labels == expected


def test_class_and_type_names_with_accents_match_as_written_on_a_mac_and_sort_alphabetically(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Mac writes `É` in a folder name as `E` + a combining accent (NFD), Linux and Windows as one
    character (NFC): `train/` copied from a Mac and `val/` made here gave two `Épiphysaire` classes
    that looked the same, a 3-class head, and "split 'train' lacks class(es) Épiphysaire". And `É`
    sorted after `z` by code point: the classes were Avulsion, spiral, Épiphysaire."""
    nfd, nfc = unicodedata.normalize("NFD", "Épiphysaire"), unicodedata.normalize("NFC", "Épiphysaire")
    root = tmp_path / "types"
    for split, name in (("train", nfd), ("val", nfc)):
        for cls in (name, "Avulsion", "spiral"):
            _png(root / split / cls / "a")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(root)
    assert ds.class_names == {CLASS: ("Avulsion", nfc, "spiral")}  # one class, spelt NFC
    assert "lacks" not in caplog.text and "encoded in two ways" in caplog.text
    assert {s.labels[CLASS] for s in ds.samples if s.path.parent.name in (nfd, nfc)} == {1}

    typed = tmp_path / "typed"  # fracture types under the fractured folder, likewise
    for split, name in (("train", nfd), ("val", nfc)):
        for kind in (name, "Avulsion"):
            _png(typed / split / "Fractured" / kind / "a")
        _png(typed / split / "Normal" / "n")
    assert load_dataset(typed).class_names[CLASS] == ("Avulsion", nfc)


def test_a_link_to_a_missing_image_is_warned_not_silently_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("fractured", "normal"):
        for i in range(2):
            _png(tmp_path / name / f"{i}.png", 40 * i)
    (tmp_path / "fractured" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        dataset = load_dataset(tmp_path)
    assert len(dataset.samples) == 4
    assert "gone.png links to a file that is not there" in caplog.text


def test_normal_and_abnormal_folders_are_an_abnormality_label(tmp_path: Path) -> None:
    for name in ("Normal", "Abnormal"):
        for i in range(2):
            _png(tmp_path / name / f"{i}.png", 40 * i)
    dataset = load_dataset(tmp_path)
    assert dataset.class_names[FRACTURE] == ("normal", "abnormal")
    assert sorted(s.labels[FRACTURE] for s in dataset.samples) == [0, 0, 1, 1]
    assert {s.labels[FRACTURE] for s in dataset.samples if s.path.parent.name == "Abnormal"} == {1}


def test_two_kinds_of_fracture_are_two_classes_not_fractured_and_normal(tmp_path: Path) -> None:
    """``displaced_fracture`` / ``non_displaced_fracture``, both fractures, were read as fractured /
    not fractured (``non`` anywhere made a name negative): evaluate then scored fractures as normal."""
    for folder in ("displaced_fracture", "non_displaced_fracture"):
        for i in range(2):
            _png(tmp_path / "set" / folder / f"{i}", value=40 * i)
    ds = load_dataset(tmp_path / "set")
    assert set(ds.class_names) == {CLASS}
    assert ds.class_names[CLASS] == ("displaced_fracture", "non_displaced_fracture")


def test_patient_subfolders_are_groups_kept_in_one_split(tmp_path: Path, caplog) -> None:
    """`Fractured/patient07/view2.png`: the docs said sub-folders are taken for grouping (by patient),
    but they were dropped, so 8 of 21 patients had views in two splits, and one patient in both the
    given train and test folders went unseen by the leakage check."""
    from fracsight.data import ensure_splits, straddling_groups
    from fracsight.data.leakage import split_leakage

    value = iter(range(256))
    for i in range(21):
        for view in range(3):
            _png(
                tmp_path / "own" / ("Fractured" if i % 2 else "Normal") / f"patient{i:02d}" / f"view{view}",
                next(value),
            )
    _png(
        tmp_path / "own" / "Normal" / "patient03" / "followup", next(value)
    )  # the same patient in both classes
    dataset = load_dataset(tmp_path / "own")
    assert {s.group for s in dataset.samples} == {f"patient{i:02d}" for i in range(21)}
    assert not straddling_groups(ensure_splits(dataset).samples)

    for split, label in (
        ("train", "Fractured"),
        ("train", "Normal"),
        ("test", "Normal"),
        ("test", "Fractured"),
    ):
        for i in range(12):
            _png(tmp_path / "given" / split / label / f"p{i}" / "a", next(value))
    _png(tmp_path / "given" / "test" / "Normal" / "p0" / "b", next(value))
    leakage = split_leakage(load_dataset(tmp_path / "given").samples)
    assert leakage  # every patient is in both train and test

    # a small set of three patients, one of them with many views, is still grouped: the leakage
    # check went quiet when one patient held more than a fifth of the images
    for split, label, patient, n in (("train", "Fractured", "patA", 5), ("train", "Normal", "patB", 5)):
        for i in range(n):
            _png(tmp_path / "few" / split / label / patient / f"v{i}", next(value))
    for label, patient in (("Fractured", "patA"), ("Normal", "patC")):
        _png(tmp_path / "few" / "test" / label / patient / "v", next(value))
    assert split_leakage(load_dataset(tmp_path / "few").samples)

    # with fracture types: the patient folder under the type folder
    for i in range(12):
        _png(tmp_path / "typed" / "Fractured" / ("spiral", "avulsion")[i % 2] / f"p{i}" / "a", next(value))
        _png(tmp_path / "typed" / "Normal" / f"b{i}", next(value))  # types need a flat normal folder
    typed = load_dataset(tmp_path / "typed")
    assert CLASS in typed.class_names and {s.group for s in typed.samples} == {
        None,
        *(f"p{i}" for i in range(12)),
    }

    # one folder holding most images is no patient: not taken as a group, and said so
    for label in ("Fractured", "Normal"):
        for i in range(5):
            _png(tmp_path / "generic" / label / "images" / f"x{i}", next(value))
    with caplog.at_level(logging.WARNING, logger="fracsight.data.folders"):
        generic = load_dataset(tmp_path / "generic")
    assert all(s.group is None for s in generic.samples)
    assert "the sub-folder 'images' holds 10 of the 10 images, too many for one patient" in caplog.text
    assert "leakage of a patient between splits is not checked" in caplog.text
    # body regions are no patients either (val came out all hip, test all wrist)
    for label in ("Fractured", "Normal"):
        for region in ("hand", "leg", "hip", "shoulder", "elbow", "wrist", "XR_ANKLE"):
            for i in range(3):
                _png(tmp_path / "regions" / label / region / f"x{i}", next(value))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fracsight.data.folders"):
        regions = load_dataset(tmp_path / "regions")
    assert all(s.group is None for s in regions.samples)
    assert "sub-folders are named for body parts or views (XR_ANKLE, elbow, hand)" in caplog.text
    # batches and one folder per class are no patients; `hand_p001` is one
    for label in ("Fractured", "Normal"):
        for i in range(4):
            _png(tmp_path / "batches" / label / f"batch{i % 2}" / f"x{i}", next(value))
            _png(tmp_path / "per_class" / "train" / label / f"{label.lower()}_xrays" / f"x{i}", next(value))
            _png(tmp_path / "per_class" / "test" / label / f"{label.lower()}_xrays" / f"y{i}", next(value))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fracsight.data.folders"):
        assert all(s.group is None for s in load_dataset(tmp_path / "batches").samples)
        assert all(s.group is None for s in load_dataset(tmp_path / "per_class").samples)
    assert "only 2 sub-folders, too few to split the images by" in caplog.text
    assert "each class has one sub-folder of its own" in caplog.text
    for i in range(12):
        _png(tmp_path / "named" / ("Fractured", "Normal")[i % 2] / f"hand_p{i:03d}" / "a", next(value))
    assert {s.group for s in load_dataset(tmp_path / "named").samples} == {
        f"hand_p{i:03d}" for i in range(12)
    }


def test_view_folders_are_no_patients_and_numbered_ones_are(tmp_path: Path, caplog) -> None:
    """Views are no patients (they were: "groups straddling splits: AP (test, train, val)");
    `hand_000`, `elbow002` are patients (they were read as `hand`: the digits were dropped)."""
    from fracsight.data.leakage import split_leakage

    value = iter(range(256))
    for split in ("train", "val", "test"):
        for label in ("Fractured", "Normal"):
            for view in ("AP", "Lateral", "Oblique"):
                _png(tmp_path / "views" / split / label / view / "x", next(value))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fracsight.data.folders"):
        views = load_dataset(tmp_path / "views")
    assert all(s.group is None for s in views.samples) and not split_leakage(views.samples)
    assert "sub-folders are named for body parts or views (AP, Lateral, Oblique)" in caplog.text
    numbered = [f"{('hand', 'knee')[i % 2]}_{i:03d}" for i in range(10)] + [
        f"elbow{i:03d}" for i in range(10)
    ]
    for i, name in enumerate(numbered):
        _png(tmp_path / "numbered" / ("Fractured", "Normal")[i % 2] / name / "a", next(value))
    assert {s.group for s in load_dataset(tmp_path / "numbered").samples} == set(numbered)


def test_abnormal_with_type_folders_stays_an_abnormality_label(tmp_path: Path) -> None:
    """``Abnormal/{Hardware,Fracture}/`` beside ``Normal/`` was read as fractured / not fractured:
    the model then called hardware "fracture suspected, type uncertain (Hardware)"."""
    for split in ("train", "val"):
        for kind in ("Hardware", "Fracture"):
            _png(tmp_path / split / "Abnormal" / kind / "a")
        _png(tmp_path / split / "Normal" / "n")
    ds = load_dataset(tmp_path)
    assert ds.class_names == {FRACTURE: ("normal", "abnormal"), CLASS: ("Fracture", "Hardware")}


def test_class_names_that_mean_the_same_are_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``train/Fracture``, ``val/Fractured`` (two sources merged): silently a three-class model with
    no fracture head, the only message "split 'val' lacks class(es) Fracture"."""
    for split, positive in (("train", "Fracture"), ("val", "Fractured")):
        _png(tmp_path / split / positive / "a")
        _png(tmp_path / split / "Normal" / "n")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(tmp_path)
    assert ds.class_names == {CLASS: ("Fracture", "Fractured", "Normal")}  # as written, but said
    assert "'Fracture', 'Fractured' all read as fractured but are 2 classes of their own" in caplog.text
    caplog.clear()
    # names side by side were chosen so: normal / other abnormality / fracture is a three-class set
    for name in ("normal", "abnormal", "fracture"):
        _png(tmp_path / "three" / name / "a")
        _png(tmp_path / "split" / "train" / name / "a")
        _png(tmp_path / "split" / "val" / name / "a")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        load_dataset(tmp_path / "three")
        load_dataset(tmp_path / "split")
    assert "all read as" not in caplog.text and "for a fracture model, move" not in caplog.text
    # side by side but one name in two spellings: three classes and no fracture head, unsaid
    for name in ("fractured", "Non_fractured", "non-fractured"):
        _png(tmp_path / "twice" / name / "a")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        load_dataset(tmp_path / "twice")
    assert "'Non_fractured', 'non-fractured' all read as not fractured but are 2 classes" in caplog.text


def test_split_folders_inside_class_folders_are_refused(tmp_path: Path) -> None:
    """``fractured/{train,test}/``, as some downloads come: the split folders were taken for
    sub-folders (not patients), the splits made anew, and the user's test images trained on."""
    for name in ("fractured", "normal"):
        for split in ("train", "test"):
            for i in range(3):
                _png(tmp_path / "set" / name / split / f"{i}", value=i)
    with pytest.raises(NotADataFolderError, match=r"the class folders hold split folders \(fractured/"):
        load_dataset(tmp_path / "set")
    for name in ("fractured", "normal"):  # each split's images in patients' folders, a notes folder
        for split in ("train", "test"):
            for i in range(3):
                _png(tmp_path / "deeper" / name / split / f"p{i}" / "a", value=i)
    (tmp_path / "deeper" / "_docs").mkdir()  # sorts first, holds no image: not named as a class
    (tmp_path / "deeper" / "_docs" / "readme.txt").write_text("notes")
    named = r"split folders \(fractured/test/, \.\.\.\).* as test/fractured/"
    with pytest.raises(NotADataFolderError, match=named):
        load_dataset(tmp_path / "deeper")
    # a class's sub-folders that are no splits are still read (patients, types)
    for name in ("fractured", "normal"):
        for i in range(3):
            _png(tmp_path / "patients" / name / f"p{i}" / "a", value=i)
    assert len(load_dataset(tmp_path / "patients").samples) == 6


def test_a_fracture_pair_beside_another_class_is_said_to_lose_the_fracture_head(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fractured/ and Normal/ with a test-only Ungraded/: silently a 3-class model without a fracture
    head, trained with a class it has no image of; the only words "split 'train' lacks class(es)"."""
    for split in ("train", "val", "test"):
        _png(tmp_path / split / "Fractured" / "a")
        _png(tmp_path / split / "Normal" / "n")
    _png(tmp_path / "test" / "Ungraded" / "u")
    with caplog.at_level(logging.WARNING, logger="fracsight.data"):
        ds = load_dataset(tmp_path)
    assert ds.class_names == {CLASS: ("Fractured", "Normal", "Ungraded")}
    assert "Fractured and Normal read as fractured / not fractured, but beside Ungraded" in caplog.text
    assert "for a fracture model, move Ungraded out" in caplog.text
    assert (
        "split 'train' lacks class(es) Ungraded: a model trained on the set cannot learn them" in caplog.text
    )
