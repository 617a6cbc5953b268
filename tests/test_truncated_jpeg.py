"""A FracAtlas JPEG cut short, as by an interrupted copy (the first 60 % of its bytes): read with
its missing lower part filled in, and never a reliable prediction. ``fracsight predict``, the data
audit and training's data loading read it alike (a truncated PNG or TIFF is refused by all three:
tests/test_audit.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fracsight.cli import app
from fracsight.data.audit import audit, render_audit
from fracsight.data.detect import load_dataset
from fracsight.inference import Predictor
from fracsight.io import read_image
from fracsight.training.cache import letterbox_samples

pytestmark = pytest.mark.fracatlas

FRACTURED = "Fractured/IMG0000019.jpg"
NORMAL = "Non_fractured/IMG0000050.jpg"


@pytest.fixture(scope="module")
def cut(fracatlas_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class-folder data set whose fractured image is the first 60 % of a FracAtlas JPEG."""
    root = tmp_path_factory.mktemp("cut")
    data = (fracatlas_dir / "images" / FRACTURED).read_bytes()
    (root / "fractured").mkdir()
    path = root / "fractured" / "cut.jpg"
    path.write_bytes(data[: len(data) * 6 // 10])
    (root / "normal").mkdir()
    (root / "normal" / "whole.jpg").write_bytes((fracatlas_dir / "images" / NORMAL).read_bytes())
    return path


def test_the_lower_part_is_missing_and_filled(cut: Path, fracatlas_dir: Path) -> None:
    radiograph = read_image(cut)
    whole = read_image(fracatlas_dir / "images" / FRACTURED)
    assert radiograph.metadata.truncated and radiograph.metadata.incomplete
    (note,) = radiograph.metadata.warnings
    missing = float(np.mean(np.all(radiograph.pixels == 128 / 255, axis=1)))
    assert note == f"truncated file: the bottom {missing:.0%} of the image is missing (filled grey)"
    assert radiograph.pixels.shape == whole.pixels.shape
    bottom = radiograph.pixels[-radiograph.height // 4 :]
    assert np.ptp(bottom) == 0 and np.ptp(whole.pixels[-whole.height // 4 :]) > 0.1


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


def test_the_library_marks_it_not_reliable(predictor: Predictor, cut: Path) -> None:
    result = predictor.predict(cut)
    assert not result.reliable and result.decision.startswith("not reliable")
    assert "the file is cut short and part of the image is missing from it; the result is not reliable" in (
        result.warnings
    )
    assert any(w.startswith("truncated file: the bottom") for w in result.warnings)


def test_a_jpeg_lacking_only_its_end_marker_is_whole_and_reliable(
    predictor: Predictor, fracatlas_dir: Path, tmp_path: Path
) -> None:
    data = (fracatlas_dir / "images" / NORMAL).read_bytes()
    assert data.endswith(b"\xff\xd9")
    path = tmp_path / "no-end.jpg"
    path.write_bytes(data[:-2])
    radiograph = read_image(path)
    assert radiograph.metadata.truncated and not radiograph.metadata.incomplete
    assert np.array_equal(radiograph.pixels, read_image(fracatlas_dir / "images" / NORMAL).pixels)
    result = predictor.predict(path)
    whole = predictor.predict(fracatlas_dir / "images" / NORMAL)
    assert result.reliable == whole.reliable and result.fracture_probability == whole.fracture_probability
    assert not any("cut short" in w for w in result.warnings)


def test_fracsight_predict_marks_it_not_reliable(cut: Path) -> None:
    result = CliRunner().invoke(app, ["predict", str(cut), "--json"])
    assert result.exit_code == 0, result.output  # read and predicted, not refused
    (row,) = json.loads(result.stdout)["images"]
    assert row["reliable"] is False and row["decision"].startswith("not reliable")
    assert any("cut short" in w for w in row["warnings"])


def test_audit_and_training_read_it_as_predict_does(cut: Path) -> None:
    root = cut.parent.parent
    report = audit(root)
    assert report.truncated == ["fractured/cut.jpg"] and report.unreadable == []
    findings = next(t for t in render_audit(report) if getattr(t, "title", None) == "Findings")
    meanings = [str(cell) for cell in findings.columns[2].cells]
    assert report.truncated_filled == ["fractured/cut.jpg"]
    assert (
        "JPEGs cut short: 1 with a part missing, read filled (predict marks them not reliable); "
        "0 lacking only their end marker, read whole"
    ) in meanings
    dataset = load_dataset(root)
    samples = sorted(dataset.samples, key=lambda s: s.path.name)
    assert [s.path.name for s in samples] == ["cut.jpg", "whole.jpg"]
    images = letterbox_samples(samples, 384, workers=1).images  # no refusal: trained on as read
    assert images.shape == (2, 384, 384) and images[0].any()


def test_a_study_with_a_view_cut_short_says_so(predictor: Predictor, cut: Path) -> None:
    """The study names the file cut short, not "outside what the model was made for" (which sends the
    reader after the body part or the kind of image, not after the transfer)."""
    whole = cut.parent.parent / "normal" / "whole.jpg"
    study = predictor.predict_study([predictor.predict(cut), predictor.predict(whole)], "study")
    assert not study.reliable and study.incomplete == ("cut.jpg",)
    assert study.decision == "not reliable: part of a view's image is missing from its file"
