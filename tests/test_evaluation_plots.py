"""Plots write real, non-empty PNG files and leave no pyplot state behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracsight.evaluation.calibration import expected_calibration_error
from fracsight.evaluation.plots import (
    plot_calibration,
    plot_confusion,
    plot_pr,
    plot_roc,
    plot_sample_grid,
    plot_selective_accuracy,
    plot_training_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    return y, np.clip(0.3 * y + 0.7 * rng.random(120), 0, 1)


def _check_png(path: Path) -> Image.Image:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = Image.open(path)
    assert img.width > 100 and img.height > 100
    return img


def test_curve_plots(tmp_path: Path) -> None:
    y, p = _case()
    out = plot_roc(y, p, tmp_path / "sub" / "roc.png", ci=(0.7, 0.9), operating_points={"default": 0.5})
    assert out == tmp_path / "sub" / "roc.png"
    _check_png(out)
    _check_png(plot_pr(y, p, tmp_path / "pr.png", operating_points={"default": 0.5}))
    ece, table = expected_calibration_error(y, p)
    _check_png(plot_calibration(table, tmp_path / "cal.png", ece=ece))
    _check_png(plot_confusion([[5, 2], [1, 7]], ["no", "yes"], tmp_path / "cm.png"))


def test_selective_accuracy_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), 60)
    y = np.where(rng.random(60) < 0.6, probs.argmax(1), rng.integers(0, 3, 60))
    _check_png(plot_selective_accuracy(y, probs, tmp_path / "cov.png", min_probability=0.5))
    _check_png(plot_selective_accuracy(y, probs, tmp_path / "none.png", min_probability=1.0))
    with pytest.raises(ValueError, match="probs must be"):
        plot_selective_accuracy([], np.zeros((0, 3)), tmp_path / "empty.png")


def test_training_curves_tolerates_missing_values(tmp_path: Path) -> None:
    history = [
        {"epoch": 1, "train_loss": 0.9, "val_loss": 0.8, "val_auroc": 0.7},
        {"epoch": 2, "train_loss": 0.7, "val_loss": None, "val_auroc": 0.8},
        {"epoch": 3, "train_loss": 0.6},
    ]
    _check_png(plot_training_curves(history, tmp_path / "curves.png"))


def test_sample_grid_borders(tmp_path: Path) -> None:
    images = [np.full((32, 40), v, dtype=np.float32) for v in (0.2, 0.5, 0.8)]
    path = plot_sample_grid(
        images,
        ["p=0.91", "p=0.12", "p=0.55"],
        tmp_path / "grid.png",
        ncols=2,
        labels=[1, 0, 0],
        predictions=[1, 0, 1],
    )
    rgb = np.asarray(_check_png(path).convert("RGB")).astype(int)
    green = np.all(np.abs(rgb - (0x1A, 0x96, 0x41)) < 30, axis=-1).sum()
    red = np.all(np.abs(rgb - (0xD7, 0x19, 0x1C)) < 30, axis=-1).sum()
    assert green > 100 and red > 50
    _check_png(plot_sample_grid(images, ["a", "b", "c"], tmp_path / "plain.png"))


def test_sample_grid_sections_have_headings_and_keep_borders(tmp_path: Path) -> None:
    images = [np.full((32, 40), v, dtype=np.float32) for v in (0.2, 0.5, 0.8)]
    kw = dict(labels=[1, 0, 0], predictions=[0, 0, 0])
    sections = [("Missed fractures: all 1", 1), ("False alarms: none at this threshold", 0), ("Cleared", 2)]
    path = plot_sample_grid(images, ["a", "b", "c"], tmp_path / "grid.png", sections=sections, **kw)
    rgb = np.asarray(_check_png(path).convert("RGB")).astype(int)
    green = np.all(np.abs(rgb - (0x1A, 0x96, 0x41)) < 30, axis=-1).sum()
    red = np.all(np.abs(rgb - (0xD7, 0x19, 0x1C)) < 30, axis=-1).sum()
    assert red > 100 and 1.5 * red < green < 2.5 * red  # one wrong thumbnail, two right ones
    with pytest.raises(ValueError, match="count every image"):
        plot_sample_grid(images, ["a", "b", "c"], tmp_path / "bad.png", sections=[("x", 2)])


def test_no_pyplot_import() -> None:
    code = (
        "import sys; import fracsight.evaluation.plots, fracsight.evaluation.report; "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ci_level_in_legend_and_title_in_png(tmp_path: Path) -> None:
    from fracsight.evaluation.plots import _ci_text

    assert _ci_text((0.7, 0.9), 0.9) == " (90% CI 0.700-0.900)"
    assert _ci_text((0.7, 0.9)) == " (95% CI 0.700-0.900)"
    y, p = _case()
    path = plot_roc(y, p, tmp_path / "roc.png", ci=(0.7, 0.9), ci_level=0.9, title="ROC curve\nm v1 [test]")
    assert Image.open(path).text["Title"] == "ROC curve - m v1 [test]"
    images = [np.full((32, 40), 0.5, dtype=np.float32)] * 3
    grid = plot_sample_grid(
        images, ["x", "y", "z"], tmp_path / "g.png", labels=[1, 0, 1], predictions=[1, 0, 0]
    )
    assert Image.open(grid).text["Title"].startswith("Sample predictions - border: green = prediction agrees")
    titled = plot_sample_grid(
        images, ["x", "y", "z"], tmp_path / "t.png", title="Sample predictions\nm [val]"
    )
    assert Image.open(titled).text["Title"] == "Sample predictions - m [val]"  # not a thumbnail's title


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures the plot functions save, in order (to look at where their legends went)."""
    import fracsight.evaluation.plots as plots

    figures: list = []
    save = plots._save

    def keep(fig, path, title):
        figures.append(fig)
        return save(fig, path, title)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_the_class_coverage_legend_hides_no_point_of_a_weak_models_curve(drawn: list, tmp_path: Path) -> None:
    """A barely trained fracture-type model (13 test images, accuracy 0.31): its curve dips to 0.12
    at coverage 0.6, under the legend fixed in the lower left, which hid those points."""
    right = np.array([1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1], dtype=bool)  # most confident first
    top = np.linspace(0.27, 0.251, right.size)
    probs = np.full((right.size, 4), 0.0)
    probs[:, 0] = top
    probs[:, 1:] = ((1 - top) / 3)[:, None]
    y = np.where(right, 0, 1)
    plot_selective_accuracy(y, probs, tmp_path / "coverage.png", min_probability=0.26)
    fig = drawn[0]
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    points = ax.transData.transform(np.vstack([line.get_xydata() for line in ax.lines[:1]]))
    assert len(points) == right.size
    assert not [tuple(p) for p in points if legend.contains(*p)]


@pytest.mark.parametrize("plot", [plot_roc, plot_pr])
def test_the_legend_hides_no_operating_point_of_a_weak_model(plot, drawn: list, tmp_path: Path) -> None:
    """A barely trained model (15 test images, AUROC 0.15): its ROC curve and its balanced point
    (sensitivity 0.17, specificity 0.44) lie in the lower right, under the legend fixed there, as its
    precision-recall curve lies under the one fixed in the lower left."""
    y = np.array([1] * 6 + [0] * 9)
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05, 0.01, 0.9, 0.8, 0.7, 0.6, 0.45, 0.42, 0.3, 0.25, 0.21])
    plot(y, p, tmp_path / "plot.png", ci=(0.0, 0.43), operating_points={"balanced": 0.4, "triage": 0.19})
    fig = drawn[0]
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    markers = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(markers) == 2
    points = ax.transData.transform(np.vstack([line.get_xydata() for line in markers]))
    assert not [tuple(xy) for xy in points if legend.contains(*xy)]


def test_the_precision_recall_curve_drawn_has_the_area_of_its_average_precision(
    drawn: list, tmp_path: Path
) -> None:
    """Tied scores (an INT8 model gives many; a set of one picture copied gives only one): the curve
    was drawn at each stretch's left-hand precision, 1.0 across to recall 1 for a model no better
    than chance, beside the legend's "AP 0.250"."""
    from matplotlib import cbook

    from fracsight.evaluation.metrics import average_precision

    y, p = _case()
    for labels, scores in ((np.array([1] * 5 + [0] * 15), np.full(20, 0.4)), (y, np.round(p, 1))):
        drawn.clear()
        plot_pr(labels, scores, tmp_path / "pr.png")
        (curve, *_) = drawn[0].axes[0].lines
        x, h = cbook.STEP_LOOKUP_MAP[curve.get_drawstyle()](*curve.get_xydata().T)
        assert np.trapezoid(h, x) == pytest.approx(average_precision(labels, scores))
