"""The fracsight web app. Start it with ``fracsight app``; arguments after ``--`` are ``--model`` and
``--examples``. This script only wires widgets: the logic is in :mod:`fracsight.app.logic`.

Uploads stay in memory (never written to disk); DICOM headers are never read here, so no
patient identifier can reach the page.
"""

from __future__ import annotations

import hashlib
import html
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
import streamlit as st
from PIL import Image
from streamlit.runtime.scriptrunner import get_script_run_ctx
from streamlit.runtime.uploaded_file_manager import UploadedFile

from fracsight._malloc import is_large, release_freed_memory
from fracsight.app.logic import (
    AppConfig,
    ClassSummary,
    ViewData,
    at_operating_point,
    card_for,
    card_markdown,
    class_bars_html,
    class_operating_point_text,
    csv_download,
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
    named_as,
    operating_point_text,
    overlay_caption,
    overlay_file_name,
    overlay_png,
    parse_app_args,
    pick_examples,
    probability_bar_html,
    reading_text,
    render_views,
    results_announcement,
    study_card_for,
    table_rows,
    verdict,
    view_data,
)
from fracsight.bundle import read_card
from fracsight.errors import FracsightError, log_unexpected
from fracsight.inference import NOTICE, FailedPrediction, Prediction, Predictor, StudyPrediction
from fracsight.inference.tabular import is_folder_image, kept_names, numbered_names, study_results
from fracsight.io import names_sharing_a_stem, read_image

log = logging.getLogger("fracsight.app")
Result = Prediction | FailedPrediction


class Input(NamedTuple):
    key: str  # stable across reruns: the upload's id or the example's path
    name: str  # file name shown on the card
    load: Callable[[], str | bytes]  # a path, or the upload's bytes (read only when predicting)
    path: str = ""  # a folder's file: its path in the upload, whose folders tell its study


class Stored(NamedTuple):
    result: Result  # without pixels and heatmap
    view: ViewData | None  # shrunk 8-bit images for the views; None for a failed file


class LoadedModel(NamedTuple):
    predictor: Predictor
    card: str | None


@st.cache_resource(show_spinner="Loading the model ...")
def load_model(model: str | None, operating_point: str | None) -> LoadedModel:
    """The bundle read once, with its card (never a file outside it, a linked card.md): read
    again at the first switch to each operating point, and the card at every page run, a bundle
    exported anew into the same folder meanwhile gave results of two models, credited to the new one."""
    predictor = Predictor(model, operating_point=operating_point)
    return LoadedModel(predictor, read_card(predictor.bundle_dir))


@st.cache_data(show_spinner=False)
def example_paths(folder: str, n: int) -> list[str]:
    """Up to ``n`` examples that read as images: a PACS export's report or presentation state (a
    DICOM without an image) was offered with a button and gave an error card."""
    readable = pick_examples(Path(folder), n, accept=lambda path: thumbnail(str(path)) is not None)
    return [str(path) for path in readable]


def example_name(config: AppConfig, path: str) -> str:
    """An example named by its file, numbered where another example has that file name (as
    uploads are): a PACS export's SE1/IM000000 and SE2/IM000000 were two buttons "Try IM000000".
    Never by its path, which holds the answer in a labelled set (Fractured/..., study1_positive/)
    and would make examples a study."""
    if config.examples is None:
        return Path(path).name
    paths = example_paths(str(config.examples), config.n_examples)
    names = dict(zip(paths, numbered_names([Path(p).name for p in paths]), strict=True))
    return names.get(path, Path(path).name)


@st.cache_data(show_spinner=False, max_entries=64)
def thumbnail(path: str, side: int = 240) -> np.ndarray | None:
    """The image shrunk and centred on a black square, so that the gallery lines up."""
    try:
        pixels = read_image(path).pixels
    except FracsightError:
        return None
    img = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
    img.thumbnail((side, side))
    canvas = Image.new("L", (side, side))
    canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return np.asarray(canvas)


def predict(predictor: Predictor, source: str | bytes, name: str) -> Stored:
    """The result without its full-size arrays, and the shrunk images for the views."""
    try:
        pred = predictor.predict(source, name=name, heatmap=True, keep_pixels=True)
    except FracsightError as e:  # said of the file by its path in a folder, as predict FOLDER says it
        return Stored(named_as(failure_from_exception(name, e), name), None)
    except Exception as e:  # an error card, never a traceback on the page; the log keeps the stack
        log_unexpected(log, "predicting an upload", e)  # not the message: it may quote patient data
        return Stored(failure_from_exception(name, e), None)
    # named as given (a folder's file by its path in it), where predict keeps a file name only
    return Stored(replace(pred, source=name, pixels=None, heatmap=None), eight_bit(view_data(pred)))


# ---- page parts ----------------------------------------------------------------------------------------
def model_sidebar(config: AppConfig) -> Predictor:
    """Load the model (stopping with an error card if it cannot be) and show its details and controls:
    the operating point only for a bundle with a fracture head, the class rule for one with a class head."""
    head = st.sidebar.container()  # the model's name above the operating point
    try:
        predictor, card = load_model(config.model, config.operating_point)
        if predictor.operating_point is not None:
            names = [op.name for op in predictor.spec.operating_points]
            chosen = st.sidebar.selectbox(
                "Operating point",
                names,
                index=names.index(predictor.operating_point.name),
                help=f'The probability threshold above which "{predictor.finding} suspected" is reported.',
            )
            if chosen != predictor.operating_point.name:
                predictor = predictor.with_operating_point(chosen)  # the model as loaded, not read again
    except FracsightError as e:
        st.error(f"**The model could not be loaded** (`{e.code}`): {escape_markdown(str(e))}")
        st.stop()
    head.markdown(f"**Model:** {escape_markdown(predictor.name)}")
    head.caption(escape_markdown(heads_text(predictor.spec)))
    op = predictor.operating_point
    if op is not None:
        st.sidebar.caption(escape_markdown(operating_point_text(op)))
    class_rule = class_operating_point_text(predictor.spec)
    if class_rule is not None:
        st.sidebar.markdown("**Class operating point**")
        st.sidebar.caption(escape_markdown(class_rule))
    if card is not None:
        with st.sidebar.expander("Model card"):
            st.markdown(card_markdown(card))
    return predictor


def display_controls(predictor: Predictor) -> tuple[bool, bool, float]:
    """Heatmap toggle and opacity; the boxes toggle only for a bundle with a fracture head (the only
    one that draws boxes)."""
    st.sidebar.subheader("Display")
    show_heatmap = st.sidebar.toggle("Show heatmap", value=True, key="show_heatmap")
    opacity = st.sidebar.slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05, key="opacity")
    show_boxes = False
    if predictor.has_fracture_head:
        show_boxes = st.sidebar.toggle("Show boxes", value=True, key="show_boxes")
    return show_heatmap, show_boxes, opacity


def _add_example(path: str) -> None:
    chosen: list[str] = st.session_state.setdefault("examples", [])
    if path not in chosen:
        chosen.append(path)


def _clear_examples() -> None:
    st.session_state.pop("examples", None)


def _uploader_keys(generation: int) -> tuple[str, str]:
    """The keys of the files' and the folder's uploaders; a new generation empties both, and so does
    a new session: a page that reconnected to a new one (after a restart, or away longer than
    Streamlit keeps a session: a ward PC asleep, a phone locked, 2 minutes) still listed its uploads,
    while the new session, which never had them, read only the files added after (3 of 4 listed,
    no word)."""
    context = get_script_run_ctx()
    session = context.session_id if context is not None else ""
    return f"uploads-{session}-{generation}", f"folder-{session}-{generation}"


def _clear_all() -> None:
    """Every upload and example gone (the next patient): a new key empties the uploader."""
    _clear_examples()
    generation = st.session_state.get("uploader", 0)
    _forget_uploads(_uploader_keys(generation))
    st.session_state["uploader"] = generation + 1
    st.session_state.pop("results", None)  # the predictions held for them (pixels, heatmaps) too
    # the next patient's files may take any name: the names shown too, which the run the clear
    # makes (no inputs) would retire
    for kept in ("retired_names", "shown_names"):
        st.session_state.pop(kept, None)
    release_freed_memory()


def _forget_uploads(keys: tuple[str, ...]) -> None:
    """Drop the files of these uploaders from the server's memory. A new key empties the uploader on
    the page, but Streamlit keeps its files until the tab is closed: each *Clear all images* on a
    ward PC left open all day kept one more patient's uploads in memory."""
    ctx = get_script_run_ctx()
    if ctx is None:
        return
    for key in keys:
        for upload in st.session_state.get(key) or []:
            ctx.uploaded_file_mgr.remove_file(ctx.session_id, upload.file_id)


def example_gallery(config: AppConfig, expanded: bool) -> None:
    """The gallery; ``expanded`` only before any image is given, so that the results come next
    (on a phone its thumbnails, one a row, were 3000 px above the first result)."""
    if config.examples is None:
        return
    paths = example_paths(str(config.examples), config.n_examples)
    with st.expander("Examples: try one with a click", expanded=expanded):
        if not paths:
            st.caption(f"No images found in {config.examples}.")
            return
        columns = st.columns(max(len(paths), 6))  # at least 6, so that a few examples stay small
        for i, (col, path) in enumerate(zip(columns, paths, strict=False)):
            with col:
                name = escape_markdown(example_name(config, path))
                alt = f"Example radiograph {example_name(config, path)}"
                st.image(thumbnail(path), caption=name, width="stretch", alt=alt)
                # named by its file: six buttons all called "Try" could not be told apart by a screen reader
                st.button(
                    f"Try {name}",
                    key=f"example-{i}",
                    on_click=_add_example,
                    args=(path,),
                )
        if st.session_state.get("examples"):
            st.button("Clear examples", key="clear-examples", on_click=_clear_examples)


def inputs(config: AppConfig) -> list[Input]:
    """The chosen examples and the uploads, in that order, each image once (:func:`unique_inputs`)."""
    files_key, folder_key = _uploader_keys(st.session_state.get("uploader", 0))
    # the page refuses a larger file itself, with only a red mark on it: the app never sees it
    most = st.get_option("server.maxUploadSize")
    limit = f"Each file at most {most} MB: a larger one is marked red and not read."
    uploads = st.file_uploader(
        "Radiographs: PNG, JPEG, DICOM, BMP, TIFF or GIF (one or several; they stay in memory, never "
        "on disk)",
        accept_multiple_files=True,
        key=files_key,
        help=limit,
    )
    folder = st.file_uploader(
        "Or a folder: the radiographs in it and in its subfolders (a MURA-style study folder such as "
        "patient1/study1 gets its study verdict)",
        accept_multiple_files="directory",
        key=folder_key,
        help=limit,
    )
    in_folder = folder_inputs(folder or [])  # its note on what was left out goes below it
    st.session_state["folder_without_images"] = bool(folder) and not in_folder
    given = bool(uploads or folder or st.session_state.get("examples"))
    if given:
        st.button("Clear all images", key="clear-all", on_click=_clear_all, help="Before the next patient")
    example_gallery(config, expanded=not given)
    chosen = [
        Input(f"example:{p}", example_name(config, p), lambda p=p: p)
        for p in st.session_state.get("examples", [])
    ]
    uploaded = [Input(f"upload:{u.file_id}", Path(u.name).name, u.getvalue) for u in uploads or []]
    return unique_inputs(chosen + uploaded + in_folder)


def folder_inputs(files: list[UploadedFile]) -> list[Input]:
    """The images of an uploaded folder, each named by its path in it as ``fracsight predict FOLDER``
    names it (:func:`folder_names`: ``patient1/study1/image1.png``; several may be named
    ``image1.png``), with a note on the files left out as predict leaves them out
    (:func:`~fracsight.inference.tabular.is_folder_image`)."""
    taken: list[UploadedFile] = []
    left: list[UploadedFile] = []
    for u in files:
        (taken if is_folder_image(u.name, u.getvalue) else left).append(u)
    if left and not taken:  # "upload radiographs" below said nothing of why none was found
        st.warning(escape_markdown(f"No radiograph in the folder. {left_out_text([u.name for u in left])}"))
    elif left:
        st.caption(escape_markdown(left_out_text([u.name for u in left])))
    taken.sort(key=lambda u: PurePosixPath(u.name))  # predict's order, not the browser's
    names = folder_names([u.name for u in taken])
    return [Input(f"folder:{u.file_id}", n, u.getvalue, u.name) for u, n in zip(taken, names, strict=True)]


def _content_digest(item: Input) -> str:
    """sha256 of an input's bytes; an example that cannot be read is its own (its card says why)."""
    source = item.load()
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError:
        return item.key
    if not data:  # two empty files are two failed transfers, not one file given twice
        return item.key
    return hashlib.sha256(data).hexdigest()


def unique_inputs(items: list[Input]) -> list[Input]:
    """The inputs less repeats of an image already given (:func:`first_of_each`), uploaded twice or
    picked as an example and uploaded too, each named as its card shows it (:func:`kept_names`),
    with a note naming the repeats. Each input's digest is
    kept with its key, so it is hashed once."""
    digests: dict[str, str] = st.session_state.setdefault("digests", {})
    for stale in set(digests) - {item.key for item in items}:
        del digests[stale]
    for item in items:
        if item.key not in digests:
            digests[item.key] = _content_digest(item)
    keep, repeats = first_of_each([(item.name, digests[item.key], bool(item.path)) for item in items])
    names: dict[str, tuple[str, str]] = st.session_state.setdefault("shown_names", {})
    # the names of inputs removed, kept from others until Clear all images; one picked again (an
    # example) has its own back
    retired: dict[str, tuple[str, str]] = st.session_state.setdefault("retired_names", {})
    listed, present = {items[i].key for i in keep}, {item.key for item in items}
    # removed, not merely shown as another's repeat (an upload of an example picked too)
    retired.update((key, named) for key, named in names.items() if key not in present)
    kept = kept_names(
        [(items[i].key, items[i].name) for i in keep],
        {**retired, **names},
        [shown for key, (_, shown) in retired.items() if key not in listed],
    )
    for key in kept:
        retired.pop(key, None)
    # a repeat keeps its name too: shown alone again (the example it repeated cleared), it is named so
    repeats_named = {key: named for key, named in names.items() if key in present and key not in listed}
    names.clear()
    names.update({**repeats_named, **kept})
    shown = {i: kept[items[i].key][1] for i in keep}
    note = duplicates_text([(name, shown[kept]) for name, kept in repeats])
    if note:
        st.warning(escape_markdown(note))
    return [items[i]._replace(name=shown[i]) for i in keep]


def predictions(predictor: Predictor, items: list[Input]) -> list[Stored]:
    """Predict each input once; results live in this session's memory only. Another operating point
    re-reads them at its threshold (:func:`at_operating_point`) without running the model again."""
    store: dict[str, Stored] = st.session_state.setdefault("results", {})
    keys = [item.key for item in items]
    for stale in set(store) - set(keys):
        del store[stale]
    todo = [(k, item) for k, item in zip(keys, items, strict=True) if k not in store]
    if todo:
        # a count, not a spinner alone: on a slow computer 30 images took minutes with no sign of how far
        bar = st.progress(0.0)
        for done, (k, item) in enumerate(todo):
            bar.progress(done / len(todo), text=escape_markdown(reading_text(done, len(todo), item.name)))
            store[k] = predict(predictor, item.load(), item.name)
            done_with = store[k].result
            if isinstance(done_with, Prediction) and is_large(done_with.image_size):
                release_freed_memory()  # a large image's buffers went back to the heap, not the system
        bar.empty()
    op = predictor.operating_point
    # named as now: a folder added later can rename an earlier one's files (left/a.jpg beside right/a.jpg)
    return [
        Stored(at_operating_point(named_as(store[k].result, item.name), op), store[k].view)
        for k, item in zip(keys, items, strict=True)
    ]


@contextmanager
def _card_guarded(name: str) -> Iterator[None]:
    """A card that fails to draw says so in its place: a traceback ended the page, and the cards
    after it, the results table, the downloads and the notice were not drawn."""
    try:
        yield
    except Exception as e:  # Streamlit's own stop and rerun are BaseExceptions: they pass
        log_unexpected(log, "showing a result", e)
        st.error(
            f"**The result of {escape_markdown(name)} could not be shown** (internal error); "
            "it is in the table and downloads below."
        )


def error_card(failure: FailedPrediction) -> None:
    with st.container(border=True):
        st.markdown(f"### {escape_markdown(failure.source)}")
        st.error(
            f"**This file could not be read** (error code `{failure.error_code}`): "
            f"{escape_markdown(failure_message(failure))}"
        )


def decision_block(result: Prediction | StudyPrediction) -> None:
    v = verdict(result)
    st.markdown(f"#### :{v.markdown_colour}[{escape_markdown(v.headline)}]")  # it may name a class
    if result.fracture_probability is not None and result.threshold is not None:
        st.markdown(
            probability_bar_html(
                result.fracture_probability,
                result.threshold,
                severity=v.severity,
                label=f"{result.finding} probability",
            ),
            unsafe_allow_html=True,
        )


def result_card(
    key: str,
    pred: Prediction,
    view: ViewData,
    show_heatmap: bool,
    show_boxes: bool,
    opacity: float,
    *,
    keep_suffix: bool = False,
) -> None:
    card = card_for(pred, show_boxes=show_boxes)
    with st.container(border=True):
        st.markdown(f"### {escape_markdown(card.title)}")
        if card.unreliable:
            st.error(f"**{escape_markdown(card.unreliable)}**", icon="⚠️")
        text, images = st.columns([2, 3])
        with text:
            decision_block(pred)
            if card.probability:
                st.markdown(escape_markdown(card.probability))
            if card.boxes:
                st.markdown(escape_markdown(card.boxes))
            if card.classification:
                class_block(card.classification)
            if card.region:
                st.markdown(escape_markdown(card.region))
            for warning in card.warnings:
                st.warning(escape_markdown(warning))
        with images:
            overlay, pair = render_views(
                view, show_heatmap=show_heatmap, show_boxes=show_boxes, opacity=opacity
            )
            caption = overlay_caption(card, view, show_heatmap=show_heatmap, show_boxes=show_boxes)
            tab_overlay, tab_pair = st.tabs(["Overlay", "Original | overlay"])
            pair_caption = f"Original (left) and overlay (right). {caption}"
            # alt: a screen reader read "image" only (a caption is not an image's text alternative)
            tab_overlay.image(
                overlay, caption=escape_markdown(caption), width="stretch", alt=f"{card.title}: {caption}"
            )
            tab_pair.image(
                pair,
                caption=escape_markdown(pair_caption),
                width="stretch",
                alt=f"{card.title}: {pair_caption}",
            )
            file_name = overlay_file_name(pred.source, keep_suffix=keep_suffix)
            st.download_button(  # named by its file: each card's button says which image it saves
                f"Download {escape_markdown(file_name)}",
                partial(
                    overlay_png, pred, view, show_heatmap=show_heatmap, show_boxes=show_boxes, opacity=opacity
                ),
                file_name=file_name,
                mime="image/png",
                key=f"overlay-{key}",
                on_click="ignore",
                help="The overlay as shown, with the decision and the decision-aid notice below it",
            )


def class_block(summary: ClassSummary) -> None:
    """The class line, a note, and every class's probability (open when the class is uncertain)."""
    st.markdown(escape_markdown(summary.text))
    if summary.note:
        st.caption(escape_markdown(summary.note))
    label = f"All {summary.label.lower()} probabilities ({len(summary.probabilities)})"
    with st.expander(label, expanded=not summary.confident):
        st.markdown(class_bars_html(summary), unsafe_allow_html=True)


def study_card(study: StudyPrediction) -> None:
    card = study_card_for(study)
    with st.container(border=True):
        st.markdown(f"### {escape_markdown(card.title)}")
        decision_block(study)
        if card.probability:
            st.markdown(escape_markdown(card.probability))
        if card.views:
            st.markdown(escape_markdown(card.views))
        if card.region:
            st.markdown(escape_markdown(card.region))
        for caution in card.cautions:
            st.warning(escape_markdown(caution), icon="⚠️")
        if card.classification:
            class_block(card.classification)
        st.caption(escape_markdown(card.how))
        if card.unreliable:
            st.error(f"**{escape_markdown(card.unreliable)}**", icon="⚠️")


def results_table(predictor: Predictor, results: list[Result], studies: list[StudyPrediction]) -> None:
    """The table (:func:`table_rows`: the bundle's own columns) and the CSV and JSON downloads."""
    st.subheader("All results")
    st.dataframe(table_rows([*results, *studies], predictor.spec), hide_index=True, width="stretch")
    csv_col, json_col, _ = st.columns([1, 1, 4])
    csv_col.download_button(
        "Download CSV",
        csv_download([*results, *studies], predictor.spec),
        file_name="fracsight-results.csv",
        mime="text/csv",
        on_click="ignore",
    )
    json_col.download_button(
        "Download JSON",
        json_text(results, studies, predictor.name),
        file_name="fracsight-results.json",
        mime="application/json",
        on_click="ignore",
    )


def _forget_expired_tabs() -> None:
    """Drop the uploads of tabs Streamlit no longer knows. A closed or reloaded tab's session is
    kept ``server.disconnectedSessionTTL`` (120 s), then dropped from Streamlit's session storage
    without its files being removed (Streamlit 1.67's ``MemorySessionStorage`` is a TTL cache): a
    ward PC reloaded between patients left every patient's images in the server's memory for good
    (150 MB after three 50 MB uploads, 200 s after the tab closed). Run at each script run of any
    tab; Streamlit's private attributes, so a Streamlit without them is left as it is."""
    try:
        from streamlit.runtime import Runtime

        runtime = Runtime.instance()
        files = runtime.uploaded_file_mgr
        known = {info.session.id for info in runtime._session_mgr.list_sessions()}
        gone = [session for session in list(files.file_storage) if session not in known]
    except (AttributeError, RuntimeError, TypeError):
        return
    for session in gone:
        files.remove_session_files(session)


def _announce(place, text: str) -> None:
    place.markdown(
        f'<div role="status" aria-live="polite" class="fs-announcement" style="position:absolute;'
        f'left:-9999px">{html.escape(text)}</div>',
        unsafe_allow_html=True,
    )


def main() -> None:
    config = parse_app_args(sys.argv[1:])
    _forget_expired_tabs()
    st.set_page_config(page_title="fracsight", page_icon="🦴", layout="wide")
    st.title("fracsight: fractures in radiographs")
    st.info(f"**Decision aid, not a diagnosis.** {NOTICE} Check every result against the images.")
    # a live region, on the page before the results (one added with them is not announced), that
    # tells a screen reader the results are in: the cards appear without a word, focus lost
    live = st.empty()
    _announce(live, "")
    predictor = model_sidebar(config)
    show_heatmap, show_boxes, opacity = display_controls(predictor)
    items = inputs(config)
    if not items:
        st.session_state.pop("results", None)  # not the last patient's results, kept unseen in memory
        st.caption(
            "Upload radiographs or pick an example to see results. (Files listed before the app was "
            "restarted, or while this page was away for more than 2 minutes, are gone from it, and "
            "so is one added just after: add them again.)"
            if not st.session_state.get("folder_without_images")
            else "Upload radiographs, or a folder that holds some, to see results."
        )
        return
    stored = predictions(predictor, items)
    results = [s.result for s in stored]
    good = [r for r in results if isinstance(r, Prediction)]
    # every kind of bundle (fracture and class heads are both combined); a view that could not be read
    # counts, so one radiograph and a refused CT give a study that says it is not reliable
    can_combine = len(results) >= 2 and bool(good)
    one = can_combine and st.checkbox("These images are one study (several views of one examination)")
    # an uploaded folder's files are paths in it, no files here: its study folders by path alone
    named = [
        (PurePosixPath("/", item.path or item.name), result)
        for item, result in zip(items, results, strict=True)
    ]
    studies = study_results(predictor, named, one_study=one, resolve=False)
    _announce(live, results_announcement(results, studies))
    for study in studies:
        with _card_guarded(study.study):
            study_card(study)
    shared = names_sharing_a_stem([r.source for r in results])  # wrist.jpg, wrist.png: two downloads
    for item, (result, view) in zip(items, stored, strict=True):
        if isinstance(result, FailedPrediction):
            error_card(result)
        elif view is not None:
            keep_suffix = result.source in shared
            with _card_guarded(result.source):
                result_card(
                    item.key, result, view, show_heatmap, show_boxes, opacity, keep_suffix=keep_suffix
                )
    results_table(predictor, results, studies)
    st.caption(NOTICE)


main()
