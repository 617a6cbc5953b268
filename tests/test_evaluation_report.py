"""evaluate_predictions -> strict JSON; write_report -> one self-contained HTML file."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fracsight.evaluation.metrics import auroc
from fracsight.evaluation.report import (
    PositiveWords,
    evaluate_classes,
    evaluate_predictions,
    render_all_plots,
    to_jsonable,
    write_report,
)

REGION_NAMES = ["hand", "leg", "hip"]


def _case(n: int = 240) -> dict:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    regions = [(REGION_NAMES[i % 3],) if i % 5 else ("leg", "hip") for i in range(n)]
    region_probs = rng.dirichlet(np.ones(3), n)
    class_labels = np.where(y == 1, rng.integers(0, 3, n), -1)  # type known for fractured only
    class_probs = rng.dirichlet(np.ones(3), n)
    return {
        "y": y,
        "p": p,
        "regions": regions,
        "region_probs": region_probs,
        "class_labels": class_labels,
        "class_probs": class_probs,
        "study_ids": [f"s{i // 3}" for i in range(n)],
    }


@pytest.fixture(scope="module")
def case() -> dict:
    return _case()


@pytest.fixture(scope="module")
def metrics(case: dict) -> dict:
    return evaluate_predictions(
        case["y"],
        case["p"],
        threshold_points={"default": 0.5, "high_sensitivity": 0.3},
        regions=case["regions"],
        region_probs=case["region_probs"],
        region_names=REGION_NAMES,
        study_ids=case["study_ids"],
        class_labels=case["class_labels"],
        class_probs=case["class_probs"],
        class_names=["avulsion", "greenstick", "oblique"],
        n_bootstrap=200,
    )


def test_metrics_content(case: dict, metrics: dict) -> None:
    assert metrics["n"] == 240
    assert metrics["auroc"]["value"] == pytest.approx(auroc(case["y"], case["p"]))
    assert metrics["auroc"]["ci_low"] < metrics["auroc"]["value"] < metrics["auroc"]["ci_high"]
    assert metrics["average_precision"]["ci_low"] < metrics["average_precision"]["ci_high"]
    assert 0 <= metrics["calibration"]["ece"] <= 1
    assert metrics["sensitivity_at_specificity"]["specificity_target"] == 0.9
    assert set(metrics["thresholds"]) == {"default", "high_sensitivity"}
    assert (
        metrics["thresholds"]["high_sensitivity"]["sensitivity"]
        >= metrics["thresholds"]["default"]["sensitivity"]
    )
    assert set(metrics["regions"]) == set(REGION_NAMES)
    hip = np.array(["hip" in r for r in case["regions"]])
    assert metrics["regions"]["hip"]["n"] == int(hip.sum())
    assert metrics["regions"]["hip"]["auroc"]["value"] == pytest.approx(auroc(case["y"][hip], case["p"][hip]))
    assert metrics["region_head"]["n_evaluated"] == 240
    assert metrics["study"]["method"] == "mean" and metrics["study"]["n"] == 80
    assert "studies" in metrics["ci_method"]
    assert metrics["multiclass"]["n"] == int(case["y"].sum())


def test_metrics_are_strict_json(metrics: dict) -> None:
    text = json.dumps(metrics, allow_nan=False)
    assert json.loads(text) == metrics


def test_single_class_gives_none_not_nan() -> None:
    m = evaluate_predictions([0, 0, 0], [0.1, 0.2, 0.7], threshold_points={"t": 0.5}, n_bootstrap=50)
    assert m["auroc"] == {"value": None, "ci_low": None, "ci_high": None}
    assert m["thresholds"]["t"]["sensitivity"] is None
    json.dumps(m, allow_nan=False)


def test_to_jsonable() -> None:
    out = to_jsonable(
        {"a": np.float32(0.5), "b": np.int64(3), "c": float("nan"), "d": (1, np.inf), 4: Path("x")}
    )
    assert out == {"a": 0.5, "b": 3, "c": None, "d": [1, None], "4": "x"}
    assert type(out["b"]) is int


def test_report_is_self_contained(tmp_path: Path, case: dict, metrics: dict) -> None:
    points = {"default": 0.5}
    plots = render_all_plots(
        case["y"],
        case["p"],
        tmp_path / "plots",
        metrics=metrics,
        threshold_points=points,
        class_labels=case["class_labels"],
        class_probs=case["class_probs"],
        class_names=["avulsion", "greenstick", "oblique"],
        history=[{"epoch": 1, "train_loss": 0.7, "val_loss": 0.6, "val_auroc": 0.8}],
    )
    assert list(plots) == ["roc", "pr", "calibration", "confusion", "confusion_multiclass", "training_curves"]
    model_info = {
        "name": "fracatlas-lite0-384-v1 <b>",
        "version": "1.0",
        "dataset": "FracAtlas test",
        "px": 384,
    }
    report = write_report(metrics, tmp_path / "out", title="Test report", model_info=model_info, plots=plots)
    assert report == tmp_path / "out" / "report.html"
    html = report.read_text(encoding="utf-8")
    assert "fracsight is a decision aid, not a diagnosis" in html
    assert f"{metrics['auroc']['value']:.3f}" in html
    assert "fracatlas-lite0-384-v1 &lt;b&gt;" in html and "FracAtlas test" in html and "1.0" in html
    assert html.count("data:image/png;base64,") == len(plots)
    assert 'src="http' not in html and "file://" not in html and str(tmp_path) not in html
    srcs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert all(s.startswith("data:") for s in srcs)
    assert "<link" not in html and "<script" not in html
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert saved == metrics


def test_report_without_plots_or_extras(tmp_path: Path) -> None:
    m = evaluate_predictions([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.6], n_bootstrap=20)
    html = write_report(m, tmp_path, model_info={}).read_text(encoding="utf-8")
    assert "not stated" in html and "decision aid, not a diagnosis" in html


# ---- heads: a class head alone, with its operating point ---------------------------------------------
CLASS_NAMES = ["avulsion", "greenstick", "oblique"]


def test_evaluate_classes_counts_labelled_images_only(case: dict) -> None:
    from fracsight.bundle import ClassOperatingPoint
    from fracsight.evaluation.thresholds import selective_accuracy

    validation = ClassOperatingPoint(0.5, "chosen on validation", accuracy=0.93, coverage=0.6)
    m = evaluate_classes(
        case["class_labels"], case["class_probs"], CLASS_NAMES, min_probability=0.5, validation=validation
    )
    labelled = case["class_labels"] >= 0
    assert m["n"] == int(labelled.sum()) and m["n_unlabelled"] == int((~labelled).sum())
    assert sum(c["support"] for c in m["per_class"].values()) == m["n"]
    op = m["operating_point"]
    y, probs = case["class_labels"][labelled], case["class_probs"][labelled]
    accuracy, coverage = selective_accuracy(y, probs, 0.5)
    assert op["accuracy"] == pytest.approx(accuracy) and op["coverage"] == pytest.approx(coverage)
    assert op["n_confident"] == round(coverage * m["n"])
    assert (op["min_probability"], op["validation_accuracy"], op["validation_coverage"]) == (0.5, 0.93, 0.6)
    assert op["description"] == "chosen on validation"
    assert "study" not in m
    json.dumps(m, allow_nan=False)


def test_evaluate_classes_nobody_confident_and_no_labels() -> None:
    probs = np.full((4, 3), 1 / 3)
    m = evaluate_classes([0, 1, 2, -1], probs, CLASS_NAMES, min_probability=0.9)
    assert m["operating_point"]["accuracy"] is None and m["operating_point"]["coverage"] == 0.0
    assert m["operating_point"]["validation_accuracy"] is None
    with pytest.raises(ValueError, match="no image has a class label"):
        evaluate_classes([-1, -1], probs[:2], CLASS_NAMES)


def test_evaluate_classes_by_study() -> None:
    # study a: two views of class 0 (one leans to class 1, but with a low weight); study b: class 2;
    # study c: no labelled view, left out
    labels = [0, 0, 2, -1]
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.9, 0.05, 0.05]])
    m = evaluate_classes(
        labels, probs, CLASS_NAMES, study_ids=["a", "a", "b", "c"], study_weights=[0.9, 0.1, 0.5, 0.5]
    )
    study = m["study"]
    assert study["n"] == 2 and study["accuracy"] == 1.0
    assert study["method"] == "mean weighted by fracture probability"
    assert study["operating_point"]["coverage"] == 1.0


def test_class_only_plots_and_report(tmp_path: Path, case: dict) -> None:
    labels, probs = case["class_labels"], case["class_probs"]
    m = evaluate_classes(labels, probs, CLASS_NAMES, min_probability=0.45)
    plots = render_all_plots(
        None,
        None,
        tmp_path / "plots",
        class_labels=labels,
        class_probs=probs,
        class_names=CLASS_NAMES,
        class_min_probability=0.45,
    )
    assert list(plots) == ["confusion_multiclass", "class_coverage"]
    metrics = {"multiclass": m, "heads": ["class"]}
    html = write_report(metrics, tmp_path / "out", model_info={"heads": "class (a, b, c)"}, plots=plots)
    text = html.read_text(encoding="utf-8")
    assert "<h2>Class head</h2>" in text and "Class operating point" in text
    assert "Class accuracy against coverage" in text and "Heads" in text
    assert "fracture detection" not in text and "ROC curve" not in text and "Confidence intervals" not in text


def test_fracture_and_class_report_has_both_sections(tmp_path: Path, metrics: dict) -> None:
    text = write_report(metrics, tmp_path).read_text(encoding="utf-8")
    assert "Image-level fracture detection" in text and "<h2>Class head</h2>" in text


# ---- what the report and its plots say they show ---------------------------------------------------
def test_plot_titles_name_model_split_and_counts(tmp_path: Path, case: dict, metrics: dict) -> None:
    from PIL import Image

    plots = render_all_plots(
        case["y"],
        case["p"],
        tmp_path,
        metrics={**metrics, "ci_level": 0.9},
        threshold_points={"balanced": 0.5, "triage": 0.3},
        confusion_threshold=0.5,
        class_labels=case["class_labels"],
        class_probs=case["class_probs"],
        class_names=CLASS_NAMES,
        class_min_probability=0.4,
        subtitle="mymodel v3 on mydata [val]",
    )
    titles = {name: Image.open(path).text["Title"] for name, path in plots.items()}
    n_pos = int(case["y"].sum())
    for name in ("roc", "pr", "calibration", "confusion"):
        assert f"mymodel v3 on mydata [val], n=240 ({n_pos} fractured)" in titles[name]
    assert "balanced, threshold 0.500" in titles["confusion"]
    assert titles["calibration"].startswith("Reliability diagram (ECE ")
    for name in ("confusion_multiclass", "class_coverage"):
        assert f"mymodel v3 on mydata [val], n={n_pos} images with a class label" in titles[name]


def test_study_section_counts_studies_and_says_how(tmp_path: Path, metrics: dict) -> None:
    text = write_report(metrics, tmp_path).read_text(encoding="utf-8")
    study = text.split("Study-level fracture detection", 1)[1]
    assert f"<td>Studies (fractured / not fractured)</td><td>{metrics['study']['n']} (" in study
    assert "<td>Images (fractured / not fractured)</td>" in text
    assert "mean of its image probabilities" in study and "stratified by label, over studies" in study


def test_one_class_split_and_undefined_values_are_explained(tmp_path: Path) -> None:
    m = evaluate_predictions([0, 0, 0, 0], [0.1, 0.2, 0.7, 0.3], threshold_points={"t": 0.5}, n_bootstrap=20)
    m["notes"] = ["the data set has no 'test' split of its own: measured on the one fracsight carves out"]
    plots = render_all_plots([0, 0, 0, 0], [0.1, 0.2, 0.7, 0.3], tmp_path / "p", metrics=m)
    assert "roc" not in plots and "pr" not in plots
    text = write_report(m, tmp_path, plots=plots).read_text(encoding="utf-8")
    assert "All 4 images here are not fractured" in text and "so they are not given" in text
    assert "— : not defined here" in text  # sensitivity without fractured images
    assert "<h2>Notes</h2>" in text and "Not measured" not in text  # the note is about what was measured


def test_report_and_plots_word_positives_as_the_data_do(
    tmp_path: Path, case: dict, metrics: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On MURA (normal / abnormal) the summary said "abnormal", but the report's tables and headings,
    the plots' titles, axes and labels said "fractured": all now read the metrics' ``data.positive``."""
    import matplotlib.text

    drawn: list[str] = []
    set_text = matplotlib.text.Text.set_text
    monkeypatch.setattr(matplotlib.text.Text, "set_text", lambda t, s: set_text(t, drawn.append(str(s)) or s))
    mura = {**metrics, "data": {"positive": "abnormal"}}
    plots = render_all_plots(case["y"], case["p"], tmp_path, metrics=mura, threshold_points={"balanced": 0.5})
    shown = {**plots, "samples": plots["roc"]}  # any image: its caption is the report's
    text = write_report(mura, tmp_path, plots=shown).read_text(encoding="utf-8")
    for said in (
        "<h2>Image-level abnormality detection</h2>",
        "<td>Images (abnormal / not abnormal)</td>",
        "<h2>Study-level abnormality detection</h2>",
        "a study is abnormal if any of its images is",
        "<td>Studies (abnormal / not abnormal)</td>",
        "<h2>Abnormality detection by body region</h2>",
        "<th>Abnormal</th>",
        "<th>Observed abnormal</th>",
        "<figcaption>Confusion matrix (abnormality)</figcaption>",
        "(missed abnormalities, then false alarms;",
    ):
        assert said in text
    assert "fractur" not in text.lower()
    n_pos = int(case["y"].sum())
    assert f"ROC curve\nn=240 ({n_pos} abnormal)" in drawn and "observed fraction abnormal" in drawn
    assert {"not abnormal", "abnormal"} <= set(drawn)  # the confusion matrix's classes
    assert not [t for t in drawn if "fractur" in t.lower()]
    one_class = evaluate_predictions([0, 0, 0], [0.1, 0.7, 0.3], threshold_points={"t": 0.5}, n_bootstrap=20)
    text = write_report({**one_class, "data": {"positive": "abnormal"}}, tmp_path).read_text(encoding="utf-8")
    assert "All 3 images here are not abnormal" in text and "need both abnormal and non-abnormal" in text
    assert "sensitivity without abnormal images" in text and "fractur" not in text.lower()


def test_positive_words_fall_back_to_fractured_for_metrics_without_them() -> None:
    words = PositiveWords.of({"data": {"n_images": 3}})
    assert (words.positive, words.negative, words.finding, words.findings) == (
        "fractured",
        "not fractured",
        "fracture",
        "fractures",
    )
    mura = PositiveWords.of({"data": {"positive": "abnormal"}})
    assert (mura.negative, mura.finding, mura.findings) == ("not abnormal", "abnormality", "abnormalities")


def test_sample_grid_is_shown_at_full_size(tmp_path: Path, metrics: dict) -> None:
    from fracsight.evaluation.plots import plot_sample_grid

    grid = plot_sample_grid([np.zeros((20, 20))] * 8, ["a\nb"] * 8, tmp_path / "samples.png")
    text = write_report(metrics, tmp_path, plots={"samples": grid}).read_text(encoding="utf-8")
    assert '<figure class="wide"><img alt="Sample predictions: where the data is labelled, the model' in text
    assert "most confident errors first" in text
    assert "figure.wide img { max-width: 100%; }" in text


# the sample grid's choice (fracsight.evaluation.run._grid_content) on made-up predictions
_OP = SimpleNamespace(name="balanced", threshold=0.5)
_FRACTURE_MODEL = SimpleNamespace(has_fracture_head=True, operating_point=_OP, classes=())


def _fracture_case(cases: list[tuple[int, float]]) -> tuple[list, list]:
    """Samples ``img<i>.png`` with fracture label y and predictions of probability p, at t=0.5."""
    from fracsight.data import FRACTURE, Sample

    samples = [Sample(Path(f"img{i}.png"), labels={FRACTURE: y}) for i, (y, _) in enumerate(cases)]
    preds = [
        SimpleNamespace(fracture_probability=p, fracture_suspected=p >= _OP.threshold, classification=None)
        for _, p in cases
    ]
    return samples, preds


def _ids(samples: list, order: list[int]) -> list[str]:
    return [samples[i].image_id.removesuffix(".png") for i in order]


def test_sample_grid_shows_the_most_confident_errors_first() -> None:
    from fracsight.evaluation.run import _grid_content

    cases = [
        (1, 0.30), (1, 0.10), (1, 0.20), (1, 0.45), (1, 0.05), (1, 0.10),  # img0-5: 6 missed fractures
        (0, 0.60), (0, 0.95),  # img6-7: 2 false alarms
        (1, 0.90), (1, 0.70),  # img8-9: found
        (0, 0.01), (0, 0.40), (0, 0.20), (0, 0.02), (0, 0.30),  # img10-14: cleared
    ]  # fmt: skip
    samples, preds = _fracture_case(cases)
    grid = _grid_content(samples, preds, _FRACTURE_MODEL, fracture=True, klass=False)
    assert grid is not None
    # lowest probability first among the misses (img1 and img5 tie: sample order), highest among false alarms
    assert _ids(samples, grid.order) == [
        *("img4", "img1", "img5", "img2"),
        *("img7", "img6"),
        *("img8", "img9"),
        *("img10", "img13", "img12", "img14"),
    ]
    assert grid.sections == [
        ("Missed fractures (fractured images not suspected, lowest probability first): 4 of 6", 4),
        ("False alarms (normal images suspected, highest probability first): all 2", 2),
        ("Fractures found (highest probability first): all 2", 2),
        ("Normal images cleared (lowest probability first): 4 of 5", 4),
    ]
    assert grid.labels == [1] * 4 + [0] * 2 + [1] * 2 + [0] * 4
    assert grid.predicted == [0] * 4 + [1] * 2 + [1] * 2 + [0] * 4  # red borders first
    assert grid.titles[0] == "img4.png\np=0.05 no fracture, true: fracture"
    assert grid.titles[4] == "img7.png\np=0.95 fracture, true: no fracture"
    assert grid.shows == "the most confident errors first, then correct ones, at the balanced threshold 0.500"
    assert grid.counted == "n=15 (8 fractured)"
    again = _grid_content(samples, preds, _FRACTURE_MODEL, fracture=True, klass=False)
    assert again == grid  # deterministic


def test_sample_grid_words_positives_as_the_data_do() -> None:
    from fracsight.evaluation.run import _grid_content

    samples, preds = _fracture_case([(1, 0.2), (0, 0.8), (1, 0.9), (0, 0.1)])
    words = PositiveWords("abnormal")
    grid = _grid_content(samples, preds, _FRACTURE_MODEL, fracture=True, klass=False, words=words)
    assert grid is not None
    assert [heading.split(":")[0] for heading, _ in grid.sections] == [
        "Missed abnormalities (abnormal images not suspected, lowest probability first)",
        "False alarms (normal images suspected, highest probability first)",
        "Abnormalities found (highest probability first)",
        "Normal images cleared (lowest probability first)",
    ]
    assert grid.titles[0] == "img0.png\np=0.20 no abnormality\ntrue: abnormality"  # 40 wide: two lines
    assert grid.counted == "n=4 (2 abnormal)"


def test_sample_grid_of_a_fracture_and_type_model_gives_the_true_type_beside_the_one_said() -> None:
    """A green "Fractures found" cell read "p=0.90 fracture Greenstick, true: fracture" of an
    Avulsion: the type said looked confirmed, the true one was never shown."""
    from fracsight.data import CLASS, FRACTURE, Sample
    from fracsight.evaluation.run import _grid_content

    model = SimpleNamespace(has_fracture_head=True, operating_point=_OP, classes=("Avulsion", "Greenstick"))
    samples = [
        Sample(Path("img0.png"), labels={FRACTURE: 1, CLASS: 0}),
        Sample(Path("img1.png"), labels={FRACTURE: 0}),
    ]
    preds = [
        SimpleNamespace(
            fracture_probability=p,
            fracture_suspected=p >= 0.5,
            classification=SimpleNamespace(predicted=said),
        )
        for p, said in ((0.9, "Greenstick"), (0.1, "Avulsion"))
    ]
    grid = _grid_content(samples, preds, model, fracture=True, klass=True, class_names=("Avulsion",))
    assert grid is not None
    assert grid.titles == [
        "img0.png\np=0.90 fracture Greenstick\ntrue: fracture Avulsion",
        "img1.png\np=0.10 no fracture\ntrue: no fracture",
    ]


def test_sample_grid_says_when_the_data_hold_no_image_of_a_label() -> None:
    """ "Missed fractures: none at the threshold" on a split without fractures read as a perfect model."""
    from fracsight.evaluation.run import _grid_content

    samples, preds = _fracture_case([(0, 0.1), (0, 0.8), (0, 0.3)])
    grid = _grid_content(samples, preds, _FRACTURE_MODEL, fracture=True, klass=False)
    assert grid is not None
    assert [heading for heading, _ in grid.sections][::2] == [
        "Missed fractures: no fractured images among those measured",
        "Fractures found: no fractured images among those measured",
    ]


def test_sample_grid_says_when_a_group_is_empty(tmp_path: Path) -> None:
    from PIL import Image

    from fracsight.evaluation.run import _grid_content, _sample_grid

    cases = [(1, 0.2), (1, 0.8), (0, 0.1), (0, 0.3), (1, 0.9)]  # no false alarm
    samples, preds = _fracture_case(cases)
    grid = _grid_content(samples, preds, _FRACTURE_MODEL, fracture=True, klass=False)
    assert grid is not None
    assert _ids(samples, grid.order) == ["img0", "img4", "img1", "img2", "img3"]
    assert [heading for heading, _ in grid.sections] == [
        "Missed fractures (fractured images not suspected, lowest probability first): all 1",
        "False alarms: none at the balanced threshold 0.500",
        "Fractures found (highest probability first): all 2",
        "Normal images cleared (lowest probability first): all 2",
    ]
    assert [n for _, n in grid.sections] == [1, 0, 2, 2]
    for i, _ in enumerate(cases):  # real images for the drawing
        Image.fromarray(np.full((40, 32), 40 * i, dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    samples = [dataclasses.replace(s, path=tmp_path / s.path) for s in samples]
    path = _sample_grid(
        samples,
        preds,
        _FRACTURE_MODEL,
        tmp_path / "samples.png",
        fracture=True,
        klass=False,
        title="Sample predictions\nm v1 on data [test]",
    )
    assert path is not None
    assert Image.open(path).text["Title"] == (
        "Sample predictions: the most confident errors first, then correct ones, at the balanced threshold "
        "0.500 - m v1 on data [test], n=5 (3 fractured) - border: green = prediction agrees with the "
        "label, red = it does not"
    )


def test_sample_grid_without_labels_is_the_most_confident_and_says_so() -> None:
    from fracsight.evaluation.run import _grid_content

    cases = [(1, 0.55), (0, 0.02), (1, 0.97), (0, 0.5), (1, 0.02)]
    samples, preds = _fracture_case(cases)
    grid = _grid_content(samples, preds, _FRACTURE_MODEL, fracture=False, klass=False)
    assert grid is not None
    assert _ids(samples, grid.order) == ["img1", "img4", "img2", "img0", "img3"]  # ties: sample order
    assert grid.sections == [] and grid.labels is None and grid.predicted is None
    assert grid.shows == (
        "the 5 most confident (farthest from the balanced threshold 0.500; no fracture labels to find "
        "errors with)"
    )
    assert grid.titles[2] == "img2.png\np=0.97 fracture"


def test_sample_grid_of_a_class_model_shows_wrong_classes_first() -> None:
    from fracsight.data import CLASS, Sample
    from fracsight.evaluation.run import _grid_content

    model = SimpleNamespace(has_fracture_head=False, operating_point=None, classes=("hand", "hip", "leg"))
    data_classes = ("hand", "leg")  # the data lacks 'hip'
    cases = [(0, "hand", 0.9), (1, "hand", 0.8), (1, "leg", 0.6), (0, "hip", 0.95), (1, "leg", 0.99)]
    samples = [Sample(Path(f"img{i}.png"), labels={CLASS: c}) for i, (c, _, _) in enumerate(cases)]
    preds = [
        SimpleNamespace(classification=SimpleNamespace(predicted=k, probability=q, confident=q >= 0.7))
        for _, k, q in cases
    ]
    grid = _grid_content(samples, preds, model, fracture=False, klass=True, class_names=data_classes)
    assert grid is not None
    assert _ids(samples, grid.order) == ["img3", "img1", "img4", "img0", "img2"]
    assert grid.sections == [
        ("Wrong classes (highest probability first): all 2", 2),
        ("Right classes (highest probability first): all 3", 3),
    ]
    assert grid.labels == [0, 2, 2, 0, 2] and grid.predicted == [1, 0, 2, 0, 2]  # the model's numbering
    assert grid.titles[0] == "img3.png\nhip 0.95, true: hand"
    assert grid.titles[4] == "img2.png\nuncertain (leg) 0.60, true: leg"
    right = [s for s, (_, k, _) in zip(samples, cases, strict=True) if data_classes[s.labels[CLASS]] == k]
    only_right = _grid_content(
        right, [preds[0], preds[2], preds[4]], model, fracture=False, klass=True, class_names=data_classes
    )
    assert only_right is not None
    assert only_right.sections[0] == ("Wrong classes: none among the 3 images with a class label", 0)


def test_a_confusion_row_without_images_shows_no_share():
    """One-class test data (no fractured image), or a class the data lacks: its row read "0%" in
    every cell, as if the model had found none of its images."""
    from fracsight.evaluation.plots import confusion_cell_text

    assert confusion_cell_text(3, 4) == "3\n75%"
    assert confusion_cell_text(0, 4) == "0\n0%"
    assert confusion_cell_text(0, 0) == "0"


def test_sample_grid_titles_with_long_class_names_break_rather_than_run_into_their_neighbours() -> None:
    """A fracture + type model's false alarm was titled "p=0.91 fracture Greenstick fracture, true: no
    fracture" on one line, a class model's "uncertain (Avulsion) 0.25, true: Greenstick fx": wider than
    the thumbnail, each ran into the titles beside it (samples.png of `fracsight evaluate`)."""
    from fracsight.data import CLASS, FRACTURE, Sample
    from fracsight.evaluation.run import _SAID_WIDTH, _grid_content

    typed = SimpleNamespace(
        has_fracture_head=True, operating_point=_OP, classes=("Avulsion", "Greenstick fracture")
    )
    samples = [Sample(Path("n0.png"), labels={FRACTURE: 0}), Sample(Path("f0.png"), labels={FRACTURE: 1})]
    preds = [
        SimpleNamespace(
            fracture_probability=p,
            fracture_suspected=p >= _OP.threshold,
            classification=SimpleNamespace(predicted=kind, probability=0.9, confident=True),
        )
        for p, kind in ((0.91, "Greenstick fracture"), (0.2, "Avulsion"))
    ]
    grid = _grid_content(samples, preds, typed, fracture=True, klass=False)
    assert grid is not None
    assert grid.titles == [
        "f0.png\np=0.20 no fracture, true: fracture",  # fits: one line, as before
        "n0.png\np=0.91 fracture Greenstick fracture\ntrue: no fracture",
    ]
    classes = SimpleNamespace(
        has_fracture_head=False, operating_point=None, classes=("Avulsion", "Greenstick fx")
    )
    samples = [Sample(Path("g0.png"), labels={CLASS: 1})]
    preds = [
        SimpleNamespace(
            classification=SimpleNamespace(predicted="Avulsion", probability=0.25, confident=False)
        )
    ]
    grid = _grid_content(samples, preds, classes, fracture=False, klass=True, class_names=classes.classes)
    assert grid is not None and grid.titles == ["g0.png\nuncertain (Avulsion) 0.25\ntrue: Greenstick fx"]
    assert all(len(line) <= _SAID_WIDTH for title in grid.titles for line in title.split("\n"))


# ---- what the report's tables say, read as a researcher reads them ------------------------------------
def _section(html: str, heading: str) -> str:
    """The report's text from ``heading`` to the next h2."""
    return html.split(heading, 1)[1].split("<h2>", 1)[0]


def test_each_table_of_intervals_says_what_they_resample(tmp_path: Path) -> None:
    """The intervals resample whole groups of related images, but the tables said only "(95% CI)" (the
    region table "AUROC (CI)", with no level): what was resampled stood at the report's end alone."""
    y = [0, 1] * 12
    p = [0.2, 0.7, 0.4, 0.6] * 6
    regions = [("hand",) if i % 4 < 2 else ("leg",) for i in range(24)]
    groups = [f"patient{i // 3}" for i in range(24)]
    m = evaluate_predictions(
        y, p, threshold_points={"t": 0.5}, regions=regions, groups=groups, n_bootstrap=50
    )
    html = write_report(m, tmp_path).read_text(encoding="utf-8")
    said = "95% confidence intervals: percentile bootstrap, resampling whole groups of related images"
    image_level = _section(html, "<h2>Image-level fracture detection</h2>")
    assert (
        said in image_level.split("<h3>Operating points</h3>")[0] and "8 groups), over images" in image_level
    )
    by_region = _section(html, "detection by body region</h2>")
    assert "<th>AUROC (95% CI)</th>" in by_region and said in by_region
    # without resamples there is no interval: no "(95% CI)" and nothing said of one
    bare = evaluate_predictions(y, p, threshold_points={"t": 0.5}, regions=regions, n_bootstrap=0)
    text = write_report(bare, tmp_path / "bare").read_text(encoding="utf-8")
    assert "CI)" not in text and "percentile bootstrap" not in text
    assert "No confidence intervals: no bootstrap resamples were drawn." in text


def test_study_intervals_are_said_to_resample_studies_next_to_their_table(
    tmp_path: Path, metrics: dict
) -> None:
    study = _section(write_report(metrics, tmp_path).read_text(encoding="utf-8"), "Study-level fracture")
    summary = study.split("<h3>Operating points</h3>")[0]
    assert (
        "95% confidence intervals: percentile bootstrap, stratified by label, over studies; 200 resamples"
        in summary
    )


def test_sensitivity_and_specificity_show_the_images_they_count(tmp_path: Path) -> None:
    """Sensitivity 0.877 is 100 of 114 fractured images; the tables gave the rate alone, and by body
    region (6 fractured hips) a 1.000 without saying of how many."""
    y = [1] * 8 + [0] * 12
    p = [0.9] * 7 + [0.1] + [0.8] * 3 + [0.2] * 9
    regions = [("hip",)] * 4 + [("hand",)] * 4 + [("hip",)] * 12
    m = evaluate_predictions(y, p, threshold_points={"balanced": 0.5}, regions=regions, n_bootstrap=0)
    assert m["regions"]["hand"]["thresholds"]["balanced"] == {
        "sensitivity": 0.75,
        "specificity": None,
        "tp": 3,
        "fn": 1,
        "tn": 0,
        "fp": 0,
    }
    html = write_report(m, tmp_path).read_text(encoding="utf-8")
    points = _section(html, "<h3>Operating points</h3>")
    assert "<td>balanced</td><td>0.500</td><td>0.875\xa0(7/8)</td><td>0.750\xa0(9/12)</td>" in points
    by_region = _section(html, "detection by body region</h2>")
    hip = "<td>hip</td><td>16</td><td>4</td><td>1.000</td><td>1.000\xa0(4/4)</td><td>0.750\xa0(9/12)</td>"
    assert hip in by_region
    assert "<td>hand</td><td>4</td><td>4</td><td>—</td><td>0.750\xa0(3/4)</td><td>—</td>" in by_region
    assert "— : not defined here" in by_region


def test_a_region_head_auroc_that_cannot_be_had_is_explained(tmp_path: Path) -> None:
    """MURA's XR_HAND: every image is of the hand, so no region has an AUROC; the table showed a column
    of dashes and a macro AUROC of "—" with no word why."""
    m = {
        "region_head": {
            "region_names": ["hand", "leg"],
            "per_region": {
                "hand": {"auroc": None, "n_positive": 12, "n_negative": 0},
                "leg": {"auroc": None, "n_positive": 0, "n_negative": 12},
            },
            "macro_auroc": None,
            "region_accuracy": 0.75,
            "n_evaluated": 12,
        }
    }
    region_head = _section(write_report(m, tmp_path).read_text(encoding="utf-8"), "<h2>Body-region head</h2>")
    assert "AUROC needs images of the region and images of other regions" in region_head
    defined = {**m["region_head"], "macro_auroc": 0.9}
    defined["per_region"] = {k: {**v, "auroc": 0.9} for k, v in m["region_head"]["per_region"].items()}
    text = write_report({"region_head": defined}, tmp_path / "defined").read_text(encoding="utf-8")
    assert "AUROC needs" not in text


def test_the_hit_rate_is_labelled_with_the_overlap_it_was_measured_at(tmp_path: Path) -> None:
    loc = {"n_images": 4, "hit_rate_any": 0.5, "iou_thr": 0.3, "ap50": 0.2, "ap50_95": 0.1, "definition": "d"}
    loc["hit_rate_iou"] = 0.25
    boxes = _section(
        write_report({"localization": loc}, tmp_path).read_text(encoding="utf-8"), "true fracture boxes"
    )
    assert "<td>Top box hits a true box (IoU ≥ 0.30 or contains its centre)</td><td>0.500</td>" in boxes
    # by IoU alone too: a box of the whole film holds every centre (the report gave the rule's only)
    assert "<td>Top box overlaps a true box by IoU ≥ 0.30 alone</td><td>0.250</td>" in boxes


def test_the_report_reads_on_a_narrow_screen(tmp_path: Path, metrics: dict) -> None:
    """On a phone the 13 columns of the operating points widened the whole page, and every plot was
    500 px wide whatever the screen: each table scrolls in a box of its own, plots shrink to fit, and
    every column has a heading (the confusion matrix's first had none)."""
    html = write_report(metrics, tmp_path).read_text(encoding="utf-8")
    assert html.count("<table>") == html.count('<div class="scroll"><table>') > 0
    assert re.search(r"\.scroll \{ overflow-x: auto;", html)
    assert re.search(r"@media \(max-width: \d+px\) \{ figure img \{ max-width: 100%; \} \}", html)
    assert "<th></th>" not in html


def test_a_command_in_a_note_is_shown_as_code(tmp_path: Path) -> None:
    """The leakage note names `fracsight audit DATA`: the report showed its backticks."""
    m = {"notes": ["3 images of 'test' are in 'train' too: inflated (`fracsight audit <data>` lists them)"]}
    notes = _section(write_report(m, tmp_path).read_text(encoding="utf-8"), "<h2>Notes</h2>")
    assert "(<code>fracsight audit &lt;data&gt;</code> lists them)" in notes and "`" not in notes


def test_the_study_class_operating_point_has_no_column_of_dashes(tmp_path: Path) -> None:
    """The bundle records its class operating point's validation figures for images, not studies:
    the study level's table had a "Validation (recorded in the bundle)" column of dashes."""
    from fracsight.bundle import ClassOperatingPoint

    labels, probs = (
        [0, 0, 2, 1],
        np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]]),
    )
    validation = ClassOperatingPoint(0.5, "chosen on validation", accuracy=0.93, coverage=0.6)
    m = evaluate_classes(
        labels, probs, CLASS_NAMES, min_probability=0.5, validation=validation, study_ids=["a", "a", "b", "c"]
    )
    html = write_report({"multiclass": m}, tmp_path).read_text(encoding="utf-8")
    images, study = html.split("<h3>Study level</h3>")
    assert "<th>Validation (recorded in the bundle)</th>" in images and "<td>0.930</td>" in images
    assert "Validation" not in study and "<th>Class operating point</th><th>Here</th></tr>" in study
