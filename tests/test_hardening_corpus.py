"""The bad-input corpus (tests/corpus.py) through the library, the CLI and the REST API alike.

One table, three front ends: each case must give a correct result (with its
warning) or the same specific error code everywhere, and never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corpus import OK, TRUNCATED_WARNING, Case, build_corpus, find_truncated_jpegs, write_corpus
from fracsight.cli import app as cli_app
from fracsight.errors import ImageReadError
from fracsight.inference import FailedPrediction, Prediction, Predictor
from fracsight.io import read_image

CASES = build_corpus()
IDS = [c.id for c in CASES]
runner = CliRunner()
WIDE = {"COLUMNS": "400"}  # rich wraps table cells to the terminal width


@pytest.fixture(scope="module")
def predictor(tiny_bundle: Path) -> Predictor:
    return Predictor(tiny_bundle)


@pytest.fixture(scope="module")
def client(tiny_bundle: Path) -> Iterator[object]:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fracsight.api import ApiSettings, create_app

    with TestClient(create_app(ApiSettings(model=str(tiny_bundle)))) as c:
        yield c


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def real_truncated(fracatlas_dir: Path) -> list[Path]:
    found = find_truncated_jpegs(fracatlas_dir)
    assert len(found) == 49, "the shared FracAtlas subset has 49 truncated JPEGs"
    return found


def _check_prediction(case: Case, warnings: list[str] | tuple[str, ...], probability: float | None) -> None:
    assert probability is not None and 0.0 <= probability <= 1.0
    if case.warning:
        assert any(case.warning in w for w in warnings), warnings


# ---- library ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_library(case: Case, predictor: Predictor) -> None:
    if case.expect == OK:
        result = predictor.predict(case.data, name=case.filename)
        assert isinstance(result, Prediction)
        _check_prediction(case, result.warnings, result.fracture_probability)
        if case.shape:
            assert read_image(case.data).pixels.shape == case.shape
        return
    with pytest.raises(ImageReadError) as info:
        predictor.predict(case.data, name=case.filename)
    assert info.value.code == case.expect, str(info.value)
    assert str(info.value).startswith(f"{case.filename}: ")
    assert "object at 0x" not in str(info.value)  # no Python reprs in messages


# ---- CLI -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cli(case: Case, tiny_bundle: Path, corpus_dir: dict[str, Path]) -> None:
    path = corpus_dir[case.id]
    result = runner.invoke(cli_app, ["predict", str(path), "--model", str(tiny_bundle)], env=WIDE)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert path.name in result.stdout
    if case.expect == OK:
        assert result.exit_code == 0, result.output
        assert "fracture" in result.stdout or "not reliable" in result.stdout  # a decision was printed
        if case.warning:
            assert case.warning in result.stdout
    else:
        assert result.exit_code == 1, result.output
        assert f"{case.expect}: {case.filename}: " in result.stdout  # the row's "code: message"


def test_cli_json_over_the_whole_corpus(tiny_bundle: Path, corpus_dir: dict[str, Path]) -> None:
    paths = [corpus_dir[c.id] for c in CASES]
    result = runner.invoke(cli_app, ["predict", *map(str, paths), "--model", str(tiny_bundle), "--json"])
    assert result.exit_code == 1, result.output
    rows = json.loads(result.stdout)["images"]
    assert len(rows) == len(CASES)
    given = Counter(c.filename for c in CASES)  # two files of one name are named by their paths
    for case, path, row in zip(CASES, paths, rows, strict=True):
        assert row["source"] == (case.filename if given[case.filename] == 1 else str(path))
        if case.expect == OK:
            assert "error_code" not in row, (case.id, row)
            _check_prediction(case, row["warnings"], row["fracture_probability"])
        else:
            assert row["error_code"] == case.expect, (case.id, row)


def test_cli_process_never_prints_a_traceback(tiny_bundle: Path, corpus_dir: dict[str, Path]) -> None:
    """A real process over the corpus folder: exit 1, every file named, nothing but messages on stderr."""
    folder = next(iter(corpus_dir.values())).parents[1]
    env = {**os.environ, "COLUMNS": "400"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fracsight.cli import main; main()",
            "predict",
            str(folder),
            "--model",
            str(tiny_bundle),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    for case in CASES:
        assert case.filename in proc.stdout


# ---- REST API ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_api(case: Case, client) -> None:
    r = client.post("/v1/predict", files=[("files", (case.filename, case.data, "application/octet-stream"))])
    assert r.status_code == case.http_status, r.text
    body = r.json()
    assert "Traceback" not in r.text
    if case.expect == OK:
        (image,) = body["images"]
        _check_prediction(case, image["warnings"], image["fracture_probability"])
    else:
        assert body["error"]["code"] == case.expect, body
        assert body["error"]["message"].startswith(f"{case.filename}: ")


def test_api_mixed_request_reports_each_file(client) -> None:
    """All corpus files in requests of 16: 200 whenever one file was readable, each file its own entry."""
    for start in range(0, len(CASES), 16):
        chunk = CASES[start : start + 16]
        r = client.post(
            "/v1/predict", files=[("files", (c.filename, c.data, "application/octet-stream")) for c in chunk]
        )
        if not any(c.expect == OK for c in chunk):
            assert r.status_code >= 400 and "error" in r.json()
            continue
        assert r.status_code == 200, r.text
        for case, entry in zip(chunk, r.json()["images"], strict=True):
            if case.expect == OK:
                assert "error" not in entry, (case.id, entry)
            else:
                assert entry["error"]["code"] == case.expect, (case.id, entry)


# ---- the real truncated JPEGs in FracAtlas -----------------------------------------------------------
def test_all_real_truncated_jpegs_are_predicted_with_the_warning(
    predictor: Predictor, real_truncated: list[Path]
) -> None:
    results = list(predictor.predict_many(real_truncated, batch_size=16))
    assert not [r for r in results if isinstance(r, FailedPrediction)]
    for r in results:
        assert r.metadata.truncated and TRUNCATED_WARNING in " ".join(r.warnings)
        assert r.reliable is False or not r.metadata.incomplete  # rows missing: never reliable
    assert sum(r.metadata.incomplete for r in results) == 39  # the other 10 lack only their end marker


def test_real_truncated_jpeg_warning_reaches_cli_and_api(
    tiny_bundle: Path, client, real_truncated: list[Path]
) -> None:
    path = real_truncated[0]
    result = runner.invoke(cli_app, ["predict", str(path), "--model", str(tiny_bundle), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["images"]
    assert any(TRUNCATED_WARNING in w for w in row["warnings"])
    r = client.post("/v1/predict", files=[("files", (path.name, path.read_bytes(), "image/jpeg"))])
    assert r.status_code == 200, r.text
    assert any(TRUNCATED_WARNING in w for w in r.json()["images"][0]["warnings"])


def test_real_truncated_jpegs_are_refused_in_strict_mode(real_truncated: list[Path]) -> None:
    from fracsight.errors import TruncatedImageError

    with pytest.raises(TruncatedImageError):
        read_image(real_truncated[0], strict=True)


# ---- decompression bombs do not allocate ---------------------------------------------------------
_RSS_PROBE = """
import resource, sys
sys.path.insert(0, sys.argv[1])
from corpus import build_corpus
from fracsight.errors import DecompressionBombError
from fracsight.io import read_image
cases = {c.id: c for c in build_corpus()}
read_image(cases["good-png"].data)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for cid in ("bomb-png", "bomb-jpeg", "bomb-dicom"):
    try:
        read_image(cases[cid].data, name=cid)
    except DecompressionBombError:
        pass
    else:
        raise SystemExit(cid + " was not refused")
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_decompression_bombs_keep_peak_rss_small() -> None:
    tests_dir = str(Path(__file__).resolve().parent)
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, tests_dir], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    before_kb, after_kb = map(int, proc.stdout.split())
    assert after_kb - before_kb < 20 * 1024, f"peak RSS grew by {(after_kb - before_kb) / 1024:.1f} MB"


# ---- paths that are not regular files -----------------------------------------------------------------
def test_devices_and_pipes_are_refused_not_read(tiny_bundle: Path, tmp_path: Path) -> None:
    """/dev/zero would be read until memory runs out, a FIFO would block forever."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    paths = [fifo] + [Path("/dev/zero")] * Path("/dev/zero").exists()
    for path in paths:
        with pytest.raises(ImageReadError) as info:
            read_image(path)
        assert info.value.code == "unreadable_image" and "not a regular file" in str(info.value)
    result = runner.invoke(cli_app, ["predict", *map(str, paths), "--model", str(tiny_bundle), "--json"])
    assert result.exit_code == 1, result.output
    assert {row["error_code"] for row in json.loads(result.stdout)["images"]} == {"unreadable_image"}
