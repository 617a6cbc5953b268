"""Checks on a written bundle that more than one test file makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def assert_fitted_on_predictions(bundle: Path, data: Path) -> None:
    """The bundle's calibration and operating points were fitted on what its Predictor gives for
    the validation images: with an orientation step some images are read turned upright, so the
    single upright read's probabilities are not what users get."""
    from fracsight.bundle import load_bundle_spec
    from fracsight.data import load_dataset
    from fracsight.data.splits import train_val_samples
    from fracsight.evaluation.metrics import auroc
    from fracsight.inference import Predictor

    spec = load_bundle_spec(bundle)
    _, val = train_val_samples(load_dataset(data), int(spec.training["config"]["seed"]))
    predictor = Predictor(bundle)
    preds = [predictor.predict(s.path) for s in val]
    assert any("read turned upright" in w for p in preds for w in p.warnings)  # the case that matters
    y = np.array([s.labels["fracture"] for s in val])
    p = np.array([pred.fracture_probability for pred in preds])
    validation = spec.metrics["validation"]
    assert validation["fitted_on"] == "the Predictor's kept reads"
    assert validation["auroc"] == pytest.approx(auroc(y, p), abs=1e-9)
    for op in spec.operating_points:
        positive = p >= op.threshold
        assert op.sensitivity == pytest.approx(positive[y == 1].mean()), op.name
        assert op.specificity == pytest.approx((~positive[y == 0]).mean()), op.name
