"""Which read to keep when the orientation head is unsure: the two rules compared (issue 14, item 4).

    python scripts/orientation_rules.py [--model NAME] [--data ../shared/data/fracatlas] [--splits val test]

Every image of a split is read as the Predictor reads it and turned by 0, 90, 180 and 270 degrees;
the network runs once on each view. A view the head is unsure about (upright probability below the
bundle's ``check_below``, no turn it is sure of) is read a second time, turned back by the head's
likeliest turn, and one of the two reads is kept, by

* ``agree``: ``reads_agree_on_turn``, the head's answers on both reads (the Predictor's rule), or
* ``distance``: the read the input check's feature distance finds more typical (the rule before
  2026-12-02).

Quarter turns compose exactly, so the second read of a view is one of the four views already run.
Per split and rule the script prints, for each turn of the input, the share of views read upright
in the end, the fracture AUROC of the kept reads and the share flagged by the feature distance;
over all unsure views how many were kept upright; and how consistent the rule is for the same
radiograph decoded another way: every image also decoded at full size (as a PNG, or a DICOM
file, is read; the Predictor decodes a large JPEG at a reduced size), the views whose kept read
differs between the two decodings and those whose fracture probability (before calibration)
moves by more than 0.2.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from fracsight.data import FRACTURE, load_dataset
from fracsight.evaluation.metrics import auroc
from fracsight.explain import softmax
from fracsight.inference import Predictor
from fracsight.inference.ood import feature_distance
from fracsight.inference.orientation import reads_agree_on_turn, turn_radiograph

ROOT = Path(__file__).resolve().parents[1]


def _full_size_png(path: Path) -> bytes:
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # FracAtlas has 49 cut JPEGs; fracsight reads them with a warning
    with Image.open(path) as im:
        buffer = io.BytesIO()
        ImageOps.exif_transpose(im).convert("L").save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


def _views(predictor: Predictor, sources: list[Path] | list[bytes]) -> dict[str, np.ndarray]:
    """Per image and turn (0-3 quarter turns): orientation logits, fracture logit, feature distance
    (and the input check's threshold for it)."""
    orientation, fracture, distance, threshold = [], [], [], 0.0
    for source in sources:
        radiograph = predictor.read(source)
        turned = [turn_radiograph(radiograph, k) if k else radiograph for k in range(4)]
        out = predictor.onnx.run(predictor.preprocess(turned)[0])
        orientation.append(out["orientation"])
        fracture.append(out["fracture"].reshape(-1))
        scored = [feature_distance(e, predictor.spec.ood) for e in out["embedding"]]
        distance.append([d for d, _ in scored])
        threshold = scored[0][1]
    return {
        "orientation": np.array(orientation),
        "fracture": np.array(fracture),
        "distance": np.array(distance),
        "threshold": np.float64(threshold),
    }


def _kept_turn(
    views: dict[str, np.ndarray], i: int, given: int, rule: str, settings: dict
) -> tuple[int, bool]:
    """(quarter turns undone, whether the view was unsure) for image ``i`` given turned by ``given``."""
    logits = views["orientation"][i, given]
    p = softmax(logits.astype(np.float64))
    best = int(p.argmax())
    if best and p[best] >= settings["min_probability"]:
        return best, False
    if p[0] >= settings.get("check_below", 0.0):
        return 0, False
    turns = int(p[1:].argmax()) + 1
    back = (given - turns) % 4
    if rule == "agree":
        keep = reads_agree_on_turn(logits, views["orientation"][i, back], turns)
    else:
        keep = views["distance"][i, back] < views["distance"][i, given]
    return (turns if keep else 0), True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fracatlas")
    parser.add_argument("--splits", nargs="*", default=["val", "test"])
    args = parser.parse_args()

    predictor = Predictor(args.model)
    settings = predictor.spec.orientation
    if not predictor.spec.orientation or not predictor.spec.ood:
        parser.error(f"{predictor.name} has no orientation step or no input check to compare")
    dataset = load_dataset(args.data)
    sure, unsure_below = settings["min_probability"], settings["check_below"]
    print(f"{predictor.name}: sure of a turn at >= {sure}, unsure below upright {unsure_below}")
    for split in args.splits:
        samples = [s for s in dataset.split(split) if FRACTURE in s.labels]
        y = np.array([s.labels[FRACTURE] for s in samples])
        views = _views(predictor, [s.path for s in samples])
        full_size = _views(predictor, [_full_size_png(s.path) for s in samples])
        rows = np.arange(len(y))
        for rule in ("agree", "distance"):
            line, unsure, unsure_upright, differs, moved = f"{split} ({len(y)} images) {rule:8s}", 0, 0, 0, 0
            for given in range(4):
                kept, kept_full = [], []
                for i in rows:
                    turns, was_unsure = _kept_turn(views, i, given, rule, settings)
                    kept.append((given - turns) % 4)
                    kept_full.append((given - _kept_turn(full_size, i, given, rule, settings)[0]) % 4)
                    unsure += was_unsure
                    unsure_upright += was_unsure and kept[-1] == 0
                kept_arr, kept_full_arr = np.array(kept), np.array(kept_full)
                logits = views["fracture"][rows, kept_arr]
                delta = _sigmoid(logits) - _sigmoid(full_size["fracture"][rows, kept_full_arr])
                differs += int(np.sum(kept_arr != kept_full_arr))
                moved += int(np.sum(np.abs(delta) > 0.2))
                line += f" | turned {90 * given:3d}: upright {np.mean(kept_arr == 0):.3f}"
                line += f" AUROC {auroc(y, logits):.3f}"
                line += f" flagged {np.mean(views['distance'][rows, kept_arr] > views['threshold']):.3f}"
            print(
                f"{line} | unsure views kept upright {unsure_upright}/{unsure} | full-size decoding: "
                f"kept read differs {differs}/{4 * len(y)}, probability moves > 0.2 {moved}",
                flush=True,
            )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


if __name__ == "__main__":
    main()
