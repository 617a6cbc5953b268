"""Boxes from a detection head's per-cell outputs (CenterNet-style), with non-maximum suppression.

Per cell of a stride-``s`` grid the head gives the logit that a fracture box is centred in
it, the box's log width and height in cells, and the centre's offset inside the cell.
Boxes are read at the cells that are local maxima of the centre probability.
"""

from __future__ import annotations

import numpy as np

from fracsight.explain.boxes import DetectedBox, nms
from fracsight.explain.heatmap import sigmoid
from fracsight.preprocessing import Letterbox

__all__ = ["boxes_from_detector", "decode_detections"]


def _local_maxima(scores: np.ndarray) -> np.ndarray:
    padded = np.pad(scores, 1, constant_values=-np.inf)
    h, w = scores.shape
    neighbours = np.max(
        [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)], axis=0
    )
    return scores >= neighbours


def decode_detections(
    centre_logits: np.ndarray,
    size: np.ndarray,
    offset: np.ndarray,
    stride: int,
    min_score: float,
    top_k: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes, scores)``: (n, 4) x0, y0, x1, y1 in model-input pixels and their probabilities,
    best first, from the head's (h, w), (2, h, w) and (2, h, w) outputs."""
    scores = sigmoid(centre_logits.astype(np.float64))
    rows, cols = np.nonzero(_local_maxima(scores) & (scores >= min_score))
    order = np.argsort(-scores[rows, cols], kind="stable")[:top_k]
    rows, cols = rows[order], cols[order]
    cx = (cols + offset[0, rows, cols]) * stride
    cy = (rows + offset[1, rows, cols]) * stride
    half_w = np.exp(np.clip(size[0, rows, cols], -4.0, 4.0)) * stride / 2
    half_h = np.exp(np.clip(size[1, rows, cols], -4.0, 4.0)) * stride / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    return boxes, scores[rows, cols]


def boxes_from_detector(
    centre_logits: np.ndarray,
    size: np.ndarray,
    offset: np.ndarray,
    geometry: Letterbox,
    *,
    stride: int,
    min_score: float,
    max_boxes: int = 5,
    nms_iou: float = 0.3,
) -> list[DetectedBox]:
    """The detector's boxes in original-image pixels, best first, after non-maximum suppression."""
    boxes, scores = decode_detections(centre_logits, size, offset, stride, min_score)
    found = []
    for (x0, y0, x1, y1), score in zip(boxes, scores, strict=True):
        ox0, oy0 = geometry.to_original(x0, y0)
        ox1, oy1 = geometry.to_original(x1, y1)
        if ox1 > ox0 and oy1 > oy0:  # a box wholly in the letterbox border has no area left
            found.append(DetectedBox(float(ox0), float(oy0), float(ox1), float(oy1), float(score)))
    return nms(found, nms_iou)[:max_boxes]
