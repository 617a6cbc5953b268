"""ONNX export of a FractureNet: named outputs, dynamic batch, checked against eager torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fracsight.models.network import FractureNet

__all__ = ["export_onnx", "onnx_output_names"]


def onnx_output_names(model: FractureNet) -> list[str]:
    names = ["fracture", "mask", "cam", "embedding"]
    if model.region_head is not None:
        names.append("region")
    if model.class_head is not None:
        names.append("class")
    return names


class _TupleOutputs(nn.Module):
    def __init__(self, model: FractureNet) -> None:
        super().__init__()
        self.model = model
        self.names = onnx_output_names(model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[n] for n in self.names)


def export_onnx(model: FractureNet, path: Path, input_size: int, opset: int = 17) -> list[str]:
    """Write ``model`` to ``path``; input ``image`` (B, 1, S, S) in [0, 1]. Returns output names."""
    model = model.eval().cpu()
    wrapper = _TupleOutputs(model).eval()
    names = wrapper.names
    example = torch.rand(2, 1, input_size, input_size)
    dynamic = {"image": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    torch.onnx.export(
        wrapper,
        (example,),
        str(path),
        input_names=["image"],
        output_names=names,
        dynamic_axes=dynamic,
        opset_version=opset,
        dynamo=False,
    )
    _check(wrapper, path, example)
    return names


def _check(wrapper: nn.Module, path: Path, example: torch.Tensor) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": example.numpy()})
    with torch.no_grad():
        want = wrapper(example)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-3, atol=1e-3)
