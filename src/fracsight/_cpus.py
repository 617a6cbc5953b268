"""The CPUs this process may use: its affinity, and in a container its cgroup's CPU quota.

Shared by what sizes its own parallelism: a local Ray's CPUs (``fracsight batch``), the REST
API's ONNX Runtime threads, the desktop's worker threads.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cgroup_cpu_quota", "local_cpus"]


def local_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use (a local Ray is started with this many CPUs): its CPU
    affinity, and in a container its cgroup's CPU quota, whole CPUs, at least one (a pod limited to
    2 CPUs on a 64-core node started 64 actors, each loading the model)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup)
    return cpus if quota is None else max(1, min(cpus, int(quota)))


def cgroup_cpu_quota(root: Path, membership: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs this process's cgroups under ``root`` let it use (the smallest quota / period on its
    way up), None without a limit: cgroup v2's ``cpu.max`` (``max 100000``, ``200000 100000``), v1's
    ``cpu.cfs_quota_us`` (-1: none). ``membership`` (``/proc/self/cgroup``) names its cgroup below
    the mount (a child cgroup: systemd-run, Slurm); in a container's own namespace it is the root."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    own: dict[str, Path] = {}  # the folder of a hierarchy under root -> this process's cgroup in it
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, path = parts[1], Path(parts[2].strip().strip("/"))
        if not controllers:  # v2: the one hierarchy, mounted at root
            own[""] = path
        elif "cpu" in controllers.split(","):  # v1: mounted as cpu, or cpu,cpuacct
            own["cpu"] = own["cpu,cpuacct"] = path
    quotas = []
    for folder in ("", "cpu", "cpu,cpuacct"):
        base, cgroup = root / folder, own.get(folder, Path())
        for up in (base / cgroup, *(base / p for p in cgroup.parents)):
            quota = _quota_at(up)
            if quota is not None:
                quotas.append(quota)
    return min(quotas, default=None)


def _quota_at(folder: Path) -> float | None:
    """The CPU quota of the one cgroup ``folder`` (v2 or v1 files), None without one."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((folder / "cpu.cfs_quota_us").read_text())
        period_us = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
