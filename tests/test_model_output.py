"""A bundle whose network gives NaN (an export or quantization gone wrong, the checksum still
matching): NaN compared with the threshold is False, which read as "no fracture detected", marked
reliable, in every front end. It is refused with its own error instead."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from conftest import free_port
from fracsight.api import ApiSettings, create_app
from fracsight.cli import app
from fracsight.errors import ModelOutputError
from fracsight.inference import Predictor

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def nan_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with its fracture logit multiplied by NaN, its checksum made to match."""
    bundle = tmp_path_factory.mktemp("nan") / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    model = onnx.load(str(bundle / "model.onnx"))
    graph = model.graph
    (producer,) = [n for n in graph.node if "fracture" in n.output]
    producer.output[list(producer.output).index("fracture")] = "fracture_before_nan"
    graph.initializer.append(onnx.numpy_helper.from_array(np.array(np.nan, np.float32), "nan"))
    graph.node.append(onnx.helper.make_node("Mul", ["fracture_before_nan", "nan"], ["fracture"]))
    onnx.save(model, str(bundle / "model.onnx"))
    spec = json.loads((bundle / "bundle.json").read_text())
    spec["onnx_sha256"] = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    (bundle / "bundle.json").write_text(json.dumps(spec))
    return bundle


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("image") / "hand.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 80), np.uint8)).save(path)
    return path


def test_the_library_refuses_rather_than_says_no_fracture(nan_bundle: Path, image: Path) -> None:
    with pytest.raises(ModelOutputError, match=r"'fracture' output is not a number .* for 1 of 1 images"):
        Predictor(nan_bundle).predict(image)


def test_predict_says_why_and_exits_2(nan_bundle: Path, image: Path) -> None:
    result = CliRunner().invoke(app, ["predict", str(image), "--model", str(nan_bundle), "--json"])
    assert result.exit_code == 2, result.output
    assert "error (model_output_not_finite)" in result.stderr and "no fracture" not in result.output


def test_the_api_answers_500_with_the_code(nan_bundle: Path, image: Path) -> None:
    with TestClient(create_app(ApiSettings(model=str(nan_bundle)))) as client:
        r = client.post("/v1/predict", files={"files": (image.name, image.read_bytes(), "image/png")})
        assert r.status_code == 500 and r.json()["error"]["code"] == "model_output_not_finite"
        assert client.get("/healthz").status_code == 200  # the server keeps serving


def test_the_dicom_node_does_not_start(nan_bundle: Path, tmp_path: Path) -> None:
    """It started "ready" and failed every image it was sent as `results_error`."""
    import subprocess
    import sys

    for processes in ("0", "1"):
        node = [
            "--model",
            str(nan_bundle),
            "--port",
            str(free_port()),
            "--allow",
            "ANY",
            "--processes",
            processes,
        ]
        pacs = ["--to", "127.0.0.1:9:PACS", "--spool", str(tmp_path / f"spool{processes}")]
        done = subprocess.run(
            [sys.executable, "-m", "fracsight", "dicom", "listen", *node, *pacs],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 1, done.stderr
        assert "error (model_output_not_finite)" in done.stderr and "ready" not in done.stderr
