from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracsight.explain import DetectedBox, colormap_lut, render_overlay, save_overlay, side_by_side
from fracsight.explain.overlay import overlay_words
from fracsight.inference.results import NOTICE, Prediction
from fracsight.io import ImageMetadata

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


CAPTION = (
    "fracsight: fracture suspected",
    "fracture probability 0.85 (threshold 0.18); region hand",  # fits a line of 480 px
    "fracsight is a decision aid for trained readers, not a diagnosis.",
)


def _band(out: Image.Image, image_height: int) -> np.ndarray:
    return np.asarray(out)[image_height:]


def test_caption_is_written_below_the_image_which_keeps_its_place(image: np.ndarray) -> None:
    # an overlay used to carry no word: no decision, no probability, no notice, nothing saying what
    # the colours mean; a PNG passed on from --overlay-dir or the API looked like a finding
    boxes = [DetectedBox(40, 50, 100, 90, 0.87)]
    plain = np.asarray(render_overlay(image, None, boxes))
    out = render_overlay(image, None, boxes, caption=CAPTION)
    a = np.asarray(out)
    assert out.width == 480 and out.height > H + 3 * 12  # three lines at least 12 px high
    np.testing.assert_array_equal(a[:H, :W], plain)  # boxes still address the image's pixels
    assert not a[:H, W:].any()  # a narrow image's band is wider: black beside the image
    band = _band(out, H)
    white = np.all(band > 200, axis=2)
    assert white.any()
    assert white[:, :4].sum() == 0 and white[:, -4:].sum() == 0  # a margin either side
    rows = np.nonzero(white.any(axis=1))[0]
    assert len(np.split(rows, np.nonzero(np.diff(rows) > 1)[0] + 1)) == 3  # one text line each


def test_long_caption_lines_wrap_inside_the_band(image: np.ndarray) -> None:
    words = " ".join(["not reliable: input outside what the model was made for"] * 6)
    out = render_overlay(image, caption=[words])
    white = np.all(_band(out, H) > 200, axis=2)
    assert out.width == 480 and white.any()
    assert not white[:, -4:].any()  # cut at the edge before
    rows = np.nonzero(white.any(axis=1))[0]
    assert len(np.split(rows, np.nonzero(np.diff(rows) > 1)[0] + 1)) >= 4
    wide = np.zeros((50, 3000), dtype=np.float32)
    assert render_overlay(wide, caption=[words]).width == 3000  # a wide image keeps its width


def test_legend_shows_the_colour_scale_of_the_heatmap(image: np.ndarray) -> None:
    heat = np.zeros((H, W), dtype=np.float32)
    heat[30:60, 50:90] = 1.0
    out = render_overlay(image, heat, legend="Fracture heatmap: where the model suspects a fracture")
    band = _band(out, H).astype(int)
    lut = colormap_lut("inferno").astype(int)
    # rows of the band run from the colour of min_heat (0.1) at the left margin (6 px) to that of 1.0
    low, high = lut[round(0.1 * 255)], lut[255]
    bar_rows = [r for r in band if np.array_equal(r[6], low) and np.array_equal(r[-7], high)]
    assert len(bar_rows) >= 12
    assert np.abs(np.diff(bar_rows[0][6:-6], axis=0)).max() <= 8  # a smooth ramp
    # the same overlay above, and no legend without a heatmap to explain
    np.testing.assert_array_equal(np.asarray(out)[:H, :W], np.asarray(render_overlay(image, heat)))
    assert render_overlay(image, None, legend="Fracture heatmap").size == (W, H)


def test_box_lines_stay_visible_on_white_film() -> None:
    # cyan (0, 230, 255) alone on white film or bright bone was barely visible
    white = np.ones((300, 400), dtype=np.float32)
    a = np.asarray(render_overlay(white, None, [(100, 80, 300, 220)])).astype(int)
    column = a[78:100, 200]  # across the top edge (y 80); lines 2 px thick on a 300 px side
    assert column[:2].min() == 255  # nothing drawn outside the box's edges
    assert [tuple(p) for p in column[2:4]] == [(0, 230, 255)] * 2  # the cyan line at the edge
    assert column[4].max() < 40  # a dark line inside it
    assert column[5:].min() == 255  # then the film, untouched
    assert a[150, 102].max() < 40 and a[150, 297].max() < 40 and a[217, 200].max() < 40  # every side


def test_a_label_does_not_cover_another_box() -> None:
    # two overlapping boxes (IMG0000025 of FracAtlas): the second one's score was written above it,
    # across the first box's edge and over the bone inside it
    grey = np.full((819, 1024), 0.5, dtype=np.float32)
    first, second = DetectedBox(565, 145, 645, 226, 0.27), DetectedBox(556, 186, 624, 265, 0.27)

    def drawn(scores: bool) -> np.ndarray:
        return np.any(
            np.asarray(render_overlay(grey, None, [first, second], show_scores=scores)) != 128, axis=2
        )

    labels = drawn(True) & ~drawn(False)
    assert labels[:145].any()  # the first box's score above it
    assert not labels[145:226, 565:645].any()  # none inside the first box
    assert labels[265:].any()  # the second's below its box


def test_where_labels_must_overlap_the_top_boxs_score_is_on_top() -> None:
    """Two boxes as tall as a thumbnail, one over the other: no free place for either label, and the
    lower score's label, drawn last, covered the top box's "0.30"."""
    grey = np.full((100, 120), 0.5, dtype=np.float32)
    top, low = DetectedBox(10, 0, 60, 100, 0.30), DetectedBox(12, 0, 62, 100, 0.24)

    def drawn(boxes: list[DetectedBox], scores: bool) -> np.ndarray:
        return np.asarray(render_overlay(grey, None, boxes, show_scores=scores))

    label = np.any(drawn([top], True) != drawn([top], False), axis=2)
    assert label.any()
    assert np.array_equal(drawn([top, low], True)[label], drawn([top], True)[label])


def _prediction(probability: float, *, reliable: bool = True, localization: str = "fracture") -> Prediction:
    return Prediction(
        source="wrist.png",
        fracture_probability=probability,
        fracture_suspected=probability >= 0.18,
        operating_point="balanced",
        threshold=0.18,
        decisions={"balanced": probability >= 0.18},
        region=None,
        region_probabilities={},
        boxes=(DetectedBox(40, 50, 100, 90, 0.41),),
        classification=None,
        reliable=reliable,
        warnings=(),
        model="tiny v1",
        metadata=ImageMetadata("png", (H, W), 8, "L"),
        localization=localization,
    )


def test_overlay_words_say_the_decision_its_numbers_the_notice_and_the_colours() -> None:
    caption, legend = overlay_words(_prediction(0.853))
    assert caption == [
        "fracsight: fracture suspected",
        "fracture probability 0.85 (operating point balanced, threshold 0.18)",
        NOTICE,
    ]
    assert legend is not None and legend.startswith("Heatmap: the fracture probability")
    # it said a box's label was "the highest value inside it": the default's detector labels its boxes
    # with its own score (0.39 on a map that peaks at 0.93 inside that box)
    assert "its own score" in legend and "highest value" not in legend
    caption, _ = overlay_words(_prediction(0.9, reliable=False))
    assert (
        caption[0].startswith("fracsight: not reliable") and "not reliable, for reference only" in caption[1]
    )
    caption, _ = overlay_words(_prediction(0.05))
    assert (
        caption[0] == "fracsight: no fracture detected" and "below the threshold, not suspected" in caption[1]
    )
    assert overlay_words(_prediction(0.5, localization="none"))[1] is None


def test_the_legend_names_box_labels_only_where_boxes_are_drawn() -> None:
    """The legend explained "a box's label" on overlays with no box (none found, or boxes hidden)."""
    from dataclasses import replace

    assert "its own score" not in overlay_words(_prediction(0.853), boxes_drawn=False)[1]
    assert "its own score" not in overlay_words(replace(_prediction(0.853), boxes=()))[1]
    # nor did the caption say what the boxes it does not draw were
    for prediction in (_prediction(0.05), _prediction(0.9, reliable=False)):
        assert "boxes:" in overlay_words(prediction)[0][1]
        assert "boxes:" not in overlay_words(prediction, boxes_drawn=False)[0][1]


def test_a_class_map_of_an_uncertain_class_says_so() -> None:
    """The class heatmap's caption said "where the model sees leg" beside a card saying "class
    uncertain (top: leg)", and its colour bar's 0.1 to 1.0 beside "from chance (0) to certain (1)"."""
    from dataclasses import replace

    from fracsight.inference.results import CLASS_ACTIVATION, ClassResult

    probabilities = {"hand": 0.2, "leg": 0.62, "hip": 0.18}
    for floor, seen in ((0.74, "leg, the most likely class but uncertain"), (0.5, "leg")):
        classified = ClassResult.from_probabilities(probabilities, floor)
        prediction = replace(_prediction(0.5, localization=CLASS_ACTIVATION), classification=classified)
        legend = overlay_words(prediction)[1]
        assert (
            legend == f"Class heatmap: where the model sees {seen}; weakest to strongest, not fracture sites"
        )
    # on an input the model cannot be relied on, the legend named a class the card said not to trust
    legend = overlay_words(replace(prediction, reliable=False))[1]
    assert legend == (
        "Class heatmap: where the model looked most (not reliable: for reference only);"
        " weakest to strongest, not fracture sites"
    )


def test_the_band_of_a_long_strip_stays_small() -> None:
    """The text size followed the width alone, so the band below a 32 x 80,000 strip was 14,659
    rows high (a 1,175-megapixel overlay; 32 x 1,500,000 with overlay=true took the server down)."""
    strip = np.zeros((32, 80_000), dtype=np.float32)
    out = render_overlay(strip, caption=[*CAPTION, NOTICE], legend="Heatmap: the fracture probability")
    assert out.width == 80_000 and out.height < 32 + 150
    tall = render_overlay(np.zeros((3000, 2000), dtype=np.float32), caption=CAPTION)
    assert tall.height - 3000 > 3 * 33  # a radiograph's text keeps its size (a sixtieth of the width)


def test_a_narrow_tall_strip_is_not_widened_for_its_band() -> None:
    """The band is at least 480 px wide, and the picture above it was widened with it: a 32 x
    1,562,500 strip (under the 50-megapixel limit) gave a 750-megapixel overlay, 3.8 GB of server
    memory for one request. Beyond 4 megapixels of margin the band keeps the picture's width."""
    out = render_overlay(np.zeros((200_000, 32), dtype=np.float32), caption=[*CAPTION, NOTICE])
    assert out.width == 32 + 4_000_000 // 200_000 and out.height > 200_000  # 52 px: 4 MP of margin
    assert render_overlay(np.zeros((10_000, 32), dtype=np.float32), caption=CAPTION).width == 432
    small = render_overlay(np.zeros((5000, 100), dtype=np.float32), caption=CAPTION)
    assert small.width == 480  # a thumbnail's caption still gets its room


def test_boxes_none_draws_no_box_as_heat_none_draws_no_heat(image: np.ndarray) -> None:
    # it was "'NoneType' object is not iterable" from inside the drawing code
    assert np.array_equal(np.asarray(render_overlay(image, None, None)), np.asarray(render_overlay(image)))


def test_a_caption_given_as_none_or_a_generator_is_drawn_as_given(image: np.ndarray) -> None:
    """The type check read a generator caption before the drawing did: the band came out empty,
    the decision and the decision-aid notice lost without a word; None failed inside the check."""
    lines = ["fracsight: fracture suspected", NOTICE]
    as_list = np.asarray(render_overlay(image, caption=lines))
    assert np.array_equal(np.asarray(render_overlay(image, caption=(line for line in lines))), as_list)
    assert np.array_equal(np.asarray(render_overlay(image, caption=None)), np.asarray(render_overlay(image)))
