"""Where the desktop window's event loop waits while a folder is predicted (Linux only).

    python scripts/profile_desktop.py                          # the window as shipped
    python scripts/profile_desktop.py --niceness 0 --list-tick 0   # as before issue 16's changes

The real window (``DesktopApp``) on its own Xvfb, in this process, opens ``--folder-size``
FracAtlas images. For every tick of a 20 ms ``after`` probe it records how late the tick ran and,
for the window's thread over that interval, the time on a core and waiting for one
(``/proc/self/task/<tid>/schedstat``) and what it was blocked in, sampled every millisecond by a
separate process from ``/proc/<pid>/task/<tid>/syscall`` (``x-reply``: poll on the X socket with no
timeout, Tk waiting for the X server; ``futex``: the GIL or the idle wait; ``not-blocked``: on a
core or waiting for one); and for every
Tcl-to-Python callback how long it waited for the GIL (Tcl stamps the time before it calls Python).
It prints the worst ticks with that breakdown and a JSON summary.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tkinter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRACATLAS = ROOT.parent / "shared" / "data" / "fracatlas"
sys.path.insert(0, str(ROOT / "tests"))

SAMPLER = r"""
import os, sys, time
pid, tid, out = sys.argv[1:4]
rows = []
while not os.path.exists(out + ".stop"):
    try:
        call = open(f"/proc/{pid}/task/{tid}/syscall").read().split()
    except OSError:
        break
    what = {"running": "not-blocked", "202": "futex", "7": "poll"}.get(call[0], "syscall-" + call[0])
    if call[0] == "7" and int(call[2], 16) == 1 and int(call[3], 16) >= 2**31:
        what = "x-reply"
    rows.append(f"{time.time():.4f} {what}")
    time.sleep(0.001)
open(out, "w").write("\n".join(rows))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder-size", type=int, default=200)
    parser.add_argument(
        "--niceness", type=int, default=10, help="the model threads' niceness (0: as the window)"
    )
    parser.add_argument(
        "--list-tick", type=float, default=None, help="seconds between list updates (0: each result)"
    )
    parser.add_argument("--worst", type=int, default=10, help="ticks to show")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        raise SystemExit("this profile reads /proc: Linux only")

    import fracsight.desktop.window as window
    from desktop_support import wait_until, xvfb

    if args.list_tick is not None:
        window.LIST_TICK_S = args.list_tick
    gil_waits: list[float] = []
    register, call = tkinter.Misc._register, tkinter.CallWrapper.__call__

    def stamped_register(self, func, subst=None, needcleanup=1):  # type: ignore[no-untyped-def]
        name = register(self, func, subst, needcleanup)
        self.tk.eval(f"proc stamped{name} args {{ set ::stamp [clock microseconds]; {name} {{*}}$args }}")
        return f"stamped{name}"

    def timed_call(self, *a):  # type: ignore[no-untyped-def]
        with contextlib.suppress(AttributeError, tkinter.TclError):  # not through a stamped command
            gil_waits.append(time.time() - int(self.widget.tk.globalgetvar("stamp")) / 1e6)
        return call(self, *a)

    tkinter.Misc._register = stamped_register  # type: ignore[method-assign]
    tkinter.CallWrapper.__call__ = timed_call  # type: ignore[method-assign]

    tid = threading.get_native_id()

    def schedstat() -> tuple[float, float]:
        on_cpu, waiting, _ = Path(f"/proc/self/task/{tid}/schedstat").read_text().split()
        return int(on_cpu) / 1e9, int(waiting) / 1e9

    ticks: list[dict[str, float]] = []
    with xvfb() as display, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "folder"
        folder.mkdir()
        for i, image in enumerate(sorted((FRACATLAS / "images").rglob("*.jpg"))[: args.folder_size]):
            (folder / f"{i:04d}-{image.name}").symlink_to(image)
        root = tkinter.Tk(screenName=display)
        app = window.DesktopApp(root, paths=[folder], niceness=args.niceness)
        wait_until(root, lambda: app.session.predictor is not None, 120, "the model")
        samples = Path(tmp) / "samples"
        sampler = subprocess.Popen([sys.executable, "-c", SAMPLER, str(os.getpid()), str(tid), str(samples)])
        state = {"due": time.perf_counter() + 0.02, "at": time.time(), "sched": schedstat()}

        def tick() -> None:
            now, sched = time.perf_counter(), schedstat()
            ticks.append(
                {
                    "late": now - state["due"],
                    "start": state["at"],
                    "end": time.time(),
                    "on_cpu": sched[0] - state["sched"][0],
                    "runnable": sched[1] - state["sched"][1],
                }
            )
            state.update(due=now + 0.02, at=time.time(), sched=sched)
            state["job"] = root.after(20, tick)

        state["job"] = root.after(20, tick)
        load = [os.getloadavg()[0]]
        started = time.perf_counter()
        wait_until(root, lambda: app.running == 0, 900, "the folder")
        seconds = time.perf_counter() - started
        root.after_cancel(state["job"])
        load.append(os.getloadavg()[0])
        Path(str(samples) + ".stop").touch()
        sampler.wait(30)
        blocked = [
            (float(t), what) for t, what in (line.split() for line in samples.read_text().splitlines())
        ]
        app.close()

    late = sorted(t["late"] for t in ticks)
    print(f"{'late ms':>8} {'on cpu':>7} {'waiting for a core':>19}  sampled states (ms)")
    for t in sorted(ticks, key=lambda t: -t["late"])[: args.worst]:
        states = collections.Counter(w for at, w in blocked if t["start"] <= at <= t["end"])
        print(
            f"{t['late'] * 1000:8.0f} {t['on_cpu'] * 1000:7.1f} {t['runnable'] * 1000:19.1f}  "
            + ", ".join(f"{w} {n}" for w, n in states.most_common(4))
        )
    gil = sorted(gil_waits)
    summary = {
        "load_average": load,
        "niceness": args.niceness,
        "list_tick_s": window.LIST_TICK_S,
        "images": args.folder_size,
        "seconds": round(seconds, 1),
        "ticks": len(late),
        "late_max_ms": round(late[-1] * 1000, 1),
        "late_p99_ms": round(late[int(0.99 * len(late))] * 1000, 1),
        "late_median_ms": round(late[len(late) // 2] * 1000, 1),
        "gil_wait_max_ms": round(gil[-1] * 1000, 1) if gil else None,
        "gil_waits_over_20_ms": sum(g > 0.02 for g in gil),
        "callbacks": len(gil),
        "window_thread_on_cpu_s": round(sum(t["on_cpu"] for t in ticks), 2),
        "window_thread_waiting_for_a_core_s": round(sum(t["runnable"] for t in ticks), 2),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
