"""Ray batch against `fracsight predict` on the same FracAtlas images (docs/scale.md).

    python scripts/bench_scale.py --images 500 [--rounds 1] [--cpu] [--fracatlas ../shared/data/fracatlas]

Each round runs, in fresh processes and one after the other, `fracsight predict --csv` and
`fracsight batch run` (a local Ray started for the job, one actor per core) on the same files, and
prints wall-clock images/s for both (start-up included), Ray's rate once its actors were warm and
where Ray's run went (job.json's last_run.phases: prepare, ray.init, up to the first rows, the
rest, ray.shutdown; "outside" is the process around them: Python, imports, listing, exit). The
load average is printed around each command: on a shared machine the figures mean little
without it. --cpu adds the CPU-seconds of both commands (all their processes) and of every process
of the Ray run by kind (the driver, Ray's own processes, Ray Data's actors, the Predictor actors),
which load changes much less.
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


def timed(command: list[str], cpu: dict[str, float] | None = None) -> float:
    """Wall seconds of ``command``; with ``cpu``, also its processes' CPU-seconds by kind (see below)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, text=True)
        seen: dict[int, tuple[float, str]] = {}
        while process.poll() is None:
            if cpu is not None:
                for pid, (seconds, kind) in _tree_cpu(process.pid).items():
                    # a Ray worker is "ray::IDLE" before and after its actor, and an exiting
                    # process has no command line: keep the name seen before
                    if pid in seen and kind in ("ray::IDLE", ""):
                        kind = seen[pid][1]
                    seen[pid] = (seconds, kind)
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        if process.returncode not in (0, 1):  # 1: some file had an error code, which is a result
            err.seek(0)
            raise SystemExit(f"{' '.join(command[3:])} failed ({process.returncode}):\n{err.read()[-2000:]}")
    if cpu is not None:
        for used, kind in seen.values():
            cpu[kind or "other"] = cpu.get(kind or "other", 0.0) + used
    return seconds


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_RAY_SCRIPTS = (
    "dashboard/agent.py",
    "runtime_env/agent/main.py",
    "log_monitor.py",
    "monitor.py",
    "dashboard.py",
)


def _tree_cpu(root: int) -> dict[int, tuple[float, str]]:
    """CPU-seconds so far of ``root`` and its descendants (Linux /proc), each with a kind: the Ray
    process title (``ray::MapWorker(...)``, ``ray::_StatsActor``, ...), a Ray script, or the name.
    Sampled every 0.2 s, so a process loses at most its last 0.2 s."""
    parents: dict[int, int] = {}
    found: dict[int, tuple[float, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = (
                Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        kind = name
        if not cmdline:
            kind = ""  # exiting
        elif int(entry) == root:
            kind = "driver (fracsight batch run)"
        elif cmdline.startswith("ray::"):
            kind = cmdline.split("(")[0].split()[0] if "MapWorker" not in cmdline else "ray::MapWorker"
        elif name not in ("raylet", "gcs_server"):  # the raylet's arguments name the agents' scripts
            kind = next((script for script in _RAY_SCRIPTS if script in cmdline), kind)
        found[int(entry)] = ((int(fields[11]) + int(fields[12])) / _TICKS, kind)
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, ()))
    return {pid: found[pid] for pid in tree if pid in found}


def rows(path: Path, drop: str | None = None) -> list[tuple[str, ...]]:
    with path.open(newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    return sorted(tuple(v for k, v in r.items() if k != drop) for r in table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--fracatlas", type=Path, default=ROOT.parent / "shared" / "data" / "fracatlas")
    parser.add_argument(
        "--cpu", action="store_true", help="also print the CPU-seconds of Ray's processes by kind (Linux)"
    )
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
            load = [os.getloadavg()[0]]
            plain_cpu: dict[str, float] | None = {} if args.cpu else None
            plain = timed([*CLI, "predict", str(folder), "--csv", str(plain_csv)], plain_cpu)
            load.append(os.getloadavg()[0])
            out = Path(tmp) / f"ray-{r}"
            cpu: dict[str, float] | None = {} if args.cpu else None
            ray = timed([*CLI, "batch", "run", str(folder), "--out", str(out)], cpu)
            load.append(os.getloadavg()[0])
            last_run = json.loads((out / "job.json").read_text())["last_run"]
            if rows(plain_csv) != rows(out / "results.csv", drop="path"):
                raise SystemExit("the Ray rows differ from fracsight predict's")
            steady = last_run["steady_images_per_s"]  # None for a run too short to have a steady part
            n = len(files)
            warm = (
                f"{steady:.1f} images/s once warm ({steady / (n / plain):.2f}x)"
                if steady is not None
                else "too short to measure once warm"
            )
            print(
                f"round {r + 1}: fracsight predict {plain:.1f} s = {n / plain:.1f} images/s; "
                f"fracsight batch run (Ray, {last_run['actors']} actors) {ray:.1f} s = "
                f"{n / ray:.1f} images/s ({n / ray / (n / plain):.2f}x), "
                f"{warm}; same rows: yes; "
                f"load {load[0]:.1f} -> {load[1]:.1f} -> {load[2]:.1f}"
            )
            phases = last_run.get("phases", {})
            inside = sum(phases.values())
            print(
                "  Ray run: "
                + ", ".join(f"{name.removesuffix('_s')} {value:.1f} s" for name, value in phases.items())
                + f", outside run_batch {ray - inside:.1f} s"
            )
            if cpu and plain_cpu:
                print(
                    f"  CPU-seconds: fracsight predict {sum(plain_cpu.values()):.1f} "
                    f"({1000 * sum(plain_cpu.values()) / n:.1f} ms per image), the Ray run "
                    f"{sum(cpu.values()):.1f} ({1000 * sum(cpu.values()) / n:.1f} ms per image)"
                )
                print(
                    f"  CPU-seconds of the Ray run, {sum(cpu.values()):.1f} in all: "
                    + ", ".join(
                        f"{kind} {used:.1f}" for kind, used in sorted(cpu.items(), key=lambda kv: -kv[1])
                    )
                )
    print(f"load {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
