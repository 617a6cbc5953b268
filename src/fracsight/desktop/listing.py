"""Looking for the files of an opened folder off the window's thread.

Listing a folder takes a round trip to the disk per file, and a file without an image extension is
opened to see whether it is DICOM (PACS exports name them ``IM000001``): 5,000 such files froze the
window about 1.3 s on a local disk, and on a network share it would be minutes. Each opening is
listed on its own thread by the code ``fracsight predict`` uses
(:func:`~fracsight.desktop.state.expand_inputs`), which reports a :class:`Listed` event on the
window's queue, as the :class:`~fracsight.desktop.worker.PredictionWorker` does. Nothing here
imports tkinter.

A listing cannot be stopped midway (the walk has no hook to stop it): a cancelled one's event is
ignored by the window, and its thread, a daemon that holds nothing of the window, ends with its
walk and never keeps the process alive.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fracsight.desktop.priority import lower_this_thread
from fracsight.desktop.state import expand_inputs

__all__ = ["Listed", "Listing", "list_in_background"]

log = logging.getLogger("fracsight.desktop")


@dataclass(frozen=True)
class Listed:
    """The files of one opening, as ``fracsight predict`` finds and names them."""

    number: int  # the :class:`Listing`'s
    files: list[tuple[Path, str]]
    resolved: list[str]  # each file's real path (a round trip per file on a network share)
    error: str | None = None  # why the listing failed; then no files


@dataclass
class Listing:
    """Files and folders opened together, from the moment they are looked through until their files
    are queued (the window's bookkeeping; tests wait on :attr:`queued`)."""

    number: int
    paths: tuple[Path, ...]
    started: float = field(default_factory=time.perf_counter)
    listed: Listed | None = None  # once the thread has reported
    queued: int | None = None  # how many files were queued: None while looking, 0 when none or cancelled
    cancelled: bool = False


def list_in_background(
    number: int, paths: Sequence[Path], events: queue.Queue[Listed], niceness: int = 0
) -> threading.Thread:
    """List ``paths`` on a daemon thread; a :class:`Listed` with ``number`` goes on ``events``."""
    thread = threading.Thread(
        target=_list,
        args=(number, tuple(paths), events, niceness),
        name=f"fracsight-list-{number}",
        daemon=True,  # a walk of a hung network share must not keep a closed window's process alive
    )
    thread.start()
    return thread


def _list(number: int, paths: tuple[Path, ...], events: queue.Queue[Listed], niceness: int) -> None:
    lower_this_thread(niceness)
    try:
        files = expand_inputs(paths)
        resolved = [os.path.realpath(path) for path, _ in files]
    except Exception as e:  # the window must not wait for ever: it says why instead
        log.exception("listing %s failed", ", ".join(map(str, paths)))
        events.put(Listed(number, [], [], f"{type(e).__name__}: {e}"))
        return
    events.put(Listed(number, files, resolved))
