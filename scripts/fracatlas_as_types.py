"""Lay FracAtlas out as a fracture-type data set would be, for every head combination.

FracAtlas has no fracture types; its body regions (and views) stand in for them, so the
folders and csv files below are exactly what a researcher's own type data looks like.
Images are linked (symlinks to the original files), never copied. Only images of a single
region among ``--classes`` and a frontal or lateral view are used; FracAtlas's own splits
are kept.

    python scripts/fracatlas_as_types.py ../shared/data/fracatlas data/types --kind class

Kinds (the heads a model trained on the result gets):

- ``fracture``: ``<split>/fractured|not fractured/`` (Kaggle-style binary folders);
- ``class``: ``<split>/<region>/`` (fracture-type class folders);
- ``fracture+class``: ``<split>/Fractured/<region>/`` next to ``<split>/Non_fractured/``;
- ``fracture+region`` and ``class+region``: ``images/`` + ``labels.csv`` (for
  ``class+region`` the class is the view, frontal or lateral).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from fracsight.data import FRACTURE, Sample, load_dataset

KINDS = ("fracture", "fracture+region", "class", "fracture+class", "class+region")
SPLITS = ("train", "val", "test")


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src.resolve())


def _groups(fracatlas: Path, classes: tuple[str, ...], limit: dict[str, int] | None) -> dict:
    """(split, region, fracture label) -> samples, in file order, at most ``limit[split]`` each."""
    groups: dict[tuple[str, str, int], list[Sample]] = {}
    for s in load_dataset(fracatlas).samples:
        if len(s.regions) == 1 and s.regions[0] in classes and s.view in ("frontal", "lateral"):
            group = groups.setdefault((s.split, s.regions[0], s.labels[FRACTURE]), [])
            if limit is None or len(group) < limit[s.split]:
                group.append(s)
    return groups


def write_layout(
    kind: str,
    fracatlas: Path,
    out: Path,
    *,
    classes: tuple[str, ...] = ("hand", "hip", "leg", "shoulder"),
    limit: dict[str, int] | None = None,
) -> Path:
    """Write the ``kind`` layout into ``out`` (a new folder); ``limit``: most images per
    split, region and fracture label."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out.mkdir(parents=True)
    rows = []
    for (split, region, label), samples in sorted(_groups(fracatlas, classes, limit).items()):
        for s in samples:
            name = s.path.name
            if kind == "fracture":
                _link(s.path, out / split / ("fractured" if label else "not fractured") / name)
            elif kind == "class":
                _link(s.path, out / split / region / name)
            elif kind == "fracture+class":
                _link(s.path, out / split / (f"Fractured/{region}" if label else "Non_fractured") / name)
            else:
                _link(s.path, out / "images" / name)
                row = {"image": f"images/{name}", "region": region, "split": split}
                row.update({"fracture": str(label)} if kind == "fracture+region" else {"class": s.view})
                rows.append(row)
    if rows:
        with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fracatlas", type=Path)
    parser.add_argument("out", type=Path, help="a new folder")
    parser.add_argument("--kind", choices=KINDS, default="class")
    parser.add_argument("--classes", default="hand,hip,leg,shoulder", help="regions standing in for types")
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists; give a new folder")
    write_layout(args.kind, args.fracatlas, args.out, classes=tuple(args.classes.split(",")))
    print(f"{args.kind} layout written to {args.out}")


if __name__ == "__main__":
    main()
