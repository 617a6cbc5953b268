"""Fit everything in a bundle that depends on its network's outputs, on those outputs alone.

Probability calibration, the fracture operating points, the class operating point, the
localization settings and the out-of-distribution threshold are all chosen on the
validation split (the OOD subspace also on the training split's embeddings); so is the
orientation step's certainty (:func:`orientation_certainty`, on the validation images in
their four quarter turns), which the detector build and the INT8 path share. The float
export (:mod:`fracsight.training.export_bundle`) and the INT8 path
(:mod:`fracsight.quantize`) both call :func:`fit_to_outputs`, each with its own model's
outputs, so that an INT8 model's probabilities mean what the float model's mean. A bundle with
an orientation step (the detector build, the INT8 path) then has its calibration and operating
points fitted again on the reads its Predictor keeps (:func:`refit_to_predictions`).

Torch-free: only onnxruntime and numpy.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from fracsight.bundle import (
    BundleSpec,
    ClassOperatingPoint,
    OperatingPoint,
    load_bundle_spec,
    write_bundle_spec,
)
from fracsight.data import CLASS, FRACTURE, DataMismatchError, Dataset, Sample
from fracsight.data._files import relative_name
from fracsight.errors import DatasetError, ImageReadError
from fracsight.evaluation.calibration import apply_temperature, expected_calibration_error, fit_calibration
from fracsight.evaluation.metrics import auroc
from fracsight.evaluation.thresholds import (
    class_confidence_threshold,
    threshold_for_sensitivity,
    youden_threshold,
)
from fracsight.explain import softmax
from fracsight.inference.onnx_model import OnnxModel
from fracsight.inference.ood import fit_ood
from fracsight.inference.orientation import turn_radiograph
from fracsight.inference.predictor import Predictor
from fracsight.preprocessing import Letterbox, letterbox_radiograph, read_for_model

log = logging.getLogger(__name__)

__all__ = [
    "MAX_UPRIGHT_TURNED",
    "choose_localization",
    "fit_to_outputs",
    "metrics_summary",
    "model_input",
    "orientation_certainty",
    "orientation_views",
    "raw_outputs",
    "refit_to_predictions",
    "refuse_unfit_data",
]

MAX_UPRIGHT_TURNED = 0.005  # at most this share of upright validation images may be turned

KEPT_OUTPUTS = (
    "fracture",
    "embedding",
    "region",
    "class",
    "mask",
    "cam",
    "detect_centre",
    "detect_size",
    "detect_offset",
)


def model_input(sample: Sample, size: int, root: Path | None = None) -> tuple[np.ndarray, Letterbox]:
    """The letterboxed (size, size) model input of ``sample``, read exactly as the Predictor reads it.
    An image that cannot be read stops the fit, with a message that says why it was needed and
    names the file by its path under the data set's ``root`` (in MURA every file is ``image1.png``)."""
    name = relative_name(sample.path, root) if root is not None else None
    try:
        radiograph = read_for_model(sample.path, size, name=name)
    except ImageReadError as e:  # the reader's message alone named the file, not why it was read
        split = f"the {sample.split} split" if sample.split else "the data set"
        raise type(e)(
            f"{e} (an image of {split}, whose outputs the calibration is fitted on: fix or remove it; "
            "`fracsight audit DATA` lists the files that cannot be read)"
        ) from None
    return letterbox_radiograph(radiograph, size)


def raw_outputs(
    model: OnnxModel, samples: list[Sample], batch_size: int = 32, root: Path | None = None
) -> tuple[dict[str, np.ndarray], list[Letterbox]]:
    """Raw ONNX outputs for ``samples`` and the letterbox geometry of each image (``root``: the
    data set's folder, which an unreadable file is named under)."""
    size = model.spec.input_size
    chunks: dict[str, list[np.ndarray]] = {}
    geometries: list[Letterbox] = []
    with ThreadPoolExecutor(2) as pool:
        for i in range(0, len(samples), batch_size):
            prepared = list(pool.map(lambda s: model_input(s, size, root), samples[i : i + batch_size]))
            geometries += [g for _, g in prepared]
            for name, value in model.run(np.stack([square for square, _ in prepared])).items():
                if name in KEPT_OUTPUTS:
                    chunks.setdefault(name, []).append(value)
    return {k: np.concatenate(v) for k, v in chunks.items()}, geometries


def orientation_views(
    model: OnnxModel, samples: list[Sample], batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """The orientation head's probabilities ``(4 N, 4)`` for ``samples`` in their four quarter turns
    and the turns of each view ``(4 N,)``: each image read as the Predictor reads it, turned by ``k``
    quarter turns as the Predictor turns a radiograph (:func:`turn_radiograph`), letterboxed, run."""
    size = model.spec.input_size

    def views(sample: Sample) -> list[np.ndarray]:
        radiograph = read_for_model(sample.path, size)
        return [letterbox_radiograph(turn_radiograph(radiograph, k), size)[0] for k in range(4)]

    probs: list[np.ndarray] = []
    with ThreadPoolExecutor(2) as pool:
        for i in range(0, len(samples), batch_size):
            squares = [v for four in pool.map(views, samples[i : i + batch_size]) for v in four]
            logits = model.run(np.stack(squares))["orientation"].astype(np.float64)
            probs.append(softmax(logits, axis=1))
    return np.concatenate(probs), np.tile(np.arange(4), len(samples))


def orientation_certainty(probs: np.ndarray, truth: np.ndarray) -> tuple[float, dict[str, float]]:
    """The least top-class probability (0.50-0.99, by 0.01) at which the orientation step undoes a
    turn, such that at most ``MAX_UPRIGHT_TURNED`` of the upright views (``truth`` 0) get turned,
    and what it does on these views at that certainty. ``probs``: (N, 4) softmax of the
    orientation head; ``truth``: (N,) quarter turns of each view."""
    truth = np.asarray(truth)
    best, top = probs.argmax(1), probs.max(1)
    upright = truth == 0
    for certainty in np.round(np.arange(0.5, 1.0, 0.01), 2):
        turned = (best != 0) & (top >= certainty)
        if turned[upright].mean() <= MAX_UPRIGHT_TURNED:
            break
    stats = {
        "min_probability": float(certainty),
        "max_upright_turned": MAX_UPRIGHT_TURNED,
        "upright_turned": float(turned[upright].mean()),
        "rotated_made_upright": float(((best == truth) & turned)[~upright].mean()),
        "rotated_turned_wrongly": float(((best != truth) & turned)[~upright].mean()),
        "accuracy": float((best == truth).mean()),
        "n_views": len(truth),
    }
    return float(certainty), stats


def choose_localization(
    samples: list[Sample], outputs: dict[str, np.ndarray], geometries: list[Letterbox]
) -> dict[str, Any]:
    """Heat source and box cut-off that best hit the validation fracture boxes (IoU >= 0.1)."""
    from fracsight.explain import boxes_from_heatmap, denormalize_box, hit_rate, upsample_to_input
    from fracsight.inference.predictor import BOX_GRID, localization_map

    chosen = _boxed_fractures(samples)
    best: dict[str, Any] = {
        "source": "combined",
        "box_threshold": 0.5,
        "relative": 0.5,
        "min_box_score": 0.25,
    }
    if not chosen:
        return best
    trues = [
        [denormalize_box((b.x0, b.y0, b.x1, b.y1), geometries[i].original_size) for b in samples[i].boxes]
        for i in chosen
    ]
    best_rate = -1.0
    for source in ("mask", "combined"):
        for relative in (0.5, 0.7, 0.85):
            preds = [
                boxes_from_heatmap(
                    upsample_to_input(
                        localization_map(outputs["mask"][i], outputs["cam"][i], source), BOX_GRID
                    ),
                    geometries[i],
                    threshold=1.0,
                    relative=relative,
                    min_score=0.25,
                )
                for i in chosen
            ]
            rate = hit_rate(preds, trues, iou_thr=0.1).hit_rate_iou
            if rate > best_rate:
                best_rate = rate
                best = {
                    "source": source,
                    "box_threshold": 1.0,
                    "relative": relative,
                    "min_box_score": 0.25,
                    "validation_hit_rate_iou": rate,
                }
    return best


def fit_to_outputs(
    spec: BundleSpec,
    val: list[Sample],
    val_outputs: dict[str, np.ndarray],
    val_geometries: list[Letterbox],
    train_embeddings: np.ndarray,
    *,
    class_names: dict[str, Any] | None = None,
) -> BundleSpec:
    """``spec`` with calibration, operating points, class operating point, localization and OOD fitted
    on this model's validation outputs (``val_outputs``, from :func:`raw_outputs`), and
    ``metrics`` reset to ``{"validation": ...}`` measured on them.

    ``class_names``: the data set's label names (``Dataset.class_names``); the class operating
    point is fitted only where it has class labels, mapped to the model's classes by name (a
    class the model does not know: :class:`~fracsight.errors.DatasetError`).
    """
    from fracsight.evaluation.run import class_labels_of_model

    validation: dict[str, Any] = {"n": len(val)}
    has_fracture = spec.head("fracture") is not None
    if has_fracture:
        spec, fitted = _fit_fracture(spec, val, val_outputs["fracture"])
        validation.update(fitted)
    labelled = class_labels_of_model(spec, val, class_names)
    if labelled is not None and "class" in val_outputs:
        known, y_cls = labelled
        class_probs = softmax(val_outputs["class"][known].astype(np.float64), axis=1)
        validation["class_accuracy"] = float((class_probs.argmax(1) == y_cls).mean())
        choice = class_confidence_threshold(y_cls, class_probs)
        spec = dataclasses.replace(spec, class_operating_point=ClassOperatingPoint(**vars(choice)))
    # a bundle whose boxes come from a grafted detector keeps its settings (chosen on validation
    # when the detector was trained); only heatmap-traced boxes are refitted here
    if has_fracture and spec.localization.get("boxes") != "detector":
        spec = dataclasses.replace(
            spec, localization=_refit_localization(spec.localization, val, val_outputs, val_geometries)
        )
    return dataclasses.replace(
        spec, ood=fit_ood(train_embeddings, val_outputs["embedding"]), metrics={"validation": validation}
    )


def _refit_localization(
    current: dict[str, Any], val: list[Sample], outputs: dict[str, np.ndarray], geometries: list[Letterbox]
) -> dict[str, Any]:
    """:func:`choose_localization` on ``val``; without a fractured validation image with boxes, the
    settings ``current`` holds where they were chosen before (a bundle refitted on data without
    boxes, such as an INT8 one, keeps its own rather than the defaults), marked ``not_refitted``."""
    if _boxed_fractures(val) or "source" not in current:
        return choose_localization(val, outputs, geometries)
    kept = {k: v for k, v in current.items() if k not in ("validation_hit_rate_iou", "not_refitted")}
    return {**kept, "not_refitted": "no fractured validation image has a box to refit them on"}


def _boxed_fractures(samples: list[Sample]) -> list[int]:
    """The indices of the fractured samples with boxes, which localization settings are chosen on."""
    return [i for i, s in enumerate(samples) if s.labels.get(FRACTURE) == 1 and s.boxes]


def _fit_fracture(
    spec: BundleSpec, val: list[Sample], logits: np.ndarray
) -> tuple[BundleSpec, dict[str, Any]]:
    """``spec`` with probability calibration and the fracture operating points fitted on the
    validation images' fracture ``logits``, and what was measured there."""
    y_val = np.array([s.labels[FRACTURE] for s in val])
    calibration = fit_calibration(logits.astype(np.float64), y_val)
    p_val = apply_temperature(logits.astype(np.float64), calibration.temperature, calibration.bias)
    ops = fracture_operating_points(y_val, p_val)
    fitted = {
        "auroc": auroc(y_val, p_val),
        "ece": expected_calibration_error(y_val, p_val)[0],
        "temperature": calibration.temperature,
        "calibration_bias": calibration.bias,
        "calibration": calibration.description,
    }
    spec = dataclasses.replace(
        spec,
        temperature=calibration.temperature,
        calibration_bias=calibration.bias,
        operating_points=ops,
        default_operating_point="balanced",
    )
    return spec, fitted


def fracture_operating_points(y_val: np.ndarray, p_val: np.ndarray) -> tuple[OperatingPoint, OperatingPoint]:
    """``balanced`` (Youden's J) and ``triage`` (sensitivity >= 0.90) on validation labels and
    calibrated probabilities. Triage is never above balanced: where Youden's point already
    reaches the sensitivity, the highest threshold that does was above it, and "triage (fewer
    misses)" missed more fractures than balanced."""
    balanced = youden_threshold(y_val, p_val)
    triage = threshold_for_sensitivity(y_val, p_val, 0.9)
    triage_words = (
        "highest threshold with sensitivity >= 0.90 on validation data (fewer misses, more false alarms)"
    )
    if triage.threshold > balanced.threshold:
        triage = balanced
        triage_words = "the balanced threshold, which already reaches sensitivity >= 0.90 on validation data"
    return (
        OperatingPoint(
            "balanced",
            balanced.threshold,
            "maximizes sensitivity + specificity (Youden's J) on validation data",
            balanced.sensitivity,
            balanced.specificity,
        ),
        OperatingPoint("triage", triage.threshold, triage_words, triage.sensitivity, triage.specificity),
    )


def refit_to_predictions(bundle_dir: Path, val: list[Sample]) -> BundleSpec:
    """The bundle in ``bundle_dir`` with its calibration and operating points fitted again, on the
    fracture outputs the Predictor really keeps for the validation images: with an orientation
    step, an image it reads turned upright gets the upright read's probability, and a promise
    such as "sensitivity >= 0.90 on validation data" must hold for what users get. (Fitted on
    the single upright read, the default's `triage` point gave 0.881 through the Predictor.)
    The bundle's other settings are its own, already fitted; without an orientation step or a
    fracture head it is returned unchanged. Written back to ``bundle_dir``."""
    spec = load_bundle_spec(bundle_dir)
    if not spec.orientation or spec.head("fracture") is None:
        return spec
    predictor = Predictor(bundle_dir)
    logits = np.concatenate(
        [
            predictor.network_outputs([predictor.read(s.path) for s in val[i : i + 32]])["fracture"]
            for i in range(0, len(val), 32)
        ]
    )
    spec, fitted = _fit_fracture(spec, val, logits)
    validation = {**spec.metrics.get("validation", {}), **fitted, "fitted_on": "the Predictor's kept reads"}
    spec = dataclasses.replace(spec, metrics={**spec.metrics, "validation": validation})
    write_bundle_spec(spec, bundle_dir)
    return spec


def refuse_unfit_data(
    dataset: Dataset, val: list[Sample], fracture: Sequence[str], classes: Sequence[str], fix: str
) -> None:
    """Refuse (:class:`DataMismatchError`, with ``fix`` saying what to do instead) a data set that
    lacks the validation labels the model's heads are calibrated on (``fracture``: its fracture
    head's class names, ``classes``: its class head's), whose binary label means something else
    than the fracture head's (normal/abnormal against not fractured/fractured), or that has a class
    the model does not know; labels for heads it does not have are left alone."""
    from fracsight.evaluation.run import model_class_index

    missing = []
    if fracture and not all(FRACTURE in s.labels for s in val):
        n = sum(FRACTURE not in s.labels for s in val)
        missing.append(f"fracture labels ({'/'.join(fracture)}; {n} of {len(val)} validation images lack it)")
    dataset.refuse_other_binary_label(fracture, fix)
    if classes:
        try:
            model_class_index(dataset.class_names, classes)
        except DatasetError as e:  # a class the model does not know
            raise DataMismatchError(f"{e}: {fix}") from None
        if not any(CLASS in s.labels for s in val):
            missing.append(f"class labels ({', '.join(classes)}) on its validation images")
        else:
            _warn_classes_unseen(dataset, val, classes)
    if missing:
        raise DataMismatchError(
            f"{dataset.root} lacks the {' and '.join(missing)}, which the model's heads are calibrated "
            f"on: {fix}"
        )
    positive = sum(s.labels[FRACTURE] for s in val) if fracture else 1
    if fracture and not 0 < positive < len(val):  # the fit ended in roc_curve's ValueError traceback
        raise DataMismatchError(
            f"{dataset.root}'s validation split has {positive} {fracture[-1]} and {len(val) - positive} "
            f"{fracture[0]} images: the calibration and operating points are fitted on both: {fix}"
        )


def _warn_classes_unseen(dataset: Dataset, val: list[Sample], classes: Sequence[str]) -> None:
    """Warn where the validation images lack some of the model's classes: the class operating
    point (and quantize's gate) is then fitted without them, and it fell to 1/N on a small set,
    every class stated "most likely" however unsure."""
    names = dataset.class_names[CLASS]
    seen = {names[s.labels[CLASS]] for s in val if s.labels.get(CLASS, -1) >= 0}
    unseen = [c for c in classes if c not in seen]
    if unseen:
        log.warning(
            "%s: no validation image of the model's class(es) %s: the class operating point is fitted "
            "without them, and the class it states for such an image was never checked here",
            dataset.root,
            ", ".join(repr(c) for c in unseen),
        )


def metrics_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """What a bundle keeps of an evaluation (``evaluate_model``) in its ``metrics``, with the images
    that could not be read (``failed``), which every figure leaves out, so the card can say which."""
    keys = (
        "n",
        "n_positive",
        "auroc",
        "average_precision",
        "brier",
        "sensitivity_at_specificity",
        "thresholds",
        "regions",
        "region_head",
        "localization",
        "multiclass",
        "study",
        "ci_method",  # what the intervals resample: the card says it (it could not, once)
    )
    out = {k: metrics[k] for k in keys if k in metrics}
    if "calibration" in metrics:
        out["ece"] = metrics["calibration"]["ece"]
    if metrics.get("failed"):
        out["failed"] = metrics["failed"]
    return out
