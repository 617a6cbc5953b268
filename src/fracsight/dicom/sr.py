"""The structured report: a TID 1500 Measurement Report in a Comprehensive SR (highdicom.sr).

Per image, the Imaging Measurements container holds

* one TID 1501 group for the whole image: the source image, the finding (fracture, or for a
  head trained on MURA an abnormal imaging result: :data:`FINDING_CODES`), the
  algorithm (TID 4019: name, version, the ONNX sha256 and the operating point as parameters),
  the body region as finding site, the finding's probability (a measurement), the decision at
  the operating point and, for a bundle with a class head, the most likely class and its
  probability;
* one TID 1410 group per box: the box as a closed POLYLINE SCOORD on the source image, with
  its localization score.

A root-level "Qualitative Evaluations" container carries the decision in words, the input
warnings and the decision-aid notice as TEXT. A head the bundle lacks leaves its items out;
nothing is filled in to look complete. The study report has one TID 1501 group over all the
study's images with the study verdict of :meth:`fracsight.inference.Predictor.predict_study`
and the study's body region as finding site.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from fracsight.dicom.results_context import (
    MANUFACTURER,
    MAX_IS,
    ResultContext,
    aid,
    first_number,
    instance_number,
    laterality,
    one_value,
    series,
)
from fracsight.inference.results import ABNORMALITY, NOTICE, ClassResult, Prediction, StudyPrediction
from fracsight.inference.results import FRACTURE as FRACTURE_FINDING

__all__ = ["FINDING_CODES", "PRIVATE_SCHEME", "image_report", "study_report"]

#: fracsight's own coding scheme, for concepts no standard vocabulary has (a bundle's class
#: names, a region without a SNOMED CT code); declared in the Coding Scheme Identification
#: Sequence of each SR that uses it.
PRIVATE_SCHEME = "99FRACSIGHT"

FRACTURE = Code("72704001", "SCT", "Fracture")
ABNORMAL_IMAGING_RESULT = codes.SCT.ImagingResultAbnormal  # 408574004, a finding
#: The coded finding of each ``Prediction.finding``: what a MURA-trained head (normal /
#: abnormal) finds is any abnormal radiograph (fractures, hardware, lesions, degeneration), so
#: its report codes an abnormal imaging result, never a fracture.
FINDING_CODES = {FRACTURE_FINDING: FRACTURE, ABNORMALITY: ABNORMAL_IMAGING_RESULT}
PROBABILITY = codes.DCM.Probability
NO_UNITS = codes.UCUM.NoUnits
SUSPECTED = codes.SCT.Suspected
NOT_DETECTED = Code("260415000", "SCT", "Not detected")
SELECTED_REGION = codes.DCM.SelectedRegion  # 111099: a box that is not a suspected finding
PLAIN_RADIOGRAPHY = codes.SCT.PlainRadiography
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
# Only a class head needs fracsight's own concepts: its class names are the bundle's.
CLASS = Code("CLASS", PRIVATE_SCHEME, "Most likely class")
CLASS_PROBABILITY = Code("CLASSPROB", PRIVATE_SCHEME, "Probability of the most likely class")
CLASS_CONFIDENT = Code("CLASSCONF", PRIVATE_SCHEME, "Class probability reaches the minimum")

# Region names of fracsight bundles (FracAtlas, MURA-like) -> SNOMED CT anatomy.
_REGION_CODES = {
    "hand": codes.SCT.Hand,
    "finger": codes.SCT.Finger,
    "wrist": codes.SCT.WristRegionStructure,
    "forearm": codes.SCT.Forearm,
    "elbow": codes.SCT.ElbowJoint,
    "humerus": codes.SCT.Humerus,
    "shoulder": codes.SCT.Shoulder,
    "hip": codes.SCT.Hip,
    "pelvis": codes.SCT.Pelvis,
    "femur": codes.SCT.Femur,
    "knee": codes.SCT.Knee,
    "leg": codes.SCT.LowerLimb,  # FracAtlas "leg": anything from the knee down
    "ankle": codes.SCT.AnkleJoint,
    "foot": codes.SCT.Foot,
}
_LATERALITY = {"L": codes.SCT.Left, "R": codes.SCT.Right}


def _private(name: str) -> Code:
    """A concept of fracsight's scheme for a bundle's own name (a class or region)."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:16]
    if value != name:  # keep distinct names distinct after cleaning
        value = value[:9] + "-" + hashlib.sha256(name.encode()).hexdigest()[:6]
    return Code(value, PRIVATE_SCHEME, one_value(name) or "?")


def region_code(region: str) -> Code:
    return _REGION_CODES.get(region.lower()) or _private(region)


def _coding_schemes(result: Prediction | StudyPrediction) -> list[CodingSchemeIdentificationItem] | None:
    """The declaration of fracsight's scheme, for a report that uses it."""
    region = result.region
    if result.classification is None and (region is None or region.lower() in _REGION_CODES):
        return None
    return [
        CodingSchemeIdentificationItem(
            designator=PRIVATE_SCHEME,
            name="fracsight concepts",
            responsible_organization="fracsight",
        )
    ]


def _algorithm(context: ResultContext, result: Prediction | StudyPrediction) -> hd.sr.AlgorithmIdentification:
    parameters = [f"model.onnx sha256 {context.model_sha256}"]
    if result.operating_point is not None:
        parameters.append(f"operating point {result.operating_point}, threshold {result.threshold:.6f}")
    if result.classification is not None:
        parameters.append(f"class minimum probability {result.classification.min_probability:.6f}")
    return _algorithm_items(context.algorithm_name, context.algorithm_version, tuple(parameters))


# The same for every report of a node: built once (the content items are only read afterwards,
# by highdicom's copy into each document and by the encoder).
@functools.lru_cache(maxsize=16)
def _algorithm_items(name: str, version: str, parameters: tuple[str, ...]) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=name, version=version, parameters=list(parameters), manufacturer=MANUFACTURER
    )


def _observation_context(context: ResultContext) -> hd.sr.ObservationContext:
    return _device_observer(context.algorithm_name, context.model_sha256)


@functools.lru_cache(maxsize=16)
def _device_observer(algorithm_name: str, model_sha256: str) -> hd.sr.ObservationContext:
    from pydicom.uid import generate_uid

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=str(generate_uid(entropy_srcs=["fracsight device", model_sha256])),
        name="fracsight",
        manufacturer_name=MANUFACTURER,
        model_name=algorithm_name,
        serial_number=model_sha256[:16] or None,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def _probability(value: float, name: Code = PROBABILITY) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=round(float(value), 6), unit=NO_UNITS)


def _verdict(
    result: Prediction | StudyPrediction,
) -> tuple[list[hd.sr.Measurement], list[hd.sr.QualitativeEvaluation]]:
    """The probability, the decision and the class, as far as the bundle's heads give them."""
    measurements: list[hd.sr.Measurement] = []
    evaluations: list[hd.sr.QualitativeEvaluation] = []
    if result.fracture_probability is not None:
        measurements.append(_probability(result.fracture_probability))
        decided = SUSPECTED if result.fracture_suspected else NOT_DETECTED
        evaluations.append(hd.sr.QualitativeEvaluation(FINDING_CODES[result.finding], decided))
    classification: ClassResult | None = result.classification
    if classification is not None:
        measurements.append(_probability(classification.probability, CLASS_PROBABILITY))
        evaluations.append(hd.sr.QualitativeEvaluation(CLASS, _private(classification.predicted)))
        yes_no = codes.SCT.Yes if classification.confident else codes.SCT.No
        evaluations.append(hd.sr.QualitativeEvaluation(CLASS_CONFIDENT, yes_no))
    return measurements, evaluations


def _finding_sites(headers: Sequence[Dataset], region: str | None) -> list[hd.sr.FindingSite] | None:
    """The body region with the images' laterality, where they all give the same one."""
    if region is None:
        return None
    sides = {laterality(h) for h in headers}
    side = sides.pop() if len(sides) == 1 else None
    return [hd.sr.FindingSite(region_code(region), laterality=_LATERALITY.get(side or ""))]


def _text_container(items: Sequence[tuple[Code, str]]) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.TextContentItem(
                name=name, value=text[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
            )
            for name, text in items
        ]
    )
    return container


def _document(
    evidence: Sequence[Dataset],
    report: hd.sr.MeasurementReport,
    texts: Sequence[tuple[Code, str]],
    context: ResultContext,
    result: Prediction | StudyPrediction,
    *,
    sop_instance_uid: str,
    instance_number: int,
    previous: Sequence[Dataset] = (),
) -> Dataset:
    report[0].ContentSequence.append(_text_container(texts))
    info = series("sr", aid(result))
    equipment = context.equipment()
    return hd.sr.ComprehensiveSR(
        evidence=list(evidence),
        content=report[0],
        series_instance_uid=context.series_uid(evidence[0].StudyInstanceUID, "sr"),
        series_number=info.number,
        series_description=info.description,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=equipment["manufacturer"],
        manufacturer_model_name=equipment["manufacturer_model_name"],
        software_versions=equipment["software_versions"],
        device_serial_number=equipment["device_serial_number"],
        is_complete=True,
        is_final=False,  # a machine's preliminary finding for a reader to confirm, never verified
        is_verified=False,
        coding_schemes=_coding_schemes(result),
        previous_versions=list(previous) or None,
        **context.dates(),
    )


def image_report(
    header: Dataset,
    prediction: Prediction,
    context: ResultContext,
    *,
    frame_numbers: Sequence[int] | None = None,
    sop_instance_uid: str,
) -> Dataset:
    """The SR of one image; ``header`` is the source without its pixel data."""
    algorithm = _algorithm(context, prediction)
    sites = _finding_sites([header], prediction.region)
    measurements, evaluations = _verdict(prediction)
    code = FINDING_CODES[prediction.finding]
    finding = code if prediction.has_fracture_head else None
    groups: list = [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="fracsight image result"),
            finding_type=finding,
            algorithm_id=algorithm,
            finding_sites=sites,
            measurements=measurements,
            qualitative_evaluations=evaluations,
            source_images=[_source(hd.sr.SourceImageForMeasurementGroup, header, frame_numbers)],
        )
    ]
    # on a negative decision, or an input the model cannot be relied on, the boxes are where the
    # model looked most, not suspected findings
    # (coded so too: a viewer that labels regions by their finding drew "Fracture" on a negative study)
    box_finding = code
    if not prediction.reliable:
        boxed, box_finding = "area weighed most, not reliable", SELECTED_REGION
    elif prediction.fracture_suspected:
        boxed = f"suspected {prediction.finding}"
    else:
        boxed, box_finding = "area weighed most, not suspected", SELECTED_REGION
    for k, box in enumerate(prediction.boxes, start=1):
        outline = np.array(
            [[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1], [box.x0, box.y0]],
            dtype=np.float32,
        )
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=outline,
            source_image=_source(hd.sr.SourceImageForRegion, header, frame_numbers),
        )
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=hd.UID(), identifier=f"fracsight {boxed} {k}"
                ),
                referenced_region=region,
                finding_type=box_finding,
                # the algorithm is named once, in the image's group of the same report: each
                # copy costs highdicom's checks of five more content items per box
                finding_sites=sites,
                measurements=[_probability(box.score)],  # DetectedBox.score
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(context),
        procedure_reported=PLAIN_RADIOGRAPHY,
        imaging_measurements=groups,
    )
    texts = [(codes.DCM.Finding, prediction.decision)]
    texts += [(codes.DCM.Comment, f"input warning: {w}") for w in prediction.warnings]
    texts.append((codes.DCM.Comment, NOTICE))
    return _document(
        [header],
        report,
        texts,
        context,
        prediction,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number(header),
    )


def _source(kind: Any, header: Dataset, frame_numbers: Sequence[int] | None) -> Any:
    """highdicom's reference to a source image, made from its UIDs: ``from_source_image`` also
    checks the Modality, which a radiograph read with a warning may lack."""
    return kind(
        referenced_sop_class_uid=header.SOPClassUID,
        referenced_sop_instance_uid=header.SOPInstanceUID,
        referenced_frame_numbers=frame_numbers,
    )


def study_tracking_uid(study_uid: str, context: ResultContext) -> str:
    """The Tracking UID every verdict of a study by one model at one operating point carries
    (:func:`study_report`); the default point's as before operating points were told apart."""
    from pydicom.uid import generate_uid

    sources = ["fracsight study result", study_uid, context.model_sha256]
    return str(
        generate_uid(entropy_srcs=[*sources, context.operating_point] if context.operating_point else sources)
    )


def tracking_uid_of(report: Dataset) -> str | None:
    """The Tracking UID (DCM 112040) a report's content tree carries; None where it has none."""
    items = list(report.get("ContentSequence", []))
    while items:
        item = items.pop()
        name = item.get("ConceptNameCodeSequence")
        if item.get("ValueType") == "UIDREF" and name and name[0].get("CodeValue") == "112040":
            return str(item.get("UID"))
        items.extend(item.get("ContentSequence", []))
    return None


def _study_cautions(study: StudyPrediction) -> list[str]:
    """The study's warnings a reader of its SR needs, counted rather than named (the names a node
    sees are its spool's keys): the SR carried none of them (views not read, views of different
    regions, views not reliable on their own), where predict --study says each."""
    said = []
    if study.repeats:  # "study of 5 images" over a mean of 4, and nothing said why
        said.append(
            f"{len(study.repeats)} of the images given more than once (the same pixels as another): "
            "each counted once"
        )
    if study.unread:
        total = len(study.images) + len(study.unread)
        said.append(f"{len(study.unread)} of {total} views could not be read: this result has not seen them")
    regions = study.views_by_region
    if len(regions) > 1:
        counted = ", ".join(f"{region}: {len(names)}" for region, names in regions.items())
        said.append(f"the views read as different body regions ({counted}): are they one examination?")
    if study.unreliable:
        said.append(
            f"{len(study.unreliable)} of {len(study.images)} views not reliable on their own: this "
            "result still includes them"
        )
    if study.dicom_studies > 1:
        said.append(f"the views come from {study.dicom_studies} DICOM studies: are they one examination?")
    if study.dicom_patients > 1:
        said.append(
            f"the views come from {study.dicom_patients} patients: check which images belong together"
        )
    return said


def study_report(
    headers: Sequence[Dataset],
    study: StudyPrediction,
    context: ResultContext,
    *,
    frame_numbers: Sequence[Sequence[int] | None],
    sop_instance_uid: str,
    previous: Sequence[Dataset] = (),
) -> Dataset:
    """The SR of a study verdict over all ``headers`` (the study's images, without pixels).

    ``previous``: the study's earlier verdict SR this one replaces (an image arrived after it),
    named in the Predecessor Documents Sequence. Every verdict of a study and model carries one
    Tracking UID, so that a reader, or software, sees one finding in its versions, not two."""
    measurements, evaluations = _verdict(study)
    tracking = study_tracking_uid(headers[0].StudyInstanceUID, context)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking, identifier="fracsight study result"),
        finding_type=FINDING_CODES[study.finding] if study.fracture_probability is not None else None,
        algorithm_id=_algorithm(context, study),
        finding_sites=_finding_sites(headers, study.region),
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[
            _source(hd.sr.SourceImageForMeasurementGroup, h, f)
            for h, f in zip(headers, frame_numbers, strict=True)
        ],
    )
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(context),
        procedure_reported=PLAIN_RADIOGRAPHY,
        imaging_measurements=[group],
    )
    texts = [
        (codes.DCM.Finding, f"study of {len(study.images)} images: {study.decision}"),
        (codes.DCM.Comment, f"aggregation over the images: {study.aggregation}"),
        (codes.DCM.Comment, NOTICE),
    ]
    if study.hidden_views:  # counted, not named: the names a node sees are its spool's keys
        above, views = len(study.views_suspected), len(study.images)
        texts.insert(
            1,
            (
                codes.DCM.Finding,
                f"{above} of {views} images above the threshold on their own, "
                "while the mean of the images is below it: review them",
            ),
        )
    texts[-1:-1] = [(codes.DCM.Comment, caution) for caution in _study_cautions(study)]
    return _document(
        headers,
        report,
        texts,
        context,
        study,
        sop_instance_uid=sop_instance_uid,
        # after the results of the images it is over (len(headers) + 1 was one of theirs) and the
        # verdicts it replaces (a node sent in UID order: the highest image was among the first
        # verdict's, and both verdicts were 100301); an image arriving later, numbered higher, can
        # share it: Instance Numbers need not be unique. At most an IS's largest (an image numbered
        # 2147483647 gave its verdict one past it, which dciodvfy refused)
        instance_number=min(
            MAX_IS,
            1
            + max(
                [instance_number(h) for h in headers]
                + [first_number(p, "InstanceNumber") or 0 for p in previous]
            ),
        ),
        previous=previous,
    )
