from __future__ import annotations

import math

import numpy as np
import pytest

from fracsight.explain import (
    DetectedBox,
    average_precision_boxes,
    average_precision_boxes_coco,
    denormalize_box,
    hit_rate,
    pointing_game,
    top_box,
)

TRUE = [[(0, 0, 10, 10)], [(20, 20, 40, 40), (60, 60, 80, 80)]]


def test_top_box_forms() -> None:
    assert top_box(None) is None and top_box([]) is None
    assert top_box((1, 2, 3, 4)) == (1.0, 2.0, 3.0, 4.0)
    boxes = [DetectedBox(0, 0, 1, 1, 0.2), DetectedBox(5, 5, 6, 6, 0.9)]
    assert top_box(boxes) == (5, 5, 6, 6)
    assert denormalize_box((0.1, 0.2, 0.5, 1.0), (100, 200)) == pytest.approx((20, 20, 100, 100))


def test_hit_rate_perfect_and_wrong() -> None:
    perfect = hit_rate([(0, 0, 10, 10), (60, 60, 80, 80)], TRUE)
    assert (perfect.hit_rate_iou, perfect.hit_rate_centre, perfect.hit_rate_any) == (1.0, 1.0, 1.0)
    assert perfect.n_images == 2
    wrong = hit_rate([(90, 90, 99, 99), None], TRUE)
    assert (wrong.hit_rate_iou, wrong.hit_rate_centre, wrong.hit_rate_any) == (0.0, 0.0, 0.0)


def test_hit_rate_mixed_reports_criteria_separately() -> None:
    truth = [[(0, 0, 10, 10)]] * 4 + [[]]
    preds = [
        (0, 0, 4, 10),  # IoU 0.4 but misses the centre (5, 5)
        (4, 4, 6, 6),  # holds the centre, IoU 0.04
        (50, 50, 60, 60),  # miss
        [],  # nothing predicted: miss
        (0, 0, 10, 10),  # no true box: not counted
    ]
    r = hit_rate(preds, truth, iou_thr=0.1)
    assert r.n_images == 4
    assert (r.hit_rate_iou, r.hit_rate_centre, r.hit_rate_any) == (0.25, 0.25, 0.5)
    assert r.to_dict()["hit_rate_any"] == 0.5
    assert hit_rate(preds, truth, iou_thr=0.5).hit_rate_iou == 0.0
    assert math.isnan(hit_rate([None], [[]]).hit_rate_any)
    with pytest.raises(ValueError):
        hit_rate([None], TRUE)


def test_hit_rate_uses_best_scoring_box_of_a_list() -> None:
    preds = [[DetectedBox(50, 50, 60, 60, 0.3), DetectedBox(1, 1, 9, 9, 0.8)]]
    assert hit_rate(preds, [[(0, 0, 10, 10)]]).hit_rate_any == 1.0
    preds = [[DetectedBox(50, 50, 60, 60, 0.9), DetectedBox(1, 1, 9, 9, 0.8)]]
    assert hit_rate(preds, [[(0, 0, 10, 10)]]).hit_rate_any == 0.0


def _peak_map(y: int, x: int, shape: tuple[int, int] = (100, 100)) -> np.ndarray:
    m = np.zeros(shape, dtype=np.float32)
    m[y, x] = 1.0
    return m


def test_pointing_game() -> None:
    assert pointing_game([_peak_map(5, 5), _peak_map(70, 70)], TRUE) == 1.0
    assert pointing_game([_peak_map(50, 50), _peak_map(50, 50)], TRUE) == 0.0
    mixed = [_peak_map(5, 5), np.zeros((100, 100)), _peak_map(0, 0)]
    assert pointing_game(mixed, [*TRUE, []]) == 0.5  # constant map: a miss; third image not counted
    normalized = [[(0.0, 0.0, 0.1, 0.1)], [(0.5, 0.5, 1.0, 1.0)]]
    assert pointing_game([_peak_map(5, 5), _peak_map(20, 20)], normalized, normalized=True) == 0.5
    assert math.isnan(pointing_game([_peak_map(1, 1)], [[]]))


def test_average_precision_perfect_and_wrong() -> None:
    perfect = [
        [DetectedBox(0, 0, 10, 10, 0.9)],
        [DetectedBox(20, 20, 40, 40, 0.8), DetectedBox(60, 60, 80, 80, 0.7)],
    ]
    assert average_precision_boxes(perfect, TRUE) == pytest.approx(1.0)
    wrong = [[DetectedBox(50, 0, 60, 10, 0.9)], [DetectedBox(0, 90, 10, 99, 0.8)]]
    assert average_precision_boxes(wrong, TRUE) == 0.0
    assert average_precision_boxes([[], []], TRUE) == 0.0
    assert math.isnan(average_precision_boxes([[DetectedBox(0, 0, 1, 1, 0.5)]], [[]]))


def test_average_precision_known_mixed_case() -> None:
    preds = [
        [DetectedBox(0, 0, 10, 10, 0.9), DetectedBox(0, 0, 10, 10, 0.8)],  # TP, then a duplicate: FP
        [DetectedBox(21, 21, 40, 40, 0.7)],  # TP; (60, 60, 80, 80) is never found
    ]
    # Ranked: TP, FP, TP; recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3.
    # All-point AP = 1/3 * 1 + 1/3 * 2/3 = 5/9.
    assert average_precision_boxes(preds, TRUE) == pytest.approx(5 / 9)
    # A prediction must match a box of its own image.
    assert average_precision_boxes([[], [DetectedBox(0, 0, 10, 10, 0.9)]], TRUE) == 0.0


def test_average_precision_low_scored_hit_after_false_positives() -> None:
    preds = [[DetectedBox(50, 0, 60, 10, 0.9), DetectedBox(0, 0, 10, 10, 0.1)]]
    # FP then TP: precision at recall 1 is 1/2.
    assert average_precision_boxes(preds, [[(0, 0, 10, 10)]]) == pytest.approx(0.5)


def test_coco_ap_averages_ten_iou_thresholds() -> None:
    # IoU of (0, 0, 10, 8) with (0, 0, 10, 10) is 0.8: a hit at 0.50..0.80 (7 thresholds), a miss above
    preds = [[DetectedBox(0, 0, 10, 8, 0.9)]]
    assert average_precision_boxes_coco(preds, [[(0, 0, 10, 10)]]) == pytest.approx(0.7)
    assert average_precision_boxes_coco([[DetectedBox(0, 0, 10, 10, 0.9)]], [[(0, 0, 10, 10)]]) == 1.0


def test_false_boxes_on_normal_images_lower_the_all_images_ap() -> None:
    fractured = [[DetectedBox(0, 0, 10, 10, 0.5)]]
    normal_with_box = [[DetectedBox(0, 0, 10, 10, 0.9)]]  # an image with no true box, scored higher
    assert average_precision_boxes(fractured, [[(0, 0, 10, 10)]]) == 1.0
    both = average_precision_boxes(normal_with_box + fractured, [[], [(0, 0, 10, 10)]])
    assert both == pytest.approx(0.5)
