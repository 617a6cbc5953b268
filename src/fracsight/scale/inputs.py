"""What a batch job predicts: folders, image files, path lists and CSV/Parquet manifests -> paths.

>>> from pathlib import Path
>>> collect_batch_inputs([Path("archive/")])             # doctest: +SKIP
{'/data/archive/a/1.dcm': 'a/1.dcm', '/data/archive/a/2.dcm': 'a/2.dcm', ...}
"""

from __future__ import annotations

import codecs
import csv
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from fracsight.errors import DatasetError
from fracsight.inference.tabular import named_inputs

__all__ = ["LIST_SUFFIXES", "MANIFEST_SUFFIXES", "collect_batch_inputs"]

LIST_SUFFIXES = {".txt", ".lst"}  # one path per line
MANIFEST_SUFFIXES = {".csv", ".parquet"}  # a table with a path column


def collect_batch_inputs(args: Sequence[Path], *, path_column: str = "path") -> dict[str, str]:
    """Absolute paths of every input, each file once (by its resolved path: a file listed twice,
    or reached through a link, is the first of them), in the order given, each with the name its row
    gives it (as ``fracsight predict`` names it: the path under a folder given, else the file name).

    A folder gives its image files (recursively, as ``fracsight predict``); a ``.txt``/``.lst``
    file one path per line (``#`` comments); a ``.csv``/``.parquet`` manifest its ``path_column``.
    Relative paths in a list or manifest are relative to its folder. Paths that do not exist stay
    in: their rows say ``unreadable_image``. Raises :class:`~fracsight.errors.DatasetError` for a
    manifest that cannot be read or lacks the column.
    """
    seen: dict[str, str] = {}
    real: set[str] = set()  # each file once, however it is reached (``a.jpg``, ``./a.jpg``, a link)
    for arg in args:
        suffix = arg.suffix.lower()
        if arg.is_file() and suffix in LIST_SUFFIXES:
            found = ((p, Path(p).name) for p in _relative_to(arg, _list_file(arg)))
        elif arg.is_file() and suffix in MANIFEST_SUFFIXES:
            found = ((p, Path(p).name) for p in _relative_to(arg, _manifest(arg, path_column)))
        else:
            found = ((str(p), name) for p, name in named_inputs([arg]))
        for path, name in found:
            if (key := os.path.realpath(path)) not in real:
                real.add(key)
                seen[os.path.abspath(path)] = name
    return seen


def _relative_to(manifest: Path, paths: Iterable[str]) -> Iterable[str]:
    base = manifest.parent
    return (p if os.path.isabs(p) else str(base / p) for p in paths)


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
    return [s for line in lines if (s := line.strip()) and not s.startswith("#")]


def _manifest(path: Path, column: str) -> list[str]:
    """The paths of a manifest's ``column``; a row without one (an empty cell, null, a short CSV
    row) refuses the manifest, naming its rows: every row of a manifest must become a row of the
    output, and a row without a path has no file to become."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
            if column not in schema.names:
                raise DatasetError(f"{path}: no {column!r} column (columns: {', '.join(schema.names)})")
            _refuse_non_text(path, column, schema.field(column).type)
            values = pq.read_table(path, columns=[column]).column(column).to_pylist()
        except DatasetError:
            raise
        except Exception as e:  # pyarrow's own error types
            raise DatasetError(f"{path}: not a readable Parquet file ({type(e).__name__})") from None
        rows = [(f"row {i}", v) for i, v in enumerate(values, start=1)]
    else:
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                names = reader.fieldnames or []
                if not names:
                    raise DatasetError(
                        f"{path}: the manifest is empty (no header row with a {column!r} column)"
                    )
                if column not in names:
                    raise DatasetError(f"{path}: no {column!r} column (columns: {', '.join(names)})")
                rows = [(f"line {reader.line_num}", row[column]) for row in reader]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DatasetError(f"{path}: not a readable CSV file ({type(e).__name__})") from None
    paths = [(where, "" if v is None else str(v).strip()) for where, v in rows]
    if blank := [where for where, p in paths if not p]:
        shown = ", ".join(blank[:10]) + (f" and {len(blank) - 10} more" if len(blank) > 10 else "")
        raise DatasetError(
            f"{path}: {len(blank)} of {len(paths)} rows have no {column!r} ({shown}): "
            "give each row a path or remove it"
        )
    return [p for _, p in paths]


def _refuse_non_text(path: Path, column: str, kind: object) -> None:
    """A Parquet path column must hold text: numbers, bytes or lists became rows for files named
    ``1`` or ``b'/data/x.dcm'`` (an id column given as ``--path-column``, a column of another type)."""
    import pyarrow as pa

    text = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
    if pa.types.is_dictionary(kind):
        text = pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type)
    if not text:
        raise DatasetError(f"{path}: column {column!r} holds {kind}, not text paths")
