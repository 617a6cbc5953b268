"""Detectors trained with different seeds, alone and averaged, on the cached features (issue 14).

    python scripts/detector_ensembles.py [--seeds 0 1 2] [--last-epoch]

Trains v4's detector recipe once per seed (as `fracsight detector train --members N` does: each
keeps its epoch with the best validation AP50, or with ``--last-epoch`` its last epoch, so that
no choice is made on validation), then prints the validation box AP50 and top-box hit rate of
each detector and of every combination of two or more, their outputs averaged as
:class:`~fracsight.detection.heads.DetectorEnsemble` does (upright fractured `val` images with
boxes, model pixels, every candidate box). Needs the features `fracsight detector train` caches
in runs/.cache. Used in docs/training.md.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
from detector_variants import cached_views  # scripts/, beside this one

import fracsight.detection.train as heads_training
from fracsight.detection.heads import DetectorEnsemble

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--last-epoch", action="store_true", help="keep each detector's last epoch")
    parser.add_argument("--base", default="fracatlas-lite0-384-v2")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fracatlas")
    args = parser.parse_args()
    _, _, _, train, val = cached_views(args.base, args.data)
    choose = heads_training.detection_metrics
    if args.last_epoch:  # every epoch scores above the one before, so the last one is kept
        ticks = itertools.count()
        heads_training.detection_metrics = lambda *a, **k: {"val_ap50": next(ticks), "val_hit": 0.0}
    detectors = {}
    for s in args.seeds:
        cfg = heads_training.HeadsConfig(epochs=args.epochs, seed=s)
        detectors[s], _ = heads_training.train_detector(train, val, cfg, log=lambda line: None)
    heads_training.detection_metrics = choose
    kept = "last epoch" if args.last_epoch else "best validation epoch"
    for size in range(1, len(args.seeds) + 1):
        for combo in itertools.combinations(args.seeds, size):
            detector = detectors[combo[0]] if size == 1 else DetectorEnsemble([detectors[s] for s in combo])
            with torch.no_grad():
                m = choose(detector.eval(), val)
            what = f"seed {combo[0]}" if size == 1 else f"seeds {', '.join(map(str, combo))} averaged"
            print(f"{what} ({kept}): val AP50 {m['val_ap50']:.3f}, top box hits {m['val_hit']:.3f}")


if __name__ == "__main__":
    main()
