"""The REST API under a burst of garbage and concurrent large uploads (the CI-sized scripts/stress_api.py).

Every answer must be JSON with the expected status (never a 5xx), memory must not
run away, and good requests must still get the same answer afterwards.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from PIL import Image

from corpus import RawRequest, garbage_requests, good_request

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from fracsight.api import ApiSettings, create_app  # noqa: E402

MB = 1024 * 1024
SETTINGS = {"max_files": 4, "max_upload_bytes": 2 * MB, "max_pixels": 4_000_000}


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def send(client: TestClient, req: RawRequest) -> httpx.Response:
    return client.request(req.method, req.path, content=req.body or None, headers=dict(req.headers))


@pytest.fixture(scope="module")
def client(tiny_bundle: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ApiSettings(model=str(tiny_bundle), **SETTINGS))) as c:
        yield c


def test_good_requests_survive_200_garbage_requests(client: TestClient) -> None:
    good = good_request()
    first = send(client, good)
    assert first.status_code == 200, first.text
    reference = first.json()["images"][0]
    rss_before = rss_mb()
    statuses: Counter[int] = Counter()
    for i, req in enumerate(garbage_requests(200, seed=6, max_files=4, max_upload_bytes=2 * MB)):
        r = send(client, req)
        statuses[r.status_code] += 1
        assert r.status_code in req.statuses, (i, req.kind, r.status_code, r.text[:300])
        body = r.json()
        if r.status_code >= 400:
            assert set(body) == {"error"}, (req.kind, body)
            if req.code:
                assert body["error"]["code"] == req.code, (req.kind, body)
        if i % 50 == 49:  # good requests keep being answered, identically
            again = send(client, good).json()["images"][0]
            assert again["fracture_probability"] == reference["fracture_probability"]
    rss_after = rss_mb()
    print(
        f"\n200 garbage requests: statuses {dict(sorted(statuses.items()))}; "
        f"RSS {rss_before:.0f} MB -> {rss_after:.0f} MB"
    )
    assert not any(s >= 500 for s in statuses)
    assert rss_after - rss_before < 150, f"RSS grew {rss_after - rss_before:.0f} MB"
    final = send(client, good).json()
    assert final["images"][0] == reference
    assert client.get("/healthz").json()["status"] == "ok"


def _big_png(side: int, seed: int) -> bytes:
    noise = np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_concurrent_large_uploads(tiny_bundle: Path) -> None:
    """Six large uploads at once: two near the size limit, two over it, two over the pixel limit."""
    app = create_app(ApiSettings(model=str(tiny_bundle), max_concurrent_inferences=2, **SETTINGS))
    near_limit = _big_png(1300, 1)  # about 1.7 MB, 1.7 MP
    assert 1 * MB < len(near_limit) < 2 * MB
    over_size = b"\x89PNG\r\n\x1a\n" + b"\x00" * (2 * MB + 10)
    over_pixels = _big_png(2100, 2)[: 2 * MB - 1]  # 4.4 MP claimed by the header: refused before decoding
    uploads = [near_limit, near_limit, over_size, over_size, over_pixels, over_pixels]
    expected = [(200, None), (200, None), (413, "upload_too_large"), (413, "upload_too_large")] + [
        (413, "image_too_large")
    ] * 2
    results: dict[int, httpx.Response] = {}

    async def one(client: httpx.AsyncClient, i: int) -> None:
        results[i] = await client.post("/v1/predict", files={"files": (f"{i}.png", uploads[i])})

    async def burst() -> None:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
            anyio.create_task_group() as tg,
        ):
            for i in range(len(uploads)):
                tg.start_soon(one, client, i)

    anyio.run(burst)
    for i, (status, code) in enumerate(expected):
        r = results[i]
        assert r.status_code == status, (i, r.text[:300])
        if code:
            assert r.json()["error"]["code"] == code
        else:
            image = r.json()["images"][0]
            assert image["image"]["height"] == 1300 and 0.0 <= image["fracture_probability"] <= 1.0


def test_limits_come_from_settings(client: TestClient) -> None:
    limits = client.get("/v1/model").json()["limits"]
    assert limits == {k: SETTINGS[k] for k in ("max_upload_bytes", "max_files", "max_pixels")}
