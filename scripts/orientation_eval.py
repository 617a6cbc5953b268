"""How much turning or mirroring a radiograph changes the model's answer (issue 14, item 4).

    python scripts/orientation_eval.py [--model default] [--data ../shared/data/fracatlas] [--split test]

Every image of the split is read as given, turned by 90, 180 and 270 degrees and mirrored
(PNG-encoded in memory, nothing written), and predicted; for each orientation the script prints
the fracture AUROC, the share of images the out-of-distribution check flags as not reliable, and
how far the probabilities move from the upright ones (median and 90th percentile of |delta p|).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from fracsight.data import FRACTURE, load_dataset
from fracsight.evaluation.metrics import auroc
from fracsight.inference import Predictor

ROOT = Path(__file__).resolve().parents[1]
ORIENTATIONS = {
    "upright": lambda im: im,
    "rotated 90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "rotated 180": lambda im: im.transpose(Image.Transpose.ROTATE_180),
    "rotated 270": lambda im: im.transpose(Image.Transpose.ROTATE_270),
    "mirrored": ImageOps.mirror,
}


def _png(path: Path, turn) -> bytes:
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # FracAtlas has 49 cut JPEGs; fracsight reads them with a warning
    with Image.open(path) as im:
        buffer = io.BytesIO()
        turn(ImageOps.exif_transpose(im).convert("L")).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fracatlas")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()

    samples = [s for s in load_dataset(args.data).split(args.split) if FRACTURE in s.labels]
    y = np.array([s.labels[FRACTURE] for s in samples])
    predictor = Predictor(args.model)
    upright: np.ndarray | None = None
    print(f"{predictor.name} on {len(samples)} {args.split} images ({int(y.sum())} fractured)")
    for name, turn in ORIENTATIONS.items():
        results = list(predictor.predict_many(_png(s.path, turn) for s in samples))
        p = np.array([getattr(r, "fracture_probability", np.nan) for r in results], dtype=float)
        flagged = np.mean([not getattr(r, "reliable", False) for r in results])
        ok = ~np.isnan(p)
        line = f"{name:12s} AUROC {auroc(y[ok], p[ok]):.3f}  flagged not reliable {flagged:.3f}"
        if upright is None:
            upright = p
        else:
            delta = np.abs(p - upright)[ok & ~np.isnan(upright)]
            line += f"  |delta p| median {np.median(delta):.3f}, 90th pct {np.percentile(delta, 90):.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
