"""``fracsight benchmark``: how fast and how light prediction is on this machine, next to common baselines.

Rows of the report:

* the bundle on ONNX Runtime (the shipped path): single-image end-to-end latency
  (read the file, letterbox, infer, heatmap and boxes), batch throughput through
  :meth:`Predictor.predict_many`, and the peak resident memory of a fresh process
  that does nothing but that inference;
* the same for each further bundle asked for (``also``), such as the INT8 version of
  the model (a packaged ``<name>-int8`` next to the packaged model is added by itself);
* the same architecture in eager torch, inside the very same pipeline (only the
  engine differs). Its weights are random: timing does not depend on them;
* the common published recipe: ResNet50 at 224 px in eager torch (resize 256,
  centre crop 224, ImageNet normalization, 3 channels, random weights);
* GPU throughput where a CUDA device is visible.

Each pipeline is timed in fresh processes (as a user runs it, and with no other
engine's thread pool in the same process), in rounds that alternate between the
pipelines, so that a shared machine's drift in speed reaches every row alike.
torch is imported only for the comparison rows, never at import time.
"""

from fracsight.benchmark.inputs import find_fracatlas, synthetic_images
from fracsight.benchmark.report import STAGES, BenchmarkReport, Row, Target, render_report
from fracsight.benchmark.run import run_benchmark, sibling_bundles

__all__ = [
    "STAGES",
    "BenchmarkReport",
    "Row",
    "Target",
    "find_fracatlas",
    "render_report",
    "run_benchmark",
    "sibling_bundles",
    "synthetic_images",
]
