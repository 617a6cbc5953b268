"""A bundle folder is written whole or not at all, even when the process is told to stop."""

from __future__ import annotations

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
