"""Where the DICOM node's CPU goes, per image: the node runs in this process (threads as in
``fracsight dicom listen``, defaults), Orthanc on loopback is the destination, dcmtk's storescu
sends ``--count`` CR radiographs (FracAtlas, JPEG lossless, studies of 4). Each stage's own
thread CPU time (``time.thread_time``) is added up around its entry point:

- ``listener``: the C-STORE handler (checks, spool write, commit);
- ``read``: reading the spooled images (JPEG-lossless decode, windowing) with the model's reader;
- ``predict``: the model (ONNX Runtime, 1 thread, batches of up to 8);
- ``result objects``: SR, GSPS and capture of each image (highdicom, pydicom);
- ``encoding``: encoding every result object (pydicom);
- ``durable writes``: writing the encoded objects to the spool (a writer thread), fsyncs included;
- ``study verdicts``: the study SRs (without their encoding);
- ``sender``: C-STORE of the result objects to Orthanc;
- ``rest``: the process's CPU time not in those (pynetdicom's network threads, SQLite, ...).

The node runs with ``--processes 0`` here (everything in this process's threads), so that each
stage's thread CPU time can be taken; ``scripts/benchmark_dicom_node.py`` times the real thing.

    python scripts/profile_dicom_node.py [--count 60] [--results sr,gsps,capture]

A companion to scripts/benchmark_dicom_node.py (which times the node as its own process).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # Orthanc and the DICOM makers shared with the tests

from dicom_support import Orthanc, free_port, make_radiograph_dicom, storescu  # noqa: E402
from fracsight.dicom import result_pool, results, scp  # noqa: E402
from fracsight.dicom.node import Node, NodeConfig  # noqa: E402
from fracsight.dicom.sender import DimseDestination  # noqa: E402
from fracsight.inference import Predictor  # noqa: E402

FRACATLAS = ROOT.parent / "shared" / "data" / "fracatlas"
STAGES = {
    "listener": (scp.StoreSCP, "_on_store"),
    "read": (Predictor, "read"),
    "predict": (Predictor, "predict_radiographs"),
    "result objects": (results, "result_datasets"),
    "encoding": (result_pool, "encode_dataset"),
    "durable writes": (result_pool, "_write_all"),
    "study verdicts": (results, "study_result_datasets"),
    "sender": (DimseDestination, "deliver"),
}


def measure(spent: Counter[str]) -> None:
    """Wrap each stage's entry point so that its thread CPU time adds to ``spent``."""
    for label, (owner, name) in STAGES.items():
        original = getattr(owner, name)

        def timed(*args: Any, _original: Any = original, _label: str = label, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_label] += time.thread_time() - start

        setattr(owner, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=60, help="radiographs to send (default 60)")
    parser.add_argument("--results", default="sr,gsps", help="result kinds (the node's default: sr,gsps)")
    args = parser.parse_args()
    from pydicom.uid import generate_uid

    work = Path(tempfile.mkdtemp(prefix="fracsight-profile-dicom-"))
    files: list[Path] = []
    study_uid = ""
    for image in sorted((FRACATLAS / "images").glob("*/*.jpg"))[::7]:
        if len(files) == args.count:
            break
        if len(files) % 4 == 0:
            study_uid = generate_uid()
        try:
            files.append(
                make_radiograph_dicom(
                    image, work / "in" / f"{len(files)}.dcm", study_uid=study_uid, jpeg_lossless=True
                )
            )
        except OSError:  # a truncated JPEG in the data set
            continue
    spent: Counter[str] = Counter()
    measure(spent)
    orthanc = Orthanc(work / "orthanc").start()
    port = free_port()
    config = NodeConfig(
        spool=work / "spool",
        allowed=("MODALITY",),
        destination=DimseDestination("127.0.0.1", orthanc.dicom_port, "ORTHANC"),
        host="127.0.0.1",
        port=port,
        quiet_time=1,
        kinds=tuple(k for k in args.results.split(",") if k),
    )
    node = Node(config)
    try:
        node.start()
        assert node.spool is not None
        spent.clear()  # the warm-up at start is not per image
        load = os.getloadavg()
        wall, cpu = time.monotonic(), time.process_time()
        storescu("127.0.0.1", port, files)
        while node.spool.backlog() != {"to_predict": 0, "to_send": 0, "open_studies": 0}:
            time.sleep(0.2)
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    finally:
        node.stop()
        orthanc.stop()
        shutil.rmtree(work, ignore_errors=True)
    n = len(files)
    per_image = {label: round(1000 * spent[label] / n, 1) for label in STAGES}
    per_image["rest"] = round(1000 * cpu / n - sum(per_image.values()), 1)
    report = {
        "images": n,
        "results": args.results,
        "images_per_second": round(n / wall, 2),
        "node_cpu_ms_per_image": round(1000 * cpu / n, 1),
        "cpu_ms_per_image_by_stage": per_image,
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
