"""The CPU-bound part of a predict request, run in a worker thread: read, predict, draw overlays.

Files are handled one at a time, so at most one decoded image per request is in
memory whatever the number of files.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fracsight._malloc import is_large, release_freed_memory
from fracsight.api.errors import INTERNAL_ERROR, REQUEST_ID, internal_error_message
from fracsight.api.uploads import Upload
from fracsight.bundle import OperatingPoint
from fracsight.errors import FracsightError, UnsupportedFormatError, log_unexpected
from fracsight.explain import overlay_save_options, overlay_words, render_overlay
from fracsight.inference import Prediction, Predictor
from fracsight.inference.results import at_operating_point

__all__ = ["ClientGone", "FileFailure", "Outcome", "PredictOptions", "predict_uploads"]

logger = logging.getLogger("fracsight.api")
# a `files` part without a file name that is no image is most often curl's `-F files=path`, which
# sends the path as text: "upload-1: ... looks like a text file" alone did not say so
NAMELESS_HINT = (
    "this part has no file name, so it is a form field, not a file: send the file itself; "
    "with curl, -F files=@path, with the @"
)


@dataclass(frozen=True)
class PredictOptions:
    operating_point: OperatingPoint | None  # None: the model has no fracture head
    overlay: bool = False
    max_pixels: int = 50_000_000
    overlay_opacity: float = 0.4


@dataclass(frozen=True)
class FileFailure:
    """One uploaded file that could not be predicted."""

    source: str
    code: str
    message: str
    status: int
    not_a_view: bool = False  # a DICOM object holding no image (a report): no view a study missed


@dataclass(frozen=True)
class Outcome:
    result: Prediction | FileFailure
    overlay_png_base64: str | None = None


def overlay_png_base64(prediction: Prediction, pixels: np.ndarray, opacity: float) -> str:
    caption, legend = overlay_words(prediction)  # below the image, which keeps its size and place
    image = render_overlay(
        pixels, prediction.heatmap, prediction.boxes, opacity=opacity, caption=caption, legend=legend
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=4, **overlay_save_options("PNG"))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _predict_one(predictor: Predictor, upload: Upload, options: PredictOptions) -> Outcome:
    try:
        radiograph = predictor.read(upload.data, name=upload.filename, max_pixels=options.max_pixels)
        pixels = (
            predictor.full_pixels(upload.data, radiograph, max_pixels=options.max_pixels)
            if options.overlay
            else None
        )
    except FracsightError as e:
        message = str(e)
        if isinstance(e, UnsupportedFormatError) and not upload.named:
            message += f" ({NAMELESS_HINT})"
        not_a_view = getattr(e, "not_an_image", False)
        return Outcome(FileFailure(upload.filename, e.code, message, e.http_status, not_a_view))
    except Exception as e:  # a reader bug or an input no check foresaw: refuse this file, keep serving
        log_unexpected(logger, f"reading an upload (request {REQUEST_ID.get()})", e)
        message = f"{upload.filename}: the file could not be processed ({internal_error_message()})"
        return Outcome(FileFailure(upload.filename, INTERNAL_ERROR, message, 500))
    (prediction,) = predictor.predict_radiographs([radiograph], [upload.filename], heatmap=options.overlay)
    prediction = at_operating_point(prediction, options.operating_point)
    if pixels is None:
        return Outcome(prediction)
    png = overlay_png_base64(prediction, pixels, options.overlay_opacity)
    return Outcome(dataclasses.replace(prediction, heatmap=None), png)


class ClientGone(Exception):
    """The client closed its connection before its answer was ready: its files are not predicted
    (``left``: how many of them were not)."""

    def __init__(self, left: int = 0) -> None:
        super().__init__(left)
        self.left = left


def predict_uploads(
    predictor: Predictor, uploads: list[Upload], options: PredictOptions, gone: Callable[[], bool] = bool
) -> list[Outcome]:
    """One outcome per upload, in order. Blocking: call it from a worker thread. ``gone()``, asked
    before each file: whether the client has left (:class:`ClientGone`), so that no one's answer
    waits behind files no one will read."""
    outcomes = []
    for upload in uploads:
        if gone():
            raise ClientGone(len(uploads) - len(outcomes))
        outcomes.append(_predict_one(predictor, upload, options))
        result = outcomes[-1].result
        if isinstance(result, Prediction) and is_large(result.image_size):
            release_freed_memory()  # its decoded pixels and temporaries are freed by now
    return outcomes
