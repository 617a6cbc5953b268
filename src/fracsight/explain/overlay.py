"""Overlays: a heatmap blended onto the radiograph, boxes with scores, side-by-side views.

Pure numpy + Pillow (no matplotlib on the inference path): colormaps are 256-entry
lookup tables interpolated from a few anchor colours.
"""

from __future__ import annotations

import importlib.util
import numbers
import os
from collections.abc import Mapping, Sequence
from contextlib import suppress
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fracsight._files import replace_atomically
from fracsight.explain.boxes import BoxLike, DetectedBox, as_xyxy

if TYPE_CHECKING:
    from fracsight.inference.results import Prediction, StudyPrediction

__all__ = [
    "COLORMAPS",
    "MIN_HEAT",
    "OVERLAY_FORMATS",
    "colormap_lut",
    "overlay_save_options",
    "overlay_words",
    "render_overlay",
    "save_overlay",
    "short_overlay_stem",
    "side_by_side",
    "summary_lines",
]

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

#: Suffixes an overlay is saved under, and their formats: the two whose files carry the mark that
#: makes the reader refuse an overlay as input (a TIFF, BMP or GIF overlay was read again and
#: scored as a radiograph).
OVERLAY_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}

#: The least heat an overlay tints by default: below it a probability map is background.
MIN_HEAT = 0.1

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


_DEJAVU = os.path.join("mpl-data", "fonts", "ttf", "DejaVuSans.ttf")  # in matplotlib's package


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans, which matplotlib (a dependency) ships: Latin, Greek and Cyrillic letters.
    Pillow's own font has ASCII alone: a class named "Épiphysaire" was drawn "▯piphysaire" on
    every overlay and on the DICOM secondary capture. Pillow's font where DejaVu is not found."""
    spec = importlib.util.find_spec("matplotlib")  # found, not imported (a second of start-up)
    for folder in (spec and spec.submodule_search_locations) or ():
        with suppress(OSError):
            return ImageFont.truetype(os.path.join(folder, _DEJAVU), size)
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _unit_number(value: Any, name: str) -> float:
    """``value`` as a float in [0, 1] (numpy's numbers and 0-d arrays too): "0.5" failed deep in the
    blending, and NaN drew no heat without a word."""
    ok = isinstance(value, (numbers.Real, np.number, np.ndarray)) and np.ndim(value) == 0
    if not ok or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def render_overlay(
    image: np.ndarray | Image.Image | None,
    heat: np.ndarray | None = None,
    boxes: Sequence[BoxLike | Mapping[str, float]] | np.ndarray | None = (),
    *,
    opacity: float = 0.4,
    colormap: str = "inferno",
    show_scores: bool = True,
    min_heat: float = MIN_HEAT,
    box_colour: tuple[int, int, int] = DEFAULT_BOX_COLOUR,
    caption: Sequence[str] | str = (),
    legend: str | None = None,
) -> Image.Image:
    """The radiograph with the heatmap blended in and boxes drawn, as an RGB image.

    ``image`` is the original radiograph, (H, W) float in [0, 1] (or RGB / uint8 / PIL); None
    (a ``Prediction.pixels`` of a prediction made without ``keep_pixels=True``, typed so that
    the README's recipe type-checks) is refused with a ``ValueError`` saying how to keep them.
    An image on another scale is refused (``ValueError``), not drawn white: a 16-bit or other
    integer array (or Pillow ``I;16`` / ``I`` image), or floats well outside [0, 1] (such as
    0..255); values just outside (resampling overshoot) are clipped.
    ``heat`` is an (H, W) map in [0, 1] at the same resolution (see
    :func:`~fracsight.explain.heatmap_to_original`); each pixel is blended with its
    colormap colour at ``alpha = opacity * heat``; pixels with heat below ``min_heat``
    (the uninformative background of a probability map) and where the heat is 0 are
    left exactly as they were. ``boxes`` are in original pixels: :class:`DetectedBox` es, or
    plain ``(x0, y0, x1, y1)`` sequences or an ``(N, 4)`` array (drawn without a score), or the
    dicts of a result's ``to_dict()``; None draws none, as ``heat`` None draws no heat; lines
    are about 0.4% of the shorter side thick, with a dark line inside them that keeps them visible
    on bright bone and film (nothing is drawn outside the box's edges), with the score above each box when
    ``show_scores`` (below it, or inside, where that place is taken by another box or label).

    ``caption`` lines (the decision, its numbers, the decision-aid notice) and, with ``heat``, a
    ``legend`` (the title of a colour bar: what the heatmap shows) are written, white on black,
    in a band below the image, wrapped to its width; a narrow image gets a band wider than
    itself. The image keeps its place and size at the top left, so box coordinates still
    address the overlay's pixels. Without either the overlay is the image's size.
    """
    opacity, min_heat = _unit_number(opacity, "opacity"), _unit_number(min_heat, "min_heat")
    if hasattr(image, "heatmap") and hasattr(image, "boxes"):  # a Prediction: "image is object" said nothing
        raise TypeError(
            f"render_overlay takes the radiograph's pixels, not a {type(image).__name__}: "
            "render_overlay(p.pixels, p.heatmap, p.boxes) with p = predictor.predict(..., keep_pixels=True)"
        )
    if image is None:  # Prediction.pixels without keep_pixels
        raise ValueError("image is None: pass the radiograph's pixels (predict(..., keep_pixels=True))")
    if hasattr(image, "pixels") and hasattr(image, "metadata"):  # a Radiograph: "image is object"
        raise TypeError(f"render_overlay takes pixels, not a {type(image).__name__}: pass its .pixels")
    # a list first: one str is one line, not one per character; a generator is read once, here
    caption = [] if caption is None else [caption] if isinstance(caption, str) else list(caption)
    if not all(isinstance(line, str) for line in caption) or not isinstance(legend, (str, type(None))):
        raise TypeError("caption is a str or a list of str, legend a str or None")  # AttributeError: .split
    # `is None`, not `or ()`: an (N, 4) array's truth value is ambiguous
    boxes = [_drawable(box) for box in (() if boxes is None else boxes)]
    out = _to_rgb_uint8(image)
    h, w = out.shape[:2]
    if heat is not None:
        hm = np.asarray(heat, dtype=np.float32)
        if hm.shape != (h, w):
            raise ValueError(
                f"heat has shape {hm.shape}, image {(h, w)}; map it with heatmap_to_original first"
            )
        if not np.isfinite(hm).all():  # drawn as 0: an overlay with no heat, said nothing
            raise ValueError("heat has NaN or infinite values; pass a map in [0, 1]")
        if hm.size and float(hm.max()) > 1.01:  # 0..255: clipped, it was all drawn at full strength
            raise ValueError(f"heat must be in [0, 1], got values up to {float(hm.max()):g}")
        if hm.size and float(hm.min()) < -0.01:  # clipped to 0: drawn as no heat, said nothing
            raise ValueError(f"heat must be in [0, 1], got values down to {float(hm.min()):g}")
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
    if heat is None:
        legend = None
    if caption or legend:
        pil = _with_band(pil, list(caption), legend, colormap=colormap, min_heat=min_heat)
    return pil


def _drawable(box: BoxLike | Mapping[str, float]) -> BoxLike:
    """A box to draw: a result's ``to_dict()`` box (``x0``, ``y0``, ``x1``, ``y1``, ``score``) as the
    :class:`DetectedBox` it was; refused (``ValueError``) when an edge is not a finite number."""
    if isinstance(box, Mapping):
        try:
            box = DetectedBox(*(float(box[k]) for k in ("x0", "y0", "x1", "y1", "score")))
        except KeyError as e:
            raise ValueError(f"a box given as a dict needs x0, y0, x1, y1 and score; it lacks {e}") from None
    if not all(np.isfinite(as_xyxy(box))):
        raise ValueError(f"a box's edges must be finite numbers, got {as_xyxy(box)}")
    return box


_MIN_BAND_WIDTH = 480  # a caption below a thumbnail gets this much room, not one word a line
# at most this much black margin beside a narrow picture for it: the canvas is as wide as the band,
# and a 32 x 1,562,500 strip (under the 50-megapixel limit) became 480 px wide, 750 megapixels
_MAX_WIDENING_PIXELS = 4_000_000
_TEXT = (255, 255, 255)


def band_width(width: int, height: int) -> int:
    """The width of an overlay of a ``width`` x ``height`` picture: its caption band's, at least
    :data:`_MIN_BAND_WIDTH` while that adds at most :data:`_MAX_WIDENING_PIXELS` of margin beside
    the picture, as wide as that allows beyond (a 32 x 10,000 strip: 432 px)."""
    return max(width, min(_MIN_BAND_WIDTH, width + _MAX_WIDENING_PIXELS // max(1, height)))


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: float) -> list[str]:
    """``text`` in lines no wider than ``width`` (a word longer than that keeps a line alone)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _legend_bar(length: int, colormap: str, min_heat: float) -> tuple[float, np.ndarray]:
    """The bar's lowest value (``min_heat``, at most 0.4) and its ``(length, 3)`` colours, from
    there to 1 (full strength: the overlay blends them at ``opacity`` times the value)."""
    low = min(max(min_heat, 0.0), 0.4)
    values = np.linspace(low, 1.0, max(length, 2))[:length]
    return low, colormap_lut(colormap)[np.round(values * 255.0).astype(np.intp)]


def _with_band(
    pil: Image.Image, caption: list[str], legend: str | None, *, colormap: str, min_heat: float
) -> Image.Image:
    """``pil`` above a black band with the ``caption`` lines and the heatmap's colour bar."""
    width = band_width(pil.width, pil.height)
    # the text grows with the picture, but not past a twentieth of its height: the band is as wide
    # as the picture, so a size from the width alone grew its area with the width squared (a
    # 32 x 1,500,000 strip with overlay=true: an 18 GB band, and the server was killed)
    size = max(12, min(round(width / 60), round(pil.height / 20)))
    font, pad, step = _font(size), max(4, size // 2), size + max(4, size // 2)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [
        part
        for line in [*caption, *([legend] if legend else [])]
        for part in _wrap(scratch, line, font, width - 2 * pad)
    ]
    bar_top = pil.height + pad + len(lines) * step
    canvas = Image.new("RGB", (width, bar_top + (2 * step if legend else 0)), (0, 0, 0))
    canvas.paste(pil, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((pad, pil.height + pad + i * step), line, fill=_TEXT, font=font)
    if legend:
        length = width - 2 * pad
        low, bar = _legend_bar(length, colormap, min_heat)
        canvas.paste(Image.fromarray(np.repeat(bar[None], size, axis=0)), (pad, bar_top))
        ticks = (low, 0.5, 1.0) if length >= 4 * draw.textlength("0.0", font=font) else ()
        for t in ticks:  # none on a bar too short for three labels side by side: drawn over each other
            label = f"{t:.1f}"
            half = draw.textlength(label, font=font) / 2
            x = pad + (t - low) / (1.0 - low) * (length - 1)
            draw.text(
                (min(max(pad, x - half), width - pad - 2 * half), bar_top + size),
                label,
                fill=_TEXT,
                font=font,
            )
    return canvas


_Rect = tuple[int, int, int, int]  # x0, y0, x1, y1, inclusive pixels


def _overlaps(a: _Rect, b: _Rect) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _label_place(tw: int, th: int, box: _Rect, size: tuple[int, int], taken: list[_Rect]) -> _Rect:
    """Where a ``tw`` x ``th`` label of ``box`` goes: above it, else below it, else inside its top,
    the first of these that stays in the image and covers no other box or label (else the first
    that stays in the image: above, or inside when the box touches the top)."""
    w, h = size
    x0, y0, _, y1 = box
    tx = min(x0, max(0, w - tw))
    tops = [y0 - th] if y0 - th >= 0 else []
    tops += [t for t in (y1 + 1, y0) if t + th <= h] or [max(0, h - th)]
    places = [(tx, t, tx + tw - 1, t + th - 1) for t in tops]
    free = [r for r in places if not any(_overlaps(r, other) for other in taken)]
    return (free or places)[0]


def _draw_boxes(
    pil: Image.Image, boxes: Sequence[BoxLike], *, show_scores: bool, colour: tuple[int, int, int]
) -> None:
    w, h = pil.size
    short = min(h, w)
    line = max(2, round(short / 250))
    edge = max(1, round(line / 3))  # a dark line inside: cyan alone vanishes on white film
    font = _font(max(12, round(short / 40)))
    draw = ImageDraw.Draw(pil)
    rects: list[_Rect] = []
    for box in boxes:
        bx0, by0, bx1, by1 = as_xyxy(box)
        x0 = int(np.clip(round(bx0), 0, w - 1))
        y0 = int(np.clip(round(by0), 0, h - 1))
        x1 = int(np.clip(round(bx1) - 1, x0, w - 1))  # edges -> last pixel inside
        y1 = int(np.clip(round(by1) - 1, y0, h - 1))
        rects.append((x0, y0, x1, y1))
        draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0), width=line + edge)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
    labels: list[_Rect] = []
    drawn: list[tuple[_Rect, str, int, int]] = []
    for k, box in enumerate(boxes):
        if not show_scores or not isinstance(box, DetectedBox):  # a plain (x0, y0, x1, y1) has no score
            continue
        text = f"{box.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * line, bottom - top + 2 * line
        others = [r for j, r in enumerate(rects) if j != k]
        place = _label_place(tw, th, rects[k], (w, h), others + labels)
        labels.append(place)
        drawn.append((place, text, left, top))
    # placed best first, drawn best last: where no free place was left, a lower score's label
    # covered the top box's score
    for place, text, left, top in reversed(drawn):
        draw.rectangle(place, fill=colour)
        draw.text((place[0] + line - left, place[1] + line - top), text, fill=(0, 0, 0), font=font)


def summary_lines(result: Prediction | StudyPrediction, *, boxes_drawn: bool = True) -> list[str]:
    """What a reader sees with the picture (an overlay's caption, a DICOM result's text): the decision
    and its numbers, then the decision-aid notice."""
    from fracsight.inference.results import NOTICE, Prediction, StudyPrediction, shown_probability

    if not isinstance(result, (Prediction, StudyPrediction)):  # a failed file, a to_dict(): AttributeError
        raise TypeError(f"summary_lines takes a Prediction or StudyPrediction, not {type(result).__name__}")
    head = f"fracsight: {result.decision}"
    details: list[str] = []
    if result.fracture_probability is not None:
        details.append(
            f"{result.finding} probability {shown_probability(result.fracture_probability)} "
            f"(operating point {result.operating_point}, threshold {result.threshold:.2f})"
        )
    if result.classification is not None:
        c = result.classification
        state = "" if c.confident else ", uncertain"
        # as the table and the app's card say it: the type of a fracture that is not suspected
        absent = f", no {result.finding} suspected" if result.fracture_suspected is False else ""
        details.append(f"class {c.predicted} ({shown_probability(c.probability)}{state}){absent}")
    if isinstance(result, Prediction) and result.region is not None:
        details.append(f"region {result.region}")
    boxes = isinstance(result, Prediction) and bool(result.boxes) and boxes_drawn  # a picture without them
    if boxes and not result.reliable:
        details.append("boxes: the areas weighed most, not reliable, for reference only")
    elif boxes and result.fracture_suspected is False:
        details.append("boxes: the areas weighed most, below the threshold, not suspected")
    lines = [head]
    if details:
        lines.append("; ".join(details))
    lines.append(NOTICE)
    return lines


def overlay_words(prediction: Prediction, *, boxes_drawn: bool = True) -> tuple[list[str], str | None]:
    """``(caption, legend)`` for :func:`render_overlay` of ``prediction``: the decision, its numbers
    and the decision-aid notice (the lines of the DICOM secondary capture), and what the heatmap's
    colours measure (None for a prediction without a map). ``boxes_drawn``: False where the boxes
    are left out of the picture, whose legend then says nothing of their labels."""
    from fracsight.inference.results import CLASS_ACTIVATION, FRACTURE_MAP, Prediction

    if not isinstance(prediction, Prediction):  # a loop over predict_many's results met a failure
        raise TypeError(f"overlay_words takes a Prediction, not {type(prediction).__name__}")
    legend = None
    if prediction.localization == FRACTURE_MAP:
        finding = prediction.finding
        legend = f"Heatmap: the {finding} probability the model gives each area"
        if boxes_drawn and prediction.boxes:
            legend += (
                f"; a box's label is its own score, which ranks the boxes, not the {finding} probability"
            )
    elif prediction.localization == CLASS_ACTIVATION:
        c = prediction.classification
        seen = c.mapped if c is not None else "the most likely class"
        where = f"where the model sees {seen}"
        if not prediction.reliable:
            where = "where the model looked most (not reliable: for reference only)"
        # not "chance (0) to certain (1)": the bar starts at the least heat tinted, and the map is
        # the head's attention, not a probability
        legend = f"Class heatmap: {where}; weakest to strongest, not fracture sites"
    return summary_lines(prediction, boxes_drawn=boxes_drawn), legend


#: the longest file name most file systems take (bytes), less room for ".overlay-9999.png" and for
#: the temporary name the overlay is written under first (".NAME.<pid>.<id>.tmp")
_OVERLAY_STEM_BYTES = 255 - 64


def short_overlay_stem(stem: str) -> str:
    """``stem``, or, when an overlay named after it would be longer than a file name may be (a
    250-character image name: "File name too long" stopped the run after every image was predicted,
    with no results; the desktop's and web app's suggested names could not be saved), its start and
    a hash of the whole, so that two long names stay apart."""
    import hashlib

    raw = stem.encode("utf-8", "surrogateescape")
    if len(raw) <= _OVERLAY_STEM_BYTES:
        return stem
    digest = hashlib.sha256(raw).hexdigest()[:10]
    start = raw[: _OVERLAY_STEM_BYTES - len(digest) - 1].decode("utf-8", "ignore")
    return f"{start}~{digest}"


def save_overlay(
    path: str | Path,
    image: np.ndarray | Image.Image | None,
    heat: np.ndarray | None = None,
    boxes: Sequence[BoxLike | Mapping[str, float]] | np.ndarray | None = (),
    *,
    overwrite: bool = False,
    **render_kwargs: Any,
) -> Path:
    """Render with :func:`render_overlay` and save as PNG or JPEG, after the suffix (``.png``,
    ``.jpg``, ``.jpeg``; any other is a ``ValueError``).

    An existing file is a ``FileExistsError`` unless ``overwrite``: saved over the radiograph it
    was made from, the radiograph was gone. The file appears whole or not at all: a run stopped
    while writing (Ctrl-C) leaves no truncated picture behind."""
    path = Path(path)
    image_format = OVERLAY_FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(
            f"an overlay is saved as .png or .jpg, not {path.name!r}: those formats carry the mark "
            "that keeps it from being read again as a radiograph"
        )
    # "no" or "False" from a config file, truthy, replaced the radiograph
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"overwrite must be True or False, not {type(overwrite).__name__} ({overwrite!r})")
    overwrite = bool(overwrite)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path.name} exists: pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay = render_overlay(image, heat, boxes, **render_kwargs)
    options = overlay_save_options(image_format)
    # exclusive: a file made meanwhile (another run into one folder) is never replaced either
    replace_atomically(
        path, lambda tmp: overlay.save(tmp, format=image_format, **options), exclusive=not overwrite
    )
    return path


def overlay_save_options(image_format: str) -> dict[str, Any]:
    """``Image.save`` options of every overlay fracsight writes: the comment that makes the reader
    refuse it as input (:class:`~fracsight.errors.OverlayImageError`), and JPEG's quality."""
    from PIL import PngImagePlugin

    from fracsight.io._raster import OVERLAY_COMMENT

    if image_format == "PNG":
        text = PngImagePlugin.PngInfo()
        text.add_text("Comment", OVERLAY_COMMENT)
        return {"pnginfo": text}
    if image_format == "JPEG":
        return {"quality": 92, "comment": OVERLAY_COMMENT.encode("ascii")}
    return {}


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
