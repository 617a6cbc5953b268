"""Faults the node must survive without losing or duplicating anything, against real software:
the PACS (Orthanc) gone while results wait, and the node itself killed (SIGKILL) in the middle of
a study. dcmtk's storescu is the modality; the node is a child process; Orthanc runs on loopback
with its own configuration and storage.
"""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_support import (
    NodeProcess,
    Orthanc,
    dcmtk_available,
    make_radiograph_dicom,
    orthanc_available,
    running,
    storescu,
)
from test_dicom_node import DEFAULT_KINDS as KINDS  # these nodes make the default results
from test_dicom_node import referenced_sources, results_in

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (dcmtk_available() and orthanc_available()), reason="needs dcmtk and Orthanc"),
]


@pytest.fixture(scope="module")
def images(fracatlas_dir: Path) -> list[Path]:
    return sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[10:14]


def make_study(images: list[Path], folder: Path) -> tuple[str, list[Path]]:
    study_uid = generate_uid()
    files = [
        make_radiograph_dicom(image, folder / f"{i}.dcm", study_uid=study_uid, instance_number=i + 1)
        for i, image in enumerate(images)
    ]
    return study_uid, files


def assert_each_source_has_its_results_once(results: list, sources: list[Path]) -> None:
    uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in sources}
    per_source = {uid: [] for uid in uids}
    study_reports = 0
    for ds in results:
        refs = referenced_sources(ds)
        if refs == uids and ds.Modality == "SR" and len(uids) > 1:
            study_reports += 1
        else:
            (uid,) = refs
            per_source[uid].append(ds.Modality)
    assert study_reports == 1
    for modalities in per_source.values():
        assert sorted(modalities) == sorted(KINDS)


@pytest.mark.parametrize("protocol", ["dimse", "stow"])
def test_results_wait_while_the_pacs_is_down_then_arrive(
    images: list[Path], tmp_path: Path, protocol: str
) -> None:
    """By C-STORE and by STOW-RS: the node restarted three times while the PACS is away, then the
    PACS back with its storage: every object arrives once."""
    orthanc = Orthanc(tmp_path / "orthanc").start()
    to = {
        "dimse": ["--to", f"127.0.0.1:{orthanc.dicom_port}:ORTHANC"],
        "stow": ["--stow", orthanc.dicomweb_url],
    }
    node = NodeProcess(
        tmp_path / "node",
        destination=to[protocol],
        quiet_time=1,
        extra=["--result-processes", "1"],  # one worker process (and the option's older name)
    )
    try:
        node.start()
        orthanc.stop()  # the PACS goes away
        study_uid, sources = make_study(images[:2], tmp_path / "in")
        sent = storescu("127.0.0.1", node.port, sources)
        assert sent.returncode == 0, sent.stderr
        waiting = node.wait_status(
            lambda s: (
                s["counters"]["predicted"] == 2
                and s["counters"]["study_verdicts"] == 1
                and s["counters"]["send_retries"] >= 2
                and s["backlog"]["to_send"] == 2 * len(KINDS) + 1
            ),
            timeout=90,
        )
        assert waiting["counters"]["results_sent"] == 0
        log = node.log_path.read_text(errors="replace")
        # the outage is a WARNING (the node retries): it was two pynetdicom ERROR lines per try
        assert " ERROR pynetdicom" not in log
        if protocol == "dimse":
            assert "WARNING pynetdicom.transport: TCP Initialisation Error" in log and "refused" in log
        for _ in range(3):  # restarts with results waiting for the PACS: each must come up
            assert node.stop() == 0
            node.start()

        orthanc.start()  # back, with the storage it had
        orthanc.wait_for_instances(2 * len(KINDS) + 1, timeout=60, StudyInstanceUID=study_uid)
        done = node.wait_status(lambda s: s["backlog"]["to_send"] == 0)
        assert done["counters"]["results_sent"] == 2 * len(KINDS) + 1  # each object sent once
        assert done["counters"]["send_failed"] == {}
        assert done["instances"] == {"sent": 2}
        assert_each_source_has_its_results_once(results_in(orthanc, study_uid), sources)
        assert node.stop() == 0  # SIGTERM: a clean stop
    finally:
        node.stop()
        orthanc.stop()


def test_node_killed_mid_study_resumes_and_loses_nothing(images: list[Path], tmp_path: Path) -> None:
    """SIGKILL right after the first two images of a study were acknowledged (the worker busy with
    them); after a restart the last two arrive. Results go by STOW-RS this time."""
    orthanc = Orthanc(tmp_path / "orthanc").start()
    # the study must stay open until the last two images arrive: its quiet time starts again when
    # the restarted node listens (it started at recovery, before the worker warm-up, which took
    # over 3 s on a loaded 2-core machine, so the study got a verdict of two images too)
    node = NodeProcess(tmp_path / "node", destination=["--stow", orthanc.dicomweb_url], quiet_time=10)
    try:
        node.start()
        study_uid, sources = make_study(images, tmp_path / "in")
        assert storescu("127.0.0.1", node.port, sources[:2]).returncode == 0
        workers = node.worker_pids()  # the default two worker processes (and multiprocessing's tracker)
        assert len(workers) >= 2
        node.kill()
        deadline = time.monotonic() + 15  # orphaned worker processes notice and end
        while any(map(running, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(running, workers))
        crashed = node.status()  # read from the spool with the node dead
        assert crashed["counters"]["received"] == 2  # acknowledged means on disk

        node.start()
        assert storescu("127.0.0.1", node.port, sources[2:]).returncode == 0
        orthanc.wait_for_instances(4 * len(KINDS) + 1, timeout=120, StudyInstanceUID=study_uid)
        done = node.wait_status(lambda s: s["backlog"] == {"to_predict": 0, "to_send": 0, "open_studies": 0})
        counters = done["counters"]
        assert counters["received"] == 4 and counters["predicted"] == 4 and counters["study_verdicts"] == 1
        assert done["instances"] == {"sent": 4}
        results = results_in(orthanc, study_uid)
        assert len(results) == 4 * len(KINDS) + 1
        assert_each_source_has_its_results_once(results, sources)
        assert counters["results_sent"] >= len(results)  # a re-send after the crash is allowed, same UIDs
    finally:
        node.stop()
        orthanc.stop()
