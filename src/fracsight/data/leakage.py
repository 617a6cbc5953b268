"""Leakage between a data set's own splits, cheap enough to check before every train and evaluate.

An image of a later split (val, test) whose bytes an earlier split holds too (a copy, the same file
under two names or linked twice), or a patient's or study's images in two splits, lets figures
measured on the later split count images the model trained on (or was chosen on). The check is the
audit's exact-duplicate finder (:func:`~fracsight.data._files.exact_duplicates`: sizes first, only
files of equal size read) and its straddling groups; near-duplicates (same picture, other bytes)
need every image decoded and stay the audit's (``fracsight audit DATA`` lists them all).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fracsight._terminal import shell_command
from fracsight.data._files import content_hash, exact_duplicates, relative_name, split_name
from fracsight.data.sample import Dataset, Sample
from fracsight.data.splits import SPLIT_NAMES, declared_straddling

log = logging.getLogger(__name__)

__all__ = [
    "CONTENT_KEY",
    "DUPLICATES",
    "GROUPS",
    "Leak",
    "SplitLeakage",
    "images_content",
    "images_record",
    "label_conflicts",
    "leakage_effect",
    "recorded_images",
    "refuse_bundle_trained_on",
    "refuse_images_trained_on",
    "same_content",
    "same_data_folder",
    "split_as_trained",
    "split_leakage",
    "trained_images_among",
]

DUPLICATES = "duplicates"  # images with the same bytes as an image of an earlier split
GROUPS = "groups"  # the data set's own groups (patient, study) also in an earlier split
CONTENT_KEY = "images_content_sha256"  # in a checkpoint: images_content of its training and validation images
_TRAINED_ON = ("train", "val")  # what a model has seen: fitted on train, chosen on val


@dataclass(frozen=True)
class Leak:
    """``count`` images (``kind`` DUPLICATES) or groups (GROUPS) of ``split`` that the ``earlier``
    splits share."""

    split: str
    kind: str
    count: int
    earlier: tuple[str, ...]

    def __str__(self) -> str:
        where = " or ".join(self.earlier)
        if self.kind == DUPLICATES:
            are = "image is" if self.count == 1 else "images are"
            return f"{self.count} {self.split} {are} byte-identical to (or the same file as) {where} images"
        groups = "group (patient, study) lies" if self.count == 1 else "groups (patient, study) lie"
        return f"{self.count} {self.split} {groups} in {where} too"


@dataclass(frozen=True)
class SplitLeakage:
    """What :func:`split_leakage` found; false when nothing."""

    leaks: tuple[Leak, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.leaks)

    def __str__(self) -> str:
        return "; ".join(map(str, self.leaks))

    def to_dict(self) -> list[dict[str, Any]]:
        """The leaks as JSON (``bundle.json``'s ``training.leakage``, ``metrics.json``'s ``data.leakage``)."""
        return [asdict(leak) | {"earlier": list(leak.earlier)} for leak in self.leaks]

    @classmethod
    def from_dict(cls, leaks: Sequence[Mapping[str, Any]]) -> SplitLeakage:
        """The leakage :meth:`to_dict` wrote."""
        return cls(tuple(Leak(**{**leak, "earlier": tuple(leak["earlier"])}) for leak in leaks))

    def warning(self, data_dir: object, trained_here: bool = True) -> str:
        """The warning ``train`` and ``evaluate`` print: what leaks, what it does, where the list is.
        ``trained_here`` False: the model measured was trained on other data, which these splits
        cannot flatter (the packaged model on MURA's train/valid)."""
        return f"leakage between the splits of {data_dir}: {self}: {leakage_effect(trained_here)}; " + (
            f"`{shell_command('fracsight', 'audit', data_dir)}` lists them"
        )


def images_record(root: Path, samples: list[Sample]) -> dict[str, Any]:
    """Which images, with which labels and in which split, a run trains and validates on, as
    ``last.pt`` records it: their number and a digest of their paths (relative to the data folder
    ``root``, so that a moved folder is the same images), labels and splits. Without the splits
    (until 2026-12-08) a copy with train and val swapped was the run's own data to ``export
    --data-dir``: calibrated and thresholded on the images the network trained on."""
    return {"images": len(samples), "images_sha256": _images_digest(root, samples, splits=True)}


def _images_digest(root: Path, samples: Sequence[Sample], *, splits: bool) -> str:
    digest = hashlib.sha256()
    lines = (
        f"{_relative(s.path, root)}\t{sorted(s.labels.items())}" + (f"\t{s.split}" if splits else "")
        for s in samples
    )
    for line in sorted(lines):
        digest.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def recorded_images(recorded: str | None, root: Path, samples: list[Sample]) -> bool:
    """Whether ``samples`` are the images whose :func:`images_record` digest a run recorded as
    ``recorded`` (or, for a run recorded before the splits were part of it, the digest it kept)."""
    if recorded is None:
        return False
    return recorded in (
        images_record(root, samples)["images_sha256"],
        _images_digest(root, samples, splits=False),
    )


def images_content(root: Path, samples: Sequence[Sample]) -> str | None:
    """A digest of the bytes of ``samples``' files (in the order of their paths under ``root``):
    two data sets whose file names and labels are alike (two sites' exports numbered the same
    way) passed for one, by :func:`images_record`, to ``--resume`` and ``export --data-dir``.
    None where a file cannot be read now."""
    digest = hashlib.sha256()
    try:
        for sample in sorted(samples, key=lambda s: _relative(s.path, root)):
            digest.update(bytes.fromhex(content_hash(sample.path.read_bytes())))
    except OSError:
        return None
    return digest.hexdigest()


def same_content(recorded: str | None, now: str | None) -> bool:
    """Whether two :func:`images_content` digests allow the same images (None: not known, as in a
    checkpoint from before it was kept)."""
    return recorded is None or now is None or recorded == now


def same_data_folder(recorded: str | os.PathLike[str] | None, root: Path) -> bool:
    """Whether ``root`` is the data folder a run recorded (a relative one: to the working folder).
    There, images of the run's names and labels are its images whatever their bytes (re-anonymised,
    EXIF stripped, re-encoded without loss): their bytes tell apart only another folder's."""
    try:
        return bool(recorded) and Path(recorded).resolve() == root.resolve()  # type: ignore[arg-type]
    except OSError:
        return False


def split_as_trained(dataset: Dataset, seed: int, max_samples: int, trained_sha256: str | None) -> Dataset:
    """``dataset`` as the run that recorded ``trained_sha256`` split it. Class folders' patient
    sub-folders are groups since 2026-12-06, and groups split a set without given splits anew: a
    run trained before then found its own unchanged data "not the data it trained on" (export and
    --resume refused it). Where the split without those groups is the run's, that is the data set
    returned, with a warning; otherwise ``dataset`` as it is."""
    from fracsight.data.splits import train_val_samples, training_subset

    def recorded(data: Dataset) -> bool:
        train, val = train_val_samples(data, seed)
        return recorded_images(trained_sha256, data.root, training_subset(train, max_samples, seed) + val)

    flat = without_folder_groups(dataset)
    if trained_sha256 is None or flat is None or recorded(dataset):
        return dataset
    if not recorded(flat):
        return dataset
    log.warning(SPLIT_BEFORE_FOLDER_GROUPS, dataset.root)
    return flat


SPLIT_BEFORE_FOLDER_GROUPS = (
    "%s: the run trained before class folders' sub-folders were taken as patients (2026-12-06): "
    "its split is kept, in which one patient's images may lie in two splits"
)


def without_folder_groups(dataset: Dataset) -> Dataset | None:
    """Class folders ``dataset`` without the groups its patient sub-folders make (as fracsight read
    them before 2026-12-06); None where it has none."""
    if dataset.layout != "class-folders" or not any(s.group for s in dataset.samples):
        return None
    return dataclasses.replace(
        dataset, samples=tuple(dataclasses.replace(s, group=None) for s in dataset.samples)
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # a labels.csv may name images outside the folder it lies in
        return path.as_posix()


def trained_images_among(
    trained_root: Path,
    layout: str,
    seed: int,
    max_samples: int,
    samples: Sequence[Sample],
    trained_sha256: str | None,
) -> int | None:
    """How many of ``samples`` are, byte for byte, images a run trained on: the training split (and
    subset) of the data set at ``trained_root``, read and split as that run did (``layout``,
    ``seed``, ``max_samples``). None where that cannot be told: the data set is gone, no longer
    reads, or its split is not the run's any more (its :func:`images_record` is not
    ``trained_sha256``: one image added re-splits a set without given splits, and 4 of 8 unseen
    images were called trained on)."""
    from fracsight.data.detect import load_dataset
    from fracsight.data.splits import train_val_samples, training_subset
    from fracsight.errors import DatasetError

    if not trained_root.is_dir() or trained_sha256 is None:
        return None
    quiet = logging.getLogger("fracsight.data")  # the run's data set's notes are not of this data
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # setLevel: a bare attribute left the loggers' cached levels
    try:
        trained_set = load_dataset(trained_root, layout)
        trained_set = split_as_trained(trained_set, seed, max_samples, trained_sha256)
    except DatasetError:
        return None
    finally:
        quiet.setLevel(level)
    seen, val = train_val_samples(trained_set, seed)
    seen = training_subset(seen, max_samples, seed)
    if not recorded_images(trained_sha256, trained_set.root, seen + val):
        return None
    paths = [s.path for s in seen] + [s.path for s in samples]
    return len(
        {i for same in exact_duplicates(paths) if min(same) < len(seen) for i in same if i >= len(seen)}
    )


def refuse_bundle_trained_on(
    training: Mapping[str, Any], root: Path, fitted_on: Sequence[Sample], model: str
) -> None:
    """:func:`refuse_images_trained_on` for a bundle whose ``training`` record names its data: data
    at another place than that (``root``) is other data, whose validation images ``fitted_on`` must
    not be images the network trained on (``quantize --data``, ``detector train --data``)."""
    if not training.get("data") or Path(str(training["data"])).resolve() == Path(root).resolve():
        return
    run = {**training.get("config", {}), "data": training["data"], "layout": training.get("layout")}
    refuse_images_trained_on(run, training.get("images_sha256"), root, fitted_on, model)


def refuse_images_trained_on(
    trained: Mapping[str, Any],
    trained_sha256: str | None,
    root: Path,
    fitted_on: Sequence[Sample],
    model: str,
) -> None:
    """Refuse other data (``root``) whose validation images ``fitted_on`` include images ``model``'s
    network trained on, byte for byte: the training set's `images/` folder read anew, or a copy of it
    with an image added, passed as "other data", and calibration, thresholds and the quantization
    gate were fitted on 5 of 6 trained-on images. ``trained``: the run's data (``data``, ``layout``,
    ``seed``, ``max_samples``). Where that cannot be told (:func:`trained_images_among`), a warning."""
    from fracsight.data.sample import DataMismatchError

    trained_root = Path(str(trained["data"]))
    again = trained_images_among(
        trained_root,
        str(trained.get("layout") or "auto"),
        int(trained.get("seed") or 0),
        int(trained.get("max_samples") or 0),
        fitted_on,
        trained_sha256,
    )
    if again is None:
        if trained_sha256 is None:
            why = "it does not record which images it trained on (made before 2026-12-06)"
        elif not trained_root.is_dir():
            relative = "" if trained_root.is_absolute() else ", recorded relative to where training ran"
            why = f"its training data ({trained_root}{relative}) is not a folder here"
        else:
            why = f"its training data ({trained_root}) has changed since"
        log.warning(
            "could not check whether the validation images of %s are images %s trained on: %s",
            root,
            model,
            why,
        )
    elif again:
        raise DataMismatchError(
            f"{again} of the {len(fitted_on)} validation images of {root} are images {model} trained on "
            f"(the same bytes, in {trained_root}): calibration and thresholds would be fitted on them under "
            "the name of other data. Give data the network has not seen"
        )


def leakage_effect(trained_here: bool) -> str:
    """What a leak does to the figures of the model measured (the warning's words and the report's)."""
    if trained_here:
        return "figures measured on them are inflated"
    # only the folder is known: a copy of the training data elsewhere is not told from other data
    return (
        "the model measured records other training data than this folder, so its figures are "
        "inflated by them only if it saw these images elsewhere (a copy of the data set); a model "
        "trained on its train split would be"
    )


def split_leakage(samples: Sequence[Sample], split: str | None = None) -> SplitLeakage:
    """Images and groups of each split that an earlier one (train, then val, then test, then any
    other name) shares: byte-identical files and the data set's own groups (see the module doc).
    ``split``: only that split's, against train and val (what ``evaluate --split`` measures).
    Samples without a split are left out. ``split`` may be an alias (``valid``, as MURA names it)."""
    if split is not None:  # samples hold the canonical name: `valid` matched none and hid the leak
        split = split_name(split) or split
    earlier = _earlier_splits([s.split for s in samples if s.split is not None], split)
    kept = [s for s in samples if s.split in set(earlier).union(*earlier.values())]
    found: dict[tuple[str, str], list[set[str]]] = defaultdict(list)  # (split, kind) -> splits shared

    def note(name: str, kind: str, splits: set[str]) -> None:
        shared = splits & set(earlier.get(name, ()))
        if shared:
            found[(name, kind)].append(shared)

    for same in exact_duplicates([s.path for s in kept]):
        splits = {kept[i].split for i in same}
        for i in same:
            note(kept[i].split, DUPLICATES, splits)
    for splits in declared_straddling(kept).values():
        for name in splits:
            note(name, GROUPS, splits)
    order = list(earlier)
    leaks = [
        Leak(name, kind, len(shared), tuple(e for e in earlier[name] if any(e in f for f in shared)))
        for (name, kind), shared in found.items()
    ]
    return SplitLeakage(tuple(sorted(leaks, key=lambda leak: (order.index(leak.split), leak.kind))))


def _earlier_splits(present: Sequence[str], split: str | None) -> dict[str, tuple[str, ...]]:
    """Each split to check, with the splits it is checked against (none: not checked)."""
    names = sorted(set(present), key=lambda n: (SPLIT_NAMES.index(n) if n in SPLIT_NAMES else 3, n))
    if split is not None:
        against = tuple(n for n in _TRAINED_ON if n != split and n in names)
        return {split: against} if split in names and against else {}
    return {name: tuple(names[:i]) for i, name in enumerate(names) if i}


def label_conflicts(dataset: Dataset) -> list[list[str]]:
    """Groups of byte-identical images (one picture filed twice) whose labels differ, each image
    named by its path under the data set with its labels, ``leg/x.jpg (leg)``: a model would be
    taught both answers for one picture, and the figures would count one of them wrong whatever it
    says. Found with the exact-duplicate finder, so it costs what the leakage check does."""
    samples = dataset.samples
    conflicts = []
    for same in exact_duplicates([s.path for s in samples]):
        if len({_labels(samples[i], dataset) for i in same}) > 1:
            conflicts.append(
                [
                    f"{relative_name(samples[i].path, dataset.root)} ({_labels(samples[i], dataset)})"
                    for i in same
                ]
            )
    return conflicts


def _labels(sample: Sample, dataset: Dataset) -> str:
    """A sample's labels by name, ``fractured, leg``; ``no label`` for an image without any."""
    names = [dataset.class_names[task][value] for task, value in sample.labels.items()]
    return ", ".join([*names, *sample.regions]) or "no label"
