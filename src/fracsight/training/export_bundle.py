"""Turn a training run into a model bundle: ONNX, calibration, operating points, OOD statistics, card.

Everything is chosen on the validation split (calibration, thresholds, the
out-of-distribution threshold); the test split, when asked for, is only
measured, through the exported ONNX model, and reported in the card.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from fracsight._output import TRAIN_CONFIG, check_output_folder, staged_folder
from fracsight._terminal import shell_command
from fracsight.bundle import BundleSpec, HeadSpec, sha256_file, write_bundle_spec
from fracsight.data import (
    CLASS,
    FRACTURE,
    DataMismatchError,
    Dataset,
    NotADataFolderError,
    Sample,
    load_dataset,
)
from fracsight.data.leakage import (
    images_content,
    images_record,
    recorded_images,
    refuse_images_trained_on,
    same_content,
    same_data_folder,
    split_as_trained,
    split_leakage,
)
from fracsight.data.splits import train_val_samples, training_subset
from fracsight.errors import ConfigError, DatasetError
from fracsight.evaluation.run import evaluate_model, select_samples
from fracsight.inference.onnx_model import OnnxModel
from fracsight.training.card import write_card
from fracsight.training.config import TrainConfig, TrainConfigError, load_config
from fracsight.training.refit import (
    choose_localization,
    fit_to_outputs,
    metrics_summary,
    raw_outputs,
    refuse_unfit_data,
)
from fracsight.training.trainer import load_trained, read_checkpoint, trained_fracture_classes

if TYPE_CHECKING:
    from fracsight.models import FractureNet

__all__ = ["DataMismatchError", "choose_localization", "export_bundle"]

log = logging.getLogger(__name__)


def _is_other_data(
    trained_on: str | None,
    trained_content: str | None,
    dataset: Dataset,
    train: list[Sample],
    val: list[Sample],
    cfg: TrainConfig,
    checkpoint: Path,
) -> bool:
    """Whether ``dataset`` holds other images than the run trained and validated on: another folder
    of other data to calibrate on, as ``--data-dir`` allows (the same images moved are not). The
    run's own data folder whose images changed is refused: a data set without splits that grew
    since training is split anew, and calibration and thresholds were then fitted, and test
    measured, on images the model had trained on, without a word."""
    if trained_on is None:  # a best.pt from before it kept the record: cannot tell
        return False
    samples = training_subset(train, cfg.max_samples, cfg.seed) + val
    now = images_record(dataset.root, samples)
    own = same_data_folder(cfg.data, dataset.root)
    # another folder alike in names and labels: the same images only where their bytes are (two
    # sites' exports numbered alike were recorded as the training data, calibrated on unsaid)
    if recorded_images(trained_on, dataset.root, samples) and (
        own or same_content(trained_content, images_content(dataset.root, samples))
    ):
        return False
    if cfg.data and not own:  # another folder
        trained = {"data": cfg.data, "layout": cfg.layout, "seed": cfg.seed, "max_samples": cfg.max_samples}
        refuse_images_trained_on(trained, trained_on, dataset.root, val, str(checkpoint))
        return True
    raise DataMismatchError(
        f"{dataset.root} is not the data {checkpoint} trained on: its training and validation images "
        f"differ now ({now['images']} of them; files added, removed or relabelled since, and a data "
        "set without splits is split anew, so calibration, thresholds and test would fall on images "
        "the model trained on). Export with the data as it was, or train again on this data"
    )


def export_bundle(
    run_dir: Path,
    out_dir: Path,
    *,
    evaluate_split: str | None = None,
    force: bool = False,
    data_dir: Path | None = None,
    train_command: str | None = None,
    warn: Callable[[str], None] | None = None,
    report_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    joint: bool = False,
) -> BundleSpec:
    """Export ``run_dir/best.pt`` as a bundle in ``out_dir``; optionally evaluate it on ``evaluate_split``,
    saying to ``warn`` (default: the log) what the evaluation warns of (its splits' leakage), with
    the report in ``report_dir`` (default: :func:`evaluation_report_dir`); ``progress`` is told each
    step as it begins (reading the training images alone takes minutes on a laptop's CPU).
    ``joint``: the network of a ``detector joint`` run, for ``detector bundle`` to add its heads to
    (else such a run is refused: its detector would be left out without a word)."""
    if train_command is not None and (
        "\n" in train_command or "\r" in train_command or "```" in train_command
    ):
        # the card's Reproduce block is a code fence: a fence in the command closed it early and the
        # rest of the command read as the card's own text ("## Measured results ... AUROC 0.999")
        raise TrainConfigError(
            "--train-command must be one line without ``` (join continued lines with spaces)"
        )
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    checkpoint = run_dir / "best.pt" if run_dir.is_dir() else run_dir
    if not checkpoint.is_file():
        if (run_dir / "bundle.json").is_file():  # "train first" pointed the wrong way
            raise TrainConfigError(
                f"{run_dir} is a model bundle, not a training run: export takes the folder "
                "`fracsight train --out` wrote (its best.pt)"
            )
        raise TrainConfigError(f"no checkpoint at {checkpoint}: train first (fracsight train)")
    inputs = [("the training run", run_dir if run_dir.is_dir() else checkpoint)]
    check_output_folder(out_dir, force=force, inputs=inputs)
    trained = load_trained(checkpoint, joint=joint)
    model, cfg, fracture = trained.model, _schedule_as_run(trained.config, checkpoint), trained.fracture
    cfg = dataclasses.replace(cfg, data=_trained_data(cfg, checkpoint.parent))
    if not (data_dir or cfg.data):  # Path("") would be the working folder: never guess
        raise DatasetError(f"{checkpoint} does not record its data set: pass data_dir (--data-dir)")
    data_root = Path(data_dir or cfg.data)
    if data_dir and not data_root.is_dir():
        raise NotADataFolderError(f"--data-dir {data_dir} is not a folder; give the data set's top folder")
    if not data_root.is_dir():
        relative = "" if data_root.is_absolute() else " (relative to where training ran)"
        raise NotADataFolderError(
            f"the data set the run trained on, {data_root}{relative}, is not a folder here: "
            "pass --data-dir DATA_DIR"
        )
    dataset = load_dataset(data_root, cfg.layout)
    # class folders: the next read of the data would take the bundle folder for a class
    dataset.refuse_output_inside(out_dir, "OUT")
    if fracture is None:
        fracture = _older_run_fracture(cfg, dataset)
    dataset = split_as_trained(dataset, cfg.seed, cfg.max_samples, trained.images_sha256)
    train, val = train_val_samples(dataset, cfg.seed)  # once: the split reads duplicate candidates
    refuse_unfit_data(
        dataset,
        val,
        fracture,
        model.heads_config.classes,
        "export with the data set the run trained on (--data-dir)",
    )
    other_data = _is_other_data(
        trained.images_sha256, trained.images_content, dataset, train, val, cfg, checkpoint
    )
    if evaluate_split:  # an unknown split: refused before writing; other data is not carved as the run's
        select_samples(dataset, evaluate_split, None if other_data else cfg.seed)
    inputs.append(("the data set", data_root))
    again = f"{checkpoint.parent}-again"
    # to new folders: the run's own folder holds the run, and train will not overwrite it; the
    # export then takes the run the line above made (it exported the first run again, or was
    # refused, its bundle folder taken), unless the user gave their own train command
    export_from, export_to = (run_dir, out_dir) if train_command else (again, f"{out_dir}-again")
    commands = [
        train_command or shell_command("fracsight", "train", "-c", out_dir / TRAIN_CONFIG, "--out", again),
        shell_command("fracsight", "export", export_from, export_to)
        + (f" --evaluate {evaluate_split}" if evaluate_split else "")
        + (f" --data-dir {shell_command(data_dir)}" if data_dir else ""),
    ]
    evaluation = (
        (evaluate_split, report_dir or evaluation_report_dir(run_dir, evaluate_split), out_dir)
        if evaluate_split
        else None
    )
    with staged_folder(out_dir, force=force, inputs=inputs) as work:
        spec = _write_bundle(
            model,
            cfg,
            fracture,
            dataset,
            (train, val),
            work,
            run_dir,
            commands,
            evaluation,
            warn,
            epochs=_epochs_run(checkpoint, cfg, trained.epoch),
            trained_data=_trained_data_record(cfg) if other_data else None,
            images_sha256=trained.images_sha256,
            progress=progress or (lambda _step: None),
        )
    return spec


def _trained_data_record(cfg: TrainConfig) -> dict[str, object]:
    """``training.data``, ``layout``, ``n_train`` and ``n_val`` of the data a run trained on, for a
    bundle calibrated on other data (until 2026-12-05 the other data was recorded as the training
    data, and evaluate took the real training images for held-out ones). The counts only where that
    data set is here to count."""
    record: dict[str, object] = {"data": str(Path(cfg.data).resolve()), "layout": cfg.layout}
    with contextlib.suppress(DatasetError):
        own = load_dataset(Path(cfg.data), cfg.layout)
        train, val = train_val_samples(own, cfg.seed)
        record.update(
            layout=own.layout, n_train=len(training_subset(train, cfg.max_samples, cfg.seed)), n_val=len(val)
        )
    return record


def _schedule_as_run(cfg: TrainConfig, checkpoint: Path) -> TrainConfig:
    """``cfg`` (best.pt's: the config of the session that saved it) with the schedule the run
    ended with, from its ``config.yaml``: a run resumed to train longer (``--resume --set
    epochs=4``) kept its best epoch from before, and the card said "up to 1 epoch" beside "epoch 1
    of 5", and its Reproduce config trained another schedule than the card described."""
    saved = checkpoint.parent / "config.yaml"
    if checkpoint.name != "best.pt" or not saved.is_file():
        return cfg
    try:
        final = load_config(saved, saved=True)
    except ConfigError:
        return cfg
    # a data folder moved, and the run resumed from there (`--resume` may change `data`): best.pt of
    # an epoch from before names the old place (the images are still checked against its digest)
    data = cfg.data
    if final.data and not Path(cfg.data).is_dir() and Path(final.data).is_dir():
        data = final.data
    return dataclasses.replace(cfg, epochs=final.epochs, patience=final.patience, data=data)


def _epochs_run(checkpoint: Path, cfg: TrainConfig, kept: int | None) -> dict[str, object] | None:
    """How a run's schedule went, from its ``last.pt`` and the epoch ``best.pt`` says it is
    (``kept``; None from a run of before it said, then ``last.pt``'s best epoch): epochs planned and
    run, the epoch kept, and how it ended (``finished``, ``early_stopping``, ``interrupted``: also a
    run exported while it still trains). The card of a run stopped by Ctrl-C read as a finished
    one, and its Reproduce commands train another model. None where the checkpoint is not a run
    folder's ``best.pt`` beside its ``last.pt``."""
    last = checkpoint.parent / "last.pt"
    if checkpoint.name != "best.pt" or not last.is_file():
        return None
    try:
        state = read_checkpoint(last, ("epoch", "best_epoch", "since_best"))
    except ConfigError:
        return None
    kept = state["best_epoch"] if kept is None else kept
    planned, run = cfg.epochs_frozen + cfg.epochs, max(int(state["epoch"]), int(kept))
    if run >= planned:
        ended = "finished"
    elif state.get("phase") == 2 and int(state["since_best"]) >= cfg.patience:
        ended = "early_stopping"
    else:
        ended = "interrupted"
    record: dict[str, object] = {"planned": planned, "run": run, "kept": int(kept), "ended": ended}
    with contextlib.suppress(TypeError, ValueError):  # a last.pt of before the record was kept
        if schedules := json.loads(state.get("schedules") or "[]"):
            record["schedules_before"] = schedules  # resumed with another schedule
    return record


def evaluation_report_dir(run_dir: Path, split: str) -> Path:
    """Where ``export --evaluate SPLIT`` puts its report: with the run, not inside the (shipped)
    bundle, in ``evaluation-SPLIT``, or ``evaluation-SPLIT-2``, ``-3``, ... when an earlier export
    left a report there (a re-export with other data replaced it without a word)."""
    run_folder = run_dir if run_dir.is_dir() else run_dir.parent
    candidate, n = run_folder / f"evaluation-{split}", 1
    while candidate.exists() and not (candidate.is_dir() and not any(candidate.iterdir())):
        n += 1
        candidate = run_folder / f"evaluation-{split}-{n}"
    return candidate


def _trained_data(cfg: TrainConfig, run_dir: Path) -> str:
    """The data set a run trained on, in full. Runs of older fracsight versions recorded it as typed,
    relative to the working folder training ran in; when the run folder still ends in the
    (relative) ``out`` it recorded, that folder is the run folder less those parts. Otherwise the
    path is returned as recorded."""
    data, out = Path(cfg.data), Path(cfg.out)
    if not cfg.data or data.is_absolute():
        return cfg.data
    here = run_dir.resolve()
    if out.is_absolute() or not out.parts or here.parts[-len(out.parts) :] != out.parts:
        return cfg.data
    return str((Path(*here.parts[: -len(out.parts)]) / data).resolve())


def _older_run_fracture(cfg: TrainConfig, dataset: Dataset) -> tuple[str, ...]:
    """The fracture head's class names of a checkpoint from before fracsight recorded them: training
    trained the head when every image of its data set had a fracture label. Judged on that data
    set (``cfg.data``) when it is here, else on ``dataset``, with a warning."""
    trained = Path(cfg.data) if cfg.data else None
    if trained is None or not trained.is_dir():
        log.warning(
            "%s: the run does not record whether it trained a fracture head (older fracsight), and its "
            "data set %s is not here: judged on the data given, %s",
            cfg.name,
            cfg.data or "(none recorded)",
            dataset.root,
        )
    elif trained.resolve() != Path(dataset.root).resolve():
        dataset = load_dataset(trained, cfg.layout)
    return trained_fracture_classes(dataset)


def _boxed(sample: Sample) -> bool:
    return sample.labels.get(FRACTURE) == 1 and bool(sample.boxes)


def _typed_not_fractured(sample: Sample) -> bool:
    return sample.labels.get(FRACTURE) == 0 and CLASS in sample.labels


def _write_bundle(
    model: FractureNet,
    cfg: TrainConfig,
    fracture: tuple[str, ...],
    dataset: Dataset,
    train_val: tuple[list[Sample], list[Sample]],
    work: Path,
    run_dir: Path,
    commands: list[str],
    evaluation: tuple[str, Path, Path] | None,
    warn: Callable[[str], None] | None = None,
    *,
    epochs: dict[str, object] | None = None,
    trained_data: dict[str, object] | None = None,
    images_sha256: str | None = None,
    progress: Callable[[str], None],
) -> BundleSpec:
    """The bundle of ``model`` (trained in ``run_dir``) made in ``work``; ``epochs``: how its
    schedule went (:func:`_epochs_run`), for the card; ``fracture``: the class
    names of the fracture head it trained (empty: none); ``train_val``: the run's split of
    ``dataset``; ``trained_data``: :func:`_trained_data_record` where ``dataset`` is other data than
    the run's, to calibrate on; ``commands``: the ones that made it; ``evaluation``: the split to
    measure it on for the card, the folder for that report and the bundle's own folder, which it names."""
    from fracsight.models.export import export_onnx

    progress("writing model.onnx")
    output_names = export_onnx(model, work / "model.onnx", cfg.input_size)
    (work / TRAIN_CONFIG).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    train, val = train_val
    trained = training_subset(train, cfg.max_samples, cfg.seed)  # the images it trained on
    heads = [HeadSpec("fracture", "binary", fracture)] if fracture else []
    calibrated = {
        "data": str(Path(dataset.root).resolve()),
        "layout": dataset.layout,
        "n_train": len(trained),
        "n_val": len(val),
    }
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
            **(calibrated if trained_data is None else {**trained_data, "calibration_data": calibrated}),
            # the run's training and validation images (images_record): `quantize --data` checks
            # other data against them, where that data set still splits as the run did
            **({"images_sha256": images_sha256} if images_sha256 else {}),
            # the data set's own splits sharing images or patients: the card warns its figures off
            "leakage": split_leakage(dataset.samples).to_dict(),
            "config": cfg.to_dict(),
            # 0: a backbone without stages (small_cnn, resnet50, ...): no feature cache, all of it trained
            "backbone_stages": model.split_points(),
            "commands": commands,
            **({"epochs": epochs} if epochs else {}),
            # the card says whether any drawn box taught the localization map
            **(
                {"n_train_with_boxes": sum(_boxed(s) for s in trained)}
                if fracture and not trained_data
                else {}
            ),
            # the card's "trained on fractured images only" where it is so: a labels.csv may give
            # every image a class, and the type head then learnt from the normal ones too
            **(
                {"n_train_typed_not_fractured": sum(_typed_not_fractured(s) for s in trained)}
                if fracture and "class" in output_names and not trained_data
                else {}
            ),
        },
    )
    write_bundle_spec(spec, work)
    onnx = OnnxModel(work)
    progress(f"calibrating on the {len(val)} validation images")
    val_out, val_geometries = raw_outputs(onnx, val, root=dataset.root)
    progress(f"reading the {len(train)} training images (the out-of-distribution check's reference)")
    train_out, _ = raw_outputs(onnx, train, root=dataset.root)
    spec = fit_to_outputs(
        spec, val, val_out, val_geometries, train_out["embedding"], class_names=dataset.class_names
    )
    write_bundle_spec(spec, work)
    if evaluation:
        evaluate_split, report_dir, out_dir = evaluation
        progress(f"evaluating on {evaluate_split}")
        metrics = evaluate_model(
            work, dataset.root, report_dir, split=evaluate_split, warn=warn, recorded_as=out_dir
        )
        spec = dataclasses.replace(spec, metrics={**spec.metrics, evaluate_split: metrics_summary(metrics)})
        write_bundle_spec(spec, work)
    write_card(spec, work, run_dir)
    return spec
