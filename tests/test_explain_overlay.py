from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracsight.explain import DetectedBox, colormap_lut, render_overlay, save_overlay, side_by_side

H, W = 120, 200


@pytest.fixture()
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((H, W)).astype(np.float32)


def _base(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.round(image * 255).astype(np.uint8)[..., None], 3, axis=2)


def test_colormap_lut() -> None:
    lut = colormap_lut("inferno")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    luminance = lut.astype(float) @ [0.299, 0.587, 0.114]
    assert luminance[0] < 10 and luminance[-1] > 200
    assert np.all(np.diff(luminance[::16]) > 0)  # dark to bright
    with pytest.raises(ValueError, match="inferno"):
        colormap_lut("viridisx")


def test_plain_image_round_trips(image: np.ndarray) -> None:
    out = render_overlay(image)
    assert out.mode == "RGB" and out.size == (W, H)
    np.testing.assert_array_equal(np.asarray(out), _base(image))


def test_heat_changes_only_where_positive(image: np.ndarray) -> None:
    heat = np.zeros((H, W), dtype=np.float32)
    heat[30:60, 50:90] = 1.0
    heat[70, 10] = 0.3
    heat[80:90, 10:20] = 0.05  # below min_heat: background, not drawn
    out = np.asarray(render_overlay(image, heat, opacity=0.5))
    changed = np.any(out != _base(image), axis=2)
    assert not changed[heat < 0.1].any()
    assert changed[30:60, 50:90].mean() > 0.95
    everywhere = np.asarray(render_overlay(image, heat, opacity=0.5, min_heat=0.0))
    assert np.any(everywhere != _base(image), axis=2)[80:90, 10:20].any()


def test_opacity_zero_leaves_image_except_boxes(image: np.ndarray) -> None:
    heat = np.ones((H, W), dtype=np.float32)
    boxes = [DetectedBox(40, 40, 100, 90, 0.87)]
    np.testing.assert_array_equal(np.asarray(render_overlay(image, heat, opacity=0.0)), _base(image))
    with_heat = render_overlay(image, heat, boxes, opacity=0.0)
    without = render_overlay(image, None, boxes)
    np.testing.assert_array_equal(np.asarray(with_heat), np.asarray(without))


def test_boxes_drawn_only_on_their_outline_and_label(image: np.ndarray) -> None:
    box = DetectedBox(40, 50, 100, 90, 0.87)
    plain = np.asarray(render_overlay(image, None, [box], show_scores=False))
    changed = np.any(plain != _base(image), axis=2)
    assert changed[50, 40:100].all() and changed[50:90, 40].all()  # top and left edges
    inside = np.zeros_like(changed)
    inside[50:90, 40:100] = True
    assert not changed[~inside].any()
    assert not changed[55:85, 45:95].any()  # interior untouched

    labelled = np.asarray(render_overlay(image, None, [box], show_scores=True))
    extra = np.any(labelled != plain, axis=2)
    assert extra[:50, 40:].any()  # the score label sits above the box
    ys, xs = np.nonzero(extra)
    assert ys.max() < 50 and xs.min() >= 40


def test_heat_must_match_the_image(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="heatmap_to_original"):
        render_overlay(image, np.zeros((12, 12)))
    with pytest.raises(ValueError):
        render_overlay(image, None, opacity=1.5)


def test_save_and_side_by_side(tmp_path: Path, image: np.ndarray) -> None:
    heat = np.zeros((H, W), dtype=np.float32)
    heat[10:20, 10:20] = 0.8
    boxes = [DetectedBox(8, 8, 22, 22, 0.8)]
    path = save_overlay(tmp_path / "sub" / "overlay.png", image, heat, boxes)
    with Image.open(path) as saved:
        assert saved.size == (W, H)
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(render_overlay(image, heat, boxes)))
    pair = side_by_side(image, render_overlay(image, heat, boxes), gap=6)
    assert pair.mode == "RGB" and pair.size == (2 * W + 6, H)
    np.testing.assert_array_equal(np.asarray(pair)[:, :W], _base(image))
    small = side_by_side(image, Image.new("RGB", (W // 2, H // 2)), gap=0)
    assert small.size == (2 * W, H)


def test_an_image_on_another_scale_is_refused_not_drawn_white(image: np.ndarray) -> None:
    # a 12-bit image as uint16, the same as floats 0..255, or a Pillow I;16 image used to be clipped to
    # [0, 1] and drawn almost all white, with no error
    twelve_bit = np.round(image * 4095).astype(np.uint16)
    for wrong in (twelve_bit, twelve_bit.astype(np.int64), Image.fromarray(twelve_bit)):
        with pytest.raises(ValueError, match=r"uint16|int64"):
            render_overlay(wrong)
    with pytest.raises(ValueError, match=r"to 25[0-9.]*: a float image must be in \[0, 1\]"):
        render_overlay(image * 255)
    with pytest.raises(ValueError, match="uint16"):
        side_by_side(twelve_bit, render_overlay(image))
    # floats in [0, 1] with a little resampling overshoot, uint8, bool and 8-bit Pillow images still draw
    overshoot = image.copy()
    overshoot[0, 0], overshoot[0, 1] = 1.08, -0.05
    assert np.asarray(render_overlay(overshoot))[0, :2, 0].tolist() == [255, 0]
    np.testing.assert_array_equal(np.asarray(render_overlay(_base(image))), _base(image))
    np.testing.assert_array_equal(
        np.asarray(render_overlay(Image.fromarray(_base(image)[..., 0]))), _base(image)
    )
    assert np.asarray(render_overlay(image > 0.5)).max() == 255


def test_boxes_may_be_plain_coordinates_or_an_array(image: np.ndarray) -> None:
    # an (N, 4) array raised "truth value of an array ... is ambiguous", a tuple "'tuple' object has
    # no attribute 'x0'"; BoxLike is what the rest of fracsight.explain takes
    scored = np.asarray(render_overlay(image, None, [DetectedBox(20, 30, 80, 90, 0.7)], show_scores=False))
    for boxes in ([(20, 30, 80, 90)], np.array([[20.0, 30.0, 80.0, 90.0]])):
        np.testing.assert_array_equal(np.asarray(render_overlay(image, None, boxes)), scored)
    plain = np.asarray(render_overlay(image, None, np.zeros((0, 4))))
    np.testing.assert_array_equal(plain, _base(image))
