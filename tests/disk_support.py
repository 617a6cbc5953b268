"""A small disk that tests can fill: a tmpfs mounted for the test (root only; skipped elsewhere)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def mounted_tmpfs(mount_point: Path, size: str, mode: str | None = None) -> Iterator[Path]:
    """``mount_point`` (made if missing) as an empty tmpfs of ``size`` (``"16m"``) while the block
    runs (``mode``: its root's permissions, tmpfs's own default otherwise); the test is skipped
    where mounting is not allowed (not root)."""
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={size}" + (f",mode={mode}" if mode else ""),
            "tmpfs",
            str(mount_point),
        ],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` with one file; returns it (delete it to free the space).
    A job writing there meanwhile may take some first: then what is left is taken."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(100):
            if not (stat := os.statvfs(disk)).f_bavail:
                break
            try:
                os.posix_fallocate(fd, os.fstat(fd).st_size, stat.f_bavail * stat.f_frsize)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return filler
