"""A new ``model.onnx``: the bundle's own graph, unchanged, plus the heads reading its tensors.

The heads are exported from torch on their own and joined to the frozen graph with
``onnx.compose``; every output the bundle had keeps its name and its values.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fracsight.detection.heads import DetectionHead, DetectorEnsemble, OrientationHead, heads_from_tensors
from fracsight.detection.taps import HEADS_PREFIX, TAP_NAMES, find_taps, with_outputs
from fracsight.inference.onnx_model import BATCH_DIM

__all__ = ["HEAD_OUTPUTS", "graft_heads"]

HEAD_OUTPUTS = ("detect_centre", "detect_size", "detect_offset", "orientation")


class _Heads(nn.Module):
    def __init__(self, detector: DetectionHead | DetectorEnsemble, orientation: OrientationHead) -> None:
        super().__init__()
        self.detector = detector
        self.orientation = orientation

    def forward(
        self, stride8: torch.Tensor, stride16: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        return (*self.detector(stride8, stride16, features), self.orientation(features))


def graft_heads(
    base_onnx: Path,
    detector: DetectionHead | DetectorEnsemble,
    orientation: OrientationHead,
    input_size: int,
    out: Path,
) -> None:
    """Write to ``out`` the graph at ``base_onnx`` with the heads' outputs added, and check it."""
    import onnx
    import onnx.compose
    import onnxruntime as ort

    base = onnx.load(str(base_onnx), load_external_data=False)
    taps = find_taps(base_onnx, input_size)
    session = ort.InferenceSession(
        with_outputs(base, [taps[t] for t in TAP_NAMES]).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    probe = np.random.default_rng(0).random((2, 1, input_size, input_size), dtype=np.float32)
    tapped = session.run([taps[t] for t in TAP_NAMES], {"image": probe})
    heads = _Heads(detector, orientation).eval()
    opset = next(o.version for o in base.opset_import if o.domain in ("", "ai.onnx"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "heads.onnx"
        torch.onnx.export(
            heads,
            tuple(torch.from_numpy(t) for t in tapped),
            str(path),
            input_names=list(TAP_NAMES),
            output_names=list(HEAD_OUTPUTS),
            dynamic_axes={n: {0: BATCH_DIM} for n in (*TAP_NAMES, *HEAD_OUTPUTS)},
            opset_version=opset,
            dynamo=False,
        )
        head_model = onnx.load(str(path), load_external_data=False)
    head_model.ir_version = base.ir_version
    # the heads' own tensors and weights get a prefix so they cannot collide with the base's;
    # the tensors they read and write keep their names
    head_model = onnx.compose.add_prefix(head_model, HEADS_PREFIX, rename_inputs=False, rename_outputs=False)
    merged = onnx.compose.merge_models(
        with_outputs(base, [taps[t] for t in TAP_NAMES]),
        head_model,
        io_map=[(taps[t], t) for t in TAP_NAMES],
        outputs=[o.name for o in base.graph.output] + list(HEAD_OUTPUTS),
    )
    _one_import_per_domain(merged)
    onnx.checker.check_model(merged)
    onnx.save(merged, str(out))
    _check(out, base_onnx, heads, tapped, probe)


def _one_import_per_domain(model) -> None:  # onnx.ModelProto
    """onnx.compose keeps both graphs' opset imports; tools (the INT8 quantizer among them)
    expect one per domain."""
    seen: dict[str, int] = {}
    for opset in model.opset_import:
        domain = "" if opset.domain == "ai.onnx" else opset.domain
        seen[domain] = max(seen.get(domain, 0), opset.version)
    del model.opset_import[:]
    for domain, version in seen.items():
        entry = model.opset_import.add()
        entry.domain, entry.version = domain, version


def _check(out: Path, base_onnx: Path, heads: nn.Module, tapped: list[np.ndarray], probe: np.ndarray) -> None:
    """The grafted graph gives the base's outputs unchanged and the heads' outputs as torch does."""
    import onnxruntime as ort

    new = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    old = ort.InferenceSession(str(base_onnx), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in new.get_outputs()], new.run(None, {"image": probe}), strict=True))
    for name, value in zip([o.name for o in old.get_outputs()], old.run(None, {"image": probe}), strict=True):
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5, err_msg=name)
    with torch.no_grad():
        want = heads(*(torch.from_numpy(t) for t in tapped))
    for name, value in zip(HEAD_OUTPUTS, want, strict=True):
        np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-3, atol=1e-3, err_msg=name)
    # the heads can be taken back out of the graph (a joint run starts from them); the exporter
    # shares equal initializers between members, which would make that fail
    from fracsight.models.unfold import graph_tensors

    detector, _ = heads_from_tensors(graph_tensors(out), HEADS_PREFIX)
    with torch.no_grad():
        again = detector(*(torch.from_numpy(t) for t in tapped))
    for name, value, first in zip(HEAD_OUTPUTS[:3], again, want[:3], strict=True):
        np.testing.assert_allclose(value.numpy(), first.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)
