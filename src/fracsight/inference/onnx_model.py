"""A verified bundle on ONNX Runtime: the `infer` stage. No torch on this path."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path

import numpy as np

from fracsight._malloc import keep_freed_memory
from fracsight.bundle import EXTERNAL_DATA_FOLDER, BundleSpec, load_bundle_spec, read_checked_onnx
from fracsight.errors import BundleError, ModelOutputError

__all__ = ["BATCH_DIM", "SPIN_US", "OnnxModel", "execution_providers"]

BATCH_DIM = "batch"  # name of the dynamic batch axis in exported models (fracsight.models.export)
logger = logging.getLogger("fracsight.inference")

SPIN_US = 50  # longest spin of an onnxruntime worker between two operators of a run (see OnnxModel)


def execution_providers() -> list[str]:
    """CUDA first where onnxruntime-gpu is installed and CUDA can be loaded (the GPU image, Ray GPU
    actors), then the CPU; with the plain ``onnxruntime`` package, the CPU alone."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["CPUExecutionProvider"] if "CPUExecutionProvider" in available else []
    if "CUDAExecutionProvider" in available and cuda_loads():
        wanted.insert(0, "CUDAExecutionProvider")
    return wanted


@functools.cache
def cuda_loads() -> bool:
    """Whether the NVIDIA driver and the CUDA runtime onnxruntime-gpu was built for can be loaded.

    Without them onnxruntime-gpu would fall back to the CPU by itself, but only after printing
    two error lines per session (twice for ``fracsight serve``); this says it once, plainly.
    """
    try:
        from onnxruntime.capi import build_and_package_info as build

        major = str(getattr(build, "cuda_version", "") or "").split(".")[0]
    except ImportError:
        major = ""
    libraries = ["libcuda.so.1"] + ([f"libcudart.so.{major}"] if major else [])
    for library in libraries:
        try:
            ctypes.CDLL(library)
        except OSError:
            logger.warning("CUDA is unavailable here (%s cannot be loaded): running on the CPU", library)
            return False
    return True


class OnnxModel:
    """Loads ``model.onnx`` after checking it against the sha256 recorded in ``bundle.json``."""

    max_batch = 4  # images per session call when the batch dimension stays dynamic; see run()

    def __init__(self, folder: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        keep_freed_memory()  # reuse each image's large arrays instead of page-faulting them back in
        self.folder = Path(folder)
        self.spec: BundleSpec = load_bundle_spec(self.folder)
        # The session is made from the very bytes that were checked: nothing can swap the file in
        # between. Weights kept as ONNX external data would escape the checksum: read_checked_onnx
        # refuses a graph that names any, and onnxruntime, which would look for them under the
        # current directory, is pointed at os.devnull (no temporary folder needed on a read-only system).
        model_bytes = read_checked_onnx(self.folder, self.spec)
        options = ort.SessionOptions()
        options.add_session_config_entry(EXTERNAL_DATA_FOLDER, os.devnull)
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One image per call (see `run`). With every shape static, onnxruntime also folds the
        # run-time "same" padding of bundles exported before their padding was made constant
        # (models.export.with_static_same_padding), which otherwise costs them about 40%.
        options.add_free_dimension_override_by_name(BATCH_DIM, 1)
        # The worker threads spin while a run lasts and sleep as soon as it ends. Left spinning
        # after the run (the default), they take the second core from the Predictor's own
        # work on the image and its side thread: 22.6 -> 21.0 ms per image end to end.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        # Within a run, a worker waiting for the next operator spins at most SPIN_US before it
        # sleeps. onnxruntime's own spin is much longer, and next to any other busy process (a
        # second Predictor, a browser, a shared VM) the spinning thread takes the core that the
        # thread it waits for needs: INT8 v3 end to end 1.3-1.7x slower than with the cap under
        # load, while on an idle machine the cap costs about 1% (docs/benchmark.md).
        options.add_session_config_entry("session.intra_op.spin_duration_us", str(SPIN_US))
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=execution_providers())
        except Exception as e:  # onnxruntime raises its own exception types
            raise BundleError(f"onnxruntime cannot load {self.folder / 'model.onnx'}: {e}") from e
        if self.session.get_inputs()[0].shape[0] == 1:
            self.max_batch = 1
        self.output_names = [o.name for o in self.session.get_outputs()]
        # outputs of the heads bundle.json names (a class head the graph lacks crashed predict)
        missing = {"fracture", "mask", "cam", "embedding", *(h.name for h in self.spec.heads)}
        missing -= set(self.output_names)
        if missing:
            raise BundleError(f"model.onnx lacks the outputs {sorted(missing)} that bundle.json names")
        for head in self.spec.heads:  # a class list edited to another length crashed the first predict
            shape = self.session.get_outputs()[self.output_names.index(head.name)].shape
            width = shape[-1] if len(shape) > 1 else 1  # a binary head: one logit per image
            if isinstance(width, int) and width != head.num_outputs:
                said = (
                    f"makes the {head.name!r} head binary (one output)"
                    if head.kind == "binary"
                    else f"names {head.num_outputs} classes for the {head.name!r} head"
                )
                raise BundleError(f"bundle.json {said}, model.onnx gives {width} outputs")
        side = self.session.get_inputs()[0].shape[-1]  # an int when fixed, a name when dynamic
        if isinstance(side, int) and side != self.spec.input_size:  # onnxruntime refused every image
            raise BundleError(
                f"bundle.json says input_size {self.spec.input_size}, model.onnx takes {side} x {side} images"
            )
        # the length of an image's embedding (the OOD record is checked against it when loaded)
        size = self.session.get_outputs()[self.output_names.index("embedding")].shape[-1]
        self.embedding_size = size if isinstance(size, int) and size > 0 else self.spec.feature_channels

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``batch``: (B, S, S) float32 letterboxed images in [0, 1].

        Fed to the session ``max_batch`` images at a time (one, unless the bundle names
        its batch dimension otherwise): on CPU larger batches are not faster per image,
        while activation memory grows with the batch (about 60 MB per 384 px image for
        Lite0), so this also bounds the peak whatever batch callers pass. Results do not
        depend on the split.
        """
        images = batch[:, None].astype(np.float32, copy=False)
        parts = [
            self.session.run(None, {"image": images[i : i + self.max_batch]})
            for i in range(0, len(images), self.max_batch)
        ]
        if len(parts) == 1:
            out = dict(zip(self.output_names, parts[0], strict=True))
        else:
            out = {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(self.output_names)}
        for name, value in out.items():
            if not np.isfinite(value).all():
                raise ModelOutputError(
                    f"the model's {name!r} output is not a number (NaN or infinite) for "
                    f"{int((~np.isfinite(value)).reshape(len(value), -1).any(axis=1).sum())} of "
                    f"{len(value)} images: the bundle is broken (exported or quantized wrongly); "
                    "no result is given rather than a wrong one"
                )
        return out
