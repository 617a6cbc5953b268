"""What every fracsight result object shares: the equipment that made it, its series, its text.

The writers in :mod:`fracsight.dicom.sr`, :mod:`fracsight.dicom.gsps` and
:mod:`fracsight.dicom.capture` take a :class:`ResultContext` so that the three kinds say the
same thing about who made them and put the same words on screen.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fracsight import __version__
from fracsight.inference.results import FRACTURE
from fracsight.io.dicom_gate import RESULT_MODEL_NAME

if TYPE_CHECKING:
    from pydicom import Dataset

    from fracsight.inference import Prediction, Predictor, StudyPrediction

__all__ = [
    "KINDS",
    "MANUFACTURER",
    "NODE_KINDS",
    "ResultContext",
    "SeriesInfo",
    "aid",
    "instance_number",
    "laterality",
    "one_value",
    "plural",
    "series",
]

MANUFACTURER = "fracsight"
KINDS = ("sr", "gsps", "capture")
# What the node (and the DICOMweb study command) makes unless told otherwise: the report and the
# presentation state. The capture is opt-in: a lossy copy of the image for viewers without
# presentation states, it costs the node and the PACS about 15 % of their CPU time per image
# (docs/dicom.md, "Throughput and memory").
NODE_KINDS = ("sr", "gsps")


@dataclass(frozen=True)
class SeriesInfo:
    number: int  # high numbers keep the results after the modality's own series in a viewer
    description: str  # LO: at most 64 characters


_SERIES_NUMBERS = {"sr": 9901, "gsps": 9902, "capture": 9903}
_SERIES_NAMES = {"sr": "report", "gsps": "overlay", "capture": "capture"}
CLASSIFICATION = "classification"


def aid(result: Prediction | StudyPrediction) -> str:
    """What a result is an aid for, as its series and texts name it: the fracture head's finding
    (a MURA-trained model's "abnormality", never a fracture), or "classification" for a model
    without that head, which never says whether a fracture is there: a "fracture aid" series of
    it read in a worklist as "screened for fractures, none found"."""
    return CLASSIFICATION if result.fracture_probability is None else result.finding


def one_value(text: str, limit: int = 64) -> str:
    """A text of the bundle's (its name, a class's) as one value of a DICOM string element: a
    backslash separates values, and a Long String holds 64 characters. A 73-character bundle
    name (named after its data folder) failed every result object, and a class ``AP\\PA`` made
    the SR's code meaning two values and the presentation state's text unbuildable."""
    return text.replace("\\", "/")[:limit]


def series(kind: str, aid_for: str = FRACTURE) -> SeriesInfo:
    """The series of a result kind, named for what the results are an aid for (:func:`aid`)."""
    return SeriesInfo(
        _SERIES_NUMBERS[kind], f"fracsight {aid_for} aid {_SERIES_NAMES[kind]} - not a diagnosis"
    )


@dataclass(frozen=True)
class ResultContext:
    """The model and the moment behind a set of result objects."""

    algorithm_name: str  # the bundle's name, e.g. fracatlas-lite0-384
    algorithm_version: str
    model_sha256: str  # of the bundle's model.onnx
    created: datetime.datetime
    # "" at the bundle's default operating point, else its name and threshold: verdicts at another
    # point are another chain (a triage verdict claimed to replace the site's balanced one)
    operating_point: str = ""

    @classmethod
    def of(cls, predictor: Predictor) -> ResultContext:
        spec = predictor.spec
        point = point_key(spec, predictor.operating_point)
        name, version = one_value(spec.name), one_value(str(spec.version))
        return cls(name, version, model_checksum(predictor), datetime.datetime.now(), point)

    def at_other_points(self, predictor: Predictor) -> list[ResultContext]:
        """This context at each of the model's other operating points (whose verdicts are chains of
        their own)."""
        spec = predictor.spec
        points = {point_key(spec, op) for op in spec.operating_points} - {self.operating_point}
        return [dataclasses.replace(self, operating_point=p) for p in sorted(points)]

    @property
    def software_versions(self) -> list[str]:
        return [f"fracsight {__version__}", one_value(f"{self.algorithm_name} {self.algorithm_version}")]

    def equipment(self) -> dict[str, Any]:
        """General Equipment attributes (highdicom keyword arguments)."""
        return {
            "manufacturer": MANUFACTURER,
            "manufacturer_model_name": RESULT_MODEL_NAME,
            "software_versions": self.software_versions,
            # the model build is the "device": the checksum tells one build from another
            "device_serial_number": self.model_sha256[:16] or "unknown",
        }

    def series_uid(self, study_uid: str, kind: str, side: str | None = None) -> str:
        """The one series of this kind and model in a study (and of this ``side``, for results
        whose series carries a Laterality: a left and a right image's shared one series that said
        one side, and a query for the left found the right's overlay): every image's result of
        the same kind lands in it, also when the images arrive one by one. Derived from the study
        UID by a one-way hash, so it reveals nothing about it."""
        from pydicom.uid import generate_uid

        sources = ["fracsight", kind, study_uid, self.model_sha256, *([side] if side else [])]
        return str(generate_uid(entropy_srcs=sources))

    def dates(self, *, content: bool = True) -> dict[str, Any]:
        """Series (and content) date and time (highdicom keyword arguments); a presentation
        state has its own creation date and time instead of content ones."""
        out = {"series_date": self.created.date(), "series_time": self.created.time()}
        if content:
            out.update(content_date=self.created.date(), content_time=self.created.time())
        return out


def point_key(spec: Any, op: Any) -> str:
    """:attr:`ResultContext.operating_point` of ``op``: "" for none or the bundle's default."""
    if op is None or op == spec.operating_point(None):
        return ""
    return f"{op.name}@{op.threshold!r}"


def plural(finding: str) -> str:
    """``Prediction.finding`` for several of them: "suspected fractures", "suspected abnormalities"."""
    return f"{finding[:-1]}ies" if finding.endswith("y") else f"{finding}s"


#: the largest value an IS (an Instance Number) holds (PS3.5: a signed 32-bit range)
MAX_IS = 2**31 - 1


def instance_number(header: Dataset) -> int:
    """A result's Instance Number in its series, from the source's series and instance numbers
    (series 2, image 3: 200003). The results of every view of a study share one series per kind,
    and the views are often each their own series numbered from 1: their own Instance Number alone
    repeated in the result series, and a viewer could not order the results as their images."""
    # one a result can carry: highdicom refuses below 1 (a source numbered -5 lost every result),
    # and one past an IS's range (3000000000, kept from a source) made every result invalid
    instance = min(max(first_number(header, "InstanceNumber") or 1, 1), MAX_IS)
    series_number = first_number(header, "SeriesNumber") or 0
    if 0 < series_number < 20_000 and 0 < instance < 100_000:  # the sum fits an IS
        return series_number * 100_000 + instance
    return instance


def first_number(header: Dataset, keyword: str) -> int | None:
    """An IS attribute's (first) value as a number; None when it has none (``1\\2``, which a
    mended header keeps, raised TypeError and cost the image its results)."""
    from pydicom.multival import MultiValue

    value = header.get(keyword)
    if isinstance(value, MultiValue):
        value = value[0] if value else None
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def laterality(header: Dataset) -> str | None:
    """The source's side (L or R) for the General Series Laterality of an image-like result
    (type 2C: a paired body part needs it) and the report's finding site, or None when unknown.
    The image's own ImageLaterality first, its series' Laterality else: one rule for every result
    (the report said Left where the state and the capture said R)."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(header.get(keyword) or "").strip().upper()
        if value in ("L", "R"):
            return value
    return None


def model_checksum(predictor: Predictor) -> str:
    """sha256 of the bundle's ``model.onnx``: from ``bundle.json``, else computed."""
    if predictor.spec.onnx_sha256:
        return predictor.spec.onnx_sha256
    from fracsight.bundle import sha256_file

    onnx = predictor.bundle_dir / "model.onnx"
    return sha256_file(onnx) if onnx.is_file() else ""


def element_values(value: object) -> list:
    """An element's value as a list (one value, several, or none)."""
    from pydicom.multival import MultiValue

    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def carriable_window(item: Any) -> bool:
    """Whether the window of ``item`` (a header, or a functional group's Frame VOI LUT item) is one
    a presentation state can carry, as highdicom refuses the rest (which cost the image all its
    results): a known VOI LUT Function, as many centers as widths (and explanations, if any), each
    width above 0 (at least 1 for LINEAR). A window that is not finite passes here: the state
    then takes the whole stored range, as the reader leaves such a window out
    (:func:`fracsight.io._dicom.usable_window`)."""
    centers, widths = element_values(item.get("WindowCenter")), element_values(item.get("WindowWidth"))
    function = str(item.get("VOILUTFunction") or "LINEAR").strip()
    try:
        least = [float(w) >= (1.0 if function == "LINEAR" else 0.0) and float(w) > 0 for w in widths]
    except (TypeError, ValueError):
        return False
    return (
        function in ("LINEAR", "LINEAR_EXACT", "SIGMOID")
        and len(centers) == len(widths) > 0
        and len(element_values(item.get("WindowCenterWidthExplanation"))) in (0, len(centers))
        and all(least)
    )
