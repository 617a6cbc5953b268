"""The Ray Data UDF: one :class:`~fracsight.inference.Predictor` per actor, a batch of paths -> rows.

It is a plain callable class (no Ray import), so it also runs, and is tested, without Ray.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fracsight.errors import FracsightError
from fracsight.inference import FailedPrediction, Prediction, Predictor
from fracsight.inference.tabular import result_row, text_cell
from fracsight.scale.output import FILE_STAT, NAME_FIELD, PATH_COLUMN, file_stat, output_columns

__all__ = ["ACTOR", "INTERNAL_ERROR", "BatchPredictor"]

INTERNAL_ERROR = "internal_error"  # an unexpected failure on one file: its row says so, the job goes on
ACTOR = "actor"  # a column the driver counts the actors by (the host and process that made a batch)
logger = logging.getLogger("fracsight.scale")


class BatchPredictor:
    """``__call__({"path": [...]}) -> {column: [...]}`` with the columns of :func:`output_columns`.

    ``threads``: ONNX Runtime threads (1 per actor when each actor has its own CPU slot);
    ``decode_workers``: threads decoding images of a batch while the previous ones are inferred.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        operating_point: str | None = None,
        all_classes: bool = False,
        threads: int = 1,
        decode_workers: int = 1,
    ) -> None:
        self.predictor = Predictor(model, threads=threads, operating_point=operating_point)
        self.columns = output_columns(self.predictor.spec, all_classes=all_classes)
        self.decode_workers = decode_workers
        self.actor = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        """The rows, and each file's :func:`~fracsight.scale.output.file_stat` as it was read."""
        paths = [os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in batch[PATH_COLUMN]]
        names = [str(n) for n in batch[NAME_FIELD]] if NAME_FIELD in batch else [Path(p).name for p in paths]
        # each file as it is before the read: one that changes under it is read again
        folders: dict[str, str] = {}
        stats = [file_stat(p, folders) for p in paths]
        results = self._predict(paths, names)
        rows = [self._row(path, result) for path, result in zip(paths, results, strict=True)]
        columns = {c: [r[c] for r in rows] for c in self.columns}
        return {**columns, FILE_STAT: stats, ACTOR: [self.actor] * len(rows)}

    def _predict(self, paths: Sequence[str], names: Sequence[str]) -> list[Prediction | FailedPrediction]:
        try:
            found = self.predictor.predict_many(
                paths, batch_size=len(paths), workers=self.decode_workers, names=names
            )
            return list(found)
        except Exception:  # a bug on one file must not cost the batch: find it, one file at a time
            logger.exception("batch of %d failed; predicting its files one by one", len(paths))
            return [self._one(p, n) for p, n in zip(paths, names, strict=True)]

    def _one(self, path: str, name: str) -> Prediction | FailedPrediction:
        try:
            return next(self.predictor.predict_many([path], batch_size=1, workers=1, names=[name]))
        except FracsightError as e:
            return FailedPrediction(name, e.code, str(e))
        except Exception as e:
            return FailedPrediction(name, INTERNAL_ERROR, f"unexpected {type(e).__name__}")

    def _row(self, path: str, result: Prediction | FailedPrediction) -> dict[str, str]:
        # Arrow text, also for a file name that is not UTF-8 (result_row makes its cells so)
        return {PATH_COLUMN: text_cell(path), **result_row(result, self.columns[1:])}
