"""File-system helpers shared by the data set readers (private)."""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

from fracsight.errors import DatasetError

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLIT_ALIASES",
    "canonical_split",
    "case_merged",
    "case_variant",
    "content_hash",
    "exact_duplicates",
    "fracture_polarity",
    "is_hidden",
    "is_image_file",
    "iter_images",
    "name_key",
    "name_order",
    "read_csv_rows",
    "relative_name",
    "split_name",
    "visible_dirs",
    "warn_skipped",
    "with_case_hints",
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

_FINDING_WORDS = {"fractured", "fracture", "fractures", "broken"}
_POSITIVE_WORDS = _FINDING_WORDS | {"positive", "abnormal"}
_NEGATIVE_WORDS = {"normal", "negative", "healthy", "intact"}
_NEGATIONS = {"non", "not", "no", "un", "without"}  # before the finding: "no fracture"
_ABSENT = {"free", "absent", "negative"}  # after it: "fracture free"
_PRESENT = {"positive", "present"}
# words that say nothing of the label: `fractured_images`, `normal bone`, `fracture cases`, `xray`
_FILLER = {
    "image",
    "images",
    "case",
    "cases",
    "bone",
    "bones",
    "xray",
    "xrays",
    "radiograph",
    "radiographs",
    "class",
}
_NEGATIVE_COMPACT = re.compile(r"(non|not|no|un)(fractured?|fractures|broken)")


log = logging.getLogger(__name__)


# What archivers and file managers leave beside the images: macOS zips carry ``__MACOSX/`` (a
# copy of the tree holding ``._x.jpg`` resource forks), Windows ``Thumbs.db`` and ``desktop.ini``,
# removable drives ``$RECYCLE.BIN`` and ``System Volume Information``, Synology shares ``@eaDir``
# (a thumbnail of each image) and ``#recycle``/``#snapshot``. Read as hidden: a zip of ``data/``
# made on a Mac unpacked to ``data/`` + ``__MACOSX/``, and ``__MACOSX`` became a class; a copy off a
# Synology share made ``#recycle`` a class and trained on thumbnails of the test images.
_SYSTEM_NAMES = frozenset(
    {
        "__macosx",
        "thumbs.db",
        "ehthumbs.db",
        "desktop.ini",
        "$recycle.bin",
        "system volume information",
        "@eadir",
        "#recycle",
        "#snapshot",
    }
)


def is_hidden(path: Path) -> bool:
    """True for dot-files and dot-folders (``.DS_Store``, ``._image1.png``, ``.ipynb_checkpoints``)
    and what archivers and file managers leave beside the images (``__MACOSX``, ``Thumbs.db``,
    ``desktop.ini``)."""
    return path.name.startswith(".") or path.name.lower() in _SYSTEM_NAMES


def case_variant(path: Path) -> Path | None:
    """The file beside ``path`` whose name differs from it in case only (``IMG1.JPG`` for a listed
    ``IMG1.jpg``), None if there is none: a copy made on Windows or macOS, where names ignore case,
    lists names this file system does not find, and "missing" alone does not say why."""
    wanted = path.name.casefold()
    try:
        return next((p for p in path.parent.iterdir() if p.name.casefold() == wanted and p != path), None)
    except OSError:
        return None


def with_case_hints(missing: Sequence[tuple[str, str | None]]) -> tuple[list[str], str]:
    """Listed names not found, each with the name on disk that differs from it in case only (None:
    there is none), as a message shows them; and what the message ends with where any does."""
    shown = [listed + (f" (on disk as {found})" if found else "") for listed, found in missing]
    return shown, ("; file names are case-sensitive here" if any(found for _, found in missing) else "")


def is_image_file(path: Path) -> bool:
    """True for a visible file whose extension (any case) is one fracsight reads, or, without one of
    those, whose first bytes are an image's (PACS exports name DICOM files ``IM000001`` or by their
    UID), as ``fracsight predict`` lists a folder."""
    if is_hidden(path) or not path.is_file():  # is_file: opening a named pipe would wait for a writer
        return False
    if path.name.upper() == "DICOMDIR":  # a CD or PACS export's index (no pixels), as predict skips it
        return False
    from fracsight.io._sniff import holds_image

    # a data set's file without an image extension that cannot be opened (a README of mode 000) is
    # no sample: taken, it would stop `train`; predict takes it (a PACS export's IM0002) to say why
    return path.suffix.lower() in IMAGE_EXTENSIONS or holds_image(path, unopenable=False)


def visible_dirs(path: Path) -> list[Path]:
    """Sub-folders of ``path`` that are not hidden, sorted by name."""
    return sorted(p for p in path.iterdir() if p.is_dir() and not is_hidden(p))


def iter_images(folder: Path, skipped: list[Path] | None = None) -> Iterator[Path]:
    """Image files anywhere below ``folder``, sorted, skipping hidden files and hidden folders.

    Visible files that are not images (``notes.txt``, ``x.webp``) are appended to ``skipped`` when
    given, for the reader to say that they were left out (see :func:`warn_skipped`).

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
        try:
            entries = list(current.iterdir())
        except OSError as e:  # a sub-folder of someone else's: the rest of the data set is still read
            log.warning("%s cannot be listed (%s): its images are left out", current, e.strerror or e)
            continue
        for entry in entries:
            if is_hidden(entry):
                continue
            kind = _entry_kind(entry)
            if kind == "folder":
                key = _folder_key(entry)
                if key in above:
                    log.warning("%s links back to a folder it lies in: skipped", entry)
                else:
                    stack.append((entry, above | {key}))
            elif kind == "image":
                found.append(entry)
            elif kind != "other":
                log.warning("%s %s: skipped", entry, kind)
            elif skipped is not None:
                skipped.append(entry)
    yield from sorted(found)


def _entry_kind(entry: Path) -> str:
    """``folder``, ``image``, ``other``, or why an entry named as an image is none (a broken link,
    a device, pipe or socket). In a folder that can be listed but not entered (chmod -R 644) an
    entry named as an image is an image, whose reader says why it cannot be read: looking at it
    raised PermissionError, and the whole data set was lost."""
    try:
        if entry.is_dir():
            return "folder"
        if is_image_file(entry):
            return "image"
        if entry.suffix.lower() not in IMAGE_EXTENSIONS:
            return "other"
        if not os.path.exists(entry):  # a link to nothing, or a loop of links
            return (
                "links to a file that is not there (or to a loop of links)" if entry.is_symlink() else "other"
            )
        return "is not a regular file (a device, pipe or socket)"
    except OSError:
        return "image" if entry.suffix.lower() in IMAGE_EXTENSIONS else "other"


def warn_skipped(skipped: Sequence[Path], root: Path) -> None:
    """One warning naming the files a reader left out as not images (the first 10 and a count), so
    that images in a format fracsight does not read (``.webp``, ``.heic``) are not dropped silently."""
    if not skipped:
        return
    names = sorted(relative_name(p, root) for p in skipped)
    shown = ", ".join(names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")
    log.warning(
        "%d file(s) in %s are not images fracsight reads (%s, or DICOM without an extension) and are "
        "ignored: %s",
        len(names),
        root,
        ", ".join(sorted(e[1:] for e in IMAGE_EXTENSIONS)),
        shown,
    )


def _folder_key(folder: Path) -> tuple[int, int]:
    """What identifies a folder however it is reached (through links or not)."""
    st = folder.stat()
    return st.st_dev, st.st_ino


def name_key(name: str) -> str:
    """A class or type name as names are matched: ignoring case and how its accents are encoded
    (a Mac writes ``É`` in file names as ``E`` and a combining accent, NFD; Linux and Windows
    programs as one character, NFC: a folder copied from a Mac and one made here look the same)."""
    return unicodedata.normalize("NFC", name).casefold()


def name_order(name: str) -> tuple[str, str, str]:
    """Sort key of class names: alphabetically ignoring case and accents (``Épiphysaire`` with the
    E's, not after ``spiral`` as by code point), then by :func:`name_key`, then as spelt."""
    letters = unicodedata.normalize("NFKD", name.casefold())
    return "".join(c for c in letters if not unicodedata.combining(c)), name_key(name), name


def case_merged(names: set[str], what: str) -> dict[str, str]:
    """Each folder name mapped to its class name: names equal ignoring case (``train/fractured``,
    ``val/Fractured``) and accent encoding (:func:`name_key`) are one class, spelled as the first of
    them in sorted order (``Fractured``), its accents as one character each (NFC)."""
    spellings: dict[str, list[str]] = {}
    for name in sorted(names):
        spellings.setdefault(name_key(name), []).append(name)
    merged: dict[str, str] = {}
    for same in spellings.values():
        chosen = unicodedata.normalize("NFC", same[0])
        if len({unicodedata.normalize("NFC", n) for n in same}) > 1:
            log.warning("%s %s differ only in case: read as one, %r", what, ", ".join(same), chosen)
        elif len(same) > 1:  # alike on screen: say what tells them apart
            log.warning(
                "%s %r is spelt with accents encoded in two ways (NFC and NFD, as a Mac writes file "
                "names): read as one",
                what,
                chosen,
            )
        merged.update(dict.fromkeys(same, chosen))
    return merged


def content_hash(data: bytes) -> str:
    """sha256 of a file's bytes, in hex: the key exact duplicates share."""
    return hashlib.sha256(data).hexdigest()


def exact_duplicates(paths: Sequence[Path], *, images_only: bool = True) -> list[list[int]]:
    """Indices of the ``paths`` whose files hold the same bytes, in groups of two or more.

    Files are compared by size, then by their first 64 KiB, and only files still alike are read
    whole: a set without duplicates costs a ``stat`` per file and, where sizes repeat (uncompressed
    DICOM), one small read (their headers differ). Files that cannot be read, and files that are no
    image (empty, or an error page saved under several ``.jpg`` names by a failed download: they
    were "the same picture filed twice with different labels", and leakage between splits that the
    metrics, which leave them out, never saw), are left out; with ``images_only`` False, only empty
    files (how a data set is split: copies kept together whatever they hold, as splits were carved
    before 2026-12-07, so that a run's split is the same split now).
    """
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        try:
            by_size[path.stat().st_size].append(i)
        except OSError:
            continue
    alike = [group for size, group in by_size.items() if size and len(group) > 1]
    for read in (_head, _whole):
        keyed: dict[tuple[int, str], list[int]] = defaultdict(list)
        for n, group in enumerate(alike):
            for i in group:
                try:
                    keyed[(n, content_hash(read(paths[i])))].append(i)
                except OSError:
                    continue
        alike = [group for group in keyed.values() if len(group) > 1]
    if not images_only:
        return alike
    pictures = ([i for i in group if starts_as_image(paths[i])] for group in alike)
    return [group for group in pictures if len(group) > 1]


def starts_as_image(path: Path) -> bool:
    """Whether ``path`` starts as an image file of a format fracsight reads."""
    from fracsight.io._sniff import HEAD_BYTES, sniff_format

    try:
        return sniff_format(_head(path, HEAD_BYTES)) is not None
    except OSError:
        return False


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


def canonical_split(name: str | None) -> str | None:
    """A split as a user names it (``TEST``, ``testing``, ``All``) as the readers store it (``test``,
    ``all``), so that reports and cards name the split that was read; a name that is no split is
    kept as given (the data set's error names it)."""
    if name is None or name.strip().lower() == "all":
        return name and "all"
    return split_name(name) or name


def fracture_polarity(name: str) -> int | None:
    """1 if a class name means "fractured", 0 if it means "not fractured", None otherwise.

    Case, spaces, hyphens and underscores are ignored: ``Non_fractured``, ``not fractured``,
    ``no fracture``, ``fracture free``, ``normal``, ``negative``, ``healthy`` and ``intact`` are 0;
    ``Fractured``, ``fracture``, ``fracture present``, ``positive``, ``abnormal`` and ``broken`` are
    1. Words that say nothing of it (``images``, ``cases``, ``bone``, ``xray``) and a leading index
    (``0_normal``) are passed over; every other word must be known: ``non-displaced fracture`` (a
    fracture), ``fracture ruled out`` and ``displaced_fracture`` are None, never read by the one
    word known (they were: the first as not fractured, the other two as fractured).
    """
    tokens = [t for t in re.split(r"[\s_\-.]+", name.strip().lower()) if t and t not in _FILLER]
    if len(tokens) > 1 and tokens[0].isdigit():  # an index to sort folders by: `0_normal`, `1_fracture`
        tokens = tokens[1:]
    if len(tokens) == 1:
        (word,) = tokens
        if word in _POSITIVE_WORDS:
            return 1
        return 0 if word in _NEGATIVE_WORDS or _NEGATIVE_COMPACT.fullmatch(word) else None
    if len(tokens) != 2:
        return None
    first, second = tokens
    if first in _NEGATIONS and second in _POSITIVE_WORDS:
        return 0
    if first in _FINDING_WORDS and second in _ABSENT | _PRESENT:
        return int(second in _PRESENT)
    return None


def read_csv_rows(
    path: Path,
    *,
    lower: bool = False,
    required: Sequence[str] = (),
    spreadsheet: bool = False,
    file_names: bool = False,
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header of a CSV file (names stripped, lower-cased with ``lower``) and its rows, each with
    the line of the file it ends on (blank lines are skipped, so counting rows would be wrong) and
    its values as written. Refused: a ``required`` column missing, a column named twice (csv would
    keep the last one silently), a row with more values than columns (a shifted row), and a file
    that is not UTF-8 CSV text.

    The separator is the one of ``,``, ``;`` (spreadsheets in European locales) and tab that the
    header line holds most of. Columns without a name that hold nothing (what a spreadsheet saves
    beside a table: ``image,fracture,,``) are dropped. With ``spreadsheet`` (a file a person saved:
    labels.csv), rows that hold nothing (``,,,``) are skipped, a UTF-16 file (Excel's "Unicode
    text") is read too, and a file that is not UTF-8 is read as Windows-1252 (Excel's "CSV" on
    Windows) with a warning; with ``file_names`` too (a batch manifest: ``(echo path; ls) > m.csv``
    of names in two encodings), such a file's bytes that are not UTF-8 are kept as the file system
    gives them (``os.fsdecode``), for the reader to try as Windows-1252 where no file has them.
    """
    text = _csv_text(path, spreadsheet, file_names)
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = max(",;\t", key=lambda d: (first.count(d), d == ","))
    if path.suffix.lower() == ".tsv":  # a one-column header holds no separator to tell by
        delimiter = "\t"
    try:
        table = [(n, row) for n, row in _csv_lines(text, delimiter)]
    except csv.Error as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    if not table:
        return [], []
    _, names = table[0]
    header = [(h.strip().lower() if lower else h.strip()) for h in names]
    body = table[1:]
    unnamed = [i for i, h in enumerate(header) if not h]
    for i in unnamed:
        holding = next((n for n, row in body if i < len(row) and row[i].strip()), None)
        if holding is not None:
            raise DatasetError(
                f"{path.name} line {holding} has a value in column {i + 1}, which has no name in the header"
            )
    keep = [i for i, h in enumerate(header) if h]
    header = [header[i] for i in keep]
    absent = [c for c in required if c not in header]
    if absent:
        raise DatasetError(f"{path} lacks column(s) {', '.join(absent)}; found: {', '.join(header)}")
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise DatasetError(f"{path} has column(s) {', '.join(twice)} more than once")
    width = len(names)
    rows = []
    for n, row in body:
        if len(row) > width and any(v.strip() for v in row[width:]):
            raise DatasetError(f"{path.name} line {n} has {len(row)} values for {len(header)} columns")
        if spreadsheet and not any(v.strip() for v in row):  # ",,," : a row a spreadsheet kept
            continue
        row = row + [""] * (width - len(row))  # a short row: the missing values are empty
        rows.append((n, {header[k]: row[i] for k, i in enumerate(keep)}))
    return header, rows


def _csv_lines(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank rows of ``text`` with the line each ends on."""
    import io

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    for row in reader:
        if row:
            yield reader.line_num, row


def _csv_text(path: Path, spreadsheet: bool, file_names: bool = False) -> str:
    data = path.read_bytes()
    if spreadsheet and data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise DatasetError(f"cannot read {path}: {e}") from None
    if b"\x00" in data:
        raise DatasetError(f"cannot read {path}: it holds NUL bytes: not CSV text (UTF-16 without a BOM?)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if not spreadsheet:
            raise DatasetError(f"cannot read {path}: {e}") from None
        if file_names:
            log.warning(
                "%s is not UTF-8 (byte %d is not): its names are read as the file system's bytes, "
                "and as Windows-1252 (Excel's CSV on Windows) where no file has those",
                path,
                e.start,
            )
            return data.decode("utf-8", "surrogateescape")
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            raise DatasetError(f"cannot read {path}: neither UTF-8 nor Windows-1252 text ({e})") from None
        log.warning(
            "%s is not UTF-8 (byte %d is not): read as Windows-1252, as Excel saves CSV on Windows; "
            "save it as 'CSV UTF-8' to be sure of non-ASCII names",
            path,
            e.start,
        )
        return text
