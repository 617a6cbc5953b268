"""The node killed (SIGKILL) again and again at chosen and random moments, against real software:
dcmtk's storescu as the modality, the node as a child process restarted on the same spool each
time, Orthanc on loopback as the PACS. docs/dicom.md ("Durability: what is guaranteed") is the
contract checked:

- after every kill, each instance whose C-STORE was acknowledged has its spool row and file, and
  the spool's database is not left locked;
- at the end every source image has its results in Orthanc exactly once per kind (a result made
  twice, with new UIDs, after a restart would be stored twice), each study one verdict over all
  its images, nothing is stuck in the spool, and nothing is left in ``tmp/``.

The kill moments: right when an instance file appears in the spool (before or just after its
row is committed), while the images arrive, right when a result file or a study verdict's file
appears in the spool (between writing the results and queuing them), right when Orthanc has
stored a result (in the middle of a batch the spool has not yet marked sent), and at random;
once the node is stopped with SIGTERM instead (it must exit 0 and leave ``tmp/`` empty). Each
round the modality sends a new study, then every earlier one again (a re-send is acknowledged
and kept once), so that there is always work to be killed in. The quiet time is short (2 s, about
a restart's length): a study cut by a kill must still get one verdict over all its images.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_support import (
    DCMTK_BIN,
    NodeProcess,
    Orthanc,
    dcmtk_available,
    make_radiograph_dicom,
    orthanc_available,
    wait_until,
)
from fracsight.dicom.spool import instance_key
from test_dicom_node import DEFAULT_KINDS as KINDS  # the node makes the default results
from test_dicom_node import referenced_sources, results_in

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (dcmtk_available() and orthanc_available()), reason="needs dcmtk and Orthanc"),
]

ROUNDS = 9
IMAGES_PER_STUDY = 2
QUIET_TIME = 2.0  # below the node's start-up (about 2.5 s here), above the re-send of a study


def send(port: int, files: list[Path]) -> subprocess.Popen[str]:
    """dcmtk's storescu in the background, verbose (its output says which files were acknowledged)."""
    cmd = [str(DCMTK_BIN / "storescu"), "-v", "-aet", "MODALITY", "-aec", "FRACSIGHT", "-xs", "-nh"]
    return subprocess.Popen(
        [*cmd, "127.0.0.1", str(port), *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def acknowledged(output: str) -> set[str]:
    """The files storescu got a success response for."""
    done, current = set(), None
    for line in output.splitlines():
        if m := re.match(r"I: Sending file: (.+)$", line):
            current = m.group(1)
        elif "Received Store Response (Success)" in line and current is not None:
            done.add(current)
    return done


def spool_rows(spool: Path) -> tuple[dict[str, str], int, int]:
    """``{instance key: state}`` from the spool's database, how many result objects it has queued
    and how many marked sent, after checking that nothing holds a lock on it (a killed node's locks
    go with it)."""
    db = sqlite3.connect(spool / "spool.db", timeout=0, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")  # "database is locked" at once if anyone held it
        db.execute("ROLLBACK")
        rows = dict(db.execute("SELECT key, state FROM instances").fetchall())
        (queued,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        (sent,) = db.execute("SELECT COUNT(*) FROM outbox WHERE state='sent'").fetchone()
        return rows, queued, sent
    finally:
        db.close()


def count_files(folder: Path, pattern: str) -> int:
    return sum(1 for _ in folder.glob(pattern)) if folder.is_dir() else 0


@pytest.fixture(scope="module")
def images(fracatlas_dir: Path) -> list[Path]:
    return sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[30 : 30 + (ROUNDS + 1) * 2]


def test_node_killed_again_and_again_loses_and_duplicates_nothing(images: list[Path], tmp_path: Path) -> None:
    seed = int(os.environ.get("FRACSIGHT_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    why = f"(kill seed {seed}: FRACSIGHT_KILL_SEED={seed} repeats its random choices)"
    orthanc = Orthanc(tmp_path / "orthanc").start()
    node = NodeProcess(
        tmp_path / "node",
        destination=["--to", f"127.0.0.1:{orthanc.dicom_port}:ORTHANC"],
        quiet_time=QUIET_TIME,
        extra=["--processes", "1"],
    )
    instances, results = node.spool / "instances", node.spool / "results"
    studies: dict[str, list[Path]] = {}

    def new_study(n: int) -> None:
        study_uid = generate_uid()
        out = tmp_path / "in"
        studies[study_uid] = [
            make_radiograph_dicom(image, out / f"{n}-{i}.dcm", study_uid=study_uid, instance_number=i + 1)
            for i, image in enumerate(images[n * IMAGES_PER_STUDY : (n + 1) * IMAGES_PER_STUDY])
        ]

    def files_appear(folder: Path, pattern: str) -> Callable[[], bool]:
        before = count_files(folder, pattern)
        return lambda: count_files(folder, pattern) > before

    def after(delay: float) -> Callable[[], bool]:
        deadline = time.monotonic() + delay
        return lambda: time.monotonic() > deadline

    def results_at_the_pacs() -> Callable[[], bool]:
        before = len(orthanc.instances())
        return lambda: len(orthanc.instances()) > before

    # (moment, its trigger once the modality starts sending, SIGTERM rather than SIGKILL)
    moments: list[tuple[str, Callable[[], Callable[[], bool]], bool]] = [
        ("instance file written", lambda: files_appear(instances, "*.dcm"), False),
        ("while receiving", lambda: after(rng.uniform(0.0, 0.3)), False),
        ("result file written", lambda: files_appear(results, "*/*.dcm"), False),
        ("result at the PACS", results_at_the_pacs, False),
        ("verdict written", lambda: files_appear(results, "study-*/*.dcm"), False),
        ("at random", lambda: after(rng.uniform(0.0, 2.5)), False),
        ("SIGTERM, result file written", lambda: files_appear(results, "*/*.dcm"), True),
    ]
    log = []
    try:
        for n in range(ROUNDS):
            new_study(n)
            name, make_trigger, clean = moments[n] if n < len(moments) else rng.choice(moments)
            node.start()
            sending = send(node.port, [f for files in reversed(studies.values()) for f in files])
            hit = wait_until(make_trigger(), timeout=QUIET_TIME + 3)
            if clean:
                assert node.stop() == 0, node.log()[-3000:]
                assert list((node.spool / "tmp").iterdir()) == []
            else:
                node.kill()
                # status says the node is gone, and that what waits waits for it, not for a PACS
                said = node.status()
                assert said["node_running"] is False, said
                assert (said["status"] == "stopped") == any(said["backlog"].values()), said
            output, _ = sending.communicate(timeout=60)
            rows, queued, marked = spool_rows(node.spool)
            # the windows the kill fell in, for the record: result files written but not queued
            # (made again after the restart), objects the PACS stored but the spool had not marked
            # sent (sent again after the restart, with the same UIDs)
            unqueued = count_files(results, "*/*.dcm") - queued
            unmarked = len(orthanc.instances()) - marked
            log.append(
                f"round {n}: {name} ({'hit' if hit else 'not reached'}; "
                f"{unqueued} written not queued, {unmarked} stored not marked)"
            )
            for path in acknowledged(output):
                key = instance_key(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
                assert key in rows, f"acknowledged, then lost in round {n} ({name}) {why}"
                assert node.spool.joinpath("instances", f"{key}.dcm").is_file()

        node.start()  # the last start: everything is sent once more and the node left to finish
        sources = [f for files in studies.values() for f in files]
        sending = send(node.port, sources)
        output, _ = sending.communicate(timeout=60)
        assert acknowledged(output) == set(map(str, sources)), output
        total = len(sources) * len(KINDS) + len(studies)
        orthanc.wait_for_instances(total, timeout=120)
        done = node.wait_status(
            lambda s: s["backlog"] == {"to_predict": 0, "to_send": 0, "open_studies": 0}, timeout=60
        )
        assert done["node_running"] is True and done["status"] == "ok", done
        assert node.stop() == 0

        # the PACS: each image's results once per kind, each study one verdict over all its images
        for study_uid, files in studies.items():
            uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
            per_source: dict[str, list[str]] = {uid: [] for uid in uids}
            verdicts = []
            for ds in results_in(orthanc, study_uid):
                refs = referenced_sources(ds)
                if ds.Modality == "SR" and refs == uids:
                    verdicts.append(ds)
                else:
                    (uid,) = refs
                    per_source[uid].append(ds.Modality)
            assert len(verdicts) == 1, f"{len(verdicts)} study verdicts; {log} {why}"
            for modalities in per_source.values():
                assert sorted(modalities) == sorted(KINDS), f"{modalities}; {log} {why}"
        assert len(orthanc.instances()) == total, f"{log} {why}"

        # the spool: nothing stuck, each image predicted once, nothing half-written left behind
        counters = done["counters"]
        assert done["instances"] == {"sent": len(sources)}
        assert counters["predicted"] == len(sources) and counters["study_verdicts"] == len(studies)
        assert counters.get("failed", {}) == {} and counters.get("send_failed", {}) == {}
        assert counters["results_sent"] == total  # a re-sent object was not counted the first time
        rows, queued, marked = spool_rows(node.spool)
        assert set(rows.values()) == {"sent"} and queued == marked == total
        assert count_files(results, "*/*.dcm") == total  # made again in place, none left over
        assert list((node.spool / "tmp").iterdir()) == []
    finally:
        node.stop()
        orthanc.stop()
