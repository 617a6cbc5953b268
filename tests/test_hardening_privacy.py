"""Privacy: DICOM identifiers never reach logs, results, CSV/JSON exports, overlays or API answers;
uploads stay in memory; a tampered bundle is refused at API startup."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corpus import SENTINELS, build_corpus, dicom_bytes
from fracsight.cli import app as cli_app
from fracsight.errors import ImageReadError
from fracsight.inference import Predictor
from fracsight.io import read_image

runner = CliRunner()

# Every identifier planted in the test DICOMs, plus the DICOM-formatted variants of the name.
FORBIDDEN = sorted({*SENTINELS.values(), "SENTINEL", "PATIENT^NAME", "8675309", "SENTACC"})

# DICOMs full of identifiers: readable ones and each kind of refusal.
DICOMS = {
    "scan.dcm": dicom_bytes(),
    "inverted.dcm": dicom_bytes(photometric="MONOCHROME1"),
    "frames.dcm": dicom_bytes(frames=2),
    "nopixels.dcm": dicom_bytes(pixels=False),
    "grey-capture.dcm": dicom_bytes(photometric="RGB", samples=3, bits_allocated=8, bits_stored=8),
    "colour.dcm": dicom_bytes(photometric="RGB", samples=3, bits_allocated=8, bits_stored=8, colour=True),
    "ct.dcm": dicom_bytes(modality="CT"),
    "lying.dcm": dicom_bytes(rows=720, cols=640, pixel_bytes=b"\x00" * 64),
    "video.dcm": dicom_bytes(transfer_syntax="1.2.840.10008.1.2.4.100"),
    "garbled.dcm": dicom_bytes(transfer_syntax="1.2.840.10008.1.2.4.50"),
}
READABLE = ("scan.dcm", "inverted.dcm", "grey-capture.dcm")


def assert_clean(text: str | bytes, where: str) -> None:
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    for token in FORBIDDEN:
        assert token.encode() not in data, f"{token!r} leaked into {where}"


def png_text_chunks(data: bytes) -> list[bytes]:
    """The chunks of a PNG that can carry text or metadata (tEXt, zTXt, iTXt, eXIf), but the one
    fracsight writes into every overlay (a fixed text that makes the reader refuse it as input)."""
    from fracsight.io._raster import OVERLAY_COMMENT

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    found, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = data[pos + 8 : pos + 8 + length]
        if kind in (b"tEXt", b"zTXt", b"iTXt", b"eXIf") and body != b"Comment\0" + OVERLAY_COMMENT.encode():
            found.append(kind + b": " + body)
        pos += 12 + length
    return found


@pytest.fixture(scope="module")
def dicom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("private_dicoms")
    for name, data in DICOMS.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def client(tiny_bundle: Path) -> Iterator[object]:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fracsight.api import ApiSettings, create_app

    with TestClient(create_app(ApiSettings(model=str(tiny_bundle)))) as c:
        yield c


def test_the_test_files_really_hold_the_identifiers() -> None:
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(DICOMS["scan.dcm"]))
    assert str(ds.PatientName) == SENTINELS["PatientName"] and ds.AccessionNumber == "SENTACC4242"
    assert all(token.encode() in DICOMS["scan.dcm"] for token in SENTINELS.values())


def test_library_results_errors_and_logs(tiny_bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    predictor = Predictor(tiny_bundle)
    caplog.set_level(logging.DEBUG)
    # whatever an earlier test in this process set: `dicom listen` run in-process (its bad-input
    # tests) sets fracsight's level and pydicom's to CRITICAL, as the node does
    caplog.set_level(logging.DEBUG, logger="fracsight")
    caplog.set_level(logging.DEBUG, logger="pydicom")
    for name, data in DICOMS.items():
        try:
            result = predictor.predict(data, name=name, heatmap=True)
        except ImageReadError as e:
            assert name not in READABLE
            assert_clean(str(e), f"the error for {name}")
            continue
        assert_clean(repr(result), f"repr of the result for {name}")
        assert_clean(json.dumps(result.to_dict()), f"to_dict of {name}")
        assert_clean(json.dumps(result.metadata.to_dict()), f"metadata of {name}")
        assert_clean(json.dumps(read_image(data).metadata.to_dict()), f"read_image metadata of {name}")
    assert caplog.records, "expected the reader's INFO/DEBUG records to be captured"
    assert_clean(caplog.text, "the log")


def test_cli_table_json_csv_and_overlays(
    tiny_bundle: Path, dicom_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    csv_path, overlays = tmp_path / "out.csv", tmp_path / "overlays"
    base = ["predict", str(dicom_dir), "--model", str(tiny_bundle)]
    table = runner.invoke(cli_app, base, env={"COLUMNS": "300"})
    exported = runner.invoke(
        cli_app, [*base, "--json", "--csv", str(csv_path), "--overlay-dir", str(overlays), "--study"]
    )
    for result in (table, exported):
        assert result.exit_code == 1, result.output  # the unreadable DICOMs make it 1
        assert "Traceback" not in result.output
        assert_clean(result.output, "CLI output")
    assert_clean(csv_path.read_bytes(), "the CSV export")
    rows = json.loads(exported.stdout)["images"]
    assert sorted(r["source"] for r in rows) == sorted(DICOMS)
    pngs = sorted(overlays.glob("*.png"))
    assert len(pngs) == len(READABLE)
    for png in pngs:
        data = png.read_bytes()
        assert png_text_chunks(data) == [], f"{png.name} carries text metadata"
        assert_clean(data, png.name)
    assert_clean(caplog.text, "the log")


def test_api_answers_overlays_metrics_and_logs(client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bodies = []
    for name, data in DICOMS.items():
        r = client.post(
            "/v1/predict?overlay=true&study=true", files=[("files", (name, data, "application/dicom"))]
        )
        assert (r.status_code == 200) == (name in READABLE), r.text
        bodies.append(r.text)
        if r.status_code == 200:
            png = base64.b64decode(r.json()["images"][0]["overlay_png_base64"])
            assert png_text_chunks(png) == []
            assert_clean(png, f"the overlay of {name}")
    everything = [("files", (n, d, "application/dicom")) for n, d in DICOMS.items()]
    bodies.append(client.post("/v1/predict", files=everything).text)
    bodies.append(client.get("/metrics").text)
    for text in bodies:
        assert_clean(text, "an API answer")
    assert_clean(caplog.text, "the server log")


def test_uploads_are_never_written_to_disk(client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tempfile API is pointed at an empty folder; after large and bad uploads it is still empty."""
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    for var in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.setenv(var, str(spool))
    big = DICOMS["scan.dcm"] + b"\x00" * (3 * 1024 * 1024)  # well past Starlette's 1 MB spooling point
    cases = {c.id: c for c in build_corpus()}
    uploads = [
        ("big.dcm", big),
        ("good.png", cases["good-png"].data),
        ("random.png", cases["random-png"].data),
        ("cut.jpg", cases["jpeg-cut-70pct"].data),
        ("scan.dcm", DICOMS["scan.dcm"]),
    ]
    for name, data in uploads:
        client.post("/v1/predict?overlay=true", files=[("files", (name, data, "application/octet-stream"))])
    r = client.post("/v1/predict", files=[("files", (n, d, "application/octet-stream")) for n, d in uploads])
    assert r.status_code == 200, r.text
    assert list(spool.iterdir()) == []


def test_app_startup_refuses_a_tampered_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fracsight.api import ApiSettings, create_app
    from fracsight.errors import ChecksumMismatchError

    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_bundle, tampered)
    onnx = tampered / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with (
        pytest.raises(ChecksumMismatchError) as info,
        TestClient(create_app(ApiSettings(model=str(tampered)))),
    ):
        pass
    message = str(info.value)
    assert "does not match bundle.json" in message and "refusing to load it" in message


class _FailingPredictor:
    """A predictor that fails unexpectedly, quoting a patient's name (a library's error may quote a
    DICOM value): what the web app and the desktop window log of it."""

    quoted = f"cannot handle PatientName {SENTINELS['PatientName']}"

    def predict(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError(self.quoted)  # the stack logged quotes this line, not the message


def test_app_and_desktop_log_an_unexpected_error_without_its_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Both logged the exception with its message (``log.exception``), as the API never did."""
    pytest.importorskip("streamlit")
    from fracsight.app.streamlit_app import predict as app_predict
    from fracsight.desktop.worker import predict_one

    caplog.set_level(logging.DEBUG)
    image = tmp_path / "scan.dcm"
    image.write_bytes(DICOMS["scan.dcm"])
    shown = [
        app_predict(_FailingPredictor(), DICOMS["scan.dcm"], "scan.dcm").result,  # type: ignore[arg-type]
        predict_one(_FailingPredictor(), image, "scan.dcm"),  # type: ignore[arg-type]
    ]
    for failure in shown:
        assert (failure.error_code, failure.error) == (
            "internal_error",
            "unexpected RuntimeError while processing this file",
        )
    assert caplog.text.count("unexpected RuntimeError") == 2 and "Traceback" not in caplog.text
    assert_clean(caplog.text, "the app's and the window's log")


def test_predicting_writes_nothing_to_home_or_temp(fracatlas_dir: Path, tmp_path: Path) -> None:
    """ONNX Runtime 1.32's Linux wheel kept a device id and a database of usage events under
    ~/.cache/Microsoft (and a file in $TMPDIR), to upload when it can; fracsight turns that off
    (ORT_DISABLE_TELEMETRY) unless the user set it. Checked in a process of its own, since ONNX
    Runtime reads the setting once."""
    import os
    import subprocess
    import sys

    home, temp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), TMPDIR=str(temp), XDG_CACHE_HOME=str(home / ".cache"))
    image = fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg"
    code = f"import fracsight; print(fracsight.Predictor().predict({str(image)!r}).decision)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [p for p in (*home.rglob("*"), *temp.rglob("*"))] == []
