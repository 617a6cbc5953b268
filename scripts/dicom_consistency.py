"""The same radiograph as JPEG and as DICOM (or as pixels): how far apart are the model's answers?

    python scripts/dicom_consistency.py [--model NAME] [--split val] [--limit N] [--against array]

Every image of the split is predicted as FracAtlas stores it (JPEG, which the Predictor decodes at
a reduced size when it is large) and as a 12-bit Computed Radiography DICOM file holding the same
pixels, stored inverted (MONOCHROME1), written by the tests' own helper
(``tests/dicom_support.make_radiograph_dicom``) into a temporary folder; with ``--against array``,
as the uint8 array Pillow decodes from the JPEG at full size (what ``predict(np.asarray(...))``
is given in Python). Prints the median, 99th
percentile and largest difference of the fracture probabilities, how many decisions at the
operating point differ, and in how many images the orientation step turned one read and not the
other; then the images that differ most.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from fracsight.data import FRACTURE, load_dataset
from fracsight.inference import Predictor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from dicom_support import make_radiograph_dicom  # noqa: E402  (the tests' helper, not a package)


def _turned(prediction) -> bool:
    return any("seemed turned" in w for w in prediction.warnings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fracatlas")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    parser.add_argument("--against", choices=("dicom", "array"), default="dicom")
    args = parser.parse_args()

    ImageFile.LOAD_TRUNCATED_IMAGES = True  # FracAtlas has 49 cut JPEGs; fracsight reads them with a warning
    predictor = Predictor(args.model)
    samples = [s for s in load_dataset(args.data).split(args.split) if FRACTURE in s.labels]
    samples = samples[: args.limit] if args.limit else samples
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sample in samples:
            as_jpeg = predictor.predict(sample.path)
            if args.against == "array":
                with Image.open(sample.path) as image:
                    other = np.asarray(image.convert("L"))
            else:
                other = make_radiograph_dicom(sample.path, Path(tmp) / f"{sample.path.stem}.dcm")
            rows.append((sample.path.name, as_jpeg, predictor.predict(other)))
    other_kind = "DICOM" if args.against == "dicom" else "array"
    delta = np.array([abs(j.fracture_probability - d.fracture_probability) for _, j, d in rows])
    flips = sum(j.fracture_suspected != d.fracture_suspected for _, j, d in rows)
    turns = sum(_turned(j) != _turned(d) for _, j, d in rows)
    print(
        f"{predictor.name}, {len(rows)} {args.split} images, JPEG against {other_kind}: "
        f"|difference in fracture probability| median {np.median(delta):.4f}, "
        f"99th percentile {np.percentile(delta, 99):.3f}, "
        f"largest {delta.max():.3f}; decisions differ {flips}; turned in one read only {turns}"
    )
    for i in np.argsort(-delta, kind="stable")[:5]:
        name, j, d = rows[i]
        print(
            f"  {name}: JPEG {j.fracture_probability:.3f}{' (turned)' if _turned(j) else ''}, "
            f"{other_kind} {d.fracture_probability:.3f}{' (turned)' if _turned(d) else ''} "
            f"(threshold {j.threshold:.3f})"
        )


if __name__ == "__main__":
    main()
