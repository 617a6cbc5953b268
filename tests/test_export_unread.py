"""`export --evaluate SPLIT` puts the split's figures in the card; images of the split that cannot
be read are left out of them, and the card and a warning say which, as `evaluate` does."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracsight.bundle import load_bundle_spec
from fracsight.cli import app


def test_the_card_names_the_test_images_that_could_not_be_read(
    head_bundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, bundle = head_bundle("fracture")
    run = shutil.copytree(bundle.parent / "run", tmp_path / "run")  # the report is written beside it
    damaged = shutil.copytree(data, tmp_path / "data", symlinks=True)
    (damaged / "test" / "fractured" / "zz-empty.jpg").write_bytes(b"")
    (damaged / "test" / "fractured" / "zz-cut.jpg").write_bytes(b"\xff\xd8\xff")
    out = tmp_path / "bundle"
    args = ["export", str(run), str(out), "--data-dir", str(damaged), "--evaluate", "test"]
    with caplog.at_level(logging.WARNING, logger="fracsight.training"):
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
    n_images = 2 + load_bundle_spec(out).metrics["test"]["n"]
    assert f"2 of {n_images} images of the test split could not be read and are left out of the card's" in (
        caplog.text
    )
    assert unread in caplog.text


def test_a_long_list_of_unread_images_is_cut_short() -> None:
    from fracsight.evaluation.run import unread_names

    failed = [{"source": f"test/{i}.jpg", "error_code": "empty_file"} for i in range(7)]
    named = unread_names(failed, "bundle.json names them all")
    assert named.startswith("test/0.jpg (empty_file), test/1.jpg (empty_file), ")
    assert named.endswith("test/4.jpg (empty_file) and 2 more (bundle.json names them all)")
