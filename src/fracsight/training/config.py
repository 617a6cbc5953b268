"""Training configuration: a YAML file plus ``key=value`` overrides from the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fracsight.errors import ConfigError

__all__ = ["AugmentConfig", "TrainConfig", "load_config"]


@dataclass(frozen=True)
class AugmentConfig:
    """Radiograph-safe augmentation: geometry and exposure, never colour."""

    hflip: float = 0.5
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05
    gamma: tuple[float, float] = (0.8, 1.25)
    contrast: tuple[float, float] = (0.85, 1.15)


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""
    layout: str = "auto"
    out: str = "runs/default"
    arch: str = "efficientnet_lite0"
    pretrained: str = "imagenet"  # "imagenet", "none", or a path to a local weights file
    init: str = ""  # a best.pt of an earlier run: start from all its weights, heads included
    input_size: int = 384
    batch_size: int = 32
    epochs_frozen: int = 2  # phase 1: backbone frozen, heads train
    epochs: int = 12  # phase 2: top of the backbone unfrozen
    lr: float = 1e-3
    lr_finetune: float = 3e-4
    weight_decay: float = 1e-4
    unfreeze_from: int = 4  # first trainable backbone stage in phase 2 (0 = all)
    feature_cache_variants: int = 4  # >0: run the frozen stages once on N augmented copies
    mask_weight: float = 1.0
    mask_pos_weight: float = 20.0
    region_weight: float = 0.5
    class_weight: float = 1.0
    patience: int = 4
    ema_decay: float = 0.0  # >0: validate and save an exponential moving average of the weights
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast where it is faster: CUDA, or a CPU with bfloat16 instructions
    workers: int = 2
    max_samples: int = 0  # >0: use only this many training images (smoke tests)
    name: str = "fracsight-model"
    version: str = "1"
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON types (tuples become lists)."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(value: str, current: Any) -> Any:
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"expected a boolean, got {value!r}")
    if isinstance(current, tuple):
        parts = [p for p in value.strip("()[] ").split(",") if p]
        return tuple(type(c)(p) for c, p in zip(current, parts, strict=True))
    try:
        return type(current)(value)
    except ValueError as e:
        raise ConfigError(f"cannot read {value!r} as {type(current).__name__}") from e


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown {where} option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    kw = {}
    for key, value in values.items():
        if key == "augment" and isinstance(value, dict):
            value = _build(AugmentConfig, value, "augment")
        elif isinstance(value, list):
            value = tuple(value)
        kw[key] = value
    return cls(**kw)


def load_config(path: Path | None = None, overrides: list[str] | None = None, **values: Any) -> TrainConfig:
    """Config from YAML ``path``, then keyword ``values``, then ``key=value`` overrides.

    Overrides reach nested options with a dot: ``augment.hflip=0``.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of options")
        data.update(loaded)
    data.update({k: v for k, v in values.items() if v is not None})
    base = _build(TrainConfig, data, "training")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like key=value")
        if key.startswith("augment."):
            sub = key.split(".", 1)[1]
            aug = base.augment
            if sub not in {f.name for f in dataclasses.fields(aug)}:
                raise ConfigError(f"unknown augment option {sub!r}")
            aug = dataclasses.replace(aug, **{sub: _coerce(value, getattr(aug, sub))})
            base = dataclasses.replace(base, augment=aug)
        elif key in {f.name for f in dataclasses.fields(base)} and key != "augment":
            base = dataclasses.replace(base, **{key: _coerce(value, getattr(base, key))})
        else:
            raise ConfigError(f"unknown option {key!r} in override {item!r}")
    _check_ranges(base)
    return base


def _check_ranges(cfg: TrainConfig) -> None:
    """Refuse settings training cannot run with, naming the option (before any work is done)."""
    problems = []

    def need(ok: bool, option: str, rule: str) -> None:
        if not ok:
            problems.append(f"{option}={getattr(cfg, option, None)!r} ({rule})")

    need(cfg.input_size >= 32 and cfg.input_size % 32 == 0, "input_size", "a multiple of 32, at least 32")
    need(cfg.batch_size >= 2, "batch_size", "at least 2")
    for option in (
        "epochs",
        "epochs_frozen",
        "workers",
        "max_samples",
        "feature_cache_variants",
        "unfreeze_from",
    ):
        need(getattr(cfg, option) >= 0, option, "0 or more")
    need(cfg.patience >= 1, "patience", "at least 1")
    for option in ("lr", "lr_finetune", "mask_pos_weight"):
        need(getattr(cfg, option) > 0, option, "above 0")
    for option in ("weight_decay", "mask_weight", "region_weight", "class_weight"):
        need(getattr(cfg, option) >= 0, option, "0 or more")
    need(0 <= cfg.ema_decay < 1, "ema_decay", "0 (off) up to, not including, 1")
    if cfg.epochs + cfg.epochs_frozen == 0 and not cfg.init:
        problems.append(
            "epochs=0 and epochs_frozen=0 (nothing to train; with init= it keeps the starting weights)"
        )
    if problems:
        raise ConfigError("invalid training settings: " + "; ".join(problems))
