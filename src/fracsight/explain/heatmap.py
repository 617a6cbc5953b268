"""Heatmaps from the model's last feature map: CAM, mask maps, resizing, mapping back.

Conventions
-----------
* A map is a 2-D float array. Its cells tile the square model input evenly: for a
  map of shape ``(h, w)`` and a model input of side ``S``, cell ``(i, j)`` covers
  model pixels ``[j*S/w, (j+1)*S/w) x [i*S/h, (i+1)*S/h)`` and its value sits at
  the cell centre. This holds for the feature-resolution map (``S/32`` per side)
  and for any upsampled version of it alike.
* Resizing is bilinear with half-pixel centres (like PIL, and torch's
  ``align_corners=False``), clamped at the borders. It is plain numpy, so it is
  deterministic and needs neither torch nor scipy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fracsight.preprocessing import Letterbox

__all__ = [
    "class_activation_map",
    "combine_maps",
    "fracture_probability_map",
    "heatmap_to_original",
    "normalize_map",
    "sigmoid",
    "softmax",
    "upsample_to_input",
]

_BLOCK_VALUES = 1 << 18  # float32 values (1 MB) per block of the vertical pass in _sample


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    """Numerically stable logistic function, float32 out (no overflow warnings)."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` (max-subtracted, so it never overflows)."""
    x = np.asarray(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def class_activation_map(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Class activation map ``CAM[i, j] = sum_c weights[c] * features[c, i, j]``.

    ``features`` is the last feature map ``(C, h, w)`` of one image, ``weights`` the
    ``(C,)`` row of the linear classifier that sits on its global average pool. The
    mean of the CAM plus the classifier bias is the image's logit, so ``CAM + bias``
    reads as a per-cell logit (see :func:`fracture_probability_map`).
    """
    features = np.asarray(features, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32).reshape(-1)
    if features.ndim != 3:
        raise ValueError(f"features must be (C, h, w), got shape {features.shape}")
    if weights.shape[0] != features.shape[0]:
        raise ValueError(f"weights have {weights.shape[0]} channels, features {features.shape[0]}")
    return np.tensordot(weights, features, axes=(0, 0)).astype(np.float32)


def combine_maps(maps: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of maps of one shape (e.g. CAM and mask probabilities, or an ensemble).

    ``weights`` default to equal; they need not sum to one (they are normalized).
    """
    if len(maps) == 0:
        raise ValueError("combine_maps needs at least one map")
    arrays = [np.asarray(m, dtype=np.float32) for m in maps]
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        raise ValueError(f"maps differ in shape: {[a.shape for a in arrays]}")
    w = np.ones(len(arrays), dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(arrays),) or not np.all(np.isfinite(w) & (w >= 0)) or w.sum() <= 0:
        raise ValueError("weights must be one non-negative number per map, not all zero")
    w = w / w.sum()
    out = np.zeros(shape, dtype=np.float64)
    for wi, a in zip(w, arrays, strict=True):
        out += wi * a
    return out.astype(np.float32)


def fracture_probability_map(
    features: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    bias: float = 0.0,
    mask_logits: np.ndarray | None = None,
) -> np.ndarray:
    """Per-cell fracture probability ``(h, w)`` in [0, 1] from the model's outputs.

    * CAM part: ``sigmoid(CAM + bias)``, the probability the classifier would give if
      every cell looked like this one (needs ``features`` and ``weights``).
    * Mask part: ``sigmoid(mask_logits)`` from the 1x1-conv fracture-mask head,
      shape ``(h, w)`` or ``(1, h, w)``.

    With both, the result is their mean (as the classifier and mask are averaged
    for the image score); with one, that one.
    """
    parts: list[np.ndarray] = []
    if features is not None or weights is not None:
        if features is None or weights is None:
            raise ValueError("the CAM part needs both features and weights")
        parts.append(sigmoid(class_activation_map(features, weights) + np.float32(bias)))
    if mask_logits is not None:
        m = np.asarray(mask_logits, dtype=np.float32)
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        if m.ndim != 2:
            raise ValueError(f"mask_logits must be (h, w) or (1, h, w), got shape {m.shape}")
        parts.append(sigmoid(m))
    if not parts:
        raise ValueError("give features and weights, mask_logits, or both")
    return combine_maps(parts)


def normalize_map(m: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] (float32) over the finite values; non-finite values -> 0.

    A constant, empty or all-non-finite map becomes all zeros (it shows nothing).
    """
    a = np.asarray(m, dtype=np.float32)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, dtype=np.float32)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    if not hi > lo:
        return np.zeros(a.shape, dtype=np.float32)
    out = (np.where(finite, a, lo) - lo) / (hi - lo)
    return out.astype(np.float32)


def _axis_weights(positions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights to sample a length-``n`` axis at fractional cell positions.

    ``positions`` are in cell units with cell ``k``'s centre at ``k``; clamped to the edges.
    """
    p = np.clip(positions, 0.0, n - 1)
    i0 = np.floor(p).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    frac = (p - i0).astype(np.float32)
    return i0, i1, frac


def _sample(m: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Separable bilinear sampling of ``m`` at rows ``ys`` x columns ``xs`` (cell units)."""
    y0, y1, fy = _axis_weights(ys, m.shape[0])
    x0, x1, fx = _axis_weights(xs, m.shape[1])
    cols = m[:, x0] * (1.0 - fx) + m[:, x1] * fx  # (h, len(xs)): the small pass first
    # The vertical pass makes the full-size result: it gathers whole rows and works in place,
    # which for a 1024 x 842 original takes about 1 ms instead of 5. The lower rows' share goes
    # through a buffer of a block of rows, so the result is the only full-size array: two freed
    # per image were what made glibc hand the memory back and fault it in again for the next
    # one (docs/benchmark.md, "Page faults"). Same operations per value, so the same float32.
    out = np.take(cols, y0, axis=0)
    out *= (1.0 - fy)[:, None]
    lower = fy[:, None]
    rows = max(1, _BLOCK_VALUES // max(1, out.shape[1]))
    below = np.empty((min(rows, len(out)), out.shape[1]), dtype=out.dtype)
    for top in range(0, len(out), rows):
        block = slice(top, top + rows)
        part = below[: len(y1[block])]
        np.take(cols, y1[block], axis=0, out=part, mode="clip")  # "raise" would copy through a buffer
        part *= lower[block]
        out[block] += part
    return out


def _check_map(map_hw: np.ndarray) -> np.ndarray:
    m = np.asarray(map_hw, dtype=np.float32)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"expected a non-empty 2-D map, got shape {m.shape}")
    return m


def upsample_to_input(map_hw: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinearly resize a map to ``size`` (an int for a square, or ``(height, width)``).

    Used with the model's input size to get an input-resolution map, or with a
    smaller size (e.g. 96) for smoother boxes from :func:`~fracsight.explain.boxes_from_heatmap`.
    """
    m = _check_map(map_hw)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    if out_h < 1 or out_w < 1:
        raise ValueError(f"size must be positive, got {size}")
    h, w = m.shape
    ys = (np.arange(out_h, dtype=np.float64) + 0.5) * (h / out_h) - 0.5
    xs = (np.arange(out_w, dtype=np.float64) + 0.5) * (w / out_w) - 0.5
    return _sample(m, ys, xs)


def heatmap_to_original(map_hw: np.ndarray, letterbox: Letterbox) -> np.ndarray:
    """Map ``(h, w)`` over the model input -> float32 ``(H, W)`` over the original image.

    Equivalent to upsampling to the model input, cropping the letterbox content and
    resizing to the original size, but done in one bilinear sampling step: each
    original pixel centre is mapped through the letterbox into map cell units. That
    avoids the rounding of an integer crop and a second interpolation, and works the
    same for feature-resolution and input-resolution maps.
    """
    m = _check_map(map_hw)
    h, w = m.shape
    out_h, out_w = letterbox.original_size
    mx, my = letterbox.to_model(np.arange(out_w) + 0.5, np.arange(out_h) + 0.5)
    xs = np.asarray(mx) * (w / letterbox.size) - 0.5
    ys = np.asarray(my) * (h / letterbox.size) - 0.5
    return _sample(m, ys, xs)
