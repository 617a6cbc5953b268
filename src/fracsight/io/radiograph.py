"""The in-memory radiograph: pixels plus the metadata that travels with them."""

from __future__ import annotations

import io
import threading
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["ImageMetadata", "Radiograph"]

# PIL modes a TIFF cannot hold, and the mode of the same picture that it can: grey with
# premultiplied alpha failed with Pillow's own error
_TIFF_AS = {"La": "LA", "RGBa": "RGBA"}


def pixel_aspect_of(shape: tuple[float, float] | None) -> float:
    """A pixel's height over its width from a DICOM's (row, column) aspect ratio or spacing; 1 for
    none, for square pixels (within 1%: a rounding in the header is no reason to resample) and
    beyond 1:5, where the header is more likely wrong than the film (a detector's pixels are
    square). The model's letterbox and the aspect the DICOM results declare both follow it: a film
    digitised at 0.286 x 0.143 mm was read squashed 2:1, taken for a turned image, its boxes off."""
    if shape is None:
        return 1.0
    aspect = shape[0] / shape[1]
    return aspect if abs(aspect - 1.0) > 0.01 and plausible_aspect(aspect) else 1.0


def plausible_aspect(aspect: float) -> bool:
    """A pixel's height over its width within 1:5 (:func:`pixel_aspect_of`)."""
    return 0.2 <= aspect <= 5.0


# Pillow decodes an image lazily, and two threads decoding one Image object at once read it half
# decoded ("image file is truncated", an AttributeError): one image given to predict from several
# threads, or listed twice in predict_many (a view given twice), failed at random
_PIL_DECODING = threading.Lock()


@dataclass(frozen=True)
class ImageMetadata:
    """What is known about where the pixels came from.

    Never holds patient identifiers: the DICOM reader copies only technical
    tags (photometric interpretation, bit depth, spacing, body part, view).
    """

    source_format: str  # "png", "jpeg", "bmp", "tiff", "gif", "dicom"
    original_size: tuple[int, int]  # (height, width) of the stored image
    bit_depth: int
    photometric: str  # e.g. "MONOCHROME2", "MONOCHROME1 (inverted)", "L", "RGB"
    pixel_spacing_mm: tuple[float, float] | None = None
    # a DICOM's Pixel Aspect Ratio (0028,0034), (row, column), where it gives the shape of its pixels
    pixel_aspect_ratio: tuple[int, int] | None = None
    body_part: str | None = None
    view: str | None = None
    truncated: bool = False  # the file ends early (a JPEG or compressed DICOM frame without its end)
    # part of the image is missing from the file and the decoder filled it in: the model did not
    # see all of it (a truncated JPEG whose every row was decoded is ``truncated`` but complete)
    incomplete: bool = False
    frames: int = 1
    name: str | None = None  # file name (not path) when read from disk
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # (height, width) of the full-resolution image, as displayed, when the reader was asked to
    # decode a JPEG at reduced scale (``read_image(reduce_to=...)``); None: the pixels are full size
    reduced_from: tuple[int, int] | None = None
    # sha256 of the file's bytes (and the frame read, for a DICOM frame), set by ``read_image``: a
    # study counts a copy under another name once; for a DICOM, of the pixels read (one image saved
    # twice, in another transfer syntax or with an edited header, is one view); None for an array
    content_sha256: str | None = None
    # a digest of a DICOM's Study Instance UID, so that a study of views from several examinations
    # is told; in no output (a study's identity is the PACS's to show)
    study_digest: str | None = field(default=None, repr=False)
    # the same of its Patient ID: views of two patients under one Study Instance UID are told too
    patient_digest: str | None = field(default=None, repr=False)

    @property
    def pixel_aspect(self) -> float:
        """A pixel's height over its width, as the model reads the image: :func:`pixel_aspect_of`
        its Pixel Aspect Ratio, else its spacing; 1 for every format but DICOM."""
        return pixel_aspect_of(self.pixel_aspect_ratio or self.pixel_spacing_mm)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["study_digest"], d["patient_digest"]
        d["original_size"] = list(self.original_size)
        d["warnings"] = list(self.warnings)
        if self.pixel_spacing_mm is not None:
            d["pixel_spacing_mm"] = list(self.pixel_spacing_mm)
        if self.pixel_aspect_ratio is not None:
            d["pixel_aspect_ratio"] = list(self.pixel_aspect_ratio)
        if self.reduced_from is not None:
            d["reduced_from"] = list(self.reduced_from)
        return d


@dataclass(frozen=True, eq=False)
class Radiograph:
    """float32 H x W array in [0, 1], bone bright, plus :class:`ImageMetadata`.

    Two radiographs are equal when their metadata and every pixel are (``==`` on the generated
    dataclass compared the arrays element-wise and raised "truth value ... is ambiguous")."""

    pixels: np.ndarray
    metadata: ImageMetadata

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Radiograph):
            return NotImplemented
        return self.metadata == other.metadata and np.array_equal(self.pixels, other.pixels)

    __hash__ = None  # type: ignore[assignment]  # pixels are a mutable array

    def __post_init__(self) -> None:
        p = self.pixels
        if p.ndim != 2 or p.dtype != np.float32:
            raise ValueError(f"Radiograph pixels must be a 2-D float32 array, got {p.dtype} {p.shape}")

    @classmethod
    def from_array(cls, image: Any, *, name: str | None = None) -> Radiograph:
        """A radiograph from an image already in memory, read by the rules of
        :func:`~fracsight.io.read_image` (a colour image becomes its luminance, with a warning; an
        image under 32 pixels a side or over 50 megapixels is refused as a file would be).

        ``image``: a numpy array (or anything ``np.asarray`` takes), bone bright: (H, W) grayscale as
        uint8 (0..255), uint16 (scaled as a 16-bit PNG without ``sBIT`` is: by the detector depth,
        10, 12 or 14 bits, that its brightest value fits, else 16; docs/reading.md) or floats in
        [0, 1]; or (H, W, 3|4) uint8 RGB(A). Anything else raises
        :class:`~fracsight.errors.InvalidPixelsError` saying what to change: NaN or infinite values,
        floats outside [0, 1] and other integer types (their scale is not guessed at), bool, an
        empty array. A PIL image is read as its file would be (its EXIF orientation applied, a
        WhiteIsZero TIFF inverted, palette transparency composited on black; a 32-bit image
        scaled as a 16-bit one when its values fit 0..65535, else, as a float one outside
        [0, 1], stretched from its range, with a warning), except that it keeps no record of a
        PNG's ``sBIT`` chunk: its 16-bit samples are scaled by the detector depth their brightest
        value fits (give the file itself for ``sBIT`` to count). One that cannot be decoded (cut
        short, closed) raises an :class:`~fracsight.errors.ImageReadError`. (``Predictor.predict``
        reads a PIL JPEG not yet decoded from its file's bytes, as its path, at the reduced scale.)
        ``name`` names it in messages and results. ``metadata.source_format`` is ``"array"``.

        >>> Radiograph.from_array(np.zeros((64, 48), np.uint8)).pixels.shape
        (64, 48)
        """
        from PIL import Image, ImageOps

        from fracsight.errors import ImageReadError, InvalidPixelsError, OverlayImageError
        from fracsight.io import file_name_only, read_image
        from fracsight.io._raster import (
            LOW_JPEG_QUALITY,
            OVERLAY_REFUSAL,
            compression_note,
            jpeg_quality,
            marked_as_overlay,
            white_is_zero,
        )

        name = file_name_only(name) if name else name
        label = name or "array"
        inverted = isinstance(image, Image.Image) and white_is_zero(image)  # the TIFF below says BlackIsZero
        quality = jpeg_quality(image) if isinstance(image, Image.Image) else None  # the TIFF keeps no tables
        if isinstance(image, Image.Image):
            if marked_as_overlay(image):  # the TIFF below would drop the mark its file is refused by
                raise OverlayImageError(f"{label}: {OVERLAY_REFUSAL}")
            try:  # decoded here: a file cut short or closed failed below with Pillow's own error
                with _PIL_DECODING:
                    image.load()
                    pil = ImageOps.exif_transpose(image)  # as the file's reader turns it
            # AttributeError: Pillow's own, from a file closed under it
            except (OSError, ValueError, AssertionError, SyntaxError, AttributeError) as e:
                why = str(e) or "was it closed, or its file removed?"  # Pillow asserts without a word
                raise ImageReadError(f"{label}: the PIL image cannot be decoded: {why}") from None
            if 0 in pil.size:
                raise InvalidPixelsError(f"{label}: the image is empty ({pil.width} x {pil.height} pixels)")
            if pil.mode == "P" and "transparency" in pil.info:  # a TIFF keeps no palette transparency
                pil = pil.convert("RGBA")
            if pil.mode in _TIFF_AS:  # modes TIFF cannot hold, kept as what they are
                pil = pil.convert(_TIFF_AS[pil.mode])
            elif pil.mode == "I;16N":  # 16-bit grey in the machine's byte order: it went through
                pil = Image.fromarray(np.asarray(pil, dtype=np.uint16))  # RGBA, its read far off
        else:
            pil = Image.fromarray(_as_image_array(image))
        buffer = io.BytesIO()
        try:  # TIFF holds every mode below (8/16-bit, float, RGB(A), palette) without loss
            pil.save(buffer, format="TIFF")
        except (OSError, ValueError, KeyError):  # a Pillow mode TIFF has no place for (e.g. "HSV")
            buffer = io.BytesIO()
            try:
                pil.convert("RGBA").save(buffer, format="TIFF")
            except (OSError, ValueError, KeyError):
                raise InvalidPixelsError(
                    f"{label}: a PIL image in mode {pil.mode} is not read: convert it to L, I;16 or RGB"
                ) from None
        radiograph = read_image(buffer.getvalue(), name=label)
        pixels, photometric = radiograph.pixels, radiograph.metadata.photometric
        if inverted:  # as read_image turns the file: bone bright
            pixels, photometric = 1.0 - pixels, f"{photometric} WhiteIsZero (inverted)"
        # no digest: it would be of this TIFF, not of a file the user has
        metadata = replace(radiograph.metadata, source_format="array", name=name, content_sha256=None)
        if quality is not None and quality < LOW_JPEG_QUALITY:
            metadata = replace(metadata, warnings=(*metadata.warnings, compression_note(quality)))
        return cls(pixels, replace(metadata, photometric=photometric))

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def full_size(self) -> tuple[int, int]:
        """(height, width) at full resolution: the pixels' own size unless the reader reduced them."""
        return self.metadata.reduced_from or (self.height, self.width)


def _as_image_array(image: Any) -> np.ndarray:
    """``image`` as an array Pillow stores without changing a value (uint8, uint16, float32,
    (H, W, 3|4) uint8), or :class:`~fracsight.errors.InvalidPixelsError` saying why it cannot be."""
    from fracsight.errors import InvalidPixelsError

    a = np.asarray(image)
    if a.size == 0:
        raise InvalidPixelsError(f"the image is empty (shape {a.shape})")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not a.dtype.isnative:  # big-endian, as np.fromfile(..., ">u2") reads a detector's raw dump
        a = a.astype(a.dtype.newbyteorder("="))
    kind = a.dtype.kind
    if kind not in "uif":
        what = "bool" if kind == "b" else f"{type(image).__name__} of {a.dtype}"
        raise InvalidPixelsError(
            f"pixels of {what}: give a grayscale image as uint8, uint16 or floats in [0, 1]"
        )
    if a.ndim == 3 and a.shape[2] in (3, 4):
        if a.dtype != np.uint8:
            raise InvalidPixelsError(f"a colour image must be uint8 (H, W, 3|4), got {a.dtype}")
        return np.ascontiguousarray(a)
    if a.ndim != 2:
        raise InvalidPixelsError(
            f"expected (H, W) grayscale or (H, W, 3|4) colour pixels, got shape {a.shape}"
        )
    if kind == "f":
        if not np.isfinite(a).all():
            raise InvalidPixelsError("float pixels hold NaN or infinite values: give finite values in [0, 1]")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            # a resampling's overshoot (cubic zoom: -0.03 to 1.06) was told to divide by 255, and
            # 1 + 1e-12 was printed as "1"
            advice = (
                "clip them (np.clip(a, 0, 1)): a resampling or filter overshoots a little"
                if lo > -0.1 and hi < 1.1
                else "divide by the image's full scale first (255 for 8-bit, 4095 for 12-bit, 65535 "
                "for 16-bit)"
            )
            raise InvalidPixelsError(f"float pixels must be in [0, 1], got {lo!r} to {hi!r}: {advice}")
        return np.ascontiguousarray(a, dtype=np.float32)
    if a.dtype not in (np.uint8, np.uint16):  # 0..255 in an int64 array: 8-bit, or a dark 16-bit image?
        raise InvalidPixelsError(
            f"integer pixels of {a.dtype}: their scale cannot be told; cast to uint8 (8-bit) or uint16 "
            "(12- or 16-bit), or window signed data (e.g. Hounsfield units) to floats in [0, 1]"
        )
    return np.ascontiguousarray(a)
