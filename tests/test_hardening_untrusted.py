"""Untrusted bundles and clients: a linked model card, ONNX external data, malformed or inflated
bundle records and archives, metrics labels from arbitrary methods, the spool database's mode."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fracsight.bundle import load_bundle_spec, read_card
from fracsight.errors import BundleError
from fracsight.inference import resolve_bundle
from fracsight.inference.onnx_model import OnnxModel

PACKAGED = Path(resolve_bundle())  # the shipped default (INT8, about 4 MB): no training needed
TOKEN = "tok-" + "0123abcd" * 4
SECRET = "FRACSIGHT_TEST_SECRET=do-not-answer-this"


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(PACKAGED, target)
    return target


# ---- card.md ----------------------------------------------------------------------------------------
def test_a_card_linked_outside_the_bundle_is_never_read(bundle: Path, tmp_path: Path) -> None:
    assert read_card(bundle) == (PACKAGED / "card.md").read_text(encoding="utf-8")  # control
    (bundle / "card.md").rename(bundle / "real-card.md")
    (bundle / "card.md").symlink_to("real-card.md")  # a link inside the bundle is fine
    assert read_card(bundle) == (PACKAGED / "card.md").read_text(encoding="utf-8")
    secret = tmp_path / "secrets.env"
    secret.write_text(SECRET, encoding="utf-8")
    (bundle / "card.md").unlink()
    (bundle / "card.md").symlink_to(secret)
    assert read_card(bundle) is None
    (bundle / "card.md").unlink()
    (bundle / "card.md").symlink_to("/proc/self/environ")
    assert read_card(bundle) is None


def test_the_api_never_answers_a_file_the_card_links_to(bundle: Path, tmp_path: Path) -> None:
    """The reproduction: a bundle folder whose ``card.md`` links to a file of the server (say
    ``/proc/self/environ``, with FRACSIGHT_API_TOKENS) had it answered to ``GET /v1/model``."""
    from fastapi.testclient import TestClient

    from fracsight.api import ApiSettings, create_app

    secret = tmp_path / "secrets.env"
    secret.write_text(SECRET, encoding="utf-8")
    (bundle / "card.md").unlink()
    (bundle / "card.md").symlink_to(secret)
    app = create_app(ApiSettings(model=str(bundle), api_tokens=TOKEN))
    with TestClient(app) as client:
        r = client.get("/v1/model", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert r.json()["card"] is None
    assert "do-not-answer-this" not in r.text


def test_a_huge_card_is_cut(bundle: Path) -> None:
    from fracsight.bundle import MAX_CARD_BYTES

    (bundle / "card.md").write_bytes(b"a" * (MAX_CARD_BYTES + 10))
    card = read_card(bundle)
    assert card is not None and len(card) == MAX_CARD_BYTES


# ---- model.onnx ---------------------------------------------------------------------------------------
def test_weights_kept_as_onnx_external_data_are_refused(bundle: Path) -> None:
    """sha256 in bundle.json covers model.onnx only: weights in an external-data file beside it
    could be swapped without the check noticing, so such a model is not loaded."""
    onnx = pytest.importorskip("onnx")

    OnnxModel(bundle)  # control: the copy loads
    model = onnx.load(str(bundle / "model.onnx"))
    (bundle / "model.onnx").unlink()
    onnx.save_model(
        model,
        str(bundle / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=1024,
    )
    assert (bundle / "weights.bin").stat().st_size > 1_000_000
    record = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    record["onnx_sha256"] = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    (bundle / "bundle.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(BundleError, match="onnxruntime cannot load"):
        OnnxModel(bundle)


# ---- bundle.json and .zip -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, '{"format": 1, "input_size": ' + "9" * 5000 + "}"],
    ids=["deeply-nested", "huge-integer"],
)
def test_malformed_bundle_json_is_a_bundle_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "bundle.json").write_text(text, encoding="utf-8")
    with pytest.raises(BundleError, match="cannot read"):
        load_bundle_spec(tmp_path)


def test_an_oversized_bundle_json_is_refused_unread(tmp_path: Path) -> None:
    from fracsight.bundle import MAX_SPEC_BYTES

    with open(tmp_path / "bundle.json", "wb") as f:
        f.truncate(MAX_SPEC_BYTES + 1)  # sparse: no disk used
    with pytest.raises(BundleError, match="larger than"):
        load_bundle_spec(tmp_path)


def test_a_zip_of_many_entries_is_refused(tmp_path: Path) -> None:
    from fracsight.inference.store import _MAX_ZIP_ENTRIES

    flood = tmp_path / "flood.zip"
    with zipfile.ZipFile(flood, "w") as zf:
        zf.writestr("b/bundle.json", "{}")
        for n in range(_MAX_ZIP_ENTRIES):
            zf.writestr(f"b/{n}", b"")
    with pytest.raises(BundleError, match="more than"):
        resolve_bundle(flood)


# ---- the API's metrics ------------------------------------------------------------------------------
@pytest.fixture()
def server() -> Iterator[str]:
    pytest.importorskip("uvicorn")
    from test_api_serve import loopback_server

    with loopback_server(env={"FRACSIGHT_AUTH": "required", "FRACSIGHT_API_TOKENS": TOKEN}) as url:
        yield url


@pytest.mark.slow
def test_arbitrary_methods_do_not_grow_the_metrics(server: str) -> None:
    """Each new method token was a new series for good, even from a client without a token."""
    import httpx

    for n in range(20):
        r = httpx.request(f"{'X' * 2000}{n}", f"{server}/v1/model", timeout=10)
        assert r.status_code == 401
    metrics = httpx.get(f"{server}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert "XXXX" not in metrics.text
    assert 'method="other",status="401"} 20' in metrics.text


# ---- the DICOM node's spool -------------------------------------------------------------------------
def test_the_spool_database_is_private_in_a_folder_made_beforehand(tmp_path: Path) -> None:
    from fracsight.dicom.spool import Spool

    root = tmp_path / "spool"
    root.mkdir(mode=0o755)  # e.g. made by an installer or a container volume
    old = os.umask(0o022)
    try:
        spool = Spool(root)
        spool.add_instance("k" * 20, "1.2.826.0.1.3680043.2.1125.1", b"DICM")  # writes the WAL
        try:
            files = [root / "spool.db", root / "spool.db-wal", root / "spool.db-shm"]
            assert all(f.exists() for f in files)
            for f in files:
                assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f.name
        finally:
            spool.close()
    finally:
        os.umask(old)
