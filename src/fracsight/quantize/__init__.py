"""INT8 bundles: static quantization with ONNX Runtime's tools, refitted and gated against the float model.

``fracsight quantize MODEL OUT_DIR --data DATA_DIR`` (:mod:`fracsight.quantize.cli`) or
:func:`quantize_bundle`. Needs the ``onnx`` package besides the inference install; never torch.
The names below load on first use, so that the CLI can register its command cheaply.
"""

from __future__ import annotations

from fracsight._lazy import lazy_attributes

__all__ = ["CALIBRATION_IMAGES", "GateBounds", "QuantizationRefused", "quantize_bundle"]

_HOME = {
    "CALIBRATION_IMAGES": "fracsight.quantize.build",
    "quantize_bundle": "fracsight.quantize.build",
    "GateBounds": "fracsight.quantize.gate",
    "QuantizationRefused": "fracsight.quantize.gate",
}

__getattr__ = lazy_attributes(__name__, _HOME)
