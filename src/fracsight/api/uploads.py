"""Reading multipart uploads into memory under hard limits; nothing is ever written to disk.

Starlette's own form parser spools files above 1 MB to temporary files and only
learns a file's size after storing it. This reader streams the body through
python-multipart's push parser instead, keeps each file in memory, and stops
reading the moment a limit is passed: the declared ``Content-Length``, the bytes
actually received, the size of each file and the number of files.
"""

from __future__ import annotations

import binascii
import logging
import re
import unicodedata
import urllib.parse
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from fracsight.api.errors import (
    MALFORMED_MULTIPART,
    REQUEST_TIMEOUT,
    TOO_MANY_FILES,
    UNSUPPORTED_MEDIA_TYPE,
    UPLOAD_TOO_LARGE,
    VALIDATION_ERROR,
    ApiError,
)

__all__ = ["Upload", "UploadLimits", "clean_filename", "read_uploads"]

MAX_HEADER_BYTES = 16 * 1024  # per part header line (python-multipart's own default, 4 KiB, refused
# a long file name: a client's full path, or .NET's `filename*` of a non-ASCII name)
HEADER_TOO_LONG = f"a multipart part header is longer than {MAX_HEADER_BYTES:,} bytes"
# python-multipart's messages that a client could not act on, said in the client's terms
_PARSER_MESSAGES = {
    "Maximum header size exceeded": HEADER_TOO_LONG,
    "Maximum header count exceeded": "a multipart part has too many header lines",
    "Expected boundary character": "the body does not begin with the boundary its Content-Type names",
    # a header line folded onto the next (obsolete since RFC 7578): python-multipart's byte offset
    "Found invalid character": "a multipart part header is malformed (a header line folded onto a "
    "second line, or a character a header may not hold): give each header on one line",
    "Did not find LF character at end of header": "a multipart part header holds a bare CR (\\r): end "
    "each header line with CRLF (\\r\\n), and keep CR out of file names",
    "Did not find CR at end of boundary": "a boundary line does not end in CRLF: the lines of a multipart "
    "body end in CRLF (\\r\\n), not LF alone, and its boundary is the Content-Type's exactly",
}
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


def _strict_base64(data: bytes) -> bytes:
    """Base64 with line breaks, refusing any other character (``binascii``'s ``strict_mode`` is
    Python 3.11's; fracsight runs on 3.10 too)."""
    text = re.sub(rb"\s+", b"", data)
    if len(text) % 4 or not _BASE64.fullmatch(text):
        raise binascii.Error("not base64")
    return binascii.a2b_base64(text)


# a part's Content-Transfer-Encoding (RFC 7578 deprecates it, yet some older clients, mail-library based,
# still send base64): decoded, so that the file is read, not refused as "a text file"; strictly, as
# a character outside the alphabet was dropped and the remains read as an image (or "empty")
_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "": bytes,
    "binary": bytes,
    "8bit": bytes,
    "7bit": bytes,
    "base64": _strict_base64,
    "quoted-printable": binascii.a2b_qp,
}
MAX_EXTRA_PARTS = 32  # parts other than the file field that are tolerated (and ignored)
MAX_NAMES_QUOTED = 5  # names of such parts quoted in the 422 of a body without the file field
# longest wait for the next piece of a body (nginx's client_body_timeout): a client that stops
# sending would otherwise hold its connection, and the parts it sent, for as long as it likes
BODY_IDLE_TIMEOUT_S = 60.0
# control (C0, C1), format (bidi overrides, zero-width), surrogate and line/paragraph separator
# characters: a name echoed in `source` must show what it is (no "x\u202egnp.exe" shown as "xexe.png")
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# filename*=charset'language'percent-encoded (RFC 8187), the parameter's name in any case
_EXTENDED_FILENAME = re.compile(rb"(?i)(?:^|;)\s*filename\*\s*=\s*([A-Za-z0-9_-]+)'[^']*'([^;\s]*)")
# python-multipart logs each parse error as a warning before raising it; the client gets it as a
# 400 already, and on the server's stderr it was a bare line per malformed body, without context
logging.getLogger("python_multipart").setLevel(logging.ERROR)
logger = logging.getLogger("fracsight.api")


@dataclass(frozen=True)
class Upload:
    filename: str  # the client's file name, without any folder part
    data: bytes
    named: bool = True  # False: the part had no file name (a text field, as curl's `-F files=path`)


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    max_files: int
    max_request_bytes: int


def clean_filename(raw: str, index: int) -> str:
    """The last path component of a client's file name, without control or invisible formatting
    characters, at most 200 chars."""
    name = re.split(r"[\\/]", raw)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in _HIDDEN_CATEGORIES).strip()[:200]
    return name or f"upload-{index + 1}"


def extended_filename(disposition: bytes) -> str | None:
    """The ``filename*`` of a Content-Disposition (RFC 8187: ``UTF-8''%E2%9C%93.jpg``), or None.

    python-multipart drops it, yet .NET's HttpClient names every non-ASCII file so (its ``filename``
    then holds a MIME encoded word, ``=?utf-8?B?...?=``), and some clients send only ``filename*``:
    without it, those uploads came back as ``=?utf-8?B?4pyTLmpwZw==?=`` or ``upload-1``."""
    match = _EXTENDED_FILENAME.search(disposition)
    if match is None:
        return None
    # the value should be percent-encoded ASCII; raw UTF-8 (or Windows-1252) bytes were a 500
    charset, value = match.group(1).decode("ascii").lower(), _header_text(match.group(2))
    if charset not in ("utf-8", "iso-8859-1"):
        return None
    return urllib.parse.unquote(value, encoding=charset, errors="replace")


def _header_text(raw: bytes) -> str:
    """A name of a part's header: UTF-8 (browsers, curl, requests, httpx), or else Windows-1252, the
    charset of the clients that send their platform's bytes (older Java and Windows ones): decoded as
    UTF-8 regardless, their "Röntgen.png" came back as "R\ufffdntgen.png"."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


def missing_files(field_name: str, other_names: list[str] | None = None) -> ApiError:
    """422 for a body without a ``field_name`` part; ``other_names``: the parts it had instead."""
    message = f"send the images as multipart/form-data with one or more `{field_name}` file parts"
    if other_names:  # e.g. `files[]` or `file`: say what arrived, so that the client's fix is plain
        message += f" (this body's parts are named {', '.join(f'`{n}`' for n in other_names)})"
    return ApiError(
        422,
        VALIDATION_ERROR,
        message,
        [{"loc": ["body", field_name], "msg": "Field required", "type": "missing"}],
    )


def too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, UPLOAD_TOO_LARGE, f"{what} is larger than the limit of {limit:,} bytes")


@dataclass
class _Collector:
    """python-multipart callbacks that keep the parts named ``field_name`` in memory."""

    field_name: str
    limits: UploadLimits
    uploads: list[Upload] = field(default_factory=list)
    ended: bool = False
    other_names: list[str] = field(default_factory=list)  # of parts not named field_name (a few)
    # names of query parameters that arrived as form fields instead (ignored, they changed nothing)
    query_only: Collection[str] = ()
    misplaced: list[str] = field(default_factory=list)
    _header_name: bytearray = field(default_factory=bytearray)
    _header_value: bytearray = field(default_factory=bytearray)
    _disposition: bytes = b""
    _transfer_encoding: str = ""
    _keep: bool = False
    _filename: str = ""
    _named: bool = True
    _buffer: bytearray = field(default_factory=bytearray)
    _other_parts: int = 0

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._disposition = b""
        self._transfer_encoding = ""
        self._keep = False
        self._buffer = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        self._check_header()

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._check_header()

    def _check_header(self) -> None:
        if len(self._header_name) + len(self._header_value) > MAX_HEADER_BYTES:
            raise ApiError(400, MALFORMED_MULTIPART, HEADER_TOO_LONG)

    def on_header_end(self) -> None:
        header = bytes(self._header_name).strip().lower()
        if header == b"content-disposition":
            self._disposition = bytes(self._header_value)
        elif header == b"content-transfer-encoding":
            self._transfer_encoding = bytes(self._header_value).strip().lower().decode("ascii", "replace")
        self._header_name = bytearray()
        self._header_value = bytearray()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = _header_text(options.get(b"name", b""))
        if name != self.field_name:
            shown = clean_filename(name, 0)[:40] if name else "(no name)"
            if len(self.other_names) < MAX_NAMES_QUOTED and shown not in self.other_names:
                self.other_names.append(shown)
            if _parameter_name(name) in self.query_only and shown not in self.misplaced:
                self.misplaced.append(shown)
            self._other_parts += 1
            if self._other_parts > MAX_EXTRA_PARTS:
                raise ApiError(422, VALIDATION_ERROR, f"too many form fields other than `{self.field_name}`")
            return
        if len(self.uploads) >= self.limits.max_files:
            raise ApiError(
                422, TOO_MANY_FILES, f"at most {self.limits.max_files} files may be sent in one request"
            )
        self._keep = True
        raw = extended_filename(self._disposition) or _header_text(options.get(b"filename", b""))
        self._filename = clean_filename(raw, len(self.uploads))
        self._named = bool(raw)
        if self._transfer_encoding not in _DECODERS:
            shown = self._transfer_encoding[:40]
            raise ApiError(
                400,
                MALFORMED_MULTIPART,
                f"{self._filename}: Content-Transfer-Encoding {shown!r} is not supported: send the file's "
                "bytes as they are (binary), with no Content-Transfer-Encoding header",
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._keep:
            return
        if len(self._buffer) + (end - start) > self.limits.max_file_bytes:
            raise too_large(f"{self._filename}", self.limits.max_file_bytes)
        self._buffer += data[start:end]

    def on_part_end(self) -> None:
        if self._keep:
            self.uploads.append(Upload(self._filename, self._decoded(), self._named))
        self._keep = False
        self._buffer = bytearray()

    def _decoded(self) -> bytes:
        try:
            return _DECODERS[self._transfer_encoding](bytes(self._buffer))
        except (binascii.Error, ValueError):
            message = f"{self._filename}: its {self._transfer_encoding} content cannot be decoded"
            raise ApiError(400, MALFORMED_MULTIPART, message) from None

    def on_end(self) -> None:
        self.ended = True


def _parameter_name(name: str) -> str:
    """A form field's name as the query parameter it may stand for (``Study``, ``operating-point``,
    ``study[]``)."""
    return name.strip().lower().replace("-", "_").removesuffix("[]")


def misplaced_parameters(names: list[str]) -> ApiError:
    """422 for query parameters sent as form fields of the body: read nowhere, they were ignored, so
    ``-F study=true`` made an answer without the study that looked like the one asked for."""
    quoted = ", ".join(f"`{n}`" for n in names)
    example = "&".join(dict.fromkeys(f"{_parameter_name(n)}=..." for n in names))
    said = (
        "a form field of the body; it is a query parameter"
        if len(names) == 1
        else "form fields of the body; they are query parameters"
    )
    return ApiError(
        422,
        VALIDATION_ERROR,
        f"{quoted} came as {said}: put {'it' if len(names) == 1 else 'them'} in the URL "
        f"(/v1/predict?{example}) and only the images in the body (as a form field it would be ignored)",
        [
            {"loc": ["body", n], "msg": "a query parameter, not a form field", "type": "extra_forbidden"}
            for n in names
        ],
    )


def _parser(boundary: bytes, collector: _Collector) -> MultipartParser:
    callbacks = collector.callbacks()
    try:
        return MultipartParser(boundary, callbacks, max_header_size=MAX_HEADER_BYTES)  # type: ignore[arg-type]
    except TypeError:  # an older python-multipart: no limit of its own, so none to raise
        return MultipartParser(boundary, callbacks)  # type: ignore[arg-type]


def _parse_error_message(error: FormParserError) -> str:
    said = str(error)
    plain = next((text for start, text in _PARSER_MESSAGES.items() if said.startswith(start)), said)
    return f"the multipart body cannot be parsed: {plain}"


class _Preamble:
    """Drops what comes before the first boundary line: RFC 2046 (5.1.1) lets a multipart body
    begin with a preamble, which its reader ignores; the parser refused such a body. At most
    ``MAX_PREAMBLE`` bytes are looked through; a body with no boundary line there goes to the
    parser as it is, which says that it does not begin with its boundary."""

    def __init__(self, boundary: bytes) -> None:
        self.first = b"--" + boundary
        self.head: bytearray | None = bytearray()  # None: past the preamble

    def skip(self, chunk: bytes) -> bytes:
        if self.head is None:
            return chunk
        self.head += chunk
        head = bytes(self.head)
        if head.startswith(self.first):
            return self.end()
        if self.first.startswith(head):  # the boundary line has begun, not ended
            return b""
        at = head.find(b"\r\n" + self.first)
        if at >= 0:
            self.head = None
            return head[at + 2 :]
        return self.end() if len(head) > MAX_PREAMBLE else b""

    def end(self) -> bytes:
        head, self.head = self.head, None
        return bytes(head or b"")


MAX_PREAMBLE = 64 * 1024


def _boundary(request: Request, field_name: str) -> bytes:
    given = request.headers.getlist("content-type")
    if len(given) > 1:  # a proxy reading the last one would see another body than this first one
        raise ApiError(
            400, MALFORMED_MULTIPART, f"the request has {len(given)} Content-Type headers: send one"
        )
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise missing_files(field_name)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, MALFORMED_MULTIPART, "the multipart/form-data Content-Type has no boundary")
    return boundary


def _check_not_encoded(request: Request) -> None:
    """Refuse a compressed body: it would be parsed as the multipart text it is not."""
    # every line: two lines are one list ("identity, gzip": a gzip body), whose first alone was read
    codings = ",".join(request.headers.getlist("content-encoding")).lower().split(",")
    if any(c.strip() not in ("", "identity") for c in codings):
        raise ApiError(
            415,
            UNSUPPORTED_MEDIA_TYPE,
            "a compressed request body (Content-Encoding) is not supported: send it uncompressed",
        )


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise ApiError(400, MALFORMED_MULTIPART, "the Content-Length header is not a number") from None
    if length > limit:
        raise too_large("the request body", limit)


async def _chunks(request: Request, idle_timeout: float) -> AsyncIterator[bytes]:
    """The body's chunks; raises :class:`ApiError` 408 when none arrives for ``idle_timeout`` seconds."""
    stream = request.stream().__aiter__()
    while True:
        try:
            with anyio.fail_after(idle_timeout):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            message = f"the request body stopped arriving (nothing for {idle_timeout:g} s)"
            raise ApiError(408, REQUEST_TIMEOUT, message) from None
        yield chunk


async def read_uploads(
    request: Request,
    limits: UploadLimits,
    field_name: str = "files",
    hold: Callable[[int], None] | None = None,
    query_only: Collection[str] = (),
) -> list[Upload]:
    """The file parts named ``field_name``, in the order sent; raises :class:`ApiError` on any limit.
    ``hold(n)`` is told of each ``n`` bytes received, and may refuse them (``UploadMemory``).
    ``query_only``: names of the route's query parameters, refused as form fields (422)."""
    boundary = _boundary(request, field_name)
    _check_not_encoded(request)
    _check_declared_length(request, limits.max_request_bytes)
    collector = _Collector(field_name, limits, query_only=frozenset(query_only))
    received = 0
    try:
        parser = _parser(boundary, collector)
        preamble = _Preamble(boundary)
        async for chunk in _chunks(request, BODY_IDLE_TIMEOUT_S):
            received += len(chunk)
            if received > limits.max_request_bytes:
                raise too_large("the request body", limits.max_request_bytes)
            if hold is not None:
                hold(len(chunk))
            parser.write(preamble.skip(chunk))
        parser.write(preamble.end())
        parser.finalize()
    except FormParserError as e:  # the parser's errors, its refusal of the boundary included
        raise ApiError(400, MALFORMED_MULTIPART, _parse_error_message(e)) from None
    except ClientDisconnect:
        # no one reads the 400 and uvicorn writes no access line for a closed connection: the 400s
        # in /metrics had no trace in the log (no file names: they may name the patient)
        logger.info(
            "client closed request during upload: %s %s 400 (%d bytes received)",
            request.method,
            request.url.path,
            received,
        )
        raise ApiError(400, MALFORMED_MULTIPART, "the client disconnected during the upload") from None
    if not collector.ended:
        raise ApiError(400, MALFORMED_MULTIPART, "the multipart body ended before its closing boundary")
    if collector.misplaced:
        raise misplaced_parameters(collector.misplaced)
    if not collector.uploads:
        raise missing_files(field_name, collector.other_names)
    return collector.uploads
