"""Inference on ONNX Runtime (numpy + pillow + onnxruntime; never torch)."""

from fracsight.inference.predictor import Predictor
from fracsight.inference.results import NOTICE, FailedPrediction, Prediction, StudyPrediction
from fracsight.inference.store import DEFAULT_MODEL, list_bundles, resolve_bundle

__all__ = [
    "DEFAULT_MODEL",
    "NOTICE",
    "FailedPrediction",
    "Prediction",
    "Predictor",
    "StudyPrediction",
    "list_bundles",
    "resolve_bundle",
]
