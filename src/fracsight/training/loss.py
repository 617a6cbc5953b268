"""Multi-task loss: fracture (pos-weighted BCE), localization map, body region, N-class."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fracsight.training.config import TrainConfig

__all__ = ["Targets", "multitask_loss"]


class Targets:
    """Per-batch targets; a ``*_valid`` mask marks which samples carry each label."""

    def __init__(
        self,
        fracture: torch.Tensor,
        fracture_valid: torch.Tensor,
        mask: torch.Tensor,
        mask_valid: torch.Tensor,
        region: torch.Tensor | None = None,
        region_valid: torch.Tensor | None = None,
        klass: torch.Tensor | None = None,
    ) -> None:
        self.fracture, self.fracture_valid = fracture, fracture_valid
        self.mask, self.mask_valid = mask, mask_valid
        self.region, self.region_valid = region, region_valid
        self.klass = klass

    def to(self, device: torch.device) -> Targets:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        out = Targets.__new__(Targets)
        out.__dict__.update(moved)
        return out


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    w = valid.float()
    return (values * w).sum() / w.sum().clamp(min=1.0)


def multitask_loss(
    out: dict[str, torch.Tensor], t: Targets, cfg: TrainConfig, pos_weight: float
) -> torch.Tensor:
    pw = torch.tensor(pos_weight, device=out["fracture"].device)
    total = out["fracture"].new_zeros(())
    if t.fracture_valid.any():
        for key in ("fracture", "fracture_global"):
            bce = F.binary_cross_entropy_with_logits(
                out[key].float(), t.fracture, pos_weight=pw, reduction="none"
            )
            total = total + _masked_mean(bce, t.fracture_valid)
    if cfg.mask_weight > 0 and t.mask_valid.any():
        cell_pw = torch.tensor(cfg.mask_pos_weight, device=pw.device)
        bce = F.binary_cross_entropy_with_logits(
            out["mask"].float(), t.mask, pos_weight=cell_pw, reduction="none"
        )
        total = total + cfg.mask_weight * _masked_mean(bce.mean(dim=(1, 2)), t.mask_valid)
    if "region" in out and t.region is not None and t.region_valid is not None and t.region_valid.any():
        bce = F.binary_cross_entropy_with_logits(out["region"].float(), t.region, reduction="none").mean(1)
        total = total + cfg.region_weight * _masked_mean(bce, t.region_valid)
    if "class" in out and t.klass is not None and (t.klass >= 0).any():  # -1: no class for this image
        total = total + cfg.class_weight * F.cross_entropy(out["class"].float(), t.klass, ignore_index=-1)
    return total
