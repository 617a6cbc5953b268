"""Compare onnxruntime session settings on whole predictions, paired in one process.

    python scripts/ab_session_options.py [--model NAME] [--rounds 2] [--spin-us 20 50 ...]

Builds one Predictor per variant of the same bundle and replaces its session with one made as
:class:`fracsight.inference.onnx_model.OnnxModel` makes its own, except for the spinning of the
intra-op worker threads: ``spin`` (onnxruntime's own, long spin), ``nospin`` (no spinning) and
one ``spin<N>us`` per ``--spin-us`` value (spin at most N microseconds between operators).
Every variant predicts each of the benchmark's 64 images in turn, in an order that rotates from
image to image, so all see the same moments of a shared machine. The rows (one image through
every variant) are then split by how long the row took: the quietest quarter, the middle half and
the busiest quarter, and for each the median time per variant and the median paired ratio to
``spin``. Used for the
spin cap of docs/benchmark.md ("INT8 v3, the default"); run it after
``python3 -c 'import os; print(os.getloadavg())'`` says the machine is idle for the idle figure.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from fracsight.inference import DEFAULT_MODEL, Predictor


def _variant(model: str, entries: list[tuple[str, str]]) -> Predictor:
    import onnxruntime as ort

    from fracsight.inference.onnx_model import BATCH_DIM

    predictor = Predictor(model)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_free_dimension_override_by_name(BATCH_DIM, 1)
    options.add_session_config_entry("session.force_spinning_stop", "1")
    for key, value in entries:
        options.add_session_config_entry(key, value)
    path = str(predictor.bundle_dir / "model.onnx")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    predictor.onnx.session = session
    return predictor


def main() -> None:
    from fracsight.benchmark.inputs import find_fracatlas, fracatlas_test_images

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--spin-us", type=int, nargs="*", default=[50])
    args = parser.parse_args()
    folder = find_fracatlas()
    if folder is None:
        raise SystemExit("needs ../shared/data/fracatlas")
    images = fracatlas_test_images(folder, 64)
    variants: dict[str, list[tuple[str, str]]] = {
        "spin": [],
        "nospin": [("session.intra_op.allow_spinning", "0")],
    }
    for us in args.spin_us:
        variants[f"spin{us}us"] = [("session.intra_op.spin_duration_us", str(us))]
    predictors = {name: _variant(args.model, entries) for name, entries in variants.items()}
    names = list(predictors)
    for predictor in predictors.values():  # warm up
        for path in images[:5]:
            predictor.predict(path)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    rows = []
    for r in range(args.rounds):
        for k, path in enumerate(images):
            order = names[k % len(names) :] + names[: k % len(names)]
            if r % 2:
                order.reverse()
            took = {}
            for name in order:
                t0 = time.perf_counter()
                predictors[name].predict(path)
                took[name] = (time.perf_counter() - t0) * 1e3
            rows.append([took[n] for n in names])
    table = np.array(rows)
    table = table[np.argsort(table.sum(axis=1))]
    n = len(table)
    parts = (("quietest quarter", table[: n // 4]), ("middle half", table[n // 4 : 3 * n // 4]))
    for label, part in (*parts, ("busiest quarter", table[3 * n // 4 :])):
        shown = ", ".join(
            f"{name} {np.median(part[:, i]):.2f} ms ({np.median(part[:, i] / part[:, 0]):.3f})"
            for i, name in enumerate(names)
        )
        print(f"{label}: {shown}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
