"""The radiographs ``fracsight benchmark`` times: those given, else FracAtlas test images, else
synthetic ones."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fracsight.benchmark.report import count
from fracsight.errors import ConfigError, FracsightError
from fracsight.inference.tabular import named_inputs, no_images_message
from fracsight.io import read_image

DEFAULT_IMAGES = 64


def find_fracatlas() -> Path | None:
    """``../shared/data/fracatlas`` next to the working folder or next to the repository, if present."""
    here = Path(__file__).resolve()
    for root in (Path.cwd().parent, here.parents[4] if len(here.parents) > 4 else here.parent):
        folder = root / "shared" / "data" / "fracatlas"
        if (folder / "dataset.csv").is_file():
            return folder
    return None


def fracatlas_test_images(folder: Path, limit: int) -> list[Path]:
    import csv

    found: list[Path] = []
    with open(folder / "dataset.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("split") != "test":
                continue
            for sub in ("Fractured", "Non_fractured"):  # a few files sit in the other folder
                path = folder / "images" / sub / row["image_id"]
                if path.is_file():
                    found.append(path)
                    break
            if len(found) == limit:
                break
    return found


def synthetic_images(folder: Path, n: int = DEFAULT_IMAGES, size: tuple[int, int] = (454, 373)) -> list[Path]:
    """``n`` radiograph-like JPEGs (bright 'bones' on a dark, noisy field) of ``size`` (height, width)."""
    rng = np.random.default_rng(0)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    paths = []
    for i in range(n):
        img = 40 + 30 * yy / h + rng.normal(0, 8, (h, w))
        for _ in range(2):
            cx, angle = rng.uniform(0.3 * w, 0.7 * w), rng.uniform(-0.3, 0.3)
            img += 120 * (np.abs(xx - cx - angle * (yy - h / 2)) < rng.uniform(15, 35))
        path = folder / f"synthetic{i:03d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(path, quality=92)
        paths.append(path)
    return paths


class NoUsableImages(ConfigError):
    """``--images`` gives no image that can be read: a bad argument (exit 2), as for ``predict``."""

    code = "no_images"
    bad_argument = True


def resolve_images(images: Sequence[Path] | None, scratch: Path) -> tuple[list[Path], str]:
    if images:
        missing = [str(p) for p in images if not Path(p).exists()]
        if missing:
            raise NoUsableImages(f"no such file or folder: {', '.join(missing)}")
        named = named_inputs([Path(p) for p in images])  # named as predict names them: a/x.jpg, b/x.jpg
        if not named:
            raise NoUsableImages(no_images_message([Path(p) for p in images]))
        files = [path for path, _ in named]
        readable, unreadable = [], []
        for path, name in named:
            try:
                read_image(path)
                readable.append(path)
            except FracsightError:
                unreadable.append(name)
        names = ", ".join(unreadable[:5])
        names += ", ..." if len(unreadable) > 5 else ""
        if not readable:
            raise NoUsableImages(
                f"none of the {len(files)} given images can be read ({names}: `fracsight predict` says "
                "why for each)"
            )
        described = count(len(readable), "given image")
        if unreadable:  # of all given: it said "1 given image (2 unreadable ...)" for 3 given
            described = f"{len(readable)} of {count(len(files), 'given image')}"
            described += f" ({len(unreadable)} unreadable left out: {names})"
        return readable, described
    folder = find_fracatlas()
    if folder is not None:
        files = fracatlas_test_images(folder, DEFAULT_IMAGES)
        if files:
            return files, f"first {len(files)} FracAtlas test images ({folder})"
    return synthetic_images(scratch), f"{DEFAULT_IMAGES} synthetic 373x454 JPEGs (FracAtlas not found)"
