"""Results as DICOM objects, to go back into the source study (docs/dicom.md).

>>> import pydicom
>>> from fracsight.inference import Predictor
>>> from fracsight.dicom.results import result_datasets
>>> predictor = Predictor()
>>> source = pydicom.dcmread("hand.dcm")                              # doctest: +SKIP
>>> prediction = predictor.predict("hand.dcm", keep_pixels=True)      # doctest: +SKIP
>>> [ds.Modality for ds in result_datasets(source, prediction, predictor)]  # doctest: +SKIP
['SR', 'PR', 'OT']

The writers never run the model: they state what the :class:`~fracsight.inference.Prediction`
says, so the SR agrees with ``fracsight predict`` on the same file. Each kind goes to its own
series in the source study (one series per kind, study and model); patient and study
attributes are copied from the source so that a PACS files the objects with the study. Those
copies are the only place identifiers go: messages, exceptions and logs never hold a value from
the header.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import Dataset
from pydicom.tag import BaseTag

from fracsight.dicom.results_context import (
    KINDS,
    MAX_IS,
    ResultContext,
    carriable_window,
    element_values,
    laterality,
)
from fracsight.errors import DicomSourceError, FracsightError, MultiFrameError, UnsupportedFormatError
from fracsight.inference.results import Prediction, StudyPrediction
from fracsight.io._dicom import drop_unusable_rescale, read_little_endian, voi_lut_entries

if TYPE_CHECKING:
    from fracsight.inference import Predictor

__all__ = [
    "KINDS",
    "image_uid_seed",
    "kind_of",
    "quiet_values",
    "read_source",
    "result_datasets",
    "source_header",
    "study_result_datasets",
    "study_uid_seed",
    "write_new",
]

logger = logging.getLogger(__name__)
_SOURCE_NAME: ContextVar[str] = ContextVar("fracsight_dicom_source_name", default="")


class _NamedSource(logging.Filter):
    """Starts each record logged while one image's results are made with that image's name (the
    file name it was predicted under, never a header value): with several files, a warning such as
    "WindowWidth ... left out" did not say which file it was about."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = _SOURCE_NAME.get()
        if name and isinstance(record.msg, str):
            record.msg, record.args = f"%s: {record.msg}", (name, *(record.args or ()))
        return True


logger.addFilter(_NamedSource())


@contextmanager
def _logged_as(name: str | None) -> Iterator[None]:
    """Records logged in the block start with ``name`` (see :class:`_NamedSource`)."""
    token = _SOURCE_NAME.set(name or "")
    try:
        yield
    finally:
        _SOURCE_NAME.reset(token)


# highdicom logs, at INFO, the SOP Instance UID of each data set it copies patient and study data
# from: a UID that leads to the patient. Its warnings still come through.
logging.getLogger("highdicom").setLevel(logging.WARNING)

# Without these a result cannot be filed with, or point at, the source image.
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
# Type 2 patient/study attributes of the result IODs: copied when present, else written empty.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
)
_PIXEL_GROUP = 0x7FE0
_SIDED = ("gsps", "capture")  # results whose series carries a Laterality: a series per side
_TEXT_VRS = {"SH", "LO", "ST", "LT", "UT", "PN", "UC"}  # those a Specific Character Set applies to
_ISO_2022_ESCAPE = re.compile("\x1b[\x20-\x2f]+[\x30-\x7e]")  # ESC, intermediate bytes, a final byte
_UID_CHARS = re.compile(r"[0-9]+(\.[0-9]+)+")


def _frames(source: Dataset, frame: int | None) -> list[int] | None:
    """The referenced frame number (1-based) for a multi-frame source, None for a single frame."""
    try:
        frames = int(source.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        raise DicomSourceError("the DICOM object's NumberOfFrames (0028,0008) is not a number") from None
    if frames <= 1:
        if frame not in (None, 0):
            raise MultiFrameError(f"frame {frame} asked for, but the DICOM object has one frame")
        return None
    if frame is None:
        raise MultiFrameError(
            f"the DICOM object holds {frames} frames: name the frame the prediction was made on (frame=k)"
        )
    if not 0 <= frame < frames:
        raise MultiFrameError(f"frame {frame} asked for, but the DICOM object holds {frames} (0-based)")
    if not _multi_frame_class(source):
        raise MultiFrameError(
            f"the DICOM object holds {frames} frames, but its SOP class ({_sop_class_name(source)}) "
            "is defined with one, so a result cannot reference one of its frames: split it into "
            "single-frame objects first"
        )
    return [frame + 1]


def _multi_frame_class(source: Dataset) -> bool:
    """Whether the source's SOP class allows several frames (a CR or DX does not, though such
    files exist): referencing a frame of one is invalid DICOM, and highdicom refuses it."""
    from highdicom._standard_utils import is_multiframe_image  # what highdicom itself checks

    try:
        return bool(is_multiframe_image(source))
    except (AttributeError, KeyError):  # an unknown SOP class: leave the verdict to highdicom
        return True


def _sop_class_name(source: Dataset) -> str:
    from pydicom.uid import UID

    uid = UID(str(source.get("SOPClassUID", "")))
    return uid.name if uid.is_valid else "unknown"


def read_source(data: bytes, name: str) -> Dataset:
    """A DICOM file's bytes as a pydicom Dataset (Part 10: ``DICM`` after the preamble; or a bare
    data set, without preamble and file meta, which the reader reads too: it was called no DICOM)."""
    import io

    import pydicom
    from pydicom.errors import InvalidDicomError

    from fracsight.io._sniff import DICOM_HEAD, sniff_format

    try:
        with quiet_values():
            return pydicom.dcmread(io.BytesIO(data), force=sniff_format(data[:DICOM_HEAD]) == "dicom")
    except InvalidDicomError:
        raise UnsupportedFormatError(
            f"{name}: not a DICOM file (no DICM prefix after the 128-byte preamble); results as DICOM "
            "need a DICOM source: use `fracsight predict` for other images"
        ) from None
    except Exception as e:  # the parser's message may quote the header
        raise UnsupportedFormatError(f"{name}: cannot parse this DICOM file ({type(e).__name__})") from None


def source_header(source: Dataset, *, frame: int | None = None, own_words: Sequence[str] = ()) -> Dataset:
    """The source's attributes without its pixel data, checked for what results need; in UTF-8
    where its character set cannot write ``own_words`` (the model's name and version, its region
    and class names: one named in another script went out as ``???``).

    Raises :class:`~fracsight.errors.DicomSourceError` when results cannot be placed
    against it (no valid Study/Series/SOP Instance UID or SOP Class UID, no image size).
    Missing type 2 patient and study attributes are added empty, as the result IODs require.
    """
    if not isinstance(source, Dataset):
        raise TypeError(f"source must be a pydicom Dataset, not {type(source).__name__}")
    for keyword in _REQUIRED_UIDS:
        value = source.get(keyword)
        # digits and dots: real archives hold UIDs with leading zeros in a component, which the
        # standard forbids but every PACS accepts; the results must point at them as they are
        if value is None or len(str(value)) > 64 or not _UID_CHARS.fullmatch(str(value)):
            raise DicomSourceError(
                f"cannot place results against this DICOM object: it has no valid {keyword}"
            )
    for keyword in ("Rows", "Columns"):
        try:
            if int(source.get(keyword) or 0) < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise DicomSourceError(
                f"cannot place results against this DICOM object: it has no image size ({keyword})"
            ) from None
    _frames(source, frame)
    header = Dataset()
    for tag in list(source.keys()):  # no pixels; each element a copy (mended below, never the source)
        if tag.group == _PIXEL_GROUP:
            continue
        try:
            element = source[tag]  # converts a raw element: a malformed one raises here
        except Exception:
            logger.warning("unreadable %s in the source: left out of the results", _name(tag))
            continue
        header.add(copy.copy(element))
    for keyword in _TYPE2:
        if keyword not in header:
            setattr(header, keyword, None)
    # the byte order its OW data (a Modality LUT's) are in, for the presentation state to read them
    header.set_original_encoding(*source.original_encoding[:2])
    _mend_rescale(header)  # first: as the source has it (`2\\2`, which the reader leaves out)
    _mend_values(header)
    _mend_voi(header)
    _fit_words(header, own_words)
    return header


def _fit_words(header: Dataset, words: Sequence[str]) -> None:
    terms = header.get("SpecificCharacterSet")
    terms = [str(t) for t in ([terms] if isinstance(terms, str) else list(terms or [""]))]
    if not _fits(words, terms):
        header.SpecificCharacterSet = "ISO_IR 192"
        _as_decoded_text(header)


def _fits(texts: Iterable[str], terms: Sequence[str]) -> bool:
    """Whether pydicom writes every letter of ``texts`` in the character set ``terms``."""
    from pydicom import charset

    named = [charset.python_encoding.get(t, "ascii") for t in terms if t not in _DEFAULT_REPERTOIRE]
    if len(terms) == 1 and named:  # one set, no code extensions: pydicom encodes each value whole
        # in it (its ISO_IR 13 encoder refuses kana beside ASCII: "????? 2R")
        return all(_encodes(text, named[0]) for text in texts)
    # the default repertoire is ASCII (pydicom reads it as Latin-1, leniently); with ISO 2022 code
    # extensions (Japanese, say) a letter may come from any of the sets named
    encodings = [*named, "ascii"]
    return all(any(_encodes(c, e) for e in encodings) for text in texts for c in set(text))


_DEFAULT_REPERTOIRE = ("", "ISO_IR 6", "ISO 2022 IR 6")


def _encodes(text: str, encoding: str) -> bool:
    """As pydicom writes it: its own encoders for the Japanese sets are narrower than Python's
    codecs of their names (ISO_IR 13 is half-width kana only, not Shift-JIS: kanji went out as ?)."""
    from pydicom import charset

    encode = getattr(charset, "custom_encoders", {}).get(encoding)
    try:
        encode(text) if encode is not None else text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _as_decoded_text(header: Dataset) -> None:
    """Every text value as the characters it reads as, for a header given another character set: a
    person name keeps the bytes it was read from, and was written in them under the new set's name
    (``Müller`` read in Latin-1 went out as ``M\ufffdller`` in UTF-8)."""
    from pydicom.multival import MultiValue

    for tag in list(header.keys()):
        try:
            element = header[tag]  # a raw nested element converts here: one that cannot is left
        except Exception:
            continue
        if element.VR == "SQ":  # the header's copy shares the source's items: never change those
            element.value = copy.deepcopy(element.value)
            for item in element.value:
                _as_decoded_text(item)
        elif element.VR in _TEXT_VRS and element.value is not None:
            value = element.value
            texts = [str(v) for v in value] if isinstance(value, MultiValue) else [str(value)]
            # pydicom leaves some ISO 2022 escapes in the text it decodes (ESC $ ) A of Chinese names)
            texts = [_ISO_2022_ESCAPE.sub("", text) for text in texts]
            element.value = texts if isinstance(value, MultiValue) else texts[0]


def _own_words(predictor: Predictor) -> list[str]:
    spec = predictor.spec
    points = [point.name for point in spec.operating_points]  # the report names the one used
    return [spec.name, str(spec.version), *points, *predictor.regions, *predictor.classes]


def _one_value(tag: int) -> bool:
    """Whether the dictionary gives the attribute one value (VM 1); False for private ones."""
    from pydicom.datadict import dictionary_VM

    try:
        return dictionary_VM(tag) == "1"
    except KeyError:
        return False


def _mend_values(header: Dataset) -> None:
    """Mend the copied values that the result objects cannot carry, so that one malformed
    attribute does not cost the image its results (the PACS files them by the UIDs and the
    Patient ID): dates, times and numbers that do not parse or that their VR cannot hold (a DS
    ``nan``, an IS past 2**31 - 1) and a Patient's Sex other than M, F or O are left empty; of a
    patient or study attribute holding several values (``A\\B``) the first is kept; a Specific
    Character Set pydicom does not know is replaced by one that can carry the text as pydicom read
    it. The log names the attribute, never the value."""
    from pydicom import charset, valuerep
    from pydicom.multival import MultiValue

    parsers = {"DA": valuerep.DA, "TM": valuerep.TM, "DT": valuerep.DT, "IS": valuerep.IS, "DS": valuerep.DS}
    for element in header:
        parse = parsers.get(element.VR)
        if parse is None or element.value in (None, ""):
            continue
        values = element.value if isinstance(element.value, MultiValue) else [element.value]
        try:
            for value in values:
                number = parse(value)
                # a window the reader leaves out is the state's to replace (gsps._explicit_luts)
                if (element.VR == "DS" and element.keyword not in _WINDOW and not math.isfinite(number)) or (
                    element.VR == "IS" and abs(number) > MAX_IS
                ):
                    raise ValueError
        except (TypeError, ValueError, OverflowError):
            _mend(header, element.tag, None, "malformed: left empty")
    for element in list(header):  # every copied attribute of one value (Study Description too: it
        # went out as HAND\\WRIST, an error in every result); the Patient ID is put back below
        value = element.value
        if isinstance(value, MultiValue) and element.keyword != "PatientID" and _one_value(element.tag):
            _mend(header, element.tag, value[0] if value else None, "several values: the first kept")
    sex = str(header.get("PatientSex") or "")
    if sex.strip().upper() in ("M", "F", "O"):
        header.PatientSex = sex.strip().upper()
    elif sex:
        _mend(header, header["PatientSex"].tag, None, "not M, F or O: left empty")
    terms = header.get("SpecificCharacterSet")
    terms = [terms] if isinstance(terms, str) else list(terms or [])
    if len(terms) == 1 and str(terms[0]).startswith("ISO 2022 IR "):
        # a code extension's name alone ("ISO 2022 IR 100"), which highdicom refuses: the same set
        # without extensions (ISO_IR 100), where there is one
        terms = [str(terms[0]).replace("ISO 2022 IR ", "ISO_IR ")]
        header.SpecificCharacterSet = terms[0]
    if len(terms) > 1 and "" in terms:  # "\\ISO 2022 IR 87": an empty first value, the default
        # repertoire, which highdicom refused (every Japanese image lost its results); the same set
        # by its name
        terms = ["ISO 2022 IR 6" if t == "" else str(t) for t in terms]
    # one pydicom reads but highdicom refuses (Korean, ISO 2022 IR 149; ISO_IR 6; Chinese,
    # \\ISO 2022 IR 58, a term it knows but not as an extension) cost the image all its results:
    # its text, decoded, goes in a set both take
    known = _writable_character_sets() | {""}
    if (
        any(str(t) not in charset.python_encoding or str(t) not in known for t in terms)
        or not _highdicom_writes(terms)
        # text pydicom decoded but cannot write back in it (ISO_IR 13 as Shift-JIS, as Japanese
        # devices write it: its kanji went out as ?)
        or (terms and not _fits(_text_values(header), [str(t) for t in terms]))
    ):
        _mend(
            header,
            header["SpecificCharacterSet"].tag,
            _character_set_for(header),
            "not one the results can be written in: replaced",
        )
        _as_decoded_text(header)
    elif len(terms) > 1:
        header.SpecificCharacterSet = terms


_WINDOW = ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTFunction")


def _mend_rescale(header: Dataset) -> None:
    """A Rescale Slope and Intercept the reader leaves out (not one finite number, a slope of 0) are
    left out of the results too: highdicom refused an Intercept ``nan``, and a state that kept a
    rescale the reader did not apply showed the image in another contrast than the capture."""
    unusable: list[str] = []
    drop_unusable_rescale(header, unusable)
    if unusable:
        logger.warning("RescaleSlope/RescaleIntercept in the source not usable: left out, as the reader does")


def _mend_voi(header: Dataset) -> None:
    """Make the source's VOI one the presentation state can carry (highdicom copies it and refuses
    what it cannot take, which cost the image all its results): a window is left out, as the
    reader leaves it, beside a VOI LUT Sequence (the LUT is what the reader applies), without a
    width, with unequal counts of centers and widths, a width below 1 (LINEAR) or 0, or an unknown
    VOI LUT Function. A VOI LUT goes as :func:`_lut_for_the_state` makes it, the first only (the
    one the reader applies; dcmtk refused a state with two); one the reader cannot use, or that
    starts below 0 (highdicom refuses it, which cost the image all its results), is left out. The
    log names the attributes, never a value."""
    if "VOILUTSequence" in header and not header.VOILUTSequence:  # present but empty: none, as read
        del header.VOILUTSequence
    if "VOILUTSequence" in header:
        item = copy.deepcopy(header.VOILUTSequence[0])  # the header's copy is shallow: not the source's
        header.VOILUTSequence = [item]
        try:
            first = _lut_for_the_state(item, read_little_endian(header))
        except (AttributeError, IndexError, TypeError, ValueError):
            first = None
        if first is None or first < 0:
            logger.warning(
                "the source's VOI LUT is unusable or starts below 0: the presentation state leaves it out"
            )
            del header.VOILUTSequence
    present = [keyword for keyword in _WINDOW if keyword in header]
    if not present:
        return
    centers, widths = element_values(header.get("WindowCenter")), element_values(header.get("WindowWidth"))
    if "VOILUTSequence" in header or not carriable_window(header):
        logger.warning(
            "%s in the source not a window a presentation state can carry: left out", "/".join(present)
        )
        for keyword in present:
            del header[keyword]
    elif len(centers) > 1:  # the first, which the reader (and so the capture) uses: dcmtk refused
        header.WindowCenter, header.WindowWidth = centers[0], widths[0]  # a state with several
        if "WindowCenterWidthExplanation" in header:
            header.WindowCenterWidthExplanation = element_values(header.WindowCenterWidthExplanation)[0]


def _lut_for_the_state(item: Dataset, little_endian: bool) -> int:
    """A VOI LUT item made one with 8 or 16 bits per entry, as a presentation state's must have,
    in the OW bytes highdicom reads (one byte per 8-bit entry: given one word per entry, highdicom
    counted twice the entries, and dcmtk drew the image nearly black); its first mapped value. A
    12-bit one is scaled to 16 bits, the same curve (highdicom calls a LUT 16-bit whatever its
    values, so a viewer showed a 12-bit LUT's output, at most 4095, in the bottom sixteenth of the
    grey scale: an almost black image)."""
    import numpy as np

    first, bits, table = voi_lut_entries(item, little_endian)
    data = table.astype(np.uint8) if bits == 8 else (table.astype(np.uint32) << (16 - bits)).astype(np.uint16)
    item.LUTDescriptor = [*list(item.LUTDescriptor)[:2], 8 if bits == 8 else 16]
    item["LUTData"].VR = "OW"
    item.LUTData = data.tobytes()
    return first


@cache
def _writable_character_sets() -> frozenset[str]:
    """The Specific Character Set terms highdicom writes (its list lacks a few pydicom reads)."""
    from highdicom.enum import SpecificCharacterSetValues

    return frozenset(str(v.value) for v in SpecificCharacterSetValues)


def _highdicom_writes(terms: Sequence[str]) -> bool:
    """Whether highdicom takes ``terms`` as a Specific Character Set: beside its list of terms
    (:func:`_writable_character_sets`) it has rules for several values, which refused ISO 2022 IR 58
    when the results were built. Its rules are its own; a highdicom without them is trusted."""
    from highdicom import valuerep

    check = getattr(valuerep, "_check_specific_character_set", None)
    if check is None or not terms:
        return True
    try:
        check(list(terms) if len(terms) > 1 else terms[0])
    except ValueError:
        return False
    return True


def _character_set_for(header: Dataset) -> str:
    """Latin-1 (``ISO_IR 100``, what pydicom falls back to for a set it does not know) when every
    text value fits it, else UTF-8 (``ISO_IR 192``)."""
    try:
        for text in _text_values(header):
            text.encode("latin-1")
    except UnicodeEncodeError:
        return "ISO_IR 192"
    return "ISO_IR 100"


def _text_values(ds: Dataset) -> Iterator[str]:
    """Every text value of ``ds``, its sequences' included (a Korean Procedure Code's meaning went
    out as ``? ????`` under Latin-1, chosen from the top level's text alone)."""
    for tag in list(ds.keys()):
        try:
            element = ds[tag]
        except Exception:  # a raw nested element that cannot convert: left out, as when copied
            continue
        if element.VR == "SQ":
            for item in element.value or ():
                yield from _text_values(item)
        elif element.VR in _TEXT_VRS and element.value is not None:
            yield str(element.value)


def _mend(header: Dataset, tag: BaseTag, value: object, what: str) -> None:
    """Set the element ``tag`` of ``header`` (private ones too) to ``value``; the log names it."""
    logger.warning("%s in the source %s", _name(tag), what)
    header[tag].value = value


def _name(tag: object) -> str:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or str(tag)


def _check_fits(header: Dataset, prediction: Prediction) -> None:
    size = (int(header.Rows), int(header.Columns))
    if tuple(prediction.metadata.original_size) != size:
        h, w = prediction.metadata.original_size
        raise DicomSourceError(
            f"the prediction is for an image of {w} x {h} pixels, the DICOM object holds "
            f"{size[1]} x {size[0]}: results must be made from the prediction of the same image"
        )


def _check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    if isinstance(kinds, str):
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown result kinds {unknown}; known: {', '.join(KINDS)}")
    return tuple(dict.fromkeys(kinds))


@contextmanager
def quiet_values() -> Iterator[None]:
    """Keep header values out of warnings and logs while result objects are built.

    pydicom checks each value it reads or assigns and, for a malformed one, warns and logs
    the value itself, and highdicom warns about unusual values quoting them: a patient name
    could reach the log. The copies into the result objects
    go unchecked instead (the values are the source's own); both switches are the shared ones
    of :mod:`fracsight.io._dicom`.
    """
    import warnings

    import pydicom

    from fracsight.io._dicom import _values_not_checked_on_writing, _values_not_validated

    with _values_not_checked_on_writing(pydicom), _values_not_validated(pydicom), warnings.catch_warnings():
        # highdicom warns about odd values quoting them ('The string "SMITH" is unlikely to ...')
        warnings.filterwarnings("ignore", module=r"highdicom(\..*)?$")
        yield


def header_of(data: bytes) -> Dataset:
    """The header of a source instance's file, for the result objects of its study (read as
    :func:`quiet_values` says). Without the file itself: pydicom keeps the stream it read on the
    dataset (``buffer``), pixels and all, so a study's headers held every whole file at once
    (a 200-image study over DICOMweb: 744 MB, against 346 MB)."""
    import io

    import pydicom

    with quiet_values():
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    header.buffer = None
    return header


def _build(kind: str, build, *args, **kwargs) -> Dataset:
    """Run one writer; a library error is re-raised without its message, which may quote the header."""
    try:
        with quiet_values():
            made = build(*args, **kwargs)
    except FracsightError:
        raise
    except Exception as e:
        logger.warning("building the %s object failed: %s", kind, type(e).__name__)
        raise DicomSourceError(
            f"could not build the {kind} object from this DICOM object ({type(e).__name__}); "
            "the header may hold a value the result objects cannot carry"
        ) from None
    terms = made.get("SpecificCharacterSet")
    if not isinstance(terms, str) and terms and len(terms) > 1 and terms[0] == "ISO 2022 IR 6":
        # named so for highdicom only (:func:`_mend_values`): written as the source spells it, with
        # an empty first value, which Orthanc decodes; "ISO 2022 IR 6\ISO 2022 IR 87" showed the
        # Japanese names as raw escape sequences (the same repertoire by the standard)
        made.SpecificCharacterSet = ["", *list(terms)[1:]]
    return made


_MADE_BY: weakref.WeakKeyDictionary[Predictor, tuple[str, str]] = weakref.WeakKeyDictionary()


def _made_by(predictor: Predictor) -> str:
    """A digest of what the results depend on besides their source: the whole bundle (a rebuilt
    calibration keeps model.onnx), the operating point and fracsight's version (a release may word
    or encode the results differently). Kept per predictor: the bundle's metadata is large."""
    from fracsight import __version__

    point = predictor.operating_point.name if predictor.operating_point else ""
    known = _MADE_BY.get(predictor)
    if known is None or known[0] != point:
        spec = json.dumps(predictor.spec.to_dict(), sort_keys=True, default=str)
        known = (point, hashlib.sha256(f"{spec}|{point}|{__version__}".encode()).hexdigest())
        _MADE_BY[predictor] = known
    return known[1]


def image_uid_seed(sop_instance_uid: str, predictor: Predictor) -> str:
    """The ``uid_seed`` of an image's results: the node, ``dicom study`` and a re-run of either
    derive the same UIDs for the same source, bundle and operating point, so a PACS given the
    results twice keeps one set; another bundle or operating point files new results beside them."""
    return f"{sop_instance_uid}|{_made_by(predictor)}"


def study_uid_seed(sources: Sequence[Dataset], predictor: Predictor, unread: Sequence[str] = ()) -> str:
    """The ``uid_seed`` of a study verdict over these source images (a new image: a new verdict)."""
    extra = ["unread:" + u for u in sorted(unread)]
    return "\\".join([*sorted(str(s.SOPInstanceUID) for s in sources), *extra, _made_by(predictor)])


def _result_uid(kind: str, seed: str | None, context: ResultContext) -> str:
    """A new UID, or with ``seed`` one derived from it, ``kind`` and the model (a one-way hash)."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    if seed is None:
        return str(hd.UID())
    return str(generate_uid(entropy_srcs=["fracsight result", kind, seed, context.model_sha256]))


def result_datasets(
    source: Dataset,
    prediction: Prediction,
    predictor: Predictor,
    *,
    kinds: Sequence[str] = KINDS,
    frame: int | None = None,
    uid_seed: str | None = None,
) -> list[Dataset]:
    """The result objects of one image, in the order of ``kinds``.

    ``source`` is the radiograph as pydicom read it; ``prediction`` is ``predictor.predict``
    on that same object (with ``keep_pixels=True`` the capture reuses its pixels, otherwise it
    decodes them again). ``kinds``: ``"sr"`` (TID 1500 Comprehensive SR), ``"gsps"``
    (Grayscale Softcopy Presentation State; a Color one for a grey image stored in colour),
    ``"capture"`` (Secondary Capture with the overlay burned in). ``frame``: for a multi-frame
    source, the frame (0-based) the prediction was made on. Each object is a new instance (new
    SOP Instance UID) in the source study; with ``uid_seed`` (e.g. the source's SOP Instance UID)
    its UID is derived from the seed, the kind and the model instead, so that making the results
    again and storing them stores nothing new.

    Raises :class:`~fracsight.errors.DicomSourceError` (or ``MultiFrameError``) for a source
    results cannot be placed against; ``ValueError`` for an unknown kind.
    """
    wanted = _check_kinds(kinds)
    with _logged_as(prediction.source):
        return _result_datasets(source, prediction, predictor, wanted, frame, uid_seed)


def _result_datasets(
    source: Dataset,
    prediction: Prediction,
    predictor: Predictor,
    wanted: tuple[str, ...],
    frame: int | None,
    uid_seed: str | None,
) -> list[Dataset]:
    from fracsight.dicom import capture, gsps, sr

    with quiet_values():
        header = source_header(source, frame=frame, own_words=_own_words(predictor))
    _check_fits(header, prediction)
    frame_numbers = _frames(source, frame)
    context = ResultContext.of(predictor)
    builders = {
        "sr": lambda uid: sr.image_report(
            header, prediction, context, frame_numbers=frame_numbers, sop_instance_uid=uid
        ),
        "gsps": lambda uid: gsps.presentation_state(
            header, prediction, context, frame_numbers=frame_numbers, sop_instance_uid=uid
        ),
        "capture": lambda uid: capture.secondary_capture(
            source,
            header,
            prediction,
            context,
            frame=frame,
            frame_numbers=frame_numbers,
            sop_instance_uid=uid,
        ),
    }
    # a state or capture files into its side's series: the side enters its UID too, so that one
    # object is never in two series (a side corrected in the source, then the image stored again)
    side = laterality(source)
    sided = {
        kind: f"{uid_seed}|{side}" if uid_seed and side and kind in _SIDED else uid_seed for kind in wanted
    }
    out = [_build(kind, builders[kind], _result_uid(kind, sided[kind], context)) for kind in wanted]
    _same_patient_id(out, source)
    logger.debug("made %d result objects (%s)", len(out), ", ".join(wanted))
    return out


def _same_patient_id(made: Sequence[Dataset], source: Dataset) -> None:
    """Give the result objects the source's Patient ID as it is, also with several values
    (``A\\B``, which the writers take only the first of): a PACS files instances by it, and under
    the first value alone the results became another patient's study, which a viewer opening the
    source's never showed. The one place a value the source got wrong is copied as it is."""
    from pydicom.multival import MultiValue

    value = source.get("PatientID")
    if isinstance(value, MultiValue):
        for ds in made:
            ds.PatientID = value


def study_result_datasets(
    sources: Sequence[Dataset],
    study: StudyPrediction,
    predictions: Sequence[Prediction],
    predictor: Predictor,
    *,
    frames: Sequence[int | None] | None = None,
    uid_seed: str | None = None,
    previous: Sequence[Dataset] = (),
) -> list[Dataset]:
    """The study-level SR: ``study`` (from ``predictor.predict_study(predictions, ...)``) over
    all ``sources``, the study's images in the order of ``predictions``. All must be in one study.
    ``uid_seed``: as for :func:`result_datasets` (e.g. the sources' SOP Instance UIDs).
    ``previous``: the study's earlier verdict SR this one replaces (those of another study, or
    this one itself, are left out).
    """
    from fracsight.dicom import sr

    if not sources or len(sources) != len(predictions):
        raise ValueError(
            f"a study result needs one prediction per source image ({len(sources)} sources, "
            f"{len(predictions)} predictions)"
        )
    frames = list(frames) if frames is not None else [None] * len(sources)
    headers = []
    with quiet_values():
        for source, frame, prediction in zip(sources, frames, predictions, strict=True):
            with _logged_as(prediction.source):  # its mended values named as its own are
                headers.append(source_header(source, frame=frame, own_words=_own_words(predictor)))
    for header, prediction in zip(headers, predictions, strict=True):
        _check_fits(header, prediction)
    if len({str(h.StudyInstanceUID) for h in headers}) != 1:
        raise DicomSourceError("a study result needs images of one study; these belong to several")
    if len({str(h.get("PatientID", "")) for h in headers}) != 1:  # the verdict would name one of them
        raise DicomSourceError(
            "a study result needs images of one patient; these images of one study name different "
            "Patient IDs, so no study verdict is made over them"
        )
    frame_numbers = [_frames(s, f) for s, f in zip(sources, frames, strict=True)]
    context = ResultContext.of(predictor)
    uid = _result_uid("study sr", uid_seed, context)
    study_uid = headers[0].StudyInstanceUID
    # the verdicts it replaces: of this study, not of another operating point of this model (a node
    # restarted at another point named the first point's verdict as replaced); one of another
    # model, or from before Tracking UIDs were shared (2026-12-05), still is
    other_points = {sr.study_tracking_uid(study_uid, c) for c in context.at_other_points(predictor)}
    ds = _build(
        "study sr",
        sr.study_report,
        headers,
        study,
        context,
        frame_numbers=frame_numbers,
        sop_instance_uid=uid,
        previous=[
            p
            for p in previous
            if p.get("StudyInstanceUID") == study_uid
            and p.SOPInstanceUID != uid
            and sr.tracking_uid_of(p) not in other_points
        ],
    )
    _same_patient_id([ds], sources[0])
    logger.debug("made the study result object over %d images", len(headers))
    return [ds]


_KIND_OF_MODALITY = {"SR": "sr", "PR": "gsps", "OT": "capture"}


def kind_of(ds: Dataset) -> str:
    """``"sr"``, ``"gsps"`` or ``"capture"`` for a result object (by its Modality)."""
    return _KIND_OF_MODALITY.get(str(ds.get("Modality", "")), "dicom")


def write_new(ds: Dataset, folder: Path, stem: str) -> Path:
    """Save ``ds`` as ``folder/stem.<kind>.dcm`` (DICOM Part 10), never replacing a file: an
    existing name gets a counter (``stem.sr-1.dcm``). The file is created exclusively, so two
    writers cannot take the same name."""
    folder.mkdir(parents=True, exist_ok=True)
    kind = kind_of(ds)
    n = 0
    while True:
        path = folder / (f"{stem}.{kind}.dcm" if n == 0 else f"{stem}.{kind}-{n}.dcm")
        created = False
        try:
            with open(path, "xb") as f:  # its closing flush may fail too (a full disk)
                created = True
                ds.save_as(f, enforce_file_format=True)
        except FileExistsError:
            n += 1
            continue
        except BaseException as e:
            if created:  # no half-written (or empty) object left behind
                path.unlink(missing_ok=True)
            if isinstance(e, OSError) and e.errno is None and isinstance(e.__cause__, OSError):
                # pydicom's own OSError, its message the traceback of the disk's: the disk's error
                raise e.__cause__ from None
            raise
        return path
