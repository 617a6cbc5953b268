"""Study-level aggregation: one prediction and one label per study from its images.

A *study* is one examination (several views of one body part, as in MURA).

* Probabilities: the default ``method="mean"`` takes the arithmetic mean of
  the image probabilities, as the MURA baseline does. ``"max"`` flags a study
  as soon as one view looks fractured (more sensitive, less specific);
  ``"noisy_or"`` is ``1 - prod(1 - p_i)``, treating views as independent
  evidence (it grows with the number of views).
* Labels: a study is positive when any of its images is positive (the MURA
  convention, where all images of a study share the study label anyway).

Studies come out in order of first appearance in ``study_ids``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "AGGREGATION_METHODS",
    "aggregate_labels",
    "aggregate_studies",
    "aggregate_study_predictions",
    "first_views",
    "repeated_views_note",
]

AggregationMethod = Literal["mean", "max", "noisy_or"]
AGGREGATION_METHODS: tuple[str, ...] = ("mean", "max", "noisy_or")


def _group(study_ids: Sequence[Hashable], n: int) -> tuple[list[Hashable], NDArray[np.int64]]:
    if len(study_ids) != n:
        raise ValueError(f"study_ids has {len(study_ids)} entries but there are {n} values")
    if n == 0:
        raise ValueError("no images to aggregate")
    index: dict[Hashable, int] = {}
    inverse = np.empty(n, dtype=np.int64)
    for i, sid in enumerate(study_ids):
        inverse[i] = index.setdefault(sid, len(index))
    return list(index), inverse


def aggregate_studies(
    study_ids: Sequence[Hashable], probs: ArrayLike, method: AggregationMethod = "mean"
) -> tuple[list[Hashable], NDArray[np.float64]]:
    """Per-study probability from image probabilities; returns ``(ids, probs)``."""
    pa = np.asarray(probs, dtype=np.float64).ravel()
    if method not in AGGREGATION_METHODS:
        raise ValueError(f"unknown aggregation method {method!r}; known: {list(AGGREGATION_METHODS)}")
    ids, inverse = _group(study_ids, pa.size)
    k = len(ids)
    if method == "mean":
        out = np.bincount(inverse, weights=pa, minlength=k) / np.bincount(inverse, minlength=k)
    elif method == "max":
        out = np.full(k, -np.inf)
        np.maximum.at(out, inverse, pa)
    else:
        if pa.min() < 0.0 or pa.max() > 1.0:
            raise ValueError("noisy_or needs probabilities in [0, 1]")
        # sum of log(1 - p) per study; log1p keeps precision for small p, p == 1 gives -inf
        with np.errstate(divide="ignore"):
            log_miss = np.bincount(inverse, weights=np.log1p(-pa), minlength=k)
        out = -np.expm1(log_miss)
    return ids, out


def aggregate_labels(
    study_ids: Sequence[Hashable], labels: ArrayLike
) -> tuple[list[Hashable], NDArray[np.int64]]:
    """Per-study label: 1 if any image of the study is positive; returns ``(ids, labels)``."""
    ya = np.asarray(labels).astype(np.int64).ravel()
    ids, inverse = _group(study_ids, ya.size)
    out = np.zeros(len(ids), dtype=np.int64)
    np.maximum.at(out, inverse, (ya > 0).astype(np.int64))
    return ids, out


def aggregate_study_predictions(
    study_ids: Sequence[Hashable], y: ArrayLike, p: ArrayLike, method: AggregationMethod = "mean"
) -> tuple[list[Hashable], NDArray[np.int64], NDArray[np.float64]]:
    """Both at once: ``(ids, study_labels, study_probs)`` aligned by study."""
    ids, labels = aggregate_labels(study_ids, y)
    _, probs = aggregate_studies(study_ids, p, method)
    return ids, labels, probs


def first_views(study_ids: Sequence[Hashable], contents: Sequence[str | None]) -> NDArray[np.bool_]:
    """False for each image that repeats an earlier one of its study (the same file content, a
    ``metadata.content_sha256``), True for the others: the views a study's figure takes, by the
    rule :meth:`~fracsight.inference.Predictor.predict_study` applies to files (a copy weighed
    double). An image without a digest (``None``: pixels given as an array) is always kept."""
    if len(study_ids) != len(contents):
        raise ValueError(f"study_ids has {len(study_ids)} entries for {len(contents)} images")
    seen: set[tuple[Hashable, str]] = set()
    keep = np.ones(len(contents), dtype=bool)
    for i, (sid, content) in enumerate(zip(study_ids, contents, strict=True)):
        if content is None:
            continue
        keep[i] = (sid, content) not in seen
        seen.add((sid, content))
    return keep


def repeated_views_note(count: int, figures: str) -> str:
    """The note ``evaluate`` and ``compare`` add when :func:`first_views` left ``count`` images out
    of ``figures`` ("the study figures")."""
    return (
        f"{count} image(s) repeat an earlier view of their study (the same file content): counted "
        f"once in {figures}, as `fracsight predict` counts them"
    )
