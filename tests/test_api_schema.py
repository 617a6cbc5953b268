"""REST API schema: /openapi.json and /docs load, and the app honours its own schema under fuzzing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fracsight.api import ApiSettings, create_app

pytest.importorskip("fastapi")
try:  # a dev tool: the fuzz test is skipped without it
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    # positive_data_acceptance is left out: a schema cannot say "a valid radiograph", so random
    # bytes in `files` are rightly refused with a documented 4xx.
    CHECKS = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
except ImportError:  # pragma: no cover
    schemathesis = None


@pytest.fixture(scope="module")
def app(tiny_bundle: Path):
    return create_app(ApiSettings(model=str(tiny_bundle), max_files=3, max_upload_bytes=200_000))


def test_openapi_lists_the_routes_and_error_shapes(app) -> None:
    with TestClient(app) as c:
        schema = c.get("/openapi.json").json()
        assert c.get("/docs").status_code == 200
    paths = schema["paths"]
    assert {"/v1/predict", "/v1/model", "/healthz", "/metrics"} <= set(paths)
    predict = paths["/v1/predict"]["post"]
    assert {"200", "400", "413", "415", "422", "500"} <= set(predict["responses"])
    body = predict["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["files"]
    assert {p["name"] for p in predict["parameters"]} == {"overlay", "study", "operating_point"}
    assert "ErrorResponse" in schema["components"]["schemas"]
    assert body["properties"]["files"]["maxItems"] == 3


def test_app_conforms_to_its_schema(app) -> None:
    """Fuzz every operation: no 5xx, documented statuses and content types, schema-valid responses."""
    if schemathesis is None:
        pytest.skip("schemathesis is not installed (dev extra)")
    with TestClient(app):  # runs the lifespan: the model is loaded once
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(
                max_examples=15,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def check(case) -> None:
                case.call_and_validate(checks=CHECKS)

            check()
