"""Files replaced all at once: a reader, or a run resumed after a crash or Ctrl-C, finds the old
content or the new, never half of one (checkpoints, bundle metadata, batch parts, DICOM spool)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "fsync_dir",
    "is_stream",
    "keep_permissions",
    "replace_atomically",
    "replaced_by",
    "replaced_whole",
    "write_output",
]

_TMP = ".tmp"
_PIPE_READER_WAIT_S = 2.0  # how long a pipe written into may wait for its reader to open it
# an evaluation's scratch folder in its --out: one a killed run left is not the user's content
REPORT_SCRATCH = ".fracsight-evaluate-"
_NAME_MAX = 255  # bytes in a file name: ext4, XFS, btrfs, APFS, NTFS (characters)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(
    target: Path, write: Callable[[Path], object], *, tmp_dir: Path | None = None, exclusive: bool = False
) -> None:
    """``write(tmp)`` into a temporary file, fsync it, rename it over ``target``, fsync the folder.
    ``exclusive``: never over a file, a ``FileExistsError`` where ``target`` exists by then (another
    process may have made it since the caller looked).

    The temporary file sits in ``tmp_dir`` (which must be on ``target``'s file system) or next to
    ``target`` under a hidden name; its name is unique to the process and thread, so several may
    write at once. If ``write`` fails or is interrupted, ``target`` is untouched and the
    temporary file removed. A file replaced keeps its permissions (a results file the user had
    made private stayed private only until it was written again).
    """
    target = Path(target)
    folder = tmp_dir if tmp_dir is not None else target.parent
    tmp = folder / _tmp_name(target.name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if exclusive:
            _link_new(tmp, target)
        else:
            keep_permissions(target, tmp)
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def is_stream(path: Path) -> bool:
    """A pipe, a terminal or device, or a socket (``--csv >(gzip > r.gz)``, ``/dev/stderr``,
    ``/dev/null``): written into, nothing of the user's replaced."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def replaced_whole(path: Path) -> bool:
    """Whether an output file is replaced by renaming a new one over it: a regular file (not a
    link, a pipe or a device, written into as before) in a folder that can take the new one."""
    regular = not os.path.lexists(path) or (path.is_file() and not path.is_symlink())
    return regular and os.access(path.parent, os.W_OK | os.X_OK)


def write_output(path: Path, write: Callable[[Path], object]) -> None:
    """``write(path)`` for an output the user chose: a regular file replaced whole
    (:func:`replace_atomically`), a link, a pipe or a device written into. Renaming over them
    replaced a FIFO, ``/dev/full`` (as root) or a link to the user's file with a new file."""
    if replaced_whole(path):
        replace_atomically(path, write)
        return
    held = _pipe_with_reader(path)
    try:
        write(path)
    finally:
        if held is not None:
            os.close(held)


def _pipe_with_reader(path: Path) -> int | None:
    """For a pipe, a descriptor of its writing end, held while it is written; an OSError when no
    program reads it (opening it to write waited for ever: the desktop's window froze, deaf to
    SIGTERM). None for anything else."""
    try:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            return None
    except OSError:
        return None
    # a reader started beside the writer (a shell's `cat pipe &`) may open it a moment later: it
    # is given 2 s (the export failed where the reader's open came after the check)
    deadline = time.monotonic() + _PIPE_READER_WAIT_S
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            if time.monotonic() >= deadline:
                raise OSError(errno.ENXIO, "no program reads from this pipe", str(path)) from None
            time.sleep(0.05)


def _link_new(tmp: Path, target: Path) -> None:
    """``tmp`` as ``target``, which must not exist: a hard link fails where it does (two runs writing
    overlays into one folder replaced each other's); on a file system without hard links (FAT, some
    SMB shares) the name is claimed with O_EXCL and then replaced, ours alone."""
    try:
        os.link(tmp, target)
        tmp.unlink()
        return
    except FileExistsError:
        raise
    except OSError:
        pass
    os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    os.replace(tmp, target)


def keep_permissions(old: Path, new: Path) -> None:
    """Give ``new``, about to replace ``old``, the permissions of ``old`` where there is one: a
    results file the user had made private stayed private only until it was written again."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(new, stat.S_IMODE(os.stat(old).st_mode) & 0o777)  # never a set-user-ID bit


def _tmp_name(name: str) -> str:
    """The temporary file's name: the target's, shortened where the name would pass the 255 bytes
    most file systems allow (a legal 240-character target could not be written)."""
    suffix = f".{os.getpid()}.{threading.get_ident()}{_TMP}"
    while len(os.fsencode(f".{name}{suffix}")) > _NAME_MAX:
        name = name[:-1]
    return f".{name}{suffix}"


def replaced_by(name: str) -> str | None:
    """The file a temporary file named ``name`` of :func:`replace_atomically` was to replace (a
    process killed outright leaves it behind), or None for any other name."""
    if not (name.startswith(".") and name.endswith(_TMP)):
        return None
    parts = name[1 : -len(_TMP)].rsplit(".", 2)
    return parts[0] if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() else None


def folder_blocked(folder: Path) -> str | None:
    """Why ``folder`` cannot be made or used: the nearest of it and its parents that exists is a
    file (an output `afile/run`), or a link whose target is gone (a runs folder linked to a disk
    cleaned since); None where that one is a folder. "no such folder: afile (make it first: mkdir
    -p afile)" was said of a file, and training stopped with `Not a directory` once the data were read."""
    for path in (folder, *folder.parents):
        if path.is_dir():
            return None
        if path.is_symlink() and not path.exists():
            return f"{path} is a link whose target does not exist ({os.readlink(path)})"
        if os.path.lexists(path):
            return f"{path} is a file, not a folder"
    return None


@contextlib.contextmanager
def working_directory(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Run the block in ``folder``, then where it ran before (``contextlib.chdir`` is Python 3.11's;
    fracsight runs on 3.10 too, and quantizing ended there with an AttributeError)."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)
