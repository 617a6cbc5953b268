"""The node's durable spool: received instances, result objects waiting to be sent, and their states.

Layout of the spool folder (create it readable by the node's user only: it holds patient data)::

    spool.db                     SQLite (WAL, synchronous FULL): states, outbox, counters
    instances/<key>.dcm          received instances, as the sender encoded them
    results/<owner>/<n>.dcm      result objects (per instance, or per study verdict)
    tmp/                         partial writes; emptied at start

``key`` is :func:`instance_key` of the SOP Instance UID (a short hash): file names, logs and
metrics never carry a UID, let alone a patient identifier.

Every write that a peer or a later stage relies on is on disk before it is acknowledged: a file
is written to ``tmp/``, fsynced, renamed into place and its folder fsynced; then its row is
committed. An instance goes ``received -> results_pending -> sent`` (or ``refused`` / ``failed``
with a code; ``undelivered`` once the destination has refused one of its results for good); its
result objects sit in the outbox as ``pending`` until the destination confirms them. A study's
verdict is ``open`` while images arrive, ``done`` once its results are queued. All states survive
a crash; :meth:`Spool.recover` resumes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fracsight._files import replace_atomically

__all__ = [
    "WRITE_ERRORS",
    "InstanceRow",
    "OutboxRow",
    "Spool",
    "instance_key",
    "study_key",
    "write_durably",
]

RECEIVED = "received"
RESULTS_PENDING = "results_pending"
SENT = "sent"
UNDELIVERED = "undelivered"  # every result settled, at least one given up: kept for a person to look at
REFUSED = "refused"
FAILED = "failed"
OPEN = "open"
DONE = "done"
PENDING = "pending"

# what a spool write raises when the spool's disk, not the data, is the trouble: a full disk or a
# quota (OSError for a file; sqlite3.OperationalError "database or disk is full" for spool.db, as
# for "disk I/O error" and a database locked for long): the write is worth trying again later
WRITE_ERRORS = (OSError, sqlite3.OperationalError)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    key TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    state TEXT NOT NULL,
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    code TEXT
);
CREATE INDEX IF NOT EXISTS instances_state ON instances(state, received_at);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    last_received REAL NOT NULL,
    verdict TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS studies_verdict ON studies(verdict, last_received);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    code TEXT
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox(state, next_try);
CREATE INDEX IF NOT EXISTS outbox_owner ON outbox(owner);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    value INTEGER NOT NULL,
    PRIMARY KEY (name, label)
);
"""


def _digest(text: str, size: int) -> str:
    return hashlib.sha256(text.strip().rstrip("\0").encode()).hexdigest()[:size]


def instance_key(sop_instance_uid: str) -> str:
    """The spool's name for an instance: 20 hex digits of the SHA-256 of its SOP Instance UID.

    Long enough never to collide in a spool (80 bits), short enough for a log line; a UID can
    link to a patient in the PACS, so only this hash is ever logged or shown.
    """
    return _digest(sop_instance_uid, 20)


def study_key(study_uid: str) -> str:
    """A study's short name for logs and result folders (12 hex digits of its UID's SHA-256)."""
    return _digest(study_uid, 12)


@dataclass(frozen=True)
class InstanceRow:
    key: str
    study_uid: str
    state: str
    received_at: float
    code: str | None


@dataclass(frozen=True)
class OutboxRow:
    id: int
    owner: str
    path: Path
    attempts: int


def write_durably(target: Path, data: bytes, tmp_dir: Path) -> None:
    """Write ``data`` to ``target``: a temp file in ``tmp_dir`` (same file system), fsync, rename,
    fsync of the folder. Safe from several threads and processes at once."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    replace_atomically(target, lambda tmp: tmp.write_bytes(data), tmp_dir=tmp_dir)


def _read_only(db: Path) -> sqlite3.Connection:
    """``db`` opened for reading only. A WAL database in a folder this user cannot write (a stopped
    node's spool on a read-only mount, a monitoring user's `dicom status`) cannot be opened so where
    no node has it open (SQLite cannot make its -shm file): "spool_busy: unable to open database
    file". Then, and only then, it is read as immutable: no node is writing it."""
    uri = db.resolve().as_uri()
    connection = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
    try:
        connection.execute("SELECT 1 FROM sqlite_master LIMIT 1")  # SQLite opens the file here
        return connection
    except sqlite3.OperationalError:
        connection.close()
        if os.access(db.parent, os.W_OK) or (db.parent / "spool.db-shm").exists():
            raise
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False, isolation_level=None)


class Spool:
    """The spool folder and its database; thread-safe (one connection behind a lock)."""

    def __init__(self, root: str | os.PathLike[str], *, read_only: bool = False) -> None:
        """Open (creating what is missing) the spool at ``root``.

        ``read_only``: open an existing spool's database for reading only (``dicom status``):
        nothing is created or changed, and a database without the node's tables is an error.
        """
        self.root = Path(root)
        self.instances_dir = self.root / "instances"
        self.results_dir = self.root / "results"
        self.tmp_dir = self.root / "tmp"
        self._lock = threading.RLock()
        db = self.root / "spool.db"
        if read_only:
            self._db = _read_only(db)
            missing = {"instances", "outbox", "studies", "counters"} - {
                name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if missing:
                self._db.close()
                raise sqlite3.DatabaseError(f"not a node's spool: no {', '.join(sorted(missing))} table")
            return
        for folder in (self.root, self.instances_dir, self.results_dir, self.tmp_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # private from its first byte whatever the root's mode (it names studies by their UID);
        # SQLite gives the -wal and -shm files beside it the same mode
        with contextlib.suppress(FileExistsError):
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        # one lock per key's stripe: receiving a key is one step, receiving different keys is not
        # held up by another's fsync
        self._receiving = [threading.Lock() for _ in range(64)]
        self._db = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- durable files ----------------------------------------------------------------------------
    def write_file(self, target: Path, data: bytes) -> None:
        """Write ``data`` to ``target`` durably: temp file, fsync, rename, fsync of the folder."""
        write_durably(target, data, self.tmp_dir)

    def instance_path(self, key: str) -> Path:
        return self.instances_dir / f"{key}.dcm"

    def results_folder(self, owner: str) -> Path:
        return self.results_dir / owner.replace(":", "-")

    # ---- receiving --------------------------------------------------------------------------------
    def has_instance(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM instances WHERE key=?", (key,)).fetchone() is not None

    def add_instance(self, key: str, study_uid: str, data: bytes, *, now: float | None = None) -> bool:
        """Store a received instance (file fsynced, row committed). False if the spool already had it.

        The check, the file and the row go together for one key: two associations sending one SOP
        Instance UID at once both passed the check, the second file replaced the first under the
        first's row (its study), and the results went into the other patient's study."""
        with self._receiving[hash(key) % len(self._receiving)]:
            if self.has_instance(key):
                self.count("duplicates")
                return False
            self.write_file(self.instance_path(key), data)
            return self._register(key, study_uid, time.time() if now is None else now)

    def _register(self, key: str, study_uid: str, now: float) -> bool:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO instances(key, study_uid, state, received_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, study_uid, RECEIVED, now, now),
            ).rowcount
            if inserted:
                # a study whose verdict was given stays done until a late image is predicted
                # (queue_many): one the reader refuses would get a second verdict over the same images
                self._db.execute(
                    "INSERT INTO studies(study_uid, last_received, verdict) VALUES (?, ?, ?) "
                    "ON CONFLICT(study_uid) DO UPDATE SET last_received=excluded.last_received",
                    (study_uid, now, OPEN),
                )
                self._count("received")
            else:
                self._count("duplicates")
        return bool(inserted)

    # ---- worker -----------------------------------------------------------------------------------
    def received(self, limit: int) -> list[InstanceRow]:
        """Instances waiting for a prediction, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, study_uid, state, received_at, code FROM instances WHERE state=? "
                "ORDER BY received_at, key LIMIT ?",
                (RECEIVED, limit),
            ).fetchall()
        return [InstanceRow(*r) for r in rows]

    def study_instances(self, study_uid: str) -> list[InstanceRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, study_uid, state, received_at, code FROM instances WHERE study_uid=? "
                "ORDER BY received_at, key",
                (study_uid,),
            ).fetchall()
        return [InstanceRow(*r) for r in rows]

    def quiet_studies(self, quiet_time: float, *, now: float | None = None) -> list[tuple[str, int]]:
        """Open studies with no image for ``quiet_time`` seconds and none left to predict:
        ``(study_uid, generation)`` pairs."""
        now = time.time() if now is None else now
        with self._lock:
            return self._db.execute(
                "SELECT s.study_uid, s.generation FROM studies s WHERE s.verdict=? AND s.last_received<=? "
                "AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.study_uid=s.study_uid AND i.state=?) "
                "ORDER BY s.last_received",
                (OPEN, now - quiet_time, RECEIVED),
            ).fetchall()

    def next_study_deadline(self, quiet_time: float) -> float | None:
        """When the earliest open study becomes quiet (wall clock), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(last_received) FROM studies WHERE verdict=?", (OPEN,)
            ).fetchone()
        return None if row[0] is None else row[0] + quiet_time

    def queue_many(self, results: Sequence[tuple[str, Sequence[Path]]]) -> None:
        """Put each instance's result files (already written durably) in the outbox and move it on
        to ``results_pending`` (``sent`` when there is nothing to send), counted as predicted: all
        of them (a job's) in one transaction, so one commit and one fsync of the database."""
        if not results:
            return
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO outbox(owner, path, state) VALUES (?, ?, ?)",
                [(owner, str(p.relative_to(self.root)), PENDING) for owner, files in results for p in files],
            )
            self._db.executemany(
                "UPDATE instances SET state=?, updated_at=? WHERE key=?",
                [(RESULTS_PENDING if files else SENT, now, owner) for owner, files in results],
            )
            # a late image, now predicted, re-opens its study: a new verdict covers it
            self._db.executemany(
                "UPDATE studies SET verdict=? WHERE verdict=? "
                "AND study_uid=(SELECT study_uid FROM instances WHERE key=?)",
                [(OPEN, DONE, owner) for owner, _ in results],
            )
            self._count("predicted", n=len(results))

    def finish_study(
        self,
        study_uid: str,
        generation: int,
        owner: str,
        files: Sequence[Path],
        *,
        instances: int | None = None,
    ) -> bool:
        """Queue a study verdict's files and close the study, unless an image arrived meanwhile
        (then the study stays open for a new verdict and nothing is queued). True when queued.
        ``instances``: how many the study had when its verdict was begun; an image received since
        and already predicted or refused (nothing left ``received``) had the study closed with a
        verdict that had not seen it."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            count = "(SELECT COUNT(*) FROM instances WHERE study_uid=?)"
            closed = self._db.execute(
                "UPDATE studies SET verdict=?, generation=generation+1 WHERE study_uid=? AND generation=? "
                "AND verdict=? AND NOT EXISTS (SELECT 1 FROM instances WHERE study_uid=? AND state=?) "
                f"AND (? IS NULL OR {count} = ?)",
                (DONE, study_uid, generation, OPEN, study_uid, RECEIVED, instances, study_uid, instances),
            ).rowcount
            if closed:
                self._db.executemany(
                    "INSERT INTO outbox(owner, path, state) VALUES (?, ?, ?)",
                    [(owner, str(p.relative_to(self.root)), PENDING) for p in files],
                )
                if files:
                    self._count("study_verdicts")
        return bool(closed)

    def mark_instance(self, key: str, state: str, code: str | None = None) -> None:
        """Refuse or fail an instance (no results will be made for it) and count it by code."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "UPDATE instances SET state=?, code=?, updated_at=? WHERE key=?",
                (state, code, time.time(), key),
            )
            # a late view that cannot be read re-opens its study too: the verdict has not seen it
            self._db.execute(
                "UPDATE studies SET verdict=? WHERE verdict=? "
                "AND study_uid=(SELECT study_uid FROM instances WHERE key=?)",
                (OPEN, DONE, key),
            )
            self._count("refused" if state == REFUSED else "failed", code or "")

    # ---- sender -----------------------------------------------------------------------------------
    def due(self, limit: int, *, now: float | None = None) -> list[OutboxRow]:
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT id, owner, path, attempts FROM outbox WHERE state=? AND next_try<=? "
                "ORDER BY id LIMIT ?",
                (PENDING, now, limit),
            ).fetchall()
        return [OutboxRow(i, o, self.root / p, a) for i, o, p, a in rows]

    def next_due(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_try) FROM outbox WHERE state=?", (PENDING,)).fetchone()
        return row[0]

    def mark_sent(self, rows: Iterable[OutboxRow]) -> None:
        """Record delivered result objects; an instance whose results are all delivered is ``sent``."""
        rows = list(rows)
        if not rows:
            return
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("UPDATE outbox SET state=? WHERE id=?", [(SENT, r.id) for r in rows])
            self._settle({r.owner for r in rows}, now)
            self._count("results_sent", n=len(rows))

    def _settle(self, owners: Iterable[str], now: float) -> None:
        """Within a transaction: each instance among ``owners`` with no result left to send is
        ``sent``, or ``undelivered`` when one of its results was given up."""
        for owner in owners:
            states = {
                state
                for (state,) in self._db.execute("SELECT DISTINCT state FROM outbox WHERE owner=?", (owner,))
            }
            if PENDING not in states:
                self._db.execute(
                    "UPDATE instances SET state=?, updated_at=? WHERE key=? AND state=?",
                    (UNDELIVERED if FAILED in states else SENT, now, owner, RESULTS_PENDING),
                )

    def retry_later(self, rows: Iterable[OutboxRow], delay: float, code: str, *, give_up_after: int) -> int:
        """Push result objects back by ``delay`` seconds after a failed attempt; after
        ``give_up_after`` refusals an object is ``failed``. Returns how many failed.

        ``give_up_after=0``: an attempt that is no refusal (the destination down or out of
        resources), never given up and not counted: an outage of minutes used to count each try,
        and the first refusal after it gave up every object that had waited through it."""
        rows = list(rows)
        now = time.time()
        failed = 0
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for r in rows:
                attempts = r.attempts + 1 if give_up_after else r.attempts
                if give_up_after and attempts >= give_up_after:
                    failed += 1
                    self._db.execute(
                        "UPDATE outbox SET state=?, attempts=?, code=? WHERE id=?",
                        (FAILED, attempts, code, r.id),
                    )
                    self._count("send_failed", code)
                else:
                    self._db.execute(
                        "UPDATE outbox SET attempts=?, next_try=?, code=? WHERE id=?",
                        (attempts, now + delay, code, r.id),
                    )
            if failed:
                self._settle({r.owner for r in rows}, now)
            self._count("send_retries")
        return failed

    def resend_failed(self, code: str | None = None) -> dict[str, int]:
        """Queue the result objects that were given up (``code``: only those refused with it) to be
        sent again at once, with their attempts counted from zero; their instances are
        ``results_pending`` again. For a person who fixed what the destination refused them for;
        safe while the node runs (its sender picks them up). Returns how many, by code."""
        where, args = ("state=? AND code=?", (FAILED, code)) if code else ("state=?", (FAILED,))
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(f"SELECT id, owner, code FROM outbox WHERE {where}", args).fetchall()
            self._db.executemany(
                "UPDATE outbox SET state=?, attempts=0, next_try=0 WHERE id=?",
                [(PENDING, i) for i, _, _ in rows],
            )
            self._db.executemany(
                "UPDATE instances SET state=?, updated_at=? WHERE key=? AND state=?",
                [(RESULTS_PENDING, time.time(), owner, UNDELIVERED) for owner in {o for _, o, _ in rows}],
            )
        return dict(Counter(failed_code or "" for _, _, failed_code in rows))

    # ---- counters and status ----------------------------------------------------------------------
    def _count(self, name: str, label: str = "", n: int = 1) -> None:
        self._db.execute(
            "INSERT INTO counters(name, label, value) VALUES (?, ?, ?) "
            "ON CONFLICT(name, label) DO UPDATE SET value=value+excluded.value",
            (name, label, n),
        )

    def count(self, name: str, label: str = "", n: int = 1) -> None:
        """Add ``n`` to a persistent counter (survives restarts; shown by status and /metrics)."""
        with self._lock, self._db:
            self._count(name, label, n)

    def counters(self) -> dict[str, dict[str, int]]:
        """``{name: {label: value}}``; an unlabelled counter has the label ``""``."""
        with self._lock:
            rows = self._db.execute("SELECT name, label, value FROM counters ORDER BY name, label").fetchall()
        out: dict[str, dict[str, int]] = {}
        for name, label, value in rows:
            out.setdefault(name, {})[label] = value
        return out

    def backlog(self) -> dict[str, int]:
        """What is waiting now: instances to predict, result objects to send, open studies."""
        with self._lock:
            to_predict = self._db.execute(
                "SELECT COUNT(*) FROM instances WHERE state=?", (RECEIVED,)
            ).fetchone()
            to_send = self._db.execute("SELECT COUNT(*) FROM outbox WHERE state=?", (PENDING,)).fetchone()
            studies = self._db.execute("SELECT COUNT(*) FROM studies WHERE verdict=?", (OPEN,)).fetchone()
        return {"to_predict": to_predict[0], "to_send": to_send[0], "open_studies": studies[0]}

    def retrying(self) -> int:
        """Result objects waiting to be sent again after a failed try (the destination down,
        refusing the association, or these objects): those with the code of a failure."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE state=? AND code IS NOT NULL", (PENDING,)
            ).fetchone()
        return int(row[0])

    def given_up(self) -> dict[str, int]:
        """Result objects given up and not sent again since, image results and study verdicts apart:
        a verdict given up changed no instance's state, so nothing but a counter showed it."""
        with self._lock:
            rows = self._db.execute(
                "SELECT owner LIKE 'study:%', COUNT(*) FROM outbox WHERE state=? GROUP BY 1", (FAILED,)
            ).fetchall()
        counted = {bool(study): n for study, n in rows}
        return {"image_results": counted.get(False, 0), "study_verdicts": counted.get(True, 0)}

    def states(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM instances GROUP BY state").fetchall()
        return dict(rows)

    # ---- recovery and housekeeping ---------------------------------------------------------------
    def recover(self, study_uid_of) -> int:
        """Resume after a crash or stop: empty ``tmp/``; register instance files that were fsynced
        but whose row was not committed (their C-STORE was never acknowledged, so registering them
        is safe; the sender's retry is then a duplicate). Returns how many. The open studies' quiet
        time starts again with :meth:`restart_quiet_time`, once the node listens."""
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(mode=0o700, exist_ok=True)
        registered = 0
        for path in sorted(self.instances_dir.glob("*.dcm")):
            key = path.stem
            if self.has_instance(key):
                continue
            study_uid = study_uid_of(path)
            if study_uid is None:
                path.unlink(missing_ok=True)
                continue
            registered += self._register(key, study_uid, path.stat().st_mtime)
        return registered

    def restart_quiet_time(self, *, now: float | None = None) -> None:
        """Give each open study a fresh quiet time from ``now``: while the node was down, and until
        it listens again, the modality could not send the study's other images."""
        with self._lock, self._db:
            self._db.execute(  # and a done study with a late image still to predict (it re-opens)
                "UPDATE studies SET last_received=MAX(last_received, ?) WHERE verdict=? OR EXISTS "
                "(SELECT 1 FROM instances i WHERE i.study_uid=studies.study_uid AND i.state=?)",
                (time.time() if now is None else now, OPEN, RECEIVED),
            )

    def prune(self, older_than: float) -> int:
        """Delete the files (instances and results) of studies whose verdict is done, whose every
        result was delivered ``older_than`` seconds ago or more, and which saw no image for as long
        (an instance's ``updated_at`` is when its last result was delivered). A result given up
        keeps its files, and an ``undelivered`` instance its study's, for a person to look at. Rows
        stay (they remember what was received, so a re-sent instance is not processed twice)."""
        cutoff = time.time() - older_than
        prunable = (
            "SELECT study_uid FROM studies WHERE verdict=? AND last_received<=? AND NOT EXISTS ("
            "SELECT 1 FROM instances WHERE study_uid=studies.study_uid "
            "AND (state IN (?, ?, ?) OR updated_at>?))"
        )
        args = (DONE, cutoff, RECEIVED, RESULTS_PENDING, UNDELIVERED, cutoff)
        with self._lock:
            studies = self._db.execute(prunable, args).fetchall()
        pruned = 0
        for (study_uid,) in studies:
            with self._lock:  # asked again with its rows: an image received since (acknowledged, its
                # file on disk, a row `received`) was deleted with the study's older files
                still = self._db.execute(f"{prunable} AND study_uid=?", (*args, study_uid)).fetchone()
                rows = self.study_instances(study_uid) if still else []
            if not rows:
                continue
            for row in rows:
                path = self.instance_path(row.key)
                if path.exists():
                    path.unlink()
                    pruned += 1
                shutil.rmtree(self.results_folder(row.key), ignore_errors=True)
            for folder in self.results_dir.glob(f"study-{study_key(study_uid)}-*"):
                with self._lock:
                    waiting = self._db.execute(
                        "SELECT 1 FROM outbox WHERE path LIKE ? AND state IN (?, ?) LIMIT 1",
                        (f"results/{folder.name}/%", PENDING, FAILED),
                    ).fetchone()
                if waiting is None:
                    shutil.rmtree(folder, ignore_errors=True)
        return pruned
