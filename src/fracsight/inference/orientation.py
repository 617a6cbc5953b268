"""Quarter turns of a radiograph and of a prediction made on it (the orientation step).

``k`` quarter turns means ``np.rot90(pixels, k)``: counter-clockwise for positive ``k``.
A radiograph that seems turned by ``k`` is read as ``turn_radiograph(r, -k)``; what was
found on it is put back onto the image as given with ``turn_prediction(p, k, size)``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fracsight.explain.boxes import DetectedBox, turn_boxes_in
from fracsight.explain.heatmap import softmax
from fracsight.inference.results import Prediction
from fracsight.io import Radiograph

__all__ = ["reads_agree_on_turn", "turn_prediction", "turn_radiograph"]


def _turned_size(size: tuple[int, int], k: int) -> tuple[int, int]:
    return size[::-1] if k % 2 else size


def turn_radiograph(radiograph: Radiograph, k: int) -> Radiograph:
    """The radiograph turned by ``k`` quarter turns (its reduced-decoding size turned too)."""
    meta = radiograph.metadata
    if meta.reduced_from is not None:
        meta = dataclasses.replace(meta, reduced_from=_turned_size(meta.reduced_from, k))
    if k % 2:  # a quarter turn swaps rows and columns
        for field in ("pixel_spacing_mm", "pixel_aspect_ratio"):
            if (pair := getattr(meta, field)) is not None:
                meta = dataclasses.replace(meta, **{field: pair[::-1]})
    return dataclasses.replace(
        radiograph, pixels=np.ascontiguousarray(np.rot90(radiograph.pixels, k)), metadata=meta
    )


def turn_prediction(prediction: Prediction, k: int, given_size: tuple[int, int]) -> Prediction:
    """A prediction made on the upright image, put onto the image as given (``k`` quarter turns
    from upright, ``given_size`` its full-resolution (height, width))."""
    upright_size = _turned_size(given_size, k)
    boxes = tuple(
        DetectedBox(*(float(v) for v in turn_boxes_in(np.array([b.as_tuple()]), k, upright_size)[0]), b.score)
        for b in prediction.boxes
    )
    heatmap = None if prediction.heatmap is None else np.ascontiguousarray(np.rot90(prediction.heatmap, k))
    clockwise = -90 * k % 360  # np.rot90 turns counter-clockwise; viewers and EXIF say clockwise
    turned = "by 180 degrees" if clockwise == 180 else f"by {clockwise} degrees clockwise"
    note = (
        f"the image seemed turned {turned} and was read turned upright "
        "(boxes and heatmap are on the image as given)"
    )
    return dataclasses.replace(
        prediction, boxes=boxes, heatmap=heatmap, warnings=(*prediction.warnings, note)
    )


def reads_agree_on_turn(given_logits: np.ndarray, turned_logits: np.ndarray, turns: int) -> bool:
    """Whether an image the orientation head is unsure about is turned by ``turns`` quarter turns,
    judged from both reads: the image as given (``given_logits``) and turned back by ``turns``
    (``turned_logits``), each the head's four logits.

    The two hypotheses are weighed with the head's probabilities of both reads: turned (the given
    read looks turned by ``turns`` and the turned-back one upright) against upright (the given read
    looks upright and the turned-back one turned by ``-turns``). Chosen on FracAtlas `val` over the
    input check's feature distance, which decided until 2026-12-02: the upright read was kept for
    223 of 286 unsure validation views against 185 (docs/training.md, "Which read is kept when the
    orientation head is unsure").
    """
    given, turned = softmax(given_logits.astype(np.float64)), softmax(turned_logits.astype(np.float64))
    return bool(given[turns] * turned[0] > given[0] * turned[-turns % 4])
