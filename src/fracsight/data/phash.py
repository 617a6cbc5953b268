"""64-bit DCT perceptual hash (pHash) and fast Hamming-distance search, numpy only.

The hash: grayscale, resize to 32x32 (Lanczos), 2-D DCT-II, keep the 8x8 lowest
frequencies, set a bit where a coefficient exceeds their median. Bit 63 is the (0, 0)
coefficient, bits run row-major. Near-identical images (re-encoded, resized, slightly
cropped or brightened) land within a few bits of each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fracsight.data._files import content_hash
from fracsight.errors import FracsightError, ImageReadError

__all__ = [
    "HASH_SIZE",
    "FileHash",
    "hamming",
    "hash_file",
    "iter_near_pairs",
    "near_pairs",
    "phash",
    "popcount",
]

HASH_SIZE = 8  # 8x8 low frequencies -> 64 bits
_IMG_SIZE = 32
_DRAFT_SIZE = 512


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    return np.cos(np.pi * k * (2 * x + 1) / (2 * n))


_DCT = _dct_matrix(_IMG_SIZE)[:HASH_SIZE]  # only the rows we keep
_WEIGHTS = (1 << np.arange(HASH_SIZE * HASH_SIZE - 1, -1, -1, dtype=np.uint64)).astype(np.uint64)


def phash(pixels: np.ndarray) -> int:
    """pHash of a 32x32 grayscale array (any real dtype) as an unsigned 64-bit int."""
    a = np.asarray(pixels, dtype=np.float64)
    if a.shape != (_IMG_SIZE, _IMG_SIZE):
        raise ValueError(f"phash expects a {_IMG_SIZE}x{_IMG_SIZE} array, got {a.shape}")
    low = _DCT @ a @ _DCT.T  # 8x8 lowest-frequency DCT-II coefficients
    bits = (low > np.median(low)).ravel()
    return int(np.sum(_WEIGHTS[bits], dtype=np.uint64))


_BYTE_COUNTS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits in each element of a uint64 array."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x).astype(np.uint8)
    return _BYTE_COUNTS[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)


#: distances computed (and pairs held) at a time: 32 MB of them
BLOCK_DISTANCES = 4_000_000


def hamming(a: int, b: int) -> int:
    """Bits that differ between two hashes."""
    return (int(a) ^ int(b)).bit_count()


def near_pairs(
    hashes: np.ndarray, threshold: int, chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All index pairs with ``i < j`` and Hamming distance <= ``threshold``, as three arrays ``(i, j,
    distance)`` ordered by ``i``, then ``j``.

    Compares every pair (n^2 / 2) with vectorized XOR + popcount, ``chunk`` rows at a time
    (default: about 4 million distances, 32 MB, per chunk): about 5 million pairs for
    3,200 images, well under a second. Arrays, not a tuple per pair: 2,400 copies of one picture
    are 2.9 million pairs, which as Python tuples (and the audit's records of them) took 5.8 GB.
    """
    found = list(iter_near_pairs(hashes, threshold, chunk))
    if not found:
        return np.empty(0, np.intp), np.empty(0, np.intp), np.empty(0, np.uint8)
    return tuple(np.concatenate(parts) for parts in zip(*found, strict=True))  # type: ignore[return-value]


def iter_near_pairs(
    hashes: np.ndarray, threshold: int, chunk: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`near_pairs` a block of rows at a time (about 4 million distances each): memory
    bounded by the block, not by the pairs (20,000 copies of one picture are 200 million)."""
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    chunk = chunk or max(1, BLOCK_DISTANCES // max(1, len(h)))
    for start in range(0, len(h), chunk):
        rows = h[start : start + chunk]
        dist = popcount(rows[:, None] ^ h[None, start:])
        ii, jj = np.nonzero(dist <= threshold)
        keep = jj > ii
        ii, jj = ii[keep], jj[keep]
        yield ii + start, jj + start, dist[ii, jj]


@dataclass(frozen=True)
class FileHash:
    """sha256 of a file's bytes, pHash of its pixels (None if undecodable), and what went wrong."""

    sha256: str | None
    phash: int | None
    truncated: bool
    error: str | None
    filled: bool = False  # truncated with a part of the image missing (not its end marker only)


def hash_file(path: Path) -> FileHash:
    """Hash one file; never raises for a bad image (the error is recorded instead)."""
    try:
        data = path.read_bytes()
    except OSError as e:  # as `predict` says it (io.read_image)
        return FileHash(None, None, False, f"{ImageReadError.code}: cannot read the file ({e.strerror or e})")
    sha = content_hash(data)
    try:
        pixels, truncated, filled = _thumbnail(data, path.name)
    except Exception as e:  # any decoder failure is a finding about this file, not a crash
        return FileHash(sha, None, False, _finding(e))
    return FileHash(sha, phash(pixels), truncated, None, filled)


def _finding(error: Exception) -> str:
    """``code: message`` of a refusal, with the stable code every command shows for it
    (``unsupported_format: ...``); it listed Python's class name (``UnsupportedFormatError: ...``).
    Anything else the decoder raised is an unreadable image, its class name kept as the reason."""
    if isinstance(error, FracsightError):
        return f"{error.code}: {error}" if str(error) else error.code
    return f"{ImageReadError.code}: {type(error).__name__}" + (f": {error}" if str(error) else "")


def _thumbnail(data: bytes, name: str) -> tuple[np.ndarray, bool, bool]:
    """32x32 grayscale pixels, whether the file was truncated, and whether a part of its image was
    missing and filled (a JPEG that lacks only its end marker is whole).

    Pillow decodes whole PNG/JPEG/BMP/TIFF files fast; DICOM, truncated files and anything
    Pillow refuses go through :func:`fracsight.io.read_image`, as train and predict read them:
    a truncated JPEG is read (the missing part filled) and reported truncated, a truncated PNG or
    TIFF is refused and, like any refusal, its message becomes the finding.
    """
    if not name.lower().endswith(".dcm"):
        with suppress(Exception):  # the full reader tries, and its message becomes the finding
            return _pillow_thumbnail(data), False, False
    return _reader_thumbnail(data, name)


def _pillow_thumbnail(data: bytes) -> np.ndarray:
    from fracsight.io import DEFAULT_MAX_PIXELS, MIN_SIDE
    from fracsight.io._raster import marked_as_overlay

    with Image.open(BytesIO(data)) as im:
        if marked_as_overlay(im):  # refused by train and predict: the reader's refusal is the finding
            raise ValueError("a fracsight overlay")
        width, height = im.size
        if width * height > DEFAULT_MAX_PIXELS or min(width, height) < MIN_SIDE:
            # refused by every reader of fracsight: the reader's own refusal becomes the finding
            raise ValueError("outside the size limits")
        # JPEG only: let the decoder shrink huge images, keeping >= 512 px. Coarser drafts
        # (64 px) change the hash by ~0.5 bit on average and invent near-duplicate pairs.
        im.draft("L", (_DRAFT_SIZE, _DRAFT_SIZE))
        im.load()
        im = ImageOps.exif_transpose(im)  # hash the picture as displayed
        if im.mode in ("I", "F") or im.mode.startswith("I;16"):
            a = np.asarray(im, dtype=np.float32)
            lo, hi = float(a.min()), float(a.max())
            im = Image.fromarray((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a))
        else:
            im = im.convert("L")
        return np.asarray(im.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float32)


def _reader_thumbnail(data: bytes, name: str) -> tuple[np.ndarray, bool, bool]:
    from fracsight.io import read_image  # lazy: pulls in pydicom

    radiograph = read_image(data, name=name, reduce_to=_DRAFT_SIZE)  # a JPEG as big as Pillow's draft
    pixels = np.asarray(radiograph.pixels, dtype=np.float32)
    if radiograph.metadata.bit_depth <= 8:  # resized as 8-bit, as by Pillow: the same hash either way
        im = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
    else:
        im = Image.fromarray(pixels)
    im = im.resize((32, 32), Image.Resampling.LANCZOS)
    meta = radiograph.metadata
    return np.asarray(im, dtype=np.float32), bool(meta.truncated), bool(meta.incomplete)
