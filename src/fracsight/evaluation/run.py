"""Evaluate a model bundle on a data set: predict every image, then metrics, plots and report.

This is what ``fracsight evaluate MODEL DATA_DIR`` runs. Predictions go through
the same :class:`~fracsight.inference.Predictor` users run, so the numbers
describe the shipped ONNX model, not a training-time copy of it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fracsight.data import CLASS, FRACTURE, Dataset, Sample, load_dataset
from fracsight.errors import DatasetError

__all__ = ["evaluate_model", "select_samples"]


def select_samples(dataset: Dataset, split: str | None) -> list[Sample]:
    """The samples of ``split`` ("all" or None: every sample)."""
    if split in (None, "all"):
        return list(dataset.samples)
    chosen = list(dataset.split(split))
    if not chosen:
        raise DatasetError(f"{dataset.root} has no {split!r} split; it has {list(dataset.splits) or 'none'}")
    return chosen


def _localization(samples: list[Sample], preds: list[Any]) -> dict[str, Any] | None:
    from fracsight.explain import average_precision_boxes, denormalize_box, hit_rate

    pairs = [(s, p) for s, p in zip(samples, preds, strict=True) if s.boxes and s.labels.get(FRACTURE) == 1]
    if not pairs:
        return None
    trues = []
    for s, p in pairs:
        h, w = p.metadata.original_size
        trues.append([denormalize_box((b.x0, b.y0, b.x1, b.y1), (h, w)) for b in s.boxes])
    boxes = [list(p.boxes) for _, p in pairs]
    hits = hit_rate(boxes, trues, iou_thr=0.1).to_dict()
    return {
        "n_images": len(pairs),
        **hits,
        "ap50": average_precision_boxes(boxes, trues, iou_thr=0.5),
        "ap10": average_precision_boxes(boxes, trues, iou_thr=0.1),
        "definition": "top box = highest-scoring predicted box; a hit overlaps a true box at IoU >= 0.1 or "
        "contains its centre; AP over all predicted boxes (all-point interpolation)",
    }


def _sample_grid(samples, preds, y, p, has_fracture: bool, path: Path, predictor) -> Path:
    """The 16 most confident predictions, right or wrong, with their probabilities."""
    from fracsight.evaluation.plots import plot_sample_grid
    from fracsight.io import read_image

    if has_fracture:
        order = np.argsort(-np.abs(p - predictor.operating_point.threshold))[:16]
        titles = [f"{samples[i].image_id}\np={p[i]:.2f}" for i in order]
        labels = [int(y[i]) for i in order]
        predicted = [int(bool(preds[i].fracture_suspected)) for i in order]
    else:
        classes = predictor.classes
        top = [max(pr.class_probabilities, key=pr.class_probabilities.__getitem__) for pr in preds]
        confidence = np.array([pr.class_probabilities[t] for pr, t in zip(preds, top, strict=True)])
        order = np.argsort(-confidence)[:16]
        titles = [f"{samples[i].image_id}\n{top[i]} {confidence[i]:.2f}" for i in order]
        labels = [samples[i].labels.get(CLASS, -1) for i in order]
        predicted = [classes.index(top[i]) for i in order]
    images = [read_image(samples[i].path).pixels for i in order]
    return plot_sample_grid(images, titles, path, labels=labels, predictions=predicted)


def evaluate_model(
    model: str | Path | None,
    data_dir: Path,
    out_dir: Path | None = None,
    *,
    split: str | None = "test",
    layout: str = "auto",
    threshold: float | None = None,
    n_bootstrap: int = 2000,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Metrics for ``model`` on ``data_dir``; with ``out_dir`` also plots, metrics.json and report.html."""
    from fracsight.evaluation.report import evaluate_predictions, render_all_plots, to_jsonable, write_report
    from fracsight.inference import FailedPrediction, Predictor

    predictor = Predictor(model)
    dataset = load_dataset(Path(data_dir), layout)
    samples = select_samples(dataset, split)
    if not all(FRACTURE in s.labels for s in samples) and CLASS not in dataset.class_names:
        raise DatasetError(f"{data_dir} has no fracture labels to evaluate against")

    good_samples, preds, failed = [], [], []
    stream = predictor.predict_many([s.path for s in samples], batch_size=16)
    for i, (sample, pred) in enumerate(zip(samples, stream, strict=True)):
        if isinstance(pred, FailedPrediction):
            failed.append(pred.to_dict())
        else:
            good_samples.append(sample)
            preds.append(pred)
        if progress:
            progress(i + 1, len(samples))
    if not preds:
        raise DatasetError(f"no image of {data_dir} could be read")

    spec = predictor.spec
    points = {op.name: op.threshold for op in spec.operating_points}
    if threshold is not None:
        points["custom"] = threshold
    y = np.array([s.labels.get(FRACTURE, 0) for s in good_samples])
    p = np.array([pr.fracture_probability or 0.0 for pr in preds])
    kw: dict[str, Any] = {}
    if predictor.regions and any(s.regions for s in good_samples):
        kw.update(
            regions=[s.regions for s in good_samples],
            region_names=predictor.regions,
            region_probs=np.array([[pr.region_probabilities[r] for r in predictor.regions] for pr in preds]),
        )
    if any(s.study_id for s in good_samples):
        kw["study_ids"] = [s.study_id or s.image_id for s in good_samples]
    if predictor.classes and CLASS in dataset.class_names:
        if tuple(dataset.class_names[CLASS]) != predictor.classes:
            raise DatasetError(
                f"the data's classes {dataset.class_names[CLASS]} differ from the model's {predictor.classes}"
            )
        kw.update(
            class_labels=[s.labels.get(CLASS, -1) for s in good_samples],
            class_names=predictor.classes,
            class_probs=np.array([[pr.class_probabilities[c] for c in predictor.classes] for pr in preds]),
        )
    has_fracture = (
        predictor.operating_point is not None
        and all(FRACTURE in s.labels for s in good_samples)
        and 0 < y.sum() < len(y)
    )
    if has_fracture:
        metrics = evaluate_predictions(y, p, threshold_points=points, n_bootstrap=n_bootstrap, **kw)
    else:
        from fracsight.evaluation.metrics import multiclass_metrics

        metrics = {"multiclass": multiclass_metrics(kw["class_labels"], kw["class_probs"], predictor.classes)}
    localization = _localization(good_samples, preds)
    if localization:
        metrics["localization"] = localization
    metrics.update(
        model={"name": spec.name, "version": spec.version},
        data={
            "root": str(data_dir),
            "layout": dataset.layout,
            "split": split or "all",
            "n_images": len(samples),
            "n_evaluated": len(preds),
            "n_positive": int(y.sum()),
        },
        failed=failed,
        operating_points=points,
    )
    metrics = to_jsonable(metrics)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        plots: dict[str, Path] = {}
        class_kw = {k: kw[k] for k in ("class_labels", "class_probs", "class_names") if k in kw}
        if has_fracture:
            plots = render_all_plots(
                y,
                p,
                out_dir,
                metrics=metrics,
                threshold_points=points,
                confusion_threshold=predictor.operating_point.threshold,
                **class_kw,
            )
        plots["samples"] = _sample_grid(
            good_samples, preds, y, p, has_fracture, out_dir / "samples.png", predictor
        )
        write_report(
            metrics,
            out_dir,
            title=f"fracsight evaluation: {spec.name} on {Path(data_dir).name}",
            model_info={"name": spec.name, "version": spec.version, "dataset": f"{data_dir} ({split})"},
            plots=plots,
        )
    return metrics
