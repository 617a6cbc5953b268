"""Is this input the kind of image the model was made for? (out-of-distribution guard)

Three signals, each cheap:
- image statistics: a blank or nearly uniform image carries no anatomy;
- feature-space distance: the pooled embedding's standardized distance to the
  training images' embeddings (mean and spread stored in ``bundle.json`` at
  export); beyond a threshold chosen on validation data the input is flagged;
- body-region confidence: when no region the model knows is likely.
An input flagged by any signal is marked not reliable and carries a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fracsight.bundle import BundleSpec
from fracsight.io import Radiograph

__all__ = ["InputAssessment", "assess_input", "embedding_distance", "fit_ood"]

MIN_PIXEL_STD = 0.02
MIN_REGION_PROBABILITY = 0.2
LOW_RESOLUTION_SIDE = 128


@dataclass(frozen=True)
class InputAssessment:
    reliable: bool
    distance: float | None
    warnings: tuple[str, ...]


def embedding_distance(embedding: np.ndarray, ood: dict[str, Any]) -> float:
    """Root-mean-square z-score of the embedding against the training statistics."""
    mean = np.asarray(ood["mean"], dtype=np.float64)
    std = np.asarray(ood["std"], dtype=np.float64)
    z = (np.asarray(embedding, dtype=np.float64) - mean) / std
    return float(np.sqrt(np.mean(z * z)))


def fit_ood(
    train_embeddings: np.ndarray, val_embeddings: np.ndarray, quantile: float = 0.995
) -> dict[str, Any]:
    """Training statistics plus a distance threshold at ``quantile`` of the validation distances."""
    mean = train_embeddings.mean(axis=0)
    std = train_embeddings.std(axis=0) + 1e-3
    stats: dict[str, Any] = {"mean": mean.round(5).tolist(), "std": std.round(5).tolist()}
    distances = np.array([embedding_distance(e, stats) for e in val_embeddings])
    stats["threshold"] = float(np.quantile(distances, quantile)) * 1.1
    stats["description"] = (
        f"RMS z-distance of the pooled features to the training images; threshold = 1.1 x the "
        f"{quantile:.1%} quantile of validation distances"
    )
    return stats


def assess_input(
    radiograph: Radiograph, embedding: np.ndarray, region_probs: dict[str, float], spec: BundleSpec
) -> InputAssessment:
    warnings: list[str] = []
    reliable = True
    h, w = radiograph.pixels.shape
    if min(h, w) < LOW_RESOLUTION_SIDE:
        warnings.append(f"low resolution: {w}x{h} pixels; small fractures may not be visible")
    if float(radiograph.pixels.std()) < MIN_PIXEL_STD:
        warnings.append("the image is nearly uniform (blank?): there is nothing to assess")
        reliable = False
    distance = None
    if spec.ood:
        distance = embedding_distance(embedding, spec.ood)
        if distance > spec.ood["threshold"]:
            warnings.append(
                "the image does not look like the musculoskeletal radiographs the model was trained on; "
                "the result is not reliable"
            )
            reliable = False
    if region_probs and max(region_probs.values()) < MIN_REGION_PROBABILITY:
        known = ", ".join(region_probs)
        warnings.append(
            f"body region outside the model's training data ({known}); the result is not reliable"
        )
        reliable = False
    return InputAssessment(reliable=reliable, distance=distance, warnings=tuple(warnings))
