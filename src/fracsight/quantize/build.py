"""An INT8 bundle from any float bundle: quantize, refit on its own outputs, gate, write.

>>> from fracsight.quantize import quantize_bundle
>>> spec = quantize_bundle("fracatlas-lite0-384-v2", "runs/int8/fracatlas-lite0-384-v2-int8",
...                        data_dir="../shared/data/fracatlas", evaluate_split="test")  # doctest: +SKIP

Nothing is written unless the gate passes: the bundle is built in a hidden folder next
to ``out_dir`` and moved into place at the end. No torch on this path (onnxruntime,
its quantization tools and the ``onnx`` package).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fracsight._output import check_output_folder, staged_folder
from fracsight.bundle import BundleSpec, sha256_file, write_bundle_spec
from fracsight.data import Dataset, load_dataset
from fracsight.data.leakage import refuse_bundle_trained_on
from fracsight.data.splits import train_val_samples
from fracsight.detection.build import refuse_output_in_bundle
from fracsight.detection.taps import detector_nodes
from fracsight.errors import BundleError, ConfigError, OutputFolderError
from fracsight.inference.onnx_model import OnnxModel
from fracsight.inference.store import resolve_bundle
from fracsight.quantize.gate import GateBounds, QuantizationRefused, check_gate, measure_gate
from fracsight.quantize.int8 import QUANTIZATION, quantize_onnx
from fracsight.training.card import reproduce_line, write_card
from fracsight.training.refit import (
    fit_to_outputs,
    metrics_summary,
    model_input,
    orientation_certainty,
    orientation_views,
    raw_outputs,
    refit_to_predictions,
    refuse_unfit_data,
)

__all__ = ["CALIBRATION_IMAGES", "calibration_samples", "quantize_bundle"]

CALIBRATION_IMAGES = 64
Progress = Callable[[str], None]


def calibration_samples(dataset: Dataset, train: list, n: int) -> list:
    """``n`` training images spread evenly over the split's order (deterministic)."""
    if n < 1:
        raise ConfigError("the number of calibration images must be at least 1")
    if not train:
        raise ConfigError(f"{dataset.root} has no training images to calibrate INT8 activations on")
    index = np.unique(np.linspace(0, len(train) - 1, min(n, len(train))).round().astype(int))
    return [train[i] for i in index]


def _quantized_operators(onnx_path: Path) -> bool:
    """Whether the graph holds quantized operators already (QuantizeLinear, QLinearConv, ...)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return any(n.op_type in _QUANTIZED_OPS for n in graph.node)


_QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
)


def _data(spec: BundleSpec, data_dir: Path | None) -> tuple[Path, Dataset, list, list]:
    # a float bundle calibrated on other data than its network's (export --data-dir) is refitted on
    # that same data: on its training data, the INT8 card said "calibrated on" data it was not
    fitted = spec.training.get("calibration_data") or spec.training
    recorded = fitted.get("data")
    root = Path(data_dir) if data_dir else Path(recorded) if recorded else None
    if root is None or not root.is_dir():
        where = "none is recorded"
        if root is not None:
            older = "" if root.is_absolute() else ", by an older fracsight, relative to where training ran"
            where = f"{root} (recorded in bundle.json{older}) is not a folder here"
        raise ConfigError(f"no data to calibrate on: {where}; pass --data DATA_DIR")
    layout = fitted.get("layout", "auto") if not data_dir else "auto"
    dataset = load_dataset(root, layout)
    fracture, class_head = spec.head("fracture"), spec.head("class")
    train, val = train_val_samples(dataset, int(spec.training.get("config", {}).get("seed", 0)))
    refuse_unfit_data(  # before the work
        dataset,
        val,
        fracture.classes if fracture else (),
        class_head.classes if class_head else (),
        "quantize with data labelled as the bundle's (--data)",
    )
    return root, dataset, train, val


def _refit_orientation(spec: BundleSpec, model: OnnxModel, val: list, say: Progress) -> BundleSpec:
    """``spec`` with the orientation step's certainty chosen anew, by the detector build's rule, on
    ``model``'s own outputs for the validation images in their four quarter turns (its fixed
    settings, such as ``check_below``, kept). Unchanged when the bundle has no orientation step."""
    if not spec.orientation:
        return spec
    say(f"running the INT8 model on {len(val)} validation images in four quarter turns (orientation)")
    certainty, stats = orientation_certainty(*orientation_views(model, val))
    return dataclasses.replace(
        spec, orientation={**spec.orientation, "min_probability": certainty, "validation": stats}
    )


def _float_figures(spec: BundleSpec, own_data: bool) -> tuple[dict[str, Any], dict]:
    """The float bundle's recorded metrics and orientation step, to stand beside the INT8 model's:
    as recorded on the data set they were measured on (``own_data``: the data are those). On other
    data its metrics are left out (a split asked for is measured again) and so are its orientation
    step's validation figures."""
    if own_data:
        return dict(spec.metrics), dict(spec.orientation or {})
    return {}, {k: v for k, v in (spec.orientation or {}).items() if k != "validation"}


def _command(
    model: str | Path,
    out_dir: Path,
    data_root: Path,
    n_calibration: int,
    bounds: GateBounds,
    evaluate_split: str | None,
) -> str:
    """The `fracsight quantize` command that writes this bundle, for its card when none was typed
    (a script calling quantize_bundle): it named MODEL, OUT and --data alone, so that a bundle
    calibrated on 16 images or through a widened gate was said to be made with 64 and the default."""
    import shlex

    args = ["quantize", str(model), str(out_dir), "--data", str(data_root)]
    if n_calibration != CALIBRATION_IMAGES:
        args += ["--calibration-images", str(n_calibration)]
    if evaluate_split:
        args += ["--evaluate", evaluate_split]
    default = GateBounds().to_dict()
    for key, value in bounds.to_dict().items():
        if value != default[key]:
            args += ["--" + key.replace("_", "-"), str(value)]
    return "fracsight " + shlex.join(args)


def quantize_bundle(
    model: str | Path,
    out_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    n_calibration: int = CALIBRATION_IMAGES,
    bounds: GateBounds | None = None,
    evaluate_split: str | None = None,
    force: bool = False,
    command: str | None = None,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
) -> BundleSpec:
    """Write the INT8 version of the float bundle ``model`` to ``out_dir`` and return its spec.

    Calibrated on ``n_calibration`` images of the ``train`` split; calibration, operating points,
    OOD and localization settings and the orientation certainty refitted on the INT8 model's own
    ``val`` outputs (calibration and operating points on the reads the Predictor keeps, with its
    orientation step: :func:`~fracsight.training.refit.refit_to_predictions`; heatmap-box
    settings only where ``val`` has boxes, a detector's never); refused
    (:class:`QuantizationRefused`, nothing written) when it breaks ``bounds``.
    ``evaluate_split``: also measure both models on that split for the card; what the evaluation
    warns of (its splits' leakage) goes to ``warn`` (default: the log), once.
    """
    say = progress or (lambda _msg: None)
    bounds = bounds or GateBounds()
    source, out_dir = resolve_bundle(model), Path(out_dir)
    shown = "default" if model is None else str(model)  # a .zip as given, not its unpacked copy
    float_model = OnnxModel(source)  # checks model.onnx against its recorded sha256
    float_spec = float_model.spec
    if float_spec.precision != "float32" or _quantized_operators(source / "model.onnx"):
        # a bundle.json that says float32 over an INT8 graph (one of before INT8 bundles, edited):
        # onnxruntime's quantizer ran, then the result did not load ("two nodes with same node name")
        raise BundleError(f"{shown} is already quantized (int8): quantize its float bundle instead")
    inputs = [("the float bundle", source)]
    try:
        check_output_folder(out_dir, force=force, inputs=inputs)
        refuse_output_in_bundle(out_dir, source, "the float bundle")
    except OutputFolderError as e:  # named as given: a .zip's unpacked copy is a folder never seen
        raise OutputFolderError(str(e).replace(str(source), shown)) from None
    data_root, dataset, train, val = _data(float_spec, Path(data_dir) if data_dir else None)
    dataset.refuse_output_inside(out_dir, "OUT")  # class folders: the next read takes it for a class
    if evaluate_split:  # an unknown split: refused before the work, not after it
        from fracsight.evaluation.run import held_out_samples

        held_out_samples(dataset, evaluate_split, float_spec, data_root, "--evaluate")  # as evaluated below
    if data_dir:  # other data, so the card says: not the images its network trained on
        named = f"{float_spec.name} v{float_spec.version}"  # not `model`: the bundle as given, below
        refuse_bundle_trained_on(float_spec.training, data_root, val, named)
    size = float_spec.input_size
    with staged_folder(out_dir, force=force, inputs=[*inputs, ("the data set", data_root)]) as work:
        chosen = calibration_samples(dataset, train, n_calibration)
        say(f"quantizing with {len(chosen)} training images for calibration")
        # A grafted detector stays in float: its few convolutions on the stride-8 map cost nothing
        # measurable there, and INT8 box scores take a couple of dozen values, which ties boxes of
        # different images in the ranking box AP is made of (v4: validation AP50 0.277 -> 0.301).
        images = [model_input(s, size)[0] for s in chosen]
        onnx_path = work / "model.onnx"
        keep_float = quantize_onnx(source / "model.onnx", onnx_path, images, keep_in_float=detector_nodes)
        ran = command or _command(model, out_dir, data_root, n_calibration, bounds, evaluate_split)
        spec = dataclasses.replace(
            float_spec,
            name=f"{float_spec.name}-int8",
            precision="int8",
            onnx_sha256=sha256_file(onnx_path),
            training={
                **float_spec.training,
                "commands": [
                    *float_spec.training.get("commands", []),
                    reproduce_line(float_spec.training.get("commands", []), ran, [out_dir]),
                ],
            },
            metrics={},
        )
        write_bundle_spec(spec, work)
        int8_model = OnnxModel(work)
        say(f"running both models on {len(val)} validation images")
        float_val, geometries = raw_outputs(float_model, val, root=dataset.root)
        int8_val, _ = raw_outputs(int8_model, val, root=dataset.root)
        say(f"running the INT8 model on {len(train)} training images (out-of-distribution subspace)")
        int8_train, _ = raw_outputs(int8_model, train, root=dataset.root)
        spec = fit_to_outputs(
            spec, val, int8_val, geometries, int8_train["embedding"], class_names=dataset.class_names
        )
        spec = _refit_orientation(spec, int8_model, val, say)
        measured = measure_gate(float_spec, spec, val, float_val, int8_val, geometries, dataset.class_names)
        failures = check_gate(measured, bounds)
        if failures:
            raise QuantizationRefused(
                f"refusing to write the INT8 bundle ({len(val)} validation images): " + "; ".join(failures)
            )
        write_bundle_spec(spec, work)
        say(f"fitting calibration and operating points on the {len(val)} validation images as predicted")
        spec = refit_to_predictions(work, val)  # the evaluation below must see the refitted calibration
        from fracsight.evaluation.run import is_training_data

        own_data = is_training_data(float_spec, data_root, dataset)
        float_metrics, float_orientation = _float_figures(float_spec, own_data)
        metrics: dict[str, Any] = dict(spec.metrics)
        if evaluate_split:
            from fracsight.evaluation.run import evaluate_model

            say(f"evaluating the INT8 bundle on {evaluate_split}")
            found = evaluate_model(work, data_root, split=evaluate_split, warn=warn)
            metrics[evaluate_split] = metrics_summary(found)
            if evaluate_split not in float_metrics:
                say(f"evaluating the float bundle on {evaluate_split}")
                # the same images of the same training run: its leakage is said above already
                found = evaluate_model(source, data_root, split=evaluate_split, warn=lambda _said: None)
                float_metrics[evaluate_split] = metrics_summary(found)
        metrics["quantization"] = {
            **QUANTIZATION,
            "command": ran,  # as run, for the card's "measure both" (Reproduce holds its re-run form)
            **({"kept_in_float": "the grafted detector head"} if keep_float else {}),
            "float_bundle": {
                "name": float_spec.name,
                "version": float_spec.version,
                "onnx_sha256": float_spec.onnx_sha256,
            },
            "calibration_images": len(chosen),
            "calibration_split": "train",
            "data": str(data_root.resolve()),  # what calibration and the refit were fitted on
            "other_data": not own_data,  # than the network was trained on (training.data)
            "gate": {"bounds": bounds.to_dict(), "measured": measured},
            "float_metrics": float_metrics,
            **({"float_orientation": float_orientation} if float_orientation else {}),
        }
        # what the INT8 model was fitted on is the quantization record's `data` now
        training = {k: v for k, v in spec.training.items() if k != "calibration_data"}
        spec = dataclasses.replace(spec, metrics=metrics, training=training)
        write_bundle_spec(spec, work)
        write_card(spec, work)
    return spec
