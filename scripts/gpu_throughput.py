"""Batch throughput of the default model's network on a GPU, and what feeds it (issue 17, item 5).

The network of the packaged bundles is rebuilt in torch from its ONNX graph with the grafted
detector and orientation head (``fracsight.detection.joint.load_joint``: v2's network with v4's
heads, the graph v4 and v5 run; tests/test_joint.py checks it computes what the bundle computes),
because the lent GPU machine has no onnxruntime-gpu and no way to install it (its wheel is over
the 64 MiB a call may carry). Three figures, each in images per second:

1. reading: a JPEG decoded and letterboxed as the predictor does, in 1 to N worker processes;
2. the network alone, on batches already on the device, float32 and bfloat16 autocast;
3. end to end: workers read and letterbox, the main process batches, copies to the device and
   runs the network (post-processing, i.e. boxes and heatmaps on the CPU, not included).

    python scripts/gpu_throughput.py --images .gpu/fracatlas/images --device cuda

Reading figures start once every worker has started. Prints one JSON object. On a CPU
(``--device cpu``) it runs the same, smaller.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import get_context
from multiprocessing.pool import Pool
from pathlib import Path

import numpy as np
import torch

from fracsight.detection.joint import load_joint
from fracsight.inference.store import resolve_bundle
from fracsight.preprocessing import letterbox_radiograph, read_for_model

SIZE = 384


def _read(path: str) -> np.ndarray:
    square, _ = letterbox_radiograph(read_for_model(path, SIZE), SIZE)
    return np.round(square * 255).astype(np.uint8)


def _rate(run: Callable[[], int], seconds: float) -> float:
    """Images per second of ``run`` (returns how many it did), repeated for at least ``seconds``."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += run()
    return done / (time.perf_counter() - start)


def _warm(_: int) -> None:
    time.sleep(0.2)  # every worker started (and its imports done) before the clock runs


@contextmanager
def _pool(workers: int) -> Iterator[Pool]:
    with get_context("spawn").Pool(workers) as pool:
        pool.map(_warm, range(workers), chunksize=1)
        yield pool


def _stream(pool: Pool, paths: list[str], n: int) -> Iterator[np.ndarray]:
    yield from pool.imap(_read, (paths[i % len(paths)] for i in range(n)), chunksize=8)


def reading_rates(paths: list[str], workers: list[int], n: int) -> dict[str, float]:
    rates = {}
    for w in workers:
        with _pool(w) as pool:
            start = time.perf_counter()
            count = sum(1 for _ in _stream(pool, paths, n))
            rates[str(w)] = round(count / (time.perf_counter() - start), 1)
    return rates


def network_rates(model: torch.nn.Module, device: str, batches: list[int], seconds: float) -> dict:
    rates: dict[str, dict[str, float]] = {"float32": {}, "bfloat16": {}}
    for precision in rates:
        for b in batches:
            x = torch.rand(b, 1, SIZE, SIZE, device=device)

            def step(x: torch.Tensor = x, precision: str = precision) -> int:
                with (
                    torch.inference_mode(),
                    torch.autocast(device, torch.bfloat16, enabled=precision == "bfloat16"),
                ):
                    model(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                return len(x)

            step()  # warm-up: cuDNN picks its algorithms
            rates[precision][str(b)] = round(_rate(step, seconds), 1)
    return rates


def end_to_end(
    model: torch.nn.Module, device: str, paths: list[str], workers: int, batch: int, n: int
) -> float:
    done, pending = 0, []

    def flush() -> None:
        x = torch.from_numpy(np.stack(pending)).unsqueeze(1).to(device, non_blocking=True).float() / 255
        with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=device == "cuda"):
            out, det, orientation = model(x)
        torch.sigmoid(out["fracture"]).float().cpu()
        [t.float().cpu() for t in (*det, orientation)]

    with _pool(workers) as pool:
        start = time.perf_counter()
        for image in _stream(pool, paths, n):
            pending.append(image)
            if len(pending) == batch:
                flush()
                done, pending = done + batch, []
        if pending:
            flush()
            done += len(pending)
        return round(done / (time.perf_counter() - start), 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, required=True, help="folder of JPEGs (searched recursively)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--workers", default="1,4,8,16", help="reading processes to try")
    parser.add_argument("--seconds", type=float, default=3.0, help="per network figure")
    parser.add_argument("--n", type=int, default=2000, help="images read per reading figure")
    args = parser.parse_args()
    paths = sorted(str(p) for p in args.images.rglob("*.jpg"))
    if not paths:
        parser.error(f"no .jpg files under {args.images}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device (use --device cpu)")
    model, _ = load_joint(resolve_bundle("fracatlas-lite0-384-v2"), resolve_bundle("fracatlas-lite0-384-v4"))
    model = model.eval().to(args.device).to(memory_format=torch.channels_last)
    workers = [int(w) for w in args.workers.split(",")]
    result = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "cpu_cores": os.cpu_count(),
        "images": f"{len(paths)} JPEGs under {args.images}",
        "reading_ips_by_workers": reading_rates(paths, workers, args.n),
        "network_ips_by_batch": network_rates(
            model, args.device, [int(b) for b in args.batches.split(",")], args.seconds
        ),
        "end_to_end_ips": {
            f"{w} workers, batch 64": end_to_end(model, args.device, paths, w, 64, args.n)
            for w in workers[-1:]
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
