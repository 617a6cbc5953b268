"""Typed results of the Predictor. ``to_dict()`` never includes pixels or patient data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fracsight.explain import DetectedBox
from fracsight.io import ImageMetadata

__all__ = ["NOTICE", "FailedPrediction", "Prediction", "StudyPrediction"]

NOTICE = "fracsight is a decision aid for trained readers, not a diagnosis."


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass(frozen=True)
class Prediction:
    source: str  # file name (never a full path) or the name given with bytes
    fracture_probability: float | None  # calibrated; None for a bundle without a fracture head
    fracture_suspected: bool | None  # at the operating point below
    operating_point: str | None
    threshold: float | None
    decisions: dict[str, bool]  # suspected or not at every operating point of the bundle
    region: str | None
    region_probabilities: dict[str, float]
    boxes: tuple[DetectedBox, ...]
    class_probabilities: dict[str, float]  # N-class head (e.g. fracture type), when the bundle has one
    reliable: bool  # False when the input does not look like what the model was made for
    warnings: tuple[str, ...]
    model: str
    metadata: ImageMetadata
    heatmap: np.ndarray | None = field(default=None, repr=False, compare=False)  # (H, W) in [0, 1]
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)  # the radiograph, for overlays

    @property
    def decision(self) -> str:
        if not self.reliable:
            return "not reliable: input outside what the model was made for"
        if self.fracture_probability is None:
            top = max(self.class_probabilities, key=self.class_probabilities.__getitem__)
            return f"most likely class: {top}"
        return "fracture suspected" if self.fracture_suspected else "no fracture detected"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "decision": self.decision,
            "fracture_probability": _round(self.fracture_probability),
            "fracture_suspected": self.fracture_suspected,
            "operating_point": {"name": self.operating_point, "threshold": _round(self.threshold)},
            "decisions": self.decisions,
            "region": self.region,
            "region_probabilities": {k: round(v, 6) for k, v in self.region_probabilities.items()},
            "boxes": [b.to_dict() for b in self.boxes],
            "class_probabilities": {k: round(v, 6) for k, v in self.class_probabilities.items()},
            "reliable": self.reliable,
            "warnings": list(self.warnings),
            "model": self.model,
            "image": {
                "format": self.metadata.source_format,
                "height": self.metadata.original_size[0],
                "width": self.metadata.original_size[1],
                "photometric": self.metadata.photometric,
            },
            "notice": NOTICE,
        }


@dataclass(frozen=True)
class FailedPrediction:
    """A file that could not be predicted; batch runs report it and carry on."""

    source: str
    error_code: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "error_code": self.error_code, "error": self.error}


@dataclass(frozen=True)
class StudyPrediction:
    """Several views of one examination combined (mean of the image probabilities, as in MURA)."""

    study: str
    fracture_probability: float
    fracture_suspected: bool
    operating_point: str
    threshold: float
    images: tuple[str, ...]
    reliable: bool
    aggregation: str = "mean"

    @property
    def decision(self) -> str:
        if not self.reliable:
            return "not reliable: some views are outside what the model was made for"
        return "fracture suspected" if self.fracture_suspected else "no fracture detected"

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "decision": self.decision,
            "fracture_probability": round(self.fracture_probability, 6),
            "fracture_suspected": self.fracture_suspected,
            "operating_point": {"name": self.operating_point, "threshold": round(self.threshold, 6)},
            "aggregation": self.aggregation,
            "images": list(self.images),
            "reliable": self.reliable,
            "notice": NOTICE,
        }
