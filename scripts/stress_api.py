#!/usr/bin/env python
"""Stress the REST API with garbage and concurrent large uploads; check it still answers good requests.

    python scripts/stress_api.py --model path/to/bundle                   # starts its own loopback server
    python scripts/stress_api.py --model path/to/bundle --requests 1000 --large 8 --large-mb 30 --json
    python scripts/stress_api.py --url http://127.0.0.1:8000 --pid 12345  # a server you started

What it does, bounded by ``--max-seconds`` (default 600) and a 120 s timeout per request:

1. starts ``fracsight serve`` on 127.0.0.1 (a free port) unless ``--url`` is given
   (which must be a loopback address), and waits for ``/healthz``;
2. sends one good PNG and keeps the answer as the reference;
3. sends ``--requests`` mixed bad requests (tests/corpus.py ``garbage_requests``:
   corpus files, mutated images, random and cut multipart bodies, wrong content
   types and fields, huge part headers, too many files, bad query values, wrong
   methods, unknown paths, odd file names) from ``--concurrency`` threads; each
   answer must have an allowed status, a JSON body and (for errors) the expected
   code; every 50th request is a good one, which must match the reference;
4. sends ``--large`` uploads at once: random bytes of ``--large-mb`` MB (415),
   a real noise PNG of about ``--large-mb`` MB (200), one over the upload limit
   (413 ``upload_too_large``) and one whose header claims too many pixels (413
   ``image_too_large``);
5. sends good requests again (must match the reference) and reports the
   server's resident memory (VmRSS) before and after, and its peak (VmHWM),
   from /proc/<pid>/status.

Exit code 1 if any answer was unexpected, a good answer changed, or the server
died. Nothing leaves the machine: loopback only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _loopback import require_loopback  # noqa: E402
from _proc import proc_status_mb  # noqa: E402

from corpus import RawRequest, garbage_requests, good_request, png_claiming, upload_request  # noqa: E402

MB = 1024 * 1024


@dataclass
class Report:
    url: str
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    good_checks: int = 0
    good_mismatches: int = 0
    large: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0
    server_alive: bool = True

    @property
    def ok(self) -> bool:
        return not self.unexpected and not self.good_mismatches and self.server_alive


def proc_memory(pid: int | None) -> dict[str, float | None]:
    """VmRSS and VmHWM (peak) of a process, in MB; None where /proc cannot tell."""
    status = proc_status_mb(pid) if pid is not None else {}
    return {"rss": status.get("VmRSS"), "peak": status.get("VmHWM")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: str | None, port: int, max_upload_mb: float) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from fracsight.cli import main; main()", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--max-upload-mb", str(max_upload_mb), "--log-level", "warning"]
    if model:
        command += ["--model", model]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(client: httpx.Client, server: subprocess.Popen[bytes] | None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            err = server.stderr.read().decode(errors="replace") if server.stderr else ""
            raise SystemExit(f"the server exited with {server.returncode}:\n{err[-2000:]}")
        try:
            if client.get("/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the server did not answer /healthz within {timeout:.0f} s")


def send(client: httpx.Client, req: RawRequest) -> httpx.Response:
    return client.request(req.method, req.path, content=req.body or None, headers=dict(req.headers))


class Checker:
    """Sends requests, checks answers, collects statistics (thread-safe)."""

    def __init__(self, client: httpx.Client, report: Report, reference: dict, deadline: float) -> None:
        self.client, self.report, self.reference, self.deadline = client, report, reference, deadline
        self.skipped = 0
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []

    def check(self, req: RawRequest) -> None:
        if time.monotonic() > self.deadline:  # bounded in time as well as in count
            with self.lock:
                self.skipped += 1
            return
        start = time.perf_counter()
        try:
            r = send(self.client, req)
        except httpx.HTTPError as e:
            self._unexpected(f"{req.kind}: {type(e).__name__}: {e}")
            return
        elapsed = time.perf_counter() - start
        problem = None
        try:
            body = r.json()
        except ValueError:
            body, problem = None, "body is not JSON"
        if problem is None and r.status_code not in req.statuses:
            problem = f"status {r.status_code}, expected one of {req.statuses}: {r.text[:200]}"
        elif problem is None and r.status_code >= 400:
            if set(body) != {"error"}:
                problem = f"error body without the error shape: {r.text[:200]}"
            elif req.code and body["error"]["code"] != req.code:
                problem = f"code {body['error']['code']!r}, expected {req.code!r}"
        if problem is None and req.kind == "good":
            with self.lock:
                self.report.good_checks += 1
                if body["images"][0] != self.reference:
                    self.report.good_mismatches += 1
                    problem = "a good request got a different answer"
        with self.lock:
            self.statuses[str(r.status_code)] += 1
            self.latencies.append(elapsed)
            self.report.requests += 1
        if problem:
            self._unexpected(f"{req.kind}: {problem}")

    def _unexpected(self, message: str) -> None:
        with self.lock:
            self.report.unexpected.append(message)


def noise_png(megabytes: float, seed: int) -> bytes:
    side = int(np.sqrt(megabytes * MB))  # uncompressible noise: about one byte per pixel
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def large_requests(count: int, megabytes: float, limit_mb: float) -> list[RawRequest]:
    rng = np.random.default_rng(1)
    real = noise_png(megabytes, 2)
    reqs = []
    for i in range(max(count - 2, 1)):
        if i % 2:
            reqs.append(upload_request("large-image", [(f"big{i}.png", real)], statuses=(200,)))
        else:
            blob = rng.bytes(int(megabytes * MB))
            reqs.append(upload_request("large-random", [(f"r{i}.png", blob)], statuses=(415,)))
    over = rng.bytes(int((limit_mb + 1) * MB))
    reqs.append(upload_request("over-limit", [("over.png", over)], statuses=(413,), code="upload_too_large"))
    bomb = png_claiming(60_000, 60_000)
    reqs.append(upload_request("pixel-bomb", [("bomb.png", bomb)], statuses=(413,), code="image_too_large"))
    return reqs


def run(args: argparse.Namespace) -> Report:
    server = None
    pid = args.pid
    url = args.url
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(args.model, port, args.max_upload_mb)
        pid = server.pid
    require_loopback(url, "stress")
    report = Report(url)
    started = time.monotonic()
    limits = httpx.Limits(max_connections=args.concurrency + args.large + 4)
    try:
        with httpx.Client(base_url=url, timeout=120, limits=limits) as client:
            wait_ready(client, server)
            first = send(client, good_request())
            if first.status_code != 200:
                raise SystemExit(f"the good request failed: {first.status_code} {first.text[:300]}")
            checker = Checker(client, report, first.json()["images"][0], started + args.max_seconds)
            report.rss_mb["before"] = proc_memory(pid)["rss"]
            max_bytes = int(args.max_upload_mb * MB)
            garbage = garbage_requests(args.requests, seed=args.seed, max_upload_bytes=max_bytes, raw=False)
            plan = [good_request() if i % 50 == 49 else req for i, req in enumerate(garbage)]
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(checker.check, plan))
            report.rss_mb["after_garbage"] = proc_memory(pid)["rss"]
            big = large_requests(args.large, args.large_mb, args.max_upload_mb)
            report.large = [f"{r.kind} ({len(r.body) / MB:.1f} MB)" for r in big]
            with ThreadPoolExecutor(len(big)) as pool:
                list(pool.map(checker.check, big))
            for _ in range(5):
                checker.check(good_request())
            memory = proc_memory(pid)
            report.rss_mb.update(after=memory["rss"], peak=memory["peak"])
            lat = sorted(checker.latencies)
            report.latency_ms = {
                "p50": round(1000 * lat[len(lat) // 2], 1),
                "p95": round(1000 * lat[int(len(lat) * 0.95)], 1),
                "max": round(1000 * lat[-1], 1),
            }
            report.statuses = dict(sorted(checker.statuses.items()))
            report.server_alive = client.get("/healthz").status_code == 200
            if checker.skipped:
                report.unexpected.append(f"--max-seconds reached: {checker.skipped} requests not sent")
    finally:
        report.seconds = round(time.monotonic() - started, 1)
        if server is not None:
            report.server_alive = report.server_alive and server.poll() is None
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", "-m", default=os.environ.get("FRACSIGHT_MODEL"), help="bundle for the server")
    p.add_argument("--url", default=None, help="an already running server (loopback only)")
    p.add_argument("--pid", type=int, default=None, help="its process id, for memory figures")
    p.add_argument("--requests", type=int, default=1000, help="garbage requests (default 1000)")
    p.add_argument("--concurrency", type=int, default=8, help="threads sending them (default 8)")
    p.add_argument("--large", type=int, default=8, help="large uploads sent at once (default 8)")
    p.add_argument("--large-mb", type=float, default=20.0, help="size of each large upload (default 20)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="the server's limit (default 50)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="overall bound (default 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if args.large_mb >= args.max_upload_mb:
        p.error("--large-mb must be below --max-upload-mb")
    report = run(args)
    if args.json:
        print(json.dumps({**report.__dict__, "ok": report.ok}, indent=2))
    else:
        rss = report.rss_mb
        print(f"stress test of {report.url} ({report.seconds} s)")
        print(f"requests: {report.requests}; statuses: {report.statuses}; latency ms: {report.latency_ms}")
        print(f"large uploads at once: {', '.join(report.large)}")
        print(f"good requests re-checked: {report.good_checks}, changed: {report.good_mismatches}")
        print(
            "server RSS MB: "
            + ", ".join(f"{k} {v:.0f}" if v is not None else f"{k} n/a" for k, v in rss.items())
        )
        print(f"unexpected answers: {len(report.unexpected)}")
        for line in report.unexpected[:20]:
            print(f"  {line}")
        print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
