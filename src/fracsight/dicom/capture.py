"""The secondary capture: the overlay burned into a new image (highdicom.sc).

For viewers that show no presentation states: the radiograph as fracsight saw it (after the
modality's windowing, bone bright), the heatmap and boxes of ``fracsight predict
--overlay-dir`` (:func:`fracsight.explain.render_overlay`), and below the image a band with the
decision, the numbers and the decision-aid notice. RGB, JPEG baseline (lossy, flagged so):
a picture to look at, never pixels to measure or to feed back into a model.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.uid import JPEGBaseline8Bit

from fracsight.dicom.gsps import pixel_aspect_ratio
from fracsight.dicom.results_context import ResultContext, aid, instance_number, laterality, plural, series
from fracsight.errors import DicomSourceError
from fracsight.explain import overlay_words, render_overlay, summary_lines
from fracsight.inference.results import Prediction

__all__ = ["burned_in_image", "secondary_capture"]

_BIPED = {"A", "P", "R", "L", "H", "F"}


def _display_pixels(source: Dataset, frame: int | None) -> np.ndarray:
    """The source's pixels as fracsight reads them (for a prediction made without them)."""
    import pydicom

    from fracsight.io import read_image

    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, source, enforce_file_format=True)
    except (AttributeError, ValueError, TypeError) as e:
        raise DicomSourceError(
            "the capture needs the image's pixels: the DICOM object cannot be re-read without its "
            f"transfer syntax ({type(e).__name__}); predict with keep_pixels=True"
        ) from None
    return read_image(buffer.getvalue(), name="source", frame=frame).pixels


def burned_in_image(prediction: Prediction, pixels: np.ndarray) -> np.ndarray:
    """(H + band, W, 3) uint8: the overlay above a band with the summary, the notice and the heatmap's
    colour scale (:func:`~fracsight.explain.render_overlay`'s caption)."""
    heat = prediction.heatmap
    if heat is not None and heat.shape != pixels.shape:
        heat = None
    caption, legend = overlay_words(prediction)
    overlay = render_overlay(pixels, heat, prediction.boxes, caption=caption, legend=legend)
    return np.asarray(overlay, dtype=np.uint8)


def _orientation(header: Dataset) -> tuple[str, str] | None:
    values = [str(v).strip().upper() for v in (header.get("PatientOrientation") or [])]
    if len(values) == 2 and all(v and set(v) <= _BIPED for v in values):
        return values[0], values[1]
    return None


def secondary_capture(
    source: Dataset,
    header: Dataset,
    prediction: Prediction,
    context: ResultContext,
    *,
    frame: int | None = None,
    frame_numbers: Sequence[int] | None = None,
    sop_instance_uid: str,
) -> Dataset:
    """The SC of one image. ``source`` gives the pixels when ``prediction`` has none."""
    pixels = prediction.pixels
    if pixels is None or pixels.shape != (int(header.Rows), int(header.Columns)):
        pixels = _display_pixels(source, frame)  # none kept, or reduced: the boxes need full size
    rgb = burned_in_image(prediction, pixels)
    orientation = _orientation(header)
    info = series("capture", aid(prediction))
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.YBR_FULL_422,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=context.series_uid(header.StudyInstanceUID, "capture", laterality(header)),
        series_number=info.number,
        series_description=info.description,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number(header),
        patient_orientation=orientation or ("L", "F"),  # highdicom insists; replaced below
        laterality=laterality(header),
        transfer_syntax_uid=JPEGBaseline8Bit,
        **context.equipment(),
        **context.dates(),
    )
    # the source's whole Patient and Study modules, as highdicom copies them into the report and
    # the state: from_ref_dataset takes name, ID, birth date and sex, and a PACS matching patients
    # on ID and issuer (IHE PIX) could file the capture under another patient than its report
    for entity in ("Patient", "Study"):
        with contextlib.suppress(KeyError):  # a source class highdicom knows no IOD of: as before
            sc._copy_root_attributes_of_module(header, entity)
    if orientation is None:
        sc.PatientOrientation = None  # type 2: unknown, as in the source
    if "Laterality" not in sc:
        sc.Laterality = None  # type 2C: empty when the source does not say
    if header.get("StudyDescription") and "StudyDescription" not in sc:
        sc.StudyDescription = header.StudyDescription  # as the report and the state carry it
    ratio = pixel_aspect_ratio(header)
    if ratio != [1, 1]:  # type 1C: pixels twice as high as wide were shown squeezed to squares
        sc.PixelAspectRatio = ratio
    sc.ConversionType = "WSD"  # made on a workstation from the source image
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = " ".join(summary_lines(prediction))[:10240]
    # JPEG baseline is lossy: say so, with the ratio achieved
    sc.LossyImageCompression = "01"
    sc.LossyImageCompressionMethod = "ISO_10918_1"
    encoded = len(sc.PixelData) or 1
    sc.LossyImageCompressionRatio = f"{rgb.nbytes / encoded:.2f}"[:16]
    suspected = prediction.reliable and prediction.fracture_suspected
    shown = f"suspected {plural(prediction.finding)}" if suspected else "the areas the model weighed most"
    sc.DerivationDescription = f"fracsight overlay of {shown}; decision aid, not a diagnosis"
    reference = Dataset()
    reference.ReferencedSOPClassUID = header.SOPClassUID
    reference.ReferencedSOPInstanceUID = header.SOPInstanceUID
    if frame_numbers:
        reference.ReferencedFrameNumber = list(frame_numbers)
    sc.SourceImageSequence = [reference]
    return sc
