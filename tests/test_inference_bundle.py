"""Refusals when loading a bundle: tampered weights, malformed records, unknown names."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fracsight.errors import BundleError, ChecksumMismatchError, UnknownModelError
from fracsight.inference import Predictor, list_bundles, resolve_bundle
from fracsight.inference import store as store_module


@pytest.fixture()
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, target)
    return target


def _edit_json(folder: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    path = folder / "bundle.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(edit(data)), encoding="utf-8")


def test_an_untouched_copy_loads(bundle_copy: Path) -> None:
    """Control for the refusals below: copying alone breaks nothing."""
    assert Predictor(bundle_copy).spec.name == "tiny-test"


def test_a_checksum_written_in_capitals_matches(bundle_copy: Path) -> None:
    """PowerShell's Get-FileHash prints sha256 in capitals: a matching model.onnx was refused."""
    _edit_json(bundle_copy, lambda d: {**d, "onnx_sha256": d["onnx_sha256"].upper()})
    spec = Predictor(bundle_copy).spec
    assert spec.name == "tiny-test" and spec.onnx_sha256 == spec.onnx_sha256.lower()  # as provenance says it


def test_one_flipped_byte_in_the_weights_is_refused(bundle_copy: Path) -> None:
    onnx = bundle_copy / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError) as info:
        Predictor(bundle_copy)
    message = str(info.value)
    assert "model.onnx" in message and "does not match bundle.json" in message and "refusing" in message
    assert info.value.code == "bundle_checksum_mismatch"
    assert isinstance(info.value, BundleError)  # callers catching BundleError see it too


def test_missing_weights_are_refused(bundle_copy: Path) -> None:
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"no model\.onnx"):
        Predictor(bundle_copy)


def _drop_heads(d: dict[str, Any]) -> dict[str, Any]:
    del d["heads"]
    return d


def _bad_head_kind(d: dict[str, Any]) -> dict[str, Any]:
    d["heads"][0]["kind"] = "regression"
    return d


def _future_format(d: dict[str, Any]) -> dict[str, Any]:
    d["format"] = 99
    return d


def _old_format(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "format": 0}


def _no_checksum(d: dict[str, Any]) -> dict[str, Any]:
    """It said "does not match bundle.json (sha256 26cb... != ...)": there was nothing to match."""
    return {k: v for k, v in d.items() if k != "onnx_sha256"}


def _unknown_point_field(d: dict[str, Any]) -> dict[str, Any]:
    d["operating_points"][0]["ppv"] = 0.5  # fields were added there before (sensitivity, specificity)
    return d


def _point_without_threshold(d: dict[str, Any]) -> dict[str, Any]:
    del d["operating_points"][0]["threshold"]
    return d


def _unknown_field(d: dict[str, Any]) -> dict[str, Any]:
    """A bundle from a newer fracsight (a field added within the format, as orientation was) was
    "bundle.json is malformed: BundleSpec.__init__() got an unexpected keyword argument"."""
    d["surprise"] = 1
    return d


def _bad_default_point(d: dict[str, Any]) -> dict[str, Any]:
    d["default_operating_point"] = "nowhere"
    return d


def _zero_temperature(d: dict[str, Any]) -> dict[str, Any]:
    d["temperature"] = 0.0
    return d


def _text_bias(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "calibration_bias": "high"}


def _infinite_bias(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "calibration_bias": float("inf")}


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: [d], "JSON object"),
        (_drop_heads, "malformed: it lacks heads$"),
        (_bad_head_kind, "kind must be one of"),
        (_future_format, r"format 99 is newer than this fracsight reads \(1\): upgrade fracsight"),
        (_old_format, "format 0 is not supported"),
        (_unknown_field, r"fields this fracsight does not know \(surprise\): .* newer fracsight; upgrade"),
        (_no_checksum, "has no onnx_sha256: model.onnx cannot be checked"),
        (
            _unknown_point_field,
            r"do(es)? not know \(operating_points\[0\]\.ppv\): .* newer fracsight; upgrade",
        ),
        (_point_without_threshold, r"malformed: it lacks operating_points\[0\]\.threshold$"),
        (_bad_default_point, "default operating point"),
        (_zero_temperature, "temperature"),
        (_text_bias, "malformed|calibration_bias"),
        (_infinite_bias, "calibration_bias"),
        # no heads: every image got "no result", said reliable, exit 0; a dict was read as a list
        (lambda d: {**d, "heads": []}, "lists no heads: the bundle would predict nothing"),
        (lambda d: {**d, "heads": {}}, "heads and operating_points must be lists"),
        (lambda d: {**d, "temperature": None}, r"temperature must be a finite number, got None$"),
        # hand edits that passed the load and raised a traceback in every prediction or command
        (lambda d: {**d, "localization": {"relative": 0}}, r"localization.relative must be in \(0, 1\]"),
        (
            lambda d: {**d, "heads": [{**d["heads"][0], "name": ["fracture"]}]},
            "a head's name must be a string",
        ),
        (lambda d: {**d, "training": {"config": "x"}}, "training.config must be a JSON object"),
        (lambda d: {**d, "training": {"config": {"seed": "abc"}}}, "training.config.seed must be an integer"),
        (lambda d: {**d, "training": {"config": {"seed": None}}}, "training.config.seed must be an integer"),
        (lambda d: {**d, "training": {"data": 5}}, "training.data must be a string, got 5"),
        # quantize's card: a traceback once its work was done, or a Reproduce block a character a line
        (
            lambda d: {**d, "training": {"config": {"ema_decay": "0.9"}}},
            "training.config.ema_decay must be a finite number, got '0.9'",
        ),
        (
            lambda d: {**d, "training": {"config": {"augment": "default"}}},
            "training.config.augment must be a JSON object",
        ),
        (
            lambda d: {**d, "training": {"commands": "fracsight train data"}},
            "training.commands must be a list of command lines",
        ),
        (lambda d: {**d, "metrics": {"validation": "good"}}, "metrics.validation must be a JSON object"),
    ],
    ids=[
        "not-an-object",
        "no-heads",
        "bad-head-kind",
        "future-format",
        "old-format",
        "unknown-field",
        "no-checksum",
        "unknown-point-field",
        "point-without-threshold",
        "bad-op",
        "temp-0",
        "bias-text",
        "bias-inf",
        "empty-heads",
        "heads-dict",
        "temperature-null",
        "relative-0",
        "head-name-list",
        "training-config-text",
        "seed-text",
        "seed-null",
        "training-data-number",
        "ema-decay-text",
        "augment-text",
        "commands-text",
        "metrics-record-text",
    ],
)
def test_malformed_bundle_json_is_a_bundle_error(
    bundle_copy: Path, edit: Callable[[dict[str, Any]], Any], match: str
) -> None:
    _edit_json(bundle_copy, edit)
    with pytest.raises(BundleError, match=match):
        Predictor(bundle_copy)


def test_bundle_json_that_is_not_json_is_a_bundle_error(bundle_copy: Path) -> None:
    (bundle_copy / "bundle.json").write_text('{"name": "tiny-test",', encoding="utf-8")
    with pytest.raises(BundleError, match="cannot read"):
        Predictor(bundle_copy)


def test_bundle_json_saved_with_a_byte_order_mark_loads(bundle_copy: Path) -> None:
    """Notepad saves UTF-8 with a BOM: refused with Python's own "Unexpected UTF-8 BOM"."""
    path = bundle_copy / "bundle.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert Predictor(bundle_copy).spec.name == "tiny-test"


def test_a_model_named_by_fracsight_model_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable exported long ago, never typed in this command; said with a stray ",;"."""
    for name, start in (
        ("nosuch", "no model bundle named 'nosuch' (set by FRACSIGHT_MODEL), not a path"),
        ("gone/b.zip", "no such bundle folder or .zip: gone/b.zip (set by FRACSIGHT_MODEL);"),
    ):
        monkeypatch.setenv("FRACSIGHT_MODEL", name)
        with pytest.raises(UnknownModelError) as info:
            resolve_bundle(name)
        assert str(info.value).startswith(start) and ",;" not in str(info.value)


def test_unknown_operating_point_is_refused(bundle_copy: Path) -> None:
    with pytest.raises(BundleError, match=r"unknown operating point 'strict'.*balanced"):
        Predictor(bundle_copy, operating_point="strict")


def test_unknown_model_name_lists_the_packaged_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packaged = tmp_path / "weights"
    for name in ("alpha-lite0-384-v1", "beta-lite2-448-v2"):
        (packaged / name).mkdir(parents=True)
        (packaged / name / "bundle.json").write_text("{}", encoding="utf-8")
    (packaged / "not-a-bundle").mkdir()
    (packaged / ".alpha-lite0-384-v2.partial-x1y2").mkdir()  # what an export killed outright leaves
    (packaged / ".alpha-lite0-384-v2.partial-x1y2" / "bundle.json").write_text("{}", encoding="utf-8")
    monkeypatch.setattr(store_module, "_PACKAGED", packaged)
    assert list_bundles() == ["alpha-lite0-384-v1", "beta-lite2-448-v2"]
    with pytest.raises(UnknownModelError) as info:
        Predictor("gamma-v1")
    message = str(info.value)
    assert "'gamma-v1'" in message and "alpha-lite0-384-v1, beta-lite2-448-v2" in message
    assert "not-a-bundle" not in message
    assert info.value.code == "unknown_model"


def test_the_name_default_is_the_shipped_model_everywhere() -> None:
    """`fracsight evaluate default ...` says it; Predictor, serve, desktop and scripts take it too."""
    assert resolve_bundle("default") == resolve_bundle(None) == resolve_bundle(store_module.DEFAULT_MODEL)
    assert Predictor("default").name == Predictor().name


@pytest.mark.parametrize("given", ["runs/missing-bundle", "models/missing.zip"])
def test_a_missing_bundle_path_is_named_as_a_path(given: str) -> None:
    with pytest.raises(UnknownModelError, match=f"no such bundle folder or .zip: {given}; packaged: "):
        resolve_bundle(given)


def test_unknown_model_name_without_packaged_bundles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "_PACKAGED", tmp_path / "nothing-here")
    with pytest.raises(UnknownModelError, match="none installed"):
        resolve_bundle("gamma-v1")


def test_a_zipped_bundle_whose_model_was_changed_is_named_by_the_archive(
    bundle_copy: Path, tmp_path: Path
) -> None:
    (bundle_copy / "model.onnx").write_bytes((bundle_copy / "model.onnx").read_bytes() + b"x")
    changed = tmp_path / "changed.zip"
    with zipfile.ZipFile(changed, "w") as zf:
        for f in bundle_copy.iterdir():
            zf.write(f, f"tiny/{f.name}")
    with pytest.raises(ChecksumMismatchError) as refused:
        Predictor(changed)
    # the user gave changed.zip: a temporary folder it was unpacked to means nothing to them
    assert "model.onnx in changed.zip/tiny does not match" in str(refused.value)
    assert "fracsight-bundle-" not in str(refused.value)


def test_a_zipped_bundle_loads_and_an_unsafe_zip_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        for f in tiny_bundle.iterdir():
            zf.write(f, f"tiny/{f.name}")
    assert Predictor(good).spec.name == "tiny-test"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside/bundle.json", "{}")
    with pytest.raises(BundleError, match="unsafe path"):
        resolve_bundle(evil)
