"""`fracsight serve`: argument handling, settings passed to uvicorn workers, and a real loopback server."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import free_port
from fracsight.api.settings import ENV_PREFIX, GRACEFUL_SHUTDOWN_S, SERVE_OPTIONS, ApiSettings
from fracsight.cli import app as cli

uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` exports FRACSIGHT_* for its workers; restore them after the test."""
    for name in ApiSettings.model_fields:
        monkeypatch.setenv(ENV_PREFIX + name.upper(), "")


def test_serve_refuses_an_unknown_model_before_starting(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn must not start"))
    result = CliRunner().invoke(cli, ["serve", "--model", "no-such-model-anywhere"])
    assert result.exit_code == 2  # a bad argument
    assert "unknown_model" in result.output and "Traceback" not in result.output


def test_serve_passes_settings_to_the_worker_factory(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path
) -> None:
    tmp_path = tiny_bundle
    from fracsight.api import server

    calls: list[tuple[dict[str, Any], ApiSettings]] = []
    # what each worker's create_app() reads, while the server runs (its metrics folder is gone after)
    monkeypatch.setattr(server, "supervise", lambda options: calls.append((options, ApiSettings.from_env())))
    args = ["serve", "--model", str(tmp_path), "--workers", "3", "--port", "8123", "--max-files", "5"]
    result = CliRunner().invoke(cli, [*args, "--max-upload-mb", "2"])
    assert result.exit_code == 0, result.output
    ((kwargs, settings),) = calls
    assert server.APP == "fracsight.api.app:create_app"
    assert kwargs["factory"] is True and kwargs["workers"] == 3
    assert kwargs["http"] == "fracsight.api.protocol:HeaderDeadlineProtocol"  # tests/test_api_protocol.py
    assert (kwargs["host"], kwargs["port"]) == ("127.0.0.1", 8123)
    assert (settings.model, settings.max_files, settings.max_upload_bytes) == (
        str(tmp_path),
        5,
        2 * 1024 * 1024,
    )
    # the cores (affinity and container quota) shared among every worker's inferences: each of 3
    # workers took all the host's cores for each of its inferences
    from fracsight._cpus import local_cpus

    assert settings.inference_threads == max(1, local_cpus() // (settings.max_concurrent_inferences * 3))


def test_workers_get_the_token_digests_read_at_start_not_the_file(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, tmp_path: Path
) -> None:
    """A worker that uvicorn restarts must accept the tokens its siblings accept: the file may have
    been edited, emptied or made unreadable since `serve` started."""
    from fracsight.api.auth import token_guard

    token = "a-token-read-once-at-start-0123456789"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# pilot\n{token}\n", encoding="utf-8")
    monkeypatch.setenv(ENV_PREFIX + "API_TOKENS_FILE", str(tokens))
    read: list[ApiSettings] = []

    def run(*_: Any, **__: Any) -> None:
        tokens.write_text("", encoding="utf-8")  # edited after the start
        read.append(ApiSettings.from_env())  # what a worker's create_app() reads, while the server runs

    from fracsight.api import server

    monkeypatch.setattr(server, "supervise", run)
    result = CliRunner().invoke(cli, ["serve", "--model", str(tiny_bundle), "--workers", "2"])
    assert result.exit_code == 0, result.output
    (settings,) = read
    assert settings.api_tokens_file is None and token not in (settings.api_tokens or "")
    guard = token_guard(settings.auth, settings.api_tokens, settings.api_tokens_file)
    assert guard.allows(token) and not guard.allows("another-token-0123456789")


def test_serve_refuses_an_endless_upload_limit(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn must not start"))
    for value in ("inf", "1e400", "2000000"):
        result = CliRunner().invoke(cli, ["serve", "--max-upload-mb", value])
        assert result.exit_code == 2 and "--max-upload-mb" in result.output, result.output
        assert "Traceback" not in result.output
    # over the settings' bounds: a config error, exit 1, where every other option's is a usage error
    for option, value in (("--max-concurrent-inferences", "100"), ("--threads", "300")):
        result = CliRunner().invoke(cli, ["serve", option, value])
        assert result.exit_code == 2 and option in result.output and "config_error" not in result.output


def test_serve_refuses_a_tampered_bundle_before_starting(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, tmp_path: Path
) -> None:
    import shutil

    calls: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: calls.append(a))
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["serve", "--model", str(bundle)])
    assert result.exit_code == 2 and not calls
    assert "bundle_checksum_mismatch" in result.output and "Traceback" not in result.output


def test_serve_refuses_bad_listening_options_before_starting(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path
) -> None:
    """A taken port: uvicorn failed after loading the model (exit 3); an unknown log level: a
    KeyError traceback; an empty host: every interface."""
    import socket

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn must not start"))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        for args, message in (
            (["--port", port], f"error (port_unavailable): cannot listen on http://127.0.0.1:{port}"),
            (["--log-level", "bogus"], "'bogus': one of critical"),
            (["--host", ""], "error (empty_argument): argument 5 is empty"),
            # each was "error (port_unavailable): cannot listen on http://[http://127.0.0.1]:8000"
            (["--host", "http://127.0.0.1"], "a URL: give the address alone"),
            (["--host", "127.0.0.1:8000"], "HOST:PORT: give the address alone"),
            (["--host", "nosuch.invalid"], "not an address or a host name this computer knows"),
            (["--host", "[::1]:8000"], "HOST:PORT: give the address alone"),
            (["--host", "a" * 64], "not a valid host name"),  # a label too long: a traceback
            (["--host", "::ffff:127.0.0.1"], "an IPv4 address written as IPv6: give 127.0.0.1"),
        ):
            for command in ("serve", "app") if "--host" in args else ("serve",):  # the app: same rules
                result = CliRunner().invoke(cli, [command, "--model", str(tiny_bundle), *args])
                assert result.exit_code == 2 and message in result.output, result.output
                assert "Traceback" not in result.output
    # an IPv6 address as URLs write it: refused before ("http://[[::1]]:8000")
    from fracsight.app import listen_address

    assert listen_address("[::1]") == "::1" and listen_address(" 127.0.0.1 ") == "127.0.0.1"


def _png() -> bytes:
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))).save(buffer, format="PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def loopback_server(
    *args: str,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    log_level: str = "warning",
    exit_codes: list[int] | None = None,
    started: list[subprocess.Popen[bytes]] | None = None,
    nohup: bool = False,
    uvicorn_factory: bool = False,
) -> Iterator[str]:
    """`fracsight serve ARGS` on a free loopback port, ready; yields its URL and stops it afterwards
    (SIGTERM, as an orchestrator does).

    ``env``: FRACSIGHT_* variables for the server (the caller's own are left out). ``log``: a file
    that takes the server's stderr. ``exit_codes``: gets the server's exit code once it stopped.
    ``started``: gets the server's process. ``nohup``: started with SIGHUP ignored, as `nohup` does.
    ``uvicorn_factory``: ``uvicorn --factory fracsight.api.app:create_app ARGS`` instead (docs/api.md).
    """
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}, **(env or {})}
    entry = "from fracsight.cli import main; main()"
    command = [sys.executable, "-c", entry, "serve", *args, "--port", str(port), "--log-level", log_level]
    if uvicorn_factory:
        factory = ["-m", "uvicorn", "--factory", "fracsight.api.app:create_app", *args]
        command = [sys.executable, *factory, "--port", str(port), "--log-level", log_level]
    stderr = open(log, "wb") if log else subprocess.PIPE  # noqa: SIM115 (closed with the server)
    ignore_hup = (lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if nohup else None  # as `nohup`
    server = subprocess.Popen(
        command,
        env=env,
        stdout=stderr if uvicorn_factory else subprocess.DEVNULL,  # uvicorn's access lines go to stdout
        stderr=stderr,
        preexec_fn=ignore_hup,
    )
    if started is not None:
        started.append(server)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text() if log else server.stderr.read().decode()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start within 60 s"
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=GRACEFUL_SHUTDOWN_S + 10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
        if log:
            stderr.close()
        if exit_codes is not None:
            exit_codes.append(server.returncode)


@pytest.mark.slow
def test_real_server_on_loopback(tiny_bundle: Path) -> None:
    with loopback_server("--model", str(tiny_bundle)) as url:
        r = httpx.post(f"{url}/v1/predict", files={"files": ("a.png", _png())}, timeout=30)
        assert r.status_code == 200 and r.json()["images"][0]["source"] == "a.png"
        r = httpx.post(f"{url}/v1/predict?format=csv", files={"files": ("a.png", _png())}, timeout=30)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.text.splitlines()[1].startswith("image,a.png,")
        r = httpx.post(f"{url}/v1/predict", files={"files": ("e.png", b"")}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "empty_file"


@pytest.mark.slow
def test_the_log_says_which_model_is_served_and_nothing_of_the_uploads(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """fracsight's own log lines reach the server's log (stderr), with their level; a request adds
    none that names its files (uvicorn's access lines, method, path and status, go to stdout)."""
    log = tmp_path / "serve.log"
    with loopback_server("--model", str(tiny_bundle), log=log, log_level="info") as url:
        r = httpx.post(f"{url}/v1/predict", files={"files": ("SENTINEL-NAME.png", _png())}, timeout=30)
        assert r.status_code == 200
    text = log.read_text()
    assert "INFO:     fracsight API serving tiny-test" in text, text
    assert "SENTINEL" not in text


@pytest.mark.slow
def test_a_token_in_the_url_is_hidden_when_uvicorn_runs_the_app(tiny_bundle: Path, tmp_path: Path) -> None:
    """docs/api.md's ``uvicorn --factory fracsight.api.app:create_app``: the filter that hides a
    token sent in a URL was in ``fracsight serve``'s log configuration only, and uvicorn's access
    line wrote the token in full."""
    log = tmp_path / "uvicorn.log"
    env = {"FRACSIGHT_MODEL": str(tiny_bundle), "FRACSIGHT_API_TOKENS": "t" * 32}
    with loopback_server(env=env, log=log, log_level="info", uvicorn_factory=True) as url:
        r = httpx.get(f"{url}/v1/model?x=1&access_token=SENTINELSECRET", timeout=30)
        assert r.status_code == 401
    text = log.read_text()
    assert "GET /v1/model?x=1&access_token=*** HTTP/1.1" in text, text[-3000:]
    assert "SENTINELSECRET" not in text


@pytest.mark.slow
def test_a_token_in_the_url_is_hidden_at_log_level_trace(tiny_bundle: Path, tmp_path: Path) -> None:
    """At `--log-level trace` uvicorn logs each request's ASGI scope, whose query_string quoted a
    token sent in the URL in full: only the access line was filtered."""
    log = tmp_path / "serve.log"
    with loopback_server("--model", str(tiny_bundle), log=log, log_level="trace") as url:
        httpx.get(f"{url}/v1/model?x=1&access_token=SENTINELSECRET", timeout=30)
    text = log.read_text()
    assert "'query_string': b'x=1&access_token=***'" in text, text[-3000:]
    assert "SENTINELSECRET" not in text


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_stops_the_server_with_exit_0(tiny_bundle: Path, workers: str) -> None:
    """With one worker uvicorn sends SIGTERM to its process again after its graceful shutdown, and
    the server died of it (-15, 143 from a shell): an orchestrator read a clean stop as a failure."""
    codes: list[int] = []
    with loopback_server("--model", str(tiny_bundle), "--workers", workers, exit_codes=codes) as url:
        r = httpx.post(f"{url}/v1/predict", files={"files": ("a.png", _png())}, timeout=30)
        assert r.status_code == 200
    assert codes == [0]


def _stalled_upload(url: str) -> socket.socket:
    """A connection to ``url`` whose upload stops after 1 kB of its 100 kB body."""
    host, port = url.removeprefix("http://").split(":")
    stalled = socket.create_connection((host, int(port)))
    stalled.sendall(
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b'Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name="files"; '
        b'filename="a.png"\r\n\r\n' + b"x" * 1000
    )
    return stalled


def _answer_to(connection: socket.socket) -> bytes:
    """Whatever the server sends on ``connection`` until it closes it (5 s at most per read)."""
    connection.settimeout(5)
    answer = b""
    with contextlib.suppress(OSError):
        while chunk := connection.recv(65536):
            answer += chunk
    connection.close()
    return answer


@pytest.mark.slow
def test_a_stalled_upload_holds_the_stop_only_for_the_grace(tiny_bundle: Path, tmp_path: Path) -> None:
    """SIGTERM while a client's upload has stalled: the server waited for the 60 s body timeout
    (an orchestrator's 30 s grace then killed it); now it stops after GRACEFUL_SHUTDOWN_S, and the
    request cut off gets a JSON 503 (uvicorn's plain-text 500 and a traceback in the log before)."""
    codes: list[int] = []
    log = tmp_path / "serve.log"
    with loopback_server("--model", str(tiny_bundle), exit_codes=codes, log=log) as url:
        stalled = _stalled_upload(url)
        time.sleep(1)  # the request is in the app, waiting for the rest of its body
        stopping = time.monotonic()
    took = time.monotonic() - stopping
    answer = _answer_to(stalled)
    assert codes == [0] and GRACEFUL_SHUTDOWN_S - 2 < took < GRACEFUL_SHUTDOWN_S + 8, (codes, took)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503") and b"application/json" in head, answer
    assert json.loads(body)["error"]["code"] == "server_stopping"
    assert "Traceback" not in log.read_text() and "Exception in ASGI" not in log.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stopping_server_refuses_new_connections_at_once(tiny_bundle: Path, workers: str) -> None:
    """With two workers, a connection made while the server stopped (a stalled upload holding the
    stop) hung about 20 s, then was reset: uvicorn's supervisor kept listening until its workers
    were gone. A load balancer's health check needs the refusal at once, as with one worker."""
    started: list[subprocess.Popen[bytes]] = []
    with loopback_server("--model", str(tiny_bundle), "--workers", workers, started=started) as url:
        host, port = url.removeprefix("http://").split(":")
        stalled = socket.create_connection((host, int(port)))
        stalled.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n--b\r\n"
        )
        time.sleep(1)
        started[0].send_signal(signal.SIGTERM)
        asked = time.monotonic()

        def refused() -> bool:  # refused or reset, not queued for the 20 s the stop may take
            try:
                with socket.create_connection((host, int(port)), timeout=1) as late:
                    late.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    late.settimeout(1)
                    return not late.recv(100)
            except OSError:
                return True

        # the supervisor and the workers look at their signals every 0.5 s: a loaded machine is late
        while not refused():
            assert time.monotonic() - asked < 10, "still answered or queued 10 s into the stop"
            time.sleep(0.2)
        stalled.close()


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_misspelt_setting_is_warned_once(tiny_bundle: Path, tmp_path: Path, workers: str) -> None:
    """The command warned, and then the app of each worker again."""
    log = tmp_path / "serve.log"
    env = {"FRACSIGHT_API_TOKEN": "not-read"}
    with loopback_server("--model", str(tiny_bundle), "--workers", workers, env=env, log=log):
        pass
    assert log.read_text().count("did you mean FRACSIGHT_API_TOKENS?") == 1, log.read_text()


@pytest.mark.slow
def test_metrics_of_several_workers_add_up(tiny_bundle: Path) -> None:
    shared = set(Path(tempfile.gettempdir()).glob("fracsight-metrics-*"))
    predict = 'fracsight_http_requests_total{route="/v1/predict",method="POST",status="200"} '
    with loopback_server("--model", str(tiny_bundle), "--workers", "2") as url:
        close = {"Connection": "close"}  # a new connection each time, so the requests spread over workers
        # The server answers once one worker is up; on a busy machine the second may still be
        # loading the model (it is not running yet, and /metrics rightly says 1): wait for it first.
        deadline = time.monotonic() + 60
        workers = "fracsight_worker_processes 2"
        while workers not in httpx.get(f"{url}/metrics", headers=close, timeout=30).text:
            assert time.monotonic() < deadline, "the second worker did not start"
            time.sleep(0.2)
        for i in range(6):
            r = httpx.post(
                f"{url}/v1/predict", files={"files": (f"{i}.png", _png())}, headers=close, timeout=30
            )
            assert r.status_code == 200
        # A request is counted once its answer is sent, so the client can be a moment ahead of
        # the shared counters: wait (briefly) until they have caught up ...
        deadline = time.monotonic() + 10
        while predict + "6" not in httpx.get(f"{url}/metrics", headers=close, timeout=30).text:
            assert time.monotonic() < deadline, "the workers' counters did not add up to 6 requests"
            time.sleep(0.1)
        for _ in range(4):  # ... then whichever worker answers, it reports the whole server
            text = httpx.get(f"{url}/metrics", headers=close, timeout=30).text
            assert predict + "6" in text, text
            assert "fracsight_worker_processes 2" in text
    assert set(Path(tempfile.gettempdir()).glob("fracsight-metrics-*")) == shared  # the folder is removed


def test_settings_name_the_options_serve_really_has() -> None:
    """An invalid setting's message names its `fracsight serve` option (SERVE_OPTIONS), and only
    where there is one: FRACSIGHT_AUTH=bogus used to point at an option that does not exist."""
    import typer.main

    serve = typer.main.get_command(cli).commands["serve"]  # type: ignore[attr-defined]
    options = {opt for param in serve.params for opt in param.opts}
    assert set(SERVE_OPTIONS.values()) <= options
    assert set(SERVE_OPTIONS) <= set(ApiSettings.model_fields)


@pytest.mark.slow
def test_serve_under_a_root_path_behind_a_proxy(tiny_bundle: Path) -> None:
    """FRACSIGHT_ROOT_PATH reaches the workers of `fracsight serve` (which has no --root-path):
    the API answers under the prefix, /healthz stays open (the loop that waits for the server asks
    it without a token), /docs and the schema point at the prefix."""
    token = "tok-" + "c9d0e1f2" * 4
    bearer = {"Authorization": f"Bearer {token}"}
    env = {"FRACSIGHT_ROOT_PATH": "/fracsight", "FRACSIGHT_API_TOKENS": token}
    with loopback_server("--model", str(tiny_bundle), "--workers", "2", env=env) as url:
        assert httpx.get(f"{url}/fracsight/healthz", timeout=10).status_code == 200
        r = httpx.post(
            f"{url}/fracsight/v1/predict", files={"files": ("a.png", _png())}, headers=bearer, timeout=30
        )
        assert r.status_code == 200 and r.json()["images"][0]["source"] == "a.png"  # was 404
        schema = httpx.get(f"{url}/fracsight/openapi.json", headers=bearer, timeout=10).json()
        assert schema["servers"] == [{"url": "/fracsight"}]


@pytest.mark.slow
def test_a_client_that_left_gets_no_predictions_made_for_it(
    tiny_bundle: Path, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """Clients that time out and retry piled up work no one waited for: eight requests of 16 images
    abandoned after 1 s held the next one for 7 s, each answered 200 to no one and counted as
    predicted. Now the files not yet predicted when the client left are not predicted at all."""
    images = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:32]
    boundary = b"fracsightboundary"
    body = (
        b"".join(
            b"--"
            + boundary
            + b'\r\nContent-Disposition: form-data; name="files"; filename="'
            + image.name.encode()
            + b'"\r\nContent-Type: image/jpeg\r\n\r\n'
            + image.read_bytes()
            + b"\r\n"
            for image in images
        )
        + b"--"
        + boundary
        + b"--\r\n"
    )
    log = tmp_path / "serve.log"
    env = {"FRACSIGHT_MAX_FILES": "32"}
    with loopback_server("--model", str(tiny_bundle), env=env, log=log, log_level="info") as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as leaving:  # sends it all, then leaves
            leaving.sendall(
                b"POST /v1/predict?overlay=true HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                b"boundary="
                + boundary
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
        deadline = time.monotonic() + 120
        while 'code="client_closed_request"' not in (metrics := httpx.get(f"{url}/metrics", timeout=10).text):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.2)
    predicted = [
        line for line in metrics.splitlines() if line.startswith('fracsight_images_total{outcome="predicted"')
    ]
    assert not predicted or float(predicted[0].split()[-1]) == 0, predicted  # none counted for no one
    assert 'status="499"' in metrics
    # uvicorn writes no access line for a connection already closed: the log said nothing of it
    assert "client closed request: POST /v1/predict 499 (" in log.read_text()
    assert "IMG" not in log.read_text()  # no file names


def test_a_client_that_leaves_mid_upload_leaves_a_log_line(tiny_bundle: Path, tmp_path: Path) -> None:
    """The 400s of uploads the client abandoned were counted in /metrics, with no line in the log
    (uvicorn writes none for a closed connection) for an operator to find."""
    log = tmp_path / "serve.log"
    with loopback_server("--model", str(tiny_bundle), log=log, log_level="info") as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as leaving:
            leaving.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b'Content-Length: 10000000\r\n\r\n--b\r\nContent-Disposition: form-data; name="files"; '
                b'filename="DOE_JANE.dcm"\r\n\r\n' + b"\0" * 100_000
            )
            time.sleep(0.5)  # the server reads what came, then the connection closes
        deadline = time.monotonic() + 60
        while "client closed request during upload" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    said = log.read_text()
    assert "client closed request during upload: POST /v1/predict 400 (" in said and "DOE" not in said


@pytest.mark.slow
def test_sighup_to_a_server_of_workers_stops_it_gracefully(tiny_bundle: Path, tmp_path: Path) -> None:
    """The terminal closed (SIGHUP to the whole process group) with `--workers 2`: the workers died of
    it, their requests in flight unanswered, and the supervisor started new ones ("restarting
    processes") instead of stopping, as one worker does."""
    codes: list[int] = []
    started: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "serve.log"
    with loopback_server(
        "--model",
        str(tiny_bundle),
        "--workers",
        "2",
        log_level="info",
        exit_codes=codes,
        started=started,
        log=log,
    ) as url:
        stalled = _stalled_upload(url)
        time.sleep(1)  # the request is in a worker, waiting for the rest of its body
        supervisor = started[0].pid
        workers = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        for pid in [supervisor, *map(int, workers)]:  # what a closed terminal sends
            os.kill(pid, signal.SIGHUP)
        started[0].wait(timeout=GRACEFUL_SHUTDOWN_S + 20)
    answer = _answer_to(stalled)
    assert codes == [0], log.read_text()
    assert answer.startswith(b"HTTP/1.1 503") and b"server_stopping" in answer, answer
    assert "restarting" not in log.read_text()
    assert "Received SIGHUP (the terminal closed), exiting." in log.read_text()  # not "SIGTERM"
    assert "SIGTERM" not in log.read_text()

    # under nohup SIGHUP stays ignored, by the supervisor and its workers alike
    started.clear()
    with loopback_server("--model", str(tiny_bundle), "--workers", "2", started=started, nohup=True) as url:
        supervisor = started[0].pid
        workers = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        for pid in [supervisor, *map(int, workers)]:
            os.kill(pid, signal.SIGHUP)
        time.sleep(2)
        assert started[0].poll() is None and httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        assert Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split() == workers


def test_an_option_given_as_a_variable_is_named() -> None:
    """A container's FRACSIGHT_PORT, FRACSIGHT_WORKERS or FRACSIGHT_THREADS (for `--threads`) was
    ignored without a word."""
    from fracsight.api.settings import near_misses

    said = near_misses(
        {
            "FRACSIGHT_THREADS": "2",
            "FRACSIGHT_PORT": "8000",
            "FRACSIGHT_API_TOKEN": "x",
            "FRACSIGHT_MODEL": "m",
        }
    )
    assert said == {
        "FRACSIGHT_THREADS": "FRACSIGHT_INFERENCE_THREADS",
        "FRACSIGHT_PORT": "the option `fracsight serve --port` (it has no variable)",
        "FRACSIGHT_API_TOKEN": "FRACSIGHT_API_TOKENS",
    }
