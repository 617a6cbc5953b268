"""Reader for the MURA layout.

``[train|valid/]XR_<PART>/patient<ID>/study<N>_<positive|negative>/image<K>.png``.

MURA labels whole studies as *abnormal* (positive) or normal; abnormal includes
fractures but also hardware, degenerative disease, lesions and more. fracsight stores
that label under the ``"fracture"`` task (1 = abnormal) so the same training code runs,
with class names ``("normal", "abnormal")`` saying what it really is.

When ``*_labeled_studies.csv`` files (MURA's official labels: ``path,label`` without a
header) sit in the root they are the label source, and studies whose folder suffix
disagrees are logged; otherwise the ``_positive`` / ``_negative`` folder suffix is.
Every image is grouped by patient, so a patient never straddles splits. ``*_image_paths.csv``
(MURA's list of every image) is only read to warn about the images it lists that are not on disk.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
import shlex
from pathlib import Path, PurePosixPath

from fracsight.data._files import (
    case_variant,
    is_image_file,
    iter_images,
    relative_name,
    split_name,
    visible_dirs,
    warn_skipped,
)
from fracsight.data.sample import FRACTURE, REGION, Dataset, Sample
from fracsight.errors import DatasetError

__all__ = ["is_mura", "mura_part_folders", "mura_piece", "read_mura"]

log = logging.getLogger(__name__)

_STUDY = re.compile(r"(study\d+)(?:_(positive|negative))?", re.IGNORECASE)
_PATIENT = re.compile(r"patient\d+", re.IGNORECASE)
_SUFFIX_LABEL = {"positive": 1, "negative": 0}
_LISTED = 10  # files or studies a warning names; the rest are counted


def _is_part(path: Path) -> bool:
    return path.name.upper().startswith("XR_") and len(path.name) > 3


def mura_part_folders(root: Path) -> list[tuple[str | None, Path]]:
    """``(split, XR_<PART> folder)`` pairs, at the root or one split folder down."""
    found: list[tuple[str | None, Path]] = []
    for d in visible_dirs(root):
        if _is_part(d):
            found.append((None, d))
        elif split_name(d.name):
            found.extend((split_name(d.name), p) for p in visible_dirs(d) if _is_part(p))
    return found


def _studies(folder: Path) -> list[Path]:
    return [d for d in visible_dirs(folder) if _STUDY.fullmatch(d.name)]


def mura_piece(folder: Path) -> str | None:
    """A message for a folder that is one piece of a MURA tree (a body part, a patient), whose
    sub-folders would otherwise be read as class folders: XR_WRIST trained a classifier of patient
    IDs without a word. None for any other folder."""
    subs = visible_dirs(folder)
    if _is_part(folder) and any(_PATIENT.fullmatch(p.name) and _studies(p) for p in subs[:20]):
        piece = f"MURA's {folder.name} folder"
    elif subs and _PATIENT.fullmatch(folder.name) and len(_studies(folder)) == len(subs):
        piece = "a MURA patient's folder"
    else:
        return None
    said = (
        f"{folder} is {piece}, not a whole data set (its sub-folders would be read as classes): give "
        "the folder that holds the XR_<PART> folders (MURA-v1.1)"
    )
    if not _is_part(folder):
        return said
    name = folder.name.lower().removeprefix("xr_")
    split = split_name(folder.parent.name)
    if split is None:
        links = f"mkdir {name} && ln -s {shlex.quote(str(folder.resolve()))} {name}/"
    else:  # the other split's folder of the same part too, where MURA has it
        parts = [d / folder.name for d in visible_dirs(folder.parent.parent) if split_name(d.name)]
        made = " ".join(f"{name}/{p.parent.name}" for p in parts if p.is_dir())
        linked = " && ".join(
            f"ln -s {shlex.quote(str(p.resolve()))} {name}/{p.parent.name}/" for p in parts if p.is_dir()
        )
        links = f"mkdir -p {made} && {linked}"
    return f"{said}; to use {folder.name} alone, make a folder of links to it and give that: {links}"


def is_mura(root: Path) -> bool:
    """True if ``root`` holds ``XR_<PART>`` folders (directly or under train/valid)."""
    return bool(mura_part_folders(root))


def read_mura(root: Path) -> Dataset:
    """Read a MURA folder into a :class:`Dataset` (layout ``"mura"``)."""
    csv_labels = _read_labeled_studies(root)
    used: set[str] = set()
    keyed: list[tuple[str, Sample]] = []  # each image with its study folder
    unlabeled: list[str] = []
    disagree: list[str] = []
    conflicting: list[str] = []  # without a split folder, labelled 0 in one split's CSV, 1 in another's
    skipped: list[Path] = []
    empty: list[str] = []  # labelled study folders without an image (a partial copy, say)
    folders: dict[str, set[str]] = {}  # study id -> its study folders (XR_X/patientN/studyM_suffix)
    loose: list[str] = []  # images beside the study folders: no study, so no label
    for split, part_dir in mura_part_folders(root):
        region = part_dir.name[3:].lower()
        loose += _loose_images(part_dir, root)
        for patient in visible_dirs(part_dir):
            loose += _loose_images(patient, root)
            for study in visible_dirs(patient):
                match = _STUDY.fullmatch(study.name)
                key = f"{part_dir.name}/{patient.name}/{study.name}"
                if match is None:
                    log.warning("%s is not a study<N>[_positive|_negative] folder and is ignored", study)
                    continue
                folder_label = _SUFFIX_LABEL.get((match.group(2) or "").lower())
                label = _lookup(csv_labels, key, split)
                if label is None and split is None and len({lb for _, lb in csv_labels.get(key, [])}) > 1:
                    used.add(key)  # on disk, and in the CSVs: but which label?
                    conflicting.append(key)
                if label is None:
                    label = folder_label
                else:
                    used.add(key)
                    if folder_label is not None and folder_label != label:
                        disagree.append(key)
                if label is None:
                    unlabeled.append(key)
                    continue
                study_id = f"{part_dir.name}/{patient.name}/{match.group(1)}"
                folders.setdefault(study_id, set()).add(key)
                before = len(keyed)
                keyed.extend(
                    (
                        key,
                        Sample(
                            path=p,
                            labels={FRACTURE: label},
                            regions=(region,),
                            study_id=study_id,
                            group=patient.name,
                            split=split,
                        ),
                    )
                    for p in iter_images(study, skipped)
                )
                if len(keyed) == before:
                    empty.append(relative_name(study, root))
    warn_skipped(skipped, root)
    _warn_listed(
        "image(s) or image folder(s) outside the XR_<PART> folders are left out (MURA's layout is "
        "[train|valid/]XR_<PART>/patient<ID>/study<N>_<positive|negative>/)",
        _outside_part_folders(root),
    )
    _warn_listed("labelled study folder(s) hold no images and are left out", empty)
    _warn_listed("image(s) outside a study folder are left out (no study, so no label)", loose)
    if unlabeled:
        log.warning(
            "%d study folder(s) have neither a _positive/_negative suffix nor a csv label and are "
            "ignored: %s",
            len(unlabeled),
            ", ".join(unlabeled[:10]),
        )
    if disagree:
        log.warning(
            "%d study folder suffix(es) disagree with the labeled-studies csv (csv used): %s",
            len(disagree),
            ", ".join(disagree[:10]),
        )
    _warn_listed(
        "study folder(s) without a split folder are labelled 0 in one split's labeled-studies csv and "
        "1 in another's: the folder's suffix is used, and one without a suffix is left out",
        conflicting,
    )
    _warn_listed("study(ies) in the labeled-studies csv are not on disk", sorted(set(csv_labels) - used))
    _warn_listed(
        "image(s) listed in the *_image_paths.csv are not on disk (a partial copy or a removed file: "
        "the counts and figures are of the images present)",
        _missing_listed_images(root),
    )
    if not keyed:
        raise DatasetError(f"{root}: MURA layout found (XR_<PART> folders) but no labeled study images in it")
    # study1_positive and study1_negative of one patient and part are two studies, not one of two
    # labels (which study-level figures would count as one abnormal study)
    twice = {study for study, found in folders.items() if len(found) > 1}
    samples = [dataclasses.replace(s, study_id=key) if s.study_id in twice else s for key, s in keyed]
    regions = tuple(sorted({s.regions[0] for s in samples}))
    class_names = {FRACTURE: ("normal", "abnormal"), REGION: regions}
    return Dataset(root=root, layout="mura", samples=tuple(samples), class_names=class_names)


def _loose_images(folder: Path, root: Path) -> list[str]:
    """The images directly in a body-part or patient folder, where MURA has only folders."""
    return sorted(relative_name(p, root) for p in folder.iterdir() if is_image_file(p))


def _outside_part_folders(root: Path) -> list[str]:
    """Images, and folders holding images, at the root or in a split folder but in no ``XR_<PART>``
    folder (``XR-ANKLE/``, ``misc/XR_ELBOW/``, a stray ``train/x.png``): read by nothing, once
    without a word."""
    splits = [d for d in visible_dirs(root) if split_name(d.name) and not _is_part(d)]
    outside: list[str] = []
    for parent in (root, *splits):
        outside += _loose_images(parent, root)
        outside += [
            relative_name(d, root) + "/"
            for d in visible_dirs(parent)
            if not _is_part(d) and d not in splits and next(iter_images(d), None) is not None
        ]
    return outside


def _warn_listed(what: str, names: list[str]) -> None:
    """One warning counting ``names`` and naming the first 10 (nothing when there are none)."""
    if names:
        more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
        log.warning("%d %s: %s%s", len(names), what, ", ".join(names[:_LISTED]), more)


def _missing_listed_images(root: Path) -> list[str]:
    """Images that MURA's ``*_image_paths.csv`` (one ``MURA-v1.1/<split>/XR_<PART>/.../imageK.png``
    a line, no header) lists but that are not on disk, named as listed. Labels never come from
    this file; it only tells a complete copy from a partial one."""
    missing: list[str] = []
    for path in sorted(root.glob("*_image_paths.csv")):
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            log.warning("cannot read %s to check the images it lists: %s", path.name, e)
            continue
        for line in lines:
            listed = line.strip().split(",")[0].strip().replace("\\", "/")
            parts = PurePosixPath(listed).parts
            at = next((i for i, p in enumerate(parts) if p.upper().startswith("XR_")), None)
            if at is None:
                continue  # a header or a blank line: not an image path
            # with or without the split folder, as the folder given may be the split's parent or not;
            # a name in another case (a copy made on Windows) is on disk, and read like any image
            files = [root.joinpath(*parts[start:]) for start in {max(at - 1, 0), at}]
            if not any(f.is_file() or case_variant(f) for f in files):
                missing.append(listed)
    return missing


def _read_labeled_studies(root: Path) -> dict[str, list[tuple[str | None, int]]]:
    """``XR_PART/patient/studyN_x`` -> [(split, label)] from every ``*_labeled_studies.csv`` in ``root``."""
    labels: dict[str, list[tuple[str | None, int]]] = {}
    for path in sorted(root.glob("*_labeled_studies.csv")):
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                rows = list(csv.reader(f))
        except (UnicodeDecodeError, csv.Error) as e:
            raise DatasetError(f"cannot read {path}: {e}") from None
        for n, row in enumerate(rows, start=1):
            if not row or not row[0].strip():
                continue
            parts = PurePosixPath(row[0].strip().replace("\\", "/")).parts
            at = next((i for i, p in enumerate(parts) if p.upper().startswith("XR_")), None)
            value = row[1].strip() if len(row) > 1 else ""
            if at is None or len(parts) < at + 3 or value not in ("0", "1"):
                if n == 1 and at is None:  # tolerate a header line (a study path is a row)
                    continue
                raise DatasetError(
                    f"{path}:{n}: expected '<...>/XR_<PART>/<patient>/<study>/,<0|1>', got {row}"
                )
            split = split_name(parts[at - 1]) if at > 0 else None
            entries = labels.setdefault("/".join(parts[at : at + 3]), [])
            if any(s == split and label != int(value) for s, label in entries):  # which one is true?
                raise DatasetError(f"{path}:{n}: {row[0].strip()} is labelled 0 and 1")
            if (split, int(value)) not in entries:  # a row given twice is one label (it lost it)
                entries.append((split, int(value)))
    return labels


def _lookup(labels: dict[str, list[tuple[str | None, int]]], key: str, split: str | None) -> int | None:
    entries = labels.get(key, [])
    same_split = [label for s, label in entries if s == split]
    if same_split:
        return same_split[0]
    # a row that names no split; never another split's study of the same name (train's
    # patient00001/study1 is not valid's: its label went to it, against its own folder's suffix)
    unsplit = [label for s, label in entries if s is None]
    if unsplit or split is not None:
        return unsplit[0] if len(unsplit) == 1 else None
    # a study folder without its split folder (XR_WRIST copied out of train/), and MURA's rows,
    # which always name one: their label, where every split's row of that name agrees (else the
    # CSV was skipped as "not on disk" and a suffix-less study, whose only label it is, dropped)
    found = {label for _, label in entries}
    return found.pop() if len(found) == 1 else None
