"""`fracsight predict` as users run it: narrow terminals, files and pipes, odd file names, stdin."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracsight.cli import app
from fracsight.inference import NOTICE

runner = CliRunner()


@pytest.fixture(scope="module")
def radiograph(fracatlas_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[5]
    return Path(shutil.copyfile(source, tmp_path_factory.mktemp("one") / "scan.jpg"))


def _predict(bundle: Path, *args: str | Path, env: dict[str, str | None] | None = None):
    return runner.invoke(app, ["predict", "--model", str(bundle), *map(str, args)], env=env)


def _probability(bundle: Path, image: Path) -> str:
    result = _predict(bundle, image, "--json")
    assert result.exit_code == 0, result.output
    return f"{json.loads(result.stdout)['images'][0]['fracture_probability']:.3f}"


@pytest.mark.parametrize("columns", ["40", "64"])
def test_a_narrow_terminal_never_folds_a_probability(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path, columns: str
) -> None:
    """At 40 columns the table folded 0.008 into "0.00" and "8" on the next line."""
    name = "a-rather-long-file-name-of-a-wrist-radiograph-taken-at-night.jpg"
    image = Path(shutil.copyfile(radiograph, tmp_path / name))
    result = _predict(tiny_bundle, image, env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= int(columns)
    assert f"  fracture probability: {_probability(tiny_bundle, image)}" in lines  # whole, on one line
    assert name in "".join(lines)  # folded over lines, never cut
    assert "…" not in result.stdout
    assert NOTICE in " ".join(result.stdout.split())


@pytest.mark.fracatlas
def test_an_80_column_table_never_breaks_inside_a_box_coordinate(fracatlas_dir: Path, tmp_path: Path) -> None:
    """At exactly 80 columns (the table, not the narrow layout) the default model's top box of
    IMG0000019, `450,326,544,394`, folded to `450,326,54` / `4,394`: other numbers."""
    image = Path(
        shutil.copyfile(
            fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg", tmp_path / "IMG0000019.jpg"
        )
    )
    (row,) = json.loads(runner.invoke(app, ["predict", str(image), "--json"]).stdout)["images"]
    box = row["boxes"][0]
    result = runner.invoke(app, ["predict", str(image)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    rows = [
        line.split("│")[4] for line in result.stdout.splitlines() if line.count("│") >= 5
    ]  # the box column
    shown = re.findall(r"\d+", " ".join(rows))
    assert all(f"{box[k]:.0f}" in shown for k in ("x0", "y0", "x1", "y1")), result.stdout


def test_a_file_or_pipe_gets_one_line_a_row(tiny_bundle: Path, radiograph: Path, tmp_path: Path) -> None:
    """Without a terminal (and no COLUMNS) rich wrapped at 80: "fracture" and "suspected" on two lines,
    a long name over many, so `grep NAME` found a piece of a row."""
    name = "x" * 150 + ".jpg"
    image = Path(shutil.copyfile(radiograph, tmp_path / name))
    result = _predict(tiny_bundle, image, env={"COLUMNS": None})
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.stdout.splitlines() if name in line]
    assert _probability(tiny_bundle, image) in row
    assert "fracture suspected" in row or "no fracture detected" in row or "not reliable" in row
    assert NOTICE in result.stdout.splitlines()  # a line of its own
    title = result.stdout.splitlines()[0]
    assert title == title.rstrip()  # not padded to the table's width


def test_control_characters_in_a_name_are_shown_escaped_and_kept_in_data(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path
) -> None:
    """A name holding an escape sequence reached the terminal raw (its colours, or worse); a newline
    split the row; `--csv -` lost the escape sequence (click's echo strips it off a terminal)."""
    folder = tmp_path / "odd"
    folder.mkdir()
    names = ["esc\x1b[31mRED\x1b[0m.jpg", "new\nline.jpg", "x\u202egpj.exe.jpg"]
    for name in names:
        shutil.copyfile(radiograph, folder / name)
    table = _predict(tiny_bundle, folder, env={"COLUMNS": None})
    assert table.exit_code == 0, table.output
    assert "\x1b" not in table.stdout and "\u202e" not in table.stdout
    for shown in ["esc\\x1b[31mRED\\x1b[0m.jpg", "new\\nline.jpg", "x\\u202egpj.exe.jpg"]:
        assert len([line for line in table.stdout.splitlines() if shown in line]) == 1
    piped = _predict(tiny_bundle, folder, "--csv", "-")
    assert piped.exit_code == 0, piped.output
    assert sorted(row["source"] for row in csv.DictReader(io.StringIO(piped.stdout))) == sorted(names)
    data = _predict(tiny_bundle, folder, "--json")
    assert sorted(i["source"] for i in json.loads(data.stdout)["images"]) == sorted(names)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names are bytes")
def test_a_name_that_is_not_utf8_is_said_in_messages_as_the_rows_say_it(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """`predict nop\\xe9.jpg` (a Latin-1 name that is not there) said `nop\\udce9.jpg`, Python's
    stand-in for the byte, where the rows, JSON and CSV write `nop\\xe9.jpg`."""
    missing = os.fsdecode(bytes(tmp_path) + b"/nop\xe9.jpg")
    result = _predict(tiny_bundle, Path(missing))
    assert result.exit_code == 2
    assert "no such file or folder:" in result.stderr and "nop\\xe9.jpg" in result.stderr, result.stderr
    assert "udce9" not in result.stderr


def test_stdin_and_a_broken_link_are_refused_saying_what_they_are(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stdin = runner.invoke(
        app, ["predict", "--model", str(tiny_bundle), "-"], input=radiograph.read_bytes().decode("latin-1")
    )
    assert stdin.exit_code == 2 and "standard input" in stdin.stderr, stdin.output
    link = tmp_path / "gone.jpg"
    link.symlink_to(tmp_path / "moved-away.jpg")
    broken = _predict(tiny_bundle, radiograph, link)
    assert broken.exit_code == 2, broken.output
    assert "link" in broken.stderr and "moved-away.jpg" in broken.stderr
    (tmp_path / "-").write_bytes(radiograph.read_bytes())  # a file named "-" is read
    named_dash = _predict(tiny_bundle, "-", "--json")
    assert named_dash.exit_code == 0 and json.loads(named_dash.stdout)["images"][0]["source"] == "-"


def test_overlays_of_names_near_the_file_system_limit(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path
) -> None:
    """A 250-character name: "File name too long" for its overlay stopped the run after every image
    was predicted, exit 1, no results at all."""
    folder = tmp_path / "long"
    folder.mkdir()
    long_names = ["y" * 246 + "a.jpg", "y" * 246 + "b.jpg"]  # 251 bytes each: allowed
    for name in [*long_names, "short.jpg"]:
        shutil.copyfile(radiograph, folder / name)
    out = tmp_path / "overlays"
    result = _predict(tiny_bundle, folder, "--overlay-dir", out, "--json")
    assert result.exit_code == 0, result.output
    assert {i["source"] for i in json.loads(result.stdout)["images"]} == {*long_names, "short.jpg"}
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 3 and "short.overlay.png" in written
    assert all(
        len(n.encode()) <= 255 and n.startswith("y" * 150) for n in written if n != "short.overlay.png"
    )


def test_a_table_into_a_file_of_another_encoding_is_written_not_a_traceback(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path
) -> None:
    """stdout in an encoding without the name's characters (a Windows code page when redirected):
    UnicodeEncodeError after every image had been predicted."""
    image = Path(shutil.copyfile(radiograph, tmp_path / "émoji 🦴.jpg"))
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "COLUMNS": "200"}
    code = "from fracsight.cli import main; main()"
    run = subprocess.run(
        [sys.executable, "-c", code, "predict", "--model", str(tiny_bundle), str(image)],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    assert b"Traceback" not in run.stderr
    assert b"\\xe9moji \\U0001f9b4.jpg" in run.stdout


def test_help_is_whole_and_names_the_way_to_give_a_dash_name() -> None:
    result = runner.invoke(app, ["predict", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert "…" not in result.stdout  # "--no-all-class…" was cut
    assert "--all-classes" in result.stdout and "--overwrite" in result.stdout
    assert "'--'" in result.stdout


def test_a_table_piped_into_head_exits_141_not_1(tiny_bundle: Path, radiograph: Path, tmp_path: Path) -> None:
    """`fracsight predict DIR | head`: rich's own handling of the closed pipe exited 1, the code that
    says a file could not be read (a `set -o pipefail` script stopped on it)."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(300):  # rows of more than the pipe's 64 KiB buffer
        os.link(radiograph, folder / f"{i:03d}-{'z' * 200}.jpg")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # a pipe: one line a row
    code = "from fracsight.cli import main; main()"
    run = subprocess.Popen(
        [sys.executable, "-c", code, "predict", "--model", str(tiny_bundle), str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert run.stdout is not None and run.stderr is not None
    assert run.stdout.readline().startswith(b"fracsight (")
    run.stdout.close()  # as `head -1` does
    assert run.wait(timeout=300) == 141
    assert b"Traceback" not in run.stderr.read()


def test_an_overlay_written_beside_the_images_is_refused_when_read_again(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path
) -> None:
    """`predict scans/*.jpg --overlay-dir scans`, then `predict scans`: each overlay was scored as a
    radiograph ("no fracture detected", reliable) and counted as a view of its study."""
    from fracsight.explain import overlay_save_options
    from fracsight.io import Radiograph, read_image

    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copyfile(radiograph, scans / "scan.jpg")
    assert _predict(tiny_bundle, scans / "scan.jpg", "--overlay-dir", scans).exit_code == 0
    again = _predict(tiny_bundle, scans, "--json")
    assert again.exit_code == 1, again.output  # a file could not be read
    rows = {i["source"]: i for i in json.loads(again.stdout)["images"]}
    assert rows["scan.overlay.png"]["error_code"] == "fracsight_overlay" and "decision" in rows["scan.jpg"]
    # nor is it a view the study missed: its verdict stayed reliable (an overlay the desktop saved
    # beside a study's views made a "fracture suspected" study "not reliable")
    (study,) = json.loads(_predict(tiny_bundle, scans, "--study", "--json").stdout)["studies"]
    assert study["reliable"] and study["unread_images"] == [] and study["images"] == ["scan.jpg"]
    from PIL import Image

    for fmt in ("PNG", "JPEG"):  # the web app's, the API's and the desktop's overlays too
        picture = tmp_path / f"o.{fmt.lower()}"
        Image.new("RGB", (64, 64)).save(picture, format=fmt, **overlay_save_options(fmt))
        with pytest.raises(Exception, match="an overlay fracsight made of a result") as caught:
            read_image(picture)
        assert caught.value.code == "fracsight_overlay"
        with Image.open(picture) as opened, pytest.raises(Exception, match="an overlay") as caught:
            Radiograph.from_array(opened)  # a PIL image of it: re-saved as TIFF, its mark was lost
        assert caught.value.code == "fracsight_overlay"


def test_a_folder_without_images_beside_other_inputs_is_a_row_not_nothing(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path
) -> None:
    """An empty folder (an unmounted share) among other inputs vanished, exit 0; from a list,
    `batch run` gave it an error row. Alone it stays `no_images`, exit 2."""
    from fracsight.scale.inputs import collect_batch_inputs

    empty = tmp_path / "share"
    empty.mkdir()
    result = _predict(tiny_bundle, empty, radiograph, "--json")
    assert result.exit_code == 1, result.output
    rows = {i["source"]: i for i in json.loads(result.stdout)["images"]}
    assert rows[str(empty)]["error_code"] == "no_images" and "decision" in rows["scan.jpg"]
    assert rows[str(empty)]["error"] == f"{empty}: no image files found in the given folders"
    alone = _predict(tiny_bundle, empty)
    assert alone.exit_code == 2 and "error (no_images)" in alone.stderr
    assert str(empty) in collect_batch_inputs([empty, radiograph])  # `batch run share scan.jpg` too


def test_a_csv_that_is_an_image_under_another_name_is_refused(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path
) -> None:
    """`--csv hard.csv --overwrite` where hard.csv is a hard link to an input: the CSV was written
    into the image (a symbolic link was refused already)."""
    image = Path(shutil.copyfile(radiograph, tmp_path / "a.jpg"))
    os.link(image, tmp_path / "hard.csv")
    before = image.read_bytes()
    result = _predict(tiny_bundle, image, "--csv", tmp_path / "hard.csv", "--overwrite")
    assert result.exit_code == 2 and "is one of the images to predict" in result.stderr
    assert image.read_bytes() == before


def test_the_csv_is_never_written_into_a_file_that_appeared_meanwhile(tmp_path: Path) -> None:
    """The check that --csv does not exist ran at the start only: a file another run wrote in the
    meantime was replaced; and with --overwrite the CSV was written into the file, not in its place."""
    from fracsight.cli import _write_csv

    theirs = tmp_path / "race.csv"
    theirs.write_text("another run's results\n")
    assert _write_csv(theirs, "mine\n", overwrite=False)[0] == "exists"
    assert theirs.read_text() == "another run's results\n"
    os.link(theirs, tmp_path / "elsewhere.csv")
    assert _write_csv(theirs, "mine\n", overwrite=True) is None
    assert (
        theirs.read_text() == "mine\n"
        and (tmp_path / "elsewhere.csv").read_text() == "another run's results\n"
    )
    # a link is written through, a pipe written into (renamed over, its reader got nothing)
    (tmp_path / "latest.csv").symlink_to(theirs)
    assert _write_csv(tmp_path / "latest.csv", "newer\n", overwrite=True) is None
    assert (tmp_path / "latest.csv").is_symlink() and theirs.read_text() == "newer\n"
    pipe = tmp_path / "pipe.csv"
    os.mkfifo(pipe)
    got: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: got.append(pipe.read_text()))
    reader.start()
    assert _write_csv(pipe, "piped\n", overwrite=True) is None
    reader.join(10)
    assert got == ["piped\n"] and not pipe.is_file()


def test_a_dangling_link_as_csv_is_refused_before_predicting(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path
) -> None:
    """It passed the start's check (it does not exist, by its target) and, after every image was
    predicted, was "appeared while the images were predicted; not replaced"."""
    (tmp_path / "dl.csv").symlink_to(tmp_path / "results" / "latest.csv")
    result = _predict(tiny_bundle, radiograph, "--csv", tmp_path / "dl.csv")
    assert result.exit_code == 2 and "exists; pass --overwrite" in result.stderr
    # with --overwrite it is written through, so its target's folder must be there
    result = _predict(tiny_bundle, radiograph, "--csv", tmp_path / "dl.csv", "--overwrite")
    assert result.exit_code == 2 and "cannot write" in result.stderr
    (tmp_path / "results").mkdir()
    result = _predict(tiny_bundle, radiograph, "--csv", tmp_path / "dl.csv", "--overwrite")
    assert result.exit_code == 0 and (tmp_path / "results" / "latest.csv").is_file()


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP"])
def test_sigterm_during_overlays_says_what_was_done_and_leaves_no_partial_file(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path, stop: str
) -> None:
    """`timeout` or a job scheduler stops `predict --overlay-dir` with SIGTERM: the process died at
    once, without a word, and an overlay being written stayed as a hidden temporary file. SIGHUP
    (the terminal or the ssh session closed) did so until 2026-12-05 (second hunt)."""
    import signal
    import time

    sig = getattr(signal, stop)
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(40):
        os.link(radiograph, folder / f"{i:02d}.jpg")
    out = tmp_path / "overlays"
    code = "from fracsight.cli import main; main()"
    run = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "predict",
            "--model",
            str(tiny_bundle),
            str(folder),
            "--overlay-dir",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.iterdir())):
        assert run.poll() is None and time.monotonic() < deadline, "no overlay was written"
        time.sleep(0.05)
    run.send_signal(sig)
    assert run.wait(timeout=60) == 128 + sig
    assert run.stderr is not None
    said = run.stderr.read().decode()
    assert f"stopped ({stop}): " in said and "images predicted, no results written" in said, said
    assert "Traceback" not in said
    assert all(p.name.endswith(".overlay.png") for p in out.iterdir())  # no hidden .tmp left


def test_an_overlay_the_system_refuses_costs_the_overlay_not_the_results(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path
) -> None:
    """A file where an overlay's sub-folder goes (or a full disk) stopped the run with one line and
    no table, JSON or CSV: every prediction was lost for want of a picture."""
    data = tmp_path / "data"
    (data / "XR_WRIST").mkdir(parents=True)
    (data / "XR_ELBOW").mkdir()
    for folder in ("XR_WRIST", "XR_ELBOW"):
        shutil.copyfile(radiograph, data / folder / "image1.jpg")
    overlays = tmp_path / "ov"
    overlays.mkdir()
    (overlays / "XR_WRIST").write_text("mine")
    result = _predict(tiny_bundle, data, "--overlay-dir", overlays, "--json")
    assert result.exit_code == 1, result.output
    assert len(json.loads(result.stdout)["images"]) == 2  # both predictions shown
    assert "error (os_error): 1 overlay not written (" in result.stderr and "(--overlay-dir)" in result.stderr
    assert "Traceback" not in result.stderr and (overlays / "XR_WRIST").read_text() == "mine"
    assert (overlays / "XR_ELBOW" / "image1.overlay.png").is_file()


def test_a_users_dangling_link_in_the_overlay_folder_is_not_replaced(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path
) -> None:
    """`target.exists()` follows links: a link of the user's to a file not there (yet) was taken for
    a free name and replaced by the overlay."""
    overlays = tmp_path / "ov"
    overlays.mkdir()
    (overlays / "scan.overlay.png").symlink_to(tmp_path / "elsewhere.png")
    result = _predict(tiny_bundle, radiograph, "--overlay-dir", overlays)
    assert result.exit_code == 0
    assert os.readlink(overlays / "scan.overlay.png") == str(tmp_path / "elsewhere.png")
    assert (overlays / "scan.overlay-1.png").is_file()
    # a re-run into the folder was said nowhere: scan.overlay.png looked like this run's picture
    note = " ".join(result.stderr.split())
    assert f"note: 1 overlay in {overlays} named NAME.overlay-N.png beside earlier ones" in note, note


def test_an_image_named_like_a_numbered_overlay_gets_no_note(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path
) -> None:
    """``wrist.overlay-v2.jpg`` into an empty folder was said to be "beside earlier ones"."""
    given = tmp_path / "wrist.overlay-v2.jpg"
    shutil.copyfile(radiograph, given)
    result = _predict(tiny_bundle, given, "--overlay-dir", tmp_path / "ov")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ov" / "wrist.overlay-v2.overlay.png").is_file()
    assert "beside earlier ones" not in result.stderr


def test_a_csv_the_disk_fills_under_is_not_left_half_written(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that filled while --csv was written left an empty file, and the next run (space freed)
    refused it: `exists; pass --overwrite`."""
    import builtins
    import errno

    target = tmp_path / "out.csv"
    real_open = builtins.open

    class Filling:
        def __init__(self, f) -> None:
            self.f = f

        def __enter__(self) -> Filling:
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    def filling(file, *args, **kwargs):
        opened = real_open(file, *args, **kwargs)
        return Filling(opened) if str(file) == str(target) else opened

    monkeypatch.setattr(builtins, "open", filling)
    result = _predict(tiny_bundle, radiograph, "--csv", target)
    assert result.exit_code == 1 and "No space left on device (--csv)" in result.stderr, result.output
    assert not target.exists()
    monkeypatch.setattr(builtins, "open", real_open)
    assert _predict(tiny_bundle, radiograph, "--csv", target).exit_code == 0
    assert target.read_text().startswith("kind,source,")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["predict", "IMAGE", "--json"], ["--version"], ["--help"]])
def test_output_into_a_full_disk_is_one_line_not_a_traceback(radiograph: Path, args: list[str]) -> None:
    """`fracsight predict X --json > results.json` on a full disk: a Python traceback ending in
    `OSError: [Errno 28]` (only a closed pipe was handled); so did `--version` and `--help`, which
    run outside any command."""
    args = [str(radiograph) if a == "IMAGE" else a for a in args]
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "fracsight", *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error (os_error): the output could not be written: No space left on device"
    ), done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


@pytest.mark.parametrize("form", [["--json"], ["--csv", "-"]])
def test_output_that_fills_the_disk_part_way_is_an_error_not_a_cut_off_file(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path, form: list[str]
) -> None:
    """`predict ... --json > small/r.json` where the disk fills part-way: the one large write took
    what fitted and returned a short count, and the command exited 0 with the file cut mid-row."""
    from disk_support import mounted_tmpfs

    copies = []
    for i in range(60):  # more than one page of CSV rows
        copies.append(tmp_path / f"scan{i:02d}.png")
        copies[-1].write_bytes(radiograph.read_bytes())
    with mounted_tmpfs(tmp_path / "disk", "4k") as disk:
        with open(disk / "results", "w") as small:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fracsight",
                    "predict",
                    *map(str, copies),
                    "--model",
                    str(tiny_bundle),
                    *form,
                ],
                stdout=small,
                stderr=subprocess.PIPE,
                text=True,
                timeout=300,
            )
        written = (disk / "results").stat().st_size
    assert written > 0  # part of it went out: the case of a disk that fills on the way
    assert done.returncode == 1, (written, done.stderr)
    assert "error (os_error): the output could not be written: No space left on device" in done.stderr


def test_overlays_on_a_full_disk_name_the_overlay_they_cost(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path
) -> None:
    """A full disk names no file: the line said only `No space left on device`, not which overlay."""
    from disk_support import fill, mounted_tmpfs

    with mounted_tmpfs(tmp_path / "disk", "256k") as disk:
        (disk / "ov").mkdir()
        filler = fill(disk)
        result = _predict(tiny_bundle, radiograph, "--overlay-dir", disk / "ov", "--json")
        filler.unlink()
    assert result.exit_code == 1 and len(json.loads(result.stdout)["images"]) == 1, result.output
    target = disk / "ov" / "scan.overlay.png"
    assert f"1 overlay not written ({target}: No space left on device) (--overlay-dir)" in result.stderr


def test_the_table_states_its_operating_point(tiny_bundle: Path, radiograph: Path) -> None:
    """The README promises "a decision at a stated operating point": the table gave the decision and
    the probability, the operating point and its threshold only in --json, --csv and the overlay."""
    from fracsight.bundle import load_bundle_spec

    for op in load_bundle_spec(tiny_bundle).operating_points:
        result = _predict(tiny_bundle, radiograph, "--operating-point", op.name)
        assert result.exit_code == 0, result.output
        first = result.stdout.splitlines()[0]
        assert first.endswith(f", operating point {op.name} (threshold {op.threshold:.3f})"), first


def test_one_path_for_the_table_and_the_overlays_is_refused_before_any_work(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path
) -> None:
    """`--csv same --overlay-dir same`: every image predicted and drawn, then "same appeared while
    the images were predicted ... pass --overwrite", and with --overwrite "Is a directory": no table."""
    same = tmp_path / "same"
    for extra in ((), ("--overwrite",)):
        result = _predict(tiny_bundle, radiograph, "--csv", same, "--overlay-dir", same, *extra)
        assert result.exit_code == 2, result.output
        assert f"--csv {same} is also the --overlay-dir folder" in result.stderr and not same.exists()
    same.mkdir()
    inside = _predict(tiny_bundle, radiograph, "--csv", same / "results.csv", "--overlay-dir", same)
    assert inside.exit_code == 0 and (same / "results.csv").is_file()  # a table beside the overlays


def test_a_closed_stdout_and_a_zero_width_are_said_not_silent(radiograph: Path) -> None:
    """`fracsight predict IMG >&-` exited 0 with nothing written anywhere (`--csv -`: a traceback);
    `COLUMNS=0` printed no table and no decision-aid notice, exit 0."""
    entry = [sys.executable, "-m", "fracsight", "predict", str(radiograph)]
    for extra in ([], ["--json"], ["--csv", "-"]):
        closed = subprocess.run(
            ["bash", "-c", 'exec "$@" >&-', "-", *entry, *extra], capture_output=False, stderr=subprocess.PIPE
        )
        assert closed.returncode == 1
        assert closed.stderr.decode().strip() == (
            "error (os_error): standard output is closed; send it to a file or /dev/null"
        )
    for size in ({"COLUMNS": "0"}, {"COLUMNS": "²"}, {"LINES": "²"}):  # "²".isdigit(); int() refuses it
        zero = subprocess.run(entry, capture_output=True, text=True, env={**os.environ, **size}, timeout=120)
        assert zero.returncode == 0, zero.stderr
        assert radiograph.name in zero.stdout and NOTICE in zero.stdout
    huge = {**os.environ, "COLUMNS": "99999999999999999999"}  # rich: OverflowError in --help
    helped = subprocess.run([*entry[:3], "--help"], capture_output=True, text=True, env=huge, timeout=60)
    assert helped.returncode == 0 and "predict" in helped.stdout, helped.stderr


def test_evaluate_from_a_working_folder_that_was_deleted(
    tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It measured every image, then failed without a path (``os.getcwd()`` for the run record)."""
    from fracsight.evaluation.run import evaluate_model

    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    metrics = evaluate_model(tiny_bundle, tiny_dataset, tmp_path / "eval", split="val", n_bootstrap=0)
    assert metrics["run"]["working_folder"] is None
    assert (tmp_path / "eval" / "report.html").is_file()


def test_a_csv_link_to_a_radiograph_not_read_is_refused_even_with_overwrite(
    tiny_bundle: Path, radiograph: Path, tmp_path: Path
) -> None:
    """`--csv link.csv --overwrite` where link.csv leads to another radiograph: the CSV text
    replaced the image."""
    other = Path(shutil.copyfile(radiograph, tmp_path / "other.jpg"))
    (tmp_path / "link.csv").symlink_to(other)
    before = other.read_bytes()
    result = _predict(tiny_bundle, radiograph, "--csv", tmp_path / "link.csv", "--overwrite")
    assert result.exit_code == 2 and "holds an image (JPEG), not text such as results" in result.stderr
    assert other.read_bytes() == before
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)))
    (tmp_path / "pdf.csv").symlink_to(tmp_path / "report.pdf")
    result = _predict(tiny_bundle, radiograph, "--csv", tmp_path / "pdf.csv", "--overwrite")
    assert result.exit_code == 2 and "holds a PDF document, not text such as results" in result.stderr
    # a CSV in any encoding is replaced as asked (UTF-8 with a BOM, Latin-1, UTF-16: Excel's)
    for n, data in enumerate(
        ("\ufeffsource\nx\n".encode(), "Müller\n".encode("cp1252"), "source\nx\n".encode("utf-16"))
    ):
        (tmp_path / f"excel{n}.csv").write_bytes(data)
        result = _predict(tiny_bundle, radiograph, "--csv", tmp_path / f"excel{n}.csv", "--overwrite")
        assert result.exit_code == 0, result.stderr
    for n, text in enumerate(("BMI,source\nx\n", "MZ-0001,0.91\n", "%PDF notes;x\n")):  # text, whatever
        (tmp_path / f"text{n}.csv").write_text(text)  # its first bytes: replaced as asked
        assert (
            _predict(tiny_bundle, radiograph, "--csv", tmp_path / f"text{n}.csv", "--overwrite").exit_code
            == 0
        )
    (tmp_path / "old.csv").write_text("BMI,source\nx\n")
    assert _predict(tiny_bundle, radiograph, "--csv", tmp_path / "old.csv", "--overwrite").exit_code == 0


def test_a_failed_transfers_files_in_a_pacs_export_are_rows(
    tiny_bundle: Path, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """An export's IM000001 left empty, IM000002 cut before its DICM, IM000007 a link to nothing:
    left out of the folder's rows without a word (7 files, 3 rows), where an empty IM000006.dcm
    got its row; a README and notes beside them are still no images."""
    from dicom_support import make_radiograph_dicom

    series = tmp_path / "export" / "ST1" / "SE1"
    series.mkdir(parents=True)
    image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    whole = make_radiograph_dicom(image, series / "IM000005").read_bytes()
    (series / "IM000001").write_bytes(b"")
    (series / "IM000002").write_bytes(whole[:100])
    (series / "IM000003").write_bytes(whole[:131])
    (series / "IM000006.dcm").write_bytes(b"")
    (series / "IM000007").symlink_to(tmp_path / "gone" / "IM000007")
    (series / "README").write_text("exported by the PACS\n")
    (series / "notes").write_bytes(b"")
    (series / "1").write_text("run ok\n")  # a short note named as a number is no transfer cut short
    (series / "20240115").write_bytes("Bericht ärztlich\n".encode("cp1252"))  # in any code page
    (series / "IM000008").write_text('{"error":"Unauthorized"}\n')  # a server's answer saved in its place
    result = _predict(tiny_bundle, tmp_path / "export", "--csv", tmp_path / "r.csv")
    assert result.exit_code == 1, result.output
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as f:
        codes = {row["source"]: row["error_code"] for row in csv.DictReader(f)}
    assert codes == {
        "ST1/SE1/IM000001": "empty_file",
        "ST1/SE1/IM000002": "truncated_image",
        "ST1/SE1/IM000003": "truncated_image",
        "ST1/SE1/IM000005": "",
        "ST1/SE1/IM000006.dcm": "empty_file",
        "ST1/SE1/IM000007": "unreadable_image",
        "ST1/SE1/IM000008": "unsupported_format",
    }
    # a folder uploaded to the web app judges its files alike
    from fracsight.inference.tabular import is_folder_image

    for name in ("IM000001", "IM000002", "IM000005", "1"):
        taken = is_folder_image(f"export/ST1/SE1/{name}", (series / name).read_bytes)
        assert taken == (name != "1"), name
