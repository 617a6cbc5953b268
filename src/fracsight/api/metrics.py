"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

Each process counts its own requests. With several worker processes
(``fracsight serve --workers N``), each worker also writes its counters to a
small JSON file in a shared folder after every request it answers, and
``/metrics``, whichever worker answers it, adds up all the files: the counters
cover the whole server. A worker that has exited keeps counting in the totals
(counters never go back), but not in the in-progress gauge.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Metrics", "resident_memory_bytes"]

_State = dict[str, Any]  # one process's counters, as JSON (see Metrics._state)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PREFIX = "fracsight_"
# the method label takes these values only: a client (even one refused for its token) may send any
# token as the method, and each new label value would be a series kept and shared for good
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"})


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


def _well_formed(state: Any) -> bool:
    """A state file as :meth:`Metrics._state` writes it, every value of its type (anything else is
    skipped, never fatal: a shared folder may hold another version's files or a stray one; a count
    of the wrong type made every scrape a 500)."""

    def counts(rows: Any, labels: int) -> bool:
        return isinstance(rows, list) and all(
            isinstance(r, list)
            and len(r) == labels + 1
            and all(isinstance(x, str) for x in r[:labels])
            and _count(r[labels])
            for r in rows
        )

    def histogram(h: Any) -> bool:
        return (
            isinstance(h, dict)
            and isinstance(h.get("buckets"), list)
            and all(_number_like(b) for b in h["buckets"])
            and isinstance(h.get("counts"), list)
            and len(h["counts"]) == len(h["buckets"])
            and all(_count(c) for c in h["counts"])
            and _number_like(h.get("total"))
            and _count(h.get("n"))
        )

    return (
        isinstance(state, dict)
        and _count(state.get("pid"))
        and counts(state.get("requests"), 3)
        and counts(state.get("errors"), 2)
        and isinstance(state.get("images"), dict)
        and all(_count(n) for n in state["images"].values())
        and isinstance(state.get("latency"), dict)
        and all(histogram(h) for h in state["latency"].values())
        and _count(state.get("in_progress"))
        and (state.get("model") is None or isinstance(state["model"], list))
    )


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number_like(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _alive(pid: int) -> bool:
    if os.name == "nt":  # there, os.kill(pid, 0) would send CTRL_C_EVENT, not probe: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


class Metrics:
    """Thread-safe counters for requests, latency, error codes and images; ``render()`` for /metrics.

    ``share_dir``: a folder that the worker processes of one server share; each
    writes its counters there and ``render()`` reports their sum.
    """

    def __init__(
        self,
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
        share_dir: str | Path | None = None,
        process_id: int | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._share_dir = Path(share_dir) if share_dir else None
        self._pid = os.getpid() if process_id is None else process_id
        self._buckets = buckets
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = {}
        self._errors: dict[tuple[str, str], int] = defaultdict(int)
        self._images: dict[str, int] = defaultdict(int)
        self._in_progress = 0
        self._model: tuple[str, str] | None = None

    # ---- recording ----------------------------------------------------------------------------------
    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count an answered request. Called once per request, last: it also shares the counters."""
        method = method if method in METHODS else "other"
        with self._lock:
            self._requests[(route, method, str(status))] += 1
            hist = self._latency.setdefault(route, _Histogram(self._buckets))
            hist.observe(seconds)
        self._publish()

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

    def announce(self) -> None:
        """Share this process's (still empty) counters at start, so that a worker counts among the
        server's running ones before it has answered a request."""
        self._publish()

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

    # ---- sharing between worker processes -----------------------------------------------------------
    def _state(self) -> _State:
        with self._lock:
            return {
                "pid": self._pid,
                "requests": [[*key, n] for key, n in self._requests.items()],
                "latency": {
                    route: {"buckets": list(h.buckets), "counts": list(h.counts), "total": h.total, "n": h.n}
                    for route, h in self._latency.items()
                },
                "errors": [[*key, n] for key, n in self._errors.items()],
                "images": dict(self._images),
                "in_progress": self._in_progress,
                "model": list(self._model) if self._model else None,
            }

    def _publish(self) -> _State:
        """This process's counters, also written to the shared folder when there is one (atomically)."""
        if self._share_dir is None:
            return self._state()
        with self._publish_lock:  # one writer at a time, so a newer state is never replaced by an older
            state = self._state()
            target = self._share_dir / f"{self._pid}.json"
            partial = target.with_suffix(".tmp")
            try:
                partial.write_text(json.dumps(state), encoding="utf-8")
                os.replace(partial, target)
            except OSError:  # a full or vanished folder must not fail the request it counts
                pass
        return state

    def _states(self) -> list[_State]:
        """This process's counters first, then those of the server's other workers, each with ``live``."""
        states = [{**self._publish(), "live": True}]
        if self._share_dir is None:
            return states
        for path in sorted(self._share_dir.glob("*.json")):
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # being replaced right now, or damaged: skip this scrape
                continue
            if _well_formed(state) and state["pid"] != self._pid:
                states.append({**state, "live": _alive(state["pid"])})
        return states

    # ---- the exposition ---------------------------------------------------------------------------
    def render(self) -> str:
        """All metrics in the Prometheus text format (summed over the server's workers when shared)."""
        states = self._states()
        requests: dict[tuple[str, str, str], int] = defaultdict(int)
        errors: dict[tuple[str, str], int] = defaultdict(int)
        images: dict[str, int] = defaultdict(int)
        latency: dict[str, _Histogram] = {}
        for state in states:
            for route, method, status, n in state["requests"]:
                requests[(route, method, status)] += n
            for code, scope, n in state["errors"]:
                errors[(code, scope)] += n
            for outcome, n in state["images"].items():
                images[outcome] += n
            for route, h in state["latency"].items():
                if tuple(h["buckets"]) != self._buckets:
                    continue  # another version's buckets cannot be added up
                total = latency.setdefault(route, _Histogram(self._buckets))
                total.counts = [a + b for a, b in zip(total.counts, h["counts"], strict=True)]
                total.total += h["total"]
                total.n += h["n"]
        in_progress = sum(state["in_progress"] for state in states if state["live"])  # exited: none
        model = states[0]["model"]

        lines: list[str] = []

        def header(name: str, kind: str, help_text: str) -> str:
            full = PREFIX + name
            lines.append(f"# HELP {full} {help_text}")
            lines.append(f"# TYPE {full} {kind}")
            return full

        name = header(
            "http_requests_total", "counter", "HTTP requests answered, by route template, method, status."
        )
        for (route, method, status), n in sorted(requests.items()):
            lines.append(f"{name}{_labels(route=route, method=method, status=status)} {n}")

        name = header(
            "http_request_duration_seconds", "histogram", "Time to answer a request, by route template."
        )
        for route, hist in sorted(latency.items()):
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
        for (code, scope), n in sorted(errors.items()):
            lines.append(f"{name}{_labels(code=code, scope=scope)} {n}")

        name = header("images_total", "counter", "Uploaded images, by outcome (predicted or failed).")
        for outcome, n in sorted(images.items()):
            lines.append(f"{name}{_labels(outcome=outcome)} {n}")

        name = header("inferences_in_progress", "gauge", "Requests decoding or inferring right now.")
        lines.append(f"{name} {in_progress}")

        if self._share_dir is not None:
            name = header("worker_processes", "gauge", "Worker processes of this server that are running.")
            lines.append(f"{name} {sum(state['live'] for state in states)}")

        if model is not None:
            name = header("model_info", "gauge", "The model bundle this process serves.")
            lines.append(f"{name}{_labels(name=model[0], version=model[1])} 1")

        rss = resident_memory_bytes()
        if rss is not None:
            lines.append("# HELP process_resident_memory_bytes Resident memory size in bytes (this process).")
            lines.append("# TYPE process_resident_memory_bytes gauge")
            lines.append(f"process_resident_memory_bytes {rss}")
        return "\n".join(lines) + "\n"
