"""Decode and letterbox every image once, so epochs are not bound by JPEG decoding.

The arrays are kept as uint8 ``.npy`` files (no pickle) under a cache folder,
keyed by the input size and the files' paths, sizes and modification times.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from fracsight._files import replace_atomically
from fracsight.data._files import relative_name
from fracsight.data.sample import Sample
from fracsight.errors import ImageReadError
from fracsight.preprocessing import letterbox_radiograph, read_for_model

__all__ = ["LetterboxedSet", "cache_note", "cache_size", "letterbox_samples"]

log = logging.getLogger(__name__)


class LetterboxedSet:
    """``images`` (N,S,S) uint8 and ``masks`` (N,S,S) uint8 (255 inside a fracture box)."""

    def __init__(self, images: np.ndarray, masks: np.ndarray) -> None:
        self.images = images
        self.masks = masks

    def __len__(self) -> int:
        return len(self.images)


_Job = tuple[str, str, tuple[tuple[float, float, float, float], ...], int]  # path, name, boxes, size
_LISTED = 10  # unreadable files named in the error; the rest are counted


def _one(job: _Job) -> tuple[np.ndarray, np.ndarray] | ImageReadError:
    """The letterboxed image and its box mask, or why the file cannot be read (returned, not raised,
    so that every unreadable file is found and named)."""
    path, name, boxes, size = job
    try:
        radiograph = read_for_model(path, size, name=name)
    except ImageReadError as e:
        return e
    square, geometry = letterbox_radiograph(radiograph, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    h, w = geometry.original_size
    for x0, y0, x1, y1 in boxes:
        mx0, my0 = geometry.to_model(x0 * w, y0 * h)
        mx1, my1 = geometry.to_model(x1 * w, y1 * h)
        c0, r0 = int(np.floor(mx0)), int(np.floor(my0))
        c1, r1 = max(int(np.ceil(mx1)), c0 + 1), max(int(np.ceil(my1)), r0 + 1)
        mask[max(r0, 0) : min(r1, size), max(c0, 0) : min(c1, size)] = 255
    return np.round(square * 255).astype(np.uint8), mask


def _key(samples: list[Sample], size: int) -> str:
    # v2: JPEGs decoded reduced; v3: box masks mapped per axis; v4: DICOMs at their pixel aspect
    h = hashlib.sha1(f"v4-{size}".encode())
    for s in samples:
        st = s.path.stat()
        # surrogateescape: a file name that is not UTF-8 (caf\xe9.jpg) stopped training with a traceback
        # the file's real path: `train data` and `train /abs/data` (the card's Reproduce command) cached
        # every image twice
        entry = f"{os.path.realpath(s.path)}|{st.st_size}|{st.st_mtime_ns}|{s.boxes}"
        h.update(entry.encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def letterbox_samples(
    samples: list[Sample],
    size: int,
    cache_dir: Path | None = None,
    workers: int = 2,
    progress: Callable[[int], object] | None = None,
    root: Path | None = None,
) -> LetterboxedSet:
    """Letterboxed uint8 images and box masks for ``samples``, read from the cache when present.

    Files that cannot be read raise one :class:`~fracsight.errors.ImageReadError` naming them all
    (the first 10, and a count) by their path under ``root``, the data set's folder (default: the
    folder the samples share).
    """
    try:
        key = _key(samples, size) if cache_dir is not None else ""
    except OSError:  # a file gone since the data set was read: each one is named below, not the first
        cache_dir = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        img_path, mask_path = cache_dir / f"lb-{key}-img.npy", cache_dir / f"lb-{key}-mask.npy"
        if img_path.is_file() and mask_path.is_file():
            try:
                cached = LetterboxedSet(np.load(img_path), np.load(mask_path))
                log.info("letterbox cache hit: %s", img_path)
                return cached
            except (OSError, ValueError, EOFError) as e:  # cut short (or emptied) before writes were atomic
                log.warning("the letterbox cache %s is damaged (%s): making it again", img_path.name, e)
    if root is None:
        root = Path(os.path.commonpath([s.path.parent for s in samples])) if samples else Path()
    jobs: list[_Job] = [
        (str(s.path), relative_name(s.path, root), tuple((b.x0, b.y0, b.x1, b.y1) for b in s.boxes), size)
        for s in samples
    ]
    images = np.zeros((len(samples), size, size), dtype=np.uint8)
    masks = np.zeros((len(samples), size, size), dtype=np.uint8)
    if workers > 1 and len(jobs) > 32:
        with ProcessPoolExecutor(workers) as pool:
            unreadable = _fill(pool.map(_one, jobs, chunksize=16), images, masks, progress)
    else:
        unreadable = _fill(map(_one, jobs), images, masks, progress)
    if unreadable:
        raise _refusal(unreadable)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # whole or not at all: a full disk or Ctrl-C while saving left a short file that every
        # later run loaded, and failed on
        for path, array in ((img_path, images), (mask_path, masks)):
            replace_atomically(path, lambda tmp, a=array: _save(tmp, a))
    return LetterboxedSet(images, masks)


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a temporary name
        np.save(f, array)


def _fill(
    results: Iterable[tuple[np.ndarray, np.ndarray] | ImageReadError],
    images: np.ndarray,
    masks: np.ndarray,
    progress: Callable[[int], object] | None,
) -> list[ImageReadError]:
    """Store each result in ``images`` / ``masks``; returns the errors of the files that could not be read."""
    unreadable: list[ImageReadError] = []
    for i, result in enumerate(results):
        if isinstance(result, ImageReadError):
            unreadable.append(result)
        else:
            images[i], masks[i] = result
        if progress:
            progress(1)
    return unreadable


def _refusal(unreadable: list[ImageReadError]) -> ImageReadError:
    """One error for all the unreadable files: the file's own when there is one, else one of the
    same kind (or :class:`ImageReadError` for mixed kinds) listing them."""
    if len(unreadable) == 1:
        return unreadable[0]
    kinds = {type(e) for e in unreadable}
    kind = kinds.pop() if len(kinds) == 1 else ImageReadError
    more = f"; and {len(unreadable) - _LISTED} more" if len(unreadable) > _LISTED else ""
    listed = "; ".join(str(e) for e in unreadable[:_LISTED])
    return kind(
        f"{len(unreadable)} images cannot be read (fix or remove them; `fracsight audit` lists every "
        f"unreadable file): {listed}{more}"
    )


def cache_folder_refusal(folder: Path) -> str | None:
    """Why ``folder`` cannot hold a cache (said after its name), or None: a file, a model bundle or
    a training run, which the run's last line would advise deleting to free the space; or a file or a
    dangling link in its place or above it (said once the images were letterboxed, as "Not a directory")."""
    from fracsight._files import folder_blocked

    if folder.exists() and not folder.is_dir():
        return "is a file: give a folder for the letterboxed images"
    blocked = folder_blocked(folder)
    if blocked is not None:
        return f"cannot be made: {blocked}"
    for marker, what in (("bundle.json", "a model bundle"), ("best.pt", "a training run")):
        if (folder / marker).is_file():
            return f"is {what}: give a folder of its own"
    return None


_OWN_ENTRIES = ("lb-", "heads-")  # the letterboxed images; a detector's frozen features


def own_entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(_OWN_ENTRIES)] if folder.is_dir() else []


def cache_size(folder: Path) -> str:
    """How much fracsight's entries in a cache folder hold, for the line that names it (runs write
    gigabytes there; the folder may be a shared one, ~/.cache beside a run made in ~)."""
    files = [f for p in own_entries(folder) for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file()]
    return f"{sum(f.stat().st_size for f in files) / 1e6:.0f} MB"


def cache_note(folder: Path, holds: str) -> str | None:
    """The line a run ends with about the cache it left (None when it left none): where it is and
    how large, for it was said nowhere, and it goes beside the output folder, whatever that is. A
    folder that holds other files too (~/.cache: pip's, torch hub's; runs) is not to be deleted whole."""
    own = own_entries(folder)
    if not own:
        return None
    free = "delete it" if len(own) == len(list(folder.iterdir())) else "delete its lb-* and heads-* entries"
    return f"cache: {folder} ({cache_size(folder)}) holds {holds} for the next run; {free} to free the space"
