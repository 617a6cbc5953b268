"""Tiny data sets and bundles for every head combination a bundle can have, built from FracAtlas.

FracAtlas has no fracture types, so its body regions and views stand in for them: the
folders and csv files are laid out exactly as a researcher's fracture-type data would be.
Images are linked, never copied.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fracsight.data import FRACTURE, load_dataset

# head combination -> the heads its bundle must have
HEAD_KINDS = {
    "fracture": ("fracture",),
    "fracture+region": ("fracture", "region"),
    "class": ("class",),
    "fracture+class": ("fracture", "class"),
    "class+region": ("class", "region"),
}
PER_SPLIT = {"train": 10, "val": 5, "test": 4}  # images per class (and per fracture label) and split
CLASSES = ("hand", "hip", "leg")  # single-region FracAtlas images, standing in for fracture types


def _pick(fracatlas: Path) -> dict[tuple[str, int], list]:
    """Single-region samples by (region, fracture label), in file order, ignoring FracAtlas's splits."""
    picked: dict[tuple[str, int], list] = {}
    for s in load_dataset(fracatlas).samples:
        if len(s.regions) == 1 and s.regions[0] in CLASSES and s.view in ("frontal", "lateral"):
            picked.setdefault((s.regions[0], s.labels[FRACTURE]), []).append(s)
    return picked


def _splits(samples: list) -> list[tuple[str, object]]:
    out, i = [], 0
    for split, n in PER_SPLIT.items():
        out += [(split, s) for s in samples[i : i + n]]
        i += n
    return out


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src.resolve())


def make_dataset(kind: str, fracatlas: Path, root: Path) -> Path:
    """The data of one head combination, in the layout a researcher would have for it."""
    picked = _pick(fracatlas)
    root.mkdir(parents=True, exist_ok=True)
    if kind == "fracture":  # Kaggle style binary class folders
        for label, folder in ((1, "fractured"), (0, "not fractured")):
            for split, s in _splits([x for c in CLASSES for x in picked[(c, label)][:7]]):
                _link(s.path, root / split / folder / s.path.name)
    elif kind == "class":  # fracture-type class folders
        for c in CLASSES:
            for split, s in _splits(picked[(c, 1)] + picked[(c, 0)]):
                _link(s.path, root / split / c / s.path.name)
    elif kind == "fracture+class":  # types under Fractured/, next to Non_fractured/
        for c in CLASSES:
            for split, s in _splits(picked[(c, 1)]):
                _link(s.path, root / split / "Fractured" / c / s.path.name)
            for split, s in _splits(picked[(c, 0)]):
                _link(s.path, root / split / "Non_fractured" / s.path.name)
    else:  # a labels.csv: fracture + region, or class (the view, standing in) + region
        rows = []
        for c in CLASSES:
            for label in (1, 0):
                for split, s in _splits(picked[(c, label)]):
                    _link(s.path, root / "images" / s.path.name)
                    row = {"image": f"images/{s.path.name}", "region": c, "split": split}
                    if kind == "fracture+region":
                        row["fracture"] = label
                    else:
                        row["class"] = s.view
                    rows.append(row)
        with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root
