"""Validation boxes of a detector read upright, mirrored, and as the mean of both (issue 14).

The detector bundles chose their epoch (and v5 its members) on the upright validation images,
so their upright validation box AP50 is the best of several tries on those very images. The
mirrored view is the same radiographs read once more, without that choice; the mean of both
views is test-time augmentation (twice the network's time per image).

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


def unmirror(centre: torch.Tensor, size: torch.Tensor, offset: torch.Tensor) -> Outputs:
    """A mirrored image's detector maps, as the upright image's: columns reversed, and the x
    offset within a cell measured from the other side (x = (col + dx) * stride)."""
    offset = torch.flip(offset, [-1]).clone()
    offset[:, 0] = 1 - offset[:, 0]
    return torch.flip(centre, [-1]), torch.flip(size, [-1]), offset


def mean_of(a: Outputs, b: Outputs) -> Outputs:
    p = (torch.sigmoid(a[0]) + torch.sigmoid(b[0])) / 2
    return torch.log(p) - torch.log1p(-p), (a[1] + b[1]) / 2, (a[2] + b[2]) / 2


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
        views: dict[str, list] = {"upright": [], "mirrored": [], "mean of both": []}
        truths = []
        with torch.no_grad():
            for start in range(0, len(boxed), 16):
                idx = np.array(boxed[start : start + 16])
                x, _, boxes = _views(data, idx, np.zeros(len(idx), int), np.zeros(len(idx), bool))
                upright = model(x)[1]
                mirrored = unmirror(*model(torch.flip(x, [-1]))[1])
                for name, out in (("upright", upright), ("mirrored", mirrored)):
                    views[name] += [tuple(t[j].numpy() for t in out) for j in range(len(idx))]
                both = mean_of(upright, mirrored)
                views["mean of both"] += [tuple(t[j].numpy() for t in both) for j in range(len(idx))]
                truths += boxes
        for name, outputs in views.items():
            m = box_metrics(outputs, truths)
            print(
                f"{heads} {name}: box AP50 {m['val_ap50']:.3f}, top box hits {m['val_hit']:.3f}",
                f"({len(truths)} images)",
            )


if __name__ == "__main__":
    main()
