"""The web app in a real browser for every head combination a bundle can have.

For each kind of :data:`head_kinds.HEAD_KINDS`: ``fracsight app`` on the tiny bundle of that
kind, one example clicked in headless Chromium, and the page checked against the Predictor:
the decision, the class (for a class head) with its full distribution, the region only with a
region head, the fracture probability only with a fracture head, a heatmap caption that says
what the map shows, and no exception. One app per kind, one browser for all; a screenshot
per kind goes to ``artifacts/screenshots/app-<kind>.png``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fracsight.inference import NOTICE, Predictor
from head_kinds import HEAD_KINDS
from test_app_browser import CHROMIUM, launch_chromium, new_tab, running_app, screenshot, sync_api

pytestmark = [
    pytest.mark.slow,
    pytest.mark.fracatlas,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as pw:
        chromium = launch_chromium(pw)
        try:
            yield chromium
        finally:
            chromium.close()


def held_out_image(data: Path) -> Path:
    """The first test-split image of a head-kind data set (labels.csv layouts keep all in images/)."""
    return sorted(p for p in data.rglob("*.jpg") if "test" in p.parts or p.parent.name == "images")[0]


def class_line(prediction) -> str:
    """The card's class line, as the app words it (see ``fracsight.app.logic.class_summary``)."""
    c = prediction.classification
    label = "Class" if prediction.fracture_probability is None else "Fracture type"
    if c.confident:
        return f"{label}: {c.predicted} ({c.probability:.2f})"
    return (
        f"{label} uncertain: the most likely, {c.predicted} ({c.probability:.2f}), "
        f"is below the minimum {c.min_probability:.2f}"
    )


@pytest.mark.parametrize("kind", list(HEAD_KINDS))
def test_the_app_shows_the_heads_of_each_kind(browser, head_bundle, kind: str, tmp_path: Path) -> None:
    heads = HEAD_KINDS[kind]
    data, bundle = head_bundle(kind)
    image = held_out_image(data)
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / image.name).symlink_to(image.resolve())
    expected = Predictor(bundle).predict(image)
    assert (expected.classification is not None) == ("class" in heads)

    with running_app(bundle, examples, tmp_path) as url:
        page = new_tab(browser)
        try:
            page.goto(url)
            page.get_by_text("Decision aid, not a diagnosis.").wait_for()
            page.get_by_role("button", name="Try").first.click()
            headline = expected.decision[:1].upper() + expected.decision[1:]
            page.get_by_text(headline, exact=True).first.wait_for()
            page.get_by_text("Download CSV").wait_for()  # the script ran to its end
            page.wait_for_function(
                """() => [...document.querySelectorAll('[data-testid="stImage"] img')]
                         .some(img => img.complete && img.naturalWidth > 100)"""
            )
            if expected.classification is not None:
                c = expected.classification
                expander = page.get_by_text("probabilities (", exact=False).first
                if c.confident:  # open only when the class is uncertain; open it for the check
                    expander.click()
                rows = page.locator(".fs-class-row")
                rows.last.wait_for()
                page.wait_for_timeout(1000)  # the expander opens with an animation: let it end
                assert rows.count() == len(c.probabilities)
                assert rows.first.get_attribute("aria-label") == f"{c.predicted} {c.probability:.3f}"
            body = page.inner_text("body")
            screenshot(page, f"app-{kind}.png")
        finally:
            page.close()

    assert NOTICE in body
    assert page_shows_no_error(body)
    assert expected.decision.lower() in body.lower()
    has_fracture = "fracture" in heads
    assert ("Fracture probability" in body) == has_fracture
    assert ("fracture probability" in body.lower()) == has_fracture  # not in the bar, sidebar or table
    assert ("Body region" in body) == ("region" in heads)
    assert ("suspected area" in body) == has_fracture
    assert ("Operating point" in body) == has_fracture
    if expected.classification is not None:
        assert class_line(expected) in body
        assert "Class operating point" in body
    else:
        assert "Class" not in body
    if has_fracture:
        assert "Fracture heatmap: where the model " in body  # suspects, or looked most
        assert "Class heatmap" not in body
    else:  # a class model's map is where it sees the class; it never claims to locate fractures
        assert f"Class heatmap: where the model sees {expected.classification.predicted}" in body
        assert "Fracture heatmap" not in body and "suspects a fracture" not in body


def page_shows_no_error(body: str) -> bool:
    return not any(word in body for word in ("Traceback", "Exception", "Error:", "could not be"))
