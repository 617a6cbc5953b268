"""Typed results of the Predictor. ``to_dict()`` never includes pixels or patient data."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from fracsight.explain import DetectedBox
from fracsight.io import ImageMetadata

if TYPE_CHECKING:
    from fracsight.bundle import OperatingPoint

__all__ = [
    "NOTICE",
    "ClassResult",
    "FailedPrediction",
    "Prediction",
    "StudyPrediction",
    "at_operating_point",
    "finding_of",
    "shown_probability",
    "views_unread",
]

NOTICE = "fracsight is a decision aid for trained readers, not a diagnosis."

# What a prediction's heatmap shows (``Prediction.localization``).
FRACTURE_MAP = "fracture"  # where a fracture is suspected; boxes mark it (detector's, or traced on the map)
CLASS_ACTIVATION = "class_activation"  # where the predicted class is seen; never boxes
NO_LOCALIZATION = "none"


class _Failure(Protocol):
    source: str
    not_a_view: bool


def views_unread(failures: Iterable[_Failure]) -> list[str]:
    """The names of a study's files that failed that are views its verdict has not seen: not the
    DICOM objects that hold no image (a report, a key object, a presentation state, which a PACS
    export holds beside the images; their rows say so), which made every such study "not reliable:
    some views could not be read" (the node never counted them). A CT slice or a view whose
    Modality fracsight does not know is a view it could not read."""
    return [f.source for f in failures if not f.not_a_view]


def shown_probability(p: float, digits: int = 2) -> str:
    """``p`` as a reader sees it, with ``digits`` decimals, never rounded to certainty: 0.9999 is
    ">0.99", not "1.00" (a card read "Fracture probability 1.000", "Fracture type: hand (1.00)");
    0.0001 is "<0.01". The JSON and CSV keep the number itself."""
    step = 10.0**-digits
    if p >= 1.0 - step / 2:
        return f">{1.0 - step:.{digits}f}"
    if p < step / 2:
        return f"<{step:.{digits}f}"
    return f"{p:.{digits}f}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass(frozen=True)
class ClassResult:
    """The answer of an N-class head (for example the fracture type).

    ``predicted`` is the most likely class; it is stated as the answer only when
    ``confident`` (its probability reaches the bundle's ``min_probability``), otherwise
    the class is uncertain. With a fracture head in the same bundle the classes describe
    a fracture, so they only mean something when a fracture is suspected.
    """

    predicted: str
    probability: float
    confident: bool
    min_probability: float
    probabilities: dict[str, float]

    @classmethod
    def from_probabilities(cls, probabilities: dict[str, float], min_probability: float) -> ClassResult:
        top = max(probabilities, key=probabilities.__getitem__)
        p = probabilities[top]
        return cls(top, p, p >= min_probability, min_probability, probabilities)

    @property
    def words(self) -> str:
        return (
            f"most likely {self.predicted}" if self.confident else f"class uncertain (top: {self.predicted})"
        )

    @property
    def mapped(self) -> str:
        """The class a class heatmap shows, as its caption names it: one the decision withholds is
        said to be uncertain (a caption naming "leg" beside "class uncertain" read as the answer)."""
        return self.predicted if self.confident else f"{self.predicted}, the most likely class but uncertain"

    def to_dict(self) -> dict[str, Any]:
        return {
            "predicted": self.predicted,
            "probability": round(self.probability, 6),
            "confident": self.confident,
            "min_probability": round(self.min_probability, 6),
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
        }


FRACTURE = "fracture"  # what a fracture head finds, in the decision's words (see finding_of)
ABNORMALITY = "abnormality"  # what a head trained on MURA (normal / abnormal) finds


def finding_of(positive_class: str) -> str:
    """What a binary head whose positive class is ``positive_class`` finds, as the noun of the
    decision ("fracture suspected"): a head trained on MURA (``normal`` / ``abnormal``) finds an
    abnormality, not a fracture, and must not say otherwise."""
    nouns = {"abnormal": ABNORMALITY, "abnormality": ABNORMALITY}
    return nouns.get(positive_class.strip().lower(), FRACTURE)  # "positive", "yes", ...: a fracture head


def _decision(
    reliable: bool,
    suspected: bool | None,
    classification: ClassResult | None,
    unreliable: str,
    finding: str = FRACTURE,
) -> str:
    """The headline of an image or study, from the heads the bundle has."""
    if not reliable:
        return unreliable
    if suspected is None:  # no fracture head: the class is the answer
        return classification.words if classification is not None else "no result"
    if not suspected:
        return f"no {finding} detected"
    if classification is None:
        return f"{finding} suspected"
    kind = f"most likely {classification.predicted}" if classification.confident else "type uncertain"
    return f"{finding} suspected, {kind}"


def _fracture_fields(
    probability: float | None, suspected: bool | None, operating_point: str | None, threshold: float | None
) -> dict[str, Any]:
    if probability is None:
        return {}
    return {
        "fracture_probability": _round(probability),
        "fracture_suspected": suspected,
        "operating_point": {"name": operating_point, "threshold": _round(threshold)},
    }


@dataclass(frozen=True)
class Prediction:
    """One image's result. A head the bundle lacks is None (or empty) here and absent from ``to_dict()``."""

    source: str  # file name (never a full path) or the name given with bytes
    fracture_probability: float | None  # calibrated; None for a bundle without a fracture head
    fracture_suspected: bool | None  # at the operating point below
    operating_point: str | None
    threshold: float | None
    decisions: dict[str, bool]  # suspected or not at every operating point of the bundle
    region: str | None
    region_probabilities: dict[str, float]  # empty for a bundle without a region head
    boxes: tuple[DetectedBox, ...]  # suspected fractures; always empty without a fracture head
    classification: ClassResult | None  # N-class head (e.g. fracture type), when the bundle has one
    reliable: bool  # False when the input does not look like what the model was made for
    warnings: tuple[str, ...]
    model: str
    metadata: ImageMetadata
    localization: str = FRACTURE_MAP  # what ``heatmap`` shows: FRACTURE_MAP, CLASS_ACTIVATION or none
    # (height, width) of the image as shown (EXIF orientation applied, full resolution): the frame
    # of ``boxes`` and ``heatmap``; None: ``metadata.original_size`` (a result made without it)
    shown_size: tuple[int, int] | None = None
    finding: str = FRACTURE  # what the fracture head finds (a MURA-trained one: "abnormality")
    heatmap: np.ndarray | None = field(default=None, repr=False, compare=False)  # (H, W) in [0, 1]
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)  # the radiograph, for overlays

    # unhashable, said so by name: the hash frozen=True makes failed inside on a dict field
    __hash__ = None  # type: ignore[assignment]

    @property
    def has_fracture_head(self) -> bool:
        return self.fracture_probability is not None

    @property
    def notice(self) -> str:
        """:data:`NOTICE`: a decision aid for trained readers, not a diagnosis (``to_dict()["notice"]``)."""
        return NOTICE

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the image the boxes and heatmap are on (``image`` in :meth:`to_dict`)."""
        return self.shown_size or self.metadata.original_size

    @property
    def class_probabilities(self) -> dict[str, float]:
        return {} if self.classification is None else self.classification.probabilities

    @property
    def decision(self) -> str:
        return _decision(
            self.reliable,
            self.fracture_suspected,
            self.classification,
            # a file cut short is a radiograph the model knows, with part of it missing
            "not reliable: part of the image is missing from the file"
            if self.metadata.incomplete
            else "not reliable: input outside what the model was made for",
            self.finding,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "decision": self.decision}
        out.update(
            _fracture_fields(
                self.fracture_probability, self.fracture_suspected, self.operating_point, self.threshold
            )
        )
        if self.has_fracture_head:
            out["decisions"] = dict(self.decisions)  # a copy: the result's own was changed through it
        if self.region_probabilities:
            out["region"] = self.region
            out["region_probabilities"] = {k: round(v, 6) for k, v in self.region_probabilities.items()}
        if self.classification is not None:
            out["classification"] = self.classification.to_dict()
        out["localization"] = self.localization
        if self.has_fracture_head:
            out["boxes"] = [b.to_dict() for b in self.boxes]
        out.update(
            reliable=self.reliable,
            warnings=list(self.warnings),
            model=self.model,
            image={
                "format": self.metadata.source_format,
                "height": self.image_size[0],
                "width": self.image_size[1],
                "photometric": self.metadata.photometric,
            },
            notice=NOTICE,
        )
        return out


@dataclass(frozen=True)
class FailedPrediction:
    """A file that could not be predicted; batch runs report it and carry on."""

    source: str
    error_code: str
    error: str
    not_a_view: bool = False  # a DICOM object holding no image (a report): no view a study missed

    @classmethod
    def of(cls, source: str, error: Exception) -> FailedPrediction:
        """The failure ``error`` (a :class:`~fracsight.errors.FracsightError`) made of ``source``."""
        code = getattr(error, "code", "internal_error")
        return cls(source, code, str(error), getattr(error, "not_an_image", False))

    # ``decision`` and ``reliable`` as a Prediction has them, so that a loop over predict_many's
    # stream (``[r.decision for r in ...]``) does not stop with AttributeError at the first bad file
    @property
    def decision(self) -> str:
        """``"error"``, as the CLI's decision column says; ``error_code`` and ``error`` say why."""
        return "error"

    @property
    def reliable(self) -> bool:
        return False

    @property
    def fracture_probability(self) -> None:
        """None, as for a model without a fracture head: nothing was read (``error`` says why)."""
        return None

    @property
    def notice(self) -> str:
        """:data:`NOTICE`, as for :class:`Prediction`."""
        return NOTICE

    def to_dict(self) -> dict[str, Any]:
        # decision and reliable as the CSV row and the properties above say them, so that a reader
        # of predict --json's "images" finds them on every entry
        return {
            "source": self.source,
            "decision": self.decision,
            "reliable": self.reliable,
            "error_code": self.error_code,
            "error": self.error,
        }


@dataclass(frozen=True)
class StudyPrediction:
    """Several views of one examination combined.

    Fracture: the mean of the image probabilities (the MURA convention). Class: the mean
    of the image class distributions, each weighted by its fracture probability when the
    bundle has a fracture head (a type is seen on the views that show the fracture). Region:
    the likeliest of the mean of the image region distributions; views that read as different
    regions are a warning (a hand and a hip given as one study).
    """

    study: str
    images: tuple[str, ...]
    reliable: bool
    fracture_probability: float | None = None
    fracture_suspected: bool | None = None
    operating_point: str | None = None
    threshold: float | None = None
    classification: ClassResult | None = None
    aggregation: str = "mean"
    unread: tuple[str, ...] = ()  # views of the study that could not be read (not in ``images``)
    # views given more than once, left out (``copy.jpg (the same image as a.jpg)``)
    repeats: tuple[str, ...] = ()
    finding: str = FRACTURE  # as for Prediction
    view_probabilities: tuple[float, ...] = ()  # each of ``images``' own fracture probability
    unreliable: tuple[str, ...] = ()  # views read but not reliable on their own (in ``images``)
    incomplete: tuple[str, ...] = ()  # of ``unreliable``, those whose file is cut short
    # the region of the views' mean region distribution, as for Prediction; None without a region head
    region: str | None = None
    region_probabilities: dict[str, float] = field(default_factory=dict)
    view_regions: tuple[str, ...] = ()  # each of ``images``' own most likely region
    # the MURA-style study folders the views come from, where several were combined into this one
    folders: tuple[str, ...] = ()
    # images of the study's folder that were not given (its views given one by one)
    left_out: tuple[str, ...] = ()
    dicom_studies: int = 0  # how many DICOM studies (Study Instance UIDs) the views come from
    dicom_patients: int = 0  # how many patients (Patient IDs): more than one, the verdict is not reliable

    __hash__ = None  # type: ignore[assignment]  # as Prediction's: a dict field

    @property
    def notice(self) -> str:
        """:data:`NOTICE`, as for :class:`Prediction`."""
        return NOTICE

    @property
    def views_suspected(self) -> tuple[str, ...]:
        """The views whose own probability reaches the study's threshold (at its operating point)."""
        if self.threshold is None:
            return ()
        pairs = zip(self.images, self.view_probabilities, strict=False)
        return tuple(name for name, p in pairs if p >= self.threshold)

    @property
    def decision(self) -> str:
        return _decision(
            self.reliable,
            self.fracture_suspected,
            self.classification,
            "not reliable: some views could not be read"
            if self.unread
            # before a view out of range: views of two patients are a mix-up whatever each says
            else "not reliable: the views come from several patients"
            if self.dicom_patients > 1
            # a cut-short file is sent again, not blamed on the body part or the kind of image
            else "not reliable: part of a view's image is missing from its file"
            if self.unreliable and set(self.unreliable) <= set(self.incomplete)
            else "not reliable: some views are outside what the model was made for",
            self.finding,
        )

    @property
    def _unread_note(self) -> str | None:
        if not self.unread:
            return None
        views = len(self.images) + len(self.unread)
        return (
            f"{len(self.unread)} of {views} views could not be read ({', '.join(self.unread)}); "
            f"the study result is from the other {len(self.images)} only"
        )

    @property
    def _unreliable_note(self) -> str | None:
        if not self.unreliable:
            return None
        one = len(self.unreliable) == 1
        return (
            f"not reliable on {'its' if one else 'their'} own: {', '.join(self.unreliable)} (see each "
            f"view's warnings); the study's result still includes {'it' if one else 'them'}"
        )

    @property
    def _patients_note(self) -> str | None:
        if self.dicom_patients <= 1:
            return None
        return (
            f"the views come from {self.dicom_patients} patients (their DICOM Patient IDs differ): "
            "one examination is of one patient, so this result is not reliable; check which images "
            "belong together"
        )

    @property
    def why_not_reliable(self) -> tuple[str, ...]:
        """The warnings that make the study not reliable: views that could not be read, views read
        but not reliable on their own (which its result still includes), views of several patients."""
        return tuple(note for note in (self._unread_note, self._unreliable_note, self._patients_note) if note)

    @property
    def warnings(self) -> tuple[str, ...]:
        said = [self._unread_note] if self._unread_note else []
        if self.repeats:
            said.append(f"given more than once, so counted once: {', '.join(self.repeats)}")
        if self.regions_differ:
            said.append(self.regions_differ)
        if self._unreliable_note:
            said.append(self._unreliable_note)
        if self.hidden_views:
            said.append(self.hidden_views)
        if self.left_out:
            were = "was" if len(self.left_out) == 1 else "were"
            names = ", ".join(self.left_out[:5]) + (
                f" and {len(self.left_out) - 5} more" if len(self.left_out) > 5 else ""
            )
            folders = "study folders'" if len(self.folders) > 1 else "study folder's"
            said.append(
                f"{len(self.left_out)} of the {folders} images {were} not given ({names}): the "
                "result is of the views given only"
            )
        if self._patients_note:
            said.append(self._patients_note)
        if self.dicom_studies > 1:
            said.append(
                f"the views come from {self.dicom_studies} DICOM studies (their Study Instance UIDs "
                "differ): are they one examination? Given apart, each is a study"
            )
        if len(self.folders) > 1:
            said.append(
                f"the views come from {len(self.folders)} study folders ({', '.join(self.folders)}), "
                "combined here as one examination: are they one? Read apart, each folder is a study"
            )
        return tuple(said)

    @property
    def views_by_region(self) -> dict[str, list[str]]:
        """The views reliable on their own by the region each reads as."""
        regions: dict[str, list[str]] = {}
        for name, region in zip(self.images, self.view_regions, strict=False):
            if name not in self.unreliable:
                regions.setdefault(region, []).append(name)
        return regions

    @property
    def regions_differ(self) -> str | None:
        """What to check when the views read as different body regions (a hand and a hip given as
        one study); None otherwise. A view outside what the model was made for (a photo) has no
        region worth comparing."""
        regions = self.views_by_region
        if len(regions) < 2:
            return None
        named = "; ".join(f"{region}: {', '.join(names)}" for region, names in regions.items())
        return (
            f"the views read as different body regions ({named}): are they one examination? "
            f"The study's region is the likeliest over all of them, {self.region}"
        )

    @property
    def hidden_views(self) -> str | None:
        """What to review when the mean of the views stays below the threshold while some view alone
        reaches it (a fracture seen on one view of several); None otherwise."""
        above = self.views_suspected
        if not above or self.fracture_suspected is not False:
            return None
        one = len(above) == 1
        return (
            f"the mean of the views is below the threshold, but {', '.join(above)} "
            f"{'is' if one else 'are'} above it on {'its' if one else 'their'} own: review "
            f"{'it' if one else 'them'}"
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"study": self.study, "decision": self.decision}
        out.update(
            _fracture_fields(
                self.fracture_probability, self.fracture_suspected, self.operating_point, self.threshold
            )
        )
        if self.region_probabilities:
            out["region"] = self.region
            out["region_probabilities"] = {k: round(v, 6) for k, v in self.region_probabilities.items()}
        if self.classification is not None:
            out["classification"] = self.classification.to_dict()
        out.update(
            aggregation=self.aggregation,
            images=list(self.images),
            unread_images=list(self.unread),
            reliable=self.reliable,
            warnings=list(self.warnings),
            notice=NOTICE,
        )
        return out


Result = TypeVar("Result", Prediction, StudyPrediction, FailedPrediction)


def at_operating_point(result: Result, op: OperatingPoint | None) -> Result:
    """``result`` as it reads at another operating point of its bundle: the same probability against
    that point's threshold (what a :class:`~fracsight.inference.Predictor` made with that operating
    point says), so switching points needs no second pass of the model. A failed file, a result
    without a fracture head, or ``op`` None comes back unchanged. The API, the web app and the
    desktop app all switch points with this one function.
    """
    if isinstance(op, str):  # the name alone has no threshold: it used to fail on ``op.name``
        raise TypeError(
            f"at_operating_point takes an OperatingPoint, not the name {op!r}: "
            f"use predictor.spec.operating_point({op!r})"
        )
    from fracsight.bundle import OperatingPoint

    if op is not None and not isinstance(op, OperatingPoint):  # it failed on ``op.name``
        raise TypeError(f"at_operating_point takes an OperatingPoint or None, not {type(op).__name__}")
    if op is None or isinstance(result, FailedPrediction) or result.fracture_probability is None:
        return result
    if result.operating_point == op.name and result.threshold == op.threshold:
        return result
    return replace(
        result,
        fracture_suspected=result.fracture_probability >= op.threshold,
        operating_point=op.name,
        threshold=op.threshold,
    )
