"""How the model reads radiographs scaled down (thumbnails, previews): the figures behind the
input check's resolution rule (``fracsight.inference.ood``: a shorter side under
``UNRELIABLE_SIDE`` is not reliable, under ``LOW_RESOLUTION_SIDE`` a warning).

    python scripts/resolution_eval.py [--model default] [--data ../shared/data/fracatlas] [--split val]

Every image of the split is read as given, then scaled down (bilinear, aspect kept) until its
shorter side is each of ``--sides`` pixels (PNG-encoded in memory, nothing written), and predicted;
for each size the script prints the fracture AUROC and the share of images the input check flags
as not reliable, and, for the sizes under ``UNRELIABLE_SIDE``, that share without the resolution
rule (what the other signals see on their own).
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
from fracsight.inference.ood import UNRELIABLE_SIDE

ROOT = Path(__file__).resolve().parents[1]


def _scaled_png(path: Path, side: int | None) -> bytes:
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # FracAtlas has 49 cut JPEGs; fracsight reads them with a warning
    with Image.open(path) as im:
        image = ImageOps.exif_transpose(im).convert("L")
        if side is not None:
            scale = side / min(image.size)
            image = image.resize(
                tuple(max(side, round(n * scale)) for n in image.size), Image.Resampling.BILINEAR
            )
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fracatlas")
    parser.add_argument("--split", default="val")
    parser.add_argument("--sides", type=int, nargs="+", default=[256, 192, 128, 96, 80, 64, 48, 32])
    args = parser.parse_args()

    samples = [s for s in load_dataset(args.data).split(args.split) if FRACTURE in s.labels]
    y = np.array([s.labels[FRACTURE] for s in samples])
    predictor = Predictor(args.model)
    print(f"{predictor.name} on {len(samples)} {args.split} images ({int(y.sum())} fractured)")
    for side in [None, *args.sides]:
        results = list(predictor.predict_many(_scaled_png(s.path, side) for s in samples))
        p = np.array([getattr(r, "fracture_probability", np.nan) for r in results], dtype=float)
        flagged = np.mean([not getattr(r, "reliable", False) for r in results])
        ok = ~np.isnan(p)
        line = f"{'as given' if side is None else f'side {side}':9s} AUROC {auroc(y[ok], p[ok]):.3f}  "
        line += f"flagged not reliable {flagged:.3f}"
        if side is not None and side < UNRELIABLE_SIDE:
            others = np.mean([not _reliable_but_for_size(r) for r in results])
            line += f" (without the resolution rule {others:.3f})"
        print(line, flush=True)


def _reliable_but_for_size(result: object) -> bool:
    warnings = getattr(result, "warnings", None)
    if warnings is None:
        return False
    return not any(w.endswith("not reliable") and not w.startswith("very low resolution") for w in warnings)


if __name__ == "__main__":
    main()
