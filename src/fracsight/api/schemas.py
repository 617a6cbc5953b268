"""Response models of the REST API. They define the OpenAPI schema and filter what leaves the server.

Pixels, heatmaps and patient data never reach a response: a field must be
declared here to be sent (pydantic drops the rest).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = [
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
    height: int
    width: int
    photometric: str


class ImagePrediction(BaseModel):
    source: str = Field(description="The uploaded file name (never a path).")
    decision: str
    fracture_probability: float = Field(ge=0.0, le=1.0, description="Calibrated probability of a fracture.")
    fracture_suspected: bool
    operating_point: OperatingPointRef
    decisions: dict[str, bool] = Field(description="Suspected or not at every operating point of the model.")
    region: str | None
    region_probabilities: dict[str, float]
    boxes: list[Box] = Field(description="Suspected fracture regions in original-image pixels.")
    class_probabilities: dict[str, float]
    reliable: bool = Field(description="False when the input looks unlike what the model was made for.")
    warnings: list[str]
    model: str
    image: ImageInfo
    notice: str
    overlay_png_base64: str | None = Field(
        default=None, description="With overlay=true: heatmap and boxes on the image, a base64 PNG."
    )


class ImageError(BaseModel):
    source: str
    error: ErrorBody


class StudyResult(BaseModel):
    study: str
    decision: str
    fracture_probability: float = Field(ge=0.0, le=1.0)
    fracture_suspected: bool
    operating_point: OperatingPointRef
    aggregation: str
    images: list[str]
    reliable: bool
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


class Limits(BaseModel):
    max_upload_bytes: int
    max_files: int
    max_pixels: int


class ModelInfo(BaseModel):
    name: str
    version: str
    architecture: str
    input_size: int
    heads: list[HeadInfo]
    operating_points: list[OperatingPointInfo]
    default_operating_point: str
    metrics: dict[str, Any] = Field(description="Measured performance recorded in the bundle.")
    card: str | None = Field(description="The model card (Markdown).")
    notice: str
    limits: Limits


class Health(BaseModel):
    status: str
    model: ModelRef
    fracsight_version: str
