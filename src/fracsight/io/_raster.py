"""PNG, JPEG, BMP, TIFF and GIF through Pillow -> grayscale float32 in [0, 1]."""

from __future__ import annotations

import io
import logging
import struct
import sys
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fracsight.errors import DecompressionBombError, ImageReadError, OverlayImageError, TruncatedImageError
from fracsight.io.radiograph import ImageMetadata, Radiograph

__all__ = ["COLOUR_WARNING", "PILLOW_MAX_PIXELS", "TRUNCATED_WARNING", "read_raster"]

logger = logging.getLogger(__name__)

# Pillow warns (on stderr) when it opens an image above Image.MAX_IMAGE_PIXELS; every caller here
# has already chosen its own limit (max_pixels, checked from the same header before decoding), so
# the warning only repeats, in alarming words, a decision that is made right after.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
#: the most pixels Pillow opens (twice Image.MAX_IMAGE_PIXELS; 178,956,970), whatever max_pixels says
PILLOW_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else sys.maxsize

TRUNCATED_WARNING = "truncated file: the bottom of the image may be missing"
_JPEG_FILL = 128  # what libjpeg decodes the blocks a cut file lacks to (a zero DC coefficient)
COLOUR_WARNING = "colour image converted to grayscale"  # the OOD guard reads it (fracsight.inference.ood)
# ... and this: a JPEG whose quantization table puts its quality below LOW_JPEG_QUALITY
# (:func:`jpeg_quality`). The model was fitted on FracAtlas's JPEGs, quality 89 and above; at
# quality 20 the blocks read as fractures: on 20 test radiographs the mean probability went from
# 0.34 to 0.59, four normal images "fracture suspected", while no image statistic moved (2026-12-05)
COMPRESSION_WARNING = "heavily compressed JPEG"
LOW_JPEG_QUALITY = 40


def compression_note(quality: int) -> str:
    return f"{COMPRESSION_WARNING} (quality about {quality})"


# Pillow plugins allowed for each sniffed format; no other plugin ever sees the bytes. (MPO files are
# opened by the JPEG plugin, which returns an MpoImageFile; "MPO" is not an opener of its own.)
_PIL_FORMATS = {
    "png": ("PNG",),
    "jpeg": ("JPEG",),
    "bmp": ("BMP",),
    "tiff": ("TIFF",),
    "gif": ("GIF",),
}
# written into every overlay (explain.overlay.overlay_save_options), so that one read again, from a
# folder the overlays were written into, is refused rather than scored as a radiograph
OVERLAY_COMMENT = "fracsight overlay: a picture of a result, with the decision-aid notice; not a radiograph"
OVERLAY_REFUSAL = (
    "an overlay fracsight made of a result (heatmap, boxes, caption), not a radiograph: "
    "predict the image it was made from"
)
_TIFF_PHOTOMETRIC = 262  # the TIFF tag PhotometricInterpretation: 0 WhiteIsZero, 1 BlackIsZero
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as Pillow's convert("L")
_COLOUR_TOLERANCE = 0.02  # mean |R-G|+|G-B| (in [0,1] units) above which a real colour image is reported
_DETECTOR_BITS = (10, 12, 14)  # the depths of radiography detectors, stored in 16-bit files
# Divide by a float32 scalar, not by 255.0: dividing a float32 temporary by a Python float costs
# NumPy a new full-size array instead of working in place (measured: 4 ms against 0.2 ms for a
# 1024 x 842 image). The quotient is the same float32 value either way.
_U8_MAX = np.float32(255)


def read_raster(
    data: bytes,
    fmt: str,
    *,
    name: str | None,
    check_size: Callable[[int, int], None],
    strict: bool,
    reduce_to: int | None = None,
) -> Radiograph:
    """Decode ``data`` (already sniffed as ``fmt``) into a :class:`Radiograph`.

    ``check_size(height, width)`` is called with the header's size before any
    pixel is decoded and raises to refuse it. ``reduce_to``: see :func:`fracsight.io.read_image`.
    """
    label = f"{name}: " if name else ""
    try:
        return _read(
            data, fmt, label=label, name=name, check_size=check_size, strict=strict, reduce_to=reduce_to
        )
    except (ImageReadError, MemoryError):
        raise
    except Image.DecompressionBombError as e:  # Pillow's own limit, checked before ours can be
        raise DecompressionBombError(  # above any limit fracsight reads to, so named as the limit
            f"{label}image too large: its header claims more than {PILLOW_MAX_PIXELS:,} pixels; refused "
            "before decoding"
        ) from e
    except UnidentifiedImageError as e:  # Pillow's message quotes an object repr, not the problem
        raise ImageReadError(
            f"{label}cannot decode this {fmt.upper()} file: its header is damaged or incomplete"
        ) from e
    except Exception as e:  # any other decoder failure: a clean, typed refusal
        raise ImageReadError(f"{label}cannot decode this {fmt.upper()} file: {e}") from e


def _read(
    data: bytes,
    fmt: str,
    *,
    label: str,
    name: str | None,
    check_size: Callable[[int, int], None],
    strict: bool,
    reduce_to: int | None,
) -> Radiograph:
    notes: list[str] = []
    im = Image.open(io.BytesIO(data), formats=_PIL_FORMATS[fmt])  # lazy: reads the header only
    if marked_as_overlay(im):
        raise OverlayImageError(f"{label}{OVERLAY_REFUSAL}")
    width, height = im.size
    check_size(height, width)
    frames = int(getattr(im, "n_frames", 1))
    if frames > 1:
        notes.append(f"{frames} frames in the file; only the first was read")
    truncated, missing, scans_cut = False, 0.0, False
    mode = im.mode
    # read before the load replaces the image: a progressive JPEG cut short has every row, blurred
    progressive = fmt == "jpeg" and bool(im.info.get("progressive") or im.info.get("progression"))
    if fmt == "jpeg":
        _draft_jpeg(im, reduce_to)
    try:
        im.load()
    except OSError as e:
        if "truncated" not in str(e).lower():
            raise
        if fmt != "jpeg":
            raise TruncatedImageError(f"{label}truncated {fmt.upper()} file cannot be read") from e
        if strict:
            raise TruncatedImageError(f"{label}truncated JPEG file (refused because strict=True)") from e
        im = _load_truncated_jpeg(data, reduce_to)
        truncated = True
        missing = _filled_rows(im) / im.size[1]
        # its later scans are what is missing (not where it lacks its end marker alone); looked
        # for in a truncated file only, never on the path of every read
        scans_cut = progressive and _scans_unfinished(data)
        if missing:
            notes.append(
                f"truncated file: the bottom {max(missing, 0.01):.0%} of the image is missing (filled grey)"
            )
        elif scans_cut:  # 90% of a file gone was "every row was decoded", reliable
            notes.append(
                "truncated file: a progressive JPEG cut short; its later scans are missing, so the "
                "image has less detail than it should"
            )
        else:
            notes.append("truncated file: it ends without its end marker, but every row was decoded")
    quality = jpeg_quality(im) if fmt == "jpeg" else None
    if quality is not None and quality < LOW_JPEG_QUALITY:
        notes.append(compression_note(quality))
    decoded = im.size
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception as e:  # malformed EXIF must not cost the image
        logger.debug("EXIF orientation ignored: %s", e)
        notes.append("EXIF orientation could not be read and was ignored")
    pixels, bit_depth = _to_gray(im, data if fmt == "png" else b"", notes)
    if fmt == "png" and _png_colour_16bit(data):
        notes.append(_COLOUR_16BIT)
    if fmt == "tiff" and white_is_zero(im):
        pixels = 1.0 - pixels  # as a MONOCHROME1 DICOM: bone bright, as every other reader shows it
        mode = f"{mode} WhiteIsZero (inverted)"
    reduced_from = None
    if decoded != (width, height):  # the decoder scaled the image down; give the full size as displayed
        turned = pixels.shape != (decoded[1], decoded[0])  # EXIF orientation swapped the axes
        reduced_from = (width, height) if turned else (height, width)
    for note in notes:
        logger.debug("%s%s", label, note)  # with the name a user gave it: a patient's, perhaps
    meta = ImageMetadata(
        source_format=fmt,
        original_size=(height, width),
        bit_depth=bit_depth,
        photometric=mode,
        truncated=truncated,
        incomplete=truncated and (bool(missing) or scans_cut),
        frames=frames,
        name=name,
        warnings=tuple(notes),
        reduced_from=reduced_from,
    )
    return Radiograph(pixels=pixels, metadata=meta)


def _scans_unfinished(data: bytes) -> bool:
    """Whether a progressive JPEG's scans leave some coefficient of some component unfinished (no
    scan of it with successive approximation bit 0): a file cut short before its last scans; one
    that lacks its end marker alone (every scan there) is whole."""
    components: list[int] = []
    finished: set[tuple[int, int]] = set()
    i = 2
    while (i := data.find(b"\xff", i)) != -1 and i + 4 <= len(data):
        marker = data[i + 1]
        if marker in (0x00, 0xFF) or 0xD0 <= marker <= 0xD7:  # stuffing, fill, restart: in scan data
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:
            break
        segment = data[i + 4 : i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")]
        if marker in (0xC2, 0xC6, 0xCA, 0xCE) and len(segment) >= 6:  # a progressive frame header
            components = [segment[6 + 3 * j] for j in range(segment[5]) if 6 + 3 * j < len(segment)]
        elif marker == 0xDA and segment and len(segment) >= 4 + 2 * segment[0]:
            n = segment[0]
            start, end, approximation = segment[1 + 2 * n : 4 + 2 * n]
            if approximation & 0x0F == 0:
                finished.update((segment[1 + 2 * j], k) for j in range(n) for k in range(start, end + 1))
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return any((c, k) not in finished for c in components for k in range(64))


# the mean of the IJG base luminance table (ITU-T T.81 K.1), which quality 50 uses as it is
_IJG_LUMINANCE_MEAN = 57.625


def jpeg_quality(im: Image.Image) -> int | None:
    """The IJG quality (1-100) whose luminance table has the mean of this JPEG's, or None without
    tables: an estimate, as other encoders scale their tables otherwise (a mean, not the DC step
    alone: a table of DC 24 and fine AC steps is a fine image)."""
    tables = getattr(im, "quantization", None) or {}
    luminance = tables.get(0)
    if not luminance:
        return None
    scale = sum(luminance) / len(luminance) / _IJG_LUMINANCE_MEAN * 100  # the IJG scale factor, in percent
    return max(1, min(100, round(5000 / scale if scale > 100 else (200 - scale) / 2)))


def marked_as_overlay(im: Image.Image) -> bool:
    """Whether the file carries :data:`OVERLAY_COMMENT` (a PNG text chunk or a JPEG comment)."""
    comment = im.info.get("Comment") or im.info.get("comment") or ""
    if isinstance(comment, bytes):
        comment = comment.decode("latin-1")
    return isinstance(comment, str) and comment.startswith(OVERLAY_COMMENT)


def white_is_zero(im: Image.Image) -> bool:
    """Whether a TIFF stores white as 0 (PhotometricInterpretation 0) in a mode Pillow leaves as
    stored: it inverts 1-, 4- and 8-bit grey itself, not 16-bit or float ones."""
    tags = getattr(im, "tag_v2", None)
    stored_as_is = im.mode.startswith("I") or im.mode == "F"
    return tags is not None and tags.get(_TIFF_PHOTOMETRIC) == 0 and stored_as_is


def _draft_jpeg(im: Image.Image, reduce_to: int | None) -> None:
    """Tell libjpeg how to decode: at 1/2, 1/4 or 1/8 scale when ``reduce_to`` is given (both
    sides kept at least ``reduce_to``), and a colour JPEG as its stored YCbCr.

    The scaling happens in the DCT domain while decoding: a 1024 x 842 radiograph meant for
    a 384-px model comes out at 512 x 421, so everything after the decoder handles a quarter
    of the pixels (decoding itself gains less: its entropy decoding is the same at any scale).
    A JPEG's Y channel is the BT.601 luma that the grey image is made of, so YCbCr output spares
    the conversion to RGB and back (radiographs exported as three-channel JPEGs are common; on
    FracAtlas's such images reading took 1.9 ms instead of 0.5 for 373 x 454); the chroma
    channels still tell a real colour image (:func:`_ycbcr_luma`). An Adobe JPEG that stores RGB
    itself (``adobe_transform`` 0) is decoded as RGB.
    """
    stored_ycbcr = im.mode == "RGB" and im.info.get("adobe_transform", 1) != 0
    im.draft("YCbCr" if stored_ycbcr else None, (reduce_to, reduce_to) if reduce_to else None)


def _load_truncated_jpeg(data: bytes, reduce_to: int | None) -> Image.Image:
    """Decode a JPEG cut short, without touching Pillow's global ``LOAD_TRUNCATED_IMAGES``.

    Appending an End-Of-Image marker lets libjpeg finish the scan: the missing rows
    come out grey, exactly as with the global flag, but only for this call.
    """
    im = Image.open(io.BytesIO(data + b"\xff\xd9"), formats=_PIL_FORMATS["jpeg"])
    _draft_jpeg(im, reduce_to)
    im.load()
    return im


def _filled_rows(im: Image.Image) -> int:
    """How many rows at the bottom of a decoded cut JPEG are the decoder's grey fill (before any
    EXIF turn, so they are still at the bottom)."""
    luma = np.asarray(im.getchannel(0) if im.mode in ("YCbCr", "RGB", "CMYK") else im.convert("L"))
    uniform = np.all(luma == _JPEG_FILL, axis=1)
    return int(np.argmin(uniform[::-1])) if not uniform.all() else len(uniform)


def _to_gray(im: Image.Image, png_bytes: bytes, notes: list[str]) -> tuple[np.ndarray, int]:
    """Pixels as float32 H x W in [0, 1] and the bit depth they were scaled by."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im.convert("L"), dtype=np.float32) / _U8_MAX, 1
    if mode == "L":
        return np.asarray(im, dtype=np.float32) / _U8_MAX, 8
    if mode == "YCbCr":
        return _ycbcr_luma(im, notes), 8
    if mode.startswith("I;16"):
        return _scale_16bit(np.asarray(im), png_bytes, notes)
    if mode == "I":
        arr = np.asarray(im)
        if arr.size and arr.min() >= 0 and arr.max() <= 0xFFFF:
            return _scale_16bit(arr, png_bytes, notes)
        return _min_max(arr, notes), 32
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        if np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 1.0:
            return arr.copy(), 32
        return _min_max(arr, notes), 32
    # Colour and palette modes: luminance, alpha composited on black.
    has_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in im.info)
    if mode in ("LA", "La"):
        arr = np.asarray(im.convert("LA"))
        gray = arr[..., 0].astype(np.float32) / _U8_MAX
    else:
        arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
        gray = _luminance(arr, notes)
    if has_alpha:
        alpha = arr[..., -1]
        if (alpha < 255).any():
            gray *= alpha.astype(np.float32) / _U8_MAX
            notes.append("transparent pixels were composited on black")
    return gray, 8


def _luminance(rgb: np.ndarray, notes: list[str]) -> np.ndarray:
    """BT.601 luma of a uint8 H x W x 3(+) array, in float32 [0, 1]."""
    out = rgb[..., 0] * np.float32(_LUMA[0] / 255.0)
    for channel in (1, 2):
        out += rgb[..., channel] * np.float32(_LUMA[channel] / 255.0)
    np.clip(out, 0.0, 1.0, out=out)
    sample = rgb[::4, ::4]  # a colour check does not need every pixel
    r, g, b = (sample[..., c].astype(np.int16) for c in range(3))
    spread = (np.abs(r - g).mean() + np.abs(g - b).mean()) / 255.0
    if spread > _COLOUR_TOLERANCE:
        notes.append(f"{COLOUR_WARNING} (luminance)")
    return out


# The value _luminance gives a grey RGB pixel (v, v, v), for every v: not v / 255, from which its
# sum of three float32 products differs in the last bit, enough to move an INT8 model's answers
# (the packaged bundles were fitted and measured on these values).
_GREY_LUMA = _luminance(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2), [])[0]


def _ycbcr_luma(im: Image.Image, notes: list[str]) -> np.ndarray:
    """The Y channel of a decoded JPEG, in float32 [0, 1], with the colour check of
    :func:`_luminance` made on the chroma of every fourth pixel: |R-G| and |G-B| follow from Cb
    and Cr by the JPEG (JFIF) conversion, so the same tolerance reports the same images."""
    luma = np.take(_GREY_LUMA, np.asarray(im.getchannel(0)))  # the RGB path's value for grey
    width, height = im.size
    sample = im.resize((max(1, width // 4), max(1, height // 4)), Image.Resampling.NEAREST)
    chroma = np.asarray(sample, dtype=np.float32)[..., 1:] - 128.0
    cb, cr = chroma[..., 0], chroma[..., 1]
    red_green, green_blue = 0.344136 * cb + 2.116136 * cr, 2.116136 * cb + 0.714136 * cr
    spread = (np.abs(red_green).mean() + np.abs(green_blue).mean()) / 255.0
    if spread > _COLOUR_TOLERANCE:
        notes.append(f"{COLOUR_WARNING} (luminance)")
    return luma


def _scale_16bit(arr: np.ndarray, png_bytes: bytes, notes: list[str]) -> tuple[np.ndarray, int]:
    """Scale 16-bit samples by the bit range they use, never by the image's own min/max.

    A PNG sBIT chunk, when present, gives the significant bits. Otherwise the data are taken to
    have the fewest bits of a detector's (10, 12 or 14) that hold their largest value: radiographs
    are stored in 16 bits with their detector's depth, and a 14-bit image divided by 65535 read at
    a quarter of its brightness. Only values above 16383 are full 16-bit.
    """
    bits = _png_significant_bits(png_bytes)
    if bits is None:
        peak = int(arr.max()) if arr.size else 0
        bits = next((b for b in _DETECTOR_BITS if peak < 1 << b), 16)
        if bits < 16:
            notes.append(f"16-bit image uses at most {bits} bits; scaled by {(1 << bits) - 1}")
    top = float(2**bits - 1)
    out = np.clip(arr.astype(np.float32) / np.float32(top), 0.0, 1.0)
    return out, bits


_COLOUR_16BIT = (
    "16-bit colour or grey-and-alpha PNG read at 8 bits a sample (the decoder keeps the high byte): "
    "save a radiograph as a grey PNG without alpha to keep its depth"
)


def _png_colour_16bit(data: bytes) -> bool:
    """Whether a PNG's IHDR says 16-bit RGB, grey and alpha, or RGBA (colour type 2, 4 or 6), which
    Pillow decodes to 8 bits: 12-bit data in it come out nearly black."""
    return len(data) >= 26 and data[12:16] == b"IHDR" and data[24] == 16 and data[25] in (2, 4, 6)


def _png_significant_bits(data: bytes) -> int | None:
    """The grey sample's significant bits from a PNG sBIT chunk (before IDAT), else None."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind in (b"IDAT", b"IEND"):
            return None
        if kind == b"sBIT" and length >= 1 and pos + 9 <= len(data):
            bits = data[pos + 8]
            return bits if 1 <= bits <= 16 else None
        pos += 12 + length
    return None


def _min_max(arr: np.ndarray, notes: list[str]) -> np.ndarray:
    """Stretch arbitrary-range data (32-bit int or float) to [0, 1]; non-finite values become 0."""
    values = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        notes.append("non-finite pixel values were set to 0")
        values = np.where(finite, values, 0.0)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    notes.append("pixel values outside a standard range; stretched from min/max to [0, 1]")
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)
