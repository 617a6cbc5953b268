"""Joint fine-tuning: the network and its grafted heads trained together, with quarter-turn augmentation.

The grafted detector of :mod:`fracsight.detection.build` learns on frozen features that were
trained for classification. Here the network itself (from the base bundle's ``model.onnx``,
:func:`fracsight.models.unfold.network_from_onnx`) learns with the detector and the orientation
head (started from a bundle that has them), so its features come to localize fractures and
know which way up a radiograph is. Every step reads each image in a random quarter turn,
mirrored or not, with random exposure; every loss of the base's recipe applies (fracture,
localization map, body region) plus the detector's and the orientation head's.

The stem and the first stages stay frozen (they run at strides 2 and 4, where most of a CPU
step's time would go) and the normalizations stay identities with a learnable shift and scale
(the batches are too small on a laptop to re-estimate them). An exponential moving average of
the weights is validated after each epoch on the upright validation images (AUROC, box AP50,
top-box hits) and on the same images turned by 90 degrees (AUROC, orientation accuracy); each
epoch's average is kept and :func:`choose_epoch` picks one on validation alone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fracsight._files import replace_atomically
from fracsight.bundle import BundleSpec, load_bundle_spec, read_checked_onnx
from fracsight.data.leakage import images_record
from fracsight.data.sample import Dataset, Sample
from fracsight.data.splits import train_val_samples, training_subset
from fracsight.detection.build import DetectorArgumentError, refuse_unboxed
from fracsight.detection.features import model_boxes
from fracsight.detection.heads import DetectionHead, OrientationHead, heads_from_tensors
from fracsight.detection.taps import HEADS_PREFIX
from fracsight.detection.train import HeadsConfig, box_metrics, detection_loss, format_values, refuse_diverged
from fracsight.errors import ConfigError
from fracsight.evaluation.metrics import auroc
from fracsight.explain.boxes import flip_boxes, turn_boxes, zoom_boxes
from fracsight.models.network import FractureNet, HeadConfig
from fracsight.models.unfold import graph_tensors, network_from_onnx
from fracsight.training.augment import augment_batch
from fracsight.training.cache import letterbox_samples
from fracsight.training.config import AugmentConfig, TrainConfig, load_config
from fracsight.training.loss import Targets, multitask_loss
from fracsight.training.trainer import (
    WeightAverage,
    _labels,
    checkpoint_record,
    resolve_device,
    save_checkpoint,
    trained_fracture_classes,
)

__all__ = ["JointConfig", "JointNet", "choose_epoch", "load_joint", "train_joint"]

# exposure only: the geometry of a view is its quarter turn and mirror, which boxes follow exactly
_EXPOSURE = AugmentConfig(hflip=0.0, rotate_deg=0.0, scale=(1.0, 1.0), translate=0.0)


@dataclass(frozen=True)
class JointConfig:
    epochs: int = 6
    batch_size: int = 16
    lr: float = 2e-4  # the network
    head_lr: float = 1e-3  # the detector and the orientation head
    weight_decay: float = 1e-5
    frozen_stages: int = 2  # stem and blocks[:frozen_stages] keep the base's weights
    detect_weight: float = 1.0
    orientation_weight: float = 0.5
    ema_decay: float = 0.995
    # >0: the starting network, reading each image upright, teaches the fracture and region
    # logits of the turned view (keeps the ranking it had while the features learn boxes)
    distill_weight: float = 0.0
    # each training view also zoomed by a factor drawn from this range (above 1: magnified and
    # cropped; below 1: shrunk inside the border) and shifted by up to ``shift`` of its side, the
    # boxes following: what detectors train with, where the turns alone let the detector learn
    # the views by heart (docs/training.md)
    zoom: tuple[float, float] = (1.0, 1.0)
    shift: float = 0.0
    seed: int = 0
    max_samples: int = 0  # >0: only this many training images (smoke tests)
    device: str = "auto"  # auto, cpu or cuda; the data stays on the CPU and goes over batch by batch


class JointNet(nn.Module):
    """The network with its detector and orientation head, reading the taps they were grafted on."""

    def __init__(self, network: FractureNet, detector: DetectionHead, orientation: OrientationHead) -> None:
        super().__init__()
        self.network = network
        self.detector = detector
        self.orientation = orientation
        self.taps = _tap_stages(network)

    def forward(self, x: torch.Tensor, frozen: int = 0):
        net, backbone = self.network, self.network.backbone
        y = net.forward_prefix(x, 0)  # the input normalized
        with torch.set_grad_enabled(torch.is_grad_enabled() and frozen == 0):
            y = backbone.bn1(backbone.conv_stem(y))
        kept = {}
        # the maps the detector reads are kept from frozen stages too (--frozen-stages 3 and more)
        for i, stage in enumerate(backbone.blocks):
            with torch.set_grad_enabled(torch.is_grad_enabled() and i >= frozen):
                y = stage(y)
            if i in self.taps:
                kept[self.taps[i]] = y
        features = net.backbone.bn2(net.backbone.conv_head(y))
        return (
            net.forward_heads(features),
            self.detector(kept[8], kept[16], features),
            self.orientation(features),
        )


def _tap_stages(network: FractureNet) -> dict[int, int]:
    """{stage index: stride} for the last stage at strides 8 and 16: what the grafted heads read
    (:func:`fracsight.detection.taps.find_taps` finds the same tensors in the exported graph)."""
    side = 64
    with torch.no_grad():
        y = network.forward_prefix(torch.zeros(1, 1, side, side), 0)
        y = network.backbone.bn1(network.backbone.conv_stem(y))
        last = {}
        for i, stage in enumerate(network.backbone.blocks):
            y = stage(y)
            last[side // y.shape[-1]] = i
    return {last[8]: 8, last[16]: 16}


def load_joint(base_dir: Path, heads_dir: Path) -> tuple[JointNet, TrainConfig]:
    """The base bundle's network with the heads of ``heads_dir`` (a bundle grafted onto the same
    base by ``fracsight detector train``), and the base's training config."""
    base = load_bundle_spec(base_dir)
    heads_spec = load_bundle_spec(heads_dir)
    _check_models(base_dir, base, heads_dir, heads_spec)
    for spec in (base, heads_spec):  # their weights are read as float tensors: an int8 graph has none
        if spec.precision != "float32":
            raise DetectorArgumentError(
                f"{spec.provenance} is {spec.precision}: give its float bundle (an int8 one is made from "
                "the float one by `fracsight quantize`, after training)"
            )
    if heads_spec.localization.get("boxes") != "detector" or not heads_spec.orientation:
        raise DetectorArgumentError(
            f"{heads_spec.name} v{heads_spec.version} has no grafted detector to start from"
        )
    _refuse_other_network(base, heads_spec)
    cfg_dict = dict(base.training.get("config", {}))
    if not cfg_dict:
        raise ConfigError(f"{base.name} records no training config to continue from")
    augment = cfg_dict.pop("augment", {})
    cfg = load_config(None, None, saved=True, **cfg_dict, augment=augment)
    region = base.head("region")
    heads = HeadConfig(regions=tuple(region.classes) if region else ())
    network = network_from_onnx(Path(base_dir) / "model.onnx", base.architecture, heads)
    detector, orientation = heads_from_tensors(graph_tensors(Path(heads_dir) / "model.onnx"), HEADS_PREFIX)
    return JointNet(network, detector, orientation), cfg


def _check_models(base_dir: Path, base: BundleSpec, heads_dir: Path, heads_spec: BundleSpec) -> None:
    """Refuse (:class:`~fracsight.errors.ChecksumMismatchError`, exit 2) a base or heads bundle whose
    model.onnx is not the one its bundle.json names, as predict does: the run would start from
    another network (or fail to read a damaged one) under the bundle's name."""
    read_checked_onnx(base_dir, base)
    read_checked_onnx(heads_dir, heads_spec)


def _refuse_other_network(base: BundleSpec, heads_spec: BundleSpec) -> None:
    """Refuse heads that learned on another network than ``base``'s (its own, or the one ``base`` is
    grafted onto): they read that network's maps, and would start from nothing here."""
    learned_on = (heads_spec.training.get("heads") or heads_spec.training.get("joint") or {}).get("base")
    network = {base.provenance, (base.training.get("heads") or {}).get("base")}
    if learned_on and learned_on not in network:
        raise DetectorArgumentError(
            f"the heads of {heads_spec.provenance} learned on the network of {learned_on}, not on "
            f"{base.provenance}'s: give as HEADS a bundle grafted onto MODEL (`fracsight detector train`)"
        )


@dataclass
class _Data:
    images: np.ndarray  # (N, S, S) uint8 centred letterboxes
    masks: np.ndarray  # (N, S, S) uint8 box masks
    boxes: list[np.ndarray]  # model pixels
    labels: dict[str, torch.Tensor | None]
    detect_valid: np.ndarray  # (N,) bool: the boxes (or their absence) are known


def _data(samples: list[Sample], dataset: Dataset, size: int, cache_dir: Path) -> _Data:
    lb = letterbox_samples(samples, size, cache_dir)
    labels = _labels(samples, dataset)
    return _Data(
        images=lb.images,
        masks=lb.masks,
        boxes=[model_boxes(s, size) for s in samples],
        labels=labels,
        detect_valid=labels["mask_valid"].numpy(),
    )


def _views(data: _Data, idx: np.ndarray, turns: np.ndarray, mirrors: np.ndarray):
    images, masks, boxes = [], [], []
    size = data.images.shape[-1]
    for i, k, m in zip(idx, turns, mirrors, strict=True):
        img, msk, b = data.images[i], data.masks[i], data.boxes[i]
        if m:
            img, msk, b = img[:, ::-1], msk[:, ::-1], flip_boxes(b, size)
        images.append(np.rot90(img, k))
        masks.append(np.rot90(msk, k))
        boxes.append(turn_boxes(b, int(k), size))
    as_tensor = lambda a: torch.from_numpy(np.stack(a)).unsqueeze(1).float() / 255  # noqa: E731
    return as_tensor(images), as_tensor(masks), boxes


def _zoomed(
    x: torch.Tensor,
    masks: torch.Tensor,
    boxes: list[np.ndarray],
    zoom: tuple[float, float],
    shift: float,
    gen: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """Views zoomed about their centre by a factor in ``zoom`` and shifted by up to ``shift`` of
    their side (one bilinear warp, zero border as the letterbox's), with the boxes moved alike:
    clipped to the view, dropped when under a third of a box is left in it."""
    n, size = len(x), x.shape[-1]
    scale = gen.uniform(zoom[0], zoom[1], n)
    move = gen.uniform(-shift, shift, (n, 2)) * 2  # in the warp's units: the side is 2
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = torch.from_numpy(1 / scale).float()
    theta[:, :, 2] = torch.from_numpy(move).float()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    half = size / 2  # the warp's units to pixels
    moved = [
        zoom_boxes(b, s, (tx * half, ty * half), size).astype(b.dtype)
        for b, s, (tx, ty) in zip(boxes, scale, move, strict=True)
    ]
    return x, masks, moved


def _targets(data: _Data, idx: np.ndarray, masks: torch.Tensor, grid: int) -> Targets:
    """The batch's targets, on the device of ``masks``."""
    lab = data.labels
    pick = lambda t: None if t is None else t[idx].to(masks.device)  # noqa: E731
    return Targets(
        fracture=pick(lab["fracture"]),
        fracture_valid=pick(lab["fracture_valid"]),
        mask=(F.adaptive_max_pool2d(masks, grid) > 0.5).squeeze(1).float(),
        mask_valid=pick(lab["mask_valid"]),
        region=pick(lab["region"]),
        region_valid=pick(lab["region_valid"]),
    )


@torch.no_grad()
def _validate(model: JointNet, data: _Data, epoch: int, batch: int = 32) -> dict[str, float]:
    model.eval()
    device = next(model.parameters()).device
    n = len(data.images)
    y = data.labels["fracture"].numpy()
    metrics: dict[str, float] = {}
    for k in (0, 1):
        probs, orient, outputs, truths = [], [], [], []
        for start in range(0, n, batch):
            idx = np.arange(start, min(start + batch, n))
            x, _, boxes = _views(data, idx, np.full(len(idx), k), np.zeros(len(idx), bool))
            out, det, orientation = model(x.to(device))
            centre, size, offset = (t.cpu() for t in det)
            probs.append(torch.sigmoid(out["fracture"]).cpu().numpy())
            orient.append(orientation.argmax(1).cpu().numpy())
            if k:
                continue
            for j, i in enumerate(idx):
                if len(boxes[j]) and data.labels["fracture"][i] == 1:
                    outputs.append((centre[j].numpy(), size[j].numpy(), offset[j].numpy()))
                    truths.append(boxes[j])
        tag = "" if k == 0 else "_rot90"
        p = np.concatenate(probs)
        refuse_diverged(bool(np.isfinite(p).all()), "joint run", epoch, "lower --lr or --distill")
        metrics[f"val_auroc{tag}"] = auroc(y, p)
        metrics[f"val_orientation{tag}"] = float((np.concatenate(orient) == k).mean())
        if k == 0:
            metrics.update(box_metrics(outputs, truths))
    return metrics


def _distillation(
    teacher: FractureNet, out: dict[str, torch.Tensor], data: _Data, idx: np.ndarray, mirrors: np.ndarray
) -> torch.Tensor:
    """Mean squared difference between the student's fracture and region logits on the turned
    views and the teacher's on the same images upright (same mirror, no exposure change)."""
    upright, _, _ = _views(data, idx, np.zeros(len(idx), int), mirrors)
    with torch.no_grad():
        want = teacher(upright.to(out["fracture"].device).contiguous(memory_format=torch.channels_last))
    loss = F.mse_loss(out["fracture"], want["fracture"])
    if "region" in want:
        loss = loss + F.mse_loss(out["region"], want["region"])
    return loss


def choose_epoch(history: list[dict[str, Any]], auroc_margin: float = 0.005) -> int:
    """The epoch with the best validation box AP50 among those whose upright validation AUROC is
    within ``auroc_margin`` of the best epoch's (epoch 0: the starting weights). Turned images are
    read upright by the orientation step, so the AUROC on turned images is reported, not used."""
    best = max(h["val_auroc"] for h in history)
    fine = [h for h in history if h["val_auroc"] >= best - auroc_margin]
    return int(max(fine, key=lambda h: (h["val_ap50"], h["val_auroc"]))["epoch"])


def _checkpoint(model: JointNet, train_cfg: TrainConfig, fracture: tuple[str, ...]) -> dict[str, Any]:
    """A ``best.pt`` as training writes it (:func:`~fracsight.training.trainer.checkpoint_record`:
    export reads what its heads mean from it), plus the detector and the orientation head;
    ``fracture``: the class names of the fracture head it trained."""
    on_cpu = lambda module: {k: v.cpu() for k, v in module.state_dict().items()}  # noqa: E731
    return {
        "model": on_cpu(model.network),
        **checkpoint_record(model.network.heads_config, train_cfg, fracture),
        "detector": on_cpu(model.detector),
        "orientation": on_cpu(model.orientation),
    }


def train_joint(
    base_dir: Path,
    heads_dir: Path,
    dataset: Dataset,
    run_dir: Path,
    cfg: JointConfig,
    *,
    name: str,
    version: str,
    command: str = "",
    log=print,
) -> list[dict[str, Any]]:
    """Fine-tune jointly; write ``run_dir/epoch-N.pt`` for every epoch, and after each one
    ``best.pt`` (the epoch chosen among those done) and ``history.json`` (``finished`` once the
    last epoch is done): a run stopped early can still be bundled. Returns the history (epoch 0:
    the starting weights). Refused, before anything is written, for data whose binary label means
    something else than the base's fracture head (the fine-tuned head would be made to find it
    under the base's name) and for data without fracture boxes (the detector would learn that
    there are none)."""
    base_spec, heads_spec = load_bundle_spec(base_dir), load_bundle_spec(heads_dir)
    dataset.refuse_output_inside(run_dir, "RUN")
    head = base_spec.head("fracture")
    dataset.refuse_other_binary_label(
        head.classes if head else (), "fine-tune on data labelled as the base's (--data)"
    )
    refuse_unboxed(dataset, Path(dataset.root), int(base_spec.training.get("config", {}).get("seed", 0)))
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    model, base_cfg = load_joint(base_dir, heads_dir)
    model.to(device)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train_cfg = dataclasses.replace(
        base_cfg, out=str(run_dir), data=str(Path(dataset.root).resolve()), name=name, version=version
    )
    fracture = trained_fracture_classes(dataset)
    size = train_cfg.input_size
    train_samples, val_samples = train_val_samples(dataset, base_cfg.seed)
    # drawn from every label in proportion: the first N in file order may all be of one label
    train_samples = training_subset(train_samples, cfg.max_samples, base_cfg.seed)
    val_samples = training_subset(val_samples, cfg.max_samples, base_cfg.seed)
    cache = run_dir.parent / ".cache"
    train, val = _data(train_samples, dataset, size, cache), _data(val_samples, dataset, size, cache)
    y = train.labels["fracture"][train.labels["fracture_valid"]]
    pos_weight = float((y == 0).sum() / max(int((y == 1).sum()), 1))
    heads_cfg = HeadsConfig()

    for p in model.network.prefix_modules(cfg.frozen_stages):
        for q in p.parameters():
            q.requires_grad = False
    network_params = [p for p in model.network.parameters() if p.requires_grad]
    head_params = [*model.detector.parameters(), *model.orientation.parameters()]
    optimizer = torch.optim.AdamW(
        [{"params": network_params, "lr": cfg.lr}, {"params": head_params, "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    n = len(train.images)
    steps = max(n // cfg.batch_size, 1)  # fewer images than a batch: one batch of them all
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[cfg.lr, cfg.head_lr], total_steps=cfg.epochs * steps, pct_start=0.15
    )
    average = WeightAverage(model, cfg.ema_decay)
    teacher = copy.deepcopy(model.network).eval() if cfg.distill_weight > 0 else None
    gen = np.random.default_rng(cfg.seed)
    torch_gen = torch.Generator().manual_seed(cfg.seed)
    grid = size // 32

    history = [{"epoch": 0, **_validate(model, val, 0)}]

    def keep(finished: bool) -> int:
        """best.pt and history.json as of the epochs done: a run stopped early is a shorter run,
        which ``detector bundle`` makes a bundle of like any other."""
        chosen = choose_epoch(history)
        kept = (run_dir / f"epoch-{chosen}.pt").read_bytes()
        replace_atomically(run_dir / "best.pt", lambda p: p.write_bytes(kept))
        record = {
            "chosen": chosen,
            "finished": finished,
            "command": command,
            # how the starting point was made: the heads' bundle, grafted onto the base
            "start_commands": heads_spec.training.get("commands", []),
            "base": base_spec.provenance,
            "heads": heads_spec.provenance,
            "config": dataclasses.asdict(cfg),
            # the detector's loss beyond CenterNet's, which the card names (it said "centre focal
            # loss, size and offset L1" only)
            "detection_loss": {"size_spread": heads_cfg.size_spread, "giou_weight": heads_cfg.giou_weight},
            "n_train": len(train_samples),
            "n_val": len(val_samples),
            # which images, in which split: the counts alone let a copy with some train and val
            # images swapped pass for the run's data (`detector bundle --data`)
            **images_record(dataset.root, [*train_samples, *val_samples]),
            "epochs": history,
        }
        replace_atomically(run_dir / "history.json", lambda p: p.write_text(json.dumps(record, indent=1)))
        return chosen

    log("epoch 0 (start): " + _line(history[0]))
    save_checkpoint(_checkpoint(model, train_cfg, fracture), run_dir / "epoch-0.pt")
    keep(finished=False)
    for epoch in range(1, cfg.epochs + 1):
        t0, running, part_sums = time.time(), 0.0, {}
        order = gen.permutation(n)
        for step in range(steps):
            idx = np.sort(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
            turns = gen.integers(0, 4, len(idx))
            mirrors = gen.random(len(idx)) < 0.5
            x, masks, boxes = _views(train, idx, turns, mirrors)
            if cfg.zoom != (1.0, 1.0) or cfg.shift:
                x, masks, boxes = _zoomed(x, masks, boxes, cfg.zoom, cfg.shift, gen)
            x, _ = augment_batch(x, masks, _EXPOSURE, torch_gen)  # on the CPU: its generator is there
            x, masks = x.to(device, non_blocking=True), masks.to(device, non_blocking=True)
            model.eval()  # identities stay identities; the heads' dropout is the only difference
            model.orientation.train()
            out, det, orientation = model(x.contiguous(memory_format=torch.channels_last), cfg.frozen_stages)
            parts = {"base": multitask_loss(out, _targets(train, idx, masks, grid), train_cfg, pos_weight)}
            valid = np.flatnonzero(train.detect_valid[idx])
            if len(valid):
                det_valid = tuple(t[torch.from_numpy(valid).to(device)] for t in det)
                parts["detect"] = cfg.detect_weight * detection_loss(
                    det_valid, [boxes[j] for j in valid], heads_cfg
                )
            if teacher is not None:
                parts["distill"] = cfg.distill_weight * _distillation(teacher, out, train, idx, mirrors)
            parts["orientation"] = cfg.orientation_weight * F.cross_entropy(
                orientation, torch.from_numpy(turns).to(device)
            )
            loss = sum(parts.values())
            for key, value in parts.items():
                part_sums[key] = part_sums.get(key, 0.0) + value.item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            average.update(model)
            running += loss.item()
            if step % 20 == 0 or step == steps - 1:
                mean_parts = " ".join(f"{k} {v / (step + 1):.3f}" for k, v in part_sums.items())
                log(
                    f"epoch {epoch} step {step}/{steps} loss {running / (step + 1):.4f} ({mean_parts}; "
                    f"{time.time() - t0:.0f} s)"
                )
        record = {"epoch": epoch, "train_loss": running / steps, **_validate(average.model, val, epoch)}
        record["seconds"] = round(time.time() - t0, 1)
        history.append(record)
        log(f"epoch {epoch}: " + _line(record))
        save_checkpoint(_checkpoint(average.model, train_cfg, fracture), run_dir / f"epoch-{epoch}.pt")
        chosen = keep(finished=epoch == cfg.epochs)
    log(f"chosen on validation: epoch {chosen}")
    return history


def _line(record: dict[str, Any]) -> str:
    return format_values({k: v for k, v in record.items() if k != "epoch" and isinstance(v, float)})
