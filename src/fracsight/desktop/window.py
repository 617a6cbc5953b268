"""The desktop window (plain Tk): results list, card, viewer, operating point, studies, exports.

Only drawing lives here. The texts, rows and files come from :mod:`fracsight.app.logic` (through
:class:`~fracsight.desktop.state.ReadingSession`); the model runs in a
:class:`~fracsight.desktop.worker.PredictionWorker` thread, whose events this window drains every
:data:`POLL_MS` with ``after``, so the event loop never waits for the model. New rows go into the
list together, at most every :data:`LIST_TICK_S`: each redisplay of the list costs the X server
round trips (Tk's text drawing waits for it), which on a loaded machine took tens of milliseconds.
"""

from __future__ import annotations

import logging
import queue
import time
import tkinter as tk
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from tkinter import filedialog, font, ttk
from typing import Any

from fracsight._files import write_output
from fracsight.app.logic import (
    COLOURS,
    ClassSummary,
    card_for,
    class_operating_point_text,
    failure_message,
    heads_text,
    operating_point_text,
    overlay_file_name,
    study_card_for,
    true_shape,
    verdict,
)
from fracsight.desktop.drop import enable_file_drop, paths_from_drop
from fracsight.desktop.flow import flow
from fracsight.desktop.listing import Listed, Listing, list_in_background
from fracsight.desktop.priority import MODEL_NICENESS
from fracsight.desktop.render import Rendered
from fracsight.desktop.shortcuts import NOTE, Tooltip, action_sequences, bind_shortcuts, help_rows, hint
from fracsight.desktop.state import ReadingSession, heading
from fracsight.desktop.timing import LatencyProbe, TimingLog
from fracsight.desktop.viewer import FOCUS_COLOUR, Viewer, pack_right
from fracsight.desktop.worker import (
    OVERLAY_FORMATS,
    BatchFinished,
    BatchStarted,
    Event,
    FileStamp,
    Item,
    ModelFailed,
    ModelLoaded,
    OverlaySaved,
    PredictionWorker,
    ResultReady,
    ViewFailed,
    ViewReady,
    file_stamp,
)
from fracsight.explain import overlay_words
from fracsight.inference import NOTICE, FailedPrediction, Prediction, StudyPrediction
from fracsight.io import IMAGE_SUFFIXES, names_sharing_a_stem

__all__ = ["NOTICE_BANNER", "POLL_MS", "DesktopApp"]

log = logging.getLogger("fracsight.desktop")

POLL_MS = 30  # how often the window drains the worker's events
POLL_BUDGET_S = 0.02  # the most one drain may take, so the loop stays free for input and drawing
LIST_TICK_S = 0.15  # new rows, progress and study verdict are updated together, at most this often
WINDOW = (1260, 860)  # the window's size where the screen has room for it
SCREEN_MARGIN = (20, 80)  # left on the screen for the window manager's frame, title bar and panels
BASE_SCALING = 96 / 72  # Tk's scaling (pixels per point) on a 96-dpi screen, where WINDOW was measured
CLOSE_WAIT_S = 60.0  # the most closing waits for the image in progress (a 50-megapixel overlay: seconds)
MIN_IMAGE = 200  # pixels of the image kept on screen however long the cards above it (HiDPI: more)
CARD_LINES = 3  # lines of the cards kept in view however small the window: title, decision, number
VIEW_CACHE = 6  # full-resolution views kept in memory (a long folder would not fit)
NOT_PREDICTED = "not predicted: the model could not be loaded"
NOTICE_BANNER = f"⚠  {NOTICE} Check every result against the images."
BANNER_BG, UNRELIABLE_BG, WARNING_FG = "#fff3cd", "#c62828", "#8a4b00"
STUDY_IID = "study:"  # a study's row is this and its name; an image's, its index in the session
START_TEXT = "radiographs (PNG, JPEG or DICOM) to begin."
COLUMN_WIDTHS = {"source": 150, "decision": 190, "fracture_probability": 140, "predicted_class": 120}
COLUMN_WIDTHS |= {"class_probability": 120, "warnings": 260, "error_code": 130, "error": 300}


@dataclass
class _Run:
    """Batches opened from idle to idle: the status line's last word is about all of them."""

    done: int  # results received before the run began
    failed: int = 0  # of those, files that could not be read
    asked: int = 0
    started: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    looked_in: list[Path] = field(default_factory=list)  # what was opened (named when nothing was found)
    empty_folders: list[Path] = field(default_factory=list)  # opened beside other inputs, no image in them
    again: int = 0  # results that replaced a row already listed
    after: int = 0  # batches numbered up to this are earlier runs' (a cancelled one's image in progress)
    told: str = ""  # the last line about something the user did meanwhile (an export, a drop)


class DesktopApp:
    """The window. Methods a test may call on the Tk thread, as the buttons do: :meth:`open_paths`,
    :meth:`select`, :meth:`cancel`, :meth:`set_operating_point`, :meth:`set_one_study`,
    :meth:`export_csv`, :meth:`export_json`, :meth:`export_overlay`, :meth:`next_result`,
    :meth:`previous_result`, :meth:`scroll_cards_down`, :meth:`scroll_cards_up`, :meth:`show_shortcuts`,
    and the :attr:`viewer`'s. The keyboard's shortcuts (:mod:`fracsight.desktop.shortcuts`) call these."""

    def __init__(
        self,
        root: tk.Tk,
        *,
        model: str | None = None,
        operating_point: str | None = None,
        paths: Sequence[Path] = (),
        threads: int = 0,
        niceness: int = MODEL_NICENESS,
        timing: TimingLog | None = None,
        quit_when_done: bool = False,
    ) -> None:
        self.root = root
        self.events: queue.Queue[Event | Rendered | Listed] = queue.Queue()
        self.session = ReadingSession()
        self.worker = PredictionWorker(
            model, operating_point, self.events, threads=threads, niceness=niceness
        )
        self.timing = timing
        self.quit_when_done = quit_when_done
        self.niceness = niceness
        self.model_error: str | None = None
        self.closed = False
        self.shortcuts_window: tk.Toplevel | None = None
        self.card_window: tk.Toplevel | None = None  # the Model card window, once opened
        self.model_card: str | None = None  # read with the model (ModelLoaded)
        self.selected: int | None = None
        self.views: OrderedDict[int, ViewReady] = OrderedDict()
        self.studies: dict[str, StudyPrediction] = {}  # the study rows listed, by name
        self.running = 0  # openings not finished: being looked through, or their batch being predicted
        self.listings: deque[Listing] = deque()  # openings being looked through, in the order opened
        self._listed = 0  # openings so far (each listing's number)
        self._status_text = ""
        self.done = 0  # results received
        self.failed = 0  # of those, files that could not be read
        self._run = _Run(done=0)  # from idle to idle, over every batch opened meanwhile
        # an export refused because its files changed ("CSV", "JSON", "overlay"): said again in the
        # status line that follows, which buried "Not saved" under "Done" within a second
        self.not_exported: str | None = None
        self._first_result = self._first_view = False
        self._unlisted: list[int] = []  # results received and not yet in the list
        self._queued: set[int] = set()  # files given to the worker and not predicted yet
        self._last_batch = 0  # the number of the batch submitted last
        self._last_row = -1  # the latest opened file with a row
        self._listed_at = 0.0  # when rows last went into the list (perf_counter)
        self._probe_from = 0  # the latency probe's first sample of the batch in progress
        self._found_nothing: str | None = None  # why folders opened gave no file (kept past the load)
        self.probe = LatencyProbe(root) if timing is not None else None
        self._build()
        # drag and drop where Tk can load tkdnd; the file dialogs otherwise (and always)
        self.drop_enabled = enable_file_drop(root, self.dropped)
        if self.drop_enabled:
            self.card_title.configure(text=f"Open or drop {START_TEXT}")
        self.worker.start()
        if paths:
            self.open_paths(paths)
        root.protocol("WM_DELETE_WINDOW", self.close)
        root.report_callback_exception = self._callback_failed  # type: ignore[method-assign]
        root.after(POLL_MS, self._poll)
        if self.probe is not None:
            self.probe.start()

    # ---- layout --------------------------------------------------------------------------------------
    def _build(self) -> None:
        root = self.root
        root.title("fracsight")
        # never taller or wider than the screen (less room for the title bar and a taskbar): on a
        # 1280 x 800 laptop a fixed 860 pixels hid the model's operating point at the bottom
        # on a HiDPI screen (Tk scaling 2.0 and more) the fonts and controls grow: so does the window,
        # or the toolbar cut *Model card…* off and the image had no room left under the card
        grow = self.grow = max(1.0, float(root.tk.call("tk", "scaling")) / BASE_SCALING)
        width = max(640, min(round(WINDOW[0] * grow), root.winfo_screenwidth() - SCREEN_MARGIN[0]))
        height = max(480, min(round(WINDOW[1] * grow), root.winfo_screenheight() - SCREEN_MARGIN[1]))
        root.geometry(f"{width}x{height}")
        root.minsize(min(round(900 * grow), width), min(round(600 * grow), height))
        style = ttk.Style(root)
        if style.theme_use() == "default" and "clam" in style.theme_names():
            style.theme_use("clam")  # X11's default theme looks dated; Windows and macOS keep theirs
            style.configure("Horizontal.TProgressbar", background=FOCUS_COLOUR)  # clam's is near its trough
            # the list's selection brighter while the list has the keyboard: clam's looks the same
            # either way, and a reader using only the keys could not tell where they act
            style.map("Treeview", background=[("selected", "focus", FOCUS_COLOUR), ("selected", "#4a6984")])
            # a slider with the keyboard showed nothing: its handle takes the focus colour
            style.map("Horizontal.TScale", background=[("focus", FOCUS_COLOUR)])
        # Enter presses the focused button or box, as Space does (X11's ttk answers Space only);
        # a Tcl script, as Tk's own file dialogs' buttons have this class too and tkinter hands
        # their events over with the widget as a name, not an object
        for widget_class in ("TButton", "TCheckbutton"):
            for key in ("<Key-Return>", "<Key-KP_Enter>"):
                root.bind_class(widget_class, key, "%W invoke; break")
        base = font.nametofont("TkDefaultFont")
        self.font_bold = base.copy()
        self.font_bold.configure(weight="bold")
        self.font_headline = base.copy()
        self.font_headline.configure(size=max(14, int(base.cget("size")) + 6), weight="bold")
        # the list's rows as tall as a line of its font: a fixed row height let the lines of a
        # larger font (Tk scaling 2.0) overlap and hide each other
        row = max(
            int(style.lookup("Treeview", "rowheight") or 0), base.metrics("linespace") + round(4 * grow)
        )
        style.configure("Treeview", rowheight=row)

        # the notice: first, outside every pane and scroll area, so it is never hidden
        self.notice = tk.Label(
            root,
            text=NOTICE_BANNER,
            bg=BANNER_BG,
            fg="#3d2c00",
            font=self.font_bold,
            anchor="w",
            justify="left",
            padx=8,
            pady=6,
        )
        self.notice.pack(side="top", fill="x")
        wrap_at_width(self.notice, self.notice, margin=16)  # whole, however narrow: it is the notice

        # in groups that wrap onto a second row where one is too narrow (large fonts on a small screen)
        bar = ttk.Frame(root)
        bar.pack(side="top", fill="x")
        files = ttk.Frame(bar)
        open_files = ttk.Button(files, text="Open files…", command=self.ask_files)
        open_files.pack(side="left")
        open_folder = ttk.Button(files, text="Open folder…", command=self.ask_folder)
        open_folder.pack(side="left", padx=(4, 0))
        self.cancel_button = ttk.Button(files, text="Cancel", command=self.cancel, state="disabled")
        self.cancel_button.pack(side="left", padx=(4, 0))
        op_frame = ttk.Frame(bar)  # filled once the model is loaded, if it has operating points
        self.op_label = ttk.Label(op_frame, text="Operating point")
        self.op_var = tk.StringVar()
        self.op_box = ttk.Combobox(op_frame, textvariable=self.op_var, state="readonly", width=14)
        self.op_box.bind("<<ComboboxSelected>>", lambda _e: self._operating_point_chosen())
        self.study_var = tk.BooleanVar(value=False)
        study = ttk.Checkbutton(
            bar,
            text="These images are one study",
            variable=self.study_var,
            command=lambda: self.set_one_study(self.study_var.get()),
        )
        help_buttons = ttk.Frame(bar)
        pack_right(
            ttk.Button(help_buttons, text="Shortcuts (F1)", command=self.show_shortcuts),
            ttk.Button(help_buttons, text="Model card…", command=self.show_model_card),
        )
        flow(bar, (files, op_frame, study, help_buttons))

        prog = ttk.Frame(root, padding=(6, 0, 6, 4))
        prog.pack(side="top", fill="x")
        self.progress = ttk.Progressbar(prog, mode="determinate", length=260)
        self.progress.pack(side="left")
        export_csv = ttk.Button(prog, text="Export CSV…", command=self.export_csv)
        pack_right(
            export_csv,
            ttk.Button(prog, text="Export JSON…", command=self.export_json),
            ttk.Button(prog, text="Export overlay…", command=self.export_overlay),
        )
        # packed after the buttons, so that a long line (a saved file's path) wraps in the room left
        # instead of pushing Export CSV… and Export JSON… off the window
        self.status = ttk.Label(prog, text="Loading the model …", justify="left")
        self.status.pack(side="left", fill="x", expand=True, padx=8)
        wrap_at_width(self.status, self.status)
        self.toolbars = (bar, prog)
        for widget, action in (
            (open_files, "ask_files"),
            (open_folder, "ask_folder"),
            (self.cancel_button, "cancel"),
            (export_csv, "export_csv"),
        ):
            Tooltip(widget, hint(action))
        self.error_label = tk.Label(
            root, text="", fg="white", bg=UNRELIABLE_BG, anchor="w", justify="left", padx=8, pady=4
        )
        wrap_at_width(self.error_label, self.error_label, margin=16)

        # the model, its heads and operating points: at the bottom, always visible
        model = ttk.Frame(root, padding=(8, 4))
        model.pack(side="bottom", fill="x")
        self.model_text = ttk.Label(model, text="", justify="left")
        self.model_text.pack(side="left", fill="x")
        wrap_at_width(model, self.model_text, margin=16)

        panes = ttk.PanedWindow(root, orient="horizontal")
        panes.pack(side="top", fill="both", expand=True, padx=6, pady=(0, 4))
        left = ttk.Frame(panes)
        right = ttk.Frame(panes)
        panes.add(left, weight=2)
        panes.add(right, weight=3)
        # the list gets about 40% of the width once the window is on screen
        panes.bind("<Map>", lambda _e: panes.sashpos(0, max(320, int(panes.winfo_width() * 0.4))), add="+")
        self._build_list(left)
        cards = self._build_card_area(right)
        self._build_card(cards)
        self.viewer = Viewer(right, self.events)
        # the card says whether the boxes it describes are drawn
        self.viewer.boxes_var.trace_add("write", lambda *_: self._fill_card())
        bind_shortcuts(root, self)
        # the list's own Page Up and Page Down (its class binding) would page it as well
        for action in ("scroll_cards_down", "scroll_cards_up"):
            for sequence in action_sequences(action):
                self.tree.bind(sequence, lambda _e, a=action: getattr(self, a)() or "break")

    def _build_list(self, parent: ttk.Frame) -> None:
        self.tree = ttk.Treeview(parent, show="headings", selectmode="browse")
        ys = ttk.Scrollbar(parent, orient="vertical", command=self.tree.yview)
        xs = ttk.Scrollbar(parent, orient="horizontal", command=self.tree.xview)
        self.tree.configure(yscrollcommand=ys.set, xscrollcommand=xs.set)
        self.tree.grid(row=0, column=0, sticky="nsew")
        ys.grid(row=0, column=1, sticky="ns")
        xs.grid(row=1, column=0, sticky="ew")
        parent.rowconfigure(0, weight=1)
        parent.columnconfigure(0, weight=1)
        for name, colour in COLOURS.items():
            self.tree.tag_configure(name, foreground=colour)
        self.tree.tag_configure("failed", foreground=COLOURS["suspected"], background="#fdecea")
        self.tree.tag_configure("study", font=self.font_bold)
        self.tree.bind("<<TreeviewSelect>>", self._on_tree_select)

    def _build_card_area(self, parent: ttk.Frame) -> ttk.Frame:
        """The frame the study card and the card go in: above the viewer, as tall as they are while
        that leaves the image :data:`MIN_IMAGE` pixels, and scrolled beyond (a study card and a
        card with five warnings left a 1280 x 800 laptop no image at all, a smaller window not even
        the viewer's controls)."""
        area = ttk.Frame(parent)
        area.pack(side="top", fill="x")
        background = ttk.Style(parent).lookup("TFrame", "background") or None
        canvas = tk.Canvas(area, height=1, highlightthickness=0, borderwidth=0, background=background)
        scroll = ttk.Scrollbar(area, orient="vertical", command=canvas.yview)
        canvas.configure(yscrollcommand=scroll.set)
        canvas.pack(side="left", fill="x", expand=True)
        inner = ttk.Frame(canvas)
        item = canvas.create_window(0, 0, window=inner, anchor="nw")
        self.card_area, self.card_scroll = canvas, scroll
        pending: list[str] = []

        def fit() -> None:
            pending.clear()
            canvas.itemconfigure(item, width=canvas.winfo_width())
            wanted = inner.winfo_reqheight()
            room = parent.winfo_height() - self.viewer.needs(round(MIN_IMAGE * self.grow))
            # the decision and its probability stay in view, from the image's room if need be: at
            # Tk scaling 2 on a 1280 x 800 screen the cards were 1 pixel high, nothing but a scrollbar
            least = min(wanted, CARD_LINES * self.font_bold.metrics("linespace"))
            height = max(1, least, min(wanted, room))
            if int(canvas.cget("height")) != height:
                canvas.configure(height=height)
            canvas.configure(scrollregion=(0, 0, 0, wanted))
            if wanted > height and not scroll.winfo_ismapped():
                scroll.pack(side="right", fill="y", before=canvas)
            elif wanted <= height and scroll.winfo_ismapped():
                scroll.pack_forget()
                canvas.yview_moveto(0)

        def later(_event: object = None) -> None:  # once, after the texts have wrapped
            if not pending:
                pending.append(self.root.after_idle(fit))

        def wheel(event: tk.Event) -> None:  # over the cards (the image's wheel zooms it)
            over = str(event.widget)
            if (over == str(canvas) or over.startswith(f"{canvas}.")) and scroll.winfo_ismapped():
                canvas.yview_scroll(-1 if event.num == 4 or event.delta > 0 else 1, "units")

        for widget in (inner, canvas, parent):
            widget.bind("<Configure>", later, add="+")
        for sequence in ("<Button-4>", "<Button-5>", "<MouseWheel>"):
            self.root.bind_all(sequence, wheel, add="+")
        return inner

    def _build_card(self, parent: ttk.Frame) -> None:
        self.study_frame = ttk.Frame(parent, padding=(8, 4), relief="groove")
        self.study_title = ttk.Label(self.study_frame, font=self.font_bold)
        self.study_headline = tk.Label(self.study_frame, font=self.font_headline, anchor="w", justify="left")
        self.study_lines = ttk.Label(self.study_frame, justify="left")
        wrap_at_width(self.study_frame, self.study_title, self.study_headline, self.study_lines, margin=20)
        for w in (self.study_title, self.study_headline, self.study_lines):
            w.pack(side="top", anchor="w")

        card = ttk.Frame(parent, padding=(8, 4))
        card.pack(side="top", fill="x")
        self.card_frame = card
        self.card_title = ttk.Label(card, text=f"Open {START_TEXT}", font=self.font_bold)
        self.card_title.pack(side="top", anchor="w")
        self.card_banner = tk.Label(
            card, fg="white", bg=UNRELIABLE_BG, justify="left", anchor="w", padx=6, pady=2
        )
        self.card_headline = tk.Label(card, font=self.font_headline, anchor="w", justify="left")
        self.card_headline.pack(side="top", anchor="w")
        self.card_lines = ttk.Label(card, justify="left")
        self.card_lines.pack(side="top", anchor="w")
        self.card_warnings = tk.Label(card, fg=WARNING_FG, justify="left", anchor="w")
        wrap_at_width(
            card, self.card_title, self.card_headline, self.card_lines, self.card_warnings, margin=16
        )
        wrap_at_width(card, self.card_banner, margin=28)

    # ---- opening files -------------------------------------------------------------------------------
    def _dialog(self, ask: Callable[..., Any], **options: object) -> Any:
        """A file dialog's answer; None when the window was closed while it was open (Tk's own
        dialogs, X11's, leave the window's close button working, and then fail on their return)."""
        try:
            return ask(parent=self.root, **options)
        except tk.TclError:
            if self.closed:
                return None
            raise

    def ask_files(self) -> None:
        patterns = open_patterns(str(self.root.tk.call("tk", "windowingsystem")))
        chosen = self._dialog(
            filedialog.askopenfilenames,
            title="Open radiographs",
            filetypes=[("Radiographs", patterns), ("All files (DICOM without an extension)", "*")],
        )
        if chosen:
            self.open_paths([Path(p) for p in chosen])

    def ask_folder(self) -> None:
        chosen = self._dialog(filedialog.askdirectory, title="Open a folder of radiographs", mustexist=True)
        if chosen:
            self.open_paths([Path(chosen)])

    def open_paths(self, paths: Sequence[Path]) -> Listing | None:
        """Look for the files of ``paths`` (folders expanded as ``fracsight predict`` does) on a
        thread, and queue them, after those opened before, once all are found: a file's name and
        place depend on the whole listing (sorted, each file once, same names told apart). Returns
        the listing (:attr:`Listing.queued` says how many files, once looked through); None when
        nothing can be predicted."""
        if self.model_error is not None:  # the worker has stopped: nothing queued would ever finish
            self._set_status("No model: nothing can be predicted.")
            return None
        if not self.running or self._run.cancelled:  # a new run: its end reports what it did
            self._run = _Run(done=self.done, failed=self.failed, after=self._last_batch)
        self._run.looked_in.extend(paths)
        self.running += 1
        self._listed += 1
        listing = Listing(self._listed, tuple(paths))
        self.listings.append(listing)
        list_in_background(listing, self.events, self.niceness)
        self.cancel_button.configure(state="normal")
        self._update_progress()
        return listing

    def dropped(self, items: Sequence[str]) -> Listing | None:
        """Files and folders dropped on the window (tkdnd's list of paths): opened as if chosen."""
        found, other = paths_from_drop(items)
        listing = self.open_paths(found) if found else None
        if other:
            what = "Skipped" if listing is not None else "Nothing to open"
            self._tell(f"{what} (not a file or folder here): {_some(other)}")
        return listing

    def cancel(self) -> None:
        """Stop looking for files and stop after the image in progress; the results so far stay."""
        if not self.running:
            return
        in_progress = self.worker.cancel()
        # the others are not predicted now: opened again, even before the batch ends, they are queued
        self._queued &= {in_progress}
        self._run.cancelled = True
        while self.listings:  # their threads end with their walk; what they find is not queued
            listing = self.listings.popleft()
            listing.cancelled, listing.queued = True, 0
            self.running -= 1
        if self.running:
            self._set_status(f"Cancelling after {self.done - self._run.done} of {self._run.asked} …")
        else:
            self._end_run()

    def _files_listed(self, event: Listed) -> None:
        """Queue the files of every opening looked through, in the order they were opened."""
        for listing in self.listings:
            if listing.number == event.number:
                listing.listed = event
        while self.listings and self.listings[0].listed is not None:
            self._queue_files(self.listings.popleft())

    def _queue_files(self, listing: Listing) -> None:
        listed = listing.listed
        assert listed is not None
        items = self.session.add(listed.files, listed.keys, pending=self._queued)
        self._run.empty_folders.extend(listed.empty_folders)
        self.session.opened_folders.extend(listed.folders)
        listing.queued, listing.indices = len(items), tuple(index for index, _, _ in items)
        # a study over all the images has no verdict now until these are read (the one before
        # stayed, as card and row, until their first result came)
        self._refresh_studies()
        if self.session.renamed:  # files of one name opened apart: their rows show their paths now
            self._refresh_rows()
        if self.model_error is not None:  # the model failed while the files were looked for
            self._not_predicted([index for index, _, _ in items if not self.tree.exists(str(index))])
            return
        if not items:
            self.running -= 1
            where = _some(map(str, listing.paths))
            if listed.error is not None:
                self._found_nothing = f"Could not look for images in {where}: {listed.error}"
            elif listed.files:
                self._found_nothing = f"Already open, unchanged since predicted: {where}."
            else:
                self._found_nothing = f"No image files found in {where}."
            self._set_status(self._found_nothing)
            if not self.running:
                self._end_run()
            return
        self._submit(items)
        self._update_progress()

    def _submit(self, items: Sequence[Item]) -> None:
        self._queued.update(index for index, _, _ in items)
        self._last_batch = self.worker.submit(items)
        self._run.asked += len(items)

    # ---- events from the worker ----------------------------------------------------------------------
    def _poll(self) -> None:
        deadline = time.perf_counter() + POLL_BUDGET_S
        try:
            while time.perf_counter() < deadline:
                try:
                    event = self.events.get_nowait()
                except queue.Empty:
                    break
                self._handle(event)
            if self._unlisted and time.perf_counter() - self._listed_at >= LIST_TICK_S:
                self._list_results()
            if self.listings:  # the seconds spent looking, so that a long listing is not a hung window
                self._show_running()
        except Exception:  # a drawing bug must not stop the loop: log it and carry on
            log.exception("while handling a worker event")
        if not self.closed:
            self.root.after(POLL_MS, self._poll)

    def _handle(self, event: Event) -> None:
        if isinstance(event, ModelLoaded):
            self._model_loaded(event)
        elif isinstance(event, ModelFailed):
            self._model_failed(event)
        elif isinstance(event, Listed):
            self._files_listed(event)
        elif isinstance(event, BatchStarted):
            self._probe_from = len(self.probe.samples) if self.probe is not None else 0
            self._update_progress()
        elif isinstance(event, ResultReady):
            self._result_ready(event)
        elif isinstance(event, BatchFinished):
            self._batch_finished(event)
        elif isinstance(event, ViewReady):
            self._view_ready(event)
        elif isinstance(event, ViewFailed):
            self._view_failed(event)
        elif isinstance(event, OverlaySaved):
            what = (
                f"Saved {event.target}"
                if event.error is None
                else f"Could not save {event.target.name}: {event.error}"  # as Export CSV says it
            )
            self._tell(what)
        elif isinstance(event, Rendered) and self.viewer.rendered(event) and not self._first_view:
            self._first_view = True
            if self.timing is not None:
                self.root.update_idletasks()
                self.timing.write("first_view")
            self._maybe_quit()

    def _view_ready(self, event: ViewReady) -> None:
        if event.stamp != self.session.stamps.get(event.index):  # the file is not the one predicted
            self._replace_result(event.index, event.result, event.stamp)
        self.views[event.index] = event
        self.views.move_to_end(event.index)
        while len(self.views) > VIEW_CACHE:
            self.views.popitem(last=False)
        if event.index != self.selected:
            return
        result = self.session.result(event.index)
        if isinstance(result, Prediction):
            self.viewer.show(event.view, result, event.full_size)

    def _view_failed(self, event: ViewFailed) -> None:
        if event.stamp != self.session.stamps.get(event.index):  # changed on disk, and now unreadable
            self._replace_result(event.index, event.failure, event.stamp)
        if event.index == self.selected:
            f = event.failure
            self.viewer.clear(f"The image could not be shown ({f.error_code}): {f.error}")

    def _replace_result(
        self, index: int, result: Prediction | FailedPrediction, stamp: FileStamp | None
    ) -> None:
        """The file changed on disk since its row was made, or could not be read then: the row, card
        and study become the file's as it is now (what the viewer then shows), never the old result
        next to the new image."""
        changed = stamp != self.session.stamps.get(index)
        self.session.record(index, result, stamp)
        self.views.pop(index, None)
        shown = self.session.result(index)
        assert shown is not None
        if self.tree.exists(str(index)):
            self.tree.item(str(index), values=self.session.list_row(shown), tags=_tags(shown))
        self._refresh_studies()
        if index == self.selected:
            self._fill_card()
        name = self.session.names[index]
        why = "changed on disk since it was predicted" if changed else "was read again"
        note = self._not_exported_note() if self.not_exported == "overlay" else ""  # a run's: at its end
        self._set_status(f"{name} {why}: its row is the file as it is now.{note}")

    def _model_loaded(self, event: ModelLoaded) -> None:
        predictor = event.predictor
        self.model_card = event.card
        self.session.set_predictor(predictor)
        columns = self.session.list_columns()
        self.tree.configure(columns=columns)
        for c in columns:
            self.tree.heading(c, text=heading(c), anchor="w")
            width = round(COLUMN_WIDTHS.get(c, 90) * self.grow)
            self.tree.column(c, width=width, minwidth=50, stretch=False, anchor="w")
        names = self.session.operating_point_names
        if names:
            self.op_box.configure(values=names)
            self.op_var.set(self.session.operating_point.name)
            self.op_label.pack(side="left")
            self.op_box.pack(side="left", padx=(4, 0))
        if not predictor.has_fracture_head:
            self.viewer.set_boxes_apply(False)
        self._show_model_text()
        if self.timing is not None:
            self.timing.write("model_loaded", seconds=round(event.seconds, 3))
        if self.running and not self._run.asked:
            self._set_status(f"Model loaded in {event.seconds:.1f} s. {self._looking_text()}")
        elif self.running:
            self._set_status(f"Model loaded in {event.seconds:.1f} s; predicting …")
        else:
            verb = "Open or drop" if self.drop_enabled else "Open"
            # a folder given at start with no image in it: that is what the reader must see
            then = self._found_nothing or f"{verb} radiographs to begin."
            self._set_status(f"Model loaded in {event.seconds:.1f} s. {then}")

    def _model_failed(self, event: ModelFailed) -> None:
        """Said everywhere the reader looks: the red line, the card, the files' rows, the status."""
        self.model_error = f"The model could not be loaded ({event.code}): {event.message}"
        self.error_label.configure(text=self.model_error)
        self.error_label.pack(side="top", fill="x", after=self.notice)
        self.running = 0
        self.cancel_button.configure(state="disabled")
        self.card_title.configure(text="The model could not be loaded")
        self.card_headline.configure(text="Nothing can be predicted", fg=COLOURS["suspected"])
        self.card_lines.configure(
            text=f"{self.model_error}\nStart fracsight desktop again with a bundle that loads "
            "(--model: a bundle folder, .zip or packaged name)."
        )
        self.tree.configure(columns=("source", "decision"))
        for column in ("source", "decision"):
            self.tree.heading(column, text=heading(column), anchor="w")
            self.tree.column(column, width=round((COLUMN_WIDTHS[column] + 150) * self.grow), anchor="w")
        self._not_predicted([i for i in range(len(self.session.paths)) if i not in self.session.results])

    def _not_predicted(self, indices: Sequence[int]) -> None:
        """A row for each of these files, saying why it has no result (the model failed to load)."""
        for i in indices:
            self.tree.insert(
                "", "end", iid=str(i), values=(self.session.names[i], NOT_PREDICTED), tags=("failed",)
            )
        n = len(self.tree.get_children())
        what = f"{n} file{'s' if n > 1 else ''} not predicted" if n else "nothing can be predicted"
        self._set_status(f"No model: {what}.")

    def _result_ready(self, event: ResultReady) -> None:
        again = event.index in self.session.results and self.tree.exists(str(event.index))
        self._queued.discard(event.index)
        self.done += 1
        self.failed += isinstance(event.result, FailedPrediction)
        if event.batch <= self._run.after:  # a cancelled run's last image: not this run's
            self._run.done += 1
            self._run.failed += isinstance(event.result, FailedPrediction)
        if again:  # a file predicted again (changed on disk, opened again): its row, card and view
            self._replace_result(event.index, event.result, event.stamp)
            if event.index == self.selected:
                self._show(event.index)
            if event.batch > self._run.after:
                self._run.again += 1
            self._update_progress()  # in a run, the line says how far it is (a folder opened again)
            return
        if event.index not in self.session.results:  # else it is waiting for the list already
            self._unlisted.append(event.index)
        self.session.record(event.index, event.result, event.stamp)
        if not self._first_result:  # the first one at once; the others with the next tick's
            self._list_results()

    @property
    def list_current(self) -> bool:
        """Whether every result received is in the list (tests wait on this)."""
        return not self._unlisted

    def _list_results(self) -> None:
        """Put the results received since the last time into the list, with the progress: one redisplay."""
        indices, self._unlisted = self._unlisted, []
        self._listed_at = time.perf_counter()
        if not indices:
            return
        for index in indices:
            result = self.session.result(index)
            assert result is not None
            self.tree.insert(
                "",
                self._row_place(index),
                iid=str(index),
                values=self.session.list_row(result),
                tags=_tags(result),
            )
            self._last_row = max(self._last_row, index)
        self._refresh_studies()
        self._update_progress()
        if self.selected is None:
            self.select(indices[0])
        if not self._first_result:
            self._first_result = True
            if self.timing is not None:
                self.root.update_idletasks()  # on screen, not only in the tree
                self.timing.write("first_result", source=self.session.results[indices[0]].source)

    def _row_place(self, index: int) -> int | str:
        """Where a file's row goes: the list is in the order the files were opened, as the exports
        are; a file a cancel left without a result and opened again goes back to its place, above
        the first row opened after it (and above that row's study, right above it)."""
        if index > self._last_row:
            return "end"
        rows = self.tree.get_children()
        for place, iid in enumerate(rows):
            if not _is_study(iid) and int(iid) > index:
                return place - 1 if place and _is_study(rows[place - 1]) else place
        return "end"

    def _batch_finished(self, event: BatchFinished) -> None:
        self._list_results()
        self.running = max(0, self.running - 1)
        if event.cancelled and event.batch > self._run.after:
            self._run.cancelled = True
        self._update_progress()
        if not self.running:  # the run is over: what all its batches did (cancel stops them all)
            self._end_run()
        if self.timing is not None:
            latency = self.probe.summary(self._probe_from) if self.probe is not None else {}
            self.timing.write(
                "batch_finished",
                done=event.done,
                total=event.total,
                seconds=round(event.seconds, 3),
                latency=latency,
            )
        self._maybe_quit()

    def _maybe_quit(self) -> None:
        predicted = any(isinstance(r, Prediction) for r in self.session.results.values())
        if self.quit_when_done and not self.running and (self._first_view or not predicted):
            self.root.after(50, self.close)

    # ---- selection and the card ----------------------------------------------------------------------
    def _on_tree_select(self, _event: object) -> None:
        chosen = self.tree.selection()
        if not chosen:
            return
        if _is_study(chosen[0]):
            # the study's own first view under its verdict: another patient's image and card stayed
            # below it, and Next image and Export overlay went on from that image
            views = [
                i for i in self.session.views_of(chosen[0][len(STUDY_IID) :]) if self.tree.exists(str(i))
            ]
            if views and self.selected not in views:
                self._show(views[0])
            else:
                self._show_study_card()
        elif int(chosen[0]) == self.selected:
            self._show_study_card()
        else:
            self._show(int(chosen[0]))

    def select(self, index: int) -> None:
        """Select a row of the list (as a click would)."""
        if self._unlisted:
            self._list_results()
        self.tree.selection_set(str(index))
        self.tree.focus(str(index))  # where the list's own arrow keys go on from
        self.tree.see(str(index))
        self._show(index)

    def next_result(self) -> None:
        self._step(1)

    def previous_result(self) -> None:
        self._step(-1)

    def _step(self, by: int) -> None:
        """Select the image ``by`` rows down the list from the one shown (not the study's row)."""
        if self._unlisted:
            self._list_results()
        rows = [iid for iid in self.tree.get_children() if not _is_study(iid)]
        if not rows:
            return
        shown = str(self.selected)
        at = rows.index(shown) + by if shown in rows else 0
        chosen = rows[min(max(at, 0), len(rows) - 1)]
        if chosen != shown:
            self.select(int(chosen))

    def _show(self, index: int) -> None:
        self.selected = index
        self.card_area.yview_moveto(0)  # a new card is read from its top
        self._fill_card()
        self._show_study_card()
        result = self.session.result(index)
        if isinstance(result, Prediction):
            if (shown := self._cached_view(index)) is not None:
                self.views.move_to_end(index)
                self.viewer.show(shown.view, result, shown.full_size)
            else:
                self.viewer.clear("Loading the image …")
                self.worker.request_view(index, self.session.paths[index], self.session.names[index])
        elif result is not None and file_stamp(self.session.paths[index]) != self.session.stamps.get(index):
            # a file that could not be read and has changed since (a copy that had not finished, an
            # empty file written since): read again, its row becomes the file as it is now
            self.viewer.clear("Reading the file again …")
            self.worker.request_view(index, self.session.paths[index], self.session.names[index])
        else:
            self.viewer.clear()

    def _cached_view(self, index: int) -> ViewReady | None:
        """The kept view of the file, unless the file changed on disk since it was read: a kept view
        was shown, with its old result, after the file was overwritten (read again, it becomes the
        new file's row)."""
        view = self.views.get(index)
        if view is not None and file_stamp(self.session.paths[index]) != view.stamp:
            del self.views[index]
            return None
        return view

    def _fill_card(self) -> None:
        result = None if self.selected is None else self.session.result(self.selected)
        self.card_banner.pack_forget()
        if result is None:
            return
        if isinstance(result, FailedPrediction):
            self.card_title.configure(text=result.source)
            self.card_headline.configure(text="This file could not be read", fg=COLOURS["suspected"])
            self.card_lines.configure(text=f"Error code {result.error_code}: {failure_message(result)}")
            self._show_warnings(())
            return
        card = card_for(result, show_boxes=self.viewer.show_boxes)
        self.card_title.configure(text=card.title)
        if card.unreliable:
            self.card_banner.configure(text=card.unreliable)
            self.card_banner.pack(side="top", anchor="w", fill="x", after=self.card_title)
        self.card_headline.configure(text=card.verdict.headline, fg=card.verdict.colour)
        self.card_lines.configure(text="\n".join([*card.lines, *_class_lines(card.classification)]))
        self._show_warnings(card.warnings)

    def _show_warnings(self, warnings: Sequence[str]) -> None:
        if warnings:
            self.card_warnings.configure(text="\n".join(f"⚠ {w}" for w in warnings))
            self.card_warnings.pack(side="top", anchor="w", after=self.card_lines)
        else:
            self.card_warnings.pack_forget()

    def _refresh_studies(self) -> None:
        """The study rows, each right above its first view, and the study card of the selection."""
        listed, self.studies = self.studies, {study.study: study for study in self.session.studies()}
        for iid in self.tree.get_children():
            if _is_study(iid) and iid[len(STUDY_IID) :] not in self.studies:
                self.tree.delete(iid)
        if not self.tree.selection() and self.selected is not None and self.tree.exists(str(self.selected)):
            # the study row selected went (one study unticked): the image shown is selected instead
            # of nothing, where the arrow keys and a screen reader had no row to go on from
            self.tree.selection_set(str(self.selected))
            self.tree.focus(str(self.selected))
        for name, study in self.studies.items():
            iid = STUDY_IID + name
            if not self.tree.exists(iid):
                views = [str(i) for i in self.session.views_of(name) if self.tree.exists(str(i))]
                place = self.tree.index(views[0]) if views else "end"
                self.tree.insert("", place, iid=iid)  # it stays there: new rows go at the end
            elif listed.get(name) is study:  # unchanged (the session made it once)
                continue
            self.tree.item(iid, values=self.session.list_row(study), tags=(*_tags(study), "study"))
        self._show_study_card()

    def _show_study_card(self) -> None:
        """The verdict of the study whose row is selected, or else of the selected image's study."""
        chosen = self.tree.selection()
        if chosen and _is_study(chosen[0]):
            name: str | None = chosen[0][len(STUDY_IID) :]
        else:
            name = None if self.selected is None else self.session.study_of(self.selected)
        study = self.studies.get(name) if name is not None else None
        if study is None:
            self.study_frame.pack_forget()
            return
        card = study_card_for(study)
        self.study_title.configure(text=card.title)
        self.study_headline.configure(text=card.verdict.headline, fg=card.verdict.colour)
        extra = [card.unreliable] if card.unreliable else []
        # the class note too: a type named under a "no fracture" verdict said nothing of its caveat
        lines = [*card.lines, *_class_lines(card.classification), card.how, *card.cautions, *extra]
        self.study_lines.configure(text="\n".join(lines))
        self.study_frame.pack(side="top", fill="x", padx=8, pady=(4, 0), before=self.card_frame)

    def _refresh_rows(self) -> None:
        self._list_results()
        for index, result in self.session.shown():
            self.tree.item(str(index), values=self.session.list_row(result), tags=_tags(result))
        self._refresh_studies()
        self._fill_card()
        self._show_model_text()
        shown = None if self.selected is None else self.session.result(self.selected)
        if isinstance(shown, Prediction) and self.viewer.view is not None:
            self.viewer.update_result(shown)

    def _show_model_text(self) -> None:
        predictor = self.session.predictor
        if predictor is None:
            return
        lines = [f"Model: {predictor.name}. {heads_text(predictor.spec)}"]
        if self.session.operating_point is not None:
            op = self.session.operating_point
            lines.append(f"Operating point {op.name}: {operating_point_text(op)}")
        class_rule = class_operating_point_text(predictor.spec)
        if class_rule:
            lines.append(class_rule)
        self.model_text.configure(text="\n".join(lines))

    # ---- controls a test may call --------------------------------------------------------------------
    def _operating_point_chosen(self) -> None:
        """A choice in the combobox: the keys go back to the list (the combobox's own would open it
        again), once Tk has given the focus back to the combobox after its drop-down."""
        self.set_operating_point(self.op_var.get())
        self.op_box.selection_clear()
        self.root.after_idle(self.tree.focus_set)

    def set_operating_point(self, name: str) -> None:
        self.session.choose_operating_point(name)
        self.op_var.set(name)
        self._refresh_rows()

    def scroll_cards_down(self) -> None:
        """A page down the cards above the image, when they are taller than their room (the wheel
        over them did it; the keys did not)."""
        if self.card_scroll.winfo_ismapped():
            self.card_area.yview_scroll(1, "pages")

    def scroll_cards_up(self) -> None:
        if self.card_scroll.winfo_ismapped():
            self.card_area.yview_scroll(-1, "pages")

    def set_one_study(self, on: bool) -> None:
        self.session.one_study = on
        self.study_var.set(on)
        self._refresh_studies()

    # ---- exports (only when asked; the save dialog asks before replacing a file) ---------------------
    def _ask_save(self, title: str, name: str, suffix: str, kind: str) -> Path | None:
        chosen = self._dialog(
            filedialog.asksaveasfilename,
            title=title,
            initialfile=name,
            defaultextension=suffix,
            filetypes=[(kind, f"*{suffix}")],
        )
        return Path(chosen) if chosen else None

    def _save_target(self, path: Path | None, title: str, name: str, suffix: str, kind: str) -> Path | None:
        """``path``, or the file the save dialog gives; None when none is given or it is one of the
        opened images (the dialog's "replace?" would let an export overwrite a radiograph)."""
        path = path or self._ask_save(title, name, suffix, kind)
        if path is not None and self.session.is_opened(path):
            self._tell(f"Not saved: {path.name} is one of the opened images; choose another file.")
            return None
        return path

    def _write(self, path: Path, text: str) -> bool:
        try:
            write_output(path, lambda target: target.write_text(text, encoding="utf-8"))
        except OSError as e:
            self._tell(f"Could not save {path.name}: {e.strerror or e}")
            return False
        self._tell(f"Saved {path}")
        return True

    def _not_exported_note(self) -> str:
        kind, self.not_exported = self.not_exported, None
        return f" The {kind} was not exported: export it again." if kind else ""

    def _predicting_changed_again(self, kind: str) -> bool:
        """Whether files changed on disk since they were predicted (a re-export under the same
        name): then they are predicted again, in their rows, and nothing is saved now; an export
        held their old results, which ``fracsight predict`` on the same files no longer gives."""
        self._list_results()
        changed = self.session.changed_on_disk()
        if not changed:
            return False
        if not self.running:
            self._run = _Run(done=self.done, failed=self.failed)
        self.running += 1
        self._submit([(i, self.session.paths[i], self.session.names[i]) for i in changed])
        self.cancel_button.configure(state="normal")
        self._update_progress()
        names = _some(self.session.names[i] for i in changed)
        self.not_exported = kind
        self._set_status(
            f"Not saved: {names} changed on disk since predicted; predicting again, then export again."
        )
        return True

    def export_csv(self, path: Path | None = None) -> Path | None:
        """The results as ``fracsight predict --csv --all-classes`` writes them."""
        if not self.session.results or self.session.predictor is None:
            self._tell("Nothing to export yet.")
            return None
        if self._predicting_changed_again("CSV"):
            return None
        path = self._save_target(path, "Export results as CSV", "fracsight-results.csv", ".csv", "CSV")
        if path is None:
            return None
        self._list_results()  # the file holds the rows the list shows: none received and not yet listed
        return path if self._write(path, self.session.csv_text()) else None

    def export_json(self, path: Path | None = None) -> Path | None:
        """The results as ``fracsight predict --json`` prints them."""
        if not self.session.results or self.session.predictor is None:
            self._tell("Nothing to export yet.")
            return None
        if self._predicting_changed_again("JSON"):
            return None
        path = self._save_target(path, "Export results as JSON", "fracsight-results.json", ".json", "JSON")
        if path is None:
            return None
        self._list_results()
        return path if self._write(path, self.session.json_text()) else None

    def export_overlay(self, path: Path | None = None) -> Path | None:
        """The selected radiograph with the heatmap and boxes as shown, at full resolution (PNG, or
        JPEG for a .jpg name), written by the worker (the status line says when): from the view on
        the screen, or, when that is reduced (an image over DISPLAY_MAX_SIDE), from the file read
        again."""
        index = self.selected
        if self.viewer.view is None or index is None:
            self._tell("Select a predicted image first.")
            return None
        if file_stamp(self.session.paths[index]) != self.session.stamps.get(index):
            # the picture and card shown are of the file as it was: read it again, save nothing
            name = self.session.names[index]
            self._set_status(f"Not saved: {name} changed on disk since it was predicted; reading it again …")
            self.not_exported = "overlay"
            self._show(index)
            return None
        # named with its folders, as the web app names it: two patients' image1.png got one name
        names = self.session.names
        shared = names_sharing_a_stem(names)  # wrist.jpg beside wrist.png: two names
        suggested = overlay_file_name(names[index], keep_suffix=names[index] in shared)
        path = self._save_target(path, "Export the overlay", suggested, ".png", "PNG image")
        if path is None:
            return None
        if path.suffix.lower() not in OVERLAY_FORMATS:  # ov.jpg was a PNG under a JPEG's name
            self._tell(f"Not saved: {path.name}: an overlay is a .png or .jpg: choose such a name.")
            return None
        if self.session.holds_opened(path.parent):  # the save dialog opens where the images were
            self._tell(
                f"Not saved: {path.parent} holds radiographs opened here, and the next prediction of it "
                "would read the overlay too; choose another folder."
            )
            return None
        shown = self.session.result(index)  # at the chosen operating point, as the card says
        viewer, name = self.viewer, self.session.names[index]
        look = viewer.look()
        words = (
            overlay_words(shown, boxes_drawn=look.show_boxes) if isinstance(shown, Prediction) else ((), None)
        )
        h, w = viewer.view.pixels.shape
        if viewer.full_size is not None:  # the file's size at its pixels' true shape, as written
            aspect = shown.metadata.pixel_aspect if isinstance(shown, Prediction) else 1.0
            h, w = true_shape(viewer.full_size, aspect)
        full_view = viewer.view if viewer.full_size is None else None
        stamp = self.session.stamps.get(index)
        self.worker.export_overlay(self.session.paths[index], name, stamp, path, look, words, full_view)
        self._tell(f"Saving the overlay of {name} at full resolution ({w} x {h}) to {path} …")
        return path

    def show_model_card(self) -> None:
        predictor = self.session.predictor
        if predictor is None:
            self._set_status(self.model_error or "The model is not loaded yet.")
            return
        if self.card_window is not None and self.card_window.winfo_exists():  # one, raised again
            self.card_window.lift()
            return
        top = tk.Toplevel(self.root)
        top.title(f"Model card: {predictor.name}")
        close = ttk.Button(top, text="Close", command=self._closable(top))
        close.pack(side="bottom", anchor="e", padx=8, pady=6)
        # larger with its fonts, never past the screen (959 px on an 800 px screen at scaling 2)
        width = min(round(760 * self.grow), self.root.winfo_screenwidth() - SCREEN_MARGIN[0])
        height = min(round(640 * self.grow), self.root.winfo_screenheight() - SCREEN_MARGIN[1])
        top.geometry(f"{width}x{height}")
        text = tk.Text(top, wrap="word", padx=10, pady=10)
        scroll = ttk.Scrollbar(top, orient="vertical", command=text.yview)
        text.configure(yscrollcommand=scroll.set)
        scroll.pack(side="right", fill="y")
        text.pack(side="left", fill="both", expand=True)
        body = self.model_card if self.model_card is not None else "This bundle has no model card (card.md)."
        text.insert("1.0", f"{NOTICE_BANNER}\n\n{heads_text(predictor.spec)}\n\n{body}")
        text.configure(state="disabled")
        self.card_window, self.card_text = top, text

    def show_shortcuts(self) -> None:
        """The *Keyboard shortcuts* list (F1), made from the same table as the bindings."""
        if self.shortcuts_window is not None and self.shortcuts_window.winfo_exists():
            self.shortcuts_window.lift()
            return
        top = self.shortcuts_window = tk.Toplevel(self.root)
        top.title("Keyboard shortcuts")
        done = self._closable(top)
        top.bind("<Key-F1>", done)
        frame = ttk.Frame(top, padding=12)
        frame.pack(fill="both", expand=True)
        rows = help_rows()
        for row, (keys, what) in enumerate(rows):
            ttk.Label(frame, text=keys, font=self.font_bold).grid(row=row, column=0, sticky="w", padx=(0, 16))
            ttk.Label(frame, text=what).grid(row=row, column=1, sticky="w")
        note = ttk.Label(frame, text=NOTE, wraplength=440, justify="left")
        note.grid(row=len(rows), column=0, columnspan=2, sticky="w", pady=(10, 6))
        ttk.Button(frame, text="Close", command=done).grid(row=len(rows) + 1, column=1, sticky="e")

    def _closable(self, top: tk.Toplevel) -> Callable[..., None]:
        """Make ``top`` a window over the main one that the keyboard has and leaves: Escape (and
        its Close button, the returned function) closes it and gives the keys back to the control
        that had them (the main window's own focus put them nowhere: Page Down no longer paged the
        results list, and Tab began again at the first button)."""
        top.transient(self.root)
        before = self.root.focus_get()

        def done(_event: object = None) -> None:
            top.destroy()
            back = before if before is not None and before.winfo_exists() else self.root
            back.focus_set()

        top.bind("<Key-Escape>", done)
        top.protocol("WM_DELETE_WINDOW", done)  # the title bar's close button too
        top.focus_set()
        return done

    # ---- misc ----------------------------------------------------------------------------------------
    def _callback_failed(self, kind: type[BaseException], error: BaseException, tb: object) -> None:
        """A bug in a button's handler: logged with its traceback, one line in the window, which stays."""
        log.error("a window action failed", exc_info=(kind, error, tb))  # type: ignore[arg-type]
        if not self.closed:  # no status line to write to once the window is gone
            self._set_status(f"That did not work ({type(error).__name__}); the log has the details.")

    def _tell(self, text: str) -> None:
        """A line about something the user did (an export, a drop): while files are predicted it
        stays after the progress and ends the run's last line (the progress wrote over it within a
        poll: an overlay export that failed during a run was never seen to)."""
        if self.running:
            self._run.told = text
            self._show_running()
        else:
            self._set_status(text)

    def _set_status(self, text: str) -> None:
        if text != self._status_text:  # the line is rewritten every poll while files are looked for
            self._status_text = text
            self.status.configure(text=text)

    def _looking_text(self) -> str:
        """What the line says while files are looked for: where, how many so far and for how long (it
        may take minutes on a network share; the seconds show that the window has not hung)."""
        if not self.listings:
            return ""
        listing = self.listings[0]
        seconds = time.perf_counter() - listing.started
        found = f"{listing.found} found, " if listing.found else ""
        return f"Looking for images in {_some(map(str, listing.paths))} … {found}{seconds:.0f} s"

    def _update_progress(self) -> None:
        """The bar and the line are about the run (from idle to idle): after a cancel the bar stays
        at what was predicted out of what was asked, and the line says *Cancelled*."""
        run = self._run
        self.progress.configure(maximum=max(1, run.asked), value=self.done - run.done)
        self._show_running()

    def _show_running(self) -> None:
        run = self._run
        if self.running:
            done = self.done - run.done
            predicting = f"Predicting {min(done + 1, run.asked)} of {run.asked} …" if run.asked else ""
            self._set_status(" ".join(t for t in (predicting, self._looking_text(), run.told) if t))

    def _end_run(self) -> None:
        """The run's last word: what all its openings did."""
        self._queued.clear()  # a cancelled run's files are predicted when opened again
        run = self._run
        seconds = time.perf_counter() - run.started
        note = self._not_exported_note() + (f" {run.told}" if run.told else "")
        if run.empty_folders and run.asked:  # without files at all, "No image files found in" says it
            note = f" No image files found in {_some(map(str, run.empty_folders))}.{note}"
        if run.asked:
            what = "Cancelled" if run.cancelled else "Done"
            done, unread = self.done - run.done, self.failed - run.failed
            again = (
                f" {run.again} {'was' if run.again == 1 else 'were'} listed already: "
                f"{'its row is the file' if run.again == 1 else 'their rows are the files'} as now."
                if run.again
                else ""
            )
            if unread:  # "40 of 40 images predicted" read as all done when 36 rows were errors
                self._set_status(
                    f"{what}: {done} of {run.asked} images in {seconds:.1f} s: {done - unread} predicted, "
                    f"{unread} could not be read (their rows say why).{again}{note}"
                )
            else:
                self._set_status(
                    f"{what}: {done} of {run.asked} images predicted in {seconds:.1f} s.{again}{note}"
                )
        elif run.cancelled:
            looked = _some(map(str, run.looked_in))
            self._set_status(f"Cancelled: stopped looking for images in {looked}.{note}")
        self.cancel_button.configure(state="disabled")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.listings.clear()  # their daemon threads end with their walk, never waited for
        self.worker.close()
        self.viewer.close()
        if self.probe is not None:
            self.probe.stop()
        self.root.destroy()
        # the window is gone; the process must not end while the model is running (an abort)
        if not self.worker.join(CLOSE_WAIT_S):
            log.warning("the model's threads did not stop within %.0f s of closing", CLOSE_WAIT_S)


def open_patterns(windowing: str) -> str:
    """The *Open files…* dialog's patterns for radiographs. Tk's own dialog on X11 matches them
    case-sensitively, so ``SCAN.JPG`` and ``IM1.DCM`` (exports written on Windows) were not listed
    under *Radiographs*; there each suffix is given in both cases. The Windows and macOS dialogs
    ignore case."""
    suffixes = sorted(IMAGE_SUFFIXES)
    if windowing == "x11":
        suffixes = [case for s in suffixes for case in (s, s.upper())]
    return " ".join(f"*{s}" for s in suffixes)


def wrap_at_width(container: tk.Misc, *labels: tk.Misc, margin: int = 0) -> None:
    """Wrap the labels' text at ``container``'s width less ``margin``, whenever that changes: a fixed
    wraplength wider than the pane cut lines off at its edge (a sensitivity's last digits, a warning)."""

    def rewrap(event: tk.Event) -> None:
        width = max(80, event.width - margin)
        for label in labels:
            # text broken inside a word (a long path) runs a pixel or two past the wraplength, and
            # the label's padding adds to it: the line's last characters were cut off at the edge
            wrap = width
            while True:
                if str(label.cget("wraplength")) != str(wrap):
                    label.configure(wraplength=wrap)
                over = label.winfo_reqwidth() - width
                if over <= 0 or wrap <= 40:
                    break
                wrap -= over

    container.bind("<Configure>", rewrap, add="+")


def _some(names: Iterable[str]) -> str:
    """The first three names, and how many more."""
    listed = list(names)
    more = f" and {len(listed) - 3} more" if len(listed) > 3 else ""
    return ", ".join(listed[:3]) + more


def _class_lines(summary: ClassSummary | None) -> list[str]:
    """A card's class note and every class's probability (the first eight), as the web app's
    class block shows them."""
    if summary is None:
        return []
    ranked = ", ".join(f"{name} {p:.3f}" for name, p in summary.probabilities[:8])
    more = f" and {len(summary.probabilities) - 8} more" if len(summary.probabilities) > 8 else ""
    return [
        *([summary.note] if summary.note else []),
        f"All {summary.label.lower()} probabilities: {ranked}{more}",
    ]


def _is_study(iid: str) -> bool:
    return iid.startswith(STUDY_IID)


def _tags(result: Prediction | FailedPrediction | StudyPrediction) -> tuple[str, ...]:
    if isinstance(result, FailedPrediction):
        return ("failed",)
    return (verdict(result).severity,)
