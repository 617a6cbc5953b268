"""Evaluation: metrics, calibration, operating points, study aggregation, plots, HTML report.

Everything here is numpy-only (no torch). The metric, calibration, threshold
and aggregation functions are imported eagerly; the plotting and report
functions load matplotlib only when first used.

Example::

    from fracsight.evaluation import evaluate_predictions, render_all_plots, write_report

    metrics = evaluate_predictions(y, p, threshold_points={"default": 0.42})
    plots = render_all_plots(y, p, "out/", metrics=metrics, threshold_points={"default": 0.42})
    write_report(metrics, "out/", model_info={"name": "fracatlas-lite0-384-v1", "version": "1",
                 "dataset": "FracAtlas test split"}, plots=plots)
"""

from __future__ import annotations

import importlib
from typing import Any

from fracsight.evaluation.aggregate import (
    aggregate_labels,
    aggregate_studies,
    aggregate_study_predictions,
)
from fracsight.evaluation.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    probability_to_logit,
)
from fracsight.evaluation.metrics import (
    auroc,
    average_precision,
    binary_metrics_at,
    bootstrap_ci,
    cohen_kappa,
    confusion_matrix,
    multiclass_metrics,
    multilabel_metrics,
    pr_curve,
    regions_to_targets,
    roc_curve,
)
from fracsight.evaluation.thresholds import (
    ThresholdChoice,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
    threshold_for_sensitivity,
    threshold_for_specificity,
    youden_threshold,
)

_LAZY = {
    "plot_calibration": "fracsight.evaluation.plots",
    "plot_confusion": "fracsight.evaluation.plots",
    "plot_pr": "fracsight.evaluation.plots",
    "plot_roc": "fracsight.evaluation.plots",
    "plot_sample_grid": "fracsight.evaluation.plots",
    "plot_training_curves": "fracsight.evaluation.plots",
    "evaluate_predictions": "fracsight.evaluation.report",
    "render_all_plots": "fracsight.evaluation.report",
    "to_jsonable": "fracsight.evaluation.report",
    "write_report": "fracsight.evaluation.report",
}

__all__ = [
    "ThresholdChoice",
    "aggregate_labels",
    "aggregate_studies",
    "aggregate_study_predictions",
    "apply_temperature",
    "auroc",
    "average_precision",
    "binary_metrics_at",
    "bootstrap_ci",
    "brier_score",
    "cohen_kappa",
    "confusion_matrix",
    "evaluate_predictions",
    "expected_calibration_error",
    "fit_temperature",
    "multiclass_metrics",
    "multilabel_metrics",
    "plot_calibration",
    "plot_confusion",
    "plot_pr",
    "plot_roc",
    "plot_sample_grid",
    "plot_training_curves",
    "pr_curve",
    "probability_to_logit",
    "regions_to_targets",
    "render_all_plots",
    "roc_curve",
    "sensitivity_at_specificity",
    "specificity_at_sensitivity",
    "threshold_for_sensitivity",
    "threshold_for_specificity",
    "to_jsonable",
    "write_report",
    "youden_threshold",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
