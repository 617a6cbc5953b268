"""The researcher's path through the real CLI for every head combination a bundle can have:
train (tiny), export, predict (table, CSV, JSON, overlays, study), evaluate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracsight.bundle import load_bundle_spec
from fracsight.cli import app
from head_kinds import HEAD_KINDS

pytestmark = [pytest.mark.slow, pytest.mark.fracatlas]

KINDS = list(HEAD_KINDS)
runner = CliRunner()


def _images(data: Path, n: int = 3) -> list[str]:
    files = sorted(p for p in data.rglob("*.jpg") if "test" in p.parts or p.parent.name == "images")
    return [str(p) for p in files[:n]]


def _run(*args: str):
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})  # no folded headers
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("kind", KINDS)
def test_bundle_has_exactly_the_heads_of_its_data(head_bundle, kind: str) -> None:
    _, bundle = head_bundle(kind)
    spec = load_bundle_spec(bundle)
    assert {h.name for h in spec.heads} == set(HEAD_KINDS[kind])
    assert (spec.class_operating_point is not None) == ("class" in HEAD_KINDS[kind])
    assert bool(spec.operating_points) == ("fracture" in HEAD_KINDS[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_predict_table_csv_json_and_overlays(head_bundle, kind: str, tmp_path: Path) -> None:
    data, bundle = head_bundle(kind)
    heads = HEAD_KINDS[kind]
    images = _images(data)
    table = _run("predict", "--model", str(bundle), *images, "--study")
    assert table.exit_code == 0, table.output
    assert ("fracture probability" in table.output) == ("fracture" in heads)
    assert ("region" in table.output) == ("region" in heads)
    assert ("class (probability)" in table.output) == ("class" in heads)

    out_csv = tmp_path / "out.csv"
    overlays = tmp_path / "overlays"
    done = _run(
        "predict",
        "--model",
        str(bundle),
        *images,
        "--csv",
        str(out_csv),
        "--all-classes",
        "--overlay-dir",
        str(overlays),
        "--json",
        "--study",
    )
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    columns = set(rows[0])
    assert ("fracture_probability" in columns) == ("fracture" in heads)
    assert ("top_box" in columns) == ("fracture" in heads)
    assert ("region" in columns) == ("region" in heads)
    assert ("predicted_class" in columns) == ("class" in heads)
    assert [r["kind"] for r in rows] == ["image"] * len(images) + ["study"]
    for row in rows:
        assert all(
            row[c] != ""
            for c in columns
            if c
            not in (
                "warnings",
                "error_code",
                "error",
                "top_box",
                "top_box_score",
                "region",
                "region_probability",
            )
        )

    payload = json.loads(done.stdout)
    spec = load_bundle_spec(bundle)
    for image, row in zip(payload["images"], rows, strict=False):
        assert ("fracture_probability" in image) == ("fracture" in heads)
        assert ("boxes" in image) == ("fracture" in heads)
        assert ("region_probabilities" in image) == ("region" in heads)
        assert ("classification" in image) == ("class" in heads)
        if "class" in heads:
            c = image["classification"]
            assert set(c["probabilities"]) == set(spec.head("class").classes)
            assert abs(sum(c["probabilities"].values()) - 1) < 1e-4
            assert c["confident"] == (c["probability"] >= c["min_probability"])
            assert row["predicted_class"] == c["predicted"]
            assert float(row[f"p_{c['predicted']}"]) == pytest.approx(c["probability"], abs=1e-4)
            if "fracture" not in heads and image["reliable"]:
                assert image["decision"] == (
                    f"most likely {c['predicted']}"
                    if c["confident"]
                    else f"class uncertain (top: {c['predicted']})"
                )
        # the heatmap shows a fracture map (with boxes) or the predicted class's activation, said plainly
        assert image["localization"] == ("fracture" if "fracture" in heads else "class_activation")
        assert row["decision"] == image["decision"]
    study = payload["studies"][0]
    assert ("fracture_probability" in study) == ("fracture" in heads)
    assert ("classification" in study) == ("class" in heads)
    assert len(list(overlays.glob("*.png"))) == len(images)
    if {"fracture", "class"} <= set(heads):  # the type of a fracture not suspected, said so (as the app)
        wide = runner.invoke(
            app, ["predict", "--model", str(bundle), *images, "--study"], env={"COLUMNS": None}
        )
        unsuspected = [r for r in [*payload["images"], study] if r["fracture_suspected"] is False]
        assert wide.output.count(", no fracture suspected") == len(unsuspected), wide.output


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_reports_the_heads_the_bundle_has(head_bundle, kind: str, tmp_path: Path) -> None:
    data, bundle = head_bundle(kind)
    heads = HEAD_KINDS[kind]
    result = _run(
        "evaluate",
        str(bundle),
        str(data),
        "--split",
        "test",
        "--out",
        str(tmp_path),
        "--json",
        "--bootstrap",
        "100",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert ("auroc" in metrics) == ("fracture" in heads)
    assert ("multiclass" in metrics) == ("class" in heads)
    assert (tmp_path / "report.html").is_file()
    plain = _run("evaluate", str(bundle), str(data), "--split", "test", "--bootstrap", "100")
    assert plain.exit_code == 0, plain.output


def test_a_type_model_on_fracture_labelled_data_says_those_labels_go_unmeasured(head_bundle) -> None:
    """A class-only (fracture type) bundle evaluated on Fractured/<type>/ + Non_fractured/ data:
    the fractured/normal labels went unmeasured without a word (the reverse was noted)."""
    _, bundle = head_bundle("class")
    data, _ = head_bundle("fracture+class")
    result = _run("evaluate", str(bundle), str(data), "--split", "test", "--bootstrap", "100", "--json")
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    wanted = "the data's fracture labels are not measured: the model has no fracture head"
    assert any(note.startswith(wanted) for note in notes), notes


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_corpus_gives_messages_never_tracebacks(head_bundle, kind: str, tmp_path: Path) -> None:
    from corpus import OK, build_corpus, write_corpus

    _, bundle = head_bundle(kind)
    cases = build_corpus()
    paths = write_corpus(tmp_path / "corpus")
    files = [str(paths[c.id]) for c in cases]
    out_csv = tmp_path / "out.csv"
    table = _run(
        "predict",
        "--model",
        str(bundle),
        *files,
        "--csv",
        str(out_csv),
        "--overlay-dir",
        str(tmp_path / "overlays"),
    )
    assert table.exit_code == 1, table.output
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert len(rows) == len(cases)
    for case, row in zip(cases, rows, strict=True):
        assert (row["error_code"] == "") == (case.expect == OK), (case.id, row)
    payload = json.loads(_run("predict", "--model", str(bundle), *files, "--json").stdout)
    assert [("error_code" in r) for r in payload["images"]] == [c.expect != OK for c in cases]


@pytest.mark.parametrize("kind", ["class", "class+region"])
def test_operating_point_of_a_class_only_bundle_is_refused_plainly(head_bundle, kind: str) -> None:
    data, bundle = head_bundle(kind)
    result = _run("predict", "--model", str(bundle), _images(data, 1)[0], "--operating-point", "triage")
    assert result.exit_code == 2  # a bad argument
    assert "has no fracture head" in result.stderr


def test_a_class_without_images_is_named_not_dropped(head_bundle, tmp_path: Path) -> None:
    """A rare type absent from the split measured: its row and macro figures were left out without a
    word ("macro F1 0.205" over 3 of 4 classes), in the terminal, the report and the model card."""
    import dataclasses

    from fracsight.training.card import render_card

    data, bundle = head_bundle("class")
    for name in ("hand", "leg"):  # no hip
        (tmp_path / "data" / name).mkdir(parents=True)
        for path in sorted((data / "train" / name).iterdir())[:4]:
            (tmp_path / "data" / name / path.name).symlink_to(path.resolve())
    out = tmp_path / "report"
    result = _run(
        "evaluate", str(bundle), str(tmp_path / "data"), "--split", "all", "--out", str(out), "--json"
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    block = metrics["multiclass"]
    assert block["per_class"]["hip"]["support"] == 0
    defined = [c["f1"] for c in block["per_class"].values() if c["f1"] is not None]
    assert block["macro_f1"] == pytest.approx(sum(defined) / len(defined))
    few = [n for n in metrics["notes"] if n.startswith("classes with fewer than 10 images")]
    assert len(few) == 1 and "hip (no images)" in few[0], metrics["notes"]
    assert "; hip has none: its recall and AUROC are not measured" in few[0]
    assert "the macro AUROC averages the other 2 classes" in few[0]
    assert ("counts hip at 0" in few[0]) == (block["per_class"]["hip"]["f1"] is not None)
    assert "true hip (no images)" in (out / "report.html").read_text()

    spec = load_bundle_spec(bundle)
    card = render_card(dataclasses.replace(spec, metrics={**spec.metrics, "test": {"multiclass": block}}))
    assert "No image of this split is labelled hip: the class head was not measured on that class" in card


def test_the_macro_auroc_is_said_unmeasured_when_one_class_is_present_alone() -> None:
    """Only hand images in the split: hand's one-vs-rest AUROC is undefined too, the table showed
    "Macro AUROC —" while the note said it "averages the other 1 class"."""
    from fracsight.evaluation.run import _classes_without_images

    def row(support: int, auroc: float | None) -> dict:
        return {"support": support, "auroc": auroc, "f1": None}

    alone = _classes_without_images({"hand": row(5, None), "leg": row(0, None)})
    assert "the macro AUROC is not measured" in alone and "averages" not in alone
    two = _classes_without_images({"hand": row(5, 0.8), "hip": row(3, 0.7), "leg": row(0, None)})
    assert "the macro AUROC averages the other 2 classes" in two
