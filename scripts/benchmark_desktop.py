"""Measure the desktop app: launch to the first result on screen, and the event loop over a folder.

    python scripts/benchmark_desktop.py                      # starts its own Xvfb
    python scripts/benchmark_desktop.py --display :0 --runs 10

Each run is a fresh ``fracsight desktop`` process (the real command, the real window) with the
hidden ``--timing-log`` and ``--quit-when-done`` options: the window appends wall-clock events
(``first_result``: the first row is in the list and drawn, ``first_view``: its image is on the
canvas) and closes once everything is predicted. Launch-to-first-result is ``first_result`` minus
the time just before the process was started. The folder run opens ``--folder-size`` FracAtlas
images (symlinks in a temporary folder) and reports the event-loop latency the window's own probe
measured while they were predicted: an ``after`` callback due every 20 ms, and how late it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRACATLAS = ROOT.parent / "shared" / "data" / "fracatlas"
COMMAND = [sys.executable, "-c", "from fracsight.cli import main; main()", "desktop"]


@contextmanager
def virtual_display(display: str | None) -> Iterator[str]:
    """The given display, or a fresh Xvfb on a free number (stopped afterwards)."""
    if display:
        yield display
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise SystemExit("no --display given and Xvfb is not installed (apt-get install -y xvfb)")
    n = next(n for n in range(90, 400) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    proc = subprocess.Popen(
        [xvfb, f":{n}", "-screen", "0", "1280x900x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while not Path(f"/tmp/.X11-unix/X{n}").exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("Xvfb did not start")
            time.sleep(0.05)
        yield f":{n}"
    finally:
        proc.terminate()
        proc.wait(10)


def run_window(display: str, inputs: list[str], log: Path, extra: list[str]) -> tuple[float, dict[str, dict]]:
    """One ``fracsight desktop`` process; returns the start time and its timing events by name."""
    env = dict(os.environ, DISPLAY=display)
    log.unlink(missing_ok=True)
    started = time.time()
    subprocess.run(
        [*COMMAND, *inputs, "--timing-log", str(log), "--quit-when-done", *extra],
        env=env,
        check=True,
        timeout=600,
    )
    return started, {e["event"]: e for e in map(json.loads, log.read_text().splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--display", help="X display to use (default: start an Xvfb)")
    parser.add_argument("--runs", type=int, default=5, help="launches to time (default 5)")
    parser.add_argument("--image", type=Path, default=FRACATLAS / "images" / "Fractured" / "IMG0000019.jpg")
    parser.add_argument("--folder-size", type=int, default=200, help="images in the folder run (0: skip)")
    parser.add_argument("--model", help="bundle (default: the shipped model)")
    parser.add_argument("--threads", type=int, default=0, help="the window's --threads (0: its default)")
    parser.add_argument(
        "--niceness",
        type=int,
        default=10,
        help="how much lower the model's threads run (Linux; 0: as the window)",
    )
    args = parser.parse_args()
    extra = ["--model", args.model] if args.model else []
    extra += ["--threads", str(args.threads), "--niceness", str(args.niceness)]
    report: dict[str, object] = {
        "load_average_before": os.getloadavg(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "niceness": args.niceness,
    }
    with virtual_display(args.display) as display, tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "timing.jsonl"
        first, view = [], []
        for _ in range(args.runs):
            started, events = run_window(display, [str(args.image)], log, extra)
            first.append(events["first_result"]["t"] - started)
            view.append(events["first_view"]["t"] - started)
        report["launch_to_first_result_s"] = _stats(first)
        report["launch_to_first_image_s"] = _stats(view)
        if args.folder_size:
            folder = Path(tmp) / "folder"
            folder.mkdir()
            images = sorted((FRACATLAS / "images").rglob("*.jpg"))[: args.folder_size]
            for i, image in enumerate(images):
                (folder / f"{i:04d}-{image.name}").symlink_to(image)
            _, events = run_window(display, [str(folder)], log, extra)
            done = events["batch_finished"]
            report["folder"] = {
                "images": done["done"],
                "seconds": done["seconds"],
                "event_loop_latency_ms": done["latency"],
            }
    report["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": len(values),
    }


if __name__ == "__main__":
    main()
