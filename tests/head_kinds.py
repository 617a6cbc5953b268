"""Tiny data sets for every head combination a bundle can have, laid out from FracAtlas by
``scripts/fracatlas_as_types.py`` (regions and views stand in for fracture types)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# head combination -> the heads its bundle must have
HEAD_KINDS = {
    "fracture": ("fracture",),
    "fracture+region": ("fracture", "region"),
    "class": ("class",),
    "fracture+class": ("fracture", "class"),
    "class+region": ("class", "region"),
}
LIMIT = {"train": 8, "val": 4, "test": 3}  # images per split, region and fracture label
CLASSES = ("hand", "hip", "leg")

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fracatlas_as_types.py"
_spec = importlib.util.spec_from_file_location("fracatlas_as_types", _SCRIPT)
assert _spec is not None and _spec.loader is not None
layouts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(layouts)
assert tuple(HEAD_KINDS) == layouts.KINDS


def make_dataset(kind: str, fracatlas: Path, root: Path) -> Path:
    """The data of one head combination, in the layout a researcher would have for it."""
    return layouts.write_layout(kind, fracatlas, root, classes=CLASSES, limit=LIMIT)
