"""Batch augmentation on letterboxed tensors; the localization mask moves with the image."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fracsight.training.config import AugmentConfig

__all__ = ["augment_batch"]


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` (B,1,S,S) in [0,1], ``masks`` (B,1,S,S) in [0,1] -> augmented copies.

    Random flip, rotation, scale and shift (one affine warp, bilinear, zero
    padding like the letterbox border), then gamma and contrast on the image only.
    """
    b = images.shape[0]
    angle = _uniform(b, -cfg.rotate_deg, cfg.rotate_deg, gen) * math.pi / 180
    scale = _uniform(b, *cfg.scale, gen)
    flip = torch.where(torch.rand(b, generator=gen) < cfg.hflip, -1.0, 1.0)
    tx = _uniform(b, -cfg.translate, cfg.translate, gen) * 2
    ty = _uniform(b, -cfg.translate, cfg.translate, gen) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    ).to(images.dtype)
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = _uniform(b, *cfg.gamma, gen).view(b, 1, 1, 1).to(images.device)
    contrast = _uniform(b, *cfg.contrast, gen).view(b, 1, 1, 1).to(images.device)
    images = images.clamp(0, 1) ** gamma
    mean = images.mean(dim=(2, 3), keepdim=True)
    images = ((images - mean) * contrast + mean).clamp(0, 1)
    return images, masks
