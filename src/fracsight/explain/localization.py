"""Localization metrics: predicted boxes and heatmaps against ground-truth fracture boxes.

Coordinates: every function compares boxes as ``(x0, y0, x1, y1)`` edges and needs
predictions and ground truth in the *same* system, either original-image pixels
or coordinates normalized to [0, 1] by the image width and height. IoU and the
centre test do not care which, as long as both sides agree. :class:`DetectedBox`
is in pixels: compare it with normalized ground truth through
``DetectedBox.normalized(image_size)``, or bring the truth to pixels with
:func:`denormalize_box`.

Only images with at least one true box count towards :func:`hit_rate` and
:func:`pointing_game` (localizing nothing cannot be scored); they return NaN when
there is no such image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from fracsight.explain.boxes import BoxLike, DetectedBox, as_xyxy, iou

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "HitRate",
    "average_precision_boxes",
    "average_precision_boxes_coco",
    "denormalize_box",
    "hit_rate",
    "pointing_game",
    "top_box",
    "top_box_hits",
]

PredictionLike = BoxLike | Sequence[DetectedBox] | None

#: The ten IoU thresholds 0.50, 0.55, ..., 0.95 of COCO's "AP at IoU 0.5:0.95".
COCO_IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))


def denormalize_box(box: BoxLike, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Normalized ``(x0, y0, x1, y1)`` -> pixels, for an image of ``(height, width)``."""
    h, w = image_size
    x0, y0, x1, y1 = as_xyxy(box)
    return x0 * w, y0 * h, x1 * w, y1 * h


def top_box(prediction: PredictionLike) -> tuple[float, float, float, float] | None:
    """The box to score for one image: ``None`` or an empty list -> ``None``; a list of
    :class:`DetectedBox` -> the highest-scoring one; a single box -> itself."""
    if prediction is None:
        return None
    if isinstance(prediction, DetectedBox):
        return prediction.as_tuple()
    items = list(prediction) if not isinstance(prediction, np.ndarray) else [prediction]
    if not items:
        return None
    if all(isinstance(b, DetectedBox) for b in items):
        return max(items, key=lambda b: b.score).as_tuple()
    return as_xyxy(prediction)  # type: ignore[arg-type]


def _contains(box: tuple[float, float, float, float], x: float, y: float) -> bool:
    x0, y0, x1, y1 = box
    return x0 <= x <= x1 and y0 <= y <= y1


@dataclass(frozen=True)
class HitRate:
    """Share of images with a true box whose top predicted box "hits" one.

    * ``hit_rate_iou``: IoU of the top box with some true box ``>= iou_thr``.
    * ``hit_rate_centre``: the top box contains the centre of some true box.
    * ``hit_rate_any``: either of the two.
    """

    hit_rate_iou: float
    hit_rate_centre: float
    hit_rate_any: float
    n_images: int
    iou_thr: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def top_box_hits(pred: PredictionLike, trues: Sequence[BoxLike], iou_thr: float = 0.1) -> tuple[bool, bool]:
    """Whether one image's top predicted box hits a true box: ``(by IoU >= iou_thr, by containing
    a true box's centre)``; both False without a predicted box (see :func:`hit_rate`)."""
    box = top_box(pred)
    if box is None:
        return False, False
    true_xyxy = [as_xyxy(t) for t in trues]
    by_iou = any(iou(box, t) >= iou_thr for t in true_xyxy)
    by_centre = any(_contains(box, (t[0] + t[2]) / 2, (t[1] + t[3]) / 2) for t in true_xyxy)
    return by_iou, by_centre


def hit_rate(
    pred_top_boxes: Sequence[PredictionLike],
    true_boxes_per_image: Sequence[Sequence[BoxLike]],
    iou_thr: float = 0.1,
) -> HitRate:
    """Top-box hit rates over the images that have at least one true box.

    ``pred_top_boxes[i]`` is image ``i``'s prediction: one box, a list of
    :class:`DetectedBox` (its best-scoring box is used), or ``None`` / ``[]`` (a
    miss). The low default ``iou_thr`` (0.1) suits coarse heatmap boxes around
    small fractures; the centre criterion is reported beside it because a box can
    sit right on a thin fracture line yet overlap its box little.
    """
    if len(pred_top_boxes) != len(true_boxes_per_image):
        raise ValueError(f"{len(pred_top_boxes)} predictions for {len(true_boxes_per_image)} images")
    n = hits_iou = hits_centre = hits_any = 0
    for pred, trues in zip(pred_top_boxes, true_boxes_per_image, strict=True):
        if len(trues) == 0:  # len, not truth: an array of boxes has no truth value
            continue
        n += 1
        by_iou, by_centre = top_box_hits(pred, trues, iou_thr)
        hits_iou += by_iou
        hits_centre += by_centre
        hits_any += by_iou or by_centre
    if n == 0:
        return HitRate(float("nan"), float("nan"), float("nan"), 0, iou_thr)
    return HitRate(hits_iou / n, hits_centre / n, hits_any / n, n, iou_thr)


def pointing_game(
    heatmaps: Sequence[np.ndarray],
    true_boxes: Sequence[Sequence[BoxLike]],
    *,
    normalized: bool = False,
) -> float:
    """Share of images (with >= 1 true box) whose heatmap maximum lies inside a true box.

    The maximum is the first argmax pixel, taken at its centre ``(col + 0.5, row + 0.5)``
    in the heatmap's pixel grid; boxes must be in that grid (e.g. original pixels with
    :func:`~fracsight.explain.heatmap_to_original`), or, with ``normalized=True``,
    normalized to [0, 1] (the point is divided by the heatmap's width and height).
    Box edges count as inside. A constant map has no maximum and counts as a miss.
    """
    if len(heatmaps) != len(true_boxes):
        raise ValueError(f"{len(heatmaps)} heatmaps for {len(true_boxes)} images")
    n = hits = 0
    for heat, trues in zip(heatmaps, true_boxes, strict=True):
        true_xyxy = [as_xyxy(t) for t in trues]
        if not true_xyxy:
            continue
        n += 1
        m = np.nan_to_num(np.asarray(heat, dtype=np.float64), nan=-np.inf)
        if m.ndim != 2:
            raise ValueError(f"heatmaps must be 2-D, got shape {m.shape}")
        if m.size == 0 or not m.max() > m.min():
            continue
        row, col = np.unravel_index(int(np.argmax(m)), m.shape)
        px, py = col + 0.5, row + 0.5
        if normalized:
            px, py = px / m.shape[1], py / m.shape[0]
        hits += any(_contains(t, px, py) for t in true_xyxy)
    return hits / n if n else float("nan")


def average_precision_boxes(
    preds: Sequence[Sequence[DetectedBox]],
    trues: Sequence[Sequence[BoxLike]],
    iou_thr: float = 0.5,
) -> float:
    """Box average precision over a whole data set (one class: fracture).

    All predicted boxes of all images are ranked by falling score (ties keep image
    order, then list order). Going down the ranking, each prediction is matched
    greedily to the still unmatched true box *of its own image* with the highest
    IoU (the last of equal ones), if that IoU is ``>= iou_thr`` (a true positive);
    otherwise it is a false positive (including duplicates of an already found box).
    Ranking and matching are those of pycocotools, so the precision-recall points are
    COCO's. AP is the area under the precision-recall curve with all-point
    interpolation (PASCAL VOC 2010+): precision made non-increasing from the right,
    summed over every recall step. Unfound true boxes lower recall. Each box is a point
    of the curve, tied scores included, so with many tied scores (a quantized model's)
    the value depends on the order of the images (unlike
    :func:`~fracsight.evaluation.average_precision`, which takes tied scores together).
    Returns NaN when there are no true boxes, and 0.0 when there are true boxes but
    no predictions.
    """
    if len(preds) != len(trues):
        raise ValueError(f"{len(preds)} prediction lists for {len(trues)} images")
    true_xyxy = [[as_xyxy(t) for t in ts] for ts in trues]
    n_true = sum(len(ts) for ts in true_xyxy)
    if n_true == 0:
        return float("nan")
    ranked = [(box.score, i, j, box) for i, ps in enumerate(preds) for j, box in enumerate(ps)]
    ranked.sort(key=lambda r: (-r[0], r[1], r[2]))
    if not ranked:
        return 0.0
    matched = [np.zeros(len(ts), dtype=bool) for ts in true_xyxy]
    tp = np.zeros(len(ranked), dtype=np.float64)
    for k, (_, i, _, box) in enumerate(ranked):
        best, best_iou = -1, -1.0
        for t, tbox in enumerate(true_xyxy[i]):
            v = iou(box, tbox)
            if not matched[i][t] and v >= iou_thr and v >= best_iou:  # last of equals, as in COCO
                best, best_iou = t, v
        if best >= 0:
            matched[i][best] = True
            tp[k] = 1.0
    cum_tp = np.cumsum(tp)
    recall = cum_tp / n_true
    precision = cum_tp / np.arange(1, len(ranked) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def average_precision_boxes_coco(
    preds: Sequence[Sequence[DetectedBox]], trues: Sequence[Sequence[BoxLike]]
) -> float:
    """COCO-style AP at IoU 0.5:0.95: :func:`average_precision_boxes` averaged over the ten
    thresholds of :data:`COCO_IOU_THRESHOLDS`. Not pycocotools' figure: each AP here has
    all-point interpolation where COCO's tool samples 101 recall points (and COCO keeps at
    most 100 boxes per image); the two usually differ in the third decimal."""
    values = [average_precision_boxes(preds, trues, iou_thr=t) for t in COCO_IOU_THRESHOLDS]
    return float(np.mean(values))
