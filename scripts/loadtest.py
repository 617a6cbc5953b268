#!/usr/bin/env python
"""Load test for the fracsight REST API: concurrent single-image uploads to POST /v1/predict.

    fracsight serve --model PATH --port 8000 &          # in another terminal
    python scripts/loadtest.py --url http://127.0.0.1:8000 --duration 60 --concurrency 4 --image wrist.jpg

Loopback only: the URL must point at 127.0.0.1, ::1 or localhost. The run is
bounded by --duration and --max-requests, whichever comes first. Reports
requests/s, latency percentiles, errors, and the server's resident memory
before, during (every --sample-every seconds, and the peak) and after (from
/proc with --pid, which also counts worker processes, otherwise from the
server's own /metrics). Exit code 1 with --check when the
targets (--target-rps, --target-p99, zero errors) are missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from _loopback import require_loopback
from _proc import proc_status_mb


@dataclass
class Report:
    url: str
    image: str
    concurrency: int
    duration_s: float = 0.0
    requests: int = 0
    ok: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    requests_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None
    rss_peak_mb: float | None = None  # the largest of the samples taken during the run
    rss_samples_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds in, MB)
    model: str | None = None


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in [0, 100])."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def rss_from_proc(pid: int) -> float | None:
    """Resident memory (MB) of a process and all its descendants, from /proc."""
    total_mb = 0.0
    todo, seen = [pid], set()
    while todo and len(seen) < 256:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        status = proc_status_mb(p)
        if not status:
            continue
        total_mb += status.get("VmRSS", 0.0)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return total_mb if seen else None


async def rss_from_metrics(client: httpx.AsyncClient, url: str) -> float | None:
    try:
        text = (await client.get(f"{url}/metrics", timeout=10)).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1]) / (1024 * 1024)
    return None


async def run(args: argparse.Namespace) -> Report:
    url = args.url.rstrip("/")
    data = args.image.read_bytes()
    report = Report(url=url, image=args.image.name, concurrency=args.concurrency)
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    # the memory samples' GET /metrics on a client of their own: in the workers' pool it waited
    # behind them until the deadline (no sample mid-run) and stretched the run, so requests/s came
    # out a quarter low
    async with (
        httpx.AsyncClient(limits=limits, timeout=args.timeout, trust_env=False) as client,
        httpx.AsyncClient(timeout=args.timeout, trust_env=False) as sampler,
    ):
        health = await client.get(f"{url}/healthz")
        health.raise_for_status()
        report.model = "{name} v{version}".format(**health.json()["model"])

        async def post() -> httpx.Response:
            files = {"files": (args.image.name, data, "application/octet-stream")}
            return await client.post(f"{url}/v1/predict", files=files)

        for _ in range(args.warmup):
            await post()

        async def server_rss() -> float | None:
            return rss_from_proc(args.pid) if args.pid else await rss_from_metrics(sampler, url)

        report.rss_before_mb = await server_rss()

        latencies: list[float] = []
        kinds: Counter[str] = Counter()
        issued = 0
        start = time.perf_counter()
        deadline = start + args.duration

        async def worker() -> None:
            nonlocal issued
            while time.perf_counter() < deadline and issued < args.max_requests:
                issued += 1
                t0 = time.perf_counter()
                try:
                    response = await post()
                    kind = None if response.status_code == 200 else f"http_{response.status_code}"
                except httpx.HTTPError as e:
                    kind = type(e).__name__
                latencies.append(time.perf_counter() - t0)
                if kind is not None:
                    kinds[kind] += 1

        async def sample_memory() -> None:
            """Server memory every --sample-every seconds: a leak shows as a rising series."""
            while True:  # until the workers are done (cancelled then)
                mb = await server_rss()
                if mb is not None:
                    report.rss_samples_mb.append((round(time.perf_counter() - start, 1), round(mb, 1)))
                await asyncio.sleep(args.sample_every)

        sampling = asyncio.create_task(sample_memory())
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - start  # the requests' time, not the sampler's last sleep
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        report.rss_after_mb = await server_rss()

    measured = [mb for _, mb in report.rss_samples_mb] + [
        mb for mb in (report.rss_before_mb, report.rss_after_mb) if mb is not None
    ]
    report.rss_peak_mb = max(measured) if measured else None
    ordered = sorted(latencies)
    report.duration_s = round(elapsed, 2)
    report.requests = len(latencies)
    report.errors = sum(kinds.values())
    report.ok = report.requests - report.errors
    report.error_kinds = dict(kinds)
    report.requests_per_s = round(report.ok / elapsed, 2) if elapsed > 0 else 0.0
    report.latency_ms = {f"p{q}": round(percentile(ordered, q) * 1000, 1) for q in (50, 90, 99)} | {
        "max": round(ordered[-1] * 1000, 1) if ordered else math.nan
    }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="Server base URL (loopback only).")
    parser.add_argument("--image", type=Path, required=True, help="Image uploaded with every request.")
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of measured load.")
    parser.add_argument("--concurrency", type=int, default=4, help="Requests in flight at once.")
    parser.add_argument("--max-requests", type=int, default=100_000, help="Stop after this many requests.")
    parser.add_argument("--warmup", type=int, default=5, help="Unmeasured requests sent first.")
    parser.add_argument("--timeout", type=float, default=30.0, help="Per-request timeout in seconds.")
    parser.add_argument("--pid", type=int, help="Server process id, for RSS from /proc (adds its workers).")
    parser.add_argument("--sample-every", type=float, default=5.0, help="Seconds between memory samples.")
    parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
    parser.add_argument("--check", action="store_true", help="Exit 1 when a target below is missed.")
    parser.add_argument("--target-rps", type=float, default=20.0)
    parser.add_argument("--target-p99", type=float, default=1.0, help="Seconds.")
    args = parser.parse_args(argv)
    require_loopback(args.url, "load-test")
    if not 1 <= args.concurrency <= 256 or not 0 < args.duration <= 3600 or args.max_requests < 1:
        parser.error("need 1 <= concurrency <= 256, 0 < duration <= 3600 and max-requests >= 1")
    if not args.sample_every > 0:
        parser.error("--sample-every must be positive")
    if not args.image.is_file():
        parser.error(f"no such image: {args.image}")

    report = asyncio.run(run(args))
    passed = (
        report.errors == 0
        and report.requests_per_s >= args.target_rps
        and report.latency_ms["p99"] <= args.target_p99 * 1000
    )
    if args.json:
        print(json.dumps(asdict(report) | {"targets_met": passed}, indent=2))
    else:
        lat = report.latency_ms
        rss = (
            f"{report.rss_before_mb or float('nan'):.0f} -> {report.rss_after_mb or float('nan'):.0f} MB, "
            f"peak {report.rss_peak_mb or float('nan'):.0f} MB over {len(report.rss_samples_mb)} samples"
        )
        print(f"model {report.model}; image {report.image}; concurrency {report.concurrency}")
        print(
            f"{report.requests} requests in {report.duration_s:.1f} s: {report.requests_per_s:.1f} req/s ok"
        )
        percentiles = ", ".join(f"{k} {v:.0f} ms" for k, v in lat.items())
        print(f"latency {percentiles}")
        print(f"errors {report.errors} {report.error_kinds or ''}".rstrip())
        print(f"server RSS {rss}")
        print(
            f"targets (>= {args.target_rps:g} req/s, p99 <= {args.target_p99:g} s, 0 errors): "
            f"{'met' if passed else 'MISSED'}"
        )
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
