"""Overlays: a heatmap blended onto the radiograph, boxes with scores, side-by-side views.

Pure numpy + Pillow (no matplotlib on the inference path): colormaps are 256-entry
lookup tables interpolated from a few anchor colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fracsight._files import replace_atomically
from fracsight.explain.boxes import DetectedBox

__all__ = ["COLORMAPS", "colormap_lut", "render_overlay", "save_overlay", "side_by_side"]

# (position in [0, 1], (r, g, b)) anchors; "inferno" approximates matplotlib's inferno.
COLORMAPS: dict[str, tuple[tuple[float, tuple[int, int, int]], ...]] = {
    "inferno": (
        (0.000, (0, 0, 4)),
        (0.125, (31, 12, 72)),
        (0.250, (85, 15, 109)),
        (0.375, (136, 34, 106)),
        (0.500, (186, 54, 85)),
        (0.625, (227, 89, 51)),
        (0.750, (249, 140, 10)),
        (0.875, (249, 201, 50)),
        (1.000, (252, 255, 164)),
    ),
    "hot": ((0.0, (10, 0, 0)), (0.375, (255, 0, 0)), (0.75, (255, 255, 0)), (1.0, (255, 255, 255))),
    "jet": (
        (0.0, (0, 0, 128)),
        (0.125, (0, 0, 255)),
        (0.375, (0, 255, 255)),
        (0.625, (255, 255, 0)),
        (0.875, (255, 0, 0)),
        (1.0, (128, 0, 0)),
    ),
}

_BLEND_ROWS = 256  # rows converted and blended at a time (bounds the float temporaries)
DEFAULT_BOX_COLOUR = (0, 230, 255)  # cyan: stands apart from the warm colormaps and grey bone


@cache
def colormap_lut(name: str = "inferno") -> np.ndarray:
    """A read-only ``(256, 3)`` uint8 lookup table for a colormap in :data:`COLORMAPS`."""
    try:
        anchors = COLORMAPS[name]
    except KeyError:
        raise ValueError(f"unknown colormap {name!r}; known: {', '.join(sorted(COLORMAPS))}") from None
    pos = np.array([p for p, _ in anchors], dtype=np.float64)
    rgb = np.array([c for _, c in anchors], dtype=np.float64)
    x = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(x, pos, rgb[:, k]) for k in range(3)], axis=1)
    lut = np.round(lut).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def _to_rgb_uint8(image: np.ndarray | Image.Image) -> np.ndarray:
    """(H, W) or (H, W, 3|4) float in [0, 1] / uint8, or a PIL image -> a new (H, W, 3) uint8 array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[..., :3]
    elif a.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {a.shape}")
    out = np.empty((*a.shape[:2], 3), dtype=np.uint8)
    for top in range(0, a.shape[0], _BLEND_ROWS):  # in bands, as the blend below
        band = a[top : top + _BLEND_ROWS]
        if band.dtype != np.uint8:
            band = np.clip(np.nan_to_num(band.astype(np.float32)), 0.0, 1.0)
            band = np.round(band * 255.0).astype(np.uint8)
        out[top : top + _BLEND_ROWS] = band[..., None] if band.ndim == 2 else band
    return out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def render_overlay(
    image: np.ndarray | Image.Image,
    heat: np.ndarray | None = None,
    boxes: Sequence[DetectedBox] = (),
    *,
    opacity: float = 0.4,
    colormap: str = "inferno",
    show_scores: bool = True,
    min_heat: float = 0.1,
    box_colour: tuple[int, int, int] = DEFAULT_BOX_COLOUR,
) -> Image.Image:
    """The radiograph with the heatmap blended in and boxes drawn, as an RGB image.

    ``image`` is the original radiograph, (H, W) float in [0, 1] (or RGB / uint8 / PIL).
    ``heat`` is an (H, W) map in [0, 1] at the same resolution (see
    :func:`~fracsight.explain.heatmap_to_original`); each pixel is blended with its
    colormap colour at ``alpha = opacity * heat``; pixels with heat below ``min_heat``
    (the uninformative background of a probability map) and where the heat is 0 are
    left exactly as they were. ``boxes`` are in original pixels; lines
    are about 0.4% of the shorter side thick, with the score above each box when
    ``show_scores``.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    if image is None:  # Prediction.pixels without keep_pixels
        raise ValueError("image is None: pass the radiograph's pixels (predict(..., keep_pixels=True))")
    out = _to_rgb_uint8(image)
    h, w = out.shape[:2]
    if heat is not None:
        hm = np.asarray(heat, dtype=np.float32)
        if hm.shape != (h, w):
            raise ValueError(
                f"heat has shape {hm.shape}, image {(h, w)}; map it with heatmap_to_original first"
            )
        lut = colormap_lut(colormap)
        # in bands of rows: the float temporaries of a blend take about 40 bytes a pixel, which
        # for a 50-megapixel radiograph would be 2 GB at once
        for top in range(0, h, _BLEND_ROWS):
            rows = slice(top, top + _BLEND_ROWS)
            band = np.clip(np.nan_to_num(hm[rows]), 0.0, 1.0)
            alpha = np.where(band >= max(min_heat, 0.0), opacity * band, 0.0)[..., None]
            colour = lut[np.round(band * 255.0).astype(np.uint8)]
            blended = np.round(out[rows] * (1.0 - alpha) + colour * alpha).astype(np.uint8)
            out[rows] = np.where(alpha > 0, blended, out[rows])

    pil = Image.fromarray(out)
    if boxes:
        _draw_boxes(pil, boxes, show_scores=show_scores, colour=box_colour)
    return pil


def _draw_boxes(
    pil: Image.Image, boxes: Sequence[DetectedBox], *, show_scores: bool, colour: tuple[int, int, int]
) -> None:
    w, h = pil.size
    short = min(h, w)
    line = max(2, round(short / 250))
    font = _font(max(12, round(short / 40)))
    draw = ImageDraw.Draw(pil)
    for box in boxes:
        x0 = int(np.clip(round(box.x0), 0, w - 1))
        y0 = int(np.clip(round(box.y0), 0, h - 1))
        x1 = int(np.clip(round(box.x1) - 1, x0, w - 1))  # edges -> last pixel inside
        y1 = int(np.clip(round(box.y1) - 1, y0, h - 1))
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        if not show_scores:
            continue
        text = f"{box.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * line, bottom - top + 2 * line
        ty = y0 - th if y0 - th >= 0 else min(y0 + line, max(0, h - th))  # above the box, else inside
        tx = min(x0, max(0, w - tw))
        draw.rectangle((tx, ty, tx + tw - 1, ty + th - 1), fill=colour)
        draw.text((tx + line - left, ty + line - top), text, fill=(0, 0, 0), font=font)


def save_overlay(
    path: str | Path,
    image: np.ndarray | Image.Image,
    heat: np.ndarray | None = None,
    boxes: Sequence[DetectedBox] = (),
    **render_kwargs: Any,
) -> Path:
    """Render with :func:`render_overlay` and save; the format follows the suffix (PNG, JPEG, ...).

    The file appears whole or not at all: a run stopped while writing (Ctrl-C) leaves no
    truncated picture behind."""
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"cannot tell an image format from the suffix of {path.name!r}: use .png or .jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay = render_overlay(image, heat, boxes, **render_kwargs)
    options = {"quality": 92} if image_format == "JPEG" else {}
    replace_atomically(path, lambda tmp: overlay.save(tmp, format=image_format, **options))
    return path


def side_by_side(
    original: np.ndarray | Image.Image, overlay: np.ndarray | Image.Image, *, gap: int = 8
) -> Image.Image:
    """The original and the overlay next to each other (RGB), separated by ``gap`` black pixels.

    If the heights differ, the overlay is resized to the original's height (aspect kept).
    """
    left = Image.fromarray(_to_rgb_uint8(original))
    right = Image.fromarray(_to_rgb_uint8(overlay))
    if right.height != left.height:
        new_w = max(1, round(right.width * left.height / right.height))
        right = right.resize((new_w, left.height), Image.Resampling.BILINEAR)
    gap = max(0, gap)
    canvas = Image.new("RGB", (left.width + gap + right.width, left.height), (0, 0, 0))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + gap, 0))
    return canvas
