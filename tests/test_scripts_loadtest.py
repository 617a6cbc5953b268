"""scripts/loadtest.py against a real loopback server (tiny bundle, a few seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from conftest import free_port  # noqa: E402
from fracsight.api import ApiSettings, create_app  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "loadtest.py"


@pytest.fixture(scope="module")
def server_url(tiny_bundle: Path) -> Iterator[str]:
    port = free_port()
    app = create_app(ApiSettings(model=str(tiny_bundle)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "server did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_load_test_reports_throughput_latency_and_memory_over_time(
    server_url: str, tiny_dataset: Path
) -> None:
    image = next((tiny_dataset / "val" / "fractured").iterdir())
    args = ["--url", server_url, "--image", str(image), "--duration", "3", "--concurrency", "2"]
    args += ["--warmup", "1", "--sample-every", "0.5", "--pid", str(os.getpid()), "--json", "--check"]
    args += ["--target-rps", "0.5", "--target-p99", "30"]
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert report["model"] == "tiny-test v1" and report["errors"] == 0 and report["targets_met"]
    assert report["requests"] == report["ok"] > 0 and report["requests_per_s"] > 0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]
    samples = report["rss_samples_mb"]
    assert len(samples) >= 3 and all(mb > 0 for _, mb in samples)
    assert [t for t, _ in samples] == sorted(t for t, _ in samples)
    assert report["rss_peak_mb"] >= max(mb for _, mb in samples)


def test_load_test_refuses_a_remote_url(tiny_dataset: Path) -> None:
    image = next((tiny_dataset / "val" / "fractured").iterdir())
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--url", "http://example.com", "--image", str(image)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "loopback" in done.stderr.lower()
