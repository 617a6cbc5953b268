"""Results as DICOM objects (fracsight.dicom.results): SR, GSPS and secondary capture, read back
with pydicom and validated with dicom3tools' dciodvfy; the `fracsight dicom results` command."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from typer.testing import CliRunner

import dicom_results_support as support
from fracsight.cli import app as cli_app
from fracsight.dicom.result_pool import make_study_results
from fracsight.dicom.results import result_datasets, study_result_datasets, write_new
from fracsight.dicom.sr import region_code
from fracsight.errors import DicomSourceError, MultiFrameError
from fracsight.inference import NOTICE, Predictor
from head_kinds import HEAD_KINDS

runner = CliRunner()

PROBABILITY = ("122157", "DCM")
FRACTURE = ("72704001", "SCT")
SUSPECTED, NOT_DETECTED = ("415684004", "SCT"), ("260415000", "SCT")
# The one dciodvfy warning accepted: fracsight's private coding scheme (PS3.3 8.2: a private
# scheme's designator starts with "99"), declared in the Coding Scheme Identification Sequence of
# the SR. dciodvfy only knows the registered schemes. Only class heads (whose class names are the
# bundle's own) and regions without a SNOMED CT code use it.
ACCEPTED_WARNINGS = (
    "Warning - Unrecognized defined term <99FRACSIGHT> for value 1 of attribute <Coding Scheme Designator>",
)


# ---- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory, fracatlas_dir: Path, predictor: Predictor):
    """A CR source of a fractured FracAtlas image on which the default model draws a box."""
    folder = tmp_path_factory.mktemp("dicom-results")
    for jpeg in sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:8]:
        path = support.write(support.cr_from_jpeg(jpeg), folder / f"{jpeg.stem}.dcm")
        prediction = predictor.predict(path, keep_pixels=True)
        if prediction.boxes and prediction.fracture_suspected:
            return path, pydicom.dcmread(path), prediction
    pytest.fail("none of the first fractured FracAtlas images gave a box: the test premise is gone")


def _objects(case, predictor: Predictor, tmp_path: Path) -> dict[str, Dataset]:
    """The three objects written to disk and read back, by kind."""
    path, source, prediction = case
    out = {}
    for ds in result_datasets(source, prediction, predictor):
        written = write_new(ds, tmp_path, path.stem)
        out[written.name.split(".")[1]] = pydicom.dcmread(written)
    return out


# ---- SR content helpers ----------------------------------------------------------------------------
def _items(ds: Dataset):
    """Every content item of an SR, depth first."""
    stack = list(ds.get("ContentSequence", []))
    while stack:
        item = stack.pop(0)
        yield item
        stack[:0] = list(item.get("ContentSequence", []))


def _code(seq) -> tuple[str, str]:
    return str(seq[0].CodeValue), str(seq[0].CodingSchemeDesignator)


def _named(ds: Dataset, name: tuple[str, str], value_type: str | None = None) -> list[Dataset]:
    return [
        i
        for i in _items(ds)
        if "ConceptNameCodeSequence" in i
        and _code(i.ConceptNameCodeSequence) == name
        and (value_type is None or i.ValueType == value_type)
    ]


def _groups(sr: Dataset) -> list[Dataset]:
    return [
        i
        for i in _items(sr)
        if i.ValueType == "CONTAINER" and _code(i.ConceptNameCodeSequence)[0] == "125007"
    ]


def _numbers(item: Dataset, name: tuple[str, str]) -> list[float]:
    return [float(i.MeasuredValueSequence[0].NumericValue) for i in _named(item, name, "NUM")]


def _texts(sr: Dataset) -> list[str]:
    return [str(i.TextValue) for i in _items(sr) if i.ValueType == "TEXT"]


def _references(sr: Dataset) -> set[str]:
    evidence = sr.CurrentRequestedProcedureEvidenceSequence
    return {
        str(sop.ReferencedSOPInstanceUID)
        for study in evidence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }


def _outline(box) -> np.ndarray:
    return np.array(
        [[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1], [box.x0, box.y0]]
    )


# ---- what the objects say ----------------------------------------------------------------------------
def test_objects_are_new_series_in_the_source_study(case, predictor: Predictor, tmp_path: Path) -> None:
    _, source, _ = case
    objects = _objects(case, predictor, tmp_path)
    assert {k: ds.Modality for k, ds in objects.items()} == {"sr": "SR", "gsps": "PR", "capture": "OT"}
    for ds in objects.values():
        for keyword in (
            "StudyInstanceUID",
            "PatientID",
            "PatientName",
            "PatientBirthDate",
            "AccessionNumber",
            "StudyDescription",
        ):
            assert ds.get(keyword) == source.get(keyword), keyword
        assert ds.SOPInstanceUID != source.SOPInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.Manufacturer == "fracsight"
        assert "not a diagnosis" in ds.SeriesDescription
        assert list(ds.SoftwareVersions)[1] == f"{predictor.spec.name} {predictor.spec.version}"
    assert len({ds.SeriesInstanceUID for ds in objects.values()}) == 3
    assert len({ds.SOPInstanceUID for ds in objects.values()}) == 3
    # a second image of the study lands in the same series of each kind, as a new instance
    again = result_datasets(source, case[2], predictor)
    assert [d.SeriesInstanceUID for d in again] == [
        objects[k].SeriesInstanceUID for k in ("sr", "gsps", "capture")
    ]
    assert not {d.SOPInstanceUID for d in again} & {d.SOPInstanceUID for d in objects.values()}


def test_views_each_their_own_series_get_results_in_their_order_never_one_number_twice(
    case, predictor: Predictor
) -> None:
    """A hand study as CR modalities send it: each view its own series, each numbered image 1.
    Their results share one series per kind, where every one had Instance Number 1 (a viewer could
    not order them); now the source's series and instance numbers together."""
    _, source, prediction = case
    numbers, views = [], []
    for series_number, number in ((1, 1), (2, 1), (2, 7), (None, 3), ([3, 4], 1)):
        view = copy.deepcopy(source)
        view.SeriesNumber, view.InstanceNumber = series_number, number
        views.append(view)
        numbers.append([ds.InstanceNumber for ds in result_datasets(view, prediction, predictor)])
    assert [n[0] for n in numbers] == [100001, 200001, 200007, 3, 300001]  # `3\\4`: its first
    assert all(len(set(n)) == 1 for n in numbers)  # the report, state and capture of one image agree
    # the study verdict's SR, in the same series: after them all (it was len(views) + 1, here 6)
    verdict = predictor.predict_study([prediction] * len(views), study="study")
    (study_sr,) = study_result_datasets(views, verdict, [prediction] * len(views), predictor)
    assert study_sr.InstanceNumber == 300002


def test_an_instance_number_out_of_an_is_range_or_below_1_gives_results_a_valid_one(
    case, predictor: Predictor, tmp_path: Path
) -> None:
    """A source numbered -5 lost every result (highdicom refuses numbers below 1); one numbered
    3000000000 (past an IS's range, as a broken modality may write) gave it to every result, each
    then invalid. 1 instead, as for a number that does not parse."""
    _, source, prediction = case
    for number in (-5, 3_000_000_000):
        view = copy.deepcopy(source)
        view.SeriesNumber, view.InstanceNumber = None, number
        results = result_datasets(view, prediction, predictor)
        assert [ds.InstanceNumber for ds in results] == [1] * len(results)
        _assert_valid(results[0], tmp_path / f"{number}.dcm")


def test_sr_states_the_prediction(case, predictor: Predictor, tmp_path: Path) -> None:
    _, source, prediction = case
    sr = _objects(case, predictor, tmp_path)["sr"]
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    image_group, *box_groups = _groups(sr)
    (p,) = _numbers(image_group, PROBABILITY)
    assert p == pytest.approx(prediction.fracture_probability, abs=1e-6)
    (decision,) = [i for i in _named(image_group, FRACTURE, "CODE")]
    assert _code(decision.ConceptCodeSequence) == (
        SUSPECTED if prediction.fracture_suspected else NOT_DETECTED
    )
    (site,) = _named(image_group, ("363698007", "SCT"), "CODE")  # Finding Site
    assert site.ConceptCodeSequence[0].CodeMeaning.lower() == prediction.region
    # the algorithm, its version and the model's checksum
    texts = _texts(sr)
    assert predictor.spec.name in texts and str(predictor.spec.version) in texts
    assert f"model.onnx sha256 {predictor.spec.onnx_sha256}" in texts
    assert any(t.startswith(f"operating point {prediction.operating_point}") for t in texts)
    assert prediction.decision in texts and NOTICE in texts
    # each box: a closed polyline SCOORD on the source image, with its score
    assert len(box_groups) == len(prediction.boxes) >= 1
    for group, box in zip(box_groups, prediction.boxes, strict=True):
        (scoord,) = [i for i in _items(group) if i.ValueType == "SCOORD"]
        assert scoord.GraphicType == "POLYLINE"
        points = np.array(scoord.GraphicData, dtype=np.float64).reshape(-1, 2)
        np.testing.assert_allclose(points, _outline(box), atol=0.01)
        (ref,) = scoord.ContentSequence
        assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert _numbers(group, PROBABILITY) == [pytest.approx(box.score, abs=1e-6)]
    # the source instance, as evidence and as the image group's source
    assert _references(sr) == {source.SOPInstanceUID}
    (image_ref,) = [i for i in _items(image_group) if i.ValueType == "IMAGE"]
    assert image_ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert "CodingSchemeIdentificationSequence" not in sr  # the default model needs no private codes


def test_presentation_state_draws_over_the_source(case, predictor: Predictor, tmp_path: Path) -> None:
    _, source, prediction = case
    pr = _objects(case, predictor, tmp_path)["gsps"]
    assert pr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.11.1"
    (series,) = pr.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert series.ReferencedImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert pr.PresentationLUTShape == "INVERSE"  # the source is MONOCHROME1
    (annotation,) = pr.GraphicAnnotationSequence
    outlines = [
        np.array(g.GraphicData, dtype=np.float64).reshape(-1, 2) for g in annotation.GraphicObjectSequence
    ]
    assert all(g.GraphicAnnotationUnits == "PIXEL" for g in annotation.GraphicObjectSequence)
    assert len(outlines) == len(prediction.boxes)
    for outline, box in zip(outlines, prediction.boxes, strict=True):
        np.testing.assert_allclose(outline, _outline(box), atol=0.01)
    texts = [str(t.UnformattedTextValue) for t in annotation.TextObjectSequence]
    assert NOTICE in texts
    assert f"fracsight: {prediction.decision}" in texts
    assert any(f"fracture probability {prediction.fracture_probability:.2f}" in t for t in texts)


def test_an_unreliable_inputs_boxes_are_never_called_suspected(
    case, predictor: Predictor, tmp_path: Path
) -> None:
    """A fracture probability above the threshold on an input flagged not reliable: the report's box
    groups and the presentation state's text say so, where they once named suspected fractures."""
    path, source, prediction = case
    unreliable = dataclasses.replace(prediction, reliable=False, fracture_suspected=True)
    assert unreliable.boxes
    objects = _objects((path, source, unreliable), predictor, tmp_path)
    names = [
        str(i.TextValue)
        for i in _items(objects["sr"])
        if i.ValueType == "TEXT" and "fracsight area" in i.TextValue
    ]
    assert names and all(n.startswith("fracsight area weighed most, not reliable") for n in names)
    assert not any("suspected fracture" in t for t in _texts(objects["sr"]))
    texts = [
        str(t.UnformattedTextValue) for t in objects["gsps"].GraphicAnnotationSequence[0].TextObjectSequence
    ]
    assert any("boxes: the areas weighed most, not reliable, for reference only" in t for t in texts)
    assert f"fracsight: {unreliable.decision}" in texts and unreliable.decision.startswith("not reliable")
    # nor the layer the boxes are drawn in (it said "suspected fractures" whatever the decision)
    for shown in (unreliable, dataclasses.replace(prediction, fracture_suspected=False)):
        (layer,) = result_datasets(source, shown, predictor, kinds=("gsps",))[0].GraphicLayerSequence
        assert "suspected" not in layer.GraphicLayerDescription, layer.GraphicLayerDescription
    (layer,) = result_datasets(source, prediction, predictor, kinds=("gsps",))[0].GraphicLayerSequence
    assert layer.GraphicLayerDescription.startswith("fracsight suspected fractures")


def test_capture_burns_in_the_overlay_and_notice(case, predictor: Predictor, tmp_path: Path) -> None:
    _, source, prediction = case
    sc = _objects(case, predictor, tmp_path)["capture"]
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert sc.BurnedInAnnotation == "YES" and sc.LossyImageCompression == "01"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert NOTICE in sc.ImageComments
    rgb = sc.pixel_array  # decoded to RGB
    rows, cols = source.Rows, source.Columns
    assert rgb.shape[1] == cols and rgb.shape[0] > rows and rgb.shape[2] == 3
    band = rgb[rows:].astype(int)
    assert (band > 128).any(), "the text band below the image is empty"
    # the box outline is drawn in colour where the radiograph is grey
    box = prediction.boxes[0]
    edge = rgb[int(box.y0) + 1, int(box.x0) : int(box.x1)].astype(int)
    assert np.median(edge[:, 2] - edge[:, 0]) > 100  # cyan: blue well above red


def test_probability_equals_fracsight_predict(case, tmp_path: Path) -> None:
    """The SR from `fracsight dicom results` says what `fracsight predict` says for the same file."""
    path = case[0]
    predicted = runner.invoke(cli_app, ["predict", str(path), "--json"])
    assert predicted.exit_code == 0, predicted.output
    expected = json.loads(predicted.stdout)["images"][0]
    made = runner.invoke(cli_app, ["dicom", "results", str(path), "--out", str(tmp_path), "--kinds", "sr"])
    assert made.exit_code == 0, made.output
    sr = pydicom.dcmread(tmp_path / f"{path.stem}.sr.dcm")
    (p,) = _numbers(_groups(sr)[0], PROBABILITY)
    assert p == pytest.approx(expected["fracture_probability"], abs=1e-6)
    assert expected["decision"] in _texts(sr)


def test_study_report_references_every_image(case, predictor: Predictor, fracatlas_dir: Path) -> None:
    _, first, first_prediction = case
    jpeg = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[0]
    second = support.cr_from_jpeg(jpeg, study_uid=first.StudyInstanceUID, instance_number=2)
    second_prediction = predictor.predict(_bytes(second), keep_pixels=True)
    predictions = [first_prediction, second_prediction]
    study = predictor.predict_study(predictions, "study")
    (sr,) = study_result_datasets([first, second], study, predictions, predictor)
    assert sr.StudyInstanceUID == first.StudyInstanceUID and sr.PatientID == first.PatientID
    assert _references(sr) == {first.SOPInstanceUID, second.SOPInstanceUID}
    (group,) = _groups(sr)
    assert len([i for i in _items(group) if i.ValueType == "IMAGE"]) == 2
    assert _numbers(group, PROBABILITY) == [pytest.approx(study.fracture_probability, abs=1e-6)]
    assert NOTICE in _texts(sr)
    assert any(study.decision in t for t in _texts(sr))
    (site,) = _named(group, ("363698007", "SCT"), "CODE")  # the study's region: it had no finding site
    assert study.region and site.ConceptCodeSequence[0].CodeValue == region_code(study.region).value
    hiding = dataclasses.replace(
        study, fracture_suspected=False, threshold=1.0, view_probabilities=(1.0, 0.0)
    )
    (said,) = study_result_datasets([first, second], hiding, predictions, predictor)
    assert (
        "1 of 2 images above the threshold on their own, while the mean of the images is below it"
        in " ".join(_texts(said))
    )
    assert not any("on their own" in t for t in _texts(sr))  # only where the mean hides a view
    # the study's warnings, counted: the SR carried none of them (a view unread, views of two
    # regions, a view not reliable on its own), where predict --study says each
    cautious = dataclasses.replace(
        study, unread=("x.dcm",), view_regions=("hand", "leg"), unreliable=(study.images[0],)
    )
    (warned,) = study_result_datasets([first, second], cautious, predictions, predictor)
    said = " ".join(_texts(warned))
    assert "1 of 3 views could not be read: this result has not seen them" in said
    assert "1 of 2 views not reliable on their own: this result still includes them" in said
    regions = dataclasses.replace(study, view_regions=("hand", "leg"))
    (mixed,) = study_result_datasets([first, second], regions, predictions, predictor)
    assert "the views read as different body regions (hand: 1, leg: 1)" in " ".join(_texts(mixed))
    other = support.cr_from_jpeg(jpeg)  # another study
    with pytest.raises(DicomSourceError, match="one study"):
        study_result_datasets([first, other], study, [first_prediction, second_prediction], predictor)


def test_no_study_verdict_over_two_patients_under_one_study_uid(
    case, predictor: Predictor, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """A study UID reused for another patient (a PACS merge gone wrong) gave one verdict over both
    patients' images, filed with the first one's name and ID; each image's own results are kept."""
    path, first, first_prediction = case
    jpeg = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[0]
    second = support.cr_from_jpeg(jpeg, study_uid=first.StudyInstanceUID, instance_number=2)
    second.PatientID, second.PatientName = "OTHER-PATIENT-ID", "Other^Patient"
    second_prediction = predictor.predict(_bytes(second), keep_pixels=True)
    predictions = [first_prediction, second_prediction]
    study = predictor.predict_study(predictions, "study")
    with pytest.raises(DicomSourceError, match="one patient") as refused:
        study_result_datasets([first, second], study, predictions, predictor)
    assert "OTHER-PATIENT-ID" not in str(refused.value) and str(first.PatientID) not in str(refused.value)

    other_file = tmp_path / "second.dcm"
    other_file.write_bytes(_bytes(second))
    images = [("first", path, first_prediction), ("second", other_file, second_prediction)]
    outcome = make_study_results(predictor, images, "study", tmp_path / "node", tmp_path)
    assert outcome.files == () and "one patient" in str(outcome.error)  # the node's log says why

    out = tmp_path / "out"
    made = runner.invoke(
        cli_app,
        ["dicom", "results", str(path), str(other_file), "--out", str(out), "--kinds", "sr", "--study"],
    )
    assert made.exit_code == 1, made.output
    assert "one patient" in made.output and "OTHER-PATIENT-ID" not in made.output
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{path.stem}.sr.dcm", "second.sr.dcm"])


def _bytes(ds: Dataset) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# ---- every head combination --------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", list(HEAD_KINDS))
def test_every_head_combination(kind: str, head_bundle, case, tmp_path: Path) -> None:
    path, source, _ = case
    bundle = Predictor(head_bundle(kind)[1])
    prediction = bundle.predict(path)  # without pixels: the capture decodes the source itself
    objects = {ds.Modality: ds for ds in result_datasets(source, prediction, bundle)}
    sr = objects["SR"]
    image_group, *box_groups = _groups(sr)
    heads = HEAD_KINDS[kind]
    probabilities = _numbers(image_group, PROBABILITY)
    if "fracture" in heads:
        assert probabilities == [pytest.approx(prediction.fracture_probability, abs=1e-6)]
    else:
        assert probabilities == [] and box_groups == [] and prediction.boxes == ()
    assert len(box_groups) == len(prediction.boxes)
    classes = _named(image_group, ("CLASS", "99FRACSIGHT"), "CODE")
    if "class" in heads:
        (cls,) = classes
        assert cls.ConceptCodeSequence[0].CodeMeaning == prediction.classification.predicted
        assert "CodingSchemeIdentificationSequence" in sr
    else:
        assert classes == []
    sites = _named(image_group, ("363698007", "SCT"), "CODE")
    assert len(sites) == (1 if "region" in heads else 0)
    assert NOTICE in _texts(sr) and prediction.decision in _texts(sr)
    texts = [
        str(t.UnformattedTextValue) for t in objects["PR"].GraphicAnnotationSequence[0].TextObjectSequence
    ]
    assert NOTICE in texts
    assert objects["OT"].Rows > source.Rows
    # a model without a fracture head is no "fracture aid": its series said so in a PACS worklist
    aid_for = "fracture" if "fracture" in heads else "classification"
    for name, ds in objects.items():
        _assert_valid(ds, tmp_path / f"{name}.dcm")
        assert ds.SeriesDescription.startswith(f"fracsight {aid_for} aid "), ds.SeriesDescription
    content = objects["PR"].ContentDescription
    assert content.startswith(f"fracsight {aid_for} aid"), content
    study = bundle.predict_study([prediction], "one")
    (study_sr,) = study_result_datasets([source], study, [prediction], bundle)
    _assert_valid(study_sr, tmp_path / "study.dcm")
    assert study_sr.SeriesDescription.startswith(f"fracsight {aid_for} aid ")


# ---- validation with dciodvfy --------------------------------------------------------------------------
def _dciodvfy(path: Path) -> list[str]:
    """dciodvfy's error and warning lines for one file."""
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return [line.strip() for line in lines if line.startswith(("Error", "Warning"))]


def _assert_valid(ds: Dataset, path: Path, accepted: tuple[str, ...] = (), *, sr_tree: bool = True) -> None:
    """dciodvfy finds no error and no warning but ``accepted``; an SR's content tree reads in
    dcmtk's dsrdump without a word (``sr_tree`` False: for a character set dcmtk cannot read)."""
    ds.save_as(path, enforce_file_format=True)
    problems = _dciodvfy(path)
    errors = [p for p in problems if p.startswith("Error")]
    assert not errors, f"{ds.Modality}: dciodvfy reports {errors}"
    unexpected = [p for p in problems if p not in (*ACCEPTED_WARNINGS, *accepted)]
    assert not unexpected, f"{ds.Modality}: dciodvfy warns {unexpected}"
    if sr_tree and ds.Modality == "SR" and shutil.which("dsrdump"):  # dcmtk checks the SR content tree
        done = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr


needs_dciodvfy = pytest.mark.skipif(
    shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) not installed"
)


def test_no_verdict_over_a_late_image_once_the_study_was_pruned(
    case, predictor: Predictor, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """An image after the study's files were pruned (--keep-files) got a verdict over itself alone,
    under the study's Tracking UID: "study of 1 images: no fracture detected" replaced "study of
    6 images: fracture suspected". Now no verdict is made; the earlier one stands."""
    path, first, first_prediction = case
    jpeg = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[0]
    late = support.cr_from_jpeg(jpeg, study_uid=first.StudyInstanceUID, instance_number=7)
    late_file = tmp_path / "late.dcm"
    late_file.write_bytes(_bytes(late))
    images = [("first", tmp_path / "pruned.dcm", first_prediction), ("late", late_file, None)]
    outcome = make_study_results(predictor, images, "study", tmp_path / "node", tmp_path)
    assert outcome.files == () and outcome.error is None and (outcome.images, outcome.pruned) == (1, 1)
    kept = make_study_results(predictor, [("first", path, first_prediction)], "s", tmp_path / "n2", tmp_path)
    assert kept.files and kept.pruned == 0


@needs_dciodvfy
def test_a_later_study_verdict_names_the_one_it_replaces(
    case, predictor: Predictor, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """An image after the study's verdict gives the study a second verdict SR: both said "fracsight
    study result" with Tracking UIDs of their own and no link, so a reader (or software) saw two
    verdicts and could not tell which is current. The later one now names the earlier in its
    Predecessor Documents Sequence, and both carry one Tracking UID."""
    _, first, first_prediction = case
    jpeg = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[0]
    second = support.cr_from_jpeg(jpeg, study_uid=first.StudyInstanceUID, instance_number=2)
    second_prediction = predictor.predict(_bytes(second), keep_pixels=True)
    one = predictor.predict_study([first_prediction], "study")
    (earlier,) = study_result_datasets([first], one, [first_prediction], predictor, uid_seed="a")
    both = predictor.predict_study([first_prediction, second_prediction], "study")
    predictions = [first_prediction, second_prediction]
    (later,) = study_result_datasets(
        [first, second], both, predictions, predictor, uid_seed="b", previous=[earlier]
    )
    (named,) = later.PredecessorDocumentsSequence
    referenced = named.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == earlier.SOPInstanceUID
    assert named.StudyInstanceUID == first.StudyInstanceUID
    trackings = [{str(i.UID) for i in _items(ds) if i.ValueType == "UIDREF"} for ds in (earlier, later)]
    assert trackings[0] and trackings[0] == trackings[1]
    _assert_valid(later, tmp_path / "later.dcm")
    # numbered after the verdict it replaces, though its images are numbered no higher (both were
    # one number where the images came in UID order, the highest among the first verdict's)
    (again,) = study_result_datasets(
        [first], one, [first_prediction], predictor, uid_seed="c", previous=[later]
    )
    assert int(again.InstanceNumber) > int(later.InstanceNumber) > int(earlier.InstanceNumber)
    # a predecessor as a PACS may give it back, its Instance Number made two values (``1\\2``),
    # numbers the next by its first, as an image's does (int() of the pair raised TypeError)
    mended = copy.deepcopy(later)
    mended.InstanceNumber = [int(later.InstanceNumber), 1]
    (after_mended,) = study_result_datasets(
        [first], one, [first_prediction], predictor, uid_seed="c", previous=[mended]
    )
    assert int(after_mended.InstanceNumber) == int(again.InstanceNumber)
    # an image numbered as high as an IS goes: its verdict is numbered so too, not one past it
    highest = copy.deepcopy(first)
    highest.InstanceNumber = 2**31 - 1
    (last,) = study_result_datasets([highest], one, [first_prediction], predictor, uid_seed="d")
    assert int(last.InstanceNumber) == 2**31 - 1
    _assert_valid(last, tmp_path / "last.dcm")
    # the same verdict made again (same UID), or an SR of another study, is no predecessor
    (again,) = study_result_datasets(
        [first], one, [first_prediction], predictor, uid_seed="a", previous=[earlier]
    )
    assert "PredecessorDocumentsSequence" not in again
    # nor is the verdict at another operating point (a node restarted at triage named the balanced
    # verdict as the one its own replaced)
    triage = Predictor(operating_point="triage")
    at_triage = triage.predict_study(predictions, "study")
    (other,) = study_result_datasets(
        [first, second], at_triage, predictions, triage, uid_seed="b", previous=[earlier]
    )
    assert "PredecessorDocumentsSequence" not in other
    # a verdict of another model, or from before verdicts shared a Tracking UID, still is one
    legacy = copy.deepcopy(earlier)
    for item in _items(legacy):
        if item.ValueType == "UIDREF":
            item.UID = pydicom.uid.generate_uid()
    (after_legacy,) = study_result_datasets(
        [first, second], both, predictions, predictor, uid_seed="b", previous=[legacy]
    )
    assert "PredecessorDocumentsSequence" in after_legacy


@needs_dciodvfy
def test_dciodvfy_accepts_every_object_kind(case, predictor: Predictor, tmp_path: Path) -> None:
    path, source, prediction = case
    assert _dciodvfy(path) == [], "the test's own source object should be valid"
    objects = result_datasets(source, prediction, predictor)
    study = predictor.predict_study([prediction], "study")
    objects += study_result_datasets([source], study, [prediction], predictor)
    assert [ds.Modality for ds in objects] == ["SR", "PR", "OT", "SR"]
    for k, ds in enumerate(objects):
        _assert_valid(ds, tmp_path / f"{k}.dcm")


@needs_dciodvfy
def test_a_study_attribute_of_several_values_is_its_first(case, predictor: Predictor, tmp_path: Path) -> None:
    """Study Description `HAND\\WRIST` went out as it was: a multiplicity error in every result
    (only the patient and study attributes of type 2 were mended)."""
    _, _, prediction = case
    several = pydicom.dcmread(case[0])
    several.StudyDescription = ["HAND", "WRIST"]
    objects = result_datasets(several, prediction, predictor)
    study = predictor.predict_study([prediction], "s")
    objects += study_result_datasets([several], study, [prediction], predictor)
    for k, ds in enumerate(objects):
        assert ds.StudyDescription == "HAND"
        _assert_valid(ds, tmp_path / f"{k}.dcm")


@needs_dciodvfy
def test_dciodvfy_with_a_sparse_source(case, predictor: Predictor, tmp_path: Path) -> None:
    """A source without the optional and type 2 attributes (no laterality, orientation, patient
    name or birth date, accession number, window), and without the Modality a radiograph is read
    without (with a warning), still gives valid objects of every kind."""
    _, source, prediction = case
    sparse = pydicom.dcmread(case[0])
    for keyword in (
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyID",
        "ReferringPhysicianName",
        "Laterality",
        "PatientOrientation",
        "WindowCenter",
        "WindowWidth",
        "BodyPartExamined",
        "SpecificCharacterSet",
        "Modality",
    ):
        delattr(sparse, keyword)
    sparse.PhotometricInterpretation = "MONOCHROME2"
    # Two warnings follow from the source and are right: it has no Study ID, so the results have
    # it empty (type 2), a gap dciodvfy notes for DICOMDIR building; and it does not say which
    # side, so the presentation state and the capture have an empty Laterality (type 2C: empty
    # when unknown, which it is; absent would be an error, a side would be a guess).
    unknowns = (
        "Warning - Missing attribute or value that would be needed to build DICOMDIR - Study ID",
        "Warning - is only permitted to be empty when actually unknown; should be absent (not empty) if "
        "an unpaired body part, and have a value if a paired body part - attribute <Laterality>",
    )
    objects = result_datasets(sparse, prediction, predictor)
    assert [ds.Modality for ds in objects] == ["SR", "PR", "OT"]
    for k, ds in enumerate(objects):
        _assert_valid(ds, tmp_path / f"{k}.dcm", unknowns)
        assert ds.PatientID == source.PatientID and ds.PatientName in (None, "")
        if ds.Modality == "PR":
            assert ds.PresentationLUTShape == "IDENTITY"


# ---- refusals ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Rows"])
def test_sources_results_cannot_be_placed_against_are_refused(
    case, predictor: Predictor, keyword: str
) -> None:
    prediction = case[2]
    broken = pydicom.dcmread(case[0])
    delattr(broken, keyword)
    with pytest.raises(DicomSourceError, match=keyword) as caught:
        result_datasets(broken, prediction, predictor)
    assert caught.value.code == "unusable_dicom_source"
    _assert_no_identifiers(str(caught.value))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own complaint about the test's bad value
        broken.StudyInstanceUID = "not a uid"
    with pytest.raises(DicomSourceError):
        result_datasets(broken, prediction, predictor)


def test_prediction_of_another_image_is_refused(case, predictor: Predictor) -> None:
    _, source, prediction = case
    small = pydicom.dcmread(case[0])
    small.Rows = small.Rows - 1
    with pytest.raises(DicomSourceError, match="same image"):
        result_datasets(small, prediction, predictor)
    with pytest.raises(ValueError, match="unknown result kinds"):
        result_datasets(source, prediction, predictor, kinds=["sr", "pdf"])


def test_multi_frame_sources_need_the_frame(case, predictor: Predictor, tmp_path: Path) -> None:
    _, source, _ = case
    frames = pydicom.dcmread(case[0])
    frames.SOPClassUID = frames.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"
    frames.Modality = "OT"
    frames.NumberOfFrames = 2
    frames.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")  # multi-frame module
    frames.FrameTime = 0
    frames.PixelData = source.PixelData * 2
    path = support.write(frames, tmp_path / "frames.dcm")
    radiograph = predictor.read(path, frame=1)
    (prediction,) = predictor.predict_radiographs([radiograph], ["frames.dcm"])
    with pytest.raises(MultiFrameError):
        result_datasets(frames, prediction, predictor)
    sr, pr, sc = result_datasets(frames, prediction, predictor, frame=1)
    for k, ds in enumerate((sr, pr, sc)):
        _assert_valid(ds, tmp_path / f"{k}.dcm")
    (image_ref,) = [i for i in _items(_groups(sr)[0]) if i.ValueType == "IMAGE"]
    assert int(image_ref.ReferencedSOPSequence[0].ReferencedFrameNumber) == 2
    assert pr.GraphicAnnotationSequence[0].ReferencedImageSequence[0].ReferencedFrameNumber == 2
    assert sc.SourceImageSequence[0].ReferencedFrameNumber == 2


def _multi_frame_capture(case, n: int) -> Dataset:
    """The case's header as a multi-frame grayscale word secondary capture of ``n`` frames (its
    pixel data the caller's to set)."""
    frames = pydicom.dcmread(case[0])
    frames.SOPClassUID = frames.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"
    frames.Modality = "OT"
    frames.NumberOfFrames = n
    frames.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    frames.FrameTime = 0
    return frames


def _one_frame_secondary_capture(case) -> Dataset:
    """The case's image as a multi-frame grayscale word secondary capture of one frame, stored as
    its negative with a rescale of slope -1 that turns it back."""
    _, source, _ = case
    frames = _multi_frame_capture(case, 1)
    top = 2 ** int(source.BitsStored) - 1
    frames.PixelData = (top - source.pixel_array).astype(source.pixel_array.dtype).tobytes()
    return frames


@pytest.mark.parametrize("groups", [False, True], ids=["top-level", "measures-only-groups"])
def test_a_one_frame_multi_frame_capture_gets_its_results_and_its_own_rescale(
    case, predictor: Predictor, tmp_path: Path, groups: bool
) -> None:
    """highdicom takes an image of a multi-frame SOP class for a multi-frame one whatever its frame
    count, and read its LUTs from functional groups it did not have: AttributeError, and the image
    lost every result ("the header may hold a value..."); with groups that hold only the pixel
    measures, the state carried no rescale, and a viewer showed the image as a negative."""
    frames = _one_frame_secondary_capture(case)
    frames.RescaleSlope, frames.RescaleIntercept = -1, 2 ** int(frames.BitsStored) - 1
    frames.RescaleType = "US"
    if groups:
        measures = Dataset()
        measures.PixelSpacing = [0.1, 0.1]
        measures.SliceThickness = 1
        shared = Dataset()
        shared.PixelMeasuresSequence = [measures]
        frames.SharedFunctionalGroupsSequence = [shared]
    path = support.write(frames, tmp_path / "frames.dcm")
    prediction = predictor.predict(path)
    assert abs(prediction.fracture_probability - case[2].fracture_probability) < 0.02
    sr, pr, sc = result_datasets(frames, prediction, predictor)
    for k, ds in enumerate((sr, pr, sc)):
        _assert_valid(ds, tmp_path / f"{k}.dcm")
    transformation = pr.ModalityLUTSequence[0] if "ModalityLUTSequence" in pr else pr
    assert float(transformation.RescaleSlope) == -1


def _two_frames_with_windows(case, shared_window: bool) -> Dataset:
    """The case's image twice, in a multi-frame SC with its windows in the functional groups: one
    sigmoid window shared, or one window per frame."""
    _, source, _ = case
    frames = _multi_frame_capture(case, 2)
    frames.PixelData = source.PixelData * 2
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction", "WindowCenterWidthExplanation"):
        if keyword in frames:  # the groups' windows are the only ones
            delattr(frames, keyword)

    def window(centre: int, width: int, function: str = "LINEAR") -> Dataset:
        item = Dataset()
        item.WindowCenter, item.WindowWidth, item.VOILUTFunction = centre, width, function
        item.WindowCenterWidthExplanation = "BONE"
        return item

    shared, per_frame = Dataset(), [Dataset(), Dataset()]
    if shared_window:
        shared.FrameVOILUTSequence = [window(1800, 3000, "SIGMOID")]
    else:
        per_frame[0].FrameVOILUTSequence = [window(1800, 3000)]
        per_frame[1].FrameVOILUTSequence = [window(1000, 1500)]
    frames.SharedFunctionalGroupsSequence = [shared]
    frames.PerFrameFunctionalGroupsSequence = per_frame
    return frames


@pytest.mark.parametrize("shared_window", [True, False], ids=["shared-sigmoid", "per-frame"])
def test_windows_in_the_functional_groups_are_the_states_own(
    case, predictor: Predictor, tmp_path: Path, shared_window: bool
) -> None:
    """Given one window of its own for every multi-frame image, the state lost the functional
    groups' sigmoid (a viewer showed other contrast than the model read) and their per-frame windows."""
    frames = _two_frames_with_windows(case, shared_window)
    radiograph = predictor.read(support.write(frames, tmp_path / "frames.dcm"), frame=0)
    (prediction,) = predictor.predict_radiographs([radiograph], ["frames.dcm"])
    (pr,) = result_datasets(frames, prediction, predictor, kinds=["gsps"], frame=0)
    _assert_valid(pr, tmp_path / "pr.dcm")
    windows = pr.SoftcopyVOILUTSequence
    if shared_window:
        assert [(w.VOILUTFunction, w.WindowCenterWidthExplanation) for w in windows] == [("SIGMOID", "BONE")]
    else:
        assert [
            (float(w.WindowCenter), w.ReferencedImageSequence[0].ReferencedFrameNumber) for w in windows
        ] == [
            (1800.0, 1),
            (1000.0, 2),
        ]


def test_a_window_in_the_functional_groups_the_state_cannot_carry_costs_the_image_nothing(
    case, predictor: Predictor, tmp_path: Path
) -> None:
    """Left to highdicom, a width of 0 in a frame's group ("Window width must be greater than
    zero") cost the image its SR, state and capture; the state takes the reader's window instead."""
    frames = _two_frames_with_windows(case, shared_window=False)
    frames.PerFrameFunctionalGroupsSequence[0].FrameVOILUTSequence[0].WindowWidth = 0
    radiograph = predictor.read(support.write(frames, tmp_path / "frames.dcm"), frame=1)
    (prediction,) = predictor.predict_radiographs([radiograph], ["frames.dcm"])
    sr, pr, sc = result_datasets(frames, prediction, predictor, frame=1)
    for k, ds in enumerate((sr, pr, sc)):
        _assert_valid(ds, tmp_path / f"{k}.dcm")
    (window,) = pr.SoftcopyVOILUTSequence
    assert (float(window.WindowCenter), float(window.WindowWidth)) == (1000.0, 1500.0)  # frame 2's own


def test_a_rescale_kept_in_the_functional_groups_is_read(case, predictor: Predictor, tmp_path: Path) -> None:
    """An enhanced object's rescale lives in its shared functional groups: the reader read only
    the top level's, and took the stored negative for the image (0.16 for 0.85, reliable)."""
    frames = _one_frame_secondary_capture(case)
    for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        if keyword in frames:
            delattr(frames, keyword)
    transformation = Dataset()
    transformation.RescaleSlope, transformation.RescaleIntercept = -1, 2 ** int(frames.BitsStored) - 1
    transformation.RescaleType = "US"
    shared = Dataset()
    shared.PixelValueTransformationSequence = [transformation]
    frames.SharedFunctionalGroupsSequence = [shared]
    prediction = predictor.predict(support.write(frames, tmp_path / "groups.dcm"))
    assert abs(prediction.fracture_probability - case[2].fracture_probability) < 0.02
    assert "RescaleSlope" not in frames  # the caller's dataset is left as it was


def test_pixels_taller_than_wide_are_read_at_their_true_proportions(
    case, predictor: Predictor, tmp_path: Path
) -> None:
    """A film digitised at 0.30 x 0.15 mm (every other row of the source): the network read the
    anatomy squashed 2:1, the orientation step took it for a turned image, and no box touched the
    fracture. Read at its true shape, the boxes are the source's, halved in y."""
    _, source, prediction = case
    squashed = pydicom.dcmread(case[0])
    pixels = source.pixel_array[::2]
    squashed.Rows, squashed.PixelData = pixels.shape[0], np.ascontiguousarray(pixels).tobytes()
    squashed.PixelSpacing = squashed.ImagerPixelSpacing = [0.30, 0.15]
    read = predictor.predict(support.write(squashed, tmp_path / "squashed.dcm"))
    assert not any("seemed turned" in w for w in read.warnings)
    assert abs(read.fracture_probability - prediction.fracture_probability) < 0.1
    top, found = prediction.boxes[0], read.boxes[0]
    x0, y0, x1, y1 = top.x0, top.y0 / 2, top.x1, top.y1 / 2
    inter = max(0.0, min(x1, found.x1) - max(x0, found.x0)) * max(0.0, min(y1, found.y1) - max(y0, found.y0))
    union = (x1 - x0) * (y1 - y0) + (found.x1 - found.x0) * (found.y1 - found.y0) - inter
    assert inter / union > 0.5, (top, found)
    # the shape given by Pixel Aspect Ratio alone (type 1C where there is no spacing): read squashed
    del squashed.PixelSpacing, squashed.ImagerPixelSpacing
    squashed.PixelAspectRatio = [2, 1]
    again = predictor.predict(support.write(squashed, tmp_path / "aspect.dcm"))
    assert again.fracture_probability == pytest.approx(read.fracture_probability, abs=1e-6)
    assert again.boxes[0].as_tuple() == pytest.approx(found.as_tuple(), abs=0.5)
    # the same pixels read square are another picture for the model: a study counted them as one
    # view given twice, and dropped one of two results; at the same aspect they are one view
    del squashed.PixelAspectRatio
    square = predictor.predict(support.write(squashed, tmp_path / "square.dcm"))
    assert predictor.predict_study([read, square], "views").repeats == ()
    assert len(predictor.predict_study([read, again], "views").repeats) == 1


def test_frames_of_a_single_frame_class_are_refused(case, predictor: Predictor, tmp_path: Path) -> None:
    """A CR or DX is defined with one frame; files with several exist, but a result referencing one
    of their frames is invalid DICOM (highdicom refused the GSPS with a TypeError that read as
    a bad header value, and the SR and capture failed dciodvfy)."""
    _, source, _ = case
    frames = pydicom.dcmread(case[0])
    frames.NumberOfFrames = 2
    frames.PixelData = source.PixelData * 2
    radiograph = predictor.read(support.write(frames, tmp_path / "cr-frames.dcm"), frame=1)
    (prediction,) = predictor.predict_radiographs([radiograph], ["cr-frames.dcm"])
    for kind in ("sr", "gsps", "capture"):
        with pytest.raises(
            MultiFrameError, match=r"SOP class \(Computed Radiography Image Storage\) is defined with one"
        ):
            result_datasets(frames, prediction, predictor, frame=1, kinds=[kind])


def test_grey_radiograph_stored_in_colour(case, predictor: Predictor, tmp_path: Path) -> None:
    """A secondary capture of a radiograph in RGB with equal channels (a scanned film): read as
    grey by fracsight; its presentation state is a colour one (a grayscale state cannot
    reference a colour image)."""
    colour = pydicom.dcmread(case[0])
    grey = 255 - (colour.pixel_array >> 4).astype(np.uint8)
    colour.PixelData = np.repeat(grey[..., None], 3, axis=2).tobytes()
    colour.SOPClassUID = colour.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    colour.Modality = "OT"
    colour.ConversionType = "DF"  # digitized film
    colour.update({"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB", "PlanarConfiguration": 0})
    colour.BitsAllocated, colour.BitsStored, colour.HighBit = 8, 8, 7
    for keyword in ("WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope", "RescaleType", "KVP"):
        delattr(colour, keyword)
    for keyword in ("ExposureTime", "XRayTubeCurrent", "ImagerPixelSpacing", "ViewPosition"):
        delattr(colour, keyword)
    path = support.write(colour, tmp_path / "film.dcm")
    prediction = predictor.predict(path)
    sr, pr, sc = result_datasets(colour, prediction, predictor)
    assert pr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.11.2"  # Color Softcopy Presentation State
    assert "ICCProfile" in pr
    assert pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == (
        colour.SOPInstanceUID
    )
    for k, ds in enumerate((sr, pr, sc)):
        _assert_valid(ds, tmp_path / f"{k}.dcm")


def test_a_colour_source_with_its_own_icc_profile_keeps_it(
    case, predictor: Predictor, tmp_path: Path
) -> None:
    """A colour source holding an ICC Profile got no results at all: highdicom 0.28, left to find the
    profile itself, never does ("could not build the gsps object")."""
    colour = pydicom.dcmread(case[0])
    grey = 255 - (colour.pixel_array >> 4).astype(np.uint8)
    colour.PixelData = np.repeat(grey[..., None], 3, axis=2).tobytes()
    colour.SOPClassUID = colour.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    colour.Modality, colour.ConversionType = "OT", "DF"
    colour.update({"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB", "PlanarConfiguration": 0})
    colour.BitsAllocated, colour.BitsStored, colour.HighBit = 8, 8, 7
    for keyword in ("WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope", "RescaleType"):
        delattr(colour, keyword)
    import pkgutil

    colour.ICCProfile = pkgutil.get_data("highdicom", "_icc_profiles/sRGB_v4_ICC_preference.icc")
    prediction = predictor.predict(support.write(colour, tmp_path / "film.dcm"))
    sr, pr, sc = result_datasets(colour, prediction, predictor)
    assert pr.ICCProfile == colour.ICCProfile
    for k, ds in enumerate((sr, pr, sc)):
        _assert_valid(ds, tmp_path / f"{k}.dcm")


def test_a_japanese_character_set_costs_the_image_nothing(case, predictor: Predictor, tmp_path: Path) -> None:
    """``\\ISO 2022 IR 87`` (its first value empty: the default repertoire, as Japanese systems write
    it) cost every image its results: highdicom knows no empty value."""
    source = pydicom.dcmread(case[0])
    source.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    made = result_datasets(source, case[2], predictor)
    assert [ds.Modality for ds in made] == ["SR", "PR", "OT"]
    for ds in made:
        # written as the source spells it: Orthanc decodes "\\ISO 2022 IR 87", not "ISO 2022 IR 6\\..."
        assert list(ds.SpecificCharacterSet) == ["", "ISO 2022 IR 87"]
        _assert_valid(ds, tmp_path / f"{ds.Modality}.dcm", sr_tree=False)  # this dcmtk lacks ISO 2022


@pytest.mark.parametrize(
    ("terms", "name", "written"),
    [
        (["", "ISO 2022 IR 149"], "Hong^Gildong=\u6d2a^\u5409\u6d1e=\ud64d^\uae38\ub3d9", "ISO_IR 192"),
        ("ISO_IR 6", "PLAIN^NAME", "ISO_IR 100"),
        ("ISO 2022 IR 100", "M\u00fcller^J\u00fcrgen", "ISO_IR 100"),  # an extension's name alone
    ],
    ids=["korean", "ISO_IR 6", "ISO 2022 IR 100 alone"],
)
def test_a_character_set_highdicom_does_not_write_costs_the_image_nothing(
    case, predictor: Predictor, terms: str | list[str], name: str, written: str
) -> None:
    """Korean (``\\ISO 2022 IR 149``) and ``ISO_IR 6``, which pydicom reads and highdicom refuses:
    the image lost all its results (results_error). Its text now goes in UTF-8 (or Latin-1)."""
    source = pydicom.dcmread(case[0])
    source.SpecificCharacterSet = terms
    source.PatientName = name
    made = result_datasets(source, case[2], predictor)
    assert [ds.Modality for ds in made] == ["SR", "PR", "OT"]
    for ds in made:
        assert ds.SpecificCharacterSet == written and str(ds.PatientName) == name


def test_shift_jis_labelled_iso_ir_13_keeps_its_kanji(case, predictor: Predictor, tmp_path: Path) -> None:
    """Japanese devices label Shift-JIS text ISO_IR 13. pydicom reads it as Shift-JIS but writes
    ISO_IR 13 as half-width kana only: the kanji of the name went out as ``??`` in every result
    (and a model named in kanji as ``????``), without a word. Now the results are in UTF-8."""
    from fracsight.dicom.results import _fits

    source = pydicom.dcmread(case[0])
    source.SpecificCharacterSet = "ISO_IR 13"
    name = "\uff94\uff8f\uff80\uff9e^\uff80\uff9b\uff73=\u5c71\u7530^\u592a\u90ce"
    data = name.encode("shift_jis")
    data += b" " * (len(data) % 2)
    source.PatientName = "Q" * len(data)  # its bytes replaced in the file: pydicom would not write them
    source.save_as(tmp_path / "source.dcm", enforce_file_format=True)
    written = (tmp_path / "source.dcm").read_bytes()
    (tmp_path / "source.dcm").write_bytes(written.replace(b"Q" * len(data), data))
    source = pydicom.dcmread(tmp_path / "source.dcm")
    assert str(source.PatientName) == name  # as pydicom reads it
    for ds in result_datasets(source, case[2], predictor):
        path = tmp_path / f"{ds.Modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        read = pydicom.dcmread(path)
        assert (read.SpecificCharacterSet, str(read.PatientName)) == ("ISO_IR 192", name), ds.Modality
    # the model's own words are judged as pydicom writes them too
    assert _fits(["\uff8a\uff9d\uff84\uff9e"], ["ISO_IR 13"]) and not _fits(["\u9aa8\u6298"], ["ISO_IR 13"])
    # half-width kana beside ASCII in one value: pydicom's ISO_IR 13 encoder refuses the whole
    # value (each letter alone passed: "\uff77\uff6e\uff73\uff8c\uff9e 2R" went out as "????? 2R")
    assert not _fits(["\uff77\uff6e\uff73\uff8c\uff9e 2R"], ["ISO_IR 13"]) and _fits(["2R"], ["ISO_IR 13"])
    assert _fits(["\uff77\uff6e 2R \u5c71"], ["", "ISO 2022 IR 13", "ISO 2022 IR 87"])  # split in parts


def test_a_replaced_character_set_is_chosen_for_the_text_in_sequences_too(
    case, predictor: Predictor, tmp_path: Path
) -> None:
    """Korean only in a copied sequence (a Procedure Code's meaning), the names plain: the set was
    chosen from the top level's text, Latin-1, and the meaning went out as ``? ????``."""
    source = pydicom.dcmread(case[0])
    source.SpecificCharacterSet = ["", "ISO 2022 IR 149"]
    source.PatientName = "Hong^Gildong"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = (
        "X1",
        "99LOCAL",
        "\uc190 \uc5d1\uc2a4\ub808\uc774",
    )
    source.ProcedureCodeSequence = [code]
    for ds in result_datasets(source, case[2], predictor):
        path = tmp_path / f"{ds.Modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        read = pydicom.dcmread(path)
        assert read.SpecificCharacterSet == "ISO_IR 192", ds.Modality
        assert read.ProcedureCodeSequence[0].CodeMeaning == code.CodeMeaning, ds.Modality


def test_a_bare_data_set_gets_results_as_predict_reads_it(case, tmp_path: Path) -> None:
    """A data set without preamble and file meta (old archive dumps), which predict reads, was
    refused by `dicom results` as "not a DICOM file"."""
    source = pydicom.dcmread(case[0])
    del source.file_meta
    source.preamble = None
    bare = tmp_path / "bare.dcm"
    pydicom.dcmwrite(bare, source, implicit_vr=True, little_endian=True)
    assert bare.read_bytes()[128:132] != b"DICM"
    result = CliRunner().invoke(cli_app, ["dicom", "results", str(bare), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "bare.capture.dcm",
        "bare.gsps.dcm",
        "bare.sr.dcm",
    ]


def test_a_chinese_character_set_costs_the_image_nothing(case, predictor: Predictor, tmp_path: Path) -> None:
    """``\\ISO 2022 IR 58`` (GB2312 as a code extension), a term highdicom lists but refuses beside
    another: every image lost its results. Its names go in UTF-8, without the escape pydicom leaves
    in the text it decodes (``Wang^XiaoDong=\\x1b$)A王^小东``)."""
    from pydicom.valuerep import PersonName

    source = pydicom.dcmread(case[0])
    source.SpecificCharacterSet = ["", "ISO 2022 IR 58"]
    name = b"Wang^XiaoDong=\x1b$)A" + "王^小东".encode("gb2312") + b"="
    source.PatientName = PersonName(name, encodings=["iso8859", "iso_ir_58"])
    source = pydicom.dcmread(support.write(source, tmp_path / "gb2312.dcm"))
    made = result_datasets(source, case[2], predictor)
    assert [ds.Modality for ds in made] == ["SR", "PR", "OT"]
    for ds in made:
        assert ds.SpecificCharacterSet == "ISO_IR 192" and str(ds.PatientName) == "Wang^XiaoDong=王^小东"
        _assert_valid(ds, tmp_path / f"{ds.Modality}.dcm", sr_tree=False)


def test_a_model_named_in_another_script_is_written_as_named(case, tmp_path: Path) -> None:
    """A bundle named 骨折検出 on a Latin-1 source (``ISO_IR 100``): Software Versions and the
    report's algorithm name went out as ``????``. The results are then UTF-8, the patient's
    Latin-1 name carried over as it reads."""
    import json
    import shutil

    from fracsight.inference import resolve_bundle

    bundle = Path(shutil.copytree(resolve_bundle(), tmp_path / "bundle"))
    record = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    record["name"] = "骨折検出"
    (bundle / "bundle.json").write_text(json.dumps(record), encoding="utf-8")
    named = Predictor(bundle)
    source = pydicom.dcmread(case[0])
    source.SpecificCharacterSet, source.PatientName = "ISO_IR 100", "Müller^Jürgen"
    nested = Dataset()
    nested.PersonName = "Jürgens^Anna"
    source.ContentSequence = [nested]
    source = pydicom.dcmread(support.write(source, tmp_path / "latin1.dcm"))  # names as bytes read
    before = source.ContentSequence[0].PersonName
    made = result_datasets(source, named.predict(case[0]), named)
    assert source.ContentSequence[0].PersonName is before  # the source itself is never changed
    for k, ds in enumerate(made):
        path = tmp_path / f"{k}.dcm"
        _assert_valid(ds, path, sr_tree=False)
        again = pydicom.dcmread(path)
        assert again.SpecificCharacterSet == "ISO_IR 192" and str(again.PatientName) == "Müller^Jürgen"
        assert "骨折検出 " + str(record["version"]) in list(again.SoftwareVersions)
    plain = result_datasets(source, case[2], Predictor())  # a Latin name: the source's set is kept
    assert all(ds.SpecificCharacterSet == "ISO_IR 100" for ds in plain)
    # a Japanese source (ISO 2022: ASCII and JIS X 0208) and a model named modèle: its è went out
    # as a Latin-1 byte that neither set holds
    record["name"] = "modèle"
    (bundle / "bundle.json").write_text(json.dumps(record), encoding="utf-8")
    accented = Predictor(bundle)
    japanese = pydicom.dcmread(case[0])
    japanese.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    japanese.PatientName = "Yamada^Tarou=山田^太郎"
    for ds in result_datasets(japanese, case[2], accented):
        assert ds.SpecificCharacterSet == "ISO_IR 192" and str(ds.PatientName) == "Yamada^Tarou=山田^太郎"
        assert "modèle " + str(record["version"]) in list(ds.SoftwareVersions)


@needs_dciodvfy
def test_a_long_model_name_and_a_backslash_in_a_region_name_are_written_as_one_value(
    case, tmp_path: Path
) -> None:
    """A bundle named after its data folder (73 characters: Software Versions holds 64) gave no
    result object at all, the error blaming the source's header, and the node started anyway; a
    region (or class) `hand\\wrist` made the SR's code meaning two values and the presentation
    state's text unbuildable."""
    import json
    import shutil

    from fracsight.inference import resolve_bundle

    bundle = Path(shutil.copytree(resolve_bundle(), tmp_path / "bundle"))
    record = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    record["name"] = "fracatlas_wrist_and_hand_subset_for_external_site_validation-small_cnn-64"
    region = next(h for h in record["heads"] if h["name"] == "region")
    region["classes"] = [f"{name}\\wrist" for name in region["classes"]]
    (bundle / "bundle.json").write_text(json.dumps(record), encoding="utf-8")
    named = Predictor(bundle)
    path, source, _ = case
    prediction = named.predict(path)
    assert prediction.region.endswith("\\wrist")
    made = result_datasets(source, prediction, named)
    assert [ds.Modality for ds in made] == ["SR", "PR", "OT"]
    for k, ds in enumerate(made):
        _assert_valid(ds, tmp_path / f"{k}.dcm")
        assert ds.SoftwareVersions[1] == record["name"][:64]


def test_several_windows_give_the_state_the_one_the_reader_used(
    case, predictor: Predictor, tmp_path: Path
) -> None:
    """Two windows (``2048\\1500``) were copied as they were, and dcmtk would not load the state
    ("windowCenter present but VM != 1"); one window's explanation was written letter by letter
    (``F\\U\\L\\L``, highdicom's ``list()`` of a str)."""
    source = pydicom.dcmread(case[0])
    source.WindowCenter, source.WindowWidth = ["2048", "1500"], ["4096", "2000"]
    source.WindowCenterWidthExplanation = ["FULL", "NARROW"]
    pr = result_datasets(source, case[2], predictor, kinds=("gsps",))[0]
    (voi,) = pr.SoftcopyVOILUTSequence
    assert (float(voi.WindowCenter), float(voi.WindowWidth), voi.WindowCenterWidthExplanation) == (
        2048.0,
        4096.0,
        "FULL",
    )
    path = write_new(pr, tmp_path, "windows")
    shown = subprocess.run(
        ["dcmp2pgm", "-p", str(path), str(case[0]), str(tmp_path / "shown.pgm")],
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0 and "VM != 1" not in shown.stderr, shown.stderr
    source.WindowCenter, source.WindowWidth, source.WindowCenterWidthExplanation = "2048", "4096", "FULL"
    (voi,) = result_datasets(source, case[2], predictor, kinds=("gsps",))[0].SoftcopyVOILUTSequence
    assert voi.WindowCenterWidthExplanation == "FULL"


@pytest.mark.parametrize(("center", "width"), [("nan", "1000"), ("2048", "inf")])
def test_a_window_the_reader_leaves_out_is_left_out_of_the_state_too(
    center: str, width: str, case, predictor: Predictor
) -> None:
    """A Window Center of NaN: the reader reads the image with min/max (and a warning), but the
    state carried the window and highdicom refused it: "could not build the gsps object", no
    results for the image. The state takes the whole stored range instead, as without a window."""
    _, source, prediction = case
    source = copy.deepcopy(source)
    source.WindowCenter, source.WindowWidth = center, width
    made = result_datasets(source, prediction, predictor)
    (pr,) = [ds for ds in made if ds.Modality == "PR"]
    (voi,) = pr.SoftcopyVOILUTSequence
    bits = int(source.BitsStored)
    assert (float(voi.WindowCenter), float(voi.WindowWidth)) == (2 ** (bits - 1), 2**bits)


@needs_dciodvfy
@pytest.mark.parametrize(
    "form", ["8-bit, a word per entry", "8-bit, two per word", "two LUTs", "first below 0"]
)
def test_voi_luts_the_presentation_state_carries_as_the_reader_applies_them(
    form: str, case, predictor: Predictor, tmp_path: Path
) -> None:
    """An 8-bit LUT given a word per entry went to the state as twice the entries (dcmtk drew the
    image nearly black); a second LUT was copied (dcmtk refused the state); a LUT starting below 0
    cost the image all its results (highdicom refuses it)."""
    curve = (np.sqrt(np.arange(4096) / 4095.0) * 255).round().astype(np.uint8)
    lut = Dataset()
    lut.add_new("LUTDescriptor", "US", [4096, 0, 8])
    packed = form == "8-bit, two per word"
    lut.add_new("LUTData", "OW", curve.tobytes() if packed else curve.astype("<u2").tobytes())
    source = pydicom.dcmread(case[0])
    source.VOILUTSequence = [lut, copy.deepcopy(lut)] if form == "two LUTs" else [lut]
    if form == "first below 0":
        source.PixelRepresentation = 1
        lut.LUTDescriptor = [4096, -2048, 8]
    made = result_datasets(source, case[2], predictor)
    assert [ds.Modality for ds in made] == ["SR", "PR", "OT"]
    pr = made[1]
    path = write_new(pr, tmp_path, "state")
    _assert_valid(pr, path)
    if form == "first below 0":
        # left out, as a Modality LUT below 0 is (the source's window is what the state carries)
        assert all("VOILUTSequence" not in item for item in pr.get("SoftcopyVOILUTSequence", []))
        return
    ((voi,),) = [item.VOILUTSequence for item in pr.SoftcopyVOILUTSequence]
    assert list(voi.LUTDescriptor) == [4096, 0, 8]
    assert np.array_equal(np.frombuffer(voi.LUTData, np.uint8)[:4096], curve)
    shown = subprocess.run(
        ["dcmp2pgm", "-p", str(path), str(case[0]), str(tmp_path / "shown.pgm")],
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr


def test_an_empty_voi_lut_sequence_is_none(case, predictor: Predictor) -> None:
    """A VOI LUT Sequence present but empty stopped `dicom results` with an IndexError traceback, and
    the files after it got nothing; the reader reads it as none (the window)."""
    source = pydicom.dcmread(case[0])
    source.VOILUTSequence = []
    made = result_datasets(source, case[2], predictor)
    assert [ds.Modality for ds in made] == ["SR", "PR", "OT"]
    assert all("VOILUTSequence" not in item for item in made[1].get("SoftcopyVOILUTSequence", []))


def test_a_negative_reports_boxes_are_not_coded_as_fractures(
    case, predictor: Predictor, tmp_path: Path
) -> None:
    """The box groups of a negative decision were coded Finding = Fracture (a viewer labelling regions
    by their finding drew fractures on a negative study), and its capture said "suspected"."""
    path, source, prediction = case
    negative = dataclasses.replace(prediction, fracture_suspected=False)
    objects = _objects((path, source, negative), predictor, tmp_path)
    findings = [_code(i.ConceptCodeSequence) for i in _named(objects["sr"], ("121071", "DCM"), "CODE")]
    assert findings.count(("111099", "DCM")) == len(negative.boxes) and FRACTURE in findings  # the image's
    assert "suspected" not in objects["capture"].DerivationDescription
    positive = _objects(case, predictor, tmp_path / "positive")
    findings = [_code(i.ConceptCodeSequence) for i in _named(positive["sr"], ("121071", "DCM"), "CODE")]
    assert findings.count(FRACTURE) == len(prediction.boxes) + 1 and ("111099", "DCM") not in findings


def test_the_state_keeps_the_sources_pixel_aspect_ratio(case, predictor: Predictor) -> None:
    """highdicom writes Presentation Pixel Aspect Ratio 1\\1 whatever the source: pixels twice as
    high as wide were shown squeezed."""
    from fracsight.dicom.gsps import pixel_aspect_ratio

    source = pydicom.dcmread(case[0])
    for keyword in ("PixelSpacing", "PixelAspectRatio"):
        if keyword in source:
            delattr(source, keyword)
    source.ImagerPixelSpacing = ["0.2", "0.1"]
    pr, sc = result_datasets(source, case[2], predictor, kinds=("gsps", "capture"))
    assert [int(v) for v in pr.DisplayedAreaSelectionSequence[0].PresentationPixelAspectRatio] == [2, 1]
    # the capture too (type 1C: it has no spacing of its own), which was shown squeezed
    assert [int(v) for v in sc.PixelAspectRatio] == [2, 1]
    square = pydicom.dcmread(case[0])
    assert "PixelAspectRatio" not in result_datasets(square, case[2], predictor, kinds=("capture",))[0]
    assert pixel_aspect_ratio(Dataset()) == [1, 1]
    odd = Dataset()
    odd.PixelAspectRatio, odd.PixelSpacing = ["3", "4"], ["0.1", "0.1"]
    assert pixel_aspect_ratio(odd) == [3, 4]
    odd.PixelAspectRatio = ["0", "1"]
    assert pixel_aspect_ratio(odd) == [1, 1]  # unusable: the spacing says square
    # what the model reads square is declared square: 0\1 (invalid) from a spacing of 0.0001\1, a
    # ratio beyond the IS range copied as is, 10000:1 from 1\0.0001, and an overflow for 1e308\1e-308
    for ratio, spacing in (
        (None, ["0.0001", "1"]),
        (["99999999999", "1"], None),
        (None, ["1", "0.0001"]),
        (None, ["1e308", "1e-308"]),
        (["1", "2", "3"], ["0.1", "0.1"]),  # three values are no ratio: the model reads it square too
    ):
        header = Dataset()
        if ratio:
            header.PixelAspectRatio = ratio
        if spacing:
            header.PixelSpacing = spacing
        assert pixel_aspect_ratio(header) == [1, 1], (ratio, spacing)
    # a ratio that is no whole numbers, or beyond 1:5, over a valid spacing: the spacing is read
    # (1.5\1 was cut to 1\1, and 99999999999\1 taken for square pixels: the film read squashed)
    for ratio in (["1.5", "1"], ["99999999999", "1"], ["1", "0"]):
        header = Dataset()
        header.PixelAspectRatio, header.PixelSpacing = ratio, ["0.286", "0.143"]
        assert pixel_aspect_ratio(header) == [2, 1], ratio


# ---- privacy --------------------------------------------------------------------------------------------
def _assert_no_identifiers(text: str) -> None:
    found = [s for s in support.IDENTIFIER_STRINGS if s.lower() in text.lower()]
    assert not found, f"identifiers {found} leaked: {text[:300]}"


def test_identifiers_never_reach_logs_or_warnings(
    case, predictor: Predictor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, source, prediction = case
    odd = pydicom.dcmread(case[0])
    # malformed values that pydicom complains about, quoting them ("Unable to convert
    # '1971-03-04' to 'DA' object"): the results are still made, the bad date left empty
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's complaint about the test's own assignments
        odd.PatientBirthDate = "1971-03-04"
        odd.StudyTime = "2pm, Ingrid"
        odd.PatientName = "Testperson^Ingrid^Maria^X^Y^Z"  # six components
    caplog.clear()  # pydicom logged the test's own assignments
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for ds in (
            *result_datasets(source, prediction, predictor),
            *result_datasets(odd, prediction, predictor),
        ):
            write_new(ds, tmp_path, "out")
        broken = pydicom.dcmread(case[0])
        del broken.StudyInstanceUID
        with pytest.raises(DicomSourceError) as refused:
            result_datasets(broken, prediction, predictor)
        made = runner.invoke(cli_app, ["dicom", "results", str(case[0]), "--out", str(tmp_path / "cli")])
    assert made.exit_code == 0, made.output
    _assert_no_identifiers(made.output)
    _assert_no_identifiers(str(refused.value))
    _assert_no_identifiers(caplog.text)
    _assert_no_identifiers(" ".join(str(w.message) for w in caught))
    assert "1971-03-04" not in caplog.text and "2pm" not in caplog.text
    for uid in (source.SOPInstanceUID, source.StudyInstanceUID, source.SeriesInstanceUID):
        assert uid not in caplog.text
    assert "PatientBirthDate in the source malformed: left empty" in caplog.text
    # ... while the objects themselves carry them, as they must
    assert any("Testperson" in str(pydicom.dcmread(p).PatientName) for p in tmp_path.glob("out.*.dcm"))


def _raw(ds: Dataset, keyword: str, value: str) -> None:
    """Put ``value`` in ``ds`` as the bytes a file would hold, past pydicom's checks."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(tag_for_keyword(keyword))
    data = value.encode() + b" " * (len(value.encode()) % 2)
    ds._dict[tag] = RawDataElement(tag, dictionary_VR(tag), len(data), data, 0, False, True)


# Values real archives hold that the result objects cannot carry as they are (found by a new-user
# audit): each used to cost the image all of its results.
MENDED = {
    "PatientSex U": ("PatientSex", "U", "PatientSex", None),
    "PatientSex lower case": ("PatientSex", "m", "PatientSex", "M"),
    "misspelt character set": ("SpecificCharacterSet", "ISO 8859-1", "SpecificCharacterSet", "ISO_IR 100"),
    "unknown character set": ("SpecificCharacterSet", "ISO_IR 999", "SpecificCharacterSet", "ISO_IR 100"),
    "InstanceNumber not a number": ("InstanceNumber", "abc", None, None),  # not copied: just no failure
    "InstanceNumber past an IS": ("InstanceNumber", "3000000000", None, None),
    "PatientWeight nan": ("PatientWeight", "nan", "PatientWeight", None),
    "RescaleIntercept nan": ("RescaleIntercept", "nan", "RescaleIntercept", None),
    "RescaleSlope 0": ("RescaleSlope", "0", "RescaleSlope", None),
    "RescaleSlope two values": ("RescaleSlope", "2\\2", "RescaleSlope", None),  # the reader's unscaled
    "two patient names": ("PatientName", "CANARY^ONE\\CANARY^TWO", "PatientName", "CANARY^ONE"),
    "one-word patient name": ("PatientName", "CANARYSINGLE", "PatientName", "CANARYSINGLE"),
    "one-word referring physician": (
        "ReferringPhysicianName",
        "CANARYDOC",
        "ReferringPhysicianName",
        "CANARYDOC",
    ),
}


@needs_dciodvfy
def test_a_patient_id_of_several_values_is_kept_as_it_is(
    case, predictor: Predictor, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """``FSX-48213977\\OLD-77`` (an archive that merged two IDs): the results carried the first
    value only, and Orthanc filed them under another patient, in a study of their own with the
    same Study Instance UID, which a viewer opening the source's never showed."""
    _, source, prediction = case
    source = copy.deepcopy(source)  # the module's case stays as it was for the tests after this one
    _raw(source, "PatientID", "FSX-48213977\\OLD-77")
    jpeg = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[0]
    second = support.cr_from_jpeg(jpeg, study_uid=source.StudyInstanceUID, instance_number=2)
    _raw(second, "PatientID", "FSX-48213977\\OLD-77")
    second_prediction = predictor.predict(_bytes(second), keep_pixels=True)
    study = predictor.predict_study([prediction, second_prediction], "study")
    made = [
        *result_datasets(source, prediction, predictor),
        *study_result_datasets([source, second], study, [prediction, second_prediction], predictor),
    ]
    for ds in made:
        assert list(ds.PatientID) == ["FSX-48213977", "OLD-77"], ds.Modality
        path = tmp_path / f"{ds.Modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert pydicom.dcmread(path).PatientID == source.PatientID
        # dciodvfy's errors are the source's own mistake (PatientID's multiplicity), copied with
        # the value: filed with the source's study weighs more; nothing else
        problems = [p for p in _dciodvfy(path) if "Element=<PatientID>" not in p]
        assert [p for p in problems if p not in ACCEPTED_WARNINGS] == [], ds.Modality


@needs_dciodvfy
def test_every_result_carries_the_sources_whole_patient_identity(
    case, predictor: Predictor, tmp_path: Path
) -> None:
    """Issuer of Patient ID and the rest of the Patient and Study modules were copied into the SR
    and the state but not the capture (highdicom's SC takes name, ID, birth date and sex): a PACS
    matching patients on ID and issuer could file the capture under another patient."""
    _, source, prediction = case
    source = copy.deepcopy(source)
    source.IssuerOfPatientID = "HOSP_A"
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID, other.TypeOfPatientID = "OTHER1", "HOSP_B", "TEXT"
    source.OtherPatientIDsSequence = [other]
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = "RIS_A"
    source.IssuerOfAccessionNumberSequence = [issuer]
    source.PatientAge, source.PatientWeight = "042Y", "71.5"
    copied = ("IssuerOfPatientID", "OtherPatientIDsSequence", "IssuerOfAccessionNumberSequence", "PatientAge")
    for ds in result_datasets(source, prediction, predictor):
        for keyword in copied:
            assert ds.get(keyword) == source.get(keyword), (ds.Modality, keyword)
        if ds.Modality == "OT":  # the capture: still a valid object
            path = tmp_path / "capture.dcm"
            ds.save_as(path, enforce_file_format=True)
            assert [p for p in _dciodvfy(path) if p.startswith("Error")] == []
    assert (tmp_path / "capture.dcm").is_file()


@needs_dciodvfy
@pytest.mark.parametrize("name", MENDED)
def test_odd_header_values_are_mended_not_fatal_and_never_quoted(
    name: str, case, predictor: Predictor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keyword, value, copied, expected = MENDED[name]
    _, _, prediction = case
    source = pydicom.dcmread(case[0])
    _raw(source, keyword, value)
    before = source[keyword].value
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = result_datasets(source, prediction, predictor)
    assert str(source[keyword].value) == str(before)  # the caller's data set is not changed (str: nan)
    for ds in made:
        if copied is not None:
            got = ds.get(copied)
            assert (str(got) if got not in (None, "") else None) == expected, (ds.Modality, got)
        path = tmp_path / f"{ds.Modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        kept = tuple(p for p in _dciodvfy(path) if p.endswith("Retired Person Name form"))  # the source's
        _assert_valid(ds, path, accepted=kept)
    said = caplog.text + " ".join(str(w.message) for w in caught)
    assert "CANARY" not in said
    assert len(value) < 4 or value not in said  # a letter or two would be found in any text


def _voi_lut(ds: Dataset, bits: int = 12) -> None:
    """A VOI LUT Sequence as CR readers write it beside their window: 4096 entries, US numbers."""
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, bits]
    lut.add_new("LUTData", "US", [min(v, 2**bits - 1) for v in range(4096)])
    lut.LUTExplanation = "CANARYLUT"
    ds.VOILUTSequence = [lut]


# Windows (and a VOI LUT) real archives hold that highdicom cannot copy into the presentation
# state; each used to cost the image all of its results (found by a new-user audit).
ODD_VOI = {
    "window width 0": {"WindowWidth": "0"},
    "window width negative": {"WindowWidth": "-5"},
    "centre without width": {"WindowWidth": None},
    "two centres, one width": {"WindowCenter": ["2048", "1000"]},
    "unknown VOI LUT function": {"VOILUTFunction": "LINEAR_ISH"},
    "VOI LUT beside the window": {"VOILUTSequence": 12},
    "12-bit VOI LUT alone": {"WindowCenter": None, "WindowWidth": None, "VOILUTSequence": 12},
}


@needs_dciodvfy
@pytest.mark.parametrize("name", ODD_VOI)
def test_odd_windows_and_voi_luts_cost_the_image_nothing(
    name: str, case, predictor: Predictor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, _, prediction = case
    source, before = pydicom.dcmread(case[0]), pydicom.dcmread(case[0])  # before: what the caller holds
    for ds in (source, before):
        for keyword, value in ODD_VOI[name].items():
            if keyword == "VOILUTSequence":
                _voi_lut(ds, value)
            elif value is None:
                del ds[keyword]
            else:
                setattr(ds, keyword, value)
    caplog.set_level(logging.DEBUG)
    made = result_datasets(source, prediction, predictor)
    assert [ds.Modality for ds in made] == ["SR", "PR", "OT"]
    assert source == before  # the caller's data set is not changed
    for ds in made:
        _assert_valid(ds, tmp_path / f"{ds.Modality}.dcm")
    (voi,) = made[1].SoftcopyVOILUTSequence if "VOILUTSequence" in source else [None]
    if voi is not None:  # the source's LUT, in the 16 bits a presentation state's must have
        (lut,) = voi.VOILUTSequence
        assert list(lut.LUTDescriptor) == [4096, 0, 16] and "WindowWidth" not in voi
        assert np.array_equal(np.frombuffer(lut.LUTData, "<u2"), np.arange(4096) * 16)
    else:
        assert "SoftcopyVOILUTSequence" not in made[1]  # the viewer's own window, as the reader's
    has_window = "WindowCenter" in source or "WindowWidth" in source
    assert ("presentation state can carry: left out" in caplog.text) == has_window
    if has_window:  # which image it is about: with several files that was not said
        assert f"{prediction.source}: Window" in caplog.text, caplog.text
        caplog.clear()  # and again when the study report reads the same header
        study_result_datasets([source], predictor.predict_study([prediction], "s"), [prediction], predictor)
        assert f"{prediction.source}: Window" in caplog.text, caplog.text
    assert "CANARY" not in caplog.text


def test_private_and_unconvertible_elements_cost_the_image_nothing(
    case, predictor: Predictor, caplog: pytest.LogCaptureFixture
) -> None:
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    _, _, prediction = case
    source = pydicom.dcmread(case[0])
    source.private_block(0x0009, "CANARY CREATOR", create=True).add_new(0x01, "DA", "notadate")
    odd = Tag(0x0019, 0x1010)  # a US value of three bytes: pydicom cannot convert it
    source.private_block(0x0019, "ODD", create=True)
    source._dict[odd] = RawDataElement(odd, "US", 3, b"\x01\x02\x03", 0, False, True)
    caplog.set_level(logging.WARNING)
    made = result_datasets(source, prediction, predictor)
    assert len(made) == 3
    assert str(source[0x0009, 0x1001].value) == "notadate"  # the caller's data set as it was
    assert "malformed: left empty" in caplog.text  # the private date, in the copy only
    assert "left out of the results" in caplog.text


# ---- the command ------------------------------------------------------------------------------------------
def test_cli_writes_objects_never_overwrites_and_refuses_cleanly(case, tmp_path: Path) -> None:
    path = case[0]
    out = tmp_path / "out"
    first = runner.invoke(cli_app, ["dicom", "results", str(path), "--out", str(out)])
    assert first.exit_code == 0, first.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{path.stem}.{k}.dcm" for k in ("sr", "gsps", "capture"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    second = runner.invoke(
        cli_app, ["dicom", "results", str(path), "--out", str(out), "--kinds", "sr", "--study"]
    )
    assert second.exit_code == 0, second.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before
    assert (out / f"{path.stem}.sr-1.dcm").is_file() and (out / "study-1.sr.dcm").is_file()
    assert NOTICE in second.output

    not_dicom = tmp_path / "photo.dcm"
    not_dicom.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    report = out / f"{path.stem}.sr.dcm"  # an SR is DICOM, but not a radiograph
    mixed = runner.invoke(
        cli_app, ["dicom", "results", str(not_dicom), str(report), str(path), "--out", str(out)]
    )
    assert mixed.exit_code == 1
    assert "Traceback" not in mixed.output
    assert mixed.exception is None or isinstance(mixed.exception, SystemExit)
    assert "error (unsupported_format): photo.dcm: not a DICOM file" in mixed.output
    assert re.search(r"error \(unsupported_modality\): .*written by fracsight itself", mixed.output)
    assert f"{path.name}: " in mixed.output  # the good file still got its results

    bad = runner.invoke(cli_app, ["dicom", "results", str(path), "--out", str(out), "--kinds", "sr,pdf"])
    assert bad.exit_code == 2 and "bad_kinds" in bad.output
    missing = runner.invoke(cli_app, ["dicom", "results", str(tmp_path / "nope.dcm"), "--out", str(out)])
    assert missing.exit_code == 2
    under_a_file = out / f"{path.stem}.sr.dcm" / "more"  # an --out that cannot be made: a bad argument
    unwritable = runner.invoke(cli_app, ["dicom", "results", str(path), "--out", str(under_a_file)])
    assert unwritable.exit_code == 2 and "error (unwritable)" in unwritable.output, unwritable.output
    fresh = tmp_path / "fresh"  # an unknown model is refused before --out is made
    unknown = runner.invoke(cli_app, ["dicom", "results", str(path), "--out", str(fresh), "-m", "nope"])
    assert unknown.exit_code == 2 and "error (unknown_model)" in unknown.output and not fresh.exists()
    args = ["dicom", "results", str(path), "--out", str(fresh), "--results", "sr"]  # as listen names it
    same_name = runner.invoke(cli_app, args)
    assert same_name.exit_code == 0 and [p.name for p in fresh.iterdir()] == [f"{path.stem}.sr.dcm"]


def test_cli_gives_one_instance_its_results_once_however_often_it_is_named(case, tmp_path: Path) -> None:
    """A copy, or the file named twice, counted twice in the study verdict and got two result sets."""
    import shutil

    path = case[0]
    copy = tmp_path / "copy-of-it.dcm"
    shutil.copyfile(path, copy)
    out = tmp_path / "out"
    args = [
        "dicom",
        "results",
        str(path),
        str(copy),
        str(path),
        "--out",
        str(out),
        "--kinds",
        "sr",
        "--study",
    ]
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{path.stem}.sr.dcm", "study-1.sr.dcm"])
    assert f"note: copy-of-it.dcm: the same instance as {path.name}" in result.output
    assert "study 1 (1 images)" in result.output
    study = pydicom.dcmread(out / "study-1.sr.dcm")
    (series,) = study.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert len(series.ReferencedSOPSequence) == 1


def test_prediction_without_pixels_gives_the_same_capture(case, predictor: Predictor) -> None:
    _, source, prediction = case
    (with_pixels,) = result_datasets(source, prediction, predictor, kinds=["capture"])
    bare = dataclasses.replace(prediction, pixels=None)
    (decoded,) = result_datasets(source, bare, predictor, kinds=["capture"])
    assert with_pixels.Rows == decoded.Rows and with_pixels.Columns == decoded.Columns
    a = with_pixels.pixel_array.astype(int)
    b = decoded.pixel_array.astype(int)
    assert np.abs(a - b).mean() < 1.0


@needs_dciodvfy
def test_dx_jpeg_lossless_source(tmp_path: Path, fracatlas_dir: Path, predictor: Predictor) -> None:
    """A DX "for presentation" object, JPEG lossless, as the node's tests send it (their
    converter, dcmtk's dcmcjpeg): valid results, and the SR says what predict says."""
    import dicom_support

    if not dicom_support.dcmtk_available():
        pytest.skip("dcmtk not installed")
    jpeg = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[1]
    path = dicom_support.make_radiograph_dicom(jpeg, tmp_path / "dx.dcm", modality="DX", jpeg_lossless=True)
    source = pydicom.dcmread(path)
    assert source.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    prediction = predictor.predict(path)  # no pixels kept: the capture decodes the JPEG itself
    objects = result_datasets(source, prediction, predictor)
    # the converter leaves Laterality out and Study ID in: only the Laterality note applies
    unknown_side = (
        "Warning - is only permitted to be empty when actually unknown; should be absent (not empty) if "
        "an unpaired body part, and have a value if a paired body part - attribute <Laterality>",
    )
    for k, ds in enumerate(objects):
        _assert_valid(ds, tmp_path / f"{k}.dcm", unknown_side)
    (p,) = _numbers(_groups(objects[0])[0], PROBABILITY)
    assert p == pytest.approx(prediction.fracture_probability, abs=1e-6)
    assert objects[1].PresentationLUTShape == "INVERSE"


def test_fracsights_own_capture_is_never_read_as_a_radiograph(
    case, predictor: Predictor, tmp_path: Path
) -> None:
    """The capture is Modality OT with grey pixels where no box was drawn: it would pass for a
    secondary capture of a film. Routers send whole studies back; the reader refuses it."""
    from fracsight.errors import UnsupportedModalityError

    for kind, result in _objects(case, predictor, tmp_path).items():
        written = tmp_path / f"{kind}.dcm"
        result.save_as(written, enforce_file_format=True)
        # its SR and presentation state too: counted as "not an image", not as its own result
        with pytest.raises(UnsupportedModalityError, match="written by fracsight itself") as refused:
            predictor.read(written)
        assert refused.value.own_output, kind
    # the source it was made from is read as ever
    assert predictor.read(case[0]).pixels.size > 0


def test_study_command_refuses_a_bad_uid_and_never_shows_the_uid(tmp_path: Path) -> None:
    bad = runner.invoke(
        cli_app, ["dicom", "study", "not a uid", "--dicomweb", "http://127.0.0.1:9/dicom-web"]
    )
    assert bad.exit_code == 2 and "not a DICOM UID" in bad.output and "Traceback" not in bad.output
    uid = "1.2.826.0.1.3680043.8.498.1234567890"
    down = runner.invoke(cli_app, ["dicom", "study", uid, "--dicomweb", "http://127.0.0.1:9/dicom-web"])
    assert down.exit_code == 1 and "dicomweb_unavailable" in down.output
    assert uid not in down.output  # a Study Instance UID identifies a patient's visit
    # why, in the words a C-STORE destination gets (it said "ConnectionError" for both)
    assert "connection refused: check host, port and firewall" in down.output, down.output
    unknown = runner.invoke(cli_app, ["dicom", "study", uid, "--dicomweb", "http://no-such-pacs.invalid/dw"])
    assert unknown.exit_code == 1 and "host name not resolved" in unknown.output, unknown.output


@pytest.mark.parametrize("title", ["THISISAVERYLONGAETITLE", "", "   ", "A\\B"])
def test_an_invalid_ae_title_is_a_bad_argument(title: str, tmp_path: Path) -> None:
    for args in (
        ["dicom", "send", str(tmp_path), "--to", "127.0.0.1:1:PACS", "--ae-title", title],
        ["dicom", "listen", "--spool", str(tmp_path / "s"), "--allow", title, "--to", "127.0.0.1:1:PACS"],
    ):
        result = runner.invoke(cli_app, args)
        expected = "error (empty_argument)" if title == "" else "is not an AE title"
        assert result.exit_code == 2 and expected in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "s").exists()  # nothing started


@pytest.mark.parametrize(
    "url",
    [
        "http://",
        "https:///dicom-web",
        "http://[::1",
        "http://127.0.0.1:99999/dicom-web",
    ],
)
def test_a_malformed_dicomweb_url_is_a_bad_argument(url: str, tmp_path: Path) -> None:
    """A URL without a host or with a bad port was taken for an http(s) URL: `study` ended in a
    ValueError traceback (or 'dicomweb_unavailable', exit 1) and `listen --stow` started a node
    whose every send failed. --model names no bundle: an accepted URL ends there, nothing started."""
    model = ["--model", str(tmp_path / "none")]
    uid = "1.2.826.0.1.3680043.8.498.1234567890"
    for args in (
        ["dicom", "study", uid, "--dicomweb", url, *model],
        ["dicom", "study", uid, "--dicomweb", "http://127.0.0.1:9/dicom-web", "--stow", url, *model],
        ["dicom", "listen", "--spool", str(tmp_path / "s"), "--allow", "PACS", "--stow", url, *model],
    ):
        result = runner.invoke(cli_app, args)
        assert result.exit_code == 2 and "is not an http(s) URL" in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "s").exists()  # nothing started


@pytest.mark.parametrize("tail", ["?token=SECRETTOK", ";token=SECRETTOK", "#SECRETTOK"])
def test_a_dicomweb_url_with_a_query_is_refused_without_showing_it(tail: str, tmp_path: Path) -> None:
    """`--dicomweb http://host/dicom-web?token=X`: dicomweb-client asked for `...?token=X/studies/...`,
    which no service takes, and every message printed the token."""
    url = f"http://127.0.0.1:9/dicom-web{tail}"
    uid = "1.2.826.0.1.3680043.8.498.1234567890"
    for args in (
        ["dicom", "study", uid, "--dicomweb", url],
        ["dicom", "listen", "--spool", str(tmp_path / "s"), "--allow", "PACS", "--stow", url],
    ):
        result = runner.invoke(cli_app, args)
        assert result.exit_code == 2 and "is not supported: give the service's DICOMweb root" in result.output
        assert "SECRETTOK" not in result.output and "http://127.0.0.1:9/dicom-web" in result.output
    assert not (tmp_path / "s").exists()


def test_a_password_with_a_slash_or_a_studies_url_is_refused_without_showing_it(tmp_path: Path) -> None:
    """`http://fs:2024/Winter@host/dicom-web`: urlsplit ends the host at the "/", so the password was
    printed whole as the URL's path (in the error and the node's start line). And a URL ending in
    /studies (the STOW-RS endpoint, not the root) had every object answered 409 with no word why."""
    uid = "1.2.826.0.1.3680043.8.498.1234567890"
    for url, said in (
        ("http://fs:2024/Winter@127.0.0.1:9/dicom-web", "must be percent-encoded"),
        ("http://fs:a?b#c@127.0.0.1:9/dicom-web", "must be percent-encoded"),
        ("http://127.0.0.1:9/dicom-web/studies/", "ends in /studies: give the service's DICOMweb root"),
    ):
        for args in (
            ["dicom", "study", uid, "--dicomweb", url],
            ["dicom", "study", uid, "--dicomweb", "http://127.0.0.1:9/dicom-web", "--stow", url],
            ["dicom", "listen", "--spool", str(tmp_path / "s"), "--allow", "PACS", "--stow", url],
        ):
            result = runner.invoke(cli_app, args)
            assert result.exit_code == 2 and said in result.output, result.output
            assert "Winter" not in result.output and "a?b" not in result.output
    assert not (tmp_path / "s").exists()
    from fracsight.dicom.login import redacted_url

    assert redacted_url("http://fs:2024/Winter@127.0.0.1:9/dicom-web") == "http://***@127.0.0.1:9/dicom-web"
    from fracsight.dicom.cli import _check_url

    assert _check_url(" HTTP://127.0.0.1:9/dicom-web/ ", "--dicomweb") == "http://127.0.0.1:9/dicom-web"
    # an upper-case scheme is a valid URL: taken (the missing model ends the command, nothing started);
    # so is one with spaces around it, pasted from a file (" http://" came back as "httpp://", and
    # a trailing space went into the path)
    upper = runner.invoke(cli_app, ["dicom", "study", uid, "--dicomweb", " HTTP://127.0.0.1:9/dicom-web ",
                                    "--model", str(tmp_path / "none")])  # fmt: skip
    assert upper.exit_code == 2 and "not an http(s) URL" not in upper.output, upper.output


def test_dicomweb_requests_name_the_host_and_port_they_go_to() -> None:
    """dicomweb-client's own Host header dropped the port and cut an IPv6 address at its first
    colon (``Host: [``), which nginx and Apache answer with 400."""
    import http.server
    import threading

    from fracsight.dicom.dicomweb import web_client

    hosts: list[str | None] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hosts.append(self.headers.get("Host"))
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert web_client(f"http://127.0.0.1:{port}/dicom-web", 10).search_for_studies() == []
    finally:
        server.shutdown()
        server.server_close()
    assert hosts == [f"127.0.0.1:{port}"]
    assert web_client("http://[::1]:8042/dicom-web", 10).host == "[::1]:8042"


def test_a_service_closing_the_connection_is_said_so() -> None:
    """Orthanc stopped mid-study: the message was the bare "ConnectionError"."""
    import socket
    import threading

    import requests

    from fracsight.dicom.dicomweb import web_client
    from fracsight.dicom.sender import request_error

    listener = socket.create_server(("127.0.0.1", 0))

    def close_each() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                conn.recv(65536)
                conn.close()  # no answer at all

    threading.Thread(target=close_each, daemon=True).start()
    try:
        with pytest.raises(requests.ConnectionError) as info:
            web_client(f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web", 10).search_for_studies()
    finally:
        listener.close()
    said = request_error(info.value, None)
    assert said.startswith("the service closed the connection (stopped or restarting?)"), said


@needs_dciodvfy
def test_a_modality_lut_sequence_goes_into_the_state(case, predictor: Predictor, tmp_path: Path) -> None:
    """highdicom copies a source's rescale into the presentation state, not its Modality LUT
    Sequence: the state's identity LUT left the source's window (over values 16 times the stored
    ones) on the bottom sixteenth of them, and dcmtk drew the radiograph nearly black. And a Modality
    LUT of 12-bit entries (ACR-NEMA's; PS3.3 allows 8 or 16) was refused as "cannot decode"."""
    from PIL import Image

    pgm = shutil.which("dcmp2pgm")
    for bits in (16, 12):
        source = pydicom.dcmread(case[0])
        item = Dataset()
        item.LUTDescriptor = [4096, 0, bits]
        item.ModalityLUTType = "US"
        item.add_new("LUTData", "OW", (np.arange(4096, dtype="<u2") * 16).tobytes())
        source.ModalityLUTSequence = [item]  # in place of the rescale (PS3.3 C.11.1: one or the other)
        for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
            if keyword in source:
                delattr(source, keyword)
        source.WindowCenter, source.WindowWidth = "32768", "65536"
        path = tmp_path / f"lut{bits}.dcm"
        source.save_as(path, enforce_file_format=True)
        source = pydicom.dcmread(path)
        prediction = predictor.predict(path, keep_pixels=True)
        assert prediction.fracture_probability == pytest.approx(case[2].fracture_probability, abs=0.02)
        assert any("declared 12 bits" in w for w in prediction.warnings) == (bits == 12)
        (pr,) = result_datasets(source, prediction, predictor, kinds=("gsps",))
        (lut,) = pr.ModalityLUTSequence
        assert [int(v) for v in lut.LUTDescriptor] == [4096, 0, 16]
        data = lut.LUTData
        assert (np.frombuffer(data, "<u2") if isinstance(data, bytes) else np.asarray(data))[100] == 1600
        state = tmp_path / f"lut{bits}.pr.dcm"
        _assert_valid(pr, state)
        if pgm and bits == 16:  # drawn through the state as through the image alone
            shown = {}
            for name, extra in (("alone", []), ("state", ["-p", str(state)])):
                drawn = [pgm, *extra, str(path), str(tmp_path / f"{name}.pgm")]
                subprocess.run(drawn, check=True, timeout=60)
                shown[name] = np.asarray(Image.open(tmp_path / f"{name}.pgm"), dtype=np.float64).mean()
            assert shown["state"] == pytest.approx(shown["alone"], rel=0.05), shown
    # a LUT starting below 0 (signed pixels), which highdicom refuses: the state is made without
    # it, as before, and the other results are not lost with it (none were made)
    source = pydicom.dcmread(path)
    source.PixelRepresentation = 1
    source.ModalityLUTSequence[0].add_new("LUTDescriptor", "SS", [4096, -100, 16])
    pr, report = result_datasets(source, prediction, predictor, kinds=("gsps", "sr"))
    assert "ModalityLUTSequence" not in pr and report.Modality == "SR"


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP"])
def test_a_stop_signal_during_dicom_results_is_said(fracatlas_dir: Path, tmp_path: Path, stop: str) -> None:
    """`timeout` or a closed terminal stopped `dicom results` (and every command without a stop
    line of its own) with exit 143 or 129 and nothing on stderr, some result files written."""
    import signal
    import sys

    jpegs = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:12]
    files = [str(support.write(support.cr_from_jpeg(j), tmp_path / f"{i}.dcm")) for i, j in enumerate(jpegs)]
    command = [sys.executable, "-c", "from fracsight.cli import main; main()", "dicom", "results"]
    process = subprocess.Popen(
        [*command, *files, "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("0.dcm: ")  # under way
    process.send_signal(getattr(signal, stop))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + getattr(signal, stop), err
    assert err.rstrip().splitlines()[-1] == f"stopped ({stop}): the command stopped before it finished"
    assert "Traceback" not in err


def test_two_files_of_one_name_are_said_by_their_paths(fracatlas_dir: Path, tmp_path: Path) -> None:
    """Two patients' ``IM000000`` (a PACS export's names) were both said as "IM000000: ...", with
    opposite verdicts that could not be told apart."""
    jpegs = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:2]
    files = []
    for patient, jpeg in zip(("PT000000", "PT000001"), jpegs, strict=True):
        (tmp_path / patient).mkdir()
        files.append(support.write(support.cr_from_jpeg(jpeg), tmp_path / patient / "IM000000"))
    out = tmp_path / "out"
    result = runner.invoke(
        cli_app, ["dicom", "results", *map(str, files), "--out", str(out), "--kinds", "sr"]
    )
    assert result.exit_code == 0, result.output
    said = [line.split(": ")[0] for line in result.stdout.splitlines() if " -> " in line]
    assert said == [str(f) for f in files]


def test_a_study_report_says_a_view_that_could_not_be_read(fracatlas_dir: Path, tmp_path: Path) -> None:
    """`dicom results --study` wrote "study of 1 images: no fracture detected" for the PACS where
    one of its two views had a cut pixel stream (only an error line said so; `predict --study`
    said "not reliable: 1 of 2 views could not be read")."""
    from pydicom.uid import generate_uid

    study_uid = generate_uid()
    jpegs = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:2]
    files = [
        support.write(support.cr_from_jpeg(j, study_uid=study_uid), tmp_path / f"IM{i}")
        for i, j in enumerate(jpegs)
    ]
    whole = files[1].read_bytes()
    files[1].write_bytes(whole[: len(whole) // 3])  # the pixels cut short, the header whole
    out = tmp_path / "out"
    result = runner.invoke(
        cli_app, ["dicom", "results", *map(str, files), "--out", str(out), "--kinds", "sr", "--study"]
    )
    assert result.exit_code == 1, result.output
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("study 1")]
    assert "not reliable: some views could not be read" in line, result.output
    # the verdict over the whole view alone is another verdict: it had one UID with the one above,
    # and a PACS given both kept the first, dropping the other unsaid
    # the unreadable file given twice, or a copy of it: one view not read (it said "2 of 3")
    (tmp_path / "copy").mkdir()
    copy = tmp_path / "copy" / files[1].name
    copy.write_bytes(files[1].read_bytes())
    twice = [*map(str, files), str(files[1]), str(copy), "--out", str(tmp_path / "o2")]
    result = runner.invoke(cli_app, ["dicom", "results", *twice, "--kinds", "sr", "--study"])
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("study 1")]
    said = support.read(next((tmp_path / "o2").glob("study-1.sr*.dcm")))
    assert said.SOPInstanceUID == support.read(next(out.glob("study-1.sr*.dcm"))).SOPInstanceUID, line
    alone = runner.invoke(
        cli_app, ["dicom", "results", str(files[0]), "--out", str(out), "--kinds", "sr", "--study"]
    )
    assert alone.exit_code == 0, alone.output
    reports = [support.read(p) for p in sorted(out.glob("study-1.sr*.dcm"))]
    assert len(reports) == 2 and reports[0].SOPInstanceUID != reports[1].SOPInstanceUID


def test_a_left_and_a_right_image_get_result_series_of_their_own_side(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    """The presentation states (and captures) of a left and a right image shared one series whose
    Laterality was L in one instance and R in the other: a query for the left found the right
    image's overlay. And results of sources named by their UIDs (`1.2.3.101`, as PACS exports name
    files) lost the UID's last part: two sources' results told apart by their order alone."""
    from pydicom.uid import generate_uid

    study_uid = generate_uid()
    jpegs = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:3]
    files = []
    for i, (side, jpeg) in enumerate(zip(("L", "R", None), jpegs, strict=True)):
        ds = support.cr_from_jpeg(jpeg, study_uid=study_uid, instance_number=i + 1)
        ds.Laterality = ds.ImageLaterality = side  # None: empty, the side unknown
        files.append(support.write(ds, tmp_path / f"1.2.826.0.1.3680043.8.498.10{i}"))
    out = tmp_path / "out"
    result = runner.invoke(
        cli_app, ["dicom", "results", *map(str, files), "--out", str(out), "--kinds", "gsps"]
    )
    assert result.exit_code == 0, result.output
    states = {p.name: support.read(p) for p in out.iterdir()}
    assert sorted(states) == [f"1.2.826.0.1.3680043.8.498.10{i}.gsps.dcm" for i in range(3)]
    series = {str(ds.get("Laterality") or ""): ds.SeriesInstanceUID for ds in states.values()}
    assert sorted(series) == ["", "L", "R"] and len(set(series.values())) == 3


def test_a_side_corrected_in_the_source_gives_a_state_of_a_new_uid(case, predictor: Predictor) -> None:
    """A series per side: a state kept its UID when its source's side was corrected (L to R) and the
    image stored again, so the PACS held one SOP Instance UID in two series, and `dicom study`'s
    listing fell short of the study's count on every run after."""
    _, source, prediction = case
    made = {}
    for side in ("L", "R", None):
        ds = copy.deepcopy(source)
        ds.Laterality = ds.ImageLaterality = side
        made[side] = {
            r.Modality: r
            for r in result_datasets(ds, prediction, predictor, kinds=("sr", "gsps"), uid_seed="s")
        }
    states = {side: (str(r["PR"].SeriesInstanceUID), str(r["PR"].SOPInstanceUID)) for side, r in made.items()}
    assert (
        len({series for series, _ in states.values()}) == 3 and len({uid for _, uid in states.values()}) == 3
    )
    assert len({str(r["SR"].SOPInstanceUID) for r in made.values()}) == 1  # the report has no side


@pytest.mark.fracatlas
@pytest.mark.parametrize("free_kb", [40, 16])
def test_results_onto_a_full_disk_say_so_in_one_line_and_leave_no_empty_object(
    fracatlas_dir: Path, tmp_path: Path, free_kb: int
) -> None:
    """`dicom results` onto a disk with a few kB left: pydicom's traceback (its venv paths) folded
    into the error line, or, where the closing flush failed, an empty .dcm left for a PACS import;
    and the source's objects written before it (its SR, its presentation state) left unsaid, which
    a re-run made again beside them (two reports of one image)."""
    import os

    from dicom_support import make_radiograph_dicom
    from disk_support import mounted_tmpfs

    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    source = make_radiograph_dicom(image, tmp_path / "source.dcm")
    with mounted_tmpfs(tmp_path / "disk", "3m") as disk:
        free = os.statvfs(disk)
        with open(disk / "filler", "wb") as f:
            os.posix_fallocate(f.fileno(), 0, free.f_bavail * free.f_frsize - free_kb * 1024)
        result = CliRunner().invoke(cli_app, ["dicom", "results", str(source), "--out", str(disk / "res")])
        assert result.exit_code == 1, result.output
        assert "No space left on device" in result.stderr and "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not list((disk / "res").glob("*.dcm")) and "no results of source.dcm kept" in result.stderr


@pytest.mark.fracatlas
def test_results_made_again_are_the_same_objects(fracatlas_dir: Path, tmp_path: Path) -> None:
    """`dicom results` run again (after a full disk stopped it, say) made new UIDs for the same
    source: two reports of one image in a PACS that imports the folder. Now the same UIDs, as the
    node's, which a PACS keeps once; the study's report too."""
    from pydicom.uid import generate_uid

    study_uid = generate_uid()
    jpegs = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:2]
    files = [
        support.write(support.cr_from_jpeg(j, study_uid=study_uid), tmp_path / f"IM{i}")
        for i, j in enumerate(jpegs)
    ]
    out = tmp_path / "out"
    args = ["dicom", "results", *map(str, files), "--out", str(out), "--kinds", "sr", "--study"]
    for _ in range(2):
        result = runner.invoke(cli_app, args)
        assert result.exit_code == 0, result.output
    for first in ("IM0.sr.dcm", "study-1.sr.dcm"):
        again = first.replace(".sr.dcm", ".sr-1.dcm")
        uids = {pydicom.dcmread(out / name).SOPInstanceUID for name in (first, again)}
        assert len(uids) == 1, (first, uids)


def test_a_source_header_kept_for_the_study_holds_no_copy_of_its_file(case) -> None:
    """pydicom keeps the stream it read on the dataset, pixels and all: the headers a study's results
    are made from held every whole file at once (a 200-image study over DICOMweb: 744 MB of RSS)."""
    import pickle

    from fracsight.dicom.results import header_of

    path, source, _ = case
    data = path.read_bytes()
    header = header_of(data)
    assert header.StudyInstanceUID == source.StudyInstanceUID and "PixelData" not in header
    assert len(pickle.dumps(header)) < len(data) // 10


def test_a_study_report_counts_an_image_given_twice_once_and_says_so(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    """Two instances of one image (the same pixels) and one other: the SR said "study of 3 images"
    over a mean of 2, and nothing of the repeat, where predict --study says "given more than once"."""
    from pydicom.uid import generate_uid

    study_uid = generate_uid()
    jpegs = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:2]
    files = [
        support.write(support.cr_from_jpeg(j, study_uid=study_uid), tmp_path / f"IM{i}")
        for i, j in enumerate([jpegs[0], jpegs[0], jpegs[1]])
    ]
    out = tmp_path / "out"
    result = runner.invoke(
        cli_app, ["dicom", "results", *map(str, files), "--out", str(out), "--kinds", "sr", "--study"]
    )
    assert result.exit_code == 0, result.output
    report = support.read(next(out.glob("study-1.sr*.dcm")))
    said = " ".join(str(e.value) for e in report.iterall() if e.VR in ("UT", "LO", "ST", "LT"))
    assert "study of 2 images: " in said, said
    assert "1 of the images given more than once (the same pixels as another): each counted once" in said


def test_results_are_decided_at_the_operating_point_asked(fracatlas_dir: Path, tmp_path: Path) -> None:
    """`dicom results` had no --operating-point: its report decided at the default point a study
    that predict, the API, batch and the node called suspected at triage."""
    jpeg = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    source = support.write(support.cr_from_jpeg(jpeg), tmp_path / "IM0")
    args = ["dicom", "results", str(source), "--kinds", "sr", "--operating-point"]
    result = runner.invoke(cli_app, [*args, "triage", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = support.read(next((tmp_path / "out").glob("*.sr*.dcm")))
    said = " ".join(str(e.value) for e in report.iterall() if e.VR in ("UT", "LO", "ST", "LT"))
    assert "triage" in said, said
    refused = runner.invoke(cli_app, [*args, "nosuch", "--out", str(tmp_path / "o2")])
    assert refused.exit_code == 2 and not (tmp_path / "o2").exists(), refused.output


def test_a_model_whose_results_cannot_be_made_stops_the_node_at_its_warm_up(monkeypatch) -> None:
    """The node's warm-up builds the result objects of a made-up, valid radiograph: when they fail
    (a model's name DICOM could not carry did so), every image would, and the node logged "ready",
    acknowledged each C-STORE and failed it as `results_error`. Now the model is refused at start."""
    from fracsight.dicom import result_pool
    from fracsight.errors import BundleError

    def refused(*args: object) -> None:
        raise DicomSourceError("could not build the sr object from this DICOM object (ValueError)")

    monkeypatch.setattr(result_pool, "_result_objects", refused)
    with pytest.raises(BundleError, match="the result objects of a made-up radiograph could not be made"):
        result_pool._warm_up(Predictor())
