"""Training the grafted heads on cached frozen features (minutes on a laptop CPU)."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fracsight.detection.features import FeatureSet
from fracsight.detection.heads import STRIDE, DetectionHead, DetectorEnsemble, OrientationHead
from fracsight.errors import ConfigError
from fracsight.explain.boxes import DetectedBox, nms
from fracsight.explain.detections import decode_detections
from fracsight.explain.localization import average_precision_boxes, hit_rate
from fracsight.training.trainer import WeightAverage

__all__ = ["HeadsConfig", "TrainedHeads", "box_metrics", "train_detector", "train_heads"]


@dataclass(frozen=True)
class HeadsConfig:
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 32
    orientation_epochs: int = 12
    size_weight: float = 0.5
    offset_weight: float = 1.0
    # GIoU of the box read at the cells around a centre: teaches the box's extent as a whole
    giou_weight: float = 2.0
    # the cells this many cells around a box's centre cell learn to read that box too
    size_spread: int = 1
    # training views shifted by up to this many cells of the network's last map (32 px each)
    shift_cells: int = 2
    # an exponential moving average of the detector's weights, updated every step, is what is
    # validated and kept (0: the weights themselves)
    ema_decay: float = 0.0
    # detectors trained with seeds seed, seed + 1, ...; their outputs are averaged (one if 1)
    members: int = 1
    # with members > 1: one more detector learns to give the members' averaged outputs (this
    # weight on matching them, beside the boxes) and is kept alone, at one detector's cost
    distill: float = 0.0
    seed: int = 0


@dataclass
class TrainedHeads:
    detector: DetectionHead | DetectorEnsemble
    orientation: OrientationHead
    history: list[dict[str, Any]] = field(default_factory=list)


def _targets(boxes: list[np.ndarray], grid: int, spread: int = 0) -> dict[str, torch.Tensor]:
    """Per view, on a ``grid`` x ``grid`` map: ``heat`` (B, g, g), the Gaussian centre map, and at
    the ``cells`` (B, g, g) within ``spread`` cells of a box's centre cell, the box that cell
    must read: ``size`` (B, 2, g, g, log width and height in cells), ``offset`` (B, 2, g, g: the
    centre inside the cell, clipped to the cell, which is all a sigmoid offset can say) and
    ``box`` (B, 4, g, g, model pixels). A cell near two boxes reads the first; a centre cell
    always reads its own box."""
    b = len(boxes)
    heat = np.zeros((b, grid, grid), np.float32)
    size = np.zeros((b, 2, grid, grid), np.float32)
    offset = np.zeros((b, 2, grid, grid), np.float32)
    box = np.zeros((b, 4, grid, grid), np.float32)
    cells = np.zeros((b, grid, grid), bool)
    ys, xs = np.mgrid[0:grid, 0:grid].astype(np.float32)
    for i, view in enumerate(boxes):
        for x0, y0, x1, y1 in np.asarray(view, dtype=np.float64):
            w, h = max(x1 - x0, 1.0) / STRIDE, max(y1 - y0, 1.0) / STRIDE
            cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
            col, row = min(max(int(cx), 0), grid - 1), min(max(int(cy), 0), grid - 1)
            sx, sy = max(w / 6, 0.5), max(h / 6, 0.5)
            g = np.exp(-((xs - col) ** 2) / (2 * sx**2) - ((ys - row) ** 2) / (2 * sy**2))
            heat[i] = np.maximum(heat[i], g)
            heat[i, row, col] = 1.0
            for r in range(max(row - spread, 0), min(row + spread + 1, grid)):
                for c in range(max(col - spread, 0), min(col + spread + 1, grid)):
                    if cells[i, r, c] and (r, c) != (row, col):
                        continue
                    size[i, :, r, c] = (math.log(w), math.log(h))
                    offset[i, :, r, c] = (min(max(cx - c, 0.0), 1.0), min(max(cy - r, 0.0), 1.0))
                    box[i, :, r, c] = (x0, y0, x1, y1)
                    cells[i, r, c] = True
    arrays = {"heat": heat, "size": size, "offset": offset, "box": box, "cells": cells}
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def _decoded(size: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """(B, 4, g, g): the box each cell reads, x0, y0, x1, y1 in model pixels, as
    :func:`~fracsight.explain.detections.decode_detections` reads it."""
    g = size.shape[-1]
    rows, cols = torch.meshgrid(
        torch.arange(g, device=size.device), torch.arange(g, device=size.device), indexing="ij"
    )
    cx, cy = (cols + offset[:, 0]) * STRIDE, (rows + offset[:, 1]) * STRIDE
    half = torch.exp(size.clamp(-4.0, 4.0)) * (STRIDE / 2)
    return torch.stack([cx - half[:, 0], cy - half[:, 1], cx + half[:, 0], cy + half[:, 1]], 1)


def _giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalized IoU of paired (n, 4) boxes."""
    inter = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0).prod(1)
    union = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).prod(1)
    return inter / union.clamp(min=1e-6) - (hull - union) / hull.clamp(min=1e-6)


def _focal(logits: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, per positive cell."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = heat >= 1.0
    pos_loss = -((1 - p) ** 2 * torch.log(p))[pos].sum()
    neg_loss = -((1 - heat) ** 4 * p**2 * torch.log(1 - p))[~pos].sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


def as_tensor(a: np.ndarray, dtype: type = np.float32) -> torch.Tensor:
    """``a`` as a tensor of ``dtype``, sharing its memory where it can. The cached features are
    memory-mapped read-only, which torch wraps with a warning (its tensors are writable): only
    such an array is copied (the batches, fancy-indexed, are fresh arrays already)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def format_values(values: dict, digits: int = 4) -> str:
    """``name value`` pairs for a log line: counts as integers, ``seconds`` to a tenth, other
    numbers to ``digits`` decimals (it printed ``n_views 64.000`` and ``seconds 3.4000``)."""

    def shown(key: str, value) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            return str(value)
        if isinstance(value, (int, np.integer)):
            return str(int(value))
        return f"{value:.1f}" if key == "seconds" else f"{value:.{digits}f}"

    return " ".join(f"{k} {shown(k, v)}" for k, v in values.items())


def detection_loss(
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor], boxes: list[np.ndarray], cfg: HeadsConfig
) -> torch.Tensor:
    """CenterNet's focal loss on the centre map; L1 on size and offset and GIoU of the box read,
    at the cells around each centre (:func:`_targets`), so that a peak one cell off still reads
    the box."""
    centre, size, offset = out
    t = {k: v.to(centre.device) for k, v in _targets(boxes, centre.shape[-1], cfg.size_spread).items()}
    loss = _focal(centre, t["heat"])
    at = t["cells"]
    if at.any():
        n, on = at.sum(), at[:, None].expand_as(size)
        loss = loss + cfg.size_weight * F.l1_loss(size[on], t["size"][on], reduction="sum") / n
        loss = loss + cfg.offset_weight * F.l1_loss(offset[on], t["offset"][on], reduction="sum") / n
        if cfg.giou_weight:
            read = _decoded(size, offset).permute(0, 2, 3, 1)[at]
            loss = loss + cfg.giou_weight * (1 - _giou(read, t["box"].permute(0, 2, 3, 1)[at])).sum() / n
    return loss


def distillation_loss(
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """How far a detector's outputs are from a teacher's on the same views: the binary KL
    divergence of the centre probabilities, summed over cells (per view), and L1 on size and
    offset weighted by the teacher's centre probability (where it reads boxes)."""
    centre, size, offset = out
    t_centre, t_size, t_offset = teacher
    q = torch.sigmoid(t_centre)
    kl = F.binary_cross_entropy_with_logits(centre, q, reduction="none") - F.binary_cross_entropy_with_logits(
        t_centre, q, reduction="none"
    )
    weight = q[:, None]
    boxes = (weight * ((size - t_size).abs() + (offset - t_offset).abs())).sum() / weight.sum().clamp_min(1.0)
    return kl.sum() / len(centre) + boxes


def _shifted(
    maps: tuple[np.ndarray, np.ndarray, np.ndarray], boxes: list[np.ndarray], cells: int, rng
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], list[np.ndarray]]:
    """Each view moved by a random whole number of cells of the network's last map (at most
    ``cells`` each way; 32 px), its stride-8, -16 and -32 maps and its boxes alike; what moves in
    from outside is zero, what moves out is lost (and so are boxes left under 2 px wide).

    A convolutional network's features move with the image in steps of its stride, so this is
    a new view of the image at a new place, the augmentation a feature cache otherwise lacks."""
    s8, s16, s32 = (m.copy() for m in maps)
    size = s32.shape[-1] * 32
    moved = []
    for i, view in enumerate(boxes):
        dx, dy = (int(d) for d in rng.integers(-cells, cells + 1, size=2))
        if dx or dy:
            for m, scale in ((s8, 4), (s16, 2), (s32, 1)):
                m[i] = _translate(m[i], dy * scale, dx * scale)
            view = np.clip(np.asarray(view, np.float64) + 32.0 * np.array([dx, dy, dx, dy]), 0, size)
            view = view[(view[:, 2] - view[:, 0] >= 2) & (view[:, 3] - view[:, 1] >= 2)]
        moved.append(view)
    return (s8, s16, s32), moved


def _translate(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """(C, H, W) ``a`` moved ``dy`` rows down and ``dx`` columns right, zero where nothing moved in."""
    out = np.zeros_like(a)
    h, w = a.shape[-2:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = a[
        :, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


@torch.no_grad()
def detector_outputs(
    detector: DetectionHead | DetectorEnsemble, data: FeatureSet, index: np.ndarray, batch: int = 64
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    detector.eval()
    outs = []
    for start in range(0, len(index), batch):
        idx = index[start : start + batch]
        c, s, o = detector(
            as_tensor(data.stride8[idx]), as_tensor(data.stride16[idx]), as_tensor(data.features[idx])
        )
        outs += list(zip(c.numpy(), s.numpy(), o.numpy(), strict=True))
    return outs


def detection_metrics(
    detector: DetectionHead | DetectorEnsemble,
    val: FeatureSet,
    min_score: float = 0.01,
    nms_iou: float = 0.3,
    max_boxes: int = 5,
    outputs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
) -> dict[str, float]:
    """AP50 and the top-box hit rate over the validation views with boxes (model pixels), the
    boxes read as the predictor reads them (peaks, non-maximum suppression, at most ``max_boxes``).
    ``outputs``: the detector's outputs on those views, when already computed."""
    index = np.flatnonzero([len(b) > 0 for b in val.boxes])
    outputs = outputs if outputs is not None else detector_outputs(detector, val, index)
    return box_metrics(outputs, [val.boxes[i] for i in index], min_score, nms_iou, max_boxes)


def box_metrics(
    outputs: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    truths: list[np.ndarray],
    min_score: float = 0.01,
    nms_iou: float = 0.3,
    max_boxes: int = 5,
) -> dict[str, float]:
    """``val_ap50`` and ``val_hit`` of detector outputs (centre, size, offset per view) against the
    views' true boxes (model pixels), the boxes read as the predictor reads them."""
    predicted = []
    for c, s, o in outputs:
        boxes, scores = decode_detections(c, s, o, STRIDE, min_score)
        found = [DetectedBox(*b, sc) for b, sc in zip(boxes.tolist(), scores.tolist(), strict=True)]
        predicted.append(nms(found, nms_iou)[:max_boxes])
    listed = [np.asarray(t).tolist() for t in truths]
    return {
        "val_ap50": average_precision_boxes(predicted, listed, iou_thr=0.5),
        "val_hit": hit_rate(predicted, listed, iou_thr=0.1).hit_rate_any,
    }


def finite_weights(model: torch.nn.Module) -> bool:
    """Whether every floating-point weight and buffer of ``model`` is finite."""
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def refuse_diverged(finite: bool, what: str, epoch: int, fix: str) -> None:
    """Stop (:class:`ConfigError`) when training has diverged (``finite`` False: weights or outputs
    became NaN or infinite): a bundle made of it would draw no boxes or give no probabilities."""
    if not finite:
        raise ConfigError(
            f"the {what} diverged in epoch {epoch} (its weights or outputs became NaN or infinite): {fix}"
        )


def train_detector(
    train: FeatureSet,
    val: FeatureSet,
    cfg: HeadsConfig,
    log=print,
    teacher: DetectionHead | DetectorEnsemble | None = None,
) -> tuple[DetectionHead, list[dict[str, Any]]]:
    """The detection head trained on ``train``'s views with maps; the epoch with the best AP50 on
    ``val``'s is kept. Returns it and each epoch's training loss and validation figures.
    ``teacher``: its outputs on each (shifted) view are matched too, with weight ``cfg.distill``."""
    torch.manual_seed(cfg.seed)
    c8, c16, c32 = train.stride8.shape[1], train.stride16.shape[1], train.features.shape[1]
    detector = DetectionHead(c8, c16, c32, cfg.width)
    optimizer = torch.optim.AdamW(detector.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(train.boxes)
    steps = math.ceil(n / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs * steps)
    gen = np.random.default_rng(cfg.seed)
    average = WeightAverage(detector, cfg.ema_decay) if cfg.ema_decay > 0 else None
    kept = average.model if average else detector
    history, best, best_state = [], -1.0, None
    for epoch in range(1, cfg.epochs + 1):
        detector.train()
        t0, running = time.time(), 0.0
        order = gen.permutation(n)
        for step in range(steps):
            idx = np.sort(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
            maps = tuple(
                np.asarray(m[idx], dtype=np.float32) for m in (train.stride8, train.stride16, train.features)
            )
            boxes = [train.boxes[i] for i in idx]
            if cfg.shift_cells:
                maps, boxes = _shifted(maps, boxes, cfg.shift_cells, gen)
            inputs = tuple(as_tensor(m) for m in maps)
            out = detector(*inputs)
            loss = detection_loss(out, boxes, cfg)
            if teacher is not None:
                with torch.no_grad():
                    taught = teacher(*inputs)
                loss = loss + cfg.distill * distillation_loss(out, taught)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if average:
                average.update(detector)
            running += loss.item()
        refuse_diverged(finite_weights(kept), "detector", epoch, "lower --giou or --distill")
        metrics = detection_metrics(kept, val)
        record = {
            "epoch": epoch,
            "train_loss": running / steps,
            **metrics,
            "seconds": round(time.time() - t0, 1),
        }
        history.append(record)
        log(f"detector epoch {epoch}: " + format_values({k: v for k, v in record.items() if k != "epoch"}))
        if metrics["val_ap50"] > best:
            best = metrics["val_ap50"]
            best_state = {k: v.clone() for k, v in kept.state_dict().items()}
    detector.load_state_dict(best_state)
    return detector.eval(), history


def _train_orientation(
    train: FeatureSet, val: FeatureSet, cfg: HeadsConfig, log
) -> tuple[OrientationHead, list]:
    torch.manual_seed(cfg.seed)
    head = OrientationHead(train.grid_features.shape[1], train.grid_features.shape[-1])
    x, y = as_tensor(train.grid_features), as_tensor(train.orientation, np.int64)
    vx, vy = as_tensor(val.grid_features), as_tensor(val.orientation, np.int64)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=1e-3)
    steps = math.ceil(len(y) / 64)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.orientation_epochs * steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    for epoch in range(1, cfg.orientation_epochs + 1):
        head.train()
        order = torch.randperm(len(y), generator=gen)
        running = 0.0
        for step in range(steps):
            idx = order[step * 64 : (step + 1) * 64]
            loss = F.cross_entropy(head.forward_grid(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item()
        head.eval()
        with torch.no_grad():
            accuracy = float((head.forward_grid(vx).argmax(1) == vy).float().mean())
        history.append({"epoch": epoch, "train_loss": running / steps, "val_accuracy": accuracy})
        log(f"orientation epoch {epoch}: train_loss {running / steps:.4f} val_accuracy {accuracy:.4f}")
    return head.eval(), history


def train_heads(train: FeatureSet, val: FeatureSet, cfg: HeadsConfig, log=print) -> TrainedHeads:
    """Train both heads; each detector's epoch with the best validation AP50 is kept (with
    ``cfg.members`` > 1, one detector per seed, read as a :class:`DetectorEnsemble`)."""
    train_views, val_views = train.with_maps(), val.with_maps(upright_only=True)
    detectors, det_history = [], []
    for member in range(cfg.members):
        seeded = dataclasses.replace(cfg, seed=cfg.seed + member)
        detector, history = train_detector(train_views, val_views, seeded, log)
        detectors.append(detector)
        det_history += [{**h, "member": member} for h in history] if cfg.members > 1 else history
    detector = DetectorEnsemble(detectors).eval() if cfg.members > 1 else detectors[0]
    if cfg.members > 1:
        metrics = detection_metrics(detector, val_views)
        log("detectors averaged: " + format_values(metrics))
        det_history.append({"ensemble": cfg.members, **metrics})
        if cfg.distill > 0:
            student_cfg = dataclasses.replace(cfg, seed=cfg.seed + cfg.members)
            detector, history = train_detector(train_views, val_views, student_cfg, log, teacher=detector)
            det_history += [{**h, "member": "distilled"} for h in history]
    orientation, orient_history = _train_orientation(train, val, cfg, log)
    return TrainedHeads(detector, orientation, det_history + orient_history)
