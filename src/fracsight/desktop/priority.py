"""Background threads at a lower scheduling priority than the window's, so the event loop gets a core first.

On a 2-core machine the model's thread, the image statistics, the view and the renderer threads and
the X server all want a core while a folder is predicted; measured with per-thread scheduler
statistics, the window's thread then spent most of its worst stalls runnable but waiting for a core
(docs/desktop.md). Linux keeps a nice value per thread, and threads a thread starts inherit it, so
lowering the model's thread before it loads the model also lowers ONNX Runtime's pool threads.
Elsewhere (Windows, macOS, where a thread id is not a process id) this is a no-op.
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["MODEL_NICENESS", "RENDER_NICENESS", "lower_this_thread"]

MODEL_NICENESS = 10  # the model's threads (prediction, full-resolution views, statistics, ONNX Runtime)
RENDER_NICENESS = 5  # the viewer's renderer: after the window, before the model


def lower_this_thread(increment: int) -> bool:
    """Raise the calling thread's nice value by ``increment`` (at most 19); whether it was applied."""
    if increment <= 0 or not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + increment))
    except OSError:  # not permitted in some sandboxes: the window still works, only less smoothly
        return False
    return True
