"""`fracsight benchmark`: the report's structure and the command (tiny runs; no timing asserted)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fracsight.benchmark import Row, run_benchmark, synthetic_images
from fracsight.cli import app
from fracsight.io import read_image

runner = CliRunner()


@pytest.fixture(scope="module")
def few_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench_images")
    synthetic_images(folder, n=3, size=(120, 90))
    return folder


def test_synthetic_images_look_like_radiographs(tmp_path: Path) -> None:
    paths = synthetic_images(tmp_path, n=2, size=(80, 60))
    assert [p.name for p in paths] == ["synthetic000.jpg", "synthetic001.jpg"]
    pixels = read_image(paths[0]).pixels
    assert pixels.shape == (80, 60) and pixels.std() > 0.1  # structure, not a blank field
    assert not np.array_equal(pixels, read_image(paths[1]).pixels)


def _check_main_row(row: Row) -> None:
    assert row.engine == "onnxruntime CPU" and row.input_size == 64
    assert row.latency_median_ms is not None and row.latency_p95_ms is not None
    assert 0 < row.latency_median_ms <= row.latency_p95_ms
    assert row.throughput_ips is not None and row.throughput_ips > 0
    assert row.peak_rss_mb is not None and 30 < row.peak_rss_mb < 4000
    assert row.note == "inference process never loaded torch"


def test_report_without_comparison(tiny_bundle: Path, few_images: Path) -> None:
    messages: list[str] = []
    report = run_benchmark(
        tiny_bundle, [few_images], runs=3, batch=2, compare=False, progress=messages.append
    )
    assert report.model == "tiny-test v1" and report.n_images == 3 and report.images == "3 given images"
    assert messages and "latency over 3 runs" in messages[0]
    main, gpu = report.rows
    _check_main_row(main)
    assert gpu.name == "GPU throughput"
    assert gpu.throughput_ips is not None or "no CUDA" in gpu.note
    assert [t.name for t in report.targets] == ["single-image median", "batch throughput", "peak RSS"]
    assert isinstance(report.machine["busy"], bool) and report.machine["torch"] is None
    # two runs told apart: which code, which model, which CPU, when (none of it was in the report)
    m = report.machine
    assert m["fracsight"] and m["bundle_onnx_sha256"] and m["started"].endswith("+00:00")
    assert m["usable_cpus"] >= 1 and isinstance(m["cpu_flags"], list) and isinstance(m["busy_during"], bool)
    assert all((t.met is None) == (m["busy"] or m["busy_during"]) for t in report.targets)
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["rows"][0]["name"] == "tiny-test v1"

    from rich.console import Console

    from fracsight.benchmark.report import render_report

    report.machine.update(busy=False, busy_during=True)  # as a run a helper's job landed in
    console = Console(record=True, width=220)
    for part in render_report(report):
        console.print(part)
    said = console.export_text()
    assert "other work started during the run" in said and "not comparable (busy machine)" in said
    assert "met" not in said.split("targets")[-1].replace("not comparable", "")


def test_report_with_torch_comparison(tiny_bundle: Path, few_images: Path) -> None:
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads on a busy 2-core machine are ~20x slower than one
    try:
        report = run_benchmark(tiny_bundle, [few_images / "synthetic000.jpg"], runs=1, batch=1)
    finally:
        torch.set_num_threads(threads)
    names = [r.name for r in report.rows]
    assert names == ["tiny-test v1", "same model", "ResNet50-224 recipe", "GPU throughput"]
    _check_main_row(report.rows[0])
    for row in report.rows[1:3]:
        assert row.engine == "torch eager"
        assert row.latency_median_ms and row.throughput_ips and row.peak_rss_mb is None
    assert report.rows[1].input_size == 64 and report.rows[2].input_size == 224
    assert "faster than ResNet50-224 eager" in [t.name for t in report.targets]


def test_command_json_and_table(tiny_bundle: Path, few_images: Path) -> None:
    args = ["benchmark", "--model", str(tiny_bundle), "--images", str(few_images)]
    args += ["--runs", "2", "--batch", "2", "--no-compare"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["runs"] == 2 and payload["batch"] == 2 and payload["rows"][0]["throughput_ips"] > 0
    table = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "fracsight benchmark" in table.stdout and "targets" in table.stdout
    assert "peak RSS" in table.stdout
    # the speed-up of the bundle given, whichever it is ("default faster" read as the packaged default's)
    assert "bundle faster" in table.stdout and "default faster" not in table.stdout
    # what the figures are taken over: a median and p95 of 2 runs is no median of 50
    assert (
        "3 given images; 2 timed single-image runs per row, 4 images per throughput pass in batches of 2;"
        in (table.stdout)
    )
    # redirected to a file (no terminal, no COLUMNS): cut to 80 columns, names and engines as `fracat…`
    to_file = runner.invoke(app, args)
    assert to_file.exit_code == 0, to_file.output
    assert (
        "…" not in to_file.stdout and "tiny-test v1 [1]" in to_file.stdout and "onnxruntime" in to_file.stdout
    )


def test_command_refuses_bad_inputs(tiny_bundle: Path, tmp_path: Path, few_images: Path) -> None:
    missing = runner.invoke(
        app, ["benchmark", "--images", str(tmp_path / "nowhere"), "--no-compare"], env={"COLUMNS": "200"}
    )
    assert missing.exit_code == 2 and "does not exist" in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = runner.invoke(app, ["benchmark", "--model", str(tiny_bundle), "--images", str(empty)])
    # 2, a bad argument, as `predict` and `batch run` exit for the same mistake (it was 1)
    assert no_images.exit_code == 2 and "error (no_images): no image files" in no_images.stderr
    unknown = runner.invoke(app, ["benchmark", "--model", "no-such-v0", "--images", str(few_images)])
    assert unknown.exit_code == 2 and "error (unknown_model)" in unknown.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "notes.jpg").write_text("not an image")
    unreadable = runner.invoke(app, ["benchmark", "--model", str(tiny_bundle), "--images", str(broken)])
    assert unreadable.exit_code == 2
    assert "none of the 1 given images can be read (notes.jpg: " in unreadable.stderr
    assert "Traceback" not in unreadable.output


def test_a_bundle_whose_folder_name_rich_would_read_as_markup_is_benchmarked(
    tiny_bundle: Path, tmp_path: Path, few_images: Path
) -> None:
    """The spinner on stderr read its text (which names the bundle) as markup: a bundle named
    "wrist [/] 2" ended the run in a MarkupError traceback, even with --json, and the timings
    done were lost."""
    odd = tmp_path / "bb[/]"
    shutil.copytree(tiny_bundle, odd)
    spec = json.loads((odd / "bundle.json").read_text())
    (odd / "bundle.json").write_text(json.dumps({**spec, "name": "wrist [/] 2"}))
    args = ["benchmark", "--model", str(odd), "--images", str(few_images), "--runs", "1", "--batch", "1"]
    # FORCE_COLOR: Rich takes stderr for a terminal, and draws the spinner, as a user sees it
    result = runner.invoke(app, [*args, "--no-compare", "--json"], env={"FORCE_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == "wrist [/] 2 v1"


def test_unreadable_images_are_left_out_and_named(tiny_bundle: Path, few_images: Path, tmp_path: Path):
    (tmp_path / "notes.jpg").write_text("not an image")
    report = run_benchmark(
        tiny_bundle, [few_images, tmp_path / "notes.jpg"], runs=1, batch=1, compare=False, progress=print
    )
    assert report.n_images == 3 and report.images == "3 of 4 given images (1 unreadable left out: notes.jpg)"


def test_the_resnet_recipe_reads_what_the_bundle_reads(few_images: Path, tmp_path: Path) -> None:
    """The recipe decoded every image with Pillow: a DICOM radiograph or a JPEG cut short (49 in
    FracAtlas), which the bundle rows read, failed the whole run after the bundle was timed
    (``benchmark of resnet50 failed: PIL.UnidentifiedImageError`` / ``OSError: image file is
    truncated``)."""
    pytest.importorskip("torch")
    pytest.importorskip("pydicom")
    from dicom_support import make_radiograph_dicom
    from fracsight.benchmark.baselines import recipe_rgb, resnet_recipe

    jpeg = few_images / "synthetic000.jpg"
    dicom = make_radiograph_dicom(jpeg, tmp_path / "xr.dcm")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) * 6 // 10])
    grey = np.asarray(recipe_rgb(jpeg))[..., 0].astype(int)
    for path in (dicom, cut):
        read_image(path)  # the bundle reads it
        rgb = np.asarray(recipe_rgb(path))
        assert rgb.shape == (120, 90, 3) and (rgb[..., 0] == rgb[..., 2]).all()
        top = slice(0, 40)  # the part of the picture the cut file still holds
        same = np.corrcoef(rgb[top, :, 0].ravel(), grey[top].ravel())[0, 1]
        assert same > 0.95  # the same picture, bone bright
    recipe = resnet_recipe(batch=2)
    recipe.predict_one(dicom)
    recipe.predict_all([dicom, jpeg, cut])


def test_a_bundle_named_again_in_also_is_timed_once(
    tiny_bundle: Path, few_images: Path, tmp_path: Path
) -> None:
    """`--also` naming the model (or one bundle twice, or a .zip or copy of it) timed it again: two
    rows of the same name and the targets twice, at twice the time."""
    import shutil

    image = [few_images / "synthetic000.jpg"]
    copy = shutil.copytree(tiny_bundle, tmp_path / "copy")  # as a .zip is: unpacked in a folder anew
    also = [tiny_bundle, tiny_bundle / ".." / tiny_bundle.name, copy]
    report = run_benchmark(tiny_bundle, image, runs=1, batch=1, compare=False, also=also)
    assert [r.name for r in report.rows] == ["tiny-test v1", "GPU throughput"]
    assert [t.name for t in report.targets] == ["single-image median", "batch throughput", "peak RSS"]
    # another bundle of the same name (every run without a recipe is "fracsight-model v1"): its rows
    # and targets could not be told from the first's
    spec = json.loads((copy / "bundle.json").read_text())
    spec["localization"]["min_box_score"] = 0.5
    (copy / "bundle.json").write_text(json.dumps(spec))
    report = run_benchmark(tiny_bundle, image, runs=1, batch=1, compare=False, also=[copy])
    assert [r.name for r in report.rows][:2] == [f"tiny-test v1 ({tiny_bundle})", f"tiny-test v1 ({copy})"]
    assert f"tiny-test v1 ({copy}): single-image median" in [t.name for t in report.targets]
    # and the stage table's columns too (it had two columns "tiny-test v1")
    report = run_benchmark(tiny_bundle, image, runs=1, batch=1, compare=False, also=[copy], stages=True)
    assert [s["name"] for s in report.stages] == [f"tiny-test v1 ({tiny_bundle})", f"tiny-test v1 ({copy})"]


def test_the_stages_of_a_class_only_bundle_time_no_boxes(head_bundle, few_images: Path) -> None:
    """A class-only bundle draws no boxes: the table gave 1.6 ms to boxes it never draws (and "rest",
    what the class map costs, clamped to 0)."""
    from fracsight.benchmark.report import render_report

    _, bundle = head_bundle("class")
    report = run_benchmark(
        bundle, [few_images / "synthetic000.jpg"], runs=1, batch=1, compare=False, stages=True
    )
    (found,) = report.stages
    assert found["ms"]["boxes"] is None and found["ms"]["network"] > 0
    assert json.loads(json.dumps(found))["ms"]["boxes"] is None
    from rich.console import Console

    console = Console(record=True, width=200)
    for part in render_report(report):
        console.print(part)
    boxes = next(line for line in console.export_text().splitlines() if line.strip(" │┃").startswith("boxes"))
    assert "–" in boxes


def test_a_timing_process_that_runs_too_long_is_an_error_not_a_traceback(
    tiny_bundle: Path, few_images: Path
) -> None:
    """``subprocess.TimeoutExpired`` escaped as a traceback after every row before it was timed."""
    from fracsight.benchmark.timing import _child

    args = {"kind": "bundle", "model": str(tiny_bundle), "images": [str(few_images / "synthetic000.jpg")]}
    found = _child("_timing_child", {**args, "start": 0, "runs": 5, "batch": 1}, timeout=0.2)
    assert found == {"error": "stopped after 0.2 s (5 runs): ask for fewer --runs or a smaller --batch"}
    assert "times" in _child("_timing_child", {**args, "start": 0, "runs": 2, "batch": 1})


def test_a_large_image_set_is_not_predicted_in_full_in_every_round(tiny_bundle: Path, tmp_path: Path) -> None:
    """A throughput pass predicted every given image: --images pointed at a whole data set took an
    hour. It takes the first 64 (more only where two batches need more), and says so."""
    synthetic_images(tmp_path, n=70, size=(120, 90))
    args = [
        "benchmark",
        "--model",
        str(tiny_bundle),
        "--images",
        str(tmp_path),
        "--runs",
        "1",
        "--no-compare",
    ]
    result = runner.invoke(app, [*args, "--batch", "2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["n_images"] == 70 and payload["throughput_images"] == 64
    assert (
        json.loads(runner.invoke(app, [*args, "--batch", "40", "--json"]).stdout)["throughput_images"] == 80
    )


def test_command_names_a_non_utf8_unreadable_file_readably(
    tiny_bundle: Path, few_images: Path, tmp_path: Path
):
    """A Latin-1 file name went into --json as a lone surrogate (``\\udcff``)."""
    (tmp_path / b"bad\xff.jpg".decode(errors="surrogateescape")).write_text("not an image")
    args = ["benchmark", "--model", str(tiny_bundle), "--images", str(few_images), "--images", str(tmp_path)]
    result = runner.invoke(app, [*args, "--runs", "1", "--batch", "1", "--no-compare", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == "3 of 4 given images (1 unreadable left out: bad\\xff.jpg)"


def test_rounds_alternate_between_pipelines_and_cover_every_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import fracsight.benchmark.timing as bench

    calls: list[dict] = []

    def fake_child(entry: str, args: dict) -> dict:
        calls.append(args)
        row = {"name": args["kind"], "engine": "e", "input_size": 1, "note": ""}
        return {**row, "times": [0.001 * len(calls)] * args["runs"], "throughput_ips": float(len(calls))}

    monkeypatch.setattr(bench, "_child", fake_child)
    rows = bench.timed_rows(
        ["bundle", "resnet50"], None, [Path("a.jpg")], runs=7, batch=2, say=lambda m: None
    )
    assert [c["kind"] for c in calls] == ["bundle", "resnet50"] * 5  # alternating rounds
    for kind in ("bundle", "resnet50"):
        mine = [c for c in calls if c["kind"] == kind]
        assert [c["runs"] for c in mine] == [2, 2, 1, 1, 1]
        assert [c["start"] for c in mine] == [0, 2, 4, 5, 6]
    assert [r.throughput_ips for r in rows] == [5.0, 6.0]  # the median of the rounds' passes
    assert rows[0].latency_median_ms == pytest.approx(3.0)  # of all 7 runs: 1, 1, 3, 3, 5, 7, 9 ms
    assert rows[0].round_medians_ms == pytest.approx((1.0, 3.0, 5.0, 7.0, 9.0))  # the drift, round by round
    assert rows[1].round_medians_ms == pytest.approx((2.0, 4.0, 6.0, 8.0, 10.0))
    # each image across the rounds that timed it (one image here: timed in every round)
    assert rows[0].same_image_rounds_ms == (pytest.approx((1.0, 3.0, 5.0, 7.0, 9.0)),)


def test_an_idle_machine_with_images_of_two_sizes_is_not_called_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds start at different images: with a small and a large image their medians were 20 and
    117 ms on an idle machine, and every target said "not comparable (busy machine)"."""
    import fracsight.benchmark.timing as bench
    from fracsight.benchmark.machine import busy_during

    sizes = {"small.png": 0.020, "large.png": 0.117}

    def fake_child(entry: str, args: dict) -> dict:
        images, start = args["images"], args["start"]
        times = [sizes[Path(images[(start + i) % len(images)]).name] for i in range(args["runs"])]
        return {
            "name": "b",
            "engine": "e",
            "input_size": 1,
            "note": "",
            "times": times,
            "throughput_ips": 1.0,
        }

    monkeypatch.setattr(bench, "_child", fake_child)
    (row,) = bench.timed_rows(["bundle"], None, [Path("small.png"), Path("large.png")], 4, 1, lambda m: None)
    assert max(row.round_medians_ms) / min(row.round_medians_ms) > 5  # the rounds differ
    assert not busy_during(list(row.same_image_rounds_ms), 0.5, 2)  # each image does not


def test_busy_means_work_running_now_and_falls_back_to_the_load_average():
    from fracsight.benchmark.machine import machine_busy

    assert machine_busy(0.6, 0.0, 2) and not machine_busy(0.05, 1.9, 2)  # the sample decides
    assert machine_busy(None, 1.5, 2) and not machine_busy(None, 0.7, 2) and not machine_busy(None, None, 2)


def test_work_that_starts_during_the_run_is_seen():
    """The busy check before the run missed load that began during it: round medians of 39 to 2,480
    ms beside "faster than ResNet50: 21.3x, met" (3.5-4.8x on an idle machine)."""
    from fracsight.benchmark.machine import busy_during

    assert busy_during([(39.2, 2480.0, 41.0)], 1.0, 2) and busy_during([(10.0, 11.0)], 4.1, 2)
    assert not busy_during([(10.0, 11.0, 10.5), (), (5.0,)], 1.5, 2) and not busy_during([], None, 2)


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="Linux only")
def test_cpu_busy_share_sees_a_busy_thread():
    import threading

    from fracsight.benchmark.machine import cpu_busy_share

    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        share = cpu_busy_share(0.3)
    finally:
        stop.set()
        worker.join()
    assert share is not None and share >= 0.9 / (os.cpu_count() or 1)  # one core of ours, at least


def test_a_figure_next_to_its_target_is_never_shown_as_the_target() -> None:
    """59.96 ms printed as "60.0 ms" beside "< 60 ms: met", 40.0 images/s beside ">= 40: missed",
    400 MB beside "< 400 MB: met": the verdicts contradicted the numbers printed."""
    from fracsight.benchmark.report import (
        RESNET_ROW,
        TARGET_LATENCY_MS,
        TARGET_RSS_MB,
        TARGET_SPEEDUP,
        TARGET_THROUGHPUT,
        Row,
        targets_of,
    )

    near = Row("b", "e", 384, TARGET_LATENCY_MS - 0.04, None, TARGET_THROUGHPUT - 0.04, TARGET_RSS_MB - 0.4)
    resnet = Row(RESNET_ROW, "torch", 224, near.latency_median_ms * (TARGET_SPEEDUP - 0.002))
    for target in targets_of([near, resnet]):
        shown = float(target.measured.split()[0].rstrip("x"))
        bound = float(target.goal.split()[1].rstrip("x"))
        assert shown != bound, target  # a reader can tell the figure from the target
        assert target.met == (shown < bound if target.goal.startswith("<") else shown >= bound), target


def test_a_busy_machines_targets_are_not_met_in_the_json_either() -> None:
    """`benchmark --json` said "met": true for every target while the table beside it said "not
    comparable (busy machine)": a CI gate reading the JSON passed on distorted figures."""
    from fracsight.benchmark.report import Row, targets_of

    rows = [Row("b", "e", 384, 10.0, None, 100.0, 100.0)]
    assert [t.met for t in targets_of(rows)] == [True, True, True]
    assert [t.met for t in targets_of(rows, comparable=False)] == [None, None, None]


def test_a_cuda_provider_that_falls_back_to_the_cpu_gives_no_gpu_figure(
    tiny_bundle: Path, few_images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime-gpu where CUDA cannot load (a GPU image run without --gpus) ran the 'GPU' row
    on the CPU by itself: a CPU figure was shown as "onnxruntime CUDA" throughput."""
    import onnxruntime as ort

    from fracsight.benchmark.baselines import gpu_row
    from fracsight.inference import Predictor, onnx_model

    predictor = Predictor(str(tiny_bundle))
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(onnx_model, "cuda_loads", lambda: True)  # the session falls back all the same
    row = gpu_row(predictor, sorted(few_images.iterdir()), 2, allow_torch=False)
    assert row.engine == "-" and row.throughput_ips is None, row
    assert "no CUDA that onnxruntime can use" in row.note
