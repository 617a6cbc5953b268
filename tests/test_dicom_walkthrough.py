"""What a PACS administrator trying the node for the first time ran into (docs/dicom.md followed
literally against Orthanc and dcmtk on loopback), each case kept as a test against the real software.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_support import (
    DCMTK_BIN,
    PATIENT,
    NodeProcess,
    Orthanc,
    dcmtk_available,
    free_port,
    make_radiograph_dicom,
    orthanc_available,
    storescu,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.fracatlas,
    pytest.mark.skipif(not (dcmtk_available() and orthanc_available()), reason="needs dcmtk and Orthanc"),
]

FRACATLAS = Path(__file__).resolve().parents[2] / "shared" / "data" / "fracatlas" / "images" / "Fractured"


def _colour_copy(source: Path, out: Path) -> Path:
    """``source`` as an RGB image whose channels differ (a grey one the reader takes as grey): a
    colour image, which the node acknowledges and its reader then refuses."""
    ds = pydicom.dcmread(source)
    grey = (ds.pixel_array >> 4).astype(np.uint8)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.stack([255 - grey, grey, grey], axis=-1).tobytes()
    ds.save_as(out, enforce_file_format=True)
    return out


def _two_view_study(folder: Path) -> tuple[str, list[Path]]:
    """Two FracAtlas radiographs as CR images 1 and 2 of one new study: its UID and their files."""
    images = sorted(FRACATLAS.glob("*.jpg"))[:2]
    if len(images) < 2:
        pytest.skip("FracAtlas images not found")
    study = generate_uid()
    files = [
        make_radiograph_dicom(image, folder / f"cr{i}.dcm", study_uid=study, instance_number=i + 1)
        for i, image in enumerate(images)
    ]
    return study, files


def test_a_late_image_the_reader_refuses_makes_its_study_verdict_not_reliable(tmp_path: Path) -> None:
    """A colour image sent into a study that has its verdict: the PACS kept the verdict over the
    other views ("no fracture detected" where the unread view may be the fractured one), and
    `dicom study` said "not reliable" under the same SR UID, which the PACS kept the old one of.
    Now a second verdict, under a new UID, says not reliable and names the first."""
    study, files = _two_view_study(tmp_path)
    colour = _colour_copy(files[0], tmp_path / "colour.dcm")
    with Orthanc(tmp_path / "orthanc") as orthanc:
        destination = ["--to", f"127.0.0.1:{orthanc.dicom_port}:{orthanc.ae_title}"]
        with NodeProcess(tmp_path / "node", destination=destination, quiet_time=1.0) as node:
            assert storescu("127.0.0.1", node.port, files).returncode == 0
            node.wait_status(lambda s: s["counters"]["study_verdicts"] == 1 and s["backlog"]["to_send"] == 0)
            orthanc.wait_for_instances(3, StudyInstanceUID=study, Modality="SR")  # two images, one verdict

            assert storescu("127.0.0.1", node.port, [colour]).returncode == 0
            node.wait_status(lambda s: s["counters"]["study_verdicts"] == 2 and s["backlog"]["to_send"] == 0)
            orthanc.wait_for_instances(4, StudyInstanceUID=study, Modality="SR")
            status = node.status()
            log = node.log()
            reports = [
                pydicom.dcmread(io.BytesIO(orthanc.file(found["ID"])))
                for found in orthanc.find_instances(StudyInstanceUID=study, Modality="SR")
            ]
        assert status["counters"]["refused"] == {"unsupported_photometric": 1}
        assert status["backlog"] == {"to_predict": 0, "to_send": 0, "open_studies": 0}
    verdicts = [ds for ds in reports if any("study of" in text for text in _texts(ds))]
    first, second = sorted(verdicts, key=lambda ds: "PredecessorDocumentsSequence" in ds)
    assert second.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[
        0
    ].ReferencedSOPInstanceUID == (first.SOPInstanceUID)
    assert any("not reliable: some views could not be read" in text for text in _texts(second))
    assert not any("not reliable" in text for text in _texts(first))
    assert "refused by the reader (unsupported_photometric)" in log
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
        assert PATIENT[keyword] not in log


def _texts(item: pydicom.Dataset) -> list[str]:
    """Every TextValue of an SR content tree."""
    found = [str(item.TextValue)] if "TextValue" in item else []
    for child in item.get("ContentSequence", []):
        found += _texts(child)
    return found


def test_a_late_image_gives_a_second_verdict_that_names_the_first(tmp_path: Path) -> None:
    """A late radiograph re-opens its study and the PACS gets a second study SR (needed: the first
    did not see it); it named neither the first nor the same finding, and a viewer showed two
    verdicts side by side. Now the second names the first as its predecessor, one Tracking UID."""
    study, files = _two_view_study(tmp_path)
    with Orthanc(tmp_path / "orthanc") as orthanc:
        destination = ["--to", f"127.0.0.1:{orthanc.dicom_port}:{orthanc.ae_title}"]
        with NodeProcess(tmp_path / "node", destination=destination, quiet_time=0.5) as node:
            for count, path in enumerate(files, start=1):
                assert storescu("127.0.0.1", node.port, [path]).returncode == 0
                node.wait_status(
                    lambda s, n=count: s["counters"]["study_verdicts"] == n and s["backlog"]["to_send"] == 0
                )
            reports = [
                pydicom.dcmread(io.BytesIO(orthanc.file(found["ID"])))
                for found in orthanc.find_instances(StudyInstanceUID=study, Modality="SR")
            ]
    verdicts = [ds for ds in reports if any("study of" in text for text in _texts(ds))]
    first, second = sorted(verdicts, key=lambda ds: "PredecessorDocumentsSequence" in ds)
    (named,) = second.PredecessorDocumentsSequence
    assert named.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        first.SOPInstanceUID
    )
    assert "PredecessorDocumentsSequence" not in first


@pytest.mark.parametrize(
    ("options", "syntax"), [([], "1.2.840.10008.1.2.1"), (["+xi"], "1.2.840.10008.1.2")], ids=["plain", "+xi"]
)
def test_a_pacs_that_stores_uncompressed_images_only_gets_the_capture_decoded(
    tmp_path: Path, options: list[str], syntax: str
) -> None:
    """dcmtk's storescp (by default it takes no compressed transfer syntax) as the destination: the
    JPEG capture was refused ten times and given up (`send_failed{no_presentation_context}`, the
    instance `undelivered`); now it goes decoded, in Explicit VR Little Endian, under its own UID.
    With `+xi` it takes Implicit VR Little Endian only, as legacy archives are configured: it got
    no result at all (every object `no_presentation_context`); now each goes in that syntax."""
    images = sorted(FRACATLAS.glob("*.jpg"))[:1]
    if not images or not (DCMTK_BIN / "storescp").is_file():
        pytest.skip("FracAtlas images or dcmtk's storescp not found")
    source = make_radiograph_dicom(images[0], tmp_path / "cr.dcm")
    received, port = tmp_path / "pacs", free_port()
    received.mkdir()
    pacs = subprocess.Popen(
        [str(DCMTK_BIN / "storescp"), *options, "-aet", "PACS", "-od", str(received), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        node = NodeProcess(
            tmp_path / "node",
            destination=["--to", f"127.0.0.1:{port}:PACS"],
            quiet_time=0.5,
            extra=["--processes", "0", "--results", "sr,gsps,capture"],
        )
        with node:
            assert storescu("127.0.0.1", node.port, [source]).returncode == 0
            status = node.wait_status(
                lambda s: s["counters"]["study_verdicts"] == 1 and s["backlog"]["to_send"] == 0
            )
            spooled = {
                str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                for f in (node.spool / "results").rglob("*.dcm")
            }
    finally:
        pacs.terminate()
        pacs.wait(timeout=30)
    assert status["counters"]["send_failed"] == {} and status["counters"]["results_sent"] == 4
    stored = {f: pydicom.dcmread(f) for f in received.iterdir()}
    assert {str(ds.SOPInstanceUID) for ds in stored.values()} == spooled  # the same objects, none renamed
    ((path, capture),) = [(f, ds) for f, ds in stored.items() if ds.Modality == "OT"]
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in stored.values()} == {syntax}
    assert capture.file_meta.TransferSyntaxUID == syntax
    assert capture.PhotometricInterpretation == "RGB" and capture.LossyImageCompression == "01"
    check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert "Error -" not in check.stdout + check.stderr
