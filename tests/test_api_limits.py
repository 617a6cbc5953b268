"""REST API limits and plumbing: bounded upload reading, settings from the environment, metrics text."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from PIL import Image

from fracsight.api import ApiSettings, create_app
from fracsight.api.metrics import Metrics
from fracsight.api.routes import get_predictor
from fracsight.api.uploads import clean_filename
from fracsight.errors import ConfigError
from fracsight.inference import Predictor

pytest.importorskip("fastapi")

BOUNDARY = "fracsightboundary"
PART_HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
    "Content-Type: image/png\r\n\r\n"
).encode()


def call_asgi(
    app: Any, chunks: Iterator[bytes], headers: dict[str, str], stall_s: float = 0.0
) -> tuple[int, dict[str, Any], int]:
    """POST /v1/predict with a streamed body; returns (status, JSON body, body bytes the app pulled).

    ``stall_s``: the client goes quiet for that long after its last chunk, before ending the body.
    """
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        chunk = next(chunks, None)
        if chunk is None:
            await anyio.sleep(stall_s)
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/predict",
        "raw_path": b"/v1/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    anyio.run(app, scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), pulled


def endless_file(chunk_size: int = 64 * 1024, chunks: int = 200) -> Iterator[bytes]:
    yield PART_HEAD
    for _ in range(chunks):  # 12.5 MB if it were all read
        yield b"\x00" * chunk_size


@pytest.fixture(scope="module")
def small_limit_app(tiny_bundle: Path) -> Any:
    return create_app(ApiSettings(model=str(tiny_bundle), max_upload_bytes=100_000, max_files=2))


def test_oversize_stream_is_refused_without_reading_it_all(small_limit_app: Any) -> None:
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}  # chunked: no Content-Length
    status, body, pulled = call_asgi(small_limit_app, endless_file(), headers)
    assert status == 413 and body["error"]["code"] == "upload_too_large"
    assert pulled < 100_000 + 3 * 64 * 1024


def test_declared_content_length_over_the_limit_is_refused_before_reading(small_limit_app: Any) -> None:
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", "content-length": str(10**10)}
    status, body, pulled = call_asgi(small_limit_app, endless_file(), headers)
    assert (status, body["error"]["code"], pulled) == (413, "upload_too_large", 0)


def test_truncated_multipart_is_400(small_limit_app: Any) -> None:
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    status, body, _ = call_asgi(small_limit_app, iter([PART_HEAD, b"abc"]), headers)
    assert (status, body["error"]["code"]) == (400, "malformed_multipart")


def test_missing_boundary_is_400(small_limit_app: Any) -> None:
    status, body, _ = call_asgi(small_limit_app, iter([b"x"]), {"content-type": "multipart/form-data"})
    assert (status, body["error"]["code"]) == (400, "malformed_multipart")


@pytest.mark.parametrize("encoding", ["gzip", "deflate, gzip", "br"])
def test_a_compressed_body_is_415_before_reading(small_limit_app: Any, encoding: str) -> None:
    """Not parsed as the multipart text it is not (a 400 quoting the parser), nor taken as such."""
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", "content-encoding": encoding}
    body = gzip.compress(PART_HEAD + b"x" * 100 + f"\r\n--{BOUNDARY}--\r\n".encode())
    status, answer, pulled = call_asgi(small_limit_app, iter([body]), headers)
    assert (status, answer["error"]["code"], pulled) == (415, "unsupported_media_type", 0)
    assert "Content-Encoding" in answer["error"]["message"]


def test_boundary_longer_than_the_parser_takes_is_400_not_500(small_limit_app: Any) -> None:
    boundary = "a" * 300  # RFC 2046 allows 70 characters; the parser refuses more than 256
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    status, body, _ = call_asgi(small_limit_app, iter([f"--{boundary}--\r\n".encode()]), headers)
    assert (status, body["error"]["code"]) == (400, "malformed_multipart")
    assert "boundary" in body["error"]["message"].lower()


def test_a_body_that_stops_arriving_is_408(small_limit_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fracsight.api import uploads

    monkeypatch.setattr(uploads, "BODY_IDLE_TIMEOUT_S", 0.2)
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", "content-length": "5000"}
    started = time.monotonic()
    status, body, _ = call_asgi(small_limit_app, iter([PART_HEAD, b"abc"]), headers, stall_s=5.0)
    assert (status, body["error"]["code"]) == (408, "request_timeout")
    assert time.monotonic() - started < 4


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("wrist.png", "wrist.png"),
        ("x\u202egnp.exe", "xgnp.exe"),  # a right-to-left override would show it as "xexe.png"
        ("a\u200bb\x85c\u2028.png", "abc.png"),  # zero-width space, C1 control, line separator
        ("日本語 ñ.png", "日本語 ñ.png"),
        ("/home/doe/scans/wrist.png", "wrist.png"),
        ("C:\\Users\\doe\\hand.dcm", "hand.dcm"),
        ("a\x00b\nc.png", "abc.png"),
        ("", "upload-3"),
        ("folder/", "upload-3"),
    ],
)
def test_clean_filename(raw: str, expected: str) -> None:
    assert clean_filename(raw, 2) == expected


# ---- settings ----------------------------------------------------------------------------------------
def test_settings_from_env_and_back() -> None:
    env = {"FRACSIGHT_MAX_FILES": "3", "FRACSIGHT_MAX_UPLOAD_BYTES": "1234", "FRACSIGHT_MODEL": "/m"}
    s = ApiSettings.from_env(env, max_concurrent_inferences=5)
    assert (s.max_files, s.max_upload_bytes, s.model, s.max_concurrent_inferences) == (3, 1234, "/m", 5)
    assert ApiSettings.from_env(s.to_env()) == s
    assert ApiSettings.from_env({}) == ApiSettings()
    assert ApiSettings().max_upload_bytes == 50 * 1024 * 1024


@pytest.mark.parametrize(
    "env",
    [
        {"FRACSIGHT_MAX_FILES": "many"},
        {"FRACSIGHT_MAX_FILES": "-1"},
        {"FRACSIGHT_MAX_FILES": "1" * 30},
        {"FRACSIGHT_MAX_UPLOAD_BYTES": "0"},
        {"FRACSIGHT_MAX_UPLOAD_BYTES": "1e9"},
        {"FRACSIGHT_MAX_CONCURRENT_INFERENCES": "1000"},
        {"FRACSIGHT_MAX_PIXELS": " -5 "},
    ],
)
def test_invalid_settings_raise_config_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="FRACSIGHT_MAX"):
        ApiSettings.from_env(env)


@pytest.mark.parametrize(
    ("name", "value"),
    [("AUTH", '"proxy"'), ("MAX_FILES", "'8'"), ("API_TOKENS_FILE", '"/run/secrets/api_tokens"')],
)
def test_a_value_in_quotes_is_refused_as_one(name: str, value: str) -> None:
    """``docker run --env-file`` keeps quotes in the value: FRACSIGHT_AUTH="proxy" was told to be
    one of 'proxy', ...; a quoted tokens file's path was hidden and taken for the secret itself."""
    with pytest.raises(ConfigError, match=f"FRACSIGHT_{name} is in quotes") as caught:
        ApiSettings.from_env({f"FRACSIGHT_{name}": value})
    assert (value in str(caught.value)) is (name != "API_TOKENS_FILE")


def test_a_metrics_folder_the_workers_cannot_share_is_a_config_error(tmp_path: Path) -> None:
    """A FRACSIGHT_METRICS_DIR that did not exist was taken: each worker's writes failed silently,
    and /metrics then reported whichever worker answered the scrape."""
    with pytest.raises(ConfigError, match=r"FRACSIGHT_METRICS_DIR.*is not an existing folder"):
        ApiSettings.from_env({"FRACSIGHT_METRICS_DIR": str(tmp_path / "missing")})
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is not an existing folder"):
        ApiSettings.from_env({"FRACSIGHT_METRICS_DIR": str(tmp_path / "file")})
    assert ApiSettings.from_env({"FRACSIGHT_METRICS_DIR": str(tmp_path)}).metrics_dir == str(tmp_path)


# ---- metrics -------------------------------------------------------------------------------------------
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? -?[0-9.e+Inf-]+$'
)


def test_metrics_text_is_valid_exposition_format() -> None:
    m = Metrics()
    m.observe_request("/v1/predict", "POST", 200, 0.03)
    m.observe_request("/v1/predict", "POST", 200, 2.0)
    m.count_error('we"ird\\code\n', scope="file")
    m.set_model("model", "1")
    text = m.render()
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or SAMPLE.match(line), line
    assert 'fracsight_http_request_duration_seconds_bucket{route="/v1/predict",le="0.05"} 1' in text
    assert 'fracsight_http_request_duration_seconds_bucket{route="/v1/predict",le="+Inf"} 2' in text
    assert 'code="we\\"ird\\\\code\\n"' in text
    assert m.request_count("/v1/predict", "POST", 200) == 2


def _total(text: str, line_start: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(line.rsplit(" ", 1)[1])


def test_workers_sharing_a_folder_report_their_sum(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # an exited worker: its counts stay, its in-progress gauge does not
    here = Metrics(share_dir=tmp_path)
    gone = Metrics(share_dir=tmp_path, process_id=child.pid)
    for seconds in (0.03, 0.2):
        here.observe_request("/v1/predict", "POST", 200, seconds)
    gone.count_error("empty_file", scope="file")
    gone.inference_started()
    for _ in range(3):
        gone.observe_request("/v1/predict", "POST", 200, 0.03)
    (tmp_path / "99.json").write_text("{not json", encoding="utf-8")  # damaged files are skipped
    (tmp_path / "98.json").write_text('{"pid": 98, "requests": "nonsense"}', encoding="utf-8")

    text = here.render()
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or SAMPLE.match(line), line
    predict = 'fracsight_http_requests_total{route="/v1/predict",method="POST",status="200"}'
    assert _total(text, predict) == 5
    assert _total(text, 'fracsight_http_request_duration_seconds_bucket{route="/v1/predict",le="0.05"}') == 4
    assert _total(text, 'fracsight_http_request_duration_seconds_count{route="/v1/predict"}') == 5
    assert _total(text, 'fracsight_errors_total{code="empty_file",scope="file"}') == 1
    assert _total(text, "fracsight_inferences_in_progress") == 0
    assert _total(text, "fracsight_worker_processes") == 1
    assert here.request_count("/v1/predict") == 2  # its own counters are untouched


def test_a_started_worker_counts_before_it_answers_anything(tiny_bundle: Path, tmp_path: Path) -> None:
    """A worker publishes its counters once its model is loaded, so /metrics on another worker
    counts it among the running ones even if no request has reached it yet."""
    from fastapi.testclient import TestClient

    other_worker = Metrics(share_dir=tmp_path, process_id=os.getppid())  # alive, never answered
    other_worker.announce()
    app = create_app(ApiSettings(model=str(tiny_bundle), metrics_dir=str(tmp_path)))
    assert not (tmp_path / f"{os.getpid()}.json").exists()
    with TestClient(app):  # runs the lifespan: the model is loaded, nothing asked yet
        assert (tmp_path / f"{os.getpid()}.json").is_file()
        assert _total(other_worker.render(), "fracsight_worker_processes") == 2


@pytest.mark.parametrize(
    "stray",
    [
        {
            "pid": 999999,
            "requests": [[1, "GET", "200", 1]],
            "errors": [],
            "images": {},
            "latency": {},
            "in_progress": 0,
        },
        {
            "pid": 999999,
            "requests": [],
            "errors": [],
            "images": {},
            "in_progress": 0,
            "latency": {"/v1/predict": {"buckets": [0.1], "counts": ["a"], "total": 0.0, "n": 1}},
        },
        {
            "pid": 999999,
            "requests": [],
            "errors": [["c", "s", True]],
            "images": {"ok": 1.5},
            "latency": {},
            "in_progress": 0,
        },
        ["not", "a", "state"],
    ],
)
def test_a_stray_file_in_the_shared_folder_is_skipped(tmp_path: Path, stray: Any) -> None:
    """A state file of the right shape with a value of the wrong type (a route that is a number, a
    count that is a string) made every scrape of /metrics a 500."""
    here = Metrics(share_dir=tmp_path)
    here.observe_request("/v1/predict", "POST", 200, 0.05)
    (tmp_path / "999999.json").write_text(json.dumps(stray))
    text = here.render()
    assert _total(text, "fracsight_worker_processes") == 1 and here.request_count("/v1/predict") == 1


def test_without_a_shared_folder_a_process_reports_itself() -> None:
    text = Metrics().render()
    assert "fracsight_worker_processes" not in text
    assert "fracsight_inferences_in_progress 0" in text


# ---- concurrency -----------------------------------------------------------------------------------------
def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))).save(buffer, format="PNG")
    return buffer.getvalue()


def test_inferences_are_limited_by_the_semaphore(tiny_bundle: Path) -> None:
    real = Predictor(tiny_bundle)
    lock = threading.Lock()
    running = {"now": 0, "max": 0}

    class Slow:
        spec, operating_point, read = real.spec, real.operating_point, real.read

        def predict_radiographs(self, *args: Any, **kwargs: Any) -> Any:
            with lock:
                running["now"] += 1
                running["max"] = max(running["max"], running["now"])
            time.sleep(0.05)
            with lock:
                running["now"] -= 1
            return real.predict_radiographs(*args, **kwargs)

    app = create_app(ApiSettings(model=str(tiny_bundle), max_concurrent_inferences=2))
    app.dependency_overrides[get_predictor] = Slow
    png = _png()
    statuses: list[int] = []

    async def one(client: httpx.AsyncClient, i: int) -> None:
        response = await client.post("/v1/predict", files={"files": (f"{i}.png", png)})
        statuses.append(response.status_code)

    async def burst() -> None:
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://test")
        async with client, anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one, client, i)

    anyio.run(burst)
    assert statuses == [200] * 6
    assert running["max"] == 2


def test_uploads_held_past_the_process_limit_get_503_and_are_released(tiny_bundle: Path) -> None:
    """Each request was bounded, their sum was not: enough clients uploading at once took all the
    memory the server had. Past ``max_upload_memory_bytes`` a request gets 503 ``server_busy`` with
    ``Retry-After``; the bytes of a finished request are given back, whatever its answer."""
    settings = ApiSettings(model=str(tiny_bundle), max_upload_bytes=100_000, max_files=2)
    settings = ApiSettings(**{**settings.model_dump(), "max_upload_memory_bytes": settings.max_request_bytes})
    app = create_app(settings)
    headers = [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]
    answers: dict[str, tuple[int, dict[str, str], dict[str, Any]]] = {}

    async def post(name: str, chunks: list[bytes], hold_open: anyio.Event | None = None) -> None:
        sent: list[dict[str, Any]] = []
        pending = list(chunks)

        async def receive() -> dict[str, Any]:
            if pending:
                return {"type": "http.request", "body": pending.pop(0), "more_body": True}
            if hold_open is not None:
                await hold_open.wait()  # a slow client: its body held, not finished
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"",
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }  # fmt: skip
        await app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        answers[name] = (
            start["status"],
            {k.decode(): v.decode() for k, v in start["headers"]},
            json.loads(body),
        )

    # two files of 95 kB: within each limit, and most of the memory of one request
    big = [PART_HEAD, b"\x00" * 95_000, b"\r\n" + PART_HEAD, b"\x00" * 95_000]

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            finish = anyio.Event()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(post, "slow", big, finish)
                await anyio.sleep(0.2)  # the slow client's bytes are held
                await post("refused", big)
                assert app.state.upload_memory.held > 190_000, answers
                finish.set()
            assert app.state.upload_memory.held == 0  # given back, though it was a bad body (400)
            await post("later", big)

    anyio.run(scenario)
    status, head, body = answers["refused"]
    assert (status, body["error"]["code"], head["retry-after"]) == (503, "server_busy", "2")
    assert "retry in a moment" in body["error"]["message"]
    assert answers["slow"][0] == 400 and answers["later"][0] == 400  # malformed bodies, but not refused


def test_upload_memory_smaller_than_one_request_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="is less than one largest request"):
        ApiSettings.from_env({"FRACSIGHT_MAX_UPLOAD_MEMORY_BYTES": "1000"})
    assert ApiSettings().upload_memory_limit == 1024 * 1024 * 1024
    assert ApiSettings(max_files=1000).upload_memory_limit == ApiSettings(max_files=1000).max_request_bytes
