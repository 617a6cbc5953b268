"""Which DICOM objects fracsight reads: the modality gate.

A PACS sends everything in a study: CT slices, reports, presentation states,
screenshots. The model was trained on musculoskeletal projection radiographs and
scores anything it is given, so a nuclear-medicine image once came back "fracture
suspected" at 0.97. :func:`check_dicom_object` decides from two header values, the
Modality (0008,0060) and the SOP Class UID (0008,0016), before any pixel is
decoded; :func:`fracsight.io.read_image` calls it for every DICOM file, so the CLI,
the REST API, the web app and a DICOM node all refuse the same objects the same
way. A DICOM node can call it directly on a received data set's two values.

The decision, in order (docs/reading.md has the reasons):

1. Modality present: read when it is in :data:`READ_MODALITIES`; anything else is
   refused (:data:`REFUSED_MODALITIES` gives the known ones a name and a reason;
   unknown or malformed values are refused too: an allow-list).
2. SOP Class a standard storage class (``1.2.840.10008.5.1.4.1.1.*``) other than
   those in :data:`READ_SOP_CLASSES`: refused, whatever the Modality says (a CT
   Image Storage object labelled ``OT`` or without Modality is still a CT slice).
   Private SOP classes are left to the Modality.
3. Modality missing: read, with a warning.
4. Digital X-Ray "For Processing": read, with a warning (raw detector data).

The Modality value is a short code (``CT``), not an identifier, so messages show it,
but only when it is a valid DICOM code string; anything else is described, never
echoed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from fracsight.errors import UnsupportedModalityError

__all__ = [
    "READ_MODALITIES",
    "READ_SOP_CLASSES",
    "REFUSED_MODALITIES",
    "check_dicom_object",
    "clean_code_string",
]

#: Modalities read as projection radiographs, with what they are.
READ_MODALITIES: Mapping[str, str] = MappingProxyType(
    {
        "CR": "computed radiography",
        "DX": "digital radiography",
        "RG": "radiographic imaging (film/screen, digitised film)",
        # Secondary captures (scanned films, viewer exports) carry OT, or SC (not a defined
        # term, but written by many capture tools); they are often radiographs.
        "OT": "other (often a secondary capture of a radiograph)",
        "SC": "secondary capture",
    }
)

_CROSS_SECTIONAL = "cross-sectional or functional imaging, not a projection radiograph"
_FLUOROSCOPY = (
    "fluoroscopy or angiography: dynamic low-dose frames, often with contrast, that the model was "
    "not trained on"
)
_OTHER_XRAY = (
    "a radiograph of a kind the model was not trained on (it knows musculoskeletal radiographs: "
    "limbs, hip and shoulder)"
)
_RADIOTHERAPY = "a radiotherapy object, not a diagnostic radiograph"
_NOT_AN_IMAGE = (
    "not an image to assess (a report, selection, annotation, segmentation, presentation state, "
    "registration, protocol, measurement or waveform)"
)
_PHOTOGRAPHY = "photography, endoscopy or microscopy, not a radiograph"

#: Known modalities that are refused: code -> (name, reason). Any code not in
#: :data:`READ_MODALITIES` is refused; these only get a better message.
REFUSED_MODALITIES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "CT": ("computed tomography", _CROSS_SECTIONAL),
        "MR": ("magnetic resonance", _CROSS_SECTIONAL),
        "NM": ("nuclear medicine", _CROSS_SECTIONAL),
        "PT": ("positron emission tomography", _CROSS_SECTIONAL),
        "US": ("ultrasound", _CROSS_SECTIONAL),
        "BDUS": ("bone densitometry ultrasound", _CROSS_SECTIONAL),
        "IVUS": ("intravascular ultrasound", _CROSS_SECTIONAL),
        "IVOCT": ("intravascular optical coherence tomography", _CROSS_SECTIONAL),
        "OCT": ("optical coherence tomography", _CROSS_SECTIONAL),
        "PA": ("photoacoustic imaging", _CROSS_SECTIONAL),
        "XA": ("X-ray angiography", _FLUOROSCOPY),
        "RF": ("radiofluoroscopy", _FLUOROSCOPY),
        "DS": ("digital subtraction angiography (retired code)", _FLUOROSCOPY),
        "DF": ("digital fluoroscopy (retired code)", _FLUOROSCOPY),
        "CF": ("cinefluorography (retired code)", _FLUOROSCOPY),
        "MG": ("mammography", _OTHER_XRAY),
        "PX": ("panoramic dental X-ray", _OTHER_XRAY),
        "IO": ("intra-oral dental X-ray", _OTHER_XRAY),
        "BMD": ("bone densitometry (DXA)", _OTHER_XRAY),
        "DG": ("diaphanography", _OTHER_XRAY),
        "TG": ("thermography", _OTHER_XRAY),
        "RTIMAGE": ("radiotherapy image", _RADIOTHERAPY),
        "RTDOSE": ("radiotherapy dose", _RADIOTHERAPY),
        "RTPLAN": ("radiotherapy plan", _RADIOTHERAPY),
        "RTSTRUCT": ("radiotherapy structure set", _RADIOTHERAPY),
        "RTRECORD": ("radiotherapy treatment record", _RADIOTHERAPY),
        "RTINTENT": ("radiotherapy intent", _RADIOTHERAPY),
        "RTRAD": ("radiotherapy radiation", _RADIOTHERAPY),
        "RTSEGANN": ("radiotherapy segment annotation", _RADIOTHERAPY),
        "PLAN": ("plan", _RADIOTHERAPY),
        "SR": ("structured report", _NOT_AN_IMAGE),
        "KO": ("key object selection", _NOT_AN_IMAGE),
        "PR": ("presentation state", _NOT_AN_IMAGE),
        "SEG": ("segmentation", _NOT_AN_IMAGE),
        "REG": ("registration", _NOT_AN_IMAGE),
        "FID": ("fiducials", _NOT_AN_IMAGE),
        "ANN": ("annotation", _NOT_AN_IMAGE),
        "DOC": ("document", _NOT_AN_IMAGE),
        "AU": ("audio", _NOT_AN_IMAGE),
        "ECG": ("electrocardiography", _NOT_AN_IMAGE),
        "HD": ("hemodynamic waveform", _NOT_AN_IMAGE),
        "EEG": ("electroencephalography", _NOT_AN_IMAGE),
        "EMG": ("electromyography", _NOT_AN_IMAGE),
        "EPS": ("cardiac electrophysiology", _NOT_AN_IMAGE),
        "RESP": ("respiratory waveform", _NOT_AN_IMAGE),
        "RWV": ("real world value map", _NOT_AN_IMAGE),
        "M3D": ("3D manufacturing model", _NOT_AN_IMAGE),
        "CTPROTOCOL": ("CT protocol", _NOT_AN_IMAGE),
        "XAPROTOCOL": ("XA protocol", _NOT_AN_IMAGE),
        "XC": ("external-camera photography", _PHOTOGRAPHY),
        "ES": ("endoscopy", _PHOTOGRAPHY),
        "GM": ("general microscopy", _PHOTOGRAPHY),
        "SM": ("slide microscopy", _PHOTOGRAPHY),
        "OP": ("ophthalmic photography", _PHOTOGRAPHY),
        "OPT": ("ophthalmic tomography", _PHOTOGRAPHY),
    }
)

_STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."  # every standard storage SOP class sits under it

#: Standard storage SOP classes read (any other standard storage class is refused).
READ_SOP_CLASSES: Mapping[str, str] = MappingProxyType(
    {
        "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
        "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
        "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
        "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
    }
)
_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"

# PS3.5 6.2: a code string is upper-case letters, digits, space and underscore, at most 16 long.
_CODE_STRING = re.compile(r"[A-Z0-9_ ]{1,16}")
_UID = re.compile(r"[0-9.]{1,64}")

#: Manufacturer's Model Name (0008,1090) of every object fracsight writes (report, presentation
#: state, capture): how its own output is told apart when a router sends a whole study back.
RESULT_MODEL_NAME = "fracsight fracture aid"

MISSING_MODALITY_WARNING = (
    "DICOM Modality (0008,0060) missing: read as a projection radiograph; check that it is one"
)
FOR_PROCESSING_WARNING = (
    "DICOM Digital X-Ray 'For Processing' image: raw detector data not processed for viewing; "
    "the model was trained on images for presentation"
)


def clean_code_string(value: object) -> str | None:
    """A DICOM code string (CS) value, upper-case with single spaces, or None when absent or not
    a valid code string (wrong characters, longer than 16, several values): such a value is
    never shown, in case it holds free text."""
    if value is None:
        return None
    if not isinstance(value, str):  # pydicom gives a MultiValue for "A\\B": not one code
        return None
    text = " ".join(value.upper().split())
    return text if _CODE_STRING.fullmatch(text) else None


def _image_storage(uid: str, *, unknown: bool = True) -> bool:
    """Whether a storage SOP Class holds an image (``CT Image Storage``), not a report, a document
    or a presentation state (a scanned request form in an Encapsulated PDF, written with Modality
    `OT`); one pydicom does not know is taken for an image, unless ``unknown`` is False."""
    from pydicom.uid import UID

    name = UID(uid).name
    return unknown if name == uid else "Image" in name


def check_dicom_object(
    modality: object, sop_class_uid: object, *, label: str = "", model_name: object = None
) -> tuple[str, ...]:
    """Refuse a DICOM object that is not a projection radiograph; return the warnings for one read.

    Args:
        modality: the Modality (0008,0060) value as found (None or "" when absent).
        sop_class_uid: the SOP Class UID (0008,0016), or the file meta's Media Storage
            SOP Class UID; None when absent.
        label: the message prefix (``"name.dcm: "``).
        model_name: the Manufacturer's Model Name (0008,1090): fracsight's own result objects
            (:data:`RESULT_MODEL_NAME`) are refused, so that its secondary captures, which
            look like radiographs, are never read as new ones.

    Raises:
        UnsupportedModalityError: the message names the Modality (or SOP Class) and why it
            is not read.
    """
    present = modality is not None and str(modality).strip() != ""
    code = clean_code_string(modality) if present else None
    # first: its SR and presentation state, sent back with the study, were counted as "not an
    # image" (own_result only for its capture, which looks like a radiograph)
    if isinstance(model_name, str) and model_name.strip() == RESULT_MODEL_NAME:
        raise UnsupportedModalityError(
            f"{label}DICOM object written by fracsight itself (one of its results: a structured report, "
            "a presentation state, or the capture with the findings drawn in); fracsight does not read "
            "its own output",
            modality=code,
            own_output=True,
        )
    readable = ", ".join(READ_MODALITIES)
    uid = str(sop_class_uid).strip().rstrip("\0") if sop_class_uid is not None else ""
    # an image class pydicom names: one it does not know (Label Map Segmentation, 2024) is no proof
    # of an image, and a SEG so taken stopped a study sent whole to the node
    storage_class = bool(_UID.fullmatch(uid)) and uid.startswith(_STORAGE_ROOT)
    image_class = storage_class and _image_storage(uid, unknown=False)
    if present and code not in READ_MODALITIES:
        reason = None
        if code is None:
            what = "Modality is not a DICOM code string (its value not shown)"
        elif code in REFUSED_MODALITIES:
            name, reason = REFUSED_MODALITIES[code]
            what = f"Modality {code!r} ({name}): {reason}"
        else:
            what = f"Modality {code!r}: not a modality fracsight knows as projection radiography"
        raise UnsupportedModalityError(
            f"{label}DICOM {what}. fracsight reads projection radiographs (Modality {readable})",
            modality=code,
            # a DX image whose Modality says KO is an image mislabelled: no object without one
            # (the node would acknowledge it and drop it unsaid)
            not_an_image=reason == _NOT_AN_IMAGE and not image_class,
        )
    if storage_class and uid not in READ_SOP_CLASSES:
        shown = f"Modality {code!r}" if code else "no Modality"
        raise UnsupportedModalityError(
            f"{label}DICOM SOP Class {_sop_class_name(uid)} is not a projection radiograph ({shown} "
            "notwithstanding). fracsight reads Computed Radiography, Digital X-Ray and Secondary "
            "Capture images",
            modality=code,
            sop_class=uid,
            not_an_image=not _image_storage(uid),
        )
    warnings = []
    if not present:
        warnings.append(MISSING_MODALITY_WARNING)
    if uid == _FOR_PROCESSING:
        warnings.append(FOR_PROCESSING_WARNING)
    return tuple(warnings)


def _sop_class_name(uid: str) -> str:
    """``"CT Image Storage (1.2.840.10008.5.1.4.1.1.2)"``; the bare UID when pydicom does not know it."""
    try:
        from pydicom.uid import UID

        name = UID(uid).name
    except Exception:  # only a nicer message is lost
        name = uid
    return uid if name == uid else f"{name} ({uid})"
