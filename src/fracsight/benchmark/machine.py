"""What the machine does while ``fracsight benchmark`` runs: its load, and a process's own peak
memory and page faults."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def package_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def cpu_busy_share(seconds: float = 1.0) -> float | None:
    """Share of the machine's CPU time spent busy over the next ``seconds`` (Linux); None elsewhere."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # user .. steal; guest is inside user
        return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, all

    try:
        idle_start, total_start = sample()
        time.sleep(seconds)
        idle_end, total_end = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total_end - total_start
    return round(1.0 - (idle_end - idle_start) / total, 2) if total > 0 else None


def machine_busy(cpu_busy: float | None, load: float | None, cpus: int) -> bool:
    """Whether other work was running as the benchmark started, which distorts every figure.

    The CPU share sampled just before the run says what runs now. The 1-minute load
    average (the fallback where /proc/stat is missing) still counts work that ended up to
    a few minutes ago, such as a benchmark run just before this one.
    """
    if cpu_busy is not None:
        return cpu_busy > 0.25
    return load is not None and load > 0.5 * cpus


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def own_peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB.

    On Linux, VmHWM of this process's own memory map: ``ru_maxrss`` would also count
    the memory of the parent at the moment it forked this process (it survives exec).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where the platform does not count them).

    Memory handed back to the kernel after one image and faulted in again for the next costs
    time that no stage owns: about 2.8 microseconds a fault on the reference VM, 3.6 ms an INT8
    image before :mod:`fracsight._malloc` (docs/benchmark.md, "Page faults").
    """
    try:
        import resource
    except ImportError:  # Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
