"""Looking for the files of an opened folder off the window's thread.

Listing a folder takes a round trip to the disk per file, and a file without an image extension is
opened to see whether it is DICOM (PACS exports name them ``IM000001``): 5,000 such files froze the
window about 1.3 s on a local disk, and on a network share it would be minutes. Each opening is
listed on its own thread by the code ``fracsight predict`` uses
(:func:`~fracsight.desktop.state.list_inputs`), which reports a :class:`Listed` event on the
window's queue, as the :class:`~fracsight.desktop.worker.PredictionWorker` does. Nothing here
imports tkinter.

The thread counts the files as the walk finds them (:attr:`Listing.found`, for the status line)
and stops the walk at the next file found once the listing is cancelled. A walk that finds
nothing for a long time (a share that does not answer) cannot be stopped sooner: its thread, a
daemon that holds nothing of the window, ends with it and never keeps the process alive.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fracsight.desktop.priority import lower_this_thread
from fracsight.desktop.state import list_inputs
from fracsight.inference.tabular import InputKey, input_key

__all__ = ["Listed", "Listing", "list_in_background"]

log = logging.getLogger("fracsight.desktop")


@dataclass(frozen=True)
class Listed:
    """The files of one opening, as ``fracsight predict`` finds and names them."""

    number: int  # the :class:`Listing`'s
    files: list[tuple[Path, str]]
    # each file's input_key: its real path and study folder (a round trip per file on a network share)
    keys: list[InputKey]
    error: str | None = None  # why the listing failed; then no files
    empty_folders: tuple[Path, ...] = ()  # folders opened that hold no image file
    folders: tuple[str, ...] = ()  # the folders opened, by their real and their absolute paths


@dataclass
class Listing:
    """Files and folders opened together, from the moment they are looked through until their files
    are queued (the window's bookkeeping; tests wait on :attr:`queued`)."""

    number: int
    paths: tuple[Path, ...]
    started: float = field(default_factory=time.perf_counter)
    listed: Listed | None = None  # once the thread has reported
    queued: int | None = None  # how many files were queued: None while looking, 0 when none or cancelled
    indices: tuple[int, ...] = ()  # the rows of the files queued (a file opened before keeps its own)
    cancelled: bool = False  # set by the window; the thread stops its walk at the next file
    found: int = 0  # files found so far (written by the listing thread only)


class _Stopped(Exception):
    """Raised into the walk of a cancelled listing."""


def list_in_background(listing: Listing, events: queue.Queue[Listed], niceness: int = 0) -> threading.Thread:
    """List ``listing.paths`` on a daemon thread; a :class:`Listed` with its number goes on
    ``events``, unless the listing is cancelled first."""
    thread = threading.Thread(
        target=_list,
        args=(listing, events, niceness),
        name=f"fracsight-list-{listing.number}",
        daemon=True,  # a walk of a hung network share must not keep a closed window's process alive
    )
    thread.start()
    return thread


def _list(listing: Listing, events: queue.Queue[Listed], niceness: int) -> None:
    lower_this_thread(niceness)

    def found(_path: Path) -> None:
        if listing.cancelled:
            raise _Stopped
        listing.found += 1

    try:
        files, empty_folders = list_inputs(listing.paths, found)
        keys = [input_key(path) for path, _ in files]
        # both spellings: a sub-folder that is a link to elsewhere resolves outside the real one
        opened = [path for path in listing.paths if os.path.isdir(path)]
        folders = tuple(dict.fromkeys(f(p) for p in opened for f in (os.path.realpath, os.path.abspath)))
    except _Stopped:
        return  # the window has forgotten this listing
    except Exception as e:  # the window must not wait for ever: it says why instead
        log.exception("listing %s failed", ", ".join(map(str, listing.paths)))
        events.put(Listed(listing.number, [], [], f"{type(e).__name__}: {e}"))
        return
    events.put(Listed(listing.number, files, keys, empty_folders=tuple(empty_folders), folders=folders))
