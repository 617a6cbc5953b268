"""REST API as HTTP clients other than curl see it: 405 answers, RFC 8187 file names, a study
holding the same image twice, a reverse proxy serving it under a sub-path."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fracsight.api import ApiSettings, create_app
from fracsight.api.uploads import extended_filename
from fracsight.errors import ConfigError
from test_api import files, png_bytes


@pytest.fixture(scope="module")
def client(tiny_bundle: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ApiSettings(model=str(tiny_bundle), max_files=6))) as c:
        yield c


# ---- 405: the Allow header names every method of the path ----------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/healthz", "GET, HEAD"),
        ("POST", "/v1/model", "GET, HEAD"),
        ("PUT", "/metrics", "GET, HEAD"),
        ("GET", "/v1/predict", "POST"),
        ("OPTIONS", "/v1/predict", "POST"),
    ],
)
def test_405_allow_header_names_every_method(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    r = client.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == allowed  # was "HEAD" for /healthz, /v1/model and /metrics
    error = r.json()["error"]
    assert error["code"] == "method_not_allowed"
    assert error["message"] == f"{method} is not allowed on {path}; it takes {allowed}"
    for m in allowed.split(", "):  # and the methods named do answer there
        if m != "POST":
            assert client.request(m, path).status_code == 200


# ---- file names sent as filename* (RFC 8187) -------------------------------------------------------------
def _post_disposition(client: TestClient, disposition: str, data: bytes) -> dict:
    boundary = "fracsight-test-boundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: image/png\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = client.post(
        "/v1/predict", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.status_code == 200, r.text
    return r.json()["images"][0]


@pytest.mark.parametrize(
    ("disposition", "source"),
    [
        # only filename*: was "upload-1"
        ("form-data; name=\"files\"; filename*=UTF-8''%E2%9C%93%20wrist.png", "✓ wrist.png"),
        # .NET HttpClient's form for a non-ASCII name: was "=?utf-8?B?4pyTIHdyaXN0LnBuZw==?="
        (
            'form-data; name=files; filename="=?utf-8?B?4pyTIHdyaXN0LnBuZw==?="; '
            "filename*=utf-8''%E2%9C%93%20wrist.png",
            "✓ wrist.png",
        ),
        ("form-data; name=\"files\"; filename*=iso-8859-1'fr'caf%E9.png", "café.png"),
        # the folder part and hidden characters go, as for filename
        ("form-data; name=\"files\"; filename*=UTF-8''C%3A%5Cscans%5Cx%E2%80%AEgnp.png", "xgnp.png"),
        ('form-data; name="files"; filename="plain.png"', "plain.png"),
        # a charset fracsight does not decode: filename is used
        ('form-data; name="files"; filename="koi.png"; filename*=koi8-r\'\'%E9.png', "koi.png"),
    ],
)
def test_extended_filename_is_the_source(client: TestClient, disposition: str, source: str) -> None:
    assert _post_disposition(client, disposition, png_bytes())["source"] == source


def test_extended_filename_parsing() -> None:
    assert extended_filename(b"form-data; name=files; FILENAME*=UTF-8'en'a%2Fb.png") == "a/b.png"
    assert extended_filename(b'form-data; name="files"; filename="a.png"') is None
    assert extended_filename(b"form-data; name=files; filename*=UTF-8''%FF.png") == "\ufffd.png"
    # raw bytes where percent-encoding belongs: a 500 (UnicodeDecodeError), the request lost
    assert extended_filename("form-data; name=files; filename*=UTF-8''Röntgen.jpg".encode()) == "Röntgen.jpg"
    assert extended_filename(b"form-data; name=files; filename*=UTF-8''R\xf6ntgen.jpg") == "Röntgen.jpg"


# ---- a study with the same image twice ---------------------------------------------------------------------
def test_study_counts_an_image_sent_twice_once(client: TestClient) -> None:
    a, b = png_bytes(seed=1), png_bytes(seed=2)
    sent = files(("a.png", a), ("copy.png", a), ("b.png", b), ("a.png", a))
    r = client.post("/v1/predict?study=true", files=sent)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["source"] for i in body["images"]] == ["a.png", "copy.png", "b.png", "a.png"]  # every file
    probability = {i["source"]: i["fracture_probability"] for i in body["images"]}
    (study,) = body["studies"]
    assert study["images"] == ["a.png", "b.png"]
    # before: the copy counted twice, (2 p(a) + p(b)) / 3
    assert study["fracture_probability"] == pytest.approx(
        (probability["a.png"] + probability["b.png"]) / 2, abs=1e-5
    )
    note = "given more than once, so counted once: copy.png (the same image as a.png), a.png"
    assert study["warnings"] == [note]
    r = client.post("/v1/predict?study=true&format=csv", files=sent)
    (row,) = [row for row in csv.DictReader(io.StringIO(r.text)) if row["kind"] == "study"]
    assert float(row["fracture_probability"]) == pytest.approx(study["fracture_probability"], abs=1e-4)
    assert row["warnings"] == note
    # distinct images: no note
    r = client.post("/v1/predict?study=true", files=files(("a.png", a), ("b.png", b)))
    assert r.json()["studies"][0]["warnings"] == []


def test_study_counts_a_file_that_failed_sent_twice_once(client: TestClient) -> None:
    """The same unreadable upload twice is one view not seen (it said "2 of 3 views ... (bad.png,
    bad.png)"); two different files of one name, or two empty files, are two."""
    a = png_bytes(seed=1)
    sent = files(("a.png", a), ("a.png", a), ("bad.png", b"not an image"), ("bad.png", b"not an image"))
    (study,) = client.post("/v1/predict?study=true", files=sent).json()["studies"]
    assert study["unread_images"] == ["bad.png"]
    assert study["warnings"][0].startswith("1 of 2 views could not be read (bad.png)")
    sent = files(
        ("a.png", a), ("bad.png", b"not an image"), ("bad.png", b"neither"), ("x.dcm", b""), ("y.dcm", b"")
    )
    (study,) = client.post("/v1/predict?study=true", files=sent).json()["studies"]
    assert study["unread_images"] == ["bad.png", "bad.png", "x.dcm", "y.dcm"]
    sent = files(("a.png", a), ("IM000001.dcm", b""), ("IM000001.dcm", b""))  # of two series, both cut off
    (study,) = client.post("/v1/predict?study=true", files=sent).json()["studies"]
    assert study["unread_images"] == ["IM000001.dcm", "IM000001.dcm"]


# ---- a body without a `files` part: the 422 names the parts it had ------------------------------------
def test_missing_files_names_the_parts_sent(client: TestClient) -> None:
    sent = [
        ("files[]", ("a.png", png_bytes(), "image/png")),
        ("files[]", ("b.png", png_bytes(), "image/png")),
    ]
    r = client.post("/v1/predict", files=sent, data={"Files": "x", "": "y"})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "validation_error" and error["details"][0]["loc"] == ["body", "files"]
    # before: only "send the images as multipart/form-data with one or more `files` file parts"
    assert error["message"].endswith("(this body's parts are named `Files`, `(no name)`, `files[]`)")
    r = client.post("/v1/predict", content=b"", headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400  # no parts at all: not even the closing boundary
    r = client.post("/v1/predict", files=[(f"f{i}", ("a.png", b"x", "image/png")) for i in range(9)])
    assert "`f0`, `f1`, `f2`, `f3`, `f4`)" in r.json()["error"]["message"]  # five names at most


# ---- behind a reverse proxy at a sub-path (root_path) --------------------------------------------------
TOKEN = "tok-" + "e5f6a7b8" * 4
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_healthz_stays_open_under_uvicorns_root_path(tiny_bundle: Path) -> None:
    """uvicorn's --root-path puts the prefix into the path as well: the token check compared that
    path with /healthz, so health checks and load balancers got 401 behind a sub-path."""
    app = create_app(ApiSettings(model=str(tiny_bundle), api_tokens=TOKEN))
    with TestClient(app, root_path="/fracsight") as c:  # the scope uvicorn --root-path makes
        assert c.get("/fracsight/healthz").status_code == 200  # was 401 missing_token
        assert c.get("/fracsight/v1/model").status_code == 401  # everything else still needs a token
        assert c.get("/fracsight/docs", headers=BEARER).status_code == 200
        metrics = c.get("/fracsight/metrics", headers=BEARER).text
    assert 'route="/docs",method="GET",status="200"' in metrics  # was route="/fracsight/docs"


@pytest.mark.parametrize("prefix", ["", "/fracsight"])  # the proxy strips the prefix, or passes it on
def test_root_path_setting_serves_the_api_under_a_prefix(tiny_bundle: Path, prefix: str) -> None:
    """FRACSIGHT_ROOT_PATH: what uvicorn's --root-path does, for `fracsight serve`, which has none."""
    settings = ApiSettings.from_env(
        {"FRACSIGHT_ROOT_PATH": "/fracsight/", "FRACSIGHT_API_TOKENS": TOKEN}, model=str(tiny_bundle)
    )
    assert settings.root_path == "/fracsight"
    with TestClient(create_app(settings)) as c:
        assert c.get(f"{prefix}/healthz").status_code == 200
        assert c.get(f"{prefix}/v1/model").status_code == 401
        docs = c.get(f"{prefix}/docs", headers=BEARER)
        assert docs.status_code == 200 and "'/fracsight/openapi.json'" in docs.text
        schema = c.get(f"{prefix}/openapi.json", headers=BEARER).json()
        assert schema["servers"] == [{"url": "/fracsight"}]
        r = c.post(f"{prefix}/v1/predict", files=files(("a.png", png_bytes())), headers=BEARER)
        assert r.status_code == 200 and r.json()["images"][0]["source"] == "a.png"
        r = c.delete(f"{prefix}/healthz")
        message = r.json()["error"]["message"]
        assert message == "DELETE is not allowed on /fracsight/healthz; it takes GET, HEAD"


@pytest.mark.parametrize("value", ["fracsight", "//proxy.example/x", "/frac sight", "/fracsight?x=1"])
def test_a_root_path_that_is_no_url_prefix_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ApiSettings.from_env({"FRACSIGHT_ROOT_PATH": value})
    message = str(raised.value)
    assert "root_path (FRACSIGHT_ROOT_PATH): " in message and "is not a URL path prefix" in message
    assert "option" not in message and "Value error" not in message  # it has no `fracsight serve` option


def test_a_bad_setting_names_its_option_only_where_serve_has_one() -> None:
    named = r"max_files \(FRACSIGHT_MAX_FILES or `fracsight serve --max-files`\)"
    with pytest.raises(ConfigError, match=named):
        ApiSettings.from_env({"FRACSIGHT_MAX_FILES": "abc"})
    with pytest.raises(ConfigError, match=r"auth \(FRACSIGHT_AUTH\): Input should be"):
        ApiSettings.from_env({"FRACSIGHT_AUTH": "bogus"})


# ---- every answer: not stored by caches, its type not guessed ----------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v1/model", None, 200),
        ("POST", "/v1/predict", ("a.png", png_bytes()), 200),
        ("POST", "/v1/predict?format=csv", ("a.png", png_bytes()), 200),
        ("POST", "/v1/predict", ("<script>.png", b"<html><script>alert(1)</script>"), 415),
        ("GET", "/nowhere", None, 404),
        ("GET", "/v1/model", "no token", 401),
    ],
    ids=["model", "predict", "predict-csv", "refused-upload", "not-found", "no-token"],
)
def test_every_answer_is_no_store_and_nosniff(
    tiny_bundle: Path, method: str, path: str, body: tuple[str, bytes] | str | None, status: int
) -> None:
    """Predictions (and refusals quoting a patient's file name) were sent with no Cache-Control and no
    X-Content-Type-Options: a browser or proxy could keep them, and guess their type."""
    tokens = "tok-" + "5" * 32 if body == "no token" else None
    with TestClient(create_app(ApiSettings(model=str(tiny_bundle), api_tokens=tokens))) as c:
        sent = files(body) if isinstance(body, tuple) else None
        r = c.request(method, path, files=sent)
    assert r.status_code == status
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
