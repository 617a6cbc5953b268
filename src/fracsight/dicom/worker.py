"""The node's worker: predicts spooled radiographs, makes their result objects, and gives each
study its verdict once its images stop arriving.

One thread, in a loop:

1. the jobs that finished are committed: a job's result files (written durably by the job) go
   to the outbox in one spool transaction, and an instance the job could not give results is
   ``refused`` with the reader's error code (a non-radiograph, an unreadable image) or ``failed``;
   one whose result files the spool could not take (its disk full) stays ``received`` and is
   tried again after a back-off, as is one whose outcome ``spool.db`` could not record (its
   disk full: "database or disk is full"), and a study verdict that could not be written or
   recorded;
2. each open study that has seen no image for ``quiet_time`` seconds and has no image left to
   predict gets its study-level verdict (:meth:`Predictor.predict_study` over its predicted
   images, :func:`fracsight.dicom.results.study_result_datasets`);
3. received instances (oldest first) become jobs of up to ``batch_size`` each, sharing what
   waits evenly between the free job slots; each is read with the model's
   reader (the same :meth:`Predictor.read` as ``fracsight predict``), predicted in one batch,
   given their result objects (:func:`fracsight.dicom.results.result_datasets`).

The jobs (:mod:`fracsight.dicom.result_pool`) run in this thread, or with ``processes > 0`` in
that many worker processes, with one more job queued so that none waits while the worker
commits: then this thread only hands over spool paths and commits, and the listener and the
sender keep the interpreter lock. Predictions are cached (without pixels) only until their
study's verdict is made; after a restart, the images of a study still open are predicted again
from the spool (same model, same numbers).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fracsight.dicom._logging import log_failure
from fracsight.dicom.result_pool import (
    ImageJob,
    ImageOutcome,
    ModelRef,
    Processing,
    StudyOutcome,
    make_image_results,
    make_study_results,
    spool_write_error,
)
from fracsight.dicom.results_context import NODE_KINDS
from fracsight.dicom.spool import (
    FAILED,
    REFUSED,
    RESULTS_PENDING,
    SENT,
    UNDELIVERED,
    WRITE_ERRORS,
    Spool,
    study_key,
)
from fracsight.errors import FracsightError

if TYPE_CHECKING:
    from fracsight.inference import Prediction, Predictor

__all__ = ["Worker"]

log = logging.getLogger(__name__)

# an image or a verdict whose files the spool could not take (a full disk) is made again after
# this back-off: acknowledged images must get their results once there is room, without the
# worker spinning on them meanwhile
_RETRY_FIRST, _RETRY_MAX = 2.0, 60.0


def _log_failed(outcome: ImageOutcome) -> None:
    if outcome.code == "spool_file_missing":
        log.error("instance %s: its spool file is gone", outcome.key)
    else:
        log.error("instance %s: result objects could not be made: %s", outcome.key, outcome.error)


@dataclass(frozen=True)
class _StudyJob:
    study_uid: str
    generation: int
    owner: str
    keys: tuple[str, ...]
    instances: int  # the study's instances its verdict sees: one more when it is queued, and it is made again


class Worker(threading.Thread):
    """Predicts what the spool received and queues the result objects; see the module docstring."""

    def __init__(
        self,
        spool: Spool,
        model: Predictor | ModelRef,
        *,
        kinds: Sequence[str] = NODE_KINDS,
        quiet_time: float = 30.0,
        batch_size: int = 8,
        keep_files_for: float = 3600.0,
        processes: int = 0,
        on_results: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name="fracsight-worker", daemon=True)
        self.spool = spool
        self.kinds = tuple(kinds)
        self.quiet_time = quiet_time
        self.batch_size = max(1, batch_size)
        self.keep_files_for = keep_files_for
        self.on_results = on_results
        self.processing = Processing(model, processes)
        # in processes: one job more than processes, so that none idles while this thread commits
        self.max_jobs = processes + 1 if processes > 0 else 1
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._cache: dict[str, Prediction] = {}
        self._images: dict[Future[list[ImageOutcome]], tuple[ImageJob, ...]] = {}
        self._studies: dict[Future[StudyOutcome], _StudyJob] = {}
        self._suspects: set[str] = set()  # in a job whose worker process died: run alone next time
        self._generation: dict[Future, int] = {}  # the pool each job ran in
        self._last_prune = 0.0
        self._retry: dict[str, tuple[float, int]] = {}  # key or study UID -> (not before, attempts)

    def start_processes(self) -> None:
        """Load the model (in the worker processes, if any) before the first image arrives."""
        self.processing.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def close(self) -> None:
        """After the thread ended: stop the worker processes."""
        self.processing.close()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.wake.clear()  # before looking: a job that ends from here on wakes the sleep below
            try:
                if self.work_once():
                    continue
            except Exception as e:  # one bad batch must not stop the node
                log_failure(log, e, "worker: unexpected error; continuing")
            self._sleep()
        # let the jobs in flight finish and commit them: their files are written already
        while self._images or self._studies:
            self._collect(wait=True)

    def _sleep(self) -> None:
        deadline = self.spool.next_study_deadline(self.quiet_time)
        timeout = 1.0 if deadline is None else min(1.0, max(0.02, deadline - time.time()))
        self.wake.wait(timeout)

    def work_once(self) -> bool:
        """One step: commit the jobs that finished, start the verdicts of the studies that became
        quiet, start jobs for received instances. False when there was nothing to do. (Verdicts
        are not left until the backlog is gone: a study's cached predictions are released with
        its verdict, so memory stays flat however long the queue.)"""
        busy = self._collect()
        studies = [
            s
            for s in self.spool.quiet_studies(self.quiet_time)
            if not self._study_in_flight(s[0]) and not self._waiting(s[0])
        ]
        for study_uid, generation in studies:
            if self.stopping.is_set():
                return True
            self._start_study(study_uid, generation)
        started = self._start_images()
        busy = self._collect() or busy or bool(studies) or started
        if time.time() - self._last_prune > 60:
            self._last_prune = time.time()
            self.spool.prune(self.keep_files_for)
        return busy

    def _defer(self, name: str) -> float:
        """Try ``name`` (an instance key or a study UID) again only after a back-off; the delay."""
        attempts = self._retry.get(name, (0.0, 0))[1] + 1
        delay = min(_RETRY_MAX, _RETRY_FIRST * 2 ** (attempts - 1))
        self._retry[name] = (time.time() + delay, attempts)
        return delay

    def _waiting(self, name: str) -> bool:
        return name in self._retry and time.time() < self._retry[name][0]

    def _not_recorded(self, names: Sequence[str], what: str, error: OSError | sqlite3.Error) -> None:
        """``spool.db`` could not record the outcome of ``names`` (instance keys, or a study UID):
        they stay as they were (``received``, an open study) and are made again after the back-off,
        with one warning naming the cause; without it the worker made them again every turn."""
        delay = max(self._defer(name) for name in names)
        log.warning(
            "%s: outcome not recorded in spool.db (%s); made again in %.0f s",
            what,
            spool_write_error(error),
            delay,
        )

    def _mark(self, key: str, state: str, code: str | None) -> bool:
        """:meth:`Spool.mark_instance`; False (and tried again later) when the spool could not take it."""
        try:
            self.spool.mark_instance(key, state, code)
        except WRITE_ERRORS as e:
            self._not_recorded([key], f"instance {key}", e)
            return False
        self._retry.pop(key, None)
        return True

    def _submit(self, jobs: dict, job: object, function: Callable, *args: object) -> None:
        future = self.processing.submit(function, *args)
        jobs[future] = job
        self._generation[future] = self.processing.generation
        future.add_done_callback(lambda _: self.wake.set())

    # ---- images -----------------------------------------------------------------------------------
    def _start_images(self) -> bool:
        in_flight = {job.key for jobs in self._images.values() for job in jobs}
        free = self.max_jobs - len(self._images) - len(self._studies)
        if free <= 0:
            return False
        rows = [
            r
            for r in self.spool.received(self.batch_size * self.max_jobs + len(in_flight))
            if r.key not in in_flight and not self._waiting(r.key)
        ]
        if not rows:
            return False
        suspects = [r for r in rows if r.key in self._suspects]
        if suspects:
            # alone in the pool, so that if its process dies again, it is known which image did it
            if self._images or self._studies:
                return False
            batches = [suspects[:1]]
        else:
            # the jobs share what waits: at the end of a burst, smaller jobs keep every process busy
            # to the last image rather than one process finishing a full batch while another idles
            size = min(self.batch_size, -(-len(rows) // self.max_jobs))
            batches = [rows[i : i + size] for i in range(0, len(rows), size)]
        for batch in batches[:free]:
            jobs = tuple(
                ImageJob(
                    r.key,
                    self.spool.instance_path(r.key),
                    self.spool.results_folder(r.key),
                    self.spool.tmp_dir,
                )
                for r in batch
            )
            self._submit(self._images, jobs, make_image_results, self.kinds, jobs)
            log.debug("instances %s handed to a worker process", ", ".join(j.key for j in jobs))
        return True

    def _collect(self, *, wait: bool = False) -> bool:
        """Commit the jobs that are done (with ``wait``, at least one). True if any was."""
        if wait and (self._images or self._studies):
            from concurrent.futures import FIRST_COMPLETED
            from concurrent.futures import wait as wait_for

            wait_for([*self._images, *self._studies], return_when=FIRST_COMPLETED)
        done = [f for f in self._images if f.done()]
        for future in done:
            self._commit_images(self._images.pop(future), future)
        studies = [f for f in self._studies if f.done()]
        for future in studies:
            self._commit_study(self._studies.pop(future), future)
        if done or studies:
            self.on_results()
        return bool(done or studies)

    def _commit_images(self, jobs: tuple[ImageJob, ...], future: Future[list[ImageOutcome]]) -> None:
        generation = self._generation.pop(future, 0)
        try:
            outcomes = future.result()
        except BrokenProcessPool:
            self.processing.reset(generation)
            if self.stopping.is_set():  # ended with the node (a signal to its group), not by these images
                log.info(
                    "a worker process ended as the node stopped: %d images made at next start", len(jobs)
                )
                return
            for job in jobs:
                if job.key in self._suspects:  # it ran alone: this image killed the process twice
                    if self._mark(job.key, FAILED, "results_error"):
                        self._suspects.discard(job.key)
                        log.error("instance %s: a worker process died on it; given up", job.key)
                else:  # left received: tried again, alone
                    self._suspects.add(job.key)
            log.error("a worker process died; starting new ones")
            return
        except Exception as e:  # the job as a whole failed (the model): each instance fails
            code = e.code if isinstance(e, FracsightError) else "results_error"  # model_output_not_finite
            for job in jobs:
                self._mark(job.key, FAILED, code)
            log_failure(log, e, "%d instances could not be predicted", len(jobs))
            return
        done = []
        for outcome in outcomes:
            self._suspects.discard(outcome.key)
            if outcome.state == "refused":
                if self._mark(outcome.key, REFUSED, outcome.code):
                    log.warning("instance %s refused by the reader (%s)", outcome.key, outcome.code)
            elif outcome.state == "deferred":  # left received: made again once the spool has room
                log.warning(
                    "instance %s: result objects not written to the spool (%s); tried again in %.0f s",
                    outcome.key,
                    outcome.error,
                    self._defer(outcome.key),
                )
            elif outcome.state == "failed":
                if self._mark(outcome.key, FAILED, outcome.code):
                    _log_failed(outcome)
            else:
                assert outcome.prediction is not None
                done.append(outcome)
        if done:
            self._queue(done)

    def _queue(self, done: Sequence[ImageOutcome]) -> None:
        """Queue the result files of ``done`` in one transaction; while ``spool.db`` cannot take it,
        they stay ``received`` (their files are made again, in place, after the back-off)."""
        keys = [outcome.key for outcome in done]
        try:
            self.spool.queue_many([(outcome.key, outcome.files) for outcome in done])
        except WRITE_ERRORS as e:
            self._not_recorded(keys, f"instance{'s' if len(keys) > 1 else ''} {', '.join(keys)}", e)
            return
        for outcome in done:
            self._retry.pop(outcome.key, None)
            self._cache[outcome.key] = outcome.prediction
            log.info("instance %s predicted: %d result objects queued", outcome.key, len(outcome.files))

    # ---- studies ----------------------------------------------------------------------------------
    def _study_in_flight(self, study_uid: str) -> bool:
        return any(job.study_uid == study_uid for job in self._studies.values())

    def _start_study(self, study_uid: str, generation: int) -> None:
        name = study_key(study_uid)
        # every predicted image: one whose result objects were given up (a PACS that takes no
        # presentation states) was predicted all the same, and was left out of the verdict
        predicted = (RESULTS_PENDING, SENT, UNDELIVERED)
        instances = self.spool.study_instances(study_uid)
        rows = [r for r in instances if r.state in predicted]
        owner = f"study:{name}:{generation}"
        images = [(r.key, self.spool.instance_path(r.key), self._cache.get(r.key)) for r in rows]
        # the views the reader refused or that failed: a verdict that has not seen every view is
        # "not reliable", as predict --study says it (the unread one may be the fractured one)
        unread = tuple(f"{r.key}.dcm" for r in instances if r.state in (REFUSED, FAILED))
        # the instances this verdict sees (read or unread): one received meanwhile, left out of both
        # and predicted before the verdict is queued, makes the counts differ and the verdict is made again
        job = _StudyJob(study_uid, generation, owner, tuple(r.key for r in rows), len(rows) + len(unread))
        folder = self.spool.results_folder(owner)
        earlier = (
            self.spool.results_folder(f"study:{name}:{g}") / "0.dcm" for g in range(generation - 1, -1, -1)
        )
        previous = next((path for path in earlier if path.is_file()), None)  # the verdict this one replaces
        self._submit(
            self._studies, job, make_study_results, images, name, folder, self.spool.tmp_dir, previous, unread
        )

    def finish_study(self, study_uid: str, generation: int) -> None:
        """Make and queue a study's verdict now (in this thread's turn)."""
        self._start_study(study_uid, generation)
        while any(job.study_uid == study_uid for job in self._studies.values()):
            self._collect(wait=True)

    def _commit_study(self, job: _StudyJob, future: Future[StudyOutcome]) -> None:
        name = study_key(job.study_uid)
        generation = self._generation.pop(future, 0)
        try:
            outcome = future.result()
        except BrokenProcessPool:
            self.processing.reset(generation)
            if self.stopping.is_set():
                log.info(
                    "a worker process ended as the node stopped: study %s's verdict made at next start", name
                )
            else:
                log.error("a worker process died making study %s's verdict; tried again", name)
            return  # the study is still open and quiet: it comes back in the next turn
        except Exception as e:
            outcome = StudyOutcome((), 0, error=type(e).__name__)
        if outcome.deferred:  # the study stays open: its verdict is made again once the spool has room
            delay = self._defer(job.study_uid)
            log.warning(
                "study %s: verdict objects not written to the spool (%s); made again in %.0f s",
                name,
                outcome.error,
                delay,
            )
            return
        try:
            closed = self.spool.finish_study(
                job.study_uid, job.generation, job.owner, outcome.files, instances=job.instances
            )
        except WRITE_ERRORS as e:  # the study stays open: its verdict is made again after the back-off
            self._not_recorded([job.study_uid], f"study {name}", e)
            return
        self._retry.pop(job.study_uid, None)
        if outcome.error is not None:
            log.error("study %s: verdict objects could not be made: %s", name, outcome.error)
            with contextlib.suppress(*WRITE_ERRORS):  # the count matters less than closing the study
                self.spool.count("failed", "study_results_error")
        if closed:
            for key in job.keys:
                self._cache.pop(key, None)
        if closed and outcome.pruned:
            log.warning(
                "study %s: %d image(s) came after %d of its images were pruned from the spool "
                "(--keep-files): no new verdict, which would cover the late ones only; the earlier "
                "verdict stands, and each image has its own results",
                name,
                outcome.images,
                outcome.pruned,
            )
        elif closed:
            log.info(
                "study %s: verdict over %d images, %d objects queued",
                name,
                outcome.images,
                len(outcome.files),
            )
        else:  # an image arrived while the verdict was made: a new verdict will cover it
            for path in outcome.files:
                path.unlink(missing_ok=True)
