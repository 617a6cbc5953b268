"""The training loop: two-phase fine-tuning, early stopping, best checkpoint, resumable runs."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import functools
import json
import logging
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from fracsight._files import replace_atomically, replaced_by
from fracsight._terminal import shell_command
from fracsight.data.leakage import (
    CONTENT_KEY,
    images_content,
    images_record,
    recorded_images,
    same_content,
    same_data_folder,
    split_as_trained,
    trained_images_among,
)
from fracsight.data.sample import CLASS, FRACTURE, REGION, Dataset, Sample
from fracsight.data.splits import train_val_samples, training_subset
from fracsight.errors import ConfigError, DatasetError, OutputFolderError
from fracsight.evaluation.metrics import auroc
from fracsight.models import FractureNet, HeadConfig, create_model
from fracsight.training.augment import augment_batch
from fracsight.training.cache import LetterboxedSet, cache_folder_refusal, letterbox_samples
from fracsight.training.config import (
    TrainConfig,
    TrainConfigError,
    _check_ranges,
    check_new_run,
    named_for_data,
    recipe_names,
)
from fracsight.training.loss import Targets, multitask_loss

__all__ = [
    "NothingToResumeError",
    "SplitLabelsError",
    "TrainResult",
    "TrainedModel",
    "Trainer",
    "WeightAverage",
    "checkpoint_record",
    "load_trained",
    "resolve_device",
    "train_val_samples",
    "trained_fracture_classes",
]

log = logging.getLogger(__name__)

FRACTURE_CLASSES = ("not fractured", "fractured")  # the binary label's names when the data give none

# what a run writes into its folder before its first checkpoint (best.pt, last.pt)
RUN_FILES = frozenset({"config.yaml", "history.json", "curves.png"})
CHECKPOINTS = ("best.pt", "last.pt")
# the settings of the first fracsight (every run's config.yaml holds them, an older run's too, which
# lacks settings added since); a recipe lists what it changes, never all (the packaged ones leave out
# layout, class_weight, amp and max_samples): so a run's config.yaml is told from a user's recipe
RUN_CONFIG_KEYS = frozenset(
    {
        "data", "layout", "out", "arch", "pretrained", "input_size", "batch_size", "epochs_frozen",
        "epochs", "lr", "lr_finetune", "weight_decay", "unfreeze_from", "feature_cache_variants",
        "mask_weight", "mask_pos_weight", "region_weight", "class_weight", "patience", "seed", "device",
        "amp", "workers", "max_samples", "name", "version", "augment",
    }
)  # fmt: skip
# what --resume may change: where the data and the run are, how long it trains (a run is often
# resumed to train longer), on what it runs, and the model's name; anything else would mix two
# recipes in one run and write the second over the first's config.yaml
RESUMABLE_SETTINGS = frozenset(
    # not name or version: changed on --resume they were checked nowhere (a name export refuses) and
    # kept only if a new best epoch came (export named the bundle as before, without a word)
    {"data", "out", "epochs", "patience", "device", "amp", "workers", "cache_dir"}
)


def _same_setting(key: str, saved: Any, asked: Any) -> bool:
    """A resumed run's setting as it was started with: a file (init, pretrained) by where it is,
    as runs started before the Trainer resolved them recorded it relative to their folder."""
    if (
        key in ("init", "pretrained")
        and isinstance(saved, str)
        and isinstance(asked, str)
        and saved
        and asked
    ):
        return saved == asked or Path(saved).resolve() == Path(asked).resolve()
    return saved == asked


class NothingToResumeError(ConfigError):
    """``--resume`` of a run folder that holds no run: a bad argument (the CLI exits 2), never
    taken as a fresh start."""

    code = "nothing_to_resume"
    bad_argument = True


class SplitLabelsError(DatasetError):
    """A train or val split without images of one fracture label: the head cannot learn it, or no
    checkpoint can be chosen on validation AUROC. The data are the user's to fix: exit 2."""

    bad_argument = True


def refuse_one_label_splits(
    dataset: Dataset, train: list[Sample], val: list[Sample], fracture: tuple[str, ...]
) -> None:
    """Refuse, before anything is written, a train or val split that lacks one of the fracture
    labels ``fracture`` (the head's class names; empty: no fracture head). Trained on, such a run
    kept no best.pt (every epoch scored -inf) while saying where its checkpoint was."""
    if not fracture:
        return
    needed = "validation AUROC, which picks the checkpoint, and export's thresholds need both"
    if any(s.split == "val" for s in dataset.samples):
        val_fix = f"{needed}; give it images of both, or leave the val split out and fracsight carves one"
    else:  # the advice to leave out a val split the data never gave was no advice
        val_fix = (
            f"fracsight carved it out of train (the data give none) and {needed}: add images, or give one"
        )
    for name, samples, why in (
        ("train", train, "the fracture head would learn one answer; give it images of both"),
        ("val", val, val_fix),
    ):
        labels = [s.labels[FRACTURE] for s in samples if FRACTURE in s.labels]
        missing = [fracture[k] for k in (1, 0) if k not in labels]
        if missing:
            raise SplitLabelsError(
                f"{dataset.root}: the {name} split has no {' and no '.join(repr(m) for m in missing)} "
                f"images (it holds {len(labels)}): {why}"
            )


def trained_fracture_classes(dataset: Dataset) -> tuple[str, ...]:
    """The class names of the fracture head that training on ``dataset`` trains (MURA:
    normal/abnormal): the data's, when every image has a fracture label; else none, the head
    left untrained."""
    if not all(FRACTURE in s.labels for s in dataset.samples):
        return ()
    return tuple(dataset.class_names.get(FRACTURE, FRACTURE_CLASSES))


def checkpoint_record(heads: HeadConfig, cfg: TrainConfig, fracture: tuple[str, ...]) -> dict[str, Any]:
    """What a checkpoint holds beside its weights, as :func:`load_trained` reads it: the network's
    architecture and heads, the fracture head's classes (``fracture``: none when it was not
    trained), so that export knows what the heads mean, and the config. Every checkpoint that
    export reads (training's, a joint run's) records it so."""
    return {
        "arch": cfg.arch,
        "regions": list(heads.regions),
        "classes": list(heads.classes),
        "fracture": list(fracture),
        "config": json.dumps(cfg.to_dict()),
    }


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainConfigError("--device cuda was asked for, but no CUDA GPU is available")
    if name not in ("cpu", "cuda"):
        raise TrainConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def bf16_pays(device: torch.device) -> bool:
    """Whether bfloat16 autocast can make training faster on ``device``: a CUDA GPU, or a CPU
    with bfloat16 instructions (AVX-512 BF16 or AMX); elsewhere torch emulates them, slower than
    float32. (On such a CPU the trainer still keeps float32 where weights of the backbone learn:
    see ``Trainer._autocast``.)"""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # numpy's legacy seed is 32 bits; a larger one raised in training
    torch.manual_seed(seed)


def read_checkpoint(path: Path, needs: tuple[str, ...] = ("model", "arch", "config")) -> dict[str, Any]:
    """The dict of tensors and plain values a checkpoint of fracsight holds (never unpickled code);
    a :class:`ConfigError` in one line for a file that is not one (damaged, cut short, not PyTorch),
    or that lacks ``needs``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types, with pages of advice, for such a file
        raise ConfigError(
            f"{path} is not a checkpoint written by fracsight: torch cannot read it ({type(e).__name__})"
        ) from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path} is not a checkpoint written by fracsight (it holds no dict)")
    missing = [key for key in needs if key not in state]
    if missing and {"optimizer", "epoch", "generator"} <= set(state):
        # a user's slip, not a damaged file: last.pt resumes a run, best.pt is its model
        raise TrainConfigError(
            f"{path} is a run's resume checkpoint (last.pt), not a trained model: use the run's "
            f"best.pt{', beside it' if (path.parent / 'best.pt').is_file() else ''}"
        )
    if missing:
        raise ConfigError(f"{path} is not a checkpoint written by fracsight (it lacks {', '.join(missing)})")
    return state


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` that replaces ``path`` at once: Ctrl-C or a crash while a checkpoint is written
    leaves the previous one whole (a torn ``best.pt`` would lose the run's best model)."""
    replace_atomically(path, lambda tmp: torch.save(state, tmp))


@dataclass
class _Split:
    """Labels and inputs of one split, as tensors on the CPU."""

    inputs: torch.Tensor  # cached prefix features (N, K, C, h, w) or images (N, 1, S, S)
    masks: torch.Tensor  # (N, K, gh, gw) targets, or (N, 1, S, S) full-resolution masks
    fracture: torch.Tensor
    fracture_valid: torch.Tensor
    mask_valid: torch.Tensor
    region: torch.Tensor | None
    region_valid: torch.Tensor | None
    klass: torch.Tensor | None


class WeightAverage:
    """Exponential moving average of a model's weights (and batch-norm statistics).

    The validation AUROC of a fine-tune on a few thousand radiographs swings by
    several points from epoch to epoch; the averaged weights are steadier and
    usually better, at no cost at inference time. The decay ramps up over the
    first few hundred steps so that the average is not dominated by the starting weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad = False

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = self.decay * (1 - math.exp(-self.updates / 100))
        for avg, new in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.dtype.is_floating_point:
                avg.lerp_(new, 1 - decay)
            else:
                avg.copy_(new)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_score: float
    history: list[dict[str, Any]]


def _labels(samples: list[Sample], dataset: Dataset) -> dict[str, torch.Tensor | None]:
    frac = torch.tensor([float(s.labels.get(FRACTURE, 0)) for s in samples])
    frac_valid = torch.tensor([FRACTURE in s.labels for s in samples])
    mask_valid = torch.tensor(
        [FRACTURE in s.labels and (s.labels[FRACTURE] == 0 or bool(s.boxes)) for s in samples]
    )
    regions = dataset.class_names.get(REGION, ())
    region = region_valid = None
    if regions:
        region = torch.tensor([[float(r in s.regions) for r in regions] for s in samples])
        region_valid = region.sum(1) > 0
    klass = None  # -1 where an image has no class (a type is given only for fractured images)
    if CLASS in dataset.class_names:
        klass = torch.tensor([s.labels.get(CLASS, -1) for s in samples])
    return {
        "fracture": frac,
        "fracture_valid": frac_valid,
        "mask_valid": mask_valid,
        "region": region,
        "region_valid": region_valid,
        "klass": klass,
    }


class Trainer:
    def __init__(self, cfg: TrainConfig, dataset: Dataset, show_progress: bool = True) -> None:
        _check_ranges(cfg)  # a TrainConfig built in Python has not been through load_config
        # the run records the data it trained on, resolved: export and evaluate read it again, from
        # any working folder. That is ``dataset``'s folder: a recipe's ``data`` was recorded instead
        # when a Dataset of other images was given, and export then failed on the recipe's images
        trained_on = Path(dataset.root).resolve()
        named = Path(cfg.data).resolve() if cfg.data else trained_on
        if named != trained_on and named not in trained_on.parents:
            log.warning(
                "the config's data (%s) is not the data set given (%s): the run trains on, and records, %s",
                cfg.data,
                dataset.root,
                trained_on,
            )
            if cfg.name in recipe_names():  # `load_config(RECIPE)` on other data, as `train` names it
                cfg = named_for_data(cfg, trained_on, keep=() if cfg.out == f"runs/{cfg.name}" else ("out",))
        cfg = dataclasses.replace(cfg, data=str(trained_on))
        # the starting checkpoint and a weights file, resolved as the data: the card's Reproduce
        # config.yaml, run from another folder, found no checkpoint at a relative init=
        for option in ("init", "pretrained"):
            value = getattr(cfg, option)
            if value and value not in ("imagenet", "none") and Path(value).exists():
                cfg = dataclasses.replace(cfg, **{option: str(Path(value).resolve())})
        self.cfg = cfg
        self.dataset = dataset
        self.device = resolve_device(cfg.device)
        self.amp = cfg.amp and bf16_pays(self.device)  # `amp: false` keeps float32 everywhere
        self._backbone_trains = False  # phase 2: the unfrozen stages learn
        self.run_dir = Path(cfg.out)
        # the letterboxed images, kept for the next run (FracAtlas at 384 px: about a gigabyte)
        # beside the run folder (`--out .`: beside the folder it names, not in it)
        beside = self.run_dir.parent if self.run_dir.name not in ("", "..") else self.run_dir.resolve().parent
        self.cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else beside / ".cache"
        self.show_progress = show_progress
        self.saved_epoch = 0  # the epoch last.pt holds (what --resume continues from); 0: none yet
        self._schedule_before: dict[str, Any] | None = None  # a resumed run's, from its config.yaml
        self._replacing: list[str] = []  # the earlier run's checkpoints that --force replaces
        self._claimed = False  # whether the run has written into its folder (_claim_run_folder)
        self._images: dict[str, Any] = {}  # the images trained on (images_record), once fit has them
        # what the binary label means (MURA: normal/abnormal); the checkpoint records it for export
        self.fracture_classes = trained_fracture_classes(dataset)
        self.has_fracture = bool(self.fracture_classes)
        self.heads = HeadConfig(
            regions=tuple(dataset.class_names.get(REGION, ())),
            classes=tuple(dataset.class_names.get(CLASS, ())),
        )
        if not self.has_fracture and not self.heads.classes:
            raise DatasetError(f"{dataset.root} has neither fracture labels nor classes to learn")

    def _autocast(self, train: bool = True) -> torch.autocast:
        # On a CPU bfloat16 pays while no backbone weights learn: caching the frozen stages ran
        # 1.4-2x and phase 1 about 3x faster than float32, while phase 2 (stages 4-6 learning) was
        # 15% slower (docs/training.md, "The CPU recipe"), so phase 2 stays float32 there.
        # Validation runs the heads in float32, as the exported model does: bfloat16 logits tie, and
        # a phase-1 epoch scored AUROC 0.50 where its own weights in float32 score 0.81.
        cpu_phase2 = self.device.type == "cpu" and self._backbone_trains
        enabled = self.amp and train and not cpu_phase2
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    # ---- data -------------------------------------------------------------------------------------
    def _letterbox(self, samples: list[Sample], what: str) -> LetterboxedSet:
        from fracsight._terminal import progress_bar

        with progress_bar(hide=not self.show_progress) as bar:
            task = bar.add_task(f"decoding {what} images", total=len(samples))
            return letterbox_samples(
                samples,
                self.cfg.input_size,
                self.cache_dir,
                self.cfg.workers,
                progress=lambda n: bar.advance(task, n),
                root=Path(self.dataset.root),
            )

    @torch.no_grad()
    def _prefix_features(
        self, model: FractureNet, data: LetterboxedSet, split: int, variants: int, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the frozen stages on ``variants`` augmented copies (copy 0 is never augmented)."""
        from fracsight._terminal import progress_bar

        gen = torch.Generator().manual_seed(seed)
        grid = self.cfg.input_size // 32
        feats: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        bs = 64
        with progress_bar(hide=not self.show_progress) as bar:
            task = bar.add_task("caching frozen features", total=len(data) * variants)
            for v in range(variants):
                vf, vm = [], []
                for i in range(0, len(data), bs):
                    img = torch.from_numpy(data.images[i : i + bs]).unsqueeze(1).float() / 255
                    msk = torch.from_numpy(data.masks[i : i + bs]).unsqueeze(1).float() / 255
                    if v > 0:
                        img, msk = augment_batch(img, msk, self.cfg.augment, gen)
                    with self._autocast():
                        out = model.forward_prefix(_channels_last(img.to(self.device)), split)
                    vf.append(out.to("cpu", torch.float16))
                    vm.append((F.adaptive_max_pool2d(msk, grid) > 0.5).squeeze(1).to(torch.uint8))
                    bar.advance(task, len(img))
                feats.append(torch.cat(vf))
                masks.append(torch.cat(vm))
        return torch.stack(feats, 1), torch.stack(masks, 1)

    def _prepare(
        self, model: FractureNet, samples: list[Sample], split: int, train: bool, what: str
    ) -> _Split:
        data = self._letterbox(samples, what)
        labels = _labels(samples, self.dataset)
        if split > 0:
            variants = self.cfg.feature_cache_variants if train else 1
            inputs, masks = self._prefix_features(
                model, data, split, variants, self.cfg.seed + (0 if train else 1)
            )
        else:
            inputs = torch.from_numpy(data.images).unsqueeze(1)
            masks = torch.from_numpy(data.masks).unsqueeze(1)
        return _Split(inputs=inputs, masks=masks, **labels)

    # ---- one batch ----------------------------------------------------------------------------------
    def _batch(
        self,
        model: FractureNet,
        data: _Split,
        idx: torch.Tensor,
        split: int,
        train: bool,
        gen: torch.Generator,
    ) -> tuple[dict[str, torch.Tensor], Targets]:
        grid = self.cfg.input_size // 32
        if split > 0:
            variant = (
                torch.randint(0, data.inputs.shape[1], (len(idx),), generator=gen)
                if train
                else torch.zeros(len(idx), dtype=torch.long)
            )
            x = _channels_last(data.inputs[idx, variant].to(self.device).float())
            mask = data.masks[idx, variant].float()
        else:
            # Augment where the model runs: on a GPU the warps cost nothing next to the step.
            img = data.inputs[idx].to(self.device).float() / 255
            msk = data.masks[idx].to(self.device).float() / 255
            if train:
                img, msk = augment_batch(img, msk, self.cfg.augment, gen)
            x = model.forward_prefix(_channels_last(img), 0)
            mask = (F.adaptive_max_pool2d(msk, grid) > 0.5).squeeze(1).float()
        with self._autocast(train):
            out = model.forward_heads(model.forward_suffix(x, split))
        t = Targets(
            fracture=data.fracture[idx],
            fracture_valid=data.fracture_valid[idx],
            mask=mask,
            mask_valid=data.mask_valid[idx],
            region=None if data.region is None else data.region[idx],
            region_valid=None if data.region_valid is None else data.region_valid[idx],
            klass=None if data.klass is None else data.klass[idx],
        ).to(self.device)
        return out, t

    @torch.no_grad()
    def _validate(self, model: FractureNet, val: _Split, split: int, pos_weight: float) -> dict[str, float]:
        model.eval()
        gen = torch.Generator()
        losses, probs, class_pred = [], [], []
        n = len(val.fracture)
        for i in range(0, n, 64):
            idx = torch.arange(i, min(i + 64, n))
            out, t = self._batch(model, val, idx, split, False, gen)
            losses.append(float(multitask_loss(out, t, self.cfg, pos_weight)) * len(idx))
            probs.append(torch.sigmoid(out["fracture"].float()).cpu())
            if "class" in out:
                class_pred.append(out["class"].argmax(1).cpu())
        metrics = {"val_loss": sum(losses) / n}
        y = val.fracture[val.fracture_valid].numpy()
        if self.has_fracture and 0 < y.sum() < len(y):
            metrics["val_auroc"] = auroc(y, torch.cat(probs)[val.fracture_valid].numpy())
        if class_pred and val.klass is not None and (val.klass >= 0).any():
            known = val.klass >= 0
            metrics["val_class_accuracy"] = float(
                (torch.cat(class_pred)[known] == val.klass[known]).float().mean()
            )
        return metrics

    def _score(self, metrics: dict[str, float]) -> float:
        value = metrics.get("val_auroc") if self.has_fracture else metrics.get("val_class_accuracy")
        return -math.inf if value is None or math.isnan(value) else float(value)

    # ---- the loop -----------------------------------------------------------------------------------
    def _set_trainable(self, model: FractureNet, phase: int, split: int) -> list[torch.nn.Parameter]:
        for p in model.parameters():
            p.requires_grad = False
        heads = [model.fracture_head, model.mask_head, model.region_head, model.class_head]
        trainable = [m for m in heads if m is not None]
        if phase == 2:
            b = model.backbone
            if hasattr(b, "blocks"):
                first = max(split, self.cfg.unfreeze_from)
                trainable += [*b.blocks[first:], b.conv_head, b.bn2]
                if first == 0:
                    trainable += [b.conv_stem, b.bn1]
            else:
                trainable.append(b)
        for m in trainable:
            for p in m.parameters():
                p.requires_grad = True
        return [p for p in model.parameters() if p.requires_grad]

    def _check_run_folder(self, resume: bool, force: bool) -> dict[str, Any] | None:
        """Refuse a folder the run must not write into; with ``resume``, the checked ``last.pt``."""
        last = self.run_dir / "last.pt"
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise OutputFolderError(f"{self.run_dir} exists and is not a folder: choose another --out")
        if resume and not last.is_file():
            raise NothingToResumeError(
                f"nothing to resume: {last} does not exist (leave out --resume to start a run)"
            )
        resumed = None
        if resume:  # before the data are prepared: a damaged last.pt is refused at once
            resumed = read_checkpoint(
                last, ("model", "history", "epoch", "best_score", "best_epoch", "since_best")
            )
            self._check_same_recipe(resumed)
            self._check_same_heads(resumed)
        earlier = [name for name in CHECKPOINTS if (self.run_dir / name).is_file()]
        if earlier and not resume and not force:
            how = (
                "pass --resume to continue it, --force to replace it"
                if "last.pt" in earlier
                else "it stopped before its first epoch ended, with no last.pt to resume: --force replaces it"
            )
            raise OutputFolderError(
                f"{self.run_dir} holds an earlier run ({', '.join(earlier)}): {how}, or choose another --out"
            )
        # --force: replaced once the new run has a checkpoint to write, and only then (a run refused
        # later, or stopped before its first epoch ended, leaves the earlier one as it was)
        self._replacing = earlier if force and not resume else []
        if not earlier and self.run_dir.is_dir():
            # a folder without a run: only the files a run writes before its first checkpoint (left
            # by a run that stopped early, its config.yaml a whole one) may be written over, never
            # anything else of the user's (a recipe of theirs named config.yaml; what a run killed
            # while saving left half-written)
            ours = RUN_FILES if self._written_by_a_run(self.run_dir / "config.yaml") else frozenset()
            others = sorted(
                p.name
                for p in self.run_dir.iterdir()
                if p.name not in ours and replaced_by(p.name) not in RUN_FILES | set(CHECKPOINTS)
            )
            if others:
                raise OutputFolderError(
                    f"{self.run_dir} is not a run folder (it holds {', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''}): choose another --out"
                )
        return resumed

    @property
    def kept_earlier_run(self) -> bool:
        """Whether the run --force was to replace is still there, untouched (stopped before this
        run's first checkpoint)."""
        return bool(self._replacing) and not self._claimed

    def _claim_run_folder(self) -> None:
        """Before the run's first checkpoint: the run --force replaces goes, and the run's
        config.yaml is written. Both waited until now: the earlier run's checkpoints left under a
        new config.yaml (the new run stopped before its first epoch) were resumed by --resume with
        the new settings, one run in two recipes; removed at the start, they were lost to a run
        refused a moment later (a split without one of its labels)."""
        if self._claimed:
            return
        self._claimed = True
        if self._replacing:
            self._remove_replaced_run(self._replacing)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))

    def _remove_replaced_run(self, checkpoints: list[str]) -> None:
        """The run --force replaces: its checkpoints, history and the evaluation reports ``export
        --evaluate`` left, which named the old model beside the new best.pt (as ``evaluate
        --overwrite`` clears a report, so that none passes for the new one's)."""
        for name in (*checkpoints, "history.json", "curves.png"):
            (self.run_dir / name).unlink(missing_ok=True)
        log.warning("%s: the earlier run's %s removed (--force)", self.run_dir, ", ".join(checkpoints))
        for report in sorted(self.run_dir.glob("evaluation-*")):
            if report.is_dir() and (report / "metrics.json").is_file():
                shutil.rmtree(report)
                log.warning("%s: the replaced run's evaluation report removed", report)

    def _written_by_a_run(self, path: Path) -> bool:
        """Whether ``path`` is a config.yaml a run wrote (every setting a run has written since the
        first version), not a recipe of the user's by that name, which a run must not write over."""
        try:
            saved = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return False
        return isinstance(saved, dict) and set(saved) >= RUN_CONFIG_KEYS

    def _check_cache_dir(self) -> None:
        """The cache folder may not be a file, the run folder (or in it, or above it), a bundle or
        another run: the run ends advising "delete it to free the space", which, for `cache_dir`
        set to the run folder, deleted the model just trained."""
        cache, run = self.cache_dir, self.run_dir
        held, run_at = cache.resolve(), run.resolve()
        if held == run_at or run_at in held.parents or held in run_at.parents:
            raise TrainConfigError(
                f"cache_dir {cache} is, holds or lies in the run folder {run}: give a folder of its own "
                "(the default is .cache beside the run folder)"
            )
        refused = cache_folder_refusal(cache)
        if refused is not None:
            raise TrainConfigError(f"cache_dir {cache} {refused}")

    def _check_same_recipe(self, resumed: dict[str, Any]) -> None:
        """A resumed run keeps the settings it was started with (its config.yaml, else those its
        ``last.pt`` records), but for :data:`RESUMABLE_SETTINGS`."""
        saved_path = self.run_dir / "config.yaml"
        try:
            saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            saved = None
        if not isinstance(saved, dict):
            # config.yaml gone or damaged: a run was resumed at another size and learning rate,
            # unchecked, and config.yaml rewritten with them (one run, two recipes); last.pt's own
            # record of the settings (best.pt's for a last.pt from before it kept them)
            recorded = resumed.get("config")
            if not isinstance(recorded, str) and (self.run_dir / "best.pt").is_file():
                with contextlib.suppress(ConfigError):
                    recorded = read_checkpoint(self.run_dir / "best.pt", ("config",))["config"]
            with contextlib.suppress(ValueError, TypeError):
                saved = yaml.safe_load(yaml.safe_dump(json.loads(recorded)))
        if not isinstance(saved, dict):
            return  # nothing to compare with (a run folder from before either record)
        self._schedule_before = {key: saved.get(key) for key in ("epochs", "patience")}
        schedule = [
            f"{key} {before} -> {getattr(self.cfg, key)}"
            for key, before in self._schedule_before.items()
            if before is not None and before != getattr(self.cfg, key)
        ]
        if schedule:  # given with --set: said, for a finished run trains on
            log.warning("--resume: the run's schedule changes: %s", ", ".join(schedule))
        asked = yaml.safe_load(yaml.safe_dump(self.cfg.to_dict()))  # the same round trip as the saved one
        changed = [
            f"{key} {saved.get(key)!r} -> {asked.get(key)!r}"
            for key in sorted(set(saved) | set(asked))
            if key not in RESUMABLE_SETTINGS and not _same_setting(key, saved.get(key), asked.get(key))
        ]
        if changed:
            raise TrainConfigError(
                f"--resume continues {self.run_dir} with the settings it was started with; these differ: "
                f"{'; '.join(changed[:5])}{'; ...' if len(changed) > 5 else ''}. Give the same settings "
                f"(only {', '.join(sorted(RESUMABLE_SETTINGS - {'out'}))} may change), or start a new run "
                "in another --out"
            )

    def _check_same_heads(self, resumed: dict[str, Any]) -> None:
        """A resumed run keeps the heads it was started with: data with other classes, regions or
        another binary label do not fit its network (loading it failed with a traceback), and data
        that did fit but meant other things would train one head on two meanings."""
        record = resumed
        if "classes" not in record and (self.run_dir / "best.pt").is_file():  # a last.pt of an older run
            record = read_checkpoint(self.run_dir / "best.pt", ("model",))
        wanted = self._heads_record()
        differ = [
            f"{key} {list(record[key])} -> {wanted[key]}"
            for key in wanted
            if key in record and list(record[key]) != wanted[key]
        ]
        if differ:
            raise TrainConfigError(
                f"--resume continues {self.run_dir}, whose heads the data set {self.dataset.root} does "
                f"not fit: {'; '.join(differ)}. Resume with the data the run started on, or start a new "
                "run in another --out"
            )

    def _check_same_images(
        self, resumed: dict[str, Any], images: dict[str, Any], samples: list[Sample]
    ) -> None:
        """A resumed run keeps the images it was started with: another data set whose heads fit
        (other class folders with the same names, another FracAtlas-like set) was trained on in
        the same run without a word. A moved data folder is the same images (``data`` may change)."""
        if "images_sha256" not in resumed:  # a last.pt from before the record was kept
            return
        if not recorded_images(resumed["images_sha256"], self.dataset.root, samples):
            raise TrainConfigError(
                f"--resume continues {self.run_dir}, which trained on other images than the "
                f"{images['images']} training and validation images of {self.dataset.root} (it had "
                f"{resumed['images']}, or the same number with other files, labels or splits). Resume "
                "with the data the run started on, or start a new run in another --out"
            )
        started_on = json.loads(resumed.get("config", "{}")).get("data")
        if not same_data_folder(started_on, self.dataset.root) and not same_content(
            resumed.get(CONTENT_KEY), images[CONTENT_KEY]
        ):
            raise TrainConfigError(
                f"--resume continues {self.run_dir}, which trained on other images than those of "
                f"{self.dataset.root}: its {images['images']} training and validation images have the "
                f"run's names and labels but other bytes than those of {started_on} (another site's "
                "export numbered alike?). Resume with the data the run started on, or start a new run "
                "in another --out"
            )

    def _heads_record(self) -> dict[str, list[str]]:
        """The heads a checkpoint records (:func:`checkpoint_record`), for this run's data."""
        record = checkpoint_record(self.heads, self.cfg, self.fracture_classes)
        return {key: record[key] for key in ("regions", "classes", "fracture")}

    def fit(self, resume: bool = False, force: bool = False) -> TrainResult:
        """Train; ``resume``: continue the run in ``cfg.out`` from its ``last.pt``; ``force``:
        replace an earlier run there (refused otherwise, so that no trained run is lost). A run
        folder another run is training into now is refused."""
        if not resume:  # as `fracsight train` checks it: a Trainer made in Python trained into runs/../../x
            check_new_run(self.cfg)
        self._claimed, self._replacing = False, []  # a Trainer fitted again: its earlier run is replaced
        # before writing; not on resume: last.pt holds every weight, and init may be gone since
        # (the run could never be resumed) or replaced (its frozen stages' features cached anew)
        initial = self._initial_model(Path(self.cfg.init)) if self.cfg.init and not resume else None
        self.dataset.refuse_output_inside(self.run_dir)
        with self._callers_random_state(), self._run_folder_held():
            return self._fit(initial, resume, force)

    @contextlib.contextmanager
    def _callers_random_state(self) -> Iterator[None]:
        """Python's, NumPy's and torch's generators as the caller left them, once fit (which seeds
        them, for a run that can be made again) ends: a notebook's own draws after it repeated the
        same numbers whatever it had seeded."""
        python, legacy = random.getstate(), np.random.get_state()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            try:
                yield
            finally:
                random.setstate(python)
                np.random.set_state(legacy)

    @contextlib.contextmanager
    def _run_folder_held(self) -> Iterator[None]:
        """The run folder locked for this run (``flock`` on the folder itself: no file of ours in
        it), made for the lock where it is new and removed again when no epoch ended. Two runs
        started into one folder both passed its checks, which look at what the folder holds, and
        nothing is written until the first epoch ends: each wrote best.pt and last.pt over the
        other's, both exited 0, and export made one's model under the other's record."""
        try:
            import fcntl
        except ImportError:  # not POSIX: one run per folder at a time is then the user's to keep
            yield
            return
        if self.run_dir.exists() and not self.run_dir.is_dir():
            yield  # refused by _check_run_folder, in its words
            return
        made = [p for p in (self.run_dir, *self.run_dir.absolute().parents) if not p.exists()]
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            handle = os.open(self.run_dir, os.O_RDONLY)
        except OSError as e:
            raise OutputFolderError(
                f"{self.run_dir} cannot be made or opened ({e.strerror or type(e).__name__}): "
                "choose another --out"
            ) from None
        ours = False  # held by this run, or not lockable here
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                ours = True
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    # a file system without flock for a folder (NFS takes an exclusive lock only on
                    # a file open for writing: EBADF; Lustre without it: ENOSYS) holds no other run
                    log.warning(
                        "%s cannot be locked here (%s): a second run started into it is not refused",
                        self.run_dir,
                        e.strerror or type(e).__name__,
                    )
                    ours = True
                else:
                    raise OutputFolderError(
                        f"{self.run_dir} is being trained into by another fracsight train now: wait for "
                        "it to end (then --resume or --force), or choose another --out"
                    ) from None
            yield
        finally:
            # only folders this run made and held: a run refused by the lock removed the folder of
            # the run holding it (made a moment before), which then wrote into one nobody held
            if ours and not self._claimed:
                for folder in made:  # the deepest first; one that holds anything stays
                    try:
                        folder.rmdir()
                    except OSError:
                        break
            os.close(handle)

    def _fit(self, initial: FractureNet | None, resume: bool, force: bool) -> TrainResult:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

        from fracsight._terminal import on_a_terminal, progress_bar

        cfg = self.cfg
        state = self._check_run_folder(resume, force)  # last.pt, read once, to resume from
        self.dataset.refuse_output_inside(self.cache_dir, "cache_dir")
        self._check_cache_dir()
        if state is not None:  # a run from before class sub-folders were patients: split as it was
            self.dataset = split_as_trained(
                self.dataset, cfg.seed, cfg.max_samples, state.get("images_sha256")
            )
        train_samples, val_samples = train_val_samples(self.dataset, cfg.seed)
        # a data set without a test split keeps one carved out of it (train_val_samples): said, for
        # "prepared 22 training" of 24 images put in read as images lost
        has_test = any(s.split == "test" for s in self.dataset.samples)
        held_out = 0 if has_test else len(self.dataset.samples) - len(train_samples) - len(val_samples)
        if cfg.init and state is None:  # said when the run started; on resume init may be gone
            fitted = {s.path for s in train_samples}
            self._warn_init_trained_on([s for s in self.dataset.samples if s.path not in fitted])
        train_samples = training_subset(train_samples, cfg.max_samples, cfg.seed)
        refuse_one_label_splits(self.dataset, train_samples, val_samples, self.fracture_classes)
        images = images_record(self.dataset.root, train_samples + val_samples)
        images[CONTENT_KEY] = images_content(self.dataset.root, train_samples + val_samples)
        self._images = images
        if state is not None:
            self._check_same_images(state, images, train_samples + val_samples)
        seed_everything(cfg.seed)
        if initial is not None:
            model = initial
        elif state is not None:  # the run's own weights, before its frozen stages' features are cached
            model = create_model(cfg.arch, self.heads, pretrained=False)
            model.load_state_dict(state["model"])
        else:
            pretrained: bool | str = {"imagenet": True, "none": False}.get(cfg.pretrained, cfg.pretrained)
            model = create_model(cfg.arch, self.heads, pretrained=pretrained)
        model = model.to(self.device, memory_format=torch.channels_last)
        split = 0
        if cfg.feature_cache_variants > 0 and model.split_points() > 0:
            if not 1 <= cfg.unfreeze_from <= model.split_points():
                raise TrainConfigError(
                    f"unfreeze_from must be in 1..{model.split_points()} with a feature cache; to "
                    "fine-tune every stage (unfreeze_from=0), add --set feature_cache_variants=0"
                )
            split = cfg.unfreeze_from
        for m in model.prefix_modules(split):
            m.eval()
        model.eval()
        # prose naming the user's paths: as markup, "[b]" vanished and "[/b]" was a MarkupError
        # traceback after every image was decoded; soft_wrap: whole lines in a log, not 80 columns
        console = Console(
            stderr=True, quiet=not self.show_progress, markup=False, highlight=False, soft_wrap=True
        )
        t0 = time.time()
        train = self._prepare(model, train_samples, split, True, "training")
        val = self._prepare(model, val_samples, split, False, "validation")
        console.print(
            f"prepared {len(train_samples)} training and {len(val_samples)} validation images "
            f"(frozen stages cached: {split > 0}; bfloat16 autocast: {self.amp}) in {time.time() - t0:.0f} s"
        )
        if held_out > 0:
            measure = shell_command("fracsight", "evaluate", "MODEL", self.dataset.root, "--split", "test")
            console.print(
                f"{held_out} images held out as the test split the data set lacks (the same ones every "
                f"run with seed {cfg.seed}): `{measure}` "
                "measures on them"
            )
        n_pos = float(train.fracture[train.fracture_valid].sum())
        n_neg = float(train.fracture_valid.sum()) - n_pos
        pos_weight = n_neg / n_pos if n_pos > 0 else 1.0

        history: list[dict[str, Any]] = []
        schedules: list[dict[str, Any]] = []  # those the run followed before it was resumed with another
        best_score, best_epoch, start_epoch, since_best = -math.inf, 0, 1, 0
        last_path = self.run_dir / "last.pt"
        if state is not None:
            history = json.loads(state["history"])
            best_score, best_epoch = state["best_score"], state["best_epoch"]
            start_epoch, since_best = state["epoch"] + 1, state["since_best"]
            self.saved_epoch = state["epoch"]
            schedules = self._schedules(state)
            log.info("resuming from epoch %d", start_epoch)
            stopped_early = state.get("phase") == 2 and since_best >= cfg.patience
            trained_all = state["epoch"] >= cfg.epochs_frozen + cfg.epochs  # it ended unsaid, exit 0
            more_epochs = f"--set epochs=N (more than {state['epoch'] - cfg.epochs_frozen})"
            more_patience = f"--set patience=N (more than {since_best})"
            if stopped_early:
                # it ended here: one more epoch trained on, and kept, a model the run never would
                # have (the card's Reproduce command stops here again, at the earlier best epoch);
                # on its last epoch both settings hold it (one alone led to the other's message)
                fix = f"{more_epochs} and {more_patience}" if trained_all else more_patience
                console.print(
                    f"{self.run_dir} ended by early stopping at epoch {state['epoch']} (best epoch "
                    f"{best_epoch}): nothing to train; add {fix} to go on"
                )
                start_epoch = cfg.epochs_frozen + cfg.epochs + 1
            elif trained_all:
                console.print(
                    f"{self.run_dir} has trained {state['epoch']} epochs, {cfg.epochs_frozen + cfg.epochs} "
                    f"asked (epochs_frozen + epochs): nothing to train; add {more_epochs} to go on"
                )
        elif cfg.init:
            # The starting weights are a candidate like any epoch: if no epoch beats them on
            # validation, best.pt stays the model training started from (best epoch 0).
            best_score = self._score(self._validate(model, val, split, pos_weight))
            self._claim_run_folder()
            save_checkpoint(self._checkpoint(model, epoch=0), self.run_dir / "best.pt")
            console.print(f"epoch 0 (initial weights from {cfg.init}): validation score {best_score:.4f}")
        average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        if average is not None and state is not None and "average" in state:
            average.model.load_state_dict(state["average"])
            average.updates = state["average_updates"]
        total_epochs = cfg.epochs_frozen + cfg.epochs
        # One generator draws the order of every epoch and every augmentation (and feature-cache
        # variant); last.pt keeps its state, so that a resumed run draws what the run would have
        # drawn had it not stopped, and ends where it would have ended (tests/test_training.py,
        # test_a_killed_run_resumes_to_where_an_uninterrupted_run_ends).
        gen = torch.Generator().manual_seed(cfg.seed)
        if state is not None:
            if "generator" in state:
                gen.set_state(state["generator"])
            else:  # a last.pt from before the state was kept: the order draws only (augmentations differ)
                for _ in range(start_epoch - 1):
                    torch.randperm(len(train.fracture), generator=gen)
        optimizer, scheduler, phase = None, None, 0
        n = len(train.fracture)
        steps = math.ceil(n / cfg.batch_size)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
        )
        # each epoch's line: what the command reports (`train > log` keeps them, whole: cut at 80
        # columns, "grep ^epoch" lost the timing of class runs)
        stdout = Console(soft_wrap=True, markup=False, highlight=False)
        with progress_bar(*columns, hide=not self.show_progress, redirect_stdout=False) as bar:
            # on a terminal above the bar (both on one screen), where printing elsewhere would tear it
            report = bar.console if on_a_terminal(stdout) and not bar.disable else stdout
            for epoch in range(start_epoch, total_epochs + 1):
                new_phase = 1 if epoch <= cfg.epochs_frozen else 2
                if new_phase != phase:
                    phase = new_phase
                    params = self._set_trainable(model, phase, split)
                    lr = cfg.lr if phase == 1 else cfg.lr_finetune
                    phase_epochs = cfg.epochs_frozen if phase == 1 else cfg.epochs
                    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
                    scheduler = torch.optim.lr_scheduler.OneCycleLR(
                        optimizer, max_lr=lr, total_steps=max(1, phase_epochs * steps), pct_start=0.15
                    )
                    done = (epoch - 1 - (0 if phase == 1 else cfg.epochs_frozen)) * steps
                    with warnings.catch_warnings():  # skipping the steps done is the point here
                        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler")
                        for _ in range(done):  # fast-forward the schedule on resume
                            scheduler.step()
                    if state is not None and epoch == start_epoch and state.get("phase") == phase:
                        optimizer.load_state_dict(state["optimizer"])  # moved onto the parameters' device
                self._train_mode(model, phase, split)
                self._backbone_trains = phase == 2
                order = torch.randperm(n, generator=gen)
                task = bar.add_task(f"epoch {epoch}/{total_epochs} (phase {phase})", total=steps, info="")
                t0, running = time.time(), 0.0
                for step in range(steps):
                    idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                    out, t = self._batch(model, train, idx, split, True, gen)
                    loss = multitask_loss(out, t, cfg, pos_weight)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    if average is not None:
                        average.update(model)
                    running += loss.item()
                    bar.update(task, advance=1, info=f"loss {running / (step + 1):.4f}")
                scored = model if average is None else average.model
                metrics = self._validate(scored, val, split, pos_weight)
                record = {
                    "epoch": epoch,
                    "phase": phase,
                    "train_loss": running / steps,
                    "seconds": round(time.time() - t0, 1),
                    **metrics,
                }
                history.append(record)
                score = self._score(metrics)
                summary = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                bar.remove_task(task)  # its line below says it
                report.print(
                    f"epoch {epoch} (phase {phase}): train_loss {record['train_loss']:.4f} "
                    f"{summary} [{record['seconds']} s]"
                )
                self._claim_run_folder()
                if score > best_score:
                    best_score, best_epoch, since_best = score, epoch, 0
                    save_checkpoint(self._checkpoint(scored, epoch=epoch), self.run_dir / "best.pt")
                else:
                    since_best += 1
                last = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                    "phase": phase,
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "since_best": since_best,
                    "history": json.dumps(history),
                    "schedules": json.dumps(schedules),
                    "generator": gen.get_state(),
                    **self._heads_record(),  # checked when the run is resumed
                    **images,  # so are these
                    "config": json.dumps(cfg.to_dict()),  # and these, where config.yaml is damaged
                }
                if average is not None:
                    last.update(average=average.model.state_dict(), average_updates=average.updates)
                save_checkpoint(last, last_path)
                self.saved_epoch = epoch
                replace_atomically(
                    self.run_dir / "history.json", lambda p: p.write_text(json.dumps(history, indent=2))
                )
                if phase == 2 and since_best >= cfg.patience:
                    log.info("early stopping at epoch %d (best %d)", epoch, best_epoch)
                    break
        self._plot(history)
        return TrainResult(self.run_dir, best_epoch, best_score, history)

    def _schedules(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        """The schedules a resumed run followed before (``last.pt``'s), and the one it leaves now
        where ``--resume --set epochs=N`` (or patience) changes it: the epochs before followed the
        earlier one, which nothing recorded, and the card's Reproduce commands, which train the
        last one from the start, were taken for this model's."""
        schedules = list(json.loads(state.get("schedules") or "[]"))
        before, now = self._schedule_before, {"epochs": self.cfg.epochs, "patience": self.cfg.patience}
        if before is not None and before != now:
            schedules.append({**before, "until_epoch": int(state["epoch"])})
        return schedules

    def _warn_init_trained_on(self, held: list[Sample]) -> None:
        """Say how many of the validation and test images ``held`` the ``init`` weights trained on
        (their run split the same data with another seed): the starting weights, scored as epoch 0
        on images they had learned, won, and export calibrated and measured on them, unsaid."""
        state = read_checkpoint(Path(self.cfg.init), ("config",))
        trained = json.loads(state["config"]) if isinstance(state["config"], str) else {}
        if not isinstance(trained, dict) or not trained.get("data"):
            return
        again = trained_images_among(
            Path(str(trained["data"])),
            str(trained.get("layout") or "auto"),
            int(trained.get("seed") or 0),
            int(trained.get("max_samples") or 0),
            held,
            state.get("images_sha256"),
        )
        if again is None and same_data_folder(trained["data"], self.dataset.root):
            # the most common case, images added to the folder since: said, not passed over
            log.warning(
                "init: could not check whether %s trained on this run's validation and test images: "
                "its data (%s) has changed since; if it trained on some, the starting weights' score "
                "(epoch 0) and figures measured on them are inflated",
                self.cfg.init,
                self.dataset.root,
            )
        elif again:
            log.warning(
                "init: %d of the %d validation and test images are images %s trained on (the same "
                "bytes): the starting weights' score (epoch 0), and figures measured on them, are inflated; "
                "start from weights of a run with the same split (the same seed), or from ImageNet's",
                again,
                len(held),
                self.cfg.init,
            )

    def _initial_model(self, path: Path) -> FractureNet:
        """The model of an earlier run's checkpoint, which must match this run's architecture and heads."""
        if not path.is_file():
            raise TrainConfigError(f"init: no checkpoint at {path}")
        if path.resolve() == (self.run_dir / "best.pt").resolve():
            raise TrainConfigError(
                f"init: {path} is this run's own best.pt, which training overwrites; use another --out"
            )
        try:
            state = read_checkpoint(path, ("model", "arch"))
        except ConfigError as e:  # the same kind: a user's slip stays a bad argument
            raise type(e)(f"init: {e}") from None
        found = (state["arch"], tuple(state.get("regions", ())), tuple(state.get("classes", ())))
        wanted = (self.cfg.arch, self.heads.regions, self.heads.classes)
        if found != wanted:
            raise TrainConfigError(
                f"init: {path} holds {found[0]} with regions {list(found[1])} and classes {list(found[2])}; "
                f"this run needs {wanted[0]} with regions {list(wanted[1])} and classes {list(wanted[2])}"
            )
        return _model_from_checkpoint(state)

    def _train_mode(self, model: FractureNet, phase: int, split: int) -> None:
        model.train()
        for m in model.prefix_modules(split):
            m.eval()
        if phase == 1:  # frozen backbone keeps its batch-norm statistics
            model.backbone.eval()

    def _checkpoint(self, model: FractureNet, *, epoch: int) -> dict[str, Any]:
        # with the images it trained on, which export checks against the data it is given, and its
        # epoch (last.pt, written after it, may be the one before when a run is stopped in between)
        record = checkpoint_record(self.heads, self.cfg, self.fracture_classes)
        return {"model": model.state_dict(), **record, **self._images, "epoch": epoch}

    def _plot(self, history: list[dict[str, Any]]) -> None:
        if not history:
            return
        from fracsight.evaluation.plots import plot_training_curves

        plot_training_curves(history, self.run_dir / "curves.png")


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # About twice as fast for depthwise convolutions on the CPU; harmless on CUDA.
    return x.contiguous(memory_format=torch.channels_last)


class TrainedModel(NamedTuple):
    """What a ``best.pt`` holds. ``fracture``: the class names of the fracture head it trained
    (``()``: trained without fracture labels, its fracture output untrained); None for a
    checkpoint of an older fracsight, which did not record it."""

    model: FractureNet
    config: TrainConfig
    fracture: tuple[str, ...] | None
    # the digest of the training and validation images (:func:`images_record`); None for a
    # checkpoint written before best.pt kept it
    images_sha256: str | None = None
    epoch: int | None = None  # the epoch it is (0: the starting weights); None before best.pt kept it
    images_content: str | None = None  # their bytes' digest (:func:`images_content`); None before kept


def load_trained(path: Path, *, joint: bool = False) -> TrainedModel:
    """The model, config and trained fracture head of a ``best.pt`` written by :class:`Trainer`
    (never unpickled); with ``joint``, the network of one written by ``fracsight detector joint``
    (its detector and orientation step are the caller's to add).

    Raises :class:`~fracsight.errors.ConfigError` when ``path`` is not such a checkpoint.
    """
    from fracsight.training.config import load_config

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}: train first (fracsight train)")
    state = read_checkpoint(path)
    if "detector" in state and not joint:  # its detector and orientation step dropped without a word
        run = shell_command("fracsight", "detector", "bundle", path.parent, "OUT", "--data", "DATA")
        raise TrainConfigError(f"{path} is from a `fracsight detector joint` run: `{run}` makes its bundle")
    cfg_dict = json.loads(state["config"])
    augment = cfg_dict.pop("augment")
    cfg = load_config(None, None, saved=True, **cfg_dict, augment=augment)
    fracture = tuple(state["fracture"]) if "fracture" in state else None
    model = _model_from_checkpoint(state).eval()
    return TrainedModel(
        model, cfg, fracture, state.get("images_sha256"), state.get("epoch"), state.get(CONTENT_KEY)
    )


def load_checkpoint(path: Path) -> tuple[FractureNet, TrainConfig]:
    """The model and config of a ``best.pt`` written by :class:`Trainer` (:func:`load_trained`)."""
    model, cfg = load_trained(path)[:2]
    return model, cfg


def _model_from_checkpoint(state: dict[str, Any]) -> FractureNet:
    """The network a checkpoint of :meth:`Trainer._checkpoint` holds, with its weights."""
    heads = HeadConfig(regions=tuple(state["regions"]), classes=tuple(state["classes"]))
    model = create_model(state["arch"], heads, pretrained=False)
    model.load_state_dict(state["model"])
    return model
