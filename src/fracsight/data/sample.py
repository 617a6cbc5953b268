"""Typed samples and data sets, the common currency of readers, training and evaluation."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fracsight.data._files import split_name
from fracsight.errors import DatasetError, OutputFolderError

__all__ = [
    "CLASS",
    "FRACTURE",
    "REGION",
    "Box",
    "DataMismatchError",
    "Dataset",
    "Sample",
    "warn_splits_lacking",
]

log = logging.getLogger(__name__)

# Task names used in Sample.labels and model heads.
FRACTURE = "fracture"  # binary: 1 fractured, 0 not
REGION = "region"  # multi-label body region; stored in Sample.regions
CLASS = "class"  # N-class label (e.g. fracture type) from class folders


class DataMismatchError(DatasetError):
    """Data that do not fit a model's heads (labels missing, another meaning of the binary label,
    a class the model does not know): calibrated or trained on them, its probabilities and
    operating points would mean something else. A bad argument: the CLI exits 2."""

    bad_argument = True


class MissingSplitError(DatasetError):
    """A split asked for (``--split``) that the data set does not have: a bad argument, exit 2."""

    bad_argument = True


class SplitLayoutError(DatasetError):
    """Splits no train and val split can be made from (val and test alone, some images without a
    split, too few images to carve them): the user's to correct, exit 2 (it was 1, as for a
    failure, where other data errors were 2)."""

    bad_argument = True


class NotADataFolderError(DatasetError):
    """A data set path that names no folder (nothing there, or a file) or a layout fracsight does
    not know: the user's to correct, so a bad argument, exit 2."""

    bad_argument = True


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in normalized image coordinates (0..1), x0 < x1, y0 < y1."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


@dataclass(frozen=True)
class Sample:
    """One image with whatever labels its data set provides.

    ``labels`` maps a task name (``FRACTURE``, ``CLASS``) to an integer label.
    ``regions`` lists body regions present (multi-label, FracAtlas has overlaps).
    ``group`` ties together images that must never straddle splits
    (near-duplicates, same patient or study).
    """

    path: Path
    labels: dict[str, int] = field(default_factory=dict)
    regions: tuple[str, ...] = ()
    view: str | None = None
    study_id: str | None = None
    group: str | None = None
    split: str | None = None  # "train" | "val" | "test" | None
    boxes: tuple[Box, ...] = ()

    @property
    def image_id(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Dataset:
    """A folder read into samples, with the layout that was detected.

    ``class_names`` maps a task to its class names in label order, e.g.
    ``{"fracture": ("not fractured", "fractured"), "region": ("hand", ...)}``.
    """

    root: Path
    layout: str  # "fracatlas" | "class-folders" | "mura" | "labels-csv"
    samples: tuple[Sample, ...]
    class_names: dict[str, tuple[str, ...]]

    def split(self, name: str) -> tuple[Sample, ...]:
        """The samples of split ``name``; aliases read as the readers store them (``valid`` -> ``val``).
        A name that is no split (``"tset"``) is a :class:`MissingSplitError`, not an empty split."""
        if not isinstance(name, str):
            raise TypeError(f"a split is named by a str (train, val, test), not {type(name).__name__}")
        canonical = split_name(name)
        if canonical is None:
            raise MissingSplitError(
                f"{self.root} has no {name!r} split (not a split name: train, val or test); "
                f"it has {list(self.splits) or 'none'}"
            )
        return tuple(s for s in self.samples if s.split == canonical)

    def refuse_output_inside(self, out: Path, option: str = "--out") -> None:
        """Refuse an output folder inside a data set whose images are found by scanning its folders
        (FracAtlas, MURA, class folders): the next read would take the output's images for the data
        set's (in class folders the folder for a class), or warn about each of its files. A
        labels.csv set names its images in the list, which an output beside them does not change:
        it stays allowed."""
        if self.layout == "labels-csv":
            return
        root, target = self.root.resolve(), Path(out).resolve()
        # and every folder the scan found images in, where it leads: a class folder linked in from
        # elsewhere took the report's plots for fractured radiographs at the next read
        scanned = {root, *(folder.resolve() for folder in {s.path.parent for s in self.samples})}
        if not any(target == folder or folder in target.parents for folder in scanned):
            return
        if self.layout == "class-folders":
            raise OutputFolderError(
                f"{option} {out} is inside the class-folder data set {self.root}: the next time it is "
                "read, the folder would be taken for a class, the images in it for the data set's; choose "
                "a folder outside the data set"
            )
        raise OutputFolderError(
            f"{option} {out} is inside the {self.layout} data set {self.root}, whose images are found by "
            "scanning its folders: the next time it is read, its files would be taken for the data "
            "set's; choose a folder outside the data set"
        )

    def refuse_other_binary_label(self, fracture: Sequence[str], instead: str) -> None:
        """Refuse (:class:`DataMismatchError`) data whose binary label is named otherwise than
        ``fracture``, the classes a model's fracture head was trained on (normal/abnormal against
        not fractured/fractured): fitted to them, the head would be made to find what it was not
        trained to find, under its own name. ``instead``: what to do instead, which ends the
        message. A model without a fracture head (``fracture`` empty), or data that do not name
        their binary label, are not refused."""
        named = tuple(self.class_names.get(FRACTURE, ()))
        if not fracture or not named or named == tuple(fracture):
            return
        raise DataMismatchError(
            f"{self.root}'s binary label is {'/'.join(named)}, but the model's fracture head was trained "
            f"on {'/'.join(fracture)}: fitted to these labels, its probability and operating points would "
            f"be about finding {named[1]!r}, which it was not trained to find; {instead}"
        )

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(sorted({s.split for s in self.samples if s.split}))


def warn_splits_lacking(samples: Iterable[Sample], task: str, names: Sequence[str], what: str) -> None:
    """Warn of each split (given by the data set) that has no sample of some of ``task``'s classes
    ``names``: a class no training image has is one the head never learns, one no test image has is
    never measured. ``what`` names them in the warning ("class(es)", "fracture type(s)")."""
    given: dict[str, set[int]] = {}  # every split, also one whose samples carry no such label
    for sample in samples:
        if sample.split is not None:
            present = given.setdefault(sample.split, set())
            if task in sample.labels:
                present.add(sample.labels[task])
    for split, present in sorted(given.items()):
        lacking = [name for i, name in enumerate(names) if i not in present]
        if lacking:  # the first ten: a type set of 300 classes listed every one of them
            more = f" and {len(lacking) - 10} more" if len(lacking) > 10 else ""
            log.warning("split %r lacks %s %s%s", split, what, ", ".join(lacking[:10]), more)
