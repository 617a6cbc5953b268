"""The command line as a whole: help texts as written, exit codes and one-line errors alike across
commands, and the decision-aid notice wherever a command prints results."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import typer
from typer.testing import CliRunner

from dicom_support import QuietHandler, http_service
from fracsight.cli import app
from fracsight.inference import NOTICE

WIDE = {"COLUMNS": "250"}  # wide enough for every help paragraph on one line


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group under ``group`` (Typer's own click types: no isinstance on click's)."""
    for name, command in group.commands.items():
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def _paragraphs(command: Any) -> list[str]:
    return [" ".join(p.split()) for p in inspect.cleandoc(command.help or "").split("\n\n")]


def _squeeze(text: str) -> str:
    """Help output with the padding of rich's panels taken out of each line, lines kept."""
    return "\n".join(" ".join(line.strip(" │").split()) for line in text.splitlines())


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_shows_each_paragraph_unbroken(path: tuple[str, ...], command: Any) -> None:
    """Typer keeps a docstring's line breaks (all but the first paragraph's in a command's own help,
    all of them in its group's list): every paragraph must reach the screen as one line, wrapped
    only by the terminal."""
    shown = CliRunner().invoke(app, [*path, "--help"], env=WIDE)
    assert shown.exit_code == 0, shown.output
    for paragraph in _paragraphs(command):
        assert paragraph in _squeeze(shown.output).splitlines(), f"broken in `{' '.join(path)} --help`"
    listing = CliRunner().invoke(app, [*path[:-1], "--help"], env=WIDE)
    first = _paragraphs(command)[0]
    assert any(line.endswith(first) for line in _squeeze(listing.output).splitlines()), (
        f"`{path[-1]}` broken in the list of `{' '.join(['fracsight', *path[:-1]])} --help`"
    )


def test_every_command_says_its_exit_codes_in_its_help() -> None:
    """16 commands' --help left a script's author to guess what 1 and 2 meant (their docs pages said)."""
    commands = [(path, c) for path, c in COMMANDS if not hasattr(c, "commands")]
    silent = [
        " ".join(path) for path, c in commands if not any(p.startswith("Exit code") for p in _paragraphs(c))
    ]
    assert len(commands) > 20 and not silent, f"no exit codes in the --help of {silent}"


def _one_line_error(result, code: str) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"error ({code}): ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_an_unknown_model_is_a_bad_argument_for_every_command(tmp_path: Path, fracatlas_dir: Path) -> None:
    """Exit code 2 and one line, as `predict -m nosuch` says it, whichever command is given it."""
    some_file = tmp_path / "some.dcm"
    some_file.write_bytes(b"not read")
    data = str(fracatlas_dir)
    for args in (
        ["serve", "--model", "nosuch"],
        ["benchmark", "--model", "nosuch", "--runs", "1"],
        ["evaluate", "nosuch", data, "--bootstrap", "100"],
        ["quantize", "nosuch", str(tmp_path / "q")],
        ["detector", "train", "nosuch", str(tmp_path / "d"), "--data", data],
        ["batch", "run", "-m", "nosuch", "-o", str(tmp_path / "b"), str(some_file)],
        ["dicom", "results", "-m", "nosuch", "-o", str(tmp_path / "r"), str(some_file)],
        ["dicom", "study", "1.2.3", "--dicomweb", "http://127.0.0.1:9/dicom-web", "-m", "nosuch"],
        ["dicom", "listen", "--spool", str(tmp_path / "s"), "--allow", "PACS", "--to", "h:1:A", "-m", "x"],
    ):
        _one_line_error(CliRunner().invoke(app, args), "unknown_model")


def test_a_folder_that_is_no_bundle_is_a_bad_argument(tmp_path: Path, fracatlas_dir: Path) -> None:
    """A model argument naming a folder without bundle.json (arguments given in the wrong order, say)
    exits 2 as an unknown model does; it exited 1 in predict, evaluate and benchmark."""
    image = str(next((fracatlas_dir / "images" / "Fractured").glob("*.jpg")))
    data = str(fracatlas_dir)
    for args in (
        ["predict", "--model", data, image],
        ["evaluate", data, data, "--bootstrap", "100"],
        ["benchmark", "--model", data, "--runs", "1"],
        ["serve", "--model", data],
    ):
        assert "not a model bundle" in _one_line_error(CliRunner().invoke(app, args), "bundle_error"), args


def test_a_changed_model_file_is_refused_before_any_work(tmp_path: Path, fracatlas_dir: Path) -> None:
    """A model.onnx that is not the one bundle.json names: one line and exit 2 before a node, a Ray
    job or an output folder starts, not a traceback from a worker process or a job failed late
    with advice to run it again."""
    import shutil

    from fracsight.inference import resolve_bundle

    bundle = tmp_path / "changed"
    shutil.copytree(resolve_bundle("default"), bundle)
    with open(bundle / "model.onnx", "ab") as f:
        f.write(b"\0")
    image = str(next((fracatlas_dir / "images" / "Fractured").glob("*.jpg")))
    spool, results, batch = tmp_path / "spool", tmp_path / "results", tmp_path / "batch"
    for args in (
        ["dicom", "listen", "--spool", str(spool), "--allow", "PACS", "--to", "h:1:A", "-m", str(bundle)],
        ["dicom", "results", "-m", str(bundle), "-o", str(results), image],
        ["batch", "run", "-m", str(bundle), "-o", str(batch), image],
        ["predict", "-m", str(bundle), image],
    ):
        _one_line_error(CliRunner().invoke(app, args), "bundle_checksum_mismatch")
    assert not spool.exists() and not results.exists() and not batch.exists()


def test_a_missing_input_is_a_bad_argument(tmp_path: Path) -> None:
    """A path that is not there: exit code 2 and `error (not_found)`, before any work."""
    gone = tmp_path / "gone"
    for args in (
        ["audit", str(gone)],
        ["evaluate", "default", str(gone)],
        ["train", str(gone)],
        ["train", "--config", str(gone / "config.yaml"), str(tmp_path)],
        ["export", str(gone), str(tmp_path / "bundle")],
        ["predict", str(gone)],
    ):
        message = _one_line_error(CliRunner().invoke(app, args), "not_found")
        assert str(gone) in message, args
    assert not (tmp_path / "bundle").exists()


def test_a_folder_that_is_no_data_set_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Found while the progress bar runs: no empty line the bar left behind on stderr. Exit 2, a
    bad argument (1 until 2026-12-06)."""
    result = CliRunner().invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error (dataset_error): ")
    assert result.stderr.count("\n") == 1, result.stderr


class _OneCtStudy(QuietHandler):
    """A DICOMweb service whose study holds one CT image (QIDO-RS only: nothing is fetched)."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        first_page = int(parse_qs(url.query).get("offset", ["0"])[0]) == 0
        instances = [
            {
                "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
                "00080018": {"vr": "UI", "Value": ["1.2.3.4.5"]},
                "00080060": {"vr": "CS", "Value": ["CT"]},
                "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
            }
        ]
        self.reply(
            200, json.dumps(instances if first_page and url.path.endswith("/instances") else []).encode()
        )


def test_dicom_study_says_the_results_are_a_decision_aid() -> None:
    """As `predict`, `batch run` and `dicom results` do where they print results."""
    with http_service(_OneCtStudy) as service:
        result = CliRunner().invoke(app, ["dicom", "study", "1.2.3", "--dicomweb", f"{service}/dicom-web"])
    assert result.exit_code == 1, (result.stdout, result.stderr)  # a CT alone: nothing could be assessed
    assert json.loads(result.stdout)["refused"]
    assert NOTICE in result.stderr and "nothing was predicted" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict"], "Missing argument 'paths' (see 'fracsight predict --help')"),
        (["predict", "--bogus", "a.png"], "No such option: --bogus (see 'fracsight predict --help')"),
        (["serve", "--port", "99999"], "Invalid value for '--port': Input should be less than or equal"),
        (["dicom", "status"], "Missing option '--spool' (see 'fracsight dicom status --help')"),
        (["nosuch"], "No such command 'nosuch' (see 'fracsight --help')"),
    ],
)
def test_a_usage_error_is_one_line_as_every_other_error(args: list[str], message: str) -> None:
    """Not Typer's box, whose borders wrap a long message over several lines of a log."""
    result = CliRunner().invoke(app, args, env=WIDE)
    assert result.exit_code == 2, result.output
    assert len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith(f"error (usage): {message}"), result.output


def test_a_file_named_like_an_option_is_pointed_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fracsight predict *.jpg` in a folder holding "-lead.jpg": "No such option: -l" alone."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-lead.jpg").write_bytes(b"x")
    result = CliRunner().invoke(app, ["predict", "-lead.jpg", "a.jpg"], env=WIDE)
    assert result.exit_code == 2
    assert "(a file named '-lead.jpg' is there: give files after '--', as in -- -lead.jpg)" in result.output
    # not for another option's typo, with the file given after "--" or as an option's value
    for args in (
        ["predict", "--tpyo", "--", "-lead.jpg"],
        ["predict", "x.jpg", "--csv", "-lead.jpg", "--ovrwrite"],
    ):
        other = CliRunner().invoke(app, args, env=WIDE)
        assert other.exit_code == 2 and "a file named" not in other.output, other.output


@pytest.mark.fracatlas
def test_ctrl_c_says_so_where_the_command_does_not(fracatlas_dir: Path) -> None:
    """Typer exits 130 on Ctrl-C without a word: `compare`, `quantize`, `benchmark` and `detector
    joint` stopped silently (the commands that say what they kept, such as `predict`, still do)."""
    import signal
    import subprocess
    import sys

    command = [sys.executable, "-c", "from fracsight.cli import main; main()", "compare", "default"]
    run = subprocess.Popen(
        [*command, "fracatlas-lite0-384-v5", str(fracatlas_dir), "--split", "test"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert run.stderr is not None
    first = run.stderr.readline()  # the data set's loader warning: the command is at work
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, first + err
    assert err.strip().splitlines()[-1] == "interrupted: the command stopped before it finished"
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("blocked", "args", "extra"),
    [
        ("pynetdicom", ["dicom", "send", "x.dcm", "--to", "127.0.0.1:11999"], "dicom"),
        (
            "pynetdicom",
            ["dicom", "listen", "--spool", "spool", "--allow", "PACS", "--to", "127.0.0.1:1:PACS"],
            "dicom",
        ),
        ("highdicom", ["dicom", "results", "x.dcm", "--out", "res"], "dicom"),
        ("torch", ["train", "data"], "train"),
        ("uvicorn", ["serve", "--port", "1"], "serve"),
        ("anyio", ["serve", "--port", "1"], "serve"),  # the light install's first failure: a traceback
        ("onnx", ["quantize", "fracatlas-lite0-384-v5", "q", "--data", "data"], "quantize"),  # not torch's
        ("streamlit", ["app", "--port", "1"], "app"),
        ("ray", ["batch", "run", "data", "--out", "out"], "scale"),
        ("torch", ["detector", "joint", "default", "default", "run", "--data", "data"], "train"),
    ],
)
def test_a_command_whose_extra_is_not_installed_names_it(
    blocked: str, args: list[str], extra: str, tmp_path: Path, fracatlas_dir: Path
) -> None:
    """From a base install (`pip install fracsight`) these ended in a ModuleNotFoundError traceback,
    `dicom listen` after loading the model and making its spool; `serve`, `app` and `batch` said
    which extra to install."""
    import subprocess
    import sys

    from corpus import dicom_bytes

    (tmp_path / "x.dcm").write_bytes(dicom_bytes())
    (tmp_path / "data").symlink_to(fracatlas_dir)
    # a module set to None in sys.modules is one Python cannot import: as if it were not installed
    code = f"import sys; sys.modules[{blocked!r}] = None; from fracsight.cli import main; main()"
    run = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 1, run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"error (missing_dependency): {blocked}: pip install 'fracsight[{extra}]'"
    )
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "spool").exists() and not (tmp_path / "res").exists()


@pytest.mark.parametrize("args", [["models"], ["audit", "DATA", "--json"], ["--help"], ["predict", "--help"]])
def test_output_into_a_closed_pipe_exits_141_for_every_command(args: list[str], tiny_dataset: Path) -> None:
    """Only `predict` turned a closed pipe into 141: `models | head` exited 1 (rich's handling,
    which says something failed) and a JSON report into a closed pipe ended in a traceback.
    ``--help | head`` exited 1 even after that: click prints help before any command runs."""
    import subprocess
    import sys

    args = [str(tiny_dataset) if a == "DATA" else a for a in args]
    run = subprocess.Popen(
        [sys.executable, "-c", "from fracsight.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert run.stdout is not None and run.stderr is not None
    run.stdout.close()  # before the command writes a byte: as `| true` does
    assert run.wait(timeout=300) == 141
    assert b"Traceback" not in run.stderr.read()


@pytest.mark.fracatlas
def test_a_loaders_warning_is_printed_once_and_says_it_is_a_warning(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """Python's handler of last resort printed a bare message (read as output, not as a warning),
    and a folder looked at twice (to recognize its layout, then to read it) said it twice."""
    import subprocess
    import sys

    data = tmp_path / "data"
    (data / "extras").mkdir(parents=True)
    for split in ("train", "val"):
        (data / split).symlink_to(tiny_dataset / split)
    image = next((tiny_dataset / "val" / "fractured").iterdir())
    (data / "extras" / image.name).symlink_to(image)
    command = [sys.executable, "-c", "from fracsight.cli import main; main()", "evaluate", "default"]
    run = subprocess.run(  # not CliRunner: pytest's own log handler would take the records
        [*command, str(data), "--split", "val", "--out", str(tmp_path / "e")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    warned = [line for line in run.stderr.splitlines() if "are not split folders" in line]
    assert warned == [
        f"warning: {data}: folder(s) extras are not split folders (train/val/test) and are ignored"
    ]


def test_ctrl_c_before_a_command_runs_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C half a second after `fracsight batch run ...`, while typer built the command (before
    click's own handler), printed a 30-line traceback."""
    import fracsight.cli

    def interrupted(**kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fracsight.cli, "app", interrupted)
    with pytest.raises(SystemExit) as stopped:
        fracsight.cli.main()
    assert stopped.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def test_a_ctrl_c_caught_after_exec_code_exits_130_under_python_m(tmp_path: Path) -> None:
    """A Ctrl-C that landed in code run by exec() of a string (importing torch runs hundreds, for
    dataclasses) and was caught by the command, which said what it kept and exited 130: under
    ``python -m`` the process then killed itself with SIGINT (exit -2, a CPython quirk)."""
    (tmp_path / "caught.py").write_text(
        "import sys, types\n"
        "def run(prog_name=None):\n"
        "    try:\n"
        "        exec('raise KeyboardInterrupt')\n"
        "    except KeyboardInterrupt:\n"
        "        sys.stderr.write('interrupted: said what it kept\\n')\n"
        "        raise SystemExit(130)\n"
        "cli = types.ModuleType('fracsight.cli')\n"
        "cli.main = run\n"
        "sys.modules['fracsight.cli'] = cli\n"
        "from fracsight._entry import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "caught"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 130 and done.stderr == "interrupted: said what it kept\n", done


@pytest.mark.parametrize(
    "run",
    [
        "from fracsight._entry import main\nmain()\n",  # the installed script
        # `python -m fracsight` called the Typer app itself: a traceback here, and SIGTERM killed it
        # without its finally blocks, unlike `fracsight`
        "import runpy\nrunpy.run_module('fracsight', run_name='__main__')\n",
    ],
    ids=["script", "python-m"],
)
def test_ctrl_c_while_the_cli_is_imported_is_one_line_not_a_traceback(run: str) -> None:
    """Ctrl-C in the first half second (Typer and Rich being imported) printed a traceback."""
    code = (
        "import sys, types\n"
        "class Importing(types.ModuleType):\n"
        "    def __getattr__(self, name):\n"
        "        raise KeyboardInterrupt\n"
        "sys.modules['fracsight.cli'] = Importing('fracsight.cli')\n"
    ) + run
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130 and done.stderr == "interrupted\n", done.stderr


def test_a_ctrl_c_python_would_drop_in_a_callback_still_stops_the_command() -> None:
    """A Ctrl-C that landed in the weak-reference callback of an import lock was printed as
    "Exception ignored ... Traceback ... KeyboardInterrupt" and dropped: `detector train` ran all
    its 500 epochs and exited 0 (seen in CI)."""
    code = (
        "import sys, time, types, weakref\n"
        "class Thing: pass\n"
        "def dropped(_):\n"
        "    raise KeyboardInterrupt\n"
        "def run(prog_name=None):\n"
        "    try:\n"
        "        thing = Thing()\n"
        "        ref = weakref.ref(thing, dropped)\n"
        "        del thing\n"  # the callback runs here; Python cannot raise from it
        "        for _ in range(100):\n"  # the epochs that went on
        "            time.sleep(0.1)\n"
        "    except KeyboardInterrupt:\n"
        "        sys.stderr.write('interrupted\\n')\n"
        "        raise SystemExit(130)\n"
        "    sys.stderr.write('ran to the end\\n')\n"
        "cli = types.ModuleType('fracsight.cli')\n"
        "cli.main = run\n"
        "sys.modules['fracsight.cli'] = cli\n"
        "from fracsight._entry import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130 and done.stderr == "interrupted\n", done
