"""The FastAPI application: ``create_app()`` wires settings, routes, error handlers and metrics.

>>> from fracsight.api import ApiSettings, create_app
>>> app = create_app(ApiSettings(model="path/to/bundle"))   # doctest: +SKIP

Run it with ``fracsight serve`` or ``uvicorn --factory fracsight.api.app:create_app``
(settings then come from ``FRACSIGHT_*`` environment variables).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fracsight import __version__
from fracsight._malloc import LARGE_BODY_BYTES, release_in_background
from fracsight.api.auth import (
    OPEN_PATHS,
    BearerAuthMiddleware,
    LoopbackOnlyMiddleware,
    QuerySecretFilter,
    route_path,
    token_guard,
)
from fracsight.api.errors import (
    HTTP_CODES,
    INTERNAL_ERROR,
    REQUEST_ID,
    SERVER_STOPPING,
    VALIDATION_ERROR,
    ApiError,
    error_response,
    internal_error_message,
    request_id_of,
)
from fracsight.api.metrics import Metrics
from fracsight.api.routes import get_predictor, inference_threads, load_predictor, router
from fracsight.api.settings import ApiSettings
from fracsight.api.upload_memory import UploadMemory
from fracsight.errors import FracsightError
from fracsight.errors import log_unexpected as _log_unexpected
from fracsight.inference import NOTICE

__all__ = ["create_app", "uvicorn_log_config"]

logger = logging.getLogger("fracsight.api")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")  # for a 405's Allow header

DESCRIPTION = f"""Finds bone fractures in X-ray radiographs (PNG, JPEG, DICOM, ...).

**{NOTICE}**

Each prediction carries the fields of the heads the loaded model has (fracture, region and/or
class; see `GET /v1/model`) and leaves the others out. `format=csv` answers text/csv instead.

Errors are JSON `{{"error": {{"code": ..., "message": ..., "details": [...]}}}}` with a stable `code`.
Uploads are processed in memory and never stored. See docs/api.md.
"""


# On every answer, refusals and errors included: predictions are patient data, so no browser, proxy
# or shared cache keeps a copy (no-store); and no browser guesses a type other than the one sent
# (nosniff: a JSON or CSV answer quoting an uploaded file name is never run as HTML).
# And the decision-aid notice, which the JSON predictions carry as `notice`, on every answer (errors,
# /healthz, /metrics, /docs too): a client that logs headers keeps it whatever the body.
SECURITY_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-fracsight-notice", NOTICE.encode("ascii")),
)


def _with_security_headers(message: Message, request_id: str) -> Message:
    headers = list(message.get("headers", ()))
    present = {name.lower() for name, _ in headers}
    headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
    headers.append((b"x-request-id", request_id.encode("ascii")))
    return {**message, "headers": headers}


class ObserveMiddleware:
    """Counts every request (route template, method, status, latency), adds
    :data:`SECURITY_HEADERS` and the request's ``X-Request-ID`` to every answer, and turns any
    exception that escaped the handlers into a 500 ``internal_error`` JSON answer without a
    traceback, naming the request as the log does."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes  # for a request refused before routing (no token): its route all the same

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False
        received = 0  # body bytes
        request_id = request_id_of(scope.get("headers", []))
        request_id_set = REQUEST_ID.set(request_id)

        async def receive_and_count() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def send_and_watch(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started = True
                message = _with_security_headers(message, request_id)
            await send(message)

        try:
            await self.app(scope, receive_and_count, send_and_watch)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when the graceful stop's time is up (GRACEFUL_SHUTDOWN_S):
            # re-raised, its fallback answered a plain-text 500 and logged a traceback
            status = 503
            self.metrics.count_error(SERVER_STOPPING)
            if not started:
                message = "the server is stopping and this request ran past its grace; send it again"
                response = error_response(503, SERVER_STOPPING, message, headers={"Connection": "close"})
                await response(scope, receive, send_and_watch)
        except Exception as exc:
            where = f"{scope.get('method')} {_route(scope, 500, self.routes)} (request {request_id})"
            _log_unexpected(logger, where, exc)
            self.metrics.count_error(INTERNAL_ERROR)
            status = 500
            if not started:
                response = error_response(500, INTERNAL_ERROR, internal_error_message())
                await response(scope, receive, send_and_watch)
        finally:
            REQUEST_ID.reset(request_id_set)
            self.metrics.observe_request(
                _route(scope, status, self.routes),
                str(scope.get("method", "")),
                status,
                time.perf_counter() - start,
            )
            if received >= LARGE_BODY_BYTES:  # answered or refused, its buffers are freed by now
                release_in_background()


class RootPathMiddleware:
    """Serves the API under ``root_path`` (``FRACSIGHT_ROOT_PATH``) as uvicorn's ``--root-path``
    does, which ``fracsight serve`` cannot pass: the prefix goes into ``root_path`` (for the links of
    /docs and the OpenAPI ``servers``) and in front of ``path``, whether or not the proxy stripped it."""

    def __init__(self, app: ASGIApp, root_path: str) -> None:
        self.app = app
        self.root_path = root_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not scope.get("root_path"):
            scope = {**scope, "root_path": self.root_path}
            if route_path(scope) == scope["path"]:  # the proxy stripped the prefix: put it back
                scope["path"] = self.root_path + scope["path"]
                if scope.get("raw_path") is not None:
                    scope["raw_path"] = self.root_path.encode() + scope["raw_path"]
        await self.app(scope, receive, send)


def _route(scope: Scope, status: int, routes: Sequence[BaseRoute] = ()) -> str:
    """The matched route's template (bounded label values); unknown paths all count as 'unmatched'.

    A request refused before the router saw it (a 401 of the token check) has no route in its
    scope: the route its path and method would have reached is looked up in ``routes``."""
    route = scope.get("route")
    if route is None and status != 404:
        # a method the path does not take (OPTIONS, refused 401) matches partly: counted under the
        # path, as the router counts its 405 (it was "unmatched")
        found = {r.matches(scope)[0]: r for r in reversed(routes) if hasattr(r, "path")}
        route = found.get(Match.FULL) or found.get(Match.PARTIAL)
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return "unmatched" if status == 404 or "endpoint" not in scope else route_path(scope)


def _register_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    def answer(
        status: int, code: str, message: str, details: Any = None, headers: Any = None
    ) -> JSONResponse:
        metrics.count_error(code)
        return error_response(status, code, message, details, headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return answer(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(FracsightError)
    async def _fracsight_error(request: Request, exc: FracsightError) -> JSONResponse:
        if exc.http_status >= 500:  # e.g. the model bundle failed to load: details go to the log only
            logger.error("%s while serving %s: %s", exc.code, request.url.path, exc)
            return answer(exc.http_status, exc.code, "the server cannot serve predictions (see its log)")
        return answer(exc.http_status, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details) or "invalid request"
        return answer(422, VALIDATION_ERROR, f"invalid request: {summary}", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        message = str(exc.detail)
        if exc.status_code == 404:
            message = _not_found_message(request.app, request.scope)
        allowed = _allowed_methods(request.app, request.scope) if exc.status_code == 405 else ""
        if allowed:
            headers["Allow"] = allowed
            message = f"{request.method} is not allowed on {request.url.path}; it takes {allowed}"
        return answer(exc.status_code, code, message, None, headers or None)


def _not_found_message(app: ASGIApp, scope: Scope) -> str:
    """A 404 that says what to send instead: Starlette's bare "Not Found" left a client that added a
    trailing slash (or misspelt the path) guessing."""
    path = scope.get("path", "")[:200]
    routes = getattr(app, "routes", ())
    stripped = path.rstrip("/")
    if stripped != path and any(r.matches({**scope, "path": stripped})[0] != Match.NONE for r in routes):
        return f"no path {path}: send it to {stripped}, without the trailing slash"
    return f"no path {path}; the API has POST /v1/predict, GET /v1/model, /healthz, /metrics, /docs"


def _allowed_methods(app: ASGIApp, scope: Scope) -> str:
    """The ``Allow`` header of a 405: every method some route takes at this path. Starlette names
    only the first route that matched the path, so GET and HEAD, routes of their own here, gave
    ``Allow: HEAD`` for ``/healthz`` although GET is the method a client wants."""
    routes = getattr(app, "routes", ())
    methods = [m for m in _METHODS if any(r.matches({**scope, "method": m})[0] == Match.FULL for r in routes)]
    return ", ".join(methods)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """A new application. ``settings`` default to the ``FRACSIGHT_*`` environment variables.

    The model is loaded at startup (once per process) unless a test overrides
    :func:`~fracsight.api.routes.get_predictor`.
    """
    settings = settings if settings is not None else ApiSettings.from_env()
    if not settings.inference_threads:
        # counted once, here: counted again on every request, a CPU limit changed while serving
        # (docker update --cpus, taskset) missed the cached model and loaded another copy of it
        settings = settings.model_copy(update={"inference_threads": inference_threads(settings)})
    guard = token_guard(settings.auth, settings.api_tokens, settings.api_tokens_file)
    metrics = Metrics(share_dir=settings.metrics_dir)
    _hide_query_secrets_in_logs()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.limiter = anyio.CapacityLimiter(settings.max_concurrent_inferences)
        if get_predictor not in app.dependency_overrides:
            predictor = await anyio.to_thread.run_sync(load_predictor, settings)
            metrics.set_model(predictor.spec.name, predictor.spec.version)
            logger.info("fracsight API serving %s from %s", predictor.name, predictor.bundle_dir)
        metrics.announce()
        yield

    app = FastAPI(
        title="fracsight",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        license_info={"name": "Apache-2.0", "identifier": "Apache-2.0"},
        redoc_url=None,  # one set of interactive docs (/docs); /openapi.json is the contract
        # no 307 from /v1/predict/ to /v1/predict: it would send the images on to a Location built
        # from the Host header and the scheme uvicorn saw (http behind a TLS proxy); a 404 instead
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.limiter = None
    app.state.upload_memory = UploadMemory(settings.upload_memory_limit)
    app.include_router(router)
    _register_error_handlers(app, metrics)
    if guard:  # inside ObserveMiddleware (added after it, so around it): refusals are counted too
        app.add_middleware(BearerAuthMiddleware, guard=guard, on_refusal=metrics.count_error)
    elif settings.auth == "optional":
        app.add_middleware(LoopbackOnlyMiddleware, on_refusal=metrics.count_error)
    app.add_middleware(ObserveMiddleware, metrics=metrics, routes=[*router.routes, *app.routes])
    if settings.root_path:  # outermost: every other layer sees the prefix as uvicorn's --root-path puts it
        app.add_middleware(RootPathMiddleware, root_path=settings.root_path)
    _document_limits(
        app, settings, bearer=bool(guard), loopback_only=not guard and settings.auth == "optional"
    )
    return app


def uvicorn_log_config(level: int | str) -> dict[str, Any]:
    """uvicorn's logging configuration with the ``fracsight`` loggers on its console handler at
    ``level``: without it they have none, so their info lines (the model served) are lost and their
    errors come out bare, without a level."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    level = level.upper() if isinstance(level, str) else level
    config["loggers"]["fracsight"] = {"handlers": ["default"], "level": level, "propagate": False}
    return config


def _hide_query_secrets_in_logs() -> None:
    """A token sent in a URL hidden in uvicorn's access lines and in the ASGI scopes its trace level
    logs, under any runner: set in ``fracsight serve``'s log configuration only, ``uvicorn --factory
    fracsight.api.app:create_app`` (docs/api.md) wrote it in full."""
    for name in ("uvicorn.access", "uvicorn.asgi"):
        log = logging.getLogger(name)
        if not any(isinstance(f, QuerySecretFilter) for f in log.filters):
            log.addFilter(QuerySecretFilter())


def _document_limits(
    app: FastAPI, settings: ApiSettings, *, bearer: bool = False, loopback_only: bool = False
) -> None:
    """Put this server's upload limits into its OpenAPI schema (maxItems of `files`), and its bearer
    authentication when it has tokens, or its 403 ``loopback_only`` to clients elsewhere when it
    has none (every operation but /healthz)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
        files = body["schema"]["properties"]["files"]
        files["maxItems"] = settings.max_files
        files["description"] = (
            files["description"].split(" Limits:")[0]
            + f" Limits: at most {settings.max_files} files of {settings.max_upload_bytes:,} bytes each."
        )
        if loopback_only:  # the answer a client generated from the schema gets from elsewhere
            for path, operations in schema["paths"].items():
                for operation in operations.values() if path not in OPEN_PATHS else ():
                    operation.setdefault("responses", {})["403"] = {
                        "description": "loopback_only: this server has no API token, so it answers only on "
                        "this computer",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                        },
                    }
        if bearer:
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "A token from FRACSIGHT_API_TOKENS or FRACSIGHT_API_TOKENS_FILE.",
            }
            for path, operations in schema["paths"].items():
                for operation in operations.values():
                    if path in OPEN_PATHS:
                        operation["security"] = []
                        continue
                    operation["security"] = [{"bearer": []}]
                    operation.setdefault("responses", {})["401"] = {
                        "description": "Missing or invalid bearer token",
                        "headers": {
                            "WWW-Authenticate": {
                                "description": 'Bearer realm="fracsight" (with error="invalid_token" '
                                "for a token that is not valid)",
                                "schema": {"type": "string"},
                            }
                        },
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                        },
                    }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
