"""The node's worker: predicts spooled radiographs, makes their result objects, and gives each
study its verdict once its images stop arriving.

One thread, in a loop:

1. each open study that has seen no image for ``quiet_time`` seconds and has no image left to
   predict gets its study-level verdict (:meth:`Predictor.predict_study` over its predicted
   images, :func:`fracsight.dicom.results.study_result_datasets`);
2. then up to ``batch_size`` received instances (oldest first) are read with the model's reader
   (the same :meth:`Predictor.read` as ``fracsight predict``; a non-radiograph or an unreadable
   image is ``refused`` with the reader's error code and gets no results), predicted in one
   batch, and given their result objects (:func:`fracsight.dicom.results.result_datasets`,
   in worker processes with ``result_processes``), written durably and queued for the sender
   in one spool transaction per instance.

Predictions are cached only until their study's verdict is made; after a restart, the images
of a study still open are predicted again from the spool (same model, same numbers).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fracsight.dicom._logging import log_failure
from fracsight.dicom.result_pool import ResultMaker, encode_dataset
from fracsight.dicom.spool import FAILED, REFUSED, RESULTS_PENDING, SENT, InstanceRow, Spool, study_key
from fracsight.errors import FracsightError

if TYPE_CHECKING:
    from fracsight.inference import Prediction, Predictor

__all__ = ["Worker"]

log = logging.getLogger(__name__)


class Worker(threading.Thread):
    """Predicts what the spool received and queues the result objects; see the module docstring."""

    def __init__(
        self,
        spool: Spool,
        predictor: Predictor,
        *,
        kinds: Sequence[str] = ("sr", "gsps", "capture"),
        quiet_time: float = 30.0,
        batch_size: int = 8,
        keep_files_for: float = 3600.0,
        result_processes: int = 0,
        on_results: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name="fracsight-worker", daemon=True)
        self.spool = spool
        self.predictor = predictor
        self.kinds = tuple(kinds)
        self.quiet_time = quiet_time
        self.batch_size = max(1, batch_size)
        self.keep_files_for = keep_files_for
        self.on_results = on_results
        self.results = ResultMaker(predictor, self.kinds, result_processes)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._cache: dict[str, Prediction] = {}
        self._last_prune = 0.0

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def close(self) -> None:
        """After the thread ended: stop the result processes."""
        self.results.close()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                if self.work_once():
                    continue
            except Exception as e:  # one bad batch must not stop the node
                log_failure(log, e, "worker: unexpected error; continuing")
            self._sleep()

    def _sleep(self) -> None:
        deadline = self.spool.next_study_deadline(self.quiet_time)
        timeout = 1.0 if deadline is None else min(1.0, max(0.02, deadline - time.time()))
        self.wake.wait(timeout)
        self.wake.clear()

    def work_once(self) -> bool:
        """One step: the studies that became quiet, then a batch of received instances. False when
        idle. (Verdicts are not left until the backlog is gone: a study's cached predictions are
        released with its verdict, so memory stays flat however long the queue.)"""
        studies = self.spool.quiet_studies(self.quiet_time)
        for study_uid, generation in studies:
            if self.stopping.is_set():
                return True
            self.finish_study(study_uid, generation)
        rows = self.spool.received(self.batch_size)
        if rows:
            self.process(rows)
        if time.time() - self._last_prune > 60:
            self._last_prune = time.time()
            self.spool.prune(self.keep_files_for)
        return bool(rows or studies)

    # ---- images -----------------------------------------------------------------------------------
    def _read(self, row: InstanceRow) -> tuple[bytes, Any] | None:
        try:
            data = self.spool.instance_path(row.key).read_bytes()
        except FileNotFoundError:
            self.spool.mark_instance(row.key, FAILED, "spool_file_missing")
            log.error("instance %s: its spool file is gone", row.key)
            return None
        try:
            return data, self.predictor.read(data, name=f"{row.key}.dcm")
        except FracsightError as e:
            self.spool.mark_instance(row.key, REFUSED, e.code)
            log.warning("instance %s refused by the reader (%s)", row.key, e.code)
            return None

    def _predict(self, rows: Sequence[InstanceRow]) -> list[tuple[InstanceRow, bytes, Prediction]]:
        read = [(row, self._read(row)) for row in rows]
        good = [(row, r[0], r[1]) for row, r in read if r is not None]
        if not good:
            return []
        predictions = self.predictor.predict_radiographs(
            [g[2] for g in good], [f"{g[0].key}.dcm" for g in good], heatmap=False
        )
        return [
            (row, data, dataclasses.replace(p, pixels=radiograph.pixels))
            for (row, data, radiograph), p in zip(good, predictions, strict=True)
        ]

    def process(self, rows: Sequence[InstanceRow]) -> None:
        predicted = self._predict(rows)
        made = self.results.make([(data, prediction) for _, data, prediction in predicted])
        for (row, _, prediction), blobs in zip(predicted, made, strict=True):
            try:
                if isinstance(blobs, BaseException):
                    raise blobs
                files = self._write_files(row.key, blobs)
            except Exception as e:
                self.spool.mark_instance(row.key, FAILED, "results_error")
                log_failure(log, e, "instance %s: result objects could not be made", row.key)
                continue
            self.spool.queue_results(row.key, files)
            self._cache[row.key] = dataclasses.replace(prediction, pixels=None)
            log.info("instance %s predicted: %d result objects queued", row.key, len(files))
        self.on_results()

    def _write_files(self, owner: str, blobs: Sequence[bytes]) -> list[Path]:
        folder = self.spool.results_folder(owner)
        files = []
        for n, blob in enumerate(blobs):
            path = folder / f"{n}.dcm"
            self.spool.write_file(path, blob)
            files.append(path)
        return files

    def _write(self, owner: str, datasets: Sequence[Any]) -> list[Path]:
        return self._write_files(owner, [encode_dataset(ds) for ds in datasets])

    # ---- studies ----------------------------------------------------------------------------------
    def finish_study(self, study_uid: str, generation: int) -> None:
        import pydicom

        from fracsight.dicom.results import study_result_datasets

        name = study_key(study_uid)
        rows = [r for r in self.spool.study_instances(study_uid) if r.state in (RESULTS_PENDING, SENT)]
        sources, predictions = [], []
        for row in rows:
            path = self.spool.instance_path(row.key)
            if not path.exists():
                continue  # pruned long ago: a late image re-opened the study
            prediction = self._cache.get(row.key)
            data = path.read_bytes()
            if prediction is None:
                try:
                    (prediction,) = self.predictor.predict_radiographs(
                        [self.predictor.read(data, name=f"{row.key}.dcm")], [f"{row.key}.dcm"], heatmap=False
                    )
                except FracsightError:
                    continue
            sources.append(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True))
            predictions.append(prediction)
        owner = f"study:{name}:{generation}"
        files: list[Path] = []
        if predictions:
            try:
                verdict = self.predictor.predict_study(predictions, study=name)
                files = self._write(
                    owner, study_result_datasets(sources, verdict, predictions, self.predictor)
                )
            except Exception as e:
                log_failure(log, e, "study %s: verdict objects could not be made", name)
                self.spool.count("failed", "study_results_error")
                files = []
        if self.spool.finish_study(study_uid, generation, owner, files):
            for row in rows:
                self._cache.pop(row.key, None)
            log.info(
                "study %s: verdict over %d images, %d objects queued", name, len(predictions), len(files)
            )
            self.on_results()
        else:  # an image arrived while the verdict was made: a new verdict will cover it
            for path in files:
                path.unlink(missing_ok=True)
