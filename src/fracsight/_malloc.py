"""Keep glibc from handing each image's working memory back to the kernel after every image.

Every prediction allocates a few large, short-lived arrays: the decoded pixels, the letterboxed
input, the full-size heatmap (3.4 MB for a 1024 x 819 radiograph) and its temporaries. glibc
serves an allocation from its heap below a threshold and from a fresh ``mmap`` above it, and
trims the free top of the heap above a second one. Both thresholds start low (128 KB) and grow
only when the process happens to free a large ``mmap``-ed block. Whether that happens depends
on what else the process loaded: with the float bundle it did, with the INT8 bundle it did not,
so in an INT8 process every image's arrays went back to the kernel and came back as about 2,100
page faults (8 MB of zeroed pages) per image: its heatmap stage took 5.9 ms against 1.8 ms with
the float bundle (docs/benchmark.md, "Page faults"). :func:`keep_freed_memory` sets both
thresholds to the values glibc's own adaptive rule gives after freeing one 32 MB block (its
largest step: mmap above 32 MB, trim above 64 MB), so the same arrays are reused from image to
image whichever model is loaded.

It also caps glibc's arenas at :data:`ARENA_MAX`: glibc gives each new thread a heap of its own,
up to 8 per core, and with the trim threshold above a heap keeps its high-water mark for good. A
server's rotating worker threads filled 16 of them on 2 cores (305 MB held, 69 MB in use; the
process plateaued at 320-365 MB under load, 1 GB a worker with larger images, more with more
cores); with two, 212 MB at the same request rate (2026-12-06 soak).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading

__all__ = [
    "ARENA_MAX",
    "LARGE_BODY_BYTES",
    "LARGE_IMAGE_PIXELS",
    "MMAP_THRESHOLD",
    "TRIM_THRESHOLD",
    "is_large",
    "keep_freed_memory",
    "release_freed_memory",
    "release_in_background",
]

MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # glibc's dynamic rule: twice the mmap threshold
ARENA_MAX = 2  # inference runs at most two at a time in a server (max_concurrent_inferences)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # mallopt parameters from <malloc.h>
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

#: An image this large (height x width) leaves its working memory for :func:`release_freed_memory`
LARGE_IMAGE_PIXELS = 16_000_000
#: A request body this large (an uncompressed CR DICOM is 10-20 MB) too: its buffers, below the
#: mmap threshold, come from the heap and stayed held (a worker kept 750 MB after rounds of
#: 15 MB DICOMs of 7.5 megapixels, and 417 MB after refused 20 MB files; 2026-12-06 hunt)
LARGE_BODY_BYTES = 8 << 20

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True where they were set.

    Does nothing (False) outside Linux with glibc, or where the user tuned malloc through its
    environment variables or ``GLIBC_TUNABLES``: their choice stands.
    """
    global _done
    if _done is None:
        _done = _set_thresholds()
    return _done


def is_large(size: tuple[int, int]) -> bool:
    """Whether an image of ``size`` (height, width) is worth :func:`release_freed_memory` after."""
    return size[0] * size[1] >= LARGE_IMAGE_PIXELS


def release_freed_memory() -> None:
    """Give the kernel back the free pages of glibc's heap (``malloc_trim(0)``), where
    :func:`keep_freed_memory` raised the thresholds: with them a large image's arrays of up to 32 MB
    come from the heap, and a small image's arrays allocated meanwhile pin them there. A server that
    read 49-megapixel images between small ones held 1 to 2 GB after the rounds, its peak rising
    round after round (2026-12-05 hunt); call this when a large image's arrays are freed."""
    if _done:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


_trimming = threading.Lock()


def release_in_background() -> None:
    """:func:`release_freed_memory` in a thread of its own, unless one runs already: ``malloc_trim``
    took 3 to 30 ms under load, which on a server's event loop stalled every connection, and
    concurrent large uploads would each queue one."""
    if _done and not _trimming.locked():
        threading.Thread(target=_release_once, name="malloc-trim", daemon=True).start()


def _release_once() -> None:
    if _trimming.acquire(blocking=False):
        try:
            release_freed_memory()
        finally:
            _trimming.release()


def _set_thresholds() -> bool:
    if not sys.platform.startswith("linux") or not _running_glibc():
        return False
    if any(name in os.environ for name in _USER_SETTINGS) or "glibc.malloc." in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold first, so no allocation in between falls
    # back to mmap once the adaptive rule is off
    mmap_set = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    trim_set = mmap_set and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    # the user's own arena limit (MALLOC_ARENA_MAX, common in containers) stands, the rest applies
    if "MALLOC_ARENA_MAX" not in os.environ and "glibc.malloc.arena_max" not in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        mallopt(_M_ARENA_MAX, ARENA_MAX)
    return trim_set


def _running_glibc() -> bool:
    """Whether this process runs on glibc (asked of the C library itself, not of the executable)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError):  # no confstr, or not glibc (musl has no such name)
        return False
