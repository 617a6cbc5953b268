"""The web app's plain logic (no Streamlit): arguments, examples, cards for every head combination,
bars, heatmap captions, sidebar texts, views, table and downloads, launcher."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import fracsight.app as app_pkg
from fracsight.app.logic import (
    HIDDEN_ON_SCREEN,
    AppConfig,
    card_for,
    card_markdown,
    class_bars_html,
    class_operating_point_text,
    class_summary,
    csv_download,
    display_columns,
    duplicates_text,
    eight_bit,
    escape_markdown,
    failure_from_exception,
    failure_message,
    first_of_each,
    folder_names,
    heads_text,
    json_text,
    left_out_text,
    operating_point_text,
    overlay_caption,
    overlay_file_name,
    overlay_png,
    parse_app_args,
    pick_examples,
    probability_bar_html,
    render_views,
    results_announcement,
    study_card_for,
    table_rows,
    verdict,
    view_data,
)
from fracsight.bundle import BundleSpec, ClassOperatingPoint, HeadSpec, OperatingPoint
from fracsight.errors import UnsupportedFormatError
from fracsight.explain import DetectedBox
from fracsight.inference import NOTICE, FailedPrediction, Prediction, StudyPrediction
from fracsight.inference.ood import NOT_RELIABLE
from fracsight.inference.results import CLASS_ACTIVATION, NO_LOCALIZATION, ClassResult
from fracsight.inference.tabular import ALL_INPUTS, result_columns
from fracsight.io import ImageMetadata

H, W = 60, 80
TYPES = {"avulsion": 0.2, "greenstick": 0.7, "other": 0.1}
REGIONS = ("hand", "leg")
OPERATING_POINTS = (
    OperatingPoint("balanced", 0.5, "Youden's J on validation", 0.8, 0.75),
    OperatingPoint("triage", 0.2, "sensitivity 0.95 on validation"),
)


def make_spec(*heads: str, classes: tuple[str, ...] = tuple(TYPES)) -> BundleSpec:
    """A bundle record with exactly ``heads`` (``fracture``, ``class``, ``region``)."""
    specs = {
        "fracture": HeadSpec("fracture", "binary", ("fracture",)),
        "class": HeadSpec("class", "multiclass", classes),
        "region": HeadSpec("region", "multilabel", REGIONS),
    }
    fracture = "fracture" in heads
    return BundleSpec(
        name="tiny",
        version="1",
        architecture="lite0",
        input_size=64,
        heads=tuple(specs[h] for h in heads),
        operating_points=OPERATING_POINTS if fracture else (),
        default_operating_point="balanced" if fracture else "",
        class_operating_point=(
            ClassOperatingPoint(0.6, "lowest top-1 probability right 0.9 of the time", 0.92, 0.81)
            if "class" in heads
            else None
        ),
    )


def make_prediction(
    probability: float = 0.8,
    *,
    threshold: float = 0.5,
    reliable: bool = True,
    warnings: tuple[str, ...] = (),
    boxes: tuple[DetectedBox, ...] = (DetectedBox(10, 5, 30, 25, 0.9),),
    size: tuple[int, int] = (H, W),
    source: str = "wrist.png",
    classes: dict[str, float] | None = None,
    min_probability: float = 0.6,
) -> Prediction:
    """A fracture+region prediction (with a class result when ``classes`` is given)."""
    rng = np.random.default_rng(0)
    heat = np.zeros(size, np.float32)
    heat[5:25, 10:30] = 0.9
    return Prediction(
        source=source,
        fracture_probability=probability,
        fracture_suspected=probability >= threshold,
        operating_point="balanced",
        threshold=threshold,
        decisions={"balanced": probability >= threshold},
        region="hand",
        region_probabilities={"hand": 0.91, "leg": 0.05},
        boxes=boxes,
        classification=None if classes is None else ClassResult.from_probabilities(classes, min_probability),
        reliable=reliable,
        warnings=warnings,
        model="tiny v1",
        metadata=ImageMetadata("png", size, 8, "L"),
        heatmap=heat,
        pixels=rng.random(size).astype(np.float32),
    )


def class_only(pred: Prediction, *, region: bool = False) -> Prediction:
    """``pred`` as a bundle without a fracture head (and without a region head unless ``region``)
    gives it: no fracture fields, no boxes, the heatmap shows where the predicted class is seen."""
    return replace(
        pred,
        fracture_probability=None,
        fracture_suspected=None,
        operating_point=None,
        threshold=None,
        decisions={},
        boxes=(),
        localization=CLASS_ACTIVATION,
        region=pred.region if region else None,
        region_probabilities=pred.region_probabilities if region else {},
    )


def make_study(probability: float = 0.7, classes: dict[str, float] | None = None) -> StudyPrediction:
    return StudyPrediction(
        "uploaded study",
        ("a", "b"),
        True,
        probability,
        probability >= 0.5,
        "balanced",
        0.5,
        None if classes is None else ClassResult.from_probabilities(classes, 0.6),
    )


# ---- arguments and examples ----------------------------------------------------------------------------
def test_parse_app_args_reads_ours_and_ignores_a_test_runners() -> None:
    config = parse_app_args(["--model", "/b", "--examples", "/data", "-m", "slow", "-k", "x", "tests/"])
    assert config == AppConfig(model="/b", examples=Path("/data"))
    assert parse_app_args([]) == AppConfig()
    assert parse_app_args(["--n-examples", "3", "--operating-point", "triage"]).operating_point == "triage"


def _touch_images(folder: Path, n: int, prefix: str) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"{prefix}{i}.jpg").write_bytes(b"x")


def test_pick_examples_draws_from_every_subfolder(tmp_path: Path) -> None:
    _touch_images(tmp_path / "images" / "Fractured", 5, "f")
    _touch_images(tmp_path / "images" / "Non_fractured", 7, "n")
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    _touch_images(tmp_path / ".hidden", 3, "h")
    picked = pick_examples(tmp_path, 4)
    assert len(picked) == 4 and len(set(picked)) == 4
    assert sorted(p.parent.name for p in picked) == [
        "Fractured",
        "Fractured",
        "Non_fractured",
        "Non_fractured",
    ]
    assert pick_examples(tmp_path, 4) == picked  # reproducible
    # not in the groups' order: six examples of two folders alternated fractured / not fractured
    # (the first folder by name first) at every start, which gave the answers away
    orders = {tuple(p.parent.name for p in pick_examples(tmp_path, 6, seed=seed)) for seed in range(8)}
    assert ("Fractured", "Non_fractured") * 3 not in orders and len(orders) > 1
    assert len(pick_examples(tmp_path, 50)) == 12
    assert pick_examples(tmp_path / "missing", 4) == [] and pick_examples(tmp_path, 0) == []


def test_examples_that_do_not_read_are_replaced_from_their_own_group(tmp_path: Path) -> None:
    """The app drew 10n examples and kept the first n readable ones of the shuffle: FracAtlas gave
    5 fractured and 1 normal, hand/hip/leg no hand. A file turned down is replaced from its group."""
    for group in ("hand", "hip", "leg"):
        _touch_images(tmp_path / group, 50, group)
    for seed in range(5):
        picked = pick_examples(tmp_path, 6, seed=seed, accept=lambda p: not p.stem.endswith("3"))
        assert sorted(p.parent.name for p in picked) == ["hand", "hand", "hip", "hip", "leg", "leg"]
        assert not any(p.stem.endswith("3") for p in picked)
    asked: list[Path] = []
    assert pick_examples(tmp_path, 6, accept=lambda p: asked.append(p) is not None) == []
    assert len(asked) == 60  # a folder of files that are no images is not read to its end
    # a first folder of 80 reports: it used up every try, and the images after it were never offered
    _touch_images(tmp_path / "0_reports", 80, "r")
    picked = pick_examples(tmp_path, 6, accept=lambda p: p.parent.name != "0_reports")
    assert len(picked) == 6 and "0_reports" not in {p.parent.name for p in picked}
    # a PACS tree of 300 series of one report each: still 60 tried in all, not one a series
    for i in range(300):
        _touch_images(tmp_path / "series" / f"SE{i:03d}", 1, "r")
    asked.clear()
    assert pick_examples(tmp_path / "series", 6, accept=lambda p: asked.append(p) is not None) == []
    assert len(asked) == 60


# ---- cards ---------------------------------------------------------------------------------------------
def test_card_for_a_suspected_fracture() -> None:
    card = card_for(make_prediction(0.83, warnings=("low contrast",)))
    assert card.title == "wrist.png"
    assert card.verdict.words == "fracture suspected" and card.verdict.severity == "suspected"
    assert card.verdict.headline == "Fracture suspected" and card.verdict.markdown_colour == "red"
    assert card.probability == "Fracture probability 0.830 (threshold 0.500, operating point balanced)"
    assert card.region == "Body region: hand (0.91), of the 2 the model knows: hand, leg"
    sure = card_for(replace(make_prediction(), region_probabilities={"hand": 0.9998, "leg": 0.0002}))
    assert sure.region == "Body region: hand (>0.99), of the 2 the model knows: hand, leg"  # was 1.00
    scores = "box score 0.90, as labelled on the image; not the fracture probability"
    assert card.boxes == f"1 suspected area boxed ({scores})" and card.box_count == 1
    assert card.warnings == ("low contrast",) and card.unreliable is None and card.classification is None
    assert card.lines == (card.probability, card.boxes, card.region)
    assert card.heatmap == "Fracture heatmap: where the model suspects a fracture"


def test_card_for_a_fracture_only_model_has_no_region_line() -> None:
    pred = replace(make_prediction(0.1, boxes=()), region=None, region_probabilities={})
    card = card_for(pred)
    assert card.verdict.headline == "No fracture detected" and card.verdict.severity == "clear"
    assert card.verdict.markdown_colour == "green" and card.verdict.colour == "#2e7d32"
    assert card.region is None and card.boxes == "No area boxed" and card.box_count == 0
    assert card.lines == (card.probability, "No area boxed")
    suspected = card_for(replace(make_prediction(0.9, boxes=()), region=None, region_probabilities={}))
    assert suspected.verdict.severity != "clear"  # a suspected fracture without a box is no all-clear
    assert suspected.boxes == "No single area stands out enough to box: review the whole image"
    assert not any("region" in line.lower() or "class" in line.lower() for line in card.lines)


def test_card_for_an_unreliable_input_is_prominent() -> None:
    card = card_for(make_prediction(0.9, reliable=False))
    assert card.verdict.severity == "unreliable" and card.verdict.words.startswith("not reliable")
    assert card.unreliable is not None and "Not reliable" in card.unreliable
    assert "probability" not in card.unreliable  # the same words for every kind of model
    assert verdict(replace(make_study(), reliable=False)).severity == "unreliable"
    # above the threshold, but nothing on the card or the overlay calls its areas "suspected": they
    # once did, under the banner that says not to act on it
    assert card.box_count == 1 and not card.boxes_suspected
    assert card.boxes.startswith("1 area the model weighed most boxed (not reliable: for reference only)")
    assert card.heatmap == "Fracture heatmap: where the model looked most (not reliable: for reference only)"
    caption = overlay_caption(card)
    assert "suspect" not in f"{card.boxes} {card.heatmap} {caption}"
    assert caption.endswith("; boxes around the areas it weighed most")
    assert overlay_caption(card, show_heatmap=False) == (
        "Heatmap hidden; boxes around the areas it weighed most (not reliable: for reference only)"
    )


def test_card_for_a_class_only_model_names_the_class_and_nothing_it_lacks() -> None:
    pred = class_only(make_prediction(classes={"avulsion": 0.8, "greenstick": 0.15, "other": 0.05}))
    card = card_for(pred)
    assert card.verdict.words == "most likely avulsion"
    assert card.verdict.severity == "class" and card.verdict.markdown_colour == "blue"
    assert card.probability is None and card.boxes is None and card.region is None
    c = card.classification
    assert c.label == "Class" and c.text == "Class: avulsion (0.80)" and c.note is None
    assert c.confident and c.min_probability == 0.6
    assert c.probabilities == (("avulsion", 0.8), ("greenstick", 0.15), ("other", 0.05))
    assert card.lines == ("Class: avulsion (0.80)",)
    assert card.heatmap == "Class heatmap: where the model sees avulsion (it does not locate fractures)"
    assert "fracture probability" not in " ".join(card.lines).lower()
    # below the minimum, the caption named the class the card withholds as if it were the answer
    unsure = card_for(class_only(make_prediction(classes={"avulsion": 0.5, "greenstick": 0.3, "other": 0.2})))
    assert unsure.heatmap == (
        "Class heatmap: where the model sees avulsion, the most likely class but uncertain"
        " (it does not locate fractures)"
    )


def test_the_class_map_of_an_input_the_model_cannot_be_relied_on_names_no_class() -> None:
    """A random-noise colour image was "not reliable" on the card while the viewer's caption said
    "where the model sees hand": the class map of such an input is marked as the fracture map is."""
    pred = class_only(make_prediction(reliable=False, classes={"hand": 0.8, "leg": 0.15, "hip": 0.05}))
    assert (
        card_for(pred).heatmap
        == "Class heatmap: where the model looked most (not reliable: for reference only);"
        " it does not locate fractures"
    )


def test_card_for_an_uncertain_class_gives_the_minimum() -> None:
    pred = class_only(make_prediction(classes={"avulsion": 0.45, "greenstick": 0.35, "other": 0.2}))
    card = card_for(pred)
    assert card.verdict.words == "class uncertain (top: avulsion)" and card.verdict.severity == "class"
    c = card.classification
    assert not c.confident
    assert c.text == "Class uncertain: the most likely, avulsion (0.45), is below the minimum 0.60"


def test_card_for_class_and_region() -> None:
    card = card_for(class_only(make_prediction(classes=TYPES), region=True))
    assert card.probability is None and card.boxes is None
    assert card.lines == (
        "Class: greenstick (0.70)",
        "Body region: hand (0.91), of the 2 the model knows: hand, leg",
    )


def test_card_for_fracture_and_class_calls_it_the_fracture_type() -> None:
    card = card_for(make_prediction(0.8, classes=TYPES))
    assert card.verdict.words == "fracture suspected, most likely greenstick"
    assert card.classification.label == "Fracture type"
    assert card.classification.text == "Fracture type: greenstick (0.70)" and card.classification.note is None
    assert card.lines == (card.probability, card.boxes, "Fracture type: greenstick (0.70)", card.region)
    assert card.heatmap.startswith("Fracture heatmap")  # the fracture map, never the class's
    uncertain = card_for(make_prediction(0.8, classes=TYPES, min_probability=0.75))
    assert uncertain.verdict.words == "fracture suspected, type uncertain"
    assert uncertain.classification.text.startswith("Fracture type uncertain: the most likely, greenstick")
    clear = card_for(make_prediction(0.2, classes=TYPES))
    assert clear.verdict.words == "no fracture detected"
    assert clear.classification.note == "No fracture is suspected, so the type says little here."


def test_overlay_caption_says_what_the_map_shows() -> None:
    fracture = card_for(make_prediction())
    assert overlay_caption(fracture) == (
        "Fracture heatmap: where the model suspects a fracture; boxes around the suspected areas"
    )
    assert (
        overlay_caption(fracture, show_boxes=False) == "Fracture heatmap: where the model suspects a fracture"
    )
    assert overlay_caption(fracture, show_heatmap=False) == "Heatmap hidden; boxes around the suspected areas"
    assert overlay_caption(card_for(make_prediction(boxes=()))).endswith("suspects a fracture")
    # a negative decision with boxes: they are not "suspected", on the card or the caption
    negative = card_for(make_prediction(0.2))
    assert negative.verdict.words == "no fracture detected" and negative.box_count == 1
    assert "suspected areas" not in overlay_caption(negative) and "no fracture suspected" in overlay_caption(
        negative
    )
    assert negative.boxes.startswith("1 area the model weighed most boxed, for review; below the threshold")
    # nor does the heatmap say "suspects" next to "No fracture detected"
    assert negative.heatmap == "Fracture heatmap: where the model looked most (no fracture suspected)"
    assert "suspects" not in overlay_caption(negative) and "suspects" not in overlay_caption(
        card_for(make_prediction(0.2, boxes=()))
    )
    assert overlay_caption(negative) == (
        "Fracture heatmap: where the model looked most (no fracture suspected); "
        "boxes around the areas it weighed most"
    )
    assert overlay_caption(negative, show_heatmap=False) == (
        "Heatmap hidden; boxes around the areas it weighed most (no fracture suspected)"
    )
    classes = card_for(class_only(make_prediction(classes=TYPES)))
    assert overlay_caption(classes) == (
        "Class heatmap: where the model sees greenstick (it does not locate fractures)"
    )
    assert overlay_caption(classes, show_heatmap=False) == "Heatmap hidden"
    no_map = card_for(replace(class_only(make_prediction(classes=TYPES)), localization=NO_LOCALIZATION))
    assert overlay_caption(no_map) == overlay_caption(no_map, show_heatmap=False)
    assert overlay_caption(no_map) == "No map for this model: the radiograph only"


def test_overlay_caption_says_when_the_map_tints_nothing() -> None:
    """A fracture map with no area at 0.1 leaves the radiograph untouched: the caption said "where
    the model looked most" over it, and a reader looked for a tint that was not drawn."""
    cool = replace(make_prediction(0.2, boxes=()), heatmap=np.full((H, W), 0.05, np.float32))
    view = view_data(replace(cool, pixels=np.zeros((H, W), np.float32)))
    caption = overlay_caption(card_for(cool), view)
    assert caption == "Fracture heatmap: no area reaches 0.1, so none is tinted (no fracture suspected)"
    assert overlay_caption(card_for(cool), view, show_heatmap=False) == "Heatmap hidden"
    # a positive decision says nothing of "no fracture"; a warm map keeps its words
    positive = replace(cool, fracture_probability=0.8, fracture_suspected=True, decisions={"balanced": True})
    tinted_none = "Fracture heatmap: no area reaches 0.1, so none is tinted"
    assert overlay_caption(card_for(positive), view) == tinted_none
    warm = make_prediction(0.2, boxes=())
    assert "looked most" in overlay_caption(card_for(warm), view_data(replace(warm, pixels=np.zeros((H, W)))))


def test_study_cards_for_every_kind() -> None:
    fracture = study_card_for(make_study(0.7))
    assert (
        fracture.title == "Study verdict (2 views): uploaded study"
        and fracture.verdict.severity == "suspected"
    )
    assert fracture.lines == (
        "Mean fracture probability of the views 0.700 (threshold 0.500, operating point balanced)",
    )
    assert fracture.how == "Fracture probability: the mean of the views." and fracture.unreliable is None
    # the one study of all images is not named; a study folder's is (a folder may hold several)
    assert study_card_for(replace(make_study(0.7), study=ALL_INPUTS)).title == "Study verdict (2 views)"

    both = study_card_for(make_study(0.7, TYPES))
    assert both.verdict.words == "fracture suspected, most likely greenstick"
    assert both.lines[1] == "Fracture type: greenstick (0.70)"
    assert both.how.endswith("class probabilities, each weighted by its fracture probability.")

    study = StudyPrediction(
        "uploaded study", ("a", "b", "c"), False, classification=ClassResult.from_probabilities(TYPES, 0.6)
    )
    classes = study_card_for(study)
    assert (
        classes.title == "Study verdict (3 views): uploaded study"
        and classes.verdict.severity == "unreliable"
    )
    assert classes.probability is None and classes.lines == ("Class: greenstick (0.70)",)
    assert classes.how == "Class: the mean of the views' class probabilities."
    assert classes.unreliable is not None and classes.unreliable.startswith("Not reliable")

    unread = study_card_for(replace(make_study(0.7), reliable=False, unread=("c.png",)))
    assert unread.verdict.severity == "unreliable"
    assert unread.unreliable == (
        "Not reliable: 1 of 3 views could not be read (c.png); the study result is from the other 2 only."
    )


def test_class_summary_ranks_every_class() -> None:
    c = class_summary(ClassResult.from_probabilities({"b": 0.3, "a": 0.3, "c": 0.4}, 0.0))
    assert c.probabilities == (("c", 0.4), ("a", 0.3), ("b", 0.3)) and c.confident


def test_failure_from_exception_keeps_code_and_hides_internals() -> None:
    failure = failure_from_exception("broken.png", UnsupportedFormatError("not an image"))
    assert failure == FailedPrediction("broken.png", "unsupported_format", "not an image")
    other = failure_from_exception("x.png", RuntimeError("secret internal detail"))
    assert other.error_code == "internal_error" and "secret" not in other.error


def test_an_error_card_does_not_repeat_the_name_its_title_gives() -> None:
    # the card said "huge.png" above "huge.png: image of 9000 x 9000 pixels ..."
    said = "huge.png: image of 9000 x 9000 pixels is too large"
    assert failure_message(FailedPrediction("huge.png", "image_too_large", said)) == (
        "image of 9000 x 9000 pixels is too large"
    )
    assert failure_message(FailedPrediction("study/huge.png", "image_too_large", said)).startswith("image of")
    assert failure_message(FailedPrediction("a.png", "not_found", "not an image")) == "not an image"


def test_first_of_each_takes_an_image_uploaded_twice_once() -> None:
    uploads = [(name, digest, False) for name, digest in (("a.jpg", "d1"), ("b.jpg", "d2"), ("a.jpg", "d1"))]
    uploads += [("copy of b.jpg", "d2", False), ("c.jpg", "d3", False)]
    keep, repeats = first_of_each(uploads)
    assert keep == [0, 1, 4]
    assert repeats == [("a.jpg", 0), ("copy of b.jpg", 1)]  # the index of the one kept
    text = duplicates_text([("a.jpg", "a.jpg"), ("copy of b.jpg", "b.jpg")])
    assert text is not None and "counted once" in text
    assert "a.jpg, copy of b.jpg (the same image as b.jpg)" in text
    assert first_of_each([("a.jpg", "d1", False), ("a.jpg", "d2", False)]) == ([0, 1], [])  # other image
    assert duplicates_text([]) is None


def test_a_copy_in_another_folder_keeps_its_row() -> None:
    """Two patients' folders holding the same bytes as ``IM1.jpg``: the second was left out as a
    repeat, which took a view out of patient B's study (``predict FOLDER`` keeps both). An upload
    that is also in the folder, or the folder uploaded twice, is still one view."""
    uploads = [
        ("a.jpg", "d1", False),  # uploaded, and also in the folder: the folder's copy is kept
        ("patientA/study1/IM1.jpg", "d1", True),
        ("patientB/study1/IM1.jpg", "d1", True),
        ("patientB/study1/IM2.jpg", "d2", True),
        ("patientB/study1/IM2.jpg", "d2", True),  # the folder uploaded twice
    ]
    keep, repeats = first_of_each(uploads)
    assert keep == [1, 2, 3]
    assert repeats == [("a.jpg", 1), ("patientB/study1/IM2.jpg", 3)]


def test_folder_names_are_those_of_predict_folder(tmp_path: Path) -> None:
    """The browser sends a chosen folder's files as ``mura/patient1/study1/a.jpg``; ``fracsight
    predict mura`` names them by their path in the folder, and so does the app. Two folders chosen
    that hold files of one path keep the folder's name, as predict names them by the path typed."""
    from fracsight.inference.tabular import named_inputs

    study = tmp_path / "mura" / "patient1" / "study1"
    study.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        (study / name).write_bytes(b"")
    (tmp_path / "mura" / "top.jpg").write_bytes(b"")
    given = ["mura/patient1/study1/a.jpg", "mura/patient1/study1/b.jpg", "mura/top.jpg"]
    expected = sorted(name for _, name in named_inputs([tmp_path / "mura"]))
    assert (
        sorted(folder_names(given))
        == expected
        == ["patient1/study1/a.jpg", "patient1/study1/b.jpg", "top.jpg"]
    )

    two = ["left/study1/a.jpg", "right/study1/a.jpg", "right/study1/b.jpg"]
    assert folder_names(two) == ["left/study1/a.jpg", "right/study1/a.jpg", "study1/b.jpg"]
    assert folder_names(["lone.jpg"]) == ["lone.jpg"] and folder_names([]) == []


def test_escape_markdown() -> None:
    assert escape_markdown("a_b*[c](d).png") == r"a\_b\*\[c\](d).png"
    assert escape_markdown("# x: <b>$y$") == r"\# x\: \<b\>\$y\$"
    assert escape_markdown("plain-name 1.png") == "plain-name 1.png" and escape_markdown("") == ""
    # an entity was shown decoded (a&lt;b.jpg as a<b.jpg), a heading's last # dropped ("x #" as x)
    assert escape_markdown("a&lt;b #") == r"a\&lt;b \#"


# ---- probability bar -----------------------------------------------------------------------------------
def _style_value(html: str, css_class: str, prop: str) -> str:
    match = re.search(rf'class="{css_class}"[^>]*style="(?:[^"]*;)?{prop}:([^;"]+)', html)
    assert match, f"{css_class} {prop} not in {html}"
    return match.group(1)


def test_probability_bar_fills_to_probability_and_marks_threshold() -> None:
    html = probability_bar_html(0.734, 0.25, severity="suspected")
    assert _style_value(html, "fs-bar-fill", "width") == "73.4%"
    assert _style_value(html, "fs-bar-fill", "background") == "#c62828"
    assert _style_value(html, "fs-bar-threshold", "left") == "25.0%"
    assert "fracture probability <b>0.734</b>" in html and "threshold 0.250<" in html
    # the bar's label is the card's threshold to the digit (0.197 was shown as 0.20 beside 0.197)
    assert ">threshold 0.197<" in probability_bar_html(0.5, 0.19717)
    assert 'aria-label="fracture probability 0.734, threshold 0.250"' in html


def test_probability_bar_clamps_and_escapes() -> None:
    html = probability_bar_html(1.7, -0.2, severity="clear", label="<b>p</b>")
    assert _style_value(html, "fs-bar-fill", "width") == "100.0%"
    assert _style_value(html, "fs-bar-threshold", "left") == "0.0%"
    assert "<b>p</b>" not in html and "&lt;b&gt;p&lt;/b&gt;" in html
    assert _style_value(probability_bar_html(0.5, 0.5, severity="unreliable"), "fs-bar-fill", "background")


def test_bar_and_class_list_texts_follow_the_page_theme() -> None:
    """Dark grey (#424242) text was 1.8:1 on Streamlit's dark page: the class list, the only place
    each class's probability is shown, could hardly be read."""
    summary = class_summary(ClassResult.from_probabilities({f"c{i}": 0.05 + i / 100 for i in range(14)}, 0.5))
    for html in (probability_bar_html(0.5, 0.4), class_bars_html(summary)):
        text_colours = set(re.findall(r"(?<![-\w])color:([^;\"]+)", html))
        assert text_colours == {"inherit"}, text_colours


def test_a_model_cards_headings_sit_below_the_pages() -> None:
    """The card's own # title was a second top-level heading in the sidebar, ahead of the page's;
    a # line in code (fenced, indented, in a longer fence) stays code."""
    card = "\n".join(
        ["# Model", "", "## Figures", "```", "# not a heading", "```", "###### deepest", "#hashtag",
         "![x](y)", "", "    # indented code", "", "````", "```", "# still code", "````", "Setext", "===="]
    )  # fmt: skip
    assert card_markdown(card).split("\n") == [
        "### Model", "", "#### Figures", "```", "# not a heading", "```", "###### deepest", "#hashtag",
        "&#33;[x](y)", "", "    # indented code", "", "````", "```", "# still code", "````", "### Setext", "",
    ]  # fmt: skip
    nested = "> # Quoted heading\n> text\n\n- # item heading\n1. ## Step"
    assert card_markdown(nested) == nested  # the quote's and the lists' markers stay first


def test_upload_names_stay_with_their_uploads_when_one_is_removed() -> None:
    """Two uploads named IM000001: removing the first renamed the second "IM000001", so a CSV or an
    overlay saved before named another image than the page did."""
    from fracsight.inference.tabular import kept_names

    first = kept_names([("a", "IM000001"), ("b", "IM000001"), ("c", "x.jpg")], {})
    assert {k: shown for k, (_, shown) in first.items()} == {
        "a": "IM000001",
        "b": "IM000001 (2)",
        "c": "x.jpg",
    }
    kept = kept_names([("b", "IM000001"), ("c", "x.jpg")], first)
    assert kept == {"b": ("IM000001", "IM000001 (2)"), "c": ("x.jpg", "x.jpg")}
    later = kept_names([("b", "IM000001"), ("d", "IM000001"), ("e", "IM000001")], kept)
    assert [shown for _, shown in later.values()] == ["IM000001 (2)", "IM000001", "IM000001 (3)"]
    # a number never takes the name of a file that has it (the CSV credited x (2).jpg's row to another)
    own = kept_names([("p", "x.jpg"), ("q", "x.jpg"), ("r", "x (2).jpg")], {})
    assert [shown for _, shown in own.values()] == ["x.jpg", "x (3).jpg", "x (2).jpg"]
    # a name that changed (a folder's file named by its whole path) is named anew
    assert kept_names([("c", "left/x.jpg")], kept) == {"c": ("left/x.jpg", "left/x.jpg")}


def test_the_study_verdict_is_announced_with_the_results() -> None:
    """A screen reader heard the images' count and decisions, never the examination's verdict."""
    views = [make_prediction(0.4), make_prediction(0.7)]
    study = make_study(0.55)
    card = study_card_for(study)
    said = results_announcement(views, [study])
    assert said == (
        "Results for 2 files: 1 no fracture suspected, 1 fracture suspected. "
        f"{card.title}: {card.verdict.headline}" + (f"; {card.views}" if card.views else "") + "."
    )
    assert "Study verdict (2 views)" in said


def test_the_results_are_announced_in_one_sentence() -> None:
    failed = FailedPrediction.of("x.png", UnsupportedFormatError("x.png: not an image"))
    results = [make_prediction(0.9), make_prediction(0.1), make_prediction(0.9, reliable=False), failed]
    assert results_announcement(results) == (
        "Results for 4 files: 1 fracture suspected, 1 no fracture suspected, 1 not reliable, "
        "1 could not be read."
    )
    assert results_announcement([make_prediction(0.2)]) == "Results for 1 file: 1 no fracture suspected."
    # a class-only model's: one the card calls "class uncertain" was announced as classified
    sure, unsure = ({"hand": p, "leg": 1 - p} for p in (0.9, 0.55))
    both = [class_only(make_prediction(classes=sure)), class_only(make_prediction(classes=unsure))]
    assert results_announcement(both) == "Results for 2 files: 1 classified, 1 class uncertain."


def test_class_bars_fill_to_each_probability_and_mark_the_minimum() -> None:
    summary = class_summary(ClassResult.from_probabilities({"a<b>": 0.25, "spiral": 0.6, "other": 0.15}, 0.5))
    html = class_bars_html(summary)
    fills = re.findall(r'class="fs-class-fill" style="width:([^;]+);[^"]*background:([^;]+);', html)
    assert fills == [("60.0%", "#1565c0"), ("25.0%", "#9e9e9e"), ("15.0%", "#9e9e9e")]
    assert html.count('class="fs-class-min"') == 3 and "left:50.0%" in html
    assert "a&lt;b&gt;" in html and "<b>" not in html
    assert 'aria-label="spiral 0.600"' in html and "minimum probability 0.50" in html
    none = class_bars_html(class_summary(ClassResult.from_probabilities({"x": 0.9, "y": 0.1}, 0.0)))
    assert "fs-class-min" not in none and "minimum" not in none
    many = class_summary(ClassResult.from_probabilities({f"c{i:02d}": 1 / 20 for i in range(20)}, 0.1))
    assert class_bars_html(many, most=5).count('class="fs-class-row"') == 5
    assert "and 15 more" in class_bars_html(many, most=5)


# ---- the model (sidebar) -------------------------------------------------------------------------------
def test_heads_text_names_what_the_bundle_reports() -> None:
    assert heads_text(make_spec("fracture")) == "Reports: fracture probability and suspected areas"
    assert heads_text(make_spec("fracture", "region")) == (
        "Reports: fracture probability and suspected areas; body region (hand, leg)"
    )
    assert heads_text(make_spec("class")) == "Reports: class (avulsion, greenstick, other)"
    assert heads_text(make_spec("fracture", "class")).endswith(
        "; fracture type (avulsion, greenstick, other)"
    )
    many = make_spec("class", "region", classes=tuple(f"t{i}" for i in range(10)))
    assert (
        heads_text(many)
        == "Reports: class (t0, t1, t2, t3, t4, t5, t6, t7, ... (10 in all)); body region (hand, leg)"
    )


def test_operating_point_texts() -> None:
    assert operating_point_text(OPERATING_POINTS[0]) == (
        "Threshold 0.500: Youden's J on validation (sensitivity 0.80, specificity 0.75)"
    )
    assert operating_point_text(OPERATING_POINTS[1]) == "Threshold 0.200: sensitivity 0.95 on validation"
    assert class_operating_point_text(make_spec("fracture", "region")) is None
    text = class_operating_point_text(make_spec("class"))
    assert text == (
        "Class stated at probability 0.600 or more, otherwise uncertain: lowest top-1 probability right 0.9 "
        "of the time. Validation: accuracy of the stated classes 0.92, coverage 0.81 (share of images "
        "that got a class)."
    )
    assert class_operating_point_text(make_spec("fracture", "class")).startswith("Fracture type stated at")
    old = replace(make_spec("class"), class_operating_point=None)
    assert class_operating_point_text(old) == (
        "Class: the most likely is always stated (this bundle has no minimum probability)."
    )


# ---- a head trained on MURA (normal / abnormal) finds abnormalities --------------------------------------
def abnormality(result: Prediction | StudyPrediction) -> Prediction | StudyPrediction:
    """``result`` as a bundle whose binary head's positive class is "abnormal" gives it."""
    return replace(result, finding="abnormality")


def _words(*texts: str | None) -> str:
    return " ".join(t for t in texts if t).lower()


def test_cards_of_an_abnormality_bundle_never_say_fracture() -> None:
    card = card_for(abnormality(make_prediction(0.83, classes=TYPES)))
    assert card.verdict.headline == "Abnormality suspected, most likely greenstick"
    assert card.probability == "Abnormality probability 0.830 (threshold 0.500, operating point balanced)"
    assert card.classification.text == "Abnormality type: greenstick (0.70)"
    assert card.heatmap == "Abnormality heatmap: where the model suspects an abnormality"
    assert overlay_caption(card).startswith(card.heatmap)
    assert "fractur" not in _words(*card.lines, card.heatmap, overlay_caption(card))
    negative = card_for(abnormality(make_prediction(0.2, classes=TYPES)))
    assert negative.verdict.headline == "No abnormality detected"
    assert negative.classification.note == "No abnormality is suspected, so the type says little here."
    assert negative.heatmap == "Abnormality heatmap: where the model looked most (no abnormality suspected)"
    assert overlay_caption(negative, show_heatmap=False) == (
        "Heatmap hidden; boxes around the areas it weighed most (no abnormality suspected)"
    )
    unreliable = card_for(abnormality(make_prediction(0.9, reliable=False)))
    assert unreliable.heatmap.startswith("Abnormality heatmap: where the model looked most (not reliable")
    study = study_card_for(abnormality(make_study(0.7, TYPES)))
    assert study.lines == (
        "Mean abnormality probability of the views 0.700 (threshold 0.500, operating point balanced)",
        "Abnormality type: greenstick (0.70)",
    )
    assert study.how == (
        "Abnormality probability: the mean of the views. Abnormality type: the mean of the views' class "
        "probabilities, each weighted by its abnormality probability."
    )
    assert "fractur" not in _words(study.verdict.words, *study.lines, study.how)


def test_sidebar_texts_of_an_abnormality_bundle() -> None:
    spec = make_spec("fracture", "class", "region")
    mura = replace(spec, heads=(HeadSpec("fracture", "binary", ("normal", "abnormal")), *spec.heads[1:]))
    assert heads_text(mura) == (
        "Reports: abnormality probability and suspected areas; abnormality type (avulsion, greenstick, "
        "other); body region (hand, leg)"
    )
    assert class_operating_point_text(mura).startswith("Abnormality type stated at probability 0.600")


def test_a_study_card_counts_the_views_and_says_when_the_mean_hides_one() -> None:
    """MURA's mean can leave a study clear while one view alone is above the threshold: the card
    counts the views suspected on their own and says so, prominently (the study's own
    ``hidden_views``, which predict and the API give too); and it asks whether views of different
    body regions are one examination."""

    def study_of(mean: float, views: dict[str, float]):
        return replace(make_study(mean), images=tuple(views), view_probabilities=tuple(views.values()))

    card = study_card_for(study_of(0.27, {"pa.png": 0.6, "view1.png": 0.1, "view2.png": 0.1}))
    assert card.verdict.severity == "clear"
    assert card.views == "Views suspected on their own: 1 of 3 (pa.png)"
    assert card.views in card.lines
    assert card.cautions == (
        "The mean of the views is below the threshold, but pa.png is above it on its own: review it.",
    )
    two = study_card_for(study_of(0.3, {"pa.png": 0.6, "lat.png": 0.6, "a.png": 0.1, "b.png": 0.1}))
    assert two.cautions[0].endswith("but pa.png, lat.png are above it on their own: review them.")
    agreed = study_card_for(study_of(0.6, {"pa.png": 0.6, "lat.png": 0.6}))
    assert agreed.views == "Views suspected on their own: 2 of 2 (pa.png, lat.png)" and not agreed.cautions
    regions = {"hand": 0.55, "shoulder": 0.45}
    mixed = study_card_for(
        replace(
            study_of(0.6, {"pa.png": 0.6, "y.png": 0.1}),
            region="hand",
            region_probabilities=regions,
            view_regions=("hand", "shoulder"),
        )
    )
    assert mixed.cautions == (
        "The views read as different body regions (hand: pa.png; shoulder: y.png): are they one "
        "examination? The study's region is the likeliest over all of them, hand.",
    )
    assert mixed.region == "Body region: hand (0.55), of the 2 the model knows: hand, shoulder"
    assert mixed.region in mixed.lines  # a study had none
    assert study_card_for(make_study(0.27)).cautions == () and study_card_for(make_study(0.27)).views is None
    # every warning predict and the API give is on the card: a view given twice, views of two DICOM
    # studies or two folders, a folder's images not given were in the CSV only; the one that makes
    # the study not reliable (two patients) is said once, on its "not reliable" line
    odd = replace(
        make_study(0.7),
        reliable=False,
        repeats=("b2.dcm (the same image as b.dcm)",),
        dicom_studies=2,
        dicom_patients=2,
        folders=("study1", "study2"),
        left_out=("c.png",),
    )
    card = study_card_for(odd)
    assert len(card.cautions) == 4 and "2 patients" in (card.unreliable or "")
    assert card.cautions[0] == "Given more than once, so counted once: b2.dcm (the same image as b.dcm)."
    assert [c for c in card.cautions if "DICOM studies" in c or "study folders" in c or "not given" in c]
    assert not any("patients" in c for c in card.cautions)
    assert (
        study_card_for(replace(make_study(0.3), images=("a",))).title
        == "Study verdict (1 view): uploaded study"
    )


def test_the_cards_say_why_a_result_is_not_reliable() -> None:
    """A file cut short read "does not look like what the model was made for" on its banner and
    headline; a study's banner named only the views that could not be read (or no view at all),
    not the unreliable one its mean still includes, which its views line called suspected."""
    cut = replace(
        make_prediction(
            0.9,
            reliable=False,
            warnings=(f"the file is cut short and part of the image is missing from it; {NOT_RELIABLE}",),
        ),
        metadata=ImageMetadata("jpeg", (H, W), 8, "L", truncated=True, incomplete=True),
    )
    card = card_for(cut)
    assert card.unreliable == (
        "Not reliable: the file is cut short and part of the image is missing from it. "
        "The result is shown for reference only; do not act on it."
    )
    assert cut.decision == card.verdict.words == "not reliable: part of the image is missing from the file"
    assert card_for(make_prediction(0.9, reliable=False)).unreliable.startswith(
        "Not reliable: this image does not look like what the model was made for."
    )
    study = replace(
        make_study(0.7),
        images=("a.jpg", "cut.jpg"),
        view_probabilities=(0.6, 0.8),
        reliable=False,
        unread=("ct.dcm",),
        unreliable=("cut.jpg",),
    )
    study_card = study_card_for(study)
    assert study_card.unreliable == f"Not reliable: {'; '.join(study.why_not_reliable)}."
    assert "ct.dcm" in study_card.unreliable and "still includes it" in study_card.unreliable
    assert study_card.views == "Views suspected on their own: 2 of 2 (a.jpg, cut.jpg (not reliable))"


def test_a_card_with_its_boxes_hidden_says_so() -> None:
    """The card described box labels that Show boxes had taken off the image."""
    pred = make_prediction(0.9, boxes=(DetectedBox(10, 5, 30, 25, 0.9), DetectedBox(1, 1, 5, 5, 0.4)))
    assert card_for(pred).boxes.startswith("2 suspected areas boxed (box scores 0.90, 0.40")
    assert card_for(pred, show_boxes=False).boxes == "2 areas boxed, boxes hidden (Show boxes draws them)"


def test_the_overlay_download_carries_the_band_of_predict_overlay_dir() -> None:
    """The card's PNG download says what it is below the image, as ``predict --overlay-dir`` does;
    the image keeps its size and place at the top left."""
    pred = make_prediction(0.8, source="scans/wrist.dcm")
    view = eight_bit(view_data(pred))
    png = Image.open(io.BytesIO(overlay_png(pred, view, opacity=0.6)))
    assert png.format == "PNG" and png.width >= W and png.height > H
    shown, _ = render_views(view, opacity=0.6)
    np.testing.assert_array_equal(np.asarray(png.convert("RGB"))[:H, :W], np.asarray(shown))
    assert np.asarray(png.convert("L"))[H:].mean() < 100  # white words on a black band
    plain = Image.open(io.BytesIO(overlay_png(pred, view, show_heatmap=False, show_boxes=False)))
    assert plain.height > H  # the decision and the notice stay when the map is hidden
    assert overlay_file_name(pred.source) == "scans_wrist.overlay.png"
    assert overlay_file_name("wrist.jpg") == "wrist.overlay.png"
    # two patients' IM000001 had one name; a DICOM named by its UID lost the UID's last part
    assert overlay_file_name("patient1/study1/IM000001.jpg") == "patient1_study1_IM000001.overlay.png"
    assert overlay_file_name("1.2.826.0.1.3680043.8.498.101") == "1.2.826.0.1.3680043.8.498.101.overlay.png"
    # wrist.jpg beside wrist.png: both were wrist.overlay.png (as predict --overlay-dir names them now)
    from fracsight.io import names_sharing_a_stem

    names = ["a/wrist.jpg", "a/wrist.png", "b/wrist.jpg", "frac.dcm", "frac.jpg", "solo.jpg"]
    assert names_sharing_a_stem(names) == {"a/wrist.jpg", "a/wrist.png", "frac.dcm", "frac.jpg"}
    # x.jpg.png's stem is x.jpg, the overlay name x.jpg keeps beside x.png: it keeps its suffix too
    # and without case: x.JPG's overlay and x.jpg.png's are one file on a Mac or Windows disk
    assert names_sharing_a_stem(["x.JPG", "x.jpg.png", "x.png"]) == {"x.JPG", "x.jpg.png", "x.png"}
    assert names_sharing_a_stem(["x.jpg", "x.png", "x.jpg.png", "y.jpg.png"]) == {
        "x.jpg",
        "x.png",
        "x.jpg.png",
    }
    assert overlay_file_name("a/wrist.png", keep_suffix=True) == "a_wrist.png.overlay.png"


# ---- images --------------------------------------------------------------------------------------------
def test_render_views_overlay_and_side_by_side() -> None:
    pred = make_prediction()
    view = view_data(pred)
    np.testing.assert_array_equal(view.pixels, pred.pixels)  # small images stay as they are
    overlay, pair = render_views(view, opacity=0.6)
    assert overlay.size == (W, H) and overlay.mode == "RGB"
    assert pair.size == (2 * W + 8, H)
    plain, _ = render_views(view, show_heatmap=False, show_boxes=False)
    grey = np.round(pred.pixels * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(plain)[..., 0], grey)
    assert not np.array_equal(np.asarray(overlay), np.asarray(plain))


def test_eight_bit_views_take_a_quarter_of_the_memory_and_look_the_same() -> None:
    """The web app keeps one view per upload in the session: 8-bit, as shown, not float32."""
    view = view_data(make_prediction())
    small = eight_bit(view)
    assert small.pixels.dtype == small.heatmap.dtype == np.uint8
    assert small.pixels.nbytes == small.heatmap.nbytes == W * H
    assert small.boxes == view.boxes
    for options in ({"opacity": 0.6}, {"show_heatmap": False, "show_boxes": False}):
        shown, pair = (np.asarray(im, dtype=int) for im in render_views(small, **options))
        full, full_pair = (np.asarray(im, dtype=int) for im in render_views(view, **options))
        assert np.abs(shown - full).max() <= 2 and np.abs(pair - full_pair).max() <= 2


def test_view_data_shrinks_large_images_with_their_boxes() -> None:
    pred = make_prediction(size=(400, 200), boxes=(DetectedBox(100, 200, 180, 380, 0.8),))
    view = view_data(pred, max_side=100)
    assert view.pixels.shape == view.heatmap.shape == (100, 50)
    assert view.boxes == (DetectedBox(25, 50, 45, 95, 0.8),)
    overlay, _ = render_views(view, show_heatmap=False)
    assert overlay.size == (50, 100)
    cyan = np.all(np.asarray(overlay) == (0, 230, 255), axis=2)
    cyan[:50] = False  # the score label sits just above the box
    ys, xs = np.nonzero(cyan)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (25, 44, 50, 94)


def test_view_data_shows_pixels_at_their_true_shape() -> None:
    """A DICOM of pixels twice as high as wide (spacing 0.2 x 0.1 mm), read by the model at that
    shape, was shown on its stored grid: the anatomy squashed 2:1, its boxes and heatmap with it."""
    pred = make_prediction(size=(100, 200), boxes=(DetectedBox(100, 20, 180, 60, 0.8),))
    tall = replace(pred, metadata=replace(pred.metadata, source_format="dicom", pixel_spacing_mm=(0.2, 0.1)))
    view = view_data(tall)
    assert view.pixels.shape == view.heatmap.shape == (200, 200)
    assert view.boxes == (DetectedBox(100, 40, 180, 120, 0.8),)
    small = view_data(tall, max_side=100)  # reduced too: both axes alike
    assert small.pixels.shape == (100, 100) and small.boxes == (DetectedBox(50, 20, 90, 60, 0.8),)
    assert view_data(pred).pixels.shape == (100, 200)  # square pixels: as stored
    # pixels wider than high: the columns stretched, not the rows shrunk (half the detail lost)
    wide = replace(pred, metadata=replace(tall.metadata, pixel_spacing_mm=(0.1, 0.2)))
    assert view_data(wide).pixels.shape == (100, 400)
    assert view_data(wide).boxes == (DetectedBox(200, 20, 360, 60, 0.8),)


def test_view_data_needs_pixels() -> None:
    with pytest.raises(ValueError, match="keep_pixels"):
        view_data(replace(make_prediction(), pixels=None))


# ---- table and downloads -------------------------------------------------------------------------------
KINDS = {
    "fracture": ("fracture",),
    "fracture+region": ("fracture", "region"),
    "class": ("class",),
    "fracture+class": ("fracture", "class"),
    "class+region": ("class", "region"),
}


@pytest.mark.parametrize("heads", KINDS.values(), ids=list(KINDS))
def test_display_columns_are_the_bundles_csv_columns_less_the_hidden(heads: tuple[str, ...]) -> None:
    spec = make_spec(*heads)
    columns = display_columns(spec)
    assert columns == tuple(c for c in result_columns(spec) if c not in HIDDEN_ON_SCREEN)
    assert ("fracture_probability" in columns) == ("top_box" in columns) == ("fracture" in heads)
    assert ("predicted_class" in columns) == ("class" in heads)
    assert ("region" in columns) == ("region" in heads)
    assert columns[:3] == ("kind", "source", "decision") and columns[-2:] == ("error_code", "error")


def test_table_rows_cover_images_failures_and_studies() -> None:
    spec = make_spec("fracture", "region")
    rows = table_rows(
        [make_prediction(0.8), FailedPrediction("bad.png", "empty_file", "empty"), make_study()], spec
    )
    assert [tuple(r) for r in rows] == [display_columns(spec)] * 3
    assert rows[0]["decision"] == "fracture suspected" and rows[0]["fracture_probability"] == "0.8000"
    assert rows[0]["region"] == "hand" and rows[0]["top_box"] == "10,5,30,25"
    assert rows[1]["error_code"] == "empty_file" and rows[1]["decision"] == "error"
    assert rows[2]["kind"] == "study" and rows[2]["source"] == "uploaded study"


def test_table_and_csv_of_a_class_model_have_no_fracture_columns() -> None:
    spec = make_spec("class")
    pred = class_only(make_prediction(classes=TYPES))
    study = StudyPrediction("uploaded study", ("a", "b"), True, classification=pred.classification)
    rows = table_rows([pred, study], spec)
    assert not any("fracture" in c or "box" in c or "region" in c for c in rows[0])
    assert rows[0]["decision"] == "most likely greenstick" and rows[0]["predicted_class"] == "greenstick"
    assert rows[0]["class_probability"] == "0.7000" and rows[0]["class_confident"] == "True"
    assert rows[1]["kind"] == "study" and rows[1]["predicted_class"] == "greenstick"
    assert all(
        v != "" for row in rows for k, v in row.items() if k not in ("warnings", "error_code", "error")
    )

    table = list(csv.DictReader(io.StringIO(csv_download([pred, study], spec))))
    assert tuple(table[0]) == result_columns(spec, all_classes=True)
    assert table[0]["p_greenstick"] == "0.7000" and table[0]["p_avulsion"] == "0.2000"
    assert [r["decision"] for r in table] == ["most likely greenstick"] * 2


def test_json_text_has_the_cli_shape_and_no_pixels() -> None:
    payload = json.loads(
        json_text(
            [make_prediction(), FailedPrediction("bad.png", "empty_file", "empty")], [make_study()], "m"
        )
    )
    assert payload["model"] == "m" and payload["notice"] == NOTICE
    assert [i["source"] for i in payload["images"]] == ["wrist.png", "bad.png"]
    assert payload["studies"][0]["study"] == "uploaded study"
    assert "pixels" not in json.dumps(payload) and "heatmap" not in json.dumps(payload)


# ---- launcher and CLI ----------------------------------------------------------------------------------
def test_streamlit_command() -> None:
    cmd = app_pkg.streamlit_command(port=8123, model="/b", examples=Path("/ex"))
    assert cmd[:5] == [sys.executable, "-m", "fracsight.app._launch", "run", str(app_pkg.SCRIPT)]
    assert app_pkg.SCRIPT.is_file()
    flags = dict(zip(cmd[5 : cmd.index("--") : 2], cmd[6 : cmd.index("--") : 2], strict=True))
    assert flags["--server.headless"] == "true" and flags["--server.port"] == "8123"
    assert flags["--server.address"] == "127.0.0.1" and flags["--browser.gatherUsageStats"] == "false"
    assert cmd[cmd.index("--") + 1 :] == ["--model=/b", "--examples=/ex"]
    # a folder named "-x" (Path("./-x") is "-x") was read as an option: the page stayed blank
    dashed = app_pkg.streamlit_command(port=1, examples=Path("./-x"), operating_point="triage")
    config = parse_app_args(dashed[dashed.index("--") + 1 :])
    assert config.examples == Path("-x") and config.operating_point == "triage"
    assert app_pkg.streamlit_command(port=1)[-1] == "--"
    assert app_pkg.local_url("::1", 80) == "http://[::1]:80"


def test_app_command_prints_the_url_and_runs_streamlit(monkeypatch: pytest.MonkeyPatch) -> None:
    from fracsight.cli import app

    seen: list[list[str]] = []

    def fake_run(command: list[str], on_start=None) -> int:
        seen.append(command)
        on_start()
        return 0

    monkeypatch.setattr(app_pkg, "run_app", fake_run)
    model = "fracatlas-lite0-384-v4"  # a packaged bundle: the command checks the name first
    result = CliRunner().invoke(app, ["app", "--port", "8124", "--model", model])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8124" in result.output
    assert seen and seen[0][seen[0].index("--") + 1 :] == [f"--model={model}"]


def test_app_command_without_streamlit(monkeypatch: pytest.MonkeyPatch) -> None:
    from fracsight.cli import app

    monkeypatch.setattr(app_pkg, "streamlit_available", lambda: False)
    result = CliRunner().invoke(app, ["app"])
    assert result.exit_code == 1 and "fracsight[app]" in result.output


def test_run_app_returns_the_childs_exit_code() -> None:
    started: list[bool] = []
    code = app_pkg.run_app(
        [sys.executable, "-c", "raise SystemExit(3)"], on_start=lambda: started.append(True)
    )
    assert code == 3 and started == [True]


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP"])
def test_run_app_kills_a_child_that_ignores_sigterm(stop: str) -> None:
    import os
    import signal
    import threading
    import time

    ignores = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    started = time.monotonic()
    # SIGTERM to this process once the child has started (and ignores SIGTERM): run_app's handler
    # forwards it, then kills the child after stop_timeout
    on_start = lambda: threading.Timer(2.0, os.kill, (os.getpid(), getattr(signal, stop))).start()  # noqa: E731
    code = app_pkg.run_app([sys.executable, "-c", ignores], on_start=on_start, stop_timeout=0.5)
    assert code == 128 + signal.SIGKILL and time.monotonic() - started < 30  # as a shell says it


def test_a_hang_up_to_the_group_is_a_stop_not_the_childs_death() -> None:
    """A closed terminal's SIGHUP reaches the whole group: Streamlit, with no handler for it, died
    at once and `fracsight app` exited 255 without a word. The child ignores it; this process's
    handler stops the child as on SIGTERM."""
    import os
    import signal
    import threading

    children: list[int] = []

    def hang_up() -> None:  # as the terminal sends it: to the child and to this process
        for pid in (*children, os.getpid()):
            os.kill(pid, signal.SIGHUP)

    real_popen = app_pkg.subprocess.Popen

    def recording_popen(*args, **kwargs):
        child = real_popen(*args, **kwargs)
        children.append(child.pid)
        return child

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app_pkg.subprocess, "Popen", recording_popen)
        on_start = lambda: threading.Timer(1.0, hang_up).start()  # noqa: E731
        code = app_pkg.run_app([sys.executable, "-c", "import time; time.sleep(60)"], on_start=on_start)
    assert code == 128 + signal.SIGTERM  # stopped by the handler's SIGTERM, not killed by the hang-up


def test_the_files_left_out_of_a_folder_are_named() -> None:
    assert left_out_text(["x/notes.txt"]) == "Left out of the folder (not images, or hidden): x/notes.txt"
    many = left_out_text([f"x/{i}.txt" for i in range(7)])
    assert many.endswith(": x/0.txt, x/1.txt, x/2.txt, x/3.txt, x/4.txt and 2 more")


def test_an_uncertain_class_never_reads_as_its_own_minimum() -> None:
    """0.7353 against a minimum of 0.7403 read "leg (0.74), is below the minimum 0.74"."""
    c = ClassResult.from_probabilities({"leg": 0.7353, "hip": 0.2647}, 0.7403)
    assert "leg (0.735), is below the minimum 0.740" in class_summary(c).text
    clear = ClassResult.from_probabilities({"leg": 0.5, "hip": 0.5}, 0.7)
    assert "(0.50), is below the minimum 0.70" in class_summary(clear).text


def test_no_card_line_rounds_a_probability_to_certainty() -> None:
    """A fracture+type bundle's card read "Fracture probability 1.000" and "Fracture type: hand
    (1.00)" (desktop and web app; the CLI table and overlay captions likewise): a model is never
    certain. The JSON and CSV keep the number itself."""
    from fracsight.explain import summary_lines

    pred = make_prediction(0.99989, classes={"hand": 0.998, "leg": 0.001, "hip": 0.001})
    card = card_for(pred)
    assert card.probability.startswith("Fracture probability >0.999 (threshold")
    assert card.classification.text.endswith("hand (>0.99)")
    caption = " ".join(summary_lines(pred))
    assert "probability >0.99 " in caption and "class hand (>0.99)" in caption and "1.00" not in caption
    assert pred.to_dict()["fracture_probability"] == 0.99989


def test_a_caption_qualifies_the_type_of_a_fracture_not_suspected() -> None:
    """A fracture+type bundle's overlay, GSPS and capture said "class leg (0.78)" beside "no
    fracture detected", stated as if found; the table and the app's card qualify it."""
    from fracsight.explain import summary_lines

    negative = " ".join(summary_lines(make_prediction(0.2, classes={"leg": 0.78, "hip": 0.22})))
    assert "class leg (0.78), no fracture suspected" in negative
    positive = " ".join(summary_lines(make_prediction(0.9, classes={"leg": 0.78, "hip": 0.22})))
    assert "class leg (0.78)" in positive and "no fracture suspected" not in positive


def test_a_long_names_overlay_download_name_can_be_saved() -> None:
    """The desktop's and web app's suggested name for a 251-character image was 263 bytes: "File
    name too long"; `predict --overlay-dir` shortened the same name."""
    for source in ("a" * 251 + ".jpg", "骨" * 82 + ".jpg", "patient1/" * 30 + "IM1.dcm"):
        name = overlay_file_name(source)
        assert len(name.encode()) <= 255 - 64 + len(".overlay.png") and name.endswith(".overlay.png")
    assert overlay_file_name("a" * 251 + ".jpg") != overlay_file_name("a" * 250 + "b.jpg")  # kept apart
