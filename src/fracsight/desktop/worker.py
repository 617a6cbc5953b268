"""The model off the window's thread: predictions, full-resolution views and overlay exports,
reported on a queue.

Tk may only be touched from the thread that created it, so the worker never calls into the window.
It puts :data:`Event` objects on a :class:`queue.Queue`, and the window drains that queue with
``after`` (see :mod:`fracsight.desktop.window`). Nothing here imports tkinter, so it is testable
without a display.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from fracsight._cpus import local_cpus
from fracsight._files import is_stream, write_output
from fracsight.app.logic import ViewData, failure_from_exception, named_as, view_data
from fracsight.bundle import read_card
from fracsight.desktop.priority import MODEL_NICENESS, lower_this_thread
from fracsight.desktop.render import Look, full_overlay
from fracsight.errors import FracsightError, log_unexpected
from fracsight.explain import OVERLAY_FORMATS, overlay_save_options
from fracsight.inference import FailedPrediction, Prediction, Predictor

__all__ = [
    "DISPLAY_MAX_SIDE",
    "BatchFinished",
    "BatchStarted",
    "Event",
    "FileStamp",
    "Item",
    "ModelFailed",
    "ModelLoaded",
    "OverlaySaved",
    "PredictionWorker",
    "ResultReady",
    "ViewFailed",
    "ViewReady",
    "file_stamp",
    "inference_threads",
]

log = logging.getLogger("fracsight.desktop")

# The viewer keeps the radiograph at its full resolution up to this side (larger ones are shrunk so
# that one view stays below about 130 MB of float32 pixels and heatmap).
DISPLAY_MAX_SIDE = 4096
# an exported overlay's format, by its name's suffix (each with the comment that marks it an overlay)

Item = tuple[int, Path, str]  # a file to predict: its place in the window's list, its path, its name


class FileStamp(NamedTuple):
    """What tells a file's contents from those it is replaced with later."""

    size: int
    mtime_ns: int
    inode: int


def file_stamp(path: Path) -> FileStamp | None:
    """The file's stamp, taken before it is read (a later change then shows); None when it cannot be."""
    try:
        st = path.stat()
    except OSError:
        return None
    return FileStamp(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class ModelLoaded:
    predictor: Predictor
    seconds: float
    # read with the model: read when the card was opened, a bundle exported anew into the folder
    # meanwhile showed another model's card under the loaded model's name
    card: str | None = None


@dataclass(frozen=True)
class ModelFailed:
    code: str
    message: str


@dataclass(frozen=True)
class BatchStarted:
    batch: int
    total: int


@dataclass(frozen=True)
class ResultReady:
    batch: int
    index: int  # position in the window's list of files
    path: Path
    result: Prediction | FailedPrediction  # without pixels or heatmap
    stamp: FileStamp | None  # the file as it was read for this result


@dataclass(frozen=True)
class BatchFinished:
    batch: int
    done: int
    total: int
    cancelled: bool
    seconds: float


@dataclass(frozen=True)
class ViewReady:
    index: int
    view: ViewData  # the radiograph, heatmap and boxes at full resolution (up to DISPLAY_MAX_SIDE)
    full_size: tuple[int, int]  # (height, width) of the image; larger than the view's when it was reduced
    result: Prediction  # what the model says about the file as read for this view (without pixels)
    stamp: FileStamp | None

    @property
    def reduced(self) -> bool:
        return self.view.pixels.shape != self.full_size


@dataclass(frozen=True)
class ViewFailed:
    index: int
    failure: FailedPrediction
    stamp: FileStamp | None


@dataclass(frozen=True)
class OverlaySaved:
    target: Path
    error: str | None  # None: saved


Event = (
    ModelLoaded
    | ModelFailed
    | BatchStarted
    | ResultReady
    | BatchFinished
    | ViewReady
    | ViewFailed
    | OverlaySaved
)


@dataclass(frozen=True)
class _Overlay:
    """An overlay to write at full resolution: from ``view`` when the window has the image at its
    full size, else from the file itself, read again."""

    path: Path
    name: str
    stamp: FileStamp | None  # of the result the overlay must show: a changed file is refused
    target: Path
    look: Look
    caption: tuple[str, ...] = ()  # the band below (explain.overlay_words of the result as shown)
    legend: str | None = None
    view: ViewData | None = None


def inference_threads(requested: int = 0) -> int:
    """ONNX Runtime threads for the window's model: ``requested``, or (0) one fewer than the cores.

    The window keeps a core for itself: on a loaded 2-core machine, with both cores on the model the
    event loop waited up to 700 ms during a 200-image folder, with one up to 185 ms, and the folder
    finished sooner (docs/desktop.md, ``scripts/benchmark_desktop.py --threads``).
    """
    return requested if requested > 0 else max(1, local_cpus() - 1)  # cores it may use (affinity, quota)


def _failure(name: str, error: Exception, doing: str) -> FailedPrediction:
    """A failure with a stable code: a row or a message, never a closed window; the log has the rest."""
    if not isinstance(error, FracsightError):  # the stack, not the message: it may quote patient data
        log_unexpected(log, doing, error)
    return failure_from_exception(name, error)


def predict_one(
    predictor: Predictor, path: Path, name: str, *, full: bool = False
) -> Prediction | FailedPrediction:
    """One file's result under ``name`` (as ``fracsight predict`` names it: a folder's file by its
    relative path, which :meth:`~fracsight.inference.Predictor.predict` alone would cut to the file
    name), or its failure: never an exception. ``full``: with the heatmap and full-size pixels."""
    try:
        result = predictor.predict(path, name=name, heatmap=full, keep_pixels=full)
    except Exception as e:
        return named_as(_failure(name, e, "the view" if full else "prediction"), name)
    return named_as(result, name)


class PredictionWorker:
    """Loads the model, then predicts the files it is given, one at a time, in the order given.

    ``submit`` queues a batch of :data:`Item`; ``cancel`` stops every queued batch after the image
    in progress (its result still arrives). ``request_view`` computes one image's full-resolution
    view on a second thread, so the selected image appears while a long folder runs; only the latest
    request waits there (one for an image the user has already moved past is dropped).
    ``export_overlay`` writes an overlay from the file itself on that thread, after the view.
    """

    def __init__(
        self,
        model: str | None,
        operating_point: str | None,
        events: queue.Queue[Event],
        threads: int = 0,
        niceness: int = MODEL_NICENESS,
    ) -> None:
        self.events = events
        self._model = model
        self._operating_point = operating_point
        self._threads = inference_threads(threads)
        self._niceness = niceness  # how much lower than the window's its threads run (Linux)
        self._jobs: queue.Queue[tuple[int, list[Item]] | None] = queue.Queue()
        self._cancelled_upto = 0  # batches up to this number are cancelled
        self._in_progress: int | None = None  # the index being predicted (its result will arrive)
        self._ready = threading.Event()
        self._predictor: Predictor | None = None
        self._batches = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition()  # the view thread's: a view asked for, an export, or close
        self._view: Item | None = None  # the latest view asked for and not yet begun
        self._overlays: deque[_Overlay] = deque()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="fracsight-predict", daemon=True)
        self._view_thread = threading.Thread(target=self._run_views, name="fracsight-view", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._view_thread.start()

    # ---- called from the window's thread --------------------------------------------------------------
    def submit(self, items: Sequence[Item]) -> int:
        """Queue a batch; returns its number (events carry it)."""
        with self._lock:
            self._batches += 1
            batch = self._batches
        self._jobs.put((batch, list(items)))
        return batch

    def cancel(self) -> int | None:
        """Stop every batch submitted so far; returns the index of the image in progress, whose
        result still arrives (None when none is), so that every other file is free to be queued again."""
        with self._lock:
            self._cancelled_upto = self._batches
            return self._in_progress

    def request_view(self, index: int, path: Path, name: str) -> None:
        """Compute this image's view; it replaces a request not yet begun (the one in progress ends)."""
        with self._wake:
            self._view = (index, path, name)
            self._wake.notify()

    def export_overlay(
        self,
        path: Path,
        name: str,
        stamp: FileStamp | None,
        target: Path,
        look: Look,
        words: tuple[Sequence[str], str | None] = ((), None),
        view: ViewData | None = None,
    ) -> None:
        """Write the overlay of the file at ``path`` to ``target``, with ``words`` (caption, legend)
        below it, from ``view`` (the image at its full size, as shown) or, without it, from the file
        read again: :class:`OverlaySaved` says when it is done, or why not (the file changed since
        ``stamp``). Off the window's thread: drawing and compressing a radiograph takes seconds.
        An export asked for is written even when the window closes meanwhile."""
        caption, legend = words
        with self._wake:
            self._overlays.append(_Overlay(path, name, stamp, target, look, tuple(caption), legend, view))
            self._wake.notify()

    def close(self) -> None:
        self.cancel()
        self._jobs.put(None)
        with self._wake:
            self._closed = True
            self._view = None
            self._wake.notify()

    def join(self, timeout: float) -> bool:
        """Wait, after :meth:`close`, for the threads to end (the image in progress finishes); whether
        they did within ``timeout`` seconds. A process that exits while ONNX Runtime runs is aborted
        (``terminate called without an active exception``, exit code 134)."""
        deadline = time.monotonic() + timeout
        for thread in (self._thread, self._view_thread):
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        return not (self._thread.is_alive() or self._view_thread.is_alive())

    # ---- the worker threads ---------------------------------------------------------------------------
    def _run(self) -> None:
        start = time.perf_counter()
        lower_this_thread(self._niceness)  # before the model loads: its pool threads inherit it
        try:
            self._predictor = Predictor(
                self._model, threads=self._threads, operating_point=self._operating_point
            )
        except FracsightError as e:
            self.events.put(ModelFailed(e.code, str(e)))
            return
        except Exception as e:
            log.exception("the model could not be loaded")
            failure = failure_from_exception("model", e)
            self.events.put(ModelFailed(failure.error_code, failure.error))
            return
        finally:
            self._ready.set()
        card = read_card(self._predictor.bundle_dir)  # never a file outside the bundle (a linked card.md)
        self.events.put(ModelLoaded(self._predictor, time.perf_counter() - start, card))
        while (job := self._jobs.get()) is not None:
            self._predict_batch(*job)

    def _predict_batch(self, batch: int, items: list[Item]) -> None:
        assert self._predictor is not None
        start = time.perf_counter()
        self.events.put(BatchStarted(batch, len(items)))
        done = 0
        for index, path, name in items:
            with self._lock:  # with cancel's: a file is either in progress or left for later
                if batch <= self._cancelled_upto:
                    break
                self._in_progress = index
            stamp = file_stamp(path)
            result = predict_one(self._predictor, path, name)
            self.events.put(ResultReady(batch, index, path, result, stamp))
            with self._lock:
                self._in_progress = None
            done += 1
        cancelled = done < len(items)
        self.events.put(BatchFinished(batch, done, len(items), cancelled, time.perf_counter() - start))

    def _run_views(self) -> None:
        """The view thread: the latest view asked for first (the user waits for it), then exports."""
        lower_this_thread(self._niceness)
        self._ready.wait()
        while self._predictor is not None:
            with self._wake:
                while self._view is None and not self._overlays and not self._closed:
                    self._wake.wait()
                if self._closed and not self._overlays:  # the exports asked for are written first
                    return
                view, self._view = self._view, None
                overlay = self._overlays.popleft() if view is None else None
            # one failure must not end the thread: every later view and export would wait forever
            try:
                if view is not None:
                    self._make_view(*view)
                elif overlay is not None:
                    self._save_overlay(overlay)
            except Exception as e:
                if view is not None:
                    index, path, name = view
                    self.events.put(ViewFailed(index, _failure(name, e, "the view"), file_stamp(path)))
                elif overlay is not None:
                    self.events.put(
                        OverlaySaved(overlay.target, str(_failure(overlay.name, e, "the export").error))
                    )

    def _make_view(self, index: int, path: Path, name: str) -> None:
        assert self._predictor is not None
        stamp = file_stamp(path)
        pred = predict_one(self._predictor, path, name, full=True)
        if isinstance(pred, FailedPrediction):
            self.events.put(ViewFailed(index, pred, stamp))
            return
        assert pred.pixels is not None
        result = dataclasses.replace(pred, heatmap=None, pixels=None)
        self.events.put(ViewReady(index, view_data(pred, DISPLAY_MAX_SIDE), pred.pixels.shape, result, stamp))

    def _save_overlay(self, job: _Overlay) -> None:
        self.events.put(OverlaySaved(job.target, self._overlay_error(job)))

    def _overlay_error(self, job: _Overlay) -> str | None:
        """Write the overlay; None when it is written, or why it is not."""
        assert self._predictor is not None
        if file_stamp(job.path) != job.stamp:
            return f"{job.name} changed on disk since it was predicted; select it again"
        view = job.view
        if view is None:
            pred = predict_one(self._predictor, job.path, job.name, full=True)
            if isinstance(pred, FailedPrediction):
                return f"{pred.error_code}: {pred.error}"
            assert pred.pixels is not None
            view = view_data(pred, sys.maxsize)  # full size, at the pixels' true shape, as shown
            del pred  # the view holds what the picture needs
        try:
            picture = full_overlay(view, job.look, job.caption, job.legend)
            del view  # the full-resolution pixels and heatmap: only the picture is needed now
            image_format = OVERLAY_FORMATS.get(job.target.suffix.lower(), "PNG")
            options = overlay_save_options(image_format)
            if is_stream(job.target):  # PIL seeks in the file it writes: a pipe gets the whole picture
                encoded = io.BytesIO()
                picture.save(encoded, format=image_format, **options)
                write_output(job.target, lambda target: target.write_bytes(encoded.getbuffer()))
            else:
                write_output(job.target, lambda target: picture.save(target, format=image_format, **options))
        except OSError as e:  # its text named the hidden temporary file (/sys/.overlay.png.5433....tmp)
            return e.strerror or type(e).__name__
        except (ValueError, MemoryError) as e:
            return str(e) or type(e).__name__
        return None
