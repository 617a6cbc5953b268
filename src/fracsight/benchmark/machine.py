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


def busy_during(same_image: list[tuple[float, ...]], load_after: float | None, cpus: int) -> bool:
    """Whether other work started while the benchmark ran: one image timed more than twice as long
    in one round as in another (rounds of 39 to 2,480 ms in one row, beside "21.3x, met" where an
    idle machine gives 3.5 to 4.8x), or a load at the end above the CPU count. The check before the
    run cannot see it. ``same_image``: each image's median time in each round it was timed in (or,
    where no image was timed in two rounds, each round's median)."""
    spread = any(min(r) > 0 and max(r) / min(r) > 2.0 for r in same_image if len(r) > 1)
    return spread or (load_after is not None and load_after > cpus)


def cpu_identity() -> dict[str, object]:
    """The CPU's model and the vector instructions ONNX Runtime's INT8 kernels use (the same
    bundle runs 3.5x or 4.8x faster than ResNet50 with or without VNNI), and the CPUs this process
    may use (``os.cpu_count`` counts those ``taskset`` or a container's quota leave out)."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    if model is None:
        import platform

        model = platform.processor() or None
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni")
    from fracsight._cpus import local_cpus

    return {"cpu_model": model, "cpu_flags": [f for f in wanted if f in flags], "usable_cpus": local_cpus()}


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def own_peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB of 2**20 bytes (MiB, as every figure of it in the
    docs: VmHWM is in KiB).

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
