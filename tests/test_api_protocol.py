"""The connection deadline `fracsight serve` runs uvicorn with: request headers that never finish
get a 408 and a closed connection; a request whose headers came in is the app's, however slow."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import free_port

uvicorn = pytest.importorskip("uvicorn")

from fracsight.api import ApiSettings, create_app  # noqa: E402
from fracsight.api.app import SECURITY_HEADERS  # noqa: E402
from fracsight.api.protocol import HeaderDeadlineProtocol  # noqa: E402


class QuickDeadline(HeaderDeadlineProtocol):
    header_timeout_s = 0.5  # the shipped 60 s, shortened so that a test can wait for it
    write_stall_s = 1.0


class RoomyBuffer(QuickDeadline):
    """A transport buffer whose high-water mark an answer of megabytes stays under: the case of
    an answer's last part, which never fills the buffer (asyncio's mark is 64 KiB)."""

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=2**30)


@pytest.fixture(scope="module")
def address(tiny_bundle: Path) -> Iterator[tuple[str, int]]:
    yield from _serve(tiny_bundle, QuickDeadline)


@pytest.fixture(scope="module")
def roomy_address(tiny_bundle: Path) -> Iterator[tuple[str, int]]:
    yield from _serve(tiny_bundle, RoomyBuffer)


def _serve(bundle: Path, protocol: type[HeaderDeadlineProtocol]) -> Iterator[tuple[str, int]]:
    """A real uvicorn server on loopback, in a thread, with the deadline protocol."""
    port = free_port()
    app = create_app(ApiSettings(model=str(bundle)))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(timeout=15)


def _everything(conn: socket.socket, wait: float = 10.0) -> bytes:
    """What the server sends until it closes the connection (at most ``wait`` seconds)."""
    conn.settimeout(wait)
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    return received


def _one_answer(conn: socket.socket) -> bytes:
    """One whole answer on a kept-alive connection: its head, then as many bytes as it says."""
    conn.settimeout(10)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = conn.recv(65536)
        assert chunk, f"the connection closed before a whole answer: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(
        next(line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))[15:]
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, f"the connection closed within the body: {received!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def _request_timeout(answer: bytes) -> dict[str, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"content-type: application/json" in head.lower()
    # the headers every answer carries (docs/api.md): the notice above all; this one lacked them
    for name, value in SECURITY_HEADERS:
        assert name + b": " + value in head, name
    return json.loads(body)["error"]


def test_headers_that_never_finish_get_408_and_the_connection_closed(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as conn:
        conn.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Ty")
        started = time.monotonic()
        error = _request_timeout(_everything(conn))
    assert error["code"] == "request_timeout" and "headers did not arrive" in error["message"]
    assert time.monotonic() - started < 5


def test_a_connection_that_sends_nothing_is_closed_too(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as conn:
        assert _request_timeout(_everything(conn))["code"] == "request_timeout"


def test_a_slow_body_is_the_apps_and_a_kept_alive_connection_gets_the_deadline_again(
    address: tuple[str, int],
) -> None:
    with socket.create_connection(address) as conn:
        body = (
            b'--B\r\nContent-Disposition: form-data; name="files"; filename="e.png"\r\n'
            b"Content-Type: image/png\r\n\r\n\r\n--B--\r\n"
        )
        conn.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
        )
        conn.sendall(b"Content-Length: %d\r\n\r\n" % len(body))
        time.sleep(1.5)  # three header deadlines: the headers are in, so the app waits for the body
        conn.sendall(body)
        answer = _one_answer(conn)
        assert answer.startswith(b"HTTP/1.1 400 ") and b"empty_file" in answer  # the app read it all
        assert b"connection: close" not in answer.lower()  # kept alive
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # the next request's headers stall
        assert _request_timeout(_everything(conn))["code"] == "request_timeout"


def _reader(address: tuple[str, int]) -> socket.socket:
    """A connection whose receive buffer is small from the start (set after connecting, the window
    agreed is larger), so that an answer of megabytes waits in the server, not in this socket."""
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect(address)
    return conn


def _ask_for_overlays(conn: socket.socket, fracatlas_dir: Path) -> tuple[bytes, int]:
    """Post twelve FracAtlas images for overlays (an answer of megabytes, more than the socket
    buffers hold) on ``conn``; the answer's head and first bytes once it has begun, and its
    Content-Length."""
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0].read_bytes()
    parts = b"".join(
        b'--B\r\nContent-Disposition: form-data; name="files"; filename="%d.jpg"\r\n' % k
        + b"Content-Type: image/jpeg\r\n\r\n"
        + image
        + b"\r\n"
        for k in range(12)
    )
    body = parts + b"--B--\r\n"
    conn.sendall(
        b"POST /v1/predict?overlay=true HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    conn.settimeout(120)
    received = b""
    while b"\r\n\r\n" not in received:  # the answer has begun: predicting is done
        received += conn.recv(1024)
    head = received.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200 "), received[:300]
    length = int(
        next(line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))[15:]
    )
    assert length > 8_000_000  # more than the socket buffers hold: the rest waits in the server
    return received, length


@pytest.mark.parametrize("server", ["address", "roomy_address"])
def test_an_answer_the_client_never_reads_is_dropped(
    server: str, request: pytest.FixtureRequest, fracatlas_dir: Path
) -> None:
    """A client that posts images for overlays and never reads the answer (megabytes) kept it in
    the server's memory, outside the upload limit, for as long as it held the connection. Once
    fixed for an answer that fills the transport's buffer, one that ended under its high-water
    mark (``roomy_address``) was still held for ever."""
    with _reader(request.getfixturevalue(server)) as conn:
        received, length = _ask_for_overlays(conn, fracatlas_dir)
        time.sleep(5)  # not reading: five write deadlines
        with contextlib.suppress(ConnectionResetError):
            received += _everything(conn)
    assert len(received.partition(b"\r\n\r\n")[2]) < length  # dropped before the client read it all


def test_a_slow_reader_that_keeps_reading_gets_the_whole_answer(
    address: tuple[str, int], fracatlas_dir: Path
) -> None:
    """The first write deadline ran from the moment the answer filled the buffers to when they were
    empty: a client still reading a large answer slowly was cut off after it, with a short body."""
    with _reader(address) as conn:
        received, length = _ask_for_overlays(conn, fracatlas_dir)
        started = time.monotonic()
        answer = received.partition(b"\r\n\r\n")[2]
        while len(answer) < length:
            chunk = conn.recv(262144)
            assert chunk, f"cut off after {len(answer)} of {length} bytes"
            answer += chunk
            time.sleep(0.02)  # seconds for the answer: several write deadlines
    assert time.monotonic() - started > 2 * QuickDeadline.write_stall_s


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",  # a header name with a space
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcde",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
)
def test_a_request_that_is_not_http_gets_json_with_the_notice(
    address: tuple[str, int], request_bytes: bytes
) -> None:
    """uvicorn answered these in plain text, without the notice or no-store every answer carries."""
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(request_bytes)
        answer = _everything(conn)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"content-type: application/json" in head.lower()
    for name, value in SECURITY_HEADERS:
        assert name + b": " + value in head, name
    assert re.search(rb"\r\nx-request-id: [0-9a-f]{32}\r\n", head + b"\r\n"), head  # as every answer
    assert json.loads(body)["error"]["code"] == "invalid_http"


def test_a_request_asking_for_a_websocket_gets_the_apis_own_answer(address: tuple[str, int]) -> None:
    """``Upgrade: websocket`` went to uvicorn's WebSocket handler past every middleware: a bare 403
    in plain text, without the notice, no-store or a JSON error (and no 401 where a token was
    missing). The API has no WebSocket route: the request is answered as plain HTTP."""
    request = (
        b"GET /v1/model HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(request)
        answer = _one_answer(conn)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer[:200]
    for name, value in SECURITY_HEADERS:
        assert name + b": " + value in head, name
    assert "name" in json.loads(body)


def test_repeated_content_type_or_encoding_lines_are_not_read_first_wins(
    address: tuple[str, int], tmp_path: Path
) -> None:
    """Two Content-Encoding lines are one list ("identity, gzip": a gzip body) and were read as the
    first alone; two Content-Type lines let a proxy reading the last see another body."""
    part = (
        b'--AAA\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\nx\r\n--AAA--\r\n"
    )
    cases = {
        b"Content-Type: multipart/form-data; boundary=AAA\r\nContent-Encoding: identity\r\n"
        b"Content-Encoding: gzip\r\n": (b"415", "unsupported_media_type"),
        b"Content-Type: multipart/form-data; boundary=AAA\r\n"
        b"Content-Type: multipart/form-data; boundary=BBB\r\n": (b"400", "malformed_multipart"),
    }
    for headers, (status, code) in cases.items():
        with socket.create_connection(address, timeout=10) as conn:
            conn.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                + headers
                + b"Content-Length: "
                + str(len(part)).encode()
                + b"\r\n\r\n"
                + part
            )
            answer = _everything(conn)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 " + status), answer[:300]
        assert json.loads(body)["error"]["code"] == code


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 20000 + b"\r\n",
        b"GET /healthz?x=" + b"a" * 17000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["cookie", "url"],
)
def test_headers_too_large_are_431_not_invalid_http(address: tuple[str, int], head: bytes) -> None:
    """An 80 KB cookie was called "not valid HTTP (a malformed request line or header, ...)"; a 17 KB
    query string with small headers "the request headers are too large"."""
    with socket.create_connection(address, timeout=10) as conn:
        # in one piece, read whole before the server closes (bytes left unread reset the connection)
        conn.sendall(head)
        answer = _everything(conn)
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 431 "), answer[:200]
    error = json.loads(body)["error"]
    assert error["code"] == "headers_too_large" and "a very long URL" in error["message"]


@pytest.mark.parametrize("size", [17000, 40000, 100000])
def test_headers_over_the_limit_that_arrive_whole_are_431_too(address: tuple[str, int], size: int) -> None:
    """h11 measures headers only while they are incomplete: whole in one read, 17-100 KB got 200."""
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * size + b"\r\n\r\n")
        answer = _everything(conn)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    with socket.create_connection(address, timeout=10) as conn:  # 15 KB is under the limit
        conn.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: " + b"c" * 15000 + b"\r\n\r\n"
        )
        assert _everything(conn).startswith(b"HTTP/1.1 200 ")


def test_a_malformed_head_with_a_large_body_is_invalid_http_not_431(address: tuple[str, int]) -> None:
    """A head without a colon in one line, a 20 KB body behind it: the body left in h11's buffer
    was taken for headers too large (431)."""
    body = b"x" * 20000
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        answer = _everything(conn)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "invalid_http"
