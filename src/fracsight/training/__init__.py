"""Training (needs the ``train`` extra: torch, torchvision, timm)."""

from fracsight.training.config import AugmentConfig, TrainConfig, load_config
from fracsight.training.trainer import Trainer, TrainResult, load_checkpoint, resolve_device

__all__ = [
    "AugmentConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "load_checkpoint",
    "load_config",
    "resolve_device",
]
