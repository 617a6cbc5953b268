"""The endpoints: /v1/predict, /v1/model, /healthz, /metrics. Thin: parse, call the service, format."""

from __future__ import annotations

import difflib
import hashlib
import logging
import math
import threading
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response

from fracsight import __version__
from fracsight._cpus import local_cpus
from fracsight._malloc import is_large, release_freed_memory
from fracsight.api.errors import (
    INTERNAL_ERROR,
    NO_READABLE_IMAGES,
    UNKNOWN_OPERATING_POINT,
    VALIDATION_ERROR,
    ApiError,
    internal_error_message,
)
from fracsight.api.metrics import CONTENT_TYPE, Metrics
from fracsight.api.schemas import ErrorResponse, Health, ModelInfo, PredictResponse
from fracsight.api.service import ClientGone, FileFailure, Outcome, PredictOptions, predict_uploads
from fracsight.api.settings import ApiSettings
from fracsight.api.uploads import Upload, UploadLimits, read_uploads
from fracsight.bundle import OperatingPoint, read_card
from fracsight.errors import BundleError
from fracsight.inference import NOTICE, FailedPrediction, Prediction, Predictor, StudyPrediction
from fracsight.inference.results import at_operating_point, views_unread
from fracsight.inference.tabular import ALL_INPUTS, csv_text, result_columns

__all__ = ["get_metrics", "get_predictor", "get_settings", "load_predictor", "router"]

router = APIRouter()
_load_lock = threading.Lock()

ERRORS = {
    400: {"model": ErrorResponse, "description": "Unreadable image or malformed request"},
    408: {"model": ErrorResponse, "description": "The request body stopped arriving"},
    413: {"model": ErrorResponse, "description": "File, request or image too large"},
    415: {
        "model": ErrorResponse,
        "description": "Not a supported image format, or a compressed (Content-Encoding) body",
    },
    422: {
        "model": ErrorResponse,
        "description": "Missing or invalid field or parameter, or a file the model cannot assess "
        "(e.g. a multi-frame or non-radiograph DICOM)",
    },
    500: {"model": ErrorResponse, "description": "Internal error (logged, never detailed here)"},
}
BUSY = {
    503: {
        "model": ErrorResponse,
        "description": "server_busy: the worker holds as many uploads as it may; retry after the delay. "
        "server_stopping: the server stopped while this request ran past its grace; send it again "
        "(to another instance), no Retry-After",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait (server_busy only).",
                "schema": {"type": "integer"},
            }
        },
    }
}
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
NOTICE_HEADER = "X-Fracsight-Notice"  # a CSV has no room for the notice the JSON answers carry
NOTE_HEADER = "X-Fracsight-Note"  # what a request asked for that this model cannot give (the CLI's "note:")
PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The predictions: JSON (default) or, with format=csv, one CSV row per file "
        "and one for the study, with the columns of the model's heads.",
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "headers": {
            NOTICE_HEADER: {
                "description": f"On every answer, JSON or CSV: {NOTICE!r} (a CSV has no room "
                "for the `notice` field the JSON answer carries).",
                "schema": {"type": "string"},
            },
            NOTE_HEADER: {
                "description": "Only when the request asked for something this model cannot give: "
                "all_classes=true for a model without a class head (its CSV has no p_<class> columns).",
                "schema": {"type": "string"},
            },
        },
    },
    **ERRORS,
    **BUSY,
}
PREDICT_PARAMETERS = ("overlay", "study", "operating_point", "format", "all_classes")
MULTIPART_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["files"],
                "properties": {
                    "files": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "format": "binary"},
                        "description": "PNG, JPEG, BMP, TIFF, GIF or DICOM files; the format is read "
                        "from the content, not the name.",
                    }
                },
            }
        }
    },
}


# ---- dependencies (tests override them with app.dependency_overrides) ----------------------------
def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


@lru_cache(maxsize=4)
def _cached_predictor(model: str | None, threads: int) -> Predictor:
    return Predictor(model, threads=threads)


def inference_threads(settings: ApiSettings, workers: int = 1) -> int:
    """ONNX Runtime threads per inference: as set, or (0) the cores this process may use (its
    container's CPU quota too: under `--cpus 1` on a 2-core host it ran 2 threads, p90 70 ms for
    50) shared among the concurrent inferences of ``workers`` processes (`fracsight serve
    --workers` sets the worker processes' count so), so that they do not oversubscribe the CPU."""
    if settings.inference_threads:
        return settings.inference_threads
    return max(1, local_cpus() // (settings.max_concurrent_inferences * workers))


def load_predictor(settings: ApiSettings) -> Predictor:
    """The process's Predictor for these settings, loaded once (thread-safe)."""
    with _load_lock:
        return _cached_predictor(settings.model, inference_threads(settings))


def get_predictor(request: Request, settings: Annotated[ApiSettings, Depends(get_settings)]) -> Predictor:
    predictor = load_predictor(settings)
    get_metrics(request).set_model(predictor.spec.name, predictor.spec.version)
    return predictor


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]


def _limiter(request: Request, settings: ApiSettings) -> anyio.CapacityLimiter:
    state = request.app.state
    if getattr(state, "limiter", None) is None:
        state.limiter = anyio.CapacityLimiter(settings.max_concurrent_inferences)
    return state.limiter


# ---- /v1/predict ---------------------------------------------------------------------------------
def _operating_point(predictor: Predictor, name: str | None) -> OperatingPoint | None:
    """The operating point to decide at; None for a model without a fracture head (and no ``name``)."""
    spec = predictor.spec
    loc = {"loc": ["query", "operating_point"]}
    if spec.head("fracture") is None:
        if name is None:
            return None
        raise ApiError(
            422,
            UNKNOWN_OPERATING_POINT,
            f"operating point {name!r} was asked for, but this model has no fracture head and so no "
            "operating points; leave operating_point out (GET /v1/model shows the model's heads)",
            [{**loc, "msg": "this model has no operating points", "type": "enum"}],
        )
    if name is None:
        return predictor.operating_point or spec.operating_point()
    try:  # "" is a name asked for (an unset variable in a client's URL), not the default
        return spec.operating_point(name)
    except BundleError:
        known = [op.name for op in spec.operating_points]
        raise ApiError(
            422,
            UNKNOWN_OPERATING_POINT,
            f"unknown operating point {name!r}; this model has: {', '.join(known)}",
            [{**loc, "msg": f"must be one of {known}", "type": "enum"}],
        ) from None


def _check_parameters(request: Request) -> None:
    """Refuse a query parameter /v1/predict does not take: a misspelt one (``studdy=true``,
    ``operating-point=triage``) was ignored, so the answer silently left out what was asked for."""
    unknown = [name for name in dict.fromkeys(request.query_params.keys()) if name not in PREDICT_PARAMETERS]
    if not unknown:
        return
    unknown = unknown[:5]
    said = []
    for name in unknown:
        close = difflib.get_close_matches(name.lower().replace("-", "_"), PREDICT_PARAMETERS, n=1)
        said.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ApiError(
        422,
        VALIDATION_ERROR,
        f"unknown query parameter {', '.join(said)}; /v1/predict takes {', '.join(PREDICT_PARAMETERS)}",
        [{"loc": ["query", name], "msg": "unknown parameter", "type": "extra_forbidden"} for name in unknown],
    )


def _refusal(failures: list[FileFailure]) -> ApiError:
    """The error answered when no file could be predicted."""
    details = [{"source": f.source, "code": f.code, "msg": f.message} for f in failures]
    codes = {f.code for f in failures}
    if len(codes) == 1:
        first = failures[0]
        if len(failures) == 1:
            return ApiError(first.status, first.code, first.message)
        message = f"none of the {len(failures)} files could be read: {first.message}"
        return ApiError(first.status, first.code, message, details)
    if any(f.status >= 500 for f in failures):
        return ApiError(500, INTERNAL_ERROR, internal_error_message(), details)
    return ApiError(400, NO_READABLE_IMAGES, f"none of the {len(failures)} files could be read", details)


def _csv_response(
    predictor: Predictor, outcomes: list[Outcome], studies: list[StudyPrediction], all_classes: bool
) -> Response:
    """The CSV answer: the rows and columns of ``fracsight predict --csv`` (one place builds both)."""
    rows: list[Prediction | FailedPrediction | StudyPrediction] = []
    for outcome in outcomes:
        r = outcome.result
        rows.append(FailedPrediction(r.source, r.code, r.message) if isinstance(r, FileFailure) else r)
    rows += studies
    text = csv_text(rows, result_columns(predictor.spec, all_classes=all_classes))
    headers = {"Content-Disposition": 'inline; filename="predictions.csv"', NOTICE_HEADER: NOTICE}
    if all_classes and not predictor.classes:
        # not the model's name: a header is Latin-1 only, and a name may be in any script
        headers[NOTE_HEADER] = "all_classes: the model has no class head; no p_<class> columns"
    return Response(text, media_type=CSV_MEDIA_TYPE, headers=headers)


def _image_entry(outcome: Outcome) -> dict[str, Any]:
    result = outcome.result
    if isinstance(result, FileFailure):
        return {"source": result.source, "error": {"code": result.code, "message": result.message}}
    entry = result.to_dict()
    if outcome.overlay_png_base64 is not None:
        entry["overlay_png_base64"] = outcome.overlay_png_base64
    return entry


@router.post(
    "/v1/predict",
    response_model=PredictResponse,
    response_model_exclude_unset=True,
    responses=PREDICT_RESPONSES,
    openapi_extra={"requestBody": MULTIPART_BODY},
    summary="Predict fractures in uploaded radiographs",
    tags=["predict"],
)
async def predict(
    request: Request,
    background: BackgroundTasks,
    predictor: PredictorDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    overlay: Annotated[
        bool,
        Query(
            description="Add overlay_png_base64 per image: the heatmap named by `localization` (and "
            "the fracture boxes) on the image. Not with format=csv."
        ),
    ] = False,
    study: Annotated[
        bool, Query(description="Treat all files as views of one study and add a study result.")
    ] = False,
    operating_point: Annotated[
        str | None,
        Query(
            max_length=100,
            description="Named operating point (default: the model's; leave the parameter out for "
            "it: an empty value is an unknown name, 422). Only for a model with a fracture head: "
            "any value is a 422 for one without.",
        ),
    ] = None,
    output_format: Annotated[
        Literal["json", "csv"],
        Query(
            alias="format",
            description="`csv`: answer text/csv, one row per file (failed files included) and one "
            "for the study, with the columns of the model's heads. Errors stay JSON.",
        ),
    ] = "json",
    all_classes: Annotated[
        bool,
        Query(description="With format=csv: add a p_<class> column per class of the class head."),
    ] = False,
) -> Any:
    """Upload one or more images as multipart/form-data field `files`.

    200 when at least one file was predicted; files that could not be read carry an
    `error` object in place of a prediction. When no file could be predicted the
    whole request fails: with that error's status and code when every file failed
    the same way, otherwise 400 `no_readable_images` with per-file `details`.
    Uploads are processed in memory and never stored. Each prediction has the fields of
    the heads the model has (fracture, region, class) and none of the others. A query
    parameter not listed here (a misspelt `studdy=true`) is a 422 `validation_error`.
    """
    _check_parameters(request)
    op = _operating_point(predictor, operating_point)
    if overlay and output_format == "csv":
        raise ApiError(
            422,
            VALIDATION_ERROR,
            "overlay=true cannot be combined with format=csv (a CSV has no room for images)",
            [{"loc": ["query", "overlay"], "msg": "not with format=csv", "type": "value_error"}],
        )
    limits = UploadLimits(settings.max_upload_bytes, settings.max_files, settings.max_request_bytes)
    # the bodies count against the process's upload memory until the answer is made
    with request.app.state.upload_memory.account() as hold:
        uploads = await read_uploads(request, limits, hold=hold, query_only=PREDICT_PARAMETERS)
        options = PredictOptions(operating_point=op, overlay=overlay, max_pixels=settings.max_pixels)

        def work() -> list[Outcome]:
            metrics.inference_started()
            try:
                return predict_uploads(predictor, uploads, options, gone=lambda: _client_left(request))
            finally:
                metrics.inference_finished()

        try:
            outcomes = await anyio.to_thread.run_sync(work, limiter=_limiter(request, settings))
        except ClientGone as gone:  # its files were left unpredicted: no one waits behind them, none counted
            metrics.count_error(CLIENT_GONE)
            # uvicorn writes no access line for a connection already closed: the log had no trace
            logger.info(
                "client closed request: %s %s %d (%d of its %d files not predicted)",
                request.method,
                request.url.path,
                CLIENT_GONE_STATUS,
                gone.left,
                len(uploads),
            )
            return Response(status_code=CLIENT_GONE_STATUS)
        failures = [o.result for o in outcomes if isinstance(o.result, FileFailure)]
        predictions = [o.result for o in outcomes if isinstance(o.result, Prediction)]
        if any(is_large(p.image_size) for p in predictions):
            background.add_task(release_freed_memory)  # once the answer is sent and its arrays freed
        for failure in failures:
            metrics.count_error(failure.code, scope="file")
        metrics.count_images("predicted", len(predictions))
        metrics.count_images("failed", len(failures))
        if not predictions:
            raise _refusal(failures)
        studies = []
        if study:  # the files that could not be read are views the study has not seen: it says so
            unread = views_unread(_failed_once(uploads, outcomes))
            combined = predictor.predict_study(predictions, ALL_INPUTS, unread=unread)
            studies.append(at_operating_point(combined, op))
        if output_format == "csv":
            return _csv_response(predictor, outcomes, studies, all_classes)
        return {
            "model": {"name": predictor.spec.name, "version": predictor.spec.version},
            "notice": NOTICE,
            "images": [_image_entry(o) for o in outcomes],
            "studies": [s.to_dict() for s in studies],
        }


def _failed_once(uploads: list[Upload], outcomes: list[Outcome]) -> list[FileFailure]:
    """The files that failed, an upload repeated (the same name and bytes) once: as ``predict --study``
    counts a file given twice once, and as the study counts an image given twice once (it said
    "2 of 3 views could not be read (ct.dcm, ct.dcm)")."""
    seen: set[tuple[str, bytes]] = set()
    failed = []
    for upload, outcome in zip(uploads, outcomes, strict=True):
        if not isinstance(outcome.result, FileFailure):
            continue
        # two empty files are two failed transfers (SE1/IM000001.dcm and SE2/IM000001.dcm), not one
        key = (upload.filename, hashlib.sha256(upload.data).digest())
        if not upload.data or key not in seen:
            seen.add(key)
            failed.append(outcome.result)
    return failed


logger = logging.getLogger("fracsight.api")

CLIENT_GONE = "client_closed_request"
CLIENT_GONE_STATUS = 499  # nginx's "client closed request": no one reads it; the log and metrics do


def _client_left(request: Request) -> bool:
    """Whether the client has closed its connection, asked from the worker thread before each file
    (its body is read: what can come next from it is its disconnect). Clients that time out and
    retry piled up work no one waited for: eight requests of 16 images abandoned after 1 s held the
    next one for 7 s, each answered 200 to no one."""
    try:
        return anyio.from_thread.run(request.is_disconnected)
    except RuntimeError:  # no event loop to ask (it is stopping): go on as before
        return False


# ---- /v1/model, /healthz, /metrics -----------------------------------------------------------------
def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@lru_cache(maxsize=8)
def _model_card(bundle_dir: Path) -> str | None:
    return read_card(bundle_dir)  # never a file outside the bundle (a linked card.md)


@router.get("/v1/model", response_model=ModelInfo, responses={500: ERRORS[500]}, tags=["model"])
@router.head("/v1/model", include_in_schema=False)  # HTTP asks HEAD of every GET (monitors use it)
def model_info(predictor: PredictorDep, settings: SettingsDep) -> dict[str, Any]:
    """The loaded model bundle: heads, operating points, input size, measured metrics and model card."""
    spec = predictor.spec
    default_op = predictor.operating_point if spec.head("fracture") is not None else None
    class_op = spec.class_operating_point if spec.head("class") is not None else None
    return {
        "name": spec.name,
        "version": spec.version,
        "architecture": spec.architecture,
        "input_size": spec.input_size,
        "heads": [{"name": h.name, "kind": h.kind, "classes": list(h.classes)} for h in spec.heads],
        "operating_points": [_finite(vars(op)) for op in spec.operating_points],
        "default_operating_point": None if default_op is None else default_op.name,
        "class_operating_point": None if class_op is None else _finite(vars(class_op)),
        "metrics": _finite(spec.metrics),
        "card": _model_card(Path(predictor.bundle_dir)),
        "notice": NOTICE,
        "limits": {
            "max_upload_bytes": settings.max_upload_bytes,
            "max_files": settings.max_files,
            "max_pixels": settings.max_pixels,
        },
    }


# HEAD too (some load balancers probe with it), as a route of its own: one route for both methods
# gives them one operationId, which OpenAPI requires to be unique (and client generators trip on)
@router.get("/healthz", response_model=Health, responses={500: ERRORS[500]}, tags=["ops"])
@router.head("/healthz", response_model=Health, responses={500: ERRORS[500]}, tags=["ops"])
def healthz(predictor: PredictorDep) -> dict[str, Any]:
    """200 once the model is loaded and the server answers."""
    return {
        "status": "ok",
        "model": {"name": predictor.spec.name, "version": predictor.spec.version},
        "fracsight_version": __version__,
    }


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    tags=["ops"],
)
@router.head("/metrics", include_in_schema=False)
def metrics_text(metrics: MetricsDep) -> PlainTextResponse:
    """Prometheus text format: requests by route and status, latency histogram, errors by code."""
    return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)
