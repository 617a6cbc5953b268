"""The packaged default model, when it is installed (skipped otherwise)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fracsight.inference import DEFAULT_MODEL, NOTICE, Predictor, list_bundles

pytestmark = pytest.mark.skipif(DEFAULT_MODEL not in list_bundles(), reason="default bundle not packaged")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


def _test_images(fracatlas_dir: Path, fractured: int, n: int) -> list[Path]:
    out = []
    with open(fracatlas_dir / "dataset.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["split"] == "test" and int(row["fractured"]) == fractured:
                folder = "Fractured" if fractured else "Non_fractured"
                path = fracatlas_dir / "images" / folder / row["image_id"]
                if path.is_file():
                    out.append(path)
            if len(out) == n:
                break
    return out


def test_the_default_bundle_describes_itself(predictor: Predictor) -> None:
    spec = predictor.spec
    assert spec.name == "fracatlas-lite0-384-int8" and spec.input_size == 384 and spec.precision == "int8"
    assert predictor.regions == ("hand", "leg", "hip", "shoulder")
    assert {op.name for op in spec.operating_points} >= {"balanced", "triage"}
    assert 0.0 < predictor.operating_point.threshold < 1.0
    assert predictor.onnx.max_batch == 1  # static shapes: the fast path


def test_the_default_model_separates_fractured_from_normal(predictor: Predictor, fracatlas_dir: Path) -> None:
    """On the held-out test split fractured images score higher on average (AUROC about 0.9)."""
    fractured = [p.fracture_probability for p in predictor.predict_many(_test_images(fracatlas_dir, 1, 12))]
    normal = [p.fracture_probability for p in predictor.predict_many(_test_images(fracatlas_dir, 0, 12))]
    assert len(fractured) == len(normal) == 12
    assert np.mean(fractured) > np.mean(normal) + 0.1


def test_a_default_prediction_is_complete(predictor: Predictor, fracatlas_dir: Path) -> None:
    path = _test_images(fracatlas_dir, 1, 1)[0]
    result = predictor.predict(path)
    assert result.region in predictor.regions and result.heatmap is not None
    assert result.heatmap.shape == result.metadata.original_size
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["notice"] == NOTICE and payload["model"] == "fracatlas-lite0-384-int8 v5"


def test_the_default_model_repeats_itself_exactly(fracatlas_dir: Path) -> None:
    """The INT8 default as the float models: the same image gives the same result in another
    Predictor and inside a batch (the integer kernels split work across threads)."""
    paths = [*_test_images(fracatlas_dir, 1, 2), *_test_images(fracatlas_dir, 0, 2)]
    first, second = Predictor(), Predictor()
    one = [first.predict(p) for p in paths]
    for a, b in zip(one, [second.predict(p) for p in paths], strict=True):
        assert a.to_dict() == b.to_dict()
        np.testing.assert_array_equal(a.heatmap, b.heatmap)
    for a, b in zip(one, first.predict_many(paths, batch_size=4, heatmap=True), strict=True):
        assert a.to_dict() == b.to_dict()
        np.testing.assert_array_equal(a.heatmap, b.heatmap)


@pytest.mark.parametrize("name", list_bundles())
def test_each_packaged_card_is_what_its_bundle_json_renders(name: str) -> None:
    """A card is written once, from bundle.json: when the renderer learns to say something more
    truly (the INT8 card said a detector's box settings were refitted), the packaged cards follow."""
    from fracsight.bundle import load_bundle_spec
    from fracsight.inference import resolve_bundle
    from fracsight.training.card import render_card

    folder = resolve_bundle(name)
    assert (folder / "card.md").read_text(encoding="utf-8") == render_card(load_bundle_spec(folder))
    # its test intervals are evaluate's own (they were the older per-image ones, narrower than the
    # README's figures of the same model), and the card says what they resample
    method = load_bundle_spec(folder).metrics["test"]["ci_method"]
    assert method.startswith("percentile bootstrap, resampling whole groups of related images")
    assert f"- 95% confidence intervals: {method}" in (folder / "card.md").read_text(encoding="utf-8")


def test_a_card_of_figures_on_training_images_says_they_flatter_the_model() -> None:
    """`export --evaluate train` (or val) gave a card with the training figures under "Measured
    results" and the sentence "the test split was only measured", of a test split never measured."""
    import dataclasses

    from fracsight.bundle import load_bundle_spec
    from fracsight.inference import resolve_bundle
    from fracsight.training.card import render_card

    spec = load_bundle_spec(resolve_bundle(None))
    measured = spec.metrics["test"]
    for split, said in (("train", "trained on"), ("val", "chosen on")):
        card = render_card(
            dataclasses.replace(spec, metrics={"validation": spec.metrics["validation"], split: measured})
        )
        assert "the test split was only measured" not in card and f"measured: the {split} split." in card
        section = card.split(f"### {split} split", 1)[1]
        assert f"{said}: these figures flatter it**" in section
    assert "the test split was only measured." in render_card(spec)
