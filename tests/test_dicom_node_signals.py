"""Signals to the node's whole process group, as a terminal (Ctrl-C) and systemd
(``KillMode=control-group``, ``kill -TERM -PGID``) send them: they reach its worker processes too,
which must leave the stop to the node (it lets them finish what they hold, then stops them), and
must still end when the node itself ends one of them, or is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicom_support import (
    DCMTK_BIN,
    NodeProcess,
    Orthanc,
    dcmtk_available,
    make_radiograph_dicom,
    orthanc_available,
    running,
    wait_until,
)
from fracsight.dicom.result_pool import ModelRef, Processing

pytestmark = pytest.mark.slow


def children(pid: int) -> dict[int, bytes]:
    """The child processes of ``pid`` and their command lines, from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_ctrl_c_while_the_worker_processes_start_stops_the_node_cleanly(tmp_path: Path) -> None:
    """SIGINT to the group while a worker process's interpreter starts: it died of it ("Fatal Python
    error: init_import_site ... KeyboardInterrupt"), `Processing.start` raised BrokenProcessPool
    and the node ended in a traceback, exit 1. Now the node stops as for Ctrl-C at any other time."""
    node = NodeProcess(tmp_path / "node", destination=["--to", "127.0.0.1:9:PACS"], own_group=True)
    process = node.launch()
    try:
        spawning = lambda: any(b"spawn_main" in line for line in children(process.pid).values())  # noqa: E731
        assert wait_until(spawning, 120, step=0.002)  # the moment a worker's interpreter starts
        os.killpg(process.pid, signal.SIGINT)
        code = process.wait(timeout=120)
    finally:
        node.kill()
    log = node.log()
    assert code == 0, log
    assert "Traceback" not in log and "Fatal Python error" not in log
    assert "signal received: stopping" in log


@pytest.mark.skipif(not (dcmtk_available() and orthanc_available()), reason="needs dcmtk and Orthanc")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_to_the_group_lets_the_worker_processes_finish_their_jobs(
    fracatlas_dir: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    """The worker processes died of it: "ERROR a worker process died; starting new ones" in a
    routine stop, and the images they held dropped (made again at the next start). Now they finish
    them; the node commits them and stops its processes, which are gone with it. A SIGHUP (an ssh
    session that drops) ended the workers and multiprocessing's resource tracker too ("process
    died unexpectedly, relaunching" and KeyError tracebacks)."""
    images = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[40:44]
    study_uid = generate_uid()
    files = [
        make_radiograph_dicom(image, tmp_path / f"{i}.dcm", study_uid=study_uid)
        for i, image in enumerate(images)
    ]
    with Orthanc(tmp_path / "orthanc") as orthanc:
        destination = ["--to", f"127.0.0.1:{orthanc.dicom_port}:ORTHANC"]
        extra = ["--processes", "2", "--batch-size", "1", "--log-level", "DEBUG"]
        node = NodeProcess(
            tmp_path / "node", destination=destination, extra=extra, quiet_time=30, own_group=True
        )
        with node:
            assert node.process is not None
            workers = node.worker_pids()
            storescu = [str(DCMTK_BIN / "storescu"), "-aet", "MODALITY", "-aec", "FRACSIGHT", "-xs", "-nh"]
            sending = subprocess.Popen([*storescu, "127.0.0.1", str(node.port), *map(str, files)])
            try:
                # its job is in a worker process (it takes a second); a stored file alone was not enough
                assert wait_until(lambda: "handed to a worker process" in node.log(), 60, 0.05)
                os.killpg(node.process.pid, stop)
                code = node.process.wait(timeout=120)
            finally:
                sending.kill()
                sending.wait()
        log = node.log()
    assert code == 0, log
    assert "worker process died" not in log and " ERROR " not in log and "Traceback" not in log, log
    assert "resource_tracker" not in log, log
    assert node.status()["counters"]["predicted"] >= 1, log  # the job in flight, committed
    assert len(workers) >= 2 and not any(running(pid) for pid in workers)


def test_a_worker_process_ends_on_the_nodes_own_sigterm_only(tmp_path: Path) -> None:
    """Not on another's (the group's), but on the node's: how a broken pool ends the processes
    left in it. A worker process whose node is killed still ends (its parent watch)."""
    processing = Processing(ModelRef.resolve(None, None), processes=1)
    processing.start()
    try:
        assert processing._pool is not None
        (pid,) = list(processing._pool._processes)
        subprocess.run(["kill", "-TERM", str(pid)], check=True, timeout=30)  # from another process
        assert not wait_until(lambda: not running(pid), 2)
        os.kill(pid, signal.SIGTERM)  # from the node (here, this process)
        assert wait_until(lambda: not running(pid), 30)
    finally:
        processing.close()
    script = (
        "import os, signal, time\n"
        "from fracsight.dicom.result_pool import ModelRef, Processing\n"
        "p = Processing(ModelRef.resolve(None, None), processes=1)\n"
        "p.start()\n"
        "print(*p._pool._processes, flush=True)\n"
        "time.sleep(600)\n"
    )
    # (its resource tracker's warning of the semaphores the kill leaves: not shown)
    node = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert node.stdout is not None
        worker = int(node.stdout.readline())
    finally:
        node.kill()
        node.wait()
    assert wait_until(lambda: not running(worker), 30)
