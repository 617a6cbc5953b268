"""Decode and letterbox every image once, so epochs are not bound by JPEG decoding.

The arrays are kept as uint8 ``.npy`` files (no pickle) under a cache folder,
keyed by the input size and the files' paths, sizes and modification times.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from fracsight.data.sample import Sample
from fracsight.preprocessing import letterbox_radiograph, read_for_model

__all__ = ["LetterboxedSet", "letterbox_samples"]

log = logging.getLogger(__name__)


class LetterboxedSet:
    """``images`` (N,S,S) uint8 and ``masks`` (N,S,S) uint8 (255 inside a fracture box)."""

    def __init__(self, images: np.ndarray, masks: np.ndarray) -> None:
        self.images = images
        self.masks = masks

    def __len__(self) -> int:
        return len(self.images)


def _one(
    args: tuple[str, tuple[tuple[float, float, float, float], ...], int],
) -> tuple[np.ndarray, np.ndarray]:
    path, boxes, size = args
    square, geometry = letterbox_radiograph(read_for_model(path, size), size)
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
    h = hashlib.sha1(f"v2-{size}".encode())  # v2: JPEGs decoded at reduced scale
    for s in samples:
        st = s.path.stat()
        h.update(f"{s.path}|{st.st_size}|{st.st_mtime_ns}|{s.boxes}".encode())
    return h.hexdigest()[:16]


def letterbox_samples(
    samples: list[Sample], size: int, cache_dir: Path | None = None, workers: int = 2, progress=None
) -> LetterboxedSet:
    """Letterboxed uint8 images and box masks for ``samples``, read from the cache when present."""
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        key = _key(samples, size)
        img_path, mask_path = cache_dir / f"lb-{key}-img.npy", cache_dir / f"lb-{key}-mask.npy"
        if img_path.is_file() and mask_path.is_file():
            log.info("letterbox cache hit: %s", img_path)
            return LetterboxedSet(np.load(img_path), np.load(mask_path))
    jobs = [(str(s.path), tuple((b.x0, b.y0, b.x1, b.y1) for b in s.boxes), size) for s in samples]
    images = np.zeros((len(samples), size, size), dtype=np.uint8)
    masks = np.zeros((len(samples), size, size), dtype=np.uint8)
    if workers > 1 and len(jobs) > 32:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_one, jobs, chunksize=16)
            for i, (img, mask) in enumerate(results):
                images[i], masks[i] = img, mask
                if progress:
                    progress(1)
    else:
        for i, job in enumerate(jobs):
            images[i], masks[i] = _one(job)
            if progress:
                progress(1)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(img_path, images)
        np.save(mask_path, masks)
    return LetterboxedSet(images, masks)
