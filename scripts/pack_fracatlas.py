"""Write a downscaled copy of a FracAtlas folder, small enough to ship to a remote GPU.

Every image is read and resized as the model reads it for a letterbox of ``--long-side``
pixels (a JPEG decoded at reduced scale, then bilinear; never enlarged), and the letterbox's
content, without its padding, is saved as JPEG. ``dataset.csv`` (rows of the kept splits) and
the annotations are copied: FracAtlas boxes are normalized to the image size, so they stay
valid. Letterboxing the copy at ``--long-side`` (the model's input size) then gives training
the same pixels as letterboxing the original, up to JPEG re-encoding. (An earlier version
decoded at full size and resized with Lanczos: sharper pixels than the model ever sees;
docs/training.md, "The joint recipe on a lent GPU", has what that changed.) The
copy is for training only; evaluate on the original.

    python scripts/pack_fracatlas.py ../shared/data/fracatlas .gpu/fracatlas --long-side 384
"""

from __future__ import annotations

import argparse
import csv
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from fracsight.preprocessing import letterbox_radiograph, read_for_model


def _shrink(job: tuple[Path, Path, int, int]) -> int:
    src, dst, long_side, quality = job
    # read and resized exactly as the model's input is (training's letterbox cache does the same)
    radiograph = read_for_model(src, long_side)
    pixels = radiograph.pixels
    h, w = radiograph.full_size or pixels.shape
    if max(h, w) > long_side:
        square, box = letterbox_radiograph(radiograph, long_side)
        x0, y0, x1, y1 = box.content
        pixels = square[y0:y1, x0:x1]
    im = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
    dst.parent.mkdir(parents=True, exist_ok=True)
    im.save(dst, "JPEG", quality=quality)
    return dst.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--long-side", type=int, default=384)
    parser.add_argument("--quality", type=int, default=92)
    parser.add_argument("--splits", default="train,val", help="splits to keep (comma-separated)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not (args.source / "dataset.csv").is_file() or not (args.source / "images").is_dir():
        parser.error(f"{args.source} is not a FracAtlas folder (dataset.csv and images/)")
    if args.dest.exists() and any(args.dest.iterdir()):
        parser.error(f"{args.dest} is not empty; choose a new folder")
    keep = set(args.splits.split(","))
    with (args.source / "dataset.csv").open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if (r.get("split") or "").strip() in keep]
        columns = reader.fieldnames or []
    if not rows:
        parser.error(f"no rows of the split(s) {args.splits} in {args.source / 'dataset.csv'}")
    args.dest.mkdir(parents=True, exist_ok=True)
    with (args.dest / "dataset.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    if (args.source / "README.md").is_file():
        shutil.copy2(args.source / "README.md", args.dest / "README.md")
    wanted = {r["image_id"] for r in rows}
    if (args.source / "annotations").is_dir():
        shutil.copytree(args.source / "annotations", args.dest / "annotations")
    jobs = [
        (p, args.dest / p.relative_to(args.source), args.long_side, args.quality)
        for p in sorted((args.source / "images").rglob("*"))
        if p.name in wanted
    ]
    with ProcessPoolExecutor(args.workers) as pool:
        total = sum(pool.map(_shrink, jobs, chunksize=32))
    print(f"{len(jobs)} images, {total / 2**20:.1f} MiB of JPEG in {args.dest}")


if __name__ == "__main__":
    main()
