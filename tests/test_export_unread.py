"""`export --evaluate SPLIT` (and `quantize --evaluate`, `detector ... --evaluate`) puts the split's
figures in the card; images of the split that cannot be read are left out of them, and the card and
a warning on stderr say which, as `evaluate` does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracsight.bundle import load_bundle_spec
from fracsight.cli import app


def test_the_card_names_the_test_images_that_could_not_be_read(head_bundle, tmp_path: Path) -> None:
    data, bundle = head_bundle("fracture")
    run = shutil.copytree(bundle.parent / "run", tmp_path / "run")  # the report is written beside it
    damaged = shutil.copytree(data, tmp_path / "data", symlinks=True)
    (damaged / "test" / "fractured" / "zz-empty.jpg").write_bytes(b"")
    (damaged / "test" / "fractured" / "zz-cut.jpg").write_bytes(b"\xff\xd8\xff")
    out = tmp_path / "bundle"
    args = ["export", str(run), str(out), "--data-dir", str(damaged), "--evaluate", "test"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output  # the bundle is valid all the same
    failed = load_bundle_spec(out).metrics["test"]["failed"]
    assert [(f["source"], f["error_code"]) for f in failed] == [
        ("test/fractured/zz-cut.jpg", "unreadable_image"),
        ("test/fractured/zz-empty.jpg", "empty_file"),
    ]
    card = (out / "card.md").read_text(encoding="utf-8")
    unread = "test/fractured/zz-cut.jpg (unreadable_image), test/fractured/zz-empty.jpg (empty_file)"
    assert f"- **2 images of the split could not be read and are not in these figures**: {unread}" in card
    # the caution `evaluate` gives of intervals over so few images, which the card left out
    assert "- Caution: fewer than 10 fractured or other cases in: images (" in card
    n_images = 2 + load_bundle_spec(out).metrics["test"]["n"]
    warning = " ".join(result.stderr.split())
    assert f"warning: 2 of {n_images} images of the test split could not be read and are left out" in warning
    assert unread in warning


def test_an_int8_card_names_the_test_images_that_could_not_be_read(
    tiny_bundle: Path, tiny_dataset: Path, fracatlas_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnx")
    data = shutil.copytree(tiny_dataset, tmp_path / "data", symlinks=True)
    for label, folder in (("fractured", "Fractured"), ("not fractured", "Non_fractured")):
        (data / "test" / label).mkdir(parents=True)
        for image in sorted((fracatlas_dir / "images" / folder).glob("*.jpg"))[40:43]:
            (data / "test" / label / image.name).symlink_to(image)
    (data / "test" / "fractured" / "zz-empty.jpg").write_bytes(b"")
    out = tmp_path / "int8"
    args = ["quantize", str(tiny_bundle), str(out), "--data", str(data), "--calibration-images", "8"]
    gate_open = ["--max-auroc-drop", "1", "--min-heatmap-correlation", "-1", "--min-top-box-iou", "0"]
    result = CliRunner().invoke(app, [*args, *gate_open, "--max-hit-rate-drop", "1", "--evaluate", "test"])
    assert result.exit_code == 0, result.output
    metrics = load_bundle_spec(out).metrics
    failed = metrics["test"]["failed"]
    assert [(f["source"], f["error_code"]) for f in failed] == [("test/fractured/zz-empty.jpg", "empty_file")]
    assert metrics["quantization"]["float_metrics"]["test"]["failed"] == metrics["test"]["failed"]
    card = (out / "card.md").read_text(encoding="utf-8")
    assert "- **1 image of the split could not be read and is not in these figures**: " in card
    assert "test/fractured/zz-empty.jpg (empty_file)" in card
    warning = " ".join(result.stderr.split())
    assert "warning: 1 of 7 images of the test split could not be read and are left out" in warning


def test_a_long_list_of_unread_images_is_cut_short() -> None:
    from fracsight.evaluation.run import unread_names

    failed = [{"source": f"test/{i}.jpg", "error_code": "empty_file"} for i in range(7)]
    named = unread_names(failed, "bundle.json names them all")
    assert named.startswith("test/0.jpg (empty_file), test/1.jpg (empty_file), ")
    assert named.endswith("test/4.jpg (empty_file) and 2 more (bundle.json names them all)")
