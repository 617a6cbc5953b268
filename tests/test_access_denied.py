"""Files, folders and spools the user cannot read or write, and names that are not UTF-8
(`fracsight predict`, `dicom status`).

Permission denied cannot be seen by root: as root, the command runs as the user ``nobody``
(``setpriv``), in a folder that user may enter, as a reader without rights to a share would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fracsight.inference.tabular import text_cell

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _as_reader(args: list[str], cwd: Path, *, python: bool = False) -> subprocess.CompletedProcess[str]:
    """``fracsight ARGS`` (``python ARGS`` where ``python``) as a user without rights to others' files."""
    command = [sys.executable, *(() if python else ("-m", "fracsight")), *args]
    if os.geteuid() == 0:
        command = [*NOBODY, *command]
    env = {**os.environ, "HOME": str(cwd), "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture()
def shared_folder() -> Iterator[Path]:
    """A folder under /tmp that ``nobody`` may enter (pytest's are root's alone)."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no way to be denied a file")
    folder = Path(tempfile.mkdtemp(prefix="fracsight-access-"))
    folder.chmod(0o755)
    try:
        check = _as_reader(["--version"], folder)
        if check.returncode != 0:
            pytest.skip(f"the user nobody cannot run this Python here: {check.stderr[-200:]}")
        yield folder
    finally:
        for path in folder.rglob("*"):
            if not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder)


def _image(fracatlas_dir: Path, target: Path, mode: int = 0o644) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.parent.chmod(0o755)
    shutil.copyfile(fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg", target)
    target.chmod(mode)
    return target


def test_files_and_folders_that_cannot_be_read_are_rows_and_the_rest_is_predicted(
    shared_folder: Path, fracatlas_dir: Path
) -> None:
    """An unreadable file named on the command line was a usage error (exit 2, nothing predicted);
    a sub-folder that cannot be listed ended the run in "os_error: Permission denied" with no
    results; and a PACS export's `IM0002` that cannot be opened left its study without a word, the
    study called complete."""
    _image(fracatlas_dir, shared_folder / "ok.jpg")
    _image(fracatlas_dir, shared_folder / "bad.jpg", 0o000)
    _image(fracatlas_dir, shared_folder / "sub" / "x.jpg")
    _image(fracatlas_dir, shared_folder / "pacs" / "study1" / "IM0001")
    _image(fracatlas_dir, shared_folder / "pacs" / "study1" / "IM0002", 0o000)
    (shared_folder / "sub").chmod(0o000)

    named = _as_reader(["predict", "ok.jpg", "bad.jpg", "--json"], shared_folder)
    assert named.returncode == 1, named.stderr
    rows = {r["source"]: r for r in json.loads(named.stdout)["images"]}
    assert rows["ok.jpg"]["fracture_probability"] > 0.5
    assert (
        rows["bad.jpg"]["error_code"] == "unreadable_image"
        and "Permission denied" in rows["bad.jpg"]["error"]
    )

    folder = _as_reader(["predict", ".", "--json"], shared_folder)
    assert folder.returncode == 1, folder.stderr
    report = json.loads(folder.stdout)
    rows = {r["source"]: r for r in report["images"]}
    assert "fracture_probability" in rows["ok.jpg"] and rows["sub"]["error_code"] == "unreadable_image"
    assert rows["pacs/study1/IM0002"]["error_code"] == "unreadable_image"
    (study,) = report["studies"]
    assert study["reliable"] is False and "1 of 2 views could not be read" in json.dumps(study)

    # the folder itself: "no image files found" (exit 2) for a folder that is not empty
    alone = _as_reader(["predict", "sub", "--json"], shared_folder)
    assert alone.returncode == 1, alone.stderr
    (row,) = json.loads(alone.stdout)["images"]
    assert row["error"] == "sub: a folder that cannot be listed (Permission denied)"

    # a data set's file without an image extension that cannot be opened is no sample (it would stop
    # `train`); `predict` takes it to say why
    (shared_folder / "pacs" / "study1" / "README").write_text("notes")
    (shared_folder / "pacs" / "study1" / "README").chmod(0o000)
    code = (
        "import sys, pathlib; from fracsight.data._files import is_image_file as i; "
        "print(i(pathlib.Path(sys.argv[1])))"
    )
    listed = _as_reader(["-c", code, "pacs/study1/README"], shared_folder, python=True)
    assert listed.stdout.strip() == "False", listed.stderr


def test_a_folder_that_lists_but_cannot_be_entered_costs_only_its_own_files(
    shared_folder: Path, fracatlas_dir: Path
) -> None:
    """`chmod -R 644` (a folder one may list but not enter): pathlib's is_dir() and exists() raise
    PermissionError there, and the whole run ended in "os_error: Permission denied" (a folder) or a
    traceback (its file named), `batch run` gave "internal_error" rows, and `audit` stopped with no
    report."""
    for name in ("a.jpg", "b.jpg", "p1/c.jpg", "data/Fractured/f1.jpg", "data/Normal/n1.jpg"):
        _image(fracatlas_dir, shared_folder / "scans" / name)
    for name in ("x.jpg", "y.jpg", "z.jpg"):  # a few of each, so that the audit has a data set
        _image(fracatlas_dir, shared_folder / "scans" / "data" / "Fractured" / name)
        _image(fracatlas_dir, shared_folder / "scans" / "data" / "Normal" / name)
    _image(fracatlas_dir, shared_folder / "scans" / "data" / "Normal" / "locked" / "n2.jpg")
    (shared_folder / "scans" / "p1").chmod(0o644)
    (shared_folder / "scans" / "data" / "Normal" / "locked").chmod(0o644)
    denied = "p1/c.jpg: cannot read the file (Permission denied)"

    folder = _as_reader(["predict", "scans", "--json"], shared_folder)
    assert folder.returncode == 1, folder.stderr
    rows = {r["source"]: r for r in json.loads(folder.stdout)["images"]}
    assert "fracture_probability" in rows["a.jpg"] and "fracture_probability" in rows["b.jpg"]
    assert rows["p1/c.jpg"]["error_code"] == "unreadable_image" and rows["p1/c.jpg"]["error"] == denied
    named = _as_reader(["predict", "scans/p1/c.jpg", "scans/a.jpg", "--json"], shared_folder)
    assert named.returncode == 1 and "Traceback" not in named.stderr, named.stderr
    rows = {r["source"]: r for r in json.loads(named.stdout)["images"]}
    assert "fracture_probability" in rows["a.jpg"] and rows["c.jpg"]["error_code"] == "unreadable_image"

    audit = _as_reader(["audit", "scans/data", "--json"], shared_folder)
    assert audit.returncode in (0, 1) and "Traceback" not in audit.stderr, audit.stderr
    report = json.loads(audit.stdout)
    assert "locked/n2.jpg" in json.dumps(report)  # listed as unreadable, the rest audited


def test_one_path_too_long_deep_in_a_folder_costs_only_its_own_row(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    """A file 20 folders of 250 letters deep (4000 characters: over the system's limit) ended the
    whole run in "bad_path: file name too long", the files beside it not predicted."""
    top = tmp_path / "deep"
    _image(fracatlas_dir, top / "top.jpg")
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(20):  # made step by step: the whole path is too long for one call
            os.mkdir("D" * 250, dir_fd=fd)
            inner = os.open("D" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        with open(os.open("bottom.jpg", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write((top / "top.jpg").read_bytes())
    finally:
        os.close(fd)
    done = subprocess.run(
        [sys.executable, "-m", "fracsight", "predict", str(top), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    rows = {r["source"]: r for r in json.loads(done.stdout)["images"]}
    assert "fracture_probability" in rows["top.jpg"]
    (deep,) = (r for name, r in rows.items() if name != "top.jpg")  # the folder past the limit
    assert deep["error_code"] == "unreadable_image" and "(File name too long)" in deep["error"]


def test_a_huge_file_named_as_an_image_is_refused_by_its_first_bytes(tmp_path: Path) -> None:
    """A 6 GB disk image named .png was read whole (6.4 GB of memory, and a MemoryError that lost
    every row under a memory limit) to be called "not a supported image" by its first bytes."""
    import tracemalloc

    from fracsight.errors import UnsupportedFormatError
    from fracsight.io import read_image

    big = tmp_path / "disk.png"
    with big.open("wb") as f:  # sparse: no disk used
        f.truncate(512 * 2**20)
    tracemalloc.start()
    try:
        refused = r"not a supported image.*despite its \.png extension"
        with pytest.raises(UnsupportedFormatError, match=refused):
            read_image(big)
        assert tracemalloc.get_traced_memory()[1] < 2**20
    finally:
        tracemalloc.stop()


def test_a_folder_name_that_is_not_utf8_is_the_same_in_json_and_csv(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    """A study folder named in Latin-1 (`\\xe9`) was `"\\udce9/study2"` in the JSON (a lone surrogate,
    which strict parsers refuse) and `\\xe9/study2` in the CSV and the image rows."""
    root = os.fsencode(tmp_path / "odd")
    for study in (b"study1", b"study2"):
        folder = os.path.join(root, b"\xe9", study)
        os.makedirs(folder)
        for view in (b"a.jpg", b"b.jpg"):
            shutil.copyfile(
                fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg", os.path.join(folder, view)
            )
    done = subprocess.run(
        [sys.executable, "-m", "fracsight", "predict", str(tmp_path / "odd"), "--json"],
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.decode("utf-8"))
    names = sorted(s["study"] for s in report["studies"])
    assert (
        names == [text_cell("\udce9/study1"), text_cell("\udce9/study2")] == ["\\xe9/study1", "\\xe9/study2"]
    )


def test_dicom_status_reads_a_spool_it_cannot_write(shared_folder: Path) -> None:
    """`dicom status` on a stopped node's spool in a folder this user cannot write (a read-only
    mount, a monitoring user) said "spool_busy: unable to open database file": SQLite could not make
    the WAL database's -shm file."""
    from fracsight.dicom.spool import Spool

    Spool(shared_folder / "spool").close()  # made, then stopped: no -shm left
    for path in (shared_folder / "spool", *(shared_folder / "spool").rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    done = _as_reader(["dicom", "status", "--spool", "spool", "--json"], shared_folder)
    assert done.returncode == 0, done.stderr
    assert "backlog" in json.loads(done.stdout)


def test_the_desktops_listing_keeps_a_folder_it_cannot_list_as_a_row(
    shared_folder: Path, fracatlas_dir: Path
) -> None:
    """A locked folder opened in the desktop (alone, or inside one opened) lost its row "a folder
    that cannot be listed" and was called empty ("No image files found") once empty folders were
    named; an empty folder is still named apart."""
    _image(fracatlas_dir, shared_folder / "open" / "ok" / "a.jpg")
    _image(fracatlas_dir, shared_folder / "open" / "locked" / "b.jpg")
    (shared_folder / "empty").mkdir(mode=0o755)
    (shared_folder / "open" / "locked").chmod(0o000)
    code = (
        "import json, sys; from pathlib import Path; from fracsight.desktop.state import list_inputs\n"
        "for given in (['open'], ['open/locked', 'empty']):\n"
        "    files, empty = list_inputs([Path(p) for p in given])\n"
        "    print(json.dumps([[n for _, n in files], [str(p) for p in empty]]))\n"
    )
    done = _as_reader(["-c", code], shared_folder, python=True)
    assert done.returncode == 0, done.stderr
    inside, alone = (json.loads(line) for line in done.stdout.splitlines())
    assert inside == [["locked", "ok/a.jpg"], []]
    assert alone == [["locked"], ["empty"]]


def test_a_dicomweb_password_file_the_node_cannot_read_says_whose_it_must_be(shared_folder: Path) -> None:
    """A container secret keeps the host's owner and mode (600, the admin's): the node's user got
    click's "path '...' is not readable", unlike the API's tokens file, which says the uid."""
    secret = shared_folder / "dicomweb_password"
    secret.write_text("not-this\n")
    secret.chmod(0o600)
    args = ["dicom", "listen", "--spool", "spool", "--allow", "ORTHANC", "--host", "127.0.0.1"]
    args += ["--stow", "http://127.0.0.1:9/dicom-web", "--dicomweb-password-file", secret.name]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FRACSIGHT_DICOMWEB_USER", "fracsight")
        done = _as_reader(args, shared_folder)
    assert done.returncode == 2, done.stderr
    uid = 65534 if os.geteuid() == 0 else os.geteuid()
    said = f"password file {secret.name}: Permission denied: fracsight runs as uid {uid}, which must be able"
    assert said in done.stderr, done.stderr
    assert "not-this" not in done.stderr + done.stdout and not (shared_folder / "spool").exists()
