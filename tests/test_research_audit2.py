"""A researcher's runs of `detector`, `quantize` and `compare` on their own small data (audit of
2026-12-04): a split refused only after the work, a card that named more images than there were,
steps that said nothing in a log, and a comparison on the images the models were fitted on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracsight.bundle import load_bundle_spec
from fracsight.cli import app

runner = CliRunner()


def _said(result) -> str:
    return " ".join(result.output.split())


def test_detector_bundle_refuses_an_unknown_evaluate_split_before_the_work(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    """`detector bundle RUN OUT --evaluate bogus` exported the network, read the validation
    features and chose the heads' settings (minutes on FracAtlas) before saying the split was not
    there; now it is refused first, with nothing written."""
    torch = pytest.importorskip("torch")
    from conftest import _mini_fracatlas

    data = _mini_fracatlas(fracatlas_dir, tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    # a joint run's record as `detector joint` leaves it; its weights are never reached
    torch.save(
        {"model": {}, "arch": "efficientnet_lite0", "config": json.dumps({"seed": 0}), "detector": {}}
        | {"orientation": {}},
        run / "best.pt",
    )
    (run / "history.json").write_text(json.dumps({"chosen": 1}), encoding="utf-8")
    out = tmp_path / "bundle"
    result = runner.invoke(
        app, ["detector", "bundle", str(run), str(out), "--data", str(data), "--evaluate", "bogus"]
    )
    assert result.exit_code == 2, result.output
    assert "no 'bogus' split" in _said(result) and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.slow
def test_detector_card_names_its_normal_images_and_command_and_the_steps_are_logged(
    detector_bundle, tmp_path: Path
) -> None:
    """The card said the detector learnt from "400 without a fracture" (the --normals default) of a
    training split of 16 normal images; in a log the feature extraction, refit and evaluation were
    minutes without a line; and a bundle made without a typed command line had no command for its
    own step in its card."""
    data, base, new = detector_bundle
    heads = load_bundle_spec(new).training["heads"]
    assert heads["normals"] == 16 and heads["normals_asked"] == 400
    card = " ".join((new / "card.md").read_text(encoding="utf-8").split())
    assert "the fractured images with boxes and 16 without a fracture" in card
    # beside the fixture's bundle, so that its feature cache is read again (seconds)
    out = new.parent / "again"
    args = ["detector", "train", str(base), str(out), "--data", str(data), "--epochs", "1"]
    result = runner.invoke(app, [*args, "--evaluate", "test"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    for step in ("frozen features of the training and validation views", "measuring the new bundle on test"):
        assert step in said, said
    assert said.index("frozen features") < said.index("detector epoch 1")
    # run without a typed command line (a script; here CliRunner), the card's commands left this
    # step out and read as if the base's export had made the bundle
    step = "# then fracsight.detection.build.build_detector_bundle(...) from Python; settings: bundle.json "
    assert load_bundle_spec(out).training["commands"][-1] == step + "training.heads.config"
    assert step in (out / "card.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_compare_notes_a_split_the_models_were_fitted_on(detector_bundle) -> None:
    """`compare --split val` of two models trained on the data set compared them on the images their
    epochs, calibration and thresholds were chosen on without a word (`evaluate` notes it)."""
    data, base, new = detector_bundle
    seen = runner.invoke(app, ["compare", str(base), str(new), str(data), "--split", "val"])
    assert seen.exit_code == 0, seen.output
    # (beside them, the few-cases note of these 16 images: tests/test_compare*)
    notes = [line for line in seen.stdout.splitlines() if line.startswith("note: model ")]
    assert len(notes) == 2 and "model A" in notes[0] and "model B" in notes[1], seen.stdout
    assert "chosen on" in notes[0] and "--split test" in notes[0]
    as_json = runner.invoke(app, ["compare", str(base), str(new), str(data), "--split", "all", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert len([n for n in json.loads(as_json.stdout)["notes"] if n.startswith("model ")]) == 2
    held_out = runner.invoke(app, ["compare", str(base), str(new), str(data), "--split", "test"])
    assert held_out.exit_code == 0, held_out.output
    assert "note: model" not in held_out.stdout


@pytest.mark.slow
def test_quantize_says_its_steps_in_a_log(tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    """Off a terminal (a log, CI) quantize's spinner showed nothing: minutes without a line until the
    result. Each step is now a line on stderr there. And the command recorded when none was typed
    gives the options that were used."""
    pytest.importorskip("onnx")
    from test_quantize_int8 import OPEN_GATE

    args = ["quantize", str(tiny_bundle), str(tmp_path / "int8"), "--data", str(tiny_dataset)]
    result = runner.invoke(app, [*args, "--calibration-images", "4", *OPEN_GATE])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert "quantizing with 4 training images for calibration" in lines, result.stderr
    assert any(line.startswith("running both models on 12 validation images") for line in lines)
    # without a typed command line (python -m, a script) the card's command named MODEL, OUT and
    # --data alone: a re-run from it calibrates on 64 images and gates with the default bounds
    recorded = load_bundle_spec(tmp_path / "int8").training["commands"][-1]
    assert " --calibration-images 4 " in recorded and " --max-auroc-drop 1.0" in recorded, recorded


@pytest.mark.slow
def test_a_joint_bundle_made_without_a_typed_command_names_its_steps(detector_bundle, tmp_path: Path) -> None:
    """`python -m fracsight detector joint ... --out B` (or a script) left its card without the joint
    run and the bundle step: its commands ended with the base's export."""
    from test_detection import fewer_fracatlas

    data, base, grafted = detector_bundle
    few = fewer_fracatlas(data, tmp_path / "few", {"train": 4, "val": 2})
    run, out = tmp_path / "run", tmp_path / "bundle"
    args = ["detector", "joint", str(base), str(grafted), str(run), "--data", str(few), "--epochs", "1"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    commands = load_bundle_spec(out).training["commands"]
    step = "# then fracsight.detection.build.build_joint_bundle(...) from Python; settings: bundle.json "
    assert commands[-1] == step + "training.joint", commands
    assert step in (out / "card.md").read_text(encoding="utf-8")


def test_python_m_fracsight_is_recorded_as_the_command_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m fracsight export ...` recorded no command in its bundle's card (only a program
    named `fracsight` was taken as typed), so the card could not say how to make it again."""
    import fracsight.__main__ as main_module
    from fracsight.cli import invocation

    monkeypatch.setattr(sys, "argv", [main_module.__file__, "export", "runs/a b", "out"])
    assert invocation() == "fracsight export 'runs/a b' out"
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/fracsight", "quantize", "m", "o"])
    assert invocation() == "fracsight quantize m o"
    monkeypatch.setattr(sys, "argv", ["train.py", "--epochs", "3"])  # a script of the user's
    assert invocation() == ""
