"""DICOM through pydicom (imported lazily) -> grayscale float32 in [0, 1], bone bright.

Only technical tags are read. Patient, study and institution elements are never
accessed, so they cannot reach metadata, warnings, logs or error messages.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from fracsight.errors import (
    CorruptImageError,
    ImageReadError,
    NoPixelDataError,
    UnsupportedFormatError,
    UnsupportedPhotometricError,
)
from fracsight.io.radiograph import ImageMetadata, Radiograph

__all__ = ["read_dicom"]

logger = logging.getLogger(__name__)

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_BITS_ALLOCATED = (1, 8, 16, 32)
_MAX_ERROR_DETAIL = 200  # characters of a decoder's own message kept in ours


def read_dicom(data: bytes, *, name: str | None, check_size: Callable[[int, int], None]) -> Radiograph:
    """Decode the first frame of a DICOM file.

    ``check_size(rows, columns)`` is called before the pixel data is touched and
    raises to refuse it.
    """
    label = f"{name}: " if name else ""
    try:
        pydicom = _import_pydicom(label)
        return _read(pydicom, data, label=label, name=name, check_size=check_size)
    except (ImageReadError, MemoryError):
        raise
    except Exception as e:  # any other parser or decoder failure: a clean, typed refusal
        detail = str(e)[:_MAX_ERROR_DETAIL]
        raise ImageReadError(f"{label}cannot decode this DICOM file: {type(e).__name__}: {detail}") from e


def _import_pydicom(label: str) -> Any:
    try:
        import pydicom
        import pydicom.pixels  # the decoders
    except ImportError as e:
        raise UnsupportedFormatError(f"{label}reading DICOM needs pydicom: pip install pydicom") from e
    return pydicom


def _read(
    pydicom: Any, data: bytes, *, label: str, name: str | None, check_size: Callable[[int, int], None]
) -> Radiograph:
    notes: list[str] = []
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    if "PixelData" not in ds:
        raise NoPixelDataError(
            f"{label}DICOM file has no (7FE0,0010) Pixel Data: not an image "
            "(perhaps a report, a structured document or a DICOMDIR)"
        )
    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if not photometric:
        photometric = "MONOCHROME2"
        notes.append("PhotometricInterpretation missing; assumed MONOCHROME2")
    if photometric not in _MONOCHROME or samples != 1:
        raise UnsupportedPhotometricError(
            f"{label}DICOM PhotometricInterpretation {photometric[:32]!r} with {samples} sample(s) per "
            "pixel is not supported: radiographs must be MONOCHROME1 or MONOCHROME2 (grayscale)"
        )
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols:
        raise CorruptImageError(f"{label}DICOM file has pixel data but no Rows/Columns")
    rows, cols = int(rows), int(cols)
    check_size(rows, cols)
    bits_allocated = int(ds.get("BitsAllocated") or 0)
    bits_stored = int(ds.get("BitsStored") or bits_allocated)
    if bits_allocated not in _BITS_ALLOCATED:
        raise CorruptImageError(
            f"{label}DICOM BitsAllocated {bits_allocated} is not supported (expected one of 1, 8, 16, 32)"
        )
    if not 1 <= bits_stored <= bits_allocated:
        raise CorruptImageError(
            f"{label}DICOM BitsStored {bits_stored} does not fit BitsAllocated {bits_allocated}"
        )
    frames = int(ds.get("NumberOfFrames") or 1)
    transfer_syntax = _transfer_syntax(pydicom, ds)
    _require_decoder(pydicom, transfer_syntax, label)
    if not transfer_syntax.is_encapsulated:
        _check_native_length(ds, rows * cols * frames * bits_allocated, label, notes)
    if frames > 1:
        notes.append(f"{frames} frames in the file; only the first was read")

    arr = pydicom.pixels.pixel_array(ds, index=0)
    if arr.shape != (rows, cols):
        raise CorruptImageError(f"{label}decoded pixel data has shape {arr.shape}, expected ({rows}, {cols})")
    pixels = _to_unit_range(pydicom, arr, ds, notes)
    if photometric == "MONOCHROME1":
        pixels = 1.0 - pixels
        photometric = "MONOCHROME1 (inverted)"
    for note in notes:
        logger.info("%s%s", label, note)
    meta = ImageMetadata(
        source_format="dicom",
        original_size=(rows, cols),
        bit_depth=bits_stored,
        photometric=photometric,
        pixel_spacing_mm=_spacing(ds),
        body_part=_code_string(ds, "BodyPartExamined"),
        view=_code_string(ds, "ViewPosition"),
        frames=frames,
        name=name,
        warnings=tuple(notes),
    )
    return Radiograph(pixels=pixels.astype(np.float32), metadata=meta)


def _transfer_syntax(pydicom: Any, ds: Any) -> Any:
    """The file's transfer syntax; for a bare data set, the encoding it was read with."""
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid is None:
        implicit, little = ds.original_encoding
        uid = pydicom.uid.ImplicitVRLittleEndian if implicit else pydicom.uid.ExplicitVRLittleEndian
        if little is False:
            uid = pydicom.uid.ExplicitVRBigEndian
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = uid
    return pydicom.uid.UID(uid)


def _require_decoder(pydicom: Any, uid: Any, label: str) -> None:
    try:
        available = pydicom.pixels.get_decoder(uid).is_available
    except NotImplementedError:
        available = False
    if not available:
        described = uid.name if uid.name == str(uid) else f"{uid.name} ({uid})"
        raise UnsupportedFormatError(
            f"{label}DICOM transfer syntax {described} cannot be decoded here: no decoder "
            "installed (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg and pylibjpeg-rle cover most)"
        )


def _check_native_length(ds: Any, expected_bits: int, label: str, notes: list[str]) -> None:
    expected = (expected_bits + 7) // 8
    actual = len(ds.PixelData)
    if actual < expected:
        raise CorruptImageError(
            f"{label}DICOM pixel data is {actual} bytes, but Rows x Columns x frames x BitsAllocated "
            f"({ds.Rows} x {ds.Columns} x {ds.get('NumberOfFrames') or 1} x {ds.BitsAllocated}) "
            f"needs {expected} bytes"
        )
    if actual > expected + 1:  # one byte of padding to even length is normal
        notes.append(f"pixel data has {actual - expected} bytes more than the header implies; ignored")
        ds.PixelData = ds.PixelData[: expected + expected % 2]  # so pydicom does not warn about it again


def _to_unit_range(pydicom: Any, arr: np.ndarray, ds: Any, notes: list[str]) -> np.ndarray:
    """Modality LUT (rescale), then VOI LUT or window; map the output range to [0, 1].

    With a VOI LUT the LUT's output range maps to [0, 1]; with a window, the
    window (values below it -> 0, above it -> 1). Without either, the first
    frame's own min/max.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

    values = apply_modality_lut(arr, ds)
    lo = hi = None
    if ds.get("VOILUTSequence"):
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        first, entries = int(descriptor[1]), int(descriptor[0]) or 2**16
        lut_out = apply_voi(np.arange(first, first + entries, dtype=np.int64), ds)
        lo, hi = float(lut_out.min()), float(lut_out.max())
        values = apply_voi(np.rint(values).astype(np.int64), ds)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            with np.errstate(over="ignore"):
                limits = apply_windowing(np.array([-1e15, 1e15]), ds)  # the window's output range
                values = apply_windowing(values, ds)
            lo, hi = float(limits[0]), float(limits[1])
        except (ValueError, TypeError, IndexError) as e:
            notes.append(f"window center/width unusable ({str(e)[:_MAX_ERROR_DETAIL]}); min/max used instead")
    values = np.asarray(values, dtype=np.float64)
    if lo is None or hi is None or hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        notes.append("all pixels have the same value")
        return np.zeros(values.shape, dtype=np.float32)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _spacing(ds: Any) -> tuple[float, float] | None:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            pair = (float(value[0]), float(value[1]))
        except (TypeError, ValueError, IndexError):
            continue
        if all(np.isfinite(pair)) and min(pair) > 0:
            return pair
    return None


def _code_string(ds: Any, keyword: str) -> str | None:
    """A short technical code string (CS) such as BodyPartExamined, or None."""
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text[:64] or None
