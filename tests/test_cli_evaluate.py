"""`fracsight evaluate`: human summary with confidence intervals, --json, report files, clear errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from fracsight.cli import app


def test_evaluate_prints_metrics_with_ci_and_writes_the_report(tiny_bundle, tiny_dataset, tmp_path):
    out = tmp_path / "eval"
    args = ["evaluate", str(tiny_bundle), str(tiny_dataset), "--split", "val", "--bootstrap", "100"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--threshold", "0.5"])
    assert result.exit_code == 0, result.output
    assert "12/12 images, 6 fractured" in result.output
    assert "AUROC" in result.output and "95% CI" in result.output
    assert "custom (threshold 0.500)" in result.output
    report = (out / "report.html").read_text()
    assert "decision aid" in report and "data:image/png;base64" in report
    assert json.loads((out / "metrics.json").read_text())["data"]["n_evaluated"] == 12


def test_evaluate_json_is_machine_readable(tiny_bundle, tiny_dataset):
    args = ["evaluate", str(tiny_bundle), str(tiny_dataset), "--split", "val", "--bootstrap", "100", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert 0.0 <= metrics["auroc"]["value"] <= 1.0
    assert metrics["auroc"]["ci_low"] <= metrics["auroc"]["value"] <= metrics["auroc"]["ci_high"]
    assert set(metrics["thresholds"]) == {"balanced", "triage"}


def test_evaluate_refuses_a_missing_split(tiny_bundle, tiny_dataset):
    result = CliRunner().invoke(app, ["evaluate", str(tiny_bundle), str(tiny_dataset), "--split", "test"])
    assert result.exit_code == 1
    assert "dataset_error" in result.output and "no 'test' split" in result.output
    assert "Traceback" not in result.output
