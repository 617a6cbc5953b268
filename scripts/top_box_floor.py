"""Would showing the detector's best box below the score floor put a box on more fractures?
(Issue 14; tried, not kept: docs/training.md.)

    python scripts/top_box_floor.py [--model NAME] [--data FRACATLAS] [--split val]

The predictor shows the detector's boxes whose score clears the bundle's floor (``min_box_score``,
chosen on `val`), so a fractured image whose candidates all score lower gets no box at all. Each
rule below keeps the shown boxes and, when there are none, adds the best candidate under some
condition; box AP50 (over the fractured images, and over all images with false boxes on normal
ones counted) and the top-box hit rate are printed for each, through the whole predictor
(orientation step included).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from fracsight.data import FRACTURE, load_dataset
from fracsight.evaluation.run import held_out_samples, true_boxes
from fracsight.explain import average_precision_boxes, hit_rate
from fracsight.inference import Predictor

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fracatlas"

Rule = Callable[[object, list], list]
RULES: dict[str, Rule] = {
    "as shipped (above the floor only)": lambda pred, shown: shown,
    "+ best candidate when fracture suspected": lambda pred, shown: (
        shown or (pred.boxes[:1] if pred.fracture_suspected else [])
    ),
    "+ best candidate when suspected at triage": lambda pred, shown: (
        shown or (pred.boxes[:1] if pred.decisions.get("triage") else [])
    ),
    "+ best candidate always": lambda pred, shown: shown or pred.boxes[:1],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--split", default="val")
    args = parser.parse_args()

    predictor = Predictor(args.model)
    floor = predictor.spec.localization["min_box_score"]
    predictor.spec.localization["min_box_score"] = 0.01  # every candidate; the floor is applied below
    samples, _ = held_out_samples(load_dataset(args.data), args.split, predictor.spec, args.data)
    read = [(s, predictor.predict(s.path)) for s in samples]
    truth = [true_boxes(s, p) if s.labels.get(FRACTURE) == 1 else [] for s, p in read]
    on_fractured = [i for i, (s, _) in enumerate(read) if s.labels.get(FRACTURE) == 1 and s.boxes]
    no_box = sum(not any(b.score >= floor for b in read[i][1].boxes) for i in on_fractured)
    name = f"{predictor.spec.name} v{predictor.spec.version}"
    print(f"{name}, {args.split}: {len(on_fractured)} fractured images with boxes;")
    print(f"{no_box} of them get no box at the floor {floor}")
    for name, rule in RULES.items():
        shown = [rule(p, [b for b in p.boxes if b.score >= floor]) for _, p in read]
        ap50 = average_precision_boxes([shown[i] for i in on_fractured], [truth[i] for i in on_fractured])
        ap50_all = average_precision_boxes(shown, truth)
        hits = hit_rate([shown[i] for i in on_fractured], [truth[i] for i in on_fractured]).hit_rate_any
        print(f"{name:44s} box AP50 {ap50:.3f}, over all images {ap50_all:.3f}, top box hits {hits:.3f}")


if __name__ == "__main__":
    main()
