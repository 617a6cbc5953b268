"""Plain functions behind the web app: arguments, examples, card text, bars, heatmap captions, tables.

Nothing here imports Streamlit, so all of it is unit-testable on its own and shared by any
front end (the Streamlit script, :mod:`fracsight.app.streamlit_app`, only wires these to
widgets). A bundle may have any of the heads ``fracture``, ``class`` and ``region``: every
card, caption, sidebar text and table here shows the heads the bundle has and nothing else.
Texts are plain (front ends escape them for their markup).
"""

from __future__ import annotations

import argparse
import html
import io
import json
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from fracsight.bundle import BundleSpec, OperatingPoint
from fracsight.explain import (
    MIN_HEAT,
    DetectedBox,
    overlay_save_options,
    overlay_words,
    render_overlay,
    short_overlay_stem,
    side_by_side,
)
from fracsight.inference.ood import NOT_RELIABLE
from fracsight.inference.results import (
    CLASS_ACTIVATION,
    FRACTURE,
    FRACTURE_MAP,
    ClassResult,
    FailedPrediction,
    Prediction,
    StudyPrediction,
    at_operating_point,
    finding_of,
    shown_probability,
)
from fracsight.inference.tabular import (
    ALL_INPUTS,
    csv_text,
    folder_images,
    result_columns,
    result_row,
    results_payload,
)
from fracsight.io import image_stem

__all__ = [
    "HIDDEN_ON_SCREEN",
    "AppConfig",
    "ClassSummary",
    "ResultCard",
    "StudyCard",
    "Verdict",
    "ViewData",
    "at_operating_point",
    "box_scores_text",
    "card_for",
    "class_bars_html",
    "class_operating_point_text",
    "class_summary",
    "csv_download",
    "display_columns",
    "duplicates_text",
    "eight_bit",
    "escape_markdown",
    "failure_from_exception",
    "failure_message",
    "first_of_each",
    "folder_names",
    "heads_text",
    "heatmap_text",
    "json_text",
    "left_out_text",
    "operating_point_text",
    "overlay_caption",
    "overlay_file_name",
    "overlay_png",
    "parse_app_args",
    "pick_examples",
    "probability_bar_html",
    "reading_text",
    "render_views",
    "study_card_for",
    "table_rows",
    "verdict",
    "view_data",
]

Result = Prediction | FailedPrediction | StudyPrediction

# CSV columns left out of the on-screen table (the sidebar, the threshold and the cards show them)
HIDDEN_ON_SCREEN = frozenset({"operating_point", "region_probability", "top_box_score"})
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


def pick_examples(
    folder: Path, n: int = 6, *, seed: int = 0, accept: Callable[[Path], bool] | None = None
) -> list[Path]:
    """Up to ``n`` image files from ``folder``, drawn at random but reproducibly.

    Images are grouped by the folder that holds them (FracAtlas: ``images/Fractured``
    and ``images/Non_fractured``; class folders: one per class) and drawn from the
    groups in turn, so every group is represented, then shuffled: in the groups' order the
    buttons alternated fractured / not fractured at every start, giving the answers away (the
    examples are not named by their folder for that reason). Hidden files are skipped.
    ``accept``: whether a file may be one (it reads as an image); a group's next file stands in
    for one turned down, and the groups share ``10 * n`` files turned down, each its own part (a
    folder of DICOM reports is neither read to its end nor allowed to use up the others' tries).
    The app drew 10n and kept the first n readable ones of their shuffle: 5 fractured and 1 normal
    of FracAtlas, no hand of hand/hip/leg.
    """
    if n <= 0 or not folder.is_dir():
        return []
    groups: dict[Path, list[Path]] = {}
    for path in folder_images(folder):
        if path.is_file():  # not an unreadable sub-folder
            groups.setdefault(path.parent, []).append(path)
    rng = random.Random(seed)
    pools = [rng.sample(files, len(files)) for _, files in sorted(groups.items())]
    picked: list[Path] = []
    tries = [max(1, 10 * n // len(pools))] * len(pools)  # files each group may have turned down
    turned_down = 0  # and all of them: a tree of a thousand series of reports
    while (
        len(picked) < n and turned_down < 10 * n and any(p and t for p, t in zip(pools, tries, strict=True))
    ):
        for i, pool in enumerate(pools):
            while pool and len(picked) < n and tries[i] and turned_down < 10 * n:
                path = pool.pop()
                if accept is None or accept(path):
                    picked.append(path)
                    break
                tries[i] -= 1
                turned_down += 1
    rng.shuffle(picked)
    return picked


def first_of_each(uploads: Sequence[tuple[str, str, bool]]) -> tuple[list[int], list[tuple[str, int]]]:
    """The uploads to predict, given each as (name, digest of its content, whether it is a file of
    an uploaded folder): the indices of those kept, and (name, index of the upload kept in its
    place) for every repeat: the note names the one kept as its card does, which two kept uploads
    of one name (``IM000001``, shown as ``IM000001 (2)``) cannot tell from the name alone.
    As ``fracsight predict`` takes a file given twice once, the same image uploaded twice (or an
    upload that is also in an uploaded folder) is one view, never two in a study. A folder's file
    has a place of its own, as a path does: a copy of it at another place in the folder keeps its
    row (``predict FOLDER`` gives both, and each study counts its own views; dropping it took a
    view out of another patient's study), and only the same name with the same content (the
    folder uploaded twice) is a repeat."""
    in_folders: dict[str, int] = {}
    for i, (_, digest, placed) in enumerate(uploads):
        if placed:
            in_folders.setdefault(digest, i)
    first: dict[object, int] = {}
    kept: list[int] = []
    repeats: list[tuple[str, int]] = []
    for i, (name, digest, placed) in enumerate(uploads):
        key = (name, digest) if placed else digest
        earlier = first.get(key, None if placed else in_folders.get(digest))
        if earlier is not None:
            repeats.append((name, earlier))
            continue
        first[key] = i
        kept.append(i)
    return kept, repeats


def folder_names(paths: Sequence[str]) -> list[str]:
    """The names of an uploaded folder's files, as ``fracsight predict FOLDER`` names them: each by
    its path in the folder chosen (the browser sends ``export/patient1/study1/IM000001``; predict
    says ``patient1/study1/IM000001``), and by its whole path where two folders chosen would give
    two files one name (as predict names files of one name by their paths as typed)."""
    inside = [p.split("/", 1)[1] if "/" in p else p for p in paths]
    counts = Counter(inside)
    return [name if counts[name] == 1 else whole for name, whole in zip(inside, paths, strict=True)]


def reading_text(done: int, total: int, name: str) -> str:
    """The progress line while images are predicted: which one of how many, by name."""
    return f"Reading image {done + 1} of {total}: {name}"


def duplicates_text(repeats: Sequence[tuple[str, str]]) -> str | None:
    """The note on uploads left out as repeats, each as (its name, the name the card of the one kept
    shows), or None when there are none."""
    if not repeats:
        return None
    named = [name if name == kept else f"{name} (the same image as {kept})" for name, kept in repeats]
    return f"Uploaded more than once, so shown and counted once (in a study too): {', '.join(named)}"


def left_out_text(names: Sequence[str], most: int = 5) -> str:
    """The note on an uploaded folder's files that are not images (``.DS_Store``, ``notes.txt``)."""
    shown = ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")
    return f"Left out of the folder (not images, or hidden): {shown}"


def escape_markdown(text: str) -> str:
    """Backslash-escape what would format a one-line text in Markdown, so a file name shows literally."""
    escaped = "".join("\\" + c if c in _MARKDOWN_INLINE else c for c in text)
    return "\\" + escaped if escaped[:1] in _MARKDOWN_LINE_START else escaped


def card_markdown(card: str) -> str:
    """A bundle's ``card.md`` as the page renders it: images (``![alt](url)``, ``![alt][ref]``)
    become links, which the browser does not fetch. Rendered as written, an image in a card from
    elsewhere was fetched at every page load (its expander closed), telling another server when
    and from where the app was opened, though the page loads nothing from elsewhere."""
    # a character reference, not a backslash: `\![` in the card became `\\![`, a backslash and an
    # image again; nothing around `&#33;[` makes it an image
    return _headings_below_the_page(card.replace("![", "&#33;["))


def _headings_below_the_page(text: str) -> str:
    """Markdown headings two levels down (``#`` -> ``###``, a setext ``===`` title too): the card's
    own title was a second top-level heading, ahead of the page's, for a screen reader. The
    headings are those a CommonMark parser finds (markdown-it, which Rich brings), so a ``#`` line
    in code, indented or fenced, is left as it is."""
    from markdown_it import MarkdownIt

    lines = text.split("\n")
    for token in MarkdownIt("commonmark").parse(text):
        if token.type != "heading_open" or token.map is None or token.level > 0:
            continue  # one in a block quote or list item keeps its line: its marker comes first
        start, end = token.map
        level = min(int(token.tag[1]) + 2, 6)
        if token.markup.startswith("#"):  # ATX: "# Title", indented by at most 3 spaces
            stripped = lines[start].lstrip(" ")
            lines[start] = "#" * level + stripped[len(stripped) - len(stripped.lstrip("#")) :]
        else:  # setext: its text lines, then the === or --- line
            title = " ".join(line.strip() for line in lines[start : end - 1])
            lines[start:end] = [f"{'#' * level} {title}"] + [""] * (end - start - 1)
    return "\n".join(lines)


def results_announcement(
    results: Sequence[Prediction | FailedPrediction], studies: Sequence[StudyPrediction] = ()
) -> str:
    """What a screen reader says once the results are in: how many, how they came out, and each
    study's verdict (the page's cards say it only to those who see them; the examination's verdict,
    which matters most, was never said)."""
    counts: dict[str, int] = {}
    for result in results:
        if isinstance(result, FailedPrediction):
            what = "could not be read"
        else:
            severity = verdict(result).severity
            # a class model's: "classified" was said of one its card calls "class uncertain"
            uncertain = result.classification is not None and not result.classification.confident
            what = {
                "suspected": f"{result.finding} suspected",
                "clear": f"no {result.finding} suspected",
                "unreliable": "not reliable",
            }.get(severity, "class uncertain" if uncertain else "classified")
        counts[what] = counts.get(what, 0) + 1
    files = f"{len(results)} file" + ("s" if len(results) != 1 else "")
    said = f"Results for {files}: " + ", ".join(f"{n} {what}" for what, n in counts.items()) + "."
    for study in studies:
        card = study_card_for(study)
        parts = [f"{card.title}: {card.verdict.headline}", *([card.views] if card.views else [])]
        if card.cautions:
            parts.append(f"{len(card.cautions)} caution(s) on the study card")
        said += " " + "; ".join(parts) + "."
    return said


# emphasis, code, links, HTML and its entities (a&lt;b), maths, tables, :colour[...], a heading's closing #
_MARKDOWN_INLINE = frozenset("\\`*_[]<>$~|:&#")
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


def _class_label(fracture_head: bool, finding: str = FRACTURE) -> str:
    """With a fracture head the classes describe its finding (its type); alone they are the answer."""
    return f"{finding.capitalize()} type" if fracture_head else "Class"


def _spec_finding(spec: BundleSpec) -> str:
    """What the bundle's binary head finds (``Predictor.finding``), for texts made from the bundle."""
    head = spec.head("fracture")
    return finding_of(head.classes[-1]) if head is not None else FRACTURE


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in tuple("aeiou") else f"a {noun}"


@dataclass(frozen=True)
class ClassSummary:
    """What a card says about an N-class head's answer."""

    label: str  # "Class", or "Fracture type" next to a fracture head ("Abnormality type" next to a MURA one)
    text: str  # the line on the card: the class and its probability, or why it is uncertain
    note: str | None  # e.g. that a fracture type means little when no fracture is suspected
    predicted: str  # the most likely class (stated only when ``confident``)
    confident: bool
    min_probability: float
    probabilities: tuple[tuple[str, float], ...]  # every class, most likely first


def class_summary(
    c: ClassResult,
    *,
    fracture_head: bool = False,
    fracture_suspected: bool | None = None,
    finding: str = FRACTURE,
) -> ClassSummary:
    """The card text of a class result; ``fracture_head``: the bundle also has a fracture head,
    which finds ``finding`` (``Prediction.finding``)."""
    label = _class_label(fracture_head, finding)
    if c.confident:
        text = f"{label}: {c.predicted} ({shown_probability(c.probability)})"
    else:
        digits = 2  # more where two places show both as one number: "(0.74) is below the minimum 0.74"
        while digits < 6 and f"{c.probability:.{digits}f}" == f"{c.min_probability:.{digits}f}":
            digits += 1
        text = (
            f"{label} uncertain: the most likely, {c.predicted} ({c.probability:.{digits}f}), "
            f"is below the minimum {c.min_probability:.{digits}f}"
        )
    note = None
    if fracture_head and fracture_suspected is False:
        note = f"No {finding} is suspected, so the type says little here."
    ranked = tuple(sorted(c.probabilities.items(), key=lambda kv: (-kv[1], kv[0])))
    return ClassSummary(label, text, note, c.predicted, c.confident, c.min_probability, ranked)


@dataclass(frozen=True)
class ResultCard:
    """The text of one result card: a field is None when the bundle lacks the head behind it."""

    title: str
    verdict: Verdict
    probability: str | None  # fracture probability, threshold and operating point
    classification: ClassSummary | None
    region: str | None
    boxes: str | None  # how many suspected areas are boxed (fracture head only)
    box_count: int
    heatmap: str  # what the heatmap shows, in words
    localization: str  # FRACTURE_MAP, CLASS_ACTIVATION or "none" (Prediction.localization)
    warnings: tuple[str, ...]
    unreliable: str | None  # the prominent "not reliable" banner, or None
    # the boxes mark suspected fractures (the decision is positive); on a negative decision they
    # are only the areas the model weighed most, and say so, never "suspected"
    boxes_suspected: bool = True
    finding: str = FRACTURE  # what the fracture head finds (Prediction.finding)

    @property
    def lines(self) -> tuple[str, ...]:
        """The result lines below the decision for the heads the bundle has: fracture (or
        abnormality) probability, boxes, class, region."""
        c = self.classification
        found = (self.probability, self.boxes, c.text if c else None, self.region)
        return tuple(line for line in found if line is not None)


def _unreliable(pred: Prediction) -> str:
    """The banner of a result that cannot be relied on, with the reasons its warnings give (a file
    cut short was "does not look like what the model was made for", as every other reason)."""
    ending = f"; {NOT_RELIABLE}"
    reasons = [w.removesuffix(ending) for w in pred.warnings if w.endswith(ending)]
    why = "; ".join(reasons) or "this image does not look like what the model was made for"
    return f"Not reliable: {why}. The result is shown for reference only; do not act on it."


_NOT_RELIABLE = "(not reliable: for reference only)"


def _none_suspected(finding: str) -> str:
    return f"(no {finding} suspected)"


def _probability_text(prefix: str, probability: float, threshold: float, operating_point: str | None) -> str:
    shown = shown_probability(probability, 3)
    return f"{prefix} {shown} (threshold {threshold:.3f}, operating point {operating_point})"


def heatmap_text(
    localization: str,
    predicted_class: str | None = None,
    *,
    fracture_suspected: bool | None = None,
    reliable: bool = True,
    finding: str = FRACTURE,
) -> str:
    """What a prediction's heatmap shows (see ``Prediction.localization``); on a negative decision
    or an input the model cannot be relied on the fracture map never says "suspects". The map of
    an abnormality head (``finding``) is an abnormality heatmap."""
    if localization == FRACTURE_MAP:
        name = f"{finding.capitalize()} heatmap"
        if not reliable:
            return f"{name}: where the model looked most {_NOT_RELIABLE}"
        if fracture_suspected is False:
            return f"{name}: where the model looked most {_none_suspected(finding)}"
        return f"{name}: where the model suspects {_a(finding)}"
    if localization == CLASS_ACTIVATION:
        if not reliable:  # no class is "seen" on an input the model cannot be relied on
            return f"Class heatmap: where the model looked most {_NOT_RELIABLE}; it does not locate fractures"
        seen = predicted_class or "the most likely class"
        return f"Class heatmap: where the model sees {seen} (it does not locate fractures)"
    return "No map for this model: the radiograph only"


def box_scores_text(boxes: Sequence[DetectedBox], finding: str = FRACTURE) -> str:
    """Every box's score as the overlay labels it (two decimals, in the boxes' order), and what it is:
    the card gave only the top one, so the other labels on the image had no counterpart, and a box's
    0.39 next to a fracture probability of 0.85 read as a contradiction."""
    labels = ", ".join(f"{b.score:.2f}" for b in boxes)
    word = "score" if len(boxes) == 1 else "scores"
    return f"box {word} {labels}, as labelled on the image; not the {finding} probability"


def _region_text(region: str | None, probabilities: Mapping[str, float]) -> str | None:
    """The region line, naming the regions the model chooses from: an elbow read "hand (1.00)",
    as if stated, where the model knows only these (FracAtlas files elbows under hand)."""
    if not region or region not in probabilities:
        return None
    p = probabilities[region]
    shown = shown_probability(p)  # not 1.00: a region head is never certain
    known = f"{len(probabilities)} the model knows: {', '.join(probabilities)}"
    return f"Body region: {region} ({shown}), of the {known}"


def card_for(pred: Prediction, *, show_boxes: bool = True) -> ResultCard:
    """The card of a result; ``show_boxes`` False: the boxes are hidden on the image, and the card
    says so rather than describe labels that are not there."""
    fracture_head = pred.fracture_probability is not None and pred.threshold is not None
    probability = None
    boxes = None
    if fracture_head:
        probability = _probability_text(
            f"{pred.finding.capitalize()} probability",
            pred.fracture_probability,
            pred.threshold,
            pred.operating_point,
        )
        n = len(pred.boxes)
        areas = f"area{'s' if n != 1 else ''}"
        scores = box_scores_text(pred.boxes, pred.finding)
        if not n and pred.fracture_suspected and pred.reliable:
            # "No area boxed" under "Fracture suspected" read as nothing to look at
            boxes = "No single area stands out enough to box: review the whole image"
        elif not n:
            boxes = "No area boxed"
        elif not show_boxes:
            boxes = f"{n} {areas} boxed, boxes hidden (Show boxes draws them)"
        elif not pred.reliable:  # the banner says why; the boxes suggest nothing either way
            boxes = f"{n} {areas} the model weighed most boxed {_NOT_RELIABLE} ({scores})"
        elif pred.fracture_suspected:
            boxes = f"{n} suspected {areas} boxed ({scores})"
        else:
            boxes = (
                f"{n} {areas} the model weighed most boxed, for review; below the threshold, not "
                f"suspected ({scores})"
            )
    classification = None
    if pred.classification is not None:
        classification = class_summary(
            pred.classification,
            fracture_head=fracture_head,
            fracture_suspected=pred.fracture_suspected,
            finding=pred.finding,
        )
    region = _region_text(pred.region, pred.region_probabilities)
    predicted = pred.classification.mapped if pred.classification else None
    return ResultCard(
        title=pred.source,
        verdict=verdict(pred),
        probability=probability,
        classification=classification,
        region=region,
        boxes=boxes,
        box_count=len(pred.boxes),
        boxes_suspected=bool(pred.fracture_suspected) and pred.reliable,
        heatmap=heatmap_text(
            pred.localization,
            predicted,
            fracture_suspected=pred.fracture_suspected,
            reliable=pred.reliable,
            finding=pred.finding,
        ),
        localization=pred.localization,
        warnings=tuple(pred.warnings),
        unreliable=None if pred.reliable else _unreliable(pred),
        finding=pred.finding,
    )


def overlay_caption(
    card: ResultCard, view: ViewData | None = None, *, show_heatmap: bool = True, show_boxes: bool = True
) -> str:
    """The caption of the overlay image: what is drawn on it, as the display toggles leave it. With
    the ``view`` drawn, a fracture map that tints nothing (no area reaches :data:`MIN_HEAT`) says
    so: "where the model looked most" over an untouched radiograph sent a reader looking."""
    boxed = show_boxes and card.box_count > 0
    has_map = card.localization in (FRACTURE_MAP, CLASS_ACTIVATION)
    text = "Heatmap hidden" if has_map and not show_heatmap else card.heatmap
    heat = _unit_heat(view, show_heatmap) if view is not None else None
    if card.localization == FRACTURE_MAP and heat is not None and float(heat.max(initial=0.0)) < MIN_HEAT:
        text = f"{card.finding.capitalize()} heatmap: no area reaches {MIN_HEAT:.1f}, so none is tinted"
        if card.verdict.severity != "suspected":
            text += " " + (_NOT_RELIABLE if card.unreliable else _none_suspected(card.finding))
    if not boxed:
        return text
    if card.boxes_suspected:
        return f"{text}; boxes around the suspected areas"
    note = _NOT_RELIABLE if card.unreliable else _none_suspected(card.finding)
    said = text.endswith(note)  # the heatmap's words already say it
    return f"{text}; boxes around the areas it weighed most{'' if said else ' ' + note}"


@dataclass(frozen=True)
class StudyCard:
    """The text of the study verdict (several views of one examination combined)."""

    title: str
    verdict: Verdict
    probability: str | None  # the mean fracture (or abnormality) probability, with a fracture head
    classification: ClassSummary | None
    how: str  # how the views were combined, in words
    unreliable: str | None
    views: str | None = None  # how many views are suspected on their own (given the views)
    region: str | None = None  # the study's body region, with a region head
    # what a reader must look at: the study's warnings (a view suspected on its own under a study
    # with none suspected, views of different body regions, a view given twice, ...)
    cautions: tuple[str, ...] = ()

    @property
    def lines(self) -> tuple[str, ...]:
        c = self.classification
        found = (self.probability, self.views, c.text if c else None, self.region)
        return tuple(line for line in found if line is not None)


def _views_suspected(study: StudyPrediction) -> str | None:
    """The line counting the views suspected on their own at the study's threshold."""
    if study.threshold is None or not study.view_probabilities:
        return None
    above = [f"{name} (not reliable)" if name in study.unreliable else name for name in study.views_suspected]
    line = f"Views suspected on their own: {len(above)} of {len(study.images)}"
    return line + (f" ({', '.join(above)})" if above else "")


def _cautions(study: StudyPrediction) -> tuple[str, ...]:
    """Each of the study's warnings, as ``predict`` and the API give them, as a sentence; those the
    card's "not reliable" line says already left out. The card showed two of them (views hidden by
    the mean, regions that differ): a view given twice, views of two DICOM studies or two folders,
    a study folder's images not given were in the CSV and the API's answer, not on screen."""
    said = () if study.reliable else study.why_not_reliable
    return tuple(f"{w[0].upper()}{w[1:]}." for w in study.warnings if w not in said)


def study_card_for(study: StudyPrediction) -> StudyCard:
    """The study card: the verdict, the views suspected on their own and what to review, and a
    caution where the views' body regions differ."""
    fracture_head = study.fracture_probability is not None and study.threshold is not None
    probability = None
    how = []
    if fracture_head:
        probability = _probability_text(
            f"Mean {study.finding} probability of the views",
            study.fracture_probability,
            study.threshold,
            study.operating_point,
        )
        how.append(f"{study.finding.capitalize()} probability: the mean of the views.")
    classification = None
    if study.classification is not None:
        classification = class_summary(
            study.classification,
            fracture_head=fracture_head,
            fracture_suspected=study.fracture_suspected,
            finding=study.finding,
        )
        weighted = f", each weighted by its {study.finding} probability" if fracture_head else ""
        how.append(f"{classification.label}: the mean of the views' class probabilities{weighted}.")
    return StudyCard(
        title=f"Study verdict ({len(study.images)} view{'s' if len(study.images) != 1 else ''})"
        f"{_study_named(study.study)}",
        verdict=verdict(study),
        probability=probability,
        classification=classification,
        how=" ".join(how),
        unreliable=None if study.reliable else _unreliable_study(study),
        views=_views_suspected(study),
        region=_region_text(study.region, study.region_probabilities),
        cautions=_cautions(study),
    )


def _study_named(name: str) -> str:
    """A study folder's name after the title; none for the one study of every input."""
    return "" if name == ALL_INPUTS else f": {name}"


def _unreliable_study(study: StudyPrediction) -> str:
    """Which views make the study not reliable, and whether its result still includes them."""
    return f"Not reliable: {'; '.join(study.why_not_reliable)}."


# ---- the model (sidebar) -------------------------------------------------------------------------------
def _names(names: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, ... ({len(names)} in all)"


def heads_text(spec: BundleSpec) -> str:
    """What a bundle reports, from its heads: e.g. "Reports: fracture probability, body region"
    ("abnormality probability" for a head trained on MURA)."""
    fracture_head = spec.head("fracture") is not None
    finding = _spec_finding(spec)
    parts = [f"{finding} probability and suspected areas"] if fracture_head else []
    class_head = spec.head("class")
    if class_head is not None:
        parts.append(f"{_class_label(fracture_head, finding).lower()} ({_names(class_head.classes)})")
    region_head = spec.head("region")
    if region_head is not None:
        parts.append(f"body region ({_names(region_head.classes)})")
    return "Reports: " + ("; ".join(parts) if parts else "nothing (the bundle has no known head)")


def operating_point_text(op: OperatingPoint) -> str:
    """The chosen operating point of the fracture head: its threshold, description and measured rates."""
    text = f"Threshold {op.threshold:.3f}: {op.description}"
    rates = [
        f"{name} {value:.2f}"
        for name, value in (("sensitivity", op.sensitivity), ("specificity", op.specificity))
        if value is not None
    ]
    return f"{text} ({', '.join(rates)})" if rates else text


def class_operating_point_text(spec: BundleSpec) -> str | None:
    """When the class head states its class (None for a bundle without a class head)."""
    class_head = spec.head("class")
    if class_head is None:
        return None
    label = _class_label(spec.head("fracture") is not None, _spec_finding(spec))
    cop = spec.class_operating_point
    if cop is None:
        return f"{label}: the most likely is always stated (this bundle has no minimum probability)."
    text = (
        f"{label} stated at probability {cop.min_probability:.3f} or more, otherwise uncertain: "
        f"{cop.description}"
    )
    measured = []
    if cop.accuracy is not None:
        measured.append(f"accuracy of the stated classes {cop.accuracy:.2f}")
    if cop.coverage is not None:
        measured.append(f"coverage {cop.coverage:.2f} (share of images that got a class)")
    return f"{text}. Validation: {', '.join(measured)}." if measured else f"{text}."


def failure_from_exception(source: str, error: Exception) -> FailedPrediction:
    """An error card's content: the stable error code and a message, never a traceback."""
    if isinstance(getattr(error, "code", None), str):
        return FailedPrediction.of(source, error)
    return FailedPrediction(
        source, "internal_error", f"unexpected {type(error).__name__} while processing this file"
    )


def _name_in_front(failure: FailedPrediction) -> str | None:
    """The name a failure's message begins with (``huge.png: image of ...``): its source, or the
    file name alone, which :meth:`~fracsight.inference.Predictor.predict` reads a path under."""
    for name in (failure.source, Path(failure.source).name):
        if name and failure.error.startswith(f"{name}: "):
            return name
    return None


def failure_message(failure: FailedPrediction) -> str:
    """An error card's message without the file's name in front: the card's title is that name already."""
    name = _name_in_front(failure)
    return failure.error[len(name) + 2 :] if name else failure.error


def named_as(result: Prediction | FailedPrediction, name: str) -> Prediction | FailedPrediction:
    """``result`` under ``name`` (a folder's file by its path in it, as ``fracsight predict`` names
    it), a failure's message too: two patients' ``IM1.jpg`` rows both said ``IM1.jpg: ...``."""
    if isinstance(result, FailedPrediction) and _name_in_front(result):
        return replace(result, source=name, error=f"{name}: {failure_message(result)}")
    return replace(result, source=name)


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
        '<div style="position:relative;height:1.1rem;font-size:0.75rem;color:inherit;opacity:0.85;">'
        f'<span style="position:absolute;left:{t * 100:.1f}%;transform:translateX(-50%);'
        f'white-space:nowrap;">threshold {t:.3f}</span></div>'
        '<div style="position:relative;height:16px;background:#e0e0e0;border-radius:8px;">'
        f'<div class="fs-bar-fill" style="width:{p * 100:.1f}%;height:100%;background:{colour};'
        'border-radius:8px;"></div>'
        f'<div class="fs-bar-threshold" title="threshold {t:.3f}" style="position:absolute;'
        f'left:{t * 100:.1f}%;top:-4px;bottom:-4px;width:3px;margin-left:-1px;background:#212121;"></div>'
        "</div>"
        '<div style="font-size:0.8rem;color:inherit;opacity:0.85;margin-top:0.2rem;">'
        f"{tag} <b>{p:.3f}</b></div>"
        "</div>"
    )


def class_bars_html(summary: ClassSummary, *, most: int = 12) -> str:
    """Every class's probability as a small bar list (self-contained HTML), most likely first.

    The stated (or most likely) class is drawn in the class colour, the others in grey; a marker
    on each bar shows the minimum probability at which a class is stated. At most ``most`` rows;
    a last line counts the rest.
    """
    m = min(max(float(summary.min_probability), 0.0), 1.0)
    rows = []
    for name, p in summary.probabilities[:most]:
        p = min(max(float(p), 0.0), 1.0)
        tag = html.escape(name)
        top = name == summary.predicted
        colour = COLOURS["class"] if top else "#9e9e9e"
        marker = (
            f'<div class="fs-class-min" title="minimum {m:.2f}" style="position:absolute;left:{m * 100:.1f}%;'
            'top:-2px;bottom:-2px;width:2px;margin-left:-1px;background:#212121;"></div>'
            if m > 0
            else ""
        )
        rows.append(
            f'<div class="fs-class-row" role="img" aria-label="{tag} {p:.3f}" style="display:flex;'
            'align-items:center;gap:0.5rem;margin:0.15rem 0;font-size:0.8rem;color:inherit;opacity:0.85;">'
            f'<span style="flex:0 0 35%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;'
            f'{"font-weight:bold;" if top else ""}">{tag}</span>'
            '<div style="position:relative;flex:1;height:10px;background:#e0e0e0;border-radius:5px;">'
            f'<div class="fs-class-fill" style="width:{p * 100:.1f}%;height:100%;background:{colour};'
            f'border-radius:5px;"></div>{marker}</div>'
            f'<span style="flex:0 0 3rem;text-align:right;">{p:.3f}</span></div>'
        )
    rest = len(summary.probabilities) - most
    if rest > 0:
        rows.append(f'<div style="font-size:0.75rem;color:inherit;opacity:0.75;">and {rest} more</div>')
    if m > 0:
        rows.append(
            '<div style="font-size:0.75rem;color:inherit;opacity:0.75;margin-top:0.2rem;">'
            f"marker: the minimum probability {m:.2f} at which a class is stated</div>"
        )
    return '<div class="fs-class-bars" style="margin:0.25rem 0 0.5rem 0;">' + "".join(rows) + "</div>"


# ---- images --------------------------------------------------------------------------------------------
def _scaled_boxes(boxes: Sequence[DetectedBox], sx: float, sy: float) -> list[DetectedBox]:
    return [replace(b, x0=b.x0 * sx, y0=b.y0 * sy, x1=b.x1 * sx, y1=b.y1 * sy) for b in boxes]


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float (H, W) array to ``size`` = (width, height)."""
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


@dataclass(frozen=True)
class ViewData:
    """What the image views need, shrunk to display size: far smaller than the full radiograph."""

    pixels: np.ndarray  # (h, w) float32 in [0, 1], or uint8 (:func:`eight_bit`)
    heatmap: np.ndarray | None  # (h, w) in [0, 1], or uint8 with 255 for 1.0
    boxes: tuple[DetectedBox, ...]  # in display pixels


def true_shape(size: tuple[int, int], aspect: float) -> tuple[int, int]:
    """(height, width) of an image of ``size`` whose pixels are ``aspect`` times as high as wide,
    at its true shape: the shorter axis stretched (shrinking the longer lost half its detail)."""
    h, w = size
    return round(h * max(1.0, aspect)), round(w * max(1.0, 1.0 / aspect))


def view_data(pred: Prediction, max_side: int = 1024) -> ViewData:
    """The radiograph, heatmap and boxes of a prediction, shrunk so the longer side is <= ``max_side``,
    and at the true shape of its pixels (a DICOM's pixel aspect, as the model read it): a film
    digitised at 0.2 x 0.1 mm was shown squashed 2:1, its boxes and heatmap with it."""
    if pred.pixels is None:
        raise ValueError("the prediction holds no pixels; predict with keep_pixels=True")
    pixels = np.asarray(pred.pixels, dtype=np.float32)
    heat = pred.heatmap
    boxes: Sequence[DetectedBox] = pred.boxes
    h, w = pixels.shape
    true_h, true_w = true_shape((h, w), pred.metadata.pixel_aspect)
    scale = min(1.0, max_side / max(true_h, true_w))
    sx, sy = scale * true_w / w, scale * true_h / h
    if (sx, sy) != (1.0, 1.0):
        # 2 px at least: Streamlit fits a picture to 1460 px wide, and original|overlay of a view
        # 1 px high (a 40000 x 32 image) became 0 px high, a traceback that ended the page
        size = (max(2, round(w * sx)), max(2, round(h * sy)))
        pixels = _resize(pixels, size)
        heat = None if heat is None else np.clip(_resize(heat, size), 0.0, 1.0)
        boxes = _scaled_boxes(boxes, size[0] / w, size[1] / h)
    return ViewData(pixels, heat, tuple(boxes))


def _as_uint8(a: np.ndarray) -> np.ndarray:
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def eight_bit(view: ViewData) -> ViewData:
    """``view`` in 8 bits a pixel, as the web page shows it. The web app keeps one view per upload
    in the session: float32 would hold four times the memory (about 2 GB for 300 uploads). The
    desktop viewer keeps float32, for its window and level."""
    heat = None if view.heatmap is None else _as_uint8(view.heatmap)
    return ViewData(_as_uint8(view.pixels), heat, view.boxes)


def _unit_heat(view: ViewData, show_heatmap: bool) -> np.ndarray | None:
    heat = view.heatmap if show_heatmap else None
    if heat is not None and heat.dtype == np.uint8:
        heat = heat.astype(np.float32) / 255.0
    return heat


def render_views(
    view: ViewData, *, show_heatmap: bool = True, show_boxes: bool = True, opacity: float = 0.4
) -> tuple[Image.Image, Image.Image]:
    """The overlay (heatmap and boxes on the radiograph) and original|overlay side by side."""
    heat = _unit_heat(view, show_heatmap)
    overlay = render_overlay(view.pixels, heat, view.boxes if show_boxes else (), opacity=opacity)
    return overlay, side_by_side(view.pixels, overlay)


def overlay_png(
    pred: Prediction,
    view: ViewData,
    *,
    show_heatmap: bool = True,
    show_boxes: bool = True,
    opacity: float = 0.4,
) -> bytes:
    """The overlay as shown, as a PNG with the band of ``fracsight predict --overlay-dir`` below it
    (:func:`~fracsight.explain.overlay_words`: the decision at ``pred``'s operating point, its numbers,
    the decision-aid notice, the colour scale), so a picture passed on alone still says what it is.
    At the view's size (at most 1024 px a side), not the original's."""
    caption, legend = overlay_words(pred, boxes_drawn=show_boxes)
    heat = _unit_heat(view, show_heatmap)
    boxes = view.boxes if show_boxes else ()
    image = render_overlay(view.pixels, heat, boxes, opacity=opacity, caption=caption, legend=legend)
    out = io.BytesIO()
    image.save(out, format="PNG", **overlay_save_options("PNG"))
    return out.getvalue()


def overlay_file_name(source: str, *, keep_suffix: bool = False) -> str:
    """The download's name: ``wrist.overlay.png`` as ``fracsight predict --overlay-dir`` names it,
    with the result's folders in it (``patient1_study1_IM000001.overlay.png``: a download has no
    folders, and two patients' ``IM000001`` got one name); ``wrist.jpg.overlay.png`` with
    ``keep_suffix``, for a name among others of its stem (:func:`~fracsight.io.names_sharing_a_stem`:
    ``wrist.jpg`` and ``wrist.png`` got one name)."""
    path = PurePosixPath(source.replace("\\", "/"))
    folders = [part for part in path.parent.parts if part not in ("/", "..", ".")]
    return (
        short_overlay_stem("_".join([*folders, path.name if keep_suffix else image_stem(path)]))
        + ".overlay.png"
    )


# ---- table and downloads -------------------------------------------------------------------------------
def display_columns(spec: BundleSpec) -> tuple[str, ...]:
    """The on-screen table's columns: the bundle's CSV columns (:func:`result_columns`) less the few
    the cards and sidebar already show (:data:`HIDDEN_ON_SCREEN`); never a column of a head it lacks."""
    return tuple(c for c in result_columns(spec) if c not in HIDDEN_ON_SCREEN)


def table_rows(results: Sequence[Result], spec: BundleSpec) -> list[dict[str, str]]:
    """One row per image (or study, or failed file) with :func:`display_columns`."""
    columns = display_columns(spec)
    return [result_row(r, columns) for r in results]


def csv_download(results: Sequence[Result], spec: BundleSpec) -> str:
    """The CSV download: the columns of ``fracsight predict --csv --all-classes`` for this bundle."""
    return csv_text(results, result_columns(spec, all_classes=True))


def json_text(
    results: Sequence[Prediction | FailedPrediction], studies: Sequence[StudyPrediction], model: str
) -> str:
    """The same shape as ``fracsight predict --json``: model, notice, images, studies."""
    return json.dumps(results_payload(results, studies, model), indent=2)
