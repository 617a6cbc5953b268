"""`fracsight batch` as a hospital quality team runs it over a PACS export: `batch status` from
another terminal while a job runs, after Ctrl-C and after `kill -9`, and a job run under nohup or
a scheduler, whose stderr is a log file. Fast: nothing here starts Ray (the job's own summary line
is checked against a real Ray in tests/test_scale_ray.py)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fracsight.cli import app as cli
from fracsight.scale.cli import _LogProgress
from fracsight.scale.output import BatchOutput

pytest.importorskip("ray")

MODEL = {"name": "m", "version": "1", "onnx_sha256": "0" * 64}
COLUMNS = ("path", "error_code")
ROWS = [
    {"path": "/x/IM000001", "error_code": ""},
    {"path": "/x/CT0001", "error_code": "unsupported_modality"},
    {"path": "/x/CT0002", "error_code": "unsupported_modality"},
    {"path": "/x/IM_EMPTY", "error_code": "empty_file"},
]
CODES = {"unsupported_modality": 2, "empty_file": 1}


def status(out: Path, *options: str) -> str:
    result = CliRunner().invoke(cli, ["batch", "status", str(out), *options])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_status_lists_the_errors_of_a_running_then_killed_job(tmp_path: Path) -> None:
    """job.json has no error counts while a job runs, nor after `kill -9`: status listed rows
    only, and `--json` had no `errors`; they are counted from the committed parts now."""
    code = (
        "import json, sys, time; from pathlib import Path; from fracsight.scale.output import BatchOutput; "
        "o = BatchOutput(Path(sys.argv[1]), ('path', 'error_code'), json.loads(sys.argv[2])); "
        "o.commit(json.loads(sys.argv[3])); print('ready', flush=True); time.sleep(120)"
    )
    args = [str(tmp_path / "out"), json.dumps(MODEL), json.dumps(ROWS)]
    job = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout is not None and job.stdout.readline() == "ready\n"
        running = status(tmp_path / "out")
        assert ": running, 4 rows" in running
        assert "  unsupported_modality: 2\n" in running and "  empty_file: 1\n" in running
    finally:
        job.kill()
        job.wait()
    as_json = json.loads(status(tmp_path / "out", "--json"))
    assert as_json["status"] == "stopped" and as_json["rows"] == 4 and as_json["errors"] == CODES


def test_an_interrupted_job_keeps_its_error_counts_in_job_json(tmp_path: Path) -> None:
    """Ctrl-C rewrote job.json with the rows kept but without their errors."""
    out = BatchOutput(tmp_path / "out", COLUMNS, MODEL)
    out.commit(ROWS)
    out.end_early("interrupted")
    out.close()
    record = json.loads((tmp_path / "out" / "job.json").read_text())
    assert record["status"] == "interrupted" and record["rows"] == 4 and record["errors"] == CODES
    said = status(tmp_path / "out")
    assert ": interrupted, 4 rows" in said and "  unsupported_modality: 2\n" in said


def test_a_results_csv_a_person_edited_is_kept_when_the_output_is_opened_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reviewer's column added to results.csv was gone after the next run into the same --out
    (the CSV is made again from the parts), also a run with nothing left to predict. A CSV that
    lacks the last rows (an append that failed) is the job's own and made whole without a copy."""
    out = BatchOutput(tmp_path / "out", COLUMNS, MODEL)
    out.commit(ROWS)
    out.close()
    csv_path = tmp_path / "out" / "results.csv"
    whole = csv_path.read_bytes()
    csv_path.write_bytes(whole[: whole.rindex(b"/x/IM_EMPTY")])  # the last append cut short
    BatchOutput(tmp_path / "out", COLUMNS, MODEL).close()
    assert csv_path.read_bytes() == whole and sorted(p.name for p in (tmp_path / "out").glob("results*")) == [
        "results.csv"
    ]
    edited = whole.replace(b"path,error_code", b"path,error_code,reviewer_note", 1)
    csv_path.write_bytes(edited)
    with caplog.at_level("WARNING", logger="fracsight.scale"):
        BatchOutput(tmp_path / "out", COLUMNS, MODEL).close()
    (kept,) = (tmp_path / "out").glob("results.edited-*.csv")
    assert kept.read_bytes() == edited and csv_path.read_bytes() == whole
    assert f"kept as {kept}" in caplog.text
    # rows taken out of the middle (--retry-errors, a file changed) are no edit: nothing kept aside
    kept.unlink()
    out = BatchOutput(tmp_path / "out", COLUMNS, MODEL)
    assert out.forget_errors(["/x/CT0001", "/x/CT0002"]) == 2
    out.close()
    assert [p.name for p in (tmp_path / "out").glob("results*")] == ["results.csv"]
    assert b"CT0001" not in csv_path.read_bytes()


def test_a_job_killed_as_its_output_opens_can_be_run_again(tmp_path: Path) -> None:
    """A job killed (kill -9, OOM, a lost node) before it wrote job.json left .lock, parts/ and
    NOTICE.txt, and every run after it was refused: "not a fracsight batch output"."""
    code = (
        "import json, os, signal, sys; from pathlib import Path; "
        "from fracsight.scale.output import BatchOutput; "
        "BatchOutput._rebuild_csv = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL); "
        "BatchOutput(Path(sys.argv[1]), ('path', 'error_code'), json.loads(sys.argv[2]))"
    )
    killed = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "out"), json.dumps(MODEL)], check=False
    )
    assert killed.returncode == -9 and (tmp_path / "out" / "parts").is_dir()
    out = BatchOutput(tmp_path / "out", COLUMNS, MODEL)
    out.commit(ROWS)
    out.close()
    assert ", 4 rows" in status(tmp_path / "out")
    # killed as it wrote that first job.json: its temporary file alone beside the lock
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / ".lock").touch()
    (tmp_path / "again" / ".job.json.4242.139680639249280.tmp").write_text("{")
    BatchOutput(tmp_path / "again", COLUMNS, MODEL).close()
    assert not list((tmp_path / "again").glob(".job.json.*"))
    # a user's file or folder of a like name is theirs: refused as before, nothing deleted
    from fracsight.scale.output import OutputRefused

    (tmp_path / "users").mkdir()
    for name in (".job.json.draft.tmp", ".job.json.1.2.tmp/"):
        mine = tmp_path / "users" / name.strip("/")
        mine.mkdir() if name.endswith("/") else mine.write_text("my draft")
        with pytest.raises(OutputRefused, match="is not a fracsight batch output"):
            BatchOutput(tmp_path / "users", COLUMNS, MODEL)
        assert mine.exists() and not (tmp_path / "users" / "job.json").exists()
        mine.rmdir() if mine.is_dir() else mine.unlink()
    assert json.loads((tmp_path / "again" / "job.json").read_text())["model"] == MODEL


def test_a_full_disk_as_an_output_opens_says_the_rows_it_holds(tmp_path: Path, monkeypatch) -> None:
    """A complete output run again on a full disk: "0 rows are committed" (NOTICE.txt was written
    before the rows were read), and job.json, where its write got through, said 0 rows too."""
    import errno

    from fracsight.scale import output as output_module

    out = BatchOutput(tmp_path / "out", COLUMNS, MODEL)
    out.commit(ROWS)
    out.write_job({"status": "complete", "rows": 4, "errors": CODES})
    out.close()
    (tmp_path / "out" / "NOTICE.txt").write_text("an older version's notice\n")

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(output_module, "replace_atomically", full)
    with pytest.raises(output_module.OutputWriteFailed, match="4 rows are committed"):
        BatchOutput(tmp_path / "out", COLUMNS, MODEL)
    monkeypatch.undo()
    assert ": complete, 4 rows" in status(tmp_path / "out")
    # room for job.json but not for results.csv: it was rewritten "stopped", its last run lost
    real = output_module.replace_atomically

    def room_for_job_json_only(target: Path, *args, **kwargs):
        return real(target, *args, **kwargs) if target.name == "job.json" else full()

    monkeypatch.setattr(output_module, "replace_atomically", room_for_job_json_only)
    (tmp_path / "out" / "results.csv").write_text("edited away\n")  # so that it is rebuilt
    with pytest.raises(output_module.OutputWriteFailed, match="4 rows are committed"):
        BatchOutput(tmp_path / "out", COLUMNS, MODEL)
    monkeypatch.undo()
    assert ": complete, 4 rows" in status(tmp_path / "out")


def test_ctrl_c_while_an_output_opens_leaves_job_json_as_it_was(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C while a large output's rows were read (seconds for 300,000 rows): job.json said
    "running" without its counts, and `batch status` called a complete output stopped."""
    out = BatchOutput(tmp_path / "out", COLUMNS, MODEL)
    out.commit(ROWS)
    out.write_job({"status": "complete", "rows": 4, "errors": CODES})
    out.close()
    before = (tmp_path / "out" / "job.json").read_text()

    def pressed(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(BatchOutput, "_rebuild_csv", pressed)  # the slow step of opening
    with pytest.raises(KeyboardInterrupt):
        BatchOutput(tmp_path / "out", COLUMNS, MODEL)
    assert (tmp_path / "out" / "job.json").read_text() == before
    with pytest.raises(KeyboardInterrupt):  # a folder the job made goes again
        BatchOutput(tmp_path / "new", COLUMNS, MODEL)
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    assert ": complete, 4 rows" in status(tmp_path / "out")
    BatchOutput(tmp_path / "out", COLUMNS, MODEL).close()  # the lock was let go


def test_a_job_logging_to_a_file_says_how_far_it_has_got() -> None:
    """Under nohup or a scheduler (stderr not a terminal) the bar is not drawn, and a night's
    job said nothing until its summary; now a line at most every minute, with the time left."""
    text = io.StringIO()
    console = Console(file=text, width=40, soft_wrap=True, markup=False, highlight=False)
    now = [0.0]
    shown = _LogProgress(console, every=60.0, clock=lambda: now[0])
    for t, done in ((0.0, 1000), (30.0, 1256), (70.0, 2000), (100.0, 2256), (190.0, 10_000)):
        now[0] = t
        shown(done, 10_000)
    # 1000 rows in 70 s is 14.3 rows/s: 8000 rows left take about 9 min; not one line per commit,
    # none at the end (the summary says it), and not cut at the console's 40 columns
    assert text.getvalue() == "2000 of 10000 rows committed (20.0%), about 9 min left\n"


def test_another_model_into_an_output_is_said_to_be_another_model(tmp_path: Path) -> None:
    """A retrained model (a class head, other class names: other columns) refused with "other
    columns (--all-classes?)", an option never given; two exports of the default name and version
    were described alike ("m v1 ... (m v1 ...)")."""
    from fracsight.scale.output import SETTINGS_KEY, OutputRefused

    BatchOutput(tmp_path / "out", COLUMNS, {**MODEL, SETTINGS_KEY: "a"}).close()
    retrained = {**MODEL, "onnx_sha256": "1" * 64, SETTINGS_KEY: "a"}
    with pytest.raises(OutputRefused) as refused:
        BatchOutput(tmp_path / "out", (*COLUMNS, "class"), retrained)
    assert str(refused.value) == (
        f"{tmp_path / 'out'} holds results of m v1 (model.onnx {'0' * 12}), and this job "
        f"(m v1 (model.onnx {'1' * 12})) has another model: use another --out"
    )
    for changed, why in (
        ({SETTINGS_KEY: "b"}, "the same model with other settings in its bundle.json"),
        ({"operating_point": "triage"}, "another operating point"),
        ({}, "other columns (--all-classes?)"),
    ):
        with pytest.raises(OutputRefused, match=rf"has {re.escape(why)}"):
            BatchOutput(tmp_path / "out", (*COLUMNS, "class"), {**MODEL, SETTINGS_KEY: "a", **changed})
