"""Compare two source trees of fracsight on single-image prediction, in alternating fresh processes.

    python scripts/ab_predict.py OLD_SRC NEW_SRC [--model NAME] [--rounds 4]

Each round runs ``Predictor.predict`` over the benchmark's images (the first 64 FracAtlas test
images) once in a fresh process per tree (3 warm-up calls), with the tree on ``PYTHONPATH``, and
reports per tree: the median wall time, the minor page faults, the kernel CPU time (``ru_stime``)
and the CPU time of both threads per image, and the peak RSS. Counts and CPU time mean something
on a busy machine; wall times only on an idle one (compare the per-round ratios). Used for the
"Page faults" figures in docs/benchmark.md, with OLD_SRC a copy of ``src/`` holding the earlier
versions of the changed files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

_CHILD = """
import json, resource, sys, time
import numpy as np
import fracsight
from fracsight.benchmark.inputs import fracatlas_test_images, find_fracatlas
from fracsight.inference import Predictor

predictor = Predictor(sys.argv[1] or None)
images = fracatlas_test_images(find_fracatlas(), 64)
for path in images[:3]:
    predictor.predict(path)
wall, faults, cpu, kernel = [], [], [], []
for path in images:
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    predictor.predict(path)
    wall.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    faults.append(r1.ru_minflt - r0.ru_minflt)
    cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    kernel.append(r1.ru_stime - r0.ru_stime)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
print(json.dumps({"src": fracsight.__file__, "ms": float(np.median(wall)) * 1e3,
                  "faults": float(np.mean(faults)), "cpu_ms": float(np.mean(cpu)) * 1e3,
                  "kernel_ms": float(np.mean(kernel)) * 1e3, "peak_rss_mb": int(hwm) / 1024}))
"""
KEYS = ("ms", "faults", "cpu_ms", "kernel_ms", "peak_rss_mb")


def run_once(src: Path, model: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, model],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(src)},
        timeout=900,
    )
    if proc.returncode:
        sys.exit(f"{src}: {proc.stderr.strip()[-1000:]}")
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    if not found.pop("src").startswith(str(src)):
        sys.exit(f"{src} was not the fracsight imported: is it a src/ folder?")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="the src/ folder of the earlier code")
    parser.add_argument("new", type=Path, help="the src/ folder of the code to compare")
    parser.add_argument("--model", default="", help="bundle (default: the default model)")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    found: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for r in range(args.rounds):
        for name in ("old", "new") if r % 2 == 0 else ("new", "old"):  # alternate who goes first
            result = run_once(trees[name], args.model)
            found[name].append(result)
            shown = ", ".join(f"{k} {result[k]:.1f}" for k in KEYS)
            print(f"round {r + 1} {name}: {shown} (load {os.getloadavg()[0]:.2f})", flush=True)
    for name, results in found.items():
        medians = ", ".join(f"{k} {np.median([x[k] for x in results]):.2f}" for k in KEYS)
        print(f"{name}, median of rounds: {medians}")
    ratios = [o["ms"] / n["ms"] for o, n in zip(found["old"], found["new"], strict=True)]
    print(f"old / new wall time per round: {', '.join(f'{x:.2f}' for x in ratios)}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
