"""Evaluate a model bundle on a data set: predict every image, then metrics, plots and report.

This is what ``fracsight evaluate MODEL DATA_DIR`` runs. Predictions go through
the same :class:`~fracsight.inference.Predictor` users run, so the numbers
describe the shipped ONNX model, not a training-time copy of it.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from fracsight._files import REPORT_SCRATCH, keep_permissions
from fracsight._terminal import shell_command
from fracsight.data import (
    CLASS,
    FRACTURE,
    DataMismatchError,
    Dataset,
    MissingSplitError,
    Sample,
    SplitLayoutError,
    ensure_splits,
    load_dataset,
    split_keys,
)
from fracsight.data._files import canonical_split, exact_duplicates, name_key, relative_name, split_name
from fracsight.data.leakage import (
    SPLIT_BEFORE_FOLDER_GROUPS,
    SplitLeakage,
    leakage_effect,
    split_as_trained,
    split_leakage,
    without_folder_groups,
)
from fracsight.errors import ConfigError, DatasetError, OutputFolderError

if TYPE_CHECKING:
    from fracsight.bundle import BundleSpec
    from fracsight.evaluation.report import PositiveWords

__all__ = [
    "EvaluationArgumentError",
    "check_bootstrap",
    "evaluate_model",
    "positive_label",
    "select_samples",
    "unread_names",
]

log = logging.getLogger(__name__)


class EvaluationArgumentError(ConfigError):
    """An option the model cannot be evaluated with (``--threshold`` for a model without a
    fracture head): a bad argument, exit 2."""

    bad_argument = True


def check_bootstrap(n_bootstrap: object) -> int:
    """The number of bootstrap resamples: 0 draws no intervals (quick figures); fewer than 100 would
    give percentile intervals too rough to state (a report said "95% CI 0.647-0.907" from 3)."""
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise EvaluationArgumentError(
            f"bootstrap resamples must be a whole number, 0 or more: {n_bootstrap!r}"
        )
    if 0 < n_bootstrap < 100:
        raise EvaluationArgumentError(
            f"{n_bootstrap} resamples are too few for intervals: give 0 (none) or 100 or more"
        )
    return n_bootstrap


def unread_names(failed: Sequence[Mapping[str, Any]], listed_in: str, shown: int = 5) -> str:
    """The images of an evaluation that could not be read (its ``failed``), the first ``shown`` by
    name and error code, the rest counted as ``listed_in`` names them: said wherever its figures
    are, which leave them out."""
    named = ", ".join(f"{f['source']} ({f['error_code']})" for f in failed[:shown])
    return named + (f" and {len(failed) - shown} more ({listed_in})" if len(failed) > shown else "")


def select_samples(dataset: Dataset, split: str | None, trained_seed: int | None = None) -> list[Sample]:
    """The samples of ``split`` ("all" or None: every sample). For the data set a model was trained
    on (``trained_seed``: its run's seed), a split the data set lacks is the one training carved out
    of it (:func:`~fracsight.data.ensure_splits`), so the model is measured on the images it never
    saw; any other data set must have the split."""
    return _select(dataset, split, trained_seed)[0]


# what to do about a split another data set lacks, by the option that asked for it
MISSING_SPLIT_FIX = {
    "--split": "measure all of it with --split all",
    "--evaluate": "--evaluate a split it has, or leave --evaluate out",
}


def _select(
    dataset: Dataset,
    split: str | None,
    trained_seed: int | None,
    carved: Dataset | None = None,
    option: str = "--split",
) -> tuple[list[Sample], Dataset | None]:
    """:func:`select_samples`, and the split the training run made of ``dataset``: ``carved`` when
    given, else made here where it is needed (None where it was not): making it hashes duplicate
    candidates, slow on a big data set, so it is made once and handed on. ``option``: the command's
    option that named ``split`` (a key of ``MISSING_SPLIT_FIX``), which the error's hint names."""
    if split in (None, "all"):
        return list(dataset.samples), carved
    unsplit = [s.image_id for s in dataset.samples if s.split is None]
    if unsplit and len(unsplit) < len(dataset.samples):  # they would silently be in no split
        raise SplitLayoutError(
            f"{dataset.root}: some samples have a split and some do not ({len(unsplit)} without one, "
            f"e.g. {', '.join(unsplit[:3])}); give each a split, or measure all of it with --split all"
        )
    made = dataset
    if trained_seed is not None:
        made = carved = carved or ensure_splits(dataset, seed=trained_seed)
    chosen = list(made.split(split))
    if not chosen:
        # fracsight knows the data the model trained on by its folder: a copy elsewhere is taken for
        # other data, and --split all would then score the training images without a word
        hint = (
            f" (a data set the model was not trained on: {MISSING_SPLIT_FIX[option]}; if it is the "
            "model's own training data in another folder, give the folder it trained on, where the "
            "split it trained with is carved again)"
        )
        raise MissingSplitError(
            f"{dataset.root} has no {split!r} split; it has {list(made.splits) or 'none'}"
            + (hint if trained_seed is None else "")
        )
    return chosen, carved


def positive_label(dataset: Dataset, predictor: Any) -> str:
    """What the data call a positive image (MURA's "abnormal"), else what the model's fracture head
    does: the word every count of positive images is said in."""
    names = dataset.class_names.get(FRACTURE) or predictor.spec.head("fracture").classes
    return str(names[-1])


def _run_seed(spec: Any) -> int:
    """The seed of the training run of a bundle's model, which its split of the data was made with."""
    return int(spec.training.get("config", {}).get("seed", 0))


def _names_data_dir(spec: Any, data_dir: Path, root: Path) -> bool | None:
    """Whether the bundle's ``training.data`` names ``data_dir`` or ``root``, the folder the data set
    was read from (:attr:`Dataset.root`: the inner folder where ``data_dir`` is the wrapper an
    archive unpacks into, ``mura`` holding ``MURA-v1.1/``; training records that one): None for a
    relative path that either ends in (an older bundle's), which only the split counts can tell."""
    recorded = spec.training.get("data")
    if not recorded:
        return False
    try:
        path, here = Path(recorded), {data_dir.resolve(), Path(root).resolve()}
        if path.resolve() in here:  # absolute, or relative to this working folder (the shipped bundles')
            return True
    except OSError:  # run from a working folder that was deleted: only the split counts can tell
        return None
    # what a relative path names wherever it was typed: `../shared/data/fracatlas` ends in
    # shared/data/fracatlas (its `..` never matched, and the shipped bundles' training data was
    # not recognised outside the folder they were made in)
    tail = path.parts
    while tail and tail[0] in (".", ".."):
        tail = tail[1:]
    if path.is_absolute() or not tail or all(h.parts[-len(tail) :] != tail for h in here):
        return False
    return None


def training_data_around(spec: Any, data_dir: Path) -> Path | None:
    """The folder the model of ``spec`` was trained on where ``data_dir`` lies inside it (``cfs/train``
    of ``cfs``), as its ``training.data`` names it; None otherwise."""
    recorded = spec.training.get("data")
    if not recorded:
        return None
    try:
        outer, inner = Path(recorded).resolve(), data_dir.resolve()
        return outer if outer in inner.parents and outer.is_dir() else None
    except OSError:
        return None


def inside_training_data_note(spec: Any, data_dir: Path, samples: Sequence[Sample]) -> str | None:
    """A note for images of ``data_dir``, a folder inside the data set the model was trained on,
    that were in its training run's train or validation split (``evaluate cfs/train --split all``
    scored the training images without a word: only the very folder it trained on was known);
    None where there are none, or where the data set cannot be read as it was."""
    outer = training_data_around(spec, data_dir)
    if outer is None:
        return None
    before = logging.root.manager.disable  # its readers' warnings would seem said of the data given
    logging.disable(logging.WARNING)
    try:
        carved = _run_split(load_dataset(outer), spec, _run_seed(spec))
    except DatasetError:
        return None
    finally:
        logging.disable(before)
    if not Path(spec.training["data"]).is_absolute() and not _split_as_recorded(spec, carved):
        return None  # relative to a folder the bundle does not record: maybe another data set
    seen_paths = {s.path.resolve() for s in carved.samples if canonical_split(s.split) in ("train", "val")}
    seen = sum(s.path.resolve() in seen_paths for s in samples)
    if not seen:
        return None
    measure = shell_command("fracsight", "evaluate", "MODEL", outer, "--split", "test")
    return (
        f"{seen} of these {len(samples)} images were in the train or validation split of the model's "
        f"training run: {data_dir} lies inside {outer}, the data set it was trained on; these numbers "
        f"flatter it; `{measure}` measures it on the images it held out"
    )


def is_training_data(spec: Any, data_dir: Path, dataset: Dataset, carved: Dataset | None = None) -> bool:
    """Whether ``data_dir`` (read as ``dataset``) is the data set the model of ``spec`` (a
    :class:`~fracsight.bundle.BundleSpec`) was trained on, as its ``training.data`` records it.
    Bundles of older fracsight versions recorded the path as typed, relative to a working folder
    they did not record: such a path is taken to name ``data_dir`` when it ends ``data_dir`` and
    the training run's split of ``dataset`` has as many train and validation images as the bundle
    records (:func:`relative_data_note` says so): a folder merely called ``data`` is not enough.
    ``carved``: that split, where it was made already (:func:`~fracsight.data.ensure_splits` with the
    run's seed), so that it is not made again."""
    named = _names_data_dir(spec, data_dir, dataset.root)
    if named is not None:
        return named
    return _split_as_recorded(spec, carved or ensure_splits(dataset, seed=_run_seed(spec)))


_SEEN_BY_MODEL = {
    "all": "all of the data set the model was trained on, its training and validation images included",
    "train": "the 'train' split of the data set the model was trained on, the images it was trained on",
    "val": "the 'val' split of the data set the model was trained on, the images its checkpoint, "
    "calibration and thresholds were chosen on",
}
# a model whose calibration and thresholds were fitted on other data (calibrated_on): its own val
# split chose its checkpoint only
_VAL_CHOSE_CHECKPOINT = (
    "the 'val' split of the data set the model was trained on, the images its checkpoint was chosen on"
)


def seen_by_model(split: str | None, spec: Any = None) -> str | None:
    """What a ``split`` of a model's own data set holds of what its training saw (``all``, ``train``,
    ``val``), for the note that its figures flatter it (``evaluate``, ``compare``); None for a
    held-out split. ``spec``: the bundle's, whose calibration may have been fitted on other data
    (``training.calibration_data``): its own val split then chose the checkpoint only."""
    named = "all" if split in (None, "all") else split_name(split) or ""
    if named == "val" and spec is not None and calibrated_on(spec):
        return _VAL_CHOSE_CHECKPOINT
    trained = spec.training.get("n_train") if spec is not None else None
    if named == "train" and trained and (spec.training.get("config") or {}).get("max_samples"):
        # `--set max_samples=N`: N of the split were trained on, not every image measured
        return (
            f"the 'train' split of the data set the model was trained on, {trained} of whose images "
            "it was trained on (max_samples)"
        )
    return _SEEN_BY_MODEL.get(named)


def calibrated_on(spec: Any) -> str | None:
    """The data a bundle's calibration and operating points were fitted on where it is not the data
    its network was trained on: ``quantize --data``'s (``metrics.quantization``, ``other_data``),
    else ``export --data-dir``'s (``training.calibration_data``); None where they are the same."""
    quantized = spec.metrics.get("quantization") or {}
    if quantized.get("other_data") and quantized.get("data"):
        return str(quantized["data"])
    return (spec.training.get("calibration_data") or {}).get("data")


def calibration_data_note(spec: Any, data_dir: Path, dataset: Dataset, split: str | None) -> str | None:
    """The note for a bundle calibrated on other data than its network's (:func:`calibrated_on`)
    measured on that data's val split (or all of it): its calibration and operating points were
    fitted on these images, and nothing said so (the images are not its training data)."""
    calibrated = calibrated_on(spec)
    named = "all" if split in (None, "all") else split_name(split)
    if not calibrated or named not in ("val", "all"):
        return None
    with contextlib.suppress(OSError):
        if Path(calibrated).resolve() in {Path(data_dir).resolve(), Path(dataset.root).resolve()}:
            return (
                f"measured on {'the val split' if named == 'val' else 'all'} of the data the model's "
                "calibration and operating points were fitted on (export --data-dir, quantize --data): "
                "its calibration and the operating points' figures flatter it; measure on other images"
            )
    return None


def _split_as_recorded(spec: Any, carved: Dataset) -> bool:
    """Whether the train and validation splits the run's seed made (``carved``) have as many
    images as the bundle records (``training.n_train`` / ``n_val``). ``n_train`` counts the images
    trained on: with ``max_samples`` N, at most N of the train split (every such run was said to
    have a split that "differs from the training run's")."""
    counts = [len(carved.split(name)) for name in ("train", "val")]
    max_samples = int(spec.training.get("config", {}).get("max_samples") or 0)
    if max_samples:
        counts[0] = min(counts[0], max_samples)
    return counts == [spec.training.get("n_train"), spec.training.get("n_val")]


def relative_data_note(
    spec: Any, data_dir: Path, dataset: Dataset, carved: Dataset | None = None, *, packaged: bool = False
) -> str | None:
    """What :func:`is_training_data` assumed of a bundle that records its data set by a relative
    path; None for a bundle that records it in full, or when nothing was assumed. ``packaged``:
    a model shipped with fracsight, which the user cannot export again (said as the project's
    own place for its data, and only when the folder given is not that place as written)."""
    if _names_data_dir(spec, data_dir, dataset.root) is not None:
        return None
    if not is_training_data(spec, data_dir, dataset, carved):
        return None
    if packaged:
        return (
            f"this packaged model records its training data as {spec.training['data']!r}, the project's "
            f"place for it: taken to be {data_dir.resolve()}, which ends in it and splits into as many "
            "train and validation images as the model records"
        )
    return (
        f"the bundle records its training data as the relative path {spec.training['data']!r} (relative "
        f"to a folder it does not record): taken to be {data_dir.resolve()}, which ends in it and splits "
        "into as many train and validation images as the bundle records; export the run again to record "
        "it in full"
    )


class HeldOut(NamedTuple):
    """What :func:`held_out_samples` chose, and what it found on the way: the run's ``seed``,
    whether the data set is the one the model trained on (``own``) and the split its run made of
    it (``carved``; None where none was needed)."""

    samples: list[Sample]
    seed: int
    own: bool
    carved: Dataset | None


def held_out(
    dataset: Dataset, split: str | None, spec: Any, data_dir: Path, option: str = "--split"
) -> HeldOut:
    """:func:`held_out_samples` with what it found on the way (:class:`HeldOut`), making the run's
    split of ``dataset`` at most once."""
    seed = _run_seed(spec)
    named = _names_data_dir(spec, data_dir, dataset.root)
    if named is None:
        carved = _run_split(dataset, spec, seed)
        own = _split_as_recorded(spec, carved)
    else:
        own = named
        carved = _run_split(dataset, spec, seed) if named and split not in (None, "all") else None
    try:
        samples, carved = _select(dataset, split, seed if own else None, carved, option)
    except MissingSplitError:
        outer = None if own else training_data_around(spec, data_dir)
        if outer is None:
            raise
        measure = shell_command("fracsight", "evaluate", "MODEL", outer, "--split", str(split))
        raise MissingSplitError(  # "measure all of it with --split all" scored the training images
            f"{dataset.root} has no {split!r} split: it lies inside {outer}, the data set the model was "
            f"trained on; `{measure}` measures on its {split!r} split, as the training run made it"
        ) from None
    return HeldOut(samples, seed, own, carved)


def _run_split(dataset: Dataset, spec: Any, seed: int) -> Dataset:
    """The split the model's training run made of ``dataset``: a run from before class folders'
    sub-folders were patients (2026-12-06) split them without those groups, which the bundle's
    train/validation counts tell (evaluate measured on another carved test split than its own), or,
    better, the digest of its images a bundle records (counts alone coincide where most patients
    have one image: 11 of 14 test images were trained on, unsaid)."""
    recorded = spec.training.get("images_sha256")
    if recorded:
        max_samples = int(spec.training.get("config", {}).get("max_samples") or 0)
        return ensure_splits(split_as_trained(dataset, seed, max_samples, recorded), seed=seed)
    carved = ensure_splits(dataset, seed=seed)
    flat = None if _split_as_recorded(spec, carved) else without_folder_groups(dataset)
    if flat is not None and _split_as_recorded(spec, carved_flat := ensure_splits(flat, seed=seed)):
        log.warning(SPLIT_BEFORE_FOLDER_GROUPS, dataset.root)
        return carved_flat
    return carved


def held_out_advice(held: HeldOut, dataset: Dataset) -> str:
    """The advice closing the note that a model is measured on images its training saw
    (``evaluate``, ``compare``): measure on ``test``, or, where the data set has none (none of
    its own, and too few patients or studies for fracsight to carve one), give it one. The run's
    split of ``dataset`` is made here where choosing the images did not need it (``--split all``)."""
    if "test" in (held.carved or ensure_splits(dataset, seed=held.seed)).splits:
        return "measure on the held-out images with --split test"
    return (
        "the data set has no test split (none of its own, and too few patients or studies to carve "
        "one out of train): give it one to measure the model on images it never saw"
    )


def held_out_samples(
    dataset: Dataset, split: str | None, spec: Any, data_dir: Path, option: str = "--split"
) -> tuple[list[Sample], int]:
    """:func:`select_samples` for the model of ``spec`` (a :class:`~fracsight.bundle.BundleSpec`):
    on the data set it was trained on (:func:`is_training_data`), a missing split is the one its
    training run's seed carved out. Returns the samples and that seed. ``option``: the command's
    option that named ``split``, which a missing split's error names (``MISSING_SPLIT_FIX``)."""
    held = held_out(dataset, split, spec, data_dir, option)
    return held.samples, held.seed


def true_boxes(sample: Sample, prediction: Any) -> list[tuple[float, float, float, float]]:
    """A sample's annotated boxes in pixels of the image its prediction was made on, as shown
    (EXIF orientation applied: FracAtlas's COCO sizes are those of the turned image)."""
    from fracsight.explain import denormalize_box

    h, w = prediction.image_size
    return [denormalize_box((b.x0, b.y0, b.x1, b.y1), (h, w)) for b in sample.boxes]


def _localization(samples: list[Sample], preds: list[Any]) -> dict[str, Any] | None:
    """Box metrics: over the fractured images with true boxes (the detector's view), and over
    every image with a known fracture label (a box on a normal image is a false positive)."""
    from fracsight.explain import average_precision_boxes, average_precision_boxes_coco, hit_rate

    pairs = list(zip(samples, preds, strict=True))
    boxed = [bool(s.boxes) and s.labels.get(FRACTURE) == 1 for s in samples]
    fractured = [pair for pair, b in zip(pairs, boxed, strict=True) if b]
    if not fractured:
        return None
    trues = [true_boxes(s, p) for s, p in fractured]
    boxes = [list(p.boxes) for _, p in fractured]
    # fractured images without box annotations cannot be scored either way: left out. A normal
    # image has no true box whatever its annotation says (FracAtlas's IMG0003298 is labelled not
    # fractured yet has a box): every box on it is a false positive, as the definition says
    scored = [(s, p) for (s, p), b in zip(pairs, boxed, strict=True) if b or s.labels.get(FRACTURE) == 0]
    all_trues = [true_boxes(s, p) if s.labels.get(FRACTURE) == 1 else [] for s, p in scored]
    normal_boxed = sum(1 for s, _ in scored if s.labels.get(FRACTURE) == 0 and s.boxes)
    all_boxes = [list(p.boxes) for _, p in scored]
    return {
        "n_images": len(fractured),
        **hit_rate(boxes, trues, iou_thr=0.1).to_dict(),
        "ap50": average_precision_boxes(boxes, trues, iou_thr=0.5),
        "ap50_95": average_precision_boxes_coco(boxes, trues),
        "ap10": average_precision_boxes(boxes, trues, iou_thr=0.1),
        "n_images_all": len(scored),
        "ap50_all": average_precision_boxes(all_boxes, all_trues, iou_thr=0.5),
        "ap50_95_all": average_precision_boxes_coco(all_boxes, all_trues),
        "n_normal_images_with_true_boxes": normal_boxed,
        "definition": "top box = highest-scoring predicted box; a hit overlaps a true box at IoU >= 0.1 or "
        "contains its centre; AP over all predicted boxes (COCO's ranking and matching, all-point "
        "interpolation rather than COCO's 101 recall points), AP50_95 the mean over IoU 0.50:0.05:0.95; "
        "*_all: over the normal images too, their boxes counted as false positives (fractured images "
        "without box annotations are left out of both; box annotations on images labelled normal are "
        "ignored); an image without a predicted box is a miss for the hit rate",
    }


_GRID_SLOTS = 16  # thumbnails in the sample grid: 4 rows of 4


class GridContent(NamedTuple):
    """What :func:`_sample_grid` draws: the samples (indices) with one title each, the labels and
    predictions its borders compare (None without labels), the labelled groups as ``(heading,
    number of thumbnails)`` in order (empty: one plain grid), what it shows and what it counted."""

    order: list[int]
    titles: list[str]
    labels: list[int] | None
    predicted: list[int] | None
    sections: list[tuple[str, int]]
    shows: str
    counted: str


def _sample_grid(
    samples: list[Sample],
    preds: list[Any],
    predictor: Any,
    path: Path,
    *,
    fracture: bool,
    klass: bool,
    class_names: tuple[str, ...] = (),
    title: str = "Sample predictions",
    root: Path | None = None,
    words: PositiveWords | None = None,
) -> Path | None:
    """Where labelled, the model's most confident errors first, then its most confident correct
    answers for reference, in headed groups bordered red and green; without labels, its 16 most
    confident predictions (:func:`_grid_content`).

    ``fracture``/``klass``: whether the data's fracture/class labels were evaluated. A bundle
    with a fracture head shows fracture probabilities (and the type, for fracture+class),
    unless only its class head could be checked; a class-only bundle shows its top class.
    ``class_names``: the data's classes, which its class labels index (the model may know more).
    ``title``: what the grid shows is added to its first line, the images counted to its last.
    ``root``: the data set's folder, which names images whose file names repeat.
    ``words``: how positive images are worded (as the data word them: :class:`.report.PositiveWords`).
    """
    from fracsight.evaluation.plots import plot_sample_grid
    from fracsight.io import read_image

    content = _grid_content(
        samples,
        preds,
        predictor,
        fracture=fracture,
        klass=klass,
        class_names=class_names,
        root=root,
        words=words,
    )
    if content is None:
        return None
    head, _, rest = title.partition("\n")
    full = f"{head}: {content.shows}\n" + (f"{rest}, " if rest else "") + content.counted
    images = [read_image(samples[i].path).pixels for i in content.order]
    return plot_sample_grid(
        images,
        content.titles,
        path,
        labels=content.labels,
        predictions=content.predicted,
        sections=content.sections or None,
        title=full,
    )


def _groups(
    confidence: dict[int, float],
    groups: list[tuple[str, str, list[int]]],
    slots: int,
    none: str,
    absent: Mapping[str, str] | None = None,
) -> tuple[list[int], list[tuple[str, int]]]:
    """``(sample indices, sections)`` of labelled groups ``(name, order shown, members)``: in each,
    the ``slots`` members the model is most confident about (ties in sample order), under a
    heading that says how many of how many it shows, or why there are none: ``absent[name]``
    where the data hold no image of the group's true label, else ``none``."""
    order: list[int] = []
    sections: list[tuple[str, int]] = []
    for name, what, members in groups:
        picked = sorted(members, key=lambda i: -confidence[i])[:slots]
        if not members:
            heading = f"{name}: {(absent or {}).get(name, none)}"
        else:
            shown = f"all {len(members)}" if len(members) <= slots else f"{slots} of {len(members)}"
            heading = f"{name} ({what}): {shown}"
        order += picked
        sections.append((heading, len(picked)))
    return order, sections


_NAME_WIDTH = 31  # characters of a thumbnail's title line that fit its width
_SAID_WIDTH = 36  # characters of a line of plain words that fit a thumbnail with room to spare


def _appended(title: str, part: str, sep: str = " ") -> str:
    """``title`` with ``part`` after its last line, or on a line of its own where the last line would
    be longer than :data:`_SAID_WIDTH`: overlong titles ran into their neighbours' (fracture + type
    models', "p=0.91 fracture Greenstick fracture, true: no fracture")."""
    last = title.rpartition("\n")[2]
    return title + (sep if len(last) + len(sep) + len(part) <= _SAID_WIDTH else "\n") + part


def _thumbnail_names(samples: Sequence[Sample], root: Path | None) -> list[str]:
    """What the sample grid calls each image: its file name; where file names repeat (MURA's are
    all image1.png) and ``root`` is given, its folder under ``root`` too, on a line above the name
    (a thumbnail is narrow), shortened from the left where it is long."""
    from fracsight.inference.tabular import text_cell

    # as text a font can draw: matplotlib refused a name that is not UTF-8 (caf\xe9.jpg), and the
    # whole evaluation with it
    ids = [text_cell(s.image_id) for s in samples]
    if root is None or len(set(ids)) == len(ids):
        return ids
    folders = [text_cell(_shortened(Path(relative_name(s.path, root)).parent.parts)) for s in samples]
    return [f"{folder}/\n{name}" for folder, name in zip(folders, ids, strict=True)]


def _shortened(parts: Sequence[str]) -> str:
    """A folder path of ``parts`` in at most :data:`_NAME_WIDTH` characters where it can be: its
    last folders (those that tell images apart), ``…`` for the ones left out."""
    kept = list(parts)
    while len(kept) > 1 and len("/".join(["…", *kept])) > _NAME_WIDTH:
        kept.pop(0)
    return "/".join(kept if kept == list(parts) else ["…", *kept])


def _grid_content(
    samples: list[Sample],
    preds: list[Any],
    predictor: Any,
    *,
    fracture: bool,
    klass: bool,
    class_names: tuple[str, ...] = (),
    root: Path | None = None,
    words: PositiveWords | None = None,
) -> GridContent | None:
    """What :func:`_sample_grid` shows; each title names the image, what the model said and,
    where labelled, the true label.

    With fracture labels, 4 groups of up to 4: missed fractures (lowest probability first), false
    alarms (highest first), fractures found (highest first), normal images cleared (lowest first),
    worded as ``words`` (default: fractures; MURA's: abnormalities).
    With class labels: wrong, then right top classes, up to 8 each, highest probability first.
    A group with fewer images shows what there is and says so; the others keep their size.
    Without labels: the 16 most confident predictions (farthest from the threshold; highest
    top-class probability). Sorts are stable: the same predictions give the same grid.
    """
    from fracsight.evaluation.report import PositiveWords

    words = words or PositiveWords()
    truth: dict[int, int] | None = None  # true and predicted labels, in the model's numbering
    true_type: dict[int, str] = {}  # a fracture + type model's: the data's type of a fractured image
    absent: dict[str, str] = {}  # why a group of the grid is empty: the data lack its true label
    names = _thumbnail_names(samples, root)
    if predictor.has_fracture_head and (fracture or not klass):
        chosen = [i for i, s in enumerate(samples) if not fracture or FRACTURE in s.labels]
        op = predictor.operating_point
        at = f"the {op.name} threshold {op.threshold:.3f}"
        # how sure the model is of what it said: the distance from the threshold
        confidence = {i: abs(preds[i].fracture_probability - op.threshold) for i in chosen}
        said = {i: int(bool(preds[i].fracture_suspected)) for i in chosen}
        named = (f"no {words.finding}", words.finding)

        def title(i: int) -> str:
            pr = preds[i]
            said_here = f"{names[i]}\np={pr.fracture_probability:.2f} {named[said[i]]}"
            if pr.classification and pr.fracture_suspected:
                return _appended(said_here, pr.classification.predicted)
            return said_here

        if fracture:
            truth = {i: int(samples[i].labels[FRACTURE]) for i in chosen}
            if klass and predictor.classes:  # the type said was never set against the true one
                true_type = {
                    i: class_names[samples[i].labels[CLASS]] for i in chosen if CLASS in samples[i].labels
                }
            low, high = "lowest probability first", "highest probability first"
            cells = [  # (name, order shown, true label, predicted label)
                (f"Missed {words.findings}", f"{words.positive} images not suspected, {low}", 1, 0),
                ("False alarms", f"normal images suspected, {high}", 0, 1),
                (f"{words.findings.capitalize()} found", high, 1, 1),
                ("Normal images cleared", low, 0, 0),
            ]
            groups = [(n, w, [i for i in chosen if (truth[i], said[i]) == (t, p)]) for n, w, t, p in cells]
            slots, none = _GRID_SLOTS // 4, f"none at {at}"
            # "Missed fractures: none at the threshold" read as a perfect model where there was none to miss
            present = set(truth.values())
            absent = {
                name: f"no {words.positive if t else 'normal'} images among those measured"
                for name, _, t, _ in cells
                if t not in present
            }
            shows = f"the most confident errors first, then correct ones, at {at}"
            counted = f"n={len(chosen)} ({sum(truth.values())} {words.positive})"
        else:
            basis, counted = f"farthest from {at}; no fracture labels", f"n={len(chosen)} images"
    elif predictor.classes:
        chosen = [i for i, s in enumerate(samples) if not klass or CLASS in s.labels]
        confidence = {i: preds[i].classification.probability for i in chosen}
        said = {i: predictor.classes.index(preds[i].classification.predicted) for i in chosen}
        named = tuple(predictor.classes)

        def title(i: int) -> str:
            c = preds[i].classification
            shown = c.predicted if c.confident else f"uncertain ({c.predicted})"
            return f"{names[i]}\n{shown} {c.probability:.2f}"

        if klass:
            # the model's numbering on both sides (the data may lack some of its classes)
            truth = {i: predictor.classes.index(class_names[samples[i].labels[CLASS]]) for i in chosen}
            groups = [
                (name, "highest probability first", [i for i in chosen if (truth[i] == said[i]) == right])
                for name, right in (("Wrong classes", False), ("Right classes", True))
            ]
            slots, none = _GRID_SLOTS // 2, f"none among the {len(chosen)} images with a class label"
            shows = "the most confident wrong classes first, then right ones"
            counted = f"n={len(chosen)} images with a class label"
        else:
            basis, counted = "highest top-class probability; no class labels", f"n={len(chosen)} images"
    else:
        return None
    if truth is None:
        order = sorted(chosen, key=lambda i: -confidence[i])[:_GRID_SLOTS]
        shows = f"the {len(order)} most confident ({basis} to find errors with)"
        return GridContent(order, [title(i) for i in order], None, None, [], shows, counted)
    order, sections = _groups(confidence, groups, slots, none, absent)
    truths = {i: f"true: {named[truth[i]]}" + (f" {true_type[i]}" if i in true_type else "") for i in order}
    titles = [_appended(title(i), truths[i], ", ") for i in order]
    labels = [truth[i] for i in order]
    predicted = [said[i] for i in order]
    return GridContent(order, titles, labels, predicted, sections, shows, counted)


def model_class_index(
    class_names: Mapping[str, Sequence[str]], model_classes: Sequence[str]
) -> dict[int, int] | None:
    """Data class index -> model class index, None when there is nothing to map; raises on unknown classes.

    ``class_names``: the data set's (:attr:`Dataset.class_names`); ``model_classes``: the model's
    class head's, in its order. A data set may lack some of the model's classes (a small test
    set), never add its own.
    """
    if not model_classes or CLASS not in class_names:
        return None
    data_classes = tuple(class_names[CLASS])
    unknown = [c for c in data_classes if c not in model_classes]
    if unknown:
        spelt = {name_key(c): c for c in model_classes}
        others = [f"{c!r} as {spelt[name_key(c)]!r}" for c in unknown if name_key(c) in spelt]
        hint = f" (it spells {', '.join(others)}: name them as it does)" if others else ""
        raise DataMismatchError(
            f"the data's classes {list(data_classes)} differ from the model's {list(model_classes)}: "
            f"the model does not know {unknown}{hint}"
        )
    return {i: list(model_classes).index(c) for i, c in enumerate(data_classes)}


def class_labels_of_model(
    spec: BundleSpec, samples: Sequence[Sample], class_names: Mapping[str, Sequence[str]] | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Which ``samples`` have a class label, and those labels as the indices of ``spec``'s class head
    (the data's classes matched by name: data holding some of the model's classes numbers them
    otherwise); None when the model has no class head, the data no classes or no sample a label."""
    head = spec.head("class")
    index = model_class_index(class_names or {}, head.classes if head else ())
    known = np.array([CLASS in s.labels for s in samples])
    if index is None or not known.any():
        return None
    return known, np.array([index[s.labels[CLASS]] for s in samples if CLASS in s.labels])


def _nothing_to_measure(data_dir: Path, predictor: Any, dataset: Dataset) -> str:
    wanted = []
    if predictor.has_fracture_head:
        wanted.append("fracture labels")
    if predictor.classes:
        wanted.append(f"class labels ({', '.join(predictor.classes)})")
    if predictor.regions:
        wanted.append(f"body regions ({', '.join(predictor.regions)})")
    heads = ", ".join(h.name for h in predictor.spec.heads)
    has = ", ".join(sorted(dataset.class_names)) or "nothing"
    known = {name_key(r) for r in predictor.regions}
    unknown = sorted({r for s in dataset.samples for r in s.regions if name_key(r) not in known})
    if predictor.regions and unknown:
        has += f"; its body regions {unknown} are not among the model's"
    return (
        f"{data_dir} has no {' or '.join(wanted)} to evaluate against ({predictor.spec.name} has heads: "
        f"{heads}; the data has labels for: {has})"
    )


def _regions_spelt_as(samples: Sequence[Sample], model_regions: Sequence[str]) -> list[Sample]:
    """``samples`` with their body regions spelt as the model spells them, matched as class names
    are (:func:`name_key`): a labels.csv's ``Hand`` and ``LEG``, compared as written, left every
    image out of the region head."""
    spelt = {name_key(r): r for r in model_regions}
    return [
        dataclasses.replace(s, regions=tuple(sorted({spelt.get(name_key(r), r) for r in s.regions})))
        if s.regions
        else s
        for s in samples
    ]


FEW_CASES = 10  # fewer fractured or other images than this: a bootstrap interval is no measure


def few_cases(blocks: Mapping[str, Mapping[str, Any] | None], positive: str) -> list[str]:
    """``"images (3 fractured, 3 other)"`` for each of ``blocks`` (``{where: {"n", "n_positive"}}``,
    None where there is none) whose figures rest on fewer than :data:`FEW_CASES` ``positive`` or other
    cases; the counts of ``evaluate``'s note and ``compare``'s."""
    return [
        f"{where} ({b['n_positive']} {positive}, {b['n'] - b['n_positive']} other)"
        for where, b in blocks.items()
        # a label with no cases has no interval, but the other label's still rests on its few (a
        # fractured-only set of 3 images showed sensitivity 1.000-1.000 without a word)
        if b and any(0 < k < FEW_CASES for k in (b["n_positive"], b["n"] - b["n_positive"]))
    ]


def few_images_note(metrics: Mapping[str, Any], positive: str) -> str | None:
    """A warning where the fracture figures (of the images, the studies or a body region) rest on
    fewer than :data:`FEW_CASES` ``positive`` (fractured) or other cases: resampling so few understates the
    uncertainty, to an interval of 1.000-1.000 on a perfect score (only those cases can be drawn).
    ``evaluate``'s note, and the model card's (which showed such intervals without it)."""
    blocks = {"images": metrics, "studies": metrics.get("study")}
    blocks |= {f"region {name}": block for name, block in (metrics.get("regions") or {}).items()}
    few = few_cases(blocks, positive)
    if not few:
        return None
    intervals = (  # with --bootstrap 0 there are none to speak of
        "their confidence intervals understate the uncertainty (a perfect score gets 1.000-1.000) and "
        if metrics.get("n_bootstrap") != 0
        else ""
    )
    return (
        f"fewer than {FEW_CASES} {positive} or other cases in: {'; '.join(few)}: {intervals}their figures "
        "may not hold on other images; measure on more"
    )


def _few_class_images(block: Mapping[str, Any]) -> str | None:
    """A note where a class's figures (of the class head's ``block``) rest on fewer than :data:`FEW_CASES`
    images: a class of 3 images gets a recall of 0, 0.33, 0.67 or 1 and nothing between. A class
    with none is named too (a rare type absent from a small test split would otherwise pass unseen
    behind "macro F1"), with what its absence does to the macro averages."""
    per_class = block["per_class"]
    few = [
        f"{name} ({n} image{'s' * (n > 1)})" if n else f"{name} (no images)"
        for name, n in ((name, c["support"]) for name, c in per_class.items())
        if n < FEW_CASES
    ]
    if not few:
        return None
    return (
        f"classes with fewer than {FEW_CASES} images: {', '.join(few)}: their per-class figures may not "
        f"hold on other images; measure on more{_classes_without_images(per_class)}"
    )


def _classes_without_images(per_class: Mapping[str, Mapping[str, Any]]) -> str:
    """What a class without images does to the figures: its recall and AUROC cannot be measured and
    the macro averages leave it out, except that a class predicted all the same counts in the macro
    F1 with its F1 of 0. Empty when every class has images."""
    absent = [name for name, c in per_class.items() if c["support"] == 0]
    if not absent:
        return ""
    others = len(per_class) - len(absent)
    predicted = [name for name in absent if per_class[name]["f1"] is not None]
    f1 = (
        f"the macro F1 counts {', '.join(predicted)} at 0 (predicted, never right)"
        if predicted
        else "so does the macro F1"
    )
    measured = [c for c in per_class.values() if c["support"] and c.get("auroc") is not None]
    macro = (  # one class present alone has no one-vs-rest AUROC either: nothing to average
        f"the macro AUROC averages the other {others} class{'es' * (others != 1)}"
        if measured
        else "the macro AUROC is not measured (no class present has both its own and other images)"
    )
    return (
        f"; {', '.join(absent)} {'has' if len(absent) == 1 else 'have'} none: "
        f"{'its' if len(absent) == 1 else 'their'} recall and AUROC are not measured, {macro} and {f1}"
    )


def head_label_mismatch(predictor: Any, label_names: tuple[str, ...]) -> str | None:
    """A note where the model's binary head finds something else than the data's binary label
    (the fracture model on MURA's normal / abnormal): a hardware or arthritis study is abnormal but
    has no fracture, so such misses are the data's definition, not the model's errors."""
    from fracsight.inference.results import finding_of

    head = predictor.spec.head("fracture") if predictor.has_fracture_head else None
    if head is None or len(label_names) != 2 or finding_of(head.classes[-1]) == finding_of(label_names[1]):
        return None
    # the head's classes are in the model's description already; repeated here they would put the
    # model's word back into a report that words the finding as the data do
    return (
        f"the model's binary head was trained on another label than the data's {label_names[1]!r}: "
        f"{label_names[1]!r} images without what the model was trained to find count as its misses, "
        "and its operating points were not chosen for this label"
    )


def leakage_note(leakage: SplitLeakage, data_dir: object, trained_here: bool) -> str:
    """The report's note on ``leakage``: inflated figures, unless the model never trained on the data."""
    audit = shell_command("fracsight", "audit", data_dir)
    return f"{leakage}: {leakage_effect(trained_here)} (`{audit}` lists them)"


def leakage_of(held: HeldOut, dataset: Dataset, split: str | None) -> SplitLeakage | None:
    """Images of ``split`` that train or val hold too, in the split the model's run made (``held``)
    where it made one, else the data set's own; None for ``all``, which has no split to leak into."""
    if split in (None, "all"):
        return None
    return split_leakage((held.carved or dataset).samples, split)


def _refuse_unwritable(out_dir: Path) -> None:
    """Make ``out_dir`` and write a scratch file in it before any image is read: found only at the
    end, a folder that cannot be written would lose the whole evaluation. A folder made here is
    removed again (it is made for the report), so a run stopped before it leaves nothing behind."""
    made = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
        if made:
            out_dir.rmdir()
    except OSError as e:
        raise OutputFolderError(f"cannot write the report to {out_dir}: {e.strerror or e}") from None
    # a folder where a report file goes: found when the files were moved into place, after every
    # image, half of an earlier report replaced and its metrics.json gone
    for name in (*_PLOT_FILES, *_TABLE_FILES, *_RECORD_FILES):
        if (out_dir / name).is_dir():
            raise OutputFolderError(
                f"{out_dir / name} is a folder: the report writes a file of that name; move it or "
                "choose another --out"
            )


def evaluate_model(
    model: str | Path | None,
    data_dir: Path,
    out_dir: Path | None = None,
    *,
    split: str | None = "test",
    layout: str = "auto",
    threshold: float | None = None,
    n_bootstrap: int = 2000,
    progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
    recorded_as: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics for ``model`` on ``data_dir``; with ``out_dir`` also plots, metrics.json, report.html and
    the per-image tables every figure is computed from (predictions.csv, boxes.csv; ``run.files`` in
    the metrics says what each holds). ``run`` records the equivalent command, fracsight's version and
    the time; ``model`` the checksum of its ``model.onnx``. ``recorded_as``: the bundle's name in
    that record where ``model`` is the folder it is being written in (``export --evaluate``: the
    command recorded named a temporary folder gone once the bundle was in place).

    Every head the bundle has is measured where the data has its labels: fracture
    (``auroc``, ``thresholds``, ... at the top level; ``study`` with study ids;
    ``regions``: fracture AUROC by body region, ``localization``: boxes), body
    region (``region_head``) and N-class (``multiclass``, counted over the images
    with a class label only, with its class ``operating_point``). ``heads`` names
    the bundle's heads, ``notes`` says what could not be measured and why, ``failed`` the images
    that could not be read (``source``: the path under ``data_dir``, ``error_code``, ``error``),
    which every figure leaves out. Images of the split that train or val hold too (the same bytes, the
    same patient) are counted in ``data.leakage`` and a note, and said to ``warn`` (default: the log)
    before any image is read.
    """
    recorded = model if recorded_as is None else recorded_as
    # as the command refuses them: its record (run.command) names a command that runs
    check_bootstrap(n_bootstrap)
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1
    ):
        raise EvaluationArgumentError(f"threshold must be a number from 0 to 1: {threshold!r}")
    if out_dir is not None and not str(out_dir):  # Path("") is the working folder
        raise EvaluationArgumentError("out_dir is empty: name a folder, or None for no report files")
    from fracsight.evaluation.aggregate import first_views, repeated_views_note
    from fracsight.evaluation.metrics import multilabel_metrics, regions_to_targets
    from fracsight.evaluation.report import (
        bootstrap_units,
        evaluate_classes,
        evaluate_predictions,
        to_jsonable,
    )
    from fracsight.inference import NOTICE, FailedPrediction, Predictor
    from fracsight.inference.store import packaged_bundles

    split = canonical_split(split)
    predictor = Predictor(model)
    spec = predictor.spec
    if threshold is not None and not predictor.has_fracture_head:
        raise EvaluationArgumentError(
            f"a threshold applies to the fracture probability, but {spec.name} has no fracture head"
        )
    dataset = load_dataset(Path(data_dir), layout)
    if out_dir is not None:
        dataset.refuse_output_inside(Path(out_dir))
    held = held_out(dataset, split, spec, Path(data_dir))
    samples = _regions_spelt_as(held.samples, predictor.regions)
    leakage = leakage_of(held, dataset, split)
    if leakage:
        (warn or log.warning)(leakage.warning(data_dir, trained_here=held.own))
    class_index = model_class_index(dataset.class_names, predictor.classes)
    measurable = (
        (predictor.has_fracture_head and any(FRACTURE in s.labels for s in samples))
        or (class_index is not None and any(CLASS in s.labels for s in samples))
        # regions the model knows: with only others, nothing was measured and evaluate exited 0
        or any(s.regions and set(s.regions) <= set(predictor.regions) for s in samples)
    )
    if not measurable:
        raise DataMismatchError(_nothing_to_measure(Path(data_dir), predictor, dataset))
    if out_dir is not None:
        _refuse_unwritable(Path(out_dir))

    good_samples, preds, failed, every = [], [], [], []
    names = [relative_name(s.path, dataset.root) for s in samples]  # unambiguous: MURA's are all image1.png
    stream = predictor.predict_many([s.path for s in samples], batch_size=16, names=names)
    for i, (sample, pred) in enumerate(zip(samples, stream, strict=True)):
        every.append(pred)  # in the split's order, unread ones included: predictions.csv
        if isinstance(pred, FailedPrediction):
            failed.append(pred.to_dict())
        else:
            good_samples.append(sample)
            preds.append(pred)
        if progress:
            progress(i + 1, len(samples))
    if not preds:  # each one's reason: a folder of compressed DICOMs, of files that are not images
        raise DatasetError(
            f"none of the {len(samples)} images of {data_dir} could be read: "
            + unread_names(failed, "`fracsight audit DATA` lists them all")
        )

    points = {op.name: op.threshold for op in spec.operating_points}
    if threshold is not None:
        points["custom"] = threshold
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    packaged = predictor.bundle_dir.resolve() in {p.resolve() for p in packaged_bundles().values()}
    relative = relative_data_note(spec, Path(data_dir), dataset, held.carved, packaged=packaged)
    if relative:
        notes.append(relative)
    seen = seen_by_model(split, spec) if held.own else None
    calibrated_here = calibration_data_note(spec, Path(data_dir), dataset, split)
    if calibrated_here:
        notes.append(calibrated_here)
    if seen:
        notes.append(f"measured on {seen}: these numbers flatter it; {held_out_advice(held, dataset)}")
    elif not held.own and (inside := inside_training_data_note(spec, Path(data_dir), samples)):
        notes.append(inside)
    named = split_name(split or "")  # valid: val
    if held.carved is not None and split not in (None, "all") and named not in dataset.splits:
        notes.append(
            f"the data set has no {split!r} split of its own: measured on the one fracsight carves out "
            f"of it (group-aware, seed {held.seed}), as training did; on another data set use --split all"
        )
        if "n_train" in spec.training and not _split_as_recorded(spec, held.carved):
            notes.append(
                "the split carved now differs from the training run's (its train/validation counts do "
                "not match the bundle's: the data changed, or an older fracsight split exact duplicates "
                "apart): some of these images may have been training images; re-train to measure cleanly"
            )
    label_names = tuple(dataset.class_names.get(FRACTURE, ()))
    if predictor.has_fracture_head and label_names and label_names != ("not fractured", "fractured"):
        notes.append(
            f"the data's binary label is {label_names[1]!r} (against {label_names[0]!r}), not fracture: "
            f"these results measure how well the model finds {label_names[1]!r} images"
        )
    head_note = head_label_mismatch(predictor, label_names)
    if head_note:
        notes.append(head_note)
    if leakage:
        notes.append(leakage_note(leakage, data_dir, held.own))
    doubtful = sum(not pred.reliable for pred in preds)
    if doubtful:  # predict marks them; here they were scored without a word (reliable=0 in the CSV only)
        notes.append(
            f"{doubtful} of the {len(preds)} images read are flagged not reliable (cut short, blank, "
            "colour, or unlike the training images: reliable=0 in predictions.csv); they are counted "
            "in every figure, as a reader would be shown them"
        )
    data: dict[str, Any] = {
        "root": str(data_dir),
        "layout": dataset.layout,
        "split": split or "all",
        "n_images": len(samples),
        "n_evaluated": len(preds),
        "n_not_reliable": doubtful,
    }
    if leakage is not None:
        data["leakage"] = leakage.to_dict()

    # fracture head: the images with a fracture label
    y = p = None
    boot_groups: dict[int, str] = {}  # id(sample) -> the group its bootstrap resampled whole
    view_counted: dict[int, bool] = {}  # id(sample) -> whether its study's figures count it (no repeat)
    fracture_idx = (
        [i for i, s in enumerate(good_samples) if FRACTURE in s.labels] if predictor.has_fracture_head else []
    )
    if fracture_idx:
        labelled = [good_samples[i] for i in fracture_idx]
        y = np.array([s.labels[FRACTURE] for s in labelled])
        p = np.array([preds[i].fracture_probability for i in fracture_idx])
        kw: dict[str, Any] = {}
        if any(s.regions for s in labelled):
            kw["regions"] = [s.regions for s in labelled]
        if any(s.study_id for s in labelled):
            kw["study_ids"] = [s.study_id or s.image_id for s in labelled]
            kw["study_views"] = first_views(
                kw["study_ids"], [preds[i].metadata.content_sha256 for i in fracture_idx]
            )
            view_counted = _views_counted(labelled, kw["study_views"])
        keys = split_keys(labelled)
        if len(set(keys)) < len(keys):
            # images of one group (a patient or study, near-duplicates, identical files: those that
            # are split together) are not independent: the CIs resample whole groups, else they come
            # out too narrow (FracAtlas test AUROC 0.915-0.965 as if independent, 0.903-0.972)
            kw["groups"] = keys
        resampled = bootstrap_units(kw.get("groups"), kw.get("study_ids"))
        if resampled is not None:
            boot_groups = {id(s): str(g) for s, g in zip(labelled, resampled, strict=True)}
        metrics.update(evaluate_predictions(y, p, threshold_points=points, n_bootstrap=n_bootstrap, **kw))
        repeats = int((~kw["study_views"]).sum()) if "study_views" in kw else 0
        if repeats:
            notes.append(repeated_views_note(repeats, "the study figures"))
        copies = exact_duplicates([s.path for s in labelled])
        if copies:  # one picture filed 7 times moved AUROC from 0.893 to 0.925, without a word
            data["identical_copies"] = extra = sum(len(group) - 1 for group in copies)
            audit = shell_command("fracsight", "audit", data_dir)
            notes.append(
                f"{extra} image(s) are byte-identical copies of others in the measured images "
                f"({len(copies)} picture(s) filed more than once): each copy counts in every figure "
                f"(the intervals resample the copies together); `{audit}` lists them"
            )
        data["positive"] = positive = positive_label(dataset, predictor)
        few = few_images_note(metrics, positive)
        if few:
            notes.append(few)
        if 0 in (int(y.sum()), int(y.size - y.sum())):  # "AUROC n/a" said nothing of why
            negative = str((dataset.class_names.get(FRACTURE) or predictor.spec.head("fracture").classes)[0])
            notes.append(
                f"all {y.size} images are {positive if y.sum() else negative}: AUROC, average precision and "
                f"sensitivity at specificity need {positive} and {negative} images both; only the rate of "
                "the label present is measured"
            )
        localization = _localization(labelled, [preds[i] for i in fracture_idx])
        if localization:
            metrics["localization"] = localization
        else:  # unmeasured boxes went without a word, where an unmeasured head gets a note
            notes.append(
                f"boxes not measured: no {positive} image read has box annotations (boxes.csv lists the "
                "predicted boxes only)"
            )
        data["n_positive"] = int(y.sum())
    elif predictor.has_fracture_head:
        notes.append("fracture head not measured: the data has no fracture labels")
    elif any(FRACTURE in s.labels for s in good_samples):  # fractured/normal went unmeasured without a word
        notes.append(
            "the data's fracture labels are not measured: the model has no fracture head "
            "(it never says whether a fracture is there)"
        )

    # region head: the images whose body regions are all ones the model knows
    if predictor.regions and any(s.regions for s in good_samples):
        known = set(predictor.regions)
        region_idx = [i for i, s in enumerate(good_samples) if s.regions and set(s.regions) <= known]
        unknown = sorted({r for s in good_samples for r in s.regions} - known)
        if region_idx:
            targets = regions_to_targets([good_samples[i].regions for i in region_idx], predictor.regions)
            probs = np.array(
                [[preds[i].region_probabilities[r] for r in predictor.regions] for i in region_idx]
            )
            metrics["region_head"] = multilabel_metrics(targets, probs, predictor.regions)
        if unknown:
            left_out = sum(1 for s in good_samples if s.regions and not set(s.regions) <= known)
            notes.append(
                f"region head: {left_out} image(s) left out, their body regions {unknown} are not among "
                f"the model's {list(predictor.regions)}"
            )
    elif predictor.regions:
        notes.append("region head not measured: the data has no body regions")

    # class head: the images with a class label (for fracture+class data, the fractured ones)
    class_labels = class_probs = None
    if class_index is not None and any(CLASS in s.labels for s in good_samples):
        class_labels = np.array(
            [class_index[s.labels[CLASS]] if CLASS in s.labels else -1 for s in good_samples]
        )
        class_probs = np.array([[pr.class_probabilities[c] for c in predictor.classes] for pr in preds])
        study_kw: dict[str, Any] = {}
        if any(s.study_id for s in good_samples):
            study_kw["study_ids"] = [s.study_id or s.image_id for s in good_samples]
            study_kw["study_views"] = first_views(
                study_kw["study_ids"], [pr.metadata.content_sha256 for pr in preds]
            )
            if not view_counted:  # a class model's studies: the views its study figures count
                view_counted = _views_counted(good_samples, study_kw["study_views"])
            if predictor.has_fracture_head:
                study_kw["study_weights"] = [pr.fracture_probability for pr in preds]
        block = evaluate_classes(
            class_labels,
            class_probs,
            predictor.classes,
            min_probability=predictor.class_min_probability,
            validation=spec.class_operating_point,
            **study_kw,
        )
        counted = "Counted over the images with a class label"
        if predictor.has_fracture_head:
            # "the fractured ones" only where they are: a labels.csv may give every image a class
            typed_fractured = [s.labels.get(FRACTURE) == 1 for s in good_samples if CLASS in s.labels]
            counted += (" (the fractured ones)" if fracture_idx and all(typed_fractured) else "") + (
                ": the class describes the fracture type given a fracture, so it is measured whatever "
                "the fracture head said"
            )
        block["counted"] = counted + f"; {block['n_unlabelled']} image(s) without one are left out."
        metrics["multiclass"] = block
        few_classes = _few_class_images(block)
        if few_classes:
            notes.append(few_classes)
        data["n_class_labelled"] = block["n"]
    elif predictor.classes:
        notes.append("class head not measured: the data has no class labels")
    elif any(CLASS in s.labels for s in good_samples):  # the data's types went unmeasured without a word
        type_names = ", ".join(dataset.class_names.get(CLASS, ()))
        notes.append(f"the data's class labels ({type_names}) are not measured: the model has no class head")

    metrics.update(
        model={
            "name": spec.name,
            "version": spec.version,
            "onnx_sha256": spec.onnx_sha256,
            "precision": spec.precision,
            "source": "default" if recorded is None else str(recorded),
        },
        heads=[h.name for h in spec.heads],
        data=data,
        failed=failed,
        notice=NOTICE,  # as the predictions' JSON: metrics.json and --json carry it too
    )
    if predictor.has_fracture_head:
        metrics["operating_points"] = points
    if notes:
        metrics["notes"] = notes
    metrics["run"] = _run_record(recorded, data_dir, out_dir, split, threshold, n_bootstrap, layout)
    metrics = to_jsonable(metrics)
    if out_dir is not None:
        with _report_folder(Path(out_dir)) as scratch:
            tables = _write_tables(
                scratch,
                samples,
                names,
                every,
                predictor,
                points,
                boot_groups,
                view_counted,
                dataset,
                bool(fracture_idx),
                "localization" in metrics,
            )
            _draw_outputs(
                scratch,
                metrics,
                tables,
                spec=spec,
                predictor=predictor,
                data_dir=Path(data_dir),
                dataset=dataset,
                split=split,
                points=points,
                y=y,
                p=p,
                class_labels=class_labels,
                class_probs=class_probs,
                good_samples=good_samples,
                preds=preds,
                fracture=bool(fracture_idx),
            )
    return metrics


def _draw_outputs(
    out_dir: Path,
    metrics: dict[str, Any],
    tables: Mapping[str, str],
    *,
    spec: Any,
    predictor: Any,
    data_dir: Path,
    dataset: Dataset,
    split: str | None,
    points: Mapping[str, float],
    y: np.ndarray | None,
    p: np.ndarray | None,
    class_labels: np.ndarray | None,
    class_probs: np.ndarray | None,
    good_samples: list[Sample],
    preds: list[Any],
    fracture: bool,
) -> None:
    """The plots, metrics.json and report.html into ``out_dir`` (a scratch folder
    :func:`_report_folder` moves into place), beside the per-image ``tables`` (file -> what it holds)."""
    from fracsight.evaluation.report import PositiveWords, render_all_plots, write_report

    class_kw: dict[str, Any] = {}
    if class_labels is not None:
        class_kw = dict(
            class_labels=class_labels,
            class_probs=class_probs,
            class_names=predictor.classes,
            class_min_probability=predictor.class_min_probability,
        )
    where = Path(data_dir).resolve()  # "." would name no data set in the report and plots
    subtitle = f"{spec.name} v{spec.version} on {where.name} [{split or 'all'}]"
    plots = render_all_plots(
        y,
        p,
        out_dir,
        subtitle=subtitle,
        metrics=metrics,
        threshold_points=points,
        confusion_threshold=predictor.operating_point.threshold if predictor.operating_point else None,
        **class_kw,
    )
    grid = _sample_grid(
        good_samples,
        preds,
        predictor,
        out_dir / "samples.png",
        fracture=fracture,
        klass=class_labels is not None,
        class_names=tuple(dataset.class_names.get(CLASS, ())),
        title=f"Sample predictions\n{subtitle}",
        root=dataset.root,
        words=PositiveWords.of(metrics),
    )
    if grid is not None:
        plots["samples"] = grid
    metrics["run"]["files"] = {
        **tables,
        **{f"{name}.png": _PLOT_FILES[f"{name}.png"] for name in plots},
        "metrics.json": "every figure of this report, with its counts, intervals and definitions",
        "report.html": "the report, self-contained (plots embedded)",
    }
    run = metrics["run"]
    write_report(
        metrics,
        out_dir,
        title=f"fracsight evaluation: {spec.name} on {where.name}",
        model_info={
            "name": spec.name,
            "version": spec.version,
            "dataset": f"{where} ({split or 'all'})",
            "heads": "; ".join(f"{h.name} ({', '.join(h.classes)})" for h in spec.heads),
            "model.onnx sha256": spec.onnx_sha256 or "not recorded",
            "precision": spec.precision,
            "images": _counted(metrics),
            "command": run["command"],
            "working folder": run["working_folder"] or "not known (it was deleted)",
            "evaluated": f"{run['created_utc']}, fracsight {run['fracsight_version']}",
            "files": ", ".join(run["files"]),  # what each holds: in metrics.json
        },
        plots=plots,
    )


# every plot evaluate_model may draw (render_all_plots, _sample_grid), with what it shows
_PLOT_FILES = {
    "roc.png": "ROC curve with the AUROC's interval and the operating points",
    "pr.png": "precision-recall curve with the average precision's interval and the operating points",
    "calibration.png": "reliability diagram (95% Wilson interval per bin) with the images per bin",
    "confusion.png": "binary confusion matrix at the bundle's default operating point",
    "confusion_multiclass.png": "confusion matrix of the class head (top-1 class)",
    "class_coverage.png": "class accuracy against coverage",
    "samples.png": "sample grid: the most confident errors, then correct answers",
}
_TABLE_FILES = ("predictions.csv", "boxes.csv")
_RECORD_FILES = ("report.html", "metrics.json")  # moved into place last, metrics.json the very last


def _run_record(
    model: str | Path | None,
    data_dir: Path,
    out_dir: Path | None,
    split: str | None,
    threshold: float | None,
    n_bootstrap: int,
    layout: str,
) -> dict[str, Any]:
    """How the figures were made: the command that makes them again (into the same folder, which
    then holds them: hence ``--overwrite``), fracsight's version, when."""
    from fracsight import __version__

    args = ["fracsight", "evaluate", "default" if model is None else str(model), str(data_dir)]
    args += ["--split", split or "all", "--bootstrap", str(n_bootstrap)]
    if threshold is not None:
        args += ["--threshold", repr(float(threshold))]
    if out_dir is not None:
        args += ["--out", str(out_dir), "--overwrite"]
    # the command reads a data set's layout from its files; a layout forced from Python is said
    forced = "" if layout == "auto" else f"  # from Python, with layout={layout!r}"
    try:
        working_folder: str | None = str(Path.cwd())
    except OSError:  # deleted while the command ran (or before): the figures are no less valid
        working_folder = None
    return {
        "command": shlex.join(args) + forced,
        "working_folder": working_folder,  # the command's relative paths are relative to it
        "fracsight_version": __version__,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _counted(metrics: Mapping[str, Any]) -> str:
    d = metrics["data"]
    text = f"{d['n_evaluated']} of {d['n_images']} read"
    if d.get("n_positive") is not None:
        text += f"; {d['n_positive']} {d.get('positive', 'fractured')} among those with a label"
    return text


def _cell(text: str) -> str:
    from fracsight.inference.tabular import spreadsheet_safe, text_cell

    return spreadsheet_safe(text_cell(text))


def _number(value: float | None) -> str:
    """A probability or coordinate as Python writes it back exactly (``repr``); empty for None."""
    return "" if value is None else repr(float(value))


def _views_counted(samples: Sequence[Sample], views: Any) -> dict[int, bool]:
    """By ``id(sample)``, whether its study's figures count it (:func:`first_views`)."""
    return {id(s): bool(v) for s, v in zip(samples, views, strict=True)}


def _flag(value: bool | None) -> int | str:
    return "" if value is None else int(value)


def _write_tables(
    out_dir: Path,
    samples: Sequence[Sample],
    names: Sequence[str],
    every: Sequence[Any],
    predictor: Any,
    points: Mapping[str, float],
    boot_groups: Mapping[int, str],
    view_counted: Mapping[int, bool],
    dataset: Dataset,
    labelled: bool,
    boxes_measured: bool,
) -> dict[str, str]:
    """``predictions.csv`` (one row per image of the split, in its order, unread ones with their
    ``error_code``) and, for a model with a fracture head, ``boxes.csv`` (every predicted box and the
    true boxes of the images labelled positive, in pixels of the image as shown; where the data have
    fracture labels, as ``labelled`` says): what every figure is computed from, so that each can be
    recomputed. By ``id(sample)``: ``boot_groups``, the group its bootstrap resampled whole;
    ``view_counted``, whether its study's figures count it (False: it repeats an earlier view of
    that study). Returns ``{file: what it holds}``."""
    from fracsight.inference import FailedPrediction

    fracture = predictor.has_fracture_head
    regions, classes = list(predictor.regions or ()), list(predictor.classes or ())
    data_classes = tuple(dataset.class_names.get(CLASS, ()))
    header = ["source", "split", "study_id", *(["study_view_counted"] if view_counted else []), "error_code"]
    if fracture:
        header += ["label", "probability", *(f"suspected_{n}" for n in points), "bootstrap_group"]
        header += ["n_boxes", "top_box_score"]
    if regions:
        header += ["regions", "region_predicted", *(f"p_region_{r}" for r in regions)]
    if classes:
        header += ["class_label", "class_predicted", "class_probability", *(f"p_class_{c}" for c in classes)]
    header += ["reliable"]
    rows, boxes = [], []
    for sample, name, pred in zip(samples, names, every, strict=True):
        failed = isinstance(pred, FailedPrediction)
        name = _cell(name)  # as every CSV of fracsight writes a file name (not UTF-8, "=..." names)
        row: dict[str, Any] = {
            "source": name,
            "split": sample.split or "",
            "study_id": sample.study_id or "",
            **({"study_view_counted": _flag(view_counted.get(id(sample)))} if view_counted else {}),
            "error_code": pred.error_code if failed else "",
            "reliable": "" if failed else int(bool(pred.reliable)),
        }
        if fracture:
            label = sample.labels.get(FRACTURE)
            prob = None if failed else pred.fracture_probability
            row |= {
                "label": "" if label is None else int(label),
                "probability": _number(prob),
                "bootstrap_group": boot_groups.get(id(sample), "") if label is not None else "",
                "n_boxes": "" if failed else len(pred.boxes),
                "top_box_score": ""
                if failed or not pred.boxes
                else _number(max(b.score for b in pred.boxes)),
            }
            for point, t in points.items():
                row[f"suspected_{point}"] = "" if prob is None else int(prob >= t)
            if not failed and label is not None:
                for b in pred.boxes:
                    boxes.append(
                        [name, "predicted", _number(b.score), *map(_number, (b.x0, b.y0, b.x1, b.y1))]
                    )
                if label == 1:
                    for t_box in true_boxes(sample, pred):
                        boxes.append([name, "true", "", *map(_number, t_box)])
        if regions:
            row["regions"] = ";".join(sample.regions)
            row["region_predicted"] = "" if failed else (pred.region or "")
            for r in regions:
                row[f"p_region_{r}"] = "" if failed else _number(pred.region_probabilities.get(r))
        if classes:
            label = sample.labels.get(CLASS)
            row["class_label"] = "" if label is None else data_classes[label]
            c = None if failed else pred.classification
            row["class_predicted"] = "" if c is None else c.predicted
            row["class_probability"] = "" if c is None else _number(c.probability)
            for k in classes:
                row[f"p_class_{k}"] = "" if c is None else _number(c.probabilities.get(k))
        rows.append(row)
    with open(out_dir / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        # every text cell (groups, regions and classes come from the user's data as file names do)
        writer.writerows({k: _cell(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows)
    files = {
        "predictions.csv": "one row per image of the split: source (its path under the data folder), "
        "split, study_id, "
        + (
            "study_view_counted (1: counted in its study's figures; 0: it repeats an earlier view of the "
            "study, counted once; empty: unread), "
            if view_counted
            else ""
        )
        + "error_code (unread: left out of every figure)"
        + (
            ", label (1 = the data's positive label, empty: none), probability (the calibrated one every "
            "figure uses), suspected_<operating point> (probability >= its threshold), bootstrap_group "
            "(the group the intervals resample whole; empty: stratified by label), n_boxes, top_box_score"
            if fracture
            else ""
        )
        + (", regions (true, ';'-separated), region_predicted, p_region_<region>" if regions else "")
        + (", class_label, class_predicted, class_probability, p_class_<class>" if classes else "")
        + ", reliable (0: the input looked unlike what the model was made for)"
    }
    if fracture and labelled:  # the localization figures' input: images with a fracture label
        with open(out_dir / "boxes.csv", "w", newline="", encoding="utf-8") as f:
            box_writer = csv.writer(f)
            box_writer.writerow(["source", "kind", "score", "x0", "y0", "x1", "y1"])
            box_writer.writerows(boxes)
        files["boxes.csv"] = (
            "the boxes of the images read with a label: kind 'predicted' (every box, with its score) or "
            "'true' (the annotated boxes of the positive images), in pixels of the image as shown (EXIF "
            "orientation applied); "
            + ("the localization figures' input" if boxes_measured else "no positive image has true boxes")
        )
    return files


@contextlib.contextmanager
def _report_folder(out_dir: Path) -> Iterator[Path]:
    """A scratch folder in ``out_dir`` to write every file of the report into; when the block ends
    without an error they move into place, metrics.json last. Stopped (Ctrl-C) or failing before,
    the folder is as it was (one made for the report is removed again). An earlier evaluation's
    metrics.json and report.html are removed before the new files move in, so that a folder
    stopped between the two holds no record that would pass for the new files'; and with
    --overwrite into an earlier evaluation's folder (its metrics.json an evaluation's), its plots and
    tables that the new one does not write (another model's heads, other labels) are removed:
    left beside the new metrics.json and report.html, they would pass for this evaluation's.
    Other files stay."""
    made = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    earlier = _is_evaluation_record(out_dir / "metrics.json")
    _remove_killed_scratches(out_dir)
    scratch = Path(tempfile.mkdtemp(prefix=REPORT_SCRATCH, dir=out_dir))
    held = _hold(scratch)
    try:
        try:
            yield scratch
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            if made:  # made for the report, which was not written: nothing left behind (if empty)
                with contextlib.suppress(OSError):
                    out_dir.rmdir()
            raise
        written = sorted(path.name for path in scratch.iterdir())
        for name in written:
            keep_permissions(out_dir / name, scratch / name)
        for name in _RECORD_FILES:
            (out_dir / name).unlink(missing_ok=True)
        if earlier:
            for name in (*_PLOT_FILES, *_TABLE_FILES):
                if name not in written:
                    (out_dir / name).unlink(missing_ok=True)
        last = {name: i for i, name in enumerate(_RECORD_FILES)}
        for name in sorted(written, key=lambda n: last.get(n, -1)):
            os.replace(scratch / name, out_dir / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if held is not None:
            os.close(held)


def _is_evaluation_record(path: Path) -> bool:
    """Whether ``path`` is the metrics.json of a fracsight evaluation, whose plots and tables the
    next one into its folder replaces: a user's own metrics.json (a common name) is no sign that
    the folder's roc.png and the like are ours to remove."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    run = record.get("run") if isinstance(record, dict) else None
    return isinstance(run, dict) and "fracsight_version" in run and "command" in run


def _hold(scratch: Path) -> int | None:
    """``scratch`` locked (flock on the folder) while this evaluation writes into it: one that
    nobody holds was left by a run killed outright (SIGKILL, out of memory, power loss). None where
    another holds it, or it cannot be locked."""
    try:
        import fcntl

        handle = os.open(scratch, os.O_RDONLY)
    except (ImportError, OSError):  # not POSIX: a killed run's scratch stays, hidden
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held; or no flock on this file system, where no killed run's scratch is told
        os.close(handle)
        return None
    return handle


def _remove_killed_scratches(out_dir: Path, settled_s: float = 60.0) -> None:
    """The scratch folders nobody holds, untouched for ``settled_s``: one made by a second
    evaluation into the folder a moment ago may not be held yet."""
    for old in out_dir.glob(f"{REPORT_SCRATCH}*"):
        try:
            if old.is_symlink() or not old.is_dir() or time.time() - old.stat().st_mtime < settled_s:
                continue
        except OSError:  # removed meanwhile
            continue
        handle = _hold(old)
        if handle is not None:  # held by nobody: its run is gone
            shutil.rmtree(old, ignore_errors=True)
            os.close(handle)
