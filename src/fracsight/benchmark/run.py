"""``fracsight benchmark``'s run: which bundles and baselines are timed, on which images, and the report."""

from __future__ import annotations

import importlib.util
import os
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from fracsight.benchmark.baselines import gpu_row
from fracsight.benchmark.contenders import throughput_pass
from fracsight.benchmark.inputs import resolve_images
from fracsight.benchmark.machine import (
    busy_during,
    cpu_busy_share,
    cpu_identity,
    load_average,
    machine_busy,
    package_version,
)
from fracsight.benchmark.report import BenchmarkReport, Row, targets_of
from fracsight.benchmark.timing import CONTENDERS, Progress, peak_rss_mb, stage_times, timed_rows
from fracsight.bundle import bundle_identity
from fracsight.errors import FracsightError
from fracsight.inference import Predictor


def sibling_bundles(model: str | Path | None) -> list[Path]:
    """The other precision of a packaged model (the default one when ``model`` is None), if packaged:
    ``<name>-int8`` for a float bundle, ``<name>`` for ``<name>-int8``; so the float and INT8 rows
    stand side by side whichever of the two is the default. Found from the bundle ``model`` is, not
    from how it was spelled (``default``, its name as results give it, a folder here of a packaged
    name that holds another bundle)."""
    from fracsight.inference import resolve_bundle
    from fracsight.inference.store import packaged_bundles

    packaged = packaged_bundles()
    names = {folder.resolve(): name for name, folder in packaged.items()}
    name = names.get(resolve_bundle(model).resolve())
    if name is None:
        return []
    other = name.removesuffix("-int8") if name.endswith("-int8") else f"{name}-int8"
    return [packaged[other]] if other in packaged else []


def _once(main: Predictor, others: Sequence[Predictor]) -> list[Predictor]:
    """``others`` without ``main``'s bundle and without repeats, by content: `--also` naming the model
    (the default one, say), one bundle twice, or a .zip of it (unpacked anew each time) timed it
    twice, in two rows with the same name."""
    seen, kept = {bundle_identity(main.bundle_dir)}, []
    for other in others:
        if (identity := bundle_identity(other.bundle_dir)) not in seen:
            seen.add(identity)
            kept.append(other)
    return kept


def run_benchmark(
    model: str | Path | None = None,
    images: Sequence[Path] | None = None,
    *,
    runs: int = 50,
    batch: int = 16,
    compare: bool = True,
    progress: Progress | None = None,
    also: Sequence[str | Path] | None = None,
    stages: bool = False,
) -> BenchmarkReport:
    """Measure the bundle (default: the shipped model), each bundle of ``also`` (default: its packaged
    version of the other precision, if any: :func:`sibling_bundles`) and, with ``compare``, the
    eager-torch baselines, in the same alternating rounds."""
    say = progress or (lambda _msg: None)
    load_before = load_average()
    cpu_busy_before = cpu_busy_share()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    predictor = Predictor(model)
    skipped: list[Row] = []
    typed = {id(predictor): str(model or "default")}  # each bundle as given, to tell like names apart
    if also is not None:
        extra = [Predictor(m) for m in also]
        typed.update((id(p), str(m)) for p, m in zip(extra, also, strict=True))
    else:  # added unasked: one that does not load is a note, not the end of the whole benchmark
        extra = []
        for sibling in sibling_bundles(predictor.bundle_dir):
            try:
                extra.append(Predictor(sibling))
                typed[id(extra[-1])] = str(sibling)
            except FracsightError as e:
                note = f"skipped: the packaged bundle of the other precision does not load ({e})"
                skipped.append(Row(sibling.name, "-", 0, note=note))
    extra = _once(predictor, extra)
    with tempfile.TemporaryDirectory(prefix="fracsight-bench-") as scratch:
        files, described = resolve_images(images, Path(scratch))
        kinds = list(CONTENDERS[:1]) + [f"bundle:{p.bundle_dir}" for p in extra]
        if compare:
            if importlib.util.find_spec("torch") is None:
                note = "skipped: torch is not installed (pip install 'fracsight[train]')"
                skipped.append(Row("torch comparison", "-", 0, note=note))
            else:
                kinds += CONTENDERS[1:]
        bundle_arg = str(predictor.bundle_dir)
        rows = timed_rows(kinds, bundle_arg, files, runs, batch, say)
        for i, p in enumerate([predictor, *extra]):
            say(f"peak memory in a fresh process: {p.name}")
            rss = peak_rss_mb(p.bundle_dir, files, runs, batch)
            if rss.get("error"):
                note = f"peak RSS not measured: {rss['error']}"
            elif rss.get("torch_loaded"):
                note = "the inference process imported torch: it should not"
            else:
                note = "inference process never loaded torch"
            # two bundles of one name (every run without a recipe is "fracsight-model v1"): as given too
            name = rows[i].name
            if [q.name for q in [predictor, *extra]].count(p.name) > 1:
                name = f"{p.name} ({typed[id(p)]})"
            rows[i] = Row(
                **{**asdict(rows[i]), "name": name, "peak_rss_mb": rss.get("peak_rss_mb"), "note": note}
            )
        rows += skipped
        say("GPU")
        rows.append(gpu_row(predictor, files, batch, allow_torch=compare))
        per_stage = []
        for i, p in enumerate([predictor, *extra] if stages else []):
            say(f"time per stage: {p.name}")
            found = stage_times(p.bundle_dir, files, runs)
            if "error" in found:
                raise FracsightError(f"stage timing of {p.name} failed: {found['error']}")
            found["name"] = rows[i].name  # as its row is named: like names told apart above
            per_stage.append(found)
    machine = {
        "started": started,
        "fracsight": package_version("fracsight"),
        "bundle_onnx_sha256": predictor.spec.onnx_sha256,
        **cpu_identity(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": package_version("onnxruntime"),
        "torch": package_version("torch") if compare else None,
        "load_before": load_before,
        "load_after": load_average(),
        "cpu_busy_before": cpu_busy_before,
    }
    machine["busy"] = machine_busy(cpu_busy_before, load_before, os.cpu_count() or 1)
    # each image across the rounds that timed it; where none was timed in two rounds (64 images,
    # 10 a round: the default), the rounds' own medians, over like images
    rounds = [times for r in rows for times in r.same_image_rounds_ms] or [r.round_medians_ms for r in rows]
    machine["busy_during"] = busy_during(rounds, machine["load_after"], os.cpu_count() or 1)
    # a .zip as given: its unpacked folder is gone when the command ends
    bundle = str(model) if str(model or "").lower().endswith(".zip") else str(predictor.bundle_dir)
    comparable = not (machine["busy"] or machine["busy_during"])
    targets = targets_of(rows, 0, "", comparable=comparable)
    for i in range(1, len(extra) + 1):
        targets += targets_of(rows, i, f"{rows[i].name}: ", comparable=comparable)
    return BenchmarkReport(
        predictor.name,
        bundle,
        described,
        len(files),
        runs,
        batch,
        len(throughput_pass(files, batch)),
        machine,
        rows,
        targets,
        per_stage,
    )
