"""What a batch job predicts: folders, image files, path lists and CSV/Parquet manifests -> paths.

>>> from pathlib import Path
>>> collect_batch_inputs([Path("archive/")])             # doctest: +SKIP
{'/data/archive/a/1.dcm': 'a/1.dcm', '/data/archive/a/2.dcm': 'a/2.dcm', ...}
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path

from fracsight.errors import DatasetError
from fracsight.inference.tabular import distinct_names, input_key, named_inputs, text_cell, unescaped_cell
from fracsight.io import IMAGE_SUFFIXES, url_text

__all__ = ["LIST_SUFFIXES", "MANIFEST_SUFFIXES", "collect_batch_inputs"]

LIST_SUFFIXES = {".txt", ".lst"}  # one path per line
MANIFEST_SUFFIXES = {".csv", ".tsv", ".parquet"}  # a table with a path column
# tables a manifest cannot be: refused before Ray starts (one was an "unsupported_format" row)
OTHER_TABLE_SUFFIXES = {".xlsx", ".xls", ".ods", ".json", ".jsonl"}
COMPRESSED_SUFFIXES = {".gz", ".bz2", ".xz", ".zst", ".zip", ".7z"}  # of a manifest: m.csv.gz


def collect_batch_inputs(args: Sequence[Path], *, path_column: str = "path") -> dict[str, str]:
    """Absolute paths of every input, each file once (by its resolved path: a file listed twice,
    or reached through a link, is the first of them), in the order given (a folder given that holds no
    image, a row of its own, after them), each with the name its row
    gives it (as ``fracsight predict`` names it: the path under a folder given, else the file name).

    A folder gives its image files (recursively, as ``fracsight predict``); a ``.txt``/``.lst``
    file one path per line (``#`` comments); a ``.csv``/``.tsv``/``.parquet`` manifest its ``path_column``.
    Relative paths in a list or manifest are relative to its folder. Paths that do not exist stay
    in: their rows say ``unreadable_image``. Raises :class:`~fracsight.errors.DatasetError` for a
    manifest that cannot be read or lacks the column.
    """
    entries: list[tuple[str, Path, str]] = []  # absolute path, path as typed, name
    empty: list[Path] = []  # folders given that hold no image
    # each file once, however it is reached (``a.jpg``, ``./a.jpg``, a link), but once per study folder,
    # as predict takes it: one linked into a second MURA study is a view of that one too
    seen: set[tuple[str, object]] = set()
    rowless: list[Path] = []  # lists and manifests without a row (an empty shard of a daily export)
    for arg in args:
        listed = _listed_paths(arg, path_column)
        if listed == []:
            rowless.append(arg)
        # relative paths in a list or manifest: relative to its folder
        if listed is None:
            found = [(path, path, name) for path, name in named_inputs([arg])]
            if not found and os.path.isdir(arg):  # a row of its own, among others (an unmounted share)
                empty.append(arg)
        else:
            base = _rows_base(arg, listed)
            _refuse_relative_to_here(arg, listed, base)
            found = [f for p in listed for f in _listed(base, Path(p))]
        for path, typed, name in found:
            if (key := input_key(path)) not in seen:
                seen.add(key)
                entries.append((_absolute(path), typed, name))
    if not entries and rowless:  # said for what they are: "no image files found" named none of them
        raise DatasetError(f"{', '.join(map(str, rowless))}: no rows (no path listed in it)")
    if entries:  # alone they are no input at all (no_images), as for predict
        entries += [(_absolute(folder), folder, text_cell(str(folder))) for folder in empty]
    # two files of one name (a/x.jpg, b/x.jpg) are named by their paths as typed, as predict names them
    named = distinct_names([(typed, name) for _, typed, name in entries])
    return {path: name for (path, _, _), (_, name) in zip(entries, named, strict=True)}


def _absolute(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute as the system resolves it: ``..`` after a linked folder leads where
    the link leads (os.path.abspath dropped it as text: another file of that name was predicted,
    or "no such file" for one ``ls`` shows). A path without ``..`` keeps its spelling, and so the
    keys of the rows an earlier run committed."""
    text = os.path.join(os.getcwd(), path)
    if ".." not in Path(text).parts:
        return os.path.normpath(text)
    # normalised after: a last part `..` (a folder given as `..`) is the resolved folder's parent
    return os.path.normpath(os.path.join(os.path.realpath(os.path.dirname(text)), os.path.basename(text)))


def _listed(base: Path, typed: Path) -> list[tuple[Path, Path, str]]:
    """``(path, path as typed, name)`` of the files a row of a list or manifest (``typed``, relative
    to ``base``) gives: a folder its images, named as ``fracsight predict`` names them (a study
    folder in a manifest was one ``is a folder, not an image file`` row); a folder without any, or
    a file, itself (every row gives a row of the output: its error code says what it is)."""
    typed = _as_meant(base, typed)
    path = base / typed
    found = (
        # os.path: pathlib raised PermissionError for a row in a folder not to be entered
        [(f, typed / f.relative_to(path), name) for f, name in named_inputs([path])]
        if os.path.isdir(path)
        else []
    )
    return found or [(path, typed, text_cell(typed.name))]


_SAMPLE = 20  # relative rows looked at (a manifest may list millions, on NFS)


def _relative_rows(listed: Sequence[str]) -> list[str]:
    return [p for p in listed if not os.path.isabs(p) and not p.startswith("~")][:_SAMPLE]


def _rows_base(arg: Path, listed: Sequence[str]) -> Path:
    """The folder a list's relative rows are read from: its own; for a list reached through a link,
    the folder it lies in where its rows are found there and not beside the link (``../imgs/x.jpg``
    in a linked manifest was read beside the link: every row an ``unreadable_image`` row)."""
    real = Path(os.path.realpath(arg)).parent
    if real == Path(os.path.realpath(arg.parent)):
        return arg.parent
    relative = _relative_rows(listed)
    if any(os.path.lexists(arg.parent / p) for p in relative) or not any(
        os.path.lexists(real / p) for p in relative
    ):
        return arg.parent
    return real


def _refuse_relative_to_here(arg: Path, listed: Sequence[str], base: Path) -> None:
    """Refuse a list whose relative paths are relative to the folder the command runs in, or to the
    folder above the list's (as MURA's lists are written), not to the list's own (``base``): all its
    rows became ``unreadable_image`` rows, committed, after Ray started. Looks at the first
    relative rows only."""
    relative = _relative_rows(listed)
    if not relative or any(os.path.lexists(base / p) for p in relative):
        return
    # where they are found instead: the current folder, or the folder above the list's, from which
    # MURA's lists are written (MURA-v1.1/valid/...; read from inside MURA-v1.1, each row was an
    # unreadable_image row)
    elsewhere = [
        (Path(os.curdir), "the current folder"),
        (Path(os.path.abspath(base)).parent, "the folder above it, as MURA's lists are"),
    ]
    if os.path.realpath(base) == os.path.realpath(os.curdir):
        elsewhere = elsewhere[1:]
    for folder, what in elsewhere:
        found = sum(os.path.lexists(folder / p) for p in relative)
        if found:
            raise DatasetError(
                f"{arg}: its relative paths are read relative to its folder ({base}), where none of the "
                f"first {len(relative)} exists, and {found} of them exist relative to {what}: write them "
                "relative to the list's folder, or absolute"
            )


def _as_meant(base: Path, typed: Path) -> Path:
    """A row's path as this machine spells it: ``~/x.jpg`` (no shell expanded it) in the home
    folder; ``sub\\x.jpg``, written on Windows, as ``sub/x.jpg``. Both were rows for
    ``<list folder>/~/x.jpg`` or a file named ``sub\\x.jpg``, ``no such file``. A file of the
    literal name, where there is one, wins."""
    text = str(typed)
    if not (text.startswith("~") or "\\" in text) or os.path.lexists(base / typed):
        return typed  # one stat more only for such rows (a manifest may list millions, on NFS)
    if text.startswith("~") and (home := Path(os.path.expanduser(text))) != typed:
        return home
    if os.sep == "/" and "\\" in text and os.path.lexists(base / (posix := Path(text.replace("\\", "/")))):
        return posix
    return typed


def _listed_paths(arg: Path, path_column: str) -> list[str] | None:
    """The paths of a path list or manifest as written in it; None for a folder or an image file."""
    suffix = arg.suffix.lower()
    inner = Path(arg.stem).suffix.lower()
    if os.path.isfile(arg) and suffix in COMPRESSED_SUFFIXES and inner in MANIFEST_SUFFIXES | LIST_SUFFIXES:
        # read as an image, it became an unsupported_format row of the output, after Ray started
        raise DatasetError(
            f"{arg}: a compressed {inner} file: decompress it first (or save the table as Parquet)"
        )
    if os.path.isfile(arg) and suffix in OTHER_TABLE_SUFFIXES:
        raise DatasetError(
            f"{arg}: a {suffix} file is no manifest fracsight reads: save the table as CSV or Parquet "
            "with a column of paths (or list the paths in a .txt file)"
        )
    if os.path.isfile(arg) and suffix in LIST_SUFFIXES:
        return _list_file(arg)
    # a folder named *.parquet is a Parquet dataset (as Spark, Ray Data or pandas with
    # partition_cols write one); it was a folder without images, "no image files found"
    if (os.path.isfile(arg) and suffix in MANIFEST_SUFFIXES) or (os.path.isdir(arg) and suffix == ".parquet"):
        return _manifest(arg, path_column)
    return None


def _list_file(path: Path) -> list[str]:
    """One path a line. A line is bytes decoded as the file system decodes a name (UTF-8, other
    bytes kept as they are), so ``find /archive > list.txt`` over names written under Latin-1
    lists those files (it refused the whole list with UnicodeDecodeError)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the path list ({e.strerror or type(e).__name__})") from None
    if b"\0" in data:  # no path holds NUL: a UTF-16 list (Windows "Unicode"), or not a list at all
        raise DatasetError(f"{path}: not a text list of paths (it holds NUL bytes; UTF-16? save it as UTF-8)")
    # a BOM: Windows Notepad starts a list with one, which made its first path missing. Lines end at
    # \n, \r\n or \r only: splitlines() also splits at U+2028, U+0085, ..., which a name may hold.
    lines = [os.fsdecode(line) for line in re.split(rb"\r\n|\r|\n", data.removeprefix(codecs.BOM_UTF8))]
    rows = [(f"line {i}", line) for i, line in enumerate(lines, start=1) if line.strip()]
    # a comment, unless a file has that name (`ls > list.txt` lists `#1.jpg`, which was dropped silently)
    kept = [(w, s) for w, s in rows if not s.strip().startswith("#") or os.path.lexists(path.parent / s)]
    return _checked(path, kept, "path")


def _manifest(path: Path, column: str) -> list[str]:
    """The paths of a manifest's ``column``; a row without one (an empty cell, null, a short CSV
    row) refuses the manifest, naming its rows: every row of a manifest must become a row of the
    output, and a row without a path has no file to become."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.dataset as pads

        try:
            dataset = pads.dataset(_dataset_files(path), format="parquet")  # a file, or a folder of parts
            _refuse_missing_column(path, column, dataset.schema.names)
            _refuse_non_text(path, column, dataset.schema.field(column).type)
            values = dataset.to_table(columns=[column]).column(column).to_pylist()
        except DatasetError:
            raise
        except Exception as e:  # pyarrow's own error types
            raise DatasetError(f"{path}: not a readable Parquet file ({type(e).__name__})") from None
        rows = [(f"row {i}", v) for i, v in enumerate(values, start=1)]
    else:
        rows = _csv_rows(path, column)
    return _checked(path, [(where, "" if v is None else str(v)) for where, v in rows], column)


def _dataset_files(path: Path) -> Path | list[str]:
    """A Parquet manifest's files: ``path``, or, for a dataset folder holding a batch output
    (``--out ds.parquet/results``), its files less that output's, whose parts and results.csv the
    next run read as the manifest's (it was ``not a readable Parquet file (ArrowInvalid)``)."""
    if not path.is_dir():
        return path
    outputs = {job.parent for job in path.rglob("job.json") if (job.parent / "parts").is_dir()}
    if not outputs:
        return path
    return [
        str(f)
        for f in sorted(path.rglob("*"))
        if f.is_file()
        and not outputs.intersection(f.parents)
        and not any(part.startswith((".", "_")) for part in f.relative_to(path).parts)  # as pyarrow
    ]


def _csv_rows(path: Path, column: str) -> list[tuple[str, str | None]]:
    """``(line, cell)`` of a CSV manifest's ``column``, read as the data loaders read a labels.csv a
    person saved (:func:`~fracsight.data._files.read_csv_rows`): ``;`` or tab separators (Excel's
    "CSV" where the decimal mark is a comma was refused as ``no 'path' column (columns:
    path;label)``), UTF-16, or the Windows code page with a warning."""
    from fracsight.data._files import read_csv_rows

    try:
        names, rows = read_csv_rows(path, spreadsheet=True, file_names=True)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the manifest ({e.strerror or type(e).__name__})") from None
    if not names:
        raise DatasetError(f"{path}: the manifest is empty (no header row with a {column!r} column)")
    # the header of a CSV that is not UTF-8, as typed (`--path-column Röntgenbild`), not as its bytes
    typed = {(_windows_1252(name) or name): name for name in names}
    _refuse_missing_column(path, column, list(typed))
    column = typed[column]
    cells = [(f"line {n}", row[column]) for n, row in rows]
    values = [v.strip() for _, v in cells if v and v.strip()]
    numbers = values and all(re.fullmatch(r"[+-]?\d+(?:[.,]\d+)?", v) for v in values)
    if numbers and not any(os.path.lexists(path.parent / v) for v in values[:20]):
        # an id column (accession numbers) as --path-column: every row a "no such file" row, kept
        # in the output for good; a Parquet column of numbers is refused for its type
        raise DatasetError(
            f"{path}: column {column!r} holds numbers, not paths: name the column of paths with --path-column"
        )
    return cells


def _refuse_missing_column(path: Path, column: str, names: Sequence[str]) -> None:
    if column in names:
        return
    folders = (path.parent, Path(os.path.abspath(path)).parent.parent, Path.cwd())
    # a cell with a folder or an image's suffix: a column named like a file beside it is no path
    pathlike = [n.strip() for n in names if "/" in n or Path(n.strip()).suffix.lower() in IMAGE_SUFFIXES]
    # a file (MURA's *_image_paths.csv) or a study folder (its *_labeled_studies.csv)
    found_in = [f for f in folders for n in pathlike if os.path.isfile(f / n) or os.path.isdir(f / n)]
    if found_in:
        # MURA's *_image_paths.csv: no header; --path-column, as suggested, took its first image for
        # the header, and that image was left out without a word
        where = (
            ""
            if found_in[0] == path.parent
            else f"; its paths are relative to {found_in[0]}, not to the list's folder: write them relative "
            "to the list's folder, or absolute"
        )
        raise DatasetError(
            f"{path}: it has no header row (its first line, {names[0]!r}, is a path): add a first line "
            f"naming the column ({column!r}), or save the paths as a .txt list, one a line{where}"
        )
    near = [n for n in names if n.strip().casefold() == column.strip().casefold()]
    hint = f"--path-column {near[0]!r}?" if near else "name the column of paths with --path-column"
    raise DatasetError(f"{path}: no {column!r} column (columns: {', '.join(names)}): {hint}")


# C:\x.dcm, C:/x.dcm, \\server\share\x.dcm: where fracsight runs on POSIX, no file has such a path
_WINDOWS = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)") if os.sep == "/" else re.compile(r"(?!)")


def _checked(path: Path, rows: list[tuple[str, str]], column: str) -> list[str]:
    """The paths of ``rows`` (``(where, path)``): rows without a path, or with a URL (which became
    ``<folder>/s3:/bucket/x.dcm``, "no such file"), refuse the list or manifest, naming them. A
    path is read as written where that file exists (`` lead.jpg``, ``trail.jpg ``: such files
    were "no such file" rows), else without the spaces around it, as a labels.csv is read."""
    # the folders _rows_base chooses from (a list reached through a link: the link's and its own)
    here, real = path.parent, Path(os.path.realpath(path)).parent
    bases = (here,) if Path(os.path.realpath(here)) == real else (here, real)
    rows = [(where, _as_written_or_stripped(bases, p)) for where, p in rows]
    for bad, problem, fix in (
        ([w for w, p in rows if not p], f"have no {column!r}", "give each row a path or remove it"),
        (
            [w for w, p in rows if url_text(p) is not None],
            "are URLs, not file paths",
            "fracsight reads files: mount the storage (NFS, s3fs, gcsfuse, ...) and list the paths there",
        ),
        (
            [w for w, p in rows if _WINDOWS.match(p)],
            "are Windows paths (a drive letter or \\\\server\\share)",
            "list the files as this machine mounts them (relative paths with \\ are read as /)",
        ),
        (
            # as on the command line, where the shell expands them: in a list each was an error row
            # committed to the output for good
            [w for w, p in rows if _a_pattern(path.parent, p)],
            "are shell patterns, not paths",
            "list the files themselves (ls arch/a/*.jpg > list.txt)",
        ),
    ):
        if bad:
            shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
            raise DatasetError(f"{path}: {len(bad)} of {len(rows)} rows {problem} ({shown}): {fix}")
    return [p for _, p in rows]


def _a_pattern(base: Path, value: str) -> bool:
    """Whether ``value`` is a shell pattern (``arch/a/*.jpg``) matching files, not a file's name."""
    if not any(c in value for c in "*?[") or os.path.lexists(base / value):
        return False
    return bool(glob.glob(str(base / value)))


def _as_written_or_stripped(bases: Sequence[Path], value: str) -> str:
    """``value`` where a file of that name exists (relative to one of ``bases``), else stripped of
    spaces (one ``lexists`` more only for a value with spaces around it); a cell fracsight's own CSV
    escaped for spreadsheets (``'=cmd.jpg``: its ``source`` column given back as a manifest) is
    the file it names, where no file of the escaped name exists; so is a name whose bytes are not
    UTF-8, as fracsight's outputs write it (``caf\\xe9.jpg``), and the Windows-1252 reading of a CSV
    cell's bytes where no file has them (Excel's CSV on Windows): each was a "no such file" row,
    kept for good, and a CSV of both encodings was read whole as Windows-1252, its UTF-8 names too.
    A name in quotes is the name inside them where no file has the quotes in its name (nor is
    named by them: ``'-x.jpg'`` is fracsight's CSV spelling of ``-x.jpg'``)."""

    def exists(name: str) -> bool:
        return any(os.path.lexists(base / name) for base in bases)

    stripped = value.strip()
    if stripped != value and exists(value):
        return value
    quoted = len(stripped) > 1 and stripped[0] == stripped[-1] in "\"'"
    if quoted and not any(exists(name) for name in (stripped, *_other_spellings(stripped))):
        # Windows' "Copy as path" ("C:\...\a.jpg") and GNU ls on a terminal ('a b.jpg') quote
        # names: each was a "no such file" row, kept for good. Quotes around nothing (`''`,
        # `" "`) are no path, as an empty cell is
        stripped = stripped[1:-1] if stripped[1:-1].strip() else ""
    # an ASCII name has no other spelling: no file-system call for the rows of a plain manifest
    others = _other_spellings(stripped)
    if others and not exists(stripped):
        found = next((o for o in others if exists(o)), None)
        # no file of any spelling: its row names it as a person wrote it (Excel's CSV), not as bytes
        return found or (_windows_1252(stripped) or stripped)
    return stripped


def _other_spellings(text: str) -> list[str]:
    """The names other than ``text`` that a row ``text`` may stand for (see above)."""
    return [o for o in (unescaped_cell(text), *_byte_spellings(text)) if o is not None]


def _byte_spellings(text: str) -> list[str]:
    """The file names ``text`` may stand for when it holds bytes that are not UTF-8: ``\\xe9`` as
    :func:`~fracsight.io.text_cell` writes a byte, and the Windows-1252 reading of bytes kept as
    the file system gives them (:func:`~fracsight.data._files.read_csv_rows` with ``file_names``)."""
    spellings = []
    if "\\x" in text:
        raw = re.sub(
            rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m[1], 16)]), text.encode("utf-8", "surrogateescape")
        )
        spellings.append(os.fsdecode(raw))
    spellings.append(_windows_1252(text))
    # a Latin-1 file's name typed in a UTF-8 or UTF-16 manifest, or a list: `café.jpg` of `caf\xe9`
    with contextlib.suppress(UnicodeEncodeError):
        spellings.append(os.fsdecode(text.encode("cp1252")))
    return [s for s in spellings if s is not None and s != text]


def _windows_1252(text: str) -> str | None:
    """The Windows-1252 reading of the bytes of a CSV that is not UTF-8, kept in ``text`` as the
    file system gives them; None where it holds none (or one that code page lacks)."""
    if not any("\udc80" <= c <= "\udcff" for c in text):
        return None
    with contextlib.suppress(UnicodeDecodeError):
        return text.encode("utf-8", "surrogateescape").decode("cp1252")
    return None


def _refuse_non_text(path: Path, column: str, kind: object) -> None:
    """A Parquet path column must hold text: numbers, bytes or lists became rows for files named
    ``1`` or ``b'/data/x.dcm'`` (an id column given as ``--path-column``, a column of another type)."""
    import pyarrow as pa

    def is_text(t: object) -> bool:  # string_view: what Arrow's newer writers may give text
        view = getattr(pa.types, "is_string_view", lambda _: False)
        return pa.types.is_string(t) or pa.types.is_large_string(t) or view(t)

    text = is_text(kind) or pa.types.is_null(kind)
    if pa.types.is_dictionary(kind):
        text = is_text(kind.value_type)
    if not text:
        raise DatasetError(f"{path}: column {column!r} holds {kind}, not text paths")
