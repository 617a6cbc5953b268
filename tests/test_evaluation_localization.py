"""Box metrics of `fracsight evaluate`: over fractured images, and over every labelled image."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from fracsight.data import FRACTURE, Box, Sample
from fracsight.evaluation.run import _localization
from fracsight.explain import DetectedBox


def _pred(*boxes: DetectedBox) -> SimpleNamespace:
    # the two attributes _localization reads from a Prediction
    return SimpleNamespace(boxes=boxes, image_size=(100, 200))


def test_box_metrics_count_false_boxes_on_normal_images_only_in_the_all_images_figures() -> None:
    fractured = Sample(Path("f.png"), labels={FRACTURE: 1}, boxes=(Box(0.0, 0.0, 0.5, 0.5),))
    unboxed = Sample(Path("u.png"), labels={FRACTURE: 1})  # no box annotation: cannot be scored
    normal = Sample(Path("n.png"), labels={FRACTURE: 0})
    hit = DetectedBox(0, 0, 100, 50, 0.6)  # exactly the true box in pixels (W 200, H 100)
    samples = [fractured, unboxed, normal]
    loc = _localization(samples, [_pred(hit), _pred(hit), _pred(DetectedBox(150, 50, 200, 100, 0.9))])
    assert loc is not None
    assert (loc["n_images"], loc["n_images_all"]) == (1, 2)
    assert loc["ap50"] == loc["ap50_95"] == loc["hit_rate_any"] == 1.0
    assert loc["ap50_all"] == pytest.approx(0.5)  # the normal image's box outranks the true hit
    assert _localization([normal], [_pred()]) is None
