from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from fracsight.explain import (
    class_activation_map,
    combine_maps,
    fracture_probability_map,
    heatmap_to_original,
    normalize_map,
    sigmoid,
    upsample_to_input,
)
from fracsight.preprocessing import Letterbox, letterbox, letterbox_geometry


def test_sigmoid_values_and_extremes() -> None:
    x = np.array([-3.0, -0.5, 0.0, 0.5, 3.0], dtype=np.float32)
    np.testing.assert_allclose(sigmoid(x), 1.0 / (1.0 + np.exp(-x)), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = sigmoid(np.array([-1e4, 1e4]))
    np.testing.assert_array_equal(big, [0.0, 1.0])
    assert sigmoid(0.0) == pytest.approx(0.5)


def test_cam_is_the_weighted_channel_sum_and_pools_to_the_logit() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(8, 5, 6)).astype(np.float32)
    weights = rng.normal(size=8).astype(np.float32)
    bias = 0.3
    manual = np.zeros((5, 6), dtype=np.float64)
    for c in range(8):
        manual += float(weights[c]) * features[c]
    cam = class_activation_map(features, weights)
    assert cam.shape == (5, 6) and cam.dtype == np.float32
    np.testing.assert_allclose(cam, manual, rtol=1e-5, atol=1e-5)
    logit = float(weights @ features.mean(axis=(1, 2))) + bias
    assert float(cam.mean()) + bias == pytest.approx(logit, abs=1e-5)


def test_cam_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        class_activation_map(np.zeros((4, 3, 3)), np.zeros(5))
    with pytest.raises(ValueError):
        class_activation_map(np.zeros((3, 3)), np.zeros(3))


def test_combine_maps_weighted_mean() -> None:
    a, b = np.zeros((2, 2)), np.ones((2, 2))
    np.testing.assert_allclose(combine_maps([a, b]), 0.5)
    np.testing.assert_allclose(combine_maps([a, b], weights=[1, 3]), 0.75)
    with pytest.raises(ValueError):
        combine_maps([a, np.ones((3, 3))])
    with pytest.raises(ValueError):
        combine_maps([])


def test_fracture_probability_map_parts() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(4, 3, 3))
    weights = rng.normal(size=4)
    mask = rng.normal(size=(1, 3, 3))
    cam_p = sigmoid(class_activation_map(features, weights) - 1.0)
    mask_p = sigmoid(mask[0])
    np.testing.assert_allclose(fracture_probability_map(mask_logits=mask), mask_p, rtol=1e-6)
    np.testing.assert_allclose(fracture_probability_map(features, weights, -1.0), cam_p, rtol=1e-6)
    both = fracture_probability_map(features, weights, -1.0, mask)
    np.testing.assert_allclose(both, (cam_p + mask_p) / 2, rtol=1e-6)
    with pytest.raises(ValueError):
        fracture_probability_map()


def test_normalize_map() -> None:
    m = normalize_map(np.array([[2.0, 4.0], [6.0, np.nan]]))
    np.testing.assert_allclose(m, [[0.0, 0.5], [1.0, 0.0]])  # NaN ignored, then shown as 0
    np.testing.assert_array_equal(normalize_map(np.full((3, 3), 7.0)), np.zeros((3, 3)))
    out = normalize_map(np.arange(6.0).reshape(2, 3))
    assert out.min() == 0.0 and out.max() == 1.0 and out.dtype == np.float32


def test_upsample_matches_pil_bilinear() -> None:
    rng = np.random.default_rng(2)
    m = rng.random((12, 12)).astype(np.float32)
    ours = upsample_to_input(m, 96)
    pil = np.asarray(Image.fromarray(m).resize((96, 96), Image.Resampling.BILINEAR))
    assert ours.shape == (96, 96)
    np.testing.assert_allclose(ours, pil, atol=1e-4)
    np.testing.assert_array_equal(upsample_to_input(np.full((3, 3), 0.25), (5, 7)), np.full((5, 7), 0.25))


def test_heatmap_to_original_follows_the_letterbox() -> None:
    _, lb = letterbox(np.zeros((300, 500), dtype=np.float32), 384)
    assert lb.pad_y > 0 and lb.pad_x == 0  # non-trivial letterbox
    j = np.arange(384, dtype=np.float32) + 0.5
    # Maps whose value is the model-input coordinate: bilinear is exact on linear ramps.
    x_ramp = np.tile(j, (384, 1))
    y_ramp = x_ramp.T.copy()
    hx = heatmap_to_original(x_ramp, lb)
    hy = heatmap_to_original(y_ramp, lb)
    assert hx.shape == (300, 500) and hx.dtype == np.float32
    xs = np.arange(500) + 0.5
    ys = np.arange(300) + 0.5
    sx, sy = lb.scales
    np.testing.assert_allclose(hx[150, 1:-1], (xs * sx + lb.pad_x)[1:-1], atol=1e-3)
    np.testing.assert_allclose(hy[:, 250], ys * sy + lb.pad_y, atol=1e-3)


def test_heatmap_to_original_agrees_with_crop_then_resize() -> None:
    _, lb = letterbox(np.zeros((300, 500), dtype=np.float32), 384)
    yy, xx = np.mgrid[0:12, 0:12]
    m = np.exp(-((yy - 5.5) ** 2 + (xx - 3.0) ** 2) / 8.0).astype(np.float32)
    ours = heatmap_to_original(m, lb)
    x0, y0, x1, y1 = lb.content
    crop = upsample_to_input(m, 384)[y0:y1, x0:x1]
    ref = np.asarray(Image.fromarray(crop).resize((500, 300), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(ours, ref, atol=0.02)
    # Deterministic.
    np.testing.assert_array_equal(ours, heatmap_to_original(m, lb))


def test_explain_imports_neither_torch_nor_matplotlib() -> None:
    code = (
        "import sys, fracsight.explain; "
        "bad = [m for m in ('torch', 'matplotlib', 'scipy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_letterbox_of_reduced_pixels_has_the_full_resolution_geometry() -> None:
    full = np.random.default_rng(0).random((843, 1025)).astype(np.float32)
    reduced = np.asarray(Image.fromarray(full).resize((513, 422), Image.Resampling.BOX))
    square_full, lb_full = letterbox(full, 384)
    square, lb = letterbox(reduced, 384, full_size=(843, 1025))
    assert lb == lb_full and lb.original_size == (843, 1025)
    assert square.shape == (384, 384)
    x0, y0, x1, y1 = lb.content
    assert square[:y0].max() == 0 and square[y1:].max() == 0  # the same padding rows
    assert abs(float(square[y0:y1, x0:x1].mean()) - float(square_full[y0:y1, x0:x1].mean())) < 1e-3


@pytest.mark.parametrize(
    ("map_shape", "size", "original"),
    [
        ((12, 12), 384, (1024, 819)),  # a feature map to a radiograph: four blocks of rows
        ((12, 12), 96, (96, 96)),  # the box grid: one block
        ((384, 384), 384, (1024, 842)),  # an input-resolution map
        ((12, 12), 384, (20, 2000)),  # more map rows than output rows: shrinking
    ],
)
def test_resampling_is_the_blend_of_two_rows_in_float32(
    map_shape: tuple[int, int], size: int, original: tuple[int, int]
) -> None:
    """Each output row is (1 - f) * upper + f * lower of the horizontally resampled map rows, in
    float32: the values the benchmark round kept (docs/benchmark.md) while building them in blocks."""
    m = np.random.default_rng(3).random(map_shape, dtype=np.float32)
    h, w = original
    lb = Letterbox(size=size, original_size=original)
    ours = heatmap_to_original(m, lb)
    mx, my = lb.to_model(np.arange(w) + 0.5, np.arange(h) + 0.5)
    ys = np.clip(np.asarray(my) * (map_shape[0] / size) - 0.5, 0, map_shape[0] - 1)
    xs = np.clip(np.asarray(mx) * (map_shape[1] / size) - 0.5, 0, map_shape[1] - 1)
    x0 = np.floor(xs).astype(int)
    fx = (xs - x0).astype(np.float32)
    cols = m[:, x0] * (1.0 - fx) + m[:, np.minimum(x0 + 1, map_shape[1] - 1)] * fx
    want = np.empty((h, w), dtype=np.float32)
    for r, y in enumerate(ys):
        y0 = int(np.floor(y))
        fy = np.float32(y - y0)
        want[r] = cols[y0] * (np.float32(1.0) - fy) + cols[min(y0 + 1, map_shape[0] - 1)] * fy
    assert ours.dtype == np.float32 and ours.shape == (h, w)
    np.testing.assert_array_equal(ours, want)


@pytest.mark.parametrize("original", [(1600, 32), (2000, 300), (320, 3200), (1024, 819), (454, 373)])
def test_the_letterbox_maps_each_axis_by_its_own_whole_pixel_scale(original: tuple[int, int]) -> None:
    """The content is resized to whole pixels on each axis: a 1600 x 32 image becomes 384 x 8 (8/32 =
    0.25 across, 0.24 down). One scale for both axes put a box at row 1440 at row 1382 and no box
    below row 1536; the image's corners must land on the content's corners, and back."""
    lb = letterbox_geometry(original, 384)
    h, w = original
    x0, y0, x1, y1 = lb.content
    mx, my = lb.to_model(np.array([0.0, w]), np.array([0.0, h]))
    np.testing.assert_allclose([*mx, *my], [x0, x1, y0, y1])
    ox, oy = lb.to_original(np.array([x0, (x0 + x1) / 2, x1]), np.array([y0, (y0 + y1) / 2, y1]))
    np.testing.assert_allclose([*ox, *oy], [0, w / 2, w, 0, h / 2, h])
    _, geometry = letterbox(np.ones(original, dtype=np.float32), 384)
    assert geometry == lb
