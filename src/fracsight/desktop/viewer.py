"""The image pane of the desktop window: display controls, the canvas and its caption.

It shows one :class:`~fracsight.app.logic.ViewData` (the radiograph, heatmap and boxes at full
resolution): heatmap toggle and opacity, boxes toggle, window/level (sliders or a right-drag),
zoom (wheel about the pointer, buttons, keys, fit) and pan (drag). Pictures are drawn by a
:class:`~fracsight.desktop.render.BackgroundRenderer`; its :class:`~fracsight.desktop.render.Rendered`
events come back through the window's queue to :meth:`Viewer.rendered`.
"""

from __future__ import annotations

import queue
import tkinter as tk
from tkinter import ttk

from PIL import ImageTk

from fracsight.app.logic import ViewData, card_for, overlay_caption, true_shape
from fracsight.desktop.render import (
    BackgroundRenderer,
    Camera,
    Look,
    Rendered,
    RenderRequest,
    fit_zoom,
)
from fracsight.desktop.shortcuts import Tooltip, hint
from fracsight.inference import Prediction

__all__ = ["FOCUS_COLOUR", "Viewer", "pack_right"]

FOCUS_COLOUR = "#1565c0"  # the window's: where the keyboard acts
RING = 2  # pixels of the focus frame round the image, and of space above and below it
ZOOM_STEP = 1.25  # the zoom buttons' and keys' step
SLIDER_STEP, SLIDER_PAGE = 0.05, 0.2  # a slider's arrow-key and Page Up/Down steps (its range is 0-1)
PAN_STEP = 0.2  # the pan keys' step, a fraction of the pane
HINT = "(drag: pan; right-drag: window/level; wheel: zoom; double-click: fit)"


class Viewer:
    """Controls, canvas and caption, packed into ``parent``. Methods a test may call on the Tk
    thread: :meth:`set_heatmap`, :meth:`set_window`, :meth:`zoom_by`, :meth:`fit`, and the
    keyboard's (:mod:`fracsight.desktop.shortcuts`): :meth:`toggle_heatmap`, :meth:`zoom_in`, ..."""

    def __init__(self, parent: ttk.Frame, events: queue.Queue) -> None:
        self.root = parent.winfo_toplevel()
        self.view: ViewData | None = None
        self.result: Prediction | None = None
        self.full_size: tuple[int, int] | None = (
            None  # (height, width) of the image, when the view is reduced
        )
        self.boxes_apply = True  # only a fracture head draws boxes
        self.camera: Camera | None = None  # None: fit the image to the canvas, whatever its size
        self.renderer = BackgroundRenderer(events)
        self._photo: ImageTk.PhotoImage | None = None
        self._redraw_job: str | None = None
        self._requested = self._drawn = 0  # numbers of the latest picture asked for and drawn
        self._drag: tuple[str, int, int, float, float] | None = None
        self.heat_var = tk.BooleanVar(value=True)
        self.boxes_var = tk.BooleanVar(value=True)
        self.opacity_var = tk.DoubleVar(value=0.4)
        self.level_var = tk.DoubleVar(value=0.5)
        self.width_var = tk.DoubleVar(value=1.0)
        self._build(parent)

    def _build(self, parent: ttk.Frame) -> None:
        def scale(frame: ttk.Frame, var: tk.DoubleVar, low: float, length: int) -> None:
            slider = ttk.Scale(
                frame, from_=low, to=1.0, variable=var, length=length, command=lambda _v: self.redraw()
            )
            slider.pack(side="left")
            # Tk's keys step a scale by 1 (with Ctrl by 10): a 0-1 slider went end to end at one
            # press, and window/level could not be set from the keyboard at all; its Home and End
            # moved it without a redraw
            for keys, step in (
                (("Left", "Down"), -SLIDER_STEP),
                (("Right", "Up"), SLIDER_STEP),
                (("Next",), -SLIDER_PAGE),
                (("Prior",), SLIDER_PAGE),
                (("Home",), -1.0),
                (("End",), 1.0),
            ):
                for key in keys:
                    slider.bind(f"<Key-{key}>", lambda _e, s=step, v=var, lo=low: self._step(v, s, lo))

        controls = ttk.Frame(parent, padding=(8, 2))
        controls.pack(side="top", fill="x")
        heat = ttk.Checkbutton(controls, text="Heatmap", variable=self.heat_var, command=self.redraw)
        heat.pack(side="left")
        ttk.Label(controls, text="opacity").pack(side="left", padx=(6, 0))
        scale(controls, self.opacity_var, 0.0, 90)
        self.boxes_check = ttk.Checkbutton(
            controls, text="Boxes", variable=self.boxes_var, command=self.redraw
        )
        self.boxes_check.pack(side="left", padx=(8, 0))

        # zoom on the first row, window/level on a second: each fits the right pane of a 1004-pixel
        # window (a 1024 x 768 screen); with both on one row Reset W/L was cut off there
        zoom_out = ttk.Button(controls, text="−", width=2, command=self.zoom_out)
        zoom_in = ttk.Button(controls, text="+", width=2, command=self.zoom_in)
        actual = ttk.Button(controls, text="1:1", width=4, command=self.actual_size)
        fit = ttk.Button(controls, text="Fit", width=4, command=self.fit)
        pack_right(zoom_out, zoom_in, actual, fit, gap=0)
        ttk.Label(controls, text="Zoom").pack(side="right", padx=(8, 4))
        levels = ttk.Frame(parent, padding=(8, 0, 8, 2))
        levels.pack(side="top", fill="x")
        self.rows = (controls, levels)
        ttk.Label(levels, text="Window: level").pack(side="left")
        scale(levels, self.level_var, 0.0, 90)
        ttk.Label(levels, text="width").pack(side="left", padx=(4, 0))
        scale(levels, self.width_var, 0.02, 90)
        reset = ttk.Button(levels, text="Reset W/L", width=9, command=self.reset_window)
        reset.pack(side="left", padx=(4, 0))
        for widget, action in (
            (heat, "toggle_heatmap"),
            (self.boxes_check, "toggle_boxes"),
            (fit, "fit"),
            (actual, "actual_size"),
            (zoom_in, "zoom_in"),
            (zoom_out, "zoom_out"),
            (reset, "reset_window"),
        ):
            Tooltip(widget, hint(f"viewer.{action}"))

        self.caption = ttk.Label(parent, text="", justify="left", padding=(8, 2))
        self.caption.pack(side="bottom", fill="x")
        self.caption.bind(  # wrapped at its width: a fixed one wider than the pane cut the zoom off
            "<Configure>", lambda e: self.caption.configure(wraplength=max(80, e.width - 24)), add="+"
        )
        # a frame in the focus colour while the image has the keyboard (its shortcuts act there)
        background = ttk.Style(parent).lookup("TFrame", "background") or "black"
        self.focus_frame = ring = tk.Frame(parent, bg=background, padx=RING, pady=RING)
        ring.pack(side="top", fill="both", expand=True, padx=8 - RING, pady=RING)
        self.canvas = c = tk.Canvas(ring, bg="black", highlightthickness=0, cursor="fleur")
        c.pack(fill="both", expand=True)
        c.bind("<FocusIn>", lambda _e: ring.configure(bg=FOCUS_COLOUR))
        c.bind("<FocusOut>", lambda _e: ring.configure(bg=background))
        c.configure(takefocus=1)  # a click gives it the keyboard: the window's shortcuts act on it
        c.bind("<Configure>", lambda _e: self.redraw())
        c.bind("<ButtonPress-1>", lambda e: self._drag_start("pan", e))
        c.bind("<B1-Motion>", self._drag_move)
        c.bind("<ButtonPress-3>", lambda e: self._drag_start("window", e))
        c.bind("<B3-Motion>", self._drag_move)
        c.bind("<Double-Button-1>", lambda _e: self.fit())
        c.bind("<Button-4>", lambda e: self.zoom_by(1.2, (e.x, e.y)))  # X11 wheel
        c.bind("<Button-5>", lambda e: self.zoom_by(1 / 1.2, (e.x, e.y)))
        c.bind("<MouseWheel>", lambda e: self.zoom_by(1.2 if e.delta > 0 else 1 / 1.2, (e.x, e.y)))

    def needs(self, image: int) -> int:
        """The height the pane needs for its controls and caption and ``image`` pixels of image."""
        rows = sum(row.winfo_reqheight() for row in (*self.rows, self.caption))
        return rows + image + 4 * RING  # the focus frame, and its space above and below

    # ---- what is shown -------------------------------------------------------------------------------
    def set_boxes_apply(self, apply: bool) -> None:
        """Whether the bundle draws boxes (a fracture head); the toggle is hidden otherwise."""
        self.boxes_apply = apply
        if not apply:
            self.boxes_check.pack_forget()

    def show(self, view: ViewData, result: Prediction, full_size: tuple[int, int] | None = None) -> None:
        """A new image, fitted to the canvas, in its own window (a window narrowed on one DICOM
        would blow out the next image); ``full_size`` (height, width) when ``view`` is reduced."""
        self.view, self.result, self.camera = view, result, None
        self.full_size = full_size if full_size != view.pixels.shape else None
        self.level_var.set(0.5)  # the file's own window (set_window would draw a second time)
        self.width_var.set(1.0)
        self._draw()

    @property
    def scale(self) -> float:
        """View pixels per image pixel: below 1 when the view is reduced (a large image), measured
        on the axis the pixels' true shape does not stretch (the width of pixels taller than wide,
        the height of wider ones: on the width there, 1:1 drew two stored rows per screen row)."""
        if self.view is None or self.full_size is None:
            return 1.0
        (view_h, view_w), (full_h, full_w) = self.view.pixels.shape, self.full_size
        aspect = self.result.metadata.pixel_aspect if self.result is not None else 1.0
        return view_w / full_w if aspect >= 1.0 else view_h / full_h

    def update_result(self, result: Prediction) -> None:
        """The same image read at another operating point: only the caption can change."""
        self.result = result
        self.redraw()

    def clear(self, text: str = "") -> None:
        """An empty canvas (with ``text``); a picture still being drawn is dropped."""
        self.view = self.result = self.camera = self.full_size = None
        self._requested += 1
        self._drawn = self._requested
        self.canvas.delete("all")
        self.caption.configure(text="")
        if text:
            w, h = self.canvas_size()
            self.canvas.create_text(w // 2, h // 2, text=text, fill="#e0e0e0", width=max(100, w - 40))

    @property
    def show_boxes(self) -> bool:
        return self.boxes_apply and self.boxes_var.get()

    @property
    def picture_current(self) -> bool:
        """Whether the canvas shows the latest picture asked for (tests wait on this)."""
        return self._redraw_job is None and self._drawn == self._requested

    def look(self) -> Look:
        """How the picture is drawn now: window, heatmap, boxes, opacity. A heatmap at opacity 0 is
        hidden (the caption and an exported overlay's band described one that was not drawn)."""
        return Look(
            level=self.level_var.get(),
            width=self.width_var.get(),
            show_heatmap=self.heat_var.get() and self.opacity_var.get() > 0.005,
            show_boxes=self.show_boxes,
            opacity=self.opacity_var.get(),
        )

    # ---- drawing -------------------------------------------------------------------------------------
    def canvas_size(self) -> tuple[int, int]:
        return max(1, self.canvas.winfo_width()), max(1, self.canvas.winfo_height())

    def redraw(self) -> None:
        """Draw again once the loop is idle (slider moves and drags come faster than frames)."""
        if self._redraw_job is None:
            self._redraw_job = self.root.after_idle(self._draw)

    def _draw(self) -> None:
        """Ask the renderer for the picture of the current state; :meth:`rendered` puts it up."""
        self._redraw_job = None
        view, result = self.view, self.result
        if view is None or result is None:
            return
        canvas = self.canvas_size()
        camera = self.camera or fit_zoom(view.pixels.shape, canvas)
        look = self.look()
        self._requested += 1
        self.renderer.request(RenderRequest(self._requested, view, canvas, camera, look))
        caption = overlay_caption(
            card_for(result), view, show_heatmap=look.show_heatmap, show_boxes=look.show_boxes
        )
        h, w = view.pixels.shape
        size = f"{w} x {h} pixels"
        if self.full_size is not None:
            full_h, full_w = self.full_size
            aspect = result.metadata.pixel_aspect
            how = ["at the pixels' true shape"] if aspect != 1.0 else []
            how += ["reduced"] if w < true_shape(self.full_size, aspect)[1] else []
            size = f"{full_w} x {full_h} pixels (shown {' and '.join(how)} to {w} x {h})"
        of_file = " of the file's own window" if result.metadata.source_format == "dicom" else ""
        self.caption.configure(  # the zoom in image pixels: 100% is one image pixel per screen pixel
            text=f"{caption}. {size}, zoom {camera.zoom * self.scale * 100:.0f}%, "
            f"window level {look.level:.2f} width {look.width:.2f}{of_file} {HINT}"
        )

    def rendered(self, event: Rendered) -> bool:
        """Put a finished picture up; False when a newer one is already there."""
        if event.number <= self._drawn:
            return False
        self._drawn = event.number
        self.canvas.delete("all")
        if event.picture is not None and event.crop is not None:
            self._photo = ImageTk.PhotoImage(event.picture)
            self.canvas.create_image(event.crop.left, event.crop.top, anchor="nw", image=self._photo)
        return True

    # ---- controls --------------------------------------------------------------------------------------
    def set_heatmap(self, on: bool, opacity: float | None = None) -> None:
        self.heat_var.set(on)
        if opacity is not None:
            self.opacity_var.set(opacity)
        self.redraw()

    def toggle_heatmap(self) -> None:
        self.set_heatmap(not self.heat_var.get())

    def toggle_boxes(self) -> None:
        """Boxes on or off (nothing where the bundle draws none: the toggle is hidden)."""
        if self.boxes_apply:
            self.boxes_var.set(not self.boxes_var.get())
            self.redraw()

    def set_window(self, level: float, width: float) -> None:
        """Window/level on the displayed intensities (0.5, 1.0: as the file is read)."""
        self.level_var.set(min(max(level, 0.0), 1.0))
        self.width_var.set(min(max(width, 0.02), 1.0))
        self.redraw()

    def reset_window(self) -> None:
        self.set_window(0.5, 1.0)

    def fit(self) -> None:
        self.camera = None
        self.redraw()

    def _current_camera(self) -> Camera | None:
        if self.camera is None and self.view is not None:
            return fit_zoom(self.view.pixels.shape, self.canvas_size())
        return self.camera

    def zoom_to(self, zoom: float) -> None:
        camera = self._current_camera()
        if camera is not None:
            self.camera = camera.zoomed(zoom / camera.zoom)
            self.redraw()

    def actual_size(self) -> None:
        """One image pixel per screen pixel (a reduced view magnified back to the image's size)."""
        self.zoom_to(1.0 / self.scale)

    def zoom_in(self) -> None:
        self.zoom_by(ZOOM_STEP)

    def zoom_out(self) -> None:
        self.zoom_by(1 / ZOOM_STEP)

    def zoom_by(self, factor: float, at: tuple[int, int] | None = None) -> None:
        camera = self._current_camera()
        if camera is None:
            return
        about = camera.to_image(*at, self.canvas_size()) if at is not None else None
        self.camera = camera.zoomed(factor, about)
        self.redraw()

    def pan_left(self) -> None:
        self._pan(1, 0)

    def pan_right(self) -> None:
        self._pan(-1, 0)

    def pan_up(self) -> None:
        self._pan(0, 1)

    def pan_down(self) -> None:
        self._pan(0, -1)

    def _pan(self, x: int, y: int) -> None:
        """Bring more of the image's side (x, y: -1, 0 or 1) into view, as a drag would."""
        camera = self._current_camera()
        if camera is None:
            return
        w, h = self.canvas_size()
        self._pan_to(camera.panned(x * PAN_STEP * w, y * PAN_STEP * h))

    def _pan_to(self, camera: Camera) -> None:
        assert self.view is not None
        self.camera = camera.kept_on(self.view.pixels.shape, self.canvas_size())
        self.redraw()

    def _step(self, var: tk.DoubleVar, step: float, low: float) -> str:
        var.set(round(min(1.0, max(low, var.get() + step)), 4))
        self.redraw()
        return "break"  # not Tk's own step of 1 as well

    def _drag_start(self, kind: str, e: tk.Event) -> None:
        self.canvas.focus_set()
        self._drag = (kind, e.x, e.y, self.level_var.get(), self.width_var.get())

    def _drag_move(self, e: tk.Event) -> None:
        camera = self._current_camera()
        if self._drag is None or camera is None:
            return
        kind, x, y, level, width = self._drag
        if kind == "pan":
            self._drag = (kind, e.x, e.y, level, width)
            self._pan_to(camera.panned(e.x - x, e.y - y))
            return
        # right-drag: horizontal widens the window, vertical raises the level
        w, h = self.canvas_size()
        self.width_var.set(min(1.0, max(0.02, width + (e.x - x) / w)))
        self.level_var.set(min(1.0, max(0.0, level - (e.y - y) / h)))
        self.redraw()

    def close(self) -> None:
        self.renderer.close()


def pack_right(*widgets: tk.Widget, gap: int = 4) -> None:
    """Pack ``widgets``, made in the order they are seen (Tab goes through them in that order), at
    the right of their row, the last one rightmost, ``gap`` pixels apart."""
    for i, widget in enumerate(reversed(widgets)):
        widget.pack(side="right", padx=(0, gap if i else 0))
