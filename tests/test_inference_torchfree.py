"""The inference path never imports torch (checked in fresh interpreters, where nothing else loaded it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "timm")

_REPORT = f"""
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print("HEAVY:" + (",".join(heavy) or "none"))
"""

_PREDICT = (
    """
import sys
from fracsight.inference import Predictor
result = Predictor(sys.argv[1]).predict(sys.argv[2])
assert 0.0 <= result.fracture_probability <= 1.0 and result.heatmap is not None
"""
    + _REPORT
)

_CLI = (
    """
import sys
from fracsight.cli import app
bundle, image, out = sys.argv[1:4]
args = ["predict", "--model", bundle, image, image, "--json", "--csv", out + "/r.csv", "--overlay-dir", out]
try:
    app(args)
except SystemExit as e:
    assert e.code in (0, None), f"exit code {e.code}"
"""
    + _REPORT
)

_IMPORT_ONLY = (
    """
import sys
import fracsight.benchmark, fracsight.cli, fracsight.inference, fracsight.explain, fracsight.io
"""
    + _REPORT
)


def _heavy_modules(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    marker = [line for line in proc.stdout.splitlines() if line.startswith("HEAVY:")]
    assert marker, proc.stdout[-2000:]
    return marker[-1].removeprefix("HEAVY:")


def _an_image(fracatlas_dir: Path) -> Path:
    return sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]


def test_the_report_sees_torch_when_it_is_imported() -> None:
    """Control: the check itself notices torch, so the tests below can fail."""
    pytest.importorskip("torch")
    assert "torch" in _heavy_modules("import sys\nimport torch\n" + _REPORT).split(",")


def test_importing_the_light_modules_loads_no_torch() -> None:
    assert _heavy_modules(_IMPORT_ONLY) == "none"


def test_predictor_predicts_without_torch(tiny_bundle: Path, fracatlas_dir: Path) -> None:
    assert _heavy_modules(_PREDICT, str(tiny_bundle), str(_an_image(fracatlas_dir))) == "none"


def test_cli_predict_runs_without_torch(tiny_bundle: Path, fracatlas_dir: Path, tmp_path: Path) -> None:
    got = _heavy_modules(_CLI, str(tiny_bundle), str(_an_image(fracatlas_dir)), str(tmp_path))
    assert got == "none"
    assert (tmp_path / "r.csv").is_file() and list(tmp_path.glob("*.overlay*.png"))


_MODELS = (
    """
import sys
from fracsight.cli import app
try:
    app(["models"])
except SystemExit as e:
    assert e.code in (0, None), f"exit code {e.code}"
"""
    + _REPORT
)


def test_listing_the_models_loads_no_torch() -> None:
    """`fracsight models` imported torch to list seven names: 4.6 s on this machine (0.9 s now),
    and killed outright by torch's MKL loader when run from a deleted working folder."""
    out = _heavy_modules(_MODELS)
    assert out == "none"
