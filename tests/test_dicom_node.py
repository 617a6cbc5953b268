"""The DICOM node against real software: dcmtk's storescu as the modality, fracsight's node as a
child process, Orthanc (Debian's package, on loopback, own config and storage) as the PACS.

Round trip: storescu -> node -> results C-STOREd to Orthanc -> read back through Orthanc's REST
API and checked against ``fracsight predict`` on the same files. Also: the Orthanc routing rule
of docs/orthanc (Orthanc forwards a CR to the node by itself), refusals that leave the node up
(a CT, broken data sets, an unknown calling AE title), and processing a study by its UID over
DICOMweb (QIDO-RS, WADO-RS, STOW-RS).
"""

from __future__ import annotations

import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from dicom_support import (
    PATIENT,
    NodeProcess,
    Orthanc,
    dcmtk_available,
    free_port,
    make_ct_dicom,
    make_radiograph_dicom,
    orthanc_available,
    storescu,
    which_dcmtk,
)
from fracsight.cli import app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (dcmtk_available() and orthanc_available()), reason="needs dcmtk and Orthanc"),
]

ROUTING_SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "orthanc" / "route-to-fracsight.lua"
KINDS = {"SR", "PR", "OT"}  # all three kinds, which the test node makes: report, presentation state, capture
DEFAULT_KINDS = {"SR", "PR"}  # what the node and `fracsight dicom study` make by default (capture opt-in)


# ---- reading results back ----------------------------------------------------------------------------
def content_items(ds: Any) -> Iterator[Any]:
    for item in ds.get("ContentSequence", []):
        yield item
        yield from content_items(item)


def meaning(item: Any) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning) if "ConceptNameCodeSequence" in item else ""


def sr_image_probability(sr: Any) -> float:
    """The Probability measured for the whole image (the measurement group without an SCOORD)."""
    for group in content_items(sr):
        if group.get("ValueType") == "CONTAINER" and meaning(group) == "Measurement Group":
            children = list(group.get("ContentSequence", []))
            if any(c.get("ValueType") == "SCOORD" for c in content_items(group)):
                continue
            for child in children:
                if child.get("ValueType") == "NUM" and meaning(child) == "Probability":
                    return float(child.MeasuredValueSequence[0].NumericValue)
    raise AssertionError("no image-level probability in the SR")


def sr_boxes(sr: Any) -> list[tuple[float, float, float, float]]:
    boxes = []
    for item in content_items(sr):
        if item.get("ValueType") == "SCOORD":
            xy = [float(v) for v in item.GraphicData]
            xs, ys = xy[0::2], xy[1::2]
            boxes.append((min(xs), min(ys), max(xs), max(ys)))
    return sorted(boxes)


def sr_referenced_images(sr: Any) -> set[str]:
    return {
        str(ref.ReferencedSOPInstanceUID)
        for item in content_items(sr)
        if item.get("ValueType") == "IMAGE"
        for ref in item.ReferencedSOPSequence
    }


def referenced_sources(ds: Any) -> set[str]:
    """The source images a result object points at, whatever its kind."""
    if ds.Modality == "SR":
        return sr_referenced_images(ds)
    if ds.Modality == "PR":
        return {
            str(img.ReferencedSOPInstanceUID)
            for series in ds.ReferencedSeriesSequence
            for img in series.ReferencedImageSequence
        }
    return {str(s.ReferencedSOPInstanceUID) for s in ds.get("SourceImageSequence", [])}


def results_in(orthanc: Orthanc, study_uid: str) -> list[Any]:
    """Every instance of the study in Orthanc that is not a source object, parsed."""
    out = []
    for found in orthanc.find_instances(StudyInstanceUID=study_uid):
        ds = pydicom.dcmread(io.BytesIO(orthanc.file(found["ID"])))
        if ds.Modality not in ("CR", "DX", "CT", "KO"):  # sources, and a key object a test adds
            out.append(ds)
    return out


def predict_json(files: list[Path]) -> dict[str, dict[str, Any]]:
    result = CliRunner().invoke(app, ["predict", "--json", *map(str, files)])
    assert result.exit_code == 0, result.output
    return {r["source"]: r for r in json.loads(result.stdout)["images"]}


def study_with_captures(study_uid: str, dicomweb_url: str) -> list[str]:
    """`fracsight dicom study` making all three kinds of result, as the test node does."""
    return ["dicom", "study", study_uid, "--dicomweb", dicomweb_url, "--results", "sr,gsps,capture"]


def assert_no_identifiers(log: str, *uids: str) -> None:
    for value in PATIENT.values():
        if len(value) >= 5:  # the sex "O" and the like are in any text
            assert value not in log
    for uid in uids:
        assert uid not in log


# ---- fixtures ------------------------------------------------------------------------------------------
def routed_pair(
    root: Path, allow: tuple[str, ...], quiet_time: float, extra: list[str] | None = None
) -> tuple[Orthanc, NodeProcess]:
    """Orthanc, started, with the routing rule of docs/orthanc sending to a node on a free port;
    and that node, sending its results back to Orthanc, made but not started."""
    node_port = free_port()
    orthanc = Orthanc(
        root / "orthanc",
        modalities={"fracsight": ("FRACSIGHT", "127.0.0.1", node_port)},
        lua=[ROUTING_SCRIPT],
    ).start()
    node = NodeProcess(
        root / "node",
        port=node_port,
        allow=allow,
        destination=["--to", f"127.0.0.1:{orthanc.dicom_port}:ORTHANC"],
        quiet_time=quiet_time,
        extra=extra or (),
    )
    return orthanc, node


@pytest.fixture(scope="module")
def pacs_and_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, NodeProcess]]:
    """Orthanc (with the routing rule of docs/orthanc) and a node that sends its results to it."""
    extra = ["--metrics-port", str(free_port()), "--results", "sr,gsps,capture"]  # 2 worker processes
    orthanc, node = routed_pair(tmp_path_factory.mktemp("dicom-node"), ("MODALITY", "ORTHANC"), 1.5, extra)
    try:
        node.start()
        yield orthanc, node
    finally:
        node.stop()
        orthanc.stop()


@pytest.fixture(scope="module")
def fractured(fracatlas_dir: Path) -> list[Path]:
    return sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))


# ---- tests ---------------------------------------------------------------------------------------------
def test_round_trip_results_match_fracsight_predict(
    pacs_and_node: tuple[Orthanc, NodeProcess], fractured: list[Path], tmp_path: Path
) -> None:
    orthanc, node = pacs_and_node
    study_uid = generate_uid()
    sources = [
        make_radiograph_dicom(fractured[0], tmp_path / "a.dcm", study_uid=study_uid, instance_number=1),
        make_radiograph_dicom(
            fractured[1], tmp_path / "b.dcm", study_uid=study_uid, instance_number=2, jpeg_lossless=True
        ),
    ]
    assert pydicom.dcmread(sources[1]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    sent = storescu("127.0.0.1", node.port, sources)
    assert sent.returncode == 0, sent.stderr

    orthanc.wait_for_instances(2 * len(KINDS) + 1, timeout=90, StudyInstanceUID=study_uid)
    results = results_in(orthanc, study_uid)
    expected = predict_json(sources)
    source_uids = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in sources}

    by_source: dict[str, list[Any]] = {uid: [] for uid in source_uids}
    study_reports = []
    for ds in results:
        # filed with the source study and patient, in a new series, as a new instance
        assert ds.StudyInstanceUID == study_uid
        assert ds.PatientID == PATIENT["PatientID"] and str(ds.PatientName) == PATIENT["PatientName"]
        assert ds.SOPInstanceUID not in source_uids
        refs = referenced_sources(ds)
        if ds.Modality == "SR" and refs == set(source_uids):
            study_reports.append(ds)
            continue
        assert len(refs) == 1 and refs <= set(source_uids), ds.Modality
        by_source[refs.pop()].append(ds)
    assert len(study_reports) == 1
    for uid, path in source_uids.items():
        objects = {ds.Modality: ds for ds in by_source[uid]}
        assert sorted(ds.Modality for ds in by_source[uid]) == sorted(KINDS)  # once each, no duplicates
        want = expected[path.name]
        assert sr_image_probability(objects["SR"]) == pytest.approx(want["fracture_probability"], abs=2e-6)
        want_boxes = sorted((b["x0"], b["y0"], b["x1"], b["y1"]) for b in want["boxes"])
        assert want_boxes, "a fractured FracAtlas image should give a box"
        got_boxes = sr_boxes(objects["SR"])
        assert len(got_boxes) == len(want_boxes)
        for got, box in zip(got_boxes, want_boxes, strict=True):
            assert got == pytest.approx(box, abs=0.06)
        graphics = [
            g for a in objects["PR"].GraphicAnnotationSequence for g in a.get("GraphicObjectSequence", [])
        ]
        assert len(graphics) == len(want_boxes)
        assert objects["OT"].Columns == pydicom.dcmread(path).Columns  # the capture adds a caption band
    mean = sum(r["fracture_probability"] for r in expected.values()) / len(expected)
    assert sr_image_probability(study_reports[0]) == pytest.approx(mean, abs=2e-6)

    status = node.wait_status(lambda s: s["backlog"]["to_send"] == 0 and s["backlog"]["open_studies"] == 0)
    assert status["instances"].get("sent", 0) >= 2
    assert_no_identifiers(node.log(), *source_uids, study_uid)


def test_a_study_the_node_did_then_processed_over_dicomweb_gets_no_second_set(
    pacs_and_node: tuple[Orthanc, NodeProcess], fractured: list[Path], tmp_path: Path
) -> None:
    """The node and `fracsight dicom study` derive the same result UIDs from the same source, bundle
    and operating point: a study the node did, processed again over DICOMweb, keeps one set of
    results (it had two: the node's UIDs were new ones each time)."""
    orthanc, node = pacs_and_node
    study_uid = generate_uid()
    sources = [
        make_radiograph_dicom(
            fractured[7 + i], tmp_path / f"{i}.dcm", study_uid=study_uid, instance_number=i + 1
        )
        for i in range(2)
    ]
    for path in sources:  # into the PACS, whose routing rule sends them to the node
        orthanc.upload(path)
    expected = 2 * len(KINDS) + 1
    orthanc.wait_for_instances(2 + expected, timeout=90, StudyInstanceUID=study_uid)
    node.wait_status(lambda s: s["backlog"]["to_send"] == 0 and s["backlog"]["open_studies"] == 0)
    by_node = {str(ds.SOPInstanceUID) for ds in results_in(orthanc, study_uid)}
    # (a verdict over the first image alone too, had the second come after the node's quiet time)
    assert len(by_node) >= expected
    done = CliRunner().invoke(app, study_with_captures(study_uid, orthanc.dicomweb_url))
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["predicted"] == 2 and summary["own_results_skipped"] == len(by_node)
    assert summary["result_objects_stored"] == expected  # stored again: the same objects
    assert {str(ds.SOPInstanceUID) for ds in results_in(orthanc, study_uid)} == by_node
    assert len(orthanc.find_instances(StudyInstanceUID=study_uid)) == 2 + len(by_node)


def test_ct_is_refused_counted_and_gets_no_results(
    pacs_and_node: tuple[Orthanc, NodeProcess], tmp_path: Path
) -> None:
    orthanc, node = pacs_and_node
    before = node.status()["counters"]["refused"].get("unsupported_modality", 0)
    study_uid = generate_uid()
    sent = storescu("127.0.0.1", node.port, [make_ct_dicom(tmp_path / "ct.dcm", study_uid=study_uid)])
    assert "Received Store Response (Refused: SOPClassNotSupported)" in sent.stderr, sent.stderr  # 0x0122
    after = node.status()["counters"]["refused"].get("unsupported_modality", 0)
    assert after == before + 1
    metrics_port = node.args[node.args.index("--metrics-port") + 1]
    metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert f'fracsight_dicom_refused_total{{code="unsupported_modality"}} {after}' in metrics.text
    assert node.alive()
    assert orthanc.find_instances(StudyInstanceUID=study_uid) == []
    # which sender sends what: the log said only "C-STORE refused with 0x0122 (unsupported_modality)"
    said = "C-STORE from 'MODALITY' refused with 0x0122 (unsupported_modality): Modality CT refused"
    assert said in node.log()


def test_a_study_sent_whole_is_not_stopped_at_its_report(
    pacs_and_node: tuple[Orthanc, NodeProcess], tmp_path: Path
) -> None:
    """Orthanc's "Send to DICOM modality" of a study holding a report (or fracsight's own results):
    the node answered the report 0x0122, and Orthanc's store job stopped there (HTTP 500), so the
    radiographs after it never came. A report is now acknowledged, counted, and not kept."""
    from corpus import BASIC_TEXT_SR, dicom_bytes

    orthanc, node = pacs_and_node
    study_uid = generate_uid()
    report = pydicom.dcmread(io.BytesIO(dicom_bytes(modality="SR", sop_class=BASIC_TEXT_SR)))
    report.StudyInstanceUID, report.SeriesInstanceUID = study_uid, generate_uid()
    report.SOPInstanceUID = generate_uid()
    report.file_meta.MediaStorageSOPInstanceUID = report.SOPInstanceUID
    report.save_as(tmp_path / "report.dcm")
    orthanc.upload(tmp_path / "report.dcm")
    (instance,) = orthanc.find_instances(StudyInstanceUID=study_uid)

    def ignored() -> int:
        return node.status()["counters"].get("ignored", {}).get("not_an_image", 0)

    before = ignored()
    job = {
        "Resources": [orthanc.get(f"/series/{instance['ParentSeries']}")["ParentStudy"]],
        "Synchronous": True,
    }
    sent = requests.post(
        f"{orthanc.url}/modalities/fracsight/store", json=job, auth=orthanc.auth, timeout=120
    )
    assert sent.status_code == 200, sent.text
    assert ignored() == before + 1 and node.alive()
    assert (
        "C-STORE from 'ORTHANC' acknowledged, not kept (not_an_image): Modality SR: no image to assess"
        in node.log()
    )


def test_broken_datasets_get_failure_statuses_and_the_node_stays_up(
    pacs_and_node: tuple[Orthanc, NodeProcess], fractured: list[Path], tmp_path: Path
) -> None:
    orthanc, node = pacs_and_node
    # uncompressed pixel data shorter than Rows x Columns say, sent by dcmtk
    good = make_radiograph_dicom(fractured[2], tmp_path / "good.dcm")
    ds = pydicom.dcmread(good)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "short.dcm", enforce_file_format=True)
    sent = storescu("127.0.0.1", node.port, [tmp_path / "short.dcm"])
    assert "Received Store Response (Error: DataSetDoesNotMatchSOPClass" in sent.stderr, sent.stderr  # 0xA900

    # a data set that does not decode (a sequence of undefined length that never ends), sent byte for
    # byte by pynetdicom: fracsight dicom send does not decode what it sends
    header = pydicom.dcmread(good, stop_before_pixels=True)
    header.SOPInstanceUID = header.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    header.save_as(tmp_path / "header.dcm", enforce_file_format=True)
    garbage = tmp_path / "garbage.dcm"
    unterminated = b"\x09\x00\x10\x00SQ\x00\x00\xff\xff\xff\xff" + b"\x01" * 16
    garbage.write_bytes((tmp_path / "header.dcm").read_bytes() + unterminated)
    to = f"127.0.0.1:{node.port}:FRACSIGHT"
    result = CliRunner().invoke(app, ["dicom", "send", str(garbage), "--to", to, "--ae-title", "MODALITY"])
    assert result.exit_code == 1
    assert "status_0xC210" in result.output

    counters = node.status()["counters"]["refused"]
    assert counters.get("corrupt_image", 0) >= 1 and counters.get("undecodable_dataset", 0) >= 1
    # still up: C-ECHO answers and a good image goes through
    echo = subprocess.run(
        [which_dcmtk("echoscu"), "-aet", "MODALITY", "-aec", "FRACSIGHT", "127.0.0.1", str(node.port)],
        capture_output=True,
        timeout=30,
    )
    assert echo.returncode == 0
    study_uid = generate_uid()
    assert (
        storescu(
            "127.0.0.1",
            node.port,
            [make_radiograph_dicom(fractured[2], tmp_path / "ok.dcm", study_uid=study_uid)],
        ).returncode
        == 0
    )
    orthanc.wait_for_instances(len(KINDS) + 1, timeout=60, StudyInstanceUID=study_uid)


def test_unknown_calling_ae_title_is_rejected_at_association(
    pacs_and_node: tuple[Orthanc, NodeProcess], fractured: list[Path], tmp_path: Path
) -> None:
    _, node = pacs_and_node
    source = make_radiograph_dicom(fractured[3], tmp_path / "x.dcm")
    before = node.status()["counters"]["received"]
    sent = storescu("127.0.0.1", node.port, [source], calling="INTRUDER")
    assert sent.returncode != 0
    assert "calling ae title not recognized" in (sent.stdout + sent.stderr).lower()
    wrong_called = storescu("127.0.0.1", node.port, [source], called="SOMEONE")
    assert wrong_called.returncode != 0
    status = node.status()
    assert status["counters"]["associations_rejected"] == {"called_ae_title": 1, "calling_ae_title": 1}
    assert status["counters"]["received"] == before
    assert node.alive()
    # one association more than the node serves at once (16): rejected as such, which the node's
    # log and counter called "called AE title not recognised" (an administrator would chase the title)
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    caller = AE(ae_title="MODALITY")
    caller.add_requested_context(Verification)
    held = [caller.associate("127.0.0.1", node.port, ae_title=node.ae_title) for _ in range(17)]
    try:  # the associations just rejected may still count for a moment: at least the 17th is refused
        assert held[-1].is_rejected and all(a.is_established or a.is_rejected for a in held)
        rejected = sum(a.is_rejected for a in held)
    finally:
        for assoc in held:
            if assoc.is_established:
                assoc.release()
    assert node.status()["counters"]["associations_rejected"] == {
        "called_ae_title": 1,
        "calling_ae_title": 1,
        "too_many_associations": rejected,
    }
    assert "rejected (too many associations at once (the node takes 16)" in node.log()
    # the title it called, named: a lower-case or misspelt setting is seen at once
    assert (
        "rejected (called AE title not recognised: not the node's --ae-title; it called 'SOMEONE')"
        in node.log()
    )
    # a caller offering nothing the node takes (a query here) was aborted without a word in the log
    query = [
        which_dcmtk("findscu"),
        "-aet",
        "MODALITY",
        "-aec",
        node.ae_title,
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
    ]
    done = subprocess.run([*query, "127.0.0.1", str(node.port)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert node.status()["counters"]["associations_rejected"]["no_presentation_context"] == 1
    assert "takes none of the SOP classes it offers (1.2.840.10008.5.1.4.1.2.2.1)" in node.log()
    # a radiograph offered only in a syntax the node cannot decode: said so, not "none of the SOP
    # classes" (the node takes CR), which sent an administrator to the wrong setting
    from pynetdicom.sop_class import ComputedRadiographyImageStorage

    progressive = AE(ae_title="MODALITY")
    progressive.add_requested_context(ComputedRadiographyImageStorage, ["1.2.840.10008.1.2.4.55"])
    assert not progressive.associate("127.0.0.1", node.port, ae_title=node.ae_title).is_established
    assert node.status()["counters"]["associations_rejected"]["no_presentation_context"] == 2
    assert (
        "takes none of the transfer syntaxes it offers (JPEG Full Progression, Non-Hierarchical" in node.log()
    )
    # one pynetdicom knows but no installed decoder reads (JPEG 2000 Part 2, HEVC): acknowledged as
    # stored, then dropped by the reader, the sender none the wiser
    part2 = AE(ae_title="MODALITY")
    part2.add_requested_context(
        ComputedRadiographyImageStorage, ["1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.107"]
    )
    assert not part2.associate("127.0.0.1", node.port, ae_title=node.ae_title).is_established
    assert node.status()["counters"]["associations_rejected"]["no_presentation_context"] == 3


def test_dicom_send_sends_one_sop_class_in_several_transfer_syntaxes(
    fractured: list[Path], tmp_path: Path
) -> None:
    """A folder of CR images in four transfer syntaxes goes in one `fracsight dicom send`, each file
    as it is: an acceptor takes one syntax per presentation context, so each needs its own."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

    study_uid = generate_uid()
    files = [
        make_radiograph_dicom(fractured[5], tmp_path / "jpeg.dcm", study_uid=study_uid, jpeg_lossless=True)
    ]
    for name, syntax in [
        ("implicit", ImplicitVRLittleEndian),
        ("deflated", DeflatedExplicitVRLittleEndian),
        ("rle", RLELossless),
    ]:
        ds = pydicom.dcmread(
            make_radiograph_dicom(fractured[5], tmp_path / "explicit.dcm", study_uid=study_uid)
        )
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if syntax == RLELossless:
            ds.compress(RLELossless, encoding_plugin="pydicom")
        else:
            ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
        files.append(tmp_path / f"{name}.dcm")
    files.append(tmp_path / "explicit.dcm")
    # a deflated data set of an odd number of bytes (dcmtk's dcmconv +td writes them; pydicom pads)
    # went out unpadded: Orthanc dropped the association ("Odd Fragment Length") and every file
    # after it was destination_unavailable
    ds = pydicom.dcmread(tmp_path / "explicit.dcm")
    for length in range(16):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImageComments = "x" * length
        ds.save_as(tmp_path / "plain.dcm", enforce_file_format=True)
        subprocess.run(["dcmconv", "+td", tmp_path / "plain.dcm", tmp_path / "odd.dcm"], check=True)
        data = (tmp_path / "odd.dcm").read_bytes()
        meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")  # after (0002,0000)'s value
        if (len(data) - meta_end) % 2:
            break
    assert (len(data) - meta_end) % 2
    files.insert(0, tmp_path / "odd.dcm")
    with Orthanc(tmp_path / "orthanc") as orthanc:
        to = f"127.0.0.1:{orthanc.dicom_port}:{orthanc.ae_title}"
        result = CliRunner().invoke(app, ["dicom", "send", *map(str, files), "--to", to])
        assert result.exit_code == 0, result.output
        stored = orthanc.find_instances(StudyInstanceUID=study_uid)
        assert len(stored) == len(files) == 6
        syntaxes = {orthanc.get(f"/instances/{i['ID']}/metadata/TransferSyntax") for i in stored}
        assert len(syntaxes) == 5  # stored as sent, not converted (two deflated)


def test_orthanc_routing_rule_forwards_radiographs_to_the_node(
    pacs_and_node: tuple[Orthanc, NodeProcess], fractured: list[Path], tmp_path: Path
) -> None:
    """docs/orthanc/route-to-fracsight.lua: a DX (or RG, which the node reads too: the rule left it
    out, and its study never got a result) stored in Orthanc goes to the node by itself, its
    results come back, and the results are not forwarded again (no loop)."""
    orthanc, node = pacs_and_node
    received = node.status()["counters"]["received"]
    study_uid = generate_uid()
    for k, modality in enumerate(("DX", "RG")):
        path = make_radiograph_dicom(fractured[4 + k], tmp_path / f"{modality}.dcm", study_uid=study_uid)
        ds = pydicom.dcmread(path)
        ds.Modality = modality  # RG: radiographic imaging (conventional film/screen), in a CR object
        ds.save_as(path)
        orthanc.upload(path)
    orthanc.wait_for_instances(2 + 2 * len(KINDS) + 1, timeout=120, StudyInstanceUID=study_uid)
    status = node.wait_status(lambda s: s["backlog"]["to_send"] == 0 and s["backlog"]["open_studies"] == 0)
    assert status["counters"]["received"] == received + 2  # the sources only, never their results
    # a study verdict, or two where the second image came after the node's quiet time (1.5 s here)
    assert len(results_in(orthanc, study_uid)) in (2 * len(KINDS) + 1, 2 * len(KINDS) + 2)


def test_an_image_routed_while_the_node_is_down_waits_in_orthancs_jobs(
    fractured: list[Path], tmp_path: Path
) -> None:
    """With the node down (a restart, its model loading at start), the rule's SendToModality()
    failed with one line in Orthanc's log and the job read "Success": the image was never
    analysed. Now the failed send is a job of its own in /jobs, resubmitted once the node is up."""
    orthanc, node = routed_pair(tmp_path, ("ORTHANC",), 1.0)  # the node made, not started
    try:
        study_uid = generate_uid()
        orthanc.upload(
            make_radiograph_dicom(fractured[7], tmp_path / "dx.dcm", study_uid=study_uid, modality="DX")
        )

        def failed_store_jobs() -> list[str]:
            jobs = orthanc.get("/jobs?expand")
            return [j["ID"] for j in jobs if j["Type"] == "DicomModalityStore" and j["State"] == "Failure"]

        deadline = time.monotonic() + 60
        while not failed_store_jobs():
            assert time.monotonic() < deadline, orthanc.get("/jobs?expand")
            time.sleep(0.5)
        node.start()
        for job in failed_store_jobs():
            requests.post(f"{orthanc.url}/jobs/{job}/resubmit", timeout=30).raise_for_status()
        orthanc.wait_for_instances(1 + len(DEFAULT_KINDS) + 1, timeout=120, StudyInstanceUID=study_uid)
    finally:
        node.stop()
        orthanc.stop()


def test_a_study_named_by_uid_is_processed_over_dicomweb(fractured: list[Path], tmp_path: Path) -> None:
    """QIDO-RS finds the study's instances, WADO-RS fetches them, STOW-RS stores the results."""
    study_uid = generate_uid()
    sources = [
        make_radiograph_dicom(fractured[5], tmp_path / "w1.dcm", study_uid=study_uid, instance_number=1),
        make_radiograph_dicom(
            fractured[6], tmp_path / "w2.dcm", study_uid=study_uid, instance_number=2, jpeg_lossless=True
        ),
    ]
    from corpus import dicom_bytes

    key_object = "1.2.840.10008.5.1.4.1.1.88.59"  # Key Object Selection: no image (nor a result's SR)
    report = pydicom.dcmread(io.BytesIO(dicom_bytes(modality="KO", sop_class=key_object)))
    report.StudyInstanceUID, report.SeriesInstanceUID = study_uid, generate_uid()
    report.SOPInstanceUID = report.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    report.save_as(tmp_path / "report.dcm")
    with Orthanc(tmp_path / "orthanc") as orthanc:
        for path in [
            *sources,
            make_ct_dicom(tmp_path / "ct.dcm", study_uid=study_uid),
            tmp_path / "report.dcm",
        ]:
            orthanc.upload(path)
        result = CliRunner().invoke(app, ["dicom", "study", study_uid, "--dicomweb", orthanc.dicomweb_url])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["predicted"] == 2
        # the CT refused; the key object skipped, as the node acknowledges it without keeping it (it
        # was "refused: unsupported_modality" here)
        assert list(summary["refused"].values()) == ["unsupported_modality"]
        assert summary["objects_without_an_image_skipped"] == 1
        assert summary["result_objects_stored"] == 2 * len(DEFAULT_KINDS) + 1
        expected = predict_json(sources)
        mean = sum(r["fracture_probability"] for r in expected.values()) / 2
        assert summary["study_fracture_probability"] == pytest.approx(mean, abs=2e-6)
        results = results_in(orthanc, study_uid)
        assert len(results) == 2 * len(DEFAULT_KINDS) + 1
        assert {ds.Modality for ds in results} == DEFAULT_KINDS
        uid_to_name = {str(pydicom.dcmread(p).SOPInstanceUID): p.name for p in sources}
        for ds in results:
            refs = referenced_sources(ds)
            if ds.Modality == "SR" and len(refs) == 1:
                want = expected[uid_to_name[refs.pop()]]["fracture_probability"]
                assert sr_image_probability(ds) == pytest.approx(want, abs=2e-6)
        assert study_uid not in result.output

        # run again, twice, with captures: fracsight's own objects (the capture is Modality OT and
        # looks like a radiograph) are never read back as radiographs of the study
        for _ in range(2):
            again = CliRunner().invoke(app, study_with_captures(study_uid, orthanc.dicomweb_url))
            assert again.exit_code == 0, again.output
            rerun = json.loads(again.stdout)
            assert rerun["predicted"] == 2
            assert rerun["study_fracture_probability"] == pytest.approx(mean, abs=2e-6)
            assert list(rerun["refused"].values()) == ["unsupported_modality"]  # the CT only
            # the results already in the study are fracsight's own: skipped, not "refused"
            assert rerun["own_results_skipped"] >= 2 * len(DEFAULT_KINDS) + 1
