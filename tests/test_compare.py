"""`fracsight compare`: DeLong's and McNemar's tests against independent computations, and the
paired figures through the CLI equal what `fracsight evaluate` gives each model alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import _mini_fracatlas
from fracsight.cli import app
from fracsight.evaluation.compare import delong_test, grouped_mcnemar, mcnemar_test
from fracsight.evaluation.metrics import auroc
from fracsight.inference import NOTICE


def _delong_by_pairs(y: np.ndarray, pa: np.ndarray, pb: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) as written: every positive against every negative (O(mn))."""
    pos, neg = y == 1, y == 0
    v10, v01 = [], []
    for p in (pa, pb):
        x, z = p[pos][:, None], p[neg][None, :]
        psi = (x > z) + 0.5 * (x == z)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    s = s10 / pos.sum() + s01 / neg.sum()
    difference = float(np.mean(v10[1]) - np.mean(v10[0]))
    return difference, math.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])


def _correlated_scores(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    shared = rng.normal(size=n) + 1.2 * y
    pa = shared + rng.normal(scale=0.8, size=n)
    pb = shared + rng.normal(scale=0.5, size=n) + 0.3 * y
    return y, np.round(pa, 1), np.round(pb, 1)  # rounded: ties, which midranks must handle


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_equals_the_pairwise_definition(seed: int) -> None:
    y, pa, pb = _correlated_scores(seed)
    result = delong_test(y, pa, pb)
    difference, se = _delong_by_pairs(y, pa, pb)
    assert result["a"] == pytest.approx(auroc(y, pa), abs=1e-12)
    assert result["b"] == pytest.approx(auroc(y, pb), abs=1e-12)
    assert result["difference"] == pytest.approx(difference, abs=1e-12)
    assert result["se"] == pytest.approx(se, rel=1e-9)
    assert result["p_value"] == pytest.approx(math.erfc(abs(difference / se) / math.sqrt(2)), rel=1e-9)


def test_delong_of_aurocs_that_differ_without_variance_is_no_p_of_one() -> None:
    """A constant model (AUROC 0.5) against a perfect one: every component constant, se 0, and the
    test said "p = 1.000" of a difference of 0.5. The interval also stays within -1..1."""
    y = [1] * 5 + [0] * 5
    result = delong_test(y, [0.5] * 10, [0.9, 0.8, 0.7, 0.95, 0.85, 0.1, 0.2, 0.3, 0.15, 0.25])
    assert result["difference"] == 0.5 and result["se"] == 0.0
    # the least p an exact paired permutation test gives on 10 images, not "p < 0.001" on 4
    assert result["p_value"] == 2.0**-9 and result["z"] is None
    assert json.loads(json.dumps(result))["z"] is None  # valid JSON (no Infinity)
    same = delong_test(y, [0.5] * 10, [0.5] * 10)
    assert same["p_value"] == 1.0 and same["z"] == 0.0
    y, pa, pb = _correlated_scores(0, n=12)
    wide = delong_test(y, pa, pb)
    assert -1.0 <= wide["ci_low"] <= wide["ci_high"] <= 1.0


def test_delong_standard_error_agrees_with_a_paired_bootstrap() -> None:
    y, pa, pb = _correlated_scores(3, n=600)
    rng = np.random.default_rng(0)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    differences = []
    for _ in range(1000):
        i = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        differences.append(auroc(y[i], pb[i]) - auroc(y[i], pa[i]))
    assert delong_test(y, pa, pb)["se"] == pytest.approx(float(np.std(differences)), rel=0.15)


def test_one_model_against_itself_differs_by_nothing() -> None:
    y, pa, _ = _correlated_scores(4)
    result = delong_test(y, pa, pa)
    assert result["difference"] == 0 and result["se"] == 0 and result["p_value"] == 1
    for labels in (np.ones(5), np.array([1, 0, 0, 0])):  # one positive: no variance to estimate
        with pytest.raises(ValueError, match="two positive and two negative images"):
            delong_test(labels, np.arange(labels.size), np.arange(labels.size))


@pytest.mark.parametrize(("a_only", "b_only"), [(0, 5), (1, 9), (7, 2), (0, 0), (30, 12)])
def test_mcnemar_exact_p_value_equals_the_binomial_test(a_only: int, b_only: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    both, neither = 40, 11
    a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * neither, dtype=bool)
    result = mcnemar_test(a, b)
    assert (result["a_only"], result["b_only"], result["n"]) == (a_only, b_only, a.size)
    expected = 1.0 if a_only + b_only == 0 else stats.binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert result["p_value"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("a_only", "b_only"), [(0, 5), (1, 9), (7, 2), (0, 0), (30, 12), (4, 0)])
def test_grouped_mcnemar_with_one_image_a_group_is_the_exact_test(a_only: int, b_only: int) -> None:
    a = np.array([1] * 40 + [1] * a_only + [0] * b_only + [0] * 11, dtype=bool)
    b = np.array([1] * 40 + [0] * a_only + [1] * b_only + [0] * 11, dtype=bool)
    alone = [str(i) for i in range(a.size)]
    grouped = grouped_mcnemar(a, b, alone)
    assert grouped["n_groups"] == a.size
    assert grouped["p_value"] == pytest.approx(mcnemar_test(a, b)["p_value"], rel=1e-9)
    assert "grouped" not in mcnemar_test(a, b, alone)  # nothing related: the exact test says it all


def test_grouped_mcnemar_counts_a_group_of_related_images_once() -> None:
    a = np.array([1] * 9 + [0] * 2 + [1] * 20, dtype=bool)  # A alone right on 9, B alone on 2
    b = np.array([0] * 9 + [1] * 2 + [1] * 20, dtype=bool)
    assert mcnemar_test(a, b)["p_value"] < 0.07
    # the nine images A alone reads right are near-copies of one radiograph: one unit, not nine;
    # the flips of (9, 1, 1) all reach |9 - 2|
    copies = ["x"] * 9 + [str(i) for i in range(9, a.size)]
    assert mcnemar_test(a, b, copies)["grouped"] == {"n_groups": 23, "p_value": 1.0}
    # two groups of three A alone has right and none for B: the flips of (3, 3) reach 6 in 2 of 4
    pairs = ["p"] * 3 + ["q"] * 3 + [str(i) for i in range(6, 20)]
    a, b = np.array([1] * 6 + [1] * 14, dtype=bool), np.array([0] * 6 + [1] * 14, dtype=bool)
    assert grouped_mcnemar(a, b, pairs) == {"n_groups": 16, "p_value": 0.5}
    assert grouped_mcnemar(a, a, pairs)["p_value"] == 1.0  # no image where they differ
    with pytest.raises(ValueError, match="group keys"):
        grouped_mcnemar(a, b, pairs[:-1])


def test_the_cli_pairs_what_evaluate_gives_each_model(fracatlas_dir: Path, tmp_path: Path) -> None:
    data = _mini_fracatlas(fracatlas_dir, tmp_path / "mini")
    runner = CliRunner()
    models = ("default", "fracatlas-lite0-384-v4")
    result = runner.invoke(app, ["compare", *models, str(data), "--json"])
    assert result.exit_code == 0, result.output
    paired = json.loads(result.stdout)
    assert paired["data"]["n_compared"] == 12 and paired["n_positive"] == 6
    # as `evaluate` cautions: two models perfect on so few get an interval of +0.000 to +0.000
    assert any(
        "fewer than 10 fractured or other cases in: images (6 fractured, 6 other)" in n
        for n in paired["notes"]
    )
    for key, model in zip("ab", models, strict=True):
        alone = runner.invoke(app, ["evaluate", model, str(data), "--json", "--bootstrap", "100"])
        assert alone.exit_code == 0, alone.output
        metrics = json.loads(alone.stdout)
        point = paired["models"][key]["operating_point"]
        assert paired["auroc"][key] == pytest.approx(metrics["auroc"]["value"], abs=1e-12)
        assert paired["sensitivity"][key] == pytest.approx(metrics["thresholds"][point]["sensitivity"])
        assert paired["specificity"][key] == pytest.approx(metrics["thresholds"][point]["specificity"])
        assert paired["ece"][key] == pytest.approx(metrics["calibration"]["ece"])
        assert paired["top_box_hits"][key] == pytest.approx(metrics["localization"]["hit_rate_any"])
        # by IoU alone too: a box of the whole film is a "hit" of every image by the centre rule
        assert paired["top_box_iou_hits"][key] == pytest.approx(metrics["localization"]["hit_rate_iou"])
        assert paired["box_ap50"][key] == pytest.approx(metrics["localization"]["ap50"])
    text = runner.invoke(app, ["compare", *models, str(data)])
    assert text.exit_code == 0, text.output
    assert "DeLong p = " in text.stdout and "McNemar p = " in text.stdout
    assert "top box overlaps a true box by IoU >= 0.1: A " in text.stdout
    assert "decision aid" in text.stderr


def test_class_heads_are_compared_by_their_top_class(head_bundle, tmp_path: Path) -> None:
    """Fracture-type models: the top class right or not, paired (McNemar), equal to what `evaluate`
    gives each alone; two models with both heads are compared on both."""
    data, class_only = head_bundle("class")
    both_data, both = head_bundle("fracture+class")
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(class_only), str(both), str(data), "--json"])
    assert result.exit_code == 0, result.output
    paired = json.loads(result.stdout)
    assert "auroc" not in paired and paired["class_top1"]["n"] == paired["data"]["n_compared"] > 0
    assert paired["notice"] == NOTICE  # as predict --json says it
    for key, bundle in (("a", class_only), ("b", both)):
        alone = runner.invoke(app, ["evaluate", str(bundle), str(data), "--json", "--bootstrap", "100"])
        assert alone.exit_code == 0, alone.output
        assert paired["class_top1"][key] == pytest.approx(json.loads(alone.stdout)["multiclass"]["accuracy"])
    text = runner.invoke(app, ["compare", str(class_only), str(both), str(data)])
    assert text.exit_code == 0 and "top class right: A " in text.stdout, text.output
    # fracture labels only B can measure: left out unsaid, where evaluate says it
    mixed = runner.invoke(
        app, ["compare", str(class_only), str(both), str(both_data), "--split", "all", "--json"]
    )
    assert mixed.exit_code == 0, mixed.output
    notes = json.loads(mixed.stdout)["notes"]
    assert (
        f"the data's fracture labels are not compared: model A ({class_only}) has no fracture head" in notes
    )
    import shutil

    copy = shutil.copytree(both, tmp_path / "copy")  # one bundle in two folders (or a .zip of it)
    result = runner.invoke(app, ["compare", str(both), str(copy), str(both_data), "--split", "all", "--json"])
    assert result.exit_code == 0, result.output
    paired = json.loads(result.stdout)
    assert paired["auroc"]["difference"] == 0 and paired["class_top1"]["p_value"] == 1
    assert any(n.startswith("A and B are the same bundle") for n in paired["notes"])  # a slip, said so
    # only fractured images: the fracture head cannot be compared, the fracture types still can (the
    # whole comparison was refused)
    typed = shutil.copytree(both_data, tmp_path / "typed", symlinks=True)
    shutil.rmtree(typed / "test" / "Non_fractured")  # the test split: fracture types only
    result = runner.invoke(app, ["compare", str(both), str(copy), str(typed), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    paired = json.loads(result.stdout)
    assert "auroc" not in paired and paired["class_top1"]["n"] > 0
    assert any(n.startswith("the fracture head is not compared: ") for n in paired["notes"])


def test_what_cannot_be_compared_is_one_line(fracatlas_dir: Path, head_bundle, tmp_path: Path) -> None:
    data = _mini_fracatlas(fracatlas_dir, tmp_path / "mini")
    _, class_only = head_bundle("class")
    one_fracture = tmp_path / "one"
    one_fracture.mkdir()
    rows = ["image,fracture"]
    for i, image in enumerate(sorted((data / "images").rglob("*.jpg"))[:4]):
        (one_fracture / image.name).symlink_to(image.resolve())
        rows.append(f"{image.name},{int(i == 0)}")
    (one_fracture / "labels.csv").write_text("\n".join(rows) + "\n")
    regions_only = tmp_path / "regions"
    regions_only.mkdir()
    for image in one_fracture.glob("*.jpg"):
        (regions_only / image.name).symlink_to(image.resolve())
    (regions_only / "labels.csv").write_text(
        "image,region\n" + "".join(f"{p.name},hand\n" for p in one_fracture.glob("*.jpg"))
    )
    runner = CliRunner()
    for args, code, message in (
        (["default", "default", str(one_fracture), "--split", "all"], 1, "needs two of each at least"),
        # data without the models' labels: a bad argument, as `evaluate` says (exit 1 before)
        (
            ["default", "default", str(regions_only), "--split", "all"],
            2,
            "has no image with a fracture label",
        ),
        (["default", str(class_only), str(data)], 2, "share no head `compare` measures"),
        # named as typed and by their heads: two runs without a recipe are both fracsight-model v1
        (["default", str(class_only), str(data)], 2, f"and model B ({class_only}: "),
        (["default", str(class_only), str(data)], 2, "fracture head) and model B"),
        (["default", str(class_only), str(data)], 2, ", class head) share no head"),
        (["default", "default", str(data), "--split", "holdout"], 2, "has no 'holdout' split"),
        (["default", "nosuch-model", str(data)], 2, "nosuch-model"),
        (["default", "default", str(tmp_path / "none")], 2, "error (not_found)"),
    ):
        result = runner.invoke(app, ["compare", *args])
        assert result.exit_code == code, result.output
        assert message in result.output and "Traceback" not in result.output


def test_images_a_model_cannot_read_are_named(fracatlas_dir: Path, tmp_path: Path) -> None:
    """Left out of the comparison, they were only counted: which file, and why, was nowhere. And the
    command exited 0 (evaluate exits 1 on the same data): a script gating on it did not notice."""
    data = tmp_path / "with broken"
    for folder in ("Fractured", "Non_fractured"):
        (data / folder).mkdir(parents=True)
        for image in sorted((fracatlas_dir / "images" / folder).glob("*.jpg"))[:3]:
            (data / folder / image.name).symlink_to(image)
    (data / "Fractured" / "broken.jpg").write_text("not an image")
    args = ["compare", "default", "default", str(data), "--split", "all"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 1, result.output
    paired = json.loads(result.stdout)
    assert paired["data"]["n_unreadable"] == 1
    assert [(f["source"], f["error_code"], f["models"]) for f in paired["failed"]] == [
        ("Fractured/broken.jpg", "unsupported_format", ["a", "b"])
    ]
    warning = "1 of 7 images could not be read by one model or both and are left out of the comparison"
    assert f"error (unreadable_images): {warning}: Fractured/broken.jpg (unsupported_format)" in result.stderr
    assert "--allow-unreadable accepts the comparison over the 6 both read" in result.stderr
    text = CliRunner().invoke(app, [*args, "--allow-unreadable"])
    assert text.exit_code == 0, text.output
    assert f"warning: {warning}: Fractured/broken.jpg (unsupported_format)" in text.stderr
    # both models failed on it: "unreadable by one of them" said otherwise
    assert "6 images read by both (1 unreadable by one model or both, left out)" in text.stdout


def test_mura_data_are_compared_on_abnormality(tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    """On normal/abnormal data (MURA) `compare` said "fracture" and "fractured" where `evaluate` notes
    that the label is abnormality; it words the finding as the data do."""
    from test_cli_evaluate import _as_mura

    val = tiny_dataset / "val"
    images = sorted((val / "fractured").iterdir())[:3] + sorted((val / "not fractured").iterdir())[:3]
    args = ["compare", str(tiny_bundle), str(tiny_bundle), str(_as_mura(images, tmp_path / "mura"))]
    result = CliRunner().invoke(app, [*args, "--split", "all"])
    assert result.exit_code == 0, result.output
    assert "abnormality: 6 images with an abnormality label, 3 abnormal" in result.stdout
    assert "fractur" not in result.stdout
    paired = json.loads(CliRunner().invoke(app, [*args, "--split", "all", "--json"]).stdout)
    assert (paired["finding"], paired["positive"]) == ("abnormality", "abnormal")


def test_mura_studies_are_compared_per_study_as_evaluate_measures_them(
    tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """MURA is scored per study (several views of one examination); `evaluate` gives a study-level
    AUROC, `compare` tested the images only, as if each view were independent evidence."""
    from sklearn.metrics import roc_auc_score

    from fracsight.data import load_dataset
    from fracsight.inference import Predictor
    from test_cli_evaluate import _as_mura

    val = tiny_dataset / "val"
    images = sorted((val / "fractured").iterdir())[:6] + sorted((val / "not fractured").iterdir())[:6]
    data = _as_mura(images, tmp_path / "mura")  # 6 studies of two views each, 3 abnormal
    args = ["compare", str(tiny_bundle), str(tiny_bundle), str(data), "--split", "all"]
    paired = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    study = paired["study"]
    assert (study["n"], study["n_positive"], study["method"]) == (6, 3, "mean")
    evaluated = CliRunner().invoke(app, ["evaluate", str(tiny_bundle), str(data), "--split", "all", "--json"])
    assert study["auroc"]["a"] == pytest.approx(json.loads(evaluated.stdout)["study"]["auroc"]["value"])
    predictor, views = Predictor(tiny_bundle), {}
    for s in load_dataset(data).samples:  # independently: the mean of each study's views
        views.setdefault(s.study_id, (s.labels["fracture"], []))[1].append(
            predictor.predict(s.path).fracture_probability
        )
    y, p = zip(*((label, np.mean(probs)) for label, probs in views.values()), strict=True)
    assert study["auroc"]["b"] == pytest.approx(roc_auc_score(y, p))
    assert any("images (6 abnormal, 6 other); studies (3 abnormal, 3 other)" in n for n in paired["notes"])
    printed = CliRunner().invoke(app, args).stdout
    assert (
        f"study level (6 studies, 3 abnormal; mean of the views): AUROC A {study['auroc']['a']:.3f}"
        in printed
    )
    # one abnormal study: the study-level line was left out without a word
    few = _as_mura(images[4:], tmp_path / "few")  # 1 abnormal, 3 normal studies
    args = ["compare", str(tiny_bundle), str(tiny_bundle), str(few), "--split", "all"]
    printed = CliRunner().invoke(app, args).stdout
    assert (
        "study level (4 studies, 1 abnormal; mean of the views): not compared: two studies of each" in printed
    )
    assert "studies (" not in printed  # a level not compared has no interval to caution about


@pytest.mark.fracatlas
def test_related_images_get_a_grouped_interval_beside_delongs(fracatlas_dir: Path) -> None:
    """DeLong takes the images as independent; FracAtlas test's 687 images are 535 groups of related
    ones (one of 77), which `evaluate` resamples whole: `compare` now does too, beside DeLong."""
    from fracsight.data import FRACTURE, load_dataset, split_keys
    from fracsight.evaluation.compare import _grouped_difference

    kept = [s for s in load_dataset(fracatlas_dir).split("test") if FRACTURE in s.labels]
    y = np.array([s.labels[FRACTURE] for s in kept])
    rng = np.random.default_rng(0)
    pa = np.clip(0.3 * y + rng.normal(0.35, 0.2, y.size), 0, 1)
    pb = np.clip(pa + rng.normal(0, 0.1, y.size), 0, 1)
    grouped = _grouped_difference(split_keys(kept), y, [pa, pb])["grouped"]
    assert grouped["n_groups"] == 535
    difference = auroc(y, pb) - auroc(y, pa)
    assert grouped["ci_low"] < difference < grouped["ci_high"]
    assert _grouped_difference(split_keys(kept[:1] + kept[-1:]), y[[0, -1]], [pa[[0, -1]], pb[[0, -1]]]) == {}
    # two studies, one all fractured, one all other: every draw of both labels is the pair (it
    # said 0.000 to 0.000, as evaluate did)
    two = np.array([1, 1, 0, 0])
    assert _grouped_difference(["s1", "s1", "s2", "s2"], two, [pa[:4], pb[:4]]) == {}


def test_a_paired_line_counts_one_group_in_the_singular() -> None:
    """A tiny MURA set said "counting the 1 groups of related images as units"."""
    from fracsight.evaluation.compare_cli import _paired

    block = {"a": 0.5, "b": 0.75, "n": 4, "a_only": 0, "b_only": 1, "p_value": 1.0}
    one = _paired("sensitivity", {**block, "grouped": {"n_groups": 1, "p_value": 1.0}})
    assert "(counting the 1 group of related images as a unit: " in one
    assert "(counting the 3 groups of related images as units: " in _paired(
        "sensitivity", {**block, "grouped": {"n_groups": 3, "p_value": 1.0}}
    )
