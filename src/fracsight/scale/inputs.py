"""What a batch job predicts: folders, image files, path lists and CSV/Parquet manifests -> paths.

>>> from pathlib import Path
>>> collect_batch_inputs([Path("archive/")])             # doctest: +SKIP
{'/data/archive/a/1.dcm': 'a/1.dcm', '/data/archive/a/2.dcm': 'a/2.dcm', ...}
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from fracsight.errors import DatasetError
from fracsight.inference.tabular import named_inputs

__all__ = ["LIST_SUFFIXES", "MANIFEST_SUFFIXES", "collect_batch_inputs"]

LIST_SUFFIXES = {".txt", ".lst"}  # one path per line
MANIFEST_SUFFIXES = {".csv", ".parquet"}  # a table with a path column


def collect_batch_inputs(args: Sequence[Path], *, path_column: str = "path") -> dict[str, str]:
    """Absolute paths of every input, each once, in the order given, each with the name its row
    gives it (as ``fracsight predict`` names it: the path under a folder given, else the file name).

    A folder gives its image files (recursively, as ``fracsight predict``); a ``.txt``/``.lst``
    file one path per line (``#`` comments); a ``.csv``/``.parquet`` manifest its ``path_column``.
    Relative paths in a list or manifest are relative to its folder. Paths that do not exist stay
    in: their rows say ``unreadable_image``. Raises :class:`~fracsight.errors.DatasetError` for a
    manifest that cannot be read or lacks the column.
    """
    seen: dict[str, str] = {}
    for arg in args:
        suffix = arg.suffix.lower()
        if arg.is_file() and suffix in LIST_SUFFIXES:
            found = ((p, Path(p).name) for p in _relative_to(arg, _list_file(arg)))
        elif arg.is_file() and suffix in MANIFEST_SUFFIXES:
            found = ((p, Path(p).name) for p in _relative_to(arg, _manifest(arg, path_column)))
        else:
            found = ((str(p), name) for p, name in named_inputs([arg]))
        for path, name in found:
            seen.setdefault(os.path.abspath(path), name)
    return seen


def _relative_to(manifest: Path, paths: Iterable[str]) -> Iterable[str]:
    base = manifest.parent
    return (p if os.path.isabs(p) else str(base / p) for p in paths)


def _list_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the path list ({type(e).__name__})") from None
    return [s for line in lines if (s := line.strip()) and not s.startswith("#")]


def _manifest(path: Path, column: str) -> list[str]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
            if column not in names:
                raise DatasetError(f"{path}: no {column!r} column (columns: {', '.join(names)})")
            values = pq.read_table(path, columns=[column]).column(column).to_pylist()
        except DatasetError:
            raise
        except Exception as e:  # pyarrow's own error types
            raise DatasetError(f"{path}: not a readable Parquet file ({type(e).__name__})") from None
    else:
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                names = reader.fieldnames or []
                if column not in names:
                    raise DatasetError(f"{path}: no {column!r} column (columns: {', '.join(names)})")
                values = [row[column] for row in reader]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DatasetError(f"{path}: not a readable CSV file ({type(e).__name__})") from None
    return [str(v).strip() for v in values if v is not None and str(v).strip()]
