"""Turn a training run into a model bundle: ONNX, calibration, operating points, OOD statistics, card.

Everything is chosen on the validation split (calibration, thresholds, the
out-of-distribution threshold); the test split, when asked for, is only
measured, through the exported ONNX model, and reported in the card.
"""

from __future__ import annotations

import dataclasses
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from fracsight.bundle import (
    BundleSpec,
    ClassOperatingPoint,
    HeadSpec,
    OperatingPoint,
    sha256_file,
    write_bundle_spec,
)
from fracsight.data import CLASS, FRACTURE, Sample, load_dataset
from fracsight.errors import ConfigError
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
from fracsight.preprocessing import Letterbox, letterbox_radiograph, read_for_model
from fracsight.training.card import write_card
from fracsight.training.trainer import load_checkpoint, train_val_samples

__all__ = ["export_bundle"]


def _raw_outputs(
    model: OnnxModel, samples: list[Sample], batch_size: int = 32
) -> tuple[dict[str, np.ndarray], list[Letterbox]]:
    """Raw ONNX outputs for ``samples`` and the letterbox geometry of each image."""
    size = model.spec.input_size

    def prepare(sample: Sample) -> tuple[np.ndarray, Letterbox]:
        return letterbox_radiograph(read_for_model(sample.path, size), size)

    keep = ("fracture", "embedding", "region", "class", "mask", "cam")
    chunks: dict[str, list[np.ndarray]] = {}
    geometries: list[Letterbox] = []
    with ThreadPoolExecutor(2) as pool:
        for i in range(0, len(samples), batch_size):
            prepared = list(pool.map(prepare, samples[i : i + batch_size]))
            geometries += [g for _, g in prepared]
            for name, value in model.run(np.stack([square for square, _ in prepared])).items():
                if name in keep:
                    chunks.setdefault(name, []).append(value)
    return {k: np.concatenate(v) for k, v in chunks.items()}, geometries


def choose_localization(
    samples: list[Sample], outputs: dict[str, np.ndarray], geometries: list[Letterbox]
) -> dict[str, Any]:
    """Heat source and box cut-off that best hit the validation fracture boxes (IoU >= 0.1)."""
    from fracsight.explain import boxes_from_heatmap, denormalize_box, hit_rate, upsample_to_input
    from fracsight.inference.predictor import BOX_GRID, localization_map

    chosen = [i for i, s in enumerate(samples) if s.labels.get(FRACTURE) == 1 and s.boxes]
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


def export_bundle(
    run_dir: Path,
    out_dir: Path,
    *,
    evaluate_split: str | None = None,
    force: bool = False,
    data_dir: Path | None = None,
    train_command: str | None = None,
) -> BundleSpec:
    """Export ``run_dir/best.pt`` as a bundle in ``out_dir``; optionally evaluate it on ``evaluate_split``."""
    from fracsight.models.export import export_onnx

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    checkpoint = run_dir / "best.pt" if run_dir.is_dir() else run_dir
    if not checkpoint.is_file():
        raise ConfigError(f"no checkpoint at {checkpoint}: train first (fracsight train)")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise ConfigError(f"{out_dir} exists and is not empty; choose another folder or pass --force")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, cfg = load_checkpoint(checkpoint)
    output_names = export_onnx(model, out_dir / "model.onnx", cfg.input_size)

    data_root = Path(data_dir or cfg.data)
    dataset = load_dataset(data_root, cfg.layout)
    train, val = train_val_samples(dataset, cfg.seed)
    has_fracture = all(FRACTURE in s.labels for s in dataset.samples)
    heads = [HeadSpec("fracture", "binary", ("not fractured", "fractured"))] if has_fracture else []
    if "region" in output_names:
        heads.append(HeadSpec("region", "multilabel", model.heads_config.regions))
    if "class" in output_names:
        heads.append(HeadSpec("class", "multiclass", model.heads_config.classes))
    spec = BundleSpec(
        name=cfg.name,
        version=cfg.version,
        architecture=cfg.arch,
        input_size=cfg.input_size,
        heads=tuple(heads),
        operating_points=(),
        default_operating_point="",
        onnx_sha256=sha256_file(out_dir / "model.onnx"),
        feature_channels=model.num_features,
        localization={"box_threshold": 0.5, "min_box_score": 0.25},
        training={
            "data": str(data_root),
            "layout": dataset.layout,
            "n_train": len(train),
            "n_val": len(val),
            "config": cfg.to_dict(),
            "commands": [
                train_command or f"fracsight train -c {run_dir / 'config.yaml'}",
                f"fracsight export {run_dir} {out_dir}"
                + (f" --evaluate {evaluate_split}" if evaluate_split else "")
                + (f" --data-dir {data_dir}" if data_dir else ""),
            ],
        },
    )
    write_bundle_spec(spec, out_dir)
    onnx = OnnxModel(out_dir)
    val_out, val_geometries = _raw_outputs(onnx, val)
    train_out, _ = _raw_outputs(onnx, train)
    validation: dict[str, Any] = {"n": len(val)}
    if has_fracture:
        y_val = np.array([s.labels[FRACTURE] for s in val])
        logits = val_out["fracture"].astype(np.float64)
        calibration = fit_calibration(logits, y_val)
        p_val = apply_temperature(logits, calibration.temperature, calibration.bias)
        triage = threshold_for_sensitivity(y_val, p_val, 0.9)
        balanced = youden_threshold(y_val, p_val)
        ops = (
            OperatingPoint(
                "balanced",
                balanced.threshold,
                "maximizes sensitivity + specificity (Youden's J) on validation data",
                balanced.sensitivity,
                balanced.specificity,
            ),
            OperatingPoint(
                "triage",
                triage.threshold,
                "highest threshold with sensitivity >= 0.90 on validation data (fewer misses, "
                "more false alarms)",
                triage.sensitivity,
                triage.specificity,
            ),
        )
        validation.update(
            auroc=auroc(y_val, p_val),
            ece=expected_calibration_error(y_val, p_val)[0],
            temperature=calibration.temperature,
            calibration_bias=calibration.bias,
            calibration=calibration.description,
        )
        spec = dataclasses.replace(
            spec,
            temperature=calibration.temperature,
            calibration_bias=calibration.bias,
            operating_points=ops,
            default_operating_point="balanced",
        )
    if CLASS in dataset.class_names and "class" in val_out:
        known = np.array([CLASS in s.labels for s in val])
        if known.any():
            y_cls = np.array([s.labels[CLASS] for s in val if CLASS in s.labels])
            class_probs = softmax(val_out["class"][known].astype(np.float64), axis=1)
            validation["class_accuracy"] = float((class_probs.argmax(1) == y_cls).mean())
            choice = class_confidence_threshold(y_cls, class_probs)
            spec = dataclasses.replace(spec, class_operating_point=ClassOperatingPoint(**vars(choice)))
    if has_fracture:
        spec = dataclasses.replace(spec, localization=choose_localization(val, val_out, val_geometries))
    spec = dataclasses.replace(
        spec, ood=fit_ood(train_out["embedding"], val_out["embedding"]), metrics={"validation": validation}
    )
    write_bundle_spec(spec, out_dir)
    if evaluate_split:
        from fracsight.evaluation.run import evaluate_model

        # the report stays with the run, not inside the (shipped) bundle
        report_dir = (run_dir if run_dir.is_dir() else run_dir.parent) / f"evaluation-{evaluate_split}"
        metrics = evaluate_model(out_dir, data_root, report_dir, split=evaluate_split)
        spec = dataclasses.replace(spec, metrics={**spec.metrics, evaluate_split: _summary(metrics)})
        write_bundle_spec(spec, out_dir)
    write_card(spec, out_dir, run_dir)
    return spec


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
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
    )
    out = {k: metrics[k] for k in keys if k in metrics}
    if "calibration" in metrics:
        out["ece"] = metrics["calibration"]["ece"]
    return out
