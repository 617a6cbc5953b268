"""Boxes around suspected fractures, from a probability heatmap.

A box is ``(x0, y0, x1, y1)`` with ``x0 <= x1`` and ``y0 <= y1``: left, top, right,
bottom *edges* (not pixel indices), so a box around pixel column 10 alone is
``x0=10, x1=11``. :class:`DetectedBox` is always in original-image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fracsight.preprocessing import Letterbox

__all__ = [
    "BoxLike",
    "DetectedBox",
    "as_xyxy",
    "boxes_from_heatmap",
    "flip_boxes",
    "iou",
    "label_components",
    "nms",
    "turn_boxes",
    "turn_boxes_in",
    "zoom_boxes",
]


@dataclass(frozen=True)
class DetectedBox:
    """A suspected fracture region in original-image pixel coordinates, with its score.

    ``score`` ranks the boxes: from a bundle with a detection head, the detector's own score at
    the box's centre; from one without, the highest heatmap probability inside the region. Not the
    image's fracture probability (a box scored 0.39 on an image at 0.85 is no contradiction).
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    def __post_init__(self) -> None:
        if not (self.x0 <= self.x1 and self.y0 <= self.y1):
            raise ValueError(f"box edges out of order: {self.as_tuple()}")

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def as_tuple(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` in pixels."""
        return self.x0, self.y0, self.x1, self.y1

    def normalized(self, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` divided by the image ``(height, width)``, i.e. in [0, 1]."""
        h, w = image_size
        return self.x0 / w, self.y0 / h, self.x1 / w, self.y1 / h

    def to_dict(self) -> dict[str, float]:
        """JSON-ready: pixel edges rounded to 0.1 px, score to 4 decimals."""
        return {
            "x0": round(float(self.x0), 1),
            "y0": round(float(self.y0), 1),
            "x1": round(float(self.x1), 1),
            "y1": round(float(self.y1), 1),
            "score": round(float(self.score), 4),
        }


BoxLike = DetectedBox | Sequence[float] | np.ndarray
"""A :class:`DetectedBox` or any ``(x0, y0, x1, y1)`` sequence."""


def as_xyxy(box: BoxLike) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` floats from a :class:`DetectedBox` or a 4-sequence."""
    if isinstance(box, DetectedBox):
        return box.as_tuple()
    values = [float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)]
    if len(values) != 4:
        raise ValueError(f"a box needs 4 numbers (x0, y0, x1, y1), got {len(values)}")
    x0, y0, x1, y1 = values
    return x0, y0, x1, y1


def iou(a: BoxLike, b: BoxLike) -> float:
    """Intersection over union of two boxes in the same coordinates; 0.0 if both are empty."""
    ax0, ay0, ax1, ay1 = as_xyxy(a)
    bx0, by0, bx1, by1 = as_xyxy(b)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = max(0.0, ax1 - ax0) * max(0.0, ay1 - ay0) + max(0.0, bx1 - bx0) * max(0.0, by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def nms(boxes: Sequence[DetectedBox], iou_thr: float = 0.5) -> list[DetectedBox]:
    """Greedy non-maximum suppression: keep boxes by falling score, drop any whose IoU
    with a kept box exceeds ``iou_thr``. Ties in score keep input order."""
    boxes = list(boxes)  # a generator, read once: the check below would use it up
    for box in boxes:  # a plain (x0, y0, x1, y1) has no score to rank by: it was an AttributeError
        if not isinstance(box, DetectedBox):
            raise TypeError(
                f"nms takes DetectedBoxes (they carry the score it ranks by), not {type(box).__name__}"
            )
    kept: list[DetectedBox] = []
    for box in sorted(boxes, key=lambda b: -b.score):
        if all(iou(box, k) <= iou_thr for k in kept):
            kept.append(box)
    return kept


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected component labelling of a 2-D boolean mask.

    Returns ``(labels, n)``: int32 labels with 0 for background and 1..n for the
    components, numbered in raster order of their first pixel. Works on runs of
    foreground along rows (found with numpy) joined by a union-find over
    neighbouring rows, so the Python work grows with the number of runs, not pixels.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    h, _ = mask.shape
    labels = np.zeros(mask.shape, dtype=np.int32)
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    run_rows, starts = np.nonzero(edges == 1)  # raster order; each run covers columns [start, end)
    ends = np.nonzero(edges == -1)[1]
    if len(starts) == 0:
        return labels, 0
    row_first = np.searchsorted(run_rows, np.arange(h + 1)).tolist()
    s, e = starts.tolist(), ends.tolist()
    parent = list(range(len(s)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for y in range(1, h):
        a, a_stop, b, b_stop = row_first[y - 1], row_first[y], row_first[y], row_first[y + 1]
        while a < a_stop and b < b_stop:
            if s[b] <= e[a] and s[a] <= e[b]:  # the runs touch, diagonals included
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            if e[a] < e[b]:  # the run that ends first cannot touch anything further right
                a += 1
            else:
                b += 1
    numbers: dict[int, int] = {}
    run_labels = [numbers.setdefault(find(i), len(numbers) + 1) for i in range(len(s))]
    labels[mask] = np.repeat(np.asarray(run_labels, dtype=np.int32), ends - starts)
    return labels, len(numbers)


def _content_cells(shape: tuple[int, int], letterbox: Letterbox) -> np.ndarray:
    """Boolean (h, w): cells of a map over the model input that overlap the image content."""
    h, w = shape
    cx0, cy0, cx1, cy1 = letterbox.content
    sx, sy = letterbox.size / w, letterbox.size / h
    cols = np.arange(w)
    rows = np.arange(h)
    col_ok = ((cols + 1) * sx > cx0) & (cols * sx < cx1)
    row_ok = ((rows + 1) * sy > cy0) & (rows * sy < cy1)
    return row_ok[:, None] & col_ok[None, :]


def boxes_from_heatmap(
    heat: np.ndarray,
    letterbox: Letterbox,
    *,
    threshold: float = 0.5,
    relative: float = 0.5,
    min_score: float = 0.25,
    max_boxes: int = 3,
) -> list[DetectedBox]:
    """Boxes around the high regions of a probability map, in original-image pixels.

    ``heat`` holds probabilities in [0, 1] over the square model input, at feature
    resolution (e.g. 12x12) or any finer resolution (e.g. the 384x384 input or a
    96x96 upsampling via :func:`~fracsight.explain.upsample_to_input`, which gives
    tighter boxes than whole cells). Cells lying wholly in the letterbox padding are
    ignored.

    Rule:

    1. ``peak`` = the map's maximum. If ``peak < min_score``: no boxes.
    2. Foreground = cells ``>= threshold`` when ``peak >= threshold``; otherwise
       cells ``>= relative * peak``. So the top region always yields a box once the
       peak reaches ``min_score``, even when no cell passes ``threshold``.
    3. Each 8-connected foreground component is a candidate; its score is its
       maximum value, and components scoring below ``min_score`` are dropped.
    4. A candidate's box is the union of its cells' extents in the model input,
       mapped through ``letterbox`` to original pixels and clipped to the image.
    5. Sorted by falling score (ties: raster order), at most ``max_boxes`` kept.

    A constant or all-zero map gives no boxes unless its value reaches
    ``min_score``, in which case it gives one box covering the whole image.
    """
    if not 0.0 < relative <= 1.0:
        raise ValueError(f"relative must be in (0, 1], got {relative}")
    if max_boxes < 1:
        return []
    m = np.asarray(heat, dtype=np.float32)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"expected a non-empty 2-D heatmap, got shape {m.shape}")
    m = np.nan_to_num(m, nan=0.0, posinf=1.0, neginf=0.0)
    m = np.where(_content_cells(m.shape, letterbox), m, 0.0).astype(np.float32)

    peak = float(m.max())
    if peak < min_score or peak <= 0.0:
        return []
    cut = threshold if peak >= threshold else relative * peak
    labels, n = label_components(m >= cut)

    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    big = np.iinfo(np.int64).max
    col_min = np.full(n + 1, big, dtype=np.int64)
    row_min = np.full(n + 1, big, dtype=np.int64)
    col_max = np.full(n + 1, -1, dtype=np.int64)
    row_max = np.full(n + 1, -1, dtype=np.int64)
    score = np.full(n + 1, -np.inf, dtype=np.float64)
    np.minimum.at(col_min, lab, xs)
    np.minimum.at(row_min, lab, ys)
    np.maximum.at(col_max, lab, xs)
    np.maximum.at(row_max, lab, ys)
    np.maximum.at(score, lab, m[ys, xs])

    h, w = m.shape
    sx, sy = letterbox.size / w, letterbox.size / h
    found: list[DetectedBox] = []
    for k in range(1, n + 1):
        if score[k] < min_score:
            continue
        ox, oy = letterbox.to_original(
            np.array([col_min[k] * sx, (col_max[k] + 1) * sx]),
            np.array([row_min[k] * sy, (row_max[k] + 1) * sy]),
        )
        if ox[1] <= ox[0] or oy[1] <= oy[0]:
            continue
        found.append(DetectedBox(float(ox[0]), float(oy[0]), float(ox[1]), float(oy[1]), float(score[k])))
    found.sort(key=lambda b: -b.score)
    return found[:max_boxes]


def flip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """(n, 4) x0, y0, x1, y1 boxes mirrored left-right in an image ``width`` wide."""
    out = boxes.copy()
    out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return out


def turn_boxes_in(boxes: np.ndarray, k: int, size: tuple[float, float]) -> np.ndarray:
    """Boxes of an image of ``size`` (height, width) after ``np.rot90(image, k)`` (``k`` quarter
    turns counter-clockwise; ``-k`` turns them back)."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    h, w = size
    for _ in range(k % 4):  # one counter-clockwise quarter turn: (x, y) -> (y, w - x)
        out = np.stack([out[:, 1], w - out[:, 2], out[:, 3], w - out[:, 0]], axis=1)
        h, w = w, h
    return out


def zoom_boxes(boxes: np.ndarray, scale: float, shift: tuple[float, float], side: float) -> np.ndarray:
    """Boxes of a square view ``side`` wide after zooming it by ``scale`` about its centre c, the
    view reading at each point u the image at (u - c) / scale + c + ``shift`` (pixels): clipped
    to the view, and dropped when under a third of a box is left in it."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centre = side / 2
    moved = scale * (out - centre - np.array([*shift, *shift])) + centre
    kept = np.clip(moved, 0, side)
    area = lambda a: (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])  # noqa: E731
    return kept[area(kept) >= area(moved) / 3]


def turn_boxes(boxes: np.ndarray, k: int, side: float) -> np.ndarray:
    """Boxes of a square image ``side`` wide after ``np.rot90(image, k)``."""
    return turn_boxes_in(boxes, k, (side, side))
