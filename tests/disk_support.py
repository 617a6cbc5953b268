"""A small disk that tests can fill: a tmpfs mounted for the test (root only; skipped elsewhere)."""

from __future__ import annotations

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
    """Take every free byte of ``disk`` with one file; returns it (delete it to free the space)."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, stat.f_bavail * stat.f_frsize)
    finally:
        os.close(fd)
    return filler
