"""Data set audit: class balance, unreadable and truncated files, duplicates and leakage.

:func:`audit` reads a data set folder (any layout :func:`load_dataset` knows), hashes
every image (sha256 of the bytes, 64-bit pHash of the pixels) and reports

* counts per split and class, and per body region;
* unreadable files (as train and predict would refuse them: a truncated PNG or TIFF among them),
  and truncated JPEGs (read, there as here, by filling the missing part; train learns from them
  so, and predict marks its result on them not reliable);
* exact duplicates (same bytes) and near-duplicate groups (pHash Hamming distance
  <= ``threshold``, linked transitively);
* near-duplicate pairs that straddle splits (leakage) or carry different labels
  (label noise), declared groups that straddle splits, and near-duplicate pairs the
  data set's own grouping does not tie together.

Problems are findings, not errors: only an unreadable *folder* raises.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fracsight._terminal import visible
from fracsight.data._files import relative_name, starts_as_image
from fracsight.data.detect import load_dataset
from fracsight.data.phash import FileHash, hash_file, iter_near_pairs
from fracsight.data.sample import CLASS, FRACTURE, Dataset
from fracsight.data.splits import connected_components, declared_straddling, split_keys

__all__ = ["MAX_THRESHOLD", "AuditReport", "NearPair", "audit", "render_audit"]

# Beyond this, unrelated radiographs pair by the ten thousand (FracAtlas: 723 pairs at 6, 44,319 at 16,
# 650,419 at 24 of its 5.2 million), and the pairs, not near-duplicates any more, fill the memory.
MAX_THRESHOLD = 16

Progress = Callable[[int, int], None]
_SERIAL_BELOW = 200  # a process pool costs more than it saves on small folders
_NO_SPLIT = "(none)"
#: pairs of each kind named in the report: copies of one placeholder or blank frame pair by the
#: million (2,400 copies: 2.9 million pairs, a 644 MB --json); all are counted
MAX_LISTED_PAIRS = 10_000


@dataclass(frozen=True)
class NearPair:
    """Two images within the Hamming threshold (paths relative to the data set root)."""

    a: str
    b: str
    distance: int
    split_a: str | None
    split_b: str | None
    label_a: str | None
    label_b: str | None


@dataclass
class AuditReport:
    """What :func:`audit` found; ``to_dict()`` is the ``--json`` output."""

    root: str
    layout: str
    images: int
    task: str
    threshold: int
    counts: dict[str, dict[str, int]]  # split -> class name -> images
    regions: dict[str, int]
    unreadable: list[dict[str, str]]  # {"path", "error"}
    truncated: list[str]
    truncated_filled: list[str]  # of ``truncated``, those with a part missing: predict's not reliable
    exact_duplicates: list[list[str]]
    near_duplicate_groups: list[list[str]]
    near_pairs: int
    cross_split_pairs: list[NearPair]  # the first MAX_LISTED_PAIRS of cross_split_pair_count
    cross_split_groups: list[list[str]]
    cross_label_pairs: list[NearPair]  # the first MAX_LISTED_PAIRS of cross_label_pair_count
    ungrouped_pairs: int  # near pairs a re-split could divide: not tied by group / study or same bytes
    declared_groups_straddling: dict[str, list[str]]
    loader_warnings: list[str] = field(default_factory=list)
    # split -> class name -> images of the "class" head (fracture types) beside a fracture head
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    cross_split_pair_count: int = 0
    cross_label_pair_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def audit(
    root: Path,
    threshold: int = 6,
    workers: int | None = None,
    progress: Progress | None = None,
    layout: str = "auto",
) -> AuditReport:
    """Audit the data set in ``root`` (see the module doc). Raises DatasetError for a bad folder.

    ``workers`` processes decode images (default: up to 2); ``progress(done, total)`` is
    called as images are hashed.
    """
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise ValueError(f"threshold must be 0..{MAX_THRESHOLD} bits, got {threshold}")
    start = time.perf_counter()
    with _captured_warnings() as notes:
        dataset = load_dataset(Path(root), layout)
    results = _inspect_all([s.path for s in dataset.samples], workers, progress)
    report = _analyse(dataset, results, threshold)
    unique = dict.fromkeys(notes)  # a folder is walked more than once: each warning once
    report.loader_warnings = [_text(note) for note in unique]
    report.seconds = round(time.perf_counter() - start, 2)
    return report


# -- reading -------------------------------------------------------------------------


def _inspect_all(paths: Sequence[Path], workers: int | None, progress: Progress | None) -> list[FileHash]:
    workers = workers or min(2, os.cpu_count() or 1)
    total = len(paths)
    if progress:
        progress(0, total)
    if workers <= 1 or total < _SERIAL_BELOW:
        results = []
        for n, p in enumerate(paths, start=1):
            results.append(hash_file(p))
            if progress:
                progress(n, total)
        return results
    with ProcessPoolExecutor(max_workers=min(workers, -(-total // 16))) as pool:  # no idle process forked
        results = []
        for n, r in enumerate(pool.map(hash_file, paths, chunksize=16), start=1):
            results.append(r)
            if progress:
                progress(n, total)
        return results


#: the audits collecting the readers' warnings now, across threads: the first to start sets the
#: logger up, the last to end sets it back (two at once left it without its parent for good)
_capturing_lock = threading.Lock()
_capturing: dict[str, Any] = {"count": 0}


class _PassOn(logging.Handler):
    """Hands the readers' records on to the caller's logging as it would have had them."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.parent, self.shown_from = logger.parent, logger.getEffectiveLevel()

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= self.shown_from and self.parent is not None:
            self.parent.handle(record)


@contextmanager
def _captured_warnings() -> Iterator[list[str]]:
    """Collect the warnings the readers log in this thread (e.g. folder/csv label disagreements)
    for the report, whatever level the caller's logging is at: a notebook quieted to ERROR got a
    report without them. What the caller's logging lets through is passed on as before."""
    notes: list[str] = []
    logger = logging.getLogger("fracsight.data")
    me = threading.get_ident()

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == me and record.levelno >= logging.WARNING:
                notes.append(record.getMessage())

    handler = _Collect()
    with _capturing_lock:
        if _capturing["count"] == 0:
            _capturing["saved"] = (logger.level, logger.propagate)
            _capturing["pass_on"] = _PassOn(logger) if logger.propagate else None
            if _capturing["pass_on"] is not None:
                logger.addHandler(_capturing["pass_on"])
            logger.setLevel(min(logger.getEffectiveLevel(), logging.WARNING))
            logger.propagate = False
        _capturing["count"] += 1
        logger.addHandler(handler)
    try:
        yield notes
    finally:
        with _capturing_lock:
            logger.removeHandler(handler)
            _capturing["count"] -= 1
            if _capturing["count"] == 0:
                if _capturing["pass_on"] is not None:
                    logger.removeHandler(_capturing["pass_on"])
                logger.setLevel(_capturing["saved"][0])
                logger.propagate = _capturing["saved"][1]


# -- analysis ------------------------------------------------------------------------


def _text(value: str) -> str:
    """``value`` as UTF-8 text: a file or folder name whose bytes are not UTF-8 (``caf\\xe9.jpg``)
    was a lone surrogate, printed as a replacement character and written to ``--json`` as ``\\udce9``."""
    from fracsight.inference.tabular import text_cell  # lazy: most of the inference package

    return text_cell(value)


def _analyse(dataset: Dataset, results: list[FileHash], threshold: int) -> AuditReport:
    samples = dataset.samples
    task = FRACTURE if FRACTURE in dataset.class_names else CLASS
    rel = [_text(relative_name(s.path, dataset.root)) for s in samples]
    label = _labels(dataset, task)
    counts = _split_counts(dataset, task, label, unlabelled=True)
    types = _labels(dataset, CLASS) if task == FRACTURE and CLASS in dataset.class_names else []
    regions = Counter(_text(r) for s in samples for r in s.regions)

    by_sha: dict[str, list[str]] = defaultdict(list)
    for path, r, sample in zip(rel, results, samples, strict=True):
        # only files that start as images, as the loader's and leakage's warnings count them (which
        # name this list): two empty files, or one error page saved under several names, are not
        # "the same image filed twice" (they are listed as unreadable)
        if r.sha256 and (r.phash is not None or starts_as_image(sample.path)):
            by_sha[r.sha256].append(path)

    hashed = np.array([i for i, r in enumerate(results) if r.phash is not None], dtype=np.intp)
    hashes = np.array([results[i].phash for i in hashed], dtype=np.uint64)
    groups = _near_groups(hashed, hashes, threshold)

    # a fracture-type set: one picture filed under two types is label noise too (it was counted only
    # where the fracture labels differed), shown with both labels
    kind = types or [None] * len(samples)
    shown = [f"{a}, {t}" if t is not None else a for a, t in zip(label, kind, strict=True)]

    def pair(i: int, j: int, d: int) -> NearPair:
        return NearPair(rel[i], rel[j], d, samples[i].split, samples[j].split, shown[i], shown[j])

    split_code, label_code, kind_code = (_codes(v) for v in ([s.split for s in samples], label, kind))
    key_code = _codes(split_keys(samples))  # as a re-split groups them: exact duplicates stay together
    # pairs counted a block at a time: 20,000 copies of one picture are 200 million pairs (7.4 GB)
    n_pairs = n_ungrouped = 0
    counted = {"split": 0, "label": 0}
    named: dict[str, list[NearPair]] = {"split": [], "label": []}
    for bi, bj, bd in iter_near_pairs(hashes, threshold):
        pi, pj = hashed[bi], hashed[bj]
        splits_differ = (split_code[pi] >= 0) & (split_code[pj] >= 0) & (split_code[pi] != split_code[pj])
        kinds_differ = (kind_code[pi] >= 0) & (kind_code[pj] >= 0) & (kind_code[pi] != kind_code[pj])
        labels_differ = (label_code[pi] != label_code[pj]) | kinds_differ
        n_pairs += len(pi)
        n_ungrouped += int((key_code[pi] != key_code[pj]).sum())
        for kind_name, mask in (("split", splits_differ), ("label", labels_differ)):
            counted[kind_name] += int(mask.sum())
            room = MAX_LISTED_PAIRS - len(named[kind_name])
            for k in np.flatnonzero(mask)[:room]:
                named[kind_name].append(pair(int(pi[k]), int(pj[k]), int(bd[k])))
    straddle = {_text(k): sorted(v) for k, v in declared_straddling(samples).items()}
    return AuditReport(
        root=_text(str(dataset.root)),
        layout=dataset.layout,
        images=len(samples),
        task=task,
        threshold=threshold,
        counts=counts,
        regions=dict(sorted(regions.items())),
        unreadable=[
            {"path": p, "error": _text(r.error)} for p, r in zip(rel, results, strict=True) if r.error
        ],
        truncated=[p for p, r in zip(rel, results, strict=True) if r.truncated],
        truncated_filled=[p for p, r in zip(rel, results, strict=True) if r.truncated and r.filled],
        exact_duplicates=sorted(sorted(g) for g in by_sha.values() if len(g) > 1),
        near_duplicate_groups=[sorted(rel[i] for i in g) for g in groups],
        near_pairs=n_pairs,
        cross_split_pairs=named["split"],
        cross_split_pair_count=counted["split"],
        cross_split_groups=[
            sorted(rel[i] for i in g) for g in groups if len({samples[i].split for i in g} - {None}) > 1
        ],
        cross_label_pairs=named["label"],
        cross_label_pair_count=counted["label"],
        ungrouped_pairs=n_ungrouped,
        declared_groups_straddling=straddle,
        class_counts=_split_counts(dataset, CLASS, types, unlabelled=False) if types else {},
    )


def _codes(values: Sequence[Any]) -> np.ndarray:
    """``values`` as integer codes, equal where the values are equal; None is -1."""
    index: dict[Any, int] = {}
    return np.array([-1 if v is None else index.setdefault(v, len(index)) for v in values], dtype=np.intp)


def _near_groups(indices: np.ndarray, hashes: np.ndarray, threshold: int) -> list[list[int]]:
    """The near-duplicate groups (size >= 2, largest first) of the samples at ``indices`` with these
    pHashes: each distinct pHash is one group at once, linked to others within ``threshold``; by
    pair, 2.9 million of them for 2,400 copies of one picture went through union-find one by one."""
    distinct, which = np.unique(hashes, return_inverse=True)
    members: dict[int, list[int]] = defaultdict(list)
    for sample, d in zip(indices.tolist(), which.ravel().tolist(), strict=True):
        members[d].append(sample)
    pairs = (
        pair
        for di, dj, _ in iter_near_pairs(distinct, threshold)
        for pair in zip(di.tolist(), dj.tolist(), strict=True)
    )
    linked = connected_components(len(distinct), pairs)
    seen = {d for component in linked for d in component}
    groups = [sorted(s for d in component for s in members[d]) for component in linked]
    groups += [m for d, m in members.items() if len(m) > 1 and d not in seen]
    return sorted(groups, key=lambda m: (-len(m), m[0]))


def _labels(dataset: Dataset, task: str) -> list[str | None]:
    """Each sample's class name for ``task`` (None where it has no such label)."""
    names = tuple(_text(n) for n in dataset.class_names.get(task, ()))
    return [
        names[s.labels[task]] if task in s.labels and s.labels[task] < len(names) else None
        for s in dataset.samples
    ]


def _split_counts(
    dataset: Dataset, task: str, label: list[str | None], unlabelled: bool
) -> dict[str, dict[str, int]]:
    """split -> class name -> images; samples without a label count as "?" if ``unlabelled``."""
    names = tuple(_text(n) for n in dataset.class_names.get(task, ()))
    counts: dict[str, dict[str, int]] = {}
    for s, lab in zip(dataset.samples, label, strict=True):
        if lab is None and not unlabelled:
            continue
        split = counts.setdefault(s.split or _NO_SPLIT, dict.fromkeys(names, 0))
        split[lab or "?"] = split.get(lab or "?", 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: _split_order(kv[0])))


def _split_order(name: str) -> tuple[int, str]:
    order = {"train": 0, "val": 1, "test": 2, _NO_SPLIT: 4}
    return order.get(name, 3), name


# -- presentation --------------------------------------------------------------------


def render_audit(report: AuditReport, limit: int = 10) -> list[RenderableType]:
    """Rich tables summarising a report for people (the CLI prints them)."""
    out: list[RenderableType] = [
        Text.assemble(
            ("Audit of ", "bold"),
            (visible(report.root), "bold cyan"),
            f"  layout {report.layout}, {report.images} images, {report.seconds:.1f} s",
        ),
        _balance_table(
            report.counts, report.task, f"Images per split and {_task_title(report.task, report.counts)}"
        ),
    ]
    if report.class_counts:
        title = "Images with a class label (fracture type) per split"
        out.append(_balance_table(report.class_counts, CLASS, title))
    if report.regions:
        out.append(Text("Regions: " + ", ".join(f"{visible(k)} {v}" for k, v in report.regions.items())))
    t = report.threshold
    findings = Table(title="Findings", title_justify="left")
    findings.add_column("Check")
    findings.add_column("Count", justify="right")
    findings.add_column("Meaning")
    rows = [
        ("Unreadable files", len(report.unreadable), "cannot be decoded; fix or drop them"),
        (
            "Truncated files",
            len(report.truncated),
            f"JPEGs cut short: {len(report.truncated_filled)} with a part missing, read filled (predict "
            f"marks them not reliable); {len(report.truncated) - len(report.truncated_filled)} lacking only "
            "their end marker, read whole",
        ),
        ("Exact duplicate groups", len(report.exact_duplicates), "identical bytes"),
        (
            f"Near-duplicate groups (pHash <= {t})",
            len(report.near_duplicate_groups),
            f"{sum(map(len, report.near_duplicate_groups))} images, "
            f"{report.near_pairs} pair{'s' * (report.near_pairs != 1)}",
        ),
        (
            "Near-duplicate pairs across splits",
            report.cross_split_pair_count,
            f"leakage; {len(report.cross_split_groups)} group(s) span splits",
        ),
        ("Near-duplicate pairs with different labels", report.cross_label_pair_count, "label noise"),
        (
            "Declared groups straddling splits",
            len(report.declared_groups_straddling),
            "leakage by the data set's own groups",
        ),
        (
            "Near-duplicate pairs not grouped by the data set",
            report.ungrouped_pairs,
            "a re-split could leak these",
        ),
    ]
    for name, count, meaning in rows:
        findings.add_row(name, Text(str(count), style="red" if count else "green"), meaning)
    out.append(findings)
    pairs = (
        ("Near-duplicates across splits", report.cross_split_pairs, report.cross_split_pair_count),
        ("Near-duplicates with different labels", report.cross_label_pairs, report.cross_label_pair_count),
    )
    for title, listed, total in pairs:
        out += _pair_table(title, listed, limit, total)
    out += _listing("Unreadable", [f"{u['path']} ({u['error']})" for u in report.unreadable], limit)
    out += _listing("Truncated", report.truncated, limit)
    out += _listing("Exact duplicates", [" = ".join(g) for g in report.exact_duplicates], limit)
    straddling = report.declared_groups_straddling
    out += _listing(
        "Groups straddling splits", [f"{g} ({', '.join(s)})" for g, s in straddling.items()], limit
    )
    for note in report.loader_warnings[:limit]:
        out.append(Text("Loader warning: " + visible(note), style="yellow"))
    if len(report.loader_warnings) > limit:
        more = len(report.loader_warnings) - limit
        out.append(Text(f"... and {more} more loader warning(s); --json lists all", style="yellow"))
    return out


def _task_title(task: str, counts: dict[str, dict[str, int]]) -> str:
    """The head a balance table counts: "fracture class", "class" (not "class class"), and
    "abnormality class" where the binary label is normal / abnormal (MURA's is not fracture)."""
    if task == CLASS:
        return "class"
    if task == FRACTURE and any("abnormal" in per_class for per_class in counts.values()):
        return "abnormality class"
    return f"{task} class"


def _listing(title: str, items: list[str], limit: int) -> list[RenderableType]:
    """One line naming the first ``limit`` of ``items`` (--json has them all)."""
    if not items:
        return []
    more = f" (first {limit} of {len(items)}; --json lists all)" if len(items) > limit else ""
    return [Text(f"{title}{more}: " + "; ".join(map(visible, items[:limit])))]


#: more classes than this: one row per class (a column each cut every name to "type…" at 8 classes)
_CLASS_COLUMNS = 6


def _balance_table(per_split: dict[str, dict[str, int]], task: str, title: str) -> Table:
    classes = list(dict.fromkeys(c for counts in per_split.values() for c in counts))
    if len(classes) > _CLASS_COLUMNS:
        return _balance_rows(per_split, classes, title)
    binary = task == FRACTURE and len(classes) == 2
    table = Table(title=title, title_justify="left")
    table.add_column("Split")
    for c in classes:  # names of the user's folders: "[b]" was bold, "[/]" a MarkupError traceback
        table.add_column(escape(visible(c)), justify="right")
    table.add_column("Total", justify="right")
    if binary:
        table.add_column(escape(f"% {visible(classes[1])}"), justify="right")
    totals: Counter[str] = Counter()
    for split, counts in [*per_split.items(), ("all", None)]:
        row = counts if counts is not None else totals
        if counts is not None:
            totals.update(counts)
        n = sum(row.values())
        cells = [str(row.get(c, 0)) for c in classes] + [str(n)]
        if binary:
            cells.append(f"{100 * row.get(classes[1], 0) / n:.1f}" if n else "-")
        table.add_row(escape(split), *cells, style="bold" if counts is None else None)
    return table


def _balance_rows(per_split: dict[str, dict[str, int]], classes: list[str], title: str) -> Table:
    """The balance with a row per class and a column per split: readable with hundreds of classes."""
    table = Table(title=title, title_justify="left")
    table.add_column("Class", overflow="fold")
    for split in per_split:
        table.add_column(escape(split), justify="right")
    table.add_column("all", justify="right", style="bold")
    for c in classes:
        counts = [per_split[split].get(c, 0) for split in per_split]
        table.add_row(escape(visible(c)), *map(str, counts), str(sum(counts)))
    totals = [sum(counts.values()) for counts in per_split.values()]
    table.add_row("Total", *map(str, totals), str(sum(totals)), style="bold")
    return table


def _pair_table(title: str, pairs: list[NearPair], limit: int, total: int) -> list[RenderableType]:
    """The first ``limit`` of ``pairs``, titled with ``total``: the pairs named may be fewer
    (:data:`MAX_LISTED_PAIRS`)."""
    if not pairs:
        return []
    table = Table(title=f"{title} (first {min(limit, len(pairs))} of {total})", title_justify="left")
    for col in ("Image A", "Image B"):
        table.add_column(col, overflow="fold")
    with_splits = any(p.split_a is not None or p.split_b is not None for p in pairs)
    if with_splits:  # a data set without splits showed "None / None" on every row
        table.add_column("Splits")
    table.add_column("Labels")
    table.add_column("Bits", justify="right")
    for p in sorted(pairs, key=lambda p: (p.distance, p.a, p.b))[:limit]:
        splits = [f"{p.split_a or '-'} / {p.split_b or '-'}"] if with_splits else []
        cells = [p.a, p.b, *splits, f"{p.label_a} / {p.label_b}"]
        table.add_row(*(escape(visible(c)) for c in cells), str(p.distance))
    return [table]
