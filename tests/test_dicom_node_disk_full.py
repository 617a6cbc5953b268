"""The spool's disk full after an image was acknowledged: its results cannot be written then, and
must be written once there is room again (the modality will never send the image again); nor can
``spool.db`` record what the worker made or the sender delivered, which must wait with a back-off
rather than be made or sent again every second. The spool is a small tmpfs (mounting it needs
root: skipped otherwise); the node's worker process (or its main process) is held (SIGSTOP) while
the test fills the disk, so the moment is exact. dcmtk's storescu is the modality, Orthanc the
PACS, both on loopback.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    storescu,
)
from disk_support import fill, mounted_tmpfs
from fracsight.dicom.spool import instance_key
from test_dicom_node import DEFAULT_KINDS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (dcmtk_available() and orthanc_available()), reason="needs dcmtk and Orthanc"),
]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An empty 16 MB tmpfs at ``tmp_path / "node" / "spool"`` (the node's spool)."""
    with mounted_tmpfs(tmp_path / "node" / "spool", "16m", mode="0700") as disk:
        yield disk


@contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    """The processes ``pids`` held (SIGSTOP) while the block runs."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def wait_until(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what())
        time.sleep(0.1)


def wait_for_line(node: NodeProcess, text: str, timeout: float = 60) -> None:
    def missing() -> str:
        return f"no {text!r} in the node's log:\n{node.log()[-3000:]}"

    wait_until(lambda: text in node.log(), timeout, missing)


def test_results_are_written_once_the_full_spool_has_room_again(
    fracatlas_dir: Path, tmp_path: Path, small_disk: Path
) -> None:
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    source = make_radiograph_dicom(image, tmp_path / "a.dcm", study_uid=generate_uid(), jpeg_lossless=True)
    with Orthanc(tmp_path / "orthanc") as orthanc:
        destination = ["--to", f"127.0.0.1:{orthanc.dicom_port}:{orthanc.ae_title}"]
        with NodeProcess(tmp_path / "node", destination=destination, extra=["--processes", "1"]) as node:
            assert node.spool == small_disk
            with stopped(node.worker_pids()):
                sent = storescu("127.0.0.1", node.port, [source])
                assert sent.returncode == 0 and "Success" in sent.stderr, sent.stderr  # acknowledged
                filler = fill(small_disk)
            wait_for_line(node, "not written to the spool (OSError ENOSPC)")
            assert node.status()["instances"] == {"received": 1}  # waiting for room, not given up
            filler.unlink()
            orthanc.wait_for_instances(len(DEFAULT_KINDS) + 1, timeout=90)  # its results and the verdict
            status = node.wait_status(lambda s: s["instances"] == {"sent": 1})
        assert status["counters"]["failed"] == {}


def wait_for_files(folder: Path, count: int, timeout: float = 60) -> None:
    def held() -> bool:
        return len(list(folder.glob("*.dcm"))) >= count

    wait_until(held, timeout, lambda: f"{folder} never held {count} result files")


def test_results_whose_commit_finds_spool_db_full_wait_with_back_off(
    fracatlas_dir: Path, tmp_path: Path, small_disk: Path
) -> None:
    """The result files are written, then ``spool.db`` cannot record them ("database or disk is
    full"): the instance stays received and is made again after the back-off, with one warning
    naming the cause per attempt, and its results are sent once there is room. (It was made again
    about every second, "worker: unexpected error" each time.) The node's main process is held
    (SIGSTOP) while its worker process writes the files, and the disk filled before it commits."""
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    source = make_radiograph_dicom(image, tmp_path / "a.dcm", study_uid=generate_uid(), jpeg_lossless=True)
    key = instance_key(str(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID))
    with Orthanc(tmp_path / "orthanc") as orthanc:
        destination = ["--to", f"127.0.0.1:{orthanc.dicom_port}:{orthanc.ae_title}"]
        extra = ["--processes", "1", "--log-level", "DEBUG"]
        with NodeProcess(tmp_path / "node", destination=destination, extra=extra) as node:
            assert node.process is not None
            with stopped(node.worker_pids()):
                sent = storescu("127.0.0.1", node.port, [source])
                assert sent.returncode == 0 and "Success" in sent.stderr, sent.stderr  # acknowledged
                # the node hands the job to its (held) worker process: seen, not guessed (1.5 s)
                wait_until(lambda: "handed to a worker process" in node.log(), 60, lambda: node.log()[-2000:])
                os.kill(node.process.pid, signal.SIGSTOP)
            try:
                wait_for_files(small_disk / "results" / key, len(DEFAULT_KINDS))
                time.sleep(2)  # the job's last fsync (its commit waits for the held main process)
                filler = fill(small_disk)
            finally:
                os.kill(node.process.pid, signal.SIGCONT)
            wait_for_line(
                node,
                "outcome not recorded in spool.db (OperationalError SQLITE_FULL: database or disk is full)",
            )
            first = time.monotonic()
            assert node.status()["instances"] == {"received": 1}  # waiting for room, not given up
            time.sleep(8)
            attempts = node.log().count(f"instance {key}: ")
            elapsed = time.monotonic() - first
            # at least a second attempt, however slow this machine predicts
            wait_until(lambda: node.log().count(f"instance {key}: ") >= 2, 60, lambda: node.log()[-3000:])
            filler.unlink()
            orthanc.wait_for_instances(len(DEFAULT_KINDS) + 1, timeout=90)  # its results and the verdict
            status = node.wait_status(lambda s: s["instances"] == {"sent": 1})
        log = node.log()
    assert "unexpected error" not in log
    # back-off 2 s, 4 s, 8 s (each attempt predicts again, about a second): at most 4 attempts in
    # 8 s (fewer on a slow machine), where a retry every turn made about 8
    assert 1 <= attempts <= 4, (attempts, elapsed, log[-3000:])
    assert status["counters"]["failed"] == {}
    assert status["counters"]["predicted"] == 1  # recorded once


def test_delivered_results_that_spool_db_cannot_mark_sent_wait_with_back_off(
    fracatlas_dir: Path, tmp_path: Path, small_disk: Path
) -> None:
    """Results queued while the PACS was down, the disk filled, the PACS back: the sender delivers
    them but ``spool.db`` cannot mark them sent. It tries again after a back-off, saying why, and
    marks them sent once there is room; the PACS keeps each object once. (Each failed record was
    "sender: unexpected error", and the batch was sent again every second.)"""
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    study_uid = generate_uid()
    source = make_radiograph_dicom(image, tmp_path / "a.dcm", study_uid=study_uid, jpeg_lossless=True)
    with Orthanc(tmp_path / "orthanc") as orthanc:
        destination = ["--to", f"127.0.0.1:{orthanc.dicom_port}:{orthanc.ae_title}"]
        extra = ["--processes", "0", "--max-backoff", "4"]
        with NodeProcess(tmp_path / "node", destination=destination, extra=extra) as node:
            orthanc.stop()
            sent = storescu("127.0.0.1", node.port, [source])
            assert sent.returncode == 0 and "Success" in sent.stderr, sent.stderr
            node.wait_status(lambda s: s["backlog"] == {"to_predict": 0, "to_send": 3, "open_studies": 0})
            filler = fill(small_disk)
            orthanc.start()
            wait_for_line(node, "sender: the outcome of a batch not recorded in spool.db (OperationalError")
            orthanc.wait_for_instances(len(DEFAULT_KINDS) + 1, timeout=60)  # delivered, not yet recorded
            time.sleep(5)
            filler.unlink()
            status = node.wait_status(
                lambda s: s["instances"] == {"sent": 1} and s["backlog"]["to_send"] == 0
            )
            stored = orthanc.find_instances(StudyInstanceUID=study_uid)
        log = node.log()
    assert "unexpected error" not in log
    assert len(stored) == len(DEFAULT_KINDS) + 1  # each result once, however often it was sent
    assert status["counters"]["results_sent"] == 3


def test_a_full_spool_refuses_with_out_of_resources(
    fracatlas_dir: Path, tmp_path: Path, small_disk: Path
) -> None:
    """0xA700 (Refused: out of resources), which a sender tries again later, as docs/dicom.md says;
    not 0xC210 (Error: cannot understand, the data set's fault) as when counting the refusal in the
    full database failed too. And the node takes the image once there is room."""
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    source = make_radiograph_dicom(image, tmp_path / "a.dcm", study_uid=generate_uid(), jpeg_lossless=True)
    with Orthanc(tmp_path / "orthanc") as orthanc:
        destination = ["--to", f"127.0.0.1:{orthanc.dicom_port}:{orthanc.ae_title}"]
        with NodeProcess(tmp_path / "node", destination=destination, extra=["--processes", "0"]) as node:
            filler = fill(small_disk)
            refused = storescu("127.0.0.1", node.port, [source])
            assert "Refused: OutOfResources" in refused.stderr, refused.stderr
            filler.unlink()
            stored = storescu("127.0.0.1", node.port, [source])
            assert stored.returncode == 0 and "Success" in stored.stderr, stored.stderr
            orthanc.wait_for_instances(len(DEFAULT_KINDS) + 1, timeout=90)
        log = node.log()
    assert "Traceback" not in log  # nor pynetdicom's, for a handler that raised
