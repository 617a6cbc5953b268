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
from fracsight.explain.boxes import BoxLike, DetectedBox, as_xyxy

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


# Pillow modes whose values are not 0..255: Pillow's own convert("RGB") clips them to white
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# a float image is taken as [0, 1]: resampling may overshoot a little (clipped); beyond this it is
# on another scale (0..255, 0..4095) that clipping would turn white
_UNIT_SLACK = 1.0


def _eight_bit_or_unit(a: np.ndarray) -> np.ndarray:
    """``a`` if it is uint8 or float (bool as 0/1 float); any other integer image is refused: its
    scale (8, 12 or 16 bits, or none) cannot be told, and it used to come out nearly all white."""
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype == np.uint8 or np.issubdtype(a.dtype, np.floating):
        return a
    raise ValueError(
        f"image is {a.dtype}: pass the radiograph as floats in [0, 1] (read_image(...).pixels, or "
        "predict(..., keep_pixels=True).pixels) or as uint8 0..255"
    )


def _check_unit_band(band: np.ndarray) -> None:
    if band.size == 0 or (band.min() >= -_UNIT_SLACK and band.max() <= 1.0 + _UNIT_SLACK):
        return  # the usual case, without the copy below (a NaN fails both comparisons)
    finite = band[np.isfinite(band)]
    if finite.size and (finite.min() < -_UNIT_SLACK or finite.max() > 1.0 + _UNIT_SLACK):
        raise ValueError(
            f"image values run from {finite.min():g} to {finite.max():g}: a float image must be in "
            "[0, 1] (read_image(...).pixels); divide by its full scale first (for 0..255, by 255)"
        )


def _to_rgb_uint8(image: np.ndarray | Image.Image) -> np.ndarray:
    """(H, W) or (H, W, 3|4) float in [0, 1] / uint8, or a PIL image -> a new (H, W, 3) uint8 array."""
    if isinstance(image, Image.Image) and image.mode not in _WIDE_MODES:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    a = _eight_bit_or_unit(np.asarray(image))
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[..., :3]
    elif a.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {a.shape}")
    out = np.empty((*a.shape[:2], 3), dtype=np.uint8)
    for top in range(0, a.shape[0], _BLEND_ROWS):  # in bands, as the blend below
        band = a[top : top + _BLEND_ROWS]
        if band.dtype != np.uint8:
            _check_unit_band(band)
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
    boxes: Sequence[BoxLike] = (),
    *,
    opacity: float = 0.4,
    colormap: str = "inferno",
    show_scores: bool = True,
    min_heat: float = 0.1,
    box_colour: tuple[int, int, int] = DEFAULT_BOX_COLOUR,
) -> Image.Image:
    """The radiograph with the heatmap blended in and boxes drawn, as an RGB image.

    ``image`` is the original radiograph, (H, W) float in [0, 1] (or RGB / uint8 / PIL).
    An image on another scale is refused (``ValueError``), not drawn white: a 16-bit or other
    integer array (or Pillow ``I;16`` / ``I`` image), or floats well outside [0, 1] (such as
    0..255); values just outside (resampling overshoot) are clipped.
    ``heat`` is an (H, W) map in [0, 1] at the same resolution (see
    :func:`~fracsight.explain.heatmap_to_original`); each pixel is blended with its
    colormap colour at ``alpha = opacity * heat``; pixels with heat below ``min_heat``
    (the uninformative background of a probability map) and where the heat is 0 are
    left exactly as they were. ``boxes`` are in original pixels: :class:`DetectedBox` es, or
    plain ``(x0, y0, x1, y1)`` sequences or an ``(N, 4)`` array (drawn without a score); lines
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
    boxes = list(boxes)  # an (N, 4) array too, whose truth value is ambiguous
    if boxes:
        _draw_boxes(pil, boxes, show_scores=show_scores, colour=box_colour)
    return pil


def _draw_boxes(
    pil: Image.Image, boxes: Sequence[BoxLike], *, show_scores: bool, colour: tuple[int, int, int]
) -> None:
    w, h = pil.size
    short = min(h, w)
    line = max(2, round(short / 250))
    font = _font(max(12, round(short / 40)))
    draw = ImageDraw.Draw(pil)
    for box in boxes:
        bx0, by0, bx1, by1 = as_xyxy(box)
        x0 = int(np.clip(round(bx0), 0, w - 1))
        y0 = int(np.clip(round(by0), 0, h - 1))
        x1 = int(np.clip(round(bx1) - 1, x0, w - 1))  # edges -> last pixel inside
        y1 = int(np.clip(round(by1) - 1, y0, h - 1))
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        if not show_scores or not isinstance(box, DetectedBox):  # a plain (x0, y0, x1, y1) has no score
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
    boxes: Sequence[BoxLike] = (),
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
