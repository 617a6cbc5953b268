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
    assert {p["name"] for p in predict["parameters"]} == {
        "overlay",
        "study",
        "operating_point",
        "format",
        "all_classes",
    }
    (fmt,) = [p for p in predict["parameters"] if p["name"] == "format"]
    assert fmt["schema"]["enum"] == ["json", "csv"] and fmt["schema"]["default"] == "json"
    assert set(predict["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    components = schema["components"]["schemas"]
    assert {"ErrorResponse", "Classification", "ClassOperatingPointInfo"} <= set(components)
    # the fields of heads a model may lack are optional (left out, never null); the rest are required
    image = components["ImagePrediction"]
    assert set(image["required"]) == {
        "source",
        "decision",
        "localization",
        "reliable",
        "warnings",
        "model",
        "image",
        "notice",
    }
    assert image["properties"]["localization"]["enum"] == ["fracture", "class_activation", "none"]
    assert "as shown" in components["ImageInfo"]["properties"]["height"]["description"]  # as the boxes
    answer = schema["paths"]["/v1/predict"]["post"]["responses"]["200"]
    assert "decision aid" in answer["headers"]["X-Fracsight-Notice"]["description"]  # format=csv
    for name in ("fracture_probability", "region", "classification", "boxes"):
        assert "default" not in image["properties"][name] and "anyOf" not in image["properties"][name]
    assert set(components["StudyResult"]["required"]) == {
        "study",
        "decision",
        "aggregation",
        "images",
        "unread_images",
        "reliable",
        "warnings",
        "notice",
    }
    assert {"default_operating_point", "class_operating_point"} <= set(components["ModelInfo"]["required"])
    assert body["properties"]["files"]["maxItems"] == 3


def fuzz_app(app, max_examples: int = 15) -> None:
    """Fuzz every operation of ``app``: no 5xx, documented statuses and content types, schema-valid
    responses. Skips without schemathesis."""
    if schemathesis is None:
        pytest.skip("schemathesis is not installed (dev extra)")
    with TestClient(app):  # runs the lifespan: the model is loaded once
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(
                max_examples=max_examples,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def check(case) -> None:
                case.call_and_validate(checks=CHECKS)

            check()


def test_operation_ids_are_unique(app) -> None:
    """OpenAPI requires it; client generators name their methods after them."""
    with TestClient(app) as c:
        schema = c.get("/openapi.json").json()
    ids = [op["operationId"] for ops in schema["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)), ids
    assert "head" in schema["paths"]["/healthz"]


def test_app_conforms_to_its_schema(app) -> None:
    """Fuzz every operation of the fracture-only tiny bundle (test_head_kinds_api.py: the other kinds)."""
    fuzz_app(app)
