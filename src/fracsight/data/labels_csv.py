"""Reader for a folder of images with a ``labels.csv``: any mix of fracture, class and region labels.

This is the layout for data that carries more than one label per image (a fracture
flag and a fracture type, a type and a body region) or whose images are not sorted
into folders. One row per image; the columns, in any order:

- ``image`` (required): the image's path relative to the folder, each image on one row;
- ``fracture``: ``1``/``0``, ``true``/``false``, ``yes``/``no`` or a class-folder name
  (``fractured``, ``Non_fractured``, ...), on every row (an empty value is refused);
- ``class``: an N-class label such as the fracture type; may be empty (for example on
  images without a fracture), and such rows do not train or score the class head;
- ``region``: the body region, several separated by ``;``;
- ``split``: ``train``, ``val`` (``valid``, ...) or ``test``; empty everywhere for none;
- ``group``: images that must stay in one split (same patient or study).

A column that is absent means the data has no such label; a model trained on it
gets exactly the heads of the columns present. Other columns (notes, a patient number)
are ignored with a warning that names them, so that a misspelt ``clas`` is not silent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import unicodedata
from pathlib import Path

from fracsight.data._files import (
    case_merged,
    case_variant,
    fracture_polarity,
    is_image_file,
    name_order,
    read_csv_rows,
    split_name,
    with_case_hints,
)
from fracsight.data.sample import CLASS, FRACTURE, REGION, Dataset, Sample, warn_splits_lacking
from fracsight.errors import DatasetError

__all__ = ["LABELS_FILE", "is_labels_csv", "read_labels_csv"]

log = logging.getLogger(__name__)

LABELS_FILE = "labels.csv"
_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n"}
_LABEL_COLUMNS = ("fracture", "class", "region")
_KNOWN_COLUMNS = ("image", *_LABEL_COLUMNS, "split", "group")


def is_labels_csv(root: Path) -> bool:
    return (Path(root) / LABELS_FILE).is_file()


def _fracture(value: str, where: str) -> int:
    v = value.strip()
    if not v:  # a model gets a fracture head only when every image has the label
        raise DatasetError(f"{where}: fracture is empty; give every image one or leave the column out")
    if v.lower() in _TRUE:
        return 1
    if v.lower() in _FALSE:
        return 0
    number = _number(v)
    if number in (0.0, 1.0):  # 1.0 / 0.0 (a spreadsheet's or pandas' float column), 1,0 (decimal comma)
        return int(number)
    polarity = fracture_polarity(v)
    if polarity is None:
        kind = " (a kind of fracture? kinds go in a `class` column)" if "fractur" in v.lower() else ""
        raise DatasetError(
            f"{where}: fracture must be 1/0, true/false, yes/no or fractured/not fractured, got {v!r}{kind}"
        )
    return polarity


def _number(value: str) -> float | None:
    try:
        return float(value.replace(",", "."))
    except ValueError:
        return None


#: what R (``NA``), pandas (``nan``, ``<NA>``, ``None``), Excel (``#N/A``) and people write in
#: a cell without a value: read as the class, region or patient group of that name, a model got a
#: class "NA" and 43 images of one "patient" were kept in train together
_MISSING_WORDS = frozenset({"na", "n/a", "nan", "<na>", "#n/a", "null", "none", "-"})


def _value(row: dict[str, str], column: str, said_missing: dict[str, set[str]]) -> str | None:
    """``column``'s value in ``row``, None where it is empty or one of :data:`_MISSING_WORDS`."""
    value = (row.get(column) or "").strip()
    if value.lower() in _MISSING_WORDS:
        said_missing.setdefault(column, set()).add(value)
        return None
    return value or None


def _image_file(root: Path, value: str, where: str) -> Path:
    """The file a row's ``image`` names: a path relative to ``root`` as written (``a b.jpg``,
    `` lead.jpg``), or stripped of surrounding spaces, with Windows separators (``sub\\a.jpg``), or
    absolute inside ``root``; lexically inside ``root`` (an image may be a link to elsewhere, a
    ``../`` path may not)."""
    base = Path(os.path.normpath(root))
    stripped = value.strip()
    if not stripped:
        raise DatasetError(f"{where}: image is empty")
    candidates = [value, stripped]
    if "\\" in stripped:  # written on Windows
        candidates.append(stripped.replace("\\", "/"))
    if not stripped.isascii():
        # accents composed otherwise than the CSV writes them (macOS file names are NFD, Excel
        # writes NFC), or a name the disk holds in Latin-1 / Windows-1252 bytes (caf\xe9.jpg)
        written = candidates[1:]
        candidates += [unicodedata.normalize(form, c) for form in ("NFC", "NFD") for c in written]
        with contextlib.suppress(UnicodeEncodeError):
            candidates += [os.fsdecode(c.encode("cp1252")) for c in written]
    files = []
    outside = False
    for name in dict.fromkeys(c for c in candidates if c):
        file = Path(os.path.normpath(root / name))  # an absolute name stays absolute
        if file.is_absolute() and not base.is_absolute():  # the folder was given relative
            absolute = Path(os.path.abspath(base))
            if file.is_relative_to(absolute) and file != absolute:
                file = base / file.relative_to(absolute)
        if file.is_absolute() and not file.is_relative_to(base):
            # the folder reached through a link (/home -> /scratch/home) and the CSV written with
            # the other path (realpath, or the link's own): the folder of the path that is the
            # folder given once both are resolved; the rest is taken as written (normalised, no
            # ..), so that a sub-folder or image that is a link to elsewhere stays allowed
            real_base = os.path.realpath(base)
            same = next((a for a in file.parents if os.path.realpath(a) == real_base), None)
            if same is not None:
                file = base / file.relative_to(same)
        if file == base or not file.is_relative_to(base):
            outside = True
            continue
        if file.exists():
            return file
        files.append(file)
    if outside or not files:
        raise DatasetError(f"{where}: image must be a path inside {root}, got {value!r}")
    return files[-1]


def _not_ours(path: Path, why: str) -> DatasetError:
    """A labels.csv fracsight cannot read; where its folder holds class folders too, the way to
    read them: another tool's labels.csv (``filename,label``) beside them made the set unreadable
    with no word of the class folders, which evaluate and compare have no option to choose."""
    from fracsight.data._files import iter_images
    from fracsight.data.folders import class_folders

    # two classes at least, as the set would read: the usual images/ beside a labels.csv is one
    # folder, and renaming the labels.csv as advised then failed "need at least two classes"
    folders = [d for dirs in class_folders(path.parent).values() for d in dirs]
    classes = {d.name.casefold() for d in folders if next(iter_images(d), None) is not None}
    hint = ""
    if len(classes) >= 2:
        hint = (
            f"; {path.parent} also holds class folders, which a {LABELS_FILE} takes precedence over: "
            f"rename it (it may be another tool's) to read the class folders"
        )
    return DatasetError(f"{path} {why}{hint}")


def read_labels_csv(root: Path) -> Dataset:
    """Read ``root/labels.csv`` into a :class:`Dataset` (layout ``"labels-csv"``)."""
    root = Path(root)
    path = root / LABELS_FILE
    try:
        header, rows = read_csv_rows(path, lower=True, spreadsheet=True)
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e}") from e
    if "image" not in header:
        raise _not_ours(path, f"needs an 'image' column (found: {', '.join(header) or 'none'})")
    present = [c for c in _LABEL_COLUMNS if c in header]
    if not present:
        raise _not_ours(path, f"has no label column; give at least one of {', '.join(_LABEL_COLUMNS)}")
    if not rows:
        raise DatasetError(f"{path} lists no images")
    unknown = [c for c in header if c not in _KNOWN_COLUMNS]
    if unknown:  # notes and patient columns are common; a misspelt label column is not silent
        log.warning(
            "%s: column(s) %s ignored; fracsight reads %s",
            path.name,
            ", ".join(repr(c) for c in unknown),
            ", ".join(_KNOWN_COLUMNS),
        )

    parsed = []
    missing: list[tuple[str, Path]] = []  # (as listed, the file looked for)
    seen: dict[Path, int] = {}
    abnormality = False  # a fracture column of normal / abnormal (MURA's words)
    fracture_words: set[str] = set()  # fractured, not fractured: with abnormal, the two mixed
    said_missing: dict[str, set[str]] = {}  # column -> the words of a missing value found in it
    for n, row in rows:
        where = f"{path.name} line {n}"
        image = row["image"].strip()
        file = _image_file(root, row["image"], where)
        if file in seen:  # two rows, two labels (or twice the weight) for one image
            raise DatasetError(f"{where}: image {image!r} is listed already on line {seen[file]}")
        seen[file] = n
        if not is_image_file(file):
            missing.append((image, file))
            continue
        split_value = row.get("split", "").strip()
        split = split_name(split_value) if split_value else None
        if split_value and split is None:
            raise DatasetError(f"{where}: split must be train, val or test, got {split_value!r}")
        fracture = _fracture(row["fracture"], where) if "fracture" in row else None
        abnormality |= "abnormal" in row.get("fracture", "").lower()
        if "fractur" in row.get("fracture", "").lower():
            fracture_words.add(row["fracture"].strip())
        klass = _value(row, "class", said_missing)
        # `;` as documented; `,` too, as a spreadsheet writes a list in one cell ("hand,leg" was
        # read as one region of that name, a class of its own for the region head)
        regions = tuple(
            sorted({r.strip() for r in re.split(r"[;,]", _value(row, "region", said_missing) or "")} - {""})
        )
        parsed.append((file, fracture, klass, regions, split, _value(row, "group", said_missing)))
    for column, words in said_missing.items():
        log.warning(
            "%s: %s value(s) %s read as empty (a missing value, as R, pandas or a spreadsheet writes it)",
            path.name,
            column,
            ", ".join(sorted(words)),
        )
    if missing:
        # the names on disk in another case for the names shown only: each lists a folder, and for
        # 6000 rows in one folder that took 45 s
        variants = [(image, case_variant(file)) for image, file in missing[:3]]
        named, case_note = with_case_hints([(image, v.name if v else None) for image, v in variants])
        raise DatasetError(
            f"{path}: {len(missing)} image(s) not found or not an image file, e.g. {', '.join(named)}"
            f"{case_note}"
        )
    _warn_unlisted({file for file, *_ in parsed}, path.name)
    # values that differ only in case (Avulsion, avulsion; Hand, hand) are one class, as class folders
    class_of = case_merged({k for _, _, k, _, _, _ in parsed if k}, f"{path.name}: class values")
    region_of = case_merged({r for _, _, _, rs, _, _ in parsed for r in rs}, f"{path.name}: region values")
    class_names: dict[str, tuple[str, ...]] = {}
    if "fracture" in present:  # normal / abnormal values: MURA's label, as class folders so named
        class_names[FRACTURE] = ("normal", "abnormal") if abnormality else ("not fractured", "fractured")
    if abnormality and fracture_words:
        log.warning(
            "%s: the fracture column mixes normal/abnormal with %s: read as normal/abnormal, so a model "
            "trained on it says 'abnormality suspected'; use one pair of words",
            path.name,
            ", ".join(sorted(fracture_words)),
        )
    classes = tuple(sorted(set(class_of.values()), key=name_order))
    if "class" in present:
        if len(classes) < 2:
            fix = (
                "; fill it in, or leave the column out for a model without a class head"
                if not classes
                else ""
            )
            raise DatasetError(
                f"{path}: the class column needs at least two classes, found {list(classes)}{fix}"
            )
        class_names[CLASS] = classes
    regions = tuple(sorted(set(region_of.values())))
    if "region" in present and regions:
        class_names[REGION] = regions
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for file, fracture, klass, rs, split, group in parsed:
        labels: dict[str, int] = {}
        if fracture is not None:
            labels[FRACTURE] = fracture
        if klass is not None:
            labels[CLASS] = index[class_of[klass]]
        rs = tuple(sorted({region_of[r] for r in rs}))
        samples.append(Sample(path=file, labels=labels, regions=rs, split=split, group=group))
    warn_splits_lacking(samples, CLASS, classes, "class(es)")  # as class folders say it
    return Dataset(root=root, layout="labels-csv", samples=tuple(samples), class_names=class_names)


def _warn_unlisted(listed: set[Path], csv_name: str) -> None:
    """Warn of images beside the listed ones that the CSV leaves out (24 images in the folder,
    22 rows: "22 images" and not a word of the other two), as the FracAtlas reader does."""
    unlisted = sorted(
        f"{folder.name}/{p.name}"
        for folder in {file.parent for file in listed}
        for p in _listing(folder)
        if p not in listed and is_image_file(p)  # is_image_file leaves hidden files out
    )
    if unlisted:
        shown = ", ".join(unlisted[:10]) + (
            f", ... ({len(unlisted) - 10} more)" if len(unlisted) > 10 else ""
        )
        log.warning(
            "%d image(s) beside those %s lists are not in it and are ignored: %s",
            len(unlisted),
            csv_name,
            shown,
        )


def _listing(folder: Path) -> list[Path]:
    """The folder's entries; none where it cannot be listed (mode 711: its files read by name,
    as the CSV names them): a warning's check must never stop the read."""
    try:
        return list(folder.iterdir())
    except OSError:
        return []
