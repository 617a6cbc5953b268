"""The HTTP connection `fracsight serve` runs: uvicorn's h11 protocol with a deadline for headers.

uvicorn closes a connection left idle after an answer (its keep-alive timeout), and the app
answers 408 when a request body stops arriving (``uploads.BODY_IDLE_TIMEOUT_S``); but a connection
that never finishes its request line and headers, or sends nothing at all, reaches no app and has
no timeout in uvicorn: held open forever, a few hundred of them exhaust the server's sockets (the
"slowloris" attack). Here every request's headers must be complete within
:attr:`HeaderDeadlineProtocol.header_timeout_s` of the connection opening or of the previous answer.

The answer has the same weakness the other way: a client that never reads it keeps it in the
server's memory (an answer with overlays is megabytes), outside the upload memory limit, as long
as it likes. A connection whose answer has not moved at all for
:attr:`HeaderDeadlineProtocol.write_stall_s` is dropped; one read slowly is not. The answer is
watched from when it fills the transport's buffer, and from when it is handed over whole: the
last part of an answer, under the buffer's high-water mark, never filled it, and a client that
stopped reading there held the connection for ever (``close()`` waits to send it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import sys
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from fracsight.api.app import SECURITY_HEADERS
from fracsight.api.errors import HEADERS_TOO_LARGE, INVALID_HTTP, REQUEST_TIMEOUT, error_body, new_request_id

__all__ = ["HeaderDeadlineProtocol"]

if sys.platform.startswith("linux"):
    import fcntl
    import termios

    _SIOCOUTQ: int | None = termios.TIOCOUTQ  # the same request for a TCP socket: its unsent bytes
else:  # elsewhere the transport's buffer alone tells progress, in coarser steps
    fcntl = None  # type: ignore[assignment]
    _SIOCOUTQ = None


class HeaderDeadlineProtocol(H11Protocol):
    """:class:`H11Protocol` that answers 408 ``request_timeout`` and closes a connection whose
    request headers are not complete in time."""

    header_timeout_s: float = 60.0  # as the body's; nginx's client_header_timeout is 60 s too
    write_stall_s: float = 60.0  # nginx's send_timeout is 60 s too

    _header_deadline: asyncio.TimerHandle | None = None
    _write_check: asyncio.TimerHandle | None = None
    _write_moved: tuple[float, int] = (0.0, 0)  # when the unsent answer last moved, and to what

    @property
    def _header_limit(self) -> int:
        """The request headers' limit in bytes: h11's (uvicorn's ``h11_max_incomplete_event_size``)."""
        return getattr(self.conn, "_max_incomplete_event_size", 16 * 1024)

    def _should_upgrade(self) -> bool:
        """Never: the API has no WebSocket route, and a request asking to upgrade went to uvicorn's
        WebSocket handler, past every middleware, to a bare ``403`` (no JSON error, no notice
        header, a 403 where a token was missing); answered as the plain HTTP request it also is,
        it gets the API's own answer."""
        return False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()
        self._protocol_error: h11.RemoteProtocolError | None = None
        next_event = self.conn.next_event

        def kept_error() -> Any:  # uvicorn answers h11's error without it: its status hint is kept
            try:
                event = next_event()
                # h11 measures headers only while they are incomplete: ones that came in one read
                # (up to about 100 KB on loopback) passed the 16 KiB limit
                if isinstance(event, h11.Request) and _head_size(event) > self._header_limit:
                    raise h11.RemoteProtocolError("request headers too large", error_status_hint=431)
                return event
            except h11.RemoteProtocolError as e:
                self._protocol_error = e
                raise

        self.conn.next_event = kept_error  # type: ignore[method-assign]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # a request's headers are in: the app has it
            self._disarm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()  # kept alive: the next request's headers have the same time
        self._watch_writes()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        self._disarm_write_check()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The transport's buffer is full: the client reads slower than the answer comes, or not at
        all."""
        super().pause_writing()
        self._watch_writes()

    def _watch_writes(self) -> None:
        """While the transport holds unsent bytes, look at them every few seconds; if they have not
        moved at all for :attr:`write_stall_s`, the connection is dropped. A slow reader that keeps
        reading is not. The watch ends by itself once the buffer is empty."""
        if self._write_check is None and self.transport.get_write_buffer_size():
            self._write_moved = (self.loop.time(), self._unsent())
            self._write_check = self.loop.call_later(self._write_check_s, self._check_write)

    def _unsent(self) -> int:
        """Bytes of the answer the client has not taken: the transport's buffer, and on Linux the
        socket's queue not yet acknowledged (the buffer alone shrinks in steps of megabytes, as the
        kernel takes more only once half its queue is gone, so a slow reader looked stalled)."""
        left = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is not None and _SIOCOUTQ is not None:
            with contextlib.suppress(OSError, ValueError):
                left += struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0" * 4))[0]
        return left

    @property
    def _write_check_s(self) -> float:
        return min(5.0, self.write_stall_s / 4)

    def _disarm_write_check(self) -> None:
        self._write_check = _cancelled(self._write_check)

    def _check_write(self) -> None:
        # a closing transport too: close() (uvicorn's keep-alive timeout, the header deadline, both
        # started once the answer is handed over) waits to send the rest, for ever if nobody reads
        self._write_check = None
        if not self.transport.get_write_buffer_size():
            return
        now, left = self.loop.time(), self._unsent()
        since, before = self._write_moved
        if left != before:  # the client read some (or asked for more): it is slow, not gone
            self._write_moved = (now, left)
        elif now - since >= self.write_stall_s:
            self.transport.abort()  # close() would wait to send what the client does not read
            return
        self._write_check = self.loop.call_later(self._write_check_s, self._check_write)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_late)

    def _disarm_header_deadline(self) -> None:
        self._header_deadline = _cancelled(self._header_deadline)

    def _headers_too_late(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        message = (
            f"the request headers did not arrive in time (not complete after {self.header_timeout_s:g} s)"
        )
        self._answer_and_close(b"408 Request Timeout", REQUEST_TIMEOUT, message)

    def send_400_response(self, msg: str) -> None:
        """A request that is not valid HTTP (a header line without a colon, two Content-Length
        headers): uvicorn's plain-text answer had neither the notice nor no-store."""
        if getattr(self._protocol_error, "error_status_hint", 400) == 431:  # h11's: headers too large
            # the request line is counted too: a long query string was sent looking for a big header
            message = (
                f"the request line and headers are too large (over {self._header_limit // 1024} KiB in "
                "all): a very long URL (its query string), or a huge header such as a cookie"
            )
            self._answer_and_close(b"431 Request Header Fields Too Large", HEADERS_TOO_LARGE, message)
            return
        message = (
            "the request is not valid HTTP (a malformed request line or header, conflicting "
            "Content-Length headers, or a bad chunk): refused before it was read"
        )
        self._answer_and_close(b"400 Bad Request", INVALID_HTTP, message)

    def _answer_and_close(self, status: bytes, code: str, message: str) -> None:
        """The JSON error ``code`` with ``status``, written as bytes (h11 answers only a request it has
        read, and this one never came in whole, or not as HTTP), then the connection closed."""
        body = json.dumps(error_body(code, message), separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"),
            *SECURITY_HEADERS,  # the notice and no-store, as on every other answer
            (b"x-request-id", new_request_id().encode("ascii")),  # as every answer has (docs/api.md)
        ]
        head = (
            b"HTTP/1.1 "
            + status
            + b"\r\n"
            + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        )
        self.transport.write(head + b"\r\n" + body)
        self.transport.close()


def _head_size(request: h11.Request) -> int:
    """About the bytes of a request's line and headers, as they came."""
    line = len(request.method) + len(request.target) + len(b" HTTP/1.1\r\n") + 1
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers)


def _cancelled(timer: asyncio.TimerHandle | None) -> None:
    """Cancel ``timer`` if there is one; None, for the attribute that held it."""
    if timer is not None:
        timer.cancel()
