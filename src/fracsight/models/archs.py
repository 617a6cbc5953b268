"""The registered architectures by name, and the input statistics each expects: torch-free, so
that listing them (``fracsight models``) imports no deep-learning library."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from fracsight.errors import UnknownModelError

__all__ = ["ArchSpec", "get_arch", "list_models"]


@dataclass(frozen=True)
class ArchSpec:
    """An architecture and the input statistics it expects. ``imagenet`` names an offline source."""

    name: str
    timm_name: str | None  # None: built here (SmallCNN)
    norm_mean: float
    norm_std: float
    imagenet: str | None = None  # key in models.weights.LITE_PACKAGES


_ARCHS = {
    a.name: a
    for a in (
        ArchSpec("efficientnet_lite0", "tf_efficientnet_lite0", 0.5, 0.5, imagenet="lite0"),
        ArchSpec("efficientnet_lite2", "tf_efficientnet_lite2", 0.5, 0.5, imagenet="lite2"),
        ArchSpec("mobilenetv2", "mobilenetv2_100", 0.449, 0.226),
        ArchSpec("resnet50", "resnet50", 0.449, 0.226),
        ArchSpec("densenet121", "densenet121", 0.449, 0.226),
        ArchSpec("vgg16", "vgg16_bn", 0.449, 0.226),
        ArchSpec("small_cnn", None, 0.449, 0.226),
    )
}


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style ``pattern``."""
    return sorted(n for n in _ARCHS if fnmatch.fnmatch(n, pattern))


def get_arch(name: str) -> ArchSpec:
    try:
        return _ARCHS[name]
    except KeyError:
        raise UnknownModelError(f"unknown architecture {name!r}; known: {', '.join(list_models())}") from None
