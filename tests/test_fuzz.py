"""Bounded fuzzing of the reader and the upload path (hypothesis), plus saved crash inputs as regressions.

The contract under test: whatever the bytes, ``read_image`` returns a valid
radiograph (2-D float32, finite, in [0, 1], within the size limits) or raises an
``ImageReadError`` whose message starts with the file name; and the API answers
every body with JSON and a status below 500. A longer, coverage-guided run is
``python scripts/fuzz_reader.py`` (docs/hardening.md); each crash it finds is
saved under tests/fuzz_crashes/ and replayed here.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpus import OK, build_corpus, dicom_bytes, multipart
from fracsight.errors import ImageReadError
from fracsight.io import MIN_SIDE, read_image

MAX_PIXELS = 4_000_000  # keeps each example cheap; the limit itself is what is being exercised
CRASH_DIR = Path(__file__).resolve().parent / "fuzz_crashes"
SEEDS = [c for c in build_corpus() if c.expect == OK or c.expect in ("truncated_image", "corrupt_image")]
# Examples per test are scaled by FRACSIGHT_FUZZ_SCALE (default 1: about a minute in all on 2 cores).
SCALE = float(os.environ.get("FRACSIGHT_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    """Bounded, reproducible settings: same examples every run, no deadline, no example database."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def check_read(data: bytes, name: str = "fuzz.bin") -> None:
    """Assert the reader's contract for one input (shared with scripts/fuzz_reader.py)."""
    try:
        rg = read_image(data, name=name, max_pixels=MAX_PIXELS)
    except ImageReadError as e:
        message = str(e)
        assert message.startswith(f"{name}: "), message
        assert "object at 0x" not in message, message
        assert isinstance(e.code, str) and e.code
        return
    px = rg.pixels
    assert px.ndim == 2 and px.dtype == np.float32
    assert min(px.shape) >= MIN_SIDE and px.size <= MAX_PIXELS
    assert np.isfinite(px).all() and float(px.min()) >= 0.0 and float(px.max()) <= 1.0
    json.dumps(rg.metadata.to_dict())  # metadata stays serialisable


def apply_mutations(data: bytes, ops: list[tuple[int, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for kind, where, payload in ops:
        pos = where % (len(buf) + 1)
        if kind == 0 and buf:  # overwrite
            buf[pos : pos + len(payload)] = payload
        elif kind == 1:  # insert
            buf[pos:pos] = payload
        elif kind == 2:  # delete
            del buf[pos : pos + len(payload) * 8 + 1]
        else:  # cut
            del buf[pos:]
    return bytes(buf)


mutation = st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16))


@fuzz(8000)
@given(seed=st.sampled_from(SEEDS), ops=st.lists(mutation, min_size=1, max_size=8))
def test_mutated_corpus_files(seed, ops) -> None:
    check_read(apply_mutations(seed.data, ops), seed.filename)


MAGICS = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"II*\x00",
    b"MM\x00*",
    b"BM",
    b"\x00" * 128 + b"DICM",
]


@fuzz(3000)
@given(prefix=st.sampled_from([b"", *MAGICS]), tail=st.binary(max_size=2048))
def test_magic_plus_random_bytes(prefix: bytes, tail: bytes) -> None:
    check_read(prefix + tail)


@fuzz(1500)
@given(
    rows=st.integers(0, 3000),
    cols=st.integers(0, 3000),
    bits=st.sampled_from([1, 8, 12, 16, 32, 64]),
    stored=st.integers(0, 40),
    photometric=st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "", "YBR_FULL"]),
    samples=st.integers(1, 4),
    frames=st.integers(1, 5),
    pixels=st.binary(max_size=4096),
)
def test_structured_dicom_headers(rows, cols, bits, stored, photometric, samples, frames, pixels) -> None:
    data = dicom_bytes(
        rows=rows,
        cols=cols,
        bits_allocated=bits,
        bits_stored=max(stored, 1),
        photometric=photometric,
        samples=samples,
        frames=frames,
        pixel_bytes=pixels,
    )
    check_read(data, "fuzz.dcm")


# ---- the upload path -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(tiny_bundle: Path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fracsight.api import ApiSettings, create_app

    settings_ = ApiSettings(model=str(tiny_bundle), max_files=3, max_upload_bytes=256 * 1024)
    with TestClient(create_app(settings_)) as c:
        yield c


@fuzz(600)
@given(
    body=st.one_of(
        st.binary(max_size=1024),
        st.builds(
            lambda seed, ops, name: multipart([("files", name, apply_mutations(seed.data, ops))]),
            st.sampled_from(SEEDS),
            st.lists(mutation, max_size=4),
            st.text(max_size=40),
        ),
        st.builds(
            lambda b, cut: b[:cut], st.just(multipart([("files", "a.png", SEEDS[0].data)])), st.integers()
        ),
    ),
    content_type=st.sampled_from(
        ["multipart/form-data; boundary=fracsight-corpus-boundary", "multipart/form-data; boundary=x", ""]
    ),
)
def test_api_answers_any_body_with_json_below_500(client, body: bytes, content_type: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/v1/predict", content=body, headers=headers)
    assert r.status_code < 500, r.text
    payload = r.json()
    assert ("images" in payload) if r.status_code == 200 else (set(payload) == {"error"})


# ---- regressions: inputs that once crashed or misbehaved -----------------------------------------------
KNOWN = {
    "jpeg-soi-only-keyerror-mpo": b"\xff\xd8\xff",  # Pillow raised KeyError('MPO') (formats list)
    "png-signature-only-repr": b"\x89PNG\r\n\x1a\n",  # the message quoted an object repr
    "jpeg-cut-in-header": build_corpus()[1].data[:60],
}


def _saved_crashes() -> list[tuple[str, bytes]]:
    return [
        (p.stem, base64.b64decode(p.read_text().split("\n", 1)[0])) for p in sorted(CRASH_DIR.glob("*.b64"))
    ]


@pytest.mark.parametrize(("label", "data"), [*KNOWN.items(), *_saved_crashes()], ids=lambda v: str(v)[:40])
def test_regressions(label: str, data: bytes) -> None:
    check_read(data)
