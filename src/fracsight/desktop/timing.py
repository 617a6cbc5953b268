"""Measuring the window: an event-loop latency probe and a timing log (JSON lines).

``scripts/benchmark_desktop.py`` reads the log that the hidden ``--timing-log`` option writes; the
tests use the probe directly.
"""

from __future__ import annotations

import json
import time
import tkinter as tk
from pathlib import Path
from typing import Any

__all__ = ["LatencyProbe", "TimingLog"]


class LatencyProbe:
    """Event-loop latency: how much later than due an ``after`` callback runs, every ``interval_ms``."""

    def __init__(self, widget: tk.Misc, interval_ms: int = 20) -> None:
        self.widget = widget
        self.interval = interval_ms / 1000
        self.samples: list[float] = []  # seconds late
        self.times: list[float] = []  # when each sample was taken (perf_counter)
        self._due = 0.0
        self._job: str | None = None

    def start(self) -> None:
        self._due = time.perf_counter() + self.interval
        self._job = self.widget.after(round(self.interval * 1000), self._tick)

    def stop(self) -> None:
        if self._job is not None:
            self.widget.after_cancel(self._job)
            self._job = None

    def _tick(self) -> None:
        now = time.perf_counter()
        self.samples.append(max(0.0, now - self._due))
        self.times.append(now)
        self._due = now + self.interval
        self._job = self.widget.after(round(self.interval * 1000), self._tick)

    def summary(self, since: int = 0) -> dict[str, Any]:
        """Max, 99th percentile and median lateness of the samples from number ``since`` on."""
        if len(self.samples) <= since:
            return {"n": 0}
        ordered = sorted(self.samples[since:])
        worst = sorted(range(since, len(self.samples)), key=self.samples.__getitem__)[-3:]
        return {
            # the three latest callbacks: (seconds after the first sample counted, ms late)
            "worst": [
                (round(self.times[i] - self.times[since], 2), round(self.samples[i] * 1000)) for i in worst
            ],
            "n": len(ordered),
            "max_ms": round(ordered[-1] * 1000, 1),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1),
            "median_ms": round(ordered[len(ordered) // 2] * 1000, 1),
        }


class TimingLog:
    """JSON lines with wall-clock times, for ``scripts/benchmark_desktop.py`` (hidden CLI option)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, event: str, **fields: object) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
