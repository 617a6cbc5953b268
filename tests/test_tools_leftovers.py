"""Small things the research tools got wrong, as a researcher meets them: where `export` writes,
what `detector train` leaves on stdout and in its log, how `train --set` reads yes/no, and the
words `benchmark`, `quantize` and `audit` print."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracsight.cli import app

runner = CliRunner()


def _linked_copy(src: Path, dst: Path) -> Path:
    """``src``'s folders, with links to its files: a data set a test may write into."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    return dst


@pytest.mark.slow
def test_export_into_its_class_folder_data_is_refused_before_any_work(
    tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """`export RUN DATA/b --data-dir DATA` wrote the bundle inside the class folders, so every later
    read of the data warned of an ignored folder (`quantize` and `detector` refused it)."""
    data = _linked_copy(tiny_dataset, tmp_path / "data")
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    run = tiny_bundle.parent / "run"  # the conftest's training run of tiny_bundle
    for out in (data / "b", data / "train" / "b"):
        result = runner.invoke(app, ["export", str(run), str(out), "--data-dir", str(data)])
        message = " ".join(result.stderr.split())
        assert result.exit_code != 0, result.output
        assert f"OUT {out} is inside the class-folder data set" in message, result.output
        assert "choose a folder outside the data set" in message
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # nothing written, no partial


@pytest.mark.slow
def test_detector_train_stdout_holds_only_its_report_and_its_log_reads_right(
    detector_bundle, tmp_path: Path
) -> None:
    """`detector train ... > out.txt`: the feature progress bar left blank lines on stdout, torch
    warned of a NumPy array that is not writable, and the log read `seconds 3.4000`,
    `n_views 64.000`, `box score floor 0.05: 0.05: AP50 ...`."""
    data, base, _ = detector_bundle
    out, cache = tmp_path / "new", tmp_path / "features"  # a fresh cache: the features are made here
    args = ["detector", "train", str(base), str(out), "--data", str(data), "--cache-dir", str(cache)]
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    done = subprocess.run(
        [sys.executable, "-m", "fracsight", *args, "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert list(cache.glob("heads-*-val"))  # the features were extracted in this run, bar and all
    lines = done.stdout.splitlines()
    assert lines and all(line.strip() for line in lines), repr(done.stdout)
    assert lines[0] == f"bundle {load_name(out)} written to {out}"
    err = done.stderr
    assert "not writable" not in err and "UserWarning" not in err, err
    epochs = [line for line in err.splitlines() if line.startswith("detector epoch ")]
    assert len(epochs) == 2, err
    for line in epochs:
        assert re.search(r" seconds \d+\.\d$", line), line
        assert re.search(r" train_loss \d+\.\d{4} ", line), line
    orientation = next(line for line in err.splitlines() if line.startswith("orientation: "))
    assert re.search(r"n_views \d+$", orientation), orientation
    assert re.search(r"accuracy \d\.\d{3}", orientation), orientation
    floor = next(line for line in err.splitlines() if line.startswith("box score floor "))
    assert re.fullmatch(r"box score floor [\d.]+ \(validation AP50 by floor: [\d. ,]+\)", floor), floor


def load_name(bundle: Path) -> str:
    from fracsight.bundle import load_bundle_spec

    spec = load_bundle_spec(bundle)
    return f"{spec.name} v{spec.version}"


@pytest.mark.parametrize(
    ("given", "read"),
    [
        *((word, "none") for word in ("false", "False", "no", "off", "0", "none")),
        *((word, "imagenet") for word in ("true", "yes", "ON", "1", "imagenet")),
        ("weights/lite0.pth", "weights/lite0.pth"),
    ],
)
def test_pretrained_reads_yes_and_no_as_the_words_they_mean(given: str, read: str) -> None:
    """`train --set pretrained=false` was read as a weights file named "false"."""
    from fracsight.training import load_config

    assert load_config(None, [f"pretrained={given}"]).pretrained == read


@pytest.mark.parametrize(("yaml_value", "read"), [("false", "none"), ("no", "none"), ("true", "imagenet")])
def test_pretrained_yes_or_no_in_a_config_file(tmp_path: Path, yaml_value: str, read: str) -> None:
    """`pretrained: false` in YAML (a boolean there) was refused as "expected text"."""
    from fracsight.training import load_config

    path = tmp_path / "c.yaml"
    path.write_text(f"pretrained: {yaml_value}\n", encoding="utf-8")
    assert load_config(path).pretrained == read


@pytest.mark.slow
def test_benchmark_of_one_run_says_run(tiny_bundle: Path, tmp_path: Path) -> None:
    """`benchmark --runs 1` printed "1 timed single-image runs" (and "1 given images")."""
    from fracsight.benchmark import synthetic_images

    images = tmp_path / "images"
    images.mkdir()
    synthetic_images(images, 1)
    args = ["benchmark", "--model", str(tiny_bundle), "--images", str(images), "--no-compare"]
    result = runner.invoke(app, [*args, "--runs", "1", "--batch", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    caption = " ".join(result.stdout.split())
    assert "1 given image; 1 timed single-image run per row, " in caption, caption


@pytest.mark.slow
def test_int8_card_without_evaluate_has_no_empty_table(
    tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """Quantized without --evaluate on other data than the float bundle's (whose recorded figures
    are then left out), the card showed a "split | metric | float | INT8" table with no rows; now
    it says no split was measured and the command that measures one."""
    pytest.importorskip("onnx")
    from test_quantize_int8 import OPEN_GATE

    data = _linked_copy(tiny_dataset, tmp_path / "copy")  # the same images in another folder
    out = tmp_path / "int8"
    args = ["quantize", str(tiny_bundle), str(out), "--data", str(data), *OPEN_GATE]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    card = (out / "card.md").read_text(encoding="utf-8")
    section = card[card.index("## INT8 quantization") :]
    assert "| split | metric | float | INT8 |" not in section
    said = " ".join(section.split())
    assert "No split was measured in both models: quantize ran without `--evaluate`;" in said
    assert f"`fracsight quantize {tiny_bundle} {out} --data {data}" in said
    assert "--force --evaluate test` measures both" in said


def test_audit_lists_unreadable_files_with_the_error_codes(tmp_path: Path) -> None:
    """`audit` listed `UnsupportedFormatError: ...`, where every other command says
    `unsupported_format: ...`."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, label in enumerate(("fractured", "normal", "fractured", "normal")):
        (tmp_path / "data" / label).mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (96, 96), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "data" / label / f"x{k}.png")
    (tmp_path / "data" / "normal" / "notes.png").write_text("not an image", encoding="utf-8")
    (tmp_path / "data" / "fractured" / "empty.png").write_bytes(b"")
    result = runner.invoke(app, ["audit", str(tmp_path / "data"), "--json"])
    assert result.exit_code == 0, result.output
    found = {u["path"]: u["error"] for u in json.loads(result.stdout)["unreadable"]}
    assert found["normal/notes.png"].startswith("unsupported_format: "), found
    assert found["fractured/empty.png"].startswith("empty_file: "), found
    assert not any("Error" in e.split(":")[0] for e in found.values()), found
    table = runner.invoke(app, ["audit", str(tmp_path / "data")], env={"COLUMNS": "200"})
    assert "normal/notes.png (unsupported_format: " in " ".join(table.stdout.split()), table.stdout


@pytest.mark.slow
def test_a_bundle_to_a_zip_path_is_refused_with_how_to_zip_it(
    tiny_bundle: Path, tiny_dataset: Path, detector_bundle, tmp_path: Path
) -> None:
    """`export RUN OUT.zip` and `quantize MODEL OUT.zip` made a folder named OUT.zip, though a
    bundle travels as a folder or a .zip; refused before any work, saying how to zip the folder,
    and what the hint says to do makes a .zip that loads."""
    from fracsight.bundle import load_bundle_spec
    from fracsight.inference.store import resolve_bundle

    run = tiny_bundle.parent / "run"
    for args in (
        ["export", str(run), str(tmp_path / "OUT.zip")],
        ["quantize", str(tiny_bundle), str(tmp_path / "OUT.zip"), "--data", str(tiny_dataset)],
        [
            "detector",
            "train",
            str(detector_bundle[1]),
            str(tmp_path / "OUT.ZIP"),
            "--data",
            str(detector_bundle[0]),
        ],
    ):
        result = runner.invoke(app, args)
        message = " ".join(result.stderr.split())
        assert result.exit_code != 0, result.output
        assert "a bundle is written as a folder" in message, result.output
        assert (
            f"write it to {tmp_path / 'OUT'} and zip the folder afterwards: python -m zipfile -c" in message
        )
        assert list(tmp_path.iterdir()) == [], args  # nothing written, not even the cache
    archive = tmp_path / "tiny.zip"
    zipped = subprocess.run(
        [sys.executable, "-m", "zipfile", "-c", str(archive), f"{tiny_bundle}/"], capture_output=True
    )
    assert zipped.returncode == 0, zipped.stderr
    assert load_bundle_spec(resolve_bundle(archive)) == load_bundle_spec(tiny_bundle)
