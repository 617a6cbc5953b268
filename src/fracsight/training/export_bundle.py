"""Turn a training run into a model bundle: ONNX, calibration, operating points, OOD statistics, card.

Everything is chosen on the validation split (calibration, thresholds, the
out-of-distribution threshold); the test split, when asked for, is only
measured, through the exported ONNX model, and reported in the card.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fracsight._output import check_output_folder, staged_folder
from fracsight.bundle import BundleSpec, HeadSpec, sha256_file, write_bundle_spec
from fracsight.data import FRACTURE, Dataset, load_dataset
from fracsight.data.splits import train_val_samples
from fracsight.errors import ConfigError, DatasetError
from fracsight.evaluation.run import evaluate_model, select_samples
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
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    checkpoint = run_dir / "best.pt" if run_dir.is_dir() else run_dir
    if not checkpoint.is_file():
        raise ConfigError(f"no checkpoint at {checkpoint}: train first (fracsight train)")
    inputs = [("the training run", run_dir if run_dir.is_dir() else checkpoint)]
    check_output_folder(out_dir, force=force, inputs=inputs)
    model, cfg = load_checkpoint(checkpoint)
    if not (data_dir or cfg.data):  # Path("") would be the working folder: never guess
        raise DatasetError(f"{checkpoint} does not record its data set: pass data_dir (--data-dir)")
    data_root = Path(data_dir or cfg.data)
    if not data_root.is_dir():
        where = "given" if data_dir else "the run trained on"
        raise DatasetError(
            f"the data set {where}, {data_root}, is not a folder here: pass --data-dir DATA_DIR"
        )
    dataset = load_dataset(data_root, cfg.layout)
    if evaluate_split:
        select_samples(dataset, evaluate_split, cfg.seed)  # an unknown split: refused before writing
    inputs.append(("the data set", data_root))
    commands = [
        # to a new run folder: the run's own folder holds the run, and train will not overwrite it
        train_command or f"fracsight train -c {run_dir / 'config.yaml'} --out {run_dir}-again",
        f"fracsight export {run_dir} {out_dir}"
        + (f" --evaluate {evaluate_split}" if evaluate_split else "")
        + (f" --data-dir {data_dir}" if data_dir else ""),
    ]
    with staged_folder(out_dir, force=force, inputs=inputs) as work:
        spec = _write_bundle(model, cfg, dataset, work, run_dir, commands, evaluate_split)
    return spec


def _write_bundle(
    model, cfg, dataset: Dataset, work: Path, run_dir: Path, commands: list[str], evaluate_split: str | None
) -> BundleSpec:
    """The bundle of ``model`` (trained in ``run_dir``) made in ``work``; ``commands``: the ones
    that made it."""
    from fracsight.models.export import export_onnx

    output_names = export_onnx(model, work / "model.onnx", cfg.input_size)
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
        onnx_sha256=sha256_file(work / "model.onnx"),
        feature_channels=model.num_features,
        localization={"box_threshold": 0.5, "min_box_score": 0.25},
        training={
            "data": str(dataset.root),
            "layout": dataset.layout,
            "n_train": len(train),
            "n_val": len(val),
            "config": cfg.to_dict(),
            "commands": commands,
        },
    )
    write_bundle_spec(spec, work)
    onnx = OnnxModel(work)
    val_out, val_geometries = raw_outputs(onnx, val)
    train_out, _ = raw_outputs(onnx, train)
    spec = fit_to_outputs(
        spec, val, val_out, val_geometries, train_out["embedding"], class_names=dataset.class_names
    )
    write_bundle_spec(spec, work)
    if evaluate_split:
        # the report stays with the run, not inside the (shipped) bundle
        report_dir = (run_dir if run_dir.is_dir() else run_dir.parent) / f"evaluation-{evaluate_split}"
        metrics = evaluate_model(work, dataset.root, report_dir, split=evaluate_split)
        spec = dataclasses.replace(spec, metrics={**spec.metrics, evaluate_split: _summary(metrics)})
        write_bundle_spec(spec, work)
    write_card(spec, work, run_dir)
    return spec
