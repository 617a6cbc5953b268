"""ONNX export of a FractureNet: named outputs, dynamic batch, checked against eager torch."""

from __future__ import annotations

import copy
import math
import warnings
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
        names += ["class", "class_cam"]
    return names


class _TupleOutputs(nn.Module):
    def __init__(self, model: FractureNet) -> None:
        super().__init__()
        self.model = model
        self.names = onnx_output_names(model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[n] for n in self.names)


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def with_static_same_padding(model: nn.Module, input_size: int) -> nn.Module:
    """A copy of ``model`` whose TensorFlow-style "same" convolutions pad by constants.

    timm's ``Conv2dSame`` (the EfficientNet-Lite strided convolutions) works its padding
    out from the tensor's shape on every call. Exported, that is a chain of Shape, Ceil
    and Pad nodes that copies the whole activation before each strided convolution and
    breaks onnxruntime's blocked-layout chain around it: about 40% of Lite0's time at
    384 px in a session with a dynamic batch axis. The bundle's input size is fixed, so
    the padding is a constant, which onnxruntime folds into the convolution itself.
    Same arithmetic, same outputs.
    """
    from timm.layers import Conv2dSame

    model = copy.deepcopy(model).eval()
    same_convs = {name: m for name, m in model.named_modules() if isinstance(m, Conv2dSame)}
    input_sizes: dict[str, tuple[int, ...]] = {}
    hooks = [
        conv.register_forward_pre_hook(lambda _m, args, name=name: input_sizes.update({name: args[0].shape}))
        for name, conv in same_convs.items()
    ]
    with torch.no_grad():
        model(torch.zeros(1, 1, input_size, input_size))
    for hook in hooks:
        hook.remove()
    for name, same in same_convs.items():
        height, width = input_sizes[name][-2:]
        top, bottom = _same_padding(height, same.kernel_size[0], same.stride[0], same.dilation[0])
        left, right = _same_padding(width, same.kernel_size[1], same.stride[1], same.dilation[1])
        conv = nn.Conv2d(
            same.in_channels,
            same.out_channels,
            same.kernel_size,
            same.stride,
            0,
            same.dilation,
            same.groups,
            same.bias is not None,
        )
        conv.load_state_dict(same.state_dict())
        parent, _, attr = name.rpartition(".")
        setattr(
            model.get_submodule(parent), attr, nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), conv)
        )
    return model


def export_onnx(model: FractureNet, path: Path, input_size: int, opset: int = 17) -> list[str]:
    """Write ``model`` to ``path``; input ``image`` (B, 1, S, S) in [0, 1]. Returns output names."""
    model = with_static_same_padding(model.eval().cpu(), input_size)
    wrapper = _TupleOutputs(model).eval()
    names = wrapper.names
    example = torch.rand(2, 1, input_size, input_size)
    dynamic = {"image": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    with warnings.catch_warnings():
        # the exporter's note that it leaves strided slices unfolded: nothing a user can act on
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
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
