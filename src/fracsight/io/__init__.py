"""Reading radiographs: PNG, JPEG, BMP, TIFF, GIF and DICOM -> :class:`Radiograph`.

>>> from fracsight.io import read_image
>>> rg = read_image("hand.dcm")                       # doctest: +SKIP
>>> rg.pixels.dtype, rg.metadata.photometric          # doctest: +SKIP
(dtype('float32'), 'MONOCHROME1 (inverted)')

The behaviour for every kind of input (and every refusal) is in docs/reading.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
import os
import re
import stat
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path, PurePath
from typing import Any

from fracsight.errors import (
    DecompressionBombError,
    EmptyFileError,
    ImageReadError,
    ImageTooSmallError,
    MultiFrameError,
    TruncatedImageError,
    UnsupportedFormatError,
)
from fracsight.io._dicom import read_dicom
from fracsight.io._raster import read_raster
from fracsight.io._sniff import (
    DICOM_HEAD,
    HEAD_BYTES,
    SUPPORTED_FORMATS,
    UNRECOGNISED,
    describe_unsupported,
    sniff_format,
)
from fracsight.io.radiograph import ImageMetadata, Radiograph

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "MIN_SIDE",
    "SUPPORTED_FORMATS",
    "UNREAD_IMAGE_SUFFIXES",
    "ImageMetadata",
    "Radiograph",
    "image_stem",
    "names_sharing_a_stem",
    "read_image",
]

#: Largest image (height x width, from the header) read without refusal: 50 megapixels.
DEFAULT_MAX_PIXELS = 50_000_000
#: File name extensions of the formats read_image reads (the format itself is read from the bytes).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".dcm", ".dicom"})
#: Extensions of image formats read_image refuses (phone pictures, JPEG 2000 and XL files): in a folder
#: of views such a file is still one of its images, refused by name rather than passed over.
UNREAD_IMAGE_SUFFIXES = frozenset({".webp", ".heic", ".heif", ".avif", ".jp2", ".j2k", ".jxl"})
#: What a URL given as a path is told.
URL_REFUSAL = "a URL, not a file: fracsight reads files; download it, or mount its storage, first"
#: Smallest accepted side in pixels; anything smaller cannot show a fracture.
MIN_SIDE = 32

# s3://, https://, file://, ...; also their spelling after pathlib folds "//" into "/" (a URL on
# the command line), and never a drive letter (C:/)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def image_stem(name: str | os.PathLike[str]) -> str:
    """A file's name without its image suffix (``wrist.jpg`` -> ``wrist``); whole when its suffix is
    none of :data:`IMAGE_SUFFIXES`: a DICOM named by its UID (``1.2.826.0.1.3680043.8.498.101``) lost
    the UID's last part, so that two such files' overlays got one name."""
    path = PurePath(name)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else path.name


def names_sharing_a_stem(names: Sequence[str]) -> set[str]:
    """The names whose folder holds another of ``names`` with the same :func:`image_stem` (``x.jpg``
    and ``x.png``, ``frac.jpg`` and ``frac.dcm``): their overlays keep the suffix in their names
    (``x.jpg.overlay.png``), as ``predict --overlay-dir``, the web app and the desktop name them.
    Until no two names give one overlay: ``x.jpg.png`` beside those has the stem ``x.jpg``, which
    ``x.jpg``'s overlay now has, so it keeps its suffix too (it got ``x.jpg``'s overlay name)."""
    kept: set[str] = set()

    def overlay_stem(name: str) -> tuple[str, str]:
        path = PurePath(name)
        # without case: x.JPG's overlay and x.jpg.png's are one file on a Mac or Windows disk
        return str(path.parent).casefold(), (path.name if name in kept else image_stem(name)).casefold()

    while True:
        stems = Counter(map(overlay_stem, names))
        sharing = {n for n in names if stems[overlay_stem(n)] > 1}
        if sharing <= kept:
            return kept
        kept |= sharing


def file_name_only(name: str | os.PathLike[str]) -> str:
    """The last part of a name a caller gave for bytes or pixels (``/patients/Doe/x.jpg``,
    ``C:\\Patients\\Doe\\x.jpg`` -> ``x.jpg``): folder names can hold patient names, and a
    result or message keeps the file's name alone. A name with no last part is kept whole."""
    text = os.fspath(name)
    return re.split(r"[\\/]", text.rstrip("\\/"))[-1] or text


def text_cell(value: str) -> str:
    """``value`` as text that a UTF-8 CSV, JSON and Parquet can hold. A file name whose bytes are
    not UTF-8 (an archive written under Latin-1: Python keeps such bytes as lone surrogates)
    crashed the CSV writer; it gets those bytes as ``\\xe9``."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def url_text(path: str | os.PathLike[str]) -> str | None:
    """``path`` as the URL it is (``https://host/x.jpg``, its "//" restored where pathlib folded
    it), or None where it is not one: fracsight reads files, and a URL given as a path was
    "no such file" of a name nobody typed (``https:/host/x.jpg``)."""
    text = os.fsdecode(path)
    if not _URL.match(text):
        return None
    return re.sub(r"^([^:/]+):/(?!/)", r"\1://", text)


def read_image(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = MIN_SIDE,
    strict: bool = False,
    reduce_to: int | None = None,
    frame: int | None = None,
) -> Radiograph:
    """Read one radiograph from a path or raw bytes.

    The format is found from the content, never the extension. Returns float32
    H x W pixels in [0, 1] with bone bright, plus technical metadata (never
    patient identifiers). A DICOM object that is not a projection radiograph is
    refused (:mod:`fracsight.io.dicom_gate`). A DICOM file with several frames is
    read only with ``frame``; other multi-frame files (TIFF, GIF, ...) give their
    first frame, with a warning.

    Args:
        source: a file path, or the file's bytes (e.g. an upload).
        name: the file name used in metadata and messages; defaults to the
            path's file name (never the full path).
        max_pixels: refuse images whose header claims more pixels than this,
            before decoding (:class:`~fracsight.errors.DecompressionBombError`).
        min_side: refuse images whose shorter side is smaller
            (:class:`~fracsight.errors.ImageTooSmallError`).
        strict: refuse truncated JPEGs (:class:`~fracsight.errors.TruncatedImageError`)
            instead of reading them with a warning.
        reduce_to: JPEG only: let the decoder scale the image down by 2, 4 or 8 while
            both sides stay at least this many pixels (for a model whose input is this
            size: faster and lighter, and the letterbox sees nearly the same pixels).
            ``metadata.reduced_from`` then gives the full size, and so does
            :attr:`Radiograph.full_size`. Other formats are always read at full size.
        frame: DICOM only: which frame (0-based) of a multi-frame file to read; without
            it such a file is refused (:class:`~fracsight.errors.MultiFrameError`). For
            other formats only None or 0 (their first frame).

    Raises:
        ImageReadError: or one of its subclasses, for every input that cannot be
            read; the message names the file and the problem.
    """
    # checked before the file is read: a caller's mistake was an unreadable image ("cannot decode
    # this JPEG file: '>' not supported between 'int' and 'NoneType'"); numpy's ints are ints
    frame = _whole(frame, "frame", "a frame index (an int >= 0) or None", least=0, optional=True)
    side = "a side in pixels (an int >= 1)"
    reduce_to = _whole(reduce_to, "reduce_to", f"None or {side}", least=1, optional=True)
    max_pixels = _whole(max_pixels, "max_pixels", "a number of pixels (an int >= 1)", least=1)
    min_side = _whole(min_side, "min_side", side, least=1)
    data, name = _load(source, name)
    label = f"{name}: " if name else ""
    if not data:
        raise EmptyFileError(f"{label}the file is empty (0 bytes)")
    head = data[:HEAD_BYTES]
    fmt = sniff_format(head)
    if fmt is None and len(data) < DICOM_HEAD and describe_unsupported(head) == UNRECOGNISED:
        # an export's IM000002 cut before its DICM (a failed transfer), not "unrecognised binary data"
        raise TruncatedImageError(
            f"{label}the file is only {len(data)} bytes, too short to be an image: cut short in a copy "
            "or a transfer?"
        )
    if fmt is None:
        raise UnsupportedFormatError(
            f"{label}not a supported image: the content looks like {describe_unsupported(head)}"
            f"{_extension_note(name)}. Supported formats: {', '.join(SUPPORTED_FORMATS)}"
        )
    check_size = partial(_check_size, label=label, max_pixels=max_pixels, min_side=min_side)
    if fmt == "dicom":
        radiograph = read_dicom(data, name=name, check_size=check_size, frame=frame)
    elif frame:
        raise MultiFrameError(
            f"{label}frame {frame} asked for: choosing a frame is for DICOM files; a {fmt.upper()} "
            "file is read at its first frame"
        )
    else:
        radiograph = read_raster(
            data, fmt, name=name, check_size=check_size, strict=strict, reduce_to=reduce_to
        )
    if radiograph.metadata.content_sha256 is not None:  # a DICOM instance's own key
        return radiograph
    digest = hashlib.sha256(data)
    if frame:
        digest.update(f"frame {frame}".encode())
    return dataclasses.replace(
        radiograph, metadata=dataclasses.replace(radiograph.metadata, content_sha256=digest.hexdigest())
    )


def _whole(value: Any, argument: str, what: str, *, least: int, optional: bool = False) -> Any:
    """``value`` as an int of at least ``least`` (or None where ``optional``), checked for every
    format (a DICOM does not use ``reduce_to``, but the same call with a JPEG would): ``True`` was
    taken as 1 (a JPEG decoded at 1/8 scale, silently), 0 or a negative side as "no reduction",
    100.5 as 100."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{argument} must be {what}, not {value!r}")
    return int(value)


def _load(source: str | os.PathLike[str] | bytes, name: str | None) -> tuple[bytes, str | None]:
    if name is not None and not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a str or a path, not {type(name).__name__}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), text_cell(file_name_only(name)) if name else name
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"read_image takes a path or bytes, not {type(source).__name__}")
    if not os.fsdecode(source):  # Path("") is the current folder: an unset variable read as "."
        raise ImageReadError("an empty path: name an image file")
    path = Path(source)
    # as text: a Path given as the name went into results that json.dumps refused
    name = (os.fsdecode(name) if name else "") or path.name or os.fsdecode(source)  # "." and "/" have none
    name = text_cell(name)  # a name of bytes that are not UTF-8 made results no JSON or CSV could hold
    if "\0" in os.fsdecode(path):  # a damaged list or manifest: os raises a bare ValueError for it
        raise ImageReadError(f"{name!r}: not a valid path (it holds a NUL character)")
    # one stat, its errors caught: pathlib's is_dir() and exists() raise for "permission denied" and
    # "file name too long" (a folder one can list but not enter, chmod -R 644; a path 4000 long
    # deep in a folder), which ended a whole run instead of giving this file's row
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            if os.access(path, os.R_OK | os.X_OK):
                raise ImageReadError(f"{name}: is a folder, not an image file")
            raise ImageReadError(f"{name}: a folder that cannot be listed (Permission denied)")
        if not stat.S_ISREG(mode):  # /dev/zero never ends; a FIFO blocks
            raise ImageReadError(f"{name}: not a regular file (a device, pipe or socket is not read)")
        with path.open("rb") as f:
            # the first bytes first: a 6 GB disk image named .png was read whole (and a larger one
            # ended the run out of memory) to be called "not a supported image" by its first bytes
            head = f.read(HEAD_BYTES)
            if sniff_format(head) is None:
                return head, name
            f.seek(0)  # read whole once (head + the rest copied the file a second time)
            return f.read(), name
    except FileNotFoundError as e:
        url = url_text(source)
        if url is not None:
            raise ImageReadError(f"{url}: {URL_REFUSAL}") from e
        raise ImageReadError(f"{name}: no such file") from e
    except MemoryError:
        raise ImageReadError(f"{name}: too large to read into memory") from None
    except OSError as e:
        raise ImageReadError(f"{name}: cannot read the file ({e.strerror or e})") from e


def _extension_note(name: str | None) -> str:
    suffix = Path(name).suffix.lower() if name else ""
    return f" despite its {suffix} extension" if suffix in IMAGE_SUFFIXES else ""


def _check_size(height: int, width: int, *, label: str, max_pixels: int, min_side: int) -> None:
    """Refuse from the header's size alone, before any pixel is decoded."""
    if height * width > max_pixels:
        raise DecompressionBombError(
            f"{label}image of {width} x {height} pixels ({height * width:,}) exceeds the limit of "
            f"{max_pixels:,} pixels; refused before decoding"
        )
    if min(height, width) < min_side:
        raise ImageTooSmallError(
            f"{label}image of {width} x {height} pixels is too small: each side must be at least "
            f"{min_side} pixels"
        )
