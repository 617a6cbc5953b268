"""Right-angle turns and mirroring of square model inputs, their boxes and their maps.

Convention: orientation ``k`` means the image as given is the upright one turned
``k`` quarter turns counter-clockwise (``np.rot90(upright, k)``); ``np.rot90(given, -k)``
makes it upright again.
"""

from __future__ import annotations

import numpy as np

__all__ = ["flip_boxes", "turn_boxes", "turn_boxes_in"]


def flip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """(n, 4) x0, y0, x1, y1 boxes mirrored left-right in an image ``width`` wide."""
    out = boxes.copy()
    out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return out


def turn_boxes_in(boxes: np.ndarray, k: int, size: tuple[float, float]) -> np.ndarray:
    """Boxes of an image of ``size`` (height, width) after ``np.rot90(image, k)``."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    h, w = size
    for _ in range(k % 4):  # one counter-clockwise quarter turn: (x, y) -> (y, w - x)
        out = np.stack([out[:, 1], w - out[:, 2], out[:, 3], w - out[:, 0]], axis=1)
        h, w = w, h
    return out


def turn_boxes(boxes: np.ndarray, k: int, side: float) -> np.ndarray:
    """Boxes of a square image ``side`` wide after ``np.rot90(image, k)``."""
    return turn_boxes_in(boxes, k, (side, side))
