"""The exported ONNX bundle and the torch checkpoint it came from give the same answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fracsight.explain import sigmoid
from fracsight.inference import Predictor
from fracsight.preprocessing import letterbox_radiograph, read_for_model


def _images(fracatlas_dir: Path) -> list[Path]:
    """Real radiographs of different sizes, both classes, grey and RGB JPEGs."""
    root = fracatlas_dir / "images"
    return [
        *sorted((root / "Fractured").glob("*.jpg"))[20:24],
        *sorted((root / "Non_fractured").glob("*.jpg"))[40:44],
    ]


def test_torch_checkpoint_and_onnx_bundle_agree(tiny_bundle: Path, fracatlas_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    from fracsight.training.trainer import load_checkpoint

    model, cfg = load_checkpoint(tiny_bundle.parent / "run" / "best.pt")
    predictor = Predictor(tiny_bundle)
    spec = predictor.spec
    assert cfg.input_size == spec.input_size
    paths = _images(fracatlas_dir)

    # torch side: the shared preprocessing, called directly, and the bundle's temperature
    size = cfg.input_size
    batch = np.stack([letterbox_radiograph(read_for_model(p, size), size)[0] for p in paths])
    with torch.no_grad():
        eager = {k: v.numpy() for k, v in model(torch.from_numpy(batch[:, None])).items()}
    torch_probs = sigmoid(eager["fracture"].astype(np.float64) / spec.temperature)

    # ONNX side: the Predictor end to end, from the files
    onnx_probs = np.array([predictor.predict(p).fracture_probability for p in paths])
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-3, rtol=0)

    # The temperature divides logits (and so differences), so also compare raw outputs sharply.
    raw = predictor.onnx.run(predictor.preprocess([predictor.read(p) for p in paths])[0])
    for name in ("fracture", "mask", "cam", "embedding"):
        np.testing.assert_allclose(raw[name], eager[name], atol=1e-3, rtol=1e-3, err_msg=name)
    assert np.ptp(eager["fracture"]) > 1e-3, "the images should not all get the same logit"


def test_training_sees_the_pixels_the_predictor_sees(tiny_bundle: Path, fracatlas_dir: Path) -> None:
    """The training cache (uint8) holds the Predictor's model input, to within rounding."""
    from fracsight.data import load_dataset
    from fracsight.training.cache import letterbox_samples

    predictor = Predictor(tiny_bundle)
    size = predictor.spec.input_size
    paths = _images(fracatlas_dir)
    samples = [s for s in load_dataset(fracatlas_dir).samples if s.path in set(paths)]
    cached = letterbox_samples(samples, size, workers=1).images
    served, _ = predictor.preprocess([predictor.read(s.path) for s in samples])
    assert any(predictor.read(s.path).metadata.reduced_from for s in samples)
    np.testing.assert_allclose(cached / 255.0, served, atol=0.5 / 255 + 1e-6, rtol=0)
