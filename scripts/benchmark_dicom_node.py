"""Throughput and memory of the DICOM node, end to end, against real software.

Starts Orthanc (loopback, own configuration and storage in a temporary folder) and the node
(``fracsight dicom listen``, results C-STOREd to Orthanc), sends ``--count`` CR radiographs made
from FracAtlas images (MONOCHROME1, 12 bits, studies of ``--study-size`` images) with dcmtk's
``storescu`` on one association, and times until every image's results are stored in Orthanc
(and then until every study verdict is, which adds the quiet time). The node's RSS is sampled
all along; with ``--count 1000`` that shows whether memory stays flat.

    python scripts/benchmark_dicom_node.py                 # 100 images: throughput, node defaults
    python scripts/benchmark_dicom_node.py --count 1000    # memory over 1,000 images
    python scripts/benchmark_dicom_node.py --results sr,gsps,capture --processes 0 --inputs /tmp/in

The node runs with its defaults (SR + GSPS, 2 worker processes) unless told otherwise; the CPU
time per image is reported for its main process, its worker processes and Orthanc.
``--inputs DIR`` makes the DICOM files once and reuses them.

Prints one JSON report. Making the DICOM files is not timed. Needs Orthanc, dcmtk and FracAtlas
(../shared/data/fracatlas); uses the test support of tests/dicom_support.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # Orthanc, node process and DICOM makers shared with the tests
sys.path.insert(0, str(ROOT / "scripts"))

from _proc import proc_status_mb  # noqa: E402

from dicom_support import NodeProcess, Orthanc, free_port, make_radiograph_dicom, storescu  # noqa: E402

FRACATLAS = ROOT.parent / "shared" / "data" / "fracatlas"
DEFAULT_KINDS = "sr,gsps"  # the node's default (`fracsight dicom listen --results`)
DEFAULT_PROCESSES = 2  # the node's default (`--processes`)


def make_files(count: int, study_size: int, folder: Path, jpeg_lossless: bool) -> list[Path]:
    from pydicom.uid import generate_uid

    images = sorted((FRACATLAS / "images").glob("*/*.jpg"))
    if not images:
        raise SystemExit(f"no FracAtlas images under {FRACATLAS}")
    files, study_uid = [], ""
    candidates = iter(
        images[(i * 7) % len(images)] for i in range(10 * count)
    )  # spread over classes, regions
    for i in range(count):
        if i % study_size == 0:
            study_uid = generate_uid()
        path = folder / f"{i:05d}.dcm"
        while True:
            try:
                make_radiograph_dicom(
                    next(candidates),
                    path,
                    study_uid=study_uid,
                    instance_number=i % study_size + 1,
                    jpeg_lossless=jpeg_lossless,
                )
                break
            except OSError:  # a truncated JPEG in the data set: take the next image
                continue
        files.append(path)
    return files


def count_results(orthanc: Orthanc) -> int:
    """Instances Orthanc holds (only results: the sources go to the node, never to Orthanc)."""
    return int(requests.get(f"{orthanc.url}/statistics", timeout=30).json()["CountInstances"])


def count_image_results(orthanc: Orthanc, kinds: list[str]) -> int:
    """Images whose results are all stored: the instances of the kind made last for each image
    (a capture, else a presentation state); with SR only, all SRs (study verdicts included)."""
    modality = "OT" if "capture" in kinds else "PR" if "gsps" in kinds else "SR"
    body = {"Level": "Instance", "Query": {"Modality": modality}}
    return len(requests.post(f"{orthanc.url}/tools/find", json=body, timeout=30).json())


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (the node's result processes), from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def tree_rss_mb(pid: int) -> tuple[float, float] | None:
    """RSS of the node process, and of it with its children, in MB."""
    own = proc_status_mb(pid).get("VmRSS")
    if own is None:
        return None
    kids = sum(proc_status_mb(child).get("VmRSS", 0.0) for child in children(pid))
    return own, own + kids


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its waited-for children (/proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float, float]] = []  # (seconds, node MB, node + children MB)
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            rss = tree_rss_mb(self.pid)
            if rss is not None:
                self.samples.append((time.monotonic() - self.t0, *rss))
            self.stop.wait(self.interval)


def summarise_rss(
    samples: list[tuple[float, float, float]], progress: list[tuple[float, int]], count: int
) -> dict:
    """RSS (node process; node with its result processes) at start, at each 10 % done, at the end."""
    if not samples:
        return {}

    def pair(sample: tuple[float, float, float]) -> list[float]:
        return [round(sample[1], 1), round(sample[2], 1)]

    out: dict = {"columns": ["node_mb", "node_and_children_mb"], "start": pair(samples[0])}
    marks = {}
    for t, done in progress:
        for tenth in range(1, 11):
            if done >= count * tenth / 10 and tenth not in marks:
                marks[tenth] = pair(min(samples, key=lambda s: abs(s[0] - t)))
    out["at_percent_done"] = {f"{k * 10}%": v for k, v in sorted(marks.items())}
    out["end"] = pair(samples[-1])
    out["max"] = [round(max(s[1] for s in samples), 1), round(max(s[2] for s in samples), 1)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100, help="radiographs to send (default 100)")
    parser.add_argument("--study-size", type=int, default=4, help="images per study (default 4)")
    parser.add_argument("--quiet-time", type=float, default=2.0, help="node's study quiet time (s)")
    parser.add_argument("--batch-size", type=int, default=8, help="node's prediction batch")
    parser.add_argument(
        "--results", default=DEFAULT_KINDS, help=f"result kinds (default {DEFAULT_KINDS}; add capture)"
    )
    parser.add_argument(
        "--processes", type=int, default=DEFAULT_PROCESSES, help="node's worker processes (0: in its thread)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="node's ONNX Runtime threads (0: one per core)"
    )
    parser.add_argument("--native", action="store_true", help="uncompressed files (default JPEG lossless)")
    parser.add_argument("--log-level", default="WARNING", help="node's log level (INFO: a line per image)")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    parser.add_argument(
        "--inputs", type=Path, help="folder for the DICOM files to send: made once, reused by later runs"
    )
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="fracsight-bench-dicom-"))
    work.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in args.results.split(",") if k]
    t = time.monotonic()
    inputs = args.inputs or work / "in"
    marker = inputs / f"made-{args.count}-{args.study_size}-{'native' if args.native else 'jpegll'}"
    if marker.exists():  # made by an earlier run with the same options
        files = sorted(inputs.glob("*.dcm"))[: args.count]
    else:
        files = make_files(args.count, args.study_size, inputs, not args.native)
        marker.touch()
    print(f"made {len(files)} files in {time.monotonic() - t:.1f} s", file=sys.stderr)
    studies = -(-args.count // args.study_size)
    expected_images = args.count * len(kinds)

    orthanc = Orthanc(work / "orthanc").start()
    node = NodeProcess(
        work / "node",
        destination=["--to", f"127.0.0.1:{orthanc.dicom_port}:ORTHANC"],
        quiet_time=args.quiet_time,
        port=free_port(),
        extra=["--results", args.results, "--batch-size", str(args.batch_size), "--keep-files", "0",
               "--processes", str(args.processes), "--threads", str(args.threads),
               "--log-level", args.log_level],
    )  # fmt: skip
    report: dict = {
        "count": args.count,
        "study_size": args.study_size,
        "results": kinds,
        "processes": args.processes,
        "threads": args.threads,
        "batch_size": args.batch_size,
    }
    report["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    try:
        node.start()
        assert node.process is not None
        sampler = RssSampler(node.process.pid, 0.5)
        sampler.start()
        progress: list[tuple[float, int]] = []
        main_cpu_start, orthanc_cpu_start = cpu_seconds(node.process.pid), cpu_seconds(orthanc.process.pid)
        # the worker processes loaded the model before the node took its first association
        workers_cpu_start = sum(cpu_seconds(child) for child in children(node.process.pid))
        t0 = time.monotonic()

        def send() -> None:
            report["storescu"] = storescu("127.0.0.1", node.port, files, timeout=args.timeout).returncode
            report["seconds_to_all_sent_by_storescu"] = round(time.monotonic() - t0, 2)

        sender = threading.Thread(target=send)
        sender.start()
        images_done_at = verdicts_done_at = None
        while time.monotonic() - t0 < args.timeout:
            images = count_image_results(orthanc, kinds)
            progress.append((time.monotonic() - sampler.t0, images))
            if images_done_at is None and images >= args.count:
                images_done_at = time.monotonic() - t0
            if images_done_at is not None and count_results(orthanc) >= expected_images + studies:
                verdicts_done_at = time.monotonic() - t0
                break
            time.sleep(0.25)
        sender.join()
        sampler.stop.set()
        main_cpu = cpu_seconds(node.process.pid) - main_cpu_start
        workers_cpu = sum(cpu_seconds(child) for child in children(node.process.pid)) - workers_cpu_start
        node_cpu = main_cpu + workers_cpu
        orthanc_cpu = cpu_seconds(orthanc.process.pid) - orthanc_cpu_start
        status = node.status()
        report.update(
            seconds_to_all_image_results=images_done_at and round(images_done_at, 2),
            images_per_second=images_done_at and round(args.count / images_done_at, 2),
            seconds_to_all_study_verdicts=verdicts_done_at and round(verdicts_done_at, 2),
            quiet_time=args.quiet_time,
            # CPU time per image does not depend on what else runs (much): with the node and
            # Orthanc alone on 2 cores, throughput could not exceed 2 cores / this
            cpu_ms_per_image={
                "node": round(1000 * node_cpu / args.count, 1),
                "node_main_process": round(1000 * main_cpu / args.count, 1),
                "node_worker_processes": round(1000 * workers_cpu / args.count, 1),
                "orthanc": round(1000 * orthanc_cpu / args.count, 1),
            },
            cpu_bound_images_per_second_on_2_cores=round(2 * args.count / (node_cpu + orthanc_cpu), 1),
            node_counters=status["counters"],
            node_rss=summarise_rss(sampler.samples, progress, args.count),
            load_average_at_end=[round(x, 2) for x in os.getloadavg()],
        )
    finally:
        node.stop()
        orthanc.stop()
    print(json.dumps(report, indent=2))
    if args.keep is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
