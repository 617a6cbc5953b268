"""The grafted heads (torch): a fracture detector at stride 8 and an orientation classifier.

Detector: CenterNet-style. The stride-8 and stride-16 block outputs and the final feature
map are each projected to ``width`` channels, summed at stride 8 (nearest upsampling), and
passed through two depthwise-separable 3x3 convolutions; three 1x1 convolutions then give,
per cell, the logit that a fracture box is centred there, the box's log width and height
(in cells) and the centre's offset inside the cell.

Several detectors trained with different seeds can be read as one (:class:`DetectorEnsemble`):
their centre probabilities, sizes and offsets are averaged, which the grafted graph computes.

Orientation: the final feature map averaged over a 3 x 3 grid (so the head knows where
things are, which a global average would lose), a 1x1 projection, and a linear layer over
the four quarter turns.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["STRIDE", "DetectionHead", "DetectorEnsemble", "OrientationHead", "heads_from_tensors"]

STRIDE = 8
PRIOR = 0.01  # initial probability of a box centre per cell (focal-loss practice)


def _separable(width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(width, width, 3, padding=1, groups=width),
        nn.Conv2d(width, width, 1),
        nn.ReLU(inplace=True),
    )


class DetectionHead(nn.Module):
    def __init__(self, c8: int, c16: int, c32: int, width: int = 64) -> None:
        super().__init__()
        self.lateral8 = nn.Conv2d(c8, width, 1)
        self.lateral16 = nn.Conv2d(c16, width, 1)
        self.lateral32 = nn.Conv2d(c32, width, 1)
        self.tower = nn.Sequential(_separable(width), _separable(width))
        self.centre = nn.Conv2d(width, 1, 1)
        self.size = nn.Conv2d(width, 2, 1)
        self.offset = nn.Conv2d(width, 2, 1)
        nn.init.constant_(self.centre.bias, float(torch.logit(torch.tensor(PRIOR))))

    def forward(
        self, stride8: torch.Tensor, stride16: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.lateral8(stride8)
        x = x + F.interpolate(self.lateral16(stride16), scale_factor=2.0, mode="nearest")
        x = x + F.interpolate(self.lateral32(features), scale_factor=4.0, mode="nearest")
        x = self.tower(x)
        return self.centre(x).squeeze(1), self.size(x), torch.sigmoid(self.offset(x))


class DetectorEnsemble(nn.Module):
    """Detection heads of the same inputs read as one: the mean of their centre probabilities
    (returned as a logit, as one head's), sizes and offsets."""

    def __init__(self, members: list[DetectionHead]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(
        self, stride8: torch.Tensor, stride16: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outs = [m(stride8, stride16, features) for m in self.members]
        p = torch.stack([torch.sigmoid(o[0]) for o in outs]).mean(0).clamp(1e-6, 1 - 1e-6)
        size = torch.stack([o[1] for o in outs]).mean(0)
        offset = torch.stack([o[2] for o in outs]).mean(0)
        return torch.log(p) - torch.log1p(-p), size, offset


class OrientationHead(nn.Module):
    def __init__(self, channels: int, grid: int = 3, width: int = 32) -> None:
        super().__init__()
        self.grid = grid
        self.project = nn.Conv2d(channels, width, 1)
        self.dropout = nn.Dropout(0.2)
        self.classify = nn.Linear(width * grid * grid, 4)

    def forward_grid(self, grid_features: torch.Tensor) -> torch.Tensor:
        """Logits from features already averaged to ``grid`` x ``grid`` (training on a cache)."""
        x = F.relu(self.project(grid_features))
        return self.classify(self.dropout(x.flatten(1)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.forward_grid(F.adaptive_avg_pool2d(features, self.grid))


def _detection_head(tensors: Mapping[str, np.ndarray], prefix: str) -> DetectionHead:
    from fracsight.models.unfold import load_named_tensors

    width, c8 = tensors[f"{prefix}lateral8.weight"].shape[:2]
    c16, c32 = (tensors[f"{prefix}lateral{s}.weight"].shape[1] for s in (16, 32))
    head = DetectionHead(c8, c16, c32, width)
    load_named_tensors(head, tensors, prefix)
    return head


def heads_from_tensors(
    tensors: Mapping[str, np.ndarray], prefix: str = ""
) -> tuple[DetectionHead | DetectorEnsemble, OrientationHead]:
    """Both heads, shaped and filled from named tensors: ``{prefix}detector.*`` and
    ``{prefix}orientation.*`` (a grafted graph's initializers with ``prefix="heads/"``, or a joint
    run's checkpoint)."""
    from fracsight.models.unfold import load_named_tensors

    stem = f"{prefix}detector.members."
    members = sorted({int(k[len(stem) :].split(".")[0]) for k in tensors if k.startswith(stem)})
    detector: DetectionHead | DetectorEnsemble
    if members:
        detector = DetectorEnsemble([_detection_head(tensors, f"{stem}{i}.") for i in members])
    else:
        detector = _detection_head(tensors, f"{prefix}detector.")
    orientation_width, channels = tensors[f"{prefix}orientation.project.weight"].shape[:2]
    orientation = OrientationHead(channels, width=orientation_width)
    load_named_tensors(orientation, tensors, f"{prefix}orientation.")
    return detector.eval(), orientation.eval()
