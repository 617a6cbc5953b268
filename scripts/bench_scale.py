"""Ray batch against `fracsight predict` on the same FracAtlas images (docs/scale.md).

    python scripts/bench_scale.py --images 500 [--rounds 1] [--fracatlas ../shared/data/fracatlas]

Each round runs, in fresh processes and one after the other, `fracsight predict --csv` and
`fracsight batch run` (a local Ray started for the job, one actor per core) on the same files, and
prints wall-clock images/s for both (start-up included) and Ray's rate once its actors were warm.
Both CSVs are then compared: the same rows, or the script fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from fracsight.cli import main; main()"]


def images(fracatlas: Path, n: int) -> list[Path]:
    """The first n FracAtlas images by name, fractured and not (the same set on every machine)."""
    found = sorted((fracatlas / "images").rglob("*.jpg"), key=lambda p: p.name)
    if len(found) < n:
        raise SystemExit(f"only {len(found)} images under {fracatlas}/images")
    return found[:n]


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: some file had an error code, which is a result
        raise SystemExit(f"{' '.join(command[3:])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def rows(path: Path, drop: str | None = None) -> list[tuple[str, ...]]:
    with path.open(newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    return sorted(tuple(v for k, v in r.items() if k != drop) for r in table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--fracatlas", type=Path, default=ROOT.parent / "shared" / "data" / "fracatlas")
    args = parser.parse_args()
    files = images(args.fracatlas, args.images)
    print(f"{len(files)} FracAtlas images, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="fracsight-bench-scale-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for f in files:
            (folder / f.name).symlink_to(f)
        for r in range(args.rounds):
            plain_csv = Path(tmp) / f"plain-{r}.csv"
            plain = timed([*CLI, "predict", str(folder), "--csv", str(plain_csv)])
            out = Path(tmp) / f"ray-{r}"
            ray = timed([*CLI, "batch", "run", str(folder), "--out", str(out)])
            job = json.loads((out / "job.json").read_text())
            if rows(plain_csv) != rows(out / "results.csv", drop="path"):
                raise SystemExit("the Ray rows differ from fracsight predict's")
            steady = job["last_run"]["steady_images_per_s"]
            n = len(files)
            print(
                f"round {r + 1}: fracsight predict {plain:.1f} s = {n / plain:.1f} images/s; "
                f"fracsight batch run (Ray, {job['last_run']['actors']} actors) {ray:.1f} s = "
                f"{n / ray:.1f} images/s ({n / ray / (n / plain):.2f}x), "
                f"{steady:.1f} images/s once warm ({steady / (n / plain):.2f}x); same rows: yes"
            )
    print(f"load {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
