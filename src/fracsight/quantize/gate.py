"""The gate an INT8 bundle must pass before it is written: how far its outputs moved from the float model's.

Measured on the validation split, each model with its own outputs:

- ``auroc_drop``: float fracture AUROC minus INT8 fracture AUROC;
- ``class_accuracy_drop``: the same for top-1 class accuracy (bundles with a class head);
- ``heatmap_correlation``: per image, the Pearson correlation between the two models'
  localization maps (the map heatmaps and boxes are drawn from, on the network's own grid,
  built the float bundle's way for both); the gate takes the median over the images;
- ``top_box_iou``: per image where either model draws a box (the float bundle's
  localization settings for both, so only the network differs), the IoU of the two top
  boxes, 0 when only one draws; the gate takes the mean;
- ``hit_rate_drop``: the float bundle's validation localization hit rate (top box overlaps a
  true fracture box at IoU >= 0.1) minus the INT8 bundle's, each with its own settings: what
  a user sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fracsight.bundle import BundleSpec
from fracsight.data import FRACTURE, Sample
from fracsight.errors import ConfigError
from fracsight.evaluation.metrics import auroc
from fracsight.preprocessing import Letterbox

__all__ = ["GateBounds", "QuantizationRefused", "check_gate", "measure_gate"]


class QuantizationRefused(ConfigError):
    """The INT8 model moved further from the float model than the gate allows; nothing was written."""

    code = "quantization_refused"


@dataclass(frozen=True)
class GateBounds:
    """How far INT8 outputs may move on validation data (defaults: see docs/benchmark.md)."""

    max_auroc_drop: float = 0.003
    max_class_accuracy_drop: float = 0.01
    min_heatmap_correlation: float = 0.9
    min_top_box_iou: float = 0.5
    max_hit_rate_drop: float = 0.05

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _top_boxes(spec: BundleSpec, outputs: dict[str, np.ndarray], geometries: list[Letterbox]) -> list:
    from fracsight.explain import top_box
    from fracsight.inference.predictor import fracture_boxes, localization_map

    loc = spec.localization
    tops = []
    for i, geometry in enumerate(geometries):
        heat = localization_map(outputs["mask"][i], outputs["cam"][i], loc.get("source", "combined"))
        tops.append(top_box(fracture_boxes(outputs, i, heat, geometry, loc)))
    return tops


def measure_gate(
    float_spec: BundleSpec,
    int8_spec: BundleSpec,
    val: list[Sample],
    float_outputs: dict[str, np.ndarray],
    int8_outputs: dict[str, np.ndarray],
    geometries: list[Letterbox],
    class_names: Mapping[str, Sequence[str]],
) -> dict[str, Any]:
    """The gate's measures (module docstring) on the validation split; ``int8_spec`` already refitted.

    ``class_names``: the data set's (:attr:`Dataset.class_names`), so that its class numbers are
    compared with the model's class of the same name, not the one at the same index.
    """
    from fracsight.evaluation.run import class_labels_of_model
    from fracsight.explain import denormalize_box, hit_rate, iou
    from fracsight.inference.predictor import localization_map

    measured: dict[str, Any] = {"n": len(val)}
    if float_spec.head("fracture") is not None:
        y = np.array([s.labels[FRACTURE] for s in val])
        measured["float_auroc"] = auroc(y, float_outputs["fracture"].astype(np.float64))
        measured["int8_auroc"] = auroc(y, int8_outputs["fracture"].astype(np.float64))
        measured["auroc_drop"] = measured["float_auroc"] - measured["int8_auroc"]
        source = float_spec.localization.get("source", "combined")
        correlations = [
            _pearson(
                localization_map(float_outputs["mask"][i], float_outputs["cam"][i], source),
                localization_map(int8_outputs["mask"][i], int8_outputs["cam"][i], source),
            )
            for i in range(len(val))
        ]
        measured["heatmap_correlation"] = float(np.median(correlations))
        measured["heatmap_correlation_p05"] = float(np.percentile(correlations, 5))
        float_tops = _top_boxes(float_spec, float_outputs, geometries)
        same_settings = _top_boxes(float_spec, int8_outputs, geometries)
        ious = [
            0.0 if a is None or b is None else iou(a, b)
            for a, b in zip(float_tops, same_settings, strict=True)
            if a is not None or b is not None
        ]
        measured["top_box_iou"] = float(np.mean(ious)) if ious else 1.0
        fractured = [i for i, s in enumerate(val) if s.labels.get(FRACTURE) == 1 and s.boxes]
        if fractured:
            trues = [
                [denormalize_box((b.x0, b.y0, b.x1, b.y1), geometries[i].original_size) for b in val[i].boxes]
                for i in fractured
            ]
            own_settings = _top_boxes(int8_spec, int8_outputs, geometries)
            for name, tops in (("float", float_tops), ("int8", own_settings)):
                measured[f"{name}_hit_rate"] = hit_rate([tops[i] for i in fractured], trues, 0.1).hit_rate_iou
            measured["hit_rate_drop"] = measured["float_hit_rate"] - measured["int8_hit_rate"]
    labelled = class_labels_of_model(float_spec, val, class_names)
    if labelled is not None and "class" in float_outputs:
        known, y_cls = labelled
        for name, outputs in (("float", float_outputs), ("int8", int8_outputs)):
            right = outputs["class"][known].argmax(1) == y_cls
            measured[f"{name}_class_accuracy"] = float(right.mean())
        measured["class_accuracy_drop"] = measured["float_class_accuracy"] - measured["int8_class_accuracy"]
    return measured


def _by(amount: float) -> str:
    return f"{amount:.4f}" if round(amount, 4) else f"{amount:.2g}"  # never "0.0000 more than"


def check_gate(measured: dict[str, Any], bounds: GateBounds) -> list[str]:
    """Each way ``measured`` breaks ``bounds``, as a sentence saying by how much (empty: it passes)."""
    failures = []
    # "at most 0.05": a drop of exactly 1 in 20 boxed images is 4/20 - 3/20 = 0.05000000000000002,
    # which was refused as "0.0000 more than the 0.0500 allowed"
    slack = 1e-9

    def over(key: str, limit: float, what: str) -> None:
        value = measured.get(key)
        if value is not None and value > limit + slack:
            failures.append(f"{what} {value:.4f}, {_by(value - limit)} more than the {limit:.4f} allowed")

    def under(key: str, limit: float, what: str) -> None:
        value = measured.get(key)
        if value is not None and value < limit - slack:
            failures.append(f"{what} {value:.4f}, {_by(limit - value)} short of the {limit:.4f} required")

    over("auroc_drop", bounds.max_auroc_drop, "validation AUROC fell by")
    over("class_accuracy_drop", bounds.max_class_accuracy_drop, "validation class accuracy fell by")
    under("heatmap_correlation", bounds.min_heatmap_correlation, "median heatmap correlation with float is")
    under("top_box_iou", bounds.min_top_box_iou, "mean top-box IoU with float is")
    over("hit_rate_drop", bounds.max_hit_rate_drop, "validation localization hit rate fell by")
    return failures
