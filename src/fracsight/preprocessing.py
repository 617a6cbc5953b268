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
from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image

from fracsight.io import Radiograph, read_image

__all__ = ["Letterbox", "letterbox", "letterbox_radiograph", "read_for_model"]


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one letterbox transform, to map model coordinates back to the image: an image
    of ``original_size`` (height, width) resized to whole pixels with its longer side ``size``,
    centred on a ``size`` x ``size`` square. ``aspect``: a pixel's height over its width (a DICOM's
    row over column spacing), so that the network sees the anatomy at its true proportions."""

    size: int  # side of the square model input
    original_size: tuple[int, int]  # (height, width)
    aspect: float = 1.0

    @cached_property  # every mapping asks for it
    def content(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the image content inside the model input."""
        h, w = self.original_size
        nh, nw = _scaled_size(h * self.aspect, w, self.size)
        pad_x, pad_y = (self.size - nw) // 2, (self.size - nh) // 2
        return pad_x, pad_y, pad_x + nw, pad_y + nh

    @property
    def pad_x(self) -> int:
        return self.content[0]

    @property
    def pad_y(self) -> int:
        return self.content[1]

    @property
    def scales(self) -> tuple[float, float]:
        """(x, y) model pixels per original pixel. The two differ: the content is resized to whole
        pixels on each axis (1600 x 32 to 384 x 8: 0.24 down, 0.25 across)."""
        x0, y0, x1, y1 = self.content
        h, w = self.original_size
        return (x1 - x0) / w, (y1 - y0) / h

    def to_original(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Model-input pixel coordinates -> original image pixel coordinates (clipped)."""
        h, w = self.original_size
        (sx, sy), (x0, y0, _, _) = self.scales, self.content
        ox = np.clip((np.asarray(x, dtype=np.float64) - x0) / sx, 0, w)
        oy = np.clip((np.asarray(y, dtype=np.float64) - y0) / sy, 0, h)
        return ox, oy

    def to_model(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Original image pixel coordinates -> model-input pixel coordinates."""
        (sx, sy), (x0, y0, _, _) = self.scales, self.content
        return np.asarray(x, dtype=np.float64) * sx + x0, np.asarray(y, dtype=np.float64) * sy + y0


def _scaled_size(h: float, w: float, size: int) -> tuple[int, int]:
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def letterbox(
    pixels: np.ndarray, size: int, full_size: tuple[int, int] | None = None, aspect: float = 1.0
) -> tuple[np.ndarray, Letterbox]:
    """Letterbox a 2-D float image in [0, 1] to ``size`` x ``size`` float32.

    ``full_size``: (height, width) of the full-resolution image when ``pixels`` were
    decoded at reduced scale (:attr:`fracsight.io.Radiograph.full_size`); the geometry,
    and so every coordinate mapped back, then refers to the full-resolution image.
    ``aspect``: a pixel's height over its width (see :class:`Letterbox`).
    """
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {pixels.shape}")
    geometry = letterbox_geometry(full_size or pixels.shape, size, aspect)
    x0, y0, x1, y1 = geometry.content
    img = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
    if (y1 - y0, x1 - x0) != pixels.shape:
        img = img.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR)
    out = np.zeros((size, size), dtype=np.float32)
    np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0, out=out[y0:y1, x0:x1])
    return out, geometry


def letterbox_geometry(original_size: tuple[int, int], size: int, aspect: float = 1.0) -> Letterbox:
    """The geometry :func:`letterbox` uses for an image of ``original_size`` (height, width)."""
    h, w = original_size
    return Letterbox(size=size, original_size=(h, w), aspect=aspect)


def read_for_model(source: str | os.PathLike[str] | bytes, size: int, **options: Any) -> Radiograph:
    """:func:`~fracsight.io.read_image` as every model input is read: a JPEG decoded at the
    smallest scale that keeps both sides at least ``size`` (``options`` go to ``read_image``)."""
    return read_image(source, reduce_to=size, **options)


def letterbox_radiograph(radiograph: Radiograph, size: int) -> tuple[np.ndarray, Letterbox]:
    """The model input for a radiograph; the geometry refers to its full-resolution image."""
    return letterbox(radiograph.pixels, size, radiograph.full_size, radiograph.metadata.pixel_aspect)
