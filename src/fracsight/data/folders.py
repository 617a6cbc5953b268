"""Reader for class folders: ``<class>/*.png`` or ``<split>/<class>/*.png``.

Split folders are ``train``, ``val`` / ``valid`` / ``validation`` / ``dev`` and ``test``
(any case; ``valid`` becomes split ``"val"``). Exactly two classes whose names read as
fractured / not fractured (``fractured`` and ``not fractured``, ``Fractured`` and
``Non_fractured``, ``positive`` and ``negative``, ...) give a binary ``"fracture"`` label
(1 = fractured). Any other set of classes (fracture types, body regions) gives a
``"class"`` label indexing the class names sorted alphabetically (case-insensitive).
Class and type folder names are matched ignoring case, across splits and within one:
``train/fractured`` and ``val/Fractured`` are one class, named by the spelling that sorts
first (``Fractured``), with a warning.
Images may sit in sub-folders of a class folder; hidden files and folders are ignored.

Fracture types under the fractured folder (``[<split>/]Fractured/<type>/*.png`` next to
``[<split>/]Non_fractured/*.png``) give both labels: ``"fracture"`` for every image and
``"class"`` (the type, sorted as above) for the fractured ones. The sub-folders are read
as types when every fractured image sits in one of at least two sub-folders (over all
splits: one split's fractured folder may hold a single type) and the
not-fractured folder is not organised the same way (sub-folders on both sides are taken
for grouping, by patient for example, and ignored as before).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import replace
from functools import cache
from pathlib import Path

from fracsight.data._files import (
    case_merged,
    fracture_polarity,
    is_image_file,
    iter_images,
    name_key,
    name_order,
    split_name,
    visible_dirs,
    warn_skipped,
)
from fracsight.data.sample import CLASS, FRACTURE, Dataset, NotADataFolderError, Sample, warn_splits_lacking

__all__ = ["class_folders", "is_class_folders", "read_class_folders"]

log = logging.getLogger(__name__)


def _split_within_classes(class_dirs: list[Path]) -> tuple[str, list[str]]:
    """A class folder's name and its split folders' names when every class folder holds its images
    in split folders (``fractured/train/``, ``fractured/test/``: class first, as some downloads
    come), else ``("", [])``."""
    splits: dict[str, list[str]] = {}
    for d in class_dirs:
        try:
            if any(is_image_file(p) for p in d.iterdir()):
                return "", []
        except OSError:  # a folder that cannot be listed is said where its images are read
            return "", []
        held = [s for s in visible_dirs(d) if next(iter_images(s), None) is not None]
        if not held:  # no images (a notes folder)
            continue
        if not all(split_name(s.name) for s in held):  # patients, types
            return "", []
        splits[d.name] = sorted((s.name for s in held), key=name_order)
    if len(splits) < 2:  # one folder of split folders is a data set inside, pointed to by its own warning
        return "", []
    first = min(splits, key=name_order)
    return first, splits[first]


def class_folders(root: Path) -> dict[str | None, list[Path]]:
    """Class folders per split (key None when there is no split level)."""
    dirs = visible_dirs(root)
    split_dirs = [d for d in dirs if split_name(d.name)]
    if not split_dirs:
        return {None: dirs} if dirs else {}
    ignored = [d.name for d in dirs if not split_name(d.name)]
    if ignored:
        log.warning(
            "%s: folder(s) %s are not split folders (train/val/test) and are ignored",
            root,
            ", ".join(ignored),
        )
    result: dict[str | None, list[Path]] = {}
    for d in split_dirs:
        result.setdefault(split_name(d.name), []).extend(visible_dirs(d))
    return result


def _data_sets_inside(class_dirs: list[Path]) -> list[Path]:
    """The class folders that hold a data set one level down: split folders of class folders (a
    class's own `train/` and `test/` of images, class first, is not one)."""
    return [d for d in class_dirs if any(split_name(s.name) and visible_dirs(s) for s in visible_dirs(d))]


def is_class_folders(root: Path) -> bool:
    """True if some class folder (directly or under a split folder) holds an image."""
    return any(next(iter_images(d), None) is not None for dirs in class_folders(root).values() for d in dirs)


def read_class_folders(root: Path) -> Dataset:
    """Read class folders into a :class:`Dataset` (layout ``"class-folders"``)."""
    per_split = class_folders(root)
    first, within = _split_within_classes(per_split.get(None, []))
    if within:  # read as patients' folders, the user's test images were trained on
        raise NotADataFolderError(
            f"{root}: the class folders hold split folders ({first}/{within[0]}/, ...): fracsight reads "
            f"splits as <train|val|test>/<class>/<image>, so these would be ignored and their images "
            f"split anew; arrange them as {within[0]}/{first}/, ... (or put each class's images "
            f"together to have the splits made)"
        )
    _warn_loose_files(root)
    skipped: list[Path] = []
    folders = [(split, d, list(iter_images(d, skipped))) for split, dirs in per_split.items() for d in dirs]
    warn_skipped(skipped, root)
    for _, d, images in folders:
        if not images:
            log.warning("%s holds no images and is ignored", d)
    wrapped = _data_sets_inside([d for _, d, _ in folders])
    for d in wrapped:  # an unpacked archive beside a notes folder: its split folders read as images
        log.warning("%s holds train/val/test folders: is it the data set? give %s as the data folder", d, d)
    name_of = case_merged({d.name for _, d, images in folders if images}, "class folders")
    found: dict[str | None, dict[str, list[Path]]] = {}
    for split, d, images in folders:
        if images:
            found.setdefault(split, {}).setdefault(name_of[d.name], []).extend(images)
    names = set(name_of.values())
    if len(names) < 2:  # the user's to correct: a bad argument (exit 2)
        hint = f"; {wrapped[0]} holds train/val/test folders: give it as the data folder" if wrapped else ""
        raise NotADataFolderError(
            f"{root}: class folders need at least two classes with images, found {sorted(names) or 'none'} "
            f"(expected <class>/<image> or <train|val|test>/<class>/<image>){hint}"
        )
    for split, classes in found.items():
        if split is not None and set(classes) != names:
            unlearnt = ": a model trained on the set cannot learn them" if split == "train" else ""
            log.warning(
                "split %r lacks class(es) %s%s", split, ", ".join(sorted(names - set(classes))), unlearnt
            )

    polarity = {folder: fracture_polarity(folder) for folder in name_of}  # ignores case like name_of
    if len(names) == 2 and set(polarity.values()) == {0, 1}:
        index = {n: int(p) for n, p in polarity.items() if p is not None}
        fractured = [d for dirs in per_split.values() for d in dirs if polarity.get(d.name) == 1]
        normal = [d for dirs in per_split.values() for d in dirs if polarity.get(d.name) == 0]
        class_names = ("not fractured", "fractured")
        if any("abnormal" in d.name.lower() for d in fractured):  # Normal / Abnormal: as MURA's
            class_names = ("normal", "abnormal")
        typed = _typed_together(fractured) and not any(_typed(d) for d in normal)
        if typed and not _patients_not_types(per_split, fractured):
            return _fracture_types(root, per_split, index, class_names)
        types = set().union(*(_type_names(d) for d in fractured))
        for d in fractured:  # type folders (in this split or another) that loose images turned off
            loose = [p.name for p in d.iterdir() if is_image_file(p)]
            if loose and len(types) >= 2:
                log.warning(
                    "%s holds %d image(s) outside the type folders (%s), so the set is read as fractured / "
                    "not fractured only, without types: move them into a type folder to train a type head",
                    d,
                    len(loose),
                    ", ".join(sorted(types)),
                )
        task = FRACTURE
    else:
        _warn_same_meaning(root, names, [set(c) for split, c in found.items() if split is not None])
        task, class_names = CLASS, _sorted_names(names)
        index = {n: i for i, n in enumerate(class_names)}
        _warn_pair_beside_others(root, names, {name_of[n]: q for n, q in polarity.items()})
        if len(names) == 2:  # `0` / `1`, `yes` / `no`: a researcher who meant a fracture model gets none
            log.warning(
                "%s: the two class folders %s do not read as fractured / not fractured, so they are read as "
                "two classes, not fracture labels (a model trained on them has a two-class head: no "
                "AUROC, no operating points); for a fracture model name them as fractured and not "
                "fractured (docs/data.md lists the words read)",
                root,
                " and ".join(repr(n) for n in class_names),
            )
    samples = [
        Sample(path=path, labels={task: int(index[name])}, split=split)
        for split, classes in found.items()
        for name, paths in sorted(classes.items())
        for path in paths
    ]
    samples = _grouped_by_subfolder(root, samples, typed=False)
    return Dataset(root=root, layout="class-folders", samples=tuple(samples), class_names={task: class_names})


def _warn_pair_beside_others(root: Path, names: set[str], polarity: dict[str, int | None]) -> None:
    """Fractured/ and Normal/ beside an Ungraded/ (or Hairline/): read as that many classes, with
    no fracture head, where the only words were "split 'train' lacks class(es) Ungraded"."""
    paired = {p: sorted(n for n in names if polarity.get(n) == p) for p in (0, 1)}
    others = sorted(names - {*paired[0], *paired[1]})
    if not (paired[0] and paired[1] and others):
        return
    positive = ", ".join(paired[1])
    finding = "abnormality" if "abnormal" in positive.lower() else "fracture"
    words = "normal / abnormal" if finding == "abnormality" else "fractured / not fractured"
    log.warning(
        "%s: %s and %s read as %s, but beside %s they make %d classes, not %s labels (a model "
        "trained on them has a %d-class head: no %s probability, no AUROC, no operating points); "
        "for a %s model, move %s out, or into %s as type folders if they are kinds of %s",
        root, positive, ", ".join(paired[0]), words, ", ".join(others), len(names), finding,
        len(names), finding, finding, ", ".join(others), positive, finding,
    )  # fmt: skip


def _grouped_by_subfolder(root: Path, samples: list[Sample], *, typed: bool) -> list[Sample]:
    """``samples`` with ``group`` set to the sub-folder of the class folder (of the type folder,
    ``typed``) each image sits in: ``Fractured/patient07/view2.png`` is in group ``patient07``, with
    patient07's images in ``Normal/`` and in other splits. The docs promised this grouping, but the
    sub-folders were dropped: one patient's views landed in train and test, and leakage between
    given splits went unseen. Sub-folders that are no patients or studies (:func:`_not_patients`:
    ``Fractured/images/``, one per class, body regions, a handful to split by) are not taken, with
    a warning."""

    def subfolder(sample: Sample) -> str | None:
        try:
            parts = sample.path.relative_to(root).parts
        except ValueError:
            return None
        inside = 1 + (sample.split is not None) + (typed and CLASS in sample.labels)
        return parts[inside] if len(parts) > inside + 1 else None

    groups = [subfolder(s) for s in samples]
    counts = Counter(g for g in groups if g is not None)
    if not counts:
        return samples
    labels: dict[str, set[tuple[tuple[str, int], ...]]] = {}
    for sample, group in zip(samples, groups, strict=True):
        if group is not None:
            labels.setdefault(group, set()).add(tuple(sorted(sample.labels.items())))
    classes = len({label for found in labels.values() for label in found})
    one_class_each = all(len(found) == 1 for found in labels.values()) and len(counts) <= classes
    given = all(s.split is not None for s in samples)
    why = _not_patients(counts, len(samples), one_class_each=one_class_each, splits_given=given)
    if why is not None:
        log.warning(
            "%s: %s, so the class folders' sub-folders are not taken as patients or studies: leakage "
            "of a patient between splits is not checked",
            root,
            why,
        )
        return samples
    return [replace(s, group=g) for s, g in zip(samples, groups, strict=True)]


def _not_patients(
    counts: Counter[str], total: int, *, one_class_each: bool, splits_given: bool
) -> str | None:
    """Why sub-folders holding ``counts`` images of ``total`` are no patients or studies, or None:
    one holding more than half of the images (`Fractured/images/` + `Normal/images/`); one per
    class (`Fractured/fractured_xrays/`); most named for body parts or views only (seven region
    folders were taken for patients: val came out all hip and test all wrist; `hand_p001` is a
    patient; `AP/`, `Lateral/` under each class are one patient's views); or,
    where fracsight makes the splits, fewer than ten (batches, years: all went to train). A patient
    with many views is still one: "at most a fifth of the images" turned the leakage check off for
    a small set of three patients in given splits."""
    largest, n = counts.most_common(1)[0]
    if n > total / 2:
        return (
            f"the sub-folder {largest!r} holds {n} of the {total} images, too many for one patient or study"
        )
    if one_class_each:
        return "each class has one sub-folder of its own"
    named = sorted(c for c in counts if _named_for_a_body_part_or_view(c))
    if len(named) > len(counts) / 2:
        return f"sub-folders are named for body parts or views ({', '.join(named[:3])})"
    if not splits_given and len(counts) < 10:
        return f"there are only {len(counts)} sub-folders, too few to split the images by"
    return None


#: words a region folder's name may hold beside body parts: modalities, views, sides, spine levels
_MODALITY_WORDS = {"xr", "cr", "dx", "ct", "mr", "us", "x", "ray", "xray", "xrays"}
_VIEW_WORDS = {"ap", "pa", "lat", "lateral", "oblique", "left", "right", "upper", "lower", "c", "t", "l"}
_PLURALS = {"feet": "foot", "teeth": "tooth"}


@cache
def _body_parts() -> frozenset[str]:
    """The body-part words a region folder is named with (DICOM's terms and the region names)."""
    from fracsight.inference.ood import BODY_PART_REGIONS

    parts = {p.lower() for p in BODY_PART_REGIONS} | {r for rs in BODY_PART_REGIONS.values() for r in rs}
    return frozenset(parts | {"limb", "extremity"})


def _named_for_a_body_part_or_view(name: str) -> bool:
    """`hand`, `XR_WRIST`, `left-knee`, `hands`, `AP_knee`, `c-spine`, `upper_limb`, `Lateral`: every
    word a body part (singular or plural) or a modality, view or side; not `hand_p001` nor
    `hand_000` (a number of two digits or more is a patient's: the digits were dropped with the
    punctuation and `hand_000` read as `hand`)."""
    import re

    if re.search(r"\d{2}", name):
        return False
    parts = _body_parts()
    every = [w for w in re.split(r"[^a-z]+", name.lower()) if w]
    words = [w for w in every if w not in _MODALITY_WORDS | _VIEW_WORDS]
    if every and not words:  # `AP`, `Lateral`, `XR`: views of one patient's images, no patient
        return True

    def singular(word: str) -> str:
        if word in _PLURALS:
            return _PLURALS[word]
        return word[:-1] if word.endswith("s") and word[:-1] in parts else word

    return bool(words) and all(singular(w) in parts for w in words)


def _sorted_names(names: set[str]) -> tuple[str, ...]:
    return tuple(sorted(names, key=name_order))


def _typed(class_dir: Path) -> bool:
    """True if all images of ``class_dir`` sit in at least two of its sub-folders (the types)."""
    if any(is_image_file(p) for p in class_dir.iterdir()):
        return False
    return len(_type_names(class_dir)) >= 2


def _typed_together(class_dirs: list[Path]) -> bool:
    """True if every image of the fractured ``class_dirs`` (one per split) sits in a sub-folder and
    there are at least two such sub-folders between them, so that a split whose fractured folder
    holds one type only (a small test split) does not turn the types off for the whole set."""
    if any(is_image_file(p) for d in class_dirs for p in d.iterdir()):
        return False
    return len(set().union(*(_type_names(d) for d in class_dirs))) >= 2


def _patients_not_types(per_split: dict[str | None, list[Path]], fractured: list[Path]) -> bool:
    """Whether the sub-folders of the fractured folders of given splits are patients (or studies),
    not fracture types: no two splits share one. Fracture types recur across the splits, a patient
    is kept to one; read as types, a 12-way "type" head was trained on patient IDs, its validation
    class accuracy 0 by construction, with nothing said beyond "split 'val' lacks fracture type(s)"."""
    given = [d for split, dirs in per_split.items() if split is not None for d in dirs if d in fractured]
    named = [names for names in map(_type_names, given) if names]
    if len(named) < 2 or any(a & b for i, a in enumerate(named) for b in named[i + 1 :]):
        return False
    folders = sorted(set().union(*named), key=name_order)
    log.warning(
        "the sub-folders of the fractured folders (%s) share no name between the splits, as a patient's "
        "or a study's folders do and fracture types do not: read as groups of one patient's images, "
        "not as fracture types (to train a type head, use the same type folders in every split)",
        ", ".join(folders[:3]) + (", ..." if len(folders) > 3 else ""),
    )
    return True


def _type_names(class_dir: Path) -> set[str]:
    """The sub-folders of ``class_dir`` that hold images, by name ignoring case (names that differ
    only in case count once)."""
    return {name_key(d.name) for d in visible_dirs(class_dir) if next(iter_images(d), None) is not None}


def _fracture_types(
    root: Path,
    per_split: dict[str | None, list[Path]],
    index: dict[str, int],
    class_names: tuple[str, str],
) -> Dataset:
    """Fractured images labelled with their type folder too; the others with the fracture label only."""
    found = [
        (split, path, path.relative_to(d).parts[0] if index[d.name] == 1 else None, index[d.name])
        for split, dirs in per_split.items()
        for d in dirs
        if d.name in index
        for path in iter_images(d)
    ]
    type_of = case_merged({t for _, _, t, _ in found if t is not None}, "fracture type folders")
    typed = [(split, path, None if t is None else type_of[t], label) for split, path, t, label in found]
    types = _sorted_names(set(type_of.values()))
    type_index = {t: i for i, t in enumerate(types)}
    samples = [
        Sample(
            path=path,
            labels={FRACTURE: label} if kind is None else {FRACTURE: label, CLASS: type_index[kind]},
            split=split,
        )
        for split, path, kind, label in typed
    ]
    samples = _grouped_by_subfolder(root, samples, typed=True)
    warn_splits_lacking(samples, CLASS, types, "fracture type(s)")
    return Dataset(
        root=root,
        layout="class-folders",
        samples=tuple(samples),
        class_names={FRACTURE: class_names, CLASS: types},
    )


def _warn_same_meaning(root: Path, names: set[str], splits: list[set[str]]) -> None:
    """Say when several class names read as one fracture label, each in other splits
    (``train/Fracture``, ``val/Fractured``: sets merged from two sources): each is trained as a
    class of its own. Names side by side in one folder (``normal``, ``abnormal``, ``fracture``)
    were chosen so: nothing said, unless they differ only in punctuation (``Non_fractured``,
    ``non-fractured``: one label twice, read as three classes and no fracture head)."""
    for value, meaning in ((1, "fractured"), (0, "not fractured")):
        same = sorted(n for n in names if fracture_polarity(n) == value)
        in_other_splits = splits and all(len(classes.intersection(same)) <= 1 for classes in splits)
        unpunctuated = {re.sub(r"[\W_]+", "", name_key(n)) for n in same}
        if len(same) > 1 and (in_other_splits or len(unpunctuated) < len(same)):
            log.warning(
                "%s: the class folders %s all read as %s but are %d classes of their own here: if they "
                "are one label give them one name (a fracture model needs one fractured and one not "
                "fractured folder name)",
                root,
                ", ".join(repr(n) for n in same),
                meaning,
                len(same),
            )


def _warn_loose_files(root: Path) -> None:
    for parent in [root, *(d for d in visible_dirs(root) if split_name(d.name))]:
        loose = [p.name for p in parent.iterdir() if is_image_file(p)]
        if loose:
            log.warning("%d image(s) directly in %s belong to no class and are ignored", len(loose), parent)
