"""Format detection from the first bytes of a file (magic numbers), never from its extension."""

from __future__ import annotations

import re
import struct
from pathlib import Path

__all__ = [
    "DICOM_HEAD",
    "HEAD_BYTES",
    "SUPPORTED_FORMATS",
    "UNRECOGNISED",
    "describe_unsupported",
    "holds_image",
    "image_head",
    "sniff_format",
]

#: How many leading bytes :func:`sniff_format` needs to see.
HEAD_BYTES = 512

#: Formats read_image accepts, as named in messages.
SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "DICOM")

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_BMP_DIB_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
# Explicit-VR codes (PS3.5 table 6.2-1), to recognise a DICOM data set written without preamble.
_DICOM_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB", b"OD",
    b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI",
    b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
}  # fmt: skip

# Things people upload by mistake, to say what the file looks like instead.
_KNOWN_OTHERS = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
    (b"8BPS", "a Photoshop document"),
    (b"\x7fELF", "an executable"),
    (b"MZ", "an executable"),
)


def sniff_format(head: bytes) -> str | None:
    """Return ``"png"``, ``"jpeg"``, ``"bmp"``, ``"tiff"``, ``"gif"``, ``"dicom"`` or None.

    ``head`` is the start of the file (:data:`HEAD_BYTES` is enough). A DICOM file
    is recognised by ``DICM`` at offset 128, or, without the 128-byte preamble, by
    a first element that is a plausible group 0002 or 0008 tag. ``DICM`` at offset
    128 wins over every other magic: the preamble is free for applications (PS3.10
    7.1), and "dual-personality" files start it with a TIFF header (PS3.10 7.5) so
    that TIFF readers see an image too.
    """
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(_TIFF_MAGICS):
        return "tiff"
    if head.startswith(b"BM") and len(head) >= 18:
        (dib_size,) = struct.unpack_from("<I", head, 14)
        if dib_size in _BMP_DIB_HEADER_SIZES:
            return "bmp"
    if _is_bare_dicom(head):
        return "dicom"
    return None


def _is_bare_dicom(head: bytes) -> bool:
    """True when ``head`` looks like a little-endian DICOM data set without preamble."""
    if len(head) < 8:
        return False
    group, element = struct.unpack_from("<HH", head, 0)
    if group not in (0x0002, 0x0008) or element > 0x0100:
        return False
    if head[4:6] in _DICOM_VRS:  # explicit VR
        return True
    (length,) = struct.unpack_from("<I", head, 4)  # implicit VR: a small value length
    return length < 256 and length % 2 == 0


def known_other(head: bytes) -> str | None:
    """What a file of a known format fracsight does not read is (a PDF, an archive, a WebP image,
    an executable), by its first bytes; None for anything else."""
    for magic, what in _KNOWN_OTHERS:
        if head.startswith(magic):
            return what
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if head[4:8] == b"ftyp":
        return "an HEIF/AVIF image or an MP4 video"
    return None


UNRECOGNISED = "unrecognised binary data"


def describe_unsupported(head: bytes) -> str:
    """A short phrase saying what an unsupported file looks like (for error messages)."""
    known = known_other(head)
    if known is not None:
        return known
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if text.startswith(b"<?xml") or text.startswith(b"<svg"):
        return "an XML or SVG document"
    return "a text file" if looks_like_text(head) else UNRECOGNISED


def looks_like_text(head: bytes) -> bool:
    """Whether ``head`` reads as printable UTF-8 text (lines, tabs)."""
    for cut in range(4):  # a multi-byte character may be cut at the end of the head
        try:
            decoded = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return bool(decoded) and all(c.isprintable() or c in "\t\r\n" for c in decoded)
    return False


DICOM_HEAD = 132  # the preamble and DICM: a shorter file cannot be told a DICOM

# the names PACS and CD exports give DICOM files without an extension: IM000001, I0001, a UID
_EXPORT_NAME = re.compile(r"(?:im|img|i)?[_-]?\d+|\d+(?:\.\d+)+", re.IGNORECASE)


def holds_image(path: Path, *, unopenable: bool = True) -> bool:
    """True when ``path`` is a regular file whose first bytes are a supported image's (a DICOM
    named ``IM000001`` or by its UID), or (``unopenable``) one that cannot be judged: it cannot be
    opened, or it is named as an export names its DICOM files and is too short to tell (empty, cut
    before ``DICM``) or a link to nothing, the marks of a failed transfer. How a folder's files
    without an image extension are judged: taken, the reader says what is wrong with each; left
    out, a PACS export's ``IM0002`` vanished from its study unsaid."""
    if not path.is_file():  # opening a named pipe waits for a writer: a folder scan hung on one
        dangling = path.is_symlink() and not path.exists()
        return unopenable and dangling and _EXPORT_NAME.fullmatch(path.name) is not None
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError:
        return unopenable
    return image_head(path.name, head, exported=unopenable)


def image_head(name: str, head: bytes, *, exported: bool = True) -> bool:
    """Whether a file named ``name`` whose first bytes are ``head`` is taken as an image: a
    supported image's head, or (``exported``) an export's name with a head too short to tell, the
    mark of a failed transfer (empty, cut before ``DICM``, a server's error body saved in its
    place). A name of digits alone holding text is a note (``1``, ``20240115``), not an image."""
    if sniff_format(head) is not None:
        return True
    if not exported or _EXPORT_NAME.fullmatch(name) is None or len(head) >= DICOM_HEAD:
        return False
    return not (name.isdigit() and _reads_as_text(head))


def _reads_as_text(head: bytes) -> bool:
    """Text in UTF-8, UTF-16 (with its byte order mark) or a Windows code page (cp1252, Latin-1)."""
    if looks_like_text(head) or head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    decoded = head.decode("latin-1")
    return bool(decoded) and all(c.isprintable() or c in "\t\r\n" for c in decoded)
