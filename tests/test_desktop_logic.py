"""The desktop app without a display: the worker thread, the session state, the viewer's drawing
maths, and the shared ``at_operating_point``; every head combination through the session."""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import is_overlay_of
from fracsight._cpus import local_cpus
from fracsight.app.logic import ViewData, at_operating_point, card_for, csv_download, display_columns
from fracsight.desktop.drop import paths_from_drop
from fracsight.desktop.priority import MODEL_NICENESS, RENDER_NICENESS, lower_this_thread
from fracsight.desktop.render import (
    BackgroundRenderer,
    Camera,
    Look,
    apply_window,
    fit_zoom,
    full_overlay,
    render_visible,
    visible_crop,
)
from fracsight.desktop.state import LIST_HIDDEN, ReadingSession, expand_inputs
from fracsight.desktop.worker import (
    BatchFinished,
    BatchStarted,
    ModelFailed,
    ModelLoaded,
    OverlaySaved,
    PredictionWorker,
    ResultReady,
    ViewFailed,
    ViewReady,
    file_stamp,
    inference_threads,
    predict_one,
)
from fracsight.explain import DetectedBox
from fracsight.inference import FailedPrediction, Prediction, Predictor
from fracsight.inference.tabular import ALL_INPUTS, study_results
from head_kinds import HEAD_KINDS

FRACTURED = "Fractured/IMG0000019.jpg"
HAND = "Non_fractured/IMG0000050.jpg"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


def drain(events: queue.Queue, until: type, timeout: float = 60.0) -> list[object]:
    """Events from the worker up to and including the first of type ``until``."""
    got: list[object] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = events.get(timeout=0.1)
        except queue.Empty:
            continue
        got.append(event)
        if isinstance(event, until):
            return got
    raise AssertionError(f"no {until.__name__} within {timeout} s; got {got}")


# ---- at_operating_point (shared with the web app's logic) -----------------------------------------------
@pytest.mark.fracatlas
def test_another_operating_point_reads_as_a_predictor_made_with_it(fracatlas_dir: Path) -> None:
    balanced, triage = Predictor(), Predictor(operating_point="triage")
    assert balanced.operating_point.name == "balanced"
    images = [fracatlas_dir / "images" / p for p in (FRACTURED, HAND)]
    images += sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:6]
    op = triage.operating_point
    changed = 0
    for image in images:
        ours = at_operating_point(balanced.predict(image), op)
        theirs = triage.predict(image)
        assert ours.to_dict() == theirs.to_dict()
        changed += ours.fracture_suspected != balanced.predict(image).fracture_suspected
    views = [balanced.predict(i) for i in images[:3]]
    study = at_operating_point(balanced.predict_study(views, "s"), op)
    assert study.to_dict() == triage.predict_study([triage.predict(i) for i in images[:3]], "s").to_dict()
    failed = FailedPrediction("x.png", "empty_file", "empty")
    assert at_operating_point(failed, op) is failed
    assert at_operating_point(views[0], None) is views[0]


# ---- the worker -----------------------------------------------------------------------------------------
@pytest.mark.fracatlas
def test_worker_predicts_in_order_with_failures_as_rows(fracatlas_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    image = fracatlas_dir / "images" / FRACTURED
    events: queue.Queue = queue.Queue()
    worker = PredictionWorker(None, None, events)
    worker.start()
    worker.submit([(0, image, "fractured.jpg"), (1, broken, "sub/broken.jpg")])  # before the model: queued
    got = drain(events, BatchFinished)
    worker.request_view(0, image, "fractured.jpg")
    (view,) = [e for e in drain(events, ViewReady) if isinstance(e, ViewReady)]
    if sys.platform.startswith("linux"):  # the model's threads yield the cores to the window's
        lowered = min(19, os.getpriority(os.PRIO_PROCESS, 0) + MODEL_NICENESS)
        nice = {t.name: os.getpriority(os.PRIO_PROCESS, t.native_id) for t in threading.enumerate()}
        assert nice["fracsight-predict"] == nice["fracsight-view"] == lowered
        # the image statistics' thread, started by the prediction thread, inherits it (other
        # predictors' statistics threads, made on this thread, may be alive too)
        stats = [t for t in threading.enumerate() if t.name.startswith("fracsight-statistics")]
        assert lowered in {os.getpriority(os.PRIO_PROCESS, t.native_id) for t in stats}
    worker.close()
    assert isinstance(got[0], ModelLoaded) and isinstance(got[1], BatchStarted)
    results = [e for e in got if isinstance(e, ResultReady)]
    assert [r.index for r in results] == [0, 1]
    first, second = results[0].result, results[1].result
    assert isinstance(first, Prediction) and first.heatmap is None and first.pixels is None
    # under the names given (a folder's relative path), as `fracsight predict` names them
    assert first.to_dict() == Predictor().predict(image, name="fractured.jpg").to_dict()
    assert isinstance(second, FailedPrediction) and second.error_code and "Traceback" not in second.error
    assert second.source == "sub/broken.jpg"
    assert results[0].stamp == file_stamp(image) and results[0].stamp is not None
    finished = got[-1]
    assert finished.done == finished.total == 2 and not finished.cancelled
    assert view.index == 0 and view.view.pixels.shape == view.full_size == (1024, 819)
    assert view.view.heatmap is not None and not view.reduced
    assert view.stamp == results[0].stamp and view.result.to_dict() == first.to_dict()


@pytest.mark.fracatlas
def test_worker_computes_only_the_latest_view_asked_for(fracatlas_dir: Path) -> None:
    """Stepping quickly through images: a view asked for and not begun is replaced by the next one
    (once, eight full-resolution predictions queued and the last image came 6 s late)."""
    images = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:8]
    events: queue.Queue = queue.Queue()
    worker = PredictionWorker(None, None, events)
    worker.start()
    drain(events, ModelLoaded)
    # the first view held until the others are asked for: a loaded machine that paused this thread
    # for longer than one prediction let the worker begin view 1 or 2 (`got` [0, 1, 7])
    begun, release = threading.Event(), threading.Event()
    make_view = worker._make_view

    def first_held(index: int, path: Path, name: str) -> None:
        if index == 0:
            begun.set()
            release.wait(60)
        make_view(index, path, name)

    worker._make_view = first_held  # type: ignore[method-assign]
    worker.request_view(0, images[0], images[0].name)
    assert begun.wait(60)
    for i, image in enumerate(images[1:], start=1):
        worker.request_view(i, image, image.name)
    release.set()
    got: list[int] = []
    while not got or got[-1] != 7:
        got += [e.index for e in drain(events, ViewReady) if isinstance(e, ViewReady)]
    time.sleep(0.5)  # and nothing after it
    while not events.empty():
        event = events.get_nowait()
        got += [event.index] if isinstance(event, ViewReady) else []
    worker.close()
    assert got == [0, 7], got  # the one begun, then the last


def test_an_unexpected_failure_of_one_view_leaves_the_view_thread_serving(
    fracatlas_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view that fails outside the model (here: making the display copy runs out of memory) is
    reported as failed, and the next view is still made (the thread once died and every later
    selection stayed on "Loading the image")."""
    import fracsight.desktop.worker as worker_module

    images = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:2]
    real = worker_module.view_data
    calls = iter([MemoryError("out of memory"), None])

    def once_failing(pred, side):
        failure = next(calls)
        if failure is not None:
            raise failure
        return real(pred, side)

    monkeypatch.setattr(worker_module, "view_data", once_failing)
    events: queue.Queue = queue.Queue()
    worker = PredictionWorker(None, None, events)
    worker.start()
    drain(events, ModelLoaded)
    worker.request_view(0, images[0], images[0].name)
    (failed,) = [e for e in drain(events, ViewFailed) if isinstance(e, ViewFailed)]
    assert failed.index == 0
    worker.request_view(1, images[1], images[1].name)
    (ready,) = [e for e in drain(events, ViewReady) if isinstance(e, ViewReady)]
    worker.close()
    assert ready.index == 1


@pytest.mark.fracatlas
def test_a_view_tells_a_file_changed_since_it_was_predicted(fracatlas_dir: Path, tmp_path: Path) -> None:
    image = tmp_path / "x.jpg"
    image.write_bytes((fracatlas_dir / "images" / FRACTURED).read_bytes())
    events: queue.Queue = queue.Queue()
    worker = PredictionWorker(None, None, events)
    worker.start()
    worker.submit([(0, image, "x.jpg")])
    (predicted,) = [e for e in drain(events, BatchFinished) if isinstance(e, ResultReady)]
    image.write_bytes((fracatlas_dir / "images" / HAND).read_bytes())  # overwritten in place
    worker.request_view(0, image, "x.jpg")
    (view,) = [e for e in drain(events, ViewReady) if isinstance(e, ViewReady)]
    assert view.stamp != predicted.stamp and view.stamp == file_stamp(image)
    assert view.result.to_dict() == Predictor().predict(image, name="x.jpg").to_dict()
    assert view.result.to_dict() != predicted.result.to_dict()
    # an overlay export of the old result is refused, not made from the new file
    target = tmp_path / "x.overlay.png"
    worker.export_overlay(image, "x.jpg", predicted.stamp, target, Look())
    (saved,) = [e for e in drain(events, OverlaySaved) if isinstance(e, OverlaySaved)]
    assert saved.error is not None and "changed on disk" in saved.error and not target.exists()
    image.unlink()
    worker.request_view(0, image, "x.jpg")
    (failed,) = [e for e in drain(events, ViewFailed) if isinstance(e, ViewFailed)]
    worker.close()
    assert failed.stamp is None and failed.failure.source == "x.jpg"


@pytest.mark.fracatlas
def test_an_overlay_asked_for_is_written_though_the_window_closes(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    """Closing right after *Export overlay…* (its line already said *Saving …*) dropped the export."""
    image = fracatlas_dir / "images" / FRACTURED
    events: queue.Queue = queue.Queue()
    worker = PredictionWorker(None, None, events)
    worker.start()
    worker.request_view(0, image, image.name)  # a view first, as when the reader moves on
    target = tmp_path / "x.overlay.png"
    worker.export_overlay(image, image.name, file_stamp(image), target, Look())
    worker.close()
    assert worker.join(120)
    saved = [e for e in list(events.queue) if isinstance(e, OverlaySaved)]  # the threads have ended
    assert [(e.target, e.error) for e in saved] == [(target, None)] and target.exists()


@pytest.mark.fracatlas
def test_a_large_image_is_viewed_reduced_and_its_overlay_exported_at_full_size(
    fracatlas_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from PIL import Image

    from fracsight.desktop import worker as worker_module
    from fracsight.errors import OverlayImageError
    from fracsight.io import read_image

    monkeypatch.setattr(worker_module, "DISPLAY_MAX_SIDE", 512)  # 819 x 1024 is "large" here
    image = fracatlas_dir / "images" / FRACTURED
    events: queue.Queue = queue.Queue()
    worker = PredictionWorker(None, None, events)
    worker.start()
    worker.request_view(0, image, image.name)
    (view,) = [e for e in drain(events, ViewReady) if isinstance(e, ViewReady)]
    assert view.reduced and view.full_size == (1024, 819) and view.view.pixels.shape == (512, 410)
    target = tmp_path / "big.overlay.png"
    words = (["fracsight: fracture suspected", "a decision aid"], None)  # the window's overlay_words
    worker.export_overlay(image, image.name, file_stamp(image), target, Look(show_heatmap=False), words)
    (saved,) = [e for e in drain(events, OverlaySaved) if isinstance(e, OverlaySaved)]
    assert saved.error is None and saved.target == target
    with Image.open(target) as written:
        assert is_overlay_of(written.size, 819, 1024)  # the caption band below, at full resolution
    # under a .jpg name a JPEG (it was a PNG under a JPEG's name), refused when read as a radiograph
    jpeg = tmp_path / "big.overlay.jpg"
    worker.export_overlay(image, image.name, file_stamp(image), jpeg, Look(), words)
    (saved,) = [e for e in drain(events, OverlaySaved) if isinstance(e, OverlaySaved)]
    # a folder that is not there: why, not the hidden temporary file's path the error quoted
    worker.export_overlay(image, image.name, file_stamp(image), tmp_path / "gone" / "x.png", Look(), words)
    (failed,) = [e for e in drain(events, OverlaySaved) if isinstance(e, OverlaySaved)]
    assert failed.error == "No such file or directory", failed.error
    worker.close()
    assert saved.error is None and jpeg.read_bytes()[:3] == b"\xff\xd8\xff"
    with pytest.raises(OverlayImageError):
        read_image(jpeg)


@pytest.mark.fracatlas
def test_worker_cancel_stops_after_the_image_in_progress(fracatlas_dir: Path) -> None:
    images = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:40]
    events: queue.Queue = queue.Queue()
    worker = PredictionWorker(None, None, events)
    worker.start()
    worker.submit([(i, image, image.name) for i, image in enumerate(images)])
    seen = 0
    while seen < 5:
        if isinstance(events.get(timeout=60), ResultReady):
            seen += 1
    worker.cancel()
    got = drain(events, BatchFinished)
    finished = got[-1]
    assert finished.cancelled and 5 <= finished.done < 40 and finished.total == 40
    assert seen + sum(isinstance(e, ResultReady) for e in got) == finished.done
    batch = worker.submit([(40, images[0], images[0].name)])  # a new batch after a cancel runs
    got = drain(events, BatchFinished)
    worker.close()
    assert got[-1].batch == batch and got[-1].done == 1 and not got[-1].cancelled


def test_worker_reports_a_model_that_cannot_be_loaded() -> None:
    events: queue.Queue = queue.Queue()
    worker = PredictionWorker("no-such-model", None, events)
    worker.start()
    (failed,) = drain(events, ModelFailed, 30)
    worker.close()
    assert failed.code == "unknown_model" and "no-such-model" in failed.message


# ---- the session ----------------------------------------------------------------------------------------
@pytest.mark.fracatlas
def test_session_rows_exports_and_study(predictor: Predictor, fracatlas_dir: Path, tmp_path: Path) -> None:
    images = [fracatlas_dir / "images" / p for p in (FRACTURED, HAND)]
    session = ReadingSession()
    session.set_predictor(predictor)
    items = session.add(expand_inputs(images))
    assert items == [(0, images[0], images[0].name), (1, images[1], images[1].name)]
    for index, path, name in items:
        session.record(index, predictor.predict(path, name=name), file_stamp(path))
    session.add([(Path("bad.png"), "bad.png")])
    session.results[2] = FailedPrediction("bad.png", "unsupported_format", "not an image")
    columns = session.list_columns()
    assert set(columns) <= set(display_columns(predictor.spec)) and not set(columns) & LIST_HIDDEN
    assert columns[:3] == ("source", "decision", "fracture_probability")
    row = dict(zip(columns, session.list_row(session.result(0)), strict=True))
    assert row["fracture_probability"] == f"{session.results[0].fracture_probability:.4f}"
    assert session.studies() == []  # not marked as one study, and in no study folder
    plain = [r for _, r in session.shown()]
    assert session.csv_text() == csv_download(plain, predictor.spec)
    session.one_study = True
    (study,) = session.studies()
    assert study.study == ALL_INPUTS and study.images == ("IMG0000019.jpg", "IMG0000050.jpg")
    # the file that could not be read is a view the verdict has not seen, as in predict --study
    assert study.unread == ("bad.png",) and not study.reliable and "1 of 3 views" in study.warnings[0]
    assert session.csv_text().splitlines()[-1].startswith(f"study,{ALL_INPUTS},")
    session.choose_operating_point("triage")
    assert {r.operating_point for _, r in session.shown() if isinstance(r, Prediction)} == {"triage"}
    assert session.studies()[0].operating_point == "triage" and '"triage"' in session.json_text()
    assert session.operating_point_names == tuple(op.name for op in predictor.spec.operating_points)


def test_files_of_one_name_opened_one_after_another_are_named_apart(tmp_path: Path) -> None:
    """IM000001.jpg of one patient's folder, then of another's: two rows, cards and export rows of
    the same name, where `fracsight predict` given both names them by their paths."""
    first, second = (tmp_path / p / "study1" / "IM000001.jpg" for p in ("patientA", "patientB"))
    for path in (first, second):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    session = ReadingSession()
    assert session.add(expand_inputs([first.parent.parent])) == [(0, first, "study1/IM000001.jpg")]
    empty = "the file is empty (0 bytes)"
    session.record(0, FailedPrediction("study1/IM000001.jpg", "empty_file", f"IM000001.jpg: {empty}"), None)
    items = session.add(expand_inputs([second.parent.parent]))
    assert session.names == [first.as_posix(), second.as_posix()] and session.renamed == [0, 1]
    assert items == [(1, second, second.as_posix())]
    # the row, the exports and the message follow (both messages said "IM000001.jpg: ...")
    assert session.result(0) == FailedPrediction(
        first.as_posix(), "empty_file", f"{first.as_posix()}: {empty}"
    )
    session.record(
        1, FailedPrediction("study1/IM000001.jpg", "empty_file", f"study1/IM000001.jpg: {empty}"), None
    )
    assert session.result(1).error == f"{second.as_posix()}: {empty}"  # predicted under its name of before
    assert session.add([(tmp_path / "other.jpg", "other.jpg")]) and session.renamed == []


def test_a_file_linked_into_two_studies_is_a_view_of_each(tmp_path: Path) -> None:
    """As ``fracsight predict`` lists them (:func:`named_inputs`): the second study's link was
    taken for the first's file, its study lost a view without a word and its verdict changed;
    and a file given twice in one opening was predicted twice."""
    image, other = tmp_path / "a.png", tmp_path / "b.png"
    image.write_bytes(b"")
    other.write_bytes(b"")
    for patient, images in (("p1", (image,)), ("p2", (image, other))):
        (tmp_path / patient / "study1").mkdir(parents=True)
        for number, target in enumerate(images, 1):
            (tmp_path / patient / "study1" / f"image{number}.png").symlink_to(target)
    session = ReadingSession()
    items = session.add(expand_inputs([tmp_path / "p1", tmp_path / "p2"]))
    assert [(path, name) for _, path, name in items] == expand_inputs([tmp_path / "p1", tmp_path / "p2"])
    assert len(items) == 3 and sorted(session.folders) == ["p1/study1", "p2/study1"]
    session = ReadingSession()
    assert session.add([(image, "a.png"), (tmp_path / "." / "a.png", "a.png")]) == [(0, image, "a.png")]


def test_a_folder_of_linked_images_opened_one_by_one_takes_no_overlay(tmp_path: Path) -> None:
    """A fracture-type set is made of links (scripts/fracatlas_as_types.py): an overlay exported
    beside linked images opened as files was saved there, one more file the folder's next reading
    lists as an error row; only the links' targets' folder was checked."""
    data, linked = tmp_path / "data", tmp_path / "types" / "Avulsion"
    data.mkdir()
    linked.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        (data / name).write_bytes(b"")
        (linked / name).symlink_to(data / name)
    session = ReadingSession()
    session.add(expand_inputs([linked / "a.jpg", linked / "b.jpg"]))
    assert session.holds_opened(linked) and session.holds_opened(data)
    assert not session.holds_opened(tmp_path / "types") and not session.holds_opened(tmp_path)


def test_an_opened_image_is_known_by_any_path_to_it(tmp_path: Path) -> None:
    """An export may not land on an opened radiograph, however the save dialog spells its path."""
    image = tmp_path / "scans" / "hand.jpg"
    image.parent.mkdir()
    image.write_bytes(b"")
    session = ReadingSession()
    session.add([(image, image.name)])
    assert session.is_opened(tmp_path / "scans" / ".." / "scans" / "hand.jpg")
    assert not session.is_opened(tmp_path / "scans" / "hand.csv")
    # opened through a link re-pointed since (and predicted again, as an export first does): the
    # file it reads now is opened too (a CSV was saved over it, compared with the old file alone)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "img.jpg").write_bytes(b"a")
    (tmp_path / "b" / "img.jpg").write_bytes(b"bb")
    (tmp_path / "current").symlink_to("a")
    session.add([(tmp_path / "current" / "img.jpg", "img.jpg")])
    (tmp_path / "current").unlink()
    (tmp_path / "current").symlink_to("b")
    session.stamps[1] = file_stamp(tmp_path / "current" / "img.jpg")  # as record() keeps it
    assert session.is_opened(tmp_path / "b" / "img.jpg")


def test_one_study_of_one_image_and_an_unreadable_file_is_predicts(
    predictor: Predictor, fracatlas_dir: Path
) -> None:
    """*These images are one study* with one image read and one file that could not be: no study
    at all in the window, where ``predict --study`` gives a *not reliable* one (and one of a
    single image). None while the file is still to be read: after a cancel, a verdict over the
    images read so far stood for all of them."""
    image = fracatlas_dir / "images" / HAND
    session = ReadingSession(one_study=True)
    session.set_predictor(predictor)
    session.add([(image, image.name)])
    read = predictor.predict(image, name=image.name)
    session.record(0, read, file_stamp(image))
    assert [s.to_dict() for s in session.studies()] == [
        s.to_dict() for s in study_results(predictor, [(image, read)], one_study=True)
    ]
    session.add([(Path("empty.jpg"), "empty.jpg")])
    assert session.studies() == []  # the second file not read yet (or its run cancelled)
    unread = FailedPrediction("empty.jpg", "empty_file", "empty.jpg: the file is empty (0 bytes)")
    session.record(1, unread, None)
    expected = study_results(predictor, [(image, read), (Path("empty.jpg"), unread)], one_study=True)
    (study,) = session.studies()
    assert study.to_dict() == expected[0].to_dict() and not study.reliable and study.unread == ("empty.jpg",)


def test_a_study_folders_view_opened_alone_names_the_views_not_opened(
    predictor: Predictor, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """As ``predict`` says it: the study verdict under the folder's name had not seen image2, unsaid."""
    study = tmp_path / "patient1" / "study1_negative"
    study.mkdir(parents=True)
    for n in (1, 2):  # copies: a link to the same file is that file, no image left out
        (study / f"image{n}.jpg").write_bytes((fracatlas_dir / "images" / HAND).read_bytes())
    for one_study in (False, True):
        session = ReadingSession(one_study=one_study)
        session.set_predictor(predictor)
        session.add([(study / "image1.jpg", "image1.jpg")])
        read = predictor.predict(study / "image1.jpg", name="image1.jpg")
        session.record(0, read, file_stamp(study / "image1.jpg"))
        (made,) = session.studies()
        (expected,) = study_results(predictor, [(study / "image1.jpg", read)], one_study=one_study)
        assert made.to_dict() == expected.to_dict() and made.left_out == ("image2.jpg",), one_study


def test_the_session_knows_which_files_changed_since_they_were_read(tmp_path: Path) -> None:
    """An export of results whose files were overwritten, removed or made since they were read
    would hold what ``fracsight predict`` no longer says for those files."""
    kept, rewritten, removed, missing = (tmp_path / n for n in ("a.png", "b.png", "c.png", "d.png"))
    for path in (kept, rewritten, removed):
        path.write_bytes(b"one")
    session = ReadingSession()
    session.add([(p, p.name) for p in (kept, rewritten, removed, missing)])
    for index, path in enumerate((kept, rewritten, removed, missing)):
        session.record(index, FailedPrediction(path.name, "unsupported_format", "x"), file_stamp(path))
    assert session.changed_on_disk() == []
    rewritten.write_bytes(b"two, longer")
    removed.unlink()
    missing.write_bytes(b"now here")
    assert session.changed_on_disk() == [1, 2, 3]


def test_a_file_opened_again_keeps_its_row(predictor: Predictor, fracatlas_dir: Path, tmp_path: Path) -> None:
    """A folder opened twice listed (and exported) every file twice. Opened again, a file keeps its
    row and name, and is predicted again in it only when that can change what the row says: no
    result yet and not waiting for one (a cancelled run's), unreadable then, or changed on disk."""
    folder = tmp_path / "scans"
    folder.mkdir()
    kept, changed, unread, waiting = (folder / n for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"))
    for path in (kept, changed, waiting):
        path.write_bytes((fracatlas_dir / "images" / HAND).read_bytes())
    unread.write_bytes(b"")
    session = ReadingSession()
    session.set_predictor(predictor)
    first = session.add(expand_inputs([folder]))
    assert [index for index, _, _ in first] == [0, 1, 2, 3]
    for index, path, name in first[:3]:
        session.record(index, predict_one(predictor, path, name), file_stamp(path))
    assert isinstance(session.results[2], FailedPrediction)
    assert session.add(expand_inputs([folder]), pending={3}) == [(2, unread, "c.jpg")]

    changed.write_bytes((fracatlas_dir / "images" / FRACTURED).read_bytes())
    extra = folder / "e.jpg"
    extra.write_bytes(b"x")
    again = session.add(expand_inputs([folder, tmp_path / "scans" / ".." / "scans" / "a.jpg"]))
    assert again == [(1, changed, "b.jpg"), (2, unread, "c.jpg"), (3, waiting, "d.jpg"), (4, extra, "e.jpg")]
    assert session.names == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]


def test_expand_inputs_follows_predict(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/2.png", "b/1.dcm", "b/.hidden.png", "b/notes.txt", "a.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert expand_inputs([tmp_path / "a.jpg", tmp_path / "b"]) == [
        (tmp_path / "a.jpg", "a.jpg"),
        (tmp_path / "b" / "1.dcm", "1.dcm"),
        (tmp_path / "b" / "2.png", "2.png"),
    ]


def test_a_listing_on_its_thread_gives_predicts_files_and_their_real_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window's listing thread: the files ``expand_inputs`` gives, each file once, their real
    paths for the session; a failure is an event that says why (the window never waits for ever)."""
    from fracsight.desktop import listing

    (tmp_path / "b").mkdir()
    for name in ("b/1.dcm", "b/2.png", "b/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "link.png").symlink_to(tmp_path / "b" / "2.png")
    events: queue.Queue = queue.Queue()
    paths = [tmp_path / "b", tmp_path / "b" / "1.dcm", tmp_path / "link.png"]
    thread = listing.list_in_background(listing.Listing(7, tuple(paths)), events)
    assert thread.daemon
    thread.join(30)
    listed = events.get_nowait()
    assert listed == listing.Listed(
        7,
        expand_inputs(paths),
        [(os.path.realpath(tmp_path / "b" / n), None) for n in ("1.dcm", "2.png")],
        folders=(os.path.realpath(tmp_path / "b"),),  # where no overlay may be saved
    )
    session = ReadingSession()
    session.add(listed.files, listed.keys)
    assert session.keys == listed.keys and session.names == ["1.dcm", "2.png"]

    def fails(_paths: object, _on_found: object = None) -> list[tuple[Path, str]]:
        raise RuntimeError("the share went away")

    monkeypatch.setattr(listing, "list_inputs", fails)
    listing.list_in_background(listing.Listing(8, tuple(paths)), events).join(30)
    assert events.get_nowait() == listing.Listed(8, [], [], "RuntimeError: the share went away")


def test_a_cancelled_listing_counts_what_it_found_and_stops_its_walk(tmp_path: Path) -> None:
    """The status line's count comes from the walk as it goes; a cancelled listing stops the walk at
    the next file found (a share of thousands of files is not read to the end) and reports nothing."""
    from fracsight.desktop import listing

    for i in range(300):
        (tmp_path / f"IM{i:06d}").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)  # found by its bytes
    events: queue.Queue = queue.Queue()
    whole = listing.Listing(1, (tmp_path,))
    listing.list_in_background(whole, events).join(60)
    assert whole.found == 300 and len(events.get_nowait().files) == 300
    stopped = listing.Listing(2, (tmp_path,), cancelled=True)
    thread = listing.list_in_background(stopped, events)
    thread.join(60)
    assert not thread.is_alive() and stopped.found == 0 and events.empty()


@pytest.mark.fracatlas
def test_files_of_the_same_name_in_subfolders_keep_predicts_names(
    predictor: Predictor, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """A PACS export: ``IM000001.jpg`` in every study folder. Rows, study and exports name each by
    its path under the folder opened, as ``fracsight predict`` does; a file given itself by its name."""
    from fracsight.inference.tabular import named_inputs

    pacs = tmp_path / "pacs"
    for patient, source in (("patientA", FRACTURED), ("patientB", HAND)):
        (pacs / patient / "study1").mkdir(parents=True)
        (pacs / patient / "study1" / "IM000001.jpg").write_bytes(
            (fracatlas_dir / "images" / source).read_bytes()
        )
    alone = fracatlas_dir / "images" / HAND
    files = expand_inputs([pacs, alone])
    assert files == named_inputs([pacs, alone])
    names = ["patientA/study1/IM000001.jpg", "patientB/study1/IM000001.jpg", "IMG0000050.jpg"]
    assert [name for _, name in files] == names
    session = ReadingSession(one_study=True)
    session.set_predictor(predictor)
    for index, path, name in session.add(files):
        session.record(index, predict_one(predictor, path, name), file_stamp(path))
    assert session.names == names and [r.source for _, r in session.shown()] == names
    assert [session.list_row(r)[0] for _, r in session.shown()] == names
    # patientB's file is a copy of the one given alone: a row of its own, but one view of the study
    (study,) = session.studies()
    assert study.images == tuple(names[:2])
    assert study.warnings == (
        f"given more than once, so counted once: {names[2]} (the same image as {names[1]})",
        "the views come from 2 study folders (patientA/study1, patientB/study1), combined here as one "
        "examination: are they one? Read apart, each folder is a study",  # two patients: as predict --study
    )
    assert [line.split(",")[1] for line in session.csv_text().splitlines()[1:4]] == names
    assert predict_one(predictor, pacs / "patientA", "patientA/x.jpg").source == "patientA/x.jpg"
    # a file that cannot be read is said by the same name as predict says it, not its file name alone
    (pacs / "patientA" / "study1" / "IM000002.jpg").write_text("not an image")
    unread = predict_one(
        predictor, pacs / "patientA" / "study1" / "IM000002.jpg", "patientA/study1/IM000002.jpg"
    )
    assert unread.error.startswith("patientA/study1/IM000002.jpg: not a supported image")


@pytest.mark.fracatlas
def test_session_studies_are_predicts_study_folders(
    predictor: Predictor, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """MURA-style study folders are grouped as ``fracsight predict`` groups them
    (:func:`~fracsight.inference.tabular.study_groups`); a study gets its verdict once every view has
    a result; a view that could not be read is one it has not seen; a folder opened again after a
    cancelled run counts each file at its latest place."""
    patient = tmp_path / "XR_HAND" / "patient1"
    for study, image in (("study1_positive", FRACTURED), ("study2_negative", HAND)):
        (patient / study).mkdir(parents=True)
        (patient / study / "image1.jpg").symlink_to(fracatlas_dir / "images" / image)
    (patient / "study2_negative" / "image2.png").write_text("not an image", encoding="utf-8")
    session = ReadingSession()
    session.set_predictor(predictor)
    items = session.add(expand_inputs([patient.parent]))
    assert session.folders == {"patient1/study1_positive": [0], "patient1/study2_negative": [1, 2]}
    assert [session.study_of(i) for i in range(3)] == [
        "patient1/study1_positive",
        *["patient1/study2_negative"] * 2,
    ]
    index, path, name = items[1]
    session.record(index, predict_one(predictor, path, name), file_stamp(path))
    assert session.studies() == []  # study2's other view, and study1's only one, not yet predicted
    for index, path, name in (items[0], items[2]):
        session.record(index, predict_one(predictor, path, name), file_stamp(path))
    first, second = session.studies()
    assert (first.study, first.images, first.unread) == (
        "patient1/study1_positive",
        ("patient1/study1_positive/image1.jpg",),
        (),
    )
    assert second.images == ("patient1/study2_negative/image1.jpg",)
    assert second.unread == ("patient1/study2_negative/image2.png",) and not second.reliable
    expected = predictor.predict_study([session.results[0]], "patient1/study1_positive")
    assert first.to_dict() == expected.to_dict()

    reopened = ReadingSession()
    reopened.set_predictor(predictor)
    reopened.add(expand_inputs([patient.parent]))  # cancelled: nothing predicted
    for index, path, name in reopened.add(expand_inputs([patient.parent])):
        reopened.record(index, predict_one(predictor, path, name), file_stamp(path))
    assert len(reopened.paths) == 3  # opened again: the same rows, predicted in them
    assert reopened.folders == {"patient1/study1_positive": [0], "patient1/study2_negative": [1, 2]}
    assert [s.to_dict() for s in reopened.studies()] == [first.to_dict(), second.to_dict()]
    reopened.one_study = True  # all images as one study instead, as predict --study
    (together,) = reopened.studies()
    assert together.study == ALL_INPUTS and reopened.study_of(0) == ALL_INPUTS
    # it says that it combines two examinations, as predict --study on the patient's folder says
    assert together.folders == ("patient1/study1_positive", "patient1/study2_negative")
    assert any(w.startswith("the views come from 2 study folders") for w in together.warnings)


@pytest.mark.slow
@pytest.mark.fracatlas
# fracture+region is the shipped default model, which every other test here uses
@pytest.mark.parametrize("kind", [k for k in HEAD_KINDS if k != "fracture+region"])
def test_session_shows_the_heads_of_each_kind(head_bundle, kind: str) -> None:
    heads = HEAD_KINDS[kind]
    data, bundle = head_bundle(kind)
    predictor = Predictor(bundle)
    image = sorted(p for p in data.rglob("*.jpg") if "test" in p.parts or p.parent.name == "images")[0]
    session = ReadingSession()
    session.set_predictor(predictor)
    session.add(expand_inputs([image]))
    session.results[0] = predictor.predict(image)
    columns = session.list_columns()
    assert ("fracture_probability" in columns) == ("fracture" in heads)
    assert ("predicted_class" in columns) == ("class" in heads)
    assert ("region" in columns) == ("region" in heads)
    assert bool(session.operating_point_names) == ("fracture" in heads)
    row = dict(zip(columns, session.list_row(session.result(0)), strict=True))
    pred = session.results[0]
    assert row["decision"] == pred.decision
    if "class" in heads:
        assert row["predicted_class"] == pred.classification.predicted
        card = card_for(pred)
        assert card.classification is not None and card.classification.text in card.lines
    header = session.csv_text().splitlines()[0].split(",")
    assert ("fracture_probability" in header) == ("fracture" in heads)
    if "class" in heads:
        assert all(f"p_{c}" in header for c in predictor.classes)  # like predict --all-classes


# ---- drawing maths --------------------------------------------------------------------------------------
def test_fit_zoom_shows_the_whole_image_centred() -> None:
    camera = fit_zoom((1000, 500), (800, 600))
    assert camera.zoom == pytest.approx(0.6) and (camera.cx, camera.cy) == (250, 500)
    crop = visible_crop((1000, 500), (800, 600), camera)
    assert (crop.x0, crop.y0, crop.x1, crop.y1) == (0, 0, 500, 1000)
    assert crop.size == (300, 600) and crop.left == 250 and crop.top == 0


def test_zoom_about_a_point_keeps_it_under_the_cursor() -> None:
    canvas = (800, 600)
    camera = fit_zoom((1000, 500), canvas)
    point = camera.to_image(300, 200, canvas)
    zoomed = camera.zoomed(3.0, point)
    assert zoomed.to_image(300, 200, canvas) == pytest.approx(point)
    assert zoomed.zoom == pytest.approx(1.8)
    panned = zoomed.panned(90, 0)  # drag right by 90 screen pixels: the image moves with it
    assert panned.to_image(390, 200, canvas) == pytest.approx(point)
    assert camera.zoomed(1e9).zoom == 16.0 and camera.zoomed(1e-9).zoom == 0.02


def test_visible_crop_off_screen_and_partial() -> None:
    assert visible_crop((100, 100), (200, 200), Camera(1000, 1000, 1.0)) is None
    crop = visible_crop((100, 100), (200, 200), Camera(100, 50, 2.0))  # the right half is beyond the image
    assert (crop.x0, crop.x1, crop.left, crop.size) == (50, 100, 0, (100, 200))


def test_apply_window() -> None:
    pixels = np.linspace(0, 1, 11, dtype=np.float32)
    assert np.allclose(apply_window(pixels, 0.5, 1.0), pixels)
    narrow = apply_window(pixels, 0.5, 0.2)
    assert narrow[3] == 0.0 and narrow[7] == 1.0 and narrow[5] == pytest.approx(0.5)


def test_render_visible_draws_the_heatmap_and_boxes_where_they_are() -> None:
    pixels = np.full((200, 100), 0.5, dtype=np.float32)
    heat = np.zeros_like(pixels)
    heat[150:, :] = 1.0
    box = DetectedBox(10, 20, 60, 80, 0.9)
    view = ViewData(pixels, heat, (box,))
    picture, crop = render_visible(view, (200, 400), fit_zoom((200, 100), (200, 400)), opacity=0.8)
    assert picture.size == crop.size == (200, 400)  # zoom 2
    a = np.asarray(picture, dtype=np.int16)
    assert abs(a[100, 100, 0] - a[100, 100, 2]) < 3  # grey where there is no heat
    assert abs(a[350, 100, 0] - a[350, 100, 2]) > 40  # coloured where the heat is
    assert (0, 230, 255) in {tuple(a[y, 60]) for y in range(38, 44)}  # the box's top edge, at y 40
    off, _ = render_visible(view, (200, 400), fit_zoom((200, 100), (200, 400)), show_heatmap=False)
    assert abs(np.asarray(off, dtype=np.int16)[350, 100] - 128).max() < 3
    whole = full_overlay(view, Look(show_boxes=False))
    assert whole.size == (100, 200)


def test_the_window_keeps_a_core_for_itself() -> None:
    assert inference_threads(3) == 3
    assert inference_threads(0) == max(1, local_cpus() - 1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_background_threads_run_at_a_lower_priority_and_pass_it_on() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    seen: dict[str, int] = {}

    def child() -> None:
        seen["child"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def parent() -> None:
        assert lower_this_thread(3)
        seen["parent"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        t = threading.Thread(target=child)
        t.start()
        t.join()

    t = threading.Thread(target=parent)
    t.start()
    t.join()
    assert seen == {"parent": min(19, base + 3), "child": min(19, base + 3)}
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the calling (window's) thread is untouched
    assert not lower_this_thread(0)
    renderer = BackgroundRenderer(queue.Queue())
    try:
        deadline = time.monotonic() + 10
        while os.getpriority(os.PRIO_PROCESS, renderer._thread.native_id) == base:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert os.getpriority(os.PRIO_PROCESS, renderer._thread.native_id) == min(19, base + RENDER_NICENESS)
    finally:
        renderer.close()
    assert 0 < RENDER_NICENESS < MODEL_NICENESS  # the picture before the model


# ---- drag and drop: the data as tkdnd delivers it -------------------------------------------------------
def test_dropped_paths_as_tkdnd_delivers_them(tmp_path: Path) -> None:
    import tkinter

    spaced = tmp_path / "with space" / "a b.jpg"
    spaced.parent.mkdir()
    spaced.write_bytes(b"x")
    accented = tmp_path / "é-dir"
    accented.mkdir()
    # %D of <<Drop:DND_Files>>: a Tcl list of paths; on X11 tkdnd 2.6 decodes the file manager's
    # percent-encoded UTF-8 one byte per character ("é" as "Ã©")
    mangled = str(accented).encode("utf-8").decode("latin-1")
    data = tkinter.Tcl().tk.splitlist(
        f"{{{spaced}}} {{{mangled}}} https://example.org/x.png {{{tmp_path / 'gone.png'}}}"
    )
    found, other = paths_from_drop(data)
    assert found == [spaced, accented]
    assert other == ["https://example.org/x.png", str(tmp_path / "gone.png")]
    assert paths_from_drop(["", str(spaced)]) == ([spaced], [])
    # a name that is not UTF-8 (M\xfcller.jpg from an old Windows disk), one byte a character too:
    # skipped as "not a file here", though predict reads it
    latin = Path(os.fsdecode(bytes(tmp_path) + b"/M\xfcller.jpg"))
    latin.write_bytes(b"x")
    assert paths_from_drop([os.fsencode(latin).decode("latin-1")]) == ([latin], [])


# ---- keyboard shortcuts: one table for the bindings, the list and the tooltips ---------------------------
def test_shortcut_table_binds_each_key_once_to_an_action_that_exists() -> None:
    pytest.importorskip("tkinter")
    from fracsight.desktop.shortcuts import SHORTCUTS, help_rows, hint, tk_sequences
    from fracsight.desktop.viewer import Viewer
    from fracsight.desktop.window import DesktopApp

    sequences = [seq for s in SHORTCUTS for chord in s.chords for seq in tk_sequences(chord)]
    assert len(sequences) == len(set(sequences))  # no key means two things
    for s in SHORTCUTS:
        owner, _, name = s.action.rpartition(".")
        assert callable(getattr(Viewer if owner == "viewer" else DesktopApp, name)), s.action
    assert ("Ctrl+Shift+O", "Open a folder") in help_rows()
    assert hint("viewer.toggle_heatmap") == "Heatmap on or off (H)"
    # both cases of a letter (Caps Lock), the keypad's keys, and "=" for "+" without Shift
    assert tk_sequences("Ctrl+Shift+O") == ("<Control-Shift-Key-o>", "<Control-Shift-Key-O>")
    assert tk_sequences("H") == ("<Key-h>", "<Key-H>")
    assert tk_sequences("Ctrl+Plus") == ("<Control-Key-plus>", "<Control-Key-equal>", "<Control-Key-KP_Add>")
    assert tk_sequences("+") == ("<Key-plus>", "<Key-equal>", "<Key-KP_Add>")
    assert tk_sequences("-") == ("<Key-minus>", "<Key-KP_Subtract>")
    assert tk_sequences("Down") == ("<Key-Down>",) and tk_sequences("F1") == ("<Key-F1>",)
    docs = (Path(__file__).resolve().parents[1] / "docs" / "desktop.md").read_text(encoding="utf-8")
    assert all(f"\n| {s.keys} | " in docs for s in SHORTCUTS)  # its table of keys is this one


def test_plain_keys_are_left_to_text_fields_and_to_the_lists_own_arrows() -> None:
    from fracsight.desktop.shortcuts import applies

    for field in ("TEntry", "Entry", "TCombobox", "Text", "TSpinbox"):
        assert not applies("H", field, 0) and not applies("+", field, 0) and not applies("Down", field, 0)
        assert applies("Ctrl+O", field, 4) and applies("Escape", field, 0) and applies("F1", field, 0)
    # a read-only combobox (the operating point's) takes nothing typed: letters are shortcuts there,
    # and its arrows its own (they open its list)
    assert applies("J", "TCombobox", 0, editable=False) and applies("H", "TCombobox", 0, editable=False)
    assert not applies("Down", "TCombobox", 0, editable=False)
    assert not applies("Down", "Treeview", 0) and applies("J", "Treeview", 0)  # the list moves itself
    assert not applies("Up", "TScale", 0)
    assert applies("Down", "Canvas", 0) and applies("H", "Canvas", 0x2)  # Caps Lock
    assert applies("+", "Canvas", 0x1) and applies("H", "Canvas", 0x10)  # Shift, Num Lock
    assert not applies("H", "Canvas", 0x4) and not applies("H", "Canvas", 0x8)  # Ctrl+H, Alt+H


def test_the_threads_help_gives_its_maximum() -> None:
    """``fracsight desktop --help`` said *ONNX Runtime threads (0: one fewer than the cores)*, not that
    more than 256 is refused: a reader learned the limit only from the error. Now the help says it."""
    from typer.testing import CliRunner

    from fracsight.cli import app as cli
    from fracsight.inference.predictor import MAX_THREADS

    result = CliRunner().invoke(cli, ["desktop", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    line = " ".join(next(row for row in result.output.splitlines() if "--threads" in row).split())
    assert f"at most {MAX_THREADS}" in line, line


def test_a_pan_keeps_the_image_on_the_canvas() -> None:
    """A side that fits stays centred; a larger one never shows past its edge (Shift+Left held at
    the fitted size moved the image off the canvas, a black view with nothing to say why)."""
    image, canvas = (100, 200), (50, 40)  # image rows, columns; canvas width, height
    assert Camera(-500, 999, 1.0).kept_on(image, canvas) == Camera(25, 80, 1.0)
    assert Camera(120, 50, 1.0).kept_on(image, canvas) == Camera(120, 50, 1.0)  # inside: as it was
    assert Camera(0, 0, 0.1).kept_on(image, canvas) == Camera(100, 50, 0.1)  # all of it fits: centred
    fitted = fit_zoom(image, canvas)
    assert fitted.kept_on(image, canvas) == fitted
