"""Dropping files and folders onto the window, where the platform allows.

Plain Tk has no drag and drop from other programs; the ``tkdnd`` Tcl extension adds it (XDND on
X11, OLE on Windows, the pasteboard on macOS). When Tk can load it (``package require tkdnd``:
Debian and Ubuntu's ``tkdnd`` package, or the extension on Tcl's ``auto_path``) every widget of the
window accepts dropped files; when it cannot, nothing changes and the file dialogs remain.

tkdnd delivers a drop as a Tcl list of paths (``%D`` of ``<<Drop:DND_Files>>``). On X11, version
2.6 (Debian 12) turns the percent-encoded UTF-8 of a file manager's ``text/uri-list`` into one
character per byte, so ``/tmp/é.png`` arrives as ``/tmp/Ã©.png``: :func:`paths_from_drop` repairs
that when only the repaired path exists.
"""

from __future__ import annotations

import logging
import os
import tkinter as tk
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

__all__ = ["DND_FILES", "enable_file_drop", "paths_from_drop"]

log = logging.getLogger("fracsight.desktop")

DND_FILES = "DND_Files"  # tkdnd's platform-independent type for files


def _repaired(item: str) -> Path:
    path = Path(item)
    if path.exists() or not any(ord(c) > 127 for c in item):
        return path
    try:  # the bytes as the file system holds them: a name that is not UTF-8 (M\xfcller.jpg from an
        fixed = Path(os.fsdecode(item.encode("latin-1")))  # old Windows disk) was skipped
    except UnicodeEncodeError:
        return path
    return fixed if fixed.exists() else path


def paths_from_drop(items: Iterable[str]) -> tuple[list[Path], list[str]]:
    """The dropped items that are files or folders here, and the others (URLs, vanished files)."""
    found: list[Path] = []
    other: list[str] = []
    for item in items:
        if not item:
            continue
        path = _repaired(item)
        (found.append(path) if path.exists() else other.append(item))
    return found, other


def _widgets(root: tk.Misc) -> list[tk.Misc]:
    """``root`` and every widget below it in the same toplevel."""
    out: list[tk.Misc] = [root]
    for child in root.winfo_children():
        if isinstance(child, tk.Toplevel):
            continue
        out.extend(_widgets(child))
    return out


def enable_file_drop(root: tk.Tk, on_drop: Callable[[Sequence[str]], object]) -> bool:
    """Let files and folders be dropped anywhere on ``root``'s window; whether tkdnd is available.

    tkdnd sends a drop to the innermost widget under the pointer, and only to a registered one, so
    every widget that exists now is registered. ``on_drop`` gets the dropped items as strings.
    """
    try:
        version = root.tk.call("package", "require", "tkdnd")
    except tk.TclError as e:  # not installed: the file dialogs remain
        log.debug("no drag and drop: %s", e)
        return False

    def dropped(data: str) -> str:
        on_drop(root.tk.splitlist(data))
        return "copy"  # the action reported to the program the files came from

    command = root.register(dropped)
    for widget in _widgets(root):
        root.tk.call("tkdnd::drop_target", "register", widget, (DND_FILES,))
        root.tk.call("bind", widget, f"<<Drop:{DND_FILES}>>", f"{command} %D")
    log.debug("drag and drop through tkdnd %s", version)
    return True
