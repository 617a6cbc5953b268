"""A pipeline ``fracsight benchmark`` times (:class:`Contender`), and how its batch throughput is taken."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fracsight.benchmark.inputs import DEFAULT_IMAGES
from fracsight.inference import Predictor


@dataclass(frozen=True)
class Contender:
    """One pipeline to time: a single-image call and a batch call over paths."""

    name: str
    engine: str
    input_size: int
    predict_one: Callable[[Path], object]
    predict_all: Callable[[Sequence[Path]], object]
    note: str


def throughput_pass(images: Sequence[Path], batch: int) -> list[Path]:
    """The images of one throughput pass: every image given, cycled over to make at least two
    batches, but no more than the default set (64) unless two batches need more. A whole data set given
    to ``--images`` was predicted in full in every round of every row: an hour for FracAtlas."""
    n = max(2 * batch, min(len(images), DEFAULT_IMAGES))
    return [images[i % len(images)] for i in range(n)]


def throughput(predict_all: Callable[[Sequence[Path]], object], images: Sequence[Path], batch: int) -> float:
    """Images per second over one pass (:func:`throughput_pass`), after one warm-up batch."""
    work = throughput_pass(images, batch)
    predict_all(work[:batch])
    start = time.perf_counter()
    predict_all(work)
    return len(work) / (time.perf_counter() - start)


def predictor_contender(predictor: Predictor, name: str, engine: str, batch: int, note: str) -> Contender:
    return Contender(
        name,
        engine,
        predictor.spec.input_size,
        predictor.predict,
        lambda paths: list(predictor.predict_many(paths, batch_size=batch)),
        note,
    )
