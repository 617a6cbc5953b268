"""REST API: predictions on real and synthetic images, overlays, studies, the error contract, privacy."""

from __future__ import annotations

import base64
import csv
import io
import logging
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import is_overlay_of
from fracsight.api import ApiSettings, create_app
from fracsight.api.routes import get_predictor
from fracsight.inference import NOTICE, Predictor, list_bundles

pydicom = pytest.importorskip("pydicom")

PATIENT_NAME = "SENTINEL^PATIENTNAME"
PATIENT_ID = "PID-55501234"


# ---- synthetic inputs ------------------------------------------------------------------------------
def png_bytes(height: int = 96, width: int = 96, seed: int = 0) -> bytes:
    """A grey 8-bit PNG with a bright 'bone' band and some noise."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width), 40, dtype=np.float64)
    image[:, width // 3 : 2 * width // 3] = 200
    image += rng.normal(0, 10, image.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def dicom_bytes(*, with_pixels: bool = True, rows: int = 72, cols: int = 64) -> bytes:
    """A DX DICOM with planted patient identifiers (that must never come back)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.InstitutionName = "SENTINEL HOSPITAL"
    if with_pixels:
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ramp = np.linspace(0, 4095, rows * cols).reshape(rows, cols).astype(np.uint16)
        ds.PixelData = ramp.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


# ---- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(tiny_bundle: Path) -> Iterator[TestClient]:
    app = create_app(ApiSettings(model=str(tiny_bundle), max_files=4))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def fracatlas_jpeg(fracatlas_dir: Path) -> Path:
    return sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def metric(client: TestClient, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# ---- predictions -----------------------------------------------------------------------------------
def test_predict_real_fracatlas_jpeg(client: TestClient, fracatlas_jpeg: Path) -> None:
    r = client.post("/v1/predict", files=files((fracatlas_jpeg.name, fracatlas_jpeg.read_bytes())))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["notice"] == NOTICE and body["studies"] == []
    assert set(body["model"]) == {"name", "version"}
    (image,) = body["images"]
    assert image["source"] == fracatlas_jpeg.name
    assert 0.0 <= image["fracture_probability"] <= 1.0
    assert image["image"]["format"] == "jpeg"
    assert image["operating_point"]["name"] in image["decisions"]
    assert "overlay_png_base64" not in image
    # the tiny bundle has a fracture head only (class folders): its fields and no others
    assert image["localization"] == "fracture" and isinstance(image["boxes"], list)
    assert not {"region", "region_probabilities", "classification", "class_probabilities"} & set(image)


def test_predict_synthetic_png_and_dicom_in_one_request(client: TestClient) -> None:
    r = client.post("/v1/predict", files=files(("a.png", png_bytes()), ("b.dcm", dicom_bytes())))
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    assert [i["source"] for i in images] == ["a.png", "b.dcm"]
    assert [i["image"]["format"] for i in images] == ["png", "dicom"]
    assert images[1]["image"]["height"] == 72 and images[1]["image"]["width"] == 64


def test_overlay_is_a_png_of_the_original_size_with_its_caption_below(client: TestClient) -> None:
    r = client.post("/v1/predict?overlay=true", files=files(("a.png", png_bytes(96, 80))))
    assert r.status_code == 200, r.text
    overlay = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]["overlay_png_base64"])))
    assert overlay.format == "PNG" and is_overlay_of(overlay.size, 80, 96)


def test_overlay_of_a_reduced_jpeg_is_full_size_and_changes_no_answer(client: TestClient) -> None:
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:400, 0:300]
    arr = np.clip(100 + 80 * np.sin(x / 23.0) * np.cos(y / 31.0) + rng.normal(0, 5, x.shape), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()  # the tiny model's input is 64 px: decoded at 1/4 scale for the model
    plain = client.post("/v1/predict", files=files(("a.jpg", jpeg)))
    shown = client.post("/v1/predict?overlay=true", files=files(("a.jpg", jpeg)))
    assert plain.status_code == shown.status_code == 200, shown.text
    a, b = plain.json()["images"][0], shown.json()["images"][0]
    assert a["fracture_probability"] == b["fracture_probability"] and a["boxes"] == b["boxes"]
    assert (b["image"]["height"], b["image"]["width"]) == (400, 300)
    overlay = Image.open(io.BytesIO(base64.b64decode(b["overlay_png_base64"])))
    assert is_overlay_of(overlay.size, 300, 400)


def test_study_combines_the_views(client: TestClient) -> None:
    r = client.post(
        "/v1/predict?study=true", files=files(("v1.png", png_bytes(seed=1)), ("v2.png", png_bytes(seed=2)))
    )
    assert r.status_code == 200, r.text
    body = r.json()
    (study,) = body["studies"]
    assert study["images"] == ["v1.png", "v2.png"]
    mean = np.mean([i["fracture_probability"] for i in body["images"]])
    assert study["fracture_probability"] == pytest.approx(mean, abs=1e-5)
    assert study["unread_images"] == [] and study["warnings"] == []
    # a view that cannot be read: the study says so and is not reliable (it was silently left out)
    r = client.post("/v1/predict?study=true", files=files(("v1.png", png_bytes(seed=1)), ("v2.png", b"")))
    (study,) = r.json()["studies"]
    assert study["images"] == ["v1.png"] and study["unread_images"] == ["v2.png"]
    assert study["reliable"] is False and study["decision"] == "not reliable: some views could not be read"
    assert study["warnings"] == [
        "1 of 2 views could not be read (v2.png); the study result is from the other 1 only"
    ]
    # a structured report sent with the views (a PACS export holds them) is no view unread
    from corpus import BASIC_TEXT_SR
    from corpus import dicom_bytes as any_dicom

    report = ("sr.dcm", any_dicom(modality="SR", sop_class=BASIC_TEXT_SR))
    r = client.post("/v1/predict?study=true", files=files(("v1.png", png_bytes(seed=1)), report))
    (study,) = r.json()["studies"]
    assert study["reliable"] is True and study["unread_images"] == [], study
    assert r.json()["images"][1]["error"]["code"] == "unsupported_modality"


def test_operating_point_query(client: TestClient) -> None:
    names = [op["name"] for op in client.get("/v1/model").json()["operating_points"]]
    chosen = names[-1]
    r = client.post(f"/v1/predict?operating_point={chosen}", files=files(("a.png", png_bytes())))
    image = r.json()["images"][0]
    assert image["operating_point"]["name"] == chosen
    assert image["fracture_suspected"] == image["decisions"][chosen]
    for unknown in ("nope", ""):  # an empty name is not the default: a client bug, told
        r = client.post(f"/v1/predict?operating_point={unknown}", files=files(("a.png", png_bytes())))
        assert_error(r, 422, "unknown_operating_point")


def test_csv_format(client: TestClient, tiny_bundle: Path) -> None:
    from fracsight.bundle import load_bundle_spec
    from fracsight.inference.tabular import result_columns

    r = client.post("/v1/predict?format=csv&study=true", files=files(("a.png", png_bytes()), ("e.png", b"")))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["x-fracsight-notice"] == NOTICE  # every answer carries it; a CSV as a header
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert tuple(rows[0]) == result_columns(load_bundle_spec(tiny_bundle))
    assert "x-fracsight-note" not in r.headers
    no_class_head = client.post(
        "/v1/predict?format=csv&all_classes=true", files=files(("a.png", png_bytes()))
    )
    assert no_class_head.text.splitlines()[0] == r.text.splitlines()[0]  # no p_<class> column
    assert "has no class head" in no_class_head.headers["x-fracsight-note"]  # as the CLI's note says
    assert [(row["kind"], row["source"], row["error_code"]) for row in rows] == [
        ("image", "a.png", ""),
        ("image", "e.png", "empty_file"),
        ("study", "all inputs", ""),  # named as predict --study names it
    ]
    assert rows[2]["reliable"] == "False" and rows[2]["warnings"].startswith("1 of 2 views could not be read")
    json_image = client.post("/v1/predict", files=files(("a.png", png_bytes()))).json()["images"][0]
    assert float(rows[0]["fracture_probability"]) == pytest.approx(
        json_image["fracture_probability"], abs=1e-4
    )
    # errors stay JSON; csv cannot carry overlays; unknown formats are refused
    assert_error(client.post("/v1/predict?format=csv", files=files(("e.png", b""))), 400, "empty_file")
    error = assert_error(
        client.post("/v1/predict?format=csv&overlay=true", files=files(("a.png", png_bytes()))),
        422,
        "validation_error",
    )
    assert error["details"][0]["loc"] == ["query", "overlay"]
    error = assert_error(
        client.post("/v1/predict?format=xml", files=files(("a.png", png_bytes()))), 422, "validation_error"
    )
    assert error["details"][0]["loc"] == ["query", "format"]


def test_mixed_good_and_bad_files_give_200_with_per_file_errors(client: TestClient) -> None:
    r = client.post("/v1/predict", files=files(("good.png", png_bytes()), ("empty.png", b"")))
    assert r.status_code == 200
    good, bad = r.json()["images"]
    assert "fracture_probability" in good
    assert bad == {"source": "empty.png", "error": {"code": "empty_file", "message": bad["error"]["message"]}}


# ---- the error contract ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "data", "status", "code"),
    [
        ("empty.png", b"", 400, "empty_file"),
        ("notes.png", b"this is a text file, not an image\n" * 4, 415, "unsupported_format"),
        ("nopix.dcm", None, 400, "no_pixel_data"),
        ("tiny.png", "tiny", 400, "image_too_small"),
    ],
)
def test_unreadable_file_errors(client: TestClient, name: str, data: Any, status: int, code: str) -> None:
    if data is None:
        data = dicom_bytes(with_pixels=False)
    elif data == "tiny":
        data = png_bytes(8, 8)
    assert_error(client.post("/v1/predict", files=files((name, data))), status, code)


def test_every_file_failing_the_same_way_gives_that_error_with_details(client: TestClient) -> None:
    error = assert_error(
        client.post("/v1/predict", files=files(("a.png", b""), ("b.png", b""))), 400, "empty_file"
    )
    assert [d["source"] for d in error["details"]] == ["a.png", "b.png"]
    error = assert_error(
        client.post("/v1/predict", files=files(("a.png", b""), ("b.txt", b"plain text here"))),
        400,
        "no_readable_images",
    )
    assert {d["code"] for d in error["details"]} == {"empty_file", "unsupported_format"}


def test_missing_files_field_is_422(client: TestClient) -> None:
    error = assert_error(client.post("/v1/predict"), 422, "validation_error")
    assert error["details"][0]["loc"] == ["body", "files"]
    assert_error(client.post("/v1/predict", data={"other": "x"}), 422, "validation_error")
    wrong_field = [("image", ("a.png", png_bytes(), "image/png"))]
    assert_error(client.post("/v1/predict", files=wrong_field), 422, "validation_error")


def test_invalid_query_is_422_in_the_same_shape(client: TestClient) -> None:
    error = assert_error(
        client.post("/v1/predict?overlay=perhaps", files=files(("a.png", png_bytes()))),
        422,
        "validation_error",
    )
    assert error["details"][0]["loc"] == ["query", "overlay"]


def test_too_many_files(client: TestClient) -> None:
    many = files(*[(f"{i}.png", png_bytes()) for i in range(5)])  # the client allows 4
    assert_error(client.post("/v1/predict", files=many), 422, "too_many_files")


def test_oversize_file_is_413(tiny_bundle: Path) -> None:
    app = create_app(ApiSettings(model=str(tiny_bundle), max_upload_bytes=2000))
    with TestClient(app) as c:
        error = assert_error(
            c.post("/v1/predict", files=files(("big.png", b"\x89PNG" + bytes(5000)))), 413, "upload_too_large"
        )
        assert "2,000" in error["message"]
        small = png_bytes(40, 40)
        assert len(small) < 2000 and c.post("/v1/predict", files=files(("s.png", small))).status_code == 200


def test_image_over_max_pixels_is_413(tiny_bundle: Path) -> None:
    with TestClient(create_app(ApiSettings(model=str(tiny_bundle), max_pixels=64 * 64))) as c:
        assert_error(c.post("/v1/predict", files=files(("a.png", png_bytes(96, 80)))), 413, "image_too_large")


def test_unknown_route_and_method_use_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/v1/predict"), 405, "method_not_allowed")
    # a trailing slash is a 404, never a 307 that re-sends the images to a Location from the Host header
    r = client.post(
        "/v1/predict/", files=files(("a.png", png_bytes())), headers={"Host": "elsewhere.example"}
    )
    assert_error(r, 404, "not_found")
    assert "location" not in r.headers


def test_unexpected_exception_is_500_without_traceback(
    tiny_bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real = Predictor(tiny_bundle)

    class Broken:
        spec, operating_point, read = real.spec, real.operating_point, real.read

        def predict_radiographs(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"secret detail {PATIENT_NAME}")

    app = create_app(ApiSettings(model=str(tiny_bundle)))
    app.dependency_overrides[get_predictor] = Broken
    with caplog.at_level(logging.ERROR, logger="fracsight.api"), TestClient(app) as c:
        r = c.post("/v1/predict", files=files(("a.png", png_bytes())))
        error = assert_error(r, 500, "internal_error")
        assert "secret" not in r.text and "Traceback" not in r.text and "RuntimeError" not in error["message"]
        app.dependency_overrides.clear()
        assert c.post("/v1/predict", files=files(("a.png", png_bytes()))).status_code == 200
    assert "RuntimeError" in caplog.text and PATIENT_NAME not in caplog.text


def test_an_internal_error_names_its_request_as_the_log_does(
    tiny_bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 500 said "the server logged it", and nothing tied a client's report to one of several
    identical stacks in the log: every answer now carries an X-Request-ID (a proxy's own where it
    is a short plain token), and the 500 message and the log line both name it."""
    real = Predictor(tiny_bundle)

    class Broken:
        spec, operating_point, predict_radiographs = real.spec, real.operating_point, real.predict_radiographs

        def read(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a reader bug")

        def predict_radiographs_broken(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a model bug")

    app = create_app(ApiSettings(model=str(tiny_bundle)))
    with caplog.at_level(logging.ERROR, logger="fracsight.api"), TestClient(app) as c:
        r = c.get("/healthz", headers={"X-Request-ID": "proxy-7.a_B"})
        assert r.headers["x-request-id"] == "proxy-7.a_B"
        for forged in ("x" * 65, "a b", "a\tb", ""):  # a new one, never the client's text
            r = c.get("/healthz", headers={"X-Request-ID": forged})
            assert re.fullmatch("[0-9a-f]{32}", r.headers["x-request-id"]), forged
        first, second = c.get("/healthz"), c.get("/healthz")
        assert first.headers["x-request-id"] != second.headers["x-request-id"]
        app.dependency_overrides[get_predictor] = Broken  # a file that fails inside: its own 500
        r = c.post("/v1/predict", files=files(("a.png", png_bytes())), headers={"X-Request-ID": "rq-1"})
        error = assert_error(r, 500, "internal_error")
        assert error["message"].endswith("logged it as request rq-1)") and r.headers["x-request-id"] == "rq-1"
        Broken.read = real.read  # type: ignore[method-assign]
        Broken.predict_radiographs = Broken.predict_radiographs_broken  # type: ignore[method-assign]
        r = c.post("/v1/predict", files=files(("a.png", png_bytes())), headers={"X-Request-ID": "rq-2"})
        error = assert_error(r, 500, "internal_error")  # an exception that escaped: the middleware's 500
        assert error["message"].endswith("logged it as request rq-2") and r.headers["x-request-id"] == "rq-2"
    assert "reading an upload (request rq-1)" in caplog.text
    assert "POST /v1/predict (request rq-2)" in caplog.text


def test_server_keeps_answering_after_a_burst_of_garbage(client: TestClient) -> None:
    rng = random.Random(7)
    statuses = set()
    for i in range(40):
        kind = i % 5
        blob = rng.randbytes(rng.randint(0, 3000))
        if kind == 0:
            r = client.post("/v1/predict", files=files((f"g{i}.png", blob)))
        elif kind == 1:
            r = client.post(
                "/v1/predict", content=blob, headers={"content-type": "multipart/form-data; boundary=xyz"}
            )
        elif kind == 2:
            r = client.post("/v1/predict", content=blob, headers={"content-type": "application/json"})
        elif kind == 3:
            truncated = b'--b\r\nContent-Disposition: form-data; name="files"; filename="x"\r\n\r\n' + blob
            r = client.post(
                "/v1/predict", content=truncated, headers={"content-type": "multipart/form-data; boundary=b"}
            )
        else:
            r = client.post("/v1/predict", files=files(("d.dcm", b"\0" * 128 + b"DICM" + blob)))
        statuses.add(r.status_code)
        assert 400 <= r.status_code < 500, (i, r.status_code, r.text)
        assert "error" in r.json()
    assert client.post("/v1/predict", files=files(("ok.png", png_bytes()))).status_code == 200
    assert client.get("/healthz").json()["status"] == "ok"


# ---- privacy -----------------------------------------------------------------------------------------
def test_patient_identifiers_never_leave_the_server(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        r = client.post("/v1/predict?overlay=true&study=true", files=files(("scan.dcm", dicom_bytes())))
        r2 = client.post("/v1/predict", files=files(("nopix.dcm", dicom_bytes(with_pixels=False))))
    for text in (r.text, r2.text, caplog.text):
        assert "SENTINEL" not in text and PATIENT_ID not in text


def test_the_names_of_uploads_stay_out_of_the_server_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A file name may be a patient's: an image read with a warning was logged by name at `info`."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((96, 96), 2000, np.uint16)).save(buffer, format="PNG")  # 12 bits in 16
    name = "DOE^JOHN_MRN12345.png"
    with caplog.at_level(logging.INFO):
        r = client.post("/v1/predict", files=files((name, buffer.getvalue())))
    assert r.status_code == 200 and "12 bits" in " ".join(r.json()["images"][0]["warnings"])
    assert "DOE^JOHN" not in caplog.text


def test_source_is_the_file_name_without_folders(client: TestClient) -> None:
    r = client.post("/v1/predict", files=files(("C:\\Users\\doe\\wrist.png", png_bytes())))
    assert r.json()["images"][0]["source"] == "wrist.png"


# ---- other endpoints ---------------------------------------------------------------------------------
def test_healthz_and_model(client: TestClient, tiny_bundle: Path) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"]["name"]
    for path in ("/healthz", "/v1/model", "/metrics"):  # load balancers and monitors probe with HEAD
        probe = client.head(path)
        assert probe.status_code == 200 and probe.content == b"", path
        assert probe.headers["content-type"] == client.get(path).headers["content-type"], path
    assert client.get("/redoc").status_code == 404  # one set of interactive docs: /docs
    info = client.get("/v1/model").json()
    assert info["input_size"] == 64
    assert "fracture" in [h["name"] for h in info["heads"]]
    assert info["default_operating_point"] in [op["name"] for op in info["operating_points"]]
    assert info["class_operating_point"] is None  # no class head
    assert info["card"] == (tiny_bundle / "card.md").read_text(encoding="utf-8")
    assert info["limits"]["max_files"] == 4 and info["notice"] == NOTICE


def test_metrics_count_requests_and_errors(client: TestClient) -> None:
    ok = 'fracsight_http_requests_total{route="/v1/predict",method="POST",status="200"}'
    bad = 'fracsight_http_requests_total{route="/v1/predict",method="POST",status="400"}'
    empty = 'fracsight_errors_total{code="empty_file",scope="request"}'
    before = [metric(client, k) for k in (ok, bad, empty)]
    client.post("/v1/predict", files=files(("a.png", png_bytes())))
    client.post("/v1/predict", files=files(("e.png", b"")))
    after = [metric(client, k) for k in (ok, bad, empty)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    assert 'fracsight_http_request_duration_seconds_bucket{route="/v1/predict",le="+Inf"}' in text.text
    assert "fracsight_model_info{" in text.text


@pytest.mark.skipif(not list_bundles(), reason="the packaged default model is not installed yet")
def test_default_bundle_predicts(fracatlas_jpeg: Path) -> None:
    with TestClient(create_app(ApiSettings())) as c:
        r = c.post(
            "/v1/predict?overlay=true", files=files((fracatlas_jpeg.name, fracatlas_jpeg.read_bytes()))
        )
        assert r.status_code == 200, r.text
        assert c.get("/v1/model").json()["card"]


def test_a_large_body_hands_its_memory_back_answered_or_refused(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After rounds of 15 MB DICOMs (7.5 MP: below the large-image rule) a worker held 750 MB for
    good, 417 MB after refused 20 MB files: their buffers came from glibc's heap and stayed."""
    import fracsight.api.app as api_app
    from fracsight._malloc import LARGE_BODY_BYTES

    trims: list[bool] = []
    monkeypatch.setattr(api_app, "release_in_background", lambda: trims.append(True))
    assert client.post("/v1/predict", files=files(("a.png", png_bytes()))).status_code == 200
    assert trims == []  # a small image: its arrays are reused, not handed back
    big = b"\0" * LARGE_BODY_BYTES  # no image: refused
    assert client.post("/v1/predict", files=files(("big.bin", big))).status_code == 415
    assert trims == [True]


def test_a_cpu_limit_changed_while_serving_loads_no_second_model(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread count was worked out anew on every request, and was part of the cached model's
    key: after `docker update --cpus` or `taskset` the next request (a /healthz too) loaded another
    copy of the model, inside the request. It is counted once, when the app is made."""
    import fracsight.api.routes as routes

    cpus = [4]
    monkeypatch.setattr(routes, "local_cpus", lambda: cpus[0])
    routes._cached_predictor.cache_clear()
    with TestClient(create_app(ApiSettings(model=str(tiny_bundle), max_concurrent_inferences=1))) as c:
        assert c.app.state.settings.inference_threads == 4
        assert c.get("/healthz").status_code == 200
        loaded = routes._cached_predictor.cache_info().misses
        cpus[0] = 1
        assert c.get("/healthz").status_code == 200
        assert c.post("/v1/predict", files=files(("a.png", png_bytes()))).status_code == 200
        assert routes._cached_predictor.cache_info().misses == loaded
