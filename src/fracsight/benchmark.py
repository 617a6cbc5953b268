"""``fracsight benchmark``: how fast and how light prediction is on this machine, next to common baselines.

Rows of the report:

* the bundle on ONNX Runtime (the shipped path): single-image end-to-end latency
  (read the file, letterbox, infer, heatmap and boxes), batch throughput through
  :meth:`Predictor.predict_many`, and the peak resident memory of a fresh process
  that does nothing but that inference;
* the same for each further bundle asked for (``also``), such as the INT8 version of
  the model (a packaged ``<name>-int8`` next to the packaged model is added by itself);
* the same architecture in eager torch, inside the very same pipeline (only the
  engine differs). Its weights are random: timing does not depend on them;
* the common published recipe: ResNet50 at 224 px in eager torch (resize 256,
  centre crop 224, ImageNet normalization, 3 channels, random weights);
* GPU throughput where a CUDA device is visible.

Each pipeline is timed in fresh processes (as a user runs it, and with no other
engine's thread pool in the same process), in rounds that alternate between the
pipelines, so that a shared machine's drift in speed reaches every row alike.
torch is imported only for the comparison rows, never at import time.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fracsight.errors import ConfigError, FracsightError
from fracsight.inference import Predictor
from fracsight.inference.tabular import collect_inputs, text_cell
from fracsight.io import read_image

__all__ = ["BenchmarkReport", "Row", "find_fracatlas", "render_report", "run_benchmark"]

#: Goals on the 2-core CPU reference machine (see docs/benchmark.md; speed-up and memory from issue 17).
TARGET_LATENCY_MS = 60.0
TARGET_SPEEDUP = 5.0
TARGET_THROUGHPUT = 40.0
TARGET_RSS_MB = 400.0
DEFAULT_IMAGES = 64
RESNET_SIZE = 224
ROUNDS = 5  # latency is taken in this many alternating rounds per pipeline
CHILD_TIMEOUT_S = 900.0  # the longest one timing process may run

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Row:
    name: str
    engine: str
    input_size: int
    latency_median_ms: float | None = None
    latency_p95_ms: float | None = None
    throughput_ips: float | None = None
    peak_rss_mb: float | None = None
    note: str = ""
    round_medians_ms: tuple[float, ...] = ()  # median latency of each round: how much the machine drifted


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measured: str
    met: bool


@dataclass(frozen=True)
class BenchmarkReport:
    model: str
    bundle: str
    images: str
    n_images: int
    runs: int
    batch: int
    throughput_images: int  # images predicted in each throughput pass (throughput_pass)
    machine: dict[str, Any]
    rows: list[Row]
    targets: list[Target] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)  # per bundle: median ms of each stage

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- inputs ----------------------------------------------------------------------------------------


def find_fracatlas() -> Path | None:
    """``../shared/data/fracatlas`` next to the working folder or next to the repository, if present."""
    here = Path(__file__).resolve()
    for root in (Path.cwd().parent, here.parents[3] if len(here.parents) > 3 else here.parent):
        folder = root / "shared" / "data" / "fracatlas"
        if (folder / "dataset.csv").is_file():
            return folder
    return None


def _fracatlas_test_images(folder: Path, limit: int) -> list[Path]:
    import csv

    found: list[Path] = []
    with open(folder / "dataset.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("split") != "test":
                continue
            for sub in ("Fractured", "Non_fractured"):  # a few files sit in the other folder
                path = folder / "images" / sub / row["image_id"]
                if path.is_file():
                    found.append(path)
                    break
            if len(found) == limit:
                break
    return found


def synthetic_images(folder: Path, n: int = DEFAULT_IMAGES, size: tuple[int, int] = (454, 373)) -> list[Path]:
    """``n`` radiograph-like JPEGs (bright 'bones' on a dark, noisy field) of ``size`` (height, width)."""
    rng = np.random.default_rng(0)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    paths = []
    for i in range(n):
        img = 40 + 30 * yy / h + rng.normal(0, 8, (h, w))
        for _ in range(2):
            cx, angle = rng.uniform(0.3 * w, 0.7 * w), rng.uniform(-0.3, 0.3)
            img += 120 * (np.abs(xx - cx - angle * (yy - h / 2)) < rng.uniform(15, 35))
        path = folder / f"synthetic{i:03d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(path, quality=92)
        paths.append(path)
    return paths


def _count(n: int, thing: str) -> str:
    """``1 timed run``, ``2 timed runs`` (it printed "1 timed single-image runs")."""
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _resolve_images(images: Sequence[Path] | None, scratch: Path) -> tuple[list[Path], str]:
    if images:
        missing = [str(p) for p in images if not Path(p).exists()]
        if missing:
            raise ConfigError(f"no such file or folder: {', '.join(missing)}")
        files = collect_inputs([Path(p) for p in images])
        if not files:
            raise ConfigError("no image files found in the given folders")
        readable, unreadable = [], []
        for path in files:
            try:
                read_image(path)
                readable.append(path)
            except FracsightError:
                unreadable.append(path)
        if not readable:
            raise ConfigError(
                f"none of the {len(files)} given images can be read (`fracsight predict` says why for each)"
            )
        described = _count(len(readable), "given image")
        if unreadable:
            names = ", ".join(text_cell(p.name) for p in unreadable[:5]) + (
                ", ..." if len(unreadable) > 5 else ""
            )
            described += f" ({len(unreadable)} unreadable left out: {names})"
        return readable, described
    folder = find_fracatlas()
    if folder is not None:
        files = _fracatlas_test_images(folder, DEFAULT_IMAGES)
        if files:
            return files, f"first {len(files)} FracAtlas test images ({folder})"
    return synthetic_images(scratch), f"{DEFAULT_IMAGES} synthetic 373x454 JPEGs (FracAtlas not found)"


# ---- timing ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Contender:
    """One pipeline to time: a single-image call and a batch call over paths."""

    name: str
    engine: str
    input_size: int
    predict_one: Callable[[Path], object]
    predict_all: Callable[[Sequence[Path]], object]
    note: str


#: The pipelines a timing process can build: the bundle, the same architecture in eager torch, ResNet50.
#: A further bundle is the kind ``bundle:<folder>``.
CONTENDERS = ("bundle", "torch-twin", "resnet50")


def _contender(kind: str, model: str | None, batch: int) -> _Contender:
    if kind == "resnet50":
        return _resnet_recipe(batch)
    if kind.startswith("bundle:"):
        kind, model = "bundle", kind.split(":", 1)[1]
    predictor = Predictor(model)
    if kind == "torch-twin":
        note = "random weights, same pipeline; only the engine differs"
        return _predictor_contender(_torch_twin(predictor, "cpu"), "same model", "torch eager", batch, note)
    engine = "onnxruntime CPU" + (
        f" {predictor.spec.precision.upper()}" if predictor.spec.precision != "float32" else ""
    )
    return _predictor_contender(predictor, predictor.name, engine, batch, "shipped path")


def _timing_child() -> None:
    """Run in a fresh process: time one pipeline's single-image calls, then its batch throughput."""
    args = json.loads(sys.stdin.read())
    c = _contender(args["kind"], args["model"], args["batch"])
    images, start, runs = [Path(p) for p in args["images"]], args["start"], args["runs"]
    for i in range(3):  # warm-up: lazy initialisation, caches, thread pools
        c.predict_one(images[(start + i) % len(images)])
    times = []
    for i in range(start, start + runs):
        t0 = time.perf_counter()
        c.predict_one(images[i % len(images)])
        times.append(time.perf_counter() - t0)
    ips = _throughput(c.predict_all, images, args["batch"])
    row = {"name": c.name, "engine": c.engine, "input_size": c.input_size, "note": c.note}
    print(json.dumps({**row, "times": times, "throughput_ips": ips}))


def _child(entry: str, args: dict[str, Any], timeout: float = CHILD_TIMEOUT_S) -> dict[str, Any]:
    """Call ``fracsight.benchmark.<entry>`` in a fresh interpreter; its last stdout line is JSON.
    A child that runs longer than ``timeout`` seconds is stopped and reported as an error (it was
    a ``TimeoutExpired`` traceback, after all the rows before it: ``--runs 50000``)."""
    try:
        proc = subprocess.run(  # arguments on stdin: a long image list would overflow the command line
            [sys.executable, "-c", f"from fracsight.benchmark import {entry}; {entry}()"],
            input=json.dumps(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        runs = f" ({_count(args['runs'], 'run')})" if "runs" in args else ""
        return {"error": f"stopped after {timeout:g} s{runs}: ask for fewer --runs or a smaller --batch"}
    if proc.returncode != 0:
        # a traceback's last line names the exception and its message; the frames above it help no user
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1][-300:] if lines else f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _timed_rows(
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
    throughputs: dict[str, list[float]] = {k: [] for k in kinds}
    last: dict[str, dict[str, Any]] = {}
    paths = [str(p) for p in images]
    spread = f"{_count(rounds, 'alternating round')} of fresh processes"
    say(f"latency over {_count(runs, 'run')} in {spread}: {', '.join(kinds)}")
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
            )
        )
    return rows


def throughput_pass(images: Sequence[Path], batch: int) -> list[Path]:
    """The images of one throughput pass: every image given, cycled over to make at least two
    batches, but no more than the default set (64) unless two batches need more. A whole data set given
    to ``--images`` was predicted in full in every round of every row: an hour for FracAtlas."""
    n = max(2 * batch, min(len(images), DEFAULT_IMAGES))
    return [images[i % len(images)] for i in range(n)]


def _throughput(predict_all: Callable[[Sequence[Path]], object], images: Sequence[Path], batch: int) -> float:
    """Images per second over one pass (:func:`throughput_pass`), after one warm-up batch."""
    work = throughput_pass(images, batch)
    predict_all(work[:batch])
    start = time.perf_counter()
    predict_all(work)
    return len(work) / (time.perf_counter() - start)


def _predictor_contender(predictor: Predictor, name: str, engine: str, batch: int, note: str) -> _Contender:
    return _Contender(
        name,
        engine,
        predictor.spec.input_size,
        predictor.predict,
        lambda paths: list(predictor.predict_many(paths, batch_size=batch)),
        note,
    )


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
    print(json.dumps({"peak_rss_mb": _own_peak_rss_mb(), "torch_loaded": "torch" in sys.modules}))


def _own_peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB.

    On Linux, VmHWM of this process's own memory map: ``ru_maxrss`` would also count
    the memory of the parent at the moment it forked this process (it survives exec).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


# ---- torch comparison rows (lazy torch) ------------------------------------------------------------


class _TorchEngine:
    """Drop-in for :class:`OnnxModel` inside a Predictor: same inputs, same named outputs."""

    def __init__(self, model: Any, device: str) -> None:
        import torch

        self.torch, self.device = torch, device
        self.model = model.eval().to(device)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with self.torch.inference_mode():
            out = self.model(self.torch.from_numpy(np.ascontiguousarray(batch[:, None])).to(self.device))
        return {k: v.float().cpu().numpy() for k, v in out.items()}


def _torch_twin(predictor: Predictor, device: str) -> Predictor:
    """The predictor with its ONNX engine swapped for the same architecture in eager torch."""
    from fracsight.models import HeadConfig, create_model

    heads = HeadConfig(regions=predictor.regions, classes=predictor.classes)
    twin = copy.copy(predictor)
    twin.onnx = _TorchEngine(create_model(predictor.spec.architecture, heads), device)  # type: ignore[assignment]
    # heads grafted onto an exported graph (fracsight detector train) have no eager twin: the twin
    # times the network they read, with boxes traced on its map and no orientation step
    loc = {k: v for k, v in predictor.spec.localization.items() if k != "boxes"}
    twin.spec = dataclasses.replace(predictor.spec, localization=loc, orientation={})
    return twin


def _recipe_rgb(path: Path) -> Image.Image:
    """An image as the ResNet recipe reads it: decoded by Pillow to RGB. A file Pillow cannot
    open or decode (a DICOM radiograph, a JPEG cut short: 49 in FracAtlas), which the bundle reads,
    is read by fracsight's reader and its grey copied to the three channels: one such file failed
    the whole benchmark after the bundle rows were timed."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError:  # UnidentifiedImageError, "image file is truncated"
        grey = np.round(read_image(path).pixels * 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")


def _resnet_recipe(batch: int) -> _Contender:
    import torch

    try:
        from torchvision.models import resnet50

        model, source = resnet50(weights=None), "torchvision"
    except ImportError:
        import timm

        model, source = timm.create_model("resnet50", pretrained=False), "timm"
    model.eval()
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]

    def prepare(path: Path) -> np.ndarray:
        rgb = _recipe_rgb(path)
        scale = 256 / min(rgb.size)
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.BILINEAR)
        left, top = (rgb.width - RESNET_SIZE) // 2, (rgb.height - RESNET_SIZE) // 2
        rgb = rgb.crop((left, top, left + RESNET_SIZE, top + RESNET_SIZE))
        x = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (x - mean) / std

    def infer(batch_array: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(model(torch.from_numpy(batch_array)), dim=1).numpy()

    def predict_all(paths: Sequence[Path]) -> None:
        with ThreadPoolExecutor(2) as pool:
            for i in range(0, len(paths), batch):
                infer(np.stack(list(pool.map(prepare, paths[i : i + batch]))))

    note = f"{source} resnet50, random weights; resize 256 + crop 224, RGB; no heatmap or boxes"
    return _Contender(
        "ResNet50-224 recipe",
        "torch eager",
        RESNET_SIZE,
        lambda p: infer(prepare(p)[None]),
        predict_all,
        note,
    )


def _gpu_row(predictor: Predictor, images: Sequence[Path], batch: int, allow_torch: bool) -> Row:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        twin = copy.copy(predictor)
        session = ort.InferenceSession(
            str(predictor.bundle_dir / "model.onnx"), providers=["CUDAExecutionProvider"]
        )
        twin.onnx = copy.copy(predictor.onnx)
        twin.onnx.session, twin.onnx.max_batch = session, batch  # GPU memory is not the CPU's concern
        engine = "onnxruntime CUDA"
    elif allow_torch and _torch_cuda():
        twin, engine = _torch_twin(predictor, "cuda"), "torch eager CUDA"
    else:
        note = "no CUDA device" if allow_torch else "no CUDA provider in onnxruntime (torch not checked)"
        return Row("GPU throughput", "-", predictor.spec.input_size, note=note)
    ips = _throughput(lambda paths: list(twin.predict_many(paths, batch_size=batch)), images, batch)
    return Row("GPU throughput", engine, predictor.spec.input_size, throughput_ips=ips, note="same model")


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# ---- the run ---------------------------------------------------------------------------------------


def sibling_bundles(model: str | Path | None) -> list[Path]:
    """The other precision of a packaged model (the default one when ``model`` is None), if packaged:
    ``<name>-int8`` for a float bundle, ``<name>`` for ``<name>-int8``; so the float and INT8 rows
    stand side by side whichever of the two is the default."""
    from fracsight.inference import DEFAULT_MODEL, list_bundles, resolve_bundle

    name = DEFAULT_MODEL if model is None else str(model)
    other = name.removesuffix("-int8") if name.endswith("-int8") else f"{name}-int8"
    if name not in list_bundles() or other not in list_bundles():
        return []
    return [resolve_bundle(other)]


def _once(main: Predictor, others: Sequence[Predictor]) -> list[Predictor]:
    """``others`` without ``main``'s bundle and without repeats: `--also` naming the model (the
    default one, say) or one bundle twice timed it twice, in two rows with the same name."""
    seen, kept = {main.bundle_dir.resolve()}, []
    for other in others:
        if other.bundle_dir.resolve() not in seen:
            seen.add(other.bundle_dir.resolve())
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
    load_before = _load()
    cpu_busy_before = cpu_busy_share()
    predictor = Predictor(model)
    extra = (
        [Predictor(m) for m in also] if also is not None else [Predictor(p) for p in sibling_bundles(model)]
    )
    extra = _once(predictor, extra)
    with tempfile.TemporaryDirectory(prefix="fracsight-bench-") as scratch:
        files, described = _resolve_images(images, Path(scratch))
        kinds = list(CONTENDERS[:1]) + [f"bundle:{p.bundle_dir}" for p in extra]
        skipped: list[Row] = []
        if compare:
            if importlib.util.find_spec("torch") is None:
                note = "skipped: torch is not installed (pip install 'fracsight[train]')"
                skipped.append(Row("torch comparison", "-", 0, note=note))
            else:
                kinds += CONTENDERS[1:]
        bundle_arg = str(predictor.bundle_dir)
        rows = _timed_rows(kinds, bundle_arg, files, runs, batch, say)
        for i, p in enumerate([predictor, *extra]):
            say(f"peak memory in a fresh process: {p.name}")
            rss = peak_rss_mb(p.bundle_dir, files, runs, batch)
            if rss.get("error"):
                note = f"peak RSS not measured: {rss['error']}"
            elif rss.get("torch_loaded"):
                note = "the inference process imported torch: it should not"
            else:
                note = "inference process never loaded torch"
            rows[i] = Row(**{**asdict(rows[i]), "peak_rss_mb": rss.get("peak_rss_mb"), "note": note})
        rows += skipped
        say("GPU")
        rows.append(_gpu_row(predictor, files, batch, allow_torch=compare))
        per_stage = []
        for p in [predictor, *extra] if stages else []:
            say(f"time per stage: {p.name}")
            found = stage_times(p.bundle_dir, files, runs)
            if "error" in found:
                raise FracsightError(f"stage timing of {p.name} failed: {found['error']}")
            per_stage.append(found)
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "torch": _version("torch") if compare else None,
        "load_before": load_before,
        "load_after": _load(),
        "cpu_busy_before": cpu_busy_before,
    }
    machine["busy"] = machine_busy(cpu_busy_before, load_before, os.cpu_count() or 1)
    bundle = str(predictor.bundle_dir)
    targets = _targets(rows, 0, "")
    for i, p in enumerate(extra, start=1):
        targets += _targets(rows, i, f"{p.name}: ")
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


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def cpu_busy_share(seconds: float = 1.0) -> float | None:
    """Share of the machine's CPU time spent busy over the next ``seconds`` (Linux); None elsewhere."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # user .. steal; guest is inside user
        return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, all

    try:
        idle_start, total_start = sample()
        time.sleep(seconds)
        idle_end, total_end = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total_end - total_start
    return round(1.0 - (idle_end - idle_start) / total, 2) if total > 0 else None


def machine_busy(cpu_busy: float | None, load: float | None, cpus: int) -> bool:
    """Whether other work was running as the benchmark started, which distorts every figure.

    The CPU share sampled just before the run says what runs now. The 1-minute load
    average (the fallback where /proc/stat is missing) still counts work that ended up to
    a few minutes ago, such as a benchmark run just before this one.
    """
    if cpu_busy is not None:
        return cpu_busy > 0.25
    return load is not None and load > 0.5 * cpus


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _targets(rows: list[Row], index: int = 0, prefix: str = "") -> list[Target]:
    """The targets for the bundle row ``rows[index]``, each name prefixed by ``prefix``."""
    main = rows[index]
    out = []
    if main.latency_median_ms is not None:
        ms = main.latency_median_ms
        out.append(
            Target(
                prefix + "single-image median",
                f"< {TARGET_LATENCY_MS:.0f} ms",
                f"{ms:.1f} ms",
                ms < TARGET_LATENCY_MS,
            )
        )
    resnet = next((r for r in rows if r.name == "ResNet50-224 recipe"), None)
    if resnet and resnet.latency_median_ms and main.latency_median_ms:
        ratio = resnet.latency_median_ms / main.latency_median_ms
        out.append(
            Target(
                prefix + "faster than ResNet50-224 eager",
                f">= {TARGET_SPEEDUP:.0f}x",
                f"{ratio:.1f}x",
                ratio >= TARGET_SPEEDUP,
            )
        )
    if main.throughput_ips is not None:
        ips = main.throughput_ips
        out.append(
            Target(
                prefix + "batch throughput",
                f">= {TARGET_THROUGHPUT:.0f} images/s",
                f"{ips:.1f} images/s",
                ips >= TARGET_THROUGHPUT,
            )
        )
    if main.peak_rss_mb is not None:
        mb = main.peak_rss_mb
        out.append(
            Target(prefix + "peak RSS", f"< {TARGET_RSS_MB:.0f} MB", f"{mb:.0f} MB", mb < TARGET_RSS_MB)
        )
    return out


# ---- output ----------------------------------------------------------------------------------------


def _speedup(main: Row, row: Row) -> str:
    """How many times faster the default row is: single-image latency / batch throughput."""

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}x"

    latency = (
        row.latency_median_ms / main.latency_median_ms
        if main.latency_median_ms and row.latency_median_ms
        else None
    )
    batch = main.throughput_ips / row.throughput_ips if main.throughput_ips and row.throughput_ips else None
    return "" if latency is None and batch is None else f"{fmt(latency)} / {fmt(batch)}"


def render_report(report: BenchmarkReport) -> list[Any]:
    """Rich renderables: the measurements with ratios, notes, then the targets."""
    from rich.markup import escape
    from rich.table import Table

    def num(value: float | None, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    m = report.machine
    caption = (
        f"{escape(report.images)}; {_count(report.runs, 'timed single-image run')} per row, "
        f"{_count(report.throughput_images, 'image')} per throughput pass in batches of {report.batch}; "
        f"{m['cpus']} CPUs, load average {m['load_before']} -> {m['load_after']}"
    )
    if m.get("cpu_busy_before") is not None:
        caption += f", CPU busy before the run {m['cpu_busy_before']:.0%}"
    if m["busy"]:
        caption += "\n[yellow]other work was running as the run started: every figure is distorted[/yellow]"
    table = Table(title=f"fracsight benchmark: {escape(report.model)}", caption=caption)
    columns = ("", "engine", "input", "median ms", "p95 ms", "images/s", "peak RSS MB", "default faster")
    resnet = next((r for r in report.rows if r.name == "ResNet50-224 recipe"), None)
    if resnet is not None:
        columns += ("faster than ResNet50",)
    for col in columns:
        table.add_column(col, justify="left" if col in ("", "engine") else "right")
    main = report.rows[0]
    notes = []
    for i, row in enumerate(report.rows, start=1):
        table.add_row(
            f"{escape(row.name)} [{i}]",
            row.engine,
            f"{row.input_size} px" if row.input_size else "",
            num(row.latency_median_ms, ".1f"),
            num(row.latency_p95_ms, ".1f"),
            num(row.throughput_ips, ".1f"),
            num(row.peak_rss_mb, ".0f"),
            "(latency / batch)" if row is main else _speedup(main, row),
            *([] if resnet is None else ["" if row is resnet else _speedup(row, resnet)]),
        )
        rounds = ""
        if len(row.round_medians_ms) > 1:
            rounds = f"; median by round {min(row.round_medians_ms):.1f}-{max(row.round_medians_ms):.1f} ms"
        notes.append(f"[{i}] {escape(row.note)}{rounds}")
    targets = Table(title="targets (2-core CPU reference machine)")
    for col in ("target", "goal", "measured", ""):
        targets.add_column(col)
    for t in report.targets:
        targets.add_row(t.name, t.goal, t.measured, "[green]met[/green]" if t.met else "[red]missed[/red]")
    out = [table, "\n".join(notes), targets]
    if report.stages:
        stages = Table(title="where the time goes: median ms per stage of one image, each timed alone")
        stages.add_column("stage")
        for found in report.stages:
            stages.add_column(escape(found["name"]), justify="right")
        for stage in (*STAGES, "end to end"):
            stages.add_row(stage, *[f"{found['ms'][stage]:.1f}" for found in report.stages])
        stages.add_row(
            "page faults (end to end)",
            *["" if f.get("page_faults") is None else f"{f['page_faults']:.0f}" for f in report.stages],
        )
        out.append(stages)
    return out


# ---- where the time goes ---------------------------------------------------------------------------

#: The stages of one ``Predictor.predict`` call, in order (``statistics`` runs beside ``letterbox``).
STAGES = ("read", "statistics", "letterbox", "network", "boxes", "heatmap", "rest")


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
        before = _minor_faults()
        timed("end to end", lambda p=path: predictor.predict(p))
        faults.append(_minor_faults() - before)
        radiograph = timed("read", lambda p=path: predictor.read(p))
        stats = timed("statistics", lambda r=radiograph: pixel_statistics(r.pixels))
        batch, geometries = timed("letterbox", lambda r=radiograph: predictor.preprocess([r]))
        out = timed("network", lambda b=batch: predictor.onnx.run(b))
        heat_small = localization_map(out["mask"][0], out["cam"][0], loc.get("source", "combined"))
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
    medians = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    # "rest" was timed as the whole postprocess: what it adds beyond boxes and the heatmap
    medians["rest"] = max(0.0, medians["rest"] - medians["boxes"] - medians["heatmap"])
    found = {"name": predictor.name, "precision": predictor.spec.precision, "ms": medians}
    print(json.dumps({**found, "page_faults": float(np.mean(faults)) if faults else None}))


def _minor_faults() -> int:
    """Minor page faults of this process so far (0 where the platform does not count them).

    Memory handed back to the kernel after one image and faulted in again for the next costs
    time that no stage owns: about 2.8 microseconds a fault on the reference VM, 3.6 ms an INT8
    image before :mod:`fracsight._malloc` (docs/benchmark.md, "Page faults").
    """
    try:
        import resource
    except ImportError:  # Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
