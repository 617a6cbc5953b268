"""The node's associations go out without Nagle's algorithm (docs/dicom.md, "Throughput").

With Nagle on, each C-STORE between the node and Orthanc waited for 40 ms delayed ACKs (about
95 ms per object instead of 6): the sender, one association at a time, then bounded the node.
Real pynetdicom associations on loopback; no PACS needed.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

pynetdicom = pytest.importorskip("pynetdicom")

from dicom_support import listening, wait_until  # noqa: E402
from fracsight.dicom._tcp import tcp_handlers  # noqa: E402
from fracsight.dicom.scp import StoreSCP  # noqa: E402
from fracsight.dicom.spool import Spool  # noqa: E402


def _no_delay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_the_listener_and_a_caller_with_the_node_settings_turn_nagle_off(tmp_path: Path) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    scp = StoreSCP(
        Spool(tmp_path / "spool"), ae_title="FRACSIGHT", host="127.0.0.1", port=0, allowed=["MODALITY"]
    )
    scp.start()
    try:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification)
        plain = ae.associate("127.0.0.1", scp.port, ae_title="FRACSIGHT")
        tuned = ae.associate("127.0.0.1", scp.port, ae_title="FRACSIGHT", evt_handlers=tcp_handlers())
        try:
            assert plain.is_established and tuned.is_established
            assert not _no_delay(plain.dul.socket.socket)  # what pynetdicom does by itself
            assert _no_delay(tuned.dul.socket.socket)
            deadline = time.monotonic() + 5
            while len(scp._server.active_associations) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            served = scp._server.active_associations
            assert len(served) == 2 and all(_no_delay(a.dul.socket.socket) for a in served)
            assert tuned.send_c_echo().Status == 0
        finally:
            plain.release()
            tuned.release()
    finally:
        scp.stop()


def test_a_rejected_association_is_told_apart_from_no_answer(tmp_path: Path, fracatlas_dir: Path) -> None:
    """A PACS that refuses the node's AE title says so; a port with nothing on it is a network fault."""
    from pynetdicom import AE, AllStoragePresentationContexts

    from dicom_support import free_port, make_radiograph_dicom
    from fracsight.dicom.sender import DestinationUnavailable, DimseDestination

    source = make_radiograph_dicom(
        fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg", tmp_path / "a.dcm"
    )
    pacs = AE(ae_title="PACS")
    pacs.supported_contexts = AllStoragePresentationContexts
    pacs.require_calling_aet = ["SOMEONE_ELSE"]
    port = free_port()
    server = pacs.start_server(("127.0.0.1", port), block=False)
    destination = DimseDestination("127.0.0.1", port, "PACS", timeout=10)
    try:
        with pytest.raises(DestinationUnavailable, match="association rejected"):
            destination.deliver([source])
    finally:
        server.shutdown()
    with pytest.raises(DestinationUnavailable, match="no association"):
        destination.deliver([source])


def test_a_host_name_that_does_not_resolve_is_a_destination_down_not_a_crash(tmp_path: Path) -> None:
    """socket.gaierror escaped from the association: `fracsight dicom send` ended in a traceback and
    the node's sender retried every second as an 'unexpected error' instead of waiting with back-off."""
    from typer.testing import CliRunner

    from dicom_support import make_ct_dicom
    from fracsight.cli import app
    from fracsight.dicom.sender import DestinationUnavailable, DimseDestination

    source = make_ct_dicom(tmp_path / "a.dcm")  # any file with file meta: never sent
    with pytest.raises(DestinationUnavailable, match="host name not resolved"):
        DimseDestination("no-such-host.invalid", 104, "PACS", timeout=10).deliver([source])
    result = CliRunner().invoke(app, ["dicom", "send", str(source), "--to", "no-such-host.invalid:104:PACS"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "error (destination_unavailable)" in result.output and "host name not resolved" in result.output


def test_a_dicomweb_service_missing_or_down_is_waited_for_not_given_up(
    tmp_path: Path, fracatlas_dir: Path
) -> None:
    """A server without a STOW-RS service at the URL (404: a PACS restarted without its DICOMweb
    plugin) and a port with nothing on it both mean 'destination down' (retried with back-off,
    never given up), and each attempt fails at once (no client-side retries of ~30 s)."""
    from dicom_support import QuietHandler, free_port, http_service, make_radiograph_dicom
    from fracsight.dicom.sender import DestinationUnavailable, StowDestination

    class NoDicomWeb(QuietHandler):
        def do_POST(self) -> None:
            self.read_body()
            self.send_error(404)

    image = fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg"
    source = make_radiograph_dicom(image, tmp_path / "a.dcm")
    with http_service(NoDicomWeb) as service:
        for url in (f"{service}/dicom-web", f"http://127.0.0.1:{free_port()}/x"):
            started = time.monotonic()
            with pytest.raises(DestinationUnavailable):
                StowDestination(url, timeout=10).deliver([source])
            assert time.monotonic() - started < 5


def test_an_ae_title_with_a_newline_writes_one_line_into_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    """Anyone who reaches the port, before the allowed AE titles are checked: a newline in the
    calling AE title started a log line of the caller's choosing, under 20-line tracebacks."""
    import subprocess

    from dicom_support import DCMTK_BIN
    from fracsight.dicom._logging import setup_logging

    if not (DCMTK_BIN / "echoscu").is_file():
        pytest.skip("dcmtk's echoscu not found")
    # the node's logging for this test only: "fracsight" left at INFO let later tests' records reach
    # a stale handler on a closed capture stream ("--- Logging error ---" in their output)
    root, names = logging.getLogger(), ("fracsight", "pynetdicom", "pydicom", "highdicom", "dicomweb_client")
    handlers, levels = list(root.handlers), {name: logging.getLogger(name).level for name in names}

    def restore() -> None:
        root.handlers[:] = handlers
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)  # clears the loggers' cached levels too

    request.addfinalizer(restore)
    setup_logging("INFO")
    scp = StoreSCP(
        Spool(tmp_path / "spool"), ae_title="FRACSIGHT", host="127.0.0.1", port=0, allowed=["MODALITY"]
    )
    scp.start()
    try:
        with caplog.at_level(logging.INFO):
            subprocess.run(
                [
                    str(DCMTK_BIN / "echoscu"),
                    "-aet",
                    "MOD\nFAKE LOG",
                    "-aec",
                    "FRACSIGHT",
                    "127.0.0.1",
                    str(scp.port),
                ],
                capture_output=True,
                timeout=30,
            )
            time.sleep(1)
    finally:
        scp.stop()
    said = [r for r in caplog.records if r.name.startswith("pynetdicom")]
    assert said, [r.getMessage() for r in caplog.records]  # pynetdicom did log the request
    assert all("\n" not in r.getMessage() and not r.exc_info for r in said), [r.getMessage() for r in said]


def test_a_destination_that_aborts_every_store_is_said_so(tmp_path: Path, fracatlas_dir: Path) -> None:
    """A PACS that takes the association and aborts the C-STORE (Orthanc with DicomAlwaysAllowStore
    off and the node not among its modalities): the results were retried for ever, the log silent."""
    import subprocess

    from dicom_support import DCMTK_BIN, free_port, make_radiograph_dicom
    from fracsight.dicom.sender import DestinationUnavailable, DimseDestination

    if not (DCMTK_BIN / "storescp").is_file():
        pytest.skip("dcmtk's storescp not found")
    source = make_radiograph_dicom(
        fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg", tmp_path / "a.dcm"
    )
    port = free_port()
    command = [str(DCMTK_BIN / "storescp"), "--abort-during", "-aet", "PACS", "-od", str(tmp_path), str(port)]
    pacs = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: listening(port), 30, 0.1)  # a loaded machine starts it late
        with pytest.raises(DestinationUnavailable, match=r"no C-STORE response.*calling AE title FRACSIGHT"):
            DimseDestination("127.0.0.1", port, "PACS", timeout=10).deliver([source])
    finally:
        pacs.terminate()
        pacs.wait(timeout=30)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html", b"<html><body><form>Sign in</form></body></html>"),  # a login page
        ("text/html", b"<html><body><p>Sign in<br></body></html>"),  # not XML
        ("application/dicom+json", b""),
        ("application/dicom+json", b"{}"),
        ("application/dicom+json", b"<html><body>Sign in</body></html>"),  # said to be JSON, is not
        # JSON, but no store response: a traceback from `dicom study`, an ERROR a second from the node
        ("application/dicom+json", b"[]"),
        ("application/dicom+json", b"null"),
        ("application/dicom+json", b'{"error": "quota"}'),
        ("application/dicom+json", b'{"00081199": {"vr": "SQ", "Value": "x"}}'),
    ],
)
def test_a_200_without_a_store_response_is_not_counted_as_stored(
    tmp_path: Path, fracatlas_dir: Path, content_type: str, body: bytes
) -> None:
    """A POST redirected to a single sign-on page, or a proxy's empty 200, confirms nothing: each was
    counted as delivered (the node marked the results sent, never to send them again)."""
    from dicom_support import QuietHandler, http_service, make_radiograph_dicom
    from fracsight.dicom.sender import DestinationUnavailable, StowDestination

    class LoginPage(QuietHandler):
        def do_POST(self) -> None:
            self.read_body()
            self.reply(200, body, content_type)

    image = fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg"
    source = make_radiograph_dicom(image, tmp_path / "a.dcm")
    with http_service(LoginPage) as service, pytest.raises(DestinationUnavailable, match="without a STOW-RS"):
        StowDestination(f"{service}/dicom-web", timeout=10).deliver([source])


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_stow_redirected_as_a_get_says_where_to(tmp_path: Path, fracatlas_dir: Path, status: int) -> None:
    """A front end sending http:// on to https:// answers 301: the POST came back as a GET of the
    study list, which `dicom study` ended in a traceback and the node in an ERROR line a second."""
    from dicom_support import QuietHandler, http_service, make_radiograph_dicom
    from fracsight.dicom.sender import DestinationUnavailable, StowDestination

    gets: list[str] = []

    class Moved(QuietHandler):
        def do_POST(self) -> None:
            self.read_body()
            self.send_response(status)
            self.send_header("Location", "https://pacs.example/dicom-web/studies?key=SECRET")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            gets.append(self.path)
            self.reply(200, b"[]", "application/dicom+json")

    image = fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg"
    source = make_radiograph_dicom(image, tmp_path / "a.dcm")
    with http_service(Moved) as service, pytest.raises(DestinationUnavailable) as refused:
        StowDestination(f"{service}/dicom-web", timeout=10).deliver([source])
    said = str(refused.value)
    assert f"redirected (HTTP {status}) to https://pacs.example/dicom-web/studies?***" in said
    assert "give that URL" in said and "SECRET" not in said and not gets  # the redirect not followed


@pytest.mark.parametrize(
    "content_type", ["application/dicom+json; charset=utf-8", "application/dicom+json;charset=UTF-8"]
)
def test_a_store_response_with_a_charset_is_read(
    tmp_path: Path, fracatlas_dir: Path, content_type: str
) -> None:
    """PS3.18 lets a service name the charset of its JSON: dicomweb-client read no answer then, and
    every object a service stored counted as unconfirmed, sent again for ever."""
    import json

    import pydicom

    from dicom_support import QuietHandler, http_service, make_radiograph_dicom
    from fracsight.dicom.sender import DELIVERED, StowDestination

    source = make_radiograph_dicom(
        fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg", tmp_path / "a.dcm"
    )
    uid = str(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID)
    stored = {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [uid]}}]}}

    class Stores(QuietHandler):
        def do_POST(self) -> None:
            self.read_body()
            self.reply(200, json.dumps(stored).encode(), content_type)

    with http_service(Stores) as service:
        assert StowDestination(f"{service}/dicom-web", timeout=10).deliver([source]) == [DELIVERED]


def test_connections_that_never_ask_for_an_association_free_their_slots(tmp_path: Path) -> None:
    """Sixteen TCP connections that say nothing (a hung probe, a port scan) held every association
    slot for pynetdicom's 30 s, and an allowed modality was rejected (local limit exceeded) for as
    long as they reconnected; now they are dropped after ACSE_TIMEOUT_S."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from fracsight.dicom.scp import _MAX_ASSOCIATIONS, ACSE_TIMEOUT_S

    scp = StoreSCP(
        Spool(tmp_path / "spool"), ae_title="FRACSIGHT", host="127.0.0.1", port=0, allowed=["MODALITY"]
    )
    scp.start()
    silent = [socket.create_connection(("127.0.0.1", scp.port)) for _ in range(_MAX_ASSOCIATIONS)]
    try:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification)
        deadline = time.monotonic() + 5  # a loaded machine accepts them late: wait for all sixteen
        while len(scp._server.active_associations) < _MAX_ASSOCIATIONS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(scp._server.active_associations) == _MAX_ASSOCIATIONS
        assert ae.associate("127.0.0.1", scp.port, ae_title="FRACSIGHT").is_rejected  # every slot held
        time.sleep(ACSE_TIMEOUT_S)
        assert wait_until(lambda: not scp._server.active_associations, 30, 0.1)  # dropped, if late
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="FRACSIGHT")
        assert assoc.is_established and assoc.send_c_echo().Status == 0
        assoc.release()
    finally:
        for sock in silent:
            sock.close()
        scp.stop()


@pytest.mark.parametrize(
    ("status", "outcome"), [(0x0107, None), (0xB000, None), (0x0116, None), (0xA900, "status_0xA900")]
)
def test_a_store_answered_with_a_warning_is_stored(
    tmp_path: Path, fracatlas_dir: Path, status: int, outcome: str | None
) -> None:
    """C-STORE warnings (PS3.7: 0x0107 attribute list, 0x0116 value out of range, 0xBxxx) mean
    stored; only three of them counted, so a PACS answering 0x0107 got each object ten times and
    the instance was left `undelivered`. A real pynetdicom storage SCP on loopback answers."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    from dicom_support import make_radiograph_dicom
    from fracsight.dicom.sender import DimseDestination

    source = make_radiograph_dicom(
        fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg", tmp_path / "a.dcm"
    )
    received: list[str] = []

    def store(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return status

    ae = AE(ae_title="PACS")
    ae.supported_contexts = AllStoragePresentationContexts
    scp = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
    try:
        port = scp.server_address[1]
        assert DimseDestination("127.0.0.1", port, "PACS", timeout=10).deliver([source]) == [outcome]
        assert len(received) == 1
    finally:
        scp.shutdown()


def test_each_store_response_goes_to_the_store_that_waits_for_it(
    tmp_path: Path, fracatlas_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pynetdicom's association thread took a C-STORE response off the queue before the store's own
    read (its pause flag was stale right after the previous store): the store waited out the
    timeout and its object was sent twice. The thread's wake-up and the store's read are slowed
    here, as a busy node slowed them, so that the race is met on every store; each response must
    still reach its store."""
    import shutil
    import subprocess
    import threading

    from pynetdicom import association

    from dicom_support import DCMTK_BIN, free_port
    from fracsight.dicom.sender import DimseDestination

    if not (DCMTK_BIN / "storescp").is_file():
        pytest.skip("dcmtk's storescp not found")

    class SlowWake(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            woke = super().wait(timeout)
            time.sleep(0.02)  # the reactor, back from its pause, reads only after this
            return woke

    made = association.Association.__init__

    def slowed(self, *args, **kwargs) -> None:
        made(self, *args, **kwargs)
        self._reactor_checkpoint = SlowWake()
        self._reactor_checkpoint.set()

    monkeypatch.setattr(association.Association, "__init__", slowed)
    from pynetdicom.dimse import DIMSEServiceProvider

    read = DIMSEServiceProvider.get_msg

    def late_blocking_read(self, block: bool = False):  # the store's own read, late as on a busy node
        if block:
            time.sleep(0.04)
        return read(self, block)

    monkeypatch.setattr(DIMSEServiceProvider, "get_msg", late_blocking_read)
    paths = _instances(fracatlas_dir, tmp_path, 6)
    received = tmp_path / "received"
    received.mkdir()
    port = free_port()
    command = [str(DCMTK_BIN / "storescp"), "-aet", "PACS", "-od", str(received), str(port)]
    pacs = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: listening(port), 30, 0.1)
        started = time.monotonic()
        outcomes = DimseDestination("127.0.0.1", port, "PACS", timeout=5).deliver(paths)
        seconds = time.monotonic() - started
    finally:
        pacs.terminate()
        pacs.wait(timeout=30)
    assert outcomes == [None] * len(paths), outcomes  # each stored, none waited out unanswered
    assert seconds < 5, seconds  # no store waited for the timeout
    assert len(list(received.iterdir())) == len(paths)
    shutil.rmtree(received)


def test_a_store_left_unanswered_ends_the_association_without_waiting_again(
    tmp_path: Path, fracatlas_dir: Path
) -> None:
    """A destination that aborts (or dies) while a store waits: pynetdicom may still call the
    association established, and the next store waited out the whole timeout on it."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    from dicom_support import free_port
    from fracsight.dicom.sender import DimseDestination

    paths = _instances(fracatlas_dir, tmp_path, 5)
    stores = []

    def store(event) -> int:
        stores.append(1)
        if len(stores) == 3:  # the third: the peer aborts instead of answering
            event.assoc.abort()
        return 0x0000

    pacs = AE(ae_title="PACS")
    pacs.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    server = pacs.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
    try:
        started = time.monotonic()
        outcomes = DimseDestination("127.0.0.1", port, "PACS", timeout=8).deliver(paths)
        seconds = time.monotonic() - started
    finally:
        server.shutdown()
    assert outcomes[:2] == [None, None] and all(o == "destination_unavailable" for o in outcomes[2:])
    assert seconds < 5, seconds  # not a second wait for the timeout (8 s)


def _instances(fracatlas_dir: Path, folder: Path, n: int) -> list[Path]:
    """``n`` instances of one radiograph, each with a SOP Instance UID of its own."""
    import pydicom
    from pydicom.uid import generate_uid

    from dicom_support import make_radiograph_dicom

    first = make_radiograph_dicom(fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg", folder / "0.dcm")
    paths = [first]
    for k in range(1, n):
        ds = pydicom.dcmread(first)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"{k}.dcm")
        paths.append(folder / f"{k}.dcm")
    return paths
