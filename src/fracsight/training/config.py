"""Training configuration: a YAML file plus ``key=value`` overrides from the command line."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fracsight._files import folder_blocked
from fracsight.bundle import check_name
from fracsight.errors import BundleError, ConfigError, OutputFolderError

__all__ = ["AugmentConfig", "TrainConfig", "TrainConfigError", "find_config", "load_config", "recipe_names"]


class TrainConfigError(ConfigError):
    """A training setting that cannot be used (a config file, a ``--set``, a device, a run to
    resume or start from): the user's to correct, so the CLI exits 2 for it, as for any bad
    argument. A checkpoint that cannot be read stays a plain :class:`ConfigError`."""

    bad_argument = True


class ConfigNotFoundError(TrainConfigError):
    """A config that is neither a file nor a packaged recipe: as any input path that is not there."""

    code = "not_found"


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
    cache_dir: str = ""  # the letterboxed images' cache; empty: .cache beside out
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


_RECIPES = resources.files("fracsight.training").joinpath("recipes")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
# options that name a file or folder: `~` expanded, as the shell does on a command line but no
# shell does in YAML (`out: ~/runs/a` trained into ./~/runs/a, said as ~/runs/a)
_PATH_OPTIONS = frozenset({"data", "out", "cache_dir", "init", "pretrained"})


def _typed(option: str, value: Any, current: Any) -> Any:
    """``value`` of ``option``, from YAML or a ``key=value`` override (a string), as the type of
    its default ``current``; a value of another type is refused, naming the option (YAML reads
    ``1e-3`` as a string, which is read as the number it means)."""
    if value is None:  # `init:` with nothing after it
        raise TrainConfigError(f"{option}: no value given (give one, or leave the option out)")
    if option == "pretrained":
        value = _pretrained_words(value)
    if isinstance(current, tuple):
        if isinstance(value, str):
            value = [p.strip() for p in value.strip("()[] ").split(",") if p.strip()]
        if not isinstance(value, (list, tuple)) or len(value) != len(current):
            raise TrainConfigError(f"{option}: expected {len(current)} numbers (low,high), got {value!r}")
        return tuple(_typed(option, v, c) for v, c in zip(value, current, strict=True))
    if isinstance(current, bool):
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        if type(value) is int and value in (0, 1):  # YAML `amp: 1`, as `--set amp=1` is read
            return bool(value)
        if not isinstance(value, bool):
            raise TrainConfigError(f"{option}: expected a boolean, got {value!r}")
        return value
    if isinstance(current, str):
        if isinstance(value, int) and not isinstance(value, bool):  # version: 2
            return str(value)
        if not isinstance(value, str):
            raise TrainConfigError(f"{option}: expected text, got {value!r} (quote it in YAML)")
        return os.path.expanduser(value) if option in _PATH_OPTIONS else value
    kind = type(current)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TrainConfigError(
            f"{option}: expected {'an integer' if kind is int else 'a number'}, got {value!r}"
        )
    try:
        if kind is int and not isinstance(value, float):
            return int(value)  # exactly, not through a float (a large seed)
        number = float(value)
    except ValueError:
        raise TrainConfigError(f"{option}: cannot read {value!r} as {kind.__name__}") from None
    if not math.isfinite(number) or (kind is int and not number.is_integer()):
        raise TrainConfigError(f"{option}: cannot read {value!r} as {kind.__name__}")
    return kind(number)


def _pretrained_words(value: Any) -> Any:
    """``pretrained`` given as yes or no (``--set pretrained=false``, YAML ``pretrained: no``, which
    YAML reads as a boolean) as the word it means: no -> ``none``, yes -> ``imagenet``.

    Accepted rather than refused: the setting reads as a yes/no question, timm's own
    ``pretrained=True`` means its ImageNet weights, and the boolean options here take these same
    words; "false" was taken for a weights file of that name, and ``pretrained: false`` in YAML
    was refused as not text. A weights file so named is still given as a path: ``./false``."""
    if isinstance(value, bool):
        return "imagenet" if value else "none"
    if isinstance(value, int) and value in (0, 1):
        return "imagenet" if value else "none"
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return "imagenet" if value.strip().lower() in _TRUE else "none"
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(values) - set(known))
    if unknown:
        hints = "".join(_did_you_mean(k, known) for k in unknown)
        raise TrainConfigError(
            f"unknown {where} option(s): {', '.join(unknown)}{hints}; known: {', '.join(sorted(known))}"
        )
    defaults = cls()
    kw = {}
    for key, value in values.items():
        option = key if cls is TrainConfig else f"augment.{key}"
        if key == "augment" and cls is TrainConfig:
            if isinstance(value, dict):
                value = _build(AugmentConfig, value, "augment")
            elif not isinstance(value, AugmentConfig):
                raise TrainConfigError(f"augment: expected a mapping of augment options, got {value!r}")
        else:
            value = _typed(option, value, getattr(defaults, key))
        kw[key] = value
    return cls(**kw)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    saved: bool = False,
    **values: Any,
) -> TrainConfig:
    """Config from YAML ``path`` (a file, or a packaged recipe's name: :func:`find_config`), then
    keyword ``values``, then ``key=value`` overrides.

    Overrides reach nested options with a dot: ``augment.hflip=0``. A config made for one data
    set (``data:`` in the file) used on another (``data`` given as a value or override) gets a
    name of its own, ``<data folder>-<arch>-<input_size>``, and the run folder ``runs/<name>``,
    unless they are given: the recipe's name (``fracatlas-lite0-384``) would say it was trained
    on FracAtlas. The same when ``resume``-ing, so that the command that started a run, with
    ``--resume`` added, finds its folder and keeps its name (the recipe's folder was looked in,
    and a run resumed with ``--out`` given was renamed after the recipe). ``saved``: the record of a
    run that trained (a checkpoint's, its config.yaml), held to the rules of its day: bounds added
    since (lr at most 1, ...) refused to export runs that had trained under them.
    """
    data: dict[str, Any] = {}
    loaded: dict[str, Any] = {}
    if path is not None:
        loaded = _read_yaml(find_config(path))
        data.update(loaded)
    data.update({k: v for k, v in values.items() if v is not None})
    base = _build(TrainConfig, data, "training")
    for item in overrides or []:
        base = _override(base, item)
    given = {k for k, v in values.items() if v is not None} | {_split(i)[0] for i in overrides or []}
    recipe_data = loaded.get("data")
    if recipe_data and "data" in given and _other_data(str(recipe_data), base.data):
        base = named_for_data(base, base.data, keep=given)
    _check_ranges(base, upper_bounds=not saved)
    return base


def with_run_identity(
    cfg: TrainConfig, overrides: list[str] | None, config: str | Path | None = None
) -> TrainConfig:
    """``cfg`` with the name and version, and the schedule (epochs, patience), of the run it resumes
    (its config.yaml), unless given with ``--set`` or in the ``config`` file: a name derived from
    the data folder's name changed when the folder was moved or renamed, and the resume was refused
    for a name the user never gave; a finished run resumed without them trained on to the default
    schedule (12 epochs where it had 1), unsaid."""
    given = {_split(item)[0] for item in overrides or []}
    # a recipe's name is replaced by the data's (load_config), its schedule is the one given
    scheduled = given | (set(_read_yaml(find_config(config))) if config is not None else set())
    try:
        saved = yaml.safe_load((Path(cfg.out) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return cfg
    if not isinstance(saved, dict):
        return cfg
    kept: dict[str, Any] = {
        k: str(saved[k])
        for k in ("name", "version")
        if k not in given and isinstance(saved.get(k), (str, int))
    }
    kept |= {
        k: saved[k]
        for k in ("epochs", "patience")
        if k not in scheduled and type(saved.get(k)) is int and saved[k] >= 0
    }
    return dataclasses.replace(cfg, **kept)


def named_for_data(cfg: TrainConfig, data: str | Path, keep: Collection[str] = ()) -> TrainConfig:
    """``cfg`` named after the data set in ``data`` (``<folder>-<arch>-<input_size>``), in the run
    folder ``runs/<name>``, except the settings in ``keep`` (given by the user): a recipe's name
    and folder would say that a model of other data was trained on the recipe's."""
    if "name" not in keep:
        cfg = dataclasses.replace(cfg, name=f"{_slug(Path(data).resolve().name)}-{cfg.arch}-{cfg.input_size}")
    if "out" not in keep:
        cfg = dataclasses.replace(cfg, out=f"runs/{cfg.name}")
    return cfg


def check_new_run(cfg: TrainConfig) -> None:
    """Refuse what a new run may not be named (not checked when a saved run is loaded again: its
    name was accepted then). The name is the bundle's and, with other data than the recipe's, the
    run folder ``runs/<name>``: a path there (``../../x``) put the run outside ``runs/``."""
    if cfg.name.strip() in (".", "..") or set(cfg.name) & set("/\\\0"):
        raise TrainConfigError(
            f"invalid training settings: name={cfg.name!r} (a name, not a path: no / or \\)"
        )
    try:  # the bundle's name and version: export would refuse them after the training
        check_name(cfg.name, "name")
        check_name(cfg.version, "version")
    except BundleError as e:
        raise TrainConfigError(f"invalid training settings: {e}") from None
    for option, folder in (("--out", cfg.out), ("cache_dir", cfg.cache_dir)):
        # above the folder: the folder itself a file is said where the run folder is checked
        blocked = folder_blocked(Path(folder).parent) if folder else None
        if blocked is not None:  # said after the data set was read: `error (os_error): Not a directory`
            raise OutputFolderError(f"{option} {folder}: {blocked}")
    # a weights file that is not there: said before the data set is read, not after
    if cfg.pretrained not in ("imagenet", "none") and not Path(cfg.pretrained).is_file():
        raise TrainConfigError(
            f"invalid training settings: pretrained={cfg.pretrained!r} is not a file "
            "(give a .safetensors or .pt weights file, imagenet or none)"
        )


def recipe_names() -> list[str]:
    """The training recipes packaged with fracsight, in ``fracsight/training/recipes``."""
    return sorted(p.name.removesuffix(".yaml") for p in _RECIPES.iterdir() if p.name.endswith(".yaml"))


def find_config(path: str | Path) -> Path:
    """``path`` when it exists, else the packaged recipe it names (``fracatlas-lite0-384``, with or
    without ``.yaml``), so that ``-c NAME`` works from a pip install as from a checkout, in any
    folder. Anything else is refused, naming the recipes."""
    path = Path(path)
    if path.exists():
        return path
    names, name = recipe_names(), path.name.removesuffix(".yaml")
    if name in names and path.parent == Path("."):
        return Path(str(_RECIPES.joinpath(f"{name}.yaml")))
    hint = f"the packaged recipe: -c {name}" if name in names else f"packaged recipes: {', '.join(names)}"
    raise ConfigNotFoundError(f"cannot read config {path}: no such file ({hint})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """Refuses a key given twice in one mapping (PyYAML keeps the last one without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: SafeLoader merges it below
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool) and key is not None:  # `? [a, b]`: a list
                line = key_node.start_mark.line + 1
                raise TrainConfigError(
                    f"line {line}: an option's name must be a word, got a {type(key).__name__}"
                )
            if key in seen:
                line = key_node.start_mark.line + 1
                raise TrainConfigError(f"option {key!r} is given twice (again on line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    """The options in the YAML file ``path``; any problem with it is one line naming the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark is not an option
        loaded = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # a SafeLoader
    except OSError as e:
        raise TrainConfigError(f"cannot read config {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise TrainConfigError(f"cannot read config {path}: not UTF-8 text (byte {e.start})") from e
    except yaml.YAMLError as e:
        raise TrainConfigError(f"cannot read config {path}: {_yaml_problem(e)}") from e
    except ConfigError as e:
        raise TrainConfigError(f"config {path}: {e}") from e
    if not isinstance(loaded, dict):
        raise TrainConfigError(f"{path} must hold a mapping of options")
    return loaded


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: the problem and where it is."""
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem is None:
        return " ".join(str(error).split())
    problem = error.problem
    if error.problem_mark is not None:
        problem += f" at line {error.problem_mark.line + 1}, column {error.problem_mark.column + 1}"
    if "\\t" in error.problem:
        problem += " (indent YAML with spaces, not tabs)"
    return problem


def _split(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise TrainConfigError(f"override {item!r} must look like key=value")
    return key.strip(), value


def _override(base: TrainConfig, item: str) -> TrainConfig:
    """``base`` with the ``key=value`` override ``item`` applied."""
    key, value = _split(item)
    options = {f.name for f in dataclasses.fields(base)} - {"augment"}
    if key.startswith("augment."):
        sub = key.split(".", 1)[1]
        aug = base.augment
        known = {f.name for f in dataclasses.fields(aug)}
        if sub not in known:
            hint = _did_you_mean(sub, known, "augment.") or f" (augment options: {', '.join(sorted(known))})"
            raise TrainConfigError(f"unknown augment option {sub!r}{hint}")
        aug = dataclasses.replace(aug, **{sub: _typed(key, value, getattr(aug, sub))})
        return dataclasses.replace(base, augment=aug)
    if key in options:
        return dataclasses.replace(base, **{key: _typed(key, value, getattr(base, key))})
    augment_options = {f.name for f in dataclasses.fields(AugmentConfig)}
    hint = _did_you_mean(key, options) or _did_you_mean(key, augment_options, "augment.")
    if key == "augment":
        hint = " (set one augment option at a time: augment.hflip=0)"
    if not hint:  # no close match: the options (named nowhere else but in the code)
        hint = f" (options: {', '.join(sorted(options))}; augment.<{'|'.join(sorted(augment_options))}>)"
    raise TrainConfigError(f"unknown option {key!r} in override {item!r}{hint}")


def _did_you_mean(key: str, known: set[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key.lower(), sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _other_data(recipe: str, data: str) -> bool:
    """Whether ``data`` is another data set than the recipe's. The recipe's path is relative to
    where it is meant to run; from elsewhere it names nothing here, and the folder names decide."""
    if Path(recipe).exists():
        return Path(recipe).resolve() != Path(data).resolve()
    return Path(recipe).name != Path(data).resolve().name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "data"


def _check_ranges(cfg: TrainConfig, *, upper_bounds: bool = True) -> None:
    """Refuse settings training cannot run with, naming the option (before any work is done)."""
    problems = []

    def need(ok: bool, option: str, rule: str) -> None:
        if not ok:
            problems.append(f"{option}={getattr(cfg, option, None)!r} ({rule})")

    # at most 2048: 100000 asked for 224 GiB for the feature cache and ended in a MemoryError traceback
    # at least 64: at 32 the last feature map is one pixel, which batch norm cannot train on for a
    # last batch of one image (a traceback after epoch 1, and at every --resume)
    # (a saved run's record keeps the rule of its day, 32: it trained, and is exported or built on)
    low = 64 if upper_bounds else 32
    size_ok = low <= cfg.input_size <= 2048 and cfg.input_size % 32 == 0
    need(size_ok, "input_size", f"a multiple of 32, {low} to 2048")
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
    need(0 <= cfg.seed < 2**63, "seed", "0 or more and below 2**63 (torch's limit)")
    need(cfg.device in ("auto", "cpu", "cuda"), "device", "auto, cpu or cuda")
    # the architecture, and its ImageNet weights where asked for: said only after the data set was
    # read (an unknown one), or with exit 1 as no setting error (resnet50 has none offline)
    from fracsight.models.archs import get_arch, list_models

    arch = get_arch(cfg.arch) if cfg.arch in list_models() else None
    close = difflib.get_close_matches(str(cfg.arch), list_models(), n=1)
    need(
        arch is not None,
        "arch",
        "one of " + ", ".join(list_models()) + (f"; did you mean {close[0]}?" if close else ""),
    )
    # not with init= (every weight replaced, pretrained unused), nor of a saved run's record (its
    # run trained: refused, it could be neither exported nor resumed)
    if (
        arch is not None
        and cfg.pretrained == "imagenet"
        and arch.imagenet is None
        and not cfg.init
        and upper_bounds
    ):
        problems.append(
            f"pretrained='imagenet' (no offline ImageNet weights for {cfg.arch}: use --set pretrained=none, "
            "or name a local weights file)"
        )
    for option in ("out", "name", "version"):
        need(bool(getattr(cfg, option).strip()), option, "not empty")
    # upper bounds: lr=1e38 overflowed inside torch, lr=1e20 made every output NaN, both tracebacks
    # after the data were prepared (as `detector joint` bounds its own)
    top = 1.0 if upper_bounds else math.inf
    for option in ("lr", "lr_finetune"):
        need(0 < getattr(cfg, option) <= top, option, "above 0, at most 1")
    need(0 < cfg.mask_pos_weight <= 1000 * top, "mask_pos_weight", "above 0, at most 1000")
    need(0 <= cfg.weight_decay <= top, "weight_decay", "0 to 1")
    for option in ("mask_weight", "region_weight", "class_weight"):
        need(0 <= getattr(cfg, option) <= 100 * top, option, "0 to 100")
    need(0 <= cfg.ema_decay < 1, "ema_decay", "0 (off) up to, not including, 1")
    aug = cfg.augment
    for option, ok, rule in (
        ("hflip", 0 <= aug.hflip <= 1, "a probability, 0 to 1"),
        ("rotate_deg", 0 <= aug.rotate_deg <= 180, "degrees, 0 to 180"),
        ("translate", 0 <= aug.translate <= 1, "a fraction of the side, 0 to 1"),
        ("scale", 0 < aug.scale[0] <= aug.scale[1], "low,high with 0 < low <= high"),
        ("gamma", 0 < aug.gamma[0] <= aug.gamma[1], "low,high with 0 < low <= high"),
        ("contrast", 0 <= aug.contrast[0] <= aug.contrast[1], "low,high with 0 <= low <= high"),
    ):
        if not ok:
            problems.append(f"augment.{option}={getattr(aug, option)!r} ({rule})")
    if cfg.epochs == 0 and cfg.epochs_frozen == 0 and not cfg.init:  # not said of epochs=-1
        problems.append(
            "epochs=0 and epochs_frozen=0 (nothing to train; with init= it keeps the starting weights)"
        )
    if problems:
        raise TrainConfigError("invalid training settings: " + "; ".join(problems))
