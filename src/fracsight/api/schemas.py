"""Response models of the REST API. They define the OpenAPI schema and filter what leaves the server.

Pixels, heatmaps and patient data never reach a response: a field must be
declared here to be sent (pydantic drops the rest).

A prediction carries the fields of the heads the model has and leaves the others
out (absent, not null): those fields are declared with :func:`head_field` and the
route answers with ``response_model_exclude_unset``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from fracsight.inference import NOTICE

__all__ = [
    "ClassOperatingPointInfo",
    "Classification",
    "ErrorBody",
    "ErrorResponse",
    "Health",
    "ImageError",
    "ImagePrediction",
    "ModelInfo",
    "ModelRef",
    "PredictResponse",
    "StudyResult",
]


class ErrorDetail(BaseModel):
    loc: list[str | int] | None = Field(
        default=None, description='Where a validation error is, e.g. `["query", "overlay"]`.'
    )
    source: str | None = Field(default=None, description="The uploaded file name, for per-file errors.")
    code: str | None = Field(default=None, description="The file's error code, for per-file errors.")
    msg: str = Field(default="", description="What is wrong there, for people.")
    type: str | None = Field(default=None, description="The kind of validation error, e.g. `missing`.")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. empty_file, unsupported_format.")
    message: str = Field(description="What went wrong, for people.")
    details: list[ErrorDetail] | None = Field(
        default=None,
        description="Present only when there is more to say: one entry per failed file, or per invalid "
        "parameter.",
    )


class ErrorResponse(BaseModel):
    error: ErrorBody = Field(description="Every error of the API, whatever the route, has this shape.")


class ModelRef(BaseModel):
    name: str = Field(description="The bundle's name, e.g. `fracatlas-lite0-384-int8`.")
    version: str = Field(description="The bundle's version.")


class Box(BaseModel):
    x0: float = Field(description="Left edge, in pixels of the image as shown (`image.width`).")
    y0: float = Field(description="Top edge, in pixels of the image as shown (`image.height`).")
    x1: float = Field(description="Right edge, in pixels.")
    y1: float = Field(description="Bottom edge, in pixels.")
    score: float = Field(
        description="Ranks the boxes (higher: more suspicious): the detector's score for a model with a "
        "detection head, else the heatmap's peak inside the box. Not the fracture probability."
    )


class OperatingPointRef(BaseModel):
    name: str = Field(description="The operating point's name (GET /v1/model lists them).")
    threshold: float = Field(description="`fracture_suspected` is `fracture_probability >= threshold`.")


class ImageInfo(BaseModel):
    format: str = Field(description="The file's format, read from its content: png, jpeg, dicom, ...")
    height: int = Field(description="Of the image as shown (EXIF orientation applied): the frame of `boxes`.")
    width: int = Field(description="Of the image as shown (EXIF orientation applied): the frame of `boxes`.")
    photometric: str = Field(description="Its photometric interpretation, e.g. `L`, `RGB`, `MONOCHROME1`.")


NOTICE_DESCRIPTION = f"Always {NOTICE!r}."
LOCALIZATION = Literal["fracture", "class_activation", "none"]


def _no_default(schema: dict[str, Any]) -> None:
    """A field that is left out (never null) when the bundle lacks its head: no ``default`` shown."""
    schema.pop("default", None)


def head_field(head: str, description: str, **constraints: Any) -> Any:
    """A field present only when the model has the head ``head``; absent (not null) otherwise."""
    return Field(
        default=None,
        description=f"{description} Only when the model has a `{head}` head; absent otherwise.",
        json_schema_extra=_no_default,
        **constraints,
    )


class Classification(BaseModel):
    """The answer of the model's class head (for example the fracture type)."""

    predicted: str = Field(description="The most likely class.")
    probability: float = Field(ge=0.0, le=1.0, description="Its probability.")
    confident: bool = Field(
        description="True when `probability` reaches `min_probability`: the class is stated as the "
        "answer; otherwise it is uncertain (the most likely class is still shown as such)."
    )
    min_probability: float = Field(
        ge=0.0, le=1.0, description="The model's class operating point (see GET /v1/model)."
    )
    probabilities: dict[str, float] = Field(description="Every class of the head, summing to 1.")


class ImagePrediction(BaseModel):
    """One image's result, with the fields of the heads the model has and none of the others."""

    source: str = Field(description="The uploaded file name (never a path).")
    decision: str = Field(description="The headline, in words, from the heads the model has.")
    fracture_probability: float = head_field(
        "fracture", "Calibrated probability of a fracture.", ge=0.0, le=1.0
    )
    fracture_suspected: bool = head_field("fracture", "At `operating_point`.")
    operating_point: OperatingPointRef = head_field("fracture", "The threshold the decision was taken at.")
    decisions: dict[str, bool] = head_field(
        "fracture", "Suspected or not at every operating point of the model."
    )
    region: str = head_field("region", "The most likely body region.")
    region_probabilities: dict[str, float] = head_field(
        "region",
        "Probability of each body region; with a `multilabel` region head (GET /v1/model) each is its "
        "own, so they need not sum to 1.",
    )
    classification: Classification = head_field("class", "The class head's answer.")
    localization: LOCALIZATION = Field(
        description="What the overlay's heatmap shows: `fracture` (where a fracture is suspected; "
        "boxes are drawn where it is), `class_activation` (where the predicted class is seen; never boxes) "
        "or `none`."
    )
    boxes: list[Box] = head_field("fracture", "Suspected fracture regions in original-image pixels.")
    reliable: bool = Field(description="False when the input looks unlike what the model was made for.")
    warnings: list[str] = Field(description="What was noticed about the input (`[]` when nothing).")
    model: str = Field(description="The model that made the prediction, `name vVERSION`.")
    image: ImageInfo = Field(description="The uploaded image as read.")
    notice: str = Field(description=NOTICE_DESCRIPTION)
    overlay_png_base64: str = Field(
        default=None,
        description="With overlay=true: the image with the heatmap blended in (and the boxes drawn), "
        "a base64 PNG.",
        json_schema_extra=_no_default,
    )


class ImageError(BaseModel):
    """An uploaded file that could not be predicted (the others of the request were)."""

    source: str = Field(description="The uploaded file name (never a path).")
    error: ErrorBody = Field(description="Why it could not be read; `details` is absent.")


class StudyResult(BaseModel):
    """The views of one study combined, with the fields of the heads the model has."""

    study: str = Field(
        description="The study's name: always `all inputs` (one study of every file, as "
        "`fracsight predict --study` names it)."
    )
    decision: str = Field(
        description="The headline, in words; `not reliable: ...` when a view is not reliable or could "
        "not be read."
    )
    fracture_probability: float = head_field(
        "fracture", "Mean of the views' fracture probabilities.", ge=0.0, le=1.0
    )
    fracture_suspected: bool = head_field("fracture", "At `operating_point`.")
    operating_point: OperatingPointRef = head_field("fracture", "The threshold the decision was taken at.")
    region: str = head_field("region", "The most likely body region of the views' mean region distribution.")
    region_probabilities: dict[str, float] = head_field(
        "region", "Mean of the views' region probabilities (views of different regions: a warning)."
    )
    classification: Classification = head_field(
        "class",
        "Mean of the views' class distributions (weighted by their fracture probability when the "
        "model also has a fracture head).",
    )
    aggregation: str = Field(description="How the views were combined, e.g. `mean`.")
    images: list[str] = Field(
        description="The views the study result is from (a file given twice, under any name, once)."
    )
    unread_images: list[str] = Field(
        description="Views of the study that could not be read: the study is then not reliable."
    )
    reliable: bool = Field(description="False when a view is not reliable or could not be read.")
    warnings: list[str] = Field(
        description="E.g. that N of M views could not be read, that a file was given twice, which "
        "views are not reliable on their own, or that the mean is below the threshold while a view "
        "alone is above it (review that view)."
    )
    notice: str = Field(description=NOTICE_DESCRIPTION)


class PredictResponse(BaseModel):
    model: ModelRef = Field(description="The model that answered.")
    notice: str = Field(description=NOTICE_DESCRIPTION)
    images: list[ImagePrediction | ImageError] = Field(
        description="One entry per uploaded file, in the order sent (names are echoed as sent, so two "
        "files may have the same `source`: match entries by position)."
    )
    studies: list[StudyResult] = Field(description="With study=true, one study of all files; else `[]`.")


class HeadInfo(BaseModel):
    name: str = Field(description="`fracture`, `region` or `class`.")
    kind: str = Field(description="`binary`, `multiclass` or `multilabel`.")
    classes: list[str] = Field(description="The head's classes, in the model's order.")


class OperatingPointInfo(BaseModel):
    name: str = Field(description="The name to pass as operating_point.")
    threshold: float = Field(description="On the fracture probability.")
    description: str = Field(description="How it was chosen.")
    sensitivity: float | None = Field(default=None, description="On validation data, where measured.")
    specificity: float | None = Field(default=None, description="On validation data, where measured.")


class ClassOperatingPointInfo(BaseModel):
    min_probability: float = Field(
        ge=0.0, le=1.0, description="The class is stated as the answer at or above this probability."
    )
    description: str = Field(description="How it was chosen.")
    accuracy: float | None = Field(default=None, description="Of the stated classes, where measured.")
    coverage: float | None = Field(default=None, description="Share of images that got a stated class.")


class Limits(BaseModel):
    max_upload_bytes: int = Field(description="Largest accepted file, in bytes.")
    max_files: int = Field(description="Most files in one request.")
    max_pixels: int = Field(description="Largest image decoded (height x width, from its header).")


class ModelInfo(BaseModel):
    name: str = Field(description="The bundle's name.")
    version: str = Field(description="The bundle's version.")
    architecture: str = Field(description="The network, e.g. `efficientnet_lite0`.")
    input_size: int = Field(description="The side, in pixels, images are resized to for the network.")
    heads: list[HeadInfo] = Field(
        description="The model's heads: `fracture`, `region` and/or `class`; predictions carry the "
        "fields of these and no others."
    )
    operating_points: list[OperatingPointInfo] = Field(
        description="Thresholds on the fracture probability; empty without a fracture head."
    )
    default_operating_point: str | None = Field(
        description="Name of the operating point used by default; null without a fracture head."
    )
    class_operating_point: ClassOperatingPointInfo | None = Field(
        description="When the class head states its class; null without a class head."
    )
    metrics: dict[str, Any] = Field(description="Measured performance recorded in the bundle.")
    card: str | None = Field(
        description="The model card (Markdown, at most 1 MB); null when the bundle has none."
    )
    notice: str = Field(description=NOTICE_DESCRIPTION)
    limits: Limits = Field(description="This server's upload limits.")


class Health(BaseModel):
    status: str = Field(description="`ok` once the model is loaded.")
    model: ModelRef = Field(description="The model served.")
    fracsight_version: str = Field(description="The fracsight package's version.")
