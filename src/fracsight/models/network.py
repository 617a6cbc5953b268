"""FractureNet: a backbone plus task heads, taking a letterboxed grayscale image in [0, 1].

Outputs (a dict in eager mode; named ONNX outputs after export):
- ``fracture``: (B,) logit, the mean of the global classifier logit and the
  max of the localization map logits (so localization supervision shapes the
  decision and the map stays meaningful);
- ``mask``: (B, h, w) localization logits from a 1x1 conv over the last feature map;
- ``cam``: (B, h, w) class activation map of the global classifier;
- ``embedding``: (B, C) pooled features (used for out-of-distribution checks);
- ``region`` (B, R) and ``class`` (B, N) when those heads exist;
- ``class_cam``: (B, N, h, w) the class head applied at every cell (its class activation
  maps; a per-cell softmax over N says where each class is seen), with the class head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["FractureNet", "HeadConfig", "SmallCNN"]


@dataclass(frozen=True)
class HeadConfig:
    regions: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()


class SmallCNN(nn.Module):
    """A plain 5-stage CNN (stride 32), the from-scratch baseline people compare against."""

    def __init__(self, in_chans: int = 1, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        chans = in_chans
        for i in range(5):
            out = width * 2**i
            layers += [
                nn.Conv2d(chans, out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            chans = out
        self.body = nn.Sequential(*layers)
        self.num_features = chans

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FractureNet(nn.Module):
    def __init__(self, backbone: nn.Module, heads: HeadConfig, norm_mean: float, norm_std: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads_config = heads
        c = int(backbone.num_features)
        self.num_features = c
        self.register_buffer("norm_mean", torch.tensor(float(norm_mean)), persistent=False)
        self.register_buffer("norm_std", torch.tensor(float(norm_std)), persistent=False)
        self.fracture_head = nn.Linear(c, 1)
        self.mask_head = nn.Conv2d(c, 1, 1)
        self.region_head = nn.Linear(c, len(heads.regions)) if heads.regions else None
        self.class_head = nn.Linear(c, len(heads.classes)) if heads.classes else None

    # The trunk is split so that a frozen prefix can be run once and cached
    # (see fracsight.training.cache). Only backbones with ``blocks`` (the
    # EfficientNet / MobileNet family in timm) can be split inside the trunk.
    def split_points(self) -> int:
        blocks = getattr(self.backbone, "blocks", None)
        return len(blocks) if blocks is not None else 0

    def forward_prefix(self, x: torch.Tensor, split: int) -> torch.Tensor:
        x = (x - self.norm_mean) / self.norm_std
        if split == 0:
            return x
        b = self.backbone
        x = b.bn1(b.conv_stem(x))
        for stage in b.blocks[:split]:
            x = stage(x)
        return x

    def forward_suffix(self, x: torch.Tensor, split: int) -> torch.Tensor:
        b = self.backbone
        if split == 0:
            return b.forward_features(x)
        for stage in b.blocks[split:]:
            x = stage(x)
        return b.bn2(b.conv_head(x))

    def prefix_modules(self, split: int) -> list[nn.Module]:
        if split == 0:
            return []
        b = self.backbone
        return [b.conv_stem, b.bn1, *b.blocks[:split]]

    def forward_heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = features.mean(dim=(2, 3))
        cls_logit = self.fracture_head(pooled).squeeze(1)
        mask = self.mask_head(features).squeeze(1)
        # the classifier applied at every cell, as a 1x1 convolution: ONNX Runtime runs that about
        # 0.7 ms faster per 384 px image than the equivalent Einsum
        head = self.fracture_head
        cam = nn.functional.conv2d(features, head.weight[:, :, None, None], head.bias).squeeze(1)
        out = {
            "fracture": 0.5 * (cls_logit + mask.flatten(1).amax(dim=1)),
            "fracture_global": cls_logit,
            "mask": mask,
            "cam": cam,
            "embedding": pooled,
        }
        if self.region_head is not None:
            out["region"] = self.region_head(pooled)
        if self.class_head is not None:
            out["class"] = self.class_head(pooled)
            w = self.class_head.weight[:, :, None, None]
            out["class_cam"] = nn.functional.conv2d(features, w, self.class_head.bias)
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x``: (B, 1, S, S) letterboxed grayscale in [0, 1]."""
        return self.forward_heads(self.forward_suffix(self.forward_prefix(x, 0), 0))
