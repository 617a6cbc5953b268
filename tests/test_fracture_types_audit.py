"""Fracture-type models through every surface (audit of 2026-12-05): class names other than ASCII
drawn as empty boxes on overlays and DICOM captures, a class operating point refitted on data
without some of the model's classes in silence, and `--csv --all-classes` writing a file named
"--all-classes"."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fracsight.cli import app

runner = CliRunner()


def test_overlay_text_draws_accented_and_greek_letters() -> None:
    """A class named "Épiphysaire" read "▯piphysaire" on every overlay: Pillow's own font has
    ASCII alone. A letter the font has is drawn unlike one it lacks (a private-use character)."""
    from fracsight.explain import render_overlay

    def drawn(text: str) -> np.ndarray:
        return np.asarray(render_overlay(np.zeros((120, 200)), caption=[text]))

    missing = drawn("class \ue000piphysaire")
    assert not np.array_equal(drawn("class Épiphysaire"), missing)
    assert not np.array_equal(drawn("class σ"), drawn("class \ue000"))


@pytest.mark.slow
def test_refitting_on_data_without_one_of_the_models_classes_is_said(
    head_bundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`quantize --data` on a set without "leg" fitted the class operating point on two classes of
    three (it fell to 1/3: every class "most likely", however unsure) without a word."""
    data, bundle = head_bundle("class")
    fewer = tmp_path / "fewer"
    shutil.copytree(data, fewer, symlinks=True)
    for leg in fewer.glob("*/leg"):
        shutil.rmtree(leg)
    with caplog.at_level(logging.WARNING):
        result = runner.invoke(app, ["quantize", str(bundle), str(tmp_path / "q"), "--data", str(fewer)])
    assert result.exit_code == 0, result.output
    said = " ".join((caplog.text + result.output).split())
    assert "no validation image of the model's class(es) 'leg'" in said
    assert "train a two-class head" not in said  # the loader's warning no longer says it trains


def test_an_option_taken_as_an_output_file_name_is_refused(
    tiny_bundle: Path, fracatlas_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`predict X --csv --all-classes` wrote a CSV named "--all-classes" and left the option out."""
    monkeypatch.chdir(tmp_path)
    image = next((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))
    args = ["predict", str(image), "--model", str(tiny_bundle), "--csv"]
    result = runner.invoke(app, [*args, "--all-classes"])
    assert result.exit_code == 2, result.output
    assert "--all-classes is an option, not a file name (give its full path" in " ".join(
        result.output.split()
    )
    assert not (tmp_path / "--all-classes").exists()
    kept = runner.invoke(app, [*args, "./-rows.csv"])  # one dash: a name (pathlib drops the ./)
    assert kept.exit_code == 0, kept.output
    assert (tmp_path / "-rows.csv").is_file()


def test_an_option_taken_as_an_output_folder_is_refused_by_dicom_results_and_batch(
    fracatlas_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dicom results X --out --json` wrote into a folder named "--json" (exit 0), and
    `batch run X --out --retry-errors` into "--retry-errors"."""
    import signal

    monkeypatch.chdir(tmp_path)
    image = next((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    for args in (
        ["dicom", "results", str(image), "--out", "--json"],
        ["batch", "run", str(image), "--out", "--retry-errors"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert f"{args[-1]} is an option, not a folder name" in " ".join(result.output.split())
        assert not (tmp_path / args[-1]).exists()
    assert {sig: signal.getsignal(sig) for sig in before} == before  # the caller's handlers kept
