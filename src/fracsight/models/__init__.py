"""Architectures and offline weight sources (needs the ``train`` extra: torch, timm)."""

from fracsight.models.network import FractureNet, HeadConfig
from fracsight.models.registry import ArchSpec, create_model, get_arch, list_models

__all__ = ["ArchSpec", "FractureNet", "HeadConfig", "create_model", "get_arch", "list_models"]
