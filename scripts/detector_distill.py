"""Three detectors averaged, distilled into one (issue 14): the ensemble's boxes at one detector's cost?

    python scripts/detector_distill.py [--teachers 0 1 2] [--students 3 4 5] [--weight 1.0]

Trains v4's detector recipe with the teacher seeds (each keeping its best validation epoch, as
`fracsight detector train --members 3` does) and reads them averaged; then, per student seed, one
detector trained on the same views with the same recipe plus the teachers' averaged outputs to
match (``HeadsConfig.distill``, the weight), as `--members 3 --distill W` does. Prints each run's
validation box AP50 and top-box hits by epoch (upright fractured `val` views, model pixels, every
candidate box), its best epoch (what the bundle would keep) and the mean of its last half, beside
the same for students trained without the teachers. Needs the features `fracsight detector
train` caches in runs/.cache. Used in docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from detector_variants import cached_views  # scripts/, beside this one

from fracsight.detection.heads import DetectorEnsemble
from fracsight.detection.train import HeadsConfig, detection_metrics, train_detector

ROOT = Path(__file__).resolve().parents[1]


def _summary(name: str, history: list[dict]) -> str:
    best = max(history, key=lambda h: h["val_ap50"])
    late = history[len(history) // 2 :]
    curve = ", ".join(f"{h['val_ap50']:.3f}/{h['val_hit']:.3f}" for h in history)
    print(f"{name}: AP50/hit by epoch {curve}", flush=True)
    return (
        f"{name}: best epoch {best['epoch']} AP50 {best['val_ap50']:.3f} hits {best['val_hit']:.3f}; "
        f"last half mean AP50 {np.mean([h['val_ap50'] for h in late]):.3f} "
        f"hits {np.mean([h['val_hit'] for h in late]):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teachers", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--students", type=int, nargs="*", default=[3, 4, 5])
    parser.add_argument("--weight", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--base", default="fracatlas-lite0-384-v2")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fracatlas")
    parser.add_argument("--without", action="store_true", help="also train each student seed alone")
    args = parser.parse_args()
    _, _, _, train, val = cached_views(args.base, args.data)
    quiet = lambda _line: None  # noqa: E731
    lines = []
    teachers = []
    for seed in args.teachers:
        detector, history = train_detector(train, val, HeadsConfig(epochs=args.epochs, seed=seed), quiet)
        lines.append(_summary(f"teacher, seed {seed}", history))
        teachers.append(detector)
    ensemble = DetectorEnsemble(teachers).eval()
    averaged = detection_metrics(ensemble, val)
    lines.append(f"teachers averaged: AP50 {averaged['val_ap50']:.3f} hits {averaged['val_hit']:.3f}")
    for seed in args.students:
        cfg = HeadsConfig(epochs=args.epochs, seed=seed, distill=args.weight)
        _, history = train_detector(train, val, cfg, quiet, teacher=ensemble)
        lines.append(_summary(f"student (weight {args.weight}), seed {seed}", history))
        if args.without:
            _, history = train_detector(train, val, dataclasses.replace(cfg, distill=0.0), quiet)
            lines.append(_summary(f"alone, seed {seed}", history))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
