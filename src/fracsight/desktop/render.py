"""Drawing the viewer's picture: the visible part of the radiograph at the current zoom, window/level
applied, the heatmap and boxes on top (:func:`fracsight.explain.render_overlay`).

Only the part of the image on screen is resampled and blended, so a pan or a slider move costs
about the same for a 4,000-pixel DICOM as for a small JPEG. :class:`BackgroundRenderer` does it on
its own thread: on a loaded 2-core machine one picture took up to 200 ms, which on the window's
thread would have stalled the event loop that long. No tkinter here.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image

from fracsight.app.logic import ViewData
from fracsight.desktop.priority import RENDER_NICENESS, lower_this_thread
from fracsight.explain import render_overlay

__all__ = [
    "BackgroundRenderer",
    "Camera",
    "Crop",
    "Look",
    "RenderRequest",
    "Rendered",
    "apply_window",
    "fit_zoom",
    "full_overlay",
    "render_visible",
    "visible_crop",
]

log = logging.getLogger("fracsight.desktop")

MIN_ZOOM, MAX_ZOOM = 0.02, 16.0


@dataclass(frozen=True)
class Look:
    """How the picture is drawn, as the viewer's controls set it."""

    level: float = 0.5
    width: float = 1.0
    show_heatmap: bool = True
    show_boxes: bool = True
    opacity: float = 0.4


@dataclass(frozen=True)
class Camera:
    """Which image point sits at the canvas centre, and screen pixels per image pixel."""

    cx: float
    cy: float
    zoom: float

    def zoomed(self, factor: float, about: tuple[float, float] | None = None) -> Camera:
        """Zoom by ``factor`` keeping the image point ``about`` (image pixels) where it is on screen."""
        zoom = min(max(self.zoom * factor, MIN_ZOOM), MAX_ZOOM)
        if about is None:
            return replace(self, zoom=zoom)
        ax, ay = about
        k = self.zoom / zoom
        return Camera(ax + (self.cx - ax) * k, ay + (self.cy - ay) * k, zoom)

    def panned(self, dx_screen: float, dy_screen: float) -> Camera:
        return replace(self, cx=self.cx - dx_screen / self.zoom, cy=self.cy - dy_screen / self.zoom)

    def kept_on(self, image_hw: tuple[int, int], canvas: tuple[int, int]) -> Camera:
        """This camera moved the least that keeps the image on the canvas: a side that fits is
        centred, one larger than the canvas never leaves an edge of it inside (a few Shift+Left
        presses panned the image off, a black canvas, with nothing to say why)."""

        def kept(centre: float, size: int, room: int) -> float:
            half = room / (2 * self.zoom)  # half the canvas, in image pixels
            return size / 2 if size * self.zoom <= room else min(max(centre, half), size - half)

        (h, w), (cw, ch) = image_hw[:2], canvas
        return Camera(kept(self.cx, w, max(1, cw)), kept(self.cy, h, max(1, ch)), self.zoom)

    def to_image(self, x: float, y: float, canvas: tuple[int, int]) -> tuple[float, float]:
        """A canvas point in image pixels."""
        w, h = canvas
        return self.cx + (x - w / 2) / self.zoom, self.cy + (y - h / 2) / self.zoom


def fit_zoom(image_hw: tuple[int, int], canvas: tuple[int, int]) -> Camera:
    """The whole image, centred, as large as the canvas allows."""
    h, w = image_hw
    cw, ch = max(1, canvas[0]), max(1, canvas[1])
    zoom = min(cw / w, ch / h)
    return Camera(w / 2, h / 2, min(max(zoom, MIN_ZOOM), MAX_ZOOM))


@dataclass(frozen=True)
class Crop:
    """The image pixels ``[x0, x1) x [y0, y1)`` drawn at canvas offset ``(left, top)``, ``size`` big."""

    x0: int
    y0: int
    x1: int
    y1: int
    left: int
    top: int
    size: tuple[int, int]  # (width, height) on screen


def visible_crop(image_hw: tuple[int, int], canvas: tuple[int, int], camera: Camera) -> Crop | None:
    """The part of the image on the canvas, or None when none of it is."""
    h, w = image_hw
    cw, ch = canvas
    z = camera.zoom
    left_edge = camera.cx - cw / (2 * z)  # image x at the canvas's left edge
    top_edge = camera.cy - ch / (2 * z)
    x0, y0 = max(0, math.floor(left_edge)), max(0, math.floor(top_edge))
    x1, y1 = min(w, math.ceil(left_edge + cw / z)), min(h, math.ceil(top_edge + ch / z))
    if x1 <= x0 or y1 <= y0:
        return None
    size = (max(1, round((x1 - x0) * z)), max(1, round((y1 - y0) * z)))
    return Crop(x0, y0, x1, y1, round((x0 - left_edge) * z), round((y0 - top_edge) * z), size)


def apply_window(pixels: np.ndarray, level: float, width: float) -> np.ndarray:
    """Window/level on the displayed intensities in [0, 1] (level 0.5, width 1: as read)."""
    width = max(float(width), 1e-3)
    low = float(level) - width / 2
    return np.clip((pixels - low) / width, 0.0, 1.0).astype(np.float32, copy=False)


def _resize(a: np.ndarray, size: tuple[int, int], zoom: float) -> np.ndarray:
    # magnified pixels stay square (a reader wants to see them); shrinking averages
    method = Image.Resampling.NEAREST if zoom >= 3 else Image.Resampling.BILINEAR
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(img.resize(size, method), dtype=np.float32)


def render_visible(
    view: ViewData,
    canvas: tuple[int, int],
    camera: Camera,
    *,
    level: float = 0.5,
    width: float = 1.0,
    show_heatmap: bool = True,
    show_boxes: bool = True,
    opacity: float = 0.4,
) -> tuple[Image.Image, Crop] | None:
    """The picture of the visible part (RGB) and where it goes on the canvas; None when off screen."""
    crop = visible_crop(view.pixels.shape, canvas, camera)
    if crop is None:
        return None
    sl = (slice(crop.y0, crop.y1), slice(crop.x0, crop.x1))
    pixels = apply_window(_resize(view.pixels[sl], crop.size, camera.zoom), level, width)
    heat = None
    if show_heatmap and view.heatmap is not None:
        heat = np.clip(_resize(view.heatmap[sl], crop.size, camera.zoom), 0.0, 1.0)
    boxes = []
    if show_boxes:
        sx, sy = crop.size[0] / (crop.x1 - crop.x0), crop.size[1] / (crop.y1 - crop.y0)
        for b in view.boxes:
            if b.x1 > crop.x0 and b.x0 < crop.x1 and b.y1 > crop.y0 and b.y0 < crop.y1:
                boxes.append(
                    replace(
                        b,
                        x0=(b.x0 - crop.x0) * sx,
                        y0=(b.y0 - crop.y0) * sy,
                        x1=(b.x1 - crop.x0) * sx,
                        y1=(b.y1 - crop.y0) * sy,
                    )
                )
    return render_overlay(pixels, heat, boxes, opacity=opacity), crop


def full_overlay(
    view: ViewData, look: Look = Look(), caption: Sequence[str] = (), legend: str | None = None
) -> Image.Image:
    """The whole overlay at the view's resolution, drawn as ``look`` says (for the overlay export),
    with ``caption`` and ``legend`` (:func:`~fracsight.explain.overlay_words`) in a band below it."""
    heat = view.heatmap if look.show_heatmap else None
    boxes = view.boxes if look.show_boxes else ()
    pixels = apply_window(view.pixels, look.level, look.width)
    legend = legend if heat is not None else None
    return render_overlay(pixels, heat, boxes, opacity=look.opacity, caption=caption, legend=legend)


@dataclass(frozen=True)
class RenderRequest:
    """One picture to draw: :func:`render_visible`'s arguments and a number that orders requests."""

    number: int
    view: ViewData
    canvas: tuple[int, int]
    camera: Camera
    look: Look = Look()


@dataclass(frozen=True)
class Rendered:
    number: int
    picture: Image.Image | None  # None: nothing of the image on the canvas, or drawing failed
    crop: Crop | None


class BackgroundRenderer:
    """Draws pictures on its own thread and puts :class:`Rendered` on ``out``.

    Only the latest request matters: one that arrives while another waits replaces it, so a
    slider dragged faster than pictures can be drawn costs one picture per drawing, not a backlog.
    """

    def __init__(self, out: queue.Queue) -> None:
        self.out = out
        self._pending: RenderRequest | None = None
        self._closed = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="fracsight-render", daemon=True)
        self._thread.start()

    def request(self, request: RenderRequest) -> None:
        with self._wake:
            self._pending = request
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _run(self) -> None:
        lower_this_thread(RENDER_NICENESS)
        while True:
            with self._wake:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                r, self._pending = self._pending, None
            try:
                drawn = render_visible(r.view, r.canvas, r.camera, **asdict(r.look))
            except Exception:  # a blank canvas and a log line, never a dead viewer
                log.exception("drawing the viewer failed")
                drawn = None
            self.out.put(Rendered(r.number, *(drawn or (None, None))))
