"""A DICOMweb service behind HTTP basic authentication (Orthanc with ``RegisteredUsers``): the
password from ``FRACSIGHT_DICOMWEB_PASSWORD`` or a file (kept off the command line, which ``ps``
shows every local user), or written in the URL (``http://user:password@host/dicom-web``), logs
in; it is in no log line or message of the node or of ``fracsight dicom study``, and a password
given two ways is refused. Behind HTTPS with a
certificate of the hospital's own authority: trusted through ``REQUESTS_CA_BUNDLE``, and said so
when it is not.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from dicom_support import (
    FailingProxy,
    NodeProcess,
    Orthanc,
    free_port,
    make_radiograph_dicom,
    orthanc_available,
    storescu,
)
from fracsight.cli import app
from test_dicom_node import DEFAULT_KINDS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not orthanc_available(), reason="needs Orthanc with its DICOMweb plugin"),
]

PASSWORD = "pw-7Hq2-not-for-logs"


def _with_login(url: str, password: str) -> str:
    return url.replace("http://", f"http://fracsight:{password}@")


def test_node_stores_results_with_basic_auth_and_never_logs_the_password(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    source = make_radiograph_dicom(image, tmp_path / "a.dcm", study_uid=generate_uid())
    with Orthanc(tmp_path / "orthanc", users={"fracsight": PASSWORD}) as orthanc:
        stow = _with_login(orthanc.dicomweb_url, PASSWORD)
        node = NodeProcess(tmp_path / "node", destination=["--stow", stow], extra=["--processes", "0"])
        with node:
            assert storescu("127.0.0.1", node.port, [source]).returncode == 0
            orthanc.wait_for_instances(len(DEFAULT_KINDS) + 1, timeout=90)  # the image's and the verdict
        log = node.log()
    assert "fracsight:***@127.0.0.1" in log  # the destination is still named, its password hidden
    assert PASSWORD not in log


def test_study_command_names_the_service_without_its_password(fracatlas_dir: Path, tmp_path: Path) -> None:
    """And says what to check: a refused login, a login not given, a URL that is not the
    service's DICOMweb root (each said ``HTTP 401`` or ``HTTP 404`` only). Orthanc's REST root
    holding a study answers the study search with its own IDs: that was a traceback."""
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    held = generate_uid()
    source = make_radiograph_dicom(image, tmp_path / "a.dcm", study_uid=held)
    with Orthanc(tmp_path / "orthanc", users={"fracsight": PASSWORD}) as orthanc:
        wrong = "wrong-" + PASSWORD
        command = ["dicom", "study", generate_uid(), "--dicomweb", _with_login(orthanc.dicomweb_url, wrong)]
        done = CliRunner().invoke(app, command)
        anonymous = CliRunner().invoke(
            app, ["dicom", "study", generate_uid(), "--dicomweb", orthanc.dicomweb_url]
        )
        root = _with_login(orthanc.url, PASSWORD)  # Orthanc's REST root, not its DICOMweb one
        misplaced = CliRunner().invoke(app, ["dicom", "study", generate_uid(), "--dicomweb", root])
        orthanc.upload(source)
        rest_root = CliRunner().invoke(app, ["dicom", "study", held, "--dicomweb", root])
    assert done.exit_code == 1
    assert (
        "error (dicomweb_unavailable): the DICOMweb service at http://fracsight:***@127.0.0.1" in done.output
    )
    assert done.output.rstrip().endswith(
        ": HTTP 401: the user name or password was refused: check FRACSIGHT_DICOMWEB_USER and the password"
    )
    assert wrong not in done.output
    assert (
        anonymous.exit_code == 1
        and "HTTP 401: the service asks for a login: set FRACSIGHT_DICOMWEB_USER" in (anonymous.output)
    )
    assert misplaced.exit_code == 1 and "HTTP 404: no DICOMweb service at this URL: check its path" in (
        misplaced.output
    ), misplaced.output
    assert PASSWORD not in misplaced.output
    assert rest_root.exit_code == 1 and isinstance(rest_root.exception, SystemExit)  # no traceback
    assert "its answer is not DICOMweb JSON: check that the URL is the service's DICOMweb root, e.g. " in (
        rest_root.output
    ), rest_root.output


def test_node_logs_in_with_the_password_from_the_environment_off_its_command_line(
    fracatlas_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FRACSIGHT_DICOMWEB_PASSWORD and --dicomweb-user: what ``ps`` shows of the node and of its
    worker process holds no password (it did with the URL form, the only one there was)."""
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    source = make_radiograph_dicom(image, tmp_path / "a.dcm", study_uid=generate_uid())
    monkeypatch.setenv("FRACSIGHT_DICOMWEB_PASSWORD", PASSWORD)
    with Orthanc(tmp_path / "orthanc", users={"fracsight": PASSWORD}) as orthanc:
        stow = ["--stow", orthanc.dicomweb_url, "--dicomweb-user", "fracsight"]
        node = NodeProcess(tmp_path / "node", destination=stow, extra=["--processes", "1"])
        with node:
            assert node.process is not None
            pids = [node.process.pid, *node.worker_pids()]
            command_lines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids]
            assert storescu("127.0.0.1", node.port, [source]).returncode == 0
            orthanc.wait_for_instances(len(DEFAULT_KINDS) + 1, timeout=90)  # the image's and the verdict
        log = node.log()
    assert len(command_lines) >= 2 and all(PASSWORD.encode() not in line for line in command_lines)
    assert "fracsight:***@127.0.0.1" in log
    assert PASSWORD not in log


def test_study_command_logs_in_with_a_password_file(
    fracatlas_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--dicomweb-password-file and FRACSIGHT_DICOMWEB_USER, for QIDO-RS, WADO-RS and STOW-RS; a
    wrong password in the file is HTTP 401, said without the password."""
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    study_uid = generate_uid()
    source = make_radiograph_dicom(image, tmp_path / "a.dcm", study_uid=study_uid)
    secret = tmp_path / "dicomweb_password"
    monkeypatch.setenv("FRACSIGHT_DICOMWEB_USER", "fracsight")
    with Orthanc(tmp_path / "orthanc", users={"fracsight": PASSWORD}) as orthanc:
        orthanc.upload(source)
        command = ["dicom", "study", study_uid, "--dicomweb", orthanc.dicomweb_url]
        command += ["--dicomweb-password-file", str(secret)]
        secret.write_text("wrong-" + PASSWORD + "\n")
        refused = CliRunner().invoke(app, command)
        secret.write_text(PASSWORD + "\n")  # as `echo` writes it: the line end is not the password's
        done = CliRunner().invoke(app, command)
        assert done.exit_code == 0, done.output
        assert len(orthanc.find_instances(StudyInstanceUID=study_uid)) == 1 + len(DEFAULT_KINDS) + 1
    assert refused.exit_code == 1
    assert "the DICOMweb service at http://fracsight:***@127.0.0.1" in refused.output
    assert ": HTTP 401: the user name or password was refused" in refused.output
    assert PASSWORD not in refused.output + done.output


def test_a_line_end_at_the_end_of_the_password_variable_is_not_part_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FRACSIGHT_DICOMWEB_PASSWORD made from a file written with `echo` (Unix or Windows line end)
    logs in, as the password file does: it was sent with its line end, HTTP 401 for every request."""
    monkeypatch.setenv("FRACSIGHT_DICOMWEB_USER", "fracsight")
    with Orthanc(tmp_path / "orthanc", users={"fracsight": PASSWORD}) as orthanc:
        command = ["dicom", "study", generate_uid(), "--dicomweb", orthanc.dicomweb_url]
        for line_end in ("\n", "\r\n"):
            monkeypatch.setenv("FRACSIGHT_DICOMWEB_PASSWORD", PASSWORD + line_end)
            done = CliRunner().invoke(app, command)
            assert done.exit_code == 1, done.output
            assert "error (study_not_found)" in done.output  # logged in: the service looked for it
            assert "HTTP 401" not in done.output


@pytest.mark.parametrize("command", ["listen", "study"])
def test_a_password_given_two_ways_is_refused(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the environment and in a file (or in the URL): exit 2 before anything starts, naming
    the ways, never the password; not one of them picked silently."""
    secret = tmp_path / "dicomweb_password"
    secret.write_text(PASSWORD + "\n")
    monkeypatch.setenv("FRACSIGHT_DICOMWEB_PASSWORD", PASSWORD)
    url = "http://127.0.0.1:9/dicom-web"
    if command == "listen":
        args = ["dicom", "listen", "--spool", str(tmp_path / "spool"), "--allow", "PACS", "--stow", url]
    else:
        args = ["dicom", "study", generate_uid(), "--dicomweb", url]
    done = CliRunner().invoke(
        app, [*args, "--dicomweb-user", "fracsight", "--dicomweb-password-file", str(secret)]
    )
    assert done.exit_code == 2, done.output
    assert "error (dicomweb_login): the DICOMweb password is given 2 ways" in done.output
    assert "FRACSIGHT_DICOMWEB_PASSWORD, a password file" in done.output
    in_url = CliRunner().invoke(app, [*args[:-1], _with_login(url, "other-" + PASSWORD)])
    assert in_url.exit_code == 2, in_url.output
    assert "given 2 ways (the URL, FRACSIGHT_DICOMWEB_PASSWORD)" in in_url.output
    assert PASSWORD not in done.output + in_url.output
    assert not (tmp_path / "spool").exists()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), as a hospital's own CA would sign one."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_study_over_https_with_the_hospitals_certificate_authority(
    fracatlas_dir: Path, tmp_path: Path, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Untrusted: one line saying what to do (it said only "SSLError"); with REQUESTS_CA_BUNDLE, stored."""
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    study_uid = generate_uid()
    source = make_radiograph_dicom(image, tmp_path / "a.dcm", study_uid=study_uid)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with Orthanc(tmp_path / "orthanc") as orthanc:
        orthanc.upload(source)
        proxy = FailingProxy(orthanc.url)  # poisoned by nothing: an HTTPS front end
        proxy.server.socket = context.wrap_socket(proxy.server.socket, server_side=True)
        with proxy:
            command = [
                "dicom",
                "study",
                study_uid,
                "--dicomweb",
                proxy.url.replace("http:", "https:") + "/dicom-web",
            ]
            untrusted = CliRunner().invoke(app, command)
            assert untrusted.exit_code == 1
            assert "not trusted here (SSLError)" in untrusted.output
            assert "set REQUESTS_CA_BUNDLE" in untrusted.output
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))
            trusted = CliRunner().invoke(app, command)
        assert trusted.exit_code == 0, trusted.output
        assert len(orthanc.find_instances(StudyInstanceUID=study_uid)) == 1 + len(DEFAULT_KINDS) + 1


@pytest.fixture
def hospital_ca(tmp_path: Path) -> Path:
    """A certificate authority of the hospital's own (``ca.pem``, ``ca.key``) in a folder that
    ``openssl ca`` signs server certificates from (:func:`_server_certificate`)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    folder = tmp_path / "ca"
    folder.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Hospital CA"],
        cwd=folder, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    (folder / "index.txt").write_text("")
    (folder / "serial").write_text("01\n")
    (folder / "ca.cnf").write_text(
        "[ca]\ndefault_ca = hospital\n[hospital]\ndatabase = index.txt\nnew_certs_dir = .\n"
        "serial = serial\ndefault_md = sha256\npolicy = any\ncopy_extensions = copy\n"
        "[any]\ncommonName = supplied\n"
    )
    return folder


def _server_certificate(ca: Path, names: str, valid: tuple[datetime, datetime]) -> Path:
    """A certificate of ``ca`` for ``names`` (subjectAltName: ``DNS:pacs.example``, ``IP:...``),
    valid from ``valid[0]`` to ``valid[1]``: a file with its key, for ``load_cert_chain``."""
    key = ca / "server.key"
    request = ca / "server.csr"
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(request), "-subj", "/CN=DICOMweb",
         "-addext", f"subjectAltName={names}"],
        cwd=ca, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    start, end = (moment.strftime("%Y%m%d%H%M%SZ") for moment in valid)
    signed = ca / "server.pem"
    subprocess.run(
        ["openssl", "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-notext",
         "-in", str(request), "-out", str(signed), "-startdate", start, "-enddate", end],
        cwd=ca, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    chain = ca / "server-chain.pem"
    chain.write_text(signed.read_text() + key.read_text())
    return chain


_NOW = datetime.now(timezone.utc)
_CURRENT = (_NOW - timedelta(days=1), _NOW + timedelta(days=1))


@pytest.mark.parametrize(
    ("host", "names", "valid", "said"),
    [
        ("127.0.0.1", "DNS:pacs.hospital.example", _CURRENT, "its TLS certificate does not name 127.0.0.1"),
        ("localhost", "DNS:pacs.hospital.example", _CURRENT, "its TLS certificate does not name localhost"),
        (
            "127.0.0.1",
            "IP:127.0.0.1",
            (_NOW - timedelta(days=60), _NOW - timedelta(days=30)),
            "its TLS certificate has expired (SSLError): the service needs a new one",
        ),
        (
            "127.0.0.1",
            "IP:127.0.0.1",
            (_NOW + timedelta(days=30), _NOW + timedelta(days=60)),
            "its TLS certificate is not valid yet (SSLError): check the clocks",
        ),
    ],
)
def test_a_certificate_of_a_trusted_authority_that_does_not_fit_says_why(
    hospital_ca: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    names: str,
    valid: tuple[datetime, datetime],
    said: str,
) -> None:
    """Made out to another host name, expired, not valid yet: each was said as an authority not
    trusted here, with advice to set REQUESTS_CA_BUNDLE, which was set already; an authority not
    given there is still said so."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(_server_certificate(hospital_ca, names, valid))
    proxy = FailingProxy("http://127.0.0.1:9")  # the handshake fails: nothing is forwarded
    proxy.server.socket = context.wrap_socket(proxy.server.socket, server_side=True)
    url = proxy.url.replace("http://127.0.0.1", f"https://{host}") + "/dicom-web"
    command = ["dicom", "study", generate_uid(), "--dicomweb", url]
    with proxy:
        unknown_authority = CliRunner().invoke(app, command)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(hospital_ca / "ca.pem"))
        done = CliRunner().invoke(app, command)
    assert unknown_authority.exit_code == 1, unknown_authority.output
    assert "not trusted here (SSLError)" in unknown_authority.output
    assert done.exit_code == 1, done.output
    assert f"error (dicomweb_unavailable): the DICOMweb service at {url}: {said}" in done.output
    assert "REQUESTS_CA_BUNDLE" not in done.output


@pytest.mark.parametrize("command", ["listen", "study"])
def test_certificate_authorities_that_cannot_be_used_are_refused_at_start(
    command: str, tmp_path: Path
) -> None:
    """A REQUESTS_CA_BUNDLE that is missing or no PEM file: one line and exit 2 before anything
    starts. `dicom study` ended in requests' traceback; the node started, and its sender logged
    "unexpected error; retrying shortly: OSError" every second for ever."""
    import os
    import sys

    garbage = tmp_path / "hospital-ca.pem"
    garbage.write_text("not a certificate\n")
    url = "https://127.0.0.1:9/dicom-web"
    if command == "listen":
        args = ["dicom", "listen", "--spool", str(tmp_path / "spool"), "--allow", "PACS", "--stow", url]
        args += ["--host", "127.0.0.1", "--port", str(free_port()), "--processes", "0"]
    else:
        args = ["dicom", "study", generate_uid(), "--dicomweb", url]
    executable = Path(sys.executable).parent / "fracsight"
    for bundle, why in (
        (
            tmp_path / "missing.pem",
            "no such file (give the PEM file of the hospital's certificate authority)",
        ),
        (garbage, "holds no certificate in PEM form (-----BEGIN CERTIFICATE-----)"),
    ):
        env = {**os.environ, "REQUESTS_CA_BUNDLE": str(bundle)}
        done = subprocess.run(
            [str(executable), *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )  # a node that starts anyway runs until the timeout: the test fails instead of hanging
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == f"error (tls_ca_bundle): REQUESTS_CA_BUNDLE={bundle}: {why}"
    assert not (tmp_path / "spool").exists()


def test_https_to_a_plain_http_service_says_so(tmp_path: Path) -> None:
    """`https://` for Orthanc's plain-HTTP port: the handshake fails, which was reported as an
    untrusted certificate (advice to set REQUESTS_CA_BUNDLE, which cannot help)."""
    with Orthanc(tmp_path / "orthanc") as orthanc:
        url = orthanc.dicomweb_url.replace("http://", "https://")
        done = CliRunner().invoke(app, ["dicom", "study", generate_uid(), "--dicomweb", url])
    assert done.exit_code == 1, done.output
    said = f"error (dicomweb_unavailable): the DICOMweb service at {url}: TLS handshake failed (SSLError): "
    assert said in done.output
    assert "check that the service speaks https on this port" in done.output
    assert "REQUESTS_CA_BUNDLE" not in done.output
