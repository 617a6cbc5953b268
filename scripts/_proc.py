"""Process memory from /proc, shared by the load and stress scripts (Linux; empty elsewhere)."""

from __future__ import annotations

from pathlib import Path


def proc_status_mb(pid: int) -> dict[str, float]:
    """The memory lines of ``/proc/<pid>/status`` (VmRSS, VmHWM, ...) in MB; empty if unreadable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if key.startswith("Vm") and len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0]) / 1024
    return out
