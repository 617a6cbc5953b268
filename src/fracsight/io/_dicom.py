"""DICOM through pydicom (imported lazily) -> grayscale float32 in [0, 1], bone bright.

Only technical tags are read. Patient, study and institution elements are never
accessed, so they cannot reach metadata, warnings, logs or error messages.

Before any pixel is decoded, :func:`fracsight.io.dicom_gate.check_dicom_object`
refuses objects that are not projection radiographs (CT, MR, NM, reports, ...).
Colour-stored images (RGB, YBR_*, PALETTE COLOR) are read when their channels agree
(a grey image stored in colour, as secondary captures often are) and refused when
they are really in colour. A file with several frames is read only when the caller
names the frame.

pydicom's own Python warnings are silenced in the process that imports this module: they
describe how a file departs from the standard (an encoding other than its header says, an
unknown element), which fracsight either reads past or refuses with its own error, and they
can quote an element's value, which may be an identifier. They came out on a user's terminal
as a line of pydicom's source code.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import logging
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from fracsight.errors import (
    CorruptImageError,
    DecompressionBombError,
    ImageReadError,
    MultiFrameError,
    NoPixelDataError,
    UnsupportedFormatError,
    UnsupportedPhotometricError,
)
from fracsight.io._raster import LOW_JPEG_QUALITY, TRUNCATED_WARNING, compression_note, jpeg_quality
from fracsight.io.dicom_gate import READ_SOP_CLASSES, check_dicom_object, clean_code_string
from fracsight.io.radiograph import ImageMetadata, Radiograph, pixel_aspect_of, plausible_aspect

__all__ = ["COLOUR_STORED", "GREY_TOLERANCE", "MAX_COLOURED_SHARE", "read_dicom"]

logger = logging.getLogger(__name__)
warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
# pydicom logs each decoder plugin's failure with its traceback at ERROR before raising; the reader
# turns the failure into one ImageReadError, so the tracebacks would only fill a server's log
logging.getLogger("pydicom.pixels.decoders.base").setLevel(logging.CRITICAL)

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
#: Three-sample photometric interpretations; pydicom converts the YBR ones to RGB when decoding.
COLOUR_STORED = (
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
    "YBR_PARTIAL_420",
    "YBR_PARTIAL_422",
)
_PALETTE = "PALETTE COLOR"
#: A pixel of a colour-stored image is grey when its R, G and B differ by at most this share of
#: full scale (8 of 255: absorbs the rounding of YBR -> RGB and lossy JPEG's chroma noise) ...
GREY_TOLERANCE = 0.03
#: ... and the image is grey when at most this share of its pixels is not (a coloured
#: annotation, arrow or overlay larger than this makes it a colour image: refused).
MAX_COLOURED_SHARE = 0.001
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as for colour PNG/JPEG (fracsight.io._raster)
_BITS_ALLOCATED = (1, 8, 16, 32)
_MAX_ERROR_DETAIL = 200  # characters of a decoder's own message kept in ours
#: The most a Deflated Explicit VR Little Endian data set may inflate to: above any radiograph within
#: the reader's pixel limit (50 Mpx x 32 bits, or x 3 samples of 8), far below what a zip bomb claims
#: (pydicom inflates the whole data set at once: 1.5 MB of file took 2.9 GB before this check).
MAX_INFLATED_BYTES = 512 << 20
_DEFLATED_UID = b"1.2.840.10008.1.2.1.99"
_JPEG_BASELINE = "1.2.840.10008.1.2.4.50"  # 8-bit: its tables are on the IJG quality scale
_LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
# JPEG and JPEG-LS frame headers (SOFn, SOF55): their height and width are what a decoder allocates
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})


def read_dicom(
    data: bytes, *, name: str | None, check_size: Callable[[int, int], None], frame: int | None = None
) -> Radiograph:
    """Decode one frame of a DICOM file.

    ``check_size(rows, columns)`` is called before the pixel data is touched and
    raises to refuse it. ``frame`` (0-based) must be given for a file with several
    frames (:class:`~fracsight.errors.MultiFrameError` otherwise).
    """
    label = f"{name}: " if name else ""
    try:
        pydicom = _import_pydicom(label)
        with _values_not_validated(pydicom):
            return _read(pydicom, data, label=label, name=name, check_size=check_size, frame=frame)
    except (ImageReadError, MemoryError):
        raise
    except Exception as e:  # any other parser or decoder failure: a clean, typed refusal
        detail = _without_values((str(e).strip().splitlines() or [""])[0])[:_MAX_ERROR_DETAIL]
        raise ImageReadError(f"{label}cannot decode this DICOM file: {type(e).__name__}: {detail}") from e


def _without_values(message: str) -> str:
    """A library's message without what it quotes (pydicom quotes the header's values, which may be
    a patient's name) or object addresses."""
    message = re.sub(r" at 0x[0-9a-f]+", "", message)
    return re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", message)


class _ValidationOff:
    """While any user is inside, one of pydicom's global value-validation modes is IGNORE.

    pydicom checks each value it converts and, when one is malformed, warns and logs the
    value itself. In a damaged file a value whose length is wrong swallows the elements
    after it, patient name and ID included, and they would reach the log. The setting is
    pydicom's global, so concurrent users (in any thread) share one switch; the caller's own
    setting comes back when the last one leaves. ``mode``: ``"reading"`` or ``"writing"``.
    """

    def __init__(self, mode: str) -> None:
        self._mode = mode
        self._lock = threading.Lock()
        self._users = 0
        self._saved: Any = None

    @contextmanager
    def __call__(self, pydicom: Any) -> Iterator[None]:
        settings = pydicom.config.settings
        stored = f"_{self._mode}_validation_mode"  # the raw value: the property maps None to a default
        with self._lock:
            if self._users == 0:
                self._saved = getattr(settings, stored)
                setattr(settings, f"{self._mode}_validation_mode", pydicom.config.IGNORE)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    setattr(settings, stored, self._saved)


#: For every DICOM read (fracsight.io) and every result object built (fracsight.dicom.results).
_values_not_validated = _ValidationOff("reading")
_values_not_checked_on_writing = _ValidationOff("writing")


def _import_pydicom(label: str) -> Any:
    try:
        import pydicom
        import pydicom.pixels  # the decoders
    except ImportError as e:
        raise UnsupportedFormatError(f"{label}reading DICOM needs pydicom: pip install pydicom") from e
    return pydicom


def _read(
    pydicom: Any,
    data: bytes,
    *,
    label: str,
    name: str | None,
    check_size: Callable[[int, int], None],
    frame: int | None,
) -> Radiograph:
    notes: list[str] = []
    deflated = _deflated_data_set(pydicom, data)
    if deflated is not None:
        _check_inflated_size(data[deflated:], label)
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    notes.extend(check_object(ds, label))
    if "PixelData" not in ds:
        raise NoPixelDataError(f"{label}DICOM file has no (7FE0,0010) Pixel Data: {_why_no_pixels(ds)}")
    if not ds.PixelData:  # the element there without a value: an anonymiser's blanking, a failed copy
        raise NoPixelDataError(
            f"{label}DICOM file's (7FE0,0010) Pixel Data is empty (0 bytes): no image to read"
        )
    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if not photometric:
        photometric = "MONOCHROME2"
        notes.append("PhotometricInterpretation missing; assumed MONOCHROME2")
    _check_photometric(photometric, samples, label)
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
    signed = ds.get("PixelRepresentation")  # 1: two's complement; missing or invalid: unsigned
    _settle_header(
        ds,
        notes,
        PhotometricInterpretation=photometric,
        SamplesPerPixel=samples,
        BitsStored=bits_stored,
        PixelRepresentation=signed if signed in (0, 1) else 0,
    )
    transfer_syntax = _transfer_syntax(pydicom, ds)
    _require_decoder(transfer_syntax, label)
    frames = int(ds.get("NumberOfFrames") or 1)
    if transfer_syntax.is_encapsulated and frames == 1:  # said 1 by a damaged or edited header too
        frames = _count_encapsulated_frames(pydicom, ds, transfer_syntax, notes)
    index = _frame_index(frames, frame, label, notes)
    lift_functional_groups(ds, index)
    if not transfer_syntax.is_encapsulated:
        _check_native_length(
            ds, native_pixel_bits(rows, cols, frames, bits_allocated, samples, photometric), label, notes
        )

    codestream = _codestream(pydicom, ds, transfer_syntax, index, frames)
    if codestream is not None:
        _check_codestream_size(codestream, rows, cols, label, transfer_syntax)
    # a JPEG, JPEG-LS or JPEG 2000 frame without the marker every complete one ends with (EOI / EOC,
    # FF D9, before the even-length padding): a frame cut short in transit
    truncated = codestream is not None and not codestream.rstrip(b"\0").endswith(b"\xff\xd9")
    if truncated:  # the JPEG decoders return what they got, filled with one value: say so
        notes.append(f"compressed pixel data without its end-of-image marker: {TRUNCATED_WARNING}")
    if codestream is not None and transfer_syntax == _JPEG_BASELINE:
        # as for a .jpg file (the OOD guard reads the note): quality 20 inside a DICOM moved a
        # normal radiograph from 0.18 to 0.59, reliable, where the same .jpg was not
        quality = _baseline_quality(codestream)
        if quality is not None and quality < LOW_JPEG_QUALITY:
            notes.append(compression_note(quality))
    try:
        arr = pydicom.pixels.pixel_array(ds, index=index)  # YBR_* comes out as RGB
    except (MemoryError, KeyboardInterrupt, SystemExit):
        raise
    # the decoders' own messages list every plugin tried, with object addresses; a Rust decoder's
    # panic (pylibjpeg-rle on a segment longer than the image) is pyo3's PanicException, a
    # BaseException: a traceback ended `predict` with every other file's result lost. Not handed
    # to pydicom's own decoder: it cuts such a segment to length with a warning only, and a run
    # header damaged mid-segment came out as 38 % noise, predicted "reliable"
    except BaseException as e:
        raise _undecodable(label, transfer_syntax) from e
    if photometric in _MONOCHROME:
        if arr.shape != (rows, cols):
            raise CorruptImageError(
                f"{label}decoded pixel data has shape {arr.shape}, expected ({rows}, {cols})"
            )
        inverted = photometric == "MONOCHROME1"
        pixels = _to_unit_range(pydicom, arr, ds, notes, inverted=inverted)
        if not np.isfinite(pixels).all():  # never NaN to the network, whatever the header held
            raise CorruptImageError(f"{label}DICOM pixel values are not finite after the header's rescale")
        if inverted:
            photometric = "MONOCHROME1 (inverted)"
        bit_depth = bits_stored
    else:
        if photometric == _PALETTE:
            if arr.shape != (rows, cols):
                raise CorruptImageError(
                    f"{label}decoded pixel data has shape {arr.shape}, expected ({rows}, {cols})"
                )
            try:
                arr = pydicom.pixels.apply_color_lut(arr, ds)
            except (ValueError, KeyError, AttributeError) as e:  # pydicom's own words named no fix
                raise CorruptImageError(
                    f"{label}a PALETTE COLOR image without a usable colour lookup table (its Palette "
                    "Color Lookup Table Module is missing or damaged): its grey values cannot be known"
                ) from e
            bit_depth = _palette_bits(ds, arr)
        else:
            bit_depth = bits_stored
        if arr.shape != (rows, cols, 3):
            raise CorruptImageError(
                f"{label}decoded pixel data has shape {arr.shape}, expected ({rows}, {cols}, 3)"
            )
        pixels = _grey_from_colour(arr, 2**bit_depth - 1, photometric, label)
        photometric = f"{photometric} (grey, read as grayscale)"
    body_part = _code_string(ds, "BodyPartExamined", notes)
    view = _code_string(ds, "ViewPosition", notes)
    for note in notes:
        logger.debug("%s%s", label, note)  # with the name a user gave it: a patient's, perhaps
    pixels = pixels.astype(np.float32)
    meta = ImageMetadata(
        source_format="dicom",
        original_size=(rows, cols),
        bit_depth=bit_depth,
        photometric=photometric,
        pixel_spacing_mm=_spacing(ds),
        pixel_aspect_ratio=_aspect_ratio(ds),
        body_part=body_part,
        view=view,
        frames=frames,
        name=name,
        warnings=tuple(notes),
        truncated=truncated,
        incomplete=truncated,  # how much the decoder filled in cannot be told here: assume some
        study_digest=_digest_of(ds.get("StudyInstanceUID")),
        patient_digest=_digest_of(ds.get("PatientID")),
    )
    # the image read, not the file: one image saved twice (in another transfer syntax, or with a
    # header value edited, as a copy made by an anonymiser) is one view of a study; not its SOP
    # Instance UID, which a careless anonymiser sets alike in every file of a study
    digest = _pixels_digest(pixels, meta.pixel_aspect)
    return Radiograph(pixels=pixels, metadata=dataclasses.replace(meta, content_sha256=digest))


def _pixels_digest(pixels: np.ndarray, aspect: float) -> str:
    # the pixel aspect too: the same pixels at another aspect are letterboxed, and read, otherwise
    # (a study counted them as one view given twice, and dropped one of two different results)
    digest = hashlib.sha256(f"dicom {pixels.shape} aspect {aspect!r}".encode())
    digest.update(np.ascontiguousarray(pixels))  # read in place: no copy of a 20 MB film
    return digest.hexdigest()


def _digest_of(value: Any) -> str | None:
    text = str(value or "").strip("\0 ")
    return hashlib.sha256(text.encode()).hexdigest() if text else None


def _settle_header(ds: Any, notes: list[str], **assumed: Any) -> None:
    """Put into the parsed header (this reader's own copy) the values the reader went on, so that
    pydicom's decoders, which take the header as written, read the image as they say: a lower-case
    ``monochrome1``, a missing SamplesPerPixel or a BitsStored of 0 made every image of such a file
    "damaged". A value that was there but differs is noted."""
    for keyword, value in assumed.items():
        given = ds.get(keyword)
        if given == value:
            continue
        if keyword != "PhotometricInterpretation" or given:  # a missing one is noted already
            shown = (
                "missing" if given in (None, "") else repr(given[:16]) if isinstance(given, str) else given
            )
            notes.append(f"{keyword} {shown}; read as {value}")
        setattr(ds, keyword, value)


def _codestream(pydicom: Any, ds: Any, transfer_syntax: Any, index: int, frames: int) -> bytes | None:
    """Frame ``index``'s JPEG, JPEG-LS or JPEG 2000 codestream; None for other syntaxes, or when the
    frame cannot be found (a broken offset table: the decoder then says what is wrong)."""
    uid = pydicom.uid
    if transfer_syntax not in (
        *uid.JPEGTransferSyntaxes,
        *uid.JPEGLSTransferSyntaxes,
        *uid.JPEG2000TransferSyntaxes,
    ):
        return None
    try:
        return bytes(pydicom.encaps.get_frame(ds.PixelData, index, number_of_frames=frames))
    except Exception:
        return None


def _count_encapsulated_frames(pydicom: Any, ds: Any, transfer_syntax: Any, notes: list[str]) -> int:
    """The frames of compressed pixel data whose header does not say (Number of Frames missing or
    0) or says 1, told from the data: its offset table, else its fragments that begin a frame.
    Taken as one, the first frame of several was read as the image, without a word, where
    uncompressed data warned. An RLE fragment begins a frame with its header (:func:`_rle_header`);
    a JPEG-family fragment begins a frame only after one that ended a codestream (FF D9 before the
    even-length padding), with its start marker followed by the next marker: FF 4F alone occurs
    inside JPEG 2000 and JPEG-LS data, and one image split over fragments was refused as two."""
    buffer = io.BytesIO(ds.PixelData)
    starts = (b"\xff\xd8\xff", b"\xff\x4f\xff\x51")  # SOI then a marker; SOC then SIZ (JPEG 2000)
    try:
        frames = len(pydicom.encaps.parse_basic_offsets(buffer))
        if frames == 0:  # no offset table (one of one entry says one frame, as the header does)
            rle = transfer_syntax == pydicom.uid.RLELossless
            frames, ended = 0, True
            for fragment in pydicom.encaps.generate_fragments(buffer):
                frames += _rle_header(fragment) if rle else ended and fragment[:4].startswith(starts)
                ended = fragment.rstrip(b"\0").endswith(b"\xff\xd9")
    except Exception:  # damaged: the decoder says how
        return 1
    if frames > 1:
        said = "missing or 0" if not ds.get("NumberOfFrames") else f"{ds.NumberOfFrames}"
        notes.append(f"NumberOfFrames {said}; the compressed pixel data holds {frames} frames")
        ds.NumberOfFrames = frames  # for the decoder, which finds a frame by it
    return max(frames, 1)


def _rle_header(fragment: bytes) -> bool:
    """Whether an RLE fragment begins a frame: with its 64-byte header (1-15 segments, the first
    at offset 64). One frame is one fragment by the standard, but dcmtk's ``dcmcrle +fs`` splits
    one, and a one-frame image was refused as 78 frames."""
    if len(fragment) < 64:
        return False
    segments, first = struct.unpack_from("<2I", fragment)
    return 1 <= segments <= 15 and first == 64


def _undecodable(label: str, transfer_syntax: Any) -> ImageReadError:
    return ImageReadError(
        f"{label}the pixel data could not be decoded as {transfer_syntax.name}: damaged, or not what "
        "its transfer syntax says"
    )


def _check_codestream_size(codestream: bytes, rows: int, cols: int, label: str, transfer_syntax: Any) -> None:
    """Refuse a frame whose own header gives another size than Rows x Columns, before it is decoded.

    The decoders allocate what the codestream says, not what the DICOM header says: a 1.5 kB file
    whose header says 64 x 64, holding a JPEG that says 30000 x 30000, took 4.3 GB to refuse.
    """
    size = _jpeg_size(codestream) if codestream[:2] == b"\xff\xd8" else _j2k_size(codestream)
    if size is None:  # what the decoder would say
        raise _undecodable(label, transfer_syntax)
    if size != (rows, cols) and size != (0, cols):  # height 0: given after the scan (a DNL marker)
        raise CorruptImageError(
            f"{label}DICOM compressed frame is {size[0]} x {size[1]} pixels, but Rows x Columns say "
            f"{rows} x {cols}; not decoded"
        )


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the frame header (SOFn) of a JPEG or JPEG-LS codestream."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan: every frame header comes before it
            return None
        (length,) = struct.unpack_from(">H", data, i + 2)
        if marker in _SOF_MARKERS and i + 9 <= len(data):
            return struct.unpack_from(">HH", data, i + 5)
        i += 2 + length
    return None


def _j2k_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the SIZ segment of a JPEG 2000 codestream (bare or in a JP2 file)."""
    siz = data.find(b"\xff\x4f\xff\x51")  # SOC, then SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz
    if siz < 0 or siz + 24 > len(data):
        return None
    x, y, x0, y0 = struct.unpack_from(">IIII", data, siz + 8)
    return y - y0, x - x0


def _deflated_data_set(pydicom: Any, data: bytes) -> int | None:
    """Where the data set starts when the file meta names the Deflated Explicit VR Little Endian
    transfer syntax; None when it names another.

    The meta group's few elements are walked here (microseconds); a group this walk cannot follow
    (not explicit VR, an undefined length) is read by pydicom, as dcmread reads it (about 0.2 ms).
    """
    i, deflated = (132 if data[128:132] == b"DICM" else 0), False
    while i + 8 <= len(data) and struct.unpack_from("<H", data, i)[0] == 2:
        vr = data[i + 4 : i + 6]
        long = vr in _LONG_LENGTH_VRS
        if not (vr.isalpha() and vr.isupper()) or (long and i + 12 > len(data)):
            return _deflated_data_set_by_pydicom(pydicom, data)
        (length,) = struct.unpack_from("<I" if long else "<H", data, i + (8 if long else 6))
        if length == 0xFFFFFFFF:
            return _deflated_data_set_by_pydicom(pydicom, data)
        start = i + (12 if long else 8)
        if struct.unpack_from("<H", data, i + 2)[0] == 0x0010:  # (0002,0010) Transfer Syntax UID
            deflated = data[start : start + length].rstrip(b"\0 ") == _DEFLATED_UID
        i = start + length
    return i if deflated else None


def _deflated_data_set_by_pydicom(pydicom: Any, data: bytes) -> int | None:
    stream = io.BytesIO(data)
    pydicom.filereader.read_preamble(stream, True)
    meta = pydicom.filereader._read_file_meta_info(stream)
    return (
        stream.tell() if meta.get("TransferSyntaxUID") == pydicom.uid.DeflatedExplicitVRLittleEndian else None
    )


def _check_inflated_size(deflated: bytes, label: str) -> None:
    """Refuse a deflated data set that inflates past :data:`MAX_INFLATED_BYTES`, inflating it piece
    by piece (pydicom inflates it whole)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size, rest = 0, deflated
    while rest and not inflater.eof:
        try:
            size += len(inflater.decompress(rest, 1 << 24))
        except zlib.error:
            return  # not deflate data: pydicom says so
        rest = inflater.unconsumed_tail
        if size > MAX_INFLATED_BYTES:
            raise DecompressionBombError(
                f"{label}DICOM deflated data set expands to more than {MAX_INFLATED_BYTES >> 20} MB; "
                "refused unread"
            )


def _why_no_pixels(ds: Any) -> str:
    """An image's SOP class without pixel data is a file cut short (pixel data comes last), not a
    report: say so, so that the user copies it again instead of looking for another kind of file."""
    uid = str(_sop_class(ds) or "").strip().rstrip("\0")
    if uid in READ_SOP_CLASSES:
        return f"the file of a {READ_SOP_CLASSES[uid]} image ends before its pixels (cut short in a copy?)"
    return "not an image (perhaps a report, a structured document or a DICOMDIR)"


def check_object(ds: Any, label: str = "") -> tuple[str, ...]:
    """:func:`~fracsight.io.dicom_gate.check_dicom_object` on a parsed header (pixels not needed):
    refuses what is no projection radiograph, returns the warnings for one that is."""
    return check_dicom_object(
        ds.get("Modality"), _sop_class(ds), label=label, model_name=ds.get("ManufacturerModelName")
    )


def _sop_class(ds: Any) -> Any:
    """SOP Class UID, else the file meta's Media Storage SOP Class UID; None when neither."""
    uid = ds.get("SOPClassUID")
    if uid is None and getattr(ds, "file_meta", None) is not None:
        uid = ds.file_meta.get("MediaStorageSOPClassUID")
    return uid


def _check_photometric(photometric: str, samples: int, label: str) -> None:
    """Refuse photometric interpretations (and sample counts) that are neither grey nor
    colour this reader can test for greyness."""
    if photometric in _MONOCHROME and samples == 1:
        return
    if photometric == _PALETTE and samples == 1:
        return
    if photometric in COLOUR_STORED and samples == 3:
        return
    code = clean_code_string(photometric)  # free text in a malformed header is never echoed
    shown = repr(code) if code else "(not a valid code string; not shown)"
    raise UnsupportedPhotometricError(
        f"{label}DICOM PhotometricInterpretation {shown} with {samples} sample(s) per "
        "pixel is not supported: radiographs must be MONOCHROME1 or MONOCHROME2 (grayscale), or grey "
        "stored as RGB, YBR or PALETTE COLOR"
    )


def _frame_index(frames: int, frame: int | None, label: str, notes: list[str]) -> int:
    """The frame to decode: the only one, or the one asked for (0-based)."""
    if frames < 1:
        raise CorruptImageError(f"{label}DICOM NumberOfFrames {frames} is not a number of frames")
    if frame is None:
        if frames > 1:
            raise MultiFrameError(
                f"{label}DICOM file holds {frames} frames: fracsight assesses one image at a time and "
                "does not choose a frame for you; send the frames as separate images (in Python, "
                f"name one: read_image(..., frame=0 to {frames - 1}))"
            )
        return 0
    if not 0 <= frame < frames:
        raise MultiFrameError(
            f"{label}frame {frame} asked for, but the DICOM file holds {frames} frame(s) (0 to {frames - 1})"
        )
    if frames > 1:
        notes.append(f"frame {frame} of {frames} (0-based) read, as asked; the other frames were not read")
    return frame


def _palette_bits(ds: Any, rgb: np.ndarray) -> int:
    """Bits per entry of a palette's output (the Red LUT Descriptor's third value)."""
    descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
    try:
        bits = int(descriptor[2])
    except (TypeError, ValueError, IndexError):
        bits = 0
    return bits if bits in (8, 16) else 8 * rgb.dtype.itemsize


def _grey_from_colour(rgb: np.ndarray, full_scale: int, photometric: str, label: str) -> np.ndarray:
    """A colour-stored image whose channels agree -> grey values in [0, 1]; refuse a colour one.

    The values are presentation values (PS3.3 C.7.6.3.1.2: no VOI applies to colour), so
    they are scaled by full scale, as a colour PNG or JPEG is (not min/max-stretched).
    """
    spread = rgb.max(axis=-1).astype(np.int32) - rgb.min(axis=-1)
    coloured = np.count_nonzero(spread > GREY_TOLERANCE * full_scale) / spread.size
    if coloured > MAX_COLOURED_SHARE:
        raise UnsupportedPhotometricError(
            f"{label}DICOM {photometric!r} image is in colour: {coloured:.1%} of its pixels differ "
            f"between the colour channels by more than {GREY_TOLERANCE:.0%} (at most "
            f"{MAX_COLOURED_SHARE:.1%} may). Radiographs are grey: a colour image (a photograph, a "
            "colour-mapped image, a capture with coloured overlays) is not read; send the original "
            "radiograph"
        )
    if not spread.any():  # exactly grey: any channel is the image
        grey = rgb[..., 0].astype(np.float32)
    else:  # one channel at a time in float32: a 50-megapixel image stays within a few hundred MB
        grey = np.zeros(rgb.shape[:2], dtype=np.float32)
        for channel, weight in enumerate(_LUMA):
            grey += rgb[..., channel].astype(np.float32) * np.float32(weight)
    return np.clip(grey / np.float32(max(full_scale, 1)), 0.0, 1.0)


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


def decoder_available(uid: Any) -> bool:
    """Whether this installation decodes pixel data in transfer syntax ``uid`` (a pydicom UID)."""
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(uid).is_available
    except NotImplementedError:  # pydicom knows no decoder for it at all
        return False


def _require_decoder(uid: Any, label: str) -> None:
    if not decoder_available(uid):
        if not uid.is_valid:  # free text (a patient's name, even) where a UID belongs: never echoed
            described = "(not a valid UID; not shown)"
        else:
            described = uid.name if uid.name == str(uid) else f"{uid.name} ({uid})"
        raise UnsupportedFormatError(
            f"{label}DICOM transfer syntax {described} cannot be decoded here: no installed decoder "
            "handles it (fracsight reads uncompressed, JPEG, JPEG-LS, JPEG 2000 and RLE pixel data; "
            "have the sender transcode to one of them)"
        )


def native_pixel_bits(
    rows: int, cols: int, frames: int, bits_allocated: int, samples: int, photometric: str
) -> int:
    """Bits of uncompressed Pixel Data: YBR_FULL_422 holds two samples per pixel, not three
    (PS3.3 C.7.6.3.1.2)."""
    per_pixel = bits_allocated * (2 if photometric.strip().upper() == "YBR_FULL_422" else samples)
    return rows * cols * frames * per_pixel


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


def _baseline_quality(codestream: bytes) -> int | None:
    """The IJG quality of a JPEG Baseline frame, from its quantization tables (nothing decoded)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(codestream), formats=["JPEG"]) as im:
            return jpeg_quality(im)
    except Exception:  # tables Pillow cannot parse: the decoder says what it finds
        return None


def _to_unit_range(pydicom: Any, arr: np.ndarray, ds: Any, notes: list[str], *, inverted: bool) -> np.ndarray:
    """Modality LUT (rescale), then VOI LUT or window; map the output range to [0, 1], high values
    to 0 where ``inverted`` (MONOCHROME1).

    With a VOI LUT the LUT's output range maps to [0, 1]; with a window, the
    window (values below it -> 0, above it -> 1). Without either, the first
    frame's own min/max, over the pixels that are not padding (Pixel Padding Value, up to the
    Pixel Padding Range Limit: a collimation border written as 4095 or 65535 squeezed the image
    into part of the grey range, by up to 0.14 in probability). Padding is black either way.
    """
    from pydicom.pixels import apply_modality_lut, apply_windowing

    padding = _padding(arr, ds)
    drop_unusable_rescale(ds, notes)
    _modality_lut_in_words(ds, notes)
    with np.errstate(over="ignore", invalid="ignore"):
        values = apply_modality_lut(arr, ds)
    if ("RescaleSlope" in ds or "RescaleIntercept" in ds) and (
        not np.isfinite(values).all() or (np.ptp(values) == 0 < np.ptp(arr))
    ):
        # finite numbers that still overflow the pixels to inf (a slope of 1e308), or swamp them
        # (an intercept of 1e308: every pixel equal); the window's range uses the rescale too
        notes.append(
            "the DICOM rescale takes the pixel values out of range; the stored values are read unscaled"
        )
        _unscale(ds)
        values = arr.astype(np.float64)
    lo = hi = None
    table = None
    if ds.get("VOILUTSequence"):
        try:
            first, _, table = voi_lut_entries(ds.VOILUTSequence[0], read_little_endian(ds))
        except (AttributeError, IndexError, TypeError, ValueError) as e:
            notes.append(f"VOI LUT unusable ({type(e).__name__}); its window or min/max used instead")
    if table is not None:
        lo, hi = float(table.min()), float(table.max())
        values = table[np.clip(np.rint(values).astype(np.int64) - first, 0, table.size - 1)]
    elif (window := first_window(ds)) is not None and not usable_window(window):
        # NaN or infinite: no error from pydicom, but every pixel NaN (the CLI predicted on it)
        notes.append(
            "window center/width unusable (not finite, or a width not above 0); min/max used instead"
        )
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                limits = apply_windowing(np.array([-1e15, 1e15]), ds)  # the window's output range
                windowed = apply_windowing(values, ds)
            if not (np.isfinite(limits).all() and np.isfinite(windowed).all()):
                # pydicom's output range is BitsStored's times the slope: it can overflow alone
                notes.append("the DICOM window's output is not a finite number; min/max used instead")
            elif np.ptp(windowed) == 0 < np.ptp(values):  # a window far off the pixels: one grey
                notes.append("the DICOM window maps every pixel to one grey; min/max used instead")
            else:
                values, lo, hi = windowed, float(limits[0]), float(limits[1])
        except (ValueError, TypeError, IndexError) as e:
            # the type only: pydicom's message quotes the header's value (a VOI LUT Function that
            # held a patient's name went into every warning, the CSV and the API's answer)
            notes.append(f"window center/width unusable ({type(e).__name__}); min/max used instead")
    values = np.asarray(values, dtype=np.float64)
    if lo is not None and hi is not None and hi < lo:
        # a negative Rescale Slope (Agfa CRs write -10): pydicom's window runs its output from high
        # to low, and the image was read inverted, as reliable
        values, lo, hi = lo + hi - values, hi, lo
    if lo is None or hi is None or hi <= lo:
        image = values if padding is None else values[~padding]
        lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        notes.append("all pixels have the same value")
        unit = np.full(values.shape, 1.0 if inverted else 0.0, dtype=np.float32)
    else:
        # inverted from the range's other end, not as 1 - x: one image stored MONOCHROME1 (values
        # 4095 - v) and MONOCHROME2 (v) then reads to the same bits, and a study counts it once (1 - x
        # rounded differently: two views, one given double weight, and the study's region flipped)
        unit = np.clip(((hi - values) if inverted else (values - lo)) / (hi - lo), 0.0, 1.0).astype(
            np.float32
        )
    if padding is not None:  # black as shown
        unit[padding] = 0.0
    return unit


def _padding(arr: np.ndarray, ds: Any) -> np.ndarray | None:
    """Where the stored values are padding (PS3.3 C.7.5.1.1.2: Pixel Padding Value, or the range
    from it to Pixel Padding Range Limit), or None: no padding, unusable values, or padding only."""
    try:
        value = int(ds.PixelPaddingValue)
        limit = int(ds.PixelPaddingRangeLimit) if "PixelPaddingRangeLimit" in ds else value
    except (AttributeError, TypeError, ValueError):  # absent, several values, text
        return None
    low, high = min(value, limit), max(value, limit)
    mask = (arr >= low) & (arr <= high)
    return mask if mask.any() and not mask.all() else None


_GROUP_VALUES = (
    ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept", "RescaleType")),
    ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")),
)


def lift_functional_groups(ds: Any, index: int = 0) -> None:
    """An enhanced (functional-group) object's rescale and window for frame ``index`` (the shared
    groups', else the frame's own), put where a classic object keeps them, the top level, where
    the top level has none: read without them, a rescale of slope -1 showed the image inverted,
    as reliable, while the presentation state, made by highdicom from the groups, showed it right."""
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    frames = ds.get("PerFrameFunctionalGroupsSequence") or ()
    per_frame = frames[index] if index < len(frames) else None
    for sequence, keywords in _GROUP_VALUES:
        if any(keyword in ds for keyword in keywords[:2]):
            continue
        item = next((i for g in (shared, per_frame) if (i := _first_item(g, sequence)) is not None), None)
        for keyword in keywords if item is not None else ():
            if keyword in item:
                setattr(ds, keyword, item[keyword].value)


def _first_item(ds: Any, keyword: str) -> Any:
    try:
        return ds[keyword].value[0] if ds is not None and keyword in ds else None
    except (IndexError, TypeError, KeyError):  # empty, or not a sequence
        return None


def first_window(ds: Any) -> tuple[float, float] | None:
    """The first Window Center and Width as numbers (the values pydicom applies, and the ones a
    presentation state carries), None where either is absent or not a number (text fails in
    pydicom, and is told there)."""
    try:
        first = (
            v[0] if isinstance(v, Sequence) and not isinstance(v, str) else v
            for v in (ds.WindowCenter, ds.WindowWidth)
        )
        center, width = (float(v) for v in first)
    except (AttributeError, TypeError, ValueError, IndexError):
        return None
    return center, width


def usable_window(window: tuple[float, float]) -> bool:
    """A window of finite numbers with a width above 0: NaN raised nothing in pydicom, but made
    every pixel NaN (the CLI predicted on it), and highdicom refused it in a presentation state."""
    center, width = window
    return bool(np.isfinite(center) and np.isfinite(width) and width > 0)


def drop_unusable_rescale(ds: Any, notes: list[str]) -> None:
    """Rescale Slope and Intercept left out, with a note, where either is not a finite number or the
    slope is 0: "abc" failed inside numpy ("UFuncTypeError: ... dtype('<U3')"), NaN made every pixel
    NaN (a blank image and a RuntimeWarning), 0 every pixel equal."""
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword not in ds:
            continue
        try:
            value = float(ds[keyword].value)
        except (TypeError, ValueError):  # text, several values, nothing
            value = float("nan")
        if not np.isfinite(value) or (keyword == "RescaleSlope" and value == 0):
            notes.append(f"DICOM {keyword} is not a usable number; the stored values are read unscaled")
            _unscale(ds)
            return


def _unscale(ds: Any) -> None:
    for name in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        if name in ds:
            delattr(ds, name)


def _modality_lut_in_words(ds: Any, notes: list[str]) -> None:
    """A Modality LUT whose entries are declared neither 8 nor 16 bits (PS3.3 C.11.1.1.1 allows no
    other; ACR-NEMA files say 12) is read as the 16-bit words its data are stored in, with a note:
    pydicom asked numpy for a "uint12", and the image was refused as "cannot decode"."""
    for item in ds.get("ModalityLUTSequence") or ():
        descriptor = item.get("LUTDescriptor")
        try:
            bits = int(descriptor[2])
        except (TypeError, ValueError, IndexError):
            continue
        if bits not in (8, 16):
            item.LUTDescriptor = [descriptor[0], descriptor[1], 16]
            notes.append(f"DICOM Modality LUT entries declared {bits} bits (8 or 16 allowed): read as 16")


def voi_lut_entries(item: Any, little_endian: bool = True) -> tuple[int, int, np.ndarray]:
    """``(first, bits, entries)`` of a VOI LUT item: the first stored value it maps, the bits of its
    entries (as declared, or more where its values take more) and the entries (uint16), read as
    PS3.3 C.11.2.1.2 allows them: US numbers, or OW words, one per entry or, for 8-bit entries, two
    per word. pydicom 3 indexed an 8-bit LUT in uint8 (a LUT of 4096 entries wrapped every 256: a
    scrambled picture) and read OW data always as one word per entry (two 8-bit entries per word:
    a struct error, the image refused)."""
    descriptor = item.LUTDescriptor
    entries, first, bits = int(descriptor[0]) or 2**16, int(descriptor[1]), int(descriptor[2])
    if not 1 <= bits <= 16:
        raise ValueError(f"VOI LUT entries of {bits} bits")
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):
        if len(data) >= 2 * entries:
            table = np.frombuffer(data, "<u2" if little_endian else ">u2", count=entries)
        elif bits == 8 and len(data) >= entries:
            packed = np.frombuffer(data, np.uint8, count=len(data) // 2 * 2)
            table = (packed if little_endian else packed.reshape(-1, 2)[:, ::-1].ravel())[:entries]
        else:
            raise ValueError(f"VOI LUT data of {len(data)} bytes for {entries} entries")
    else:
        table = np.atleast_1d(np.asarray(data, np.int64))  # one number or several
        if table.size < entries:
            raise ValueError(f"VOI LUT data of {table.size} values for {entries} entries")
        table = table[:entries]
    table = np.clip(table, 0, 2**16 - 1).astype(np.uint16)
    # entries over the bits declared (a vendor's 12-bit LUT of 16-bit values): the bits they take, not
    # a clip to the declared ones (which read every pixel white)
    return first, max(bits, int(table.max()).bit_length()), table


def read_little_endian(ds: Any) -> bool:
    """The byte order a DICOM's OW data were read in (a header made in memory: little-endian)."""
    return ds.original_encoding[1] is not False


def modality_lut_table(ds: Any) -> tuple[int, np.ndarray] | None:
    """The first stored value a DICOM's Modality LUT Sequence maps and its entries (uint16), as the
    reader applies them (read by pydicom, entries of other sizes as 16 bits); None without one."""
    from pydicom import Dataset
    from pydicom.pixels import apply_modality_lut

    if not ds.get("ModalityLUTSequence"):
        return None
    lut = Dataset()
    lut.ModalityLUTSequence = copy.deepcopy(ds.ModalityLUTSequence)  # the source's items: never changed
    lut.set_original_encoding(False, read_little_endian(ds))
    _modality_lut_in_words(lut, [])
    descriptor = lut.ModalityLUTSequence[0].LUTDescriptor
    first, entries = int(descriptor[1]), int(descriptor[0]) or 2**16
    return first, np.asarray(apply_modality_lut(np.arange(first, first + entries), lut), dtype=np.uint16)


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


def _aspect_ratio(ds: Any) -> tuple[int, int] | None:
    """(row, column) from Pixel Aspect Ratio, which a DICOM gives where its pixels are not square
    and it has no pixel spacing (type 1C); None when absent, not two positive whole numbers, or
    beyond 1:5: the spacing, where there is one, is read instead (a ratio of 1.5\\1 was cut to 1\\1
    and one of 99999999999\\1 taken for square pixels, over a valid spacing of 0.286\\0.143)."""
    value = ds.get("PixelAspectRatio")
    try:
        if len(value) != 2:  # three values are no ratio: not read, as a GSPS does not read them
            return None
        row, column = float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError):
        return None
    if not (row.is_integer() and column.is_integer() and min(row, column) > 0):
        return None
    return (int(row), int(column)) if plausible_aspect(row / column) else None


def header_pixel_aspect(ds: Any) -> float:
    """:func:`~fracsight.io.radiograph.pixel_aspect_of` a DICOM header, as the reader reads it:
    the aspect its results declare is the one the model read it at."""
    return pixel_aspect_of(_aspect_ratio(ds) or _spacing(ds))


def _code_string(ds: Any, keyword: str, notes: list[str]) -> str | None:
    """A technical code string (CS) such as BodyPartExamined, upper-case; None when absent.

    A value that is not a valid code string (other characters, too long, several
    values) is dropped with a note that does not show it: it might be free text.
    """
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        return None
    code = clean_code_string(value)
    if code is None:
        notes.append(f"DICOM {keyword} is not a valid code string; ignored")
    return code
