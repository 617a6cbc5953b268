"""The orientation step of the default model: a turned radiograph is read upright, its results
land on the image as given."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracsight.explain.boxes import iou, turn_boxes_in
from fracsight.inference import Predictor
from fracsight.inference.orientation import reads_agree_on_turn, turn_prediction, turn_radiograph
from fracsight.io import read_image

TURNS = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_turning_a_radiograph_and_back_restores_it(fracatlas_dir: Path) -> None:
    path = next((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))
    radiograph = read_image(path)
    for k in (1, 2, 3):
        turned = turn_radiograph(radiograph, k)
        assert turned.full_size == (radiograph.full_size[::-1] if k % 2 else radiograph.full_size)
        assert np.array_equal(turn_radiograph(turned, -k).pixels, radiograph.pixels)


def test_the_default_model_has_an_orientation_step(predictor: Predictor) -> None:
    assert predictor.spec.orientation["min_probability"] >= 0.5
    assert predictor.spec.localization["boxes"] == "detector"


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_turned_radiograph_is_read_upright(predictor: Predictor, fracatlas_dir: Path, k: int) -> None:
    path = fracatlas_dir / "images" / "Fractured" / "IMG0000307.jpg"
    with Image.open(path) as im:
        upright_image = im.convert("L")
    upright = predictor.predict(_png(upright_image), name="upright.png")
    turned = predictor.predict(_png(upright_image.transpose(TURNS[k])), name="turned.png")
    assert any("read turned upright" in w for w in turned.warnings)
    assert not any("read turned upright" in w for w in upright.warnings)
    assert turned.fracture_probability == pytest.approx(upright.fracture_probability, abs=0.02)
    assert turned.region == upright.region and turned.reliable
    # the boxes are on the image as given: turned back, they sit where the upright image's are
    assert turned.boxes and upright.boxes
    size = (upright_image.height, upright_image.width)
    given = size[::-1] if k % 2 else size
    back = turn_boxes_in(np.array([turned.boxes[0].as_tuple()]), -k, given)[0]
    assert iou(back, upright.boxes[0]) > 0.7
    assert turned.heatmap is not None and turned.heatmap.shape == given


def test_turning_a_prediction_moves_boxes_and_heatmap_together(
    predictor: Predictor, fracatlas_dir: Path
) -> None:
    path = fracatlas_dir / "images" / "Fractured" / "IMG0000307.jpg"
    upright = predictor.predict(path)
    turned = turn_prediction(upright, 1, upright.heatmap.shape[::-1])
    assert turned.heatmap.shape == upright.heatmap.shape[::-1]
    # np.rot90's quarter turn is counter-clockwise: said as viewers and EXIF say it (it read "90")
    assert "seemed turned by 270 degrees clockwise" in turned.warnings[-1]
    assert "by 90 degrees clockwise" in turn_prediction(upright, 3, upright.heatmap.shape).warnings[-1]
    assert "by 180 degrees and" in turn_prediction(upright, 2, upright.heatmap.shape).warnings[-1]
    x0, y0, x1, y1 = (int(v) for v in turned.boxes[0].as_tuple())
    ux0, uy0, ux1, uy1 = (int(v) for v in upright.boxes[0].as_tuple())
    assert turned.heatmap[y0:y1, x0:x1].sum() == pytest.approx(
        upright.heatmap[uy0:uy1, ux0:ux1].sum(), rel=0.05
    )


def test_unsure_orientations_are_candidates_and_sure_ones_turns(predictor: Predictor) -> None:
    sure = predictor.spec.orientation["min_probability"]
    check_below = predictor.spec.orientation["check_below"]
    logits = np.log(
        np.array(
            [
                [0.97, 0.01, 0.01, 0.01],  # sure it is upright: read as it is
                [0.005, 0.005, 0.005, 0.985],  # sure it is turned: undone
                [0.5 * check_below, 0.1, 0.0001, 1 - 0.5 * check_below - 0.1001],  # unsure: a candidate
            ]
        )
    )
    turns = predictor._quarter_turns({"orientation": logits, "fracture": np.zeros(3)})
    assert sure < 0.985  # the second row is over the bundle's certainty
    assert turns == [(0, False), (3, True), (3, False)]


def test_an_unsure_turn_is_kept_only_when_both_reads_agree() -> None:
    def logits(*probs: float) -> np.ndarray:
        return np.log(np.array(probs))

    unsure = logits(0.47, 0.09, 0.22, 0.22)  # upright likeliest, 180 degrees the likeliest turn
    # turned back by 180 degrees, the read looks turned by 180: the image as given was upright
    assert not reads_agree_on_turn(unsure, logits(0.08, 0.28, 0.50, 0.14), 2)
    # turned back, the read looks upright: the image was turned
    assert reads_agree_on_turn(unsure, logits(0.90, 0.04, 0.03, 0.03), 2)
    # a quarter turn is weighed against its own inverse: undoing 1 turn is checked as -1 (= 3)
    given = logits(0.40, 0.45, 0.05, 0.10)
    assert reads_agree_on_turn(given, logits(0.60, 0.05, 0.05, 0.30), 1)
    assert not reads_agree_on_turn(given, logits(0.20, 0.05, 0.05, 0.70), 1)


def test_the_same_radiograph_as_dicom_is_read_as_the_jpeg_is(
    predictor: Predictor, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """IMG0000025 as a 12-bit DICOM file leaves the orientation head unsure (upright 0.47 against
    0.68 for the JPEG); the feature-distance rule used to keep its read turned by 180 degrees
    (fracture probability 0.35 against 0.94)."""
    from dicom_support import make_radiograph_dicom

    jpeg = fracatlas_dir / "images" / "Fractured" / "IMG0000025.jpg"
    from_jpeg = predictor.predict(jpeg)
    from_dicom = predictor.predict(make_radiograph_dicom(jpeg, tmp_path / "IMG0000025.dcm"))
    assert not any("seemed turned" in w for w in from_dicom.warnings)
    assert from_dicom.fracture_suspected == from_jpeg.fracture_suspected is True
    assert abs(from_dicom.fracture_probability - from_jpeg.fracture_probability) < 0.05


def test_a_blank_image_is_not_turned(predictor: Predictor) -> None:
    """A uniform grey image got "the image seemed turned by 90 degrees and was read turned upright"
    beside "nearly uniform (blank?)": it has no up to turn to."""
    result = predictor.predict(np.full((512, 512), 0.5))
    assert any("nearly uniform" in w for w in result.warnings)
    assert not any("turned" in w for w in result.warnings), result.warnings
