"""Group-aware, stratified train/val/test splits.

Samples that share a group (``Sample.group``, else ``Sample.study_id``; near-duplicates,
one patient, one study) always land in the same split, and so do exact duplicates (files
with the same bytes, e.g. ``copy_X.png`` beside ``X.png``) with their groups, so no image
leaks from training into evaluation through its twin. Within that constraint the split is
stratified by the label of ``stratify_task`` and deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from fracsight.data._files import exact_duplicates, relative_name
from fracsight.data.sample import CLASS, FRACTURE, Dataset, Sample, SplitLayoutError

__all__ = [
    "DEFAULT_FRACTIONS",
    "SPLIT_NAMES",
    "connected_components",
    "declared_straddling",
    "ensure_splits",
    "group_key",
    "group_split",
    "split_keys",
    "straddling_groups",
    "train_val_samples",
    "training_subset",
]

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def group_key(sample: Sample) -> str:
    """The unit that must not be divided: ``group``, else ``study_id``, else the image itself."""
    return sample.group or sample.study_id or str(sample.path)


def split_keys(samples: Sequence[Sample]) -> list[str]:
    """The group each sample is split with: its :func:`group_key`, except that groups holding
    exact duplicates of one another (same file bytes) are one, under the first of their keys."""
    keys = [group_key(s) for s in samples]
    first: dict[str, int] = {}
    links = [(first.setdefault(key, i), i) for i, key in enumerate(keys)]
    copies = exact_duplicates([s.path for s in samples], images_only=False)
    links += [(same[0], i) for same in copies for i in same[1:]]
    for members in connected_components(len(samples), links):
        merged = min(keys[i] for i in members)
        for i in members:
            keys[i] = merged
    return keys


def connected_components(n: int, links: Iterable[tuple[int, ...]]) -> list[list[int]]:
    """Components (size >= 2) of the graph on ``0..n-1`` whose edges are the first two items of each
    link, by union-find; largest first."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, *_ in links:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        members[find(i)].append(i)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: (-len(m), m[0]))


def group_split(
    samples: Iterable[Sample],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    stratify_task: str | None = FRACTURE,
    names: Sequence[str] = SPLIT_NAMES,
) -> dict[str, list[Sample]]:
    """Split samples into ``names`` by ``fractions``, never dividing a group (see :func:`split_keys`).

    Returns ``{name: [sample with split=name, ...]}`` for every name (lists may be empty),
    samples in their input order. Groups are stratified by their most common label for
    ``stratify_task`` (samples without that label form one stratum); within a stratum the
    largest groups are placed first, each into the split furthest below its target (the
    stratum's, plus what earlier strata left over, so the totals stay on target too), with
    the order of equal-sized groups set by ``seed``.

    >>> parts = group_split(dataset.samples, (0.8, 0.1, 0.1), seed=0)  # doctest: +SKIP
    >>> {k: len(v) for k, v in parts.items()}  # doctest: +SKIP
    {'train': 800, 'val': 100, 'test': 100}
    """
    samples = list(samples)
    chosen = _assign(samples, fractions, seed, stratify_task, names)
    result: dict[str, list[Sample]] = {name: [] for name in names}
    for s, name in zip(samples, chosen, strict=True):
        result[name].append(dataclasses.replace(s, split=name))
    return result


def _assign(
    samples: list[Sample],
    fractions: Sequence[float],
    seed: int,
    stratify_task: str | None,
    names: Sequence[str],
) -> list[str]:
    """The split name for each sample, in order."""
    if len(fractions) != len(names):
        raise ValueError(f"{len(fractions)} fractions for {len(names)} split names {tuple(names)}")
    if not all(math.isfinite(f) and f >= 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be non-negative and not all zero, got {tuple(fractions)}")
    weights = [f / sum(fractions) for f in fractions]

    sample_keys = split_keys(samples)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(sample_keys):
        groups[key].append(i)
    strata: dict[str, list[str]] = defaultdict(list)
    for key, members in groups.items():
        labels = Counter(samples[i].labels.get(stratify_task) for i in members if stratify_task)
        top = min(labels.items(), key=lambda kv: (-kv[1], str(kv[0])))[0] if labels else None
        strata[str(top)].append(key)

    assigned: dict[str, int] = {}
    rng = random.Random(seed)
    carry = [0.0] * len(names)  # rounding left over by earlier strata, so totals stay on target
    for stratum in sorted(strata):
        keys = sorted(strata[stratum])
        rng.shuffle(keys)
        keys.sort(key=lambda k: -len(groups[k]))  # stable: random order among equal sizes
        total = sum(len(groups[k]) for k in keys)
        counts = [0] * len(names)
        for key in keys:
            best = max(range(len(names)), key=lambda j: (2 * (weights[j] * total - counts[j]) + carry[j], -j))
            assigned[key] = best
            counts[best] += len(groups[key])
        carry = [c + weights[j] * total - counts[j] for j, c in enumerate(carry)]

    return [names[assigned[key]] for key in sample_keys]


def straddling_groups(samples: Iterable[Sample]) -> dict[str, set[str]]:
    """Groups (see :func:`group_key`) whose samples sit in more than one split: leakage."""
    seen: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        if s.split is not None:
            seen[group_key(s)].add(s.split)
    return {k: v for k, v in seen.items() if len(v) > 1}


def declared_straddling(samples: Sequence[Sample]) -> dict[str, set[str]]:
    """The data set's own groups (``group`` or ``study_id``: a patient, a study) whose samples sit in
    more than one split; an image alone is no group of its own here."""
    declared = {s.group or s.study_id for s in samples} - {None}
    return {k: v for k, v in straddling_groups(samples).items() if k in declared}


def ensure_splits(dataset: Dataset, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> Dataset:
    """The data set with train/val/test assigned where the data set lacks them.

    No split anywhere: :func:`group_split` of everything. Splits present but one of
    train/val/test missing (e.g. Kaggle sets with only ``train/`` and ``test/``): the
    missing ones are carved out of ``train``, group-aware, in proportion to
    ``fractions``. Complete splits are returned unchanged. A mix of samples with and
    without a split raises :class:`DatasetError`.
    """
    task = FRACTURE if FRACTURE in dataset.class_names else CLASS
    samples = list(dataset.samples)
    present = {s.split for s in samples}
    if present == {None}:
        chosen = _assign(samples, fractions, seed, task, SPLIT_NAMES)
        wanted = [n for n, f in zip(SPLIT_NAMES, fractions, strict=False) if f > 0]
        return _carved(dataset, dict(zip(range(len(samples)), chosen, strict=True)), wanted)
    if None in present:
        unsplit = sorted(relative_name(s.path, dataset.root) for s in samples if s.split is None)
        raise SplitLayoutError(
            f"{dataset.root}: some samples have a split and some do not ({len(unsplit)} without one, "
            f"e.g. {', '.join(unsplit[:3])}); give each a split, or none (fracsight then makes one)"
        )
    missing = [n for n, f in zip(SPLIT_NAMES, fractions, strict=False) if n not in present and f > 0]
    if not missing or "train" not in present:
        return dataset
    wanted = ["train", *missing]
    share = [fractions[SPLIT_NAMES.index(n)] for n in wanted]
    train = [i for i, s in enumerate(samples) if s.split == "train"]
    chosen = _assign([samples[i] for i in train], share, seed, task, wanted)
    return _carved(dataset, dict(zip(train, chosen, strict=True)), wanted)


def _carved(dataset: Dataset, new_split: dict[int, str], wanted: Sequence[str]) -> Dataset:
    """:func:`_with_splits`, warning of each ``wanted`` split that got no sample (too few groups to
    share out: ``evaluate --split test`` then finds none) and of each class (fracture label or type)
    of the samples split that a split made here lacks: a class of 3 images gets none of a 10% val or
    test split, and the model was then neither chosen nor measured on it, without a word."""
    result = _with_splits(dataset, new_split)
    made = [name for name in SPLIT_NAMES if name in new_split.values()]
    empty = [name for name in wanted if name not in made]
    if empty:
        groups = len({group_key(dataset.samples[i]) for i in new_split})
        log.warning(
            "the splits fracsight made have no %s split: %d group(s) of images (patients, studies "
            "or single images) are too few to give it any; give the data set its own %s split",
            " or ".join(empty),
            groups,
            " and ".join(empty),
        )
    lacking, unstratified = [], []
    split_here = [(dataset.samples[i], name) for i, name in new_split.items()]
    sizes = Counter(new_split.values())
    for task in (FRACTURE, CLASS):
        names = dataset.class_names.get(task, ())
        have = Counter(s.labels[task] for s, _ in split_here if task in s.labels)
        found = {(s.labels[task], name) for s, name in split_here if task in s.labels}
        for k in sorted(have):
            without = [n for n in made if (k, n) not in found]
            if without and k < len(names):
                said = f"{names[k]} ({have[k]} images; none in {', '.join(without)})"
                # a type the fracture-stratified split left out though its share of each split is
                # an image or more: "too few images" (for a type of 24) was not why
                share = min(have[k] * sizes[n] / len(split_here) for n in without)
                stratified_by_fracture = task == CLASS and FRACTURE in dataset.class_names
                (unstratified if stratified_by_fracture and share >= 1 else lacking).append(said)
    if lacking:
        log.warning(
            "the splits fracsight made leave out %s: too few images to give each split some, so "
            "they take no part in what is chosen and calibrated on val or measured on test; give "
            "the data set its own splits",
            "; ".join(lacking),
        )
    if unstratified:
        log.warning(
            "the splits fracsight made leave out %s: they are balanced by the fracture label, not by "
            "type, so these take no part in what is chosen and calibrated on val or measured on "
            "test; give the data set its own splits",
            "; ".join(unstratified),
        )
    return result


def _with_splits(dataset: Dataset, new_split: dict[int, str]) -> Dataset:
    samples = tuple(
        dataclasses.replace(s, split=new_split[i]) if i in new_split else s
        for i, s in enumerate(dataset.samples)
    )
    return dataclasses.replace(dataset, samples=samples)


def train_val_samples(dataset: Dataset, seed: int) -> tuple[list[Sample], list[Sample]]:
    """The train and val samples, as training and export see them: the data set's own splits, with
    the missing ones carved out as :func:`ensure_splits` does (with the run's ``seed``), so that a
    data set without a test split still keeps one held out for ``evaluate --split test``."""
    complete = ensure_splits(dataset, seed=seed)
    train, val = list(complete.split("train")), list(complete.split("val"))
    if not train or not val:
        found = sorted({s.split for s in dataset.samples if s.split})
        if not found:  # the splits were to be carved out, and too few images to carve them from
            raise SplitLayoutError(
                f"{dataset.root}: {len(dataset.samples)} image(s), too few to carve a train and a val "
                "split from; give more images, or splits of your own"
            )
        raise SplitLayoutError(
            f"{dataset.root}: no train and val split can be made from its splits {found} "
            "(a val or test split needs a train split to be carved from)"
        )
    return train, val


def training_subset(samples: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """``n`` of ``samples`` (all when ``n`` is 0 or more than there are), drawn with ``seed`` from each
    label (fracture and class) in proportion to its size, in their input order, with at least one of
    each label where ``n`` allows: in proportion alone, a type of 2 training images among 77 got none
    of 10, and the model a class it never saw. The first ``n`` in file order would be one
    class-folder's images only (every "fractured" one, no normal image)."""
    if not n or n >= len(samples):
        return list(samples)
    strata: dict[tuple, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        strata[(s.labels.get(FRACTURE), s.labels.get(CLASS))].append(i)
    rng = random.Random(seed)
    rank = {}
    for members in strata.values():
        rng.shuffle(members)
        # the j-th drawn of k comes at (j + 0.5) / k: taking the lowest n keeps the proportions;
        # the first of each label comes before all others
        rank.update({i: (j > 0, (j + 0.5) / len(members), rng.random()) for j, i in enumerate(members)})
    chosen = sorted(sorted(rank, key=rank.__getitem__)[:n])
    if n < len(strata):
        log.warning(
            "max_samples=%d is fewer than the %d labels (fracture and class combinations) of the training "
            "images: %d label(s) get no training image",
            n,
            len(strata),
            len(strata) - n,
        )
    return [samples[i] for i in chosen]
