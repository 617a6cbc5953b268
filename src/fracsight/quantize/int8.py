"""Static INT8 quantization of a bundle's ONNX graph with ONNX Runtime's own tools.

QDQ format, per-channel symmetric INT8 weights, UINT8 activations with ranges from
min/max calibration over training images that are read and letterboxed exactly as the
Predictor reads them. Weights use 7 bits (``reduce_range``): on x86 CPUs without VNNI
(AVX2 only, like the 2-core reference machine) ONNX Runtime's u8 x s8 kernels add pairs of
products in 16 bits, which saturate with full-range weights; on the shipped model that
saturation cost 0.05 in heatmap correlation with the float model, 7-bit weights cost
nothing measurable (docs/benchmark.md).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fracsight._files import working_directory
from fracsight.errors import ConfigError

__all__ = ["QUANTIZATION", "quantize_onnx"]

#: What the bundle records about how its graph was quantized.
QUANTIZATION = {
    "tool": "onnxruntime.quantization.quantize_static",
    "format": "QDQ",
    "weights": "int8, per channel, symmetric, 7-bit range (reduce_range)",
    "activations": "uint8, per tensor, min/max calibration",
}


def _reader(base: type, images: Sequence[np.ndarray], input_name: str):
    """An onnxruntime CalibrationDataReader (``base``) over prepared (S, S) model inputs."""

    class Reader(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self._inputs: Iterator[np.ndarray] = iter(images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self._inputs, None)
            return None if image is None else {input_name: image[None, None].astype(np.float32)}

    return Reader()


def _quantization_tools():
    try:
        from onnxruntime import quantization
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:  # onnxruntime.quantization needs the onnx package
        raise ConfigError(
            f"INT8 quantization needs the onnx package ({e.name} is missing): pip install onnx "
            "(or pip install 'fracsight[quantize]')"
        ) from e
    return quantization, quant_pre_process


@contextmanager
def _root_logger_kept() -> Iterator[None]:
    """onnxruntime's quantizer logs through the root logger (``logging.info``), which gives it
    logging's default handler when it has none: every later warning of the command came out as
    ``WARNING:fracsight.data.sample:...``, each as often as it was logged, not as ``warning: ...``
    once. Handlers added meanwhile are taken off again."""
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)


def quantize_onnx(
    source: Path,
    target: Path,
    calibration_images: Sequence[np.ndarray],
    *,
    keep_in_float: Callable[[Any], Sequence[str]] | None = None,
) -> list[str]:
    """Write the INT8 (QDQ) version of ``source`` to ``target``, calibrated on ``calibration_images``
    ((S, S) float32 letterboxed images in [0, 1], the model's input without batch and channel).
    ``keep_in_float``: a function of the (loaded) graph naming nodes to leave in float (onnxruntime's
    ``nodes_to_exclude``). Returns those names."""
    if not calibration_images:
        raise ConfigError("INT8 calibration needs at least one training image")
    quantization, quant_pre_process = _quantization_tools()
    with _root_logger_kept(), tempfile.TemporaryDirectory(prefix="fracsight-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # shape inference and graph folding first, as onnxruntime recommends before quantizing
        source = Path(source).resolve()
        # the pre-processing leaves uuid-named weight files in the working directory: keep them
        # in the scratch folder
        with working_directory(scratch):
            try:
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
            except Exception:  # onnxruntime raises a bare Exception when its symbolic inference gives up
                # graphs with grafted heads (fracsight detector train) defeat the symbolic pass;
                # ONNX's own shape inference is enough for the quantizer
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        import onnx

        graph = onnx.load(str(prepared), load_external_data=False)
        input_name = graph.graph.input[0].name
        keep = list(keep_in_float(graph)) if keep_in_float else []
        quantization.quantize_static(
            str(prepared),
            str(target),
            _reader(quantization.CalibrationDataReader, calibration_images, input_name),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
            nodes_to_exclude=keep,
        )
    return keep
