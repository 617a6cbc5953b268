"""A researcher's own splits that share images: `train` warns before it trains, the bundle and its card
record it, and `evaluate` warns before it measures; exit codes as without leakage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TINY_TRAINING
from fracsight.cli import app
from test_data_leakage import leaky_class_folders


@pytest.mark.slow
@pytest.mark.fracatlas
def test_leaking_splits_are_warned_about_recorded_and_measured_as_such(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    data = leaky_class_folders(fracatlas_dir, tmp_path / "leaky")
    settings = [arg for setting in TINY_TRAINING for arg in ("--set", setting)]
    trained = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), *settings])
    assert trained.exit_code == 0, trained.output
    warning = (
        f"warning: leakage between the splits of {data}: 1 val image is byte-identical to (or the same file "
        "as) train images; 2 test images are byte-identical to (or the same file as) train images: figures "
        f"measured on them are inflated; `fracsight audit {data}` lists them"
    )
    assert warning in trained.stderr.splitlines()
    assert trained.stderr.index(warning) < trained.stderr.index("prepared")  # before training starts

    bundle = tmp_path / "bundle"
    assert CliRunner().invoke(app, ["export", str(tmp_path / "run"), str(bundle)]).exit_code == 0
    spec = json.loads((bundle / "bundle.json").read_text())
    assert spec["training"]["leakage"] == [
        {"split": "val", "kind": "duplicates", "count": 1, "earlier": ["train"]},
        {"split": "test", "kind": "duplicates", "count": 2, "earlier": ["train"]},
    ]
    card = (bundle / "card.md").read_text()
    assert "- **Leakage between the data set's splits**: 1 val image is byte-identical" in card
    assert "may be inflated" in card

    out = tmp_path / "eval"
    args = ["evaluate", str(bundle), str(data), "--split", "test", "--bootstrap", "100", "--out", str(out)]
    evaluated = CliRunner().invoke(app, args)
    assert evaluated.exit_code == 0, evaluated.output
    assert (
        f"warning: leakage between the splits of {data}: 2 test images are byte-identical to (or the same "
        "file as) train images: figures measured on them are inflated" in evaluated.stderr
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["leakage"] == [
        {"split": "test", "kind": "duplicates", "count": 2, "earlier": ["train"]}
    ]
    assert any(note.startswith("2 test images are byte-identical") for note in metrics["notes"])
    assert "figures measured on them are inflated" in (out / "report.html").read_text()
