"""File-system helpers shared by the data set readers (private)."""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

from fracsight.errors import DatasetError

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLIT_ALIASES",
    "content_hash",
    "exact_duplicates",
    "fracture_polarity",
    "is_hidden",
    "is_image_file",
    "iter_images",
    "read_csv_rows",
    "relative_name",
    "split_name",
    "visible_dirs",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"})

# Folder names accepted as a split level, mapped to the canonical split name.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}

_NEGATIVE_WORDS = {"non", "not", "no", "un", "normal", "negative", "healthy"}
_POSITIVE_WORDS = {"fractured", "fracture", "fractures", "positive", "abnormal", "broken"}
_NEGATIVE_COMPACT = re.compile(r"(non|not|no|un)(fractured?|fractures|broken)")


log = logging.getLogger(__name__)


def is_hidden(path: Path) -> bool:
    """True for dot-files and dot-folders (``.DS_Store``, ``._image1.png``, ``.ipynb_checkpoints``)."""
    return path.name.startswith(".")


def is_image_file(path: Path) -> bool:
    """True for a visible file whose extension (any case) is one fracsight reads."""
    return not is_hidden(path) and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def visible_dirs(path: Path) -> list[Path]:
    """Sub-folders of ``path`` that are not hidden, sorted by name."""
    return sorted(p for p in path.iterdir() if p.is_dir() and not is_hidden(p))


def iter_images(folder: Path) -> Iterator[Path]:
    """Image files anywhere below ``folder``, sorted, skipping hidden files and hidden folders.

    Linked folders are followed, except a link back to a folder it lies in (``ln -s .. up``):
    followed, it read the same images again and again (a wrong count) or, with two such links,
    never ended.
    """
    outer = frozenset(_folder_key(f) for f in (*folder.absolute().parents, *folder.resolve().parents))
    start = _folder_key(folder)
    if start in outer:
        log.warning("%s links back to a folder it lies in: skipped", folder)
        return
    stack: list[tuple[Path, frozenset[tuple[int, int]]]] = [(folder, outer | {start})]
    found: list[Path] = []
    while stack:
        current, above = stack.pop()
        for entry in current.iterdir():
            if is_hidden(entry):
                continue
            if entry.is_dir():
                key = _folder_key(entry)
                if key in above:
                    log.warning("%s links back to a folder it lies in: skipped", entry)
                else:
                    stack.append((entry, above | {key}))
            elif is_image_file(entry):
                found.append(entry)
            elif entry.is_symlink() and entry.suffix.lower() in IMAGE_EXTENSIONS:
                log.warning("%s links to a file that is not there: skipped", entry)
    yield from sorted(found)


def _folder_key(folder: Path) -> tuple[int, int]:
    """What identifies a folder however it is reached (through links or not)."""
    st = folder.stat()
    return st.st_dev, st.st_ino


def content_hash(data: bytes) -> str:
    """sha256 of a file's bytes, in hex: the key exact duplicates share."""
    return hashlib.sha256(data).hexdigest()


def exact_duplicates(paths: Sequence[Path]) -> list[list[int]]:
    """Indices of the ``paths`` whose files hold the same bytes, in groups of two or more.

    Files are compared by size, then by their first 64 KiB, and only files still alike are read
    whole: a set without duplicates costs a ``stat`` per file and, where sizes repeat (uncompressed
    DICOM), one small read (their headers differ). Files that cannot be read are left out.
    """
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        try:
            by_size[path.stat().st_size].append(i)
        except OSError:
            continue
    alike = [group for group in by_size.values() if len(group) > 1]
    for read in (_head, _whole):
        keyed: dict[tuple[int, str], list[int]] = defaultdict(list)
        for n, group in enumerate(alike):
            for i in group:
                try:
                    keyed[(n, content_hash(read(paths[i])))].append(i)
                except OSError:
                    continue
        alike = [group for group in keyed.values() if len(group) > 1]
    return alike


def _head(path: Path, size: int = 1 << 16) -> bytes:
    with path.open("rb") as f:
        return f.read(size)


def _whole(path: Path) -> bytes:
    return path.read_bytes()


def relative_name(path: Path, root: Path) -> str:
    """How messages and reports name a file of a data set: its path under ``root`` (in MURA every
    file is ``image1.png``), or the whole path when it lies elsewhere."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def split_name(name: str) -> str | None:
    """Canonical split for a folder or column value (``valid`` -> ``val``), None if not a split name."""
    return SPLIT_ALIASES.get(name.strip().lower())


def fracture_polarity(name: str) -> int | None:
    """1 if a class name means "fractured", 0 if it means "not fractured", None otherwise.

    Case, spaces, hyphens and underscores are ignored: ``Non_fractured``, ``not fractured``,
    ``normal`` and ``negative`` are 0; ``Fractured``, ``fracture``, ``positive`` and
    ``abnormal`` are 1.
    """
    tokens = [t for t in re.split(r"[\s_\-.]+", name.strip().lower()) if t]
    if not tokens:
        return None
    if any(t in _NEGATIVE_WORDS for t in tokens) or _NEGATIVE_COMPACT.fullmatch("".join(tokens)):
        return 0
    if any(t in _POSITIVE_WORDS for t in tokens):
        return 1
    return None


def read_csv_rows(
    path: Path, *, lower: bool = False, required: Sequence[str] = ()
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header of a CSV file (names stripped, lower-cased with ``lower``) and its rows, each with
    the line of the file it ends on (blank lines are skipped, so counting rows would be wrong) and
    its values as written. Refused: a ``required`` column missing, a column named twice (csv would
    keep the last one silently), a row with more values than columns (a shifted row), and a file
    that is not UTF-8 CSV text."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [(h.strip().lower() if lower else h.strip()) for h in reader.fieldnames or []]
            absent = [c for c in required if c not in header]
            if absent:
                raise DatasetError(f"{path} lacks column(s) {', '.join(absent)}; found: {', '.join(header)}")
            twice = sorted({h for h in header if header.count(h) > 1})
            if twice:
                raise DatasetError(f"{path} has column(s) {', '.join(twice)} more than once")
            rows = []
            for row in reader:
                if None in row:
                    raise DatasetError(
                        f"{path.name} line {reader.line_num} has {len(header) + len(row[None])} values "
                        f"for {len(header)} columns"
                    )
                values = (v or "" for v in row.values())  # in the header's order; None: a short row
                rows.append((reader.line_num, dict(zip(header, values, strict=True))))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    return header, rows
