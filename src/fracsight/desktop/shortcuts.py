"""The desktop window's keyboard shortcuts: one table, from which the bindings, the *Keyboard
shortcuts* list (F1) and the buttons' tooltips are all made, so that they cannot disagree.

A chord is written as the list shows it (``Ctrl+Shift+O``, ``Down``, ``+``); :func:`tk_sequences`
turns it into Tk event patterns, both cases of a letter (Caps Lock on X11 gives ``H`` for ``h``)
and the keypad's keys. Plain keys (letters, digits, ``+``, ``-``, arrows) do nothing while a text
field has the focus (a read-only combobox, such as the operating point's, is not one: nothing can
be typed there), and the arrows nothing in a widget that moves with them itself (the results list:
its own arrows move the selection once, not twice; a combobox's open its list); see
:func:`applies`. No tkinter here: it is imported only when a tooltip is shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tkinter as tk

__all__ = [
    "SHORTCUTS",
    "Shortcut",
    "Tooltip",
    "action_sequences",
    "applies",
    "bind_shortcuts",
    "help_rows",
    "hint",
    "tk_sequences",
]


@dataclass(frozen=True)
class Shortcut:
    action: str  # what it runs: a method of the window, or of its viewer ("viewer.fit")
    what: str  # as the list says it
    chords: tuple[str, ...]  # as the list shows them, first the main one

    @property
    def keys(self) -> str:
        return " or ".join(self.chords)


SHORTCUTS: tuple[Shortcut, ...] = (
    Shortcut("ask_files", "Open files", ("Ctrl+O",)),
    Shortcut("ask_folder", "Open a folder", ("Ctrl+Shift+O",)),
    Shortcut("export_csv", "Export the results as CSV", ("Ctrl+S",)),
    Shortcut("cancel", "Cancel the images not yet predicted", ("Escape",)),
    Shortcut("close", "Quit", ("Ctrl+Q",)),
    Shortcut("next_result", "Next image in the list", ("Down", "J")),
    Shortcut("previous_result", "Previous image in the list", ("Up", "K")),
    Shortcut("viewer.zoom_in", "Zoom in", ("+", "Ctrl+Plus")),
    Shortcut("viewer.zoom_out", "Zoom out", ("-", "Ctrl+Minus")),
    Shortcut("viewer.fit", "Fit the image to the pane", ("0", "F")),
    Shortcut("viewer.actual_size", "Zoom 1:1 (one image pixel per screen pixel)", ("1",)),
    Shortcut("viewer.toggle_heatmap", "Heatmap on or off", ("H",)),
    Shortcut("viewer.toggle_boxes", "Boxes on or off", ("B",)),
    Shortcut("viewer.reset_window", "Reset window/level", ("R",)),
    Shortcut("viewer.pan_left", "Pan: show more of the image's left", ("Shift+Left",)),
    Shortcut("viewer.pan_right", "Pan: show more of the image's right", ("Shift+Right",)),
    Shortcut("viewer.pan_up", "Pan: show more of the image's top", ("Shift+Up",)),
    Shortcut("viewer.pan_down", "Pan: show more of the image's bottom", ("Shift+Down",)),
    # with Shift: Page Down alone pages the results list, where the keys usually are
    Shortcut("scroll_cards_down", "Scroll the cards above the image down", ("Shift+Page Down",)),
    Shortcut("scroll_cards_up", "Scroll the cards above the image up", ("Shift+Page Up",)),
    Shortcut("show_shortcuts", "Keyboard shortcuts (this list)", ("F1",)),
)

NOTE = (
    "Letters, digits, +, - and the arrows do nothing while a text field has the focus; "
    "in the results list the arrows move the selection as usual, "
    "in the operating point's selector they open its list, on a slider they move it "
    "(Page Up and Page Down in larger steps). Tab moves between the controls; "
    "Enter or Space presses the focused button or ticks the focused box; "
    "Escape closes this list and the model card."
)

_MODIFIERS = {"Ctrl": "Control", "Shift": "Shift"}
_KEYSYMS = {  # the keys a chord names that Tk calls otherwise, or that have more than one key
    "+": ("plus", "equal", "KP_Add"),  # "=" is "+" without Shift on many layouts
    "-": ("minus", "KP_Subtract"),
    "0": ("0", "KP_0"),
    "1": ("1", "KP_1"),
    "Page Down": ("Next",),
    "Page Up": ("Prior",),
}
_KEYSYMS |= {"Plus": _KEYSYMS["+"], "Minus": _KEYSYMS["-"]}
ALWAYS_KEYS = {"Escape", *(f"F{n}" for n in range(1, 13))}  # keys that never type anything
TEXT_CLASSES = {"Entry", "TEntry", "TCombobox", "Spinbox", "TSpinbox", "Text"}
# they move with the arrows themselves (a combobox opens its list)
ARROW_CLASSES = {"Treeview", "Listbox", "TScale", "Scale", "TCombobox"}
ARROWS = {"Up", "Down", "Left", "Right"}
CONTROL, ALT = 0x4, 0x8  # X11 modifier bits of an event's state (Mod1 is Alt)


def _split(chord: str) -> tuple[tuple[str, ...], str]:
    if chord == "+":
        return (), "+"
    *mods, key = chord.split("+")
    return tuple(mods), key


def tk_sequences(chord: str) -> tuple[str, ...]:
    """Tk event patterns of a chord: ``Ctrl+O`` -> ``<Control-Key-o>``, ``<Control-Key-O>``."""
    mods, key = _split(chord)
    prefix = "".join(f"{_MODIFIERS[m]}-" for m in mods)
    if len(key) == 1 and key.isalpha():
        keysyms: tuple[str, ...] = (key.lower(), key.upper())  # Caps Lock, or Shift with it
    else:
        keysyms = _KEYSYMS.get(key, (key,))
    return tuple(f"<{prefix}Key-{k}>" for k in keysyms)


def action_sequences(action: str) -> tuple[str, ...]:
    """The Tk event patterns of every chord of ``action``'s shortcut."""
    (shortcut,) = (s for s in SHORTCUTS if s.action == action)
    return tuple(seq for chord in shortcut.chords for seq in tk_sequences(chord))


def applies(chord: str, widget_class: str, state: int | str, *, editable: bool = True) -> bool:
    """Whether a key event matching ``chord`` is the shortcut, with the focus in a widget of
    ``widget_class`` (``editable``: text can be typed in it; a read-only combobox cannot): a plain
    key is the text field's, or the list's own arrow, and a plain key pressed with Ctrl or Alt is
    another chord (Ctrl+H is not H)."""
    mods, key = _split(chord)
    typing = widget_class in TEXT_CLASSES and editable
    if key in ARROWS and (typing or widget_class in ARROW_CLASSES):
        return False  # with Shift too: a list moves with Shift+arrow as well, a text field selects
    if mods or key in ALWAYS_KEYS:
        return True
    if typing:
        return False
    return not (isinstance(state, int) and state & (CONTROL | ALT))


def bind_shortcuts(root: tk.Misc, target: object) -> None:
    """Bind every shortcut on ``root``'s window (Tk's bindtag of the toplevel: whichever of its
    widgets has the focus) to its action on ``target``."""

    def handler(shortcut: Shortcut, chord: str) -> Callable[[tk.Event], str | None]:
        def fire(event: tk.Event) -> str | None:
            widget = str(event.widget)
            widget_class = str(root.tk.call("winfo", "class", widget))
            editable = widget_class not in TEXT_CLASSES or not _read_only(root, widget)
            if not applies(chord, widget_class, event.state, editable=editable):
                return None
            _action(target, shortcut.action)()
            return "break"

        return fire

    for shortcut in SHORTCUTS:
        for chord in shortcut.chords:
            for sequence in tk_sequences(chord):
                root.bind(sequence, handler(shortcut, chord))


def _read_only(root: tk.Misc, widget: str) -> bool:
    """Whether nothing can be typed in this text widget (a ttk one in the readonly state)."""
    from tkinter import TclError

    try:
        return bool(root.tk.call(widget, "instate", "readonly"))
    except TclError:  # a classic Tk entry or text: no ttk states
        return False


def _action(target: object, name: str) -> Callable[[], object]:
    for part in name.split("."):
        target = getattr(target, part)
    return target  # type: ignore[return-value]


def help_rows() -> list[tuple[str, str]]:
    """(keys, what) for the *Keyboard shortcuts* list."""
    return [(s.keys, s.what) for s in SHORTCUTS]


def hint(action: str) -> str:
    """A control's tooltip: what its shortcut does and its keys."""
    (shortcut,) = (s for s in SHORTCUTS if s.action == action)
    return f"{shortcut.what} ({shortcut.keys})"


class Tooltip:
    """A line of text under a widget while the pointer rests on it (Tk has no tooltips)."""

    DELAY_MS = 500

    def __init__(self, widget: tk.Widget, text: str) -> None:
        self.widget, self.text = widget, text
        self.window: tk.Toplevel | None = None
        self._job: str | None = None
        widget.bind("<Enter>", lambda _e: self._schedule(), add="+")
        widget.bind("<Leave>", lambda _e: self.hide(), add="+")
        widget.bind("<ButtonPress>", lambda _e: self.hide(), add="+")

    def _schedule(self) -> None:
        self.hide()
        self._job = self.widget.after(self.DELAY_MS, self.show)

    def show(self) -> None:
        import tkinter as tk

        self._job = None
        if self.window is not None or not self.widget.winfo_ismapped():
            return
        w = self.window = tk.Toplevel(self.widget)
        w.wm_overrideredirect(True)
        tk.Label(w, text=self.text, bg="#ffffe0", relief="solid", borderwidth=1, padx=4, pady=2).pack()
        w.update_idletasks()
        x = min(self.widget.winfo_rootx(), self.widget.winfo_screenwidth() - w.winfo_reqwidth())
        w.wm_geometry(f"+{max(0, x)}+{self.widget.winfo_rooty() + self.widget.winfo_height() + 2}")

    def hide(self) -> None:
        if self._job is not None:
            self.widget.after_cancel(self._job)
            self._job = None
        if self.window is not None:
            self.window.destroy()
            self.window = None
