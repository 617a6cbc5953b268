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
    loc: list[str | int] | None = Field(default=None, description="Where a validation error is.")
    source: str | None = Field(default=None, description="The uploaded file name, for per-file errors.")
    code: str | None = None
    msg: str = ""
    type: str | None = None


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. empty_file, unsupported_format.")
    message: str = Field(description="What went wrong, for people.")
    details: list[ErrorDetail] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ModelRef(BaseModel):
    name: str
    version: str


class Box(BaseModel):
    x0: float
    y0: float
    x1: float
    y1: float
    score: float


class OperatingPointRef(BaseModel):
    name: str
    threshold: float


class ImageInfo(BaseModel):
    format: str
    height: int = Field(description="Of the image as shown (EXIF orientation applied): the frame of `boxes`.")
    width: int = Field(description="Of the image as shown (EXIF orientation applied): the frame of `boxes`.")
    photometric: str


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
    region_probabilities: dict[str, float] = head_field("region", "Probability of each body region.")
    classification: Classification = head_field("class", "The class head's answer.")
    localization: LOCALIZATION = Field(
        description="What the overlay's heatmap shows: `fracture` (where a fracture is suspected; "
        "boxes come from it), `class_activation` (where the predicted class is seen; never boxes) "
        "or `none`."
    )
    boxes: list[Box] = head_field("fracture", "Suspected fracture regions in original-image pixels.")
    reliable: bool = Field(description="False when the input looks unlike what the model was made for.")
    warnings: list[str]
    model: str
    image: ImageInfo
    notice: str
    overlay_png_base64: str = Field(
        default=None,
        description="With overlay=true: the image with the heatmap blended in (and the boxes drawn), "
        "a base64 PNG.",
        json_schema_extra=_no_default,
    )


class ImageError(BaseModel):
    source: str
    error: ErrorBody


class StudyResult(BaseModel):
    """The views of one study combined, with the fields of the heads the model has."""

    study: str
    decision: str
    fracture_probability: float = head_field(
        "fracture", "Mean of the views' fracture probabilities.", ge=0.0, le=1.0
    )
    fracture_suspected: bool = head_field("fracture", "At `operating_point`.")
    operating_point: OperatingPointRef = head_field("fracture", "The threshold the decision was taken at.")
    classification: Classification = head_field(
        "class",
        "Mean of the views' class distributions (weighted by their fracture probability when the "
        "model also has a fracture head).",
    )
    aggregation: str
    images: list[str] = Field(description="The views the study result is from.")
    unread_images: list[str] = Field(
        description="Views of the study that could not be read: the study is then not reliable."
    )
    reliable: bool
    warnings: list[str] = Field(description="E.g. that N of M views could not be read.")
    notice: str


class PredictResponse(BaseModel):
    model: ModelRef
    notice: str
    images: list[ImagePrediction | ImageError] = Field(description="One entry per uploaded file, in order.")
    studies: list[StudyResult]


class HeadInfo(BaseModel):
    name: str
    kind: str
    classes: list[str]


class OperatingPointInfo(BaseModel):
    name: str
    threshold: float
    description: str
    sensitivity: float | None = None
    specificity: float | None = None


class ClassOperatingPointInfo(BaseModel):
    min_probability: float = Field(
        ge=0.0, le=1.0, description="The class is stated as the answer at or above this probability."
    )
    description: str
    accuracy: float | None = Field(default=None, description="Of the stated classes, where measured.")
    coverage: float | None = Field(default=None, description="Share of images that got a stated class.")


class Limits(BaseModel):
    max_upload_bytes: int
    max_files: int
    max_pixels: int


class ModelInfo(BaseModel):
    name: str
    version: str
    architecture: str
    input_size: int
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
    card: str | None = Field(description="The model card (Markdown).")
    notice: str
    limits: Limits


class Health(BaseModel):
    status: str
    model: ModelRef
    fracsight_version: str
