"""The presentation state: boxes and a short text drawn over the original image (highdicom.pr).

A Grayscale Softcopy Presentation State (a Color one for a grey image stored in colour)
references the source image; a viewer that shows
presentation states (most PACS viewers, OHIF, Weasis, dcmtk's dcmpsprt) draws its graphic
layer over the original pixels, which stay untouched. The layer ``FRACSIGHT`` holds each box
as a closed polyline in image pixels with its score beside it, and the decision, the
probability and the decision-aid notice as text in display units at the top left.
"""

from __future__ import annotations

import logging
import pkgutil
from collections.abc import Sequence
from fractions import Fraction

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.multival import MultiValue

from fracsight.dicom.results_context import (
    ResultContext,
    aid,
    carriable_window,
    instance_number,
    laterality,
    one_value,
    series,
)
from fracsight.errors import DicomSourceError
from fracsight.explain import summary_lines
from fracsight.explain.overlay import DEFAULT_BOX_COLOUR
from fracsight.inference.results import ABNORMALITY, FRACTURE, Prediction

logger = logging.getLogger(__name__)

__all__ = ["LAYER", "presentation_state"]

LAYER = "FRACSIGHT"
_SRGB = "_icc_profiles/sRGB_v4_ICC_preference.icc"  # shipped with highdicom
_LINE_HEIGHT = 0.035  # of the displayed area, per line of the summary text
# The layer's description by ``Prediction.finding`` where one is suspected (LO: at most 64
# characters); otherwise the boxes are the areas the model weighed most, as the state's text says
_LAYER_DESCRIPTIONS = {
    FRACTURE: "fracsight suspected fractures - decision aid, not a diagnosis",
    ABNORMALITY: "fracsight suspected abnormalities - not a diagnosis",
}
_LAYER_NOT_SUSPECTED = "fracsight: areas the model weighed most - not a diagnosis"


def _layer_description(prediction: Prediction) -> str:
    if prediction.fracture_probability is None and not prediction.boxes:  # a class model: its text only
        return "fracsight: the model's result - not a diagnosis"
    if prediction.reliable and prediction.fracture_suspected:
        return _LAYER_DESCRIPTIONS[prediction.finding]
    return _LAYER_NOT_SUSPECTED


def _summary_objects(prediction: Prediction) -> list[hd.pr.TextObject]:
    objects = []
    for i, line in enumerate(summary_lines(prediction)):
        top = 0.01 + i * _LINE_HEIGHT
        objects.append(
            hd.pr.TextObject(
                text_value=one_value(line, 1024),  # Short Text: no backslash
                units=hd.pr.AnnotationUnitsValues.DISPLAY,
                bounding_box=(0.01, top, 0.99, top + _LINE_HEIGHT),
                text_justification=hd.pr.TextJustificationValues.LEFT,
            )
        )
    return objects


def _box_objects(prediction: Prediction, rows: int, columns: int) -> tuple[list, list]:
    graphics, texts = [], []
    text_h = max(8.0, rows * 0.03)
    text_w = max(24.0, columns * 0.08)
    for k, box in enumerate(prediction.boxes, start=1):
        outline = np.array(
            [[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1], [box.x0, box.y0]],
            dtype=np.float64,
        )
        graphics.append(
            hd.pr.GraphicObject(
                graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                graphic_data=outline,
                units=hd.pr.AnnotationUnitsValues.PIXEL,
                tracking_id=f"fracsight box {k}",
                tracking_uid=hd.UID(),
            )
        )
        # the score above the box, or inside its top when the box touches the top edge
        top = box.y0 - text_h if box.y0 >= text_h else box.y0
        left = min(box.x0, max(0.0, columns - text_w))
        texts.append(
            hd.pr.TextObject(
                text_value=f"{box.score:.2f}",
                units=hd.pr.AnnotationUnitsValues.PIXEL,
                bounding_box=(left, top, min(float(columns), left + text_w), min(float(rows), top + text_h)),
                text_justification=hd.pr.TextJustificationValues.LEFT,
            )
        )
    return graphics, texts


def _explicit_luts(header: Dataset, frame: int) -> dict:
    """The modality and VOI LUTs highdicom does not find itself: a Modality LUT Sequence (highdicom
    0.28 copies rescale only, and the state's identity LUT left the source's window over the
    bottom eighth of a 12-bit image: shown nearly black), and a classic multi-frame image's (a
    multi-frame secondary capture): highdicom looks for those in the functional groups of
    enhanced objects, but such an image has them at the top level, like a single-frame one. A
    window the reader leaves out (NaN, infinite, text, a width of 0) is left out here too: given
    to highdicom, it refused the state, and the image lost every result."""
    from fracsight.io._dicom import first_window, modality_lut_table, usable_window

    # a multi-frame IOD (even of one frame): highdicom reads its LUTs from the functional groups
    # only, and failed on an image without them; given here, they are the ones the reader applied
    multi_frame = _multi_frame_iod(header)
    if multi_frame:
        header = _with_lifted_groups(header, frame)
    luts = {}
    window = first_window(header)
    if window is not None and not usable_window(window):
        window = None
    if (
        window is None
        and ("WindowCenter" in header or "WindowWidth" in header)
        and not header.get("VOILUTSequence")
    ):
        luts["voi_lut_transformations"] = [_voi(header, None)]
    table = modality_lut_table(header)
    if table is not None and table[0] < 0:
        # a signed first value (Pixel Representation 1), which highdicom 0.28 refuses: the state
        # is made without the LUT, as before, rather than costing the image every result
        logger.warning("the source's Modality LUT starts below 0: the presentation state leaves it out")
    elif table is not None:
        kind = str(header.ModalityLUTSequence[0].get("ModalityLUTType") or "")
        lut = hd.ModalityLUT(
            lut_type=kind if kind in hd.RescaleTypeValues.__members__ else "US",  # US: unspecified
            first_mapped_value=table[0],
            lut_data=table[1],
        )
        luts["modality_lut_transformation"] = hd.ModalityLUTTransformation(modality_lut=lut)
    if not multi_frame:  # highdicom copies a single-frame image's own
        return luts
    # what the functional groups hold, highdicom copies itself (a window per frame, as such); the
    # rest is given here: it read the groups only, and failed on an image without them
    shared = (header.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    per_frame = header.get("PerFrameFunctionalGroupsSequence") or []
    windows = [item for group in (shared, *per_frame) for item in (group.get("FrameVOILUTSequence") or [])]
    # highdicom reads the per-frame groups whenever it copies a window, and refuses one it cannot
    # carry (a width of 0), which cost the image every result: the reader's window then, as below
    carried = all(carriable_window(i) and usable_window(first_window(i) or (0.0, 0.0)) for i in windows)
    if windows and per_frame and carried:
        luts.setdefault("voi_lut_transformations", None)
    if "PixelValueTransformationSequence" in shared:
        luts.setdefault("modality_lut_transformation", None)
    slope = header.get("RescaleSlope")
    intercept = header.get("RescaleIntercept")
    luts.setdefault(
        "modality_lut_transformation",
        hd.ModalityLUTTransformation(
            rescale_intercept=float(intercept) if intercept is not None else 0.0,
            rescale_slope=float(slope) if slope is not None else 1.0,
            rescale_type=str(header.get("RescaleType") or "US"),
        ),
    )
    luts.setdefault("voi_lut_transformations", [_voi(header, window)])
    return {name: value for name, value in luts.items() if value is not None}


def _multi_frame_iod(header: Dataset) -> bool:
    """Whether highdicom takes ``header`` for a multi-frame image: by its SOP class (the IOD allows
    frames), not by its frame count, so a multi-frame secondary capture of one frame is one."""
    try:  # highdicom's own test, private: where a later highdicom moves it, Number of Frames (type 1
        from highdicom._standard_utils import is_multiframe_image  # in every multi-frame IOD) decides
    except ImportError:
        return "NumberOfFrames" in header
    try:
        return bool(is_multiframe_image(header))
    except (KeyError, AttributeError):  # a SOP class highdicom does not know
        return "NumberOfFrames" in header


def _with_lifted_groups(header: Dataset, frame: int) -> Dataset:
    """A copy of ``header`` with the functional groups' rescale and window at the top level, as the
    reader reads them (the source is left as it was)."""
    from fracsight.io._dicom import lift_functional_groups

    copy = Dataset()
    for element in header:
        copy.add(element)
    lift_functional_groups(copy, frame)
    return copy


def _voi(header: Dataset, window: tuple[float, float] | None) -> hd.pr.SoftcopyVOILUTTransformation:
    """The state's window: ``window``, or without one the whole stored range."""
    if window is None:
        bits = int(header.get("BitsStored") or 8)
        window = (2 ** (bits - 1), 2**bits)
        function = explanation = None
    else:  # the source's own window: its function (a sigmoid's contrast differs) and its name
        function = str(header.get("VOILUTFunction") or "").strip().upper() or None
        explanation = header.get("WindowCenterWidthExplanation")
        explanation = explanation if isinstance(explanation, str) and explanation else None
    centre, width = window
    voi = hd.pr.SoftcopyVOILUTTransformation(
        window_center=float(centre),
        window_width=float(width),
        voi_lut_function=function if function in ("LINEAR", "LINEAR_EXACT", "SIGMOID") else None,
    )
    if explanation:  # set here: highdicom 0.28 writes one explanation as its letters (B\O\N\E)
        voi.WindowCenterWidthExplanation = explanation
    return voi


def presentation_state(
    header: Dataset,
    prediction: Prediction,
    context: ResultContext,
    *,
    frame_numbers: Sequence[int] | None = None,
    sop_instance_uid: str,
) -> Dataset:
    """The GSPS of one image; ``header`` is the source without its pixel data."""
    samples = int(header.get("SamplesPerPixel") or 1)
    if samples not in (1, 3):
        raise DicomSourceError(f"a presentation state needs 1 or 3 samples per pixel, not {samples}")
    rows, columns = int(header.Rows), int(header.Columns)
    layer = hd.pr.GraphicLayer(
        layer_name=LAYER,
        order=1,
        description=_layer_description(prediction),
        display_color=hd.color.CIELabColor.from_rgb(*DEFAULT_BOX_COLOUR),
    )
    graphics, box_texts = _box_objects(prediction, rows, columns)
    annotation = hd.pr.GraphicAnnotation(
        referenced_images=[header],
        graphic_layer=layer,
        referenced_frame_number=list(frame_numbers) if frame_numbers else None,
        graphic_objects=graphics or None,
        text_objects=[*box_texts, *_summary_objects(prediction)],
    )
    info = series("gsps", aid(prediction))
    common = dict(
        referenced_images=[header],
        series_instance_uid=context.series_uid(header.StudyInstanceUID, "gsps", laterality(header)),
        series_number=info.number,
        series_description=info.description,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number(header),
        content_label=LAYER,
        content_description=f"fracsight {aid(prediction)} aid - decision aid, not a diagnosis",
        graphic_annotations=[annotation],
        graphic_layers=[layer],
        **context.equipment(),
        **context.dates(content=False),
    )
    if samples == 3:
        # a grey radiograph stored in colour (a scanned film, a viewer export): the same layer
        # in a colour presentation state, with the source's ICC profile or else sRGB
        # (given, not left to highdicom to find: highdicom 0.28 never finds it, and the source's
        # profile cost the image all its results)
        profile = bytes(header.ICCProfile) if "ICCProfile" in header else pkgutil.get_data("highdicom", _SRGB)
        state = hd.pr.ColorSoftcopyPresentationState(icc_profile=profile, **common)
    else:
        # MONOCHROME1 stores bone dark; the presentation LUT must invert it as the modality meant
        inverse = str(header.get("PhotometricInterpretation") or "").strip() == "MONOCHROME1"
        shape = hd.PresentationLUTShapeValues.INVERSE if inverse else hd.PresentationLUTShapeValues.IDENTITY
        state = hd.pr.GrayscaleSoftcopyPresentationState(
            presentation_lut_transformation=hd.PresentationLUTTransformation(presentation_lut_shape=shape),
            # frame_numbers are 1-based; the LUTs are the read frame's
            **_explicit_luts(header, frame_numbers[0] - 1 if frame_numbers else 0),
            **common,
        )
    state.Laterality = laterality(header)  # type 2C: empty when the source does not say
    for item in state.get("SoftcopyVOILUTSequence", []):
        # highdicom 0.28 writes one explanation as its letters (F\\U\\L\\L), from the top level
        # and from functional groups alike
        letters = item.get("WindowCenterWidthExplanation")
        if isinstance(letters, MultiValue) and len(letters) > 1 and all(len(str(c)) == 1 for c in letters):
            item.WindowCenterWidthExplanation = "".join(map(str, letters))
    for area in state.DisplayedAreaSelectionSequence:  # highdicom writes 1\\1 whatever the pixels
        area.PresentationPixelAspectRatio = pixel_aspect_ratio(header)
    return state


def pixel_aspect_ratio(header: Dataset) -> list[int]:
    """The source's pixels' height to width, as a presentation state gives it (PS3.3 C.10.4): the
    aspect the model read the image at (its Pixel Aspect Ratio, else its spacing, within 1:5:
    :func:`~fracsight.io.radiograph.pixel_aspect_of`); 1\\1 for square pixels (a viewer showed
    pixels twice as wide as high squeezed to squares; a spacing of 0.0001\\1 was declared 0\\1,
    and a ratio beyond the IS range copied as is)."""
    from fracsight.io._dicom import header_pixel_aspect

    fraction = Fraction(header_pixel_aspect(header)).limit_denominator(1000)
    return [fraction.numerator, fraction.denominator]
