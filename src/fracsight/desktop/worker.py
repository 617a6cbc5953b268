"""The model off the window's thread: predictions and full-resolution views, reported on a queue.

Tk may only be touched from the thread that created it, so the worker never calls into the window.
It puts :data:`Event` objects on a :class:`queue.Queue`, and the window drains that queue with
``after`` (see :mod:`fracsight.desktop.window`). Nothing here imports tkinter, so it is testable
without a display.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fracsight.app.logic import ViewData, failure_from_exception, view_data
from fracsight.desktop.priority import MODEL_NICENESS, lower_this_thread
from fracsight.errors import FracsightError
from fracsight.inference import FailedPrediction, Prediction, Predictor

__all__ = [
    "DISPLAY_MAX_SIDE",
    "BatchFinished",
    "BatchStarted",
    "Event",
    "ModelFailed",
    "ModelLoaded",
    "PredictionWorker",
    "ResultReady",
    "ViewFailed",
    "ViewReady",
    "inference_threads",
]

log = logging.getLogger("fracsight.desktop")

# The viewer keeps the radiograph at its full resolution up to this side (larger ones are shrunk so
# that one view stays below about 130 MB of float32 pixels and heatmap).
DISPLAY_MAX_SIDE = 4096


@dataclass(frozen=True)
class ModelLoaded:
    predictor: Predictor
    seconds: float


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


@dataclass(frozen=True)
class ViewFailed:
    index: int
    failure: FailedPrediction


Event = ModelLoaded | ModelFailed | BatchStarted | ResultReady | BatchFinished | ViewReady | ViewFailed


def inference_threads(requested: int = 0) -> int:
    """ONNX Runtime threads for the window's model: ``requested``, or (0) one fewer than the cores.

    The window keeps a core for itself: on a loaded 2-core machine, with both cores on the model the
    event loop waited up to 700 ms during a 200-image folder, with one up to 185 ms, and the folder
    finished sooner (docs/desktop.md, ``scripts/benchmark_desktop.py --threads``).
    """
    return requested if requested > 0 else max(1, (os.cpu_count() or 2) - 1)


def predict_one(predictor: Predictor, path: Path) -> Prediction | FailedPrediction:
    """One file's result (without pixels), or its failure with a stable code: never an exception."""
    try:
        return predictor.predict(path, heatmap=False)
    except FracsightError as e:
        return failure_from_exception(path.name, e)
    except Exception as e:  # a row with a code in the list, never a closed window; the log has the rest
        log.exception("prediction failed for %s", path.name)
        return failure_from_exception(path.name, e)


class PredictionWorker:
    """Loads the model, then predicts the files it is given, one at a time, in the order given.

    ``submit`` queues a batch of ``(index, path)`` pairs; ``cancel`` stops every queued batch after
    the image in progress (its result still arrives). ``request_view`` computes one image's
    full-resolution view on a second thread, so the selected image appears while a long folder runs.
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
        self._jobs: queue.Queue[tuple[int, list[tuple[int, Path]]] | None] = queue.Queue()
        self._cancelled_upto = 0  # batches up to this number are cancelled
        self._ready = threading.Event()
        self._predictor: Predictor | None = None
        self._batches = 0
        self._lock = threading.Lock()
        self._views = ThreadPoolExecutor(
            1, thread_name_prefix="fracsight-view", initializer=lower_this_thread, initargs=(niceness,)
        )
        self._thread = threading.Thread(target=self._run, name="fracsight-predict", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # ---- called from the window's thread --------------------------------------------------------------
    def submit(self, items: Sequence[tuple[int, Path]]) -> int:
        """Queue a batch; returns its number (events carry it)."""
        with self._lock:
            self._batches += 1
            batch = self._batches
        self._jobs.put((batch, list(items)))
        return batch

    def cancel(self) -> None:
        """Stop every batch submitted so far (the image in progress still reports)."""
        with self._lock:
            self._cancelled_upto = self._batches

    def _is_cancelled(self, batch: int) -> bool:
        with self._lock:
            return batch <= self._cancelled_upto

    def request_view(self, index: int, path: Path) -> None:
        self._views.submit(self._view, index, path)

    def close(self) -> None:
        self.cancel()
        self._jobs.put(None)
        self._views.shutdown(wait=False, cancel_futures=True)

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
        self.events.put(ModelLoaded(self._predictor, time.perf_counter() - start))
        while (job := self._jobs.get()) is not None:
            self._predict_batch(*job)

    def _predict_batch(self, batch: int, items: list[tuple[int, Path]]) -> None:
        assert self._predictor is not None
        start = time.perf_counter()
        self.events.put(BatchStarted(batch, len(items)))
        done = 0
        for index, path in items:
            if self._is_cancelled(batch):
                break
            self.events.put(ResultReady(batch, index, path, predict_one(self._predictor, path)))
            done += 1
        cancelled = done < len(items)
        self.events.put(BatchFinished(batch, done, len(items), cancelled, time.perf_counter() - start))

    def _view(self, index: int, path: Path) -> None:
        self._ready.wait()
        if self._predictor is None:
            return
        try:
            pred = self._predictor.predict(path, heatmap=True, keep_pixels=True)
            self.events.put(ViewReady(index, view_data(pred, DISPLAY_MAX_SIDE)))
        except FracsightError as e:
            self.events.put(ViewFailed(index, failure_from_exception(path.name, e)))
        except Exception as e:
            log.exception("the view of %s failed", path.name)
            self.events.put(ViewFailed(index, failure_from_exception(path.name, e)))
