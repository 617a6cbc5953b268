"""The web app's plain logic (no Streamlit): arguments, examples, cards, bar, views, table, launcher."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import fracsight.app as app_pkg
from fracsight.app.logic import (
    DISPLAY_COLUMNS,
    AppConfig,
    card_for,
    escape_markdown,
    failure_from_exception,
    json_text,
    parse_app_args,
    pick_examples,
    probability_bar_html,
    render_views,
    table_rows,
    verdict,
    view_data,
)
from fracsight.errors import UnsupportedFormatError
from fracsight.explain import DetectedBox
from fracsight.inference import NOTICE, FailedPrediction, Prediction, StudyPrediction
from fracsight.io import ImageMetadata

H, W = 60, 80


def make_prediction(
    probability: float = 0.8,
    *,
    threshold: float = 0.5,
    reliable: bool = True,
    warnings: tuple[str, ...] = (),
    boxes: tuple[DetectedBox, ...] = (DetectedBox(10, 5, 30, 25, 0.9),),
    size: tuple[int, int] = (H, W),
    source: str = "wrist.png",
) -> Prediction:
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
        class_probabilities={},
        reliable=reliable,
        warnings=warnings,
        model="tiny v1",
        metadata=ImageMetadata("png", size, 8, "L"),
        heatmap=heat,
        pixels=rng.random(size).astype(np.float32),
    )


def make_study(probability: float = 0.7) -> StudyPrediction:
    return StudyPrediction(
        "uploaded study", probability, probability >= 0.5, "balanced", 0.5, ("a", "b"), True
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
    assert len(pick_examples(tmp_path, 50)) == 12
    assert pick_examples(tmp_path / "missing", 4) == [] and pick_examples(tmp_path, 0) == []


# ---- cards ---------------------------------------------------------------------------------------------
def test_card_for_a_suspected_fracture() -> None:
    card = card_for(make_prediction(0.83, warnings=("low contrast",)))
    assert card.title == "wrist.png"
    assert card.verdict.words == "fracture suspected" and card.verdict.severity == "suspected"
    assert card.verdict.headline == "Fracture suspected" and card.verdict.markdown_colour == "red"
    assert card.probability == "Fracture probability 0.830 (threshold 0.500, operating point balanced)"
    assert card.region == "Body region: hand (0.91)"
    assert card.boxes == "1 suspected area boxed (top score 0.90)"
    assert card.warnings == ("low contrast",) and card.unreliable is None and card.fracture_type is None


def test_card_for_no_fracture_without_region_or_boxes() -> None:
    pred = replace(make_prediction(0.1, boxes=()), region=None, region_probabilities={})
    card = card_for(pred)
    assert card.verdict.headline == "No fracture detected" and card.verdict.severity == "clear"
    assert card.verdict.markdown_colour == "green" and card.verdict.colour == "#2e7d32"
    assert card.region == "Body region: not predicted by this model" and card.boxes == "No area boxed"


def test_card_for_an_unreliable_input_is_prominent() -> None:
    card = card_for(make_prediction(0.9, reliable=False))
    assert card.verdict.severity == "unreliable" and card.verdict.words.startswith("not reliable")
    assert card.unreliable is not None and "Not reliable" in card.unreliable
    assert verdict(replace(make_study(), reliable=False)).severity == "unreliable"


def test_card_names_the_fracture_type_when_the_bundle_has_one() -> None:
    pred = replace(make_prediction(), class_probabilities={"avulsion": 0.2, "greenstick": 0.7, "other": 0.1})
    assert card_for(pred).fracture_type == "Most likely class: greenstick (0.70)"


def test_card_for_a_model_without_a_fracture_head() -> None:
    pred = replace(
        make_prediction(),
        fracture_probability=None,
        fracture_suspected=None,
        operating_point=None,
        threshold=None,
        decisions={},
        class_probabilities={"avulsion": 0.8, "greenstick": 0.2},
    )
    card = card_for(pred)
    assert card.verdict.severity == "class" and card.verdict.markdown_colour == "blue"
    assert card.probability == "No fracture probability: this model only classifies"
    assert card.fracture_type == "Most likely class: avulsion (0.80)"


def test_failure_from_exception_keeps_code_and_hides_internals() -> None:
    failure = failure_from_exception("broken.png", UnsupportedFormatError("not an image"))
    assert failure == FailedPrediction("broken.png", "unsupported_format", "not an image")
    other = failure_from_exception("x.png", RuntimeError("secret internal detail"))
    assert other.error_code == "internal_error" and "secret" not in other.error


def test_escape_markdown() -> None:
    assert escape_markdown("a_b*[c](d).png") == r"a\_b\*\[c\](d).png"
    assert escape_markdown("# x: <b>$y$") == r"\# x\: \<b\>\$y\$"
    assert escape_markdown("plain-name 1.png") == "plain-name 1.png" and escape_markdown("") == ""


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
    assert "fracture probability <b>0.734</b>" in html and "threshold 0.25" in html
    assert 'aria-label="fracture probability 0.734, threshold 0.250"' in html


def test_probability_bar_clamps_and_escapes() -> None:
    html = probability_bar_html(1.7, -0.2, severity="clear", label="<b>p</b>")
    assert _style_value(html, "fs-bar-fill", "width") == "100.0%"
    assert _style_value(html, "fs-bar-threshold", "left") == "0.0%"
    assert "<b>p</b>" not in html and "&lt;b&gt;p&lt;/b&gt;" in html
    assert _style_value(probability_bar_html(0.5, 0.5, severity="unreliable"), "fs-bar-fill", "background")


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


def test_view_data_needs_pixels() -> None:
    with pytest.raises(ValueError, match="keep_pixels"):
        view_data(replace(make_prediction(), pixels=None))


# ---- table and downloads -------------------------------------------------------------------------------
def test_table_rows_cover_images_failures_and_studies() -> None:
    rows = table_rows(
        [make_prediction(0.8), FailedPrediction("bad.png", "empty_file", "empty"), make_study()]
    )
    assert [tuple(r) for r in rows] == [DISPLAY_COLUMNS] * 3
    assert rows[0]["decision"] == "fracture suspected" and rows[0]["fracture_probability"] == "0.8000"
    assert rows[0]["region"] == "hand" and rows[0]["top_box"] == "10,5,30,25"
    assert rows[1]["error_code"] == "empty_file" and rows[1]["decision"] == ""
    assert rows[2]["kind"] == "study" and rows[2]["source"] == "uploaded study"


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
    assert cmd[:5] == [sys.executable, "-m", "streamlit", "run", str(app_pkg.SCRIPT)]
    assert app_pkg.SCRIPT.is_file()
    flags = dict(zip(cmd[5 : cmd.index("--") : 2], cmd[6 : cmd.index("--") : 2], strict=True))
    assert flags["--server.headless"] == "true" and flags["--server.port"] == "8123"
    assert flags["--server.address"] == "127.0.0.1" and flags["--browser.gatherUsageStats"] == "false"
    assert cmd[cmd.index("--") + 1 :] == ["--model", "/b", "--examples", "/ex"]
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
    result = CliRunner().invoke(app, ["app", "--port", "8124", "--model", "tiny"])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8124" in result.output
    assert seen and seen[0][seen[0].index("--") + 1 :] == ["--model", "tiny"]


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
