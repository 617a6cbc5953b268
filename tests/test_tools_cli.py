"""The research tool commands as a researcher meets them: what `quantize` and `detector` say
about what they did, where they leave their cache, and options that would do nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracsight.cli import app

runner = CliRunner()


def _ctrl_c_once(
    args: list[str], ready: Callable[[], bool], stop: signal.Signals = signal.SIGINT
) -> tuple[int, str]:
    """Run `fracsight ARGS`, press Ctrl-C (or send ``stop``) once ``ready()`` (or after 120 s), and
    return its exit code and stderr."""
    run = subprocess.Popen(
        [sys.executable, "-m", "fracsight", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C reaches the whole foreground group, as in a terminal
    )
    deadline = time.monotonic() + 120
    while not ready() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(run.pid, stop)
    # seconds here; a clean-clone run at load 7 (helpers training beside it) once took over 60
    _, err = run.communicate(timeout=240)
    return run.returncode, err


def test_joint_evaluate_without_out_is_refused_before_any_work(tmp_path: Path) -> None:
    """`detector joint --evaluate test` without --out measured nothing, silently, after the whole run."""
    run = tmp_path / "run"
    args = ["detector", "joint", "base", "heads", str(run), "--data", str(tmp_path), "--evaluate", "test"]
    result = runner.invoke(app, args)
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "--evaluate" in message and "needs --out" in message, result.output
    assert not run.exists()


def test_detector_train_zoom_without_zoom_views_is_refused(tmp_path: Path) -> None:
    """`detector train ... --zoom 0.5 2` without --zoom-views made no zoomed view, without a word."""
    out = tmp_path / "new"
    for zoom in (["0.5", "2"], ["0.6", "1.6"]):  # the default range given also zoomed nothing
        args = ["detector", "train", "base", str(out), "--data", str(tmp_path), "--zoom", *zoom]
        result = runner.invoke(app, args)
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2 and "--zoom" in message and "needs --zoom-views 1 or more" in message
    assert not out.exists()


@pytest.mark.slow
def test_detector_train_puts_its_cache_where_asked_and_says_so(detector_bundle, tmp_path: Path) -> None:
    """The frozen features (gigabytes for FracAtlas) went to `.cache` beside OUT without a word; now
    --cache-dir chooses the folder and the run names it, with its size, on stderr."""
    from fracsight.bundle import load_bundle_spec

    data, base, _ = detector_bundle
    out, cache = tmp_path / "bundles" / "new", tmp_path / "features"
    out.parent.mkdir()
    args = ["detector", "train", str(base), str(out), "--data", str(data), "--epochs", "1"]
    result = runner.invoke(app, [*args, "--cache-dir", str(cache), "--evaluate", "test"])
    assert result.exit_code == 0, result.output
    # the measure said how many images it rests on and how sure it is (it was "test: AUROC 1.000")
    test = load_bundle_spec(out).metrics["test"]
    assert f"test ({test['n']} images): AUROC {test['auroc']['value']:.3f} (95% CI " in result.stdout
    assert list(cache.glob("heads-*-train")) and not (out.parent / ".cache").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["new"]
    message = " ".join(result.stderr.split())
    assert f"cache: {cache} (" in message and "MB)" in message and "delete it" in message
    assert "cache:" not in result.stdout


@pytest.mark.slow
def test_quantize_says_how_many_images_it_calibrated_and_gated_on(
    tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """--calibration-images 500 on a set of two dozen training images calibrated on those without a
    word, and the gate line did not say it was measured on 12 validation images."""
    pytest.importorskip("onnx")
    from fracsight.bundle import load_bundle_spec
    from test_quantize_int8 import OPEN_GATE

    out = tmp_path / "int8"
    args = ["quantize", str(tiny_bundle), str(out), "--data", str(tiny_dataset)]
    result = runner.invoke(app, [*args, "--calibration-images", "500", *OPEN_GATE])
    assert result.exit_code == 0, result.output
    assert "gate (validation, 12 images): auroc_drop" in result.stdout
    message = " ".join(result.stderr.split())
    used = load_bundle_spec(out).metrics["quantization"]["calibration_images"]
    assert 8 < used < 500  # the training images the split gives (24 files, duplicates set aside)
    assert (
        f"warning: calibrated on {used} training images, all there are (--calibration-images 500)" in message
    )
    args = ["quantize", str(tiny_bundle), str(tmp_path / "again"), "--data", str(tiny_dataset)]
    fewer = runner.invoke(app, [*args, "--calibration-images", "8", *OPEN_GATE])
    assert fewer.exit_code == 0, fewer.output
    assert "calibrated on" not in fewer.stderr


@pytest.mark.slow
def test_ctrl_c_in_detector_train_says_what_it_kept(detector_bundle, tmp_path: Path) -> None:
    """Ctrl-C said only "the command stopped before it finished", leaving the letterboxed images
    (600 MB for FracAtlas) in a folder it never named."""
    data, base, _ = detector_bundle
    out, cache = tmp_path / "new", tmp_path / "features"
    args = ["detector", "train", str(base), str(out), "--data", str(data), "--cache-dir", str(cache)]
    code, err = _ctrl_c_once([*args, "--epochs", "500"], lambda: bool(list(cache.glob("heads-*-val"))))
    message = " ".join(err.split())
    assert code == 130, err
    assert f"interrupted: nothing written to {out}; {cache} (" in message and "for the next run" in message
    assert "Traceback" not in err and not out.exists()


@pytest.mark.slow
def test_ctrl_c_in_a_joint_run_leaves_a_run_that_can_be_bundled(detector_bundle, tmp_path: Path) -> None:
    """Ctrl-C in `detector joint` said "the command stopped before it finished", and the run folder
    it left could be neither bundled (no epoch chosen) nor continued. The run now keeps its choice
    among the epochs done, says so, and `detector bundle` makes a bundle of it. SIGTERM (`timeout`,
    Slurm, `docker stop`: how an hour-long joint run is ended) still said only that."""
    data, base, heads = detector_bundle
    run = tmp_path / "run"
    args = ["detector", "joint", str(base), str(heads), str(run), "--data", str(data), "--epochs", "200"]
    code, err = _ctrl_c_once(args, (run / "history.json").is_file, signal.SIGTERM)
    message = " ".join(err.split())
    assert code == 143, err
    assert f"stopped (SIGTERM): {run} holds epochs 0 to " in message and "best.pt is epoch" in message
    assert "start again in another folder" in message and "Traceback" not in err
    assert f"`fracsight detector bundle {run} OUT --data {data}` makes its bundle" in message  # as it runs
    made = runner.invoke(app, ["detector", "bundle", str(run), str(tmp_path / "bundle"), "--data", str(data)])
    assert made.exit_code == 0, made.output
    assert "200 epochs planned, unfinished after epoch" in (tmp_path / "bundle" / "card.md").read_text()


def test_a_cache_inside_the_new_or_the_base_bundle_is_refused(tmp_path: Path) -> None:
    """--cache-dir inside OUT or inside the base bundle (a packaged one: in the installed package)
    would put hundreds of megabytes into a bundle folder; refused before any work."""
    from fracsight.inference.store import resolve_bundle

    base = resolve_bundle("fracatlas-lite0-384-v2")
    before = sorted(p.name for p in base.iterdir())
    out = tmp_path / "new"
    for cache, where in ((out / "cache", f"inside OUT {out}"), (base / "cache", "inside the base bundle")):
        args = ["detector", "train", "fracatlas-lite0-384-v2", str(out), "--data", str(tmp_path)]
        result = runner.invoke(app, [*args, "--cache-dir", str(cache)])
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2 and "--cache-dir" in message and where in message, result.output
        assert not out.exists() and not cache.exists()
    assert sorted(p.name for p in base.iterdir()) == before
    # nor another bundle, or a run: filled with features, then advised "delete it to free the space"
    other = resolve_bundle("fracatlas-lite0-384-v5")
    args = ["detector", "train", "fracatlas-lite0-384-v2", str(out), "--data", str(tmp_path)]
    result = runner.invoke(app, [*args, "--cache-dir", str(other)])
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and f"{other} is a model bundle: give a folder of its own" in message
    # nor under a file (`Not a directory`, exit 1, once the base and the data were read)
    (tmp_path / "a-file").write_text("mine")
    result = runner.invoke(app, [*args, "--cache-dir", str(tmp_path / "a-file" / "c")])
    message = " ".join(result.stderr.split())
    assert (
        result.exit_code == 2 and f"cannot be made: {tmp_path / 'a-file'} is a file, not a folder" in message
    )


def test_a_run_a_bundle_and_data_given_in_each_others_place_are_named(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """`quantize RUN OUT` said "bundle.json is missing", `export BUNDLE OUT` "train first", and a
    run given as --data "class folders need at least two classes, found ['evaluation-test']"."""
    from fracsight.bundle import load_bundle_spec
    from fracsight.data import load_dataset
    from fracsight.errors import BundleError, DatasetError

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"not read")
    (run / "config.yaml").write_text("name: x\n")
    (run / "evaluation-test").mkdir()
    with pytest.raises(BundleError, match="is a training run, not a model bundle: `fracsight export"):
        load_bundle_spec(run)
    for folder, what in ((run, "a training run"), (tiny_bundle, "a model bundle")):
        with pytest.raises(DatasetError, match=f"is {what}, not a data set"):
            load_dataset(folder)
    result = runner.invoke(app, ["export", str(tiny_bundle), str(tmp_path / "out")])
    assert result.exit_code != 0 and "is a model bundle, not a training run" in " ".join(
        result.stderr.split()
    )
    # a data set may keep a detector's best.pt at its top (Ultralytics does): still read as data
    (run / "config.yaml").unlink()
    with pytest.raises(DatasetError, match="not a data set layout fracsight knows"):
        load_dataset(run)
