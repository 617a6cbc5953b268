"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

Counters live in one process: with ``--workers N`` each worker counts its own
requests and a scrape sees whichever worker answered it.
"""

from __future__ import annotations

import math
import os
import threading
from collections import defaultdict
from pathlib import Path

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Metrics", "resident_memory_bytes"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PREFIX = "fracsight_"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


def resident_memory_bytes() -> int | None:
    """This process's resident set size from /proc (Linux); None elsewhere."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.n += 1


class Metrics:
    """Thread-safe counters for requests, latency, error codes and images; ``render()`` for /metrics."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._lock = threading.Lock()
        self._buckets = buckets
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = {}
        self._errors: dict[tuple[str, str], int] = defaultdict(int)
        self._images: dict[str, int] = defaultdict(int)
        self._in_progress = 0
        self._model: tuple[str, str] | None = None

    # ---- recording ----------------------------------------------------------------------------------
    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(route, method, str(status))] += 1
            hist = self._latency.setdefault(route, _Histogram(self._buckets))
            hist.observe(seconds)

    def count_error(self, code: str, scope: str = "request") -> None:
        """An error answered to a client: a whole request (``request``) or one file in it (``file``)."""
        with self._lock:
            self._errors[(code, scope)] += 1

    def count_images(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self._images[outcome] += n

    def inference_started(self) -> None:
        with self._lock:
            self._in_progress += 1

    def inference_finished(self) -> None:
        with self._lock:
            self._in_progress -= 1

    def set_model(self, name: str, version: str) -> None:
        with self._lock:
            self._model = (name, version)

    # ---- reading ------------------------------------------------------------------------------------
    def request_count(self, route: str, method: str | None = None, status: int | None = None) -> int:
        with self._lock:
            return sum(
                n
                for (r, m, s), n in self._requests.items()
                if r == route and method in (None, m) and (status is None or s == str(status))
            )

    def error_count(self, code: str) -> int:
        with self._lock:
            return sum(n for (c, _), n in self._errors.items() if c == code)

    def render(self) -> str:
        """All metrics in the Prometheus text format."""
        lines: list[str] = []

        def header(name: str, kind: str, help_text: str) -> str:
            full = PREFIX + name
            lines.append(f"# HELP {full} {help_text}")
            lines.append(f"# TYPE {full} {kind}")
            return full

        with self._lock:
            name = header(
                "http_requests_total", "counter", "HTTP requests answered, by route template, method, status."
            )
            for (route, method, status), n in sorted(self._requests.items()):
                lines.append(f"{name}{_labels(route=route, method=method, status=status)} {n}")

            name = header(
                "http_request_duration_seconds", "histogram", "Time to answer a request, by route template."
            )
            for route, hist in sorted(self._latency.items()):
                for bound, count in zip(hist.buckets, hist.counts, strict=True):
                    lines.append(f"{name}_bucket{_labels(route=route, le=_number(bound))} {count}")
                lines.append(f"{name}_bucket{_labels(route=route, le='+Inf')} {hist.n}")
                lines.append(f"{name}_sum{_labels(route=route)} {_number(hist.total)}")
                lines.append(f"{name}_count{_labels(route=route)} {hist.n}")

            name = header(
                "errors_total",
                "counter",
                "Errors answered, by stable code and scope (request: a whole request; file: one file).",
            )
            for (code, scope), n in sorted(self._errors.items()):
                lines.append(f"{name}{_labels(code=code, scope=scope)} {n}")

            name = header("images_total", "counter", "Uploaded images, by outcome (predicted or failed).")
            for outcome, n in sorted(self._images.items()):
                lines.append(f"{name}{_labels(outcome=outcome)} {n}")

            name = header("inferences_in_progress", "gauge", "Requests decoding or inferring right now.")
            lines.append(f"{name} {self._in_progress}")

            if self._model is not None:
                name = header("model_info", "gauge", "The model bundle this process serves.")
                lines.append(f"{name}{_labels(name=self._model[0], version=self._model[1])} 1")

        rss = resident_memory_bytes()
        if rss is not None:
            lines.append("# HELP process_resident_memory_bytes Resident memory size in bytes.")
            lines.append("# TYPE process_resident_memory_bytes gauge")
            lines.append(f"process_resident_memory_bytes {rss}")
        return "\n".join(lines) + "\n"
