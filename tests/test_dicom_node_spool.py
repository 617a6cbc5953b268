"""The node's spool on its own (no network): states, durability rules, studies, counters, metrics."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from fracsight.dicom.metrics import render, status
from fracsight.dicom.node import _lock_spool
from fracsight.dicom.sender import _association_groups, parse_dimse_address
from fracsight.dicom.spool import FAILED, REFUSED, SENT, Spool, instance_key, study_key
from head_kinds import HEAD_KINDS

STUDY = "1.2.826.0.1.3680043.8.498.1"
UID_A = "1.2.826.0.1.3680043.8.498.11"
UID_B = "1.2.826.0.1.3680043.8.498.12"
UID_C = "1.2.826.0.1.3680043.8.498.13"


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def queue(spool: Spool, key: str, n: int = 2) -> list[Path]:
    files = []
    for i in range(n):
        path = spool.results_folder(key) / f"{i}.dcm"
        spool.write_file(path, b"result")
        files.append(path)
    spool.queue_many([(key, files)])
    return files


def test_keys_are_short_hashes_never_the_uid(spool: Spool) -> None:
    key = instance_key(UID_A)
    assert len(key) == 20 and UID_A not in key and key == instance_key(UID_A + "\0")
    spool.add_instance(key, STUDY, b"dicom bytes")
    names = [p.name for p in spool.root.rglob("*")]
    assert not any("1.2.826" in name for name in names)
    assert len(study_key(STUDY)) == 12


def test_an_instance_is_kept_once_and_on_disk_when_added(spool: Spool) -> None:
    key = instance_key(UID_A)
    assert spool.add_instance(key, STUDY, b"first")
    assert spool.instance_path(key).read_bytes() == b"first"
    assert not spool.add_instance(key, STUDY, b"second")  # a re-send: kept once, not replaced
    assert spool.instance_path(key).read_bytes() == b"first"
    assert spool.counters()["received"] == {"": 1} and spool.counters()["duplicates"] == {"": 1}
    assert [r.key for r in spool.received(10)] == [key]


def test_one_instance_sent_twice_at_once_keeps_the_first_file_and_its_row(spool: Spool) -> None:
    """Two associations sending one SOP Instance UID at the same moment (two modalities, a re-send
    while the first is stored): the second file replaced the first under the first's row, so the
    row said one study and the file held the other's, and its results went to the other patient."""
    import threading

    keys = [instance_key(f"1.2.3.{i}") for i in range(60)]
    barrier = threading.Barrier(2)

    def send(study: str) -> None:
        for key in keys:
            barrier.wait()
            spool.add_instance(key, study, study.encode() * 1000)

    senders = [threading.Thread(target=send, args=(study,)) for study in ("1.1", "2.2")]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(60)
    for key in keys:
        (row,) = [r for r in spool.study_instances("1.1") + spool.study_instances("2.2") if r.key == key]
        assert spool.instance_path(key).read_bytes() == row.study_uid.encode() * 1000, key


def test_states_move_from_received_to_sent_as_results_are_delivered(spool: Spool) -> None:
    key = instance_key(UID_A)
    spool.add_instance(key, STUDY, b"x")
    queue(spool, key, 2)
    assert spool.states() == {"results_pending": 1} and spool.backlog()["to_send"] == 2
    due = spool.due(10)
    spool.mark_sent(due[:1])
    assert spool.states() == {"results_pending": 1}
    spool.mark_sent(due[1:])
    assert spool.states() == {SENT: 1} and spool.backlog()["to_send"] == 0
    assert spool.counters()["results_sent"] == {"": 2} and spool.counters()["predicted"] == {"": 1}


def test_retries_wait_their_delay_and_give_up_after_the_limit(spool: Spool) -> None:
    key = instance_key(UID_A)
    spool.add_instance(key, STUDY, b"x")
    queue(spool, key, 1)
    rows = spool.due(10)
    assert spool.retry_later(rows, 60, "destination_unavailable", give_up_after=0) == 0
    assert spool.due(10) == [] and spool.next_due() > time.time() + 50
    rows = spool.due(10, now=time.time() + 61)
    # waiting for a destination that is down is no refusal: an outage of minutes counted each try,
    # and the first refusal after it gave up every object that had waited through it
    assert rows[0].attempts == 0
    assert spool.retry_later(rows, 0, "status_0xA900", give_up_after=2) == 0
    rows = spool.due(10)
    assert rows[0].attempts == 1
    assert spool.retry_later(rows, 0, "status_0xA900", give_up_after=2) == 1
    assert spool.backlog()["to_send"] == 0
    assert spool.counters()["send_failed"] == {"status_0xA900": 1}
    assert spool.counters()["send_retries"] == {"": 3}


def test_an_instance_whose_result_is_given_up_is_undelivered_and_keeps_its_files(spool: Spool) -> None:
    """It used to stay ``results_pending`` for good: a gauge that never went down, and files that a
    person cannot tell from work still in progress."""
    key = instance_key(UID_A)
    spool.add_instance(key, STUDY, b"x", now=1000.0)
    queue(spool, key, 2)
    report, refused = spool.due(10)
    spool.finish_study(STUDY, 0, f"study:{study_key(STUDY)}:0", [])
    assert spool.retry_later([refused], 0, "status_0xA900", give_up_after=1) == 1
    assert spool.states() == {"results_pending": 1}  # the other result still to send
    spool.mark_sent([report])
    assert spool.states() == {"undelivered": 1} and spool.backlog()["to_send"] == 0
    assert spool.prune(0) == 0 and spool.instance_path(key).exists()  # kept for a person to look at
    assert (spool.results_folder(key) / "1.dcm").exists()
    # given up last, the same: settled when nothing of it is left to send
    other = instance_key(UID_B)
    spool.add_instance(other, STUDY, b"y")
    queue(spool, other, 1)
    spool.retry_later(spool.due(10), 0, "http_400", give_up_after=1)
    assert spool.states() == {"undelivered": 2}


def test_a_study_verdict_given_up_is_shown_for_a_person_to_send_again(spool: Spool) -> None:
    """A verdict the PACS refused until it was given up changed no instance's state: /healthz, the
    gauges and `dicom status` showed every instance sent, and nothing to resend (a counter alone)."""
    from typer.testing import CliRunner

    from fracsight.cli import app
    from fracsight.dicom.metrics import health, render

    key = instance_key(UID_A)
    spool.add_instance(key, STUDY, b"x")
    queue(spool, key, 1)
    spool.mark_sent(spool.due(10))
    owner = f"study:{study_key(STUDY)}:0"
    verdict = spool.results_folder(owner) / "0.dcm"
    spool.write_file(verdict, b"verdict")
    assert spool.finish_study(STUDY, 0, owner, [verdict])
    spool.retry_later(spool.due(10), 0, "status_0xA900", give_up_after=1)
    assert spool.states() == {SENT: 1}  # as before: the instance's own results went
    assert health(spool)["given_up"] == {"image_results": 0, "study_verdicts": 1}
    assert 'fracsight_dicom_given_up{kind="study_verdicts"} 1' in render(spool)
    shown = CliRunner().invoke(app, ["dicom", "status", "--spool", str(spool.root)])
    assert "0 image result object(s) and 1 study verdict(s) were refused" in shown.output, shown.output
    assert CliRunner().invoke(app, ["dicom", "resend", "--spool", str(spool.root)]).exit_code == 0
    assert spool.given_up() == {"image_results": 0, "study_verdicts": 0}


def test_given_up_results_can_be_queued_again_by_code_from_the_command_line(spool: Spool) -> None:
    """`dicom resend`: after the destination is fixed, what it refused is sent again (it used to be
    kept in the spool with no way back but editing its database)."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    refused_keys = []
    for uid, code in ((UID_A, "status_0xA900"), (UID_B, "http_400")):
        key = instance_key(uid)
        spool.add_instance(key, STUDY, b"x")
        queue(spool, key, 1)
        spool.retry_later(spool.due(10), 0, code, give_up_after=1)
        refused_keys.append(key)
    assert spool.states() == {"undelivered": 2} and spool.due(10) == []
    shown = CliRunner().invoke(app, ["dicom", "status", "--spool", str(spool.root)])
    assert "2 image result object(s) and 0 study verdict(s) were refused" in shown.output, shown.output
    assert f"`fracsight dicom resend --spool {spool.root}`" in shown.output
    command = ["dicom", "resend", "--spool", str(spool.root)]
    result = CliRunner().invoke(app, [*command, "--code", "http_400"])
    assert result.exit_code == 0, result.output
    assert "1 result objects queued to be sent again (1 http_400)" in result.output
    again = spool.due(10)
    assert [r.owner for r in again] == [refused_keys[1]] and again[0].attempts == 0
    assert spool.states() == {"undelivered": 1, "results_pending": 1}
    spool.mark_sent(again)
    assert spool.states() == {"undelivered": 1, SENT: 1}
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0 and "(1 status_0xA900)" in result.output, result.output
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0 and "nothing to send again" in result.output, result.output
    spool.mark_sent(spool.due(10))
    assert spool.states() == {SENT: 2}
    # the command writes to no folder that is not a node's spool
    result = CliRunner().invoke(app, ["dicom", "resend", "--spool", str(spool.root / "instances")])
    assert result.exit_code == 2 and "error (not_a_spool)" in result.output, result.output
    # a folder that is not there: "nowhere holds no spool.db" sent the user looking inside it
    result = CliRunner().invoke(app, ["dicom", "status", "--spool", str(spool.root / "nowhere")])
    assert result.exit_code == 2 and "no such folder: " in result.output, result.output
    result = CliRunner().invoke(app, ["dicom", "status", "--spool", str(spool.root / "spool.db")])
    assert result.exit_code == 2 and "is a file, not a spool folder" in result.output, result.output


def test_refused_and_failed_instances_are_counted_by_code(spool: Spool) -> None:
    a, b = instance_key(UID_A), instance_key(UID_B)
    spool.add_instance(a, STUDY, b"x")
    spool.add_instance(b, STUDY, b"y")
    spool.mark_instance(a, REFUSED, "unsupported_modality")
    spool.mark_instance(b, FAILED, "results_error")
    counters = status(spool)["counters"]
    assert counters["refused"] == {"unsupported_modality": 1}
    assert counters["failed"] == {"results_error": 1}
    assert spool.received(10) == []


def test_a_study_gets_its_verdict_after_the_quiet_time_and_a_late_image_reopens_it(spool: Spool) -> None:
    a, b = instance_key(UID_A), instance_key(UID_B)
    spool.add_instance(a, STUDY, b"x", now=1000.0)
    assert spool.quiet_studies(30, now=1020.0) == []  # an image is still to predict
    queue(spool, a)
    assert spool.quiet_studies(30, now=1020.0) == []  # not quiet yet
    ((study, generation),) = spool.quiet_studies(30, now=1031.0)
    assert study == STUDY and generation == 0
    assert spool.finish_study(STUDY, 0, f"study:{study_key(STUDY)}:0", [])
    assert spool.backlog()["open_studies"] == 0
    assert not spool.finish_study(STUDY, 0, "again", [])  # a verdict is given once per generation

    spool.add_instance(b, STUDY, b"y", now=2000.0)  # a late image: the study opens again
    queue(spool, b)
    assert spool.quiet_studies(30, now=2031.0) == [(STUDY, 1)]


def test_a_late_image_the_reader_refuses_reopens_its_study(spool: Spool) -> None:
    """A late view the reader refuses (a colour photo, a JPEG cut short) re-opens its study: the
    verdict has not seen it and must say it is not reliable (until 2026-12-07 the PACS kept "no
    fracture detected" over the other views; from 2026-12-03 it re-opened nothing, as the verdict
    then had nothing new to say)."""
    a, b = instance_key(UID_A), instance_key(UID_B)
    spool.add_instance(a, STUDY, b"x", now=1000.0)
    queue(spool, a)
    assert spool.finish_study(STUDY, 0, f"study:{study_key(STUDY)}:0", [])
    spool.add_instance(b, STUDY, b"y", now=2000.0)
    spool.mark_instance(b, REFUSED, "unsupported_photometric")
    assert spool.quiet_studies(30, now=3000.0) == [(STUDY, 1)]
    assert spool.backlog()["open_studies"] == 1


def test_an_image_arriving_while_the_verdict_is_made_keeps_the_study_open(spool: Spool) -> None:
    a, b = instance_key(UID_A), instance_key(UID_B)
    spool.add_instance(a, STUDY, b"x", now=1000.0)
    queue(spool, a)
    ((_, generation),) = spool.quiet_studies(30, now=1031.0)
    spool.add_instance(b, STUDY, b"y")  # arrives before the verdict is queued
    assert not spool.finish_study(STUDY, generation, "study:x:0", [])
    assert spool.backlog()["open_studies"] == 1


def test_an_image_refused_while_the_verdict_is_made_keeps_the_study_open(spool: Spool) -> None:
    """B arrives and is refused (a fast failure) while the verdict over A is made: nothing is left
    `received`, and the study closed with a verdict that had not seen B."""
    a, b = instance_key(UID_A), instance_key(UID_B)
    spool.add_instance(a, STUDY, b"x", now=1000.0)
    queue(spool, a)
    ((_, generation),) = spool.quiet_studies(30, now=1031.0)
    seen = len(spool.study_instances(STUDY))
    spool.add_instance(b, STUDY, b"y")
    spool.mark_instance(b, REFUSED, "unsupported_photometric")
    assert not spool.finish_study(STUDY, generation, "study:x:0", [], instances=seen)
    assert spool.backlog()["open_studies"] == 1
    assert spool.finish_study(
        STUDY, generation, "study:x:0", [], instances=seen + 1
    )  # the verdict made again


def test_a_view_received_as_the_verdict_begins_is_not_counted_as_seen(spool: Spool) -> None:
    """B registered between the quiet check and the verdict's start: neither among the views the
    verdict reads nor unread, it was counted as seen, and once predicted (before the verdict was
    queued) the study closed with a verdict over A alone."""
    from fracsight.dicom.worker import Worker

    a, b = instance_key(UID_A), instance_key(UID_B)
    spool.add_instance(a, STUDY, b"x", now=1000.0)
    queue(spool, a)
    ((study, generation),) = spool.quiet_studies(30, now=1031.0)
    spool.add_instance(b, STUDY, b"y")
    worker = Worker.__new__(Worker)  # its study step alone: the job it hands to the pool is kept
    worker.spool, worker._cache, worker._studies, jobs = spool, {}, {}, []
    worker._submit = lambda _jobs, job, *_: jobs.append(job)
    worker._start_study(study, generation)
    (job,) = jobs
    assert job.keys == (a,) and job.instances == 1
    queue(spool, b)
    assert not spool.finish_study(study, generation, job.owner, [], instances=job.instances)


def test_recovery_registers_fsynced_files_without_a_row_and_empties_tmp(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.add_instance(instance_key(UID_A), STUDY, b"x", now=1000.0)
    orphan = instance_key(UID_B)
    spool.write_file(spool.instance_path(orphan), b"y")  # the crash came before its row was committed
    (spool.tmp_dir / "torn.part").write_bytes(b"half")
    spool.close()

    spool = Spool(tmp_path / "spool")
    assert spool.recover(lambda path: STUDY) == 1
    assert {r.key for r in spool.received(10)} == {instance_key(UID_A), orphan}
    assert list(spool.tmp_dir.iterdir()) == []
    spool.restart_quiet_time()  # the node does it once it listens again
    deadline = spool.next_study_deadline(30)
    assert deadline is not None and deadline > time.time() + 25


def test_an_open_studys_quiet_time_starts_again_when_the_node_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart the modality can send a study's other images only once the node listens
    again: its quiet time starts then. It started when the spool was recovered, before the model
    was loaded (seconds with worker processes on a busy machine), so a study got a verdict over
    its first images as soon as the node was up, and a second one when the rest arrived."""
    from dicom_support import free_port
    from fracsight.dicom.node import Node, NodeConfig
    from fracsight.dicom.scp import StoreSCP
    from fracsight.dicom.sender import DimseDestination
    from fracsight.dicom.worker import Worker

    spool = Spool(tmp_path / "spool")
    key = instance_key(UID_A)
    spool.add_instance(key, STUDY, b"x", now=time.time() - 60)  # the study's first image; then a crash
    spool.queue_many([(key, [])])  # predicted (nothing to send): the study waits for its quiet time
    spool.close()
    monkeypatch.setattr(Worker, "start_processes", lambda self: time.sleep(1.0))  # a slow model load
    listening: list[float] = []
    start = StoreSCP.start

    def start_and_note(self: StoreSCP) -> None:
        start(self)
        listening.append(time.time())

    monkeypatch.setattr(StoreSCP, "start", start_and_note)
    config = NodeConfig(
        spool=tmp_path / "spool",
        allowed=("MODALITY",),
        destination=DimseDestination("127.0.0.1", free_port(), "PACS"),  # nothing is sent
        host="127.0.0.1",
        port=0,
        quiet_time=30,
        processes=0,
    )
    node = Node(config)
    try:
        node.start()
        assert node.spool is not None
        deadline = node.spool.next_study_deadline(30)
        assert deadline is not None and deadline >= listening[0] + 30
        assert node.spool.backlog()["open_studies"] == 1
    finally:
        node.stop()


def test_pruning_deletes_a_finished_studys_files_but_remembers_its_instances(spool: Spool) -> None:
    key = instance_key(UID_A)
    spool.add_instance(key, STUDY, b"x", now=1000.0)
    spool.mark_sent(spool.due(10))  # nothing yet: the image is not predicted
    queue(spool, key)
    owner = f"study:{study_key(STUDY)}:0"
    verdict = spool.results_folder(owner) / "0.dcm"
    spool.write_file(verdict, b"study sr")
    assert spool.prune(0) == 0  # results still to send: nothing goes
    spool.finish_study(STUDY, 0, owner, [verdict])
    spool.mark_sent(spool.due(10))
    # kept for --keep-files after delivery (the image itself arrived long before: now=1000.0)
    assert spool.prune(60) == 0 and spool.instance_path(key).exists()
    assert spool.prune(0) == 1
    assert not spool.instance_path(key).exists() and not spool.results_folder(key).exists()
    assert not verdict.parent.exists()
    assert not spool.add_instance(key, STUDY, b"x again")  # still known: not processed twice


def test_metrics_render_every_counter_and_the_backlog(spool: Spool) -> None:
    spool.add_instance(instance_key(UID_A), STUDY, b"x")
    spool.count("refused", "unsupported_modality")
    spool.count("associations_rejected", "calling_ae_title")
    text = render(spool)
    assert "fracsight_dicom_received_total 1" in text
    assert 'fracsight_dicom_refused_total{code="unsupported_modality"} 1' in text
    assert 'fracsight_dicom_associations_rejected_total{reason="calling_ae_title"} 1' in text
    assert 'fracsight_dicom_backlog{stage="to_predict"} 1' in text
    assert "# TYPE fracsight_dicom_results_sent_total counter" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pacs.local:104:PACS", ("pacs.local", 104, "PACS")),
        ("127.0.0.1:11112", ("127.0.0.1", 11112, "ANY-SCP")),
        ("[::1]:104:PACS", ("::1", 104, "PACS")),  # as URLs write an IPv6 address (was host "[::1]")
    ],
)
def test_dimse_addresses(text: str, expected: tuple[str, int, str]) -> None:
    assert parse_dimse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["pacs", "pacs:port:AE", "pacs:0:AE", "pacs:104:" + "A" * 17, "a" * 64 + ":104", "a..b:104"]
)
def test_bad_dimse_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|port|AE title|host name"):
        parse_dimse_address(text)


def test_files_needing_more_than_128_presentation_contexts_go_over_several_associations() -> None:
    pairs = {i: ("1.2.840.10008.5.1.4.1.1.1", f"1.2.3.{i % 130}") for i in range(260)}
    groups = _association_groups(pairs)
    assert [i for g in groups for i in g] == list(range(260))  # every file once, in order
    assert all(len({pairs[i] for i in g}) <= 128 for g in groups)
    assert _association_groups({0: ("a", "b"), 1: ("a", "b")}) == [[0, 1]]


@pytest.mark.parametrize(
    ("photometric", "length", "refused"),
    [
        (
            "YBR_FULL_422",
            4 * 4 * 2,
            False,
        ),  # two samples per pixel (PS3.3 C.7.6.3.1.2), as the reader reads it
        ("RGB", 4 * 4 * 2, True),
        ("RGB", 4 * 4 * 3, False),
    ],
)
def test_received_native_pixel_data_length_follows_the_photometric_interpretation(
    photometric: str, length: int, refused: bool
) -> None:
    from pydicom import Dataset
    from pydicom.uid import ExplicitVRLittleEndian

    from fracsight.dicom.scp import Refusal, check_received

    ds = Dataset()
    ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.1", "CR"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = UID_A, STUDY, STUDY + ".1"
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated = 3, photometric, 8
    ds.PixelData = bytes(length)
    if refused:
        with pytest.raises(Refusal):
            check_received(ds, ExplicitVRLittleEndian)
    else:
        assert check_received(ds, ExplicitVRLittleEndian) == (UID_A, STUDY)


@pytest.mark.parametrize(
    ("changes", "code", "comment"),
    [
        ({"Modality": "CT"}, "unsupported_modality", "Modality CT refused: projection radiographs only"),
        (  # a radiograph's Modality on an RT Image: the SOP Class is what is refused, said so
            {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.481.1"},
            "unsupported_modality",
            "SOP Class RT Image Storage refused: not a radiograph",
        ),
        (  # fracsight's own capture, Modality OT as any secondary capture: said to be fracsight's,
            # and acknowledged without being kept (below), as a report is
            {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7", "Modality": "OT", "ManufacturerModelName": "own"},
            "own_result",
            "a result object fracsight wrote",
        ),
        (
            {"Modality": "SR", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.88.11"},  # Basic Text SR
            "not_an_image",
            "Modality SR: no image to assess",
        ),
        (  # an image whose Modality says KO: mislabelled, refused (acknowledged, it was dropped unsaid)
            {"Modality": "KO"},
            "unsupported_modality",
            "Modality KO refused: projection radiographs only",
        ),
        (
            {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.11.1"},  # a presentation state, whatever its Modality
            "not_an_image",
            "SOP Class Grayscale Softcopy Presentation State Storage: no image to assess",
        ),
        ({"SeriesInstanceUID": None}, "missing_uid", "no valid SeriesInstanceUID"),  # was stored, then failed
        (  # spooled, then decoded in full only to be refused by the reader
            {"Rows": 14000, "Columns": 14000},
            "image_too_large",
            "14000 x 14000 pixels: over the reader's 50,000,000-pixel limit",
        ),
    ],
)
def test_a_refused_instance_is_told_the_reason_that_applies(changes: dict, code: str, comment: str) -> None:
    from pydicom import Dataset
    from pydicom.uid import ExplicitVRLittleEndian

    from fracsight.dicom.scp import Refusal, check_received
    from fracsight.io.dicom_gate import RESULT_MODEL_NAME

    ds = Dataset()
    ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.1", "CR"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = UID_A, STUDY, STUDY + ".1"
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated = 1, "MONOCHROME2", 8
    ds.PixelData = bytes(16)
    assert check_received(ds, ExplicitVRLittleEndian) == (UID_A, STUDY)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, RESULT_MODEL_NAME if value == "own" else value)
    with pytest.raises(Refusal) as refused:
        check_received(ds, ExplicitVRLittleEndian)
    assert (refused.value.code, refused.value.comment) == (code, comment)
    # no image to assess: acknowledged (a failure status ended a study sent whole at the first one)
    from fracsight.dicom.scp import STATUS

    assert (refused.value.status == STATUS["success"]) == (code in ("not_an_image", "own_result"))


def _queue_sr(spool: Spool, uid: str) -> None:
    """A (bare) Comprehensive SR result object for ``uid``, queued in the outbox."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.33", uid
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = spool.results_folder(instance_key(uid)) / "sr.dcm"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    spool.write_file(path, buffer.getvalue())
    spool.queue_many([(instance_key(uid), [path])])


def test_results_queued_while_the_destination_is_down_wait_for_the_back_off(spool: Spool) -> None:
    """Nothing listens on the port: the first batch fails and backs off; results queued during the
    back-off are not tried at once (each try would double the back-off: a minute after seconds)."""
    from dicom_support import free_port
    from fracsight.dicom.sender import DimseDestination, Sender

    sender = Sender(spool, DimseDestination("127.0.0.1", free_port(), "PACS", timeout=5), base_delay=30)
    _queue_sr(spool, UID_A)
    assert sender.send_once()  # tried: connection refused, 30 s back-off
    _queue_sr(spool, UID_B)
    assert not sender.send_once()  # due, but the destination is known down: not tried
    assert sender._failures == 1
    sender._retry_at = 0  # as if the back-off were over: the new results are tried, and back off longer
    assert sender.send_once() and sender._failures == 2


def test_a_peer_that_takes_none_of_the_objects_refuses_them_and_is_not_down(spool: Spool) -> None:
    """A C-STORE SCP (pynetdicom, on loopback) that stores CT only: an SR batch is refused object by
    object (retried, then given up), and the destination is not backed off as if it were down."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    from dicom_support import free_port
    from fracsight.dicom.sender import DimseDestination, Sender

    port = free_port()
    scp = AE(ae_title="CTONLY")
    scp.add_supported_context(CTImageStorage)
    server = scp.start_server(("127.0.0.1", port), block=False)
    try:
        sender = Sender(spool, DimseDestination("127.0.0.1", port, "CTONLY", timeout=5), give_up_after=1)
        _queue_sr(spool, UID_A)
        assert sender.send_once()
        assert sender._failures == 0 and sender._retry_at == 0
        assert spool.counters()["send_failed"] == {"no_presentation_context": 1}  # given up
    finally:
        server.shutdown()


def test_a_pacs_that_rejects_then_takes_the_results_is_logged_as_waited_for_then_reached(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    """A PACS that rejects the association (a called AE title it does not know): pynetdicom's three
    ERROR lines ("Association Rejected", "Result: ...", "Reason: ...") before the sender's warning
    that it waits; one ERROR is left, saying the rejection is permanent (a setting to fix). And
    once the PACS took the results, the log said nothing (its last word was that results wait)."""
    import logging

    from pynetdicom import AE, evt
    from pynetdicom.sop_class import ComprehensiveSRStorage
    from typer.testing import CliRunner

    from dicom_support import free_port
    from fracsight.cli import app
    from fracsight.dicom._logging import setup_logging
    from fracsight.dicom.metrics import health
    from fracsight.dicom.sender import DimseDestination, Sender

    before = logging.getLogger("fracsight").level
    setup_logging("INFO")
    port = free_port()
    scp = AE(ae_title="PACS")
    scp.require_called_aet = True
    scp.add_supported_context(ComprehensiveSRStorage)
    stored = [(evt.EVT_C_STORE, lambda event: 0x0000)]
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=stored)
    try:
        rejected = Sender(spool, DimseDestination("127.0.0.1", port, "NOTPACS", timeout=5), base_delay=0)
        _queue_sr(spool, UID_A)
        with caplog.at_level(logging.INFO):
            assert rejected.send_once() and rejected._failures == 1
            assert health(spool)["status"] == "degraded" and health(spool)["retrying"] == 1
            # `dicom status` says it too: its counters alone could not tell a PACS down from one taking
            # (with the spool held as a running node holds it; with none, it says no node runs)
            command = ["dicom", "status", "--spool", str(spool.root)]
            held = _lock_spool(spool.root)
            try:
                said = CliRunner().invoke(app, command)
            finally:
                os.close(held)
            assert said.exit_code == 0 and said.stdout.startswith(
                "status: degraded (1 result object(s) wait to be sent again: is the destination down?)\n"
            ), said.output
            stopped = CliRunner().invoke(app, command).stdout
            assert stopped.startswith("status: stopped (no node is running on this spool: 0 image(s) to ")
            assert "1 result object(s) to send" in stopped and "\nnode: not running\n" in stopped
            pacs = {r.getMessage(): r.levelno for r in caplog.records if r.name.startswith("pynetdicom")}
            # the lines around it are warnings; that the rejection is permanent (a setting to fix,
            # which no wait mends) stays an ERROR, one line
            assert pacs.pop("Result: Rejected Permanent, Source: Service User") == logging.ERROR
            assert pacs.pop("Association Rejected") == logging.WARNING
            assert set(pacs.values()) == {logging.WARNING}, pacs
            _queue_sr(spool, UID_B)
            _queue_sr(spool, UID_C)
            rejected._retry_at, rejected.batch_size = 0, 2
            assert rejected.send_once()
            # the backlog, not the try's batch (capped at batch_size: "32 wait" whatever it was)
            assert "3 result objects wait" in caplog.records[-1].getMessage()
            rejected.destination = DimseDestination("127.0.0.1", port, "PACS", timeout=5)  # the title fixed
            rejected._retry_at = 0
            assert rejected.send_once() and rejected._failures == 0
            assert health(spool)["status"] == "ok" and health(spool)["retrying"] == 0
        assert "is reachable again: 2 result objects delivered, 1 more to send" in caplog.text
    finally:
        server.shutdown()
        logging.getLogger("fracsight").setLevel(before)


def test_a_spool_low_on_space_is_degraded_and_its_free_space_a_gauge(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spool disk filled by an open study refused every image (0xA700) and could not write the
    study's verdict, for as long as nobody freed space, while /healthz said "ok"."""
    import shutil

    from fracsight.dicom import metrics

    free = shutil.disk_usage(spool.root).free
    assert metrics.health(spool)["spool_free_bytes"] > 0 and not metrics.health(spool)["spool_low_space"]
    (gauge,) = [
        line for line in render(spool).splitlines() if line.startswith("fracsight_dicom_spool_free_bytes")
    ]
    assert int(gauge.split()[1]) > 0
    monkeypatch.setattr(metrics, "LOW_SPOOL_SPACE", free + 10**12)  # a disk this size: nearly full
    said = metrics.health(spool)
    assert said["status"] == "degraded" and said["spool_low_space"] and said["retrying"] == 0


def test_a_spool_that_takes_no_writes_is_degraded(spool: Spool) -> None:
    """A spool disk ext4 turned read-only after an error (neither statvfs nor access() says so): the
    node refused every image (0xA700), and could not count the refusals, while /healthz said "ok".
    Here the folder instances are written through is a file: no write goes through either."""
    import shutil

    from fracsight.dicom import metrics

    assert metrics.health(spool, probe=True)["spool_writable"] is True
    shutil.rmtree(spool.tmp_dir)
    spool.tmp_dir.write_bytes(b"")
    with pytest.raises(OSError):
        spool.write_file(spool.instance_path("1.2.3.4"), b"DICM")
    said = metrics.health(spool, probe=True)
    assert said["status"] == "degraded" and said["spool_writable"] is False and said["retrying"] == 0
    assert metrics.health(spool)["spool_writable"] is True  # `dicom status` only reads


def test_a_pacs_out_of_resources_is_waited_for_never_given_up(spool: Spool) -> None:
    """A C-STORE SCP (pynetdicom, on loopback) that answers 0xA700 (Refused: Out of Resources: its
    disk full) to its first stores: each was a refusal, and ten of them (about 5 minutes) gave the
    results up for good. Now they wait with the back-off, as for a PACS that is down, and arrive."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import ComprehensiveSRStorage

    from dicom_support import free_port
    from fracsight.dicom.sender import DimseDestination, Sender

    answers = [0xA700, 0xA7FF]
    port = free_port()
    scp = AE(ae_title="PACS")
    scp.add_supported_context(ComprehensiveSRStorage)
    handlers = [(evt.EVT_C_STORE, lambda event: answers.pop(0) if answers else 0x0000)]
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        destination = DimseDestination("127.0.0.1", port, "PACS", timeout=5)
        sender = Sender(spool, destination, base_delay=0.01, give_up_after=1)
        _queue_sr(spool, UID_A)
        for _ in range(2):
            assert sender.send_once()
            assert "send_failed" not in spool.counters() and sender._failures > 0
            time.sleep(0.1)
        assert sender.send_once()
        assert spool.counters()["results_sent"] == {"": 1} and sender._failures == 0
        # 0xA700 for one object while the PACS stores another in the same attempt (Orthanc answers
        # so for an object it can never store): a refusal of that one, never a back-off over all
        answers.extend([0x0000, 0xA700])
        _queue_sr(spool, UID_B)
        _queue_sr(spool, UID_C)
        assert sender.send_once()
        assert spool.counters()["send_failed"] == {"status_0xA700": 1} and sender._failures == 0
    finally:
        server.shutdown()


def test_an_unknown_log_level_is_a_bad_option(tmp_path: Path) -> None:
    """docs/dicom.md: a bad option exits 2 with a message (it was a ValueError traceback, exit 1)."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    args = ["dicom", "listen", "--spool", str(tmp_path / "spool"), "--allow", "ORTHANC"]
    args += ["--to", "127.0.0.1:4242:ORTHANC", "--processes", "0", "--log-level", "LOUD"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--log-level" in result.output and "DEBUG, INFO, WARNING or ERROR" in result.output
    assert not (tmp_path / "spool").exists()


@pytest.mark.parametrize(
    ("option", "value"), [("--quiet-time", "inf"), ("--max-backoff", "inf"), ("--metrics-port", "0")]
)
def test_an_endless_wait_or_a_random_metrics_port_is_a_bad_option(
    option: str, value: str, tmp_path: Path
) -> None:
    """`--quiet-time inf` started a node whose studies never got a verdict, `--max-backoff inf` one
    that could stop trying a destination for good, `--metrics-port 0` a scrape target on a port
    nobody knows: each is now refused before anything starts."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    args = ["dicom", "listen", "--spool", str(tmp_path / "spool"), "--allow", "ORTHANC"]
    args += ["--to", "127.0.0.1:4242:ORTHANC", "--processes", "0", option, value]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert option in result.output and "Traceback" not in result.output
    assert not (tmp_path / "spool").exists()


def test_a_spool_that_is_a_file_or_holds_other_files_is_refused_and_nothing_deleted(tmp_path: Path) -> None:
    """The node empties ``tmp/`` and deletes unreadable ``instances/*.dcm`` when it starts: pointed at
    a folder that was not its spool (a home, /var), it deleted the user's files there; a file for a
    spool failed late with "File exists". Both are now refused as bad options before anything starts."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    (tmp_path / "file").write_text("mine")
    other = tmp_path / "other"
    (other / "tmp").mkdir(parents=True)
    (other / "instances").mkdir()
    (other / "tmp" / "notes.txt").write_text("mine")
    (other / "instances" / "scan.dcm").write_text("mine")
    # --model names no bundle: a spool that is accepted ends at the model (exit 2), nothing started
    tail = ["--allow", "ORTHANC", "--to", "127.0.0.1:4242:ORTHANC", "--model", str(tmp_path / "none")]
    for spool, message in (
        (tmp_path / "file", "is not a folder"),
        (other, "holds other files and no spool.db"),
    ):
        result = CliRunner().invoke(app, ["dicom", "listen", "--spool", str(spool), *tail])
        assert result.exit_code == 2 and message in result.output, result.output
    assert (tmp_path / "file").read_text() == "mine"
    assert (other / "tmp" / "notes.txt").read_text() == "mine"
    assert (other / "instances" / "scan.dcm").read_text() == "mine"
    # a new folder, an empty one, one left by a start that failed before its database: accepted
    (tmp_path / "left" / "tmp").mkdir(parents=True)
    for spool in (tmp_path / "new", tmp_path / "left"):
        result = CliRunner().invoke(app, ["dicom", "listen", "--spool", str(spool), *tail])
        assert result.exit_code == 2 and "unknown_model" in result.output, result.output


def test_a_host_the_resolver_cannot_take_or_a_folder_to_send_is_a_bad_option(tmp_path: Path) -> None:
    """A host name with a label over 63 characters (or an empty one) ended in a UnicodeError traceback
    from `send` and `listen`; an empty --metrics-host listened on every interface; `send` of a
    folder said "no such file"."""
    from typer.testing import CliRunner

    from dicom_support import make_ct_dicom
    from fracsight.cli import app

    long = "a" * 64
    source = make_ct_dicom(tmp_path / "a.dcm")
    listen = ["dicom", "listen", "--spool", str(tmp_path / "s"), "--allow", "PACS"]
    for args in (
        ["dicom", "send", str(source), "--to", f"{long}:104:PACS"],
        [*listen, "--to", "a..b:104:PACS"],
        [*listen, "--to", "127.0.0.1:1:PACS", "--host", long],
        [*listen, "--to", "127.0.0.1:1:PACS", "--metrics-host", "a..b"],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "not a host name or address" in result.output, result.output
    assert not (tmp_path / "s").exists()  # nothing started
    result = CliRunner().invoke(app, ["dicom", "send", str(tmp_path), "--to", "127.0.0.1:1:PACS"])
    assert result.exit_code == 2 and "error (not_a_file): a folder" in result.output, result.output


def test_a_destination_without_its_ae_title_is_a_bad_option(tmp_path: Path) -> None:
    """``--to HOST:PORT`` started a node that called the PACS "ANY-SCP", which a PACS that checks
    the called AE title (dcm4chee, most) rejects for ever: every result waited, the node "ready"."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    listen = ["dicom", "listen", "--spool", str(tmp_path / "s"), "--allow", "PACS", "--to", "127.0.0.1:104"]
    result = CliRunner().invoke(app, [*listen, "--model", str(tmp_path / "none")])  # never a node that runs
    assert result.exit_code == 2 and "names no AE title: HOST:PORT:AET" in result.output, result.output
    assert not (tmp_path / "s").exists()  # nothing started


def test_a_spool_a_running_node_holds_is_refused_and_its_files_are_left_alone(tmp_path: Path) -> None:
    """A second node on the same spool (a unit file and a manual start) started as well: its
    recovery emptied the first node's ``tmp/`` (files being received) and both predicted and sent
    the same images. The node now holds ``node.lock`` while it runs; a second one exits 1."""
    import fcntl
    import os
    import subprocess
    import sys

    from dicom_support import free_port

    Spool(tmp_path / "spool").close()
    (tmp_path / "spool" / "tmp" / "receiving").write_bytes(b"part of an image")
    fd = os.open(tmp_path / "spool" / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the running node holds it
    try:
        entry = [sys.executable, "-c", "from fracsight.cli import main; main()"]
        args = ["dicom", "listen", "--spool", str(tmp_path / "spool"), "--allow", "PACS", "--processes", "0"]
        args += ["--host", "127.0.0.1", "--port", str(free_port()), "--to", "127.0.0.1:1:PACS"]
        result = subprocess.run([*entry, *args], capture_output=True, text=True, timeout=60)
    finally:
        os.close(fd)
    assert result.returncode == 1, result.stderr
    assert "error (spool_in_use)" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "spool" / "tmp" / "receiving").read_bytes() == b"part of an image"


def test_a_spool_db_that_is_not_a_database_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dicom_support import free_port
    from fracsight.cli import app

    (tmp_path / "spool.db").write_bytes(b"not a database")
    result = CliRunner().invoke(app, ["dicom", "status", "--spool", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "error (not_a_spool)" in result.output and "file is not a database" in result.output
    args = ["dicom", "listen", "--spool", str(tmp_path), "--allow", "ORTHANC", "--processes", "0"]
    args += ["--host", "127.0.0.1", "--port", str(free_port()), "--to", "127.0.0.1:4242:ORTHANC"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "error (node_start)" in result.output and "file is not a database" in result.output
    assert (tmp_path / "spool.db").read_bytes() == b"not a database"


def test_a_taken_port_is_named_dicom_or_metrics(tmp_path: Path) -> None:
    """The node cannot listen: the message says which of its two ports is taken (it said "listening
    on HOST:PORT or metrics HOST:PORT"), before the spool is made or the model loaded (it loaded
    the model and warmed its worker processes, about 20 s, made the spool, and with the metrics
    port taken had its DICOM port open meanwhile); the metrics port given as the DICOM one too."""
    import socket

    from typer.testing import CliRunner

    from dicom_support import free_port
    from fracsight.cli import app

    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        listen = ["dicom", "listen", "--allow", "PACS", "--processes", "0"]  # refused before any model
        listen += ["--to", "127.0.0.1:1:PACS", "--host", "127.0.0.1"]
        same = free_port()
        for spool, ports, named in (
            ("a", ["--port", str(busy)], f"the DICOM port 127.0.0.1:{busy}"),
            (
                "b",
                ["--port", str(free_port()), "--metrics-port", str(busy)],
                f"the metrics port 127.0.0.1:{busy}",
            ),
            ("c", ["--port", str(same), "--metrics-port", str(same)], f"the metrics port 127.0.0.1:{same}"),
        ):
            result = CliRunner().invoke(app, [*listen, "--spool", str(tmp_path / spool), *ports])
            assert result.exit_code == 1, result.output
            assert f"error (node_start): {named}: Address already in use" in result.output, result.output
            assert "Traceback" not in result.output
            assert not (tmp_path / spool).exists()  # nothing made: refused before the node starts


def test_a_spool_the_node_may_not_write_says_which_user_it_runs_as(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host folder bind-mounted as the container's spool keeps its host owner: "error (node_start):
    .../instances: Permission denied", and restarted for ever without saying what to change. (As
    the suite runs as root, the refusal is the one the node's start raises there, planted.)"""
    import os

    from typer.testing import CliRunner

    from dicom_support import free_port
    from fracsight.cli import app
    from fracsight.dicom import node

    spool = tmp_path / "spool"

    def refused(self) -> None:
        raise PermissionError(13, "Permission denied", str(spool / "instances"))

    monkeypatch.setattr(node.Node, "serve_forever", refused)
    args = ["dicom", "listen", "--spool", str(spool), "--allow", "ORTHANC", "--processes", "0"]
    args += ["--host", "127.0.0.1", "--port", str(free_port()), "--to", "127.0.0.1:4242:ORTHANC"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    said = f"instances: Permission denied: the node runs as uid {os.getuid()}; make the spool folder"
    assert said in result.output, result.output
    # a spool made by an earlier run as another user: its database is the first thing refused
    import sqlite3

    def unopenable(self) -> None:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(node.Node, "serve_forever", unopenable)
    spool.mkdir()
    writable = os.access

    def access(path, mode: int, **kw) -> bool:  # what a root test cannot be refused: writing there
        return False if mode & os.W_OK and str(path).startswith(str(spool)) else writable(path, mode, **kw)

    monkeypatch.setattr(os, "access", access)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert f"unable to open database file: the node runs as uid {os.getuid()}" in result.output, result.output


def test_status_only_reads_the_spool(tmp_path: Path) -> None:
    """`dicom status` is a reading command: it creates no folder of the spool and no table in a
    database that is not a node's (which it names instead)."""
    import sqlite3

    from typer.testing import CliRunner

    from fracsight.cli import app

    store = Spool(tmp_path / "spool")
    store.count("received", n=3)
    store.close()
    for name in ("instances", "tmp"):
        (tmp_path / "spool" / name).rmdir()
    result = CliRunner().invoke(app, ["dicom", "status", "--spool", str(tmp_path / "spool"), "--json"])
    assert result.exit_code == 0, result.output
    said = json.loads(result.output)
    assert said["counters"]["received"] == 3 and said["status"] == "ok" and said["retrying"] == 0
    assert said["spool_free_bytes"] > 0 and said["spool_low_space"] is False  # as /healthz gives them
    text = CliRunner().invoke(app, ["dicom", "status", "--spool", str(tmp_path / "spool")]).stdout
    assert text.startswith("status: ok\nspool free: ") and "\ncounters:\n  received: 3\n" in text
    assert not (tmp_path / "spool" / "instances").exists() and not (tmp_path / "spool" / "tmp").exists()

    other = tmp_path / "other"
    other.mkdir()
    with sqlite3.connect(other / "spool.db") as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    result = CliRunner().invoke(app, ["dicom", "status", "--spool", str(other)])
    assert result.exit_code == 2 and "error (not_a_spool)" in result.output, result.output
    assert "no counters, instances, outbox, studies table" in result.output
    with sqlite3.connect(other / "spool.db") as db:
        assert [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["notes"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(HEAD_KINDS))
def test_the_worker_handles_every_head_kind(
    kind: str, head_bundle, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """The node's worker (in this process, no network) with each head combination: an image gets its
    three result objects, the study its verdict; nothing fails."""
    import pydicom

    from dicom_support import make_radiograph_dicom
    from fracsight.dicom.worker import Worker
    from fracsight.inference import Predictor

    _, bundle = head_bundle(kind)
    spool = Spool(tmp_path / "spool")
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    source = make_radiograph_dicom(image, tmp_path / "in.dcm", study_uid=STUDY)
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    spool.add_instance(instance_key(ds.SOPInstanceUID), STUDY, source.read_bytes())
    worker = Worker(spool, Predictor(bundle), kinds=("sr", "gsps", "capture"), quiet_time=0)
    assert worker.work_once()  # the image
    assert worker.work_once()  # the study, quiet at once
    counters = status(spool)["counters"]
    assert counters["predicted"] == 1 and counters["study_verdicts"] == 1
    assert counters["failed"] == {} and counters["refused"] == {}
    modalities = sorted(pydicom.dcmread(row.path).Modality for row in spool.due(10))
    assert modalities == ["OT", "PR", "SR", "SR"]


@pytest.mark.slow
def test_a_worker_process_that_dies_is_replaced_and_only_its_image_fails(
    fracatlas_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With worker processes: an image whose job kills its process (twice: once in a batch, once
    alone) is failed; the image it shared the first batch with is predicted in a new process."""
    import dicom_support
    from fracsight.dicom import worker as worker_module
    from fracsight.dicom.worker import Worker
    from fracsight.inference import Predictor

    spool, keys = _spool_of_two_radiographs(fracatlas_dir, tmp_path)
    monkeypatch.setenv(dicom_support.POISON_ENV, keys[0])
    monkeypatch.setattr(worker_module, "make_image_results", dicom_support.poisoned_image_results)
    worker = Worker(spool, Predictor(), quiet_time=3600, processes=1)
    try:
        deadline = time.monotonic() + 240
        while spool.received(10) and time.monotonic() < deadline:
            if not worker.work_once():
                worker._collect(wait=True)
        counters = status(spool)["counters"]
        assert counters["failed"] == {"results_error": 1}
        assert counters["predicted"] == 1
        assert sorted(r.key for r in spool.study_instances(STUDY) if r.state == FAILED) == [keys[0]]
        assert len(spool.due(10)) == 2  # the other image's SR and presentation state
    finally:
        worker.close()


@pytest.mark.slow
def test_a_worker_process_that_died_while_idle_is_replaced(fracatlas_dir: Path, tmp_path: Path) -> None:
    """Killed between jobs (an OOM kill, say), the pool is broken before any job of it fails: the
    next submission starts new processes instead of failing forever."""
    import os
    import signal

    import pydicom

    from dicom_support import make_radiograph_dicom
    from fracsight.dicom.worker import Worker
    from fracsight.inference import Predictor

    spool = Spool(tmp_path / "spool")
    worker = Worker(spool, Predictor(), quiet_time=3600, processes=1)
    try:
        worker.start_processes()
        pool = worker.processing._pool
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not pool._broken and time.monotonic() < deadline:  # the executor notices on its own
            time.sleep(0.05)
        image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
        source = make_radiograph_dicom(image, tmp_path / "a.dcm", study_uid=STUDY)
        key = instance_key(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID)
        spool.add_instance(key, STUDY, source.read_bytes())
        deadline = time.monotonic() + 120
        while spool.received(10) and time.monotonic() < deadline:
            if not worker.work_once():
                worker._collect(wait=True)
        assert status(spool)["counters"]["predicted"] == 1
    finally:
        worker.close()


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_metrics_serve_on_an_ipv6_address(tmp_path: Path) -> None:
    """`--metrics-host ::1`: the metrics server was IPv4 only, and the node stopped at start with
    "Address family for hostname not supported", its DICOM port (which takes IPv6) already open."""
    import urllib.request

    from fracsight.dicom.metrics import MetricsServer

    store = Spool(tmp_path / "spool")
    store.count("received", n=2)
    server = MetricsServer(store, "::1", 0)
    server.start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{server.port}/healthz", timeout=10) as answer:
            health = json.loads(answer.read())
    finally:
        server.stop()
        store.close()
    assert health["status"] == "ok" and health["counters"]["received"] == 2


def test_the_dicom_libraries_stay_quiet_when_imported_after_logging_is_set_up() -> None:
    """pydicom's import put its logger back to WARNING after the node had set it to CRITICAL, and
    its warnings quote values (a leading-zero UID, an unknown character set); a destination that
    never answers logged ERROR on every try, where a refused one is a WARNING."""
    import subprocess
    import sys

    code = """
import logging
from fracsight.dicom._logging import setup_logging
setup_logging("INFO")
import pydicom  # first here, as in the node and its worker processes
assert logging.getLogger("pydicom").level == logging.CRITICAL, logging.getLogger("pydicom").level
logging.getLogger("pynetdicom.association").error("DIMSE timeout reached while waiting for message response")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "WARNING pynetdicom.association: DIMSE timeout reached" in done.stderr, done.stderr


@pytest.mark.slow
def test_a_study_verdict_counts_the_images_whose_results_were_given_up(
    fracatlas_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An image whose result objects the PACS refused for good (one that takes no presentation
    states) is `undelivered`, but it was predicted: the study's verdict left it out ("verdict over 1
    images" for a study of 2, over 0 when all were refused)."""
    import logging

    from fracsight.dicom.spool import UNDELIVERED
    from fracsight.dicom.worker import Worker
    from fracsight.inference import Predictor

    spool, keys = _spool_of_two_radiographs(fracatlas_dir, tmp_path)
    worker = Worker(spool, Predictor(), kinds=("sr",), quiet_time=3600)
    while spool.received(10):
        assert worker.work_once()
    refused = [row for row in spool.due(10) if row.owner == keys[0]]
    assert spool.retry_later(refused, 0, "status_0xA900", give_up_after=1) == len(refused)
    assert spool.states()[UNDELIVERED] == 1
    with caplog.at_level(logging.INFO, logger="fracsight.dicom.worker"):
        worker.finish_study(STUDY, 0)
    said = [r.getMessage() for r in caplog.records if "verdict over" in r.getMessage()]
    assert said and "verdict over 2 images" in said[0], said


def test_pruning_keeps_an_image_received_while_it_runs(spool: Spool) -> None:
    """A late view of a study, acknowledged (file on disk, row `received`) between pruning's choice
    of the studies and its deletes, had its file deleted with the study's: lost after 0x0000."""
    key, late = instance_key(UID_A), instance_key(UID_B)
    spool.add_instance(key, STUDY, b"x", now=1000.0)
    queue(spool, key)
    owner = f"study:{study_key(STUDY)}:0"
    spool.finish_study(STUDY, 0, owner, [])
    spool.mark_sent(spool.due(10))
    db = spool._db

    class Chosen(list):
        def fetchall(self) -> list:
            return list(self)

    class LateImage:  # the modality's late view arrives just after the studies were chosen
        def __getattr__(self, name: str) -> object:
            return getattr(db, name)

        def __enter__(self) -> object:
            return db.__enter__()

        def __exit__(self, *exc: object) -> object:
            return db.__exit__(*exc)

        def execute(self, sql: str, *args: object) -> object:
            done = db.execute(sql, *args)
            if sql.startswith("SELECT study_uid FROM studies") and not spool.has_instance(late):
                rows = done.fetchall()
                spool._db = db
                spool.add_instance(late, STUDY, b"late view")
                spool._db = self
                return Chosen(rows)
            return done

    spool._db = LateImage()  # type: ignore[assignment]
    try:
        spool.prune(0)
    finally:
        spool._db = db
    assert spool.instance_path(late).read_bytes() == b"late view"
    assert spool.states()["received"] == 1


@pytest.mark.slow
def test_a_study_verdict_over_fewer_views_than_it_has_is_not_reliable(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    """A study of two views, one refused by the reader (a 2-frame object): the study SR said "study
    of 1 image: fracture suspected" as if clean, where predict --study and `dicom results --study`
    say "not reliable: some views could not be read" (the unread view may be the fractured one)."""
    import pydicom

    from fracsight.dicom.spool import REFUSED
    from fracsight.dicom.worker import Worker
    from fracsight.inference import Predictor

    spool, keys = _spool_of_two_radiographs(fracatlas_dir, tmp_path)
    second = pydicom.dcmread(spool.instance_path(keys[1]))
    second.NumberOfFrames, second.PixelData = 2, second.PixelData * 2
    second.save_as(spool.instance_path(keys[1]))
    worker = Worker(spool, Predictor(), kinds=("sr",), quiet_time=3600)
    while spool.received(10):
        assert worker.work_once()
    assert spool.states()[REFUSED] == 1
    worker.finish_study(STUDY, 0)
    verdict = pydicom.dcmread(spool.results_folder(f"study:{study_key(STUDY)}:0") / "0.dcm")
    said = " ".join(str(e.value) for e in verdict.iterall() if e.VR in ("UT", "LO", "ST", "LT"))
    assert "not reliable: some views could not be read" in said, said
    assert "1 of 2 views could not be read: this result has not seen them" in said  # counted, not named


def _spool_of_two_radiographs(fracatlas_dir: Path, tmp_path: Path) -> tuple[Spool, list[str]]:
    """A spool that received two fractured FracAtlas radiographs of one study; their keys."""
    import pydicom

    from dicom_support import make_radiograph_dicom

    spool = Spool(tmp_path / "spool")
    keys = []
    for i, image in enumerate(sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:2]):
        source = make_radiograph_dicom(image, tmp_path / f"{i}.dcm", study_uid=STUDY)
        key = instance_key(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID)
        spool.add_instance(key, STUDY, source.read_bytes())
        keys.append(key)
    return spool, keys


def test_a_bundle_its_workers_cannot_load_stops_the_node_in_one_line(tmp_path: Path) -> None:
    """bundle.json's input_size edited: each worker's traceback (94 lines) ended the start; a
    check in the node's own process held the model's 40-70 MB there for good. Now each worker
    says it in one line, and the node stops with the error."""
    import shutil
    import subprocess
    import sys

    from dicom_support import free_port
    from fracsight.inference import resolve_bundle

    bundle = tmp_path / "edited"
    shutil.copytree(resolve_bundle(None), bundle)
    spec = json.loads((bundle / "bundle.json").read_text())
    spec["input_size"] = 128
    (bundle / "bundle.json").write_text(json.dumps(spec))
    command = [sys.executable, "-c", "from fracsight.cli import main; main()", "dicom", "listen"]
    command += ["--spool", str(tmp_path / "spool"), "--allow", "TEST", "--host", "127.0.0.1"]
    command += ["--port", str(free_port()), "--to", f"127.0.0.1:{free_port()}:PACS", "--model", str(bundle)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 1, done.stderr
    assert done.stderr.rstrip().endswith(
        "error (bundle_error): bundle.json says input_size 128, model.onnx takes 384 x 384 images"
    )
    assert "Traceback" not in done.stderr


def test_one_object_the_pacs_breaks_off_on_holds_no_other_back(spool: Spool) -> None:
    """A PACS that aborts the association on one object it cannot store (Orthanc on an "Odd
    Fragment Length"): the sender backed the whole batch off, and as the object came first again
    at every try, the 53 results behind it waited for ever, the log blaming the AE title."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import ComprehensiveSRStorage

    from dicom_support import free_port
    from fracsight.dicom.sender import NO_RESPONSE, DimseDestination, Sender

    # two in a row: the second was the first of the next association, and all waited again
    poisons, others = [UID_A, "1.2.826.0.1.3680043.8.498.19"], [UID_B, "1.2.826.0.1.3680043.8.498.13"]
    stored: list[str] = []

    def store(event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid in poisons:
            event.assoc.abort()
            return 0xC000
        stored.append(uid)
        return 0x0000

    port = free_port()
    scp = AE(ae_title="PACS")
    scp.add_supported_context(ComprehensiveSRStorage)
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
    try:
        for uid in (*poisons, *others):
            _queue_sr(spool, uid)
        sender = Sender(
            spool, DimseDestination("127.0.0.1", port, "PACS", timeout=5), base_delay=0, give_up_after=2
        )
        assert sender.send_once()
        assert stored == others and sender._failures == 0  # the destination is up: no back-off
        left = spool.due(10)
        assert [r.owner for r in left] == [instance_key(uid) for uid in poisons]
        assert [r.attempts for r in left] == [1, 1] and spool.retrying() == 2
        # alone, it cannot be told from a PACS taking nothing: waited for, never given up for that
        _queue_sr(spool, "1.2.826.0.1.3680043.8.498.14")  # a later result beside it: told apart again
        assert sender.send_once()
        assert spool.due(10) == [] and spool.retrying() == 0  # given up at its second refusal
        assert spool.counters()["send_failed"] == {NO_RESPONSE: 2}
    finally:
        server.shutdown()


def test_a_pacs_that_answers_no_store_is_tried_once_a_batch(spool: Spool) -> None:
    """A PACS that takes the association and answers no store: setting each object aside and
    trying the rest on a new association waited out the whole timeout once an object (three times
    30 s a try, past the container's stop grace). It is waited for as one destination down."""
    import time

    from pynetdicom import AE, evt
    from pynetdicom.sop_class import ComprehensiveSRStorage

    from dicom_support import free_port
    from fracsight.dicom.sender import DimseDestination, Sender

    associations: list[int] = []

    def silent(event: evt.Event) -> int:
        time.sleep(2.5)
        return 0x0000

    port = free_port()
    scp = AE(ae_title="PACS")
    scp.add_supported_context(ComprehensiveSRStorage)
    handlers = [(evt.EVT_C_STORE, silent), (evt.EVT_ACCEPTED, lambda event: associations.append(1))]
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        for k in range(3):
            _queue_sr(spool, f"1.2.826.0.1.3680043.8.498.3{k}")
        sender = Sender(spool, DimseDestination("127.0.0.1", port, "PACS", timeout=1), base_delay=0)
        assert sender.send_once() and sender._failures == 1
        assert len(associations) == 1 and len(spool.due(10)) == 3  # all wait, none refused
    finally:
        server.shutdown()
