from __future__ import annotations

import numpy as np
import pytest

from fracsight.explain import DetectedBox, boxes_from_heatmap, iou, label_components, nms, upsample_to_input
from fracsight.preprocessing import Letterbox, letterbox


@pytest.fixture(scope="module")
def lb() -> Letterbox:
    """300x500 image in a 384 square: scale 0.768, 77 px of padding above and below."""
    _, geometry = letterbox(np.zeros((300, 500), dtype=np.float32), 384)
    return geometry


def test_detected_box_basics() -> None:
    b = DetectedBox(10.0, 20.0, 30.0, 60.0, 0.876543)
    assert (b.width, b.height, b.area, b.centre) == (20.0, 40.0, 800.0, (20.0, 40.0))
    assert b.to_dict() == {"x0": 10.0, "y0": 20.0, "x1": 30.0, "y1": 60.0, "score": 0.8765}
    assert b.normalized((100, 200)) == (0.05, 0.2, 0.15, 0.6)
    with pytest.raises(ValueError):
        DetectedBox(5, 0, 1, 1, 0.5)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 2, 2), (0, 0, 2, 2), 1.0),
        ((0, 0, 2, 2), (3, 3, 4, 4), 0.0),
        ((0, 0, 2, 2), (2, 0, 4, 2), 0.0),  # touching edges
        ((0, 0, 2, 2), (1, 0, 3, 2), 1 / 3),
        ((0, 0, 4, 4), (1, 1, 3, 3), 0.25),
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),
    ],
)
def test_iou_known_values(a: tuple, b: tuple, expected: float) -> None:
    assert iou(a, b) == pytest.approx(expected)
    assert iou(DetectedBox(*b, score=1.0), a) == pytest.approx(expected)


def test_nms_keeps_best_of_overlapping() -> None:
    boxes = [
        DetectedBox(0, 0, 10, 10, 0.6),
        DetectedBox(1, 1, 11, 11, 0.9),  # IoU with the first ~0.68
        DetectedBox(50, 50, 60, 60, 0.7),
    ]
    kept = nms(boxes, iou_thr=0.5)
    assert [b.score for b in kept] == [0.9, 0.7]
    assert [b.score for b in nms(boxes, iou_thr=0.9)] == [0.9, 0.7, 0.6]
    assert nms([]) == []


def test_label_components_8_connected() -> None:
    mask = np.array(
        [
            [1, 0, 0, 0, 1],
            [0, 1, 0, 0, 1],
            [0, 0, 0, 0, 0],
            [1, 1, 0, 1, 0],
        ],
        dtype=bool,
    )
    labels, n = label_components(mask)
    assert n == 4
    assert labels[0, 0] == labels[1, 1] == 1  # diagonal neighbours join
    assert labels[0, 4] == labels[1, 4] == 2
    assert labels[3, 0] == labels[3, 1] == 3 and labels[3, 3] == 4
    assert np.all((labels > 0) == mask)


def test_one_blob_at_feature_resolution_maps_exactly(lb: Letterbox) -> None:
    heat = np.zeros((12, 12), dtype=np.float32)
    heat[4:6, 6:8] = 0.9
    heat[5, 7] = 0.95
    (box,) = boxes_from_heatmap(heat, lb)
    cell = 384 / 12
    assert box.score == pytest.approx(0.95)
    sx, sy = lb.scales
    assert box.x0 == pytest.approx(6 * cell / sx)
    assert box.x1 == pytest.approx(8 * cell / sx)
    assert box.y0 == pytest.approx((4 * cell - lb.pad_y) / sy)
    assert box.y1 == pytest.approx((6 * cell - lb.pad_y) / sy)


def test_one_blob_round_trips_through_a_letterbox(lb: Letterbox) -> None:
    original = np.zeros((300, 500), dtype=np.float32)
    original[150:220, 100:180] = 0.9  # the "fracture" in original pixels: x 100..180, y 150..220
    heat, _ = letterbox(original, 384)
    (box,) = boxes_from_heatmap(heat, lb)
    assert box.as_tuple() == pytest.approx((100, 150, 180, 220), abs=2.0)
    assert box.score == pytest.approx(0.9, abs=1e-3)


def test_two_blobs_give_two_boxes_sorted_by_score(lb: Letterbox) -> None:
    heat = np.zeros((12, 12), dtype=np.float32)
    heat[3:5, 1:3] = 0.6  # first in raster order, lower score
    heat[7:9, 8:11] = 0.8
    boxes = boxes_from_heatmap(heat, lb)
    assert [b.score for b in boxes] == pytest.approx([0.8, 0.6])
    assert boxes[0].x0 > boxes[1].x1  # the right-hand blob comes first
    assert len(boxes_from_heatmap(heat, lb, max_boxes=1)) == 1


def test_upsampled_map_gives_one_tighter_box(lb: Letterbox) -> None:
    heat = np.zeros((12, 12), dtype=np.float32)
    heat[5:7, 5:7] = 0.9
    coarse = boxes_from_heatmap(heat, lb)
    fine = boxes_from_heatmap(upsample_to_input(heat, 96), lb)
    assert len(coarse) == len(fine) == 1
    assert iou(coarse[0], fine[0]) > 0.5
    assert fine[0].area <= coarse[0].area


def test_relative_fallback_and_min_score(lb: Letterbox) -> None:
    heat = np.zeros((12, 12), dtype=np.float32)
    heat[6, 6] = 0.4  # below threshold 0.5 but above min_score: still one box
    heat[6, 7] = 0.3  # >= 0.5 * peak: part of the same region
    heat[1, 1] = 0.1  # < 0.5 * peak: ignored
    (box,) = boxes_from_heatmap(heat, lb)
    assert box.score == pytest.approx(0.4)
    assert box.width == pytest.approx(2 * 32 / lb.scales[0])
    assert boxes_from_heatmap(heat, lb, min_score=0.45) == []


def test_constant_maps(lb: Letterbox) -> None:
    assert boxes_from_heatmap(np.zeros((12, 12)), lb) == []
    assert boxes_from_heatmap(np.full((12, 12), 0.1), lb) == []
    (whole,) = boxes_from_heatmap(np.full((12, 12), 0.9), lb)  # documented: one box, whole image
    assert whole.as_tuple() == pytest.approx((0, 0, 500, 300))


def test_heat_in_the_padding_is_ignored(lb: Letterbox) -> None:
    heat = np.zeros((12, 12), dtype=np.float32)
    heat[0, 5] = 0.99  # row 0 spans model y 0..32, all padding (pad_y = 77)
    heat[11, 2] = 0.99
    assert boxes_from_heatmap(heat, lb) == []


def test_boxes_are_clipped_to_the_image(lb: Letterbox) -> None:
    heat = np.zeros((12, 12), dtype=np.float32)
    heat[2:4, 10:12] = 0.9  # row 2 is part padding, part image
    (box,) = boxes_from_heatmap(heat, lb)
    assert box.y0 == 0.0 and box.x1 == 500.0


def test_nms_of_a_generator_keeps_its_boxes() -> None:
    """The type check read the generator first: every box was lost, without an error."""
    from fracsight.explain import DetectedBox, nms

    boxes = [DetectedBox(0, 0, 10, 10, 0.9), DetectedBox(50, 50, 60, 60, 0.5)]
    assert nms(box for box in boxes) == boxes
