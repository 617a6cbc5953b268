"""The REST API for every head combination a bundle can have: a real `fracsight serve` per kind on
loopback (JSON, CSV, studies, overlays, operating points, /v1/model, the OpenAPI schema), and the
bad-input corpus in process (never a 5xx, whatever heads the model has)."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import is_overlay_of
from corpus import OK, build_corpus, garbage_requests
from fracsight.bundle import BundleSpec, load_bundle_spec
from fracsight.cli import app as cli_app
from fracsight.errors import FracsightError
from fracsight.inference import NOTICE, Predictor
from fracsight.inference.tabular import result_columns
from head_kinds import HEAD_KINDS

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from fracsight.api import ApiSettings, create_app  # noqa: E402
from test_api_schema import fuzz_app  # noqa: E402
from test_api_serve import loopback_server  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.fracatlas]

KINDS = list(HEAD_KINDS)
FRACTURE_KEYS = {"fracture_probability", "fracture_suspected", "operating_point", "decisions", "boxes"}
REGION_KEYS = {"region", "region_probabilities"}
COMMON_KEYS = {"source", "decision", "localization", "reliable", "warnings", "model", "image", "notice"}
CASES = build_corpus()
MB = 1024 * 1024


# ---- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(head_bundle) -> Iterator[Any]:
    """``server(kind) -> base URL`` of a real `fracsight serve` of that kind's bundle, started once."""
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:

        def get(kind: str) -> str:
            if kind not in urls:
                _, bundle = head_bundle(kind)
                urls[kind] = stack.enter_context(loopback_server("--model", str(bundle), "--max-files", "8"))
            return urls[kind]

        yield get


@pytest.fixture(scope="module")
def client(head_bundle) -> Iterator[Any]:
    """``client(kind) -> TestClient`` in process (for the corpus loops: much faster than HTTP)."""
    clients: dict[str, TestClient] = {}
    with contextlib.ExitStack() as stack:

        def get(kind: str) -> TestClient:
            if kind not in clients:
                _, bundle = head_bundle(kind)
                app = create_app(ApiSettings(model=str(bundle), max_files=16, max_upload_bytes=2 * MB))
                clients[kind] = stack.enter_context(TestClient(app))
            return clients[kind]

        yield get


def _images(data: Path, n: int = 3) -> list[Path]:
    files = sorted(p for p in data.rglob("*.jpg") if "test" in p.parts or p.parent.name == "images")
    return files[:n]


def _upload(paths: list[Path], extra: Sequence[tuple[str, bytes]] = ()) -> list[tuple[str, Any]]:
    items = [(p.name, p.read_bytes()) for p in paths] + list(extra)
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def _post(url: str, query: str, paths: list[Path], extra: Sequence[tuple[str, bytes]] = ()) -> Any:
    return httpx.post(f"{url}/v1/predict{query}", files=_upload(paths, extra), timeout=60)


def _setup(head_bundle, server, kind: str) -> tuple[str, BundleSpec, list[Path], tuple[str, ...]]:
    data, bundle = head_bundle(kind)
    return server(kind), load_bundle_spec(bundle), _images(data), HEAD_KINDS[kind]


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# ---- what a prediction holds ---------------------------------------------------------------------------
def _check_classification(c: dict[str, Any], spec: BundleSpec) -> None:
    classes = spec.head("class").classes
    assert set(c) == {"predicted", "probability", "confident", "min_probability", "probabilities"}
    assert list(c["probabilities"]) == list(classes)
    assert sum(c["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert c["predicted"] == max(c["probabilities"], key=c["probabilities"].__getitem__)
    assert c["probability"] == c["probabilities"][c["predicted"]]
    assert c["min_probability"] == pytest.approx(spec.class_operating_point.min_probability, abs=1e-6)
    assert c["confident"] == (c["probability"] >= c["min_probability"])


def _check_image(image: dict[str, Any], spec: BundleSpec, heads: tuple[str, ...]) -> None:
    """Exactly the keys of the model's heads, each consistent with the bundle."""
    expected = set(COMMON_KEYS)
    expected |= FRACTURE_KEYS if "fracture" in heads else set()
    expected |= REGION_KEYS if "region" in heads else set()
    expected |= {"classification"} if "class" in heads else set()
    assert set(image) - {"overlay_png_base64"} == expected, image
    assert image["notice"] == NOTICE
    assert image["localization"] == ("fracture" if "fracture" in heads else "class_activation")
    if "fracture" in heads:
        op = image["operating_point"]
        assert set(image["decisions"]) == {o.name for o in spec.operating_points}
        assert image["fracture_suspected"] == (image["fracture_probability"] >= op["threshold"])
        assert image["fracture_suspected"] == image["decisions"][op["name"]]
    if "region" in heads:
        assert list(image["region_probabilities"]) == list(spec.head("region").classes)
        probs = image["region_probabilities"]
        assert image["region"] == max(probs, key=probs.__getitem__)
    if "class" in heads:
        c = image["classification"]
        _check_classification(c, spec)
        if "fracture" not in heads and image["reliable"]:
            words = (
                f"most likely {c['predicted']}"
                if c["confident"]
                else f"class uncertain (top: {c['predicted']})"
            )
            assert image["decision"] == words


# ---- the real server, one per kind -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_json_has_the_fields_of_the_heads_and_no_others(head_bundle, server, kind: str) -> None:
    url, spec, images, heads = _setup(head_bundle, server, kind)
    r = _post(url, "", images, [("empty.png", b"")])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": spec.name, "version": spec.version} and body["studies"] == []
    *predicted, failed = body["images"]
    assert [i["source"] for i in predicted] == [p.name for p in images]
    for image in predicted:
        _check_image(image, spec, heads)
        assert "overlay_png_base64" not in image
    assert failed == {
        "source": "empty.png",
        "error": {"code": "empty_file", "message": failed["error"]["message"]},
    }


@pytest.mark.parametrize("kind", KINDS)
def test_csv_has_the_columns_of_the_heads_and_equals_the_cli(
    head_bundle, server, kind: str, tmp_path: Path
) -> None:
    url, spec, images, heads = _setup(head_bundle, server, kind)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    r = _post(url, "?format=csv", images, [("empty.png", b"")])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    header = next(csv.reader(io.StringIO(r.text)))
    assert tuple(header) == result_columns(spec)
    assert ("fracture_probability" in header) == ("top_box" in header) == ("fracture" in heads)
    assert ("region" in header) == ("region" in heads)
    assert ("predicted_class" in header) == ("class" in heads)
    rows = _rows(r.text)
    assert [(row["kind"], row["source"]) for row in rows] == [("image", p.name) for p in [*images, empty]]
    assert rows[-1]["error_code"] == "empty_file" and rows[-1]["decision"] == "error"
    json_images = _post(url, "", images).json()["images"]
    assert [row["decision"] for row in rows[:-1]] == [i["decision"] for i in json_images]

    # the same files through `fracsight predict --csv --study --all-classes`: the same CSV, byte for byte
    # (the study named "all inputs" by both)
    out = tmp_path / "cli.csv"
    paths = [*map(str, images), str(empty)]
    cli = CliRunner().invoke(
        cli_app,
        [
            "predict",
            "--model",
            str(head_bundle(kind)[1]),
            *paths,
            "--csv",
            str(out),
            "--study",
            "--all-classes",
        ],
    )
    assert cli.exit_code == 1, cli.output  # 1: a file could not be read
    api = _post(url, "?format=csv&study=true&all_classes=true", images, [("empty.png", b"")])
    assert api.status_code == 200, api.text
    assert tuple(next(csv.reader(io.StringIO(api.text)))) == result_columns(spec, all_classes=True)
    cli_rows, api_rows = _rows(out.read_text(encoding="utf-8")), _rows(api.text)
    assert (cli_rows[-1]["kind"], cli_rows[-1]["source"]) == ("study", "all inputs")
    assert (api_rows[-1]["kind"], api_rows[-1]["source"]) == ("study", "all inputs")
    assert api_rows == cli_rows
    assert api.text == out.read_bytes().decode("utf-8")  # as written: csv's \r\n line ends kept


@pytest.mark.parametrize("kind", KINDS)
def test_study_combines_the_heads_it_has(head_bundle, server, kind: str) -> None:
    url, spec, images, heads = _setup(head_bundle, server, kind)
    r = _post(url, "?study=true", images, [("empty.png", b"")])
    assert r.status_code == 200, r.text
    body = r.json()
    predicted = [i for i in body["images"] if "error" not in i]
    (study,) = body["studies"]
    expected = {
        "study",
        "decision",
        "aggregation",
        "images",
        "unread_images",
        "reliable",
        "warnings",
        "notice",
    }
    expected |= (
        {"fracture_probability", "fracture_suspected", "operating_point"} if "fracture" in heads else set()
    )
    expected |= {"classification"} if "class" in heads else set()
    expected |= {"region", "region_probabilities"} if "region" in heads else set()  # it had none
    assert set(study) == expected
    assert study["images"] == [p.name for p in images]
    # the empty file is a view the study has not seen: it says so and is not reliable
    assert study["unread_images"] == ["empty.png"] and not study["reliable"]
    assert study["warnings"][0] == (  # a view above the threshold under the mean may add a second
        f"1 of {len(images) + 1} views could not be read (empty.png); the study result is from the "
        f"other {len(images)} only"
    )
    if "fracture" in heads:
        mean = np.mean([i["fracture_probability"] for i in predicted])
        assert study["fracture_probability"] == pytest.approx(mean, abs=1e-5)
        assert study["fracture_suspected"] == (
            study["fracture_probability"] >= study["operating_point"]["threshold"]
        )
    if "region" in heads:
        for name in spec.head("region").classes:
            mean = np.mean([i["region_probabilities"][name] for i in predicted])
            assert study["region_probabilities"][name] == pytest.approx(mean, abs=1e-5)
        probabilities = study["region_probabilities"]
        assert study["region"] == max(probabilities, key=probabilities.get)
    if "class" in heads:
        _check_classification(study["classification"], spec)
        weights = [i["fracture_probability"] for i in predicted] if "fracture" in heads else None
        for name in spec.head("class").classes:
            mean = np.average(
                [i["classification"]["probabilities"][name] for i in predicted], weights=weights
            )
            assert study["classification"]["probabilities"][name] == pytest.approx(mean, abs=1e-5)
        if "fracture" not in heads and study["reliable"]:
            c = study["classification"]
            assert study["decision"] in (
                f"most likely {c['predicted']}",
                f"class uncertain (top: {c['predicted']})",
            )


@pytest.mark.parametrize("kind", KINDS)
def test_overlay_of_each_kind(head_bundle, server, kind: str) -> None:
    from PIL import Image

    url, spec, images, heads = _setup(head_bundle, server, kind)
    r = _post(url, "?overlay=true&study=true", images[:2])
    assert r.status_code == 200, r.text
    for image in r.json()["images"]:
        _check_image(image, spec, heads)
        overlay = Image.open(io.BytesIO(base64.b64decode(image["overlay_png_base64"])))
        assert overlay.format == "PNG"
        assert is_overlay_of(overlay.size, image["image"]["width"], image["image"]["height"])
    refused = _post(url, "?overlay=true&format=csv", images[:1])
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "validation_error"


@pytest.mark.parametrize("kind", KINDS)
def test_operating_points(head_bundle, server, kind: str) -> None:
    url, spec, images, heads = _setup(head_bundle, server, kind)
    unknown = _post(url, "?operating_point=no-such-point", images[:1])
    assert unknown.status_code == 422, unknown.text
    error = unknown.json()["error"]
    assert error["code"] == "unknown_operating_point"
    assert error["details"][0]["loc"] == ["query", "operating_point"]
    if "fracture" not in heads:  # no operating point exists: even a usual name is refused, clearly
        assert "no fracture head" in error["message"]
        balanced = _post(url, "?operating_point=balanced&format=csv", images[:1])
        assert balanced.status_code == 422 and balanced.json()["error"]["code"] == "unknown_operating_point"
        return
    chosen = spec.operating_points[-1]
    r = _post(url, f"?operating_point={chosen.name}&study=true", images)
    assert r.status_code == 200, r.text
    body = r.json()
    for image in [*body["images"], *body["studies"]]:
        assert image["operating_point"] == {"name": chosen.name, "threshold": round(chosen.threshold, 6)}
        assert image["fracture_suspected"] == (image["fracture_probability"] >= chosen.threshold)
    rows = _rows(_post(url, f"?operating_point={chosen.name}&study=true&format=csv", images).text)
    assert {row["operating_point"] for row in rows} == {chosen.name}


@pytest.mark.parametrize("kind", KINDS)
def test_model_info(head_bundle, server, kind: str) -> None:
    url, spec, _, heads = _setup(head_bundle, server, kind)
    info = httpx.get(f"{url}/v1/model", timeout=30).json()
    assert [h["name"] for h in info["heads"]] == [h.name for h in spec.heads]
    assert {h["name"] for h in info["heads"]} == set(heads)
    if "fracture" in heads:
        assert info["default_operating_point"] == spec.default_operating_point
        assert [op["name"] for op in info["operating_points"]] == [op.name for op in spec.operating_points]
    else:
        assert info["default_operating_point"] is None and info["operating_points"] == []
    if "class" in heads:
        c = info["class_operating_point"]
        assert c["min_probability"] == pytest.approx(spec.class_operating_point.min_probability)
        assert c["description"] == spec.class_operating_point.description
    else:
        assert info["class_operating_point"] is None
    health = httpx.get(f"{url}/healthz", timeout=30).json()
    assert health["status"] == "ok" and health["model"]["name"] == spec.name


@pytest.mark.parametrize("kind", KINDS)
def test_answers_conform_to_the_openapi_schema(head_bundle, server, kind: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    url, _, images, _ = _setup(head_bundle, server, kind)
    document = httpx.get(f"{url}/openapi.json", timeout=30).json()

    def check(instance: Any, component: str) -> None:
        schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
        jsonschema.Draft202012Validator(schema).validate(instance)

    check(_post(url, "?study=true&overlay=true", images, [("empty.png", b"")]).json(), "PredictResponse")
    check(httpx.get(f"{url}/v1/model", timeout=30).json(), "ModelInfo")
    check(_post(url, "?operating_point=x", images[:1]).json(), "ErrorResponse")


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "fracture"])  # that one: test_api_schema.py
def test_app_of_each_kind_conforms_to_its_schema(head_bundle, kind: str) -> None:
    """schemathesis over every operation: no 5xx, documented statuses, content types and schemas."""
    _, bundle = head_bundle(kind)
    fuzz_app(
        create_app(ApiSettings(model=str(bundle), max_files=3, max_upload_bytes=200_000)), max_examples=10
    )


# ---- the bad-input corpus, in process ---------------------------------------------------------------
QUERIES = ("", "?study=true", "?format=csv&study=true&all_classes=true", "?overlay=true")


def _library_answers(bundle: Path) -> dict[str, tuple[int, str]]:
    """Case id -> (HTTP status, error code or OK) as the library reads each corpus file for this model.

    The API must answer exactly that for every kind (tests/test_hardening_corpus.py holds the
    library itself to the corpus table)."""
    predictor = Predictor(bundle)
    answers = {}
    for case in CASES:
        try:
            predictor.read(case.data, name=case.filename)
        except FracsightError as e:
            answers[case.id] = (e.http_status, e.code)
        else:
            answers[case.id] = (200, OK)
    return answers


@pytest.mark.parametrize("kind", KINDS)
def test_corpus_never_gets_a_server_error(head_bundle, client, kind: str) -> None:
    bundle = head_bundle(kind)[1]
    spec = load_bundle_spec(bundle)
    heads = HEAD_KINDS[kind]
    answers = _library_answers(bundle)
    assert any(code == OK for _, code in answers.values()) and any(code != OK for _, code in answers.values())
    c = client(kind)
    for i, case in enumerate(CASES):  # each file alone, under every kind of answer
        query = QUERIES[i % len(QUERIES)]
        r = c.post(
            f"/v1/predict{query}", files=[("files", (case.filename, case.data, "application/octet-stream"))]
        )
        status, code = answers[case.id]
        assert r.status_code == status, (case.id, query, r.text[:300])
        if code != OK:
            assert r.json()["error"]["code"] == code, (case.id, r.text[:300])
        elif "format=csv" in query:
            rows = _rows(r.text)
            assert tuple(rows[0]) == result_columns(spec, all_classes=True)
            assert [row["kind"] for row in rows] == ["image", "study"]
        else:
            (image,) = r.json()["images"]
            _check_image(image, spec, heads)
    # all of it in requests of 16, as CSV: one row per file, the error code of each refused one
    for start in range(0, len(CASES), 16):
        chunk = CASES[start : start + 16]
        files = [("files", (k.filename, k.data, "application/octet-stream")) for k in chunk]
        r = c.post("/v1/predict?format=csv&study=true", files=files)
        if not any(answers[k.id][1] == OK for k in chunk):
            assert 400 <= r.status_code < 500 and "error" in r.json()
            continue
        assert r.status_code == 200, r.text[:300]
        rows = _rows(r.text)
        assert [row["kind"] for row in rows] == ["image"] * len(chunk) + ["study"]
        for case, row in zip(chunk, rows, strict=False):
            assert row["source"] == case.filename
            assert row["error_code"] == ("" if answers[case.id][1] == OK else answers[case.id][1]), (
                case.id,
                row,
            )
    # and a burst of garbage requests
    requests = garbage_requests(60, seed=KINDS.index(kind), max_files=16, max_upload_bytes=2 * MB)
    for i, req in enumerate(requests):
        r = c.request(req.method, req.path, content=req.body or None, headers=dict(req.headers))
        allowed = req.statuses
        if req.kind.startswith("corpus:"):
            allowed = (answers[req.kind.removeprefix("corpus:")][0],)
        elif req.kind.startswith("mutated:"):  # whatever the reader makes of it, short of a 5xx
            allowed = (200, *range(400, 500))
        assert r.status_code in allowed, (i, req.kind, r.status_code, r.text[:300])
        assert r.status_code < 500
        if r.status_code >= 400:
            assert set(r.json()) == {"error"}
    for query in ("?format=xml", "?format=csv&overlay=true", "?operating_point=balanced&format=csv"):
        ok = next(k for k in CASES if answers[k.id][1] == OK)
        r = c.post(
            f"/v1/predict{query}", files=[("files", (ok.filename, ok.data, "application/octet-stream"))]
        )
        expected = 200 if "balanced" in query and "fracture" in heads else 422
        assert r.status_code == expected, (query, r.text[:300])
    assert c.get("/healthz").json()["status"] == "ok"
