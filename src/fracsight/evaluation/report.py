"""The full evaluation: one metrics dict (strict-JSON safe), its plots and an HTML report.

``evaluate_predictions`` -> dict (fracture head, with the region head and a class head
when given), ``evaluate_classes`` -> dict (an N-class head on its own, with its class
operating point), ``render_all_plots`` -> PNG paths, ``write_report`` -> ``report.html``
(self-contained: inline CSS, images as base64 data URIs) plus ``metrics.json`` in the
same folder. The report has a section for each head the metrics describe.
"""

from __future__ import annotations

import base64
import dataclasses
import html as _html
import json
import math
import re
from collections.abc import Hashable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fracsight.evaluation import plots as _plots
from fracsight.evaluation.aggregate import AggregationMethod, aggregate_study_predictions
from fracsight.evaluation.calibration import brier_score, expected_calibration_error
from fracsight.evaluation.metrics import (
    _binary_inputs,
    _class_indices,
    auroc,
    average_precision,
    binary_metrics_at,
    bootstrap_ci,
    confusion_matrix,
    multiclass_metrics,
    multilabel_metrics,
    regions_to_targets,
)
from fracsight.evaluation.thresholds import selective_accuracy, threshold_for_specificity

__all__ = [
    "PositiveWords",
    "bootstrap_units",
    "evaluate_classes",
    "evaluate_predictions",
    "render_all_plots",
    "to_jsonable",
    "write_report",
]


@dataclasses.dataclass(frozen=True)
class PositiveWords:
    """How the report and plots word the binary label: as the data call a positive image
    (``data.positive`` of the metrics, from :func:`~fracsight.evaluation.run.positive_label`; MURA's
    "abnormal"), "fractured" for metrics without it."""

    positive: str = "fractured"

    @classmethod
    def of(cls, metrics: Mapping[str, Any]) -> PositiveWords:
        return cls(str((metrics.get("data") or {}).get("positive") or cls.positive))

    @property
    def negative(self) -> str:
        return f"not {self.positive}"

    @property
    def finding(self) -> str:
        """What a positive image has, as the model's decisions say it: "fracture", "abnormality"."""
        from fracsight.inference.results import finding_of

        return finding_of(self.positive)

    @property
    def findings(self) -> str:
        from fracsight.dicom.results_context import plural

        return plural(self.finding)


def to_jsonable(obj: Any) -> Any:
    """Convert numpy types, tuples, paths and dataclasses to plain JSON; NaN/inf become ``None``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


@dataclasses.dataclass(frozen=True)
class _Bootstrap:
    n: int
    seed: int
    alpha: float


def resamples_vary(y: np.ndarray, groups: Sequence[Hashable] | None, rate_of: int | None = None) -> bool:
    """Whether a bootstrap of ``y`` can draw more than one data set: one group of related images
    (one patient's), or one fractured and one other image (stratified), is drawn the same every time,
    and its "interval" was the value itself (0.500-0.500) as though it were certain. ``rate_of``: a
    rate of that class only (sensitivity: 1), which varies only with its own images."""
    if rate_of is not None:
        own = y == rate_of
        if groups is None:
            return int(own.sum()) > 1
        return len({g for g, mine in zip(groups, own, strict=True) if mine}) > 1
    if groups is not None:
        # draws of one class are not used: of two groups, one all fractured and one all other,
        # every draw used is the pair itself (a MURA split of one positive and one negative study)
        labels: dict[Hashable, set[int]] = {}
        for g, label in zip(groups, y.tolist(), strict=True):
            labels.setdefault(g, set()).add(int(label))
        return len(labels) > 2 or (len(labels) == 2 and any(len(k) > 1 for k in labels.values()))
    return max(int(y.sum()), int(y.size - y.sum())) > 1


def _estimate(
    fn: Any,
    y: np.ndarray,
    p: np.ndarray,
    boot: _Bootstrap,
    groups: Sequence[Hashable] | None,
    *,
    rate_of: int | None = None,
) -> dict[str, Any]:
    """``{"value", "ci_low", "ci_high"}``; all ``None`` where the metric is undefined. ``rate_of``:
    a metric of that class only (a rate: sensitivity of 1), defined where ``fn`` gives a value."""
    out: dict[str, Any] = {"value": None, "ci_low": None, "ci_high": None}
    n_pos = int(y.sum())
    if rate_of is None and not 0 < n_pos < y.size:
        return out
    value = fn(y, p)
    if value is None or not np.isfinite(value):
        return out
    out["value"] = value
    if boot.n > 0 and resamples_vary(y, groups, rate_of):
        out["ci_low"], out["ci_high"] = bootstrap_ci(
            fn, y, p, n=boot.n, seed=boot.seed, alpha=boot.alpha, groups=groups, both_classes=rate_of is None
        )
    return out


_ECE_DEFINITION = (
    "equal-width bins [k/n, (k+1)/n) of the predicted probability (the last bin holds 1.0); ECE = sum over "
    "bins of (images in the bin / all images) * |observed positive fraction - mean predicted probability|"
)
_AT_SPECIFICITY_DEFINITION = (
    "the highest sensitivity at an attainable threshold (positive when p >= threshold) whose specificity "
    "here is at least the target, with that threshold and the specificity it reaches (where several "
    "thresholds give that sensitivity, the lowest of them, whose specificity is the least of theirs); "
    "not interpolated between ROC points"
)
_AP_DEFINITION = "the step-wise area under the precision-recall curve, not interpolated"


def _binary_block(
    y: np.ndarray,
    p: np.ndarray,
    threshold_points: Mapping[str, float],
    boot: _Bootstrap,
    groups: Sequence[Hashable] | None,
    *,
    ece_bins: int,
    specificity_target: float,
) -> dict[str, Any]:
    n_pos = int(y.sum())
    both = 0 < n_pos < y.size
    ece, table = expected_calibration_error(y, p, n_bins=ece_bins)
    # the best sensitivity among thresholds reaching the target specificity, with that threshold
    # (the lowest one) and the specificity it really reaches here
    at_spec: dict[str, Any] = dict.fromkeys(("sensitivity", "specificity", "threshold"))
    if both:
        choice = threshold_for_specificity(y, p, specificity_target)
        at_spec = {"sensitivity": choice.sensitivity, "specificity": choice.specificity}
        at_spec["threshold"] = choice.threshold
    return {
        "n": int(y.size),
        "n_positive": n_pos,
        "n_negative": int(y.size - n_pos),
        "prevalence": n_pos / y.size,
        "auroc": _estimate(auroc, y, p, boot, groups),
        "average_precision": _estimate(average_precision, y, p, boot, groups),
        "brier": brier_score(y, p),
        "calibration": {"ece": ece, "n_bins": ece_bins, "definition": _ECE_DEFINITION, "table": table},
        "sensitivity_at_specificity": {
            "specificity_target": specificity_target,
            **at_spec,
            "definition": _AT_SPECIFICITY_DEFINITION,
        },
        "thresholds": {
            name: _with_rate_intervals(binary_metrics_at(y, p, t), y, p, t, boot, groups)
            for name, t in threshold_points.items()
        },
    }


def _with_rate_intervals(
    block: dict[str, Any],
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    boot: _Bootstrap,
    groups: Sequence[Hashable] | None,
) -> dict[str, Any]:
    """``block`` (:func:`binary_metrics_at` at ``threshold``) with the intervals of its sensitivity
    and specificity (``sensitivity_ci_low`` ...), drawn as AUROC's are (:func:`_estimate`: the same
    resamples, groups and level): a paper states "0.877 (95% CI ...)", and the counts alone left
    the reader to compute an interval that takes the images as independent. Each needs only its
    own class: a cohort of normal images has a specificity interval."""
    out = dict(block)
    for key, label in (("sensitivity", 1), ("specificity", 0)):
        found = _estimate(
            lambda ys, ps, key=key: binary_metrics_at(ys, ps, threshold)[key],
            y,
            p,
            boot,
            groups,
            rate_of=label,
        )
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = found["ci_low"], found["ci_high"]
    return out


def _region_breakdown(
    y: np.ndarray,
    p: np.ndarray,
    regions: Sequence[Sequence[str]],
    threshold_points: Mapping[str, float],
    boot: _Bootstrap,
    groups: Sequence[Hashable] | None,
) -> dict[str, Any]:
    """Fracture metrics within each body region (a sample may belong to several)."""
    names = sorted({r for rs in regions for r in ((rs,) if isinstance(rs, str) else rs)})
    targets = regions_to_targets(regions, names)
    out: dict[str, Any] = {}
    for i, name in enumerate(names):
        mask = targets[:, i] == 1
        yr, pr = y[mask], p[mask]
        sub_groups = None if groups is None else [g for g, m in zip(groups, mask, strict=True) if m]
        thresholds = {}
        for tname, t in threshold_points.items():
            m = binary_metrics_at(yr, pr, t)
            thresholds[tname] = {k: m[k] for k in ("sensitivity", "specificity", "tp", "fn", "tn", "fp")}
        out[name] = {
            "n": int(yr.size),
            "n_positive": int(yr.sum()),
            "auroc": _estimate(auroc, yr, pr, boot, sub_groups),
            "thresholds": thresholds,
        }
    return out


def _check_study_ids(study_ids: Sequence[Hashable], n: int) -> None:
    """One study per image, each named: a missing id (None, or pandas' NaN) joined every unnamed
    image into one study (None) or made each a study of its own (NaN), silently."""
    if len(study_ids) != n:
        raise ValueError(f"study_ids has {len(study_ids)} entries for {n} samples")
    missing = sum(1 for s in study_ids if s is None or (isinstance(s, float) and s != s))
    if missing:
        raise ValueError(
            f"study_ids has {missing} missing ids (None or NaN): give each image its study "
            "(an image that stands alone, its own id)"
        )


def bootstrap_units(
    groups: Sequence[Hashable] | None, study_ids: Sequence[Hashable] | None
) -> list[Hashable] | None:
    """What :func:`evaluate_predictions`' intervals resample whole, one per image: the ``groups``
    given, else the studies, else None (resampled image by image, stratified by label)."""
    if groups is not None:
        return list(groups)
    return None if study_ids is None else list(study_ids)


def evaluate_predictions(
    y: ArrayLike,
    p: ArrayLike,
    *,
    threshold_points: Mapping[str, float] | None = None,
    regions: Sequence[Sequence[str]] | None = None,
    region_probs: ArrayLike | None = None,
    region_names: Sequence[str] | None = None,
    study_ids: Sequence[Hashable] | None = None,
    study_method: AggregationMethod = "mean",
    study_views: ArrayLike | None = None,
    groups: Sequence[Hashable] | None = None,
    class_labels: ArrayLike | None = None,
    class_probs: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
    n_bootstrap: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    ece_bins: int = 10,
    specificity_target: float = 0.9,
) -> dict[str, Any]:
    """Every metric fracsight reports, as a strict-JSON-safe dict (no numpy types, no NaN).

    ``y``/``p``: image labels (0/1) and calibrated fracture probabilities.
    ``threshold_points``: named operating thresholds (``{"default": 0.42}``).
    ``regions``: per-sample tuples of body-region names; gives the ``"regions"``
    breakdown of fracture AUROC (with CI and n) per region. With ``region_probs``
    (``(N, K)``, columns in ``region_names`` order) also the ``"region_head"``
    multi-label metrics. ``study_ids`` adds ``"study"`` metrics after
    aggregating with ``study_method`` (mean of image probabilities by default;
    a study is positive if any image is) over the images ``study_views`` marks (default: all; see
    :func:`~fracsight.evaluation.aggregate.first_views`). ``groups`` (one key per image: a
    patient, or images too alike to be independent) makes the image-level and per-region CIs
    resample whole groups instead of whole studies. ``class_labels``/``class_probs``/
    ``class_names`` add ``"multiclass"`` metrics; samples whose class label is
    negative (unknown) are left out of those. CIs are percentile bootstrap
    (``n_bootstrap`` resamples, ``1 - alpha`` level): stratified by label, or,
    when ``study_ids`` are given, resampling whole studies for the image-level
    and per-region CIs (images of one study are not independent); ``ci_method``
    records which. ``None`` marks undefined values (for example AUROC with one
    class only).
    """
    ya, pa = _binary_inputs(y, p)  # checked before any cast: 0.7 as a label was cut to 0, silently
    thresholds = dict(threshold_points or {})
    boot = _Bootstrap(n=n_bootstrap, seed=seed, alpha=alpha)
    related = None if groups is None else list(groups)  # the groups given, before studies stand in
    if related is not None:
        resampled = (
            "resampling whole groups of related images (a patient or study, near-duplicates, identical "
            f"files: {len(set(related))} groups)"
        )
    else:
        resampled = "resampling whole studies" if study_ids is not None else "stratified by label"
    if study_ids is not None:
        _check_study_ids(study_ids, ya.size)
    groups = bootstrap_units(related, study_ids)
    if groups is not None and len(groups) != ya.size:
        raise ValueError(f"groups has {len(groups)} entries for {ya.size} samples")
    opts = {"ece_bins": ece_bins, "specificity_target": specificity_target}
    result = _binary_block(ya, pa, thresholds, boot, groups, **opts)
    result["average_precision"]["definition"] = _AP_DEFINITION
    result["ci_level"] = 1.0 - alpha
    result["n_bootstrap"] = n_bootstrap
    result["bootstrap_seed"] = seed
    # none drawn (n_bootstrap 0): no method to name ("percentile bootstrap" beside no interval)
    result["ci_method"] = f"percentile bootstrap, {resampled}" if n_bootstrap else None
    if regions is not None:
        if len(regions) != ya.size:
            raise ValueError(f"regions has {len(regions)} entries for {ya.size} samples")
        result["regions"] = _region_breakdown(ya, pa, regions, thresholds, boot, groups)
    if region_probs is not None:
        if regions is None or region_names is None:
            raise ValueError("region_probs needs regions (the truth) and region_names (its columns)")
        targets = regions_to_targets(regions, region_names)
        result["region_head"] = multilabel_metrics(targets, region_probs, region_names)
    if study_ids is not None:
        views = np.ones(ya.size, dtype=bool) if study_views is None else np.asarray(study_views, dtype=bool)
        if views.size != ya.size:
            raise ValueError(f"study_views has {views.size} entries for {ya.size} samples")
        view_ids = [sid for sid, v in zip(study_ids, views, strict=True) if v]
        ids, ys, ps = aggregate_study_predictions(view_ids, ya[views], pa[views], study_method)
        # a patient's studies are not independent either: resampled together where groups join them
        of_study = dict(zip(study_ids, related, strict=True)) if related is not None else {}
        study_groups = [of_study[i] for i in ids] if of_study else None
        if study_groups is not None and len(set(study_groups)) == len(study_groups):
            study_groups = None
        block = _binary_block(ys, ps, thresholds, boot, study_groups, **opts)
        result["study"] = {
            "method": study_method,
            "ci_method": "percentile bootstrap, "
            + ("resampling whole groups of related studies" if study_groups else "stratified by label")
            if n_bootstrap
            else None,
            **block,
        }
        if not views.all():
            result["study"]["repeats_left_out"] = int((~views).sum())
    if class_labels is not None or class_probs is not None:
        if class_labels is None or class_probs is None or class_names is None:
            raise ValueError("multi-class metrics need class_labels, class_probs and class_names")
        cl = _class_indices(class_labels, "class_labels")
        keep = cl >= 0
        if keep.any():
            result["multiclass"] = multiclass_metrics(cl[keep], np.asarray(class_probs)[keep], class_names)
    return to_jsonable(result)


def _class_operating_point(
    y: np.ndarray, probs: np.ndarray, min_probability: float, validation: Any
) -> dict[str, Any]:
    accuracy, coverage = selective_accuracy(y, probs, min_probability)
    out: dict[str, Any] = {
        "min_probability": float(min_probability),
        "accuracy": accuracy,
        "coverage": coverage,
        "n_confident": int(np.sum(probs.max(axis=1) >= min_probability)),
        "validation_accuracy": None,
        "validation_coverage": None,
        "description": None,
    }
    if validation is not None:
        get = validation.get if isinstance(validation, Mapping) else lambda k: getattr(validation, k, None)
        out.update(
            validation_accuracy=get("accuracy"),
            validation_coverage=get("coverage"),
            description=get("description"),
        )
    return out


def _majority(labels: np.ndarray) -> int:
    values, counts = np.unique(labels, return_counts=True)
    return int(values[np.argmax(counts)])  # ties: the lowest class index


def evaluate_classes(
    class_labels: ArrayLike,
    class_probs: ArrayLike,
    class_names: Sequence[str],
    *,
    min_probability: float = 0.0,
    validation: Any = None,
    study_ids: Sequence[Hashable] | None = None,
    study_weights: ArrayLike | None = None,
    study_views: ArrayLike | None = None,
) -> dict[str, Any]:
    """Metrics of an N-class head (for example the fracture type), strict-JSON safe.

    ``class_labels`` holds class indices; a negative one means "no class label" (a
    non-fractured image in a fracture-type data set) and the image is left out of
    every class metric, so ``n`` counts the labelled images only. ``class_probs`` is
    ``(N, K)`` in ``class_names`` order. Besides :func:`multiclass_metrics` the
    result has ``"operating_point"``: the accuracy of the stated classes and the
    share of images that got one (coverage) at ``min_probability`` (the bundle's
    class operating point; below it a class is reported as uncertain), next to the
    validation figures of ``validation`` (a :class:`~fracsight.bundle.ClassOperatingPoint`
    or a mapping with ``accuracy``, ``coverage``, ``description``). With
    ``study_ids`` also ``"study"``: one prediction per study (the mean of its images'
    class distributions, weighted by ``study_weights``, e.g. the fracture
    probabilities, as :meth:`Predictor.predict_study` does; only the images ``study_views``
    marks) against the most common class label of its labelled images; studies without a
    labelled image are left out.
    Raises ``ValueError`` when no image has a class label.
    """
    cl = _class_indices(class_labels, "class_labels")
    pa = np.asarray(class_probs, dtype=np.float64)
    if pa.ndim != 2 or pa.shape != (cl.size, len(class_names)):
        raise ValueError(f"class_probs must have shape ({cl.size}, {len(class_names)}), got {pa.shape}")
    keep = cl >= 0
    if not keep.any():
        raise ValueError("no image has a class label")
    result = multiclass_metrics(cl[keep], pa[keep], class_names)
    result["n_unlabelled"] = int((~keep).sum())
    result["operating_point"] = _class_operating_point(cl[keep], pa[keep], min_probability, validation)
    if study_ids is not None:
        if len(study_ids) != cl.size:
            raise ValueError(f"study_ids has {len(study_ids)} entries for {cl.size} images")
        weights = np.ones(cl.size) if study_weights is None else np.asarray(study_weights, dtype=np.float64)
        views = np.ones(cl.size, dtype=bool) if study_views is None else np.asarray(study_views, dtype=bool)
        if views.size != cl.size:
            raise ValueError(f"study_views has {views.size} entries for {cl.size} images")
        members: dict[Hashable, list[int]] = {}
        for i, sid in enumerate(study_ids):
            if views[i]:
                members.setdefault(sid, []).append(i)
        ys, ps = [], []
        for idx in members.values():
            labelled = cl[idx][cl[idx] >= 0]
            if labelled.size == 0:
                continue
            w = weights[idx]
            ys.append(_majority(labelled))
            ps.append(np.average(pa[idx], axis=0, weights=w if w.sum() > 0 else None))
        y_study, p_study = np.array(ys, dtype=np.int64), np.array(ps)
        study = multiclass_metrics(y_study, p_study, class_names)
        study["method"] = "mean" if study_weights is None else "mean weighted by fracture probability"
        study["operating_point"] = _class_operating_point(y_study, p_study, min_probability, None)
        result["study"] = study
    return to_jsonable(result)


def render_all_plots(
    y: ArrayLike | None,
    p: ArrayLike | None,
    out_dir: str | Path,
    *,
    metrics: Mapping[str, Any] | None = None,
    threshold_points: Mapping[str, float] | None = None,
    confusion_threshold: float | None = None,
    class_labels: ArrayLike | None = None,
    class_probs: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
    class_min_probability: float | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
    ece_bins: int = 10,
    subtitle: str | None = None,
) -> dict[str, Path]:
    """Write the standard PNGs into ``out_dir``; returns ``{name: path}`` in display order.

    Names: ``roc``, ``pr``, ``calibration``, ``confusion`` (binary, at
    ``confusion_threshold`` or else the first of ``threshold_points``; skipped if
    neither), ``confusion_multiclass`` and ``training_curves`` when their inputs
    are given, and ``class_coverage`` (accuracy against coverage of the stated
    classes, ``class_min_probability`` marked) when that is given too. With ``y``
    and ``p`` None (a model without a fracture head) the fracture plots are left
    out. CIs (and their level) are read from ``metrics`` (``evaluate_predictions``
    output), and the positive images are worded by its ``data.positive`` (:class:`PositiveWords`).
    Class labels below 0 (no class label) are left out of the class plots.
    ``subtitle`` (say the model and the data split) goes under every plot's title,
    with the number of images each plot counts.
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    if y is not None and p is not None:
        paths.update(
            _fracture_plots(
                y,
                p,
                out,
                metrics or {},
                dict(threshold_points or {}),
                confusion_threshold,
                ece_bins,
                subtitle,
            )
        )
    if class_labels is not None and class_probs is not None and class_names is not None:
        cl = _class_indices(class_labels, "class_labels")
        keep = cl >= 0
        probs = np.asarray(class_probs, dtype=np.float64)[keep]
        pred = np.argmax(probs, axis=1)
        cm = confusion_matrix(cl[keep], pred, len(class_names))
        counted = _subtitle(subtitle, f"n={int(keep.sum())} images with a class label")
        paths["confusion_multiclass"] = _plots.plot_confusion(
            cm,
            class_names,
            out / "confusion_multiclass.png",
            title=f"Confusion matrix (top-1 class){counted}",
        )
        if class_min_probability is not None and keep.any():
            paths["class_coverage"] = _plots.plot_selective_accuracy(
                cl[keep],
                probs,
                out / "class_coverage.png",
                min_probability=class_min_probability,
                title=f"Class accuracy against coverage{counted}",
            )
    if history:
        paths["training_curves"] = _plots.plot_training_curves(history, out / "training_curves.png")
    return paths


def _subtitle(subtitle: str | None, counted: str) -> str:
    return "\n" + (f"{subtitle}, {counted}" if subtitle else counted)


def _fracture_plots(
    y: ArrayLike,
    p: ArrayLike,
    out: Path,
    metrics: Mapping[str, Any],
    points: dict[str, float],
    confusion_threshold: float | None,
    ece_bins: int,
    subtitle: str | None,
) -> dict[str, Path]:
    ya, pa = _binary_inputs(y, p)

    def ci(key: str) -> tuple[float, float] | None:
        block = metrics.get(key) or {}
        low, high = block.get("ci_low"), block.get("ci_high")
        return None if low is None or high is None else (low, high)

    paths: dict[str, Path] = {}
    n_pos = int(ya.sum())
    level = float(metrics.get("ci_level") or 0.95)
    words = PositiveWords.of(metrics)
    counted = _subtitle(subtitle, f"n={ya.size} ({n_pos} {words.positive})")
    if 0 < n_pos < ya.size:
        paths["roc"] = _plots.plot_roc(
            ya,
            pa,
            out / "roc.png",
            ci=ci("auroc"),
            ci_level=level,
            operating_points=points,
            title=f"ROC curve{counted}",
        )
        paths["pr"] = _plots.plot_pr(
            ya,
            pa,
            out / "pr.png",
            ci=ci("average_precision"),
            ci_level=level,
            operating_points=points,
            title=f"Precision-recall curve{counted}",
        )
    ece, table = expected_calibration_error(ya, pa, n_bins=ece_bins)
    paths["calibration"] = _plots.plot_calibration(
        table,
        out / "calibration.png",
        ece=ece,
        title=f"Reliability diagram{counted}",
        positive=words.positive,
    )
    if confusion_threshold is None and points:
        confusion_threshold = next(iter(points.values()))
    if confusion_threshold is not None:
        named = [name for name, t in points.items() if t == confusion_threshold]
        point = f"{named[0]}, " if named else ""
        cm = confusion_matrix(ya, (pa >= confusion_threshold).astype(np.int64), 2)
        paths["confusion"] = _plots.plot_confusion(
            cm,
            [words.negative, words.positive],
            out / "confusion.png",
            title=f"Confusion matrix ({point}threshold {confusion_threshold:.3f}){counted}",
        )
    return paths


def write_report(
    metrics: Mapping[str, Any],
    out_dir: str | Path,
    *,
    title: str = "fracsight evaluation report",
    model_info: Mapping[str, Any] | None = None,
    plots: Mapping[str, str | Path] | None = None,
) -> Path:
    """Write ``report.html`` (self-contained) and ``metrics.json`` into ``out_dir``.

    ``model_info`` should name the model (``name``, ``version``) and the data
    set evaluated (``dataset``); any other entries are listed too. ``plots`` maps
    names to PNG/JPEG files (``render_all_plots`` output, plus e.g. ``"samples"``
    from ``plot_sample_grid``); they are embedded as data URIs and captioned by
    name, never by path. ``metrics.json`` holds exactly ``to_jsonable(metrics)``.
    Returns the path of ``report.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = to_jsonable(metrics)
    (out / "metrics.json").write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    html = _render_html(clean, title=title, model_info=to_jsonable(model_info or {}), plots=plots or {})
    path = out / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- HTML

NOTICE = "fracsight is a decision aid, not a diagnosis."

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #1d2330; line-height: 1.45; padding: 0 1rem; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 2px solid #e3e7ee; padding-bottom: .2rem; margin-top: 2rem; }
.notice { background: #fff4e5; border-left: 6px solid #f08c00; padding: .8rem 1rem; font-weight: 600;
          margin: 1rem 0; }
.muted { color: #667085; font-size: .9rem; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid #d9dee7; padding: .3rem .6rem; text-align: right; }
th { background: #f3f5f9; } td:first-child, th:first-child { text-align: left; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; border: 1px solid #e3e7ee; padding: .5rem; background: #fff; max-width: 100%;
         box-sizing: border-box; }
figure img { max-width: 500px; height: auto; display: block; }
@media (max-width: 600px) { figure img { max-width: 100%; } }
figure.wide { flex-basis: 100%; } figure.wide img { max-width: 100%; }
figcaption { text-align: center; font-size: .9rem; color: #444; }
"""


@dataclasses.dataclass(frozen=True)
class _CiSource:
    """How the report's intervals were drawn: their level, what they resample, how many times."""

    level: float
    method: str | None
    n_bootstrap: int | None


_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}


def _plot_captions(words: PositiveWords) -> dict[str, str]:
    return {
        "roc": "ROC curve",
        "pr": "Precision-recall curve",
        "calibration": "Calibration (reliability diagram)",
        "confusion": f"Confusion matrix ({words.finding})",
        "confusion_multiclass": "Confusion matrix (classes)",
        "class_coverage": "Class accuracy against coverage",
        "training_curves": "Training curves",
        "samples": "Sample predictions: where the data is labelled, the model's most confident errors first "
        f"(missed {words.findings}, then false alarms; for a class model, wrong classes), then its most "
        "confident correct answers for reference; without labels, its most confident predictions",
    }


_WIDE_PLOTS = {"samples", "training_curves"}


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _with_ci(block: Mapping[str, Any] | None) -> str:
    if not block or block.get("value") is None:
        return "—"
    text = _num(block["value"])
    if block.get("ci_low") is not None and block.get("ci_high") is not None:
        text += f" ({_num(block['ci_low'])}–{_num(block['ci_high'])})"
    return text


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; every cell is formatted with ``_num`` and escaped."""
    head = "".join(f"<th>{_html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_html.escape(_num(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    # in a box of its own that scrolls sideways: a wide table widened the whole page on a phone
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def where_read_off(sas: Mapping[str, Any]) -> str:
    """Where a sensitivity at specificity was read: its threshold and the specificity there, or,
    where only flagging nothing reaches the target, that (its threshold is one float step above
    every score: "threshold 0.489" read as p >= 0.489 flagged every image of an all-equal set)."""
    if sas.get("sensitivity") == 0 and sas.get("specificity") == 1:
        return "no threshold reaches it while flagging any image: nothing flagged"
    return f"threshold {_num(sas.get('threshold'))}, specificity {_num(sas.get('specificity'))}"


def _at_specificity(sas: Mapping[str, Any]) -> str:
    text = _num(sas.get("sensitivity"))
    if sas.get("sensitivity") is not None and sas.get("threshold") is not None:
        text += f" ({where_read_off(sas)})"
    return text


def _ece_label(cal: Mapping[str, Any]) -> str:
    bins = cal.get("n_bins")
    return "Expected calibration error" + (f" ({bins} equal-width bins)" if bins else "")


def _has_ci(block: Mapping[str, Any] | None) -> bool:
    return block is not None and block.get("ci_low") is not None and block.get("ci_high") is not None


def _ci_label(name: str, block: Mapping[str, Any] | None, ci_level: float) -> str:
    """``name`` with the level of its interval, where it has one (none with --bootstrap 0)."""
    return f"{name} ({100 * ci_level:.0f}% CI)" if _has_ci(block) else name


def _ci_note(ci: _CiSource, unit: str) -> str:
    """What the intervals of a table resample, under it: a reader of the table should not have to
    find it at the end of the report (groups of related images, not images, since 2026-12-03)."""
    if not ci.method:
        return ""
    resamples = f"; {ci.n_bootstrap} resamples" if ci.n_bootstrap else ""
    return (
        f'<p class="muted">{100 * ci.level:.0f}% confidence intervals: {_html.escape(ci.method)}, over '
        f"{unit.lower()}{resamples}.</p>"
    )


def _summary(block: Mapping[str, Any], ci_level: float, unit: str, words: PositiveWords) -> str:
    sas = block.get("sensitivity_at_specificity") or {}
    rows = [
        [
            f"{unit} ({words.positive} / {words.negative})",
            f"{block['n']} ({block['n_positive']} / {block['n_negative']})",
        ],
        [_ci_label("AUROC", block.get("auroc"), ci_level), _with_ci(block.get("auroc"))],
        [
            _ci_label("Average precision", block.get("average_precision"), ci_level),
            _with_ci(block.get("average_precision")),
        ],
        [
            f"Sensitivity at specificity ≥ {_num(sas.get('specificity_target'), 2)} "
            f"(at a threshold chosen on these {unit.lower()})",
            _at_specificity(sas),
        ],
        [_ece_label(block.get("calibration") or {}), (block.get("calibration") or {}).get("ece")],
        ["Brier score", block.get("brier")],
    ]
    return _table(["Metric", "Value"], rows)


def _rate(m: Mapping[str, Any], key: str, hits: str, misses: str) -> str | None:
    """A sensitivity or specificity with the images it counts, "0.877 (100/114)"; None where it is
    not defined (shown as — and explained)."""
    value, a, b = m.get(key), m.get(hits), m.get(misses)
    if value is None or a is None or b is None:
        return None if value is None else _num(value)
    low, high = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
    interval = f"; {_num(low)}–{_num(high)}" if low is not None and high is not None else ""
    return (
        f"{_num(value)}\N{NO-BREAK SPACE}({a}/{a + b}{interval})"  # one line: the counts belong to the rate
    )


def _sens_spec(m: Mapping[str, Any]) -> list[str | None]:
    return [_rate(m, "sensitivity", "tp", "fn"), _rate(m, "specificity", "tn", "fp")]


def _thresholds(thresholds: Mapping[str, Mapping[str, Any]], words: PositiveWords, ci_level: float) -> str:
    if not thresholds:
        return '<p class="muted">No operating thresholds were given.</p>'
    keys = ["precision", "npv", "f1", "accuracy", "cohen_kappa", "tp", "fp", "tn", "fn"]
    shown = any(m.get("sensitivity_ci_low") is not None for m in thresholds.values())
    level = f"{100 * ci_level:.0f}% CI"
    rates = (
        [f"Sensitivity (n; {level})", f"Specificity (n; {level})"]
        if shown
        else ["Sensitivity", "Specificity"]
    )
    headers = ["Operating point", "Threshold", *rates, "Precision (PPV)", "NPV", "F1"]
    headers += ["Accuracy", "Cohen's κ", "TP", "FP", "TN", "FN"]
    rows = [
        [name, m.get("threshold"), *_sens_spec(m), *[m.get(k) for k in keys]]
        for name, m in thresholds.items()
    ]
    return _table(headers, rows) + _undefined(rows, words)


def _undefined(rows: Sequence[Sequence[Any]], words: PositiveWords) -> str:
    """What an empty cell of ``rows`` means, where there is one."""
    if all(c is not None for row in rows for c in row):
        return ""
    return (
        '<p class="muted">— : not defined here (a ratio with nothing to count, such as sensitivity '
        f"without {words.positive} images or the precision of a class never predicted; AUROC needs both "
        "classes).</p>"
    )


def _one_class_note(block: Mapping[str, Any], unit: str, words: PositiveWords) -> str:
    n, n_pos = block.get("n", 0), block.get("n_positive", 0)
    if 0 < n_pos < n:
        return ""
    only = words.positive if n_pos else words.negative
    return (
        f'<p class="muted"><strong>All {n} {unit.lower()} here are {only}</strong>: AUROC, average '
        "precision, sensitivity at a specificity and the ROC and precision-recall curves need both "
        f"{words.positive} and non-{words.positive} {unit.lower()}, so they are not given.</p>"
    )


def _binary_section(
    block: Mapping[str, Any], ci: _CiSource, unit: str, words: PositiveWords, method: str | None
) -> str:
    """``method``: what the intervals of ``block`` resample (its ``ci_method``)."""
    shown = _has_ci(block.get("auroc")) or _has_ci(block.get("average_precision"))
    return (
        "<h3>Summary</h3>"
        + _one_class_note(block, unit, words)
        + _summary(block, ci.level, unit, words)
        + (_ci_note(dataclasses.replace(ci, method=method), unit) if shown else "")
        + "<h3>Operating points</h3>"
        + _thresholds(block.get("thresholds") or {}, words, ci.level)
    )


def _regions(regions: Mapping[str, Mapping[str, Any]], words: PositiveWords, ci: _CiSource) -> str:
    point_names = list(next(iter(regions.values()), {}).get("thresholds", {}))
    shown = any(_has_ci(r.get("auroc")) for r in regions.values())
    headers = [
        "Body region",
        "n",
        words.positive.capitalize(),
        f"AUROC ({100 * ci.level:.0f}% CI)" if shown else "AUROC",
    ]
    headers += [f"{name}: {what}" for name in point_names for what in ("sens.", "spec.")]
    rows = []
    for name, r in regions.items():
        row = [name, r["n"], r["n_positive"], _with_ci(r.get("auroc"))]
        for point in point_names:
            row += _sens_spec(r["thresholds"][point])
        rows.append(row)
    return _table(headers, rows) + (_ci_note(ci, "images") if shown else "") + _undefined(rows, words)


def _region_head(rh: Mapping[str, Any]) -> str:
    top = _table(
        ["Metric", "Value"],
        [
            ["Region accuracy (top-1 region is a true region)", rh.get("region_accuracy")],
            ["Images evaluated", rh.get("n_evaluated")],
            ["Macro AUROC", rh.get("macro_auroc")],
        ],
    )
    rows = [[n, r["auroc"], r["n_positive"], r["n_negative"]] for n, r in rh["per_region"].items()]
    table = _table(["Region", "AUROC", "Images of the region", "Other images"], rows)
    if rh.get("macro_auroc") is not None and all(r[1] is not None for r in rows):
        return top + table
    return (
        top
        + table
        + '<p class="muted">— : AUROC needs images of the region and images of other regions; a region '
        "without either is left out of the macro AUROC, which needs one such region at least.</p>"
    )


def _localization(loc: Mapping[str, Any], words: PositiveWords) -> str:
    positive = words.positive
    table = _table(
        ["Box metric", "Value"],
        [
            [f"{positive.capitalize()} images with true boxes", loc.get("n_images")],
            [
                f"Top box hits a true box (IoU ≥ {_num(loc.get('iou_thr', 0.1), 2)} or contains its centre)",
                loc.get("hit_rate_any"),
            ],
            # a box of the whole film holds every centre: the overlap alone says whether boxes find
            [
                f"Top box overlaps a true box by IoU ≥ {_num(loc.get('iou_thr', 0.1), 2)} alone",
                loc.get("hit_rate_iou"),
            ],
            ["Box AP at IoU 0.5", loc.get("ap50")],
            ["Box AP at IoU 0.5:0.95", loc.get("ap50_95")],
            [
                f"Images scored, normal ones included ({positive} ones need true boxes)",
                loc.get("n_images_all"),
            ],
            ["Box AP at IoU 0.5, false boxes on normal images counted", loc.get("ap50_all")],
            ["Box AP at IoU 0.5:0.95, false boxes on normal images counted", loc.get("ap50_95_all")],
        ],
    )
    return table + f'<p class="muted">{_html.escape(str(loc.get("definition", "")))}</p>'


def _class_operating_point_table(op: Mapping[str, Any], unit: str) -> str:
    rows = [
        ["Minimum top-1 probability", op.get("min_probability"), op.get("min_probability")],
        ["Accuracy of the stated classes", op.get("accuracy"), op.get("validation_accuracy")],
        [f"Coverage (share of {unit} given a class)", op.get("coverage"), op.get("validation_coverage")],
    ]
    headers = ["Class operating point", "Here", "Validation (recorded in the bundle)"]
    if op.get("validation_accuracy") is None and op.get("validation_coverage") is None:
        # none recorded (the study level's, a bundle without them): no column of dashes
        headers, rows = headers[:2], [row[:2] for row in rows]
    table = _table(headers, rows)
    how = op.get("description")
    rule = "Below the minimum probability the class is reported as uncertain."
    note = f"{rule} Chosen as: {how}." if how else rule
    return table + f'<p class="muted">{_html.escape(note)}</p>'


def _multiclass(mc: Mapping[str, Any], words: PositiveWords, unit: str = "images") -> str:
    counted = mc.get("counted")
    parts = [f'<p class="muted">{_html.escape(str(counted))}</p>'] if counted else []
    top = _table(
        ["Metric", "Value"],
        [
            [f"{unit.capitalize()} with a class label", mc["n"]],
            ["Accuracy (top-1)", mc["accuracy"]],
            ["Macro F1", mc["macro_f1"]],
            ["Macro AUROC (one-vs-rest)", mc["macro_auroc"]],
            ["Cohen's κ", mc["cohen_kappa"]],
        ],
    )
    parts.append(top)
    if mc.get("operating_point"):
        parts.append(_class_operating_point_table(mc["operating_point"], unit))
    per = [
        [n, c["precision"], c["recall"], c["f1"], c["auroc"], c["support"]]
        for n, c in mc["per_class"].items()
    ]
    parts.append(_table(["Class", "Precision", "Recall", "F1", "AUROC", "Support"], per))
    parts.append(_undefined(per, words))
    names = mc["class_names"]
    cm_rows = [
        [f"true {n}" + (" (no images)" if not sum(row) else ""), *row]
        for n, row in zip(names, mc["confusion_matrix"], strict=True)
    ]
    parts.append(
        "<h3>Confusion matrix</h3>" + _table(["True \\ predicted", *[f"pred {n}" for n in names]], cm_rows)
    )
    return "".join(parts)


def _calibration_details(cal: Mapping[str, Any], words: PositiveWords) -> str:
    rows = [
        [
            f"{r['bin_lower']:.2f}–{r['bin_upper']:.2f}",
            r["count"],
            r["mean_predicted"],
            r["fraction_positive"],
        ]
        for r in cal.get("table", [])
    ]
    table = _table(["Probability bin", "Images", "Mean predicted", f"Observed {words.positive}"], rows)
    return f"<details><summary>Reliability table</summary>{table}</details>"


def _model(model_info: Mapping[str, Any]) -> str:
    shown = {"name", "version", "dataset", "heads"}
    rows = [
        ["Model", model_info.get("name", "not stated")],
        ["Version", model_info.get("version", "not stated")],
        ["Data set evaluated", model_info.get("dataset", "not stated")],
    ]
    if "heads" in model_info:
        rows.append(["Heads", model_info["heads"]])
    for key, value in model_info.items():
        if key not in shown:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            rows.append([key, text])
    return _table(["Item", "Value"], rows)


def _figures(plots: Mapping[str, str | Path], words: PositiveWords) -> str:
    captions, figures = _plot_captions(words), []
    for name, file in plots.items():
        path = Path(file)
        mime = _MIME.get(path.suffix.lower())
        if mime is None:
            raise ValueError(f"plot {name!r}: unsupported image type {path.suffix!r} (use PNG or JPEG)")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        caption = _html.escape(captions.get(name, name))
        wide = ' class="wide"' if name in _WIDE_PLOTS else ""  # thumbnails: shown at full size
        figures.append(
            f'<figure{wide}><img alt="{caption}" src="data:{mime};base64,{data}"><figcaption>{caption}'
            "</figcaption></figure>"
        )
    return '<div class="plots">' + "".join(figures) + "</div>"


def _prose(text: str) -> str:
    """A note, escaped, its `commands` set as code (the notes are written for the terminal too, where
    the report showed their backticks)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _html.escape(text))


def _unread(metrics: Mapping[str, Any]) -> str:
    """The images that could not be read, each with its error: every figure here leaves them out."""
    failed, data = metrics["failed"], metrics.get("data") or {}
    total = f" of {data['n_images']}" if data.get("n_images") is not None else ""
    rows = [[f["source"], f["error_code"], f["error"]] for f in failed]
    return (
        f"<p><strong>{len(failed)}{total} images could not be read</strong>: every figure in this report "
        "is over the images that were read, without these.</p>"
        + _table(["Image", "Error code", "Error"], rows)
    )


def _render_html(
    metrics: Mapping[str, Any], *, title: str, model_info: Mapping[str, Any], plots: Mapping[str, str | Path]
) -> str:
    from fracsight import __version__

    ci_level = float(metrics.get("ci_level") or 0.95)
    ci = _CiSource(ci_level, metrics.get("ci_method"), metrics.get("n_bootstrap"))
    words = PositiveWords.of(metrics)
    finding, positive = words.finding, words.positive
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_html.escape(title)}</h1>",
        f'<p class="muted">Generated {stamp} by fracsight {_html.escape(__version__)}.</p>',
        f'<div class="notice" role="note">{_html.escape(NOTICE)} Every finding needs review by a '
        "qualified clinician.</div>",
        "<h2>Model and data</h2>",
        _model(model_info),
    ]
    if metrics.get("failed"):
        parts += ["<h2>Images not read</h2>", _unread(metrics)]
    if "auroc" in metrics:  # absent for a model with only an N-class head
        parts += [
            f"<h2>Image-level {finding} detection</h2>",
            _binary_section(metrics, ci, "Images", words, ci.method),
            _calibration_details(metrics.get("calibration") or {}, words),
        ]
    if metrics.get("study"):
        study = metrics["study"]
        parts += [
            f"<h2>Study-level {finding} detection</h2>",
            f'<p class="muted">Study probability: {_html.escape(str(study.get("method")))} of its image '
            f"probabilities; a study is {positive} if any of its images is.</p>",
            _binary_section(study, ci, "Studies", words, study.get("ci_method")),
        ]
    if metrics.get("regions"):
        parts += [
            f"<h2>{finding.capitalize()} detection by body region</h2>",
            _regions(metrics["regions"], words, ci),
        ]
    if metrics.get("localization"):
        loc = _localization(metrics["localization"], words)
        parts += [f"<h2>Boxes against the true {finding} boxes</h2>", loc]
    if metrics.get("region_head"):
        parts += ["<h2>Body-region head</h2>", _region_head(metrics["region_head"])]
    if metrics.get("multiclass"):
        mc = metrics["multiclass"]
        parts += ["<h2>Class head</h2>", _multiclass(mc, words)]
        if mc.get("study"):
            study = mc["study"]
            parts += [
                "<h3>Study level</h3>",
                f'<p class="muted">Study class: {_html.escape(str(study.get("method")))} of its images\' '
                "class probabilities, against the most common class label of its images.</p>",
                _multiclass(study, words, "studies"),
            ]
    if metrics.get("notes"):
        items = "".join(f"<li>{_prose(str(n))}</li>" for n in metrics["notes"])
        parts += ["<h2>Notes</h2>", f"<ul>{items}</ul>"]
    if plots:
        parts += ["<h2>Plots</h2>", _figures(plots, words)]
    reading = []
    if "auroc" in metrics:
        if metrics.get("n_bootstrap") == 0:  # none drawn: the method would describe intervals not there
            reading.append("No confidence intervals: no bootstrap resamples were drawn.")
        else:
            boot = ""
            if metrics.get("n_bootstrap"):
                boot = f"; {metrics['n_bootstrap']} resamples" + (
                    f", seed {metrics['bootstrap_seed']}" if metrics.get("bootstrap_seed") is not None else ""
                )
            reading.append(
                f"Confidence intervals: {_html.escape(str(metrics.get('ci_method', 'percentile bootstrap')))}"
                f"{boot}."
            )
        definitions = [
            (metrics.get("sensitivity_at_specificity") or {}).get("definition"),
            (metrics.get("calibration") or {}).get("definition"),
            (metrics.get("average_precision") or {}).get("definition"),
        ]
        names = ["Sensitivity at specificity", "Expected calibration error", "Average precision"]
        reading += [f"{n}: {_html.escape(str(d))}." for n, d in zip(names, definitions, strict=True) if d]
    if metrics.get("multiclass"):
        reading.append("Class metrics are point estimates without confidence intervals.")
    reading.append(  # an exact 355/400 = 0.8875 showed as 0.887: said, not rounded another way here
        "Figures are shown to 3 decimals, rounded from their binary values (a value ending in 5 may "
        "round either way); metrics.json holds them in full."
    )
    reading.append(
        "Operating points (thresholds, the class minimum probability) and calibration should come from "
        "validation data, not from the data evaluated here. Performance on other populations, devices or "
        "protocols may differ."
    )
    parts += [
        "<h2>Reading these numbers</h2>",
        f"<p>{' '.join(reading)}</p>",
        f'<div class="notice">{_html.escape(NOTICE)}</div>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
