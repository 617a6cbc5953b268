"""The API's error contract: ``{"error": {"code": ..., "message": ..., "details": [...]}}``.

Codes of refusals made by the library come from :mod:`fracsight.errors`
(``empty_file``, ``unsupported_format``, ...); the ones below are the API's own.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from typing import Any

from starlette.responses import JSONResponse

__all__ = [
    "HEADERS_TOO_LARGE",
    "INTERNAL_ERROR",
    "INVALID_HTTP",
    "MALFORMED_MULTIPART",
    "NO_READABLE_IMAGES",
    "REQUEST_ID",
    "REQUEST_TIMEOUT",
    "SERVER_BUSY",
    "TOO_MANY_FILES",
    "UNKNOWN_OPERATING_POINT",
    "UNSUPPORTED_MEDIA_TYPE",
    "UPLOAD_TOO_LARGE",
    "VALIDATION_ERROR",
    "ApiError",
    "error_response",
    "internal_error_message",
    "new_request_id",
    "request_id_of",
]

VALIDATION_ERROR = "validation_error"  # 422: a missing or invalid parameter or field
TOO_MANY_FILES = "too_many_files"  # 422
UNKNOWN_OPERATING_POINT = "unknown_operating_point"  # 422
MALFORMED_MULTIPART = "malformed_multipart"  # 400
NO_READABLE_IMAGES = "no_readable_images"  # 400: every file failed, not all for the same reason
UPLOAD_TOO_LARGE = "upload_too_large"  # 413
REQUEST_TIMEOUT = "request_timeout"  # 408: the client stopped sending its body
INVALID_HTTP = "invalid_http"  # 400: not valid HTTP, refused before the application sees it
HEADERS_TOO_LARGE = "headers_too_large"  # 431: request headers over the protocol's limit
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415: e.g. a compressed (Content-Encoding) body
INTERNAL_ERROR = "internal_error"  # 500
SERVER_BUSY = "server_busy"  # 503: the uploads this process holds are at their limit; retry
SERVER_STOPPING = "server_stopping"  # 503: still running when the stop's grace ran out; retry elsewhere

HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    408: REQUEST_TIMEOUT,
    413: UPLOAD_TOO_LARGE,
    415: UNSUPPORTED_MEDIA_TYPE,
}


# The request being answered, as its X-Request-ID header names it: in the log line of an unexpected
# error and in the 500 answered, so that an operator finds the stack a client reports (anyio copies
# it into the worker thread that predicts).
REQUEST_ID: ContextVar[str] = ContextVar("fracsight_request_id", default="-")
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` (a proxy's) where it is a short plain token, else a new one:
    anything longer or with other characters could forge or flood log lines."""
    for name, value in headers:
        if name.lower() == b"x-request-id":
            text = value.decode("latin-1")
            return text if _CLIENT_REQUEST_ID.fullmatch(text) else new_request_id()
    return new_request_id()


def new_request_id() -> str:
    return uuid.uuid4().hex


def internal_error_message() -> str:
    return f"internal error; the server logged it as request {REQUEST_ID.get()}"


class ApiError(Exception):
    """A refusal made by the API layer itself, with its HTTP status and stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)
