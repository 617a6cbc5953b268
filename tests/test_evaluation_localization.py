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


def test_a_box_annotation_on_an_image_labelled_normal_is_not_a_true_box() -> None:
    """FracAtlas's IMG0003298 is labelled not fractured (dataset.csv) yet has a COCO box: in the
    all-images figures every box on a normal image is a false positive, so its annotation must not
    add a true box that nothing can find (it lowered test AP50 over all images 0.198 -> 0.197)."""
    fractured = Sample(Path("f.png"), labels={FRACTURE: 1}, boxes=(Box(0.0, 0.0, 0.5, 0.5),))
    normal = Sample(Path("n.png"), labels={FRACTURE: 0})
    annotated_normal = Sample(Path("a.png"), labels={FRACTURE: 0}, boxes=(Box(0.75, 0.5, 1.0, 1.0),))
    hit = DetectedBox(0, 0, 100, 50, 0.6)
    on_annotation = DetectedBox(150, 50, 200, 100, 0.9)  # exactly the normal image's annotated box
    plain = _localization([fractured, normal], [_pred(hit), _pred(on_annotation)])
    annotated = _localization([fractured, annotated_normal], [_pred(hit), _pred(on_annotation)])
    assert plain is not None and annotated is not None
    # one true box, found second after one false positive: precision 1/2 at recall 1
    assert plain["ap50_all"] == annotated["ap50_all"] == pytest.approx(0.5)
    assert plain["ap50_95_all"] == annotated["ap50_95_all"]
    assert (plain["n_normal_images_with_true_boxes"], annotated["n_normal_images_with_true_boxes"]) == (0, 1)
    assert annotated["ap50"] == annotated["hit_rate_any"] == 1.0
