"""Group-aware stratified splits."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from pathlib import Path

import pytest

from fracsight.data import CLASS, FRACTURE, Dataset, Sample, ensure_splits, group_split, straddling_groups
from fracsight.errors import DatasetError


def _samples(n_groups: int = 400, seed: int = 1) -> list[Sample]:
    """Groups of 1-5 images, about 20% positive; a group shares its label."""
    rng = random.Random(seed)
    out = []
    for g in range(n_groups):
        label = int(rng.random() < 0.2)
        for k in range(rng.choice([1, 1, 1, 2, 3, 5])):
            out.append(Sample(path=Path(f"g{g}_{k}.png"), labels={FRACTURE: label}, group=f"g{g}"))
    return out


def test_no_group_straddles_and_proportions_hold() -> None:
    samples = _samples()
    parts = group_split(samples, (0.8, 0.1, 0.1), seed=0)
    assert set(parts) == {"train", "val", "test"}
    flat = [s for p in parts.values() for s in p]
    assert len(flat) == len(samples)
    assert all(s.split == name for name, p in parts.items() for s in p)
    assert straddling_groups(flat) == {}
    n = len(samples)
    for name, fraction in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(len(parts[name]) / n - fraction) < 0.02
    overall = sum(s.labels[FRACTURE] for s in samples) / n
    for p in parts.values():  # stratified: each split has about the overall positive rate
        assert abs(sum(s.labels[FRACTURE] for s in p) / len(p) - overall) < 0.05


def test_deterministic_per_seed_and_seed_matters() -> None:
    samples = _samples()

    def ids(seed: int) -> dict[str, list[str]]:
        return {k: [s.path.name for s in v] for k, v in group_split(samples, seed=seed).items()}

    assert ids(5) == ids(5)
    assert ids(5) != ids(6)


def test_study_id_groups_when_group_is_none() -> None:
    samples = [
        Sample(Path(f"{i}_{k}.png"), {FRACTURE: i % 2}, study_id=f"s{i}") for i in range(50) for k in range(3)
    ]
    parts = group_split(samples, (0.5, 0.5), names=("a", "b"), seed=2)
    flat = [s for p in parts.values() for s in p]
    assert straddling_groups(flat) == {}
    assert len(parts["a"]) == len(parts["b"]) == 75


def test_bad_fractions() -> None:
    with pytest.raises(ValueError, match="fractions"):
        group_split(_samples(5), (0.5, 0.5))
    with pytest.raises(ValueError, match="non-negative"):
        group_split(_samples(5), (1.0, -0.5, 0.5))


def _dataset(samples: list[Sample], task: str = FRACTURE) -> Dataset:
    return Dataset(Path("."), "class-folders", tuple(samples), {task: ("a", "b")})


def test_ensure_splits_assigns_when_absent_and_keeps_order() -> None:
    samples = _samples(100)
    ds = ensure_splits(_dataset(samples))
    assert [s.path for s in ds.samples] == [s.path for s in samples]
    assert set(ds.splits) == {"train", "val", "test"}
    assert straddling_groups(ds.samples) == {}


def test_ensure_splits_carves_val_out_of_train() -> None:
    samples = [
        Sample(Path(f"{i}.png"), {CLASS: i % 3}, split="train" if i < 90 else "test") for i in range(100)
    ]
    ds = ensure_splits(_dataset(samples, CLASS), (0.8, 0.1, 0.1))
    counts = Counter(s.split for s in ds.samples)
    assert counts["test"] == 10 and counts["val"] == 10 and counts["train"] == 80


def test_ensure_splits_leaves_complete_splits_and_refuses_a_mix() -> None:
    complete = _dataset([Sample(Path(f"{s}.png"), {FRACTURE: 0}, split=s) for s in ("train", "val", "test")])
    assert ensure_splits(complete) is complete
    mixed = _dataset([Sample(Path("a.png"), split="train"), Sample(Path("b.png"))])
    with pytest.raises(DatasetError, match="some samples have a split"):
        ensure_splits(mixed)


def test_training_sees_the_splits_ensure_splits_makes() -> None:
    """train_val_samples (train, export, quantize) carves the missing splits as ensure_splits does,
    so a test split stays held out; a data set split on some images only is refused, not trimmed."""
    from fracsight.data.splits import train_val_samples

    samples = _samples(200)
    kaggle = _dataset(
        [dataclasses.replace(s, split="test" if i % 5 == 0 else "train") for i, s in enumerate(samples)]
    )
    train, val = train_val_samples(kaggle, seed=3)
    made = ensure_splits(kaggle, seed=3)
    assert [s.path for s in train] == [s.path for s in made.split("train")]
    assert [s.path for s in val] == [s.path for s in made.split("val")] and val
    assert not {s.path for s in [*train, *val]} & {s.path for s in kaggle.split("test")}

    nowhere = _dataset(samples)  # no split at all: a test split is carved too, and never trained on
    train, val = train_val_samples(nowhere, seed=0)
    assert len(train) + len(val) < len(samples)

    mixed = _dataset(
        [dataclasses.replace(s, split="train" if i % 2 else None) for i, s in enumerate(samples)]
    )
    with pytest.raises(DatasetError, match="some samples have a split and some do not"):
        train_val_samples(mixed, seed=0)
    # one image and no split: "no train and val split can be made from its splits []"
    with pytest.raises(DatasetError, match=r"1 image\(s\), too few to carve a train and a val split from"):
        train_val_samples(_dataset(samples[:1]), seed=0)


def test_automatic_split_keeps_exact_duplicates_together(tmp_path: Path) -> None:
    from PIL import Image

    from fracsight.data import load_dataset

    root = tmp_path / "dups"
    for k in range(40):
        cls = "fractured" if k % 4 == 0 else "normal"
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), color=k).save(root / cls / f"{k}.png")  # same size, different bytes
    for k in range(0, 40, 4):  # a copy beside each fractured image, and one filed under both classes
        (root / "fractured" / f"copy_{k}.png").write_bytes((root / "fractured" / f"{k}.png").read_bytes())
    (root / "normal" / "also_0.png").write_bytes((root / "fractured" / "0.png").read_bytes())

    by_bytes: dict[bytes, set[str | None]] = {}
    for s in ensure_splits(load_dataset(root), seed=0).samples:
        by_bytes.setdefault(s.path.read_bytes(), set()).add(s.split)
    assert sum(len(splits) > 1 for splits in by_bytes.values()) == 0
    assert len(by_bytes) == 40


def test_exact_duplicates_join_their_groups_and_only_same_sized_files_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fracsight.data import _files
    from fracsight.data.splits import split_keys

    png = b"\x89PNG\r\n\x1a\n"  # files that start as images: only those are duplicates
    for name, data in (
        ("a", png + b"same"),
        ("b", png + b"same"),
        ("c", png + b"diff"),
        ("d", b"unique size"),
    ):
        (tmp_path / name).write_bytes(data)
    samples = [
        Sample(tmp_path / "a", {FRACTURE: 1}, group="g1"),
        Sample(tmp_path / "x_missing", {FRACTURE: 1}, group="g1"),
        Sample(tmp_path / "b", {FRACTURE: 0}, group="g2"),
        Sample(tmp_path / "y_missing", {FRACTURE: 0}, group="g2"),
        Sample(tmp_path / "c", {FRACTURE: 0}),
        Sample(tmp_path / "d", {FRACTURE: 0}),
    ]
    hashed: list[bytes] = []
    original = _files.content_hash
    monkeypatch.setattr(_files, "content_hash", lambda data: hashed.append(data) or original(data))
    keys = split_keys(samples)
    assert keys[:4] == ["g1"] * 4  # a and b hold the same bytes: their groups g1 and g2 become one
    assert keys[4:] == [str(tmp_path / "c"), str(tmp_path / "d")]
    # "unique size" is never read; the heads of the same-sized three are, and only a and b (alike
    # at their heads) are read whole
    assert sorted(hashed) == [png + b"diff", png + b"same", png + b"same", png + b"same", png + b"same"]


def test_empty_files_are_not_duplicates_of_each_other(tmp_path: Path) -> None:
    """Two empty (unreadable) views under two labels were "the same picture filed twice with
    different labels", and their groups joined."""
    from fracsight.data._files import exact_duplicates

    for name in ("a", "b"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "c").write_bytes(b"\x89PNG\r\n\x1a\nx")
    (tmp_path / "d").write_bytes(b"\x89PNG\r\n\x1a\nx")
    # an error page a failed download saved under several image names: no picture either
    for name in ("e.jpg", "f.jpg"):
        (tmp_path / name).write_bytes(b"<html><body>403 Forbidden</body></html>\n")
    assert exact_duplicates([tmp_path / n for n in ("a", "b", "c", "d", "e.jpg", "f.jpg")]) == [[2, 3]]
    # how a data set is split keeps such copies together, as it did before: the same data splits as
    # it did for a run made then (its export and --resume were refused: "not the data it trained on")
    from fracsight.data.splits import split_keys

    samples = [Sample(tmp_path / n, {FRACTURE: 0}) for n in ("c", "d", "e.jpg", "f.jpg")]
    keys = split_keys(samples)
    assert keys[0] == keys[1] and keys[2] == keys[3] and keys[0] != keys[2]


def test_a_class_too_small_for_every_split_fracsight_makes_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Type folders without splits, one rare type of 3 images: the 80/10/10 split gave it no val and
    no test image, so the model was neither chosen nor measured on it, and nothing said so."""
    counts = {"Avulsion": 15, "Greenstick": 15, "spiral": 3}
    names = tuple(counts)
    samples = [
        Sample(Path(f"{name}{k}.png"), {CLASS: names.index(name)})
        for name, n in counts.items()
        for k in range(n)
    ]
    dataset = Dataset(Path("."), "class-folders", tuple(samples), {CLASS: names})
    with caplog.at_level("WARNING", logger="fracsight.data"):
        made = ensure_splits(dataset)
    assert not any(s.labels[CLASS] == 2 for s in [*made.split("val"), *made.split("test")])
    assert "leave out spiral (3 images; none in val, test)" in caplog.text
    assert "Avulsion" not in caplog.text and "Greenstick" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="fracsight.data"):
        ensure_splits(_dataset(_samples(100)))  # every label in every split: nothing to say
    assert "leave out" not in caplog.text


def test_a_common_type_a_fracture_balanced_split_leaves_out_is_not_called_too_few(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fracture + type data without splits: the split is balanced by the fracture label, and with
    seed 3 a type of 30 images got no test image; the warning said "too few images", which a
    researcher with 30 of them took for a wrong count."""
    types = ("a", "b", "c", "d")
    samples = [
        Sample(Path(f"f{t}{k}.png"), {FRACTURE: 1, CLASS: i}) for i, t in enumerate(types) for k in range(30)
    ]
    samples += [Sample(Path(f"n{k}.png"), {FRACTURE: 0}) for k in range(120)]
    names = {FRACTURE: ("not fractured", "fractured"), CLASS: types}
    with caplog.at_level("WARNING", logger="fracsight.data"):
        ensure_splits(Dataset(Path("."), "class-folders", tuple(samples), names), seed=3)
    assert "leave out a (30 images; none in test): they are balanced by the fracture label, not by type" in (
        caplog.text
    )
    assert "too few images" not in caplog.text


def test_a_training_subset_keeps_a_rare_type(caplog) -> None:
    """`max_samples=10` of 77 class-folder images with a type of 2: in proportion alone the type got
    no training image, and the model a class it never saw."""
    from fracsight.data.splits import training_subset

    counts = {0: 40, 1: 20, 2: 15, 3: 2}
    samples = [
        Sample(path=Path(f"{c}/{i}.png"), labels={CLASS: c}) for c, n in counts.items() for i in range(n)
    ]
    for seed in range(5):
        subset = training_subset(samples, 10, seed)
        drawn = Counter(s.labels[CLASS] for s in subset)
        assert len(subset) == 10 and drawn[3] == 1 and drawn[0] >= drawn[1] >= drawn[2] >= 1
    assert Counter(s.labels[CLASS] for s in training_subset(samples, 40, 0)) == {0: 21, 1: 10, 2: 8, 3: 1}
    assert "fewer than" not in caplog.text
    with caplog.at_level("WARNING", logger="fracsight.data"):
        assert len(training_subset(samples, 3, 0)) == 3
    assert "max_samples=3 is fewer than the 4 labels" in caplog.text


def test_a_split_too_few_groups_can_give_none_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """MURA's layout has train and valid only: with 3 patients in train the test split carved out
    of it got no patient, nothing said so, and `evaluate --split test` later found no such split."""
    samples = [
        Sample(Path(f"{split}{g}_{k}.png"), {FRACTURE: g % 2}, group=f"{split}{g}", split=split)
        for split, n_groups in (("train", 3), ("val", 4))
        for g in range(n_groups)
        for k in range(3)
    ]
    with caplog.at_level("WARNING", logger="fracsight.data"):
        made = ensure_splits(_dataset(samples))
    assert "test" not in made.splits
    assert "have no test split: 3 group(s) of images" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="fracsight.data"):
        made = ensure_splits(_dataset(_samples(100)))
    assert set(made.splits) == {"train", "val", "test"} and "have no" not in caplog.text
