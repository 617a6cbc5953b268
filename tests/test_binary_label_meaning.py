"""Commands that fit a bundle's fracture head to data (quantize, detector train, detector joint)
refuse data whose binary label means something else than the head's (normal/abnormal against
not fractured/fractured), as export does: exit 2, nothing written."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracsight.bundle import load_bundle_spec, write_bundle_spec
from fracsight.cli import app

MURA = ("normal", "abnormal")
FRACTURE = ("not fractured", "fractured")


def _relabelled(bundle: Path, out: Path) -> Path:
    """``bundle`` as a normal/abnormal (MURA-like) model: its fracture head's classes renamed."""
    shutil.copytree(bundle, out)
    spec = load_bundle_spec(out)
    heads = tuple(dataclasses.replace(h, classes=MURA) if h.name == "fracture" else h for h in spec.heads)
    write_bundle_spec(dataclasses.replace(spec, heads=heads), out)
    return out


def _normal_abnormal(data: Path, out: Path) -> Path:
    """``data`` (class folders fractured / not fractured) with MURA's names for its binary label."""
    for theirs, ours in (("fractured", "abnormal"), ("not fractured", "normal")):
        for image in data.glob(f"*/{theirs}/*"):
            folder = out / image.parent.parent.name / ours
            folder.mkdir(parents=True, exist_ok=True)
            (folder / image.name).symlink_to(image.resolve())
    return out


def _refused(result, named: tuple[str, ...], trained: tuple[str, ...]) -> None:
    assert result.exit_code == 2, result.output  # data that do not fit the model: a bad argument
    said = " ".join(result.stderr.split())
    assert said.startswith("error (dataset_error): ") and "Traceback" not in result.output
    assert f"binary label is {'/'.join(named)}, but the model's fracture head was trained on " in said
    assert "/".join(trained) in said


def test_quantize_refuses_data_whose_binary_label_means_something_else(
    tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnx")
    mura_data = _normal_abnormal(tiny_dataset, tmp_path / "mura-data")
    mura_bundle = _relabelled(tiny_bundle, tmp_path / "mura-bundle")
    runner = CliRunner()
    for bundle, data, named, trained in (
        (tiny_bundle, mura_data, MURA, FRACTURE),
        (mura_bundle, tiny_dataset, FRACTURE, MURA),
    ):
        out = tmp_path / f"{bundle.name}-int8"
        result = runner.invoke(app, ["quantize", str(bundle), str(out), "--data", str(data)])
        _refused(result, named, trained)
        assert "quantize with data labelled as the bundle's (--data)" in " ".join(result.stderr.split())
        assert not out.exists()


def test_detector_train_refuses_data_whose_binary_label_means_something_else(
    detector_bundle, tmp_path: Path
) -> None:
    data, base, _ = detector_bundle
    out = tmp_path / "new"
    args = [
        "detector",
        "train",
        str(_relabelled(base, tmp_path / "mura-base")),
        str(out),
        "--data",
        str(data),
    ]
    _refused(CliRunner().invoke(app, args), FRACTURE, MURA)
    assert not out.exists()


def test_detector_joint_refuses_data_whose_binary_label_means_something_else(
    detector_bundle, tmp_path: Path
) -> None:
    data, base, grafted = detector_bundle
    run, out = tmp_path / "run", tmp_path / "bundle"
    mura_base = _relabelled(base, tmp_path / "mura-base")
    args = [
        "detector",
        "joint",
        str(mura_base),
        str(grafted),
        str(run),
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    _refused(CliRunner().invoke(app, [*args, "--epochs", "1", "--device", "cpu"]), FRACTURE, MURA)
    assert not run.exists() and not out.exists()
