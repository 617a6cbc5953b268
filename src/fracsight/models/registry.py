"""One front door for architectures: :func:`create_model` over a small registry.

Example::

    >>> from fracsight.models import create_model, HeadConfig
    >>> model = create_model("efficientnet_lite0", HeadConfig(regions=("hand", "leg")), pretrained=False)
    >>> out = model(torch.rand(2, 1, 256, 256))
    >>> out["fracture"].shape
    torch.Size([2])
"""

from __future__ import annotations

from pathlib import Path

import torch

from fracsight.errors import ConfigError
from fracsight.models.archs import ArchSpec, get_arch, list_models
from fracsight.models.network import FractureNet, HeadConfig, SmallCNN
from fracsight.models.weights import efficientnet_lite_state_dict, load_local_weights

__all__ = ["ArchSpec", "create_model", "get_arch", "list_models"]


def _imagenet_backbone(spec: ArchSpec) -> torch.nn.Module:
    import timm

    if spec.imagenet is None:
        raise ConfigError(
            f"no offline ImageNet weights for {spec.name}; train from scratch (pretrained=False) "
            "or name a local weights file"
        )
    rgb = timm.create_model(spec.timm_name, pretrained=False, num_classes=1000)
    state = efficientnet_lite_state_dict(spec.imagenet, [len(s) for s in rgb.blocks])
    rgb.load_state_dict(state, strict=True)
    gray = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, in_chans=1)
    state = {k: v for k, v in rgb.state_dict().items() if not k.startswith("classifier.")}
    # A grey image repeated on R, G and B gives the same activations as one channel
    # convolved with the sum of the three colour filters.
    state["conv_stem.weight"] = state["conv_stem.weight"].sum(dim=1, keepdim=True)
    gray.load_state_dict(state, strict=True)
    return gray


def create_model(
    name: str,
    heads: HeadConfig | None = None,
    pretrained: bool | str | Path = False,
) -> FractureNet:
    """Build a :class:`FractureNet`.

    ``pretrained``: ``False`` (random init), ``True``/``"imagenet"`` (offline
    ImageNet weights, EfficientNet-Lite only), or a path to a local weights
    file for the backbone (``.safetensors`` or a torch state dict).
    """
    spec = get_arch(name)
    heads = heads or HeadConfig()
    if pretrained is True or pretrained == "imagenet":
        backbone = _imagenet_backbone(spec)
    elif spec.timm_name is None:
        backbone = SmallCNN(in_chans=1)
    else:
        import timm

        backbone = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, in_chans=1)
    if isinstance(pretrained, (str, Path)) and pretrained != "imagenet":
        _load_local_backbone(backbone, Path(pretrained), name)
    return FractureNet(backbone, heads, spec.norm_mean, spec.norm_std)


def _load_local_backbone(backbone: torch.nn.Module, path: Path, name: str) -> None:
    """A local weights file into ``backbone``: a colour stem (nearly every published file's, 3 input
    channels) summed to the one grey channel, as the ImageNet weights are; any other shape that
    differs refused by name (both ended in a size-mismatch traceback)."""
    state = load_local_weights(path)
    own = backbone.state_dict()
    fitted = {}
    for key, value in state.items():
        target = own.get(key)
        if target is None:  # a classifier's, another part's: left out
            continue
        colour = value.ndim == target.ndim == 4 and value.shape[1] == 3 and target.shape[1] == 1
        if colour and value.shape[:1] + value.shape[2:] == target.shape[:1] + target.shape[2:]:
            value = value.sum(dim=1, keepdim=True)  # grey on R, G and B: the same activations
        if value.shape != target.shape:
            raise ConfigError(
                f"{path} does not match {name}: {key} is {tuple(value.shape)} there, "
                f"{tuple(target.shape)} here"
            )
        fitted[key] = value
    missing, _ = backbone.load_state_dict(fitted, strict=False)
    # batch norm's counters are filled in unsaid: never "missing", they are not counted either
    weights = [k for k in own if not k.endswith("num_batches_tracked")]
    if len(missing) > len(weights) // 2:
        # a fracsight checkpoint or bundle's network names its backbone's keys backbone.*
        ours = any(str(k).startswith("backbone.") for k in state)
        hint = ": a fracsight checkpoint, which `--set init=` takes" if ours else ""
        raise ConfigError(f"{path} does not match {name}: {len(missing)} missing keys{hint}")
