"""Measure a bundle's stored split again with today's ``fracsight evaluate`` and render its card anew.

    python scripts/refresh_card_metrics.py BUNDLE_DIR [BUNDLE_DIR ...] [--data DIR] [--split test]

A bundle keeps the figures of the evaluation it was made with (``bundle.json`` ``metrics``), and
its ``card.md`` is rendered from them. When ``evaluate`` changes how it measures (2026-12-03: the
confidence intervals resample groups of related images, not single images; FracAtlas's
IMG0003298, labelled normal but in ``Fractured/``, is no longer counted with a true box), a card
made before says what ``evaluate`` no longer gives for the same model. This re-measures the split
(``--split``, as the bundle recorded it), keeps what ``export`` and ``quantize`` keep of it
(``fracsight.training.refit.metrics_summary``, which now records ``ci_method``), and writes
``bundle.json`` and ``card.md`` again. Nothing the model computes changes: ``model.onnx``, the
thresholds, calibration and localization settings (``settings_sha256``) are left as they are,
and nothing is chosen on the split. An INT8 bundle's record of its float model
(``metrics.quantization.float_metrics``) is measured again too, from the float bundle it names,
when that is packaged or given before it.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from fracsight.bundle import load_bundle_spec, write_bundle_spec
from fracsight.evaluation.run import evaluate_model
from fracsight.inference.store import resolve_bundle
from fracsight.training.card import write_card
from fracsight.training.refit import metrics_summary

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fracatlas")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()

    measured: dict[str, dict] = {}  # "name vN" -> its summary, for the INT8 bundles after it
    for folder in args.bundles:
        spec = load_bundle_spec(folder)
        if args.split not in spec.metrics:
            raise SystemExit(f"{folder}: its bundle.json records no {args.split!r} metrics to measure again")
        summary = metrics_summary(evaluate_model(folder, args.data, split=args.split))
        metrics = {**spec.metrics, args.split: summary}
        quantization = metrics.get("quantization")
        if quantization and args.split in quantization.get("float_metrics", {}):
            made_from = quantization["float_bundle"]  # name, version and onnx_sha256
            theirs = measured.get(f"{made_from['name']} v{made_from['version']}")
            if theirs is None:
                float_dir = resolve_bundle(f"{made_from['name']}-v{made_from['version']}")
                if load_bundle_spec(float_dir).onnx_sha256 != made_from["onnx_sha256"]:
                    raise SystemExit(f"{folder}: the packaged float bundle is not the one it was made from")
                theirs = metrics_summary(evaluate_model(float_dir, args.data, split=args.split))
            float_metrics = {**quantization["float_metrics"], args.split: theirs}
            metrics["quantization"] = {**quantization, "float_metrics": float_metrics}
        spec = dataclasses.replace(spec, metrics=metrics)
        write_bundle_spec(spec, folder)
        write_card(spec, folder)
        measured[f"{spec.name} v{spec.version}"] = summary
        auroc = summary["auroc"]
        interval = f"{auroc['ci_low']:.3f}-{auroc['ci_high']:.3f}"
        print(f"{folder}: {args.split} AUROC {auroc['value']:.3f} ({interval}), {summary.get('ci_method')}")


if __name__ == "__main__":
    main()
