"""The node's heavy work, in this thread or in worker processes: read, predict, make the results.

Reading a spooled radiograph (the JPEG-lossless decode), the model, and building a structured
report, a presentation state and a secondary capture (highdicom, pydicom: pure Python) are
nearly all of the node's CPU time (docs/dicom.md has the figures). In the worker thread they
hold the interpreter lock that the listener and the sender need, and leave the second core
idle. :class:`Processing` with ``processes > 0`` runs them in that many worker processes
(spawned, each with its own :class:`~fracsight.inference.Predictor` of the same bundle, loaded
and warmed up when the process starts; the main process loads none): a job takes spool paths
and gives back what the worker must commit (result files already written durably, the
prediction without its pixels), so only file names and small objects cross between the
processes, never pixels. With ``processes=0`` the same jobs run in the calling thread. Either
way the objects are exactly those of :func:`fracsight.dicom.results.result_datasets` and
:func:`fracsight.dicom.results.study_result_datasets`.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fracsight._malloc import is_large, release_freed_memory
from fracsight.dicom._logging import setup_logging
from fracsight.dicom.spool import write_durably
from fracsight.errors import BundleError, DicomSourceError, FracsightError, ModelOutputError

if TYPE_CHECKING:
    from fracsight.inference import Prediction, Predictor
    from fracsight.io import Radiograph

__all__ = [
    "ImageJob",
    "ImageOutcome",
    "ModelRef",
    "Processing",
    "StudyOutcome",
    "encode_dataset",
    "make_image_results",
    "make_study_results",
    "spool_write_error",
]

log = logging.getLogger(__name__)

_predictor: Predictor | None = None  # in a worker process: its own predictor of the node's bundle


def encode_dataset(ds: Any) -> bytes:
    """A result data set as DICOM file bytes (Part 10: preamble, file meta, data set)."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        ds.file_meta = meta if meta is not None else pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _write_all(encoded: Sequence[bytes], folder: Path, tmp_dir: Path) -> list[Path]:
    """Write encoded result objects durably as ``folder/0.dcm``, ``1.dcm``, ..."""
    files = []
    for n, data in enumerate(encoded):
        path = folder / f"{n}.dcm"
        write_durably(path, data, tmp_dir)
        files.append(path)
    return files


def _result_objects(
    predictor: Predictor, kinds: Sequence[str], data: bytes, radiograph: Radiograph, prediction: Prediction
) -> list[bytes]:
    """The encoded result objects of one read and predicted image (``data``: its file)."""
    import pydicom

    from fracsight.dicom.results import image_uid_seed, quiet_values, result_datasets

    with quiet_values():
        source = pydicom.dcmread(io.BytesIO(data))
    # the UIDs `fracsight dicom study` derives too: the same results made again, here after a crash
    # or there over DICOMweb, are the same objects, which the PACS keeps once
    made = result_datasets(
        source,
        dataclasses.replace(prediction, pixels=radiograph.pixels),
        predictor,
        kinds=kinds,
        # (no UID of its own: nothing to derive from, and the results refuse such a source anyway)
        uid_seed=image_uid_seed(str(source.SOPInstanceUID), predictor)
        if "SOPInstanceUID" in source
        else None,
    )
    return [encode_dataset(ds) for ds in made]


@dataclass(frozen=True)
class ImageJob:
    """One spooled instance to process: its file, and where its result objects go."""

    key: str
    path: Path
    folder: Path
    tmp_dir: Path


@dataclass(frozen=True)
class ImageOutcome:
    """What became of an :class:`ImageJob`. ``state`` is ``"done"`` (``files`` written,
    ``prediction`` without pixels), ``"refused"`` (the reader's error ``code``), ``"failed"``
    (``code`` for the counter, ``error`` the exception's type for the log) or ``"deferred"``
    (the result files could not be written to the spool, a full disk: ``error`` says how; the
    instance is tried again later, since the image itself is fine)."""

    key: str
    state: str
    files: tuple[Path, ...] = ()
    prediction: Prediction | None = None
    code: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class StudyOutcome:
    """The study verdict's files (none when no image could be assessed), and how many images it
    covers; ``error`` the exception's type when it could not be made."""

    files: tuple[Path, ...]
    images: int
    error: str | None = None
    deferred: bool = False  # not written to the spool (a full disk): the study stays open
    # images of the study pruned from the spool (--keep-files) before a late one re-opened it: then
    # no verdict is made, as it would cover only the late images and replace the one over them all
    pruned: int = 0


# SQLite's own words for the errors a spool write meets (its message is not logged: see below)
_SQLITE_WORDS = {"FULL": "database or disk is full", "BUSY": "database is locked", "IOERR": "disk I/O error"}


def spool_write_error(error: OSError | sqlite3.Error) -> str:
    """How writing to the spool failed, for the log: the exception's type and errno name
    (``OSError ENOSPC``), or SQLite's name for the error (``OperationalError SQLITE_FULL``);
    like every failure in the node's log, never the exception's message."""
    import errno

    if isinstance(error, sqlite3.Error):
        name = getattr(error, "sqlite_errorname", "SQLITE_ERROR")
        words = _SQLITE_WORDS.get(name.split("_")[1] if name.count("_") else name, "")
        return f"{type(error).__name__} {name}{words and f': {words}'}"
    return f"{type(error).__name__} {errno.errorcode.get(error.errno or 0, error.errno)}"


def _results_error(job: ImageJob, error: Exception) -> ImageOutcome:
    return ImageOutcome(job.key, "failed", code="results_error", error=type(error).__name__)


def make_image_results(
    predictor: Predictor, kinds: Sequence[str], jobs: Sequence[ImageJob]
) -> list[ImageOutcome]:
    """Read, predict (one batch) and make the result objects of ``jobs``; one outcome per job,
    in order. A bad image never stops the others. The files are written and fsynced by a
    writer thread while the next image's objects are built (an fsync is a wait, not work);
    the outcomes are returned once all are on disk. After a large image the freed memory goes
    back to the system, once every array of the batch is freed (its work done in a call of its
    own: the loop's variables held the last image)."""
    outcomes = _image_results(predictor, kinds, jobs)
    if any(o.prediction is not None and is_large(o.prediction.image_size) for o in outcomes):
        release_freed_memory()
    return outcomes


def _image_results(
    predictor: Predictor, kinds: Sequence[str], jobs: Sequence[ImageJob]
) -> list[ImageOutcome]:
    from concurrent.futures import ThreadPoolExecutor

    outcomes: dict[str, ImageOutcome] = {}
    read: list[tuple[ImageJob, bytes, Any]] = []
    for job in jobs:
        try:
            data = job.path.read_bytes()
        except FileNotFoundError:
            outcomes[job.key] = ImageOutcome(job.key, "failed", code="spool_file_missing")
            continue
        try:
            read.append((job, data, predictor.read(data, name=f"{job.key}.dcm")))
        except FracsightError as e:
            outcomes[job.key] = ImageOutcome(job.key, "refused", code=e.code)
    predictions = predictor.predict_radiographs(
        [r for _, _, r in read], [f"{job.key}.dcm" for job, _, _ in read], heatmap=False
    )
    with ThreadPoolExecutor(1, thread_name_prefix="fracsight-writer") as writer:
        writes = []
        for (job, data, radiograph), prediction in zip(read, predictions, strict=True):
            try:
                encoded = _result_objects(predictor, kinds, data, radiograph, prediction)
            except Exception as e:
                outcomes[job.key] = _results_error(job, e)
                continue
            writes.append((job, prediction, writer.submit(_write_all, encoded, job.folder, job.tmp_dir)))
        for job, prediction, written in writes:
            try:
                outcomes[job.key] = ImageOutcome(job.key, "done", tuple(written.result()), prediction)
            except OSError as e:  # the spool's disk (full, a quota), not the image: tried again later
                outcomes[job.key] = ImageOutcome(job.key, "deferred", error=spool_write_error(e))
            except Exception as e:
                outcomes[job.key] = _results_error(job, e)
    return [outcomes[job.key] for job in jobs]


def make_study_results(
    predictor: Predictor,
    images: Sequence[tuple[str, Path, Prediction | None]],
    name: str,
    folder: Path,
    tmp_dir: Path,
    previous: Path | None = None,
    unread: Sequence[str] = (),
) -> StudyOutcome:
    """The study verdict over ``images`` (spool key, file, its prediction if still known: else
    predicted again from the file), written durably to ``folder``; ``previous``: the file of the
    study's earlier verdict, which this one replaces and names (when it can still be read);
    ``unread``: the study's views that could not be read, which make the verdict not reliable."""

    from fracsight.dicom.results import header_of, study_result_datasets, study_uid_seed

    sources, predictions, pruned, unread = [], [], 0, list(unread)
    for key, path, prediction in images:
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # pruned long ago: a late image re-opened the study
            pruned += 1
            continue
        if prediction is None:
            try:
                (prediction,) = predictor.predict_radiographs(
                    [predictor.read(data, name=f"{key}.dcm")], [f"{key}.dcm"], heatmap=False
                )
            except FracsightError:
                unread.append(f"{key}.dcm")
                continue
        sources.append(header_of(data))
        predictions.append(prediction)
    if not predictions or pruned:
        return StudyOutcome((), len(predictions), pruned=pruned)
    try:
        verdict = predictor.predict_study(predictions, study=name, unread=unread)
        seed = study_uid_seed(sources, predictor, unread)
        earlier = _earlier_verdict(previous)
        made = study_result_datasets(
            sources, verdict, predictions, predictor, uid_seed=seed, previous=earlier
        )
        encoded = [encode_dataset(ds) for ds in made]
        return StudyOutcome(tuple(_write_all(encoded, folder, tmp_dir)), len(predictions))
    except OSError as e:  # the spool's disk, as for an image's results: made again later
        return StudyOutcome((), len(predictions), error=spool_write_error(e), deferred=True)
    except FracsightError as e:  # its words for the log: they never quote the headers (two patients, ...)
        return StudyOutcome((), len(predictions), error=f"{e.code}: {e}")
    except Exception as e:
        return StudyOutcome((), len(predictions), error=type(e).__name__)


def _earlier_verdict(path: Path | None) -> list[Any]:
    """The earlier study SR at ``path``, without its content; none when it is gone (pruned)."""
    import pydicom

    from fracsight.dicom.results import quiet_values

    if path is None:
        return []
    try:
        with quiet_values():
            return [pydicom.dcmread(path, stop_before_pixels=True)]
    except (OSError, pydicom.errors.InvalidDicomError):
        return []


def _exit_with_parent() -> None:
    """A worker process ends when the node does, also when the node was killed (SIGKILL, the
    OOM killer): an orphan would hold its memory and could write into a restarted node's spool.
    Waits on the parent's sentinel (readable once the parent is gone): no polling."""
    import multiprocessing
    import os
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
    os._exit(0)


def _exit_on_the_nodes_sigterm(parent: int) -> None:
    """Wait for SIGTERM (held in every thread of a worker process) and end the process when the
    node (``parent``) sent it: the pool's terminate() after another process of it died. One sent
    to the whole process group is for the node, which stops its workers itself, after their jobs."""
    import os
    import signal

    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(128 + signal.SIGTERM)


def _init_process(model: ModelRef, log_level: int) -> None:
    global _predictor
    import multiprocessing
    import os
    import signal
    import threading

    # Ctrl-C, and a SIGTERM from systemd (KillMode=control-group) or `kill -TERM -PGID`, reach the
    # whole process group: the node stops its workers itself, after the jobs they hold. SIGTERM is
    # held (blocked here, so in every thread started from here) and taken by a thread of its own,
    # since the node still needs it to end the processes of a pool that broke.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "sigwaitinfo"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        parent = multiprocessing.parent_process()
        node = parent.pid if parent is not None else os.getppid()
        threading.Thread(target=_exit_on_the_nodes_sigterm, args=(node,), name="sigterm", daemon=True).start()
    elif hasattr(signal, "pthread_sigmask"):  # macOS: SIGTERM ends a worker, as before (held at its start)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()

    setup_logging(log_level)  # as in the node: one format, library logs and warnings quiet
    try:
        _predictor = model.load()
        _warm_up(_predictor)
    except FracsightError as e:
        # a bundle that cannot be loaded (bundle.json contradicting its graph), or that gives NaN:
        # one line, where concurrent.futures logged a traceback of every worker (the node says why
        # again at start)
        log.error("worker process: the model cannot be used: %s", e)
        os._exit(1)


def _warm_up(predictor: Predictor) -> None:
    """Take a made-up radiograph through a whole job (nothing is written): the first real image
    would otherwise pay for the imports, decoder plugins and first-call caches of reading,
    the model and highdicom (about 0.9 s per process, measured)."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

    from fracsight.dicom.results_context import KINDS

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (generate_uid() for _ in range(3))
    ds.Modality, ds.PhotometricInterpretation = "CR", "MONOCHROME2"
    ds.Rows = ds.Columns = 256
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
    ramp = np.add.outer(np.arange(256), np.arange(256)).astype(np.uint16) * 8
    ds.PixelData = ramp.tobytes()
    data = encode_dataset(ds)
    try:
        radiograph = predictor.read(data, name="warm-up.dcm")
        (prediction,) = predictor.predict_radiographs([radiograph], ["warm-up.dcm"], heatmap=False)
        _result_objects(predictor, KINDS, data, radiograph, prediction)
    except ModelOutputError:  # a broken model (NaN out): every image would fail; the node does not start
        raise
    except DicomSourceError:  # of a valid made-up radiograph: no image's would be made either
        raise BundleError(
            f"{predictor.name}: the result objects of a made-up radiograph could not be made with this "
            "model, so every image would end without results (a value of the model's, its name or a "
            "class, may be one DICOM cannot carry)"
        ) from None
    except Exception as e:  # a cold start is slower, not wrong
        log.debug("warm-up failed: %s", type(e).__name__)


def _ready(predictor: Predictor) -> str:
    return predictor.name


def _in_process(function: Callable[..., Any], *args: Any) -> Any:
    assert _predictor is not None, "worker process not initialised"
    return function(_predictor, *args)


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP blocked in this thread while it starts worker processes (the pool starts
    them in submit()): a process inherits the mask, so that Ctrl-C or a SIGTERM to the process
    group cannot end one while its interpreter starts, before :func:`_init_process` ignores them
    ("Fatal Python error: init_import_site", and a broken pool). The node itself still gets them
    (another thread takes them, or this one once the mask is restored). multiprocessing starts
    its resource tracker so too."""
    import signal

    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    # SIGHUP too: the node stops on it as on SIGTERM, and a hang-up reaches the whole process group
    # (a node in the foreground of an ssh session that drops): it ended the workers mid-job
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@dataclass(frozen=True)
class ModelRef:
    """The bundle the jobs run, named by its folder: worker processes load it themselves, so the
    node's main process, which only receives, commits and sends, holds no model (about 100 MB)."""

    bundle_dir: Path
    operating_point: str | None = None
    threads: int = 1  # ONNX Runtime threads of each process's session

    @classmethod
    def resolve(cls, model: str | Path | None, operating_point: str | None, threads: int = 1) -> ModelRef:
        """A packaged name, folder or .zip (None: the default model), checked as far as can be
        without loading it: the bundle exists, its model.onnx is the one bundle.json names, and it
        has the operating point asked for (a worker process would fail on each, out of sight)."""
        from fracsight.inference.store import checked_bundle

        folder, _ = checked_bundle(model, operating_point)  # BundleError if unknown
        return cls(folder, operating_point, threads)

    @classmethod
    def of(cls, predictor: Predictor, threads: int = 1) -> ModelRef:
        op = predictor.operating_point
        return cls(predictor.bundle_dir, op.name if op is not None else None, threads)

    @property
    def name(self) -> str:
        from fracsight.bundle import load_bundle_spec

        spec = load_bundle_spec(self.bundle_dir)
        return f"{spec.name} v{spec.version}"

    def load(self) -> Predictor:
        from fracsight.inference import Predictor

        return Predictor(self.bundle_dir, threads=self.threads, operating_point=self.operating_point)


class Processing:
    """Runs :func:`make_image_results` and :func:`make_study_results` jobs in ``processes``
    worker processes, or in the calling thread (``processes=0``: :meth:`submit` returns a
    future that is already done). ``model``: a loaded predictor (used as it is in the thread),
    or a :class:`ModelRef` that each process loads (and the thread, at :meth:`start`)."""

    def __init__(self, model: Predictor | ModelRef, processes: int = 0) -> None:
        self.model = model if isinstance(model, ModelRef) else ModelRef.of(model)
        self._predictor = None if isinstance(model, ModelRef) else model
        self.processes = max(0, processes)
        self._pool: ProcessPoolExecutor | None = None
        self.generation = 0  # of the pool: a job's failure resets only the pool that ran it

    def _new_pool(self) -> ProcessPoolExecutor:
        import multiprocessing

        self.generation += 1
        # the pool's queues start multiprocessing's resource tracker, which keeps the mask it
        # inherits but for SIGINT and SIGTERM (it ignores those): a SIGHUP to the process group
        # ended it ("resource_tracker: process died unexpectedly", and KeyError tracebacks)
        with _signals_held():
            return ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),  # never fork a process that runs threads
                initializer=_init_process,
                initargs=(self.model, logging.getLogger("fracsight").getEffectiveLevel()),
            )

    def start(self) -> None:
        """Load the model: start the worker processes and wait until each has loaded the bundle,
        rather than making the first images wait for it."""
        if self.processes == 0:
            self._in_thread()
        elif self._pool is None:
            self._pool = self._new_pool()
            with _signals_held():
                warm = [self._pool.submit(_in_process, _ready) for _ in range(self.processes)]
            try:
                for future in warm:
                    future.result()
            except BrokenProcessPool:
                # a bundle.json that contradicts its graph kills every worker as it loads: said here
                # as the worker's BundleError, not as a broken pool's traceback (this process holds
                # no model otherwise: loading one only to check it cost 40-70 MB for good)
                _warm_up(self.model.load())
                raise

    def _in_thread(self) -> Predictor:
        if self._predictor is None:
            self._predictor = self.model.load()
            _warm_up(self._predictor)
        return self._predictor

    def submit(self, function: Callable[..., Any], *args: Any) -> Future[Any]:
        """``function(predictor, *args)`` in a worker process, or here."""
        if self.processes == 0:
            future: Future[Any] = Future()
            try:
                future.set_result(function(self._in_thread(), *args))
            except Exception as e:
                future.set_exception(e)
            return future
        if self._pool is None:
            self._pool = self._new_pool()
        try:
            with _signals_held():
                return self._pool.submit(_in_process, function, *args)
        except BrokenProcessPool:  # a process died while the pool was idle: start a new pool
            log.warning("a worker process had died; starting new ones")
            self.reset(self.generation)
            self._pool = self._new_pool()
            with _signals_held():
                return self._pool.submit(_in_process, function, *args)

    def reset(self, generation: int) -> None:
        """After a worker process of pool ``generation`` died: drop that pool (a new one starts
        with the next job); a pool started since is left alone."""
        if self._pool is not None and generation == self.generation:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
