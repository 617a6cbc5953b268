"""What `export` and `quantize` put in a bundle comes from the model, never from the data it is
calibrated on: its heads, the names of its binary head's classes, the numbering of its classes.
Runs and bundles record their data set in full, so that they work from any working folder."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

from conftest import TINY_TRAINING  # noqa: E402
from fracsight.bundle import load_bundle_spec  # noqa: E402
from fracsight.cli import app  # noqa: E402
from fracsight.data import CLASS, Sample  # noqa: E402
from fracsight.errors import DatasetError  # noqa: E402
from fracsight.training.export_bundle import export_bundle  # noqa: E402
from fracsight.training.refit import fit_to_outputs  # noqa: E402
from head_kinds import make_dataset  # noqa: E402


def _run(bundle: Path) -> Path:
    return bundle.parent / "run"  # where the head_bundle fixture trained it


def test_the_fracture_head_comes_from_the_model_not_the_data(head_bundle, fracatlas_dir, tmp_path):
    _, fracture_bundle = head_bundle("fracture")
    class_data, class_bundle = head_bundle("class")
    # a fracture model with data that lack fracture labels: refused, not a bundle with no head
    # (--data, as quantize, detector and compare name it, is --data-dir's other name)
    result = CliRunner().invoke(
        app, ["export", str(_run(fracture_bundle)), str(tmp_path / "a"), "--data", str(class_data)]
    )
    assert result.exit_code == 2, result.output  # data that do not fit the model: a bad argument
    assert "lacks the fracture labels (not fractured/fractured" in result.output
    assert not (tmp_path / "a").exists()
    # a class model with fracture-labelled data: no fracture head made of its untrained output
    both = make_dataset("fracture+class", fracatlas_dir, tmp_path / "both")
    spec = export_bundle(_run(class_bundle), tmp_path / "b", data_dir=both)
    assert [h.name for h in spec.heads] == ["class"] and not spec.operating_points
    assert spec.class_operating_point is not None


def test_other_data_to_calibrate_on_is_recorded_apart_from_the_training_data(
    head_bundle, fracatlas_dir, tmp_path
):
    """`export --data-dir OTHER` recorded OTHER as the data the model trained on (card and
    bundle.json, with its counts), and evaluate then took the real training images for held-out
    ones. The same images moved to another folder are the training data, at their new place."""
    data, bundle = head_bundle("fracture")
    trained = load_bundle_spec(bundle).training
    other = make_dataset("fracture+class", fracatlas_dir, tmp_path / "other")
    spec = export_bundle(_run(bundle), tmp_path / "a", data_dir=other)
    assert spec.training["data"] == trained["data"] == str(data.resolve())
    assert (spec.training["n_train"], spec.training["n_val"]) == (trained["n_train"], trained["n_val"])
    calibrated = spec.training["calibration_data"]
    assert calibrated["data"] == str(other.resolve()) and calibrated["n_val"] > 0
    card = " ".join((tmp_path / "a" / "card.md").read_text().split())
    assert (
        "Calibrated on other data: the calibration, the operating points and the out-of-distribution" in card
    )
    assert f"reference were fitted on `{other.resolve()}`" in card
    assert f"- Data: `{data.resolve()}`" in card
    # evaluate says which images chose what: the other data's val split fitted the calibration and
    # operating points, the training data's val split the checkpoint only
    from fracsight.evaluation.run import evaluate_model

    on_other = evaluate_model(tmp_path / "a", other, split="val", n_bootstrap=0)["notes"]
    assert any(
        "of the data the model's calibration and operating points were fitted on" in n for n in on_other
    )
    on_own = " ".join(evaluate_model(tmp_path / "a", data, split="val", n_bootstrap=0)["notes"])
    assert "the images its checkpoint was chosen on" in on_own and "calibration and thresholds" not in on_own
    # quantize refits on the data the float bundle was calibrated on (it took the training data,
    # and its card still said "calibrated on" the other data)
    from fracsight.quantize import GateBounds, quantize_bundle

    wide = GateBounds(1.0, 1.0, -1.0, 0.0, 1.0)
    int8 = quantize_bundle(tmp_path / "a", tmp_path / "q", n_calibration=4, bounds=wide)
    assert (
        int8.metrics["quantization"]["data"] == str(other.resolve())
        and int8.metrics["quantization"]["other_data"]
    )
    assert "calibration_data" not in int8.training and int8.training["data"] == str(data.resolve())
    # the INT8 bundle, quantized on the other data, and compare: the same notes
    on_other = evaluate_model(tmp_path / "q", other, split="all", n_bootstrap=0)["notes"]
    assert any(
        "of the data the model's calibration and operating points were fitted on" in n for n in on_other
    )
    on_own = " ".join(evaluate_model(tmp_path / "q", data, split="val", n_bootstrap=0)["notes"])
    assert "the images its checkpoint was chosen on" in on_own and "calibration and thresholds" not in on_own
    from fracsight.evaluation.compare import compare_models

    compared = compare_models(tmp_path / "a", tmp_path / "q", other, split="all")["notes"]
    for key in "AB":
        assert any(
            n.startswith(f"model {key} (") and "calibration and operating points were fitted" in n
            for n in compared
        )
    moved = tmp_path / "moved"
    shutil.copytree(data, moved, symlinks=True)
    # given as its checkpoint: the Reproduce command read `-c RUN/best.pt/config.yaml`
    spec = export_bundle(_run(bundle) / "best.pt", tmp_path / "b", data_dir=moved)
    assert spec.training["data"] == str(moved.resolve()) and "calibration_data" not in spec.training
    run = _run(bundle)
    # the bundle's own copy of the config: the run's config.yaml is rewritten by its next --force
    own = tmp_path / "b" / "train-config.yaml"
    assert spec.training["commands"][0] == f"fracsight train -c {own} --out {run}-again"
    assert yaml.safe_load(own.read_text(encoding="utf-8")) == spec.training["config"]
    # and the export takes the run that line makes, into a folder of its own (it exported the first
    # run again, or was refused: its bundle folder was taken)
    assert spec.training["commands"][1] == (
        f"fracsight export {run}-again {tmp_path / 'b'}-again --data-dir {moved}"
    )
    # other data without a test split: no test carved out of its train split as if it were the run's
    notest = tmp_path / "notest"
    shutil.copytree(other, notest, symlinks=True)
    shutil.rmtree(notest / "test")
    with pytest.raises(DatasetError, match="has no 'test' split"):
        export_bundle(run, tmp_path / "c", data_dir=notest, evaluate_split="test")
    assert not (tmp_path / "c").exists()


def _with_class(data: Path, out: Path, name: str) -> Path:
    """``data`` (class folders) with one test image more, of a class of its own."""
    shutil.copytree(data, out, symlinks=True)
    image = next((data / "test" / "hip").iterdir())
    (out / "test" / name).mkdir()
    (out / "test" / name / "z.jpg").symlink_to(image.resolve())
    return out


def test_a_class_the_model_does_not_know_is_refused_by_export_and_quantize(head_bundle, tmp_path):
    from fracsight.quantize import quantize_bundle

    data, bundle = head_bundle("class")
    odd = _with_class(data, tmp_path / "odd", "Aaa")  # sorts first: every data index shifts by one
    with pytest.raises(DatasetError, match=r"the model does not know \['Aaa'\]"):
        export_bundle(_run(bundle), tmp_path / "a", data_dir=odd)
    with pytest.raises(DatasetError, match=r"the model does not know \['Aaa'\]"):
        quantize_bundle(bundle, tmp_path / "q", data_dir=odd)
    assert not (tmp_path / "a").exists() and not (tmp_path / "q").exists()
    # compare names which of its two models does not know the class (both are "fracsight-model v1")
    from fracsight.evaluation.compare import compare_models

    with pytest.raises(
        DatasetError, match=r"^model A \(.*\): the data's classes .* the model does not know \['Aaa'\]"
    ):
        compare_models(bundle, bundle, odd, split="test")


def test_the_class_operating_point_maps_the_datas_classes_by_name(head_bundle):
    spec = load_bundle_spec(head_bundle("class")[1])
    assert spec.head("class").classes == ("hand", "hip", "leg")
    # data with two of the model's classes: its "hip" is 0, the model's is 1
    val = [Sample(Path(f"{i}.png"), labels={CLASS: i % 2}) for i in range(8)]
    logits = np.full((8, 3), -5.0, dtype=np.float32)
    logits[np.arange(8), 1 + np.arange(8) % 2] = 5.0  # the model is right on every image
    rng = np.random.default_rng(0)
    outputs = {"class": logits, "embedding": rng.normal(size=(8, 16)).astype(np.float32)}
    train = rng.normal(size=(32, 16)).astype(np.float32)
    fitted = fit_to_outputs(spec, val, outputs, [], train, class_names={CLASS: ("hip", "leg")})
    assert fitted.metrics["validation"]["class_accuracy"] == 1.0
    with pytest.raises(DatasetError, match=r"does not know \['Aaa'\]"):
        fit_to_outputs(spec, val, outputs, [], train, class_names={CLASS: ("Aaa", "hip")})


def _mura(fracatlas: Path, root: Path) -> Path:
    """A tiny MURA-layout set (one patient, study and image each) linked from FracAtlas."""
    fractured = sorted((fracatlas / "images" / "Fractured").glob("*.jpg"))
    normal = sorted((fracatlas / "images" / "Non_fractured").glob("*.jpg"))
    for i in range(18):
        split, positive = ("train" if i < 12 else "valid"), i % 2 == 0
        suffix = "positive" if positive else "negative"
        study = root / split / "XR_HAND" / f"patient{i:05d}" / f"study1_{suffix}"
        study.mkdir(parents=True)
        (study / "image1.jpg").symlink_to((fractured if positive else normal)[i])
    return root


@pytest.fixture(scope="module")
def mura_run(tmp_path_factory, fracatlas_dir) -> Path:
    """A tiny MURA run, trained as `fracsight train mura --out runs/mura` typed in its folder."""
    work = tmp_path_factory.mktemp("mura-work")
    _mura(fracatlas_dir, work / "mura")
    settings = [a for s in [*TINY_TRAINING, "arch=small_cnn", "pretrained=none"] for a in ("--set", s)]
    here = Path.cwd()
    os.chdir(work)
    try:
        result = CliRunner().invoke(app, ["train", "mura", "--out", "runs/mura", *settings])
    finally:
        os.chdir(here)
    assert result.exit_code == 0, result.output
    return work


def test_a_mura_model_says_abnormal_not_fractured(mura_run, tmp_path):
    spec = export_bundle(mura_run / "runs" / "mura", tmp_path / "bundle", data_dir=mura_run / "mura")
    assert spec.head("fracture").classes == ("normal", "abnormal")
    card = (tmp_path / "bundle" / "card.md").read_text(encoding="utf-8")
    assert "fracture (binary: normal, abnormal)" in card
    assert "This head detects 'abnormal', not fractures" in card
    # and the decisions say so: abnormality, never fracture
    from fracsight.inference import Predictor

    predictor = Predictor(tmp_path / "bundle")
    images = sorted((mura_run / "mura").rglob("*.jpg"))[:6]
    predictions = list(predictor.predict_many(images))
    # a model this small finds the images unusual (not reliable): the words of a reliable read
    decisions = {dataclasses.replace(p, reliable=True).decision for p in predictions}
    assert decisions and decisions <= {"abnormality suspected", "no abnormality detected"}
    study = dataclasses.replace(predictor.predict_study(predictions[:2], "s"), reliable=True)
    assert study.decision in {"abnormality suspected", "no abnormality detected"}


def test_data_whose_binary_label_means_something_else_is_refused(
    mura_run, head_bundle, tiny_dataset, tmp_path
):
    """A normal/abnormal (MURA) model calibrated on fractured/not fractured data would get its
    probability and operating points fitted to finding what it never learned to find, and the other
    way round: export refuses such data as a bad argument (exit 2) and writes nothing."""
    fracture_run = _run(head_bundle("fracture")[1])
    for run, data, named, trained in (
        (mura_run / "runs" / "mura", tiny_dataset, "not fractured/fractured", "normal/abnormal"),
        (fracture_run, mura_run / "mura", "normal/abnormal", "not fractured/fractured"),
    ):
        out = tmp_path / run.name
        result = CliRunner().invoke(app, ["export", str(run), str(out), "--data-dir", str(data)])
        assert result.exit_code == 2, result.output
        said = " ".join(result.stderr.split())
        assert said.startswith("error (dataset_error): ") and "Traceback" not in result.output
        assert f"binary label is {named}, but the model's fracture head was trained on {trained}" in said
        assert not out.exists()


def test_runs_and_bundles_record_their_data_in_full(mura_run, tmp_path, monkeypatch):
    data = (mura_run / "mura").resolve()
    config = (mura_run / "runs" / "mura" / "config.yaml").read_text(encoding="utf-8")
    assert f"data: {data}\n" in config
    monkeypatch.chdir(tmp_path)  # anywhere but where training ran
    runner = CliRunner()
    exported = runner.invoke(app, ["export", str(mura_run / "runs" / "mura"), "bundle"])
    assert exported.exit_code == 0, exported.output
    assert json.loads(Path("bundle/bundle.json").read_text())["training"]["data"] == str(data)
    held_out = runner.invoke(app, ["evaluate", "bundle", str(mura_run / "mura"), "--split", "test"])
    assert held_out.exit_code == 0, held_out.output
    assert "measured on the one fracsight carves out" in held_out.output
    everything = runner.invoke(app, ["evaluate", "bundle", str(mura_run / "mura"), "--split", "all"])
    assert everything.exit_code == 0, everything.output
    assert "its training and validation images included" in " ".join(everything.output.split())
    assert "differs from the training run's" not in " ".join(held_out.output.split())
    # a split carved differently from the run's (the data changed since): said, not hidden
    recorded = json.loads(Path("bundle/bundle.json").read_text())
    recorded["training"]["n_train"] += 1
    Path("bundle/bundle.json").write_text(json.dumps(recorded))
    changed = runner.invoke(app, ["evaluate", "bundle", str(mura_run / "mura"), "--split", "test"])
    assert changed.exit_code == 0, changed.output
    assert "differs from the training run's" in " ".join(changed.output.split())


def test_an_older_run_and_bundle_with_relative_data_paths(mura_run, tmp_path, monkeypatch):
    """Older fracsight recorded the data as typed (`mura`, relative to where training ran) and not
    which fracture head it trained: the run is read from where it is now."""
    run = tmp_path / "work" / "runs" / "mura"
    shutil.copytree(mura_run / "runs" / "mura", run)
    (tmp_path / "work" / "mura").symlink_to(mura_run / "mura")
    state = torch.load(run / "best.pt", weights_only=True)
    del state["fracture"]
    state["config"] = json.dumps({**json.loads(state["config"]), "data": "mura", "out": "runs/mura"})
    torch.save(state, run / "best.pt")
    monkeypatch.chdir(tmp_path)
    spec = export_bundle(run, tmp_path / "bundle")
    assert spec.training["data"] == str((tmp_path / "work" / "mura").resolve())
    assert spec.head("fracture").classes == ("normal", "abnormal")  # judged on its own data set
    # a bundle recording the relative path: its own data set is still known, and said so
    recorded = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    recorded["training"]["data"] = "mura"
    (tmp_path / "bundle" / "bundle.json").write_text(json.dumps(recorded))
    result = CliRunner().invoke(app, ["evaluate", "bundle", str(tmp_path / "work" / "mura")])
    assert result.exit_code == 0, result.output
    assert "relative path 'mura'" in " ".join(result.output.split())
    # ... but another folder that is merely called "mura" is not the bundle's data set
    other = tmp_path / "elsewhere" / "mura"
    shutil.copytree(mura_run / "mura", other, symlinks=True)
    shutil.rmtree(other / "train" / "XR_HAND" / "patient00000")
    unrelated = CliRunner().invoke(app, ["evaluate", "bundle", str(other)])
    assert unrelated.exit_code == 2  # no test split of its own, and not one the run carved out
    assert "a data set the model was not trained on" in " ".join(unrelated.output.split())


def test_a_class_spelt_otherwise_than_the_models_is_named_with_its_spelling() -> None:
    """Folders `hand`, `LEG` against a model of `Hand`, `leg`: "does not know ['hand', 'LEG']", though
    the data set's own reader takes names that differ only in case for one class."""
    from fracsight.data import CLASS
    from fracsight.evaluation.run import model_class_index

    with pytest.raises(
        DatasetError, match=r"\(it spells 'hand' as 'Hand', 'LEG' as 'leg': name them as it does\)"
    ):
        model_class_index({CLASS: ("hand", "hip", "LEG")}, ("Hand", "hip", "leg"))
