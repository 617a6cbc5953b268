"""`fracsight predict` through typer's CliRunner: output formats, files written, studies, exit codes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import is_overlay_of
from fracsight.cli import app, invocation
from fracsight.inference import NOTICE

runner = CliRunner()
WIDE = {"COLUMNS": "220"}  # rich wraps tables to the terminal width


@pytest.fixture(scope="module")
def images(fracatlas_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three real radiographs copied to a scratch folder (two JPEGs, one PNG)."""
    folder = tmp_path_factory.mktemp("cli_images")
    sources = [
        *sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[5:7],
        sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[5],
    ]
    out = [shutil.copyfile(src, folder / src.name) for src in sources[:2]]
    png = folder / f"{sources[2].stem}.png"
    Image.open(sources[2]).save(png)
    return [Path(p) for p in out] + [png]


def _predict(bundle: Path, *args: str | Path):
    return runner.invoke(app, ["predict", "--model", str(bundle), *map(str, args)], env=WIDE)


def test_table_output(tiny_bundle: Path, images: list[Path]) -> None:
    result = _predict(tiny_bundle, *images)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "tiny-test v1" in out
    for path in images:
        assert path.name in out
    assert out.count("fracture suspected") + out.count("no fracture detected") == len(images)
    assert NOTICE in " ".join(out.split())


def test_table_on_a_narrow_terminal_wraps_instead_of_cutting(tiny_bundle: Path, images: list[Path]) -> None:
    result = runner.invoke(
        app, ["predict", "--model", str(tiny_bundle), str(images[0])], env={"COLUMNS": "64"}
    )
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout and "..." not in result.stdout
    # narrower than 80 columns each image is a block of "column: value" lines, not a table
    lines = result.stdout.splitlines()
    assert images[0].name in lines  # the file name whole, on a line of its own
    assert any(line.startswith("  fracture probability: ") for line in lines)


def test_table_on_an_80_column_terminal_keeps_every_column_whole(
    tiny_bundle: Path, images: list[Path]
) -> None:
    result = runner.invoke(
        app, ["predict", "--model", str(tiny_bundle), str(images[0])], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = [line for line in lines if "┃" in line]
    assert any("probability" in line.split("┃")[2] for line in header)  # not broken inside the word
    # every column is there, the last one included: nothing pushed off the right edge
    separators = {line.count("┃") for line in header} | {line.count("│") for line in lines if "│" in line}
    assert len(separators) == 1
    assert "error" in " ".join(line.split("┃")[-1] for line in header)


def test_json_output_parses(tiny_bundle: Path, images: list[Path]) -> None:
    result = _predict(tiny_bundle, *images, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["model"] == "tiny-test v1" and payload["notice"] == NOTICE
    assert [r["source"] for r in payload["images"]] == [p.name for p in images]
    assert all(0.0 <= r["fracture_probability"] <= 1.0 for r in payload["images"])
    assert payload["studies"] == []


def test_operating_point_option(tiny_bundle: Path, images: list[Path]) -> None:
    result = _predict(tiny_bundle, images[0], "--json", "--operating-point", "triage")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"][0]["operating_point"]["name"] == "triage"
    bad = _predict(tiny_bundle, images[0], "--operating-point", "nowhere")
    assert bad.exit_code == 2 and "unknown operating point" in bad.stderr  # a bad argument
    # an empty name (an unset variable in a script) is refused too; it once meant the default
    empty = _predict(tiny_bundle, images[0], "--operating-point", "")
    assert empty.exit_code == 2 and "error (empty_argument)" in empty.stderr


def test_an_empty_argument_is_refused_not_read_as_the_current_folder(
    tiny_bundle: Path, images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fracsight predict "$IMAGE"` with IMAGE unset: Path("") is the current folder, whose images
    were all read; every empty argument (or `--option=` with nothing after it) is refused."""
    import shutil

    shutil.copy(images[0], tmp_path / "in-the-current-folder.jpg")
    monkeypatch.chdir(tmp_path)
    for args in ([""], [str(images[0]), "--csv="], ["--json", "", str(images[0])]):
        result = _predict(tiny_bundle, *args)
        assert result.exit_code == 2 and "error (empty_argument)" in result.stderr, result.output
        assert "Traceback" not in result.output and "in-the-current-folder" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in-the-current-folder.jpg"]
    # a value that merely ends with "=" (base64 padding) is a value
    padded = _predict(tiny_bundle, images[0], "--csv=out==")
    assert padded.exit_code == 0, padded.output
    assert (tmp_path / "out==").is_file()


def test_csv_is_written_and_not_overwritten_by_default(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    target = tmp_path / "results.csv"
    result = _predict(tiny_bundle, *images, "--csv", target)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    assert tuple(rows[0]) == (  # tiny_bundle has a fracture head only: no region or class columns
        "kind", "source", "decision", "fracture_probability", "operating_point", "threshold", "top_box",
        "top_box_score", "reliable", "warnings", "error_code", "error",
    )  # fmt: skip
    assert [r["source"] for r in rows] == [p.name for p in images]
    assert all(r["kind"] == "image" and r["decision"] for r in rows)

    before = target.read_bytes()
    refused = _predict(tiny_bundle, images[0], "--csv", target)
    assert refused.exit_code == 2
    assert "exists" in refused.stderr and "--overwrite" in refused.stderr
    assert target.read_bytes() == before

    replaced = _predict(tiny_bundle, images[0], "--csv", target, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert len(list(csv.DictReader(target.open(encoding="utf-8")))) == 1


def test_outputs_onto_or_into_the_inputs_are_refused_before_any_work(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    """--csv naming an image being read would replace it, with --overwrite too; overlays written
    into a folder being read would be read as radiographs the next time: both refused, nothing
    written, the images as they were."""
    folder = tmp_path / "scans"
    folder.mkdir()
    copies = [shutil.copyfile(p, folder / p.name) for p in images]
    before = {p: Path(p).read_bytes() for p in copies}
    onto = _predict(tiny_bundle, copies[0], "--csv", copies[0], "--overwrite")
    assert onto.exit_code == 2 and "error (output_refused)" in onto.stderr, onto.output
    assert "one of the images to predict" in onto.stderr
    in_folder = _predict(
        tiny_bundle, folder, "--csv", Path(copies[1]).parent / ".." / "scans" / images[1].name, "--overwrite"
    )
    assert in_folder.exit_code == 2 and "one of the images to predict" in in_folder.stderr
    for overlays in (folder, folder / "overlays"):
        refused = _predict(tiny_bundle, folder, "--overlay-dir", overlays)
        assert refused.exit_code == 2 and "error (output_refused)" in refused.stderr, refused.output
        assert "inside" in refused.stderr and "Traceback" not in refused.output
    assert {p: Path(p).read_bytes() for p in copies} == before
    assert sorted(folder.iterdir()) == sorted(map(Path, copies))
    beside = _predict(tiny_bundle, folder, "--csv", folder / "results.csv", "--overlay-dir", tmp_path / "o")
    assert beside.exit_code == 0, beside.output  # a CSV in the folder is not an image: allowed


def test_overlays_have_the_original_size(tiny_bundle: Path, images: list[Path], tmp_path: Path) -> None:
    overlays = tmp_path / "overlays"
    result = _predict(tiny_bundle, *images, "--overlay-dir", overlays)
    assert result.exit_code == 0, result.output
    for path in images:
        written = overlays / f"{path.stem}.overlay.png"
        assert written.is_file(), sorted(overlays.iterdir())
        with Image.open(written) as overlay, Image.open(path) as original:
            assert overlay.format == "PNG"
            assert is_overlay_of(overlay.size, *original.size)


def test_a_table_redirected_to_a_file_is_one_line_a_row_with_force_color(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    """FORCE_COLOR=1 (common in CI) makes Rich call a log file a terminal: the table written to it
    was folded at 80 columns again, a long name and a box's numbers cut over two lines."""
    import subprocess
    import sys

    long_name = tmp_path / ("a-radiograph-with-a-rather-long-name-from-the-emergency-department" + ".jpg")
    shutil.copyfile(images[0], long_name)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR")}
    with open(tmp_path / "out.txt", "wb") as out:
        done = subprocess.run(
            [sys.executable, "-m", "fracsight", "predict", "--model", str(tiny_bundle), str(long_name)],
            stdout=out,
            stderr=subprocess.PIPE,
            env={**env, "FORCE_COLOR": "1"},
            timeout=300,
        )
    assert done.returncode == 0, done.stderr.decode()
    text = (tmp_path / "out.txt").read_text(encoding="utf-8")
    (row,) = [line for line in text.splitlines() if long_name.name in line]
    assert "fracture suspected" in row or "no fracture detected" in row, text


def test_an_overlay_name_another_run_takes_meanwhile_is_never_replaced(
    tiny_bundle: Path, images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `predict --overlay-dir SAME` runs at once: each found IMG.overlay.png free, drew (the slow
    part) and renamed its picture over the other's; 10 of 48 overlays gone, both exit 0, and a user
    opened another film with the other decision under its name."""
    import fracsight.explain.overlay as overlay_module

    overlays = tmp_path / "overlays"
    target = overlays / f"{images[0].stem}.overlay.png"
    draw = overlay_module.render_overlay

    def drawn_while_another_run_writes(*args, **kwargs):
        if not target.exists():
            target.write_bytes(b"the other run's overlay")
        return draw(*args, **kwargs)

    monkeypatch.setattr(overlay_module, "render_overlay", drawn_while_another_run_writes)
    result = _predict(tiny_bundle, images[0], "--overlay-dir", overlays)
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == b"the other run's overlay"  # theirs, untouched
    assert {p.name for p in overlays.iterdir()} == {target.name, f"{images[0].stem}.overlay-1.png"}


def test_two_files_of_one_name_get_rows_and_overlays_told_apart(
    tiny_bundle: Path, images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = tmp_path / "in"
    for folder, image in zip(("a", "b", "c/a"), images, strict=True):
        (given / folder).mkdir(parents=True)
        shutil.copyfile(image, given / folder / "x.jpg")
    overlays = tmp_path / "overlays"

    def sources(*args: str) -> list[str]:
        result = _predict(tiny_bundle, *args, "--json", "--overlay-dir", overlays)
        assert result.exit_code == 0, result.output
        return [r["source"] for r in json.loads(result.stdout)["images"]]

    monkeypatch.chdir(given)  # c/a/x.jpg is named a/x.jpg under c: the paths as typed, all of them
    assert sources("c", "a", "b") == ["c/a/x.jpg", "a/x.jpg", "b/x.jpg"]
    monkeypatch.chdir(given / "a")
    assert sources("../a/x.jpg", "../b/x.jpg") == ["../a/x.jpg", "../b/x.jpg"]
    # the overlays stay under --overlay-dir ("..": not a way out of it, but a folder of its own, so
    # that ../a/x.jpg's is not at the place a/x.jpg names), one per file, none replaced
    written = sorted(p.relative_to(overlays).as_posix() for p in overlays.rglob("*.png"))
    from_up = ["_up/a/x.overlay.png", "_up/b/x.overlay.png"]
    assert written == [*from_up, "a/x.overlay.png", "b/x.overlay.png", "c/a/x.overlay.png"]
    assert sorted(p.name for p in given.rglob("*.*")) == ["x.jpg"] * 3
    # `--overlay-dir .` above the folders read: the rows' folders under it are the folders read,
    # and a/x.jpg's overlay went into a, read as a radiograph by the next run
    monkeypatch.chdir(given)
    refused = _predict(tiny_bundle, "a", "b", "--overlay-dir", ".")
    assert refused.exit_code == 2 and "error (output_refused)" in refused.stderr, refused.output
    assert "--overlay-dir . would put the overlay of a/x.jpg into " in refused.stderr
    assert sorted(p.name for p in given.rglob("*.*")) == ["x.jpg"] * 3


def test_two_files_of_one_stem_in_one_folder_get_overlays_named_by_their_suffix(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    given = tmp_path / "in"
    given.mkdir()
    shutil.copyfile(images[0], given / "x.jpg")
    Image.open(images[1]).save(given / "x.png")
    shutil.copyfile(images[2], given / "y.jpg")
    overlays = tmp_path / "overlays"
    result = _predict(tiny_bundle, given, "--overlay-dir", overlays, "--batch-size", "3")
    assert result.exit_code == 0, result.output
    # whose overlay is which must not depend on the order the files were read in
    assert sorted(p.name for p in overlays.iterdir()) == [
        "x.jpg.overlay.png",
        "x.png.overlay.png",
        "y.overlay.png",
    ]
    with Image.open(overlays / "x.png.overlay.png") as overlay, Image.open(images[1]) as original:
        assert is_overlay_of(overlay.size, *original.size)


def test_ctrl_c_says_what_was_done_and_leaves_no_half_written_overlay(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    given, overlays = tmp_path / "in", tmp_path / "overlays"
    given.mkdir()
    with Image.open(images[0]) as image:  # large enough that each overlay takes a while to write
        big = image.convert("L").resize((3000, 3600))
    for i in range(12):
        big.save(given / f"film{i:02d}.png")
    command = [sys.executable, "-c", "from fracsight.cli import main; main()", "predict", str(given)]
    run = subprocess.Popen(
        [
            *command,
            "--model",
            str(tiny_bundle),
            "--overlay-dir",
            str(overlays),
            "--csv",
            str(tmp_path / "r.csv"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for _ in range(1200):  # Ctrl-C as soon as the first overlay has been written
        if overlays.is_dir() and any(p.suffix == ".png" for p in overlays.iterdir()):
            break
        if run.poll() is not None:
            break
        time.sleep(0.1)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err.decode()
    assert "interrupted: " in err.decode() and "of 12 images predicted" in err.decode()
    assert "Traceback" not in err.decode() and not (tmp_path / "r.csv").exists()
    written = sorted(overlays.iterdir())
    assert written and all(p.name.endswith(".overlay.png") for p in written), written  # no temporary files
    for path in written:
        with Image.open(path) as overlay:
            overlay.load()  # a truncated PNG raises here


@pytest.mark.skipif(not os.path.exists("/dev/stdout"), reason="/dev/stdout is Linux's")
def test_csv_to_stdout_by_another_name_is_csv_to_stdout(tiny_bundle: Path, images: list[Path]) -> None:
    """``--csv /dev/stdout`` was written as a file: with --json the rows came before the JSON and broke
    it; without, the table followed the rows."""
    command = [sys.executable, "-c", "from fracsight.cli import main; main()", "predict", str(images[0])]
    command += ["--model", str(tiny_bundle), "--csv", "/dev/stdout"]
    both = subprocess.run([*command, "--json", "--overwrite"], capture_output=True, timeout=120, text=True)
    assert both.returncode == 2 and not both.stdout
    assert "--csv /dev/stdout and --json both write to stdout: choose one" in both.stderr
    rows = subprocess.run(command, capture_output=True, timeout=120, text=True)
    assert rows.returncode == 0, rows.stderr
    assert [r["source"] for r in csv.DictReader(rows.stdout.splitlines())] == [images[0].name]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_csv_into_a_pipe_or_a_device_needs_no_overwrite(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    """``--csv >(gzip > r.gz)``, a named pipe to a reader, ``/dev/null``: refused as files that
    "exist", to be replaced with --overwrite (a flag that does replace regular files)."""
    import threading

    pipe = tmp_path / "rows"
    os.mkfifo(pipe)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(pipe.read_text(encoding="utf-8")), daemon=True)
    reader.start()
    command = [sys.executable, "-c", "from fracsight.cli import main; main()", "predict", str(images[0])]
    command += ["--model", str(tiny_bundle), "--csv"]
    into_pipe = subprocess.run([*command, str(pipe)], capture_output=True, timeout=120, text=True)
    if into_pipe.returncode != 0:  # refused: the reader still waits for a writer
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
    reader.join(timeout=60)
    assert into_pipe.returncode == 0, into_pipe.stderr
    assert [r["source"] for r in csv.DictReader(got[0].splitlines())] == [images[0].name]
    assert subprocess.run([*command, os.devnull], capture_output=True, timeout=120).returncode == 0
    (tmp_path / "r.csv").write_text("mine")  # a file of the user's is still not replaced unasked
    kept = subprocess.run([*command, str(tmp_path / "r.csv")], capture_output=True, timeout=120, text=True)
    assert kept.returncode == 2 and "exists; pass --overwrite" in kept.stderr
    assert (tmp_path / "r.csv").read_text() == "mine"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_whose_reader_opens_it_a_moment_later_is_written(tmp_path: Path) -> None:
    """A reader started beside the writer (`cat rows &`, a thread) that opened the pipe a moment
    after the writer looked: "no program reads from this pipe", nothing written."""
    import threading

    from fracsight._files import write_output

    pipe = tmp_path / "rows"
    os.mkfifo(pipe)
    got: list[str] = []
    reader = threading.Timer(0.5, lambda: got.append(pipe.read_text(encoding="utf-8")))
    reader.start()
    write_output(pipe, lambda target: target.write_text("a,b\n", encoding="utf-8"))
    reader.join(30)
    assert got == ["a,b\n"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_in_a_folder_is_not_waited_on(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(images[0], folder / images[0].name)
    os.mkfifo(folder / "pipe")  # no image extension: its first bytes were read, which waits for a writer
    command = [sys.executable, "-c", "from fracsight.cli import main; main()", "predict", str(folder)]
    done = subprocess.run([*command, "--model", str(tiny_bundle), "--json"], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [r["source"] for r in json.loads(done.stdout)["images"]] == [images[0].name]


def test_mura_style_folder_gives_a_study_row(tiny_bundle: Path, images: list[Path], tmp_path: Path) -> None:
    study = tmp_path / "XR_WRIST" / "patient1" / "study1_negative"
    study.mkdir(parents=True)
    for i, src in enumerate(images[:2], start=1):
        Image.open(src).save(study / f"image{i}.png")
    result = _predict(tiny_bundle, tmp_path / "XR_WRIST", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    named = ["patient1/study1_negative/image1.png", "patient1/study1_negative/image2.png"]
    assert [r["source"] for r in payload["images"]] == named  # the path under the folder given
    (row,) = payload["studies"]
    assert row["study"] == "patient1/study1_negative"
    assert row["images"] == named
    mean = sum(r["fracture_probability"] for r in payload["images"]) / 2
    assert row["fracture_probability"] == pytest.approx(mean, abs=1e-5)
    table = _predict(tiny_bundle, tmp_path / "XR_WRIST")
    assert "study patient1/study1_negative" in table.stdout and "(2 views)" in table.stdout
    assert not any("not given" in w for w in row["warnings"])
    # one view given by path: the verdict under the study's name said nothing of the view left out
    (alone,) = json.loads(_predict(tiny_bundle, study / "image2.png", "--json").stdout)["studies"]
    assert alone["study"] == "patient1/study1_negative" and alone["images"] == ["image2.png"]
    assert "1 of the study folder's images was not given (image1.png)" in " ".join(alone["warnings"])
    # and given as one study (--study), which said nothing of it
    (combined,) = json.loads(_predict(tiny_bundle, study / "image2.png", "--study", "--json").stdout)[
        "studies"
    ]
    assert "1 of the study folder's images was not given (image1.png)" in " ".join(combined["warnings"])
    other = tmp_path / "XR_WRIST" / "patient1" / "study2_negative"
    other.mkdir()
    (other / "image1.png").symlink_to(study / "image1.png")
    (other / "image2.png").symlink_to(study / "image2.png")
    args = (study / "image2.png", other / "image1.png", "--study", "--json")
    (combined,) = json.loads(_predict(tiny_bundle, *args).stdout)["studies"]
    said = "2 of the study folders' images were not given (patient1/study1_negative/image1.png, patient1/"
    said += "study2_negative/image2.png)"
    assert said in " ".join(combined["warnings"]), combined["warnings"]
    shutil.rmtree(other)
    # a PACS export's report beside the images is no image left out, and a link to one is that one
    from corpus import BASIC_TEXT_SR, dicom_bytes

    (study / "IM000003").write_bytes(dicom_bytes(modality="SR", sop_class=BASIC_TEXT_SR))
    (study / "link.png").symlink_to(study / "image1.png")
    (again,) = json.loads(_predict(tiny_bundle, study / "image2.png", "--json").stdout)["studies"]
    assert "1 of the study folder's images was not given (image1.png)" in " ".join(again["warnings"])
    # nor an overlay fracsight wrote there (`predict *.png --overlay-dir .`), said "not given" too
    assert _predict(tiny_bundle, study / "image2.png", "--overlay-dir", study).exit_code == 0
    assert (study / "image2.overlay.png").is_file()
    (beside,) = json.loads(_predict(tiny_bundle, study / "image2.png", "--json").stdout)["studies"]
    assert "1 of the study folder's images was not given (image1.png)" in " ".join(beside["warnings"])
    # nor a view that could not be read: the study was "not reliable" on every PACS export
    whole = _predict(tiny_bundle, study, "--json")
    (everything,) = json.loads(whole.stdout)["studies"]
    assert everything["reliable"] and not any("could not be read" in w for w in everything["warnings"])
    (report,) = [r for r in json.loads(whole.stdout)["images"] if r["source"].endswith("IM000003")]
    assert report["error_code"] == "unsupported_modality"  # its own row says what it is
    # a CT slice, or a view whose Modality no one knows (`DR`), is an image of the patient unread
    for modality in ("CT", "DR"):
        (study / "IM000004").write_bytes(dicom_bytes(modality=modality))
        (unsure,) = json.loads(_predict(tiny_bundle, study, "--json").stdout)["studies"]
        assert not unsure["reliable"] and unsure["unread_images"] == ["IM000004"], (modality, unsure)


def test_a_study_folder_predicted_from_inside_still_gives_its_study_row(
    tiny_bundle: Path, images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cd patient2/study1_negative; fracsight predict .` (or its files by name): no study row, no
    "not given" warning: the folder "." has no name to read as a study folder's."""
    study = tmp_path / "XR_WRIST" / "patient2" / "study1_negative"
    study.mkdir(parents=True)
    for i, src in enumerate(images[:2], start=1):
        Image.open(src).save(study / f"image{i}.png")
    monkeypatch.chdir(study)
    for args in (["."], ["image1.png", "image2.png"]):
        (row,) = json.loads(_predict(tiny_bundle, *args, "--json").stdout)["studies"]
        assert row["study"] == "patient2/study1_negative" and len(row["images"]) == 2, args
    (alone,) = json.loads(_predict(tiny_bundle, "image2.png", "--json").stdout)["studies"]
    assert "1 of the study folder's images was not given (image1.png)" in " ".join(alone["warnings"])


def test_study_flag_combines_all_inputs(tiny_bundle: Path, images: list[Path]) -> None:
    result = _predict(tiny_bundle, *images, "--study", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["studies"]
    assert row["study"] == "all inputs" and len(row["images"]) == len(images)


def test_one_study_over_several_study_folders_says_so(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    """``predict patient1 --study`` averaged the patient's two examinations into one verdict
    without a word, where ``predict patient1`` (and ``evaluate``) keep a verdict per study folder."""
    for study, src in (("study1_negative", images[0]), ("study2_positive", images[1])):
        (tmp_path / "patient1" / study).mkdir(parents=True)
        Image.open(src).save(tmp_path / "patient1" / study / "image1.png")
    (combined,) = json.loads(_predict(tiny_bundle, tmp_path / "patient1", "--study", "--json").stdout)[
        "studies"
    ]
    assert combined["study"] == "all inputs" and len(combined["images"]) == 2
    assert (
        "the views come from 2 study folders (patient1/study1_negative, patient1/study2_positive), "
        "combined here as one examination: are they one? Read apart, each folder is a study"
    ) in combined["warnings"]
    apart = json.loads(_predict(tiny_bundle, tmp_path / "patient1", "--json").stdout)["studies"]
    assert [s["study"] for s in apart] == ["patient1/study1_negative", "patient1/study2_positive"]
    assert not any("study folders" in w for s in apart for w in s["warnings"])
    one_folder = json.loads(
        _predict(tiny_bundle, tmp_path / "patient1" / "study1_negative", "--study", "--json").stdout
    )["studies"]
    assert not any("study folders" in w for w in one_folder[0]["warnings"])


def test_two_body_parts_of_one_patient_are_two_studies(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    """MURA numbers patients per body part: XR_WRIST/patient1/study1 and XR_ELBOW/patient1/study1
    are two examinations (once merged into one study, the mean of both)."""
    for part, src in (("XR_WRIST", images[0]), ("XR_ELBOW", images[2])):
        study = tmp_path / "valid" / part / "patient11185" / "study1_positive"
        study.mkdir(parents=True)
        Image.open(src).save(study / "image1.png")
    result = _predict(tiny_bundle, tmp_path, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    image = {r["source"]: r["fracture_probability"] for r in payload["images"]}
    studies = {s["study"]: s for s in payload["studies"]}
    assert sorted(studies) == [
        "XR_ELBOW/patient11185/study1_positive",
        "XR_WRIST/patient11185/study1_positive",
    ]
    for name, s in studies.items():
        (view,) = s["images"]
        assert view == f"valid/{name}/image1.png"
        assert s["fracture_probability"] == pytest.approx(image[view], abs=1e-5)


def test_a_file_given_twice_counts_once(
    tiny_bundle: Path, images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One row and one view per file (by resolved path), as `batch run` keys its rows."""
    a, b = (shutil.copyfile(src, tmp_path / f"{n}.jpg") for n, src in (("a", images[0]), ("b", images[2])))
    monkeypatch.chdir(tmp_path)
    for args in (["a.jpg", "a.jpg", "./a.jpg", "b.jpg"], [".", "a.jpg", str(b)]):
        result = _predict(tiny_bundle, *args, "--study", "--json")
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert [r["source"] for r in payload["images"]] == ["a.jpg", "b.jpg"]
        (study,) = payload["studies"]
        assert study["images"] == ["a.jpg", "b.jpg"]
        mean = sum(r["fracture_probability"] for r in payload["images"]) / 2
        assert study["fracture_probability"] == pytest.approx(mean, abs=1e-5)
    assert Path(a).exists()


def test_a_copy_under_another_name_is_one_view_of_the_study(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    """Each file keeps its row, but a copy of a view (another name, the same bytes) weighed that view
    double in the study's mean; the REST API and the web app count it once too."""
    a = shutil.copyfile(images[0], tmp_path / "a.jpg")
    copy = shutil.copyfile(images[0], tmp_path / "copy.jpg")
    b = shutil.copyfile(images[2], tmp_path / "b.jpg")
    result = _predict(tiny_bundle, a, copy, b, "--study", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    p = {Path(r["source"]).name: r["fracture_probability"] for r in payload["images"]}
    assert sorted(p) == ["a.jpg", "b.jpg", "copy.jpg"]
    (study,) = payload["studies"]
    assert [Path(name).name for name in study["images"]] == ["a.jpg", "b.jpg"]
    assert study["fracture_probability"] == pytest.approx((p["a.jpg"] + p["b.jpg"]) / 2, abs=1e-5)
    warning = study["warnings"][0]  # (a view above the threshold under the mean may add a second)
    assert warning.startswith("given more than once, so counted once: ") and "copy.jpg (the same" in warning
    table = _predict(tiny_bundle, a, copy, b, "--study")
    assert "given more than once, so counted once" in " ".join(table.stdout.split())


def test_a_study_with_an_unreadable_view_says_so(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    study = tmp_path / "patient1" / "study1_negative"
    study.mkdir(parents=True)
    Image.open(images[2]).save(study / "image1.png")
    (study / "image2.png").write_bytes(b"")
    unread = tmp_path / "patient2" / "study1_negative"
    unread.mkdir(parents=True)
    (unread / "image1.png").write_bytes(b"")
    result = _predict(tiny_bundle, tmp_path, "--json", "--csv", tmp_path.parent / "views.csv", "--overwrite")
    assert result.exit_code == 1, result.output
    (row,) = json.loads(result.stdout)["studies"]  # patient2: no view read, no study row
    assert row["study"] == "patient1/study1_negative"
    assert row["images"] == ["patient1/study1_negative/image1.png"]
    assert row["unread_images"] == ["patient1/study1_negative/image2.png"]
    assert row["reliable"] is False and row["decision"] == "not reliable: some views could not be read"
    assert row["warnings"] == [
        "1 of 2 views could not be read (patient1/study1_negative/image2.png); "
        "the study result is from the other 1 only"
    ]
    with (tmp_path.parent / "views.csv").open(newline="") as f:
        (study_row,) = [r for r in csv.DictReader(f) if r["kind"] == "study"]
    assert study_row["reliable"] == "False" and study_row["warnings"] == row["warnings"][0]
    table = _predict(tiny_bundle, tmp_path)
    assert "1 of 2 views could not be read" in " ".join(table.stdout.split())


def test_missing_path_exits_2_with_a_message(tiny_bundle: Path, images: list[Path], tmp_path: Path) -> None:
    result = _predict(tiny_bundle, images[0], tmp_path / "nowhere.png")
    assert result.exit_code == 2
    assert "no such file or folder" in result.stderr and "nowhere.png" in result.stderr
    assert "pattern" not in result.stderr
    # `predict "mura/*/*.jpg"`: the quotes keep the shell from expanding it, and fracsight does not
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(images[0].read_bytes())
    quoted = _predict(tiny_bundle, tmp_path / "*" / "*.jpg")
    assert quoted.exit_code == 2 and "a pattern in quotes is not expanded" in " ".join(quoted.stderr.split())
    # `predict scans/*.PNG` unquoted, of .jpg files: the shell hands the pattern on, matching nothing
    # (the advice was to leave out quotes the user never typed)
    unmatched = _predict(tiny_bundle, tmp_path / "*" / "*.PNG")
    said = " ".join(unmatched.stderr.split())
    assert unmatched.exit_code == 2 and "no file matches this pattern" in said and "quotes" not in said
    deep = _predict(tiny_bundle, Path(str(tmp_path / "*") + "/x" * 1000))  # glob recursed past the limit
    assert deep.exit_code == 2 and "no such file or folder" in deep.stderr and "Traceback" not in deep.output


def test_a_url_exits_2_named_as_a_url(tiny_bundle: Path, images: list[Path]) -> None:
    """It was "no such file or folder: https:/pacs.example/x.jpg": the path as pathlib folds it."""
    result = _predict(tiny_bundle, images[0], "https://pacs.example/x.jpg")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error (not_found): https://pacs.example/x.jpg: a URL, not a file: fracsight reads files; "
        "download it, or mount its storage, first"
    )


def test_empty_folder_exits_2(tiny_bundle: Path, tmp_path: Path) -> None:
    result = _predict(tiny_bundle, tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip() == "error (no_images): no image files found in the given folders"


def test_a_folder_of_other_formats_says_what_is_there(tiny_bundle: Path, tmp_path: Path) -> None:
    """A folder of other files (a PDF, notes) said "no image files found" and nothing of why."""
    (tmp_path / "ward").mkdir()
    (tmp_path / "ward" / "report.pdf").write_bytes(b"%PDF-1.7")
    (tmp_path / "ward" / "views").mkdir()
    (tmp_path / "ward" / "views" / "notes.txt").write_text("lateral view to follow")
    (tmp_path / "ward" / ".DS_Store").write_bytes(b"\0")
    result = _predict(tiny_bundle, tmp_path / "ward")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error (no_images): no image files found in the given folders: what is there (report.pdf, "
        "views/notes.txt) is in no format fracsight reads (PNG, JPEG, BMP, TIFF, GIF, DICOM)"
    )
    # `predict BUNDLE IMAGE`, the model given where the images go: its files were listed as "no format"
    result = _predict(tiny_bundle, tiny_bundle)
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(
        f"{tiny_bundle} is a model bundle, not images: give it with --model {tiny_bundle}"
    )


def test_a_view_in_a_format_not_read_is_a_row_of_its_folder(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    """A WebP or HEIC view in a folder was passed over: the study was judged reliable from the other
    views, exit 0, while the same files given by name gave error rows."""
    ward = tmp_path / "ward"
    ward.mkdir()
    shutil.copyfile(images[0], ward / "ap.png")
    (ward / "lateral.webp").write_bytes(b"RIFF\0\0\0\0WEBPVP8 ")
    (ward / "oblique.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    result = _predict(tiny_bundle, ward, "--study", "--json")
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert [(r["source"], r.get("error_code")) for r in out["images"]] == [
        ("ap.png", None),
        ("lateral.webp", "unsupported_format"),
        ("oblique.HEIC", "unsupported_format"),
    ]
    (study,) = out["studies"]
    assert study["reliable"] is False
    assert "2 of 3 views could not be read (lateral.webp, oblique.HEIC)" in " ".join(study["warnings"])


def test_unknown_model_exits_2_without_a_traceback(images: list[Path]) -> None:
    result = runner.invoke(app, ["predict", "--model", "no-such-model-v9", str(images[0])])
    assert result.exit_code == 2
    assert "error (unknown_model)" in result.stderr and "Traceback" not in result.output


def test_a_broken_file_exits_1_and_the_others_are_predicted(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, src in enumerate(images):
        shutil.copyfile(src, folder / f"{2 * i}_{src.name}")
    (folder / "1_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated nonsense")
    result = _predict(tiny_bundle, folder, "--json", "--csv", tmp_path / "r.csv")
    assert result.exit_code == 1, result.output
    rows = json.loads(result.stdout)["images"]
    assert [r["source"][0] for r in rows] == ["0", "1", "2", "4"]
    assert rows[1]["source"] == "1_broken.jpg" and rows[1]["error_code"] and rows[1]["error"]
    assert all("fracture_probability" in r for i, r in enumerate(rows) if i != 1)
    csv_rows = list(csv.DictReader((tmp_path / "r.csv").open(encoding="utf-8")))
    assert csv_rows[1]["error_code"] == rows[1]["error_code"] and not csv_rows[0]["error_code"]
    # the JSON entry says the row's decision and reliability as the CSV does (until 2026-12-06 absent)
    assert (rows[1]["decision"], rows[1]["reliable"]) == ("error", False)
    assert (csv_rows[1]["decision"], csv_rows[1]["reliable"]) == ("error", "False")
    table = _predict(tiny_bundle, folder)
    assert table.exit_code == 1 and "error" in table.stdout and "1_broken.jpg" in table.stdout


def test_invocation_is_the_command_line_only_when_started_as_fracsight(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/venv/bin/fracsight", "quantize", "my model", "out"])
    assert invocation() == "fracsight quantize 'my model' out"  # quoted so that it can be re-run
    monkeypatch.setattr(sys, "argv", ["/usr/lib/python3/pytest", "-q"])
    assert invocation() == ""


def test_a_file_gone_before_its_overlay_is_read_is_its_own_row_not_the_end_of_the_run(
    tiny_bundle: Path, images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`predict FOLDER --overlay-dir OV` while a sync tool renames files into place: a file gone
    between its read and its full-size read for the overlay ended the run (`error (unreadable_image):
    x.jpg: no such file`), no table, no CSV, the other images never predicted."""
    from fracsight.inference import Predictor

    folder = tmp_path / "in"
    folder.mkdir()
    copies = [Path(shutil.copyfile(image, folder / image.name)) for image in images]
    victim = copies[0]
    full_pixels = Predictor.full_pixels

    def vanishing(source, radiograph, **options):
        if source is not None and Path(str(source)).name == victim.name and victim.exists():
            victim.unlink()  # gone between the two reads
        return full_pixels(source, radiograph, **options)

    monkeypatch.setattr(Predictor, "full_pixels", staticmethod(vanishing))
    result = _predict(tiny_bundle, folder, "--overlay-dir", tmp_path / "ov", "--csv", tmp_path / "r.csv")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    rows = {row["source"]: row for row in csv.DictReader((tmp_path / "r.csv").open())}
    assert (
        rows[victim.name]["error_code"] == "unreadable_image" and "no such file" in rows[victim.name]["error"]
    )
    assert all(rows[c.name]["decision"] != "error" for c in copies[1:])
    assert len(list((tmp_path / "ov").iterdir())) == len(copies) - 1


def test_outputs_that_cannot_be_written_are_refused_before_predicting(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    cases = [
        (["--csv", tmp_path / "no-such-folder" / "out.csv"], "(make it first: mkdir -p"),
        (["--csv", tmp_path], "is a folder"),
        (["--overlay-dir", a_file], "not a folder"),
        # inside a file: "no such folder: a-file (make it first: mkdir -p a-file)" of a file
        (["--overlay-dir", a_file / "sub" / "ov"], f"error (bad_output): {a_file} is a file, not a folder"),
        # a link to that file is one too (not "a link whose target does not exist")
        (
            ["--csv", tmp_path / "to-file" / "out.csv"],
            f"error (bad_output): {tmp_path / 'to-file'} is a file",
        ),
    ]
    (tmp_path / "to-file").symlink_to(a_file)
    for args, message in cases:
        result = _predict(tiny_bundle, images[0], *args)
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert "Traceback" not in result.output
    assert a_file.read_text() == "mine"


def test_csv_dash_writes_the_rows_to_stdout_for_a_pipe(
    tiny_bundle: Path, images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    piped = _predict(tiny_bundle, *images, "--csv", "-")
    assert piped.exit_code == 0, piped.output
    written = _predict(tiny_bundle, *images, "--csv", tmp_path / "file.csv")
    assert piped.stdout == (tmp_path / "file.csv").read_text(encoding="utf-8")  # the rows only
    assert NOTICE in piped.stderr and not (tmp_path / "-").exists()
    assert written.exit_code == 0
    both = _predict(tiny_bundle, images[0], "--csv", "-", "--json")
    assert both.exit_code == 2 and "both write to stdout" in both.stderr


def test_all_classes_without_a_class_head_says_so(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    result = _predict(tiny_bundle, images[0], "--csv", tmp_path / "r.csv", "--all-classes")
    assert result.exit_code == 0, result.output
    assert "--all-classes" in result.stderr and "has no class head" in result.stderr


def test_a_csv_the_system_refuses_at_the_end_is_one_line_not_a_traceback(
    tiny_bundle: Path, images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written after predicting: a disk that fills, or one that refuses it only then. The results
    are still shown (they were lost with the file), then the one line, exit 1."""
    import builtins

    target = tmp_path / "out.csv"
    real_open = builtins.open

    def refuse(file, *args, **kwargs):
        if str(file) == str(target):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)
    result = _predict(tiny_bundle, images[0], "--csv", target, "--json")
    assert result.exit_code == 1 and f"error (os_error): {target}: Permission denied (--csv)" in result.stderr
    assert isinstance(result.exception, SystemExit)  # not the PermissionError
    assert json.loads(result.stdout)["images"][0]["source"] == images[0].name  # the results, not lost


def test_folders_are_searched_as_a_pacs_export_needs(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    """Extension-less DICOM files (IM000001) are found by their bytes, linked folders are followed,
    and rows (and overlays) are named by their path under the folder given."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    export = tmp_path / "export"
    series = export / "DICOM" / "ST0" / "SE0"
    series.mkdir(parents=True)
    pixels = np.asarray(Image.open(images[0]).convert("L"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
        "CR",
    )
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(series / "IM000001", enforce_file_format=True)
    (series / "README.TXT").write_text("not an image")
    (series / ".hidden.jpg").write_bytes(images[0].read_bytes())
    (export / "linked").symlink_to(images[0].parent, target_is_directory=True)
    (export / "DICOM" / "loop").symlink_to(export, target_is_directory=True)  # followed once only

    result = _predict(tiny_bundle, export, "--json", "--overlay-dir", tmp_path / "overlays")
    assert result.exit_code == 0, result.output
    names = [r["source"] for r in json.loads(result.stdout)["images"]]
    linked = sorted(f"linked/{p.name}" for p in images[0].parent.iterdir())
    assert names == ["DICOM/ST0/SE0/IM000001", *linked]
    assert (tmp_path / "overlays" / "DICOM" / "ST0" / "SE0" / "IM000001.overlay.png").is_file()
    assert (tmp_path / "overlays" / "linked" / f"{images[0].stem}.overlay.png").is_file()


def test_csv_cells_never_start_a_spreadsheet_formula(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "named"
    folder.mkdir()
    shutil.copyfile(images[0], folder / '=HYPERLINK("x","y").jpg')
    (folder / "@SUM(1).png").write_bytes(b"not an image at all")
    out = tmp_path / "out.csv"
    result = _predict(tiny_bundle, folder, "--csv", out)
    assert result.exit_code == 1  # the second file is no image
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert {r["source"] for r in rows} == {'\'=HYPERLINK("x","y").jpg', "'@SUM(1).png"}
    assert not any(r["error"].startswith(("=", "+", "-", "@")) for r in rows)


def test_the_model_name_a_result_gives_is_accepted_back(images: list[Path]) -> None:
    shown = runner.invoke(app, ["predict", str(images[0]), "--json"])
    name = json.loads(shown.stdout)["model"]  # e.g. "fracatlas-lite0-384-int8 v4"
    again = runner.invoke(app, ["predict", "--model", name, str(images[0]), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["model"] == name


def test_table_says_not_reliable_once(tmp_path: Path) -> None:
    """A photo, not a radiograph: several checks fire, each says why; the cell says 'not reliable' once."""
    rng = np.random.default_rng(0)
    photo = tmp_path / "holiday.png"
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(photo)
    result = runner.invoke(app, ["predict", str(photo)], env=WIDE)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.stdout.replace("│", " ").split())
    assert flat.count("the result is not reliable") == 1 and "colour image" in flat


def test_a_file_name_that_is_not_utf8_gets_its_csv_row(
    tiny_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    """A folder written under Latin-1 (``café.jpg`` as the byte 0xE9): the CSV writer crashed with
        a traceback and left a cut-off file, and so did the table on a terminal that writes strict UTF-8;
    the name is written (and shown) with that byte as ``\\xe9``."""
    import os

    folder = tmp_path / "latin1"
    folder.mkdir()
    shutil.copyfile(images[0], os.fsdecode(bytes(folder) + b"/caf\xe9.jpg"))
    out = tmp_path / "out.csv"
    result = _predict(tiny_bundle, folder, "--csv", out)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert [r["source"] for r in rows] == ["caf\\xe9.jpg"] and rows[0]["fracture_probability"]
    assert "caf\\xe9.jpg" in result.stdout  # the table too, even on a strict UTF-8 terminal
    as_json = json.loads(_predict(tiny_bundle, folder, "--json").stdout)
    assert [image["source"] for image in as_json["images"]] == ["caf\\xe9.jpg"]  # the same name


@pytest.mark.fracatlas
def test_a_study_whose_mean_hides_a_view_says_to_review_it(fracatlas_dir: Path) -> None:
    """Two views, at `triage`: the mean (0.09) is below the threshold (0.12), one view (0.16) alone
    above it. The study row said "no fracture detected" and nothing else; the web app's card
    warned. Now the study itself says it, wherever it is shown (table, CSV, JSON, API, app)."""
    views = [fracatlas_dir / "images" / "Non_fractured" / n for n in ("IMG0000015.jpg", "IMG0000006.jpg")]
    result = runner.invoke(
        app, ["predict", *map(str, views), "--study", "--operating-point", "triage", "--json"]
    )
    assert result.exit_code == 0, result.output
    study = json.loads(result.stdout)["studies"][0]
    first = json.loads(result.stdout)["images"][0]
    assert first["fracture_suspected"] and not study["fracture_suspected"]  # the case, still as described
    assert study["warnings"] == [
        "the mean of the views is below the threshold, but IMG0000015.jpg is above it on its own: review it"
    ]
    balanced = runner.invoke(app, ["predict", *map(str, views), "--study", "--json"])
    assert json.loads(balanced.stdout)["studies"][0]["warnings"] == []  # no view alone above 'balanced'


def test_a_broken_link_and_a_loop_of_links_are_each_named_so(tiny_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "moved-away.jpg")
    (tmp_path / "a.jpg").symlink_to("b.jpg")
    (tmp_path / "b.jpg").symlink_to("a.jpg")
    gone = _predict(tiny_bundle, tmp_path / "gone.jpg")
    assert gone.exit_code == 2 and "a link whose target does not exist" in gone.stderr
    loop = _predict(tiny_bundle, tmp_path / "a.jpg")  # b.jpg exists (as a link): "does not exist" misled
    assert (
        loop.exit_code == 2
        and f"a loop of links that never reaches a file: {tmp_path / 'a.jpg'} -> b.jpg" in (loop.stderr)
    )
