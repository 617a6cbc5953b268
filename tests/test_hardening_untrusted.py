"""Untrusted bundles and clients: a linked model card, ONNX external data, malformed or inflated
bundle records and archives, metrics labels from arbitrary methods, the spool database's mode."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import shutil
import stat
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
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
@pytest.mark.parametrize("where", ["elsewhere", "in-the-bundle"])
def test_weights_kept_as_onnx_external_data_are_refused(
    bundle: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sha256 in bundle.json covers model.onnx only: weights in an external-data file beside it
    could be swapped without the check noticing, so such a model is not loaded. The reproduction:
    onnxruntime looked for them under the current directory, so a bundle run from its own folder
    (or one naming a file of the folder the user started it in) loaded them unchecked."""
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
    if where == "in-the-bundle":
        monkeypatch.chdir(bundle)  # weights.bin is then where onnxruntime used to look
    with pytest.raises(BundleError, match="ONNX external data"):
        OnnxModel(bundle)
    # the check of commands that hand the model on (batch on Ray, the node's workers) and of those
    # that read it with onnx.load (detector train/joint), which copied the file into a new bundle
    from fracsight.inference.store import checked_bundle

    with pytest.raises(BundleError, match="ONNX external data"):
        checked_bundle(bundle)


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


def _edited(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    record = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    edit(record)
    (bundle / "bundle.json").write_text(json.dumps(record), encoding="utf-8")  # NaN as JSON's NaN
    return bundle


def _each_threshold(value: Any) -> Callable[[dict[str, Any]], None]:
    return _each_operating_point("threshold", value)


def _each_operating_point(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda r: [op.update({key: value}) for op in r["operating_points"]]


def _set(section: str | None, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda r: (r[section] if section else r).update({key: value})


def _components(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda r: edit(r["ood"]["subspace_components"])


def _region_names(names: list[str]) -> Callable[[dict[str, Any]], None]:
    """The region head's first classes renamed (its length kept, as its output's)."""

    def edit(record: dict[str, Any]) -> None:
        head = next(h for h in record["heads"] if h["name"] == "region")
        head["classes"][: len(names)] = names

    return edit


def _nan_components(record: dict[str, Any]) -> None:
    k, d = record["shape"]
    record["data"] = base64.b64encode(np.full((k, d), np.nan, dtype="<f2").tobytes()).decode()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        # each was loaded; a prediction then compared with it
        (_each_threshold(float("nan")), "threshold must be a finite number in 0..1, got nan"),
        (_each_threshold(5), "threshold must be a finite number in 0..1, got 5"),
        (_each_threshold("0.5"), "threshold must be a finite number"),
        (_set(None, "temperature", float("inf")), "temperature must be a finite number"),
        (_set(None, "input_size", 384.5), "input_size must be a whole number"),
        (_set(None, "name", ["x"]), "name must be a string"),
        # loaded; the name then forged a line of the server's log and broke the API's CSV answer
        (_set(None, "name", "x\r\nSet-Cookie: a=1"), "name must not hold control characters"),
        (_set(None, "name", "x\x1b]0;title\x07"), "name must not hold control characters"),
        # loaded; GET /v1/model then answered 500, predict a traceback
        (_each_operating_point("description", 5), "description must be a string"),
        (_each_operating_point("sensitivity", "high"), "sensitivity must be a finite number in 0..1"),
        (_set(None, "onnx_sha256", 5), "onnx_sha256 must be a string"),
        (lambda r: r["heads"][0].update(classes="ab"), "classes must be a list"),
        (_set("ood", "subspace_threshold", float("nan")), "ood.subspace_threshold must be a finite"),
        (_components(lambda c: c.update(shape=[10**9, 10**9])), "ood record cannot be used: ValueError"),
        (_components(_nan_components), "ood record gives no finite distance"),
        (_set(None, "ood", [1]), "ood must be a JSON object"),
        (lambda r: r["ood"].update(image_limits={"contrast": [1]}), r"image_limits.contrast must be \[low"),
        (_set("localization", "min_box_score", "a"), "localization.min_box_score must be a finite"),
        (lambda r: r["localization"].pop("stride"), "detector need its stride"),
        (_set("orientation", "min_probability", float("nan")), "orientation.min_probability must be"),
        # loaded, then "has no fracture head, so it has no operating points" of a fracture head
        (_set(None, "operating_points", []), "its bundle.json lists no operating point"),
        # loaded: "hand" showed the second output's probability, the first's was lost
        (_region_names(["hand", "hand"]), "names a class twice"),
        (_region_names(["", "hand"]), r"classes must be names \(strings, not empty\)"),
    ],
    ids=[
        "threshold-nan",
        "threshold-5",
        "threshold-text",
        "temperature-inf",
        "input-size-float",
        "name-list",
        "name-newline",
        "name-escape",
        "description-number",
        "sensitivity-text",
        "checksum-number",
        "classes-text",
        "ood-threshold-nan",
        "ood-shape-huge",
        "ood-components-nan",
        "ood-list",
        "image-limits-short",
        "box-score-text",
        "detector-without-stride",
        "orientation-nan",
        "fracture-without-operating-points",
        "class-named-twice",
        "class-name-empty",
    ],
)
def test_settings_a_prediction_reads_are_checked_when_the_bundle_loads(
    bundle: Path, edit: Callable[[dict[str, Any]], None], match: str
) -> None:
    """bundle.json is not covered by the checksum. A NaN threshold made every comparison false: a
    FracAtlas fracture at probability 0.99 came out "no fracture detected", reliable; a threshold of 5
    the same; a NaN OOD threshold or NaN in the subspace switched the guard off without a word; a text
    threshold, a fractional input size or a broken OOD record raised a traceback on every image."""
    from fracsight.inference import Predictor

    with pytest.raises(BundleError, match=match):
        Predictor(_edited(bundle, edit))


def test_a_model_named_in_any_script_answers_csv_with_its_note(bundle: Path, fracatlas_dir: Path) -> None:
    """The reproduction: ``?format=csv&all_classes=true`` on a model without a class head put the
    model's name in a header, which must be Latin-1: a name in Chinese answered 500."""
    from fastapi.testclient import TestClient

    from fracsight.api import ApiSettings, create_app

    image = next((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))
    app = create_app(ApiSettings(model=str(_edited(bundle, _set(None, "name", "骨折 ☃")))))
    with TestClient(app) as client:
        files = {"files": (image.name, image.read_bytes(), "image/jpeg")}
        r = client.post("/v1/predict?format=csv&all_classes=true", files=files)
    assert r.status_code == 200, r.text
    assert "has no class head" in r.headers["x-fracsight-note"]


def test_control_characters_from_a_data_set_reach_the_terminal_escaped(tmp_path: Path) -> None:
    """The reproduction: a labels.csv naming a missing ``x<ESC>]0;PWNED<BEL>y.jpg`` had the
    escape sequence printed in the error line, where a terminal runs it (here: its title)."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    (tmp_path / "labels.csv").write_text("image,fracture\nx\x1b]0;PWNED\x07y.jpg,1\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code != 0
    assert "x\\x1b]0;PWNED\\x07y.jpg" in result.stderr
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    # and every other error line: a name given on the command line, an output refused
    named = str(tmp_path / "a\x1b]0;X\x07b.jpg")
    for args in (["predict", named], ["predict", str(tmp_path / "labels.csv"), "--csv", named + "/x.csv"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "a\\x1b]0;X\\x07b.jpg" in result.stderr, result.stderr
        assert "\x1b" not in result.stderr


def _region_classes(n: int) -> Callable[[dict[str, Any]], None]:
    def edit(spec: dict[str, Any]) -> None:
        (head,) = (h for h in spec["heads"] if h["name"] == "region")
        head["classes"] = [f"r{i}" for i in range(n)]

    return edit


def _fracture_classes(n: int) -> Callable[[dict[str, Any]], None]:
    def edit(spec: dict[str, Any]) -> None:
        spec["heads"][0]["classes"] = [f"c{i}" for i in range(n)]

    return edit


def _region_binary(spec: dict[str, Any]) -> None:
    (head,) = (h for h in spec["heads"] if h["name"] == "region")
    head.update(kind="binary", classes=["other", "hand"])


def _class_head(spec: dict[str, Any]) -> None:
    spec["heads"].append({"name": "class", "kind": "multiclass", "classes": ["a", "b"]})


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda spec: spec.update(input_size=416), "bundle.json says input_size 416, model.onnx takes 384"),
        (_class_head, r"model.onnx lacks the outputs \['class'\] that bundle.json names"),
        (_region_classes(3), "bundle.json names 3 classes for the 'region' head, model.onnx gives 4 outputs"),
        (_region_classes(5), "bundle.json names 5 classes for the 'region' head, model.onnx gives 4 outputs"),
        (_fracture_classes(3), "head 'fracture' is binary: its classes name the negative and the positive"),
        (_region_binary, "bundle.json makes the 'region' head binary \\(one output\\), model.onnx gives 4"),
    ],
    ids=["input-size", "head-without-output", "regions-fewer", "regions-more", "binary-three", "region-bin"],
)
def test_a_bundle_json_that_disagrees_with_its_graph_is_refused_when_it_loads(
    bundle: Path, edit: Callable[[dict[str, Any]], None], match: str
) -> None:
    """An input size the graph does not take: onnxruntime's traceback on every image (compare,
    predict), `benchmark` a line without the reason; a head the graph has no output for:
    `AttributeError: 'NoneType' object has no attribute 'predicted'`; a class list edited to another
    length than the graph's head: `ValueError: zip() argument 2 is longer than argument 1` at the
    first prediction; three names for a binary head, accepted without a word."""
    with pytest.raises(BundleError, match=match):
        OnnxModel(_edited(bundle, edit))


def test_a_threshold_one_step_above_one_still_loads(bundle: Path) -> None:
    """Control: what evaluation.thresholds chooses when only "nothing positive" meets a target."""
    from fracsight.inference import Predictor

    edge = math.nextafter(1.0, 2.0)
    assert Predictor(_edited(bundle, _each_threshold(edge))).operating_point.threshold == edge


def test_an_oversized_model_is_refused_unread(bundle: Path) -> None:
    from fracsight.bundle import MAX_ONNX_BYTES

    with open(bundle / "model.onnx", "r+b") as f:
        f.truncate(MAX_ONNX_BYTES + 1)  # sparse: no disk used
    with pytest.raises(BundleError, match="larger than 2 GB"):
        OnnxModel(bundle)


def _first_entry_header_offsets(data: bytearray) -> tuple[int, int]:
    """Where the first entry's local header and its central directory record start."""
    return data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")


def _unknown_method(data: bytearray) -> None:
    local, central = _first_entry_header_offsets(data)
    data[local + 8 : local + 10] = struct.pack("<H", 97)
    data[central + 10 : central + 12] = struct.pack("<H", 97)


def _damaged_deflate(data: bytearray) -> None:
    local, _ = _first_entry_header_offsets(data)
    name_length, extra_length = struct.unpack("<HH", data[local + 26 : local + 30])
    start = local + 30 + name_length + extra_length
    data[start : start + 50] = bytes(b ^ 0x55 for b in data[start : start + 50])


def _encrypted(data: bytearray) -> None:
    local, central = _first_entry_header_offsets(data)
    data[local + 6] |= 1
    data[central + 8] |= 1


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (_unknown_method, "compressed in a way Python's zipfile cannot unpack"),
        (_damaged_deflate, "not a valid zip archive: Error -3"),
        (_encrypted, "archive is encrypted"),
    ],
    ids=["unknown-method", "damaged-deflate", "encrypted"],
)
def test_a_damaged_or_encrypted_zip_is_a_bundle_error(
    tmp_path: Path, damage: Callable[[bytearray], None], match: str
) -> None:
    """Each was a traceback from `fracsight predict --model x.zip` and `serve`: NotImplementedError,
    zlib.error, RuntimeError quoting a ZipInfo repr."""
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in PACKAGED.iterdir():
            zf.write(f, f"b/{f.name}")
    data = bytearray(archive.read_bytes())
    damage(data)
    archive.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=match) as refused:
        resolve_bundle(archive)
    assert "ZipInfo" not in str(refused.value)


@pytest.mark.parametrize("entry", ["b", "b/" + "x" * 300])
def test_a_zip_that_cannot_be_unpacked_is_a_bundle_error_naming_the_archive(
    tmp_path: Path, entry: str
) -> None:
    """An entry under a name that is a file already, or a name over 255 bytes: `os_error` naming
    the hidden temporary folder, exit 1 or 2 by command."""
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(entry, b"in the way")
        for f in PACKAGED.iterdir():
            zf.write(f, f"b/{f.name}")
    with pytest.raises(BundleError, match=r"model.zip cannot be unpacked as a bundle: ") as refused:
        resolve_bundle(archive)
    assert "fracsight-bundle-" not in str(refused.value)


def test_the_default_is_the_packaged_bundle_whatever_folder_the_command_runs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder named as the default bundle where a command ran (an `evaluate --out` report named
    after it) broke every command without --model; a copy of another bundle there replaced it."""
    from fracsight.inference.store import DEFAULT_MODEL

    monkeypatch.chdir(tmp_path)
    (tmp_path / DEFAULT_MODEL).mkdir()
    (tmp_path / "default").mkdir()
    assert resolve_bundle(None) == resolve_bundle("default") == PACKAGED.parent / DEFAULT_MODEL


def test_a_packaged_name_is_the_packaged_bundle_whatever_folder_of_its_name_is_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule of the default, for every packaged name: `evaluate NAME ... --out NAME` (a report
    named after the model) made `--model NAME` and the report's own re-run command fail ("not a
    model bundle: bundle.json is missing"), and a copy of another bundle there was used unsaid.
    The folder is still reached as a path."""
    from fracsight.inference.store import DEFAULT_MODEL, list_bundles

    other = next(name for name in list_bundles() if name != DEFAULT_MODEL)
    monkeypatch.chdir(tmp_path)
    (tmp_path / other).mkdir()  # a report folder of that name
    shutil.copytree(PACKAGED, tmp_path / DEFAULT_MODEL)  # a user's bundle under a packaged name
    assert resolve_bundle(other) == PACKAGED.parent / other
    assert resolve_bundle(DEFAULT_MODEL) == PACKAGED.parent / DEFAULT_MODEL
    here = tmp_path / DEFAULT_MODEL  # absolute: passed on as text, it stays the folder
    assert resolve_bundle(f"./{DEFAULT_MODEL}") == resolve_bundle(Path(DEFAULT_MODEL)) == here
    assert resolve_bundle(str(resolve_bundle(f"./{DEFAULT_MODEL}"))) == here
    # `predict NAME` (the folder given as images) advises the spelling that reaches the folder
    from fracsight.inference.tabular import no_images_message

    assert no_images_message([Path(DEFAULT_MODEL)]).endswith(f"give it with --model ./{DEFAULT_MODEL}")
    shutil.rmtree(tmp_path / DEFAULT_MODEL)
    assert resolve_bundle(Path(DEFAULT_MODEL)) == PACKAGED.parent / DEFAULT_MODEL  # none here


def _packaged_zip(folder: Path) -> Path:
    """The shipped default bundle as ``folder/model.zip`` (its files under ``b/``)."""
    archive = folder / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in PACKAGED.iterdir():
            zf.write(f, f"b/{f.name}")
    return archive


@pytest.mark.fracatlas
def test_sigterm_removes_the_unpacked_zip(tmp_path: Path, fracatlas_dir: Path) -> None:
    """`timeout` or a scheduler stopping a command given a .zip bundle (benchmark, compare, predict):
    SIGTERM killed the process outright and the unpacked copy (up to 512 MB) stayed in /tmp."""
    import signal
    import subprocess
    import sys
    import time

    archive = _packaged_zip(tmp_path)
    temp = tmp_path / "tmp"
    temp.mkdir()
    images = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:200]
    code = "from fracsight.cli import main; main()"
    run = subprocess.Popen(
        [sys.executable, "-c", code, "predict", "--model", str(archive), *map(str, images)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    deadline = time.monotonic() + 60
    while not any(temp.glob("fracsight-bundle-*/b/model.onnx")):
        assert run.poll() is None and time.monotonic() < deadline, "the bundle was not unpacked"
        time.sleep(0.05)
    time.sleep(1)  # predicting
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 128 + signal.SIGTERM
    assert not list(temp.glob("fracsight-bundle-*")), list(temp.iterdir())


def test_a_zip_is_unpacked_once_per_process_and_again_where_its_copy_was_taken(tmp_path: Path) -> None:
    """Unpacked once (a Predictor sent to each task of a process pool unpacked it at every task);
    a copy a temp cleaner emptied since is unpacked again, not refused naming the temp folder."""
    archive = _packaged_zip(tmp_path)
    first = resolve_bundle(archive)
    assert resolve_bundle(str(archive)) == first
    (first / "model.onnx").unlink()
    again = resolve_bundle(archive)
    assert again != first and (again / "model.onnx").is_file()


def test_process_workers_remove_their_unpacked_zip(tmp_path: Path) -> None:
    """A .zip Predictor handed to a ProcessPoolExecutor: each task's copy unpacked the archive again,
    and the workers (ended by os._exit, past atexit) left every copy in /tmp (20 tasks, 88 MB)."""
    import subprocess
    import sys

    archive = _packaged_zip(tmp_path)
    temp = tmp_path / "tmp"
    temp.mkdir()
    script = tmp_path / "workers.py"  # a file: spawned workers import their task from it
    script.write_text(
        "import multiprocessing as mp, sys, numpy as np\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "import fracsight\n"
        "def prob(p, image):\n"
        "    return p.predict(image, heatmap=False).fracture_probability\n"
        "if __name__ == '__main__':\n"
        "    p = fracsight.Predictor(sys.argv[1])\n"
        "    image = (np.arange(256 * 256) % 251).reshape(256, 256).astype(np.uint8)\n"
        "    with ProcessPoolExecutor(2, mp_context=mp.get_context(sys.argv[2])) as ex:\n"
        "        probs = list(ex.map(prob, [p] * 6, [image] * 6))\n"
        "    assert len(set(probs)) == 1 and probs[0] == prob(p, image), probs\n"
    )
    for method in ("spawn", "fork"):
        run = subprocess.run(
            [sys.executable, str(script), str(archive), method],
            capture_output=True,
            text=True,
            env={**os.environ, "TMPDIR": str(temp)},
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert not list(temp.glob("fracsight-bundle-*")), (method, list(temp.iterdir()))


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
