"""The Streamlit script under Streamlit's AppTest (no browser): notice, examples, result and error cards,
and the sidebar, cards, study and table of bundles with a class head."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit", reason="the web app needs the app extra (pip install 'fracsight[app]')")
from streamlit.testing.v1 import AppTest

from fracsight.app import SCRIPT
from fracsight.app.logic import display_columns, escape_markdown, pick_examples
from fracsight.inference import NOTICE, Predictor
from fracsight.inference.tabular import ALL_INPUTS
from head_kinds import HEAD_KINDS

TIMEOUT = 120  # seconds per script run; the CPUs are shared with training jobs


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory: pytest.TempPathFactory, fracatlas_dir: Path) -> Path:
    """One fractured and one normal FracAtlas radiograph, plus a file that is not an image."""
    root = tmp_path_factory.mktemp("examples")
    for sub in ("Fractured", "Non_fractured"):
        src = sorted((fracatlas_dir / "images" / sub).glob("*.jpg"))[0]
        (root / sub).mkdir()
        (root / sub / src.name).symlink_to(src)
    (root / "zz_broken").mkdir()
    (root / "zz_broken" / "broken.png").write_bytes(b"this is text, not a PNG")
    return root


def start(monkeypatch: pytest.MonkeyPatch, *args: str) -> AppTest:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    at = AppTest.from_file(str(SCRIPT), default_timeout=TIMEOUT)
    at.run()
    assert_whole(at)
    return at


def assert_whole(at: AppTest) -> None:
    """No exception on the page, nor a card that failed to draw (the page says so in its place)."""
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "could not be shown" in e.value]


def markdown_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_renders_the_notice_and_the_model(monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path) -> None:
    at = start(monkeypatch, "--model", str(tiny_bundle))
    assert any(NOTICE in i.value for i in at.info)
    assert any("tiny-test" in m.value for m in at.sidebar.markdown)
    assert at.sidebar.toggle(key="show_heatmap").value is True
    assert at.sidebar.slider(key="opacity").value == pytest.approx(0.4)
    assert not at.dataframe  # nothing to show before an upload or an example


def test_an_example_gives_a_result_card(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, examples_dir: Path
) -> None:
    at = start(monkeypatch, "--model", str(tiny_bundle), "--examples", str(examples_dir))
    # the file that is not an image is no example (a PACS export's report was offered, an error card)
    assert [b.label for b in at.button if b.label.startswith("Try ")] == [
        f"Try {escape_markdown(next(examples_dir.glob(f'{sub}/*.jpg')).name)}"
        for sub in ("Fractured", "Non_fractured")
    ]
    fractured = next(examples_dir.glob("Fractured/*.jpg"))
    expected = Predictor(tiny_bundle).predict(fractured)

    at.button(key="example-0").click().run()
    assert_whole(at)
    text = markdown_text(at)
    assert expected.decision[:1].upper() + expected.decision[1:] in text
    assert f"Fracture probability {expected.fracture_probability:.3f}" in text
    assert "fs-bar-threshold" in text
    assert "Body region" not in text and "Class" not in text  # a fracture-only bundle: no filler lines
    rows = at.dataframe[0].value
    assert list(rows["source"]) == [fractured.name]
    assert list(rows["decision"]) == [expected.decision]
    assert tuple(rows.columns) == display_columns(Predictor(tiny_bundle).spec)
    assert at.sidebar.selectbox[0].label == "Operating point"
    assert at.sidebar.toggle(key="show_boxes").value is True
    assert not at.checkbox  # one image: no study checkbox


def test_two_examples_make_a_study_and_a_bad_file_an_error_card(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, examples_dir: Path
) -> None:
    at = start(monkeypatch, "--model", str(tiny_bundle), "--examples", str(examples_dir))
    for i in range(2):
        at.button(key=f"example-{i}").click().run()
    broken = examples_dir / "zz_broken" / "broken.png"
    at.file_uploader[0].set_value([(broken.name, broken.read_bytes(), "image/png")]).run()
    assert_whole(at)
    errors = [e.value for e in at.error]
    assert any("could not be read" in e and "`unsupported_format`" in e for e in errors), errors

    at.checkbox[0].check().run()
    assert "Study verdict (2 views)" in markdown_text(at)
    rows = at.dataframe[0].value
    assert list(rows["kind"]) == ["image", "image", "image", "study"]
    assert list(rows["error_code"])[2] == "unsupported_format"

    at.button(key="clear-examples").click().run()
    assert list(at.dataframe[0].value["source"]) == ["broken.png"]


def test_another_operating_point_rereads_the_results_without_predicting_again(
    monkeypatch: pytest.MonkeyPatch, examples_dir: Path
) -> None:
    """The default model: switching its operating point re-reads the stored results at the new
    threshold, as a Predictor made with that point says, and never runs the model again (with 200
    uploads every switch took seconds of "Reading 200 image(s)"); the study is named as
    ``fracsight predict --study`` names it, so the exports agree."""
    at = start(monkeypatch, "--examples", str(examples_dir))
    for i in range(2):
        at.button(key=f"example-{i}").click().run()
    at.checkbox[0].check().run()
    assert_whole(at)
    stored = dict(at.session_state["results"])
    assert len(stored) == 2

    default = Predictor()
    other = next(op.name for op in default.spec.operating_points if op != default.operating_point)
    at.sidebar.selectbox[0].select(other).run()
    assert_whole(at)
    after = at.session_state["results"]
    assert after.keys() == stored.keys() and all(after[k] is v for k, v in stored.items())

    reader = Predictor(operating_point=other)
    images = sorted(examples_dir.glob("*/*.jpg"))
    expected = [reader.predict(p) for p in images]
    study = reader.predict_study(expected, ALL_INPUTS)
    rows = at.dataframe[0].value
    assert list(rows["source"]) == [p.name for p in images] + [ALL_INPUTS]
    assert list(rows["decision"]) == [e.decision for e in expected] + [study.decision]
    assert set(rows["threshold"]) == {f"{reader.operating_point.threshold:.4f}"}
    text = markdown_text(at)
    assert f"operating point {other})" in text
    assert f"(threshold {default.operating_point.threshold:.3f}," not in text


def test_an_image_uploaded_twice_is_one_view(monkeypatch: pytest.MonkeyPatch, fracatlas_dir: Path) -> None:
    """The same radiograph uploaded twice (again, or as a copy) is one card, one row and one view of
    the study, as ``fracsight predict`` takes a file given twice once; a note names the repeats."""
    first, second = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:2]
    at = start(monkeypatch)
    at.file_uploader[0].set_value(
        [
            (first.name, first.read_bytes(), "image/jpeg"),
            (second.name, second.read_bytes(), "image/jpeg"),
            (first.name, first.read_bytes(), "image/jpeg"),
            ("copy.jpg", second.read_bytes(), "image/jpeg"),
        ]
    ).run()
    assert_whole(at)
    assert list(at.dataframe[0].value["source"]) == [first.name, second.name]
    notes = [w.value for w in at.warning if "counted once" in w.value]
    assert notes and escape_markdown(f"the same image as {second.name}") in notes[0]
    at.checkbox[0].check().run()
    assert "Study verdict (2 views)" in markdown_text(at)
    views = [stored.view for stored in at.session_state["results"].values()]
    assert len(views) == 2 and all(v.pixels.dtype == np.uint8 for v in views)  # 8-bit in the session


def test_one_radiograph_and_two_empty_files_are_a_study_of_three_views(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, fracatlas_dir: Path
) -> None:
    """Two empty files (two failed transfers) were "the same image" and one was dropped; and with
    one readable view the page offered no study, which the API and ``predict --study`` give (not
    reliable: some views could not be read)."""
    first = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    at = start(monkeypatch, "--model", str(tiny_bundle))
    at.file_uploader[0].set_value(
        [
            (first.name, first.read_bytes(), "image/jpeg"),
            ("IM000002.dcm", b"", None),
            ("IM000003.dcm", b"", None),
        ]
    ).run()
    assert_whole(at)
    assert not [w.value for w in at.warning if "counted once" in w.value]
    at.checkbox[0].check().run()
    assert_whole(at)
    text = "\n".join([markdown_text(at), *(e.value for e in at.error), *(w.value for w in at.warning)])
    assert "Study verdict (1 view" in text, text
    assert escape_markdown("2 of 3 views could not be read (IM000002.dcm, IM000003.dcm)") in text, text


def test_the_repeat_note_names_the_card_the_image_is_shown_on(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, fracatlas_dir: Path
) -> None:
    """Two PACS exports downloaded side by side: IM000001.jpg (A), IM000001.jpg (B) and B again.
    The cards were IM000001.jpg and IM000001 (2).jpg, and the note said "IM000001.jpg" was given
    twice, which a reader took for A."""
    first, second = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:2]
    at = start(monkeypatch, "--model", str(tiny_bundle))
    at.file_uploader[0].set_value(
        [("IM000001.jpg", path.read_bytes(), "image/jpeg") for path in (first, second, second)]
    ).run()
    assert_whole(at)
    shown = list(at.dataframe[0].value["source"])
    assert len(shown) == 2 and shown[0] == "IM000001.jpg"
    notes = [w.value for w in at.warning if "counted once" in w.value]
    assert notes and escape_markdown(f"IM000001.jpg (the same image as {shown[1]})") in notes[0], notes


def test_an_example_uploaded_too_is_one_view(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, examples_dir: Path
) -> None:
    """An example picked with a click and then uploaded (as a copy under another name) was two
    cards, two rows and two views of the study: it is one, and the note names the upload."""
    at = start(monkeypatch, "--model", str(tiny_bundle), "--examples", str(examples_dir))
    fractured, normal = (
        next(examples_dir.glob("Fractured/*.jpg")),
        next(examples_dir.glob("Non_fractured/*.jpg")),
    )
    at.button(key="example-0").click().run()
    at.file_uploader[0].set_value(
        [("copy.jpg", fractured.read_bytes(), "image/jpeg"), (normal.name, normal.read_bytes(), "image/jpeg")]
    ).run()
    assert_whole(at)
    assert list(at.dataframe[0].value["source"]) == [fractured.name, normal.name]
    notes = [w.value for w in at.warning if "counted once" in w.value]
    assert notes and escape_markdown(f"copy.jpg (the same image as {fractured.name})") in notes[0]
    at.checkbox[0].check().run()
    assert "Study verdict (2 views)" in markdown_text(at)
    at.button(key="clear-examples").click().run()  # the upload alone is then shown, without a note
    assert list(at.dataframe[0].value["source"]) == ["copy.jpg", normal.name, ALL_INPUTS]
    assert not [w for w in at.warning if "counted once" in w.value]
    # uploaded under its own name first, then picked: one card of that name, not "(2)" (the
    # upload, shown as the example's repeat, is on the page still: its name was not freed)
    at.button(key="clear-all").click().run()
    at.file_uploader[0].set_value([(fractured.name, fractured.read_bytes(), "image/jpeg")]).run()
    at.button(key="example-0").click().run()
    assert_whole(at)
    assert list(at.dataframe[0].value["source"]) == [fractured.name]
    at.button(key="clear-examples").click().run()  # the upload alone again: its own name still
    assert list(at.dataframe[0].value["source"]) == [fractured.name]


def test_examples_of_a_pacs_export_are_told_apart_and_only_images_offered(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """``--examples`` at a PACS export: SE1/IM000000 and SE2/IM000000 were two buttons "Try
    IM000000", and the report beside them (a DICOM without an image) a third, an error card. They
    are numbered, as uploads of one name are (a path would give away a labelled set's answer)."""
    import pydicom

    from dicom_support import make_radiograph_dicom

    images = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:2]
    for series, image in zip(("SE1", "SE2"), images, strict=True):
        (tmp_path / series).mkdir()
        make_radiograph_dicom(image, tmp_path / series / "IM000000")
    report = pydicom.dcmread(tmp_path / "SE2" / "IM000000")
    del report.PixelData
    report.Modality = "SR"
    report.save_as(tmp_path / "SE2" / "IM000001")
    at = start(monkeypatch, "--model", str(tiny_bundle), "--examples", str(tmp_path))
    labels = [b.label for b in at.button if b.label.startswith("Try ")]
    assert labels == ["Try IM000000", "Try IM000000 (2)"], labels  # never by a path: it may hold the label
    at.button(key="example-1").click().run()
    assert list(at.dataframe[0].value["source"]) == ["IM000000 (2)"]


def test_examples_are_drawn_from_every_group_of_the_folder(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """The app drew 60 files and kept the first 6 readable ones of their shuffle: FracAtlas gave 5
    fractured and 1 normal, a folder of hand/hip/leg no hand at all (docs/app.md: every subfolder)."""
    images = sorted((fracatlas_dir / "images").rglob("*.jpg"))[:36]
    group_of = {}
    for i, image in enumerate(images):
        group = ("hand", "hip", "leg")[i % 3]
        (tmp_path / group).mkdir(exist_ok=True)
        (tmp_path / group / image.name).symlink_to(image)
        group_of[image.name] = group
    at = start(monkeypatch, "--model", str(tiny_bundle), "--examples", str(tmp_path))
    shown = [group_of[b.label.removeprefix("Try ")] for b in at.button if b.label.startswith("Try ")]
    assert sorted(shown) == ["hand", "hand", "hip", "hip", "leg", "leg"], shown


def test_a_folder_upload_is_named_as_predict_names_the_folder(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """A MURA-style folder chosen in the browser arrives as ``mura/patient1/study1/a.jpg``: its rows
    were named so, where ``fracsight predict mura`` names them ``patient1/study1/a.jpg``, so the two
    CSVs of the same folder disagreed on every name. Now the rows, the study and the JSON are those
    of ``predict``, also where a second patient's folder holds a copy of the first's image (it was
    left out as a repeat, and with it a view of the second study); *Clear all images* then leaves
    no result of the last patient in the session."""
    import json

    from typer.testing import CliRunner

    from fracsight.cli import app

    images = {
        sub: sorted((fracatlas_dir / "images" / sub).glob("*.jpg")) for sub in ("Fractured", "Non_fractured")
    }
    contents = {
        "patient1/study1/a.jpg": images["Fractured"][0],
        "patient1/study1/b.jpg": images["Non_fractured"][0],
        "patient2/study1/a.jpg": images["Fractured"][0],  # the same bytes as patient1's
        "patient2/study1/c.jpg": images["Non_fractured"][1],
    }
    for name, src in contents.items():
        (tmp_path / "mura" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "mura" / name).write_bytes(src.read_bytes())
    run = CliRunner().invoke(app, ["predict", "--model", str(tiny_bundle), "--json", str(tmp_path / "mura")])
    assert run.exit_code == 0, run.output
    expected = json.loads(run.stdout)
    assert [i["source"] for i in expected["images"]] == list(contents)

    at = start(monkeypatch, "--model", str(tiny_bundle))
    files = [(f"mura/{n}", (tmp_path / "mura" / n).read_bytes(), "image/jpeg") for n in contents]
    at.file_uploader[1].set_value(files).run()
    assert_whole(at)
    rows = at.dataframe[0].value
    want = [*expected["images"], *expected["studies"]]
    assert list(rows["source"]) == [r.get("source", r.get("study")) for r in want]
    assert list(rows["decision"]) == [r["decision"] for r in want]
    shown = [float(v) for v in rows["fracture_probability"]]
    assert shown == pytest.approx([r["fracture_probability"] for r in want], abs=1e-4)
    assert "Study verdict (2 views)\\: patient1/study1" in markdown_text(at)
    assert "Study verdict (2 views)\\: patient2/study1" in markdown_text(at)
    assert at.session_state["results"]

    at.button(key="clear-all").click().run()
    assert not at.dataframe
    assert "results" not in at.session_state


def test_a_folder_added_later_renames_the_first_folders_results(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, fracatlas_dir: Path
) -> None:
    """Folder left, then folder right, each holding study1/a.jpg: the right one's image became
    right/study1/a.jpg while the left one's kept the name it was read under, study1/a.jpg, which
    fits either folder. Both are named by their whole paths now, as predict names them."""
    from uuid import uuid4

    left, right = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:2]
    at = start(monkeypatch, "--model", str(tiny_bundle))
    folder = at.file_uploader[1].set_value([("left/study1/a.jpg", left.read_bytes(), "image/jpeg")])
    at.run()
    assert next(iter(at.dataframe[0].value["source"])) == "study1/a.jpg"
    # the browser adds a folder to those listed: the first keeps its file id (AppTest's own
    # upload() would start a new list, with new ids)
    added = (str(uuid4()), "right/study1/a.jpg", right.read_bytes(), "image/jpeg")
    at.file_uploader[1]._files = [*folder._files, added]
    at.run()
    assert_whole(at)
    assert len(at.session_state["results"]) == 2  # the first not read again
    assert list(at.dataframe[0].value["source"])[:2] == ["left/study1/a.jpg", "right/study1/a.jpg"]


def test_file_names_in_a_study_banner_are_shown_as_written(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, fracatlas_dir: Path
) -> None:
    """The study's *not reliable* banner names the views it could not read: a name with Markdown in
    it was rendered (maths, bold, a link) where every card shows it literally."""
    images = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:2]
    odd = "$x^2$ **bold** [link](x).png"
    at = start(monkeypatch, "--model", str(tiny_bundle))
    given = [(i.name, i.read_bytes(), "image/jpeg") for i in images]
    at.file_uploader[0].set_value([*given, (odd, b"not an image", "image/png")]).run()
    at.checkbox[0].check().run()
    assert_whole(at)
    banners = [e.value for e in at.error if odd.split()[0][:2] in e.value or "x^2" in e.value]
    assert banners and all(escape_markdown(odd) in b for b in banners), [e.value for e in at.error]


def test_a_cards_images_are_links_the_page_does_not_fetch(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, tmp_path: Path
) -> None:
    """A card from elsewhere with `![logo](http://...)`: the browser fetched it at every page load,
    the Model card expander closed, with the app's address as Referer."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    with (bundle / "card.md").open("a", encoding="utf-8") as f:
        f.write(
            "\n![logo](http://127.0.0.1:9/track.png?who=card) and ![ref][logo], \\![esc](http://127.0.0.1:9/e.png)"
            "\n\n[logo]: http://127.0.0.1:9/r.png\n"
        )
    at = start(monkeypatch, "--model", str(bundle))
    card = "\n".join(m.value for e in at.sidebar.expander for m in e.markdown)
    assert "track.png" in card and "r.png" in card  # the card is whole, its addresses readable
    assert "![" not in card, card  # no image left to fetch, an escaped one neither (`\\![`)


def test_a_bad_model_is_an_error_card_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    at = start(monkeypatch, "--model", "no-such-model")
    assert any("could not be loaded" in e.value and "unknown_model" in e.value for e in at.error)
    assert any(NOTICE in i.value for i in at.info)


def test_an_unreliable_result_is_shown_prominently(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, examples_dir: Path
) -> None:
    real_predict = Predictor.predict

    def unreliable(self: Predictor, *args, **kwargs):
        return replace(real_predict(self, *args, **kwargs), reliable=False)

    monkeypatch.setattr(Predictor, "predict", unreliable)
    at = start(monkeypatch, "--model", str(tiny_bundle), "--examples", str(examples_dir))
    at.button(key="example-0").click().run()
    assert_whole(at)
    assert any(e.value.startswith("**Not reliable") for e in at.error)
    assert ":orange[Not reliable\\: input outside what the model was made for]" in markdown_text(at)
    assert list(at.dataframe[0].value["reliable"]) == ["False"]


# ---- bundles with a class head -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kind_examples(tmp_path_factory: pytest.TempPathFactory):
    """``kind_examples(data) -> folder`` with two held-out images of a head-kind data set (linked)."""

    def make(data: Path) -> Path:
        root = tmp_path_factory.mktemp("kind-examples")
        images = sorted(p for p in data.rglob("*.jpg") if "test" in p.parts or p.parent.name == "images")
        for i, src in enumerate(images[:2]):
            (root / f"g{i}").mkdir()  # one folder each: the gallery draws from every folder
            (root / f"g{i}" / src.name).symlink_to(src.resolve())
        return root

    return make


@pytest.mark.slow
@pytest.mark.fracatlas
@pytest.mark.parametrize("kind", ["class", "fracture+class", "class+region"])
def test_a_class_bundle_shows_its_heads_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch, head_bundle, kind_examples, kind: str
) -> None:
    heads = HEAD_KINDS[kind]
    data, bundle = head_bundle(kind)
    examples = kind_examples(data)
    predictor = Predictor(bundle)
    at = start(monkeypatch, "--model", str(bundle), "--examples", str(examples))

    sidebar = "\n".join([*(m.value for m in at.sidebar.markdown), *(c.value for c in at.sidebar.caption)])
    assert "**Class operating point**" in sidebar
    assert f"{predictor.spec.class_operating_point.min_probability:.3f} or more" in sidebar
    has_fracture = "fracture" in heads
    assert bool(at.sidebar.selectbox) == has_fracture  # the operating point selector
    assert any(t.key == "show_boxes" for t in at.sidebar.toggle) == has_fracture

    at.button(key="example-0").click().run()
    assert_whole(at)
    first = pick_examples(examples)[0]  # the gallery's order, shuffled
    expected = predictor.predict(first)
    c = expected.classification
    text = markdown_text(at)
    assert escape_markdown(expected.decision[:1].upper() + expected.decision[1:]) in text
    label = "Fracture type" if has_fracture else "Class"
    assert f"{label}{'' if c.confident else ' uncertain'}" in text and c.predicted in text
    assert ("Fracture probability" in text) == has_fracture
    assert ("Body region" in text) == ("region" in heads)
    assert any(e.label.startswith(f"All {label.lower()} probabilities") for e in at.expander)
    assert "fs-class-fill" in text

    at.button(key="example-1").click().run()
    assert_whole(at)
    at.checkbox[0].check().run()  # a study for every kind of bundle
    assert_whole(at)
    text = markdown_text(at)
    assert "Study verdict (2 views)" in text
    rows = at.dataframe[0].value
    assert tuple(rows.columns) == display_columns(predictor.spec)
    assert list(rows["kind"]) == ["image", "image", "study"]
    assert ("fracture_probability" in rows.columns) == has_fracture
    study = predictor.predict_study([predictor.predict(p) for p in sorted(examples.rglob("*.jpg"))], "s")
    assert list(rows["decision"])[-1] == study.decision
    assert list(rows["predicted_class"])[-1] == study.classification.predicted


def test_a_port_another_server_holds_is_an_error_not_a_url() -> None:
    import socket

    from typer.testing import CliRunner

    from fracsight.cli import app

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = CliRunner().invoke(app, ["app", "--port", str(port)])
    assert result.exit_code == 2 and "port_unavailable" in result.output
    assert "(Ctrl+C to stop)" not in result.output


def test_an_unknown_model_or_operating_point_is_refused_before_the_app_starts() -> None:
    from typer.testing import CliRunner

    from fracsight.cli import app

    for args, code in ((["--model", "no-such-model"], "unknown_model"), (["--operating-point", "nope"], "")):
        result = CliRunner().invoke(app, ["app", *args])
        assert result.exit_code == 2 and code in result.output and "error (" in result.output
        assert "(Ctrl+C to stop)" not in result.output and "Traceback" not in result.output


def test_a_bundle_whose_model_file_was_changed_is_refused_before_the_app_starts(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """The app runs the model in another process: a tampered model.onnx must stop the command, not
    only show an error card once the page is open."""
    import shutil

    from typer.testing import CliRunner

    from fracsight.cli import app

    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_bundle, tampered)
    (tampered / "model.onnx").write_bytes(b"not the model")
    result = CliRunner().invoke(app, ["app", "--model", str(tampered)])
    assert result.exit_code == 2 and "bundle_checksum_mismatch" in result.output
    assert "(Ctrl+C to stop)" not in result.output and "Traceback" not in result.output


def test_two_uploads_of_one_name_are_told_apart(monkeypatch: pytest.MonkeyPatch, fracatlas_dir: Path) -> None:
    """Two different radiographs both named IM000001 (PACS exports name files so) had one title,
    one overlay name and one `source` in the CSV: nothing said which row was which file."""
    fractured = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    normal = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[0]
    at = start(monkeypatch)
    at.file_uploader[0].set_value(
        [("IM000001", fractured.read_bytes(), "image/jpeg"), ("IM000001", normal.read_bytes(), "image/jpeg")]
    ).run()
    assert_whole(at)
    assert list(at.dataframe[0].value["source"]) == ["IM000001", "IM000001 (2)"]
    # both removed, a third IM000001 uploaded: it took "IM000001", the name a CSV or overlay saved
    # a moment ago gave the first (another image); the names stay taken until Clear all images
    third = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[5]
    at.file_uploader[0].set_value([("IM000001", third.read_bytes(), "image/jpeg")]).run()
    assert_whole(at)
    assert list(at.dataframe[0].value["source"]) == ["IM000001 (3)"]
    at.button(key="clear-all").click().run()
    at.file_uploader[0].set_value([("IM000001", third.read_bytes(), "image/jpeg")]).run()
    assert list(at.dataframe[0].value["source"]) == ["IM000001"]
    # the next patient's IM000001 after Clear all: it was "IM000001 (2)", the names shown before
    # the clear taken again by the run the clear made (a name that exists nowhere on disk)
    at.button(key="clear-all").click().run()
    at.file_uploader[0].set_value([("IM000001", fractured.read_bytes(), "image/jpeg")]).run()
    assert list(at.dataframe[0].value["source"]) == ["IM000001"]


def test_a_folder_without_radiographs_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of notes only: the page asked to upload radiographs, and said files listed before a
    restart were gone (no server had restarted)."""
    at = start(monkeypatch)
    at.file_uploader[1].set_value(
        [
            ("reports/notes.txt", b"notes", "text/plain"),
            ("reports/summary.pdf", b"%PDF-1.4", "application/pdf"),
        ]
    ).run()
    assert_whole(at)
    said = " ".join(w.value for w in at.warning)
    assert "No radiograph in the folder" in said and "notes.txt" in said
    assert "restarted" not in " ".join(c.value for c in at.caption)


def test_the_tables_own_csv_export_is_off() -> None:
    """The table's toolbar "Download as CSV" wrote `@SUM(1+1).jpg` as it is (a formula when opened)
    and other columns than the app's CSV download, which escapes it: the app's is the one."""
    from fracsight.app import streamlit_command

    command = streamlit_command(port=8501)
    assert command[command.index("--client.disableDataExport") + 1] == "true"


def test_an_unreadable_file_of_a_folder_is_named_by_its_path_as_predict_names_it(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, tmp_path: Path
) -> None:
    """The error of `patient2/study1_negative/image3.png` (1 byte) said `image3.png: not a supported
    image...` in the app's CSV, `patient2/study1_negative/image3.png: ...` in predict's."""
    import json

    from typer.testing import CliRunner

    from fracsight.cli import app

    bad = tmp_path / "mura" / "patient2" / "study1_negative" / "image3.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"x")
    run = CliRunner().invoke(app, ["predict", "--model", str(tiny_bundle), "--json", str(tmp_path / "mura")])
    (expected,) = json.loads(run.stdout)["images"]
    at = start(monkeypatch, "--model", str(tiny_bundle))
    at.file_uploader[1].set_value([("mura/patient2/study1_negative/image3.png", b"x", "image/png")]).run()
    assert_whole(at)
    (stored,) = at.session_state["results"].values()
    assert stored.result.source == expected["source"] and stored.result.error == expected["error"]


def test_an_image_of_an_extreme_shape_does_not_end_the_page(
    monkeypatch: pytest.MonkeyPatch, fracatlas_dir: Path
) -> None:
    """A 40000 x 32 upload: its original|overlay view, 1 px high, was fitted by Streamlit to 0 px, a
    traceback on the page, and the cards after it, the table, the downloads and the notice were gone."""
    import io

    thin = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 40000), dtype=np.uint8)).save(thin, "PNG")
    fractured = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    at = start(monkeypatch)
    at.file_uploader[0].set_value(
        [("thin.png", thin.getvalue(), "image/png"), ("wrist.jpg", fractured.read_bytes(), "image/jpeg")]
    ).run()
    assert_whole(at)
    assert list(at.dataframe[0].value["source"]) == ["thin.png", "wrist.jpg"]
    assert any(NOTICE in c.value for c in at.caption)
