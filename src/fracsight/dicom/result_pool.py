"""Making the result objects of many images at once, in worker processes.

Building a structured report, a presentation state and a secondary capture is pure Python
(highdicom, pydicom) and costs several times the prediction itself (docs/dicom.md has the
figures); in one thread it would hold the interpreter lock and leave the second core idle. A
:class:`ResultMaker` with ``processes > 0`` builds them in that many worker processes (spawned,
each with its own :class:`~fracsight.inference.Predictor` of the same bundle, used only for its
identity: name, version, checksum), and hands back the encoded files. With ``processes=0`` it
builds them in the calling thread. Either way the objects are exactly those of
:func:`fracsight.dicom.results.result_datasets`.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fracsight.inference import Prediction, Predictor

__all__ = ["ResultMaker", "encode_dataset", "result_files"]

log = logging.getLogger(__name__)

_predictor: Predictor | None = None  # in a worker process: the bundle's identity for the results


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


def result_files(
    data: bytes, prediction: Prediction, kinds: Sequence[str], predictor: Predictor
) -> list[bytes]:
    """The encoded result objects of one received instance (``data``: its file bytes)."""
    import pydicom

    from fracsight.dicom.results import result_datasets

    source = pydicom.dcmread(io.BytesIO(data))
    return [encode_dataset(ds) for ds in result_datasets(source, prediction, predictor, kinds=kinds)]


def _init_process(bundle_dir: str, operating_point: str | None) -> None:
    global _predictor
    from fracsight.inference import Predictor

    # as in the node's main process: library logs and warnings can quote header values
    for library in ("pydicom", "highdicom"):
        logging.getLogger(library).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=rf"{library}(\..*)?$")
    _predictor = Predictor(bundle_dir, threads=1, operating_point=operating_point)


def _in_process(data: bytes, prediction: Prediction, kinds: Sequence[str]) -> list[bytes]:
    assert _predictor is not None, "worker process not initialised"
    return result_files(data, prediction, kinds, _predictor)


class ResultMaker:
    """Result objects for predictions, in ``processes`` worker processes (0: in this thread)."""

    def __init__(self, predictor: Predictor, kinds: Sequence[str], processes: int = 0) -> None:
        self.predictor = predictor
        self.kinds = tuple(kinds)
        self.processes = max(0, processes)
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        import multiprocessing

        op = self.predictor.operating_point
        return ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),  # never fork a process that runs threads
            initializer=_init_process,
            initargs=(str(self.predictor.bundle_dir), op.name if op is not None else None),
        )

    def make(self, items: Sequence[tuple[bytes, Prediction]]) -> list[list[bytes] | BaseException]:
        """For each ``(file bytes, prediction)``: its encoded result objects, or the exception that
        stopped them (the others go on)."""
        if self.processes == 0:
            return [self._guard(result_files, data, p, self.kinds, self.predictor) for data, p in items]
        if self._pool is None:
            self._pool = self._new_pool()
        futures: list[Future[list[bytes]]] = [
            self._pool.submit(_in_process, data, p, self.kinds) for data, p in items
        ]
        out: list[list[bytes] | BaseException] = []
        for (data, p), future in zip(items, futures, strict=True):
            try:
                out.append(future.result())
            except BrokenProcessPool:  # a worker process died: make this one here, renew the pool
                log.error("result process died; starting new ones")
                self.close()
                out.append(self._guard(result_files, data, p, self.kinds, self.predictor))
            except Exception as e:
                out.append(e)
        return out

    @staticmethod
    def _guard(function: Any, *args: Any) -> list[bytes] | BaseException:
        try:
            return function(*args)
        except Exception as e:
            return e

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
