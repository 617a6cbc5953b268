"""Plain functions behind the Streamlit app: arguments, examples, card text, probability bar, tables.

Nothing here imports Streamlit, so all of it is unit-testable on its own. The
Streamlit script (:mod:`fracsight.app.streamlit_app`) only wires these to widgets.
"""

from __future__ import annotations

import argparse
import html
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from fracsight.explain import DetectedBox, render_overlay, side_by_side
from fracsight.inference.results import FailedPrediction, Prediction, StudyPrediction
from fracsight.inference.tabular import IMAGE_SUFFIXES, result_row, results_payload

__all__ = [
    "DISPLAY_COLUMNS",
    "AppConfig",
    "ResultCard",
    "Verdict",
    "ViewData",
    "card_for",
    "escape_markdown",
    "failure_from_exception",
    "json_text",
    "parse_app_args",
    "pick_examples",
    "probability_bar_html",
    "render_views",
    "table_rows",
    "verdict",
    "view_data",
]

Result = Prediction | FailedPrediction | StudyPrediction

DISPLAY_COLUMNS = (
    "kind",
    "source",
    "decision",
    "fracture_probability",
    "threshold",
    "region",
    "top_box",
    "reliable",
    "warnings",
    "error_code",
    "error",
)
COLOURS = {"suspected": "#c62828", "clear": "#2e7d32", "unreliable": "#8d6e63", "class": "#1565c0"}
# Streamlit's colour names for the same severities
MARKDOWN_COLOURS = {"suspected": "red", "clear": "green", "unreliable": "orange", "class": "blue"}


# ---- configuration -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AppConfig:
    """What ``fracsight app`` passes after ``--``: the model and an optional example folder."""

    model: str | None = None
    examples: Path | None = None
    n_examples: int = 6
    operating_point: str | None = None


def parse_app_args(argv: Sequence[str]) -> AppConfig:
    """Parse the script arguments; unknown ones (e.g. a test runner's) are ignored.

    Long options only, so a test runner's ``-m``/``-k`` never collide with ours.
    """
    parser = argparse.ArgumentParser(prog="fracsight-app", add_help=False, allow_abbrev=False)
    parser.add_argument("--model", default=None)
    parser.add_argument("--examples", type=Path, default=None)
    parser.add_argument("--n-examples", type=int, default=6)
    parser.add_argument("--operating-point", default=None)
    known, _ = parser.parse_known_args(list(argv))
    return AppConfig(
        model=known.model or None,
        examples=known.examples,
        n_examples=max(0, known.n_examples),
        operating_point=known.operating_point or None,
    )


def pick_examples(folder: Path, n: int = 6, *, seed: int = 0) -> list[Path]:
    """Up to ``n`` image files from ``folder``, drawn at random but reproducibly.

    Images are grouped by the folder that holds them (FracAtlas: ``images/Fractured``
    and ``images/Non_fractured``; class folders: one per class) and drawn from the
    groups in turn, so every group is represented. Hidden files are skipped.
    """
    if n <= 0 or not folder.is_dir():
        return []
    groups: dict[Path, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if (
            path.is_file()
            and path.suffix.lower() in IMAGE_SUFFIXES
            and not any(p.startswith(".") for p in rel.parts)
        ):
            groups.setdefault(path.parent, []).append(path)
    rng = random.Random(seed)
    pools = [rng.sample(files, len(files)) for _, files in sorted(groups.items())]
    picked: list[Path] = []
    while len(picked) < n and any(pools):
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(pool.pop())
    return picked


def escape_markdown(text: str) -> str:
    """Backslash-escape what would format a one-line text in Markdown, so a file name shows literally."""
    escaped = "".join("\\" + c if c in _MARKDOWN_INLINE else c for c in text)
    return "\\" + escaped if escaped[:1] in _MARKDOWN_LINE_START else escaped


_MARKDOWN_INLINE = frozenset("\\`*_[]<>$~|:")  # emphasis, code, links, HTML, maths, tables, :colour[...]
_MARKDOWN_LINE_START = frozenset("#-+=>!")  # headings, lists, block quotes


# ---- result cards --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """How a decision is shown: the words, a severity and its colour.

    Severities: ``suspected``, ``clear``, ``unreliable``, and ``class`` for a bundle without a
    fracture head (it only names the most likely class).
    """

    words: str
    severity: str

    @property
    def colour(self) -> str:
        return COLOURS[self.severity]

    @property
    def markdown_colour(self) -> str:
        return MARKDOWN_COLOURS[self.severity]

    @property
    def headline(self) -> str:
        return self.words[:1].upper() + self.words[1:]


def verdict(result: Prediction | StudyPrediction) -> Verdict:
    if not result.reliable:
        return Verdict(result.decision, "unreliable")
    if result.fracture_suspected is None:
        return Verdict(result.decision, "class")
    return Verdict(result.decision, "suspected" if result.fracture_suspected else "clear")


@dataclass(frozen=True)
class ResultCard:
    """The text of one result card."""

    title: str
    verdict: Verdict
    probability: str
    region: str
    boxes: str
    warnings: tuple[str, ...]
    unreliable: str | None  # the prominent "not reliable" banner, or None
    fracture_type: str | None = None  # top class of an N-class head, when the bundle has one


def card_for(pred: Prediction) -> ResultCard:
    if pred.fracture_probability is None or pred.threshold is None:
        probability = "No fracture probability: this model only classifies"
    else:
        probability = (
            f"Fracture probability {pred.fracture_probability:.3f} "
            f"(threshold {pred.threshold:.3f}, operating point {pred.operating_point})"
        )
    if pred.region:
        region = f"Body region: {pred.region} ({pred.region_probabilities[pred.region]:.2f})"
    else:
        region = "Body region: not predicted by this model"
    n = len(pred.boxes)
    boxes = (
        f"{n} suspected area{'s' if n != 1 else ''} boxed (top score {pred.boxes[0].score:.2f})"
        if n
        else "No area boxed"
    )
    fracture_type = None
    if pred.class_probabilities:
        top = max(pred.class_probabilities, key=pred.class_probabilities.__getitem__)
        fracture_type = f"Most likely class: {top} ({pred.class_probabilities[top]:.2f})"
    unreliable = None
    if not pred.reliable:
        unreliable = (
            "Not reliable: this image does not look like what the model was made for. "
            "The probability is shown for reference only; do not act on it."
        )
    return ResultCard(
        title=pred.source,
        verdict=verdict(pred),
        probability=probability,
        region=region,
        boxes=boxes,
        warnings=tuple(pred.warnings),
        unreliable=unreliable,
        fracture_type=fracture_type,
    )


def failure_from_exception(source: str, error: Exception) -> FailedPrediction:
    """An error card's content: the stable error code and a message, never a traceback."""
    code = getattr(error, "code", None)
    if isinstance(code, str):
        return FailedPrediction(source, code, str(error))
    return FailedPrediction(
        source, "internal_error", f"unexpected {type(error).__name__} while processing this file"
    )


def probability_bar_html(
    probability: float, threshold: float, *, severity: str = "clear", label: str = "fracture probability"
) -> str:
    """A horizontal bar filled to ``probability`` with a marker at ``threshold`` (self-contained HTML)."""
    p = min(max(float(probability), 0.0), 1.0)
    t = min(max(float(threshold), 0.0), 1.0)
    colour = COLOURS.get(severity, COLOURS["clear"])
    tag = html.escape(label)
    return (
        f'<div class="fs-bar" role="img" aria-label="{tag} {p:.3f}, threshold {t:.3f}" '
        'style="margin:0.25rem 0 0.75rem 0;">'
        '<div style="position:relative;height:1.1rem;font-size:0.75rem;color:#424242;">'
        f'<span style="position:absolute;left:{t * 100:.1f}%;transform:translateX(-50%);'
        f'white-space:nowrap;">threshold {t:.2f}</span></div>'
        '<div style="position:relative;height:16px;background:#e0e0e0;border-radius:8px;">'
        f'<div class="fs-bar-fill" style="width:{p * 100:.1f}%;height:100%;background:{colour};'
        'border-radius:8px;"></div>'
        f'<div class="fs-bar-threshold" title="threshold {t:.3f}" style="position:absolute;'
        f'left:{t * 100:.1f}%;top:-4px;bottom:-4px;width:3px;margin-left:-1px;background:#212121;"></div>'
        "</div>"
        f'<div style="font-size:0.8rem;color:#424242;margin-top:0.2rem;">{tag} <b>{p:.3f}</b></div>'
        "</div>"
    )


# ---- images --------------------------------------------------------------------------------------------
def _scaled_boxes(boxes: Sequence[DetectedBox], scale: float) -> list[DetectedBox]:
    return [replace(b, x0=b.x0 * scale, y0=b.y0 * scale, x1=b.x1 * scale, y1=b.y1 * scale) for b in boxes]


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float (H, W) array to ``size`` = (width, height)."""
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


@dataclass(frozen=True)
class ViewData:
    """What the image views need, shrunk to display size: far smaller than the full radiograph."""

    pixels: np.ndarray  # (h, w) float32 in [0, 1]
    heatmap: np.ndarray | None  # (h, w) in [0, 1]
    boxes: tuple[DetectedBox, ...]  # in display pixels


def view_data(pred: Prediction, max_side: int = 1024) -> ViewData:
    """The radiograph, heatmap and boxes of a prediction, shrunk so the longer side is <= ``max_side``."""
    if pred.pixels is None:
        raise ValueError("the prediction holds no pixels; predict with keep_pixels=True")
    pixels = np.asarray(pred.pixels, dtype=np.float32)
    heat = pred.heatmap
    boxes: Sequence[DetectedBox] = pred.boxes
    h, w = pixels.shape
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        pixels = _resize(pixels, size)
        heat = None if heat is None else np.clip(_resize(heat, size), 0.0, 1.0)
        boxes = _scaled_boxes(boxes, scale)
    return ViewData(pixels, heat, tuple(boxes))


def render_views(
    view: ViewData, *, show_heatmap: bool = True, show_boxes: bool = True, opacity: float = 0.4
) -> tuple[Image.Image, Image.Image]:
    """The overlay (heatmap and boxes on the radiograph) and original|overlay side by side."""
    heat = view.heatmap if show_heatmap else None
    overlay = render_overlay(view.pixels, heat, view.boxes if show_boxes else (), opacity=opacity)
    return overlay, side_by_side(view.pixels, overlay)


# ---- table and downloads -------------------------------------------------------------------------------
def table_rows(results: Sequence[Result]) -> list[dict[str, str]]:
    """One row per image (or study, or failed file) with the columns worth seeing on screen."""
    return [{k: row[k] for k in DISPLAY_COLUMNS} for row in map(result_row, results)]


def json_text(
    results: Sequence[Prediction | FailedPrediction], studies: Sequence[StudyPrediction], model: str
) -> str:
    """The same shape as ``fracsight predict --json``: model, notice, images, studies."""
    return json.dumps(results_payload(results, studies, model), indent=2)
