"""A DICOMweb service behind HTTP basic authentication (Orthanc with ``RegisteredUsers``): the
credentials written in the URL (``http://user:password@host/dicom-web``) log in, and the password
is in no log line or message of the node or of ``fracsight dicom study``. Behind HTTPS with a
certificate of the hospital's own authority: trusted through ``REQUESTS_CA_BUNDLE``, and said so
when it is not.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from dicom_support import (
    FailingProxy,
    NodeProcess,
    Orthanc,
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


def test_study_command_names_the_service_without_its_password(tmp_path: Path) -> None:
    with Orthanc(tmp_path / "orthanc", users={"fracsight": PASSWORD}) as orthanc:
        wrong = "wrong-" + PASSWORD
        command = ["dicom", "study", generate_uid(), "--dicomweb", _with_login(orthanc.dicomweb_url, wrong)]
        done = CliRunner().invoke(app, command)
    assert done.exit_code == 1
    assert (
        "error (dicomweb_unavailable): the DICOMweb service at http://fracsight:***@127.0.0.1" in done.output
    )
    assert done.output.rstrip().endswith(": HTTP 401")
    assert wrong not in done.output


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
