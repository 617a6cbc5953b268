"""REST API as a hospital integrator writing a client sees it (second pass): misspelt query
parameters, 404s that say what to send, the decision-aid notice on every answer, a schema that
documents every field and every status, and curl's `-F files=path` without the `@`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fracsight.api import ApiSettings, create_app
from fracsight.api.schemas import PredictResponse
from fracsight.inference import NOTICE
from test_api import files, png_bytes


@pytest.fixture(scope="module")
def client(tiny_bundle: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ApiSettings(model=str(tiny_bundle), max_files=6))) as c:
        yield c


# ---- a misspelt query parameter was ignored: the answer silently lacked what was asked for ----------------
@pytest.mark.parametrize(
    ("query", "named", "suggested"),
    [
        ("studdy=true", "studdy", "study"),
        ("operating-point=triage", "operating-point", "operating_point"),
        ("Overlay=true", "Overlay", "overlay"),
        ("fromat=csv", "fromat", "format"),
        ("callback=x", "callback", None),
    ],
)
def test_an_unknown_query_parameter_is_refused(
    client: TestClient, query: str, named: str, suggested: str | None
) -> None:
    r = client.post(f"/v1/predict?{query}", files=files(("a.png", png_bytes())))
    assert r.status_code == 422, r.text  # was 200, without the study, the operating point, ...
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert repr(named) in error["message"]
    assert "/v1/predict takes overlay, study, operating_point, format, all_classes" in error["message"]
    if suggested:
        assert f"did you mean {suggested!r}?" in error["message"]
    else:
        assert "did you mean" not in error["message"]
    detail = {"loc": ["query", named], "msg": "unknown parameter", "type": "extra_forbidden"}
    assert error["details"] == [detail]


def test_every_documented_query_parameter_is_still_taken(client: TestClient) -> None:
    sent = files(("a.png", png_bytes()))
    query = "overlay=false&study=true&operating_point=balanced&format=json&all_classes=false"
    r = client.post(f"/v1/predict?{query}", files=sent)
    assert r.status_code == 200, r.text
    assert len(r.json()["studies"]) == 1
    with TestClient(client.app) as c:
        schema = c.get("/openapi.json").json()
    documented = {p["name"] for p in schema["paths"]["/v1/predict"]["post"]["parameters"]}
    assert documented == {"overlay", "study", "operating_point", "format", "all_classes"}


# ---- 404: what to send instead -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/predict/"), ("GET", "/v1/model/"), ("GET", "/healthz/")]
)
def test_a_trailing_slash_404_names_the_path_without_it(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path)
    assert r.status_code == 404  # still never a redirect
    error = r.json()["error"]
    assert error == {
        "code": "not_found",
        "message": f"no path {path}: send it to {path.rstrip('/')}, without the trailing slash",
    }  # was "Not Found"


def test_an_unknown_path_404_lists_the_api(client: TestClient) -> None:
    error = client.get("/v1/predictions").json()["error"]
    assert error["code"] == "not_found"
    assert error["message"].startswith("no path /v1/predictions; the API has POST /v1/predict, GET /v1/model")
    error = client.get("/").json()["error"]
    assert error["message"].startswith("no path /; the API has")


def test_a_trailing_slash_404_under_a_root_path(tiny_bundle: Path) -> None:
    with TestClient(create_app(ApiSettings(model=str(tiny_bundle), root_path="/fracsight"))) as c:
        error = c.get("/fracsight/v1/model/").json()["error"]
    said = "no path /fracsight/v1/model/: send it to /fracsight/v1/model, without the trailing slash"
    assert error["message"] == said


# ---- the notice on every answer ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/healthz", None, 200),
        ("HEAD", "/healthz", None, 200),
        ("GET", "/metrics", None, 200),
        ("GET", "/v1/model", None, 200),
        ("GET", "/openapi.json", None, 200),
        ("POST", "/v1/predict?format=csv", ("a.png", png_bytes()), 200),
        ("POST", "/v1/predict", ("e.png", b""), 400),
        ("POST", "/v1/predict?studdy=true", ("a.png", png_bytes()), 422),
        ("GET", "/nowhere", None, 404),
        ("OPTIONS", "/v1/predict", None, 405),
    ],
)
def test_every_answer_carries_the_notice_header(
    client: TestClient, method: str, path: str, body: tuple[str, bytes] | None, status: int
) -> None:
    """Only the CSV answer had X-Fracsight-Notice, and errors, /healthz and /metrics had no notice at all."""
    r = client.request(method, path, files=files(body) if body else None)
    assert r.status_code == status
    assert r.headers.get_list("x-fracsight-notice") == [NOTICE]  # once, the CSV's own included


def test_the_notice_header_comes_with_a_refused_token(tiny_bundle: Path) -> None:
    with TestClient(create_app(ApiSettings(model=str(tiny_bundle), api_tokens="tok-" + "7" * 32))) as c:
        r = c.get("/v1/model")
    assert r.status_code == 401
    assert r.headers["x-fracsight-notice"] == NOTICE


# ---- the schema documents every field and every status ----------------------------------------------------
def _properties(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for model, definition in schema["components"]["schemas"].items():
        for name, prop in definition.get("properties", {}).items():
            yield model, name, prop


def test_every_response_field_has_a_description(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    missing = [f"{model}.{name}" for model, name, prop in _properties(schema) if not prop.get("description")]
    assert missing == []  # was 40 fields: decision, warnings, aggregation, Box.x0, Health.status, ...


def test_the_notice_fields_say_what_they_hold(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    notices = [prop for model, name, prop in _properties(schema) if name == "notice"]
    assert len(notices) == 4  # ImagePrediction, StudyResult, PredictResponse, ModelInfo
    assert all(NOTICE in prop["description"] for prop in notices)


def test_server_busy_is_documented(client: TestClient) -> None:
    """/v1/predict answers 503 server_busy (test_api_limits.py), which its schema did not list."""
    responses = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["responses"]
    busy = responses["503"]
    assert busy["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "Retry-After" in busy["headers"]
    assert "server_busy" in busy["description"]


# ---- curl's -F files=path (without the @) sends the path as text ----------------------------------------
def _post_part(client: TestClient, disposition: str, data: bytes) -> Any:
    boundary = "fracsight-client-boundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return client.post("/v1/predict", content=body, headers=headers)


def test_a_text_field_named_files_says_to_send_the_file(client: TestClient) -> None:
    r = _post_part(client, 'form-data; name="files"', b"wrist_ap.png")
    assert r.status_code == 415
    error = r.json()["error"]
    assert error["code"] == "unsupported_format"
    assert "it is a form field, not a file" in error["message"]
    assert "-F files=@path" in error["message"]  # was only "upload-1: ... looks like a text file"
    # a text file sent as a file is told no such thing
    r = _post_part(client, 'form-data; name="files"; filename="notes.png"', b"wrist_ap.png")
    assert r.status_code == 415
    assert "form field" not in r.json()["error"]["message"]


def test_a_nameless_image_part_is_still_predicted(client: TestClient) -> None:
    r = _post_part(client, 'form-data; name="files"', png_bytes())
    assert r.status_code == 200, r.text
    assert r.json()["images"][0]["source"] == "upload-1"


# ---- several clients at once ------------------------------------------------------------------------------
def test_parallel_study_requests_each_get_their_own_answer(client: TestClient) -> None:
    def study(seed: int) -> tuple[list[str], dict[str, Any]]:
        sent = files((f"v{seed}-a.png", png_bytes(seed=seed)), (f"v{seed}-b.png", png_bytes(seed=seed + 100)))
        r = client.post("/v1/predict?study=true", files=sent)
        assert r.status_code == 200, r.text
        body = r.json()
        return [i["source"] for i in body["images"]], body["studies"][0]

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(study, range(12)))
    for seed, (sources, result) in enumerate(answers):
        assert sources == [f"v{seed}-a.png", f"v{seed}-b.png"]
        assert result["images"] == sources
        assert result["notice"] == NOTICE


# ---- the example answer of docs/api.md is one the API could give ---------------------------------------
def test_the_documented_example_answer_fits_the_schema_and_the_study_rules() -> None:
    """It showed a study of two files, one unread, as `reliable: true` without `unread_images` or
    `warnings`: a client written against it missed that the verdict had not seen every view."""
    text = (Path(__file__).parents[1] / "docs" / "api.md").read_text(encoding="utf-8")
    start = text.index("With the shipped model (fracture and region heads):")
    block = re.search(r"```json\n(.*?)```", text[start:], re.S)
    assert block is not None
    example = json.loads(block.group(1))
    PredictResponse.model_validate(example)
    (study,) = example["studies"]
    failed = [i["source"] for i in example["images"] if "error" in i]
    predicted = [i["source"] for i in example["images"] if "error" not in i]
    assert study["images"] == predicted
    assert study["unread_images"] == failed
    assert study["reliable"] is (not failed)
    if failed:
        assert study["decision"] == "not reliable: some views could not be read"
        assert study["warnings"][0].startswith(f"{len(failed)} of {len(failed) + len(predicted)} views")
