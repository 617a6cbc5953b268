"""Detector training settings compared on the cached features, over several seeds (issue 14).

    python scripts/detector_variants.py [--seeds 0 1 2] [--epochs 8] [--variants NAME ...]

Trains only the detection head (``fracsight.detection.train``, as `fracsight detector train`
does) for each variant and seed, on the features `fracsight detector train` cached in
``runs/.cache`` (run that once first), and prints the validation box AP50 and top-box hit rate
of every epoch (the upright fractured `val` images with boxes, model pixels, every candidate
box), then per variant the mean over the seeds of the last half of the epochs: with 67
validation images the best single epoch is mostly luck. Used in docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from fracsight.bundle import load_bundle_spec
from fracsight.data import load_dataset
from fracsight.data.sample import Dataset
from fracsight.detection.features import FeatureSet
from fracsight.detection.prepare import prepare_features
from fracsight.detection.train import HeadsConfig, train_detector
from fracsight.inference.store import resolve_bundle

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "v3's (none of the three)": {"giou_weight": 0.0, "size_spread": 0, "shift_cells": 0},
    "cells around the centre": {"giou_weight": 0.0, "size_spread": 1, "shift_cells": 0},
    "shifted views": {"giou_weight": 0.0, "size_spread": 0, "shift_cells": 2},
    "cells around + shifted": {"giou_weight": 0.0, "size_spread": 1, "shift_cells": 2},
    "all three (GIoU 2)": {"giou_weight": 2.0, "size_spread": 1, "shift_cells": 2},
    # explored after v4 was chosen (validation only): each changes one setting of v4's recipe
    "v4, 12 epochs": {"epochs": 12},
    "v4, cells within 2": {"size_spread": 2},
    "v4, shifts up to 3": {"shift_cells": 3},
    "v4, GIoU 4": {"giou_weight": 4.0},
    "v4, width 64": {"width": 64},
    "v4, weight average 0.99": {"ema_decay": 0.99},
    "v4, weight average 0.995": {"ema_decay": 0.995},
}
FIRST = list(VARIANTS)[:5]  # the comparison of docs/training.md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--base", default="fracatlas-lite0-384-v2")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fracatlas")
    parser.add_argument("--variants", nargs="*", default=FIRST, choices=list(VARIANTS))
    args = parser.parse_args()
    _, _, _, train, val = cached_views(args.base, args.data)
    summary = [compare(name, train, val, VARIANTS[name], args.seeds, args.epochs) for name in args.variants]
    print("\n".join(summary))


def cached_views(base_name: str, data: Path) -> tuple[Path, Dataset, int, FeatureSet, FeatureSet]:
    """The base bundle's folder, the data set, its split seed, and the detector's training and
    (upright) validation views from the feature cache in runs/.cache (made on first use)."""
    base_dir = resolve_bundle(base_name)
    base = load_bundle_spec(base_dir)
    dataset = load_dataset(data, base.training.get("layout", "auto"))
    seed = int(base.training.get("config", {}).get("seed", 0))
    train, val = prepare_features(base_dir, dataset, ROOT / "runs" / ".cache", seed=seed, show_progress=False)
    return base_dir, dataset, seed, train.with_maps(), val.with_maps(upright_only=True)


def compare(
    name: str, train: FeatureSet, val: FeatureSet, changes: dict, seeds: list[int], epochs: int
) -> str:
    """Train the detector with ``changes`` to v4's recipe once per seed, print each run's curve, and
    return the line with the means over the seeds of the last half of the epochs."""
    ap, hits = [], []
    for s in seeds:
        cfg = dataclasses.replace(HeadsConfig(epochs=epochs, seed=s), **changes)
        late = slice(cfg.epochs // 2, None)
        _, history = train_detector(train, val, cfg, log=lambda line: None)
        curve = ", ".join(f"{h['val_ap50']:.3f}/{h['val_hit']:.3f}" for h in history)
        print(f"{name}, seed {s}: AP50/hit by epoch {curve}", flush=True)
        ap.append(np.mean([h["val_ap50"] for h in history[late]]))
        hits.append(np.mean([h["val_hit"] for h in history[late]]))
    return (
        f"{name}: last {len(range(cfg.epochs)[late])} epochs, mean over seeds {seeds}: "
        f"val AP50 {np.mean(ap):.3f} ({', '.join(f'{a:.3f}' for a in ap)}), "
        f"top box hits {np.mean(hits):.3f}"
    )


if __name__ == "__main__":
    main()
