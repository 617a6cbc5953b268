"""A trainable torch network from an exported bundle's ``model.onnx`` (no training checkpoint needed).

The ONNX export folds every batch normalization into the convolution before it: the graph
holds, for each convolution in forward order, a weight and a bias with the normalization's
scale and shift inside. :func:`network_from_onnx` builds the same architecture in torch and
takes those tensors back, each normalization set to the identity with the folded bias as its
shift, so the torch network computes what the graph computes and can be fine-tuned further.
Keep such a network in eval mode while training (its normalizations then stay identities with
a learnable shift and scale); :func:`check_parity` says how far it is from the graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fracsight.models.network import FractureNet, HeadConfig
from fracsight.models.registry import create_model

__all__ = ["check_parity", "graph_tensors", "load_named_tensors", "network_from_onnx"]


def _initializers(onnx_path: Path) -> tuple[object, dict[str, np.ndarray]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    return model, {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _conv_norm_pairs(backbone: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Each convolution with the normalization that follows it, in registration (= forward) order."""
    pairs, pending = [], None
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            if pending is not None:
                raise ValueError("two convolutions without a normalization between them")
            pending = module
        elif isinstance(module, nn.BatchNorm2d):
            if pending is None:
                raise ValueError("a normalization without a convolution before it")
            pairs.append((pending, module))
            pending = None
    return pairs


def network_from_onnx(onnx_path: Path, arch: str, heads: HeadConfig) -> FractureNet:
    """The :class:`FractureNet` ``arch`` with the weights of the graph at ``onnx_path``."""
    graph, tensors = _initializers(Path(onnx_path))
    model = create_model(arch, heads, pretrained=False).eval()
    pairs = _conv_norm_pairs(model.backbone)
    convs = [n for n in graph.graph.node if n.op_type == "Conv"][: len(pairs)]
    with torch.no_grad():
        for (conv, norm), node in zip(pairs, convs, strict=True):
            weight, bias = tensors[node.input[1]], tensors[node.input[2]]
            if tuple(weight.shape) != tuple(conv.weight.shape):
                raise ValueError(
                    f"{onnx_path} does not hold {arch}: convolution {node.name} is {weight.shape}, "
                    f"expected {tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(torch.from_numpy(np.array(weight)))
            norm.weight.fill_(1.0)
            norm.bias.copy_(torch.from_numpy(np.array(bias)))
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)  # so that sqrt(var + eps) is exactly 1
    head_modules = {k: v for k, v in model.named_children() if k != "backbone"}
    load_named_tensors(nn.ModuleDict(head_modules), tensors, prefix="model.")
    return model


def load_named_tensors(module: nn.Module, tensors: dict[str, np.ndarray], prefix: str) -> None:
    """Copy ``tensors[prefix + name]`` into every parameter ``name`` of ``module``; all must exist."""
    missing = [n for n, _ in module.named_parameters() if prefix + n not in tensors]
    if missing:
        raise ValueError(f"the graph has no tensors for {', '.join(missing[:5])}")
    with torch.no_grad():
        for name, param in module.named_parameters():
            value = torch.from_numpy(tensors[prefix + name].copy())
            param.copy_(value.reshape(param.shape))


def graph_tensors(onnx_path: Path) -> dict[str, np.ndarray]:
    """Every initializer of the graph at ``onnx_path``, by name."""
    return _initializers(Path(onnx_path))[1]


@torch.no_grad()
def check_parity(model: FractureNet, onnx_path: Path, input_size: int, atol: float = 1e-3) -> float:
    """The largest difference between ``model`` and the graph over its outputs on two random
    images; raises if above ``atol``."""
    import onnxruntime as ort

    probe = np.random.default_rng(0).random((2, 1, input_size, input_size), dtype=np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"image": probe}), strict=True))
    want = model.eval()(torch.from_numpy(probe))
    worst = max(float(np.abs(got[k] - want[k].numpy()).max()) for k in want if k in got)
    if worst > atol:
        raise ValueError(f"the torch network differs from {onnx_path} by {worst:.2e} (allowed {atol:.0e})")
    return worst
