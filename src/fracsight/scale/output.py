"""The output folder of a batch job: committed Parquet parts (the record), a CSV beside them, job.json.

::

    OUT/job.json               model, operating point, columns, counts (refuses another of either)
    OUT/.lock                  held by the job writing the folder (a second job at once is refused)
    OUT/parts/part-*.parquet   the rows, committed atomically a part at a time (read OUT/parts as one table)
    OUT/results.csv            the same rows as CSV (rebuilt from the parts when a job resumes)
    OUT/NOTICE.txt             "a decision aid, not a diagnosis" (also in job.json and each part's metadata)

A row is done once its part is renamed into place; a job killed before that loses only the rows
not yet committed, and the next run predicts exactly those again. Every input is in exactly one
row: a result, or an ``error_code``.

Each part also holds, in a column of its own (``file_stat``, not in the CSV), the file's size,
modification time and resolved path as the row was made: a re-run predicts again an input whose
file changed since (copied in full after a run caught it half-written, replaced, or a link that now
points elsewhere), its new row taking the old one's place.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, KeysView, Sequence
from pathlib import Path
from typing import Any

from fracsight._files import replace_atomically, replaced_by
from fracsight._output import STOP_SIGNALS
from fracsight.bundle import BundleSpec
from fracsight.errors import DatasetError, FracsightError
from fracsight.inference.results import NOTICE
from fracsight.inference.tabular import result_columns, spreadsheet_safe, text_cell

__all__ = [
    "FILE_STAT",
    "NAME_FIELD",
    "PATH_COLUMN",
    "SETTINGS_KEY",
    "BatchOutput",
    "OutputRefused",
    "OutputWriteFailed",
    "committed_codes",
    "file_stat",
    "interrupts_held",
    "job_running",
    "output_columns",
]

PATH_COLUMN = "path"  # the input as given (absolute): the key that makes resume exact
NAME_FIELD = "name"  # what the row calls the input (its `source`), handed to the actors beside the path
FILE_STAT = "file_stat"  # the file as the row was made (file_stat()); in the parts only, not the CSV
JOB_FILE = "job.json"
CSV_FILE = "results.csv"
PARTS = "parts"
LOCK_FILE = ".lock"
NOTICE_FILE = "NOTICE.txt"  # beside the CSV, which has no room for it (a line would break CSV readers)
SETTINGS_KEY = "settings_sha256"  # in job.json's model: what in bundle.json shapes the rows
FILE_SUFFIXES = {".csv", ".parquet", ".json", ".txt", ".xlsx"}  # a name that says "file", not "folder"
NOTICE_KEY = b"fracsight.notice"  # the same in every part's Parquet key-value metadata


class OutputRefused(DatasetError):
    """``--out`` cannot take this job's rows: not a batch output, another model or operating
    point, a file, or a folder another job is writing."""

    code = "output_refused"
    bad_argument = True


class OutputWriteFailed(FracsightError):
    """``--out`` stopped taking rows mid-job (a full disk, a quota, a file system gone read-only):
    what was committed before stays, and the same command continues once it can write again."""

    code = "output_write_failed"


def file_stat(path: str, folders: dict[str, str] | None = None) -> str:
    """``size:mtime_ns:resolved path`` of the file at ``path`` now, or ``""`` when there is none.
    No device or inode: they differ between the nodes of a cluster mounting one share.

    ``folders``: resolved folders of the paths seen so far, for one batch of paths (each folder
    resolved once, then a ``stat`` and an ``lstat`` per file: ``realpath`` alone made it about 7
    times slower, one ``lstat`` per path component); not kept longer, as a link may move on."""
    try:
        st = os.stat(path)
        return f"{st.st_size}:{st.st_mtime_ns}:{text_cell(_real_path(path, folders))}"
    except (OSError, ValueError):  # ValueError: a NUL in a listed path
        return ""


def _real_path(path: str, folders: dict[str, str] | None) -> str:
    if folders is None or os.path.islink(path):
        return os.path.realpath(path)
    folder, name = os.path.split(os.path.abspath(path))
    if folder not in folders:
        folders[folder] = os.path.realpath(folder)
    return os.path.join(folders[folder], name)


def _stat_path(stat: str) -> str:
    """The resolved path of a :func:`file_stat`."""
    return stat.split(":", 2)[2] if stat else ""


def output_columns(spec: BundleSpec, *, all_classes: bool = False) -> tuple[str, ...]:
    """``path`` then exactly the columns of ``fracsight predict --csv`` for this bundle."""
    return (PATH_COLUMN, *result_columns(spec, all_classes=all_classes))


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then act on the first as its handler would.

    The driver commits what it holds when it is interrupted; an interrupt that landed between a
    part's rename and ``done`` recording its rows would have that commit write them a second
    time (seen: SIGTERM sent as the first part appeared). Only the main thread can hold them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    # a handler installed outside Python (getsignal gives None) could not be put back: left alone
    previous = {s: h for s in _INTERRUPTS if (h := signal.getsignal(s)) is not None}
    for sig in previous:
        signal.signal(sig, lambda signum, _frame: held.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            handler = previous[held[0]]
            if callable(handler):
                handler(held[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(held[0])


_INTERRUPTS = (signal.SIGINT, *STOP_SIGNALS)


class BatchOutput:
    """Opens (or creates) an output folder for a job with ``columns`` from model ``model``."""

    def __init__(self, folder: Path, columns: Sequence[str], model: dict[str, str]) -> None:
        self.folder = Path(folder)
        self.columns = tuple(columns)
        self.model = model
        self.parts = self.folder / PARTS
        self.csv_path = self.folder / CSV_FILE
        self._lock: Any = None
        # the committed rows, by path: each one's file_stat as it was made (None: a part written
        # before it was kept)
        self.stats: dict[str, str | None] = {}
        self.created, self._was_empty, self._made = False, False, self.folder
        self._seq = 0
        # the time orders the parts; the random part keeps apart two jobs of one process in one second,
        # whose parts had one name: the second job's first part replaced the first job's rows. In
        # UTC: a run in another time zone (cron in UTC, a user in local time; the hour DST repeats)
        # sorted before the parts it followed, and the results.csv rebuilt from them in that order
        # was taken for a person's edit (a warning, a copy kept) and written in another row order
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self._run = f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self._check_or_create()
            try:
                parts = self._part_files()
                for part in parts:
                    found = self._read_part(part, [PATH_COLUMN], optional=[FILE_STAT])
                    stats = found.get(FILE_STAT) or [None] * len(found[PATH_COLUMN])
                    self.stats.update(zip(found[PATH_COLUMN], stats, strict=True))
                self._run = _sorting_after(self._run, parts)
                self._rebuild_csv(keep_edited=True)
                self._write_notice()
            except OutputRefused:  # a damaged part: the job does not start, and job.json says so
                with contextlib.suppress(OutputWriteFailed):  # (a full disk too: the part is the news)
                    self.write_job({"status": "stopped"})
                self.close()
                raise
            # once the rows are read (seconds for a large output): a Ctrl-C while they were left
            # job.json at "running" without its counts, for an output that was complete
            self.write_job({"status": "running"})
        except OutputWriteFailed:  # a disk full from the start: a folder this job made is removed;
            if self.created or self._was_empty:  # an output's job.json stays as it was (a complete one
                self.end_early("stopped")  # with room for job.json alone was made "stopped")
            else:
                self.close()
            raise
        except KeyboardInterrupt:  # job.json is as it was; a folder this job made goes again
            if self.created:
                self.end_early("interrupted")
            self.close()
            raise

    # ---- opening -----------------------------------------------------------------------------------
    def _check_or_create(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputRefused(f"{self.folder} is a file, not a folder: use another --out")
        if not self.folder.exists() and self.folder.suffix.lower() in FILE_SUFFIXES:
            # `--out results.csv`, as `predict --csv results.csv`, made a folder of that name
            raise OutputRefused(
                f"{self.folder} names a file, but --out is a folder (it will hold {CSV_FILE} and "
                f"{PARTS}/): use --out {self.folder.with_suffix('')}"
            )
        self._check_job()  # before anything is written into a folder that may be the user's own
        self.created = not self.folder.exists()
        # an empty folder given: what the job puts in it goes again if it stops before any row
        self._was_empty = not self.created and not any(self.folder.iterdir())
        made = self.folder  # the topmost folder this job makes (`--out new/results`: new)
        while not made.parent.exists():
            made = made.parent
        self._made = made
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # under a file, on a read-only file system, no permission, ...
            raise OutputRefused(
                f"{self.folder} cannot be created ({e.strerror or type(e).__name__}): use another --out"
            ) from None
        self._take_lock()
        self._check_job()  # again, now that no other job can be writing it
        if not (self.folder / JOB_FILE).exists():
            # first: a job killed (kill -9, OOM) before it wrote job.json left parts/ and
            # NOTICE.txt in a folder refused for good as "not a fracsight batch output"
            for stray in filter(_job_temp, self.folder.iterdir()):  # one killed as it wrote it
                stray.unlink()
            self.write_job({"status": "stopped", "rows": 0})
        with self._write_failures():  # a full disk said as for a part, not as a bare os_error
            self.parts.mkdir(parents=True, exist_ok=True)
            for stray in self.parts.glob(".*.tmp"):  # a part being written when a job was killed
                stray.unlink()

    def _write_notice(self) -> None:
        """NOTICE.txt, where it is not as this version writes it; after the rows are read, so that a
        full disk says how many are committed (a complete output's re-run said "0 rows")."""
        text = (
            f"{NOTICE}\nThe rows of {CSV_FILE} and {PARTS}/ are a model's outputs: every result "
            "that reaches a patient's care must be checked by a clinician against the images.\n"
        )
        notice = self.folder / NOTICE_FILE
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if notice.read_text(encoding="utf-8") == text:
                return
        with self._write_failures():
            replace_atomically(notice, lambda p: p.write_text(text, encoding="utf-8"))

    def _check_job(self) -> None:
        job = self.folder / JOB_FILE
        if job.is_file():
            try:
                recorded = json.loads(job.read_text(encoding="utf-8"))
                was = dict(recorded.get("model", {}))
            except (OSError, ValueError, AttributeError, TypeError) as e:
                raise OutputRefused(f"{job}: unreadable ({type(e).__name__}); use another --out") from None
            if not was or not isinstance(recorded.get("columns"), list):  # another program's job.json:
                # "holds results of None vNone ... other columns (--all-classes?)" was said of it
                raise OutputRefused(
                    f"{self.folder} exists and is not a fracsight batch output: use another --out"
                )
            same_columns = tuple(recorded.get("columns", ())) == self.columns
            if was != self.model or not same_columns:
                held, this = _describe(was), _describe(self.model)
                if held == this and was.get("onnx_sha256") != self.model.get("onnx_sha256"):
                    # two exports under the default name and version read as one model
                    held += f" (model.onnx {str(was.get('onnx_sha256'))[:12]})"
                    this += f" (model.onnx {str(self.model.get('onnx_sha256'))[:12]})"
                raise OutputRefused(
                    f"{self.folder} holds results of {held}, and this job ({this}) has "
                    f"{_mismatch(was, self.model, same_columns)}: use another --out"
                )
        elif self.folder.is_dir() and any(
            p.name != LOCK_FILE and not _job_temp(p) for p in self.folder.iterdir()
        ):
            raise OutputRefused(
                f"{self.folder} exists and is not a fracsight batch output: use another --out"
            )

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: one job at a time is then the user's to keep
            return
        try:
            handle = open(self.folder / LOCK_FILE, "a")  # noqa: SIM115 (held while the job runs)
        except OSError as e:  # a read-only file system or folder: it cannot take the rows either
            raise OutputRefused(
                f"{self.folder} cannot be written ({e.strerror or type(e).__name__}): use another --out"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise OutputRefused(
                f"{self.folder} is being written by another batch job: wait for it, or use another --out"
            ) from None
        self._lock = handle

    def end_early(self, status: str) -> None:
        """The job stops before it is done (``status``: ``stopped`` or ``interrupted``; ``complete``
        for one stopped after its last row was committed): job.json says so, or, when this job
        created the folder and committed nothing, what it made there is removed, and the folder
        with it unless someone put files of their own in it meanwhile (a job that could not start
        leaves no output behind)."""
        if self.created and not self.rows_done:
            self.close()
            # never the folder's whole tree: a job waiting for free CPUs on a busy cluster can sit
            # long enough before its first commit for people to use the new folder, and Ctrl-C
            # took their notes with it
            files = [self.folder / name for name in (JOB_FILE, NOTICE_FILE, CSV_FILE, LOCK_FILE)]
            for made in [*files, *self.parts.glob(".*.tmp"), *self.folder.glob(".*.tmp"), self.parts]:
                with contextlib.suppress(OSError):  # gone already, or never made
                    made.rmdir() if made.is_dir() else made.unlink()
            try:
                self.folder.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                logging.getLogger("fracsight.scale").warning(
                    "%s kept: it holds files this job did not make", self.folder
                )
                return
            # the folders made above it, while still empty: another job's or the user's files may
            # be in them by now (they were removed with them)
            for above in self.folder.parents:
                if not above.is_relative_to(self._made):
                    break
                try:
                    above.rmdir()
                except OSError:
                    break
            return
        try:  # the errors of the rows kept (job.json lost them: `status` listed none after Ctrl-C)
            errors = {code: n for code, n in self.error_counts().items() if code}
        except OutputRefused:
            errors = {}
        try:
            self.write_job({"status": status, "rows": self.rows_done, "errors": errors})
        except OutputWriteFailed:  # a full disk: `batch status` tells by the free lock
            if self._was_empty and not self.rows_done:  # the user's empty folder, left empty: with
                for made in self.folder.iterdir():  # .lock and parts/ alone the next run refused it
                    shutil.rmtree(made) if made.is_dir() else made.unlink()
        self.close()

    def close(self) -> None:
        """Let another job open the folder (also when this process ends)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def write_job(self, extra: dict[str, Any]) -> None:
        """``job.json``; a disk that fills as the job ends (every row committed) is said as for a part."""
        record = {"model": self.model, "columns": list(self.columns), **extra, "notice": NOTICE}
        with self._write_failures():
            replace_atomically(
                self.folder / JOB_FILE, lambda p: p.write_text(json.dumps(record, indent=2) + "\n", "utf-8")
            )

    def _part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet"))

    @staticmethod
    def _read_part(part: Path, columns: list[str], optional: Sequence[str] = ()) -> dict[str, list[str]]:
        """``columns``, and those of ``optional`` the part has. Raises :class:`OutputRefused` for a
        part that is damaged or lacks ``columns`` (a copy cut short, a file put there by hand),
        never pyarrow's own error."""
        import pyarrow.parquet as pq

        try:
            if optional:
                names = set(pq.read_schema(part).names)
                columns = [*columns, *(c for c in optional if c in names)]
            return pq.read_table(part, columns=columns).to_pydict()
        except Exception as e:  # pyarrow's own error types (ArrowInvalid, ...), OSError
            raise _damaged(part, e) from None

    def _rebuild_csv(self, *, keep_edited: bool = False) -> None:
        """The CSV from the committed parts only (after a kill it may hold rows never committed).
        ``keep_edited``: keep a CSV a person changed (when the output is opened; a rebuild after
        rows were forgotten drops rows from its middle, which is no edit)."""

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(self.columns)
                for part in self._part_files():
                    table = self._read_part(part, list(self.columns))
                    cells = zip(*(table[c] for c in self.columns), strict=True)
                    writer.writerows([spreadsheet_safe(v) for v in row] for row in cells)
            if keep_edited:
                self._keep_an_edited_csv(tmp)

        with self._write_failures():  # a full disk said as for a part, not as a bare os_error
            replace_atomically(self.csv_path, write)

    def _keep_an_edited_csv(self, rebuilt: Path) -> None:
        """Keep the CSV aside where a person changed it (a reviewer's column, a corrected cell): the
        rebuild replaced it unsaid, also in a run with nothing left to predict. A CSV that differs
        only by rows at its end (a run stopped between a part and its rows, an append that failed)
        is the job's own."""
        if self.csv_path.is_file() and not _one_begins_the_other(self.csv_path, rebuilt):
            kept = self.csv_path.with_name(f"{self.csv_path.stem}.edited-{self._run}{self.csv_path.suffix}")
            shutil.copy2(self.csv_path, kept)
            logging.getLogger("fracsight.scale").warning(
                "%s differs from the job's rows (edited?): kept as %s, and written again", self.csv_path, kept
            )

    @property
    def done(self) -> KeysView[str]:
        """The paths of the committed rows."""
        return self.stats.keys()

    @property
    def rows_done(self) -> int:
        return len(self.stats)

    # ---- committing --------------------------------------------------------------------------------
    def pending(self, inputs: Iterable[str]) -> list[str]:
        """The inputs without a committed row, in order (matched as :meth:`_rows_for` matches them)."""
        inputs = list(inputs)
        return [p for p, row in zip(inputs, self._rows_for(inputs), strict=True) if row is None]

    def _rows_for(self, inputs: Sequence[str]) -> list[str | None]:
        """The committed row of each input, or None. A file is matched by its path, else by its
        resolved path as its row was made: one committed under another spelling of its path or
        through a link (the archive given as ``/data/xr``, then as a link to it) must not get a
        second row; one reached through a link that has since moved on is another file. Resolves
        the inputs only when rows are committed under paths not listed (none on a plain re-run)."""
        texts = [text_cell(p) for p in inputs]
        listed = set(texts)
        elsewhere = {
            resolved: done for done in self.stats if done not in listed and (resolved := self._resolved(done))
        }
        found: list[str | None] = []
        for path, text in zip(inputs, texts, strict=True):
            if text in self.stats:
                found.append(text)
            else:
                found.append(elsewhere.get(text_cell(os.path.realpath(path))) if elsewhere else None)
        return found

    def forget_changed(self, inputs: Iterable[str]) -> int:
        """Take out the committed rows of ``inputs`` whose file changed since the row was made (its
        size, modification time or resolved path differ, or it appeared where there was none), so
        that :meth:`pending` gives those inputs again; the number taken (see :meth:`forget_errors`).
        A file that is gone now keeps its row: storage not mounted for a re-run replaced every
        result with an error row. A ``stat`` and an ``lstat`` per input that has a row; rows from
        parts without ``file_stat`` are kept."""
        inputs = list(inputs)
        changed: set[str] = set()
        folders: dict[str, str] = {}
        for path, row in zip(inputs, self._rows_for(inputs), strict=True):
            was = self.stats.get(row) if row is not None else None
            if was is None:
                continue
            now = file_stat(path, folders)
            if now and now != was:
                changed.add(row)
        return self._forget(lambda path, _code: path in changed) if changed else 0

    def forget_folders_now_read(self, inputs: Iterable[str]) -> int:
        """Take out the rows of folders that were given when they held no image (an unmounted share:
        a row "is a folder, not an image file") and whose images are inputs now: the stale error
        row stayed beside the folder's new rows for good, and `batch status` counted it."""
        inputs = set(inputs)
        folders = {p for p in self.stats if p not in inputs and os.path.isdir(p)}
        if not folders:
            return 0
        above = {str(parent) for path in inputs for parent in Path(path).parents}
        stale = folders & above
        return self._forget(lambda path, _code: path in stale) if stale else 0

    def forget_errors(self, inputs: Iterable[str]) -> int:
        """Take the committed rows of ``inputs`` that have an error code out of their parts, so that
        :meth:`pending` gives those inputs again (a file fixed, storage mounted again); the number
        taken. Each part is rewritten atomically, so a kill leaves it whole, old or new; a part left
        with no row is removed. Rows of other inputs, and every result, stay as they are."""
        of_inputs = self._rows_of(inputs)
        return self._forget(lambda path, code: code != "" and of_inputs(path))

    def _forget(self, drops: Callable[[str, str], bool]) -> int:
        """Take the committed rows for which ``drops(path, error_code)`` out of their parts."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        forgotten: set[str] = set()
        try:
            for part in self._part_files():
                found = self._read_part(part, [PATH_COLUMN, "error_code"])
                rows = zip(found[PATH_COLUMN], found["error_code"], strict=True)
                drop = [drops(path, code) for path, code in rows]
                if not any(drop):
                    continue
                with interrupts_held(), self._write_failures():
                    if all(drop):
                        part.unlink()
                    else:
                        table = pq.read_table(part)  # every column, and the notice in its metadata
                        kept = table.filter(pc.invert(pa.array(drop)))
                        replace_atomically(part, lambda p, kept=kept: pq.write_table(kept, p))
                    # with its part: a Ctrl-C between two parts said "100000 rows are committed" of
                    # 57001, and job.json and results.csv kept the rows already taken out
                    dropped = {p for p, d in zip(found[PATH_COLUMN], drop, strict=True) if d}
                    for path in dropped:
                        self.stats.pop(path, None)
                    forgotten |= dropped
        finally:
            if forgotten:
                self._rebuild_csv()
        return len(forgotten)

    def _resolved(self, path: str) -> str:
        """A committed row's file's resolved path as the row was made (resolved now for a row
        without ``file_stat``, or one made when there was no file: an error row)."""
        stat = self.stats.get(path)
        return _stat_path(stat) if stat else text_cell(os.path.realpath(path))

    def _rows_of(self, inputs: Iterable[str]) -> Callable[[str], bool]:
        """Whether a committed row's path is one of ``inputs``, matched as :meth:`pending` matches
        them: by path, else by resolved path (resolved once, and only when a path is not listed)."""
        inputs = list(inputs)
        texts = {text_cell(p) for p in inputs}
        resolved: set[str] | None = None

        def matches(path: str) -> bool:
            nonlocal resolved
            if path in texts:
                return True
            if resolved is None:
                resolved = {text_cell(os.path.realpath(p)) for p in inputs}
            return self._resolved(path) in resolved

        return matches

    def commit(self, rows: Sequence[dict[str, str]]) -> None:
        """Make ``rows`` durable: one Parquet part (atomic), then the same rows appended to the CSV."""
        fresh: dict[str, dict[str, str | None]] = {}  # never twice, even if Ray ran a block again
        for row in rows:
            cells = {c: text_cell(row[c]) for c in self.columns}
            cells[FILE_STAT] = row.get(FILE_STAT)  # None (null): unknown, never counted as changed
            if cells[PATH_COLUMN] not in self.stats:
                fresh.setdefault(cells[PATH_COLUMN], cells)
        rows = list(fresh.values())
        if not rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {c: pa.array([r[c] for r in rows], type=pa.string()) for c in (*self.columns, FILE_STAT)},
            metadata={NOTICE_KEY: NOTICE.encode()},
        )
        self._seq += 1
        part = self.parts / f"part-{self._run}-{self._seq:06d}.parquet"
        with interrupts_held(), self._write_failures():
            replace_atomically(part, lambda p: pq.write_table(table, p))
            self.stats.update((r[PATH_COLUMN], r[FILE_STAT]) for r in rows)
            with self.csv_path.open("a", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows([[spreadsheet_safe(r[c]) for c in self.columns] for r in rows])
                f.flush()
                os.fsync(f.fileno())

    @contextlib.contextmanager
    def _write_failures(self) -> Iterator[None]:
        """An OSError while committing (pyarrow's says only "Error writing bytes to file") becomes
        :class:`OutputWriteFailed`, saying what is kept. A part that failed is not in ``parts/``
        (its rows are predicted again); a CSV append that failed after its part was renamed is
        made whole when the next run rebuilds the CSV from the parts."""
        try:
            yield
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else (e.strerror or type(e).__name__)
            raise OutputWriteFailed(
                f"cannot write to {self.folder} ({reason}): {self.rows_done} rows are committed; "
                "make room and run the same command again to continue"
            ) from None

    def error_counts(self, inputs: Iterable[str] | None = None) -> dict[str, int]:
        """Rows per error code (``""``: predicted) over everything committed, or over the rows of
        ``inputs`` only (matched as :meth:`pending` matches them: by path, else by resolved path)."""
        return committed_codes(self.folder, None if inputs is None else self._rows_of(inputs))


def job_running(folder: Path) -> bool | None:
    """Whether a job holds ``folder``'s lock now (one non-blocking try; None where flock does not
    exist). A job killed with ``kill -9`` leaves job.json at ``running``; its lock went with it."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:  # not ours to read (another user's job): cannot tell
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True  # a job holds it (exclusively)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _job_temp(path: Path) -> bool:
    """Whether ``path`` is a job.json a killed job was writing: a user's file or folder of a like
    name is theirs (one named ``.job.json.draft.tmp`` was deleted)."""
    return replaced_by(path.name) == JOB_FILE and path.is_file() and not path.is_symlink()


def _sorting_after(run: str, parts: Sequence[Path]) -> str:
    """``run``, or, where a part already sorts at or after its parts' names (two runs in one second,
    which their random tokens ordered by chance; a clock set back; parts named in local time by an
    older fracsight, ahead of UTC), the first such run's name with a counter that sorts after the
    last part: the parts' names order results.csv's rows. (A suffix added to the last name made the
    names longer at each run, until "File name too long".)"""
    latest = max((p.name for p in parts), default="")
    if f"part-{run}" > latest:
        return run
    last_run = latest.removeprefix("part-").rsplit("-", 1)[0]
    base, _, counted = last_run.partition(".")
    n = int(counted[:6]) if counted[:6].isdigit() else 0
    run = f"{base}.{n + 1:06d}-{secrets.token_hex(4)}"  # "." sorts after the "-" ending base's parts
    # a last name of another form (a hex suffix, a hand-made name): after it whole
    return run if f"part-{run}" > latest else f"{last_run}.000001-{secrets.token_hex(4)}"


def committed_codes(folder: Path, keep: Callable[[str], bool] | None = None) -> dict[str, int]:
    """Committed rows per error code (``""``: predicted) in the batch output ``folder``, read from
    its parts (the record: job.json has no counts while a job runs, or after one was killed), of
    the rows whose path ``keep`` accepts, or of all. :class:`OutputRefused` for a damaged part."""
    counts: dict[str, int] = {}
    columns = ["error_code"] if keep is None else [PATH_COLUMN, "error_code"]  # paths: the most bytes
    for part in sorted((folder / PARTS).glob("part-*.parquet")):
        try:
            table = BatchOutput._read_part(part, columns)
        except OutputRefused:
            if not part.exists():  # taken out by a job retrying its rows since it was listed: not damaged
                continue
            raise
        paths = table.get(PATH_COLUMN) or [""] * len(table["error_code"])
        for path, code in zip(paths, table["error_code"], strict=True):
            if keep is None or keep(path):
                counts[code] = counts.get(code, 0) + 1
    return counts


def _damaged(part: Path, error: Exception) -> OutputRefused:
    return OutputRefused(
        f"{part}: not a readable part of a batch output ({type(error).__name__}); move it out of "
        f"{part.parent} (its rows are then predicted again) or use another --out"
    )


def _mismatch(was: dict[str, str], now: dict[str, str], same_columns: bool) -> str:
    """Why a job's rows may not join an output's, the model first: another model has other columns
    too, and "other columns (--all-classes?)" sent its user after an option never given."""

    def differ(*keys: str) -> bool:
        return any(was.get(k) != now.get(k) for k in keys)

    if differ("name", "version", "onnx_sha256"):
        return "another model"
    if differ("operating_point"):
        return "another operating point"
    if differ(SETTINGS_KEY):
        return "the same model with other settings in its bundle.json (thresholds or calibration refitted?)"
    return "other columns (--all-classes?)" if not same_columns else "another model"


def _describe(model: dict[str, str]) -> str:
    at = f" at operating point {model['operating_point']}" if model.get("operating_point") else ""
    return f"{model.get('name')} v{model.get('version')}{at}"


def _one_begins_the_other(a: Path, b: Path, chunk: int = 1 << 20) -> bool:
    """Whether the shorter of two files is the start of the longer (read a chunk at a time)."""
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            n = min(len(x), len(y))
            if x[:n] != y[:n]:
                return False
            if len(x) < chunk or len(y) < chunk:
                return True
