"""Turn a training run into a model bundle: ONNX, calibration, operating points, OOD statistics, card.

Everything is chosen on the validation split (calibration, thresholds, the
out-of-distribution threshold); the test split, when asked for, is only
measured, through the exported ONNX model, and reported in the card.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from fracsight.bundle import BundleSpec, HeadSpec, sha256_file, write_bundle_spec
from fracsight.data import FRACTURE, load_dataset
from fracsight.data.splits import train_val_samples
from fracsight.errors import ConfigError
from fracsight.inference.onnx_model import OnnxModel
from fracsight.training.card import write_card
from fracsight.training.refit import choose_localization, fit_to_outputs, raw_outputs
from fracsight.training.refit import metrics_summary as _summary
from fracsight.training.trainer import load_checkpoint

__all__ = ["choose_localization", "export_bundle"]


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
    val_out, val_geometries = raw_outputs(onnx, val)
    train_out, _ = raw_outputs(onnx, train)
    spec = fit_to_outputs(
        spec, val, val_out, val_geometries, train_out["embedding"], class_names=dataset.class_names
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
