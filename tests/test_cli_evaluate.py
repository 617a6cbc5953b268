"""`fracsight evaluate`: human summary with confidence intervals, --json, report files, clear errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracsight.bundle import load_bundle_spec
from fracsight.cli import app
from fracsight.data import CLASS, load_dataset
from fracsight.inference import NOTICE
from head_kinds import HEAD_KINDS


def test_evaluate_prints_metrics_with_ci_and_writes_the_report(tiny_bundle, tiny_dataset, tmp_path):
    out = tmp_path / "eval"
    args = ["evaluate", str(tiny_bundle), str(tiny_dataset), "--split", "val", "--bootstrap", "100"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--threshold", "0.5"])
    assert result.exit_code == 0, result.output
    assert "12/12 images, 6 fractured" in result.output  # what the data call a positive image
    assert "AUROC" in result.output and "95% CI" in result.output
    assert "custom (threshold 0.500)" in result.output
    assert NOTICE in result.stderr  # the plain-text answer says it too, as predict's and compare's do
    report = (out / "report.html").read_text()
    assert "decision aid" in report and "data:image/png;base64" in report
    written = json.loads((out / "metrics.json").read_text())
    assert written["data"]["n_evaluated"] == 12 and written["notice"] == NOTICE
    assert written["data"]["leakage"] == [] and "leakage" not in result.stderr  # checked: none
    # the summary names the Brier score the README quotes, and where sensitivity at 0.90 was read
    sas = written["sensitivity_at_specificity"]
    assert f"Brier score {written['brier']:.3f}" in result.output
    where = f"threshold {sas['threshold']:.3f}, specificity {sas['specificity']:.3f}"
    if (sas["sensitivity"], sas["specificity"]) == (0, 1):  # this tiny model: only flagging nothing
        where = "no threshold reaches it while flagging any image: nothing flagged"
    assert f"sensitivity at specificity 0.90: {sas['sensitivity']:.3f} ({where})" in result.output


def test_evaluate_json_is_machine_readable(tiny_bundle, tiny_dataset):
    args = ["evaluate", str(tiny_bundle), str(tiny_dataset), "--split", "val", "--bootstrap", "100", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert 0.0 <= metrics["auroc"]["value"] <= 1.0
    assert metrics["auroc"]["ci_low"] <= metrics["auroc"]["value"] <= metrics["auroc"]["ci_high"]
    assert set(metrics["thresholds"]) == {"balanced", "triage"}
    assert metrics["notice"] == NOTICE  # as predict --json says it


def test_a_split_the_data_set_lacks_is_the_one_training_held_out(tiny_bundle, tiny_dataset, tmp_path):
    """tiny_dataset has train/ and val/ only: training carved a test split out of train (docs/data.md,
    ensure_splits with the run's seed), and evaluate --split test measures exactly those images."""
    from fracsight.data import ensure_splits, load_dataset
    from fracsight.data.splits import train_val_samples

    dataset = load_dataset(tiny_dataset)
    held_out = {s.path for s in ensure_splits(dataset, seed=0).split("test")}
    train, val = train_val_samples(dataset, seed=0)
    assert held_out and not held_out & {s.path for s in [*train, *val]}
    args = ["evaluate", str(tiny_bundle), str(tiny_dataset), "--split", "test", "--bootstrap", "100"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["n"] == len(held_out)
    assert any("no 'test' split of its own" in note for note in metrics["notes"])
    other = tmp_path / "another-set"  # the same images elsewhere: not the set it was trained on
    other.mkdir()
    for split in ("train", "val"):
        (other / split).symlink_to(tiny_dataset / split, target_is_directory=True)
    external = CliRunner().invoke(app, ["evaluate", str(tiny_bundle), str(other), "--split", "test"])
    assert external.exit_code == 2 and "--split all" in external.output  # a bad --split: exit 2
    bogus = CliRunner().invoke(app, ["evaluate", str(tiny_bundle), str(tiny_dataset), "--split", "bogus"])
    assert bogus.exit_code == 2 and "no 'bogus' split" in bogus.output and "Traceback" not in bogus.output
    assert "not trained on" not in bogus.output  # it is the model's own data set, with the split it carved


def test_a_split_is_reported_by_its_own_name_however_it_was_typed(tiny_bundle, tiny_dataset, tmp_path):
    args = ["evaluate", str(tiny_bundle), str(tiny_dataset), "--bootstrap", "0", "--out", str(tmp_path / "e")]
    result = CliRunner().invoke(app, [*args, "--split", " Validation"])
    assert result.exit_code == 0, result.output
    assert "[val]" in result.stdout  # not "[ Validation]"
    run = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert run["data"]["split"] == "val" and "--split val " in run["run"]["command"]
    every = CliRunner().invoke(app, ["evaluate", str(tiny_bundle), str(tiny_dataset), "--split", "ALL"])
    assert every.exit_code == 0 and "[all]" in every.stdout


def test_the_validation_split_of_the_training_data_is_said_to_flatter(tiny_bundle, tiny_dataset):
    """MURA's test split is hidden, so its `valid/` is what researchers report on; trained on MURA, a
    model chose its checkpoint, calibration and thresholds on those very images, and `--split valid`
    said nothing of it (`--split all` did), but noted "no 'valid' split of its own: measured on the
    one fracsight carves", which was wrong: it has one, `valid/` read as `val`."""
    args = ["evaluate", str(tiny_bundle), str(tiny_dataset), "--bootstrap", "100", "--json"]
    valid = json.loads(CliRunner().invoke(app, [*args, "--split", "valid"]).stdout)
    val = json.loads(CliRunner().invoke(app, [*args, "--split", "val"]).stdout)
    assert valid["n"] == val["n"] == 12
    for notes in (valid["notes"], val["notes"]):
        assert any("'val' split of the data set the model was trained on" in n for n in notes)
        assert not any("split of its own" in n for n in notes)
    test = json.loads(CliRunner().invoke(app, [*args, "--split", "test"]).stdout)
    assert not any("trained on, the images" in n for n in test["notes"])  # held out: nothing to say


def test_the_wrapper_folder_an_archive_unpacks_into_names_the_data_set_trained_on(
    tiny_bundle, tiny_dataset, tmp_path
):
    """`fracsight train mura` on the folder MURA-v1.1-small.zip unpacks into reads `mura/MURA-v1.1`
    (docs/data.md: one sub-folder is looked inside) and the bundle records that inner folder; given the
    same `mura` folder, evaluate took it for a data set the model was not trained on and refused
    `--split test` (the split training carved out of it), as compare did."""
    wrapper = tmp_path / "unpacked"
    wrapper.mkdir()
    (wrapper / "tiny-set").symlink_to(tiny_dataset, target_is_directory=True)
    args = [str(tiny_bundle), str(wrapper), "--split", "test"]
    own = CliRunner().invoke(app, ["evaluate", *args, "--bootstrap", "100", "--json"])
    assert own.exit_code == 0, own.output
    direct = CliRunner().invoke(
        app, ["evaluate", str(tiny_bundle), str(tiny_dataset), "--split", "test", "--json"]
    )
    assert json.loads(own.stdout)["n"] == json.loads(direct.stdout)["n"]  # the same held-out images
    compared = CliRunner().invoke(app, ["compare", str(tiny_bundle), *args, "--json"])
    assert "no 'test' split" not in compared.output  # (its 2 fractured test images are too few to compare)


@pytest.mark.parametrize("recorded", ["in full", "relative", "relative with .."])
def test_the_split_training_carved_is_made_once(tiny_bundle, tiny_dataset, tmp_path, monkeypatch, recorded):
    """Making the run's split of a data set hashes its duplicate candidates, slow on a big one:
    evaluate makes it once, also for an older bundle whose relative data path it checks by it.
    ``../<parent>/<name>`` is how the shipped bundles record FracAtlas: from any folder but the one
    they were made in, it named no data set, and train/val figures went without their warning."""
    import shutil

    from fracsight.data import splits
    from fracsight.evaluation.run import evaluate_model

    bundle = tiny_bundle
    if recorded != "in full":
        bundle = tmp_path / "bundle"
        shutil.copytree(tiny_bundle, bundle)
        spec = json.loads((bundle / "bundle.json").read_text())
        spec["training"]["data"] = tiny_dataset.name
        if recorded == "relative with ..":
            spec["training"]["data"] = f"../{tiny_dataset.parent.name}/{tiny_dataset.name}"
        (bundle / "bundle.json").write_text(json.dumps(spec))
    made = []
    real = splits.split_keys
    monkeypatch.setattr(splits, "split_keys", lambda samples: made.append(len(samples)) or real(samples))
    metrics = evaluate_model(bundle, tiny_dataset, split="test", n_bootstrap=100)
    assert len(made) == 1
    assert any("no 'test' split of its own" in note for note in metrics["notes"])
    assert not any("differs from the training run's" in note for note in metrics["notes"])
    assert any("relative path" in note for note in metrics["notes"]) == (recorded != "in full")


def test_a_split_on_some_images_only_is_refused_not_trimmed(fracatlas_dir, tmp_path):
    """docs/data.md: a set with splits on some images only is refused. evaluate --split test on a set
    the model was not trained on measured the test rows and silently dropped the row whose split
    was left empty; --split all still measures every image."""
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    rows = ["image,fracture,split"]
    for folder, label, splits in (("Fractured", 1, ("test", "test")), ("Non_fractured", 0, ("test", ""))):
        images = sorted((fracatlas_dir / "images" / folder).glob("*.jpg"))[: len(splits)]
        for image, split in zip(images, splits, strict=True):
            (root / "img" / image.name).symlink_to(image)
            rows.append(f"img/{image.name},{label},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    runner = CliRunner()
    refused = runner.invoke(app, ["evaluate", "default", str(root), "--bootstrap", "100"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output  # the user's to correct
    assert "some samples have a split and some do not (1 without one" in refused.output
    args = ["evaluate", "default", str(root), "--split", "all", "--bootstrap", "100"]
    everything = runner.invoke(app, args)
    assert everything.exit_code == 0, everything.output
    assert "4/4 images" in everything.output


# ---- every head combination (tiny real bundles of tests/head_kinds.py) ---------------------------------
KINDS = list(HEAD_KINDS)


@pytest.mark.slow
@pytest.mark.fracatlas
@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_measures_exactly_the_heads_of_the_bundle(head_bundle, kind: str, tmp_path) -> None:
    data, bundle = head_bundle(kind)
    heads = HEAD_KINDS[kind]
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app, ["evaluate", str(bundle), str(data), "--split", "test", "--bootstrap", "100", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["heads"]) == set(heads)
    assert ("auroc" in m) == ("thresholds" in m) == ("operating_points" in m) == ("fracture" in heads)
    assert ("region_head" in m) == ("region" in heads)
    assert ("multiclass" in m) == ("class" in heads)
    assert "localization" not in m or "fracture" in heads
    # every head of these bundles has its labels in its own data; a few images per label, said so
    few = ("fewer than 10 fractured or other cases", "classes with fewer than 10 images")
    few += ("boxes not measured: no fractured image read has box annotations",)  # these data have none
    notes = [n for n in m.get("notes", []) if "flagged not reliable" not in n]  # a test bundle's OOD guard
    assert all(note.startswith(few) for note in notes)
    assert any(note.startswith(few[1]) for note in notes) == ("class" in heads)

    test = load_dataset(data).split("test")
    assert m["data"]["n_evaluated"] == len(test)
    assert ("n_positive" in m["data"]) == ("fracture" in heads)
    report = (out / "report.html").read_text(encoding="utf-8")
    assert ("Image-level fracture detection" in report) == ("ROC curve" in report) == ("fracture" in heads)
    assert ("<h2>Class head</h2>" in report) == ("Class operating point" in report) == ("class" in heads)
    assert ("Body-region head" in report) == ("region" in heads)
    header = next(line for line in result.output.splitlines() if "[test]:" in line)
    assert ("fractured" in header) == ("fracture" in heads)
    assert ("body-region accuracy" in result.output) == ("region" in heads)
    assert ("class stated at probability >=" in result.output) == ("class" in heads)
    if "class" in heads:
        mc = m["multiclass"]
        labelled = [s for s in test if CLASS in s.labels]
        assert mc["n"] == len(labelled) == m["data"]["n_class_labelled"]
        assert mc["n_unlabelled"] == len(test) - len(labelled)
        if "fracture" in heads:  # fracture+class: a type only for the fractured images
            assert mc["n"] == m["data"]["n_positive"] < len(test)
        spec = load_bundle_spec(bundle)
        op = mc["operating_point"]
        assert op["min_probability"] == pytest.approx(spec.class_operating_point.min_probability)
        assert op["validation_accuracy"] == pytest.approx(spec.class_operating_point.accuracy)
        assert op["validation_coverage"] == pytest.approx(spec.class_operating_point.coverage)
        assert op["n_confident"] == round(op["coverage"] * mc["n"])
        assert (out / "class_coverage.png").is_file() and (out / "confusion_multiclass.png").is_file()


@pytest.mark.slow
@pytest.mark.fracatlas
def test_a_class_with_few_images_is_noted(head_bundle, tmp_path) -> None:
    """A fracture-type set with one rare type (3 images) got per-class figures (a recall of 0.33 or
    0.67, nothing between) without a word, where the fracture figures of so few images get a note."""
    data, bundle = head_bundle("class")
    for name, n in (("hand", None), ("hip", 3), ("leg", None)):
        (tmp_path / name).mkdir()
        for path in sorted((data / "train" / name).iterdir())[:n]:
            (tmp_path / name / path.name).symlink_to(path.resolve())
    result = CliRunner().invoke(app, ["evaluate", str(bundle), str(tmp_path), "--split", "all", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert [c["support"] for c in metrics["multiclass"]["per_class"].values()] == [16, 3, 16]
    assert "classes with fewer than 10 images: hip (3 images): their per-class figures" in " ".join(
        metrics["notes"]
    )


@pytest.mark.slow
@pytest.mark.fracatlas
def test_evaluate_refuses_data_without_the_labels_of_the_heads(head_bundle) -> None:
    fracture_data, _ = head_bundle("fracture")
    class_region_data, _ = head_bundle("class+region")
    _, class_bundle = head_bundle("class")
    _, fracture_class_bundle = head_bundle("fracture+class")
    runner = CliRunner()
    missing = runner.invoke(app, ["evaluate", str(class_bundle), str(fracture_data), "--split", "test"])
    assert missing.exit_code == 2 and "no class labels (hand, hip, leg)" in missing.output
    other = runner.invoke(
        app, ["evaluate", str(fracture_class_bundle), str(class_region_data), "--split", "test"]
    )
    assert other.exit_code == 2 and "differ from the model's" in other.output
    threshold = runner.invoke(
        app, ["evaluate", str(class_bundle), str(fracture_data), "--split", "test", "--threshold", "0.5"]
    )
    assert threshold.exit_code == 2 and "no fracture head" in threshold.output
    for result in (missing, other, threshold):
        assert "Traceback" not in result.output


@pytest.mark.slow
@pytest.mark.fracatlas
@pytest.mark.parametrize("kind", ["class", "fracture+class"])
def test_card_describes_the_class_head(head_bundle, kind: str) -> None:
    from fracsight.evaluation.run import evaluate_model
    from fracsight.training.card import render_card
    from fracsight.training.refit import metrics_summary as _summary

    data, bundle = head_bundle(kind)
    spec = load_bundle_spec(bundle)
    card = (bundle / "card.md").read_text(encoding="utf-8")
    op = spec.class_operating_point
    assert "## Class operating point" in card and f"| {op.min_probability:.4f} |" in card
    assert "90% of the time" in card and "most confident half" in card
    assert ("class activation map of the predicted class" in card) == (kind == "class")
    assert ("it draws no boxes" in card) == (kind == "class")
    assert ("fracture type given a fracture" in card) == (kind == "fracture+class")
    assert ("## Operating points" in card) == (kind == "fracture+class")
    # with a measured split, as `fracsight export --evaluate test` writes it
    metrics = evaluate_model(bundle, data, split="test", n_bootstrap=100)
    measured = render_card(dataclasses.replace(spec, metrics={**spec.metrics, "test": _summary(metrics)}))
    n = metrics["multiclass"]["n"]
    assert f"(on the {n} images with a class label)" in measured
    assert "At the class operating point (minimum probability" in measured


def _as_mura(images: list, root):
    """A MURA-layout set (two views a study) linked from ``images`` (label from the folder)."""
    for k, path in enumerate(images):
        suffix = "positive" if path.parent.name == "fractured" else "negative"
        study = root / "XR_HAND" / f"patient{k // 2:05d}" / f"study1_{suffix}"
        study.mkdir(parents=True, exist_ok=True)
        (study / f"image{k % 2 + 1}.jpg").symlink_to(path.resolve())
    return root


def test_mura_report_counts_studies_and_says_the_label_is_abnormality(
    tiny_bundle, tiny_dataset, tmp_path, monkeypatch
):
    """The summary said "6 abnormal", but the report's tables, the plots' titles and axes and the
    sample grid's headings said "fractured": every text the evaluation writes or draws words the
    positive images as the data do (metrics.json data.positive)."""
    import matplotlib.text
    from PIL import Image

    drawn: list[str] = []
    set_text = matplotlib.text.Text.set_text
    monkeypatch.setattr(matplotlib.text.Text, "set_text", lambda t, s: set_text(t, drawn.append(str(s)) or s))
    val = tiny_dataset / "val"
    images = sorted((val / "fractured").iterdir())[:6] + sorted((val / "not fractured").iterdir())[:6]
    data = _as_mura(images, tmp_path / "mura")
    out = tmp_path / "eval"
    args = ["evaluate", str(tiny_bundle), str(data), "--split", "all", "--bootstrap", "100"]
    args += ["--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "[all]: 12/12 images, 6 abnormal\n" in result.stdout  # as the data word it (said: 6 fractured)
    assert "note: fewer than 10 abnormal or other cases in: images (6 abnormal, 6 other)" in result.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["positive"] == "abnormal"
    # the study level as MURA reports it: each operating point's sensitivity, specificity and kappa
    for name, t in m["study"]["thresholds"].items():
        assert (
            f"  {name} (threshold {t['threshold']:.3f}): sensitivity {t['sensitivity']:.3f}"
            in result.stdout.split("study level (6 studies)")[1]
        )
        assert f"kappa {t['cohen_kappa']:.3f}" in result.stdout
    assert any("'abnormal'" in note and "not fracture" in note for note in m["notes"])
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "<td>Studies (abnormal / not abnormal)</td><td>6 (3 / 3)</td>" in report
    assert "<h2>Image-level abnormality detection</h2>" in report
    assert "how well the model finds &#x27;abnormal&#x27; images" in report
    # only the model's own head and the note that the label is not fracture name one
    said = report.replace("fracture (not fractured, fractured)", "").replace("not fracture:", "")
    assert "fractur" not in said.lower()
    title = Image.open(out / "roc.png").text["Title"]
    assert "tiny-test v1 on mura [all], n=12 (6 abnormal)" in title
    grid = Image.open(out / "samples.png").text["Title"]
    assert "tiny-test v1 on mura [all], n=12 (6 abnormal)" in grid
    assert "observed fraction abnormal" in drawn and "not abnormal" in drawn
    assert any(t.startswith("Missed abnormalities (abnormal images not suspected") for t in drawn)
    assert not [t for t in drawn if "fractur" in t.lower()]


@pytest.mark.slow
@pytest.mark.fracatlas
def test_sample_grid_names_the_true_class_of_data_lacking_a_model_class(head_bundle, tmp_path) -> None:
    """Data without the model's middle class ('hip'): its class labels index ('hand', 'leg'), the
    model's ('hand', 'hip', 'leg'); the grid must compare the same classes and name the true one."""
    from fracsight.data import load_dataset
    from fracsight.evaluation.run import _grid_content
    from fracsight.inference import Predictor

    data, bundle = head_bundle("class")
    for name in ("hand", "leg"):
        (tmp_path / "test" / name).mkdir(parents=True)
        for path in sorted((data / "test" / name).iterdir()):
            (tmp_path / "test" / name / path.name).symlink_to(path.resolve())
    dataset = load_dataset(tmp_path)
    assert dataset.class_names[CLASS] == ("hand", "leg")
    samples = list(dataset.samples)
    predictor = Predictor(bundle)
    preds = [predictor.predict(s.path) for s in samples]
    grid = _grid_content(
        samples, preds, predictor, fracture=False, klass=True, class_names=dataset.class_names[CLASS]
    )
    assert grid is not None and grid.labels is not None and grid.predicted is not None
    for i, title, label, guess in zip(grid.order, grid.titles, grid.labels, grid.predicted, strict=True):
        truth = dataset.class_names[CLASS][samples[i].labels[CLASS]]
        assert title.endswith(f"true: {truth}")  # after ", " or on a line of its own
        assert predictor.classes[label] == truth  # the border compares model indices on both sides
        assert predictor.classes[guess] == preds[i].classification.predicted


def test_an_output_folder_inside_class_folders_is_refused(tiny_bundle, tiny_dataset, tmp_path):
    """Class folders are read by folder name: a report (or a training run) written inside them
    would be read back as a class, its plots as images, by the next `train` or `evaluate`."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data, symlinks=True)
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    evaluate = ["evaluate", str(tiny_bundle), str(data), "--split", "val", "--bootstrap", "100"]
    train = ["train", str(data), "--set", "epochs=1"]
    for args, why in (
        ([*evaluate, "--out", str(data / "report")], f"is inside {data.resolve()}, which is read for images"),
        ([*train, "--out", str(data / "val" / "run")], "inside the class-folder data set"),
        # its letterbox cache too: written into train/, its .npy files then read as a class's images
        (
            [*train, "--out", str(tmp_path / "run"), "--set", f"cache_dir={data / 'train' / 'cache'}"],
            f"cache_dir {data / 'train' / 'cache'} is inside the class-folder data set",
        ),
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "error (output_refused)" in result.output, result.output
        assert why in " ".join(result.output.split())
        assert "Traceback" not in result.output
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    # beside the data set is fine
    result = CliRunner().invoke(app, [*evaluate, "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output


def test_an_output_folder_in_a_class_folder_linked_in_from_elsewhere_is_refused(
    tiny_bundle, tiny_dataset, tmp_path
):
    """Only the data set's own folder was compared: a report written where a linked class folder
    leads was read back as fractured radiographs (its plots) by the next evaluate or train."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data, symlinks=True)
    linked = data / "val" / sorted(p.name for p in (data / "val").iterdir())[0]
    real = tmp_path / "elsewhere"
    linked.rename(real)
    linked.symlink_to(real, target_is_directory=True)
    before = sorted(p.name for p in real.iterdir())
    args = ["evaluate", str(tiny_bundle), str(data), "--split", "val", "--bootstrap", "100"]
    result = CliRunner().invoke(app, [*args, "--out", str(real / "report")])
    assert result.exit_code == 2 and "error (output_refused)" in result.output, result.output
    assert sorted(p.name for p in real.iterdir()) == before


def test_copies_of_one_picture_in_the_measured_split_are_noted(tiny_bundle, tiny_dataset, tmp_path):
    """One picture filed seven times in the split moved AUROC by 0.03, with no note."""
    import json
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    image = sorted((data / "val").rglob("*.jpg"))[0]
    for k in range(3):
        shutil.copy(image, image.with_name(f"copy{k}.jpg"))
    out = tmp_path / "report"
    args = [
        "evaluate",
        str(tiny_bundle),
        str(data),
        "--split",
        "val",
        "--bootstrap",
        "100",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["identical_copies"] == 3
    assert any("3 image(s) are byte-identical copies of others" in note for note in metrics["notes"])


def test_an_output_folder_inside_any_data_set_is_refused(tiny_bundle, fracatlas_dir, tmp_path):
    """As `predict --overlay-dir` inside a folder it reads: a FracAtlas-layout set was written into."""
    from conftest import _mini_fracatlas

    data = _mini_fracatlas(fracatlas_dir, tmp_path / "mini")
    for out in (data, data / "eval", data / "images" / "eval"):
        args = ["evaluate", str(tiny_bundle), str(data), "--out", str(out), "--overwrite"]
        result = CliRunner().invoke(app, args)  # even with --overwrite
        assert result.exit_code == 2 and "error (output_refused)" in result.output, result.output
        assert not (data / "eval").exists() and not (data / "images" / "eval").exists()


def test_images_that_cannot_be_read_are_named_and_fail_the_run_unless_allowed(
    tiny_bundle, tiny_dataset, tmp_path
):
    """Metrics over fewer images than asked for are no silent success: the report, its JSON and the
    terminal name the file and why, and the exit code is 1 (as `predict`'s) without --allow-unreadable."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data, symlinks=True)
    (data / "val" / "fractured" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + bytes(64))
    args = ["evaluate", str(tiny_bundle), str(data), "--split", "val", "--bootstrap", "100"]
    result = CliRunner().invoke(app, [*args, "--json", "--out", str(tmp_path / "eval")])
    assert result.exit_code == 1, result.output
    metrics = json.loads(result.stdout)
    assert metrics["data"]["n_images"] == 13 and metrics["data"]["n_evaluated"] == 12
    assert [(f["source"], f["error_code"]) for f in metrics["failed"]] == [
        ("val/fractured/broken.jpg", "unreadable_image")
    ]
    assert "error (unreadable_images): 1 of 13 images could not be read" in result.stderr
    assert "val/fractured/broken.jpg (unreadable_image)" in result.stderr
    assert "--allow-unreadable" in result.stderr and "Traceback" not in result.output
    report = (tmp_path / "eval" / "report.html").read_text()
    assert "Images not read" in report and "val/fractured/broken.jpg" in report
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["failed"] == metrics["failed"]
    allowed = CliRunner().invoke(app, [*args, "--allow-unreadable"])
    assert allowed.exit_code == 0, allowed.output
    assert "12/13 images" in allowed.stdout
    assert "warning: 1 of 13 images could not be read" in allowed.stderr
    # none read: said with each one's reason (it was "no image of DATA could be read")
    none = tmp_path / "none"
    for folder in ("Fractured", "Non_fractured"):
        (none / folder).mkdir(parents=True)
        (none / folder / "scan.jpg").write_text("not a picture")
    result = CliRunner().invoke(app, ["evaluate", str(tiny_bundle), str(none), "--split", "all"])
    assert result.exit_code == 1, result.output
    assert f"none of the 2 images of {none} could be read: Fractured/scan.jpg (unsupported_format)" in (
        result.stderr
    )


def test_images_flagged_not_reliable_are_counted_and_said(tiny_dataset, tmp_path):
    """An image cut short (predict: "not reliable: part of the image is missing") was scored in
    every figure with only reliable=0 in predictions.csv to show it."""
    import csv
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data, symlinks=True)
    whole = sorted((data / "val" / "fractured").glob("*.jpg"))[0].read_bytes()
    (data / "val" / "fractured" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    args = [
        "evaluate",
        "default",
        str(data),
        "--split",
        "val",
        "--bootstrap",
        "0",
        "--out",
        str(tmp_path / "e"),
    ]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    with (tmp_path / "e" / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    flagged = [r["source"] for r in rows if r["reliable"] in ("0", "False", "false")]
    assert "val/fractured/cut.jpg" in flagged
    assert metrics["data"]["n_not_reliable"] == len(flagged)
    assert any(
        n.startswith(f"{len(flagged)} of the {len(rows)} images read are flagged not reliable")
        for n in metrics["notes"]
    )


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, where no folder can be made")
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_image_is_read(
    tiny_bundle, tiny_dataset
):
    """Found only when the report was written, such a folder lost the whole evaluation (exit 1,
    after every image was predicted). /proc takes no new folder, even from root."""
    out = Path("/proc/fracsight-evaluate-report")
    args = ["evaluate", str(tiny_bundle), str(tiny_dataset), "--split", "val", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"error (output_refused): cannot write the report to {out}" in result.output
    assert "AUROC" not in result.output and "Traceback" not in result.output


def test_a_folder_where_a_report_file_goes_is_refused_before_any_image_is_read(
    tiny_bundle, tiny_dataset, tmp_path
):
    """A folder named samples.png in --out: found when the files were moved into place, after every
    image was predicted, with half of an earlier report replaced and its metrics.json deleted."""
    out = tmp_path / "ev"
    (out / "samples.png").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    args = ["evaluate", str(tiny_bundle), str(tiny_dataset), "--split", "val", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 2, result.output
    assert f"{out / 'samples.png'} is a folder: the report writes a file of that name" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "samples.png"]


def test_figures_on_a_few_images_say_their_intervals_are_rough(fracatlas_dir, tmp_path):
    """Two fractured images and one other: the AUROC read "1.000 (95% CI 1.000-1.000)" with no word
    that a bootstrap over three images cannot measure the uncertainty."""
    data = tmp_path / "three"
    for folder, n in (("Fractured", 2), ("Non_fractured", 1)):
        (data / folder).mkdir(parents=True)
        for image in sorted((fracatlas_dir / "images" / folder).glob("*.jpg"))[:n]:
            (data / folder / image.name).symlink_to(image)
    args = ["evaluate", "default", str(data), "--split", "all", "--bootstrap", "100"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    assert any(
        "fewer than 10 fractured or other cases in: images (2 fractured, 1 other):" in n for n in notes
    )
    text = CliRunner().invoke(app, args)
    assert "note: fewer than 10 fractured or other cases" in text.stdout
    # one label only: sensitivity's 1.000-1.000 on three images had no note (the other label's
    # absence turned it off)
    alone = tmp_path / "fractured only"
    alone.mkdir()
    fractured = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:3]
    for image in fractured:
        (alone / image.name).symlink_to(image)
    (alone / "labels.csv").write_text("image,fracture\n" + "".join(f"{i.name},1\n" for i in fractured))
    result = CliRunner().invoke(app, ["evaluate", "default", str(alone), "--split", "all", "--json"])
    assert result.exit_code == 0, result.output
    assert any("cases in: images (3 fractured, 0 other):" in n for n in json.loads(result.stdout)["notes"])


def test_overwriting_an_earlier_report_leaves_none_of_its_plots_behind(fracatlas_dir, tmp_path):
    """--overwrite into the folder of an earlier evaluation: its ROC, PR, calibration and confusion
    plots stayed beside the new metrics.json and report.html, passing for the new evaluation's
    (here one without fracture labels, which draws none of them). A user's own file stays."""
    images = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:3]
    images += sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:3]
    labelled, regions = tmp_path / "labelled", tmp_path / "regions only"
    for data in (labelled, regions):
        data.mkdir()
        for image in images:
            (data / image.name).symlink_to(image)
    rows = [f"{image.name},{int(image.parent.name == 'Fractured')}" for image in images]
    (labelled / "labels.csv").write_text("image,fracture\n" + "\n".join(rows) + "\n")
    (regions / "labels.csv").write_text("image,region\n" + "\n".join(f"{i.name},hand" for i in images) + "\n")
    out = tmp_path / "eval"
    args = ["evaluate", "default", "--split", "all", "--bootstrap", "100", "--out", str(out)]
    first = CliRunner().invoke(app, [*args[:2], str(labelled), *args[2:]])
    assert first.exit_code == 0, first.output
    assert (out / "roc.png").is_file() and (out / "confusion.png").is_file()
    (out / "mine.txt").write_text("mine")
    second = CliRunner().invoke(app, [*args[:2], str(regions), *args[2:], "--overwrite"])
    assert second.exit_code == 0, second.output
    region_report = ["metrics.json", "predictions.csv", "report.html", "samples.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*region_report, "mine.txt"])
    # a user's folder with a metrics.json of its own (a common name) is no earlier evaluation:
    # its roc.png, which a region-only evaluation does not write, was removed
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "metrics.json").write_text('{"auc": 0.9}')
    (theirs / "roc.png").write_bytes(b"mine")
    third = CliRunner().invoke(app, [*args[:2], str(regions), *args[2:-1], str(theirs), "--overwrite"])
    assert third.exit_code == 0, third.output
    assert (theirs / "roc.png").read_bytes() == b"mine"
    # the hidden scratch folder of an evaluation killed outright (SIGKILL): the folder it left
    # "empty" to `ls` was refused as not empty, and the scratch stayed for good; one a running
    # evaluation holds (flock), or made a moment ago (not held yet), stays
    import fcntl

    killed = tmp_path / "killed"
    scratches = {name: killed / f".fracsight-evaluate-{name}" for name in ("gone", "held", "new")}
    for scratch in scratches.values():
        scratch.mkdir(parents=True)
        (scratch / "predictions.csv").write_text("source\n")
    for name in ("gone", "held"):
        os.utime(scratches[name], (time.time() - 3600,) * 2)
    held = os.open(scratches["held"], os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        fourth = CliRunner().invoke(app, [*args[:2], str(regions), *args[2:-1], str(killed)])
    finally:
        os.close(held)
    assert fourth.exit_code == 0, fourth.output
    assert sorted(p.name for p in killed.iterdir()) == sorted(
        [*region_report, ".fracsight-evaluate-held", ".fracsight-evaluate-new"]
    )


def test_body_regions_are_matched_ignoring_case_and_unknown_ones_alone_are_refused(fracatlas_dir, tmp_path):
    """A labels.csv saying ``Hand`` and ``LEG`` left every image out of the region head ("their body
    regions ['Hand', 'LEG'] are not among the model's"); one with only regions the model lacks
    (``wrist``) measured nothing and exited 0 with a report of notes."""
    images = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:4]
    spelt, unknown = tmp_path / "spelt", tmp_path / "unknown"
    for data in (spelt, unknown):
        data.mkdir()
        for image in images:
            (data / image.name).symlink_to(image)
    rows = "".join(
        f"{image.name},{region}\n"
        for image, region in zip(images, ["Hand", "LEG", "HAND", "Leg"], strict=True)
    )
    (spelt / "labels.csv").write_text("image,region\n" + rows)
    (unknown / "labels.csv").write_text("image,region\n" + "".join(f"{i.name},wrist\n" for i in images))
    args = ["--split", "all", "--bootstrap", "0", "--json"]
    measured = CliRunner().invoke(app, ["evaluate", "default", str(spelt), *args])
    assert measured.exit_code == 0, measured.output
    result = json.loads(measured.stdout)
    assert result["region_head"]["n_evaluated"] == 4
    assert not any("not among the model's" in note for note in result["notes"])
    refused = CliRunner().invoke(app, ["evaluate", "default", str(unknown), *args])
    assert refused.exit_code == 2
    assert "its body regions ['wrist'] are not among the model's" in refused.output


def test_sample_grid_tells_apart_images_whose_file_names_repeat(fracatlas_dir, tmp_path):
    """In MURA every file is image1.png, image2.png...: the thumbnails were titled by file name
    alone, so a missed fracture in the grid could not be found in the data set."""
    from fracsight.data import load_dataset
    from fracsight.evaluation.run import _grid_content
    from fracsight.inference import Predictor

    for label, folder in (("positive", "Fractured"), ("negative", "Non_fractured")):
        for k, image in enumerate(sorted((fracatlas_dir / "images" / folder).glob("*.jpg"))[:2]):
            study = tmp_path / "valid" / "XR_HAND" / f"patient{k}{label[0]}" / f"study1_{label}"
            study.mkdir(parents=True)
            (study / "image1.jpg").symlink_to(image)
    dataset = load_dataset(tmp_path)
    samples = list(dataset.samples)
    predictor = Predictor("default")
    preds = [predictor.predict(s.path) for s in samples]
    grid = _grid_content(samples, preds, predictor, fracture=True, klass=False, root=dataset.root)
    assert grid is not None and len(grid.order) == 4
    names = [title.split("\np=")[0] for title in grid.titles]
    assert len(set(names)) == 4 and all(name.endswith("/\nimage1.jpg") for name in names)
    assert "…/patient0p/study1_positive/\nimage1.jpg" in names  # shortened from the left


def test_a_data_set_given_as_dot_is_named_in_the_report(tiny_bundle, tiny_dataset, tmp_path, monkeypatch):
    """`fracsight evaluate MODEL .` from inside the data set: the report's title read "... on " and
    each plot "on  [val]", naming no data set; the report's data row said only "."."""
    from PIL import Image

    monkeypatch.chdir(tiny_dataset)
    out = tmp_path / "eval"
    args = ["evaluate", str(tiny_bundle), ".", "--split", "val", "--bootstrap", "100", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = (out / "report.html").read_text(encoding="utf-8")
    assert f"<title>fracsight evaluation: tiny-test on {tiny_dataset.name}</title>" in report
    assert f"<td>{tiny_dataset.resolve()} (val)</td>" in report
    assert f"on {tiny_dataset.name} [val]" in Image.open(out / "roc.png").info["Title"]


def test_export_evaluating_a_leaky_split_warns_as_evaluate_does(tiny_bundle, fracatlas_dir, tmp_path):
    """`fracsight export --evaluate SPLIT` said the leakage through the log, without the "warning: " that
    `train` and `evaluate` print it with on stderr."""
    from test_data_leakage import leaky_class_folders

    data = leaky_class_folders(fracatlas_dir, tmp_path / "leaky", start=40)  # none the tiny run saw
    run = tmp_path / "run"  # the report is written beside the run, not in the shared tiny one
    run.mkdir()
    (run / "best.pt").symlink_to(tiny_bundle.parent / "run" / "best.pt")
    args = ["export", str(run), str(tmp_path / "bundle"), "--evaluate", "test", "--data-dir", str(data)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if "leakage" in line]
    assert len(said) == 1, result.stderr
    assert said[0].startswith(
        f"warning: leakage between the splits of {data}: 2 test images are byte-identical"
    )
    assert (run / "evaluation-test" / "report.html").is_file()
    assert f"evaluation report on test written to {run / 'evaluation-test'}" in result.stdout
    # the report names the bundle, not the hidden folder it was written in (gone once in place)
    recorded = json.loads((run / "evaluation-test" / "metrics.json").read_text(encoding="utf-8"))
    assert recorded["model"]["source"] == str(tmp_path / "bundle"), recorded["model"]
    command = recorded["run"]["command"]
    assert command.startswith(f"fracsight evaluate {tmp_path / 'bundle'} "), command
    assert ".partial" not in (run / "evaluation-test" / "report.html").read_text(encoding="utf-8")

    # exported again (other data, a fix): the first report was replaced without a word
    (run / "evaluation-test" / "metrics.json").write_text("the first export's", encoding="utf-8")
    again = CliRunner().invoke(app, [*args[:2], str(tmp_path / "bundle2"), *args[3:]])
    assert again.exit_code == 0, again.output
    assert (run / "evaluation-test" / "metrics.json").read_text(encoding="utf-8") == "the first export's"
    assert (run / "evaluation-test-2" / "report.html").is_file()
    assert f"evaluation report on test written to {run / 'evaluation-test-2'}" in again.stdout


def test_a_report_written_again_keeps_the_permissions_its_files_were_given(
    tiny_bundle, tiny_dataset, tmp_path
):
    """`evaluate --out ev --overwrite` after `chmod 600 ev/*`: metrics.json, report.html and
    predictions.csv came back readable by everyone."""
    import stat

    args = ["evaluate", str(tiny_bundle), str(tiny_dataset), "--split", "val", "--bootstrap", "0"]
    out = tmp_path / "ev"
    assert CliRunner().invoke(app, [*args, "--out", str(out)]).exit_code == 0
    private = ("metrics.json", "report.html", "predictions.csv")
    for name in private:
        (out / name).chmod(0o600)
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert {name: stat.S_IMODE((out / name).stat().st_mode) for name in private} == dict.fromkeys(
        private, 0o600
    )


def _trained_on_train_and_val(fracatlas_dir: Path, tmp_path: Path, n_train: int, n_val: int) -> Path:
    """A class-folder set with its own train and val splits only (``n_train`` and ``n_val`` images
    of each label), trained on with tiny settings and exported to ``tmp_path / "b"``."""
    from conftest import TINY_TRAINING, _link_images

    data = tmp_path / "data"
    n = n_train + n_val
    fractured = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:n]
    normal = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:n]
    for split, part in (("train", slice(0, n_train)), ("val", slice(n_train, n))):
        _link_images(fractured[part], data / split / "fractured")
        _link_images(normal[part], data / split / "not fractured")
    settings = [a for s in TINY_TRAINING for a in ("--set", s)]
    trained = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), *settings])
    assert trained.exit_code == 0, trained.output
    assert CliRunner().invoke(app, ["export", str(tmp_path / "run"), str(tmp_path / "b")]).exit_code == 0
    return data


def test_a_data_set_too_small_to_carve_a_test_split_is_said_to_lack_one(fracatlas_dir, tmp_path, caplog):
    """A train split of 4 images and a val split: the test split carved out of train got none, and
    training said nothing of it; evaluating on val then advised `--split test`, which is refused."""
    with caplog.at_level("WARNING", logger="fracsight.data"):
        data = _trained_on_train_and_val(fracatlas_dir, tmp_path, 2, 3)
    assert "have no test split: 4 group(s) of images" in caplog.text
    args = ["evaluate", str(tmp_path / "b"), str(data), "--bootstrap", "100", "--json"]
    notes = json.loads(CliRunner().invoke(app, [*args, "--split", "val"]).stdout)["notes"]
    assert any("the data set has no test split" in n for n in notes), notes
    assert not any("--split test" in n for n in notes)
    assert CliRunner().invoke(app, [*args, "--split", "test"]).exit_code == 2
    # compare gave the same advice, for each model measured on images it saw
    both = ["compare", str(tmp_path / "b"), str(tmp_path / "b"), str(data), "--split", "val", "--json"]
    compared = CliRunner().invoke(app, both)
    notes = json.loads(compared.stdout)["notes"]
    assert sum("the data set has no test split" in n for n in notes) == 2, notes
    assert not any("--split test" in n for n in notes)


def test_all_of_a_data_set_whose_test_split_is_carved_advises_it(fracatlas_dir, tmp_path):
    """`--split all` of a data set with train and val only, whose test split training carved out
    of train: the note said the data set had no test split (the split was not made for `all`),
    while `--split test` measured the carved one."""
    data = _trained_on_train_and_val(fracatlas_dir, tmp_path, 12, 4)
    args = ["evaluate", str(tmp_path / "b"), str(data), "--bootstrap", "100", "--json"]
    assert CliRunner().invoke(app, [*args, "--split", "test"]).exit_code == 0
    notes = json.loads(CliRunner().invoke(app, [*args, "--split", "all"]).stdout)["notes"]
    assert any("flatter it; measure on the held-out images with --split test" in n for n in notes), notes
    assert not any("no test split" in n for n in notes)


def test_a_data_sets_types_unmeasured_by_a_model_without_a_class_head_are_named(fracatlas_dir, tmp_path):
    """Fracture-type folders evaluated with the default model (no class head): the types went
    unmeasured without a word, while the reverse (a class head, no class labels) was noted."""
    data = tmp_path / "typed"
    fractured = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:4]
    normal = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[10:13]
    for folder, images in (
        ("Fractured/spiral", fractured[:2]),
        ("Fractured/avulsion", fractured[2:]),
        ("Non_fractured", normal),
    ):
        (data / folder).mkdir(parents=True)
        for image in images:
            (data / folder / image.name).symlink_to(image)
    out = tmp_path / "report"  # with a report too: the note's text replaced the images' names list,
    # and the tables failed ("zip() argument 2 is longer than argument 1"), no report written
    args = [
        "evaluate",
        "default",
        str(data),
        "--split",
        "all",
        "--json",
        "--out",
        str(out),
        "--bootstrap",
        "0",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    assert "the data's class labels (avulsion, spiral) are not measured: the model has no class head" in notes
    with (out / "predictions.csv").open(newline="", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 7


def test_the_report_is_not_written_into_the_models_bundle(tiny_bundle, tiny_dataset, tmp_path) -> None:
    """`--out` inside the bundle (the packaged one too: `pip uninstall` then left 1.4 MB of report
    behind, and `--force` writes over that bundle refused it after) was written without a word."""
    from fracsight.inference import resolve_bundle

    packaged = resolve_bundle(None)
    before = sorted(p.name for p in packaged.iterdir())
    for model, out in (("default", packaged), (str(tiny_bundle), tiny_bundle / "report")):
        result = CliRunner().invoke(
            app, ["evaluate", model, str(tiny_dataset), "--out", str(out), "--overwrite"]
        )
        assert result.exit_code == 2, result.output
        assert "output_refused" in result.stderr and "which is the model's bundle" in result.stderr
    assert sorted(p.name for p in packaged.iterdir()) == before and not (tiny_bundle / "report").exists()


def test_the_relative_data_note_of_a_packaged_model_asks_nothing_impossible(
    fracatlas_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """``evaluate default FRACATLAS`` from another folder told the user to "export the run again",
    which a user of the shipped model cannot do; a user's own bundle keeps that advice."""
    from fracsight.data import load_dataset
    from fracsight.evaluation.run import relative_data_note
    from fracsight.inference import Predictor

    monkeypatch.chdir(tmp_path)
    spec, dataset = Predictor().spec, load_dataset(fracatlas_dir)
    packaged = relative_data_note(spec, fracatlas_dir, dataset, packaged=True)
    assert packaged is not None and packaged.startswith("this packaged model records its training data")
    assert "export the run again" not in packaged
    own = relative_data_note(spec, fracatlas_dir, dataset)
    assert own is not None and own.endswith("export the run again to record it in full")


def test_a_folder_inside_the_training_data_is_said_to_hold_training_images(tiny_bundle, tiny_dataset):
    """`evaluate MODEL data/train --split all` (the advice a missing split gave) scored the model's
    own training images without a word: only the very folder it trained on was known; and `compare`
    of the shipped model with one trained here was refused on the split that run carved out."""
    args = ["--bootstrap", "0", "--json", "--split", "all"]
    for part, n in (("train", 24), ("val", 12)):
        done = CliRunner().invoke(app, ["evaluate", str(tiny_bundle), str(tiny_dataset / part), *args])
        assert done.exit_code == 0, done.output
        notes = json.loads(done.stdout)["notes"]
        said = [note for note in notes if f"of these {n} images were in the train or validation" in note]
        assert said and f"{tiny_dataset / part} lies inside {tiny_dataset.resolve()}" in said[0], notes
        assert "measures it on the images it held out" in said[0]
    seen = int(said[0].split(" of these")[0])  # val: every image; train: all but those carved out as test
    assert seen == 12
    done = CliRunner().invoke(app, ["evaluate", str(tiny_bundle), str(tiny_dataset / "train")])
    assert done.exit_code == 2 and "lies inside" in done.output and "--split test" in done.output
    elsewhere = CliRunner().invoke(app, ["evaluate", "default", str(tiny_dataset / "val"), *args])
    assert "were in the train or validation split" not in elsewhere.output  # not the data it trained on
    # compared on the 2 images B's run carved out as test (too few to compare, but no "no 'test' split")
    compared = CliRunner().invoke(app, ["compare", "default", str(tiny_bundle), str(tiny_dataset)])
    assert "[test]: no image both models read has a label" in compared.output, compared.output


def _with_training_data(tiny_bundle: Path, out: Path, data: str | None) -> Path:
    """A copy of ``tiny_bundle`` whose bundle.json records ``data`` as its training data (None: none)."""
    import shutil

    shutil.copytree(tiny_bundle, out)
    spec = json.loads((out / "bundle.json").read_text())
    if data is None:
        del spec["training"]["data"]
    else:
        spec["training"]["data"] = data
    (out / "bundle.json").write_text(json.dumps(spec))
    return out


def test_the_inside_the_training_data_checks_take_only_what_the_bundle_proves(
    tiny_bundle, tiny_dataset, fracatlas_dir, tmp_path, monkeypatch
):
    """Review of the checks above: a bundle without `training.data` crashed evaluate (TypeError); a
    relative recorded path, which names another folder wherever it is run from, had other images
    called its training ones; and compare took the model whose training data holds DATA for one
    never trained on it ("which neither was trained on")."""
    args = ["--bootstrap", "0", "--json", "--split", "all"]
    unrecorded = _with_training_data(tiny_bundle, tmp_path / "unrecorded", None)
    done = CliRunner().invoke(app, ["evaluate", str(unrecorded), str(tiny_dataset / "val"), *args])
    assert done.exit_code == 0 and "Traceback" not in done.output, done.output
    # "other", relative: a data set of other images, in the folder evaluate runs from
    other = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[200:212]
    normal = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[200:212]
    for images, label in ((other, "fractured"), (normal, "not fractured")):
        (tmp_path / "other" / "train" / label).mkdir(parents=True)
        for image in images:
            (tmp_path / "other" / "train" / label / image.name).symlink_to(image)
    relative = _with_training_data(tiny_bundle, tmp_path / "relative", "other")
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["evaluate", str(relative), "other/train", *args])
    assert done.exit_code == 0, done.output
    assert not any(
        "validation split of the model's training run" in n for n in json.loads(done.stdout).get("notes", [])
    )
    # A trained on DATA (tiny/train, carving a test split), B on the folder around it: refused, not
    # "B never trained on it"
    inner = _with_training_data(tiny_bundle, tmp_path / "inner", str(tiny_dataset / "train"))
    done = CliRunner().invoke(app, ["compare", str(inner), str(tiny_bundle), str(tiny_dataset / "train")])
    assert done.exit_code == 2 and "model B" in done.output and "lies inside" in done.output, done.output
