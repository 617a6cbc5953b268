"""Timing in fresh processes: each pipeline as a user runs it, in rounds that alternate between
the pipelines, and its peak memory and time per stage. A child process runs one function of this
module (:func:`_child`) with its arguments as JSON on stdin, and prints its result as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fracsight.benchmark.baselines import resnet_recipe, torch_twin
from fracsight.benchmark.contenders import Contender, predictor_contender, throughput, throughput_pass
from fracsight.benchmark.machine import minor_faults, own_peak_rss_mb
from fracsight.benchmark.report import STAGES, Row, count
from fracsight.errors import FracsightError
from fracsight.inference import Predictor

ROUNDS = 5  # latency is taken in this many alternating rounds per pipeline
CHILD_TIMEOUT_S = 900.0  # the longest one timing process may run

Progress = Callable[[str], None]

CONTENDERS = ("bundle", "torch-twin", "resnet50")


def contender(kind: str, model: str | None, batch: int) -> Contender:
    if kind == "resnet50":
        return resnet_recipe(batch)
    if kind.startswith("bundle:"):
        kind, model = "bundle", kind.split(":", 1)[1]
    predictor = Predictor(model)
    if kind == "torch-twin":
        grafted = bool(predictor.spec.localization.get("boxes") or predictor.spec.orientation)
        note = (
            "float32, random weights, same pipeline without the grafted detector and orientation step"
            if grafted
            else "float32, random weights, same pipeline; only the engine differs"
        )
        return predictor_contender(torch_twin(predictor, "cpu"), "same model", "torch eager", batch, note)
    device = "CUDA" if predictor.onnx.session.get_providers()[0] == "CUDAExecutionProvider" else "CPU"
    engine = f"onnxruntime {device}" + (
        f" {predictor.spec.precision.upper()}" if predictor.spec.precision != "float32" else ""
    )
    return predictor_contender(predictor, predictor.name, engine, batch, "shipped path")


def _timing_child() -> None:
    """Run in a fresh process: time one pipeline's single-image calls, then its batch throughput."""
    args = json.loads(sys.stdin.read())
    c = contender(args["kind"], args["model"], args["batch"])
    images, start, runs = [Path(p) for p in args["images"]], args["start"], args["runs"]
    for i in range(3):  # warm-up: lazy initialisation, caches, thread pools
        c.predict_one(images[(start + i) % len(images)])
    times = []
    for i in range(start, start + runs):
        t0 = time.perf_counter()
        c.predict_one(images[i % len(images)])
        times.append(time.perf_counter() - t0)
    ips = throughput(c.predict_all, images, args["batch"])
    row = {"name": c.name, "engine": c.engine, "input_size": c.input_size, "note": c.note}
    print(json.dumps({**row, "times": times, "throughput_ips": ips}))


def _child(entry: str, args: dict[str, Any], timeout: float = CHILD_TIMEOUT_S) -> dict[str, Any]:
    """Call ``fracsight.benchmark.timing.<entry>`` in a fresh interpreter; its last stdout line is JSON.
    A child that runs longer than ``timeout`` seconds is stopped and reported as an error (it was
    a ``TimeoutExpired`` traceback, after all the rows before it: ``--runs 50000``)."""
    try:
        proc = subprocess.run(  # arguments on stdin: a long image list would overflow the command line
            [sys.executable, "-c", f"from fracsight.benchmark.timing import {entry}; {entry}()"],
            input=json.dumps(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        runs = f" ({count(args['runs'], 'run')})" if "runs" in args else ""
        return {"error": f"stopped after {timeout:g} s{runs}: ask for fewer --runs or a smaller --batch"}
    if proc.returncode != 0:
        # a traceback's last line names the exception and its message; the frames above it help no user
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1][-300:] if lines else f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed_rows(
    kinds: Sequence[str], model: str | None, images: Sequence[Path], runs: int, batch: int, say: Progress
) -> list[Row]:
    """One row per pipeline, each timed in fresh processes, in rounds that alternate between them.

    Latency: median and 95th percentile over all rounds' calls; throughput: the
    median of one batch pass per round.

    A fresh process per pipeline is what a user runs, and it keeps one engine's
    thread pool from competing with another's inside one process. Alternating
    rounds spread a shared machine's drift in speed over every row instead of
    penalizing whichever would have run first.
    """
    rounds = max(1, min(ROUNDS, runs))
    blocks = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]  # each >= 1
    times: dict[str, list[float]] = {k: [] for k in kinds}
    round_medians: dict[str, list[float]] = {k: [] for k in kinds}
    # each image's times by round: rounds start at different images, so their medians differ with
    # the images' sizes (20 against 117 ms on an idle machine); the same image's do not
    per_image: dict[str, dict[int, dict[int, list[float]]]] = {k: {} for k in kinds}
    throughputs: dict[str, list[float]] = {k: [] for k in kinds}
    last: dict[str, dict[str, Any]] = {}
    paths = [str(p) for p in images]
    spread = f"{count(rounds, 'alternating round')} of fresh processes"
    say(f"latency over {count(runs, 'run')} in {spread}: {', '.join(kinds)}")
    for r, block in enumerate(blocks):
        for kind in kinds:
            say(f"round {r + 1}/{rounds}: {kind}")
            result = _child(
                "_timing_child",
                {
                    "kind": kind,
                    "model": model,
                    "images": paths,
                    "start": sum(blocks[:r]),
                    "runs": block,
                    "batch": batch,
                },
            )
            if "error" in result:
                raise FracsightError(f"benchmark of {kind} failed: {result['error']}")
            times[kind] += result["times"]
            round_medians[kind].append(float(np.median(result["times"])) * 1e3)
            start = sum(blocks[:r])
            for i, t in enumerate(result["times"]):
                per_image[kind].setdefault((start + i) % len(paths), {}).setdefault(r, []).append(t * 1e3)
            throughputs[kind].append(result["throughput_ips"])
            last[kind] = result
    rows = []
    for kind in kinds:
        t, info = np.asarray(times[kind]) * 1e3, last[kind]
        rows.append(
            Row(
                info["name"],
                info["engine"],
                info["input_size"],
                float(np.median(t)),
                float(np.percentile(t, 95)),
                float(np.median(throughputs[kind])),
                note=info["note"],
                round_medians_ms=tuple(round_medians[kind]),
                same_image_rounds_ms=tuple(
                    tuple(float(np.median(ts)) for ts in by_round.values())
                    for by_round in per_image[kind].values()
                    if len(by_round) > 1
                ),
            )
        )
    return rows


def peak_rss_mb(model: str | Path | None, images: Sequence[Path], runs: int, batch: int) -> dict[str, Any]:
    """Peak RSS of a fresh interpreter that only loads the bundle and predicts (single and batch)."""
    args = {
        "model": str(model) if model else None,
        "images": [str(p) for p in images],
        "runs": min(runs, 10),
        "batch": batch,
    }
    return _child("_rss_child", args)


def _rss_child() -> None:
    args = json.loads(sys.stdin.read())
    predictor = Predictor(args["model"])
    for path in args["images"][: args["runs"]]:
        predictor.predict(path)
    for _ in predictor.predict_many(throughput_pass(args["images"], args["batch"]), batch_size=args["batch"]):
        pass
    print(json.dumps({"peak_rss_mb": own_peak_rss_mb(), "torch_loaded": "torch" in sys.modules}))


def stage_times(model: str | Path | None, images: Sequence[Path], runs: int = 50) -> dict[str, Any]:
    """Median milliseconds of each stage of a single-image prediction, timed one stage at a time in a
    fresh process (so the parallel ``statistics`` is counted alone), next to the end-to-end median."""
    return _child(
        "_stages_child",
        {"model": str(model) if model else None, "images": [str(p) for p in images], "runs": runs},
    )


def _stages_child() -> None:
    from fracsight.explain import heatmap_to_original
    from fracsight.inference.ood import pixel_statistics
    from fracsight.inference.predictor import fracture_boxes, localization_map

    args = json.loads(sys.stdin.read())
    predictor = Predictor(args["model"])
    images, runs = [Path(p) for p in args["images"]], args["runs"]
    loc = predictor.spec.localization
    times: dict[str, list[float]] = {k: [] for k in (*STAGES, "end to end")}

    faults: list[int] = []

    def timed(stage: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = fn()
        times[stage].append(time.perf_counter() - t0)
        return value

    for i in range(runs + 3):  # the first three warm up
        path = images[i % len(images)]
        if i == 3:
            times = {k: [] for k in times}
            faults = []
        before = minor_faults()
        timed("end to end", lambda p=path: predictor.predict(p))
        faults.append(minor_faults() - before)
        radiograph = timed("read", lambda p=path: predictor.read(p))
        stats = timed("statistics", lambda r=radiograph: pixel_statistics(r.pixels))
        batch, geometries = timed("letterbox", lambda r=radiograph: predictor.preprocess([r]))
        out = timed("network", lambda b=batch: predictor.onnx.run(b))
        heat_small = localization_map(out["mask"][0], out["cam"][0], loc.get("source", "combined"))
        if predictor.operating_point is not None:  # boxes are drawn for a fracture head only
            timed("boxes", lambda o=out, h=heat_small, g=geometries[0]: fracture_boxes(o, 0, h, g, loc))
        timed("heatmap", lambda h=heat_small, g=geometries[0]: heatmap_to_original(h, g))
        done = predictor._side.submit(lambda s=stats: s)
        whole = timed(
            "rest",
            lambda o=out, r=radiograph, g=geometries[0], d=done: predictor._postprocess(
                o, 0, r, g, "x", d, True
            ),
        )
        del whole
    # a class-only bundle draws no boxes: None (a dash), not the time of boxes it never draws
    medians: dict[str, float | None] = {k: float(np.median(v)) * 1e3 if v else None for k, v in times.items()}
    # "rest" was timed as the whole postprocess: what it adds beyond boxes and the heatmap
    medians["rest"] = max(0.0, medians["rest"] - (medians["boxes"] or 0.0) - medians["heatmap"])
    found = {"name": predictor.name, "precision": predictor.spec.precision, "ms": medians}
    print(json.dumps({**found, "page_faults": float(np.mean(faults)) if faults else None}))
