"""Evaluation plots written as PNG files.

Every function builds its own :class:`matplotlib.figure.Figure` on the Agg
canvas (no pyplot, no global state), writes ``path`` (parent folders are
created) and returns it as a :class:`~pathlib.Path`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike

from fracsight.evaluation.metrics import auroc, average_precision, binary_metrics_at, pr_curve, roc_curve

__all__ = [
    "plot_calibration",
    "plot_confusion",
    "plot_pr",
    "plot_roc",
    "plot_sample_grid",
    "plot_selective_accuracy",
    "plot_training_curves",
]

_DPI = 110
_CORRECT = "#1a9641"
_WRONG = "#d7191c"


def _new_figure(width: float, height: float, layout: str | None = None) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path, title: str) -> Path:
    """Write the PNG, its title also in the file's ``Title`` text chunk (what a figure shows
    travels with it into a paper's figure folder)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Title": title.replace("\n", " - "), "Software": "fracsight"}
    fig.savefig(out, format="png", dpi=_DPI, bbox_inches="tight", metadata=metadata)
    return out


def _ci_text(ci: tuple[float, float] | None, level: float = 0.95) -> str:
    return "" if ci is None else f" ({100 * level:.0f}% CI {ci[0]:.3f}-{ci[1]:.3f})"


def plot_roc(
    y: ArrayLike,
    p: ArrayLike,
    path: str | Path,
    *,
    ci: tuple[float, float] | None = None,
    ci_level: float = 0.95,
    operating_points: Mapping[str, float] | None = None,
    title: str = "ROC curve",
) -> Path:
    """ROC curve with AUROC (and its ``ci_level`` CI) in the legend; ``operating_points`` maps
    names to thresholds."""
    fpr, tpr, _ = roc_curve(y, p)
    fig = _new_figure(5.0, 5.0)
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color="#2b83ba", lw=2, label=f"AUROC {auroc(y, p):.3f}{_ci_text(ci, ci_level)}")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
    for name, threshold in (operating_points or {}).items():
        m = binary_metrics_at(y, p, threshold)
        ax.plot(
            1.0 - m["specificity"],
            m["sensitivity"],
            "o",
            ms=7,
            clip_on=False,
            label=f"{name} (t={threshold:.3f}): sens {m['sensitivity']:.2f}, spec {m['specificity']:.2f}",
        )
    # a margin round the square: a perfect model's curve runs along the axes' top and left edges,
    # where the legend's "best" place does not see it, and the legend covered it and its points
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="1 - specificity (false positive rate)")
    ax.set(ylabel="sensitivity (true positive rate)", title=title, aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)  # a weak model's curve and points lie in the lower right
    return _save(fig, path, title)


def plot_pr(
    y: ArrayLike,
    p: ArrayLike,
    path: str | Path,
    *,
    ci: tuple[float, float] | None = None,
    ci_level: float = 0.95,
    operating_points: Mapping[str, float] | None = None,
    title: str = "Precision-recall curve",
) -> Path:
    """Precision-recall curve (step-wise) with AP (and its ``ci_level`` CI) in the legend and the
    prevalence baseline."""
    precision, recall, _ = pr_curve(y, p)
    prevalence = float(np.mean(np.asarray(y, dtype=np.float64)))
    fig = _new_figure(5.0, 5.0)
    ax = fig.add_subplot()
    ax.step(
        recall,
        precision,
        where="pre",  # recall rises: each stretch at the precision of its right end, as AP sums it
        color="#2b83ba",
        lw=2,
        label=f"AP {average_precision(y, p):.3f}{_ci_text(ci, ci_level)}",
    )
    ax.axhline(prevalence, color="grey", lw=1, ls="--", label=f"prevalence {prevalence:.2f}")
    for name, threshold in (operating_points or {}).items():
        m = binary_metrics_at(y, p, threshold)
        if m["precision"] is not None:
            ax.plot(
                m["recall"], m["precision"], "o", ms=7, clip_on=False, label=f"{name} (t={threshold:.3f})"
            )
    ax.set(
        xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="recall (sensitivity)", ylabel="precision"
    )  # as the ROC
    ax.set(title=title, aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)  # a weak model's curve lies low, in the lower left
    return _save(fig, path, title)


def confusion_cell_text(count: int, row_total: int) -> str:
    """A confusion matrix cell: its count and its share of the true class's images; a class with
    no images has no share ("0%" would read as none of them found)."""
    return f"{count}\n{100 * count / row_total:.0f}%" if row_total else str(count)


def plot_confusion(
    cm: ArrayLike, class_names: Sequence[str], path: str | Path, *, title: str = "Confusion matrix"
) -> Path:
    """Confusion matrix (rows true, columns predicted) with counts and row percentages."""
    counts = np.asarray(cm, dtype=np.int64)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(f"cm must be {k}x{k} for {k} class names, got {counts.shape}")
    row_sums = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, row_sums, out=np.zeros(counts.shape), where=row_sums > 0)
    side = max(3.5, 0.9 * k + 2.0)
    fig = _new_figure(side, side)
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                confusion_cell_text(int(counts[i, j]), int(row_sums[i, 0])),
                ha="center",
                va="center",
                color=color,
                fontsize=9,
            )
    ax.set_xticks(range(k), labels=list(class_names), rotation=30, ha="right")
    totals = row_sums[:, 0]
    rows = [
        name if total else f"{name}\n(no images)" for name, total in zip(class_names, totals, strict=True)
    ]
    ax.set_yticks(range(k), labels=rows)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _save(fig, path, title)


def plot_selective_accuracy(
    y: ArrayLike,
    probs: ArrayLike,
    path: str | Path,
    *,
    min_probability: float | None = None,
    title: str = "Class accuracy against coverage",
) -> Path:
    """Accuracy of the stated classes against the share of images given one (coverage).

    Each point is a minimum top-1 probability: images whose most likely class reaches
    it get that class, the others are "uncertain". ``min_probability`` (the bundle's
    class operating point) is marked on the curve.
    """
    ya = np.asarray(y).astype(np.int64).ravel()
    pa = np.asarray(probs, dtype=np.float64)
    if pa.ndim != 2 or pa.shape[0] != ya.size or ya.size == 0:
        raise ValueError(f"probs must be (N, K) with N = {ya.size} > 0, got shape {pa.shape}")
    top = pa.max(axis=1)
    correct = (pa.argmax(axis=1) == ya).astype(np.float64)
    order = np.argsort(-top, kind="mergesort")
    # one point per distinct probability: the images at or above it are stated
    last = np.r_[np.flatnonzero(np.diff(top[order])), ya.size - 1]
    n_stated = last + 1
    coverage = n_stated / ya.size
    accuracy = np.cumsum(correct[order])[last] / n_stated
    fig = _new_figure(5.0, 4.2)
    ax = fig.add_subplot()
    ax.plot(coverage, accuracy, "o-", ms=3, color="#2b83ba", label="stated classes")
    ax.axhline(correct.mean(), color="grey", lw=1, ls="--", label=f"accuracy of all {correct.mean():.2f}")
    if min_probability is not None:
        stated = top >= min_probability
        if stated.any():
            acc, cov = float(correct[stated].mean()), float(stated.mean())
            ax.plot(
                cov,
                acc,
                "o",
                ms=9,
                color=_WRONG,
                label=f"min probability {min_probability:.3f}: accuracy {acc:.2f}, coverage {cov:.2f}",
            )
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="coverage (share of images given a class)")
    ax.set(ylabel="accuracy of the stated classes", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)  # a weak model's curve dips to the lower left
    return _save(fig, path, title)


def plot_calibration(
    table: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    ece: float | None = None,
    title: str = "Reliability diagram",
    positive: str = "fractured",
) -> Path:
    """Reliability diagram from :func:`expected_calibration_error`'s table, with bin counts below;
    ``positive``: what the data call a positive image (MURA's "abnormal"), on the y axis."""
    rows = [r for r in table if r["count"]]
    fig = _new_figure(5.0, 6.0)
    ax, ax_hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    # each bin's observed fraction with its 95% Wilson interval: a bin of a dozen images swings
    # by 0.3 by chance, and without its interval such a swing read as miscalibration
    xs = [r["mean_predicted"] for r in rows]
    ys = [r["fraction_positive"] for r in rows]
    # clamped: at an observed 0 or 1 the interval's end is that value up to rounding (-1e-17 is refused)
    # (a table of an older metrics.json has no interval: drawn without one)
    below = [max(0.0, y - r.get("fraction_ci_low", y)) for y, r in zip(ys, rows, strict=True)]
    above = [max(0.0, r.get("fraction_ci_high", y) - y) for y, r in zip(ys, rows, strict=True)]
    ax.errorbar(
        xs,
        ys,
        yerr=[below, above],
        fmt="o-",
        color="#2b83ba",
        ecolor="#2b83ba",
        elinewidth=1,
        capsize=3,
        label="model (95% Wilson interval per bin)",
    )
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel=f"observed fraction {positive}")
    if ece is not None:  # the ECE on the first line, a subtitle below it
        head, newline, rest = title.partition("\n")
        title = f"{head} (ECE {ece:.3f}){newline}{rest}"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    lows = [r["bin_lower"] for r in table]
    widths = [r["bin_upper"] - r["bin_lower"] for r in table]
    ax_hist.bar(
        lows, [r["count"] for r in table], width=widths, align="edge", color="#abd9e9", edgecolor="#2b83ba"
    )
    ax_hist.set(xlabel="predicted probability", ylabel="images")
    ax_hist.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 2.5 images
    return _save(fig, path, title)


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Loss (train/val) and AUROC per epoch from entries like ``{"epoch", "train_loss", ...}``.

    Any of ``train_loss``, ``val_loss``, ``train_auroc``, ``val_auroc`` may be
    missing or ``None`` in an entry; those points are skipped.
    """
    fig = _new_figure(9.0, 3.8)
    ax_loss, ax_auc = fig.subplots(1, 2)
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    for ax, keys, label in (
        (ax_loss, ("train_loss", "val_loss"), "loss"),
        (ax_auc, ("train_auroc", "val_auroc"), "AUROC"),
    ):
        for key in keys:
            pts = [(e, h[key]) for e, h in zip(epochs, history, strict=True) if h.get(key) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, "o-", ms=3, label=key.replace("_", " "))
        ax.set(xlabel="epoch", ylabel=label, title=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path, "Training curves")


def plot_sample_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | Path,
    ncols: int = 4,
    *,
    labels: Sequence[int] | None = None,
    predictions: Sequence[int] | None = None,
    sections: Sequence[tuple[str, int]] | None = None,
    title: str = "Sample predictions",
) -> Path:
    """Grayscale thumbnails (HxW floats in [0, 1]) with titles (for example probabilities).

    With both ``labels`` and ``predictions`` given, each thumbnail gets a green
    border when they agree and a red one when they do not, and ``title`` (above
    the grid) says so. ``sections``: ``(heading, number of images)`` groups of the
    images in order, each starting a row under its heading; a group of none is its
    heading alone (say there why it is empty).
    """
    if len(images) != len(titles):
        raise ValueError("images and titles differ in length")
    if (labels is None) != (predictions is None):
        raise ValueError("give both labels and predictions, or neither")
    if labels is not None and not len(labels) == len(predictions) == len(images):  # type: ignore[arg-type]
        raise ValueError("labels and predictions must have one entry per image")
    groups = list(sections) if sections else [("", len(images))]
    if sum(n for _, n in groups) != len(images) or any(n < 0 for _, n in groups):
        raise ValueError("sections must count every image once")
    ncols = max(1, min(ncols, max(n for _, n in groups)))
    rows = [-(-n // ncols) for _, n in groups]
    heights = [2.6 * r + (0.35 if sections else 0) if r else 0.35 for r in rows]
    fig = _new_figure(2.4 * ncols, sum(heights) + 0.5, layout="constrained")
    panels = fig.subfigures(len(groups), 1, height_ratios=heights, squeeze=False)[:, 0] if sections else [fig]
    first = 0
    for panel, (heading, n), nrows in zip(panels, groups, rows, strict=True):
        if sections:
            panel.suptitle(heading, fontsize=9, fontweight="bold", x=0.01, ha="left")
        for k in range(n):
            i = first + k
            ax = panel.add_subplot(nrows, ncols, k + 1)
            arr = np.asarray(images[i], dtype=np.float64)
            if arr.ndim != 2:
                raise ValueError(f"image {i} must be HxW, got shape {arr.shape}")
            ax.imshow(arr, cmap="gray", vmin=0.0, vmax=1.0, interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(titles[i], fontsize=8)
            if labels is not None and predictions is not None:
                color = _CORRECT if int(labels[i]) == int(predictions[i]) else _WRONG
                for spine in ax.spines.values():
                    spine.set_edgecolor(color)
                    spine.set_linewidth(4)
        first += n
    if labels is not None:
        title += "\nborder: green = prediction agrees with the label, red = it does not"
    fig.suptitle(title, fontsize=10)
    return _save(fig, path, title)
