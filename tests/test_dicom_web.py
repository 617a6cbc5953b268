"""The DICOMweb paths against Orthanc's DICOMweb plugin: ``fracsight dicom study`` run again on a
study files no second set of results, a STOW-RS re-send of objects Orthanc already holds counts as
delivered and is stored once, and one object that fails a whole STOW-RS request (HTTP 500, through
a proxy in front of Orthanc) holds no other object back.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from dicom_support import FailingProxy, Orthanc, make_ct_dicom, make_radiograph_dicom, orthanc_available
from fracsight.cli import app
from fracsight.dicom.sender import DELIVERED, UNAVAILABLE, DestinationUnavailable, Sender, StowDestination
from fracsight.dicom.spool import SENT, UNDELIVERED, Spool, instance_key
from test_dicom_node import DEFAULT_KINDS, results_in

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not orthanc_available(), reason="needs Orthanc with its DICOMweb plugin"),
]


@pytest.fixture(scope="module")
def images(fracatlas_dir: Path) -> list[Path]:
    return sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[20:22]


def test_study_processed_again_files_no_second_set_of_results(images: list[Path], tmp_path: Path) -> None:
    study_uid = generate_uid()
    sources = [
        make_radiograph_dicom(image, tmp_path / f"{i}.dcm", study_uid=study_uid, instance_number=i + 1)
        for i, image in enumerate(images)
    ]
    expected = 2 * len(DEFAULT_KINDS) + 1
    with Orthanc(tmp_path / "orthanc") as orthanc:
        for path in [*sources, make_ct_dicom(tmp_path / "ct.dcm", study_uid=study_uid)]:
            orthanc.upload(path)
        command = ["dicom", "study", study_uid, "--dicomweb", orthanc.dicomweb_url]
        first = CliRunner().invoke(app, command)
        assert first.exit_code == 0, first.output
        uids = {str(ds.SOPInstanceUID) for ds in results_in(orthanc, study_uid)}
        assert len(uids) == expected
        again = CliRunner().invoke(app, command)
        assert again.exit_code == 0, again.output
        summary = json.loads(again.stdout)
        assert summary["predicted"] == 2
        assert list(summary["refused"].values()) == ["unsupported_modality"]  # the CT, by its code
        assert summary["own_results_skipped"] == expected
        assert summary["result_objects_stored"] == expected and summary["result_objects_failed"] == 0
        # the same objects again (same UIDs), stored once: no second report, overlay or verdict
        assert {str(ds.SOPInstanceUID) for ds in results_in(orthanc, study_uid)} == uids
        assert len(orthanc.find_instances(StudyInstanceUID=study_uid)) == 3 + expected
        # another operating point is another result: filed beside the first, never hidden by its UIDs
        triage = CliRunner().invoke(app, [*command, "--operating-point", "triage"])
        assert triage.exit_code == 0, triage.output
        added = [ds for ds in results_in(orthanc, study_uid) if str(ds.SOPInstanceUID) not in uids]
        assert len(added) == expected
        # and its verdict is a chain of its own: it claimed to replace the balanced verdict (one
        # Tracking UID for both), and a viewer following it showed triage's decision as current
        verdicts = [ds for ds in results_in(orthanc, study_uid) if _evidence(ds) == 2]
        assert len(verdicts) == 2 and len({_tracking(v) for v in verdicts}) == 2
        assert all("PredecessorDocumentsSequence" not in v for v in verdicts)
        # a study with nothing to assess (a CT alone) was exit 0, as a study done
        ct_study = generate_uid()
        orthanc.upload(make_ct_dicom(tmp_path / "ct-only.dcm", study_uid=ct_study))
        only_ct = CliRunner().invoke(app, ["dicom", "study", ct_study, "--dicomweb", orthanc.dicomweb_url])
        assert only_ct.exit_code == 1 and "nothing was predicted" in only_ct.output
        assert json.loads(only_ct.stdout)["predicted"] == 0


@pytest.mark.parametrize("stow_elsewhere", [False, True], ids=["same-service", "stow-elsewhere"])
def test_a_study_run_again_after_an_image_came_names_the_earlier_verdict(
    images: list[Path], fracatlas_dir: Path, tmp_path: Path, stow_elsewhere: bool
) -> None:
    """An image added to a study after `dicom study` ran: the next run filed a second verdict beside
    the first, unlinked (the node names the verdict it replaces). Now the new one names it, also
    where the results go to another service (--stow), where the earlier verdict was not looked for."""
    study_uid = generate_uid()
    third = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[0]
    paths = [
        make_radiograph_dicom(image, tmp_path / f"{i}.dcm", study_uid=study_uid, instance_number=i + 1)
        for i, image in enumerate([*images, third])
    ]
    with contextlib.ExitStack() as stack:
        orthanc = stack.enter_context(Orthanc(tmp_path / "orthanc"))
        command = ["dicom", "study", study_uid, "--dicomweb", orthanc.dicomweb_url, "--results", "sr"]
        held = orthanc
        if stow_elsewhere:
            held = stack.enter_context(Orthanc(tmp_path / "results"))
            command += ["--stow", held.dicomweb_url]
        for path in paths[:2]:
            orthanc.upload(path)
        assert CliRunner().invoke(app, command).exit_code == 0
        (first,) = [ds for ds in results_in(held, study_uid) if _evidence(ds) == 2]
        orthanc.upload(paths[2])
        again = CliRunner().invoke(app, command)
        assert again.exit_code == 0, again.output
        (second,) = [ds for ds in results_in(held, study_uid) if _evidence(ds) == 3]
    (named,) = second.PredecessorDocumentsSequence
    assert (
        named.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        == first.SOPInstanceUID
    )
    assert "PredecessorDocumentsSequence" not in first


def _tracking(ds: pydicom.Dataset) -> str:
    """The Tracking UID (112040) an SR's content tree carries."""
    stack = list(ds.ContentSequence)
    while stack:
        item = stack.pop()
        if item.get("ValueType") == "UIDREF" and item.ConceptNameCodeSequence[0].CodeValue == "112040":
            return str(item.UID)
        stack.extend(item.get("ContentSequence", []))
    raise AssertionError("no Tracking UID in the SR")


def _evidence(ds: pydicom.Dataset) -> int:
    """How many images an SR names as its evidence (a study verdict: all of the study's)."""
    return sum(
        len(series.ReferencedSOPSequence)
        for study in ds.get("CurrentRequestedProcedureEvidenceSequence", [])
        for series in study.ReferencedSeriesSequence
    )


def test_a_study_cut_short_by_a_search_limit_gets_no_verdict(images: list[Path], tmp_path: Path) -> None:
    """Orthanc 1.10 with LimitFindInstances 2 lists 3 of a study's 4 instances in two series, and
    nothing from offset 3 on: the verdict was made on those 3, exit 0. Now nothing is predicted or
    stored, and the error says why."""
    study_uid = generate_uid()
    with Orthanc(tmp_path / "orthanc", config={"LimitFindInstances": 2, "LimitFindResults": 2}) as orthanc:
        for series in range(2):
            series_uid = generate_uid()
            for i, image in enumerate(images):
                out = tmp_path / f"{series}-{i}.dcm"
                orthanc.upload(
                    make_radiograph_dicom(
                        image, out, study_uid=study_uid, series_uid=series_uid, instance_number=i + 1
                    )
                )
        result = CliRunner().invoke(app, ["dicom", "study", study_uid, "--dicomweb", orthanc.dicomweb_url])
        assert result.exit_code == 1, result.output
        assert "error (study_incomplete): the DICOMweb service listed 3 of the 4 instances" in result.stderr
        assert study_uid not in result.output
        assert len(orthanc.instances()) == 4  # nothing stored


def test_a_service_that_ignores_offset_ends_the_listing(tmp_path: Path) -> None:
    """dicomweb-client's own paging asked for the next page for ever when every page was the first."""
    from dicom_support import QuietHandler, http_service
    from fracsight.dicom.dicomweb import _study_instances, web_client

    uids = [
        {"0020000E": {"vr": "UI", "Value": ["1.2.3"]}, "00080018": {"vr": "UI", "Value": [f"1.2.3.{i}"]}}
        for i in (1, 2)
    ]

    class SamePage(QuietHandler):
        def do_GET(self) -> None:
            self.reply(200, json.dumps(uids if "/instances" in self.path else []).encode())

    with http_service(SamePage) as service:
        client = web_client(f"{service}/dicom-web", timeout=10)
        listed = _study_instances(client, "1.2.3", "s")
    assert [item["00080018"]["Value"] for item in listed] == [["1.2.3.1"], ["1.2.3.2"]]


def test_an_image_results_cannot_be_made_for_costs_only_itself(images: list[Path], tmp_path: Path) -> None:
    """A CR under a private SOP class passes the reader, but no result object can reference it:
    it is listed as refused, and the other image's results and the study verdict are stored; the
    verdict, which has not seen it, is not reliable (it read as a clean decision)."""
    study_uid = generate_uid()
    good = make_radiograph_dicom(images[0], tmp_path / "good.dcm", study_uid=study_uid)
    odd = pydicom.dcmread(make_radiograph_dicom(images[1], tmp_path / "odd.dcm", study_uid=study_uid))
    odd.SOPClassUID = odd.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.8.498.999"
    odd.save_as(tmp_path / "odd.dcm", enforce_file_format=True)
    with Orthanc(tmp_path / "orthanc") as orthanc:
        for path in (good, tmp_path / "odd.dcm"):
            orthanc.upload(path)
        done = CliRunner().invoke(app, ["dicom", "study", study_uid, "--dicomweb", orthanc.dicomweb_url])
        assert done.exit_code == 0, done.output
        summary = json.loads(done.stdout)
        assert summary["refused"] == {instance_key(str(odd.SOPInstanceUID)): "unusable_dicom_source"}
        assert summary["predicted"] == 1
        assert summary["study_decision"] == "not reliable: some views could not be read"
        assert summary["result_objects_stored"] == len(DEFAULT_KINDS) + 1
        assert len(results_in(orthanc, study_uid)) == len(DEFAULT_KINDS) + 1


def test_a_ct_beside_the_radiographs_is_a_view_unread_however_it_is_found(
    images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CT in the study is a view the verdict has not seen ("not reliable"), as `predict --study`
    and `dicom results --study` say it, whether the search service gives its Modality or leaves it
    out (one that ignores includefield): the two ways gave opposite verdicts."""
    from dicomweb_client.api import DICOMwebClient

    search = DICOMwebClient.search_for_instances

    def without_modality(self, *args, **kwargs):
        found = search(self, *args, **kwargs)
        return [{k: v for k, v in item.items() if k not in ("00080060", "00080016")} for item in found]

    study_uid = generate_uid()
    with Orthanc(tmp_path / "orthanc") as orthanc:
        for path in (
            make_radiograph_dicom(images[0], tmp_path / "a.dcm", study_uid=study_uid),
            make_ct_dicom(tmp_path / "ct.dcm", study_uid=study_uid),
        ):
            orthanc.upload(path)
        decisions = []
        for searched in (search, without_modality):
            monkeypatch.setattr(DICOMwebClient, "search_for_instances", searched)
            done = CliRunner().invoke(app, ["dicom", "study", study_uid, "--dicomweb", orthanc.dicomweb_url])
            assert done.exit_code == 0, done.output
            summary = json.loads(done.stdout)
            assert list(summary["refused"].values()) == ["unsupported_modality"] and summary["predicted"] == 1
            decisions.append(summary["study_decision"])
        assert decisions == ["not reliable: some views could not be read"] * 2


def test_results_of_a_japanese_study_read_as_their_source_does_in_orthanc(
    images: list[Path], tmp_path: Path
) -> None:
    """The results named the default repertoire "ISO 2022 IR 6" before ISO 2022 IR 87, where the
    source leaves it empty: the same set by the standard, but Orthanc showed the results' names
    as raw escape sequences (``$B;3ED(B^...``), filed under a garbled patient beside the source."""
    study_uid = generate_uid()
    ds = pydicom.dcmread(make_radiograph_dicom(images[0], tmp_path / "jp.dcm", study_uid=study_uid))
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou=\u5c71\u7530^\u592a\u90ce"
    ds.save_as(tmp_path / "jp.dcm", enforce_file_format=True)
    with Orthanc(tmp_path / "orthanc") as orthanc:
        source_id = orthanc.upload(tmp_path / "jp.dcm")["ID"]
        assert orthanc.tags(source_id)["PatientName"] == str(ds.PatientName)
        done = CliRunner().invoke(app, ["dicom", "study", study_uid, "--dicomweb", orthanc.dicomweb_url])
        assert done.exit_code == 0, done.output
        found = orthanc.find_instances(StudyInstanceUID=study_uid)
        results = [f["ID"] for f in found if f["ID"] != source_id]
        assert len(results) == len(DEFAULT_KINDS) + 1
        assert {orthanc.tags(r)["PatientName"] for r in results} == {str(ds.PatientName)}


def test_two_patients_under_one_study_uid_still_get_their_images_results(
    images: list[Path], tmp_path: Path
) -> None:
    """No study verdict can be made over two patients; the error of that escaped before anything
    was sent, and the images' own results were never stored. As the node: those go, the verdict is
    left out and said why (`study_error`), exit 1."""
    study_uid = generate_uid()
    paths = []
    for i, (image, patient) in enumerate(zip(images, ("FS-TEST-0001", "FS-TEST-0002"), strict=True)):
        ds = pydicom.dcmread(make_radiograph_dicom(image, tmp_path / f"{i}.dcm", study_uid=study_uid))
        ds.PatientID = patient
        ds.save_as(tmp_path / f"{i}.dcm", enforce_file_format=True)
        paths.append(tmp_path / f"{i}.dcm")
    with Orthanc(tmp_path / "orthanc") as orthanc:
        for path in paths:
            orthanc.upload(path)
        done = CliRunner().invoke(app, ["dicom", "study", study_uid, "--dicomweb", orthanc.dicomweb_url])
        assert done.exit_code == 1, done.output
        summary = json.loads(done.stdout)
        assert summary["predicted"] == 2 and summary["study_error"] == "unusable_dicom_source"
        assert summary["study_decision"] is None and "study_fracture_probability" not in summary
        assert summary["result_objects_stored"] == 2 * len(DEFAULT_KINDS)
        assert len(results_in(orthanc, study_uid)) == 2 * len(DEFAULT_KINDS)
        assert "FS-TEST" not in done.output


def test_an_instance_the_service_cannot_return_costs_only_itself(images: list[Path], tmp_path: Path) -> None:
    """WADO-RS answered 500 for one instance (its file lost in the archive): the whole command
    stopped, `dicomweb_unavailable`, and the other images got no results. Now that one is listed
    under `not_retrieved`, the others and the verdict are stored, exit 1; when none comes back, the
    service is failing, said as before."""
    study_uid = generate_uid()
    paths = [
        make_radiograph_dicom(image, tmp_path / f"{i}.dcm", study_uid=study_uid, instance_number=i + 1)
        for i, image in enumerate(images)
    ]
    lost = str(pydicom.dcmread(paths[1], stop_before_pixels=True).SOPInstanceUID)
    with Orthanc(tmp_path / "orthanc") as orthanc, FailingProxy(orthanc.url) as proxy:
        proxy.poison_paths.append(f"/instances/{lost}")
        for path in paths:
            orthanc.upload(path)
        args = ["dicom", "study", study_uid, "--dicomweb", f"{proxy.url}/dicom-web"]
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 1, done.output
        summary = json.loads(done.stdout)
        assert summary["not_retrieved"] == {instance_key(lost): "retrieve_http_500"}
        assert summary["predicted"] == 1 and summary["study_decision"] is not None
        assert summary["result_objects_stored"] == len(DEFAULT_KINDS) + 1
        # the one radiograph of a study (beside a CT) lost: that file, not the service
        other_study = generate_uid()
        alone = make_radiograph_dicom(images[0], tmp_path / "alone.dcm", study_uid=other_study)
        ct = make_ct_dicom(tmp_path / "ct.dcm", study_uid=other_study)
        for path in (alone, ct):
            orthanc.upload(path)
        alone_uid = str(pydicom.dcmread(alone, stop_before_pixels=True).SOPInstanceUID)
        proxy.poison_paths.append(f"/instances/{alone_uid}")
        one = CliRunner().invoke(app, ["dicom", "study", other_study, "--dicomweb", f"{proxy.url}/dicom-web"])
        assert one.exit_code == 1, one.output
        said = json.loads(one.stdout)
        assert said["not_retrieved"] == {instance_key(alone_uid): "retrieve_http_500"}
        assert list(said["refused"].values()) == ["unsupported_modality"]
        proxy.poison_paths.append("/instances/")  # no instance comes back
        failing = CliRunner().invoke(app, args)
        assert failing.exit_code == 1 and "error (dicomweb_unavailable)" in failing.output
        assert "HTTP 500" in failing.output and study_uid not in failing.output


NOT_DICOM = {
    "login page": ("text/html; charset=utf-8", b"<html><body>Please log in</body></html>"),
    "part not DICOM": (
        'multipart/related; type="application/dicom"; boundary=XYZ',
        b"--XYZ\r\nContent-Type: application/dicom\r\n\r\n" + b"not a DICOM file " * 10 + b"\r\n--XYZ--\r\n",
    ),
    "no part": ('multipart/related; type="application/dicom"; boundary=XYZ', b"--XYZ--\r\n"),
}


@pytest.mark.parametrize("answer", NOT_DICOM.values(), ids=NOT_DICOM.keys())
def test_an_instance_answered_with_something_not_dicom_costs_only_itself(
    images: list[Path], tmp_path: Path, answer: tuple[str, bytes]
) -> None:
    """WADO-RS answered HTTP 200 for one instance, but not with DICOM (a login page of a single
    sign-on proxy, a part that is not DICOM, no part): a traceback, and nothing stored for the
    other images either. Now as for an HTTP 500: that one under `not_retrieved`, the rest stored."""
    study_uid = generate_uid()
    paths = [
        make_radiograph_dicom(image, tmp_path / f"{i}.dcm", study_uid=study_uid)
        for i, image in enumerate(images)
    ]
    odd = str(pydicom.dcmread(paths[1], stop_before_pixels=True).SOPInstanceUID)
    with Orthanc(tmp_path / "orthanc") as orthanc, FailingProxy(orthanc.url) as proxy:
        for path in paths:
            orthanc.upload(path)
        proxy.answers[f"/instances/{odd}"] = answer
        done = CliRunner().invoke(app, ["dicom", "study", study_uid, "--dicomweb", f"{proxy.url}/dicom-web"])
        assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.output
        summary = json.loads(done.stdout)
        assert summary["not_retrieved"] == {instance_key(odd): "retrieve_not_dicom"}
        assert summary["predicted"] == 1 and summary["study_decision"] is not None
        assert summary["result_objects_stored"] == len(DEFAULT_KINDS) + 1
        assert len(results_in(orthanc, study_uid)) == len(DEFAULT_KINDS) + 1


def test_stow_resend_of_stored_objects_is_delivered_once(images: list[Path], tmp_path: Path) -> None:
    files = [make_radiograph_dicom(image, tmp_path / f"{i}.dcm") for i, image in enumerate(images)]
    with Orthanc(tmp_path / "orthanc") as orthanc:
        destination = StowDestination(orthanc.dicomweb_url, timeout=30)
        assert destination.deliver(files[:1]) == [DELIVERED]
        # one already stored, one new: Orthanc answers both in ReferencedSOPSequence
        assert destination.deliver(files) == [DELIVERED, DELIVERED]
        assert len(orthanc.instances()) == 2


def test_one_object_failing_a_whole_stow_request_holds_no_other_back(
    images: list[Path], tmp_path: Path
) -> None:
    """A 5xx for a request of several objects was taken as the service being down, so one object a
    service chokes on kept its whole batch waiting for ever; now each is sent alone to tell them apart."""
    files = [make_radiograph_dicom(images[i % 2], tmp_path / f"{i}.dcm") for i in range(3)]
    poison = str(pydicom.dcmread(files[1], stop_before_pixels=True).SOPInstanceUID).encode()
    with Orthanc(tmp_path / "orthanc") as orthanc, FailingProxy(orthanc.url, [poison]) as proxy:
        destination = StowDestination(f"{proxy.url}/dicom-web", timeout=30)
        assert destination.deliver(files) == [DELIVERED, "http_500", DELIVERED]
        assert len(orthanc.instances()) == 2
        # alone, its 500 cannot be told from a service that is down: it waits, never given up on that
        with pytest.raises(DestinationUnavailable, match="HTTP 500"):
            destination.deliver(files[1:2])
        proxy.poison.append(b"--")  # every STOW request (multipart) fails: the service is down
        with pytest.raises(DestinationUnavailable, match="HTTP 500"):
            destination.deliver(files)
        assert len(orthanc.instances()) == 2


def test_a_request_too_large_for_a_proxy_in_front_is_sent_object_by_object(
    images: list[Path], tmp_path: Path
) -> None:
    """A reverse proxy's body limit (nginx: 1 MB) answers 413 to a STOW-RS request of several
    objects that each fit alone: the whole batch was refused, ten times, then given up. Now each
    object goes alone; only one too large by itself is refused (and not taken for a service down)."""
    files = [make_radiograph_dicom(images[i % 2], tmp_path / f"{i}.dcm") for i in range(3)]
    largest = max(f.stat().st_size for f in files)
    with Orthanc(tmp_path / "orthanc") as orthanc, FailingProxy(orthanc.url) as proxy:
        proxy.max_body = largest + 64 * 1024  # one object and its multipart framing, not two
        destination = StowDestination(f"{proxy.url}/dicom-web", timeout=30)
        assert destination.deliver(files) == [DELIVERED] * 3
        assert len(orthanc.instances()) == 3 and proxy.answered == 1
        proxy.max_body = 1024  # smaller than any object
        assert destination.deliver(files[:1]) == ["http_413"]
        assert destination.deliver(files[1:]) == ["http_413", "http_413"]
        # the service behind the proxy down (500 for all): one object too large for the proxy is
        # refused, and the others wait as for a service that is down (they were counted refused)
        big = pydicom.dcmread(files[2])
        big.private_block(0x0009, "FSTEST", create=True).add_new(0x10, "OB", b"\0" * (2 * largest))
        big.save_as(files[2], enforce_file_format=True)
        proxy.max_body = 2 * largest
        proxy.poison.append(b"--")
        assert destination.deliver(files) == [UNAVAILABLE, UNAVAILABLE, "http_413"]


def test_the_sender_delivers_the_rest_and_gives_the_failing_object_up(
    images: list[Path], tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    keys = []
    for i in range(3):
        source = make_radiograph_dicom(images[i % 2], tmp_path / f"{i}.dcm")
        key = instance_key(str(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID))
        spool.add_instance(key, "1.2.826.0.1.3680043.8.498.1", b"source")
        result = spool.results_folder(key) / "sr.dcm"
        spool.write_file(result, source.read_bytes())
        spool.queue_many([(key, [result])])
        keys.append(key)
    poison = str(pydicom.dcmread(spool.results_folder(keys[1]) / "sr.dcm").SOPInstanceUID).encode()
    with Orthanc(tmp_path / "orthanc") as orthanc, FailingProxy(orthanc.url, [poison]) as proxy:
        destination = StowDestination(f"{proxy.url}/dicom-web", timeout=30)
        sender = Sender(spool, destination, base_delay=0, give_up_after=1)
        assert sender.send_once()  # the batch fails, then each alone: two stored, the third refused
        assert not sender.send_once()  # given up at its first refusal (give_up_after=1): nothing left
        assert len(orthanc.instances()) == 2 and proxy.answered == 2
        assert spool.states() == {SENT: 2, UNDELIVERED: 1}
        assert spool.counters()["send_failed"] == {"http_500": 1}
        # the service is fixed; a person sends what it refused again
        proxy.poison.clear()
        resent = CliRunner().invoke(app, ["dicom", "resend", "--spool", str(spool.root)])
        assert resent.exit_code == 0 and "(1 http_500)" in resent.output, resent.output
        assert sender.send_once() and not sender.send_once()
        assert len(orthanc.instances()) == 3
    assert spool.states() == {SENT: 3}


@pytest.mark.parametrize(
    ("stop", "code", "said_first"),
    [(signal.SIGINT, 130, "interrupted:"), (signal.SIGTERM, 143, "stopped (SIGTERM):")],
    ids=["SIGINT", "SIGTERM"],
)
def test_ctrl_c_during_dicom_study_files_nothing_twice_and_the_rerun_completes(
    images: list[Path], tmp_path: Path, stop: signal.Signals, code: int, said_first: str
) -> None:
    """Ctrl-C (SIGINT) while ``fracsight dicom study`` fetches the images: one line that says what
    to do, exit code 130, no traceback; the same command again files the whole set once. A SIGTERM
    (`timeout`, a scheduler) exited 143 without a word."""
    study_uid = generate_uid()
    sources = [
        make_radiograph_dicom(
            images[i % 2], tmp_path / f"{i}.dcm", study_uid=study_uid, instance_number=i + 1
        )
        for i in range(4)
    ]
    with Orthanc(tmp_path / "orthanc") as orthanc, FailingProxy(orthanc.url) as proxy:
        for path in sources:
            orthanc.upload(path)
        command = [sys.executable, "-c", "from fracsight.cli import main; main()", "dicom", "study"]
        command += [study_uid, "--dicomweb", f"{proxy.url}/dicom-web"]
        log = tmp_path / "study.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not any("/instances/" in path for _, path in proxy.seen):  # the first image is fetched
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        process.send_signal(stop)
        assert process.wait(timeout=60) == code, log.read_text()
        said = log.read_text()
        assert "Traceback" not in said and "Aborted" not in said
        assert said.rstrip().splitlines()[-1].startswith(f"{said_first} the results go to the service in one")
        assert not any(method == "POST" for method, _ in proxy.seen), "interrupted too late to test anything"
        assert len(orthanc.instances()) == len(sources)
        again = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["result_objects_stored"] == len(sources) * len(DEFAULT_KINDS) + 1
        assert len(results_in(orthanc, study_uid)) == len(sources) * len(DEFAULT_KINDS) + 1


def test_dicom_study_stores_what_it_can_when_the_service_fails_its_request(
    images: list[Path], tmp_path: Path
) -> None:
    """The study's results go in one STOW-RS request; a 500 for it (here for every object that refers
    to the second image: its report, its presentation state and the study's verdict) once stored
    none. Now the others are stored and the summary counts the rest as failed (exit 1)."""
    study_uid = generate_uid()
    sources = [
        make_radiograph_dicom(image, tmp_path / f"{i}.dcm", study_uid=study_uid, instance_number=i + 1)
        for i, image in enumerate(images)
    ]
    poison = str(pydicom.dcmread(sources[1], stop_before_pixels=True).SOPInstanceUID).encode()
    with Orthanc(tmp_path / "orthanc") as orthanc, FailingProxy(orthanc.url, [poison]) as proxy:
        for path in sources:
            orthanc.upload(path)
        done = CliRunner().invoke(app, ["dicom", "study", study_uid, "--dicomweb", f"{proxy.url}/dicom-web"])
        assert done.exit_code == 1, done.output
        summary = json.loads(done.stdout)
        assert summary["result_objects_stored"] == len(DEFAULT_KINDS)  # the first image's
        assert summary["result_objects_failed"] == len(DEFAULT_KINDS) + 1
        # and why: the count alone said "failed: 5" (an http_409 for each, --stow given as .../studies)
        assert sum(summary["result_objects_failed_codes"].values()) == len(DEFAULT_KINDS) + 1
        assert "were not stored by the STOW-RS service: " in done.stderr
        assert len(results_in(orthanc, study_uid)) == len(DEFAULT_KINDS)
        proxy.poison.append(b"--")  # every STOW-RS request fails: the service is down, said in one line
        down = CliRunner().invoke(app, ["dicom", "study", study_uid, "--dicomweb", f"{proxy.url}/dicom-web"])
        assert down.exit_code == 1 and "error (dicomweb_unavailable): STOW-RS" in down.output
        assert "HTTP 500" in down.output and study_uid not in down.output


def test_a_service_answering_every_instance_with_a_login_page_fails_the_study(
    images: list[Path], tmp_path: Path
) -> None:
    """An expired single sign-on in front of the service: every instance answered with its login
    page. One such instance costs only itself; all of them are the service's fault, said for the
    study (as when every instance gets an HTTP error), not N images each failing."""
    study_uid = generate_uid()
    paths = [
        make_radiograph_dicom(image, tmp_path / f"{i}.dcm", study_uid=study_uid)
        for i, image in enumerate(images)
    ]
    with Orthanc(tmp_path / "orthanc") as orthanc, FailingProxy(orthanc.url) as proxy:
        for path in paths:
            orthanc.upload(path)
        for path in paths:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            proxy.answers[f"/instances/{uid}"] = NOT_DICOM["login page"]
        done = CliRunner().invoke(app, ["dicom", "study", study_uid, "--dicomweb", f"{proxy.url}/dicom-web"])
        assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.output
        assert "error (dicomweb_unavailable)" in done.stderr and "a login page or a proxy" in done.stderr
        assert study_uid not in done.output and not results_in(orthanc, study_uid)
