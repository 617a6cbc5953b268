"""Would the detector's best box score make the fracture probability better? (Issue 14; tried, not
kept: docs/training.md.)

    python scripts/box_score_stacking.py [--model NAME] [--data FRACATLAS]

Reads `val` through the whole predictor (orientation step included) with every detector candidate
kept, and prints the AUROC and the sensitivity at specificity 0.90 of: the fracture probability
alone, the best box score alone, the two logits combined by a logistic regression (out-of-fold
scores, 5 folds stratified on the label, so no image is scored by a fit that saw it), and a few
fixed weights of the box logit added to the fracture logit. `val` only: `test` is not read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from fracsight.data import FRACTURE, load_dataset
from fracsight.evaluation.metrics import auroc
from fracsight.evaluation.run import held_out_samples
from fracsight.evaluation.thresholds import sensitivity_at_specificity
from fracsight.inference import Predictor

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fracatlas"
NO_BOX = 1e-4  # the score of an image without any candidate


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _out_of_fold(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    scores = np.zeros(len(y))
    for fit, held in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
        scores[held] = LogisticRegression().fit(x[fit], y[fit]).decision_function(x[held])
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()

    predictor = Predictor(args.model)
    predictor.spec.localization["min_box_score"] = 0.001  # every candidate the detector has
    samples, _ = held_out_samples(load_dataset(args.data), "val", predictor.spec, args.data)
    read = [predictor.predict(s.path) for s in samples]
    y = np.array([s.labels[FRACTURE] for s in samples])
    fracture = _logit(np.array([p.fracture_probability for p in read]))
    box = _logit(np.array([max((b.score for b in p.boxes), default=NO_BOX) for p in read]))

    print(f"{predictor.spec.name} v{predictor.spec.version}, val: {len(y)} images, {y.sum()} fractured")
    rows = {
        "fracture probability alone": fracture,
        "best box score alone": box,
        "both, logistic regression (out of fold)": _out_of_fold(np.c_[fracture, box], y),
        **{f"fracture logit + {w} x box logit": fracture + w * box for w in (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)},
    }
    for name, score in rows.items():
        print(
            f"{name:42s} AUROC {auroc(y, score):.4f}, sensitivity at specificity 0.90 "
            f"{sensitivity_at_specificity(y, score, 0.9):.3f}"
        )


if __name__ == "__main__":
    main()
