"""A new bundle from a base bundle: its network frozen, a detector and an orientation step added.

Everything is chosen on the validation split (the detector's epoch, the boxes' score floor,
the orientation step's certainty); the test split, when asked for, is only measured. The
base's out-of-distribution statistics are kept: its fracture output is unchanged (the grafted
graph is checked to give the same values). Its calibration and operating points are fitted
again on the reads the new bundle's Predictor keeps, since the orientation step reads some
images turned upright.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fracsight._output import check_output_folder, staged_folder
from fracsight.bundle import BundleSpec, load_bundle_spec, read_checked_onnx, sha256_file, write_bundle_spec
from fracsight.data import FRACTURE, Dataset, Sample, load_dataset
from fracsight.data.leakage import recorded_images, refuse_bundle_trained_on
from fracsight.data.sample import DataMismatchError
from fracsight.data.splits import train_val_samples, training_subset
from fracsight.detection.features import GRID, ZoomViews
from fracsight.errors import BundleError, ConfigError, OutputFolderError
from fracsight.training.card import reproduce_line
from fracsight.training.refit import refit_to_predictions

if TYPE_CHECKING:
    from fracsight.detection.train import HeadsConfig

__all__ = [
    "build_detector_bundle",
    "build_joint_bundle",
    "choose_orientation_certainty",
    "choose_score_floor",
    "next_version",
    "refuse_output_in_bundle",
]

FLOORS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
# Below this upright probability the predictor also reads the image turned back by the likeliest
# turn and weighs both reads' orientation answers (``reads_agree_on_turn``; a second pass for
# those images only).
CHECK_BELOW = 0.9


def choose_score_floor(detector, val, log) -> tuple[float, dict[str, dict[str, float]]]:
    """The highest floor whose validation AP50 stays within 3% of the best floor's: fewer stray
    boxes on screen for next to no loss of found fractures."""
    from fracsight.detection.train import detection_metrics, detector_outputs

    outputs = detector_outputs(detector, val, np.flatnonzero([len(b) > 0 for b in val.boxes]))
    table = {str(f): detection_metrics(detector, val, min_score=f, outputs=outputs) for f in FLOORS}
    best = max(m["val_ap50"] for m in table.values())
    floor = max(f for f in FLOORS if table[str(f)]["val_ap50"] >= 0.97 * best) if best > 0 else FLOORS[0]
    tried = ", ".join(f"{f} {m['val_ap50']:.3f}" for f, m in table.items())
    log(f"box score floor {floor} (validation AP50 by floor: {tried})")
    return floor, table


def choose_orientation_certainty(orientation, val, log) -> tuple[float, dict[str, float]]:
    """The orientation certainty (:func:`fracsight.training.refit.orientation_certainty`) for the
    validation views of the cached features, through the torch head ``orientation``."""
    import torch

    from fracsight.detection.train import as_tensor, format_values
    from fracsight.training.refit import orientation_certainty

    with torch.no_grad():
        logits = orientation.forward_grid(as_tensor(val.grid_features))
    certainty, stats = orientation_certainty(torch.softmax(logits, 1).numpy(), np.asarray(val.orientation))
    log("orientation: " + format_values(stats, digits=3))
    return certainty, stats


def next_version(name: str, version: str, made_by: str) -> str:
    """The version after ``version``: a number plus one, else (or where a packaged bundle is that
    model already) ``version+made_by``: a one-epoch run from v3 labelled its results exactly as
    the shipped v4, and nothing in a result told them apart."""
    from fracsight.inference.store import packaged_models

    following = str(int(version) + 1) if version.isdigit() else None
    if following is None or (name, following) in packaged_models().values():
        return f"{version}+{made_by}"
    return following


def refuse_unboxed(dataset: Dataset, data_dir: Path, seed: int) -> None:
    """Refuse (:class:`DataMismatchError`, exit 2) data whose train or val split (as split with
    ``seed``) holds no fracture box: the detector learns from train's, its epoch and score floor
    are chosen on val's AP. Checked over the whole set only, a val split without boxes trained every
    epoch (AP nan) and ended in a traceback; a train split without them wrote a detector that had
    learned from none, exit 0."""
    if not any(s.boxes for s in dataset.samples):
        raise DataMismatchError(
            f"{data_dir} has no fracture boxes: the detector learns from them "
            "(FracAtlas layout with annotations/, docs/data.md)"
        )
    train, val = train_val_samples(dataset, seed)
    for split, samples, use in (("train", train, "learns from"), ("val", val, "is chosen on")):
        if not any(s.boxes for s in samples):
            raise DataMismatchError(
                f"{data_dir}: its {split} split holds no fracture box, and the detector {use} them "
                "(give box files to some fractured images of each split; docs/data.md)"
            )


def refuse_grafted_base(base: BundleSpec, model_bytes: bytes | None = None) -> None:
    """Refuse a base that has heads grafted already or is INT8: a second detector cannot be grafted
    beside the first (the graph names clash), and heads are trained on the float network. With
    ``model_bytes``, its graph is asked too: a detector's model.onnx under a bundle.json that does not
    say so trained for minutes to hours, then failed with onnx's "overlapping names"."""
    if base.localization.get("boxes") == "detector" or base.orientation:
        heads, joint = base.training.get("heads") or {}, base.training.get("joint") or {}
        origin = (
            f" (grafted onto {heads['base']})"
            if heads.get("base")
            else f" (fine-tuned with them from {joint['base']})"
            if joint.get("base")
            else ""
        )
        raise BundleError(
            f"{base.provenance} has a detector and an orientation step already{origin}: give the bundle "
            "without them as the base"
        )
    if base.precision != "float32":
        raise BundleError(
            f"{base.provenance} is {base.precision}: train the detector on its float bundle, then quantize"
        )
    if model_bytes is not None:
        import onnx

        from fracsight.detection.graft import HEAD_OUTPUTS

        outputs = {o.name for o in onnx.load_model_from_string(model_bytes).graph.output}
        if clash := sorted(outputs & set(HEAD_OUTPUTS)):
            raise BundleError(
                f"{base.provenance}'s model.onnx has a detector's outputs already ({', '.join(clash)}), "
                "though its bundle.json does not say so: give the bundle without them as the base"
            )


def _base_validation(base: BundleSpec, own_data: bool, n_val: int) -> dict[str, Any]:
    """The base's validation figures that hold for the ``n_val`` validation images of the data:
    all of them on the data set the base was fitted on (``own_data``); on other data only their count."""
    return base.metrics.get("validation", {}) if own_data else {"n": n_val}


def build_detector_bundle(
    base_dir: Path,
    out_dir: Path,
    data_dir: Path,
    *,
    cfg: HeadsConfig | None = None,
    normals: int = 400,
    zoom: ZoomViews | None = None,
    evaluate_split: str | None = None,
    force: bool = False,
    cache_dir: Path | None = None,
    command: str = "",
    version: str | None = None,
    log=print,
) -> BundleSpec:
    """Train the heads on ``data_dir`` over the network of ``base_dir`` and write the new bundle
    (``version``: default the base's plus one).

    The frozen features are cached in ``cache_dir`` (default: ``.cache`` next to ``out_dir``),
    keyed by the base's checksum, so a second run with other head settings starts at once.
    Data whose binary label means something else than the base's fracture head are refused: the
    detector would learn to box it, and the refit calibrate it, under the base's name.
    """
    from fracsight.detection.prepare import prepare_features
    from fracsight.detection.train import HeadsConfig, train_heads
    from fracsight.evaluation.run import is_training_data

    cfg = cfg or HeadsConfig()
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    base = load_bundle_spec(base_dir)
    model_bytes = read_checked_onnx(base_dir, base)  # the card would name a network not the one inside
    fracture = base.head("fracture")
    if fracture is None:
        raise DetectorArgumentError(f"{base.name} has no fracture head: the detector finds fractures")
    # the orientation head averages the network's last map (stride 32) over a GRID x GRID grid
    if base.input_size % (32 * GRID):
        raise DetectorArgumentError(
            f"{base.name} reads {base.input_size} px; the detector and orientation heads need an input "
            f"size that is a multiple of {32 * GRID} (e.g. 288 or 384): train the base at such a size"
        )
    refuse_grafted_base(base, model_bytes)
    dataset = load_dataset(Path(data_dir), base.training.get("layout", "auto"))
    dataset.refuse_other_binary_label(
        fracture.classes, "train the detector on data labelled as the base's (--data)"
    )
    seed = int(base.training.get("config", {}).get("seed", 0))
    refuse_unboxed(dataset, Path(data_dir), seed)
    inputs = [("the base bundle", base_dir), ("the data set", Path(data_dir))]
    check_output_folder(out_dir, force=force, inputs=inputs)
    refuse_output_in_bundle(out_dir, base_dir, "the base bundle")
    dataset.refuse_output_inside(out_dir, "OUT")
    if cache_dir is not None:
        dataset.refuse_output_inside(cache_dir, "--cache-dir")
    if evaluate_split:  # an unknown split: refused before the heads train, not after
        from fracsight.evaluation.run import held_out_samples

        held_out_samples(dataset, evaluate_split, base, Path(data_dir), "--evaluate")  # as evaluated below
    train_samples, val_samples = train_val_samples(dataset, seed)  # as prepare_features splits them
    # other data whose validation images the network trained on (the base's set with its splits
    # swapped): the calibration and thresholds refitted below were fitted on them, unsaid
    refuse_bundle_trained_on(base.training, Path(data_dir), val_samples, base.provenance)
    cache = cache_dir or out_dir.parent / ".cache"
    # the progress bar shows only on a terminal: in a log the minutes of a first run said nothing
    log(f"frozen features of the training and validation views through {base.provenance} (cache: {cache})")
    zoom = zoom or ZoomViews()
    train, val = prepare_features(base_dir, dataset, cache, normals=normals, seed=seed, zoom=zoom)
    heads = train_heads(train, val, cfg, log)
    own_data = is_training_data(base, Path(data_dir), dataset)
    n_normal = sum(s.labels.get(FRACTURE) == 0 for s in train_samples)
    training = {
        **base.training,
        "commands": [
            *base.training.get("commands", []),
            reproduce_line(base.training.get("commands", []), command, [out_dir])
            if command
            else _FROM_PYTHON.format(step="build_detector_bundle", settings="training.heads.config"),
        ],
        "heads": {
            "base": base.provenance,
            # what the heads, calibration and operating points were fitted on; training.data stays
            # the base's record of where the network was trained
            "data": str(Path(data_dir).resolve()),
            "other_data": not own_data,
            "config": dataclasses.asdict(cfg),
            # the images without a fracture the detector learnt from: all there are when the
            # training split has fewer than --normals (the card said "400" of 16)
            "normals": min(normals, n_normal),
            **({"normals_asked": normals} if n_normal < normals else {}),
            **({"zoom_views": dataclasses.asdict(zoom)} if zoom.count else {}),
            "n_train_views": len(train.orientation),
            "n_detector_views": int(train.detect.sum()),
            "history": heads.history,
            "command": command,
        },
    }
    version = version or next_version(base.name, base.version, "detector")
    return _write_with_heads(
        base_dir,
        out_dir,
        heads.detector,
        heads.orientation,
        val,
        version,
        training,
        data_dir,
        evaluate_split,
        log,
        force=force,
        inputs=inputs,
        val_samples=val_samples,
        validation=_base_validation(base, own_data, len(val_samples)),
    )


# what a card's commands say of a step run from Python (a script, a notebook), not as a typed command:
# without it they read as if the step before had made the bundle
_FROM_PYTHON = "# then fracsight.detection.build.{step}(...) from Python; settings: bundle.json {settings}"


def refuse_output_in_bundle(out_dir: Path, bundle_dir: Path, what: str) -> None:
    """Refuse (:class:`OutputFolderError`, before any work) an output folder inside the folder of
    ``bundle_dir``, an input bundle (``what``): a bundle written there (and the feature cache beside
    it) went with that bundle when it was replaced, and made it no longer a bundle alone."""
    if Path(bundle_dir).resolve() in Path(out_dir).resolve().parents:
        raise OutputFolderError(f"{out_dir} is inside {what} {bundle_dir}: choose a folder outside it")


def _refuse_starting_bundle(out_dir: Path, history: dict[str, Any]) -> None:
    """Refuse ``--force`` over the base or heads bundle the joint run started from (known by its
    provenance, as the run records them): it replaced the bundle the run was made from, unsaid."""
    if not (out_dir / "bundle.json").is_file():
        return
    try:
        there = load_bundle_spec(out_dir).provenance
    except BundleError:
        return  # not a bundle that loads: not one the run started from
    for what in ("base", "heads"):
        if history.get(what) == there:
            raise OutputFolderError(
                f"{out_dir} is the {what} bundle the joint run started from ({there}): choose another "
                "folder for the bundle"
            )


class DetectorArgumentError(ConfigError):
    """A bundle or run given to a ``detector`` command that cannot be used as that argument (a base
    the heads cannot read, heads of another network, a folder that is no joint run): a bad argument,
    exit 2, before any work (it was exit 1, as for a failure of the training)."""

    bad_argument = True


class UnknownEpochError(ConfigError):
    """``detector bundle --epoch N`` naming an epoch the joint run does not have (a bad argument)."""

    code = "unknown_epoch"
    bad_argument = True


def _chosen_epoch(run_dir: Path) -> int | None:
    """The epoch a joint run's record chose, or None where it cannot be read (said later)."""
    try:
        chosen = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))["chosen"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return chosen if isinstance(chosen, int) and not isinstance(chosen, bool) else None


def _epoch_of_copy(run_dir: Path, checkpoint: Path, kept: list[int]) -> int | None:
    """The kept epoch whose file ``checkpoint`` (best.pt, a copy of one) holds the same bytes as."""
    try:  # best.pt is read only once an epoch file has its size (hundreds of MB a read)
        size, data = checkpoint.stat().st_size, None
        for k in kept:
            file = run_dir / f"epoch-{k}.pt"
            if file.stat().st_size == size:
                data = checkpoint.read_bytes() if data is None else data
                if file.read_bytes() == data:
                    return k
        return None
    except OSError:  # said where the checkpoint is read
        return None


def build_joint_bundle(
    run_dir: Path,
    out_dir: Path,
    data_dir: Path,
    *,
    evaluate_split: str | None = None,
    epoch: int | None = None,
    force: bool = False,
    command: str = "",
    log=print,
) -> BundleSpec:
    """A bundle from a joint fine-tuning run (:func:`fracsight.detection.joint.train_joint`): its
    network exported and refitted on validation like any trained network (calibration, operating
    points, input checks), its detector and orientation head grafted onto the export, their score
    floor and certainty chosen on validation. ``epoch``: another epoch than the chosen one
    (``best.pt``), to look at; the card says which."""
    import tempfile

    from fracsight.detection.heads import heads_from_tensors
    from fracsight.detection.prepare import validation_features
    from fracsight.training.export_bundle import export_bundle
    from fracsight.training.trainer import read_checkpoint

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    checkpoint = run_dir / ("best.pt" if epoch is None else f"epoch-{epoch}.pt")
    kept = sorted(
        int(n) for f in run_dir.glob("epoch-*.pt") if (n := f.stem.removeprefix("epoch-")).isdigit()
    )
    if epoch is not None and kept and not checkpoint.is_file():  # the run is there, not that epoch
        raise UnknownEpochError(
            f"no joint checkpoint at {checkpoint}: the run's epochs are {kept[0]} to {kept[-1]}"
        )
    if (run_dir / "bundle.json").is_file():  # was "no joint checkpoint at d1/best.pt: run ... first"
        raise DetectorArgumentError(
            f"{run_dir} is a model bundle, not a joint run (`fracsight detector joint` makes one)"
        )
    if not checkpoint.is_file():
        raise DetectorArgumentError(
            f"no joint checkpoint at {checkpoint}: run `fracsight detector joint` first"
        )
    inputs = [("the joint run", run_dir), ("the data set", Path(data_dir))]
    check_output_folder(out_dir, force=force, inputs=inputs)
    # the chosen epoch's own file, never rewritten: a run still training replaces best.pt (and
    # history.json) after each epoch, and a bundle made meanwhile took its network from one epoch
    # and its heads and record from another
    pinned = _chosen_epoch(run_dir) if epoch is None else None
    if pinned is not None and (run_dir / f"epoch-{pinned}.pt").is_file():
        checkpoint = run_dir / f"epoch-{pinned}.pt"
    else:  # best.pt, the chosen epoch's copy (its own file pruned to save disk), unless it is another's
        other = _epoch_of_copy(run_dir, checkpoint, kept) if pinned is not None else None
        if other is not None:  # best.pt holds no epoch number: the bundle said epoch 7 of epoch 0's network
            raise ConfigError(
                f"{run_dir / 'history.json'} chose epoch {pinned}, but {checkpoint.name} is epoch "
                f"{other}'s: the record is damaged or of another run"
            )
        pinned = None
    state = read_checkpoint(checkpoint)
    if "detector" not in state or "orientation" not in state:
        raise DetectorArgumentError(f"{checkpoint} was not written by a joint run (no detector weights)")
    try:
        history = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {run_dir / 'history.json'}, the joint run's record: {e}") from None
    if not isinstance(history, dict) or "chosen" not in history:
        raise ConfigError(
            f"{run_dir / 'history.json'} is not the record of a finished joint run (no chosen epoch)"
        )
    if pinned is not None:  # the record read again may be of a later epoch: the one exported
        history["chosen"] = pinned
    _refuse_starting_bundle(out_dir, history)
    trained = json.loads(state["config"]) if isinstance(state["config"], str) else {}
    dataset = load_dataset(Path(data_dir), trained.get("layout", "auto"))
    _refuse_other_data(history, trained, dataset)
    refuse_unboxed(dataset, Path(data_dir), int(trained.get("seed", 0)))  # the floor: chosen on val's AP
    dataset.refuse_output_inside(out_dir, "OUT")
    if evaluate_split:  # an unknown split: refused now, not after the export and the heads' settings
        from fracsight.evaluation.run import select_samples

        select_samples(dataset, evaluate_split, int(trained.get("seed", 0)))
    detector, orientation = heads_from_tensors(
        {f"{head}.{k}": v.numpy() for head in ("detector", "orientation") for k, v in state[head].items()}
    )
    history["exported_epoch"] = history["chosen"] if epoch is None else epoch
    # (not where only best.pt is there: gpu_joint.sh's copy of a run holds no epoch files)
    if epoch is None and not history.get("finished", True) and command and checkpoint.name != "best.pt":
        # the run's command trains every epoch planned, and chooses among them all: its Reproduce
        # line rebuilt another model than the one of the run stopped (or still training) here
        command = f"{command} --epoch {history['chosen']}"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        network_dir = Path(tmp) / "network"
        log(f"exporting epoch {history['exported_epoch']} of {run_dir} and refitting it on validation")
        base = export_bundle(
            checkpoint, network_dir, data_dir=data_dir, train_command=command or None, joint=True
        )
        log(f"frozen features of the validation views (cache: {out_dir.parent / '.cache'})")
        # the run's split: data without a split column is carved by the run's seed (with seed 0, the
        # score floor and orientation certainty were chosen partly on the run's training images)
        seed = int(base.training.get("config", {}).get("seed", 0))
        val = validation_features(network_dir, dataset, out_dir.parent / ".cache", seed=seed)
        joint_line = history.get("command", "")
        if command and command != joint_line:  # `joint --out`: its line, chained already
            command = reproduce_line([*history.get("start_commands", []), joint_line], command, [out_dir])
            # this line writes the bundle: the joint line's own --out wrote it first, and this one
            # was refused ("holds a model bundle") when the block was run top to bottom
            joint_line = _without_out(joint_line) if joint_line.startswith("fracsight ") else joint_line
        training = {
            **base.training,
            "commands": [
                *history.get("start_commands", []),
                # once: `detector joint --out` writes this bundle with the run's own command
                *dict.fromkeys(
                    [
                        *([joint_line] if joint_line else []),
                        command or _FROM_PYTHON.format(step="build_joint_bundle", settings="training.joint"),
                    ]
                ),
            ],
            "joint": history,
        }
        # the joint run's images and splits, which `quantize --data` and `detector train --data`
        # check other data against (with max_samples it drew val too, which they cannot redraw)
        if history.get("images_sha256") and not history.get("config", {}).get("max_samples"):
            training["images_sha256"] = history["images_sha256"]
        return _write_with_heads(
            network_dir,
            out_dir,
            detector,
            orientation,
            val,
            base.version,
            training,
            data_dir,
            evaluate_split,
            log,
            force=force,
            inputs=inputs,
            val_samples=train_val_samples(dataset, seed)[1],
            validation=base.metrics.get("validation", {}),  # the export measured it on this data
        )


#: a joint line's ``--out FOLDER`` and the ``--evaluate SPLIT`` that needs it, as recorded (quoted
#: for POSIX or Windows: the rest of the line is kept as written, never split and quoted again)
_OUT_OPTIONS = re.compile(r"""\s--(?:out|evaluate)(?:=|\s+)(?:'[^']*'|"[^"]*"|\S+)""")


def _without_out(line: str) -> str:
    """A ``detector joint`` line without ``--out`` (and the ``--evaluate`` refused without it)."""
    return _OUT_OPTIONS.sub("", line)


def _refuse_other_data(history: dict[str, Any], trained: dict[str, Any], dataset: Dataset) -> None:
    """Refuse (:class:`DataMismatchError`, exit 2) a data set whose split (``trained``: the run's training
    config) has other counts, or other images or splits (their digest), than the joint run recorded:
    the bundle would name it as the data the network trained on, and fit its calibration there."""
    recorded = (history.get("n_train"), history.get("n_val"))
    seed, limit = int(trained.get("seed", 0)), int(history.get("config", {}).get("max_samples") or 0)
    train, val = (training_subset(s, limit, seed) for s in train_val_samples(dataset, seed))  # as joint drew
    digest = history.get("images_sha256")  # a run from before it was kept: the counts only
    if None in recorded or (
        recorded == (len(train), len(val))
        and (digest is None or recorded_images(digest, dataset.root, [*train, *val]))
    ):
        return
    other = "other images or splits" if recorded == (len(train), len(val)) else f"{len(train)} and {len(val)}"
    raise DataMismatchError(
        f"the joint run trained on {recorded[0]} training and {recorded[1]} validation images (of "
        f"{trained.get('data') or 'its data set'}); {dataset.root} has {other}: "
        "give the data set the run trained on (--data)"
    )


def _write_with_heads(
    base_dir: Path,
    out_dir: Path,
    detector,
    orientation,
    val,
    version: str,
    training: dict,
    data_dir: Path,
    evaluate_split: str | None,
    log,
    *,
    force: bool,
    inputs: list[tuple[str, Path]],
    val_samples: list[Sample],
    validation: dict[str, Any],
) -> BundleSpec:
    """``base_dir``'s bundle with the heads grafted on, their settings chosen on ``val``, written to
    ``out_dir`` (and measured on ``evaluate_split`` when given). ``force``, ``inputs``: as
    :func:`~fracsight._output.staged_folder` takes them; ``val_samples``: the validation images
    ``val`` was read from, which calibration and operating points are fitted again on;
    ``validation``: the base's figures on them that the new bundle keeps (the refit adds its own)."""
    from fracsight.detection.graft import graft_heads
    from fracsight.detection.heads import STRIDE

    base = load_bundle_spec(base_dir)
    floor, floors = choose_score_floor(detector, val.with_maps(upright_only=True), log)
    certainty, orientation_stats = choose_orientation_certainty(orientation, val, log)
    with staged_folder(out_dir, force=force, inputs=inputs) as work:
        graft_heads(base_dir / "model.onnx", detector, orientation, base.input_size, work / "model.onnx")
        spec = dataclasses.replace(
            base,
            version=version,
            onnx_sha256=sha256_file(work / "model.onnx"),
            localization={
                **base.localization,
                "boxes": "detector",
                "stride": STRIDE,
                "min_box_score": floor,
                "max_boxes": 5,
                "nms_iou": 0.3,
                "validation_ap50": floors[str(floor)]["val_ap50"],
                "validation_hit_rate": floors[str(floor)]["val_hit"],
                "score_floors": floors,
            },
            orientation={
                "min_probability": certainty,
                "check_below": CHECK_BELOW,
                "validation": orientation_stats,
            },
            training=training,
            metrics={"validation": validation},
        )
        write_bundle_spec(spec, work)
        # the orientation step changes which read of an image is kept, so the probabilities users
        # get are no longer the base's: calibration and operating points are fitted on them
        log(
            f"fitting calibration and operating points on the {len(val_samples)} validation images "
            "as predicted"
        )
        spec = refit_to_predictions(work, val_samples)
        if evaluate_split:
            from fracsight.evaluation.run import evaluate_model
            from fracsight.training.refit import metrics_summary

            # measured for the card alone, as quantize does: a report folder beside the bundle
            # overwrote a folder of that name (`fracsight evaluate OUT DATA --out` writes one)
            log(f"measuring the new bundle on {evaluate_split}")
            metrics = evaluate_model(work, Path(data_dir), split=evaluate_split)
            spec = dataclasses.replace(
                spec, metrics={**spec.metrics, evaluate_split: metrics_summary(metrics)}
            )
            write_bundle_spec(spec, work)
        from fracsight.training.card import write_card

        write_card(spec, work)
    return spec
