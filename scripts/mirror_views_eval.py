"""Validation boxes of a detector read in several views, and as means of views (issue 14).

The detector bundles chose their epoch (and v5 its members) on the upright validation images,
so their upright validation box AP50 is the best of several tries on those very images. The
same radiographs mirrored, turned by 180 degrees, or both, are read without that choice; the
mean of several views' maps is test-time augmentation (the network's time once per view).

    python scripts/mirror_views_eval.py fracatlas-lite0-384-v4 fracatlas-lite0-384-v5

The network is v2's, rebuilt in torch with the detector of each HEADS bundle
(``fracsight.detection.joint.load_joint``); box AP50 and top-box hits over the fractured
validation images with boxes, every candidate box counted (``detection.train.box_metrics``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fracsight.data import load_dataset
from fracsight.data.splits import train_val_samples
from fracsight.detection.joint import _data, _views, load_joint
from fracsight.detection.train import box_metrics
from fracsight.inference.store import resolve_bundle

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
SINGLE = ("upright", "mirrored", "turned 180", "mirrored, turned 180")
# each figure: the mean of these views (one view: that view); the last two leave out the upright
# view the detector was chosen on
VIEWS = {
    **{name: (name,) for name in SINGLE},
    "upright + mirrored": ("upright", "mirrored"),
    "mirrored + turned 180": ("mirrored", "turned 180"),
    "the three not upright": SINGLE[1:],
}


def unmirror(centre: torch.Tensor, size: torch.Tensor, offset: torch.Tensor) -> Outputs:
    """A mirrored image's detector maps, as the upright image's: columns reversed, and the x
    offset within a cell measured from the other side (x = (col + dx) * stride)."""
    offset = torch.flip(offset, [-1]).clone()
    offset[:, 0] = 1 - offset[:, 0]
    return torch.flip(centre, [-1]), torch.flip(size, [-1]), offset


def unturn(centre: torch.Tensor, size: torch.Tensor, offset: torch.Tensor) -> Outputs:
    """An image turned by 180 degrees: its maps as the upright image's (rows and columns reversed,
    both offsets from the other side; width and height unchanged)."""
    return torch.flip(centre, [-2, -1]), torch.flip(size, [-2, -1]), 1 - torch.flip(offset, [-2, -1])


def mean_of(*views: Outputs) -> Outputs:
    """The views' maps averaged: centre probabilities (returned as a logit), sizes and offsets."""
    p = torch.stack([torch.sigmoid(v[0]) for v in views]).mean(0)
    size = torch.stack([v[1] for v in views]).mean(0)
    return torch.log(p) - torch.log1p(-p), size, torch.stack([v[2] for v in views]).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("heads", nargs="+", help="bundles with a detector grafted onto v2's network")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fracatlas"))
    args = parser.parse_args()
    dataset = load_dataset(args.data, "auto")
    for heads in args.heads:
        model, cfg = load_joint(resolve_bundle("fracatlas-lite0-384-v2"), resolve_bundle(heads))
        model.eval()
        _, val = train_val_samples(dataset, cfg.seed)
        data = _data(val, dataset, cfg.input_size, Path("runs/.cache"))
        boxed = [i for i in range(len(val)) if data.labels["fracture"][i] == 1 and len(data.boxes[i])]
        views: dict[str, list] = {name: [] for name in VIEWS}
        truths = []
        with torch.no_grad():
            for start in range(0, len(boxed), 16):
                idx = np.array(boxed[start : start + 16])
                x, _, boxes = _views(data, idx, np.zeros(len(idx), int), np.zeros(len(idx), bool))
                read = {
                    "upright": model(x)[1],
                    "mirrored": unmirror(*model(torch.flip(x, [-1]))[1]),
                    "turned 180": unturn(*model(torch.flip(x, [-2, -1]))[1]),
                    "mirrored, turned 180": unmirror(*unturn(*model(torch.flip(x, [-2]))[1])),
                }
                for name, parts in VIEWS.items():
                    out = mean_of(*(read[part] for part in parts))
                    views[name] += [tuple(t[j].numpy() for t in out) for j in range(len(idx))]
                truths += boxes
        for name, outputs in views.items():
            m = box_metrics(outputs, truths)
            print(
                f"{heads} {name}: box AP50 {m['val_ap50']:.3f}, top box hits {m['val_hit']:.3f}",
                f"({len(truths)} images)",
            )


if __name__ == "__main__":
    main()
