"""A DICOMweb service that takes an OAuth 2.0 bearer token (RFC 6750), as cloud DICOM stores and
PACS behind an authorizing proxy do: real Orthanc, its DICOMweb routes guarded by a Lua request
filter that lets only ``Authorization: Bearer <token>`` through (it answers 403 otherwise). The
token comes from ``FRACSIGHT_DICOMWEB_TOKEN`` or a file read again for each connection (such
tokens last an hour: another process renews the file), and is in no log line or message.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from dicom_support import NodeProcess, Orthanc, make_radiograph_dicom, orthanc_available, storescu
from fracsight.cli import app
from test_dicom_node import DEFAULT_KINDS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not orthanc_available(), reason="needs Orthanc with its DICOMweb plugin"),
]

TOKEN = "ya29.tok-Hq2_not~for/logs+A="  # every character class RFC 6750 allows


def _guarded_orthanc(root: Path, token: str) -> Orthanc:
    """Orthanc whose DICOMweb routes take ``token`` only (its own REST API, which the tests use to
    look, stays open on loopback)."""
    root.mkdir(parents=True, exist_ok=True)
    lua = root / "bearer.lua"
    lua.write_text(
        "function IncomingHttpRequestFilter(method, uri, ip, username, headers)\n"
        "  if string.sub(uri, 1, 10) ~= '/dicom-web' then return true end\n"
        f"  return headers['authorization'] == 'Bearer {token}'\n"
        "end\n"
    )
    return Orthanc(root / "orthanc", lua=[lua])


def test_study_command_sends_the_token_and_says_a_refused_one(
    fracatlas_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    study_uid = generate_uid()
    source = make_radiograph_dicom(image, tmp_path / "a.dcm", study_uid=study_uid)
    with _guarded_orthanc(tmp_path, TOKEN) as orthanc:
        orthanc.upload(source)
        command = ["dicom", "study", study_uid, "--dicomweb", orthanc.dicomweb_url]
        anonymous = CliRunner().invoke(app, command)
        monkeypatch.setenv("FRACSIGHT_DICOMWEB_TOKEN", "expired-" + TOKEN)
        refused = CliRunner().invoke(app, command)
        monkeypatch.setenv("FRACSIGHT_DICOMWEB_TOKEN", TOKEN + "\n")  # as `echo` leaves it
        done = CliRunner().invoke(app, command)
        assert done.exit_code == 0, done.output
        monkeypatch.delenv("FRACSIGHT_DICOMWEB_TOKEN")
        # --dicomweb-token-file <(gcloud auth print-access-token): a pipe, read once and kept (it was
        # read empty at the first connection, "the token file is empty")
        fifo = tmp_path / "token-pipe"
        os.mkfifo(fifo)
        writer = threading.Thread(target=lambda: fifo.write_text(TOKEN + "\n"))
        writer.start()
        # with --stow too: the pipe was read once per URL, the second time empty
        stow = ["--stow", orthanc.dicomweb_url, "--dicomweb-token-file", str(fifo)]
        piped = CliRunner().invoke(app, [*command, *stow])
        writer.join(30)
        assert piped.exit_code == 0, piped.output
        assert len(orthanc.find_instances(StudyInstanceUID=study_uid)) == 1 + len(DEFAULT_KINDS) + 1
    assert anonymous.exit_code == 1
    assert "HTTP 403: refused without a login? set FRACSIGHT_DICOMWEB_USER and" in anonymous.output
    assert "or FRACSIGHT_DICOMWEB_TOKEN (docs/dicom.md)" in anonymous.output
    assert refused.exit_code == 1
    assert "HTTP 403: the token was refused or may not do this on the service" in refused.output
    assert TOKEN not in anonymous.output + refused.output + done.output


def test_node_reads_a_renewed_token_file_without_a_restart(
    fracatlas_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file holds an expired token: the results wait with the back-off (nothing lost), and
    reach the PACS once the file is renewed; neither token is in the log."""
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    source = make_radiograph_dicom(image, tmp_path / "a.dcm", study_uid=generate_uid())
    token_file = tmp_path / "dicomweb_token"
    token_file.write_text("old-" + TOKEN + "\n")
    monkeypatch.setenv("FRACSIGHT_DICOMWEB_TOKEN_FILE", str(token_file))
    with _guarded_orthanc(tmp_path, TOKEN) as orthanc:
        node = NodeProcess(tmp_path / "node", destination=["--stow", orthanc.dicomweb_url])
        with node:
            assert storescu("127.0.0.1", node.port, [source]).returncode == 0
            deadline = time.monotonic() + 90
            while "HTTP 403" not in node.log() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert "HTTP 403: the token was refused" in node.log()
            assert orthanc.find_instances() == []
            token_file.write_text(TOKEN + "\n")
            orthanc.wait_for_instances(len(DEFAULT_KINDS) + 1, timeout=90)  # the image's and the verdict
        log = node.log()
    assert TOKEN not in log and "old-" not in log


@pytest.mark.parametrize("command", ["listen", "study"])
def test_a_token_given_wrongly_is_refused_before_anything_starts(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a user name and password, twice, empty, or with a space or 'Bearer ' inside: exit 2,
    without quoting the token, and no spool made."""
    url = "http://127.0.0.1:9/dicom-web"
    if command == "listen":
        args = ["dicom", "listen", "--spool", str(tmp_path / "spool"), "--allow", "PACS", "--stow", url]
    else:
        args = ["dicom", "study", generate_uid(), "--dicomweb", url]
    token_file = tmp_path / "token"
    cases = [
        (
            {"FRACSIGHT_DICOMWEB_TOKEN": TOKEN, "FRACSIGHT_DICOMWEB_USER": "u"},
            [],
            "and a user name or password",
        ),
        ({"FRACSIGHT_DICOMWEB_TOKEN": TOKEN}, ["--dicomweb-token-file", str(token_file)], "given 2 ways"),
        ({"FRACSIGHT_DICOMWEB_TOKEN": "Bearer " + TOKEN}, [], "cannot have"),
        ({"FRACSIGHT_DICOMWEB_TOKEN_FILE": str(token_file)}, [], "is empty"),
        ({"FRACSIGHT_DICOMWEB_TOKEN_FILE": str(tmp_path / "missing")}, [], "No such file"),
        # "$(gcloud auth print-access-token)" that failed: not a request without a login
        ({"FRACSIGHT_DICOMWEB_TOKEN": "\n"}, [], "FRACSIGHT_DICOMWEB_TOKEN is set but empty"),
        ({"FRACSIGHT_DICOMWEB_TOKEN_FILE": "/dev/zero"}, [], "larger than 64 KiB"),
        ({"FRACSIGHT_DICOMWEB_TOKEN_FILE": TOKEN}, [], "the secret itself?"),  # not quoted, "/" or not
    ]
    token_file.write_text("")
    for env, extra, why in cases:
        with monkeypatch.context() as m:
            for name, value in env.items():
                m.setenv(name, value)
            done = CliRunner().invoke(app, [*args, *extra])
        assert done.exit_code == 2, (env, done.output)
        assert "error (dicomweb_login)" in done.output and why in done.output, done.output
        assert TOKEN not in done.output
    assert not (tmp_path / "spool").exists()
