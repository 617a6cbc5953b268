"""Time the networks of several ONNX models on the same inputs, paired in one process.

    python scripts/ab_network.py MODEL.onnx|BUNDLE [MODEL.onnx|BUNDLE ...] [--rounds 10]

Each model gets an onnxruntime session made as :class:`fracsight.inference.onnx_model.OnnxModel`
makes its own (all graph optimizations, batch fixed to one image, spinning stopped after a run).
The inputs are the first 16 FracAtlas test images (the benchmark's images), read and letterboxed by
the default model's Predictor. For every input the models run one after the other, in an order
that alternates from round to round, so a busy minute on a shared machine falls on all of them
alike; the paired ratio (each run against the first model's run on the same input, same moment)
is the figure to compare. Used for the "INT8 v3" figures in docs/benchmark.md and for trying
variants of a quantized graph (float stem, float depthwise convolutions).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def _session(path: Path) -> Any:  # an onnxruntime.InferenceSession
    import onnxruntime as ort

    from fracsight.inference.onnx_model import BATCH_DIM

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_free_dimension_override_by_name(BATCH_DIM, 1)
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_path(model: str) -> Path:
    from fracsight.inference import resolve_bundle

    path = Path(model)
    return path if path.suffix == ".onnx" else resolve_bundle(model) / "model.onnx"


def main() -> None:
    from fracsight.benchmark.inputs import find_fracatlas, fracatlas_test_images
    from fracsight.inference import Predictor

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model.onnx files, bundle folders or packaged names")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    folder = find_fracatlas()
    if folder is None:
        raise SystemExit("needs ../shared/data/fracatlas")
    predictor = Predictor()
    images = fracatlas_test_images(folder, 16)
    inputs = [predictor.preprocess([predictor.read(p)])[0][:, None] for p in images]
    paths = [_onnx_path(m) for m in args.models]
    sessions = [_session(p) for p in paths]
    for session in sessions:  # warm up
        for x in inputs[:3]:
            session.run(None, {"image": x})
    times: list[list[float]] = [[] for _ in sessions]
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for r in range(args.rounds):
        order = list(range(len(sessions)))
        if r % 2:
            order.reverse()
        for x in inputs:
            for k in order:
                t0 = time.perf_counter()
                sessions[k].run(None, {"image": x})
                times[k].append(time.perf_counter() - t0)
    first = np.array(times[0])
    for model, found in zip(args.models, times, strict=True):
        t = np.array(found)
        print(
            f"{model}: median {np.median(t) * 1e3:.2f} ms, 25th percentile "
            f"{np.percentile(t, 25) * 1e3:.2f} ms, paired ratio to the first {np.median(t / first):.3f}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
