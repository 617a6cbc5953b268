"""How often a bundle's orientation step acts on FracAtlas images as they are stored.

    python scripts/orientation_reads.py [--model NAME ...] [--splits val test]

Per bundle and split: the images the orientation head turns with certainty (read once more,
turned upright) and those it is unsure are upright (read twice, the turn undone only when both
reads agree on it; ``Predictor._quarter_turns``). Each costs a second letterbox and network run.
FracAtlas stores nearly all radiographs upright, so the first count is close to the head's false
turns. Used in docs/training.md (INT8 v3) and docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from fracsight.inference import Predictor

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fracatlas"


def _images(data: Path, split: str) -> list[Path]:
    out = []
    with open(data / "dataset.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["split"] != split:
                continue
            found = [data / "images" / d / row["image_id"] for d in ("Fractured", "Non_fractured")]
            out += [p for p in found if p.is_file()][:1]  # a few sit in the other folder
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", nargs="*", default=["fracatlas-lite0-384-v4", "fracatlas-lite0-384-v4-int8"]
    )
    parser.add_argument("--splits", nargs="*", default=["val", "test"])
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    for model in args.model:
        predictor = Predictor(model)
        for split in args.splits:
            paths = _images(args.data, split)
            sure = unsure = 0
            for path in paths:
                batch, _ = predictor.preprocess([predictor.read(path)])
                ((turns, certain),) = predictor._quarter_turns(predictor.onnx.run(batch))
                sure += bool(turns and certain)
                unsure += bool(turns and not certain)
            n = len(paths)
            print(
                f"{model} {split}: {n} images as stored; turned with certainty {sure} ({sure / n:.3f}), "
                f"read twice (unsure) {unsure} ({unsure / n:.3f})"
            )


if __name__ == "__main__":
    main()
