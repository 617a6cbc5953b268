"""Training (needs the ``train`` extra: torch, torchvision, timm).

The names below load on first use, so that the torch-free modules of this package
(``card``, ``refit``, ``config``) can be imported without torch.
"""

from __future__ import annotations

from fracsight._lazy import lazy_attributes

__all__ = [
    "AugmentConfig",
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "Trainer",
    "load_checkpoint",
    "load_config",
    "resolve_device",
]

_HOME = {
    "AugmentConfig": "fracsight.training.config",
    "TrainConfig": "fracsight.training.config",
    "TrainConfigError": "fracsight.training.config",
    "load_config": "fracsight.training.config",
    "TrainResult": "fracsight.training.trainer",
    "Trainer": "fracsight.training.trainer",
    "load_checkpoint": "fracsight.training.trainer",
    "resolve_device": "fracsight.training.trainer",
}

__getattr__ = lazy_attributes(__name__, _HOME)
