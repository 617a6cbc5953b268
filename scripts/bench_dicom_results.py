"""Time fracsight's result objects (SR, GSPS, secondary capture) per image (docs/dicom.md).

    python scripts/bench_dicom_results.py [--images 20] [--fracatlas ../shared/data/fracatlas]

The first N FracAtlas images (by name) become CR objects (MONOCHROME1, 12 bits; the test
suite's converter), are predicted once with the default model (``keep_pixels=True``, as the node
does), and then each kind of result object is built from every prediction; the script prints the
median build time and encoded size per kind. Model time is not included: it is the same for any
output. Run from the repository root.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--fracatlas", type=Path, default=ROOT.parent / "shared" / "data" / "fracatlas")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "tests"))
    import pydicom

    from dicom_results_support import cr_from_jpeg, write
    from fracsight.dicom.results import KINDS, result_datasets
    from fracsight.inference import Predictor

    jpegs = sorted((args.fracatlas / "images").rglob("*.jpg"), key=lambda p: p.name)[: args.images]
    if not jpegs:
        sys.exit(f"no FracAtlas images under {args.fracatlas}")
    predictor = Predictor()
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    sizes: dict[str, list[int]] = {k: [] for k in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        for jpeg in jpegs:
            path = write(cr_from_jpeg(jpeg), Path(tmp) / f"{jpeg.stem}.dcm")
            source = pydicom.dcmread(path)
            prediction = predictor.predict(path, keep_pixels=True)
            for kind in KINDS:
                start = time.perf_counter()
                (ds,) = result_datasets(source, prediction, predictor, kinds=[kind])
                buffer = io.BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                times[kind].append(time.perf_counter() - start)
                sizes[kind].append(len(buffer.getvalue()))
    print(f"{len(jpegs)} images, e.g. {source.Columns} x {source.Rows}; median per image, encoding included:")
    for kind in KINDS:
        ms = statistics.median(times[kind]) * 1000
        kb = statistics.median(sizes[kind]) / 1024
        print(f"  {kind:8s} {ms:7.1f} ms  {kb:8.1f} KiB")


if __name__ == "__main__":
    main()
