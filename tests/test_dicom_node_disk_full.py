"""The spool's disk full after an image was acknowledged: its results cannot be written then, and
must be written once there is room again (the modality will never send the image again). The
spool is a small tmpfs (mounting it needs root: skipped otherwise); the node's worker process is
held (SIGSTOP) between the acknowledgement and its work, while the test fills the disk, so the
moment is exact. dcmtk's storescu is the modality, Orthanc the PACS, both on loopback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

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
from test_dicom_node import DEFAULT_KINDS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (dcmtk_available() and orthanc_available()), reason="needs dcmtk and Orthanc"),
]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An empty 16 MB tmpfs at ``tmp_path / "node" / "spool"`` (the node's spool)."""
    mount_point = tmp_path / "node" / "spool"
    mount_point.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` with one file; returns it (delete it to free the space)."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, stat.f_bavail * stat.f_frsize)
    finally:
        os.close(fd)
    return filler


def wait_for_line(node: NodeProcess, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in node.log():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {text!r} in the node's log:\n{node.log()[-3000:]}")
        time.sleep(0.2)


def test_results_are_written_once_the_full_spool_has_room_again(
    fracatlas_dir: Path, tmp_path: Path, small_disk: Path
) -> None:
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    source = make_radiograph_dicom(image, tmp_path / "a.dcm", study_uid=generate_uid(), jpeg_lossless=True)
    with Orthanc(tmp_path / "orthanc") as orthanc:
        destination = ["--to", f"127.0.0.1:{orthanc.dicom_port}:{orthanc.ae_title}"]
        with NodeProcess(tmp_path / "node", destination=destination, extra=["--processes", "1"]) as node:
            assert node.spool == small_disk
            workers = node.worker_pids()
            for pid in workers:
                os.kill(pid, signal.SIGSTOP)
            try:
                sent = storescu("127.0.0.1", node.port, [source])
                assert sent.returncode == 0 and "Success" in sent.stderr, sent.stderr  # acknowledged
                filler = fill(small_disk)
            finally:
                for pid in workers:
                    os.kill(pid, signal.SIGCONT)
            wait_for_line(node, "not written to the spool (OSError ENOSPC)")
            assert node.status()["instances"] == {"received": 1}  # waiting for room, not given up
            filler.unlink()
            orthanc.wait_for_instances(len(DEFAULT_KINDS) + 1, timeout=90)  # its results and the verdict
            status = node.wait_status(lambda s: s["instances"] == {"sent": 1})
        assert status["counters"]["failed"] == {}


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
