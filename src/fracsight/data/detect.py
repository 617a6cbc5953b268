"""Which data set layout a folder holds, and the one front door that reads it.

Rules, tried in this order on the folder given:

1. ``fracatlas``: ``dataset.csv`` and an ``images/`` folder.
2. ``mura``: ``XR_<PART>`` folders, directly or under ``train/`` / ``valid/``.
2b. ``labels-csv``: a ``labels.csv`` naming each image and its labels.
3. If none matched and the folder holds nothing but one visible sub-folder (the
   wrapper an archive often unpacks into) that is not a split folder, look inside it
   instead (up to 3 levels).
4. ``class-folders``: sub-folders with images, directly (``<class>/``) or under split
   folders (``train|val|valid|test/<class>/``).

Anything else raises :class:`DatasetError` saying what was expected.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from fracsight._terminal import shell_command
from fracsight.data._files import is_hidden, is_image_file, split_name, visible_dirs
from fracsight.data.folders import is_class_folders, read_class_folders
from fracsight.data.fracatlas import is_fracatlas, read_fracatlas
from fracsight.data.labels_csv import is_labels_csv, read_labels_csv
from fracsight.data.leakage import label_conflicts
from fracsight.data.mura import is_mura, mura_piece, read_mura
from fracsight.data.sample import Dataset, NotADataFolderError

__all__ = ["LAYOUTS", "detect_layout", "find_layout", "load_dataset"]

log = logging.getLogger(__name__)

_SHOWN = 10  # conflicting duplicates named in the warning; the audit lists them all

_Reader = Callable[[Path], Dataset]
_Check = Callable[[Path], bool]

# name -> (check, reader, what the layout looks like); detection tries them in this order.
LAYOUTS: dict[str, tuple[_Check, _Reader, str]] = {
    "fracatlas": (is_fracatlas, read_fracatlas, "dataset.csv + images/Fractured|Non_fractured/*.jpg"),
    "mura": (is_mura, read_mura, "[train|valid/]XR_<PART>/patient<ID>/study<N>_<positive|negative>/*.png"),
    "labels-csv": (
        is_labels_csv,
        read_labels_csv,
        "labels.csv (image, and any of fracture, class, region, split, group) + the images it names",
    ),
    "class-folders": (
        is_class_folders,
        read_class_folders,
        "<class>/<image> or <train|val|test>/<class>/<image>",
    ),
}
_WRAPPER_DEPTH = 3


def _expected() -> str:
    return "; ".join(f"{name} ({hint})" for name, (_, _, hint) in LAYOUTS.items())


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise NotADataFolderError(f"{root} does not exist")
    if not root.is_dir():
        raise NotADataFolderError(f"{root} is not a folder; give the data set's top folder")
    # a run or a bundle given as data: its report folders were read as classes ("found
    # ['evaluation-test']") after warnings naming its CSVs as images not read
    # (by two files each: a data set may keep a detector's best.pt at its top, as Ultralytics does)
    for markers, what in (
        (("bundle.json", "model.onnx"), "a model bundle"),
        (("best.pt", "config.yaml"), "a training run"),
    ):
        if all((root / marker).is_file() for marker in markers):
            raise NotADataFolderError(f"{root} is {what}, not a data set; give the data set's top folder")


def find_layout(root: str | os.PathLike[str]) -> tuple[str, Path]:
    """``(layout name, folder that holds it)``; the folder differs from ``root`` only for wrappers."""
    root = Path(root)
    _check_folder(root)
    current = root
    for _ in range(_WRAPPER_DEPTH + 1):
        for name in ("fracatlas", "mura", "labels-csv"):
            if LAYOUTS[name][0](current):
                return name, current
        subdirs = visible_dirs(current)
        has_files = any(is_image_file(p) or p.suffix.lower() == ".csv" for p in current.iterdir())
        if len(subdirs) != 1 or has_files or split_name(subdirs[0].name):
            break
        current = subdirs[0]
    for folder in (root, current):  # root first: a body part of one patient reads as a wrapper
        if said := mura_piece(folder):
            raise NotADataFolderError(said)
    for folder in (current, root):  # root: one class folder alone, which reads as a wrapper
        if is_class_folders(folder):
            return "class-folders", folder
    if not any(True for _ in root.iterdir()):
        raise NotADataFolderError(f"{root} is empty; expected one of: {_expected()}")
    raise NotADataFolderError(
        f"{root} is not a data set layout fracsight knows; expected one of: {_expected()}{_hint(current)}"
    )


def _hint(folder: Path) -> str:
    """What the folder holds instead, where it says what went wrong: names with backslashes (an
    archive made on Windows, unpacked by a tool that kept them as names), images without labels."""
    files = [p for p in folder.iterdir() if not is_hidden(p) and p.is_file()]
    flat = sorted(p.name for p in files if "\\" in p.name)
    if flat:
        return (
            f". {len(flat)} file name(s) there hold backslashes ({flat[0]!r}): an archive made on Windows "
            "unpacked with its folders as part of the names; unpack it with `unzip` or 7-Zip, which make "
            "the folders"
        )
    images = [p for p in files if is_image_file(p)]
    if images:
        return (
            f". It holds {len(images)} image(s) directly but no labels: sort them into class folders "
            "(<class>/<image>) or name them in a labels.csv"
        )
    for split in (d for d in visible_dirs(folder) if split_name(d.name)):  # train/*.png, no class folders
        inside = [p for p in split.iterdir() if not is_hidden(p) and p.is_file() and is_image_file(p)]
        if inside:
            return (
                f". {split.name}/ holds {len(inside)} image(s) directly but no class folders: sort them "
                f"into {split.name}/<class>/<image> or name them in a labels.csv"
            )
    return ""


def detect_layout(root: str | os.PathLike[str]) -> str:
    """Name of the layout in ``root``: fracatlas, mura, labels-csv or class-folders."""
    return find_layout(_folder(root))[0]


def _folder(root: str | os.PathLike[str]) -> Path:
    """``root`` as a Path; an empty one refused: Path("") is the current folder, and an unset
    variable loaded whatever folder the command ran in as a data set."""
    if not os.fspath(root):
        raise NotADataFolderError("an empty path: name a data folder")
    return Path(root)


def load_dataset(root: str | os.PathLike[str], layout: str = "auto") -> Dataset:
    """Read a data set folder into a :class:`Dataset`.

    ``layout="auto"`` detects it (see this module's rules); naming one skips detection.
    The result tells what was found in ``Dataset.layout``. Splits are those on disk or in
    the csv; a data set without one has ``split=None`` everywhere (see
    :func:`fracsight.data.ensure_splits`).

    >>> ds = load_dataset(Path("../shared/data/fracatlas"))  # doctest: +SKIP
    >>> ds.layout, len(ds.samples), len(ds.split("val"))  # doctest: +SKIP
    ('fracatlas', 3232, 329)
    """
    root = _folder(root)
    if layout == "auto":
        layout, root = find_layout(root)
    elif layout not in LAYOUTS:
        raise NotADataFolderError(f"unknown layout {layout!r}; known: auto, {', '.join(LAYOUTS)}")
    else:
        _check_folder(root)
        check, _, hint = LAYOUTS[layout]
        if not check(root):
            raise NotADataFolderError(f"{root} is not a {layout} folder; expected {hint}")
    dataset = LAYOUTS[layout][1](root)
    _warn_label_conflicts(dataset)
    return dataset


def _warn_label_conflicts(dataset: Dataset) -> None:
    """Warn (as the readers warn, so ``train``, ``evaluate`` and ``audit`` show it) about one picture
    filed under two labels: a copy in two class folders, or two labels.csv rows for its copies."""
    conflicts = label_conflicts(dataset)
    if not conflicts:
        return
    shown = "; ".join(" = ".join(group) for group in conflicts[:_SHOWN])
    more = f" and {len(conflicts) - _SHOWN} more" if len(conflicts) > _SHOWN else ""
    log.warning(
        "%d picture(s) in %s are filed more than once (the same bytes) with different labels: %s%s: a model "
        "trained on them learns both labels for one picture, and its figures count one of them wrong; "
        "keep the copy with the right label (`%s` lists every duplicate)",
        len(conflicts),
        dataset.root,
        shown,
        more,
        shell_command("fracsight", "audit", dataset.root),
    )
