"""Training the grafted heads on cached frozen features (minutes on a laptop CPU)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fracsight.detection.features import FeatureSet
from fracsight.detection.heads import STRIDE, DetectionHead, OrientationHead
from fracsight.explain.boxes import DetectedBox, nms
from fracsight.explain.detections import decode_detections
from fracsight.explain.localization import average_precision_boxes, hit_rate

__all__ = ["HeadsConfig", "TrainedHeads", "box_metrics", "train_heads"]


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
    seed: int = 0


@dataclass
class TrainedHeads:
    detector: DetectionHead
    orientation: OrientationHead
    history: list[dict[str, Any]] = field(default_factory=list)


def _targets(
    boxes: list[np.ndarray], grid: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre heatmaps (B, g, g), size and offset targets (B, 2, g, g) and where they apply (B, g, g)."""
    b = len(boxes)
    heat = np.zeros((b, grid, grid), np.float32)
    size = np.zeros((b, 2, grid, grid), np.float32)
    offset = np.zeros((b, 2, grid, grid), np.float32)
    at = np.zeros((b, grid, grid), bool)
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
            size[i, :, row, col] = (math.log(w), math.log(h))
            offset[i, :, row, col] = (cx - col, cy - row)
            at[i, row, col] = True
    return torch.from_numpy(heat), torch.from_numpy(size), torch.from_numpy(offset), torch.from_numpy(at)


def _focal(logits: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, per positive cell."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = heat >= 1.0
    pos_loss = -((1 - p) ** 2 * torch.log(p))[pos].sum()
    neg_loss = -((1 - heat) ** 4 * p**2 * torch.log(1 - p))[~pos].sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


def _as_float(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def detection_loss(
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor], boxes: list[np.ndarray], cfg: HeadsConfig
) -> torch.Tensor:
    centre, size, offset = out
    heat, size_t, offset_t, at = _targets(boxes, centre.shape[-1])
    loss = _focal(centre, heat)
    if at.any():
        mask = at[:, None].expand_as(size)
        n = at.sum()
        loss = loss + cfg.size_weight * F.l1_loss(size[mask], size_t[mask], reduction="sum") / n
        loss = loss + cfg.offset_weight * F.l1_loss(offset[mask], offset_t[mask], reduction="sum") / n
    return loss


@torch.no_grad()
def detector_outputs(
    detector: DetectionHead, data: FeatureSet, index: np.ndarray, batch: int = 64
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    detector.eval()
    outs = []
    for start in range(0, len(index), batch):
        idx = index[start : start + batch]
        c, s, o = detector(
            _as_float(data.stride8[idx]), _as_float(data.stride16[idx]), _as_float(data.features[idx])
        )
        outs += list(zip(c.numpy(), s.numpy(), o.numpy(), strict=True))
    return outs


def detection_metrics(
    detector: DetectionHead,
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


def _train_detector(train: FeatureSet, val: FeatureSet, cfg: HeadsConfig, log) -> tuple[DetectionHead, list]:
    torch.manual_seed(cfg.seed)
    c8, c16, c32 = train.stride8.shape[1], train.stride16.shape[1], train.features.shape[1]
    detector = DetectionHead(c8, c16, c32, cfg.width)
    optimizer = torch.optim.AdamW(detector.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(train.boxes)
    steps = math.ceil(n / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs * steps)
    gen = np.random.default_rng(cfg.seed)
    history, best, best_state = [], -1.0, None
    for epoch in range(1, cfg.epochs + 1):
        detector.train()
        t0, running = time.time(), 0.0
        order = gen.permutation(n)
        for step in range(steps):
            idx = np.sort(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
            out = detector(
                _as_float(train.stride8[idx]), _as_float(train.stride16[idx]), _as_float(train.features[idx])
            )
            loss = detection_loss(out, [train.boxes[i] for i in idx], cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item()
        metrics = detection_metrics(detector, val)
        record = {
            "epoch": epoch,
            "train_loss": running / steps,
            **metrics,
            "seconds": round(time.time() - t0, 1),
        }
        history.append(record)
        log(f"detector epoch {epoch}: " + " ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch"))
        if metrics["val_ap50"] > best:
            best = metrics["val_ap50"]
            best_state = {k: v.clone() for k, v in detector.state_dict().items()}
    detector.load_state_dict(best_state)
    return detector.eval(), history


def _train_orientation(
    train: FeatureSet, val: FeatureSet, cfg: HeadsConfig, log
) -> tuple[OrientationHead, list]:
    torch.manual_seed(cfg.seed)
    head = OrientationHead(train.grid_features.shape[1], train.grid_features.shape[-1])
    x, y = _as_float(train.grid_features), torch.from_numpy(np.asarray(train.orientation, dtype=np.int64))
    vx, vy = _as_float(val.grid_features), torch.from_numpy(np.asarray(val.orientation, dtype=np.int64))
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
    """Train both heads; the detector's epoch with the best validation AP50 is kept."""
    detector, det_history = _train_detector(train.with_maps(), val.with_maps(upright_only=True), cfg, log)
    orientation, orient_history = _train_orientation(train, val, cfg, log)
    return TrainedHeads(detector, orientation, det_history + orient_history)
