"""A bundle whose binary head finds "abnormal" (MURA: normal / abnormal) is never said to find
fractures where a reader sees it: not in its DICOM results (the SR's coded finding, the texts of
the SR, presentation state and capture, the series), nor on the web app's page."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset

import dicom_results_support as support
from fracsight.dicom.results import result_datasets, study_result_datasets
from fracsight.inference import NOTICE, Prediction, Predictor
from fracsight.io.dicom_gate import RESULT_MODEL_NAME

FRACTURE_CODE = ("72704001", "SCT")
ABNORMAL_CODE = ("408574004", "SCT")  # Imaging result abnormal
FINDING = ("121071", "DCM")  # the concept name of a measurement group's finding type
SUSPECTED = ("415684004", "SCT")
# The product's name (Manufacturer's Model Name of every result object, by which fracsight knows its
# own objects): it names the device, not what the model found.
PRODUCT_NAME = RESULT_MODEL_NAME
ABNORMALITY_WORDS = {"abnormality suspected", "no abnormality detected"}


@pytest.fixture(scope="module")
def abnormality_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default bundle with its binary head's classes named as a MURA-trained one names them."""
    source = Predictor().bundle_dir
    bundle = tmp_path_factory.mktemp("abnormality") / "mura-like"
    shutil.copytree(source, bundle)
    spec_path = bundle / "bundle.json"
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    (head,) = [h for h in spec["heads"] if h["name"] == "fracture"]
    head["classes"] = ["normal", "abnormal"]
    spec["name"] = "mura-like-test"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    return bundle


@pytest.fixture(scope="module")
def predictor(abnormality_bundle: Path) -> Predictor:
    predictor = Predictor(abnormality_bundle)
    assert predictor.finding == "abnormality"
    return predictor


@pytest.fixture(scope="module")
def case(
    tmp_path_factory: pytest.TempPathFactory, fracatlas_dir: Path, predictor: Predictor
) -> tuple[Dataset, Prediction]:
    """A CR source on which the model suspects an abnormality and draws a box."""
    folder = tmp_path_factory.mktemp("abnormality-dicom")
    for jpeg in sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:8]:
        path = support.write(support.cr_from_jpeg(jpeg), folder / f"{jpeg.stem}.dcm")
        prediction = predictor.predict(path, keep_pixels=True)
        if prediction.boxes and prediction.fracture_suspected and prediction.reliable:
            return pydicom.dcmread(path), prediction
    pytest.fail("none of the first fractured FracAtlas images gave a box: the test premise is gone")


def _code(seq) -> tuple[str, str]:
    return str(seq[0].CodeValue), str(seq[0].CodingSchemeDesignator)


def _values(sr: Dataset, name: tuple[str, str]) -> list[tuple[str, str]]:
    """The coded values of the SR's CODE items named ``name``, at any depth."""
    stack, found = list(sr.ContentSequence), []
    while stack:
        item = stack.pop(0)
        if item.ValueType == "CODE" and _code(item.ConceptNameCodeSequence) == name:
            found.append(_code(item.ConceptCodeSequence))
        stack[:0] = list(item.get("ContentSequence", []))
    return found


def _codes(ds: Dataset) -> list[tuple[str, str]]:
    """Every coded concept in ``ds``, at any depth."""
    return [
        _code(e.value)
        for e in ds.iterall()
        if e.keyword in ("ConceptNameCodeSequence", "ConceptCodeSequence") and e.value
    ]


def _texts(ds: Dataset) -> list[str]:
    """Every text value in ``ds`` (codes' meanings, SR texts, descriptions, comments), at any depth."""
    texts = []
    for e in ds.iterall():
        if e.VR in ("LO", "LT", "SH", "ST", "UT", "UC") and e.value and e.keyword != "ManufacturerModelName":
            values = e.value if isinstance(e.value, pydicom.multival.MultiValue) else [e.value]
            texts += [str(v) for v in values]
    return texts


def _dciodvfy(ds: Dataset, path: Path) -> list[str]:
    ds.save_as(path, enforce_file_format=True)
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [
        line for line in (done.stdout + done.stderr).splitlines() if line.startswith(("Error", "Warning"))
    ]


def test_dicom_results_code_and_name_an_abnormality_never_a_fracture(
    case: tuple[Dataset, Prediction], predictor: Predictor, tmp_path: Path
) -> None:
    source, prediction = case
    assert prediction.decision == "abnormality suspected"
    sr, pr, sc = result_datasets(source, prediction, predictor)
    # the SR's finding, and the decision's concept, is an abnormal imaging result
    codes = _codes(sr)
    assert FRACTURE_CODE not in codes
    # the image's group and each box's
    assert _values(sr, FINDING) == [ABNORMAL_CODE] * (1 + len(prediction.boxes))
    assert _values(sr, ABNORMAL_CODE) == [SUSPECTED]
    sr_texts = _texts(sr)
    assert prediction.decision in sr_texts and NOTICE in sr_texts
    assert any(t.startswith("fracsight suspected abnormality 1") for t in sr_texts)  # the box
    # the presentation state's and the capture's words
    shown = [str(t.UnformattedTextValue) for t in pr.GraphicAnnotationSequence[0].TextObjectSequence]
    assert f"fracsight: {prediction.decision}" in shown
    assert any(t.startswith(f"abnormality probability {prediction.fracture_probability:.2f}") for t in shown)
    assert f"abnormality probability {prediction.fracture_probability:.2f}" in sc.ImageComments
    assert sc.DerivationDescription.startswith("fracsight overlay of suspected abnormalities")
    for ds, kind in ((sr, "report"), (pr, "overlay"), (sc, "capture")):
        assert ds.SeriesDescription == f"fracsight abnormality aid {kind} - not a diagnosis"
        assert ds.ManufacturerModelName == PRODUCT_NAME
    # and nowhere a fracture: no code meaning, text, description or comment
    study = predictor.predict_study([prediction], "study")
    assert study.decision == "abnormality suspected"
    (study_sr,) = study_result_datasets([source], study, [prediction], predictor)
    assert FRACTURE_CODE not in _codes(study_sr) and ABNORMAL_CODE in _codes(study_sr)
    for ds in (sr, pr, sc, study_sr):
        said = [t for t in _texts(ds) if "fractur" in t.lower()]
        assert not said, f"{ds.Modality} says {said}"


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) not installed")
def test_dciodvfy_accepts_an_abnormality_bundles_results(
    case: tuple[Dataset, Prediction], predictor: Predictor, tmp_path: Path
) -> None:
    source, prediction = case
    objects = result_datasets(source, prediction, predictor)
    objects += study_result_datasets(
        [source], predictor.predict_study([prediction], "s"), [prediction], predictor
    )
    for k, ds in enumerate(objects):
        path = tmp_path / f"{k}.dcm"
        assert _dciodvfy(ds, path) == [], ds.Modality
        if ds.Modality == "SR" and shutil.which("dsrdump"):  # dcmtk checks the SR content tree
            done = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_the_web_app_calls_it_an_abnormality(
    monkeypatch: pytest.MonkeyPatch, abnormality_bundle: Path, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """The page of an abnormality bundle: sidebar, card, bar, study; no fracture probability."""
    pytest.importorskip("streamlit", reason="the web app needs the app extra (pip install 'fracsight[app]')")
    from streamlit.testing.v1 import AppTest

    from fracsight.app import SCRIPT

    examples = tmp_path / "examples"
    examples.mkdir()
    for jpeg in sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:2]:
        (examples / jpeg.name).symlink_to(jpeg)
    monkeypatch.setattr(
        sys, "argv", [str(SCRIPT), "--model", str(abnormality_bundle), "--examples", str(examples)]
    )
    at = AppTest.from_file(str(SCRIPT), default_timeout=120)
    at.run()
    for i in range(2):
        at.button(key=f"example-{i}").click().run()
    at.checkbox[0].check().run()
    assert not at.exception, [e.value for e in at.exception]
    sidebar = " ".join(c.value for c in at.sidebar.caption).replace("\\", "")  # markdown escapes
    assert "Reports: abnormality probability and suspected areas" in sidebar
    assert 'above which "abnormality suspected" is reported' in at.sidebar.selectbox[0].help
    text = "\n".join(m.value for m in at.markdown)
    assert "Abnormality probability " in text and "Mean abnormality probability of the views" in text
    assert 'aria-label="abnormality probability ' in text
    decisions = list(at.dataframe[0].value["decision"])
    assert all(d in ABNORMALITY_WORDS or d.startswith("not reliable") for d in decisions), decisions
    captions = " ".join(c.value for c in at.caption)
    page = f"{text}\n{sidebar}\n{captions}".lower()
    assert "fracture probability" not in page and "fracture suspected" not in page


@pytest.mark.fracatlas
def test_the_predict_table_heads_its_column_as_an_abnormality(
    abnormality_bundle: Path, fracatlas_dir: Path
) -> None:
    """The table said "fracture probability" above decisions that said "abnormality suspected"."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    result = CliRunner().invoke(app, ["predict", "--model", str(abnormality_bundle), str(image)])
    assert result.exit_code == 0, result.output
    assert "abnormality probability" in result.stdout and "fractur" not in result.stdout.lower()


def test_the_card_of_an_abnormality_model_says_what_it_misses_in_its_words(abnormality_bundle: Path) -> None:
    """The card of a MURA-trained model said "Small, subtle or non-displaced fractures are the ones
    most often missed": its head finds abnormalities."""
    from fracsight.bundle import load_bundle_spec
    from fracsight.training.card import render_card

    card = render_card(load_bundle_spec(abnormality_bundle))
    assert "Subtle abnormalities (small or non-displaced fractures" in card
    assert "Small, subtle or non-displaced fractures are the ones" not in card
    assert "Small, subtle or non-displaced fractures are the ones" in render_card(Predictor().spec)
