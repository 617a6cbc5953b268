"""Architectures and offline weight sources (needs the ``train`` extra: torch, timm).

Names are imported on first use: :func:`list_models` and :func:`get_arch` need no torch.
"""

from __future__ import annotations

from fracsight._lazy import lazy_attributes

__all__ = ["ArchSpec", "FractureNet", "HeadConfig", "create_model", "get_arch", "list_models"]

__getattr__ = lazy_attributes(
    __name__,
    {
        "ArchSpec": "fracsight.models.archs",
        "get_arch": "fracsight.models.archs",
        "list_models": "fracsight.models.archs",
        "FractureNet": "fracsight.models.network",
        "HeadConfig": "fracsight.models.network",
        "create_model": "fracsight.models.registry",
    },
)
