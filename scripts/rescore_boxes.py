"""Would ranking the detector's boxes by the fracture maps too put the top box on the fracture
more often? (Issue 14; tried, not kept: docs/training.md.)

    python scripts/rescore_boxes.py [--model NAME] [--data FRACATLAS]

Over the upright fractured images with boxes of a split, each candidate box of the detector
(score >= 0.01) gets the score ``detector ** (1 - a) * map ** a``, where ``map`` is the mean or
the maximum of the mask or CAM probability inside the box; then non-maximum suppression, at
most 5 boxes, as the predictor does. Every setting is printed for ``val``; ``test`` is measured
once, for the detector alone and for the setting that ``val`` chose.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fracsight.data import FRACTURE, load_dataset
from fracsight.explain import average_precision_boxes, denormalize_box, hit_rate, sigmoid, upsample_to_input
from fracsight.explain.boxes import DetectedBox, nms
from fracsight.explain.detections import decode_detections
from fracsight.inference import Predictor

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fracatlas"
MAPS = ("mask mean", "cam mean", "mask max")


def _candidates(predictor: Predictor, samples: list) -> list[tuple]:
    """Per image: its letterbox, candidate boxes (model pixels), their scores, the map values in
    each box (one column per :data:`MAPS`), and the true boxes in original pixels."""
    size, stride = predictor.spec.input_size, int(predictor.spec.localization["stride"])
    found = []
    for sample in samples:
        radiograph = predictor.read(sample.path)
        batch, (geometry,) = predictor.preprocess([radiograph])
        out = predictor.onnx.run(batch)
        boxes, scores = decode_detections(
            out["detect_centre"][0], out["detect_size"][0], out["detect_offset"][0], stride, 0.01, top_k=50
        )
        mask = upsample_to_input(sigmoid(out["mask"][0]), size)
        cam = upsample_to_input(sigmoid(out["cam"][0]), size)
        values = []
        for box in boxes:
            x0, y0, x1, y1 = (int(np.clip(round(v), 0, size - 1)) for v in box)
            inside = np.s_[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]
            values.append((mask[inside].mean(), cam[inside].mean(), mask[inside].max()))
        h, w = radiograph.full_size
        trues = [denormalize_box((b.x0, b.y0, b.x1, b.y1), (h, w)) for b in sample.boxes]
        found.append((geometry, boxes, scores, np.reshape(values, (-1, len(MAPS))), trues))
    return found


def _measure(candidates: list[tuple], which: int, a: float, floor: float) -> tuple[float, float]:
    """(box AP50, top-box hit rate) with the boxes ranked by ``detector ** (1 - a) * map ** a``."""
    predicted, trues = [], []
    for geometry, boxes, scores, values, true in candidates:
        kept = []
        for box, score, value in zip(boxes, scores, values, strict=True):
            (x0, x1), (y0, y1) = geometry.to_original(box[[0, 2]], box[[1, 3]])
            if score >= floor and x1 > x0 and y1 > y0:
                ranked = score ** (1 - a) * max(float(value[which]), 1e-6) ** a
                kept.append(DetectedBox(float(x0), float(y0), float(x1), float(y1), float(ranked)))
        kept.sort(key=lambda b: -b.score)
        predicted.append(nms(kept, 0.3)[:5])
        trues.append(true)
    return average_precision_boxes(predicted, trues, iou_thr=0.5), hit_rate(predicted, trues).hit_rate_any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a bundle with a detector (default: the shipped one)")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    predictor = Predictor(args.model)
    floor = float(predictor.spec.localization["min_box_score"])
    dataset = load_dataset(args.data)
    split = {}
    for name in ("val", "test"):
        boxed = [s for s in dataset.split(name) if s.boxes and s.labels.get(FRACTURE) == 1]
        split[name] = _candidates(predictor, boxed)
    print(f"{predictor.name}; {len(split['val'])} val, {len(split['test'])} test images; score floor {floor}")
    best = None
    for which, name in enumerate(MAPS):
        for a in (0.0, 0.25, 0.5, 0.75):
            ap, hits = _measure(split["val"], which, a, floor)
            print(f"val  {name:9s} a={a:.2f}: box AP50 {ap:.3f}, top box hits {hits:.3f}")
            if best is None or (hits, ap) > best[0]:
                best = ((hits, ap), which, a)
    assert best is not None
    for which, a in dict.fromkeys([(0, 0.0), best[1:]]):  # the detector alone, and val's choice
        ap, hits = _measure(split["test"], which, a, floor)
        print(f"test {MAPS[which]:9s} a={a:.2f}: box AP50 {ap:.3f}, top box hits {hits:.3f}")


if __name__ == "__main__":
    main()
