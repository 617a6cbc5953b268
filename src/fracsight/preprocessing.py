"""The one preprocessing path shared by training, export and inference.

A radiograph is read with :func:`read_for_model` (a JPEG is decoded at the smallest
DCT scale that still covers the model's input) and letterboxed with
:func:`letterbox_radiograph`: scaled so its longer side equals the model's input size
(antialiased bilinear), centred on a black square. Normalization is *not* done here:
the model owns it (first op of the network, and therefore part of the ONNX graph),
so nothing else can get it wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from fracsight.io import Radiograph, read_image

__all__ = ["Letterbox", "letterbox", "letterbox_radiograph", "read_for_model"]


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one letterbox transform, to map model coordinates back to the image."""

    size: int  # side of the square model input
    scale: float  # model pixels per original pixel
    pad_x: int
    pad_y: int
    original_size: tuple[int, int]  # (height, width)

    def to_original(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Model-input pixel coordinates -> original image pixel coordinates (clipped)."""
        h, w = self.original_size
        ox = np.clip((np.asarray(x, dtype=np.float64) - self.pad_x) / self.scale, 0, w)
        oy = np.clip((np.asarray(y, dtype=np.float64) - self.pad_y) / self.scale, 0, h)
        return ox, oy

    def to_model(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Original image pixel coordinates -> model-input pixel coordinates."""
        mx = np.asarray(x, dtype=np.float64) * self.scale + self.pad_x
        my = np.asarray(y, dtype=np.float64) * self.scale + self.pad_y
        return mx, my

    @property
    def content(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the image content inside the model input."""
        h, w = self.original_size
        nw, nh = _scaled_size(h, w, self.size)[::-1]
        return self.pad_x, self.pad_y, self.pad_x + nw, self.pad_y + nh


def _scaled_size(h: int, w: int, size: int) -> tuple[int, int]:
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def letterbox(
    pixels: np.ndarray, size: int, full_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, Letterbox]:
    """Letterbox a 2-D float image in [0, 1] to ``size`` x ``size`` float32.

    ``full_size``: (height, width) of the full-resolution image when ``pixels`` were
    decoded at reduced scale (:attr:`fracsight.io.Radiograph.full_size`); the geometry,
    and so every coordinate mapped back, then refers to the full-resolution image.
    """
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {pixels.shape}")
    h, w = full_size or pixels.shape
    geometry = letterbox_geometry((h, w), size)
    nh, nw = _scaled_size(h, w, size)
    img = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
    if (nh, nw) != pixels.shape:
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    out = np.zeros((size, size), dtype=np.float32)
    pad_y, pad_x = geometry.pad_y, geometry.pad_x
    np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0, out=out[pad_y : pad_y + nh, pad_x : pad_x + nw])
    return out, geometry


def letterbox_geometry(original_size: tuple[int, int], size: int) -> Letterbox:
    """The geometry :func:`letterbox` uses for an image of ``original_size`` (height, width)."""
    h, w = original_size
    nh, nw = _scaled_size(h, w, size)
    return Letterbox(
        size=size, scale=nw / w, pad_x=(size - nw) // 2, pad_y=(size - nh) // 2, original_size=(h, w)
    )


def read_for_model(source: str | os.PathLike[str] | bytes, size: int, **options: Any) -> Radiograph:
    """:func:`~fracsight.io.read_image` as every model input is read: a JPEG decoded at the
    smallest scale that keeps both sides at least ``size`` (``options`` go to ``read_image``)."""
    return read_image(source, reduce_to=size, **options)


def letterbox_radiograph(radiograph: Radiograph, size: int) -> tuple[np.ndarray, Letterbox]:
    """The model input for a radiograph; the geometry refers to its full-resolution image."""
    return letterbox(radiograph.pixels, size, radiograph.full_size)
