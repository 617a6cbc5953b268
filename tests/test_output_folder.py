"""A bundle folder is written whole or not at all, even when the process is told to stop."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

STOPPED_WHILE_WRITING = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from fracsight._output import staged_folder

    with staged_folder(Path(sys.argv[1]), force=False) as work:
        (work / "bundle.json").write_text("{}")
        os.kill(os.getpid(), signal.SIGTERM)  # as `timeout` or a job scheduler stops a job
        time.sleep(60)
    """
)


def test_sigterm_while_a_bundle_is_written_leaves_no_half_built_folder(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_WHILE_WRITING, str(out)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 143, done.stderr  # 128 + SIGTERM, as a shell reports a terminated job
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor its hidden .bundle.partial-* folder


def test_a_file_whose_name_is_near_the_limit_is_replaced_atomically(tmp_path: Path) -> None:
    """The temporary file's name is the target's and 30 characters more: a legal name of 240
    characters could not be written (``File name too long``), from the desktop's exports too."""
    from fracsight._files import replace_atomically, replaced_by

    for name in ("é" * 120 + ".csv", "L" * 251 + ".csv"):  # 244 and 255 bytes
        target = tmp_path / name
        replace_atomically(target, lambda tmp: tmp.write_text("new"))
        assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == [name]
        target.unlink()
    assert replaced_by(f".best.pt.{12}.{34}.tmp") == "best.pt"


@pytest.mark.parametrize(("mode", "kept"), [(0o600, 0o600), (0o444, 0o444), (0o640, 0o640), (0o4750, 0o750)])
def test_a_file_replaced_keeps_its_permissions(tmp_path: Path, mode: int, kept: int) -> None:
    """The reproduction: ``predict --csv private.csv --overwrite`` on a file made private (0600)
    wrote it back readable by everyone (0644), as did the desktop's exports and batch results."""
    import stat

    from fracsight._files import replace_atomically

    target = tmp_path / "results.csv"
    target.write_text("old")
    target.chmod(mode)
    replace_atomically(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == kept  # never set-user-ID


@pytest.mark.parametrize("hard_links", [True, False], ids=["hard-links", "no-hard-links"])
def test_an_exclusive_write_never_replaces_a_file_made_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hard_links: bool
) -> None:
    """A file made while ours was written (another run into one overlay folder) is kept, ours is a
    FileExistsError and leaves nothing behind; without hard links (FAT, some SMB shares) as well."""
    import os

    from fracsight._files import replace_atomically

    if not hard_links:

        def no_links(*args: object, **kwargs: object) -> None:
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "x.overlay.png"

    def write_while_another_takes_the_name(tmp: Path) -> None:
        tmp.write_text("ours")
        target.write_text("theirs")

    with pytest.raises(FileExistsError):
        replace_atomically(target, write_while_another_takes_the_name, exclusive=True)
    assert target.read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == [target.name]
    target.unlink()
    replace_atomically(target, lambda tmp: tmp.write_text("ours"), exclusive=True)
    assert target.read_text() == "ours" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_force_replaces_a_bundle_but_not_the_files_kept_beside_it(tmp_path: Path) -> None:
    """`export`, `quantize` and `detector train --force` deleted notes and reports kept in the
    bundle folder without a word (the folder is replaced whole)."""
    import pytest

    from fracsight._output import BUNDLE_FILES, check_output_folder
    from fracsight.errors import OutputFolderError

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in BUNDLE_FILES:
        (bundle / name).write_text("x")
    (bundle / ".DS_Store").write_bytes(b"Finder")
    (bundle / "Thumbs.db").write_bytes(b"Explorer")
    check_output_folder(bundle, force=True)  # a bundle alone (and a file browser's files): replaced
    (bundle / "my-notes.md").write_text("important results")
    (bundle / "eval-test").mkdir()
    with pytest.raises(
        OutputFolderError, match=r"holds files that are not the bundle's \(eval-test, my-notes.md\)"
    ):
        check_output_folder(bundle, force=True)


def test_force_is_offered_only_where_it_would_be_accepted(tmp_path: Path) -> None:
    """ "choose another folder or pass --force", and with --force: "which --force will not replace"."""
    from fracsight._output import BUNDLE_FILES, check_output_folder
    from fracsight.errors import OutputFolderError

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(
            OutputFolderError, match=r"not a model bundle \(no bundle.json\), so --force will not"
        ):
            check_output_folder(notes, force=force)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in BUNDLE_FILES:
        (bundle / name).write_text("x")
    with pytest.raises(
        OutputFolderError, match="holds a model bundle; choose another folder or pass --force"
    ):
        check_output_folder(bundle, force=False)
    check_output_folder(bundle, force=True)


def test_force_keeps_refusing_a_bundle_folder_with_hidden_files_of_the_users(tmp_path: Path) -> None:
    """Only a file browser's own files (.DS_Store, Thumbs.db, desktop.ini, ._NAME) are passed over:
    passing over every hidden name deleted a `.git` folder or `.notes.md` with the old bundle."""
    import pytest

    from fracsight._output import BUNDLE_FILES, check_output_folder
    from fracsight.errors import OutputFolderError

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in [*BUNDLE_FILES, ".DS_Store", "._bundle.json"]:
        (bundle / name).write_text("x")
    check_output_folder(bundle, force=True)
    (bundle / ".git").mkdir()
    (bundle / ".notes.md").write_text("mine")
    with pytest.raises(OutputFolderError, match=r"\(.git, .notes.md\)"):
        check_output_folder(bundle, force=True)


def test_force_never_replaces_a_packaged_bundle() -> None:
    """The README says the commands that made the shipped bundles refuse to replace them: only the
    not-empty check stood in the way, and --force passed it."""
    from fracsight._output import check_output_folder
    from fracsight.errors import OutputFolderError
    from fracsight.inference.store import packaged_bundles

    for folder in packaged_bundles().values():
        before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
        with pytest.raises(OutputFolderError, match="is a bundle packaged with fracsight"):
            check_output_folder(folder, force=True)
        assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before


def test_force_never_replaces_an_input_bundle_given_by_its_zip(tmp_path: Path) -> None:
    """`quantize b1.zip b1 --force` replaced the float bundle folder b1 (the one b1.zip was made
    from) with the INT8 one: only the paths were compared, and b1.zip unpacks elsewhere."""
    import shutil

    from fracsight._output import check_output_folder
    from fracsight.errors import OutputFolderError
    from fracsight.inference.store import resolve_bundle

    packaged = resolve_bundle("fracatlas-lite0-384-v2")
    mine, unpacked = tmp_path / "b1", tmp_path / "unpacked-b1"
    for copy in (mine, unpacked):
        shutil.copytree(packaged, copy)
    with pytest.raises(OutputFolderError, match=f"{mine} holds a copy of the float bundle"):
        check_output_folder(mine, force=True, inputs=[("the float bundle", unpacked)])
    other = tmp_path / "v5"
    shutil.copytree(resolve_bundle("fracatlas-lite0-384-v5"), other)
    check_output_folder(mine, force=True, inputs=[("the float bundle", other)])  # another: replaced


def test_the_folder_the_command_runs_in_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fracsight export ../run .` in an empty folder built the bundle inside `.` (the parent of
    `.` is `.`), then refused its own build folder after all the work: "holds files that are not
    the bundle's (..partial-...)", about a folder that was empty and a --force never given."""
    from fracsight._output import check_output_folder
    from fracsight.errors import OutputFolderError

    here = tmp_path / "empty" / "deeper"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    with pytest.raises(OutputFolderError, match=r"^\. is the folder you are in.* for example bundle$"):
        check_output_folder(Path("."), force=False)
    with pytest.raises(OutputFolderError, match=r"^\.\. is a folder above the one you are in"):
        check_output_folder(Path(".."), force=True)
    check_output_folder(Path("bundle"), force=False)


def test_an_output_folder_that_cannot_be_made_is_refused_before_any_work(tmp_path: Path) -> None:
    """The reproduction: ``export``/``quantize`` to a link whose target is gone, or under a file,
    worked for seconds to minutes, then failed naming a hidden ``.NAME.partial-*`` folder."""
    from fracsight._output import check_output_folder
    from fracsight.errors import OutputFolderError

    (tmp_path / "dangling").symlink_to("gone")
    with pytest.raises(OutputFolderError, match="a link whose target does not exist"):
        check_output_folder(tmp_path / "dangling", force=False)
    (tmp_path / "notes.txt").write_text("the user's")
    with pytest.raises(OutputFolderError, match=r"notes\.txt is not a folder"):
        check_output_folder(tmp_path / "notes.txt" / "bundle", force=False)
    check_output_folder(tmp_path / "new" / "deeper" / "bundle", force=False)  # made when written


def test_a_link_as_the_output_folder_is_refused_not_replaced(tiny_bundle: Path, tmp_path: Path) -> None:
    """``quantize B current --force`` with ``current -> releases/v3``: the new bundle took the
    link's place, the link was gone and v3 unchanged, said as written to ``current``."""
    from fracsight._output import staged_folder
    from fracsight.errors import OutputFolderError

    release = shutil.copytree(tiny_bundle, tmp_path / "releases" / "v3")
    (tmp_path / "current").symlink_to(release)
    for force in (False, True):
        refused = pytest.raises(OutputFolderError, match=r"current is a link to .*releases/v3")
        with refused, staged_folder(tmp_path / "current", force=force) as work:
            (work / "bundle.json").write_text("{}")
    assert (tmp_path / "current").is_symlink() and (release / "model.onnx").is_file()


def test_overlays_to_a_link_whose_target_is_gone_are_refused_before_predicting(
    tmp_path: Path, fracatlas_dir: Path
) -> None:
    from typer.testing import CliRunner

    from fracsight.cli import app

    (tmp_path / "overlays").symlink_to("gone")
    image = next((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))
    result = CliRunner().invoke(app, ["predict", str(image), "--overlay-dir", str(tmp_path / "overlays")])
    assert result.exit_code == 2
    assert "is a link whose target does not exist (gone) (--overlay-dir)" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "IMG", "--csv", "LONG.csv"],
        ["predict", "LONG.jpg"],
        ["dicom", "results", "IMG", "--out", "LONG"],
    ],
    ids=["output", "input", "dicom-output"],
)
def test_a_name_too_long_for_the_file_system_is_one_line_not_a_traceback(
    tmp_path: Path, fracatlas_dir: Path, args: list[str]
) -> None:
    """Python 3.11's ``Path.exists()`` raises ``File name too long`` instead of answering False, in
    the checks every command makes before its work."""
    image = next((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))
    long = str(tmp_path / ("L" * 256))
    argv = [a.replace("IMG", str(image)).replace("LONG", long) for a in args]
    done = subprocess.run(
        [sys.executable, "-m", "fracsight", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "error (bad_path): file name too long: " in done.stderr and "(" in done.stderr


STOPPED_TWICE = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from fracsight._output import terminate_as_exit

    done = Path(sys.argv[1])
    try:
        with terminate_as_exit():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)
    finally:  # the clean-up a second signal cut short: exit -15, the files it was to remove left
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        done.write_text("cleaned")
    """
)


def test_a_second_stop_signal_does_not_cut_the_clean_up_short(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_TWICE, str(tmp_path / "done")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 143, done.stderr
    assert (tmp_path / "done").read_text() == "cleaned"


def test_the_cli_called_in_process_leaves_the_callers_signal_handlers_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C inside the CLI makes the `fracsight` process ignore further stops while it ends; a
    program that runs the CLI in-process (these tests, a notebook) must keep its own handlers, or
    every process it starts afterwards inherits Ctrl-C and SIGTERM ignored."""
    import signal

    from typer.testing import CliRunner

    from fracsight.cli import app

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("fracsight.inference.list_bundles", interrupted)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 130, result.output
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_signal_ignored_by_nohup_stays_ignored_where_stops_are_handled() -> None:
    """`nohup fracsight batch run ... &` (or a DICOM node, the web app, the desktop) stopped when the
    ssh session closed: their stop handler replaced the SIGHUP that nohup had set to be ignored."""
    import signal

    from fracsight._output import signals_handled

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

        def stop(*_: object) -> None:
            pass

        with signals_handled(stop):
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is stop
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
