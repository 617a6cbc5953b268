"""INT8 bundles (fracsight.quantize): end to end on a tiny bundle, the refit, the gate, parity,
determinism, the torch-free path, `fracsight models` and the benchmark rows."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bundle_checks import assert_fitted_on_predictions
from fracsight.bundle import BundleSpec, load_bundle_spec, sha256_file
from fracsight.cli import app
from fracsight.inference import Predictor
from fracsight.inference.onnx_model import OnnxModel

pytest.importorskip("onnx")  # onnxruntime.quantization needs it

runner = CliRunner()
# a tiny, barely trained 64-px model moves a lot under INT8: the end-to-end tests open the gate wide
OPEN_GATE = [
    "--max-auroc-drop",
    "1",
    "--min-heatmap-correlation",
    "-1",
    "--min-top-box-iou",
    "0",
    "--max-hit-rate-drop",
    "1",
    "--max-class-accuracy-drop",
    "1",
]


def _quantize(model: Path, out: Path, data: Path, *extra: str):
    args = ["quantize", str(model), str(out), "--data", str(data), "--calibration-images", "8"]
    return runner.invoke(app, [*args, *OPEN_GATE, *extra])


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle: Path, tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "tiny-int8"
    result = _quantize(tiny_bundle, out, tiny_dataset, "--evaluate", "val")
    assert result.exit_code == 0, result.output
    assert "INT8 bundle tiny-test-int8 v1 written" in result.stdout and "gate (validation, " in result.stdout
    return out


def _images(fracatlas_dir: Path) -> list[Path]:
    root = fracatlas_dir / "images"
    return [
        *sorted((root / "Fractured").glob("*.jpg"))[30:33],
        *sorted((root / "Non_fractured").glob("*.jpg"))[60:63],
    ]


@pytest.mark.slow
def test_int8_bundle_end_to_end(int8_bundle: Path, tiny_bundle: Path, fracatlas_dir: Path) -> None:
    import onnx

    spec, float_spec = load_bundle_spec(int8_bundle), load_bundle_spec(tiny_bundle)
    assert spec.precision == "int8" and float_spec.precision == "float32"
    assert spec.name == "tiny-test-int8" and spec.heads == float_spec.heads
    assert spec.onnx_sha256 == sha256_file(int8_bundle / "model.onnx") != float_spec.onnx_sha256
    ops = {n.op_type for n in onnx.load(str(int8_bundle / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert (int8_bundle / "model.onnx").stat().st_size < 0.5 * (tiny_bundle / "model.onnx").stat().st_size
    q = spec.metrics["quantization"]
    assert q["float_bundle"]["onnx_sha256"] == float_spec.onnx_sha256 and q["calibration_images"] == 8
    assert q["format"] == "QDQ" and q["calibration_split"] == "train"
    assert {"auroc_drop", "heatmap_correlation", "top_box_iou"} <= set(q["gate"]["measured"])
    # the evaluation went through the refitted bundle: its thresholds and calibration
    measured = spec.metrics["val"]
    assert measured["thresholds"]["balanced"]["threshold"] == spec.operating_point("balanced").threshold
    assert measured["ece"] == pytest.approx(spec.metrics["validation"]["ece"], abs=1e-6)
    assert "val" in q["float_metrics"]  # the float bundle measured on the same split for the card
    card = (int8_bundle / "card.md").read_text(encoding="utf-8")
    assert "## INT8 quantization" in card and "| split | metric | float | INT8 |" in card
    assert "| validation | AUROC |" in card and "INT8 weights and activations" in card
    assert "decision aid" in card and spec.onnx_sha256 in card
    result = Predictor(int8_bundle).predict(_images(fracatlas_dir)[0])
    assert 0.0 <= result.fracture_probability <= 1.0 and result.model == "tiny-test-int8 v1"
    assert result.heatmap is not None


@pytest.mark.slow
def test_int8_calibration_is_refitted_on_its_own_validation_outputs(
    int8_bundle: Path, tiny_bundle: Path, tiny_dataset: Path
) -> None:
    from fracsight.data import load_dataset
    from fracsight.data.splits import train_val_samples
    from fracsight.evaluation.calibration import apply_temperature, fit_calibration
    from fracsight.evaluation.thresholds import youden_threshold
    from fracsight.training.refit import raw_outputs

    spec, float_spec = load_bundle_spec(int8_bundle), load_bundle_spec(tiny_bundle)
    _, val = train_val_samples(load_dataset(tiny_dataset), 0)
    y = np.array([s.labels["fracture"] for s in val])
    own, _ = raw_outputs(OnnxModel(int8_bundle), val)
    fitted = fit_calibration(own["fracture"].astype(np.float64), y)
    assert spec.temperature == pytest.approx(fitted.temperature, rel=1e-9)
    assert spec.calibration_bias == pytest.approx(fitted.bias, abs=1e-9)
    p_own = apply_temperature(own["fracture"].astype(np.float64), spec.temperature, spec.calibration_bias)
    assert spec.operating_point("balanced").threshold == youden_threshold(y, p_own).threshold
    floats, _ = raw_outputs(OnnxModel(tiny_bundle), val)
    assert not np.array_equal(own["fracture"], floats["fracture"])
    assert [o.threshold for o in spec.operating_points] != [o.threshold for o in float_spec.operating_points]
    assert spec.ood != float_spec.ood  # the OOD subspace and threshold come from the INT8 embeddings
    assert spec.metrics["validation"]["n"] == len(val)


@pytest.mark.slow
def test_quantizing_leaves_logging_as_it_was(tiny_bundle: Path, tmp_path: Path) -> None:
    """onnxruntime's quantizer logs through the root logger, which then had logging's default
    handler: every later warning of `quantize` read `WARNING:fracsight.data.sample:...`, twice."""
    script = (  # a process of its own: pytest gives the root logger handlers of its own
        "import logging, sys, numpy as np\n"
        "from pathlib import Path\n"
        "from fracsight._terminal import install_warning_printer\n"
        "from fracsight.quantize.int8 import quantize_onnx\n"
        "install_warning_printer()\n"
        "image = np.random.default_rng(0).random((int(sys.argv[3]),) * 2, dtype=np.float32)\n"
        "quantize_onnx(Path(sys.argv[1]), Path(sys.argv[2]), [image])\n"
        "logging.getLogger('fracsight.data.sample').warning('after quantizing')\n"
    )
    size = str(load_bundle_spec(tiny_bundle).input_size)
    args = [sys.executable, "-c", script, str(tiny_bundle / "model.onnx"), str(tmp_path / "int8.onnx"), size]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "warning: after quantizing", done.stderr


def test_gate_refuses_and_writes_nothing(tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "refused"
    # no INT8 model reproduces the float heatmaps exactly: a required correlation of 1 must fail
    result = _quantize(tiny_bundle, out, tiny_dataset, "--min-heatmap-correlation", "1")
    assert result.exit_code == 1, result.output
    assert "error (quantization_refused): refusing to write the INT8 bundle" in result.stderr
    assert (
        "median heatmap correlation with float is" in result.stderr and "short of the 1.0000" in result.stderr
    )
    assert "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no partial folder left behind


def test_gate_messages_say_by_how_much() -> None:
    from fracsight.quantize.gate import GateBounds, check_gate

    measured = {"auroc_drop": 0.0052, "heatmap_correlation": 0.95, "top_box_iou": 0.4, "hit_rate_drop": 0.0}
    failures = check_gate(measured, GateBounds())
    assert failures == [
        "validation AUROC fell by 0.0052, 0.0022 more than the 0.0030 allowed",
        "mean top-box IoU with float is 0.4000, 0.1000 short of the 0.5000 required",
    ]
    assert check_gate({"auroc_drop": 0.003, "heatmap_correlation": 0.9}, GateBounds()) == []
    # at the bound in floating point: "at most 0.05" takes one hit of 20 lost (4/20 - 3/20 > 0.05)
    assert check_gate({"hit_rate_drop": 4 / 20 - 3 / 20, "auroc_drop": 0.9373 - 0.9343}, GateBounds()) == []
    assert check_gate({"auroc_drop": 0.00300004}, GateBounds()) == [
        "validation AUROC fell by 0.0030, 4e-08 more than the 0.0030 allowed"
    ]


@pytest.mark.slow
def test_quantize_refuses_bad_requests(
    int8_bundle: Path, tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path
):
    again = _quantize(int8_bundle, tmp_path / "twice", tiny_dataset)
    assert again.exit_code == 2 and "already quantized (int8)" in again.stderr
    # a .zip is named as given, not as the temporary folder it was unpacked into
    zipped = Path(shutil.make_archive(str(tmp_path / "int8"), "zip", int8_bundle))
    again = _quantize(zipped, tmp_path / "twice", tiny_dataset)
    assert again.exit_code == 2 and f"{zipped} is already quantized (int8)" in again.stderr
    mine = shutil.copytree(tiny_bundle, tmp_path / "mine")
    zipped = Path(shutil.make_archive(str(tmp_path / "mine"), "zip", mine))
    onto = _quantize(zipped, mine, tiny_dataset, "--force")
    assert onto.exit_code == 2 and f"holds a copy of the float bundle ({zipped})" in onto.stderr
    # its bundle.json edited to say float32 (as bundles of before INT8 say by default): the graph
    # tells; onnxruntime's quantizer ran, then its result did not load
    disguised = shutil.copytree(int8_bundle, tmp_path / "disguised")
    spec = json.loads((disguised / "bundle.json").read_text())
    spec["precision"] = "float32"
    spec.get("metrics", {}).pop("quantization", None)
    (disguised / "bundle.json").write_text(json.dumps(spec))
    again = _quantize(disguised, tmp_path / "twice2", tiny_dataset)
    assert again.exit_code == 2 and "already quantized (int8)" in again.stderr, again.output
    assert not (tmp_path / "twice2").exists()
    itself = _quantize(tiny_bundle, tiny_bundle, tiny_dataset)
    assert itself.exit_code == 2 and "is or holds the float bundle" in itself.stderr
    parent = _quantize(tiny_bundle, tiny_bundle.parent, tiny_dataset, "--force")
    assert parent.exit_code == 2 and "holds the float bundle" in parent.stderr
    assert (tiny_bundle / "model.onnx").is_file()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    busy = _quantize(tiny_bundle, occupied, tiny_dataset)
    assert (
        busy.exit_code == 2
        and "not a model bundle (no bundle.json)" in busy.stderr
        and (occupied / "keep.txt").read_text() == "mine"
    )
    unknown = _quantize(Path("no-such-model-v0"), tmp_path / "x", tiny_dataset)
    assert unknown.exit_code == 2 and "error (unknown_model)" in unknown.stderr


@pytest.mark.slow
def test_int8_predictions_are_deterministic_and_batch_independent(int8_bundle: Path, fracatlas_dir: Path):
    paths = _images(fracatlas_dir)
    first, second = Predictor(int8_bundle), Predictor(int8_bundle)
    one = [first.predict(p) for p in paths]
    again = [second.predict(p) for p in paths]
    for a, b in zip(one, again, strict=True):
        assert a.to_dict() == b.to_dict()
        np.testing.assert_array_equal(a.heatmap, b.heatmap)
    batched = list(first.predict_many(paths, batch_size=4, heatmap=True))
    for a, b in zip(one, batched, strict=True):
        assert b.fracture_probability == pytest.approx(a.fracture_probability, abs=1e-6)
        np.testing.assert_allclose(b.heatmap, a.heatmap, atol=1e-6)
        assert a.decisions == b.decisions and len(a.boxes) == len(b.boxes)


def _parity(
    float_bundle: Path, int8_bundle: Path, paths: list[Path], every_output: bool = False
) -> dict[str, tuple[float, float]]:
    """Per output: (correlation, RMS difference / float spread) over the same inputs through both graphs:
    the fracture score, the embedding and the two maps, or with ``every_output`` all the outputs the
    two graphs share (grafted detector and orientation heads too)."""
    float_p, int8_p = Predictor(float_bundle), Predictor(int8_bundle)
    batch, _ = float_p.preprocess([float_p.read(p) for p in paths])
    a, b = float_p.onnx.run(batch), int8_p.onnx.run(batch)
    names = sorted(set(a) & set(b)) if every_output else ["fracture", "embedding", "mask", "cam"]
    out = {}
    for name in names:
        x, y = a[name].ravel().astype(np.float64), b[name].ravel().astype(np.float64)
        out[name] = (float(np.corrcoef(x, y)[0, 1]), float(np.sqrt(np.mean((x - y) ** 2)) / x.std()))
    return out


@pytest.mark.slow
def test_int8_outputs_track_the_float_model(
    int8_bundle: Path, tiny_bundle: Path, fracatlas_dir: Path
) -> None:
    """A barely trained 64-px model has little spread in its outputs, so INT8 noise is large next to
    it (correlation 0.78-0.91 measured); a broken graph or input scaling would give about 0."""
    for name, (corr, rel) in _parity(tiny_bundle, int8_bundle, _images(fracatlas_dir)).items():
        assert corr > 0.6 and rel < 1.0, (name, corr, rel)


def test_packaged_int8_tracks_its_float_model(fracatlas_dir: Path) -> None:
    from fracsight.inference import list_bundles, resolve_bundle

    pairs = [(n.removesuffix("-int8"), n) for n in list_bundles() if n.endswith("-int8")]
    if not pairs:
        pytest.skip("no INT8 bundle is packaged")
    root = fracatlas_dir / "images"
    paths = [
        *sorted((root / "Fractured").glob("*.jpg"))[:8],
        *sorted((root / "Non_fractured").glob("*.jpg"))[:8],
    ]
    for float_name, int8_name in pairs:
        measured = _parity(resolve_bundle(float_name), resolve_bundle(int8_name), paths, every_output=True)
        assert {"fracture", "embedding", "mask", "cam"} <= set(measured)
        for name, (corr, rel) in measured.items():
            assert corr > 0.95 and rel < 0.35, (int8_name, name, corr, rel)


_TORCH_BLOCKED = """
import sys
sys.modules["torch"] = None  # any import of torch now fails
from fracsight.quantize import GateBounds, quantize_bundle
bundle, out, data = sys.argv[1:4]
wide = GateBounds(1.0, 1.0, -1.0, 0.0, 1.0)
spec = quantize_bundle(bundle, out, data_dir=data, n_calibration=4, bounds=wide)
print("PRECISION:" + spec.precision)
"""


@pytest.mark.slow
def test_quantize_needs_no_torch(tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _TORCH_BLOCKED, str(tiny_bundle), str(tmp_path / "q"), str(tiny_dataset)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PRECISION:int8" in proc.stdout and load_bundle_spec(tmp_path / "q").precision == "int8"


def test_bundles_without_a_precision_load_as_float32(tiny_bundle: Path) -> None:
    data = json.loads((tiny_bundle / "bundle.json").read_text(encoding="utf-8"))
    data.pop("precision", None)
    assert BundleSpec.from_dict(data).precision == "float32"
    from fracsight.errors import BundleError

    with pytest.raises(BundleError, match="precision must be one of"):
        BundleSpec.from_dict({**data, "precision": "int4"})
    shipped = Path(__file__).resolve().parents[1] / "src" / "fracsight" / "weights" / "fracatlas-lite0-384-v2"
    if (shipped / "bundle.json").is_file():
        assert load_bundle_spec(shipped).precision == "float32"


@pytest.mark.slow
def test_models_lists_float_and_int8_bundles(
    int8_bundle: Path, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fracsight.inference.store as store

    packaged = tmp_path / "weights"
    shutil.copytree(tiny_bundle, packaged / "tiny-v1")
    shutil.copytree(int8_bundle, packaged / "tiny-v1-int8")
    monkeypatch.setattr(store, "_PACKAGED", packaged)
    monkeypatch.setattr(store, "DEFAULT_MODEL", "tiny-v1")
    monkeypatch.setattr("fracsight.inference.DEFAULT_MODEL", "tiny-v1")
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "  tiny-v1 (float32) (default)\n" in result.stdout and "  tiny-v1-int8 (int8)\n" in result.stdout
    # a damaged bundle was listed as healthy (only bundle.json was read), and a FRACSIGHT_MODEL that
    # names none said "used instead of the default" beside a "(default)" every command would skip
    onnx = packaged / "tiny-v1-int8" / "model.onnx"
    kept = onnx.read_bytes()
    onnx.write_bytes(kept + b"changed")
    unknown = runner.invoke(app, ["models"], env={"FRACSIGHT_MODEL": "nonexistent"})
    # nor does `benchmark` of the float bundle end there: the damaged sibling it adds unasked is a note
    from fracsight.benchmark import run_benchmark, synthetic_images

    (tmp_path / "images").mkdir()
    synthetic_images(tmp_path / "images", n=1, size=(90, 70))
    report = run_benchmark("tiny-v1", [tmp_path / "images"], runs=1, batch=1, compare=False)
    skipped = [r for r in report.rows if r.name == "tiny-v1-int8"]
    assert skipped and skipped[0].note.startswith("skipped: the packaged bundle of the other precision")
    assert report.rows[0].latency_median_ms
    onnx.write_bytes(kept)
    assert "  tiny-v1-int8 (unusable: " in unknown.stdout and "does not match" in unknown.stdout, (
        unknown.stdout
    )
    assert (
        "(default)" not in unknown.stdout and "FRACSIGHT_MODEL=nonexistent: cannot be used" in unknown.stdout
    )
    from fracsight.benchmark import sibling_bundles

    assert sibling_bundles("tiny-v1") == [packaged / "tiny-v1-int8"]
    # spelled otherwise, the same bundle: `--model default` gave no float row beside the default
    assert sibling_bundles("default") == sibling_bundles(None) == [packaged / "tiny-v1-int8"]
    assert sibling_bundles("tiny-v1-int8") == [packaged / "tiny-v1"]  # the float row beside an INT8 default
    shutil.rmtree(packaged / "tiny-v1")
    assert sibling_bundles("tiny-v1-int8") == []


def test_real_packaged_models_are_listed_with_their_precision() -> None:
    from fracsight.inference import list_bundles

    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for name in list_bundles():
        expected = "int8" if name.endswith("-int8") else "float32"
        assert f"  {name} ({expected})" in result.stdout


@pytest.mark.slow
def test_benchmark_shows_float_and_int8_rows(int8_bundle: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    from fracsight.benchmark import STAGES, render_report, run_benchmark, synthetic_images

    synthetic_images(tmp_path, n=2, size=(90, 70))
    report = run_benchmark(
        tiny_bundle, [tmp_path], runs=2, batch=2, compare=False, also=[int8_bundle], stages=True
    )
    assert [r.name for r in report.rows] == ["tiny-test v1", "tiny-test-int8 v1", "GPU throughput"]
    assert report.rows[1].engine == "onnxruntime CPU INT8" and report.rows[0].engine == "onnxruntime CPU"
    for row in report.rows[:2]:
        assert row.latency_median_ms and row.throughput_ips and row.peak_rss_mb
        assert row.note == "inference process never loaded torch"
    names = [t.name for t in report.targets]
    assert "single-image median" in names and "tiny-test-int8 v1: single-image median" in names
    assert "tiny-test-int8 v1: peak RSS" in names
    from rich.console import Console

    console = Console(width=200, record=True)
    for part in render_report(report):
        console.print(part)
    text = console.export_text()
    assert "tiny-test-int8 v1 [2]" in text and "onnxruntime CPU INT8" in text
    assert [found["precision"] for found in report.stages] == ["float32", "int8"]
    for found in report.stages:
        assert set(found["ms"]) == {*STAGES, "end to end"} and found["ms"]["network"] > 0
        assert found["page_faults"] >= 0  # minor page faults per end-to-end prediction
    assert "where the time goes" in text and "letterbox" in text and "page faults" in text


@pytest.mark.slow
@pytest.mark.fracatlas
def test_class_only_bundle_quantizes(head_bundle, tmp_path: Path) -> None:
    """No fracture head: no AUROC or heatmap gate, the class accuracy gate and the class operating point."""
    data, bundle = head_bundle("class")
    out = tmp_path / "class-int8"
    result = _quantize(bundle, out, data)
    assert result.exit_code == 0, result.output
    spec = load_bundle_spec(out)
    measured = spec.metrics["quantization"]["gate"]["measured"]
    assert "class_accuracy_drop" in measured and "auroc_drop" not in measured
    assert spec.head("fracture") is None and spec.class_operating_point is not None
    result = Predictor(out).predict(next((data / "test").rglob("*.jpg")))
    assert result.fracture_probability is None and result.classification is not None
    strict = _quantize(bundle, tmp_path / "strict", data, "--max-class-accuracy-drop", "0", "--force")
    if measured["class_accuracy_drop"] > 0:
        assert strict.exit_code == 1 and "class accuracy fell by" in strict.stderr
    else:
        assert strict.exit_code == 0, strict.output


@pytest.mark.slow
@pytest.mark.fracatlas
def test_class_gate_compares_data_classes_by_name(head_bundle, tmp_path: Path) -> None:
    """Data holding some of the model's classes: the gate's class accuracy is the share of validation
    images whose most likely class is their folder's, not a comparison of the data's class numbers
    with the model's (hip and leg are 0 and 1 here, 1 and 2 for the model)."""
    data, bundle = head_bundle("class")
    fewer = shutil.copytree(data, tmp_path / "fewer", symlinks=True)
    for split in ("train", "val", "test"):
        shutil.rmtree(fewer / split / "hand")
    result = _quantize(bundle, tmp_path / "int8", fewer)
    assert result.exit_code == 0, result.output
    measured = load_bundle_spec(tmp_path / "int8").metrics["quantization"]["gate"]["measured"]
    predictor = Predictor(bundle)
    images = sorted((fewer / "val").rglob("*.jpg"))
    right = [predictor.predict(p).classification.predicted == p.parent.name for p in images]
    assert measured["n"] == len(images)
    assert measured["float_class_accuracy"] == pytest.approx(sum(right) / len(right))


@pytest.mark.slow
def test_int8_orientation_certainty_is_refitted_on_its_own_outputs(detector_bundle, tmp_path: Path) -> None:
    """The orientation step's certainty is chosen by the detector build's rule on the INT8 graph's own
    outputs for the validation images in their four quarter turns, read and turned as the Predictor
    does; a block copied from the float bundle fails (the float one here is planted: no refit gives it)."""
    from fracsight.data import load_dataset
    from fracsight.data.splits import train_val_samples
    from fracsight.explain import softmax
    from fracsight.inference.orientation import turn_radiograph
    from fracsight.training.refit import orientation_certainty

    data, _, grafted = detector_bundle
    float_bundle = tmp_path / "float"
    shutil.copytree(grafted, float_bundle)
    planted = {"min_probability": 0.5, "check_below": 0.85, "validation": {"n_views": -1}}
    spec = json.loads((grafted / "bundle.json").read_text(encoding="utf-8"))
    (float_bundle / "bundle.json").write_text(json.dumps({**spec, "orientation": planted}), encoding="utf-8")
    out = tmp_path / "int8"
    result = _quantize(float_bundle, out, data)
    assert result.exit_code == 0, result.output
    assert "orientation certainty refitted on 64 validation views" in result.stdout

    predictor = Predictor(out)
    _, val = train_val_samples(load_dataset(data), 0)
    probs, truth = [], []
    for sample in val:
        radiograph = predictor.read(sample.path)
        for k in range(4):
            batch, _ = predictor.preprocess([turn_radiograph(radiograph, k)])
            probs.append(softmax(predictor.onnx.run(batch)["orientation"][0].astype(np.float64), axis=0))
            truth.append(k)
    certainty, stats = orientation_certainty(np.array(probs), np.array(truth))
    int8 = load_bundle_spec(out)
    assert int8.orientation == {"min_probability": certainty, "check_below": 0.85, "validation": stats}
    assert stats["n_views"] == 4 * len(val) == 64
    assert int8.metrics["quantization"]["float_orientation"] == planted
    card = (out / "card.md").read_text(encoding="utf-8")
    assert (
        f"| validation | orientation certainty (least top probability that turns) | 0.50 | {certainty:.2f} |"
        in card
    )
    assert "out-of-distribution settings and the orientation certainty were refitted" in card
    assert_fitted_on_predictions(out, data)
    # the grafted detector stays in float (continuous box scores); the network is quantized
    import onnx

    from fracsight.detection.taps import detector_nodes

    graph = onnx.load(str(out / "model.onnx"))
    producer = {o: n for n in graph.graph.node for o in n.output}
    kept = set(detector_nodes(graph))
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    assert any(n.name in kept for n in convs) and any(n.name not in kept for n in convs)
    for conv in convs:  # weights: a float initializer, or the output of a DequantizeLinear
        assert (producer.get(conv.input[1]) is None) == (conv.name in kept), conv.name
    assert int8.metrics["quantization"]["kept_in_float"] == "the grafted detector head"
    assert "the grafted detector head kept in float" in card


def test_the_detector_finds_the_same_feature_maps_in_an_int8_graph(
    tiny_bundle: Path, int8_bundle: Path
) -> None:
    """`fracsight detector train` on an INT8 base reads its maps through the Q/DQ pairs."""
    from fracsight.detection.taps import TAP_NAMES, tapped_session

    image = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    maps = {}
    for bundle in (tiny_bundle, int8_bundle):
        session, names = tapped_session(bundle / "model.onnx", 64)
        maps[bundle] = session.run(names, {"image": image})
    for name, a, b in zip(TAP_NAMES, maps[tiny_bundle], maps[int8_bundle], strict=True):
        assert a.shape == b.shape and a.ndim == 4, name
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8, name


def test_an_unknown_evaluate_split_is_refused_before_quantizing(
    tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fracsight.quantize.build as build

    def quantized(*_args, **_kwargs):
        raise AssertionError("quantized before the split was checked")

    monkeypatch.setattr(build, "quantize_onnx", quantized)
    result = _quantize(tiny_bundle, tmp_path / "q", tiny_dataset, "--evaluate", "tset")
    assert result.exit_code == 2 and "no 'tset' split" in result.stderr, result.output
    assert not (tmp_path / "q").exists()


def test_a_split_only_an_own_data_set_can_carve_is_refused_before_quantizing(
    tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another data set without splits: quantizing may carve its own calibration images out of it,
    but its `test` split is not the model's held-out one, so the evaluation at the end would refuse
    it; the command says so before the work, as `fracsight evaluate` would."""
    import fracsight.quantize.build as build

    def quantized(*_args, **_kwargs):
        raise AssertionError("quantized before the split was checked")

    monkeypatch.setattr(build, "quantize_onnx", quantized)
    unsplit = tmp_path / "unsplit"
    for image in tiny_dataset.glob("*/*/*.jpg"):
        (unsplit / image.parent.name).mkdir(parents=True, exist_ok=True)
        (unsplit / image.parent.name / f"{image.parent.parent.name}-{image.name}").symlink_to(image)
    result = _quantize(tiny_bundle, tmp_path / "q", unsplit, "--evaluate", "test")
    assert result.exit_code == 2 and "no 'test' split" in result.stderr, result.output
    assert not (tmp_path / "q").exists()


def test_data_that_do_not_fit_the_heads_are_refused_before_quantizing(
    tiny_bundle: Path, head_bundle, tmp_path: Path
) -> None:
    """Labels the bundle's heads are refitted on, missing, or a class its class head does not know:
    a bad argument (exit 2, as export says it), nothing written."""
    class_data, class_bundle = head_bundle("class")
    with_new_class = shutil.copytree(class_data, tmp_path / "more", symlinks=True)
    for split in ("train", "val"):
        shutil.copytree(with_new_class / split / "hand", with_new_class / split / "skull", symlinks=True)
    for bundle, data, said in (
        (tiny_bundle, class_data, "lacks the fracture labels (not fractured/fractured; "),
        (class_bundle, with_new_class, "the model does not know ['skull']"),
    ):
        out = tmp_path / f"{bundle.name}-int8"
        result = _quantize(bundle, out, data)
        assert result.exit_code == 2, result.output
        message = " ".join(result.stderr.split())
        assert message.startswith("error (dataset_error): ") and said in message, message
        assert message.endswith("quantize with data labelled as the bundle's (--data)")
        assert not out.exists()


def test_an_output_folder_inside_the_float_bundle_or_class_folders_is_refused(
    tiny_bundle: Path, tiny_dataset: Path
) -> None:
    """Both were written: an INT8 bundle inside the float bundle's folder (gone with it when that is
    exported again with --force), or inside class folders (read as a class, with a warning, ever after)."""
    for out, said in (
        (tiny_bundle / "int8", "is inside the float bundle"),
        (tiny_dataset / "train" / "int8", "is inside the class-folder data set"),
    ):
        result = _quantize(tiny_bundle, out, tiny_dataset)
        assert result.exit_code == 2, result.output
        assert "error (output_refused): " in result.stderr and said in " ".join(result.stderr.split())
        assert not out.exists()
    assert sorted(p.name for p in tiny_bundle.iterdir()) == [
        "bundle.json",
        "card.md",
        "model.onnx",
        "train-config.yaml",
    ]


def test_a_validation_split_of_one_label_is_refused_before_quantizing(
    tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """Validation images all fractured (a small or sorted data set): quantized and calibrated, then
    a ``ValueError: roc_curve needs both positive and negative samples`` traceback (exit 1)."""
    one_sided = shutil.copytree(tiny_dataset, tmp_path / "one-sided", symlinks=True)
    shutil.rmtree(one_sided / "val" / "not fractured")
    out = tmp_path / "q"
    exported = runner.invoke(  # export fitted on it too: the same traceback, after the ONNX export
        app, ["export", str(tiny_bundle.parent / "run"), str(out), "--data-dir", str(one_sided)]
    )
    for result in (_quantize(tiny_bundle, out, one_sided), exported):
        assert result.exit_code == 2, result.output
        message = " ".join(result.stderr.split())
        assert "error (dataset_error): " in message and "Traceback" not in result.output
        assert "validation split has 6 fractured and 0 not fractured images" in message
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["one-sided"]


@pytest.mark.slow
def test_float_figures_stand_beside_int8_ones_only_on_the_same_images(
    tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """Quantized on other data (--data), the card's float column held the float bundle's recorded
    figures, on its own validation images, beside the INT8 model's on these: the float ones are
    left out, and a split asked for is measured for both models on the same images."""
    other = tmp_path / "other"
    for image in tiny_dataset.glob("*/*/*.jpg"):
        if image.name in sorted(p.name for p in image.parent.glob("*.jpg"))[:4]:
            (other / image.parent.relative_to(tiny_dataset)).mkdir(parents=True, exist_ok=True)
            (other / image.relative_to(tiny_dataset)).symlink_to(image)
    out = tmp_path / "int8"
    result = _quantize(tiny_bundle, out, other, "--evaluate", "val")
    assert result.exit_code == 0, result.output
    spec = load_bundle_spec(out)
    recorded = spec.metrics["quantization"]["float_metrics"]
    assert "validation" not in recorded and recorded["val"]["n"] == spec.metrics["val"]["n"] == 8
    card = (out / "card.md").read_text(encoding="utf-8")
    assert "| validation | AUROC |" not in card and "| val | AUROC |" in card


def _without_boxes(data: Path, root: Path, per_label: dict[str, int]) -> Path:
    """A small FracAtlas-layout subset of ``data`` (:func:`fewer_fracatlas`) with no boxes."""
    from test_detection import fewer_fracatlas

    fewer_fracatlas(data, root, per_label)
    shutil.rmtree(root / "annotations")
    return root


def test_data_without_boxes_keep_the_float_localization_settings(detector_bundle, tmp_path: Path) -> None:
    """Quantized on other data without boxes, a heatmap-box bundle kept no settings of its own: they
    were reset to the defaults. They are the float bundle's now, and the card says they were not
    refitted, and on which data the rest was."""
    data, base, _ = detector_bundle
    float_spec = load_bundle_spec(base)
    assert float_spec.localization.get("source") and "boxes" not in float_spec.localization
    other = _without_boxes(data, tmp_path / "nobox", {"train": 8, "val": 4})
    out = tmp_path / "int8"
    result = _quantize(base, out, other)
    assert result.exit_code == 0, result.output
    assert "localization settings kept from the float bundle: no fractured" in result.stdout
    spec = load_bundle_spec(out)
    kept = {k: v for k, v in float_spec.localization.items() if k != "validation_hit_rate_iou"}
    assert {k: v for k, v in spec.localization.items() if k != "not_refitted"} == kept
    assert spec.training["data"] == float_spec.training["data"]
    assert spec.metrics["quantization"]["data"] == str(other.resolve())
    assert spec.metrics["quantization"]["other_data"] is True
    card = " ".join((out / "card.md").read_text(encoding="utf-8").split())
    assert "Calibration, operating points and out-of-distribution settings were refitted" in card
    assert "the localization settings are the float bundle's, not refitted: no fractured" in card
    assert "Quantized on other data: the INT8 activation ranges, the calibration, the operating " in card
    assert f"were fitted on `{other.resolve()}`" in card


def test_a_split_another_data_set_lacks_is_refused_naming_evaluate(detector_bundle, tmp_path: Path) -> None:
    """`quantize --evaluate val` on other data without a val split: the hint named `--split`, an
    option `quantize` does not have; it names `--evaluate` now, before any work."""
    data, base, _ = detector_bundle
    noval = _without_boxes(data, tmp_path / "noval", {"train": 8, "test": 4})
    out = tmp_path / "int8"
    result = _quantize(base, out, noval, "--evaluate", "val")
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "has no 'val' split; it has ['test', 'train']" in message, result.output
    assert "--evaluate a split it has, or leave --evaluate out" in message and "--split" not in message
    assert not out.exists()


def test_an_int8_bundle_is_not_written_inside_a_fracatlas_data_set(detector_bundle, tmp_path: Path) -> None:
    """`quantize base data/images/Non_fractured/q --data data` was taken: every later read of the data
    set warned of the bundle's files."""
    data_fixture, base, _ = detector_bundle
    data = shutil.copytree(data_fixture, tmp_path / "data", symlinks=True)
    out = data / "images" / "Non_fractured" / "q"
    result = _quantize(base, out, data)
    assert result.exit_code == 2, result.output
    assert "is inside the fracatlas data set" in " ".join(result.stderr.split()) and not out.exists()


@pytest.mark.parametrize("gate", ["--max-auroc-drop", "--max-hit-rate-drop", "--max-class-accuracy-drop"])
@pytest.mark.parametrize("value", ["inf", "2"])
def test_gates_out_of_bounds_are_refused_before_quantizing(gate: str, value: str, tmp_path: Path) -> None:
    """`quantize --max-auroc-drop inf` quantized and wrote `Infinity` (not JSON) into bundle.json."""
    result = runner.invoke(
        app, ["quantize", "base", str(tmp_path / "q"), "--data", str(tmp_path), gate, value]
    )
    assert result.exit_code == 2 and gate in result.output, result.output
    assert f"Invalid value for '{gate}'" in result.output
    assert not (tmp_path / "q").exists()


def test_leakage_is_warned_once_as_a_warning_line(
    tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """`quantize --evaluate` on data whose splits share an image: the leakage warning came as a raw
    log line (``WARNING:fracsight.evaluation.run:...``), twice (the INT8 and the float bundle
    measured), where `evaluate` and `export` print one ``warning: leakage ...`` line."""
    leaky = tmp_path / "leaky"
    shutil.copytree(tiny_dataset, leaky, symlinks=True)
    shared = next((leaky / "val" / "fractured").iterdir())
    (leaky / "train" / "fractured" / "copy.jpg").symlink_to(shared.resolve())
    result = _quantize(tiny_bundle, tmp_path / "q", leaky, "--evaluate", "val")
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if "leakage" in line]
    assert len(said) == 1 and said[0].startswith("warning: leakage"), result.stderr
