"""fracsight: bone fracture detection in X-ray radiographs (a decision aid, not a diagnosis).

>>> import fracsight
>>> predictor = fracsight.Predictor()                 # doctest: +SKIP
>>> predictor.predict("wrist.png").decision           # doctest: +SKIP
'no fracture detected'

The names below, and the subpackages ``explain``, ``evaluation``, ``inference`` and ``io``,
load on first use: ``import fracsight`` stays light (no numpy, no ONNX Runtime).
"""

from __future__ import annotations

import importlib
import os

# ONNX Runtime's recent Linux and macOS wheels (1.32 here) record usage events and a device id under
# ~/.cache/Microsoft and upload them when they can: a radiology aid that says it runs offline
# and writes nothing unasked must not. Set before ONNX Runtime starts (it reads this once); a
# user's own setting, either way, is kept.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# typing.TYPE_CHECKING without importing typing (7 ms): type checkers take this name as True, so
# they see the real names below; without it every name of ``__getattr__`` was an ``object`` to
# them (``fracsight.Predictor()``: "object" not callable)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from fracsight import data as data
    from fracsight import errors as errors
    from fracsight import evaluation as evaluation  # "as": re-exported, as in __all__
    from fracsight import explain as explain
    from fracsight import inference as inference
    from fracsight import io as io
    from fracsight.explain import render_overlay, save_overlay
    from fracsight.inference import (
        DEFAULT_MODEL,
        NOTICE,
        FailedPrediction,
        Prediction,
        Predictor,
        StudyPrediction,
        list_bundles,
        resolve_bundle,
    )
    from fracsight.io import Radiograph, read_image

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "NOTICE",
    "FailedPrediction",
    "Prediction",
    "Predictor",
    "Radiograph",
    "StudyPrediction",
    "__version__",
    "list_bundles",
    "read_image",
    "render_overlay",
    "resolve_bundle",
    "save_overlay",
]

_HOME = {
    **dict.fromkeys(
        (
            "DEFAULT_MODEL",
            "NOTICE",
            "FailedPrediction",
            "Prediction",
            "Predictor",
            "StudyPrediction",
            "list_bundles",
            "resolve_bundle",
        ),
        "fracsight.inference",
    ),
    "Radiograph": "fracsight.io",
    "read_image": "fracsight.io",
    "render_overlay": "fracsight.explain",
    "save_overlay": "fracsight.explain",
}
#: subpackages reachable as ``fracsight.<name>`` without importing them first
#: (``fracsight.errors`` is named in the README: it failed unless something had imported it)
_SUBPACKAGES = frozenset({"data", "errors", "evaluation", "explain", "inference", "io"})


def __getattr__(name: str) -> object:
    # written out rather than fracsight._lazy, whose typing import alone costs 7 ms here
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBPACKAGES})
