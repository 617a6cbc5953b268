"""scripts/pack_fracatlas.py: a small training copy of FracAtlas for a remote GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import fracatlas_subset
from fracsight.data import load_dataset
from fracsight.training.cache import letterbox_samples

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pack_fracatlas.py"


def _mini_fracatlas(fracatlas_dir: Path, root: Path) -> Path:
    """Four fractured images of each split (so that boxes travel), images and boxes linked."""
    return fracatlas_subset(fracatlas_dir, root, {split: (4, 0) for split in ("train", "val", "test")})


@pytest.mark.fracatlas
def test_pack_keeps_labels_and_boxes_and_shrinks_images(fracatlas_dir: Path, tmp_path: Path) -> None:
    source = _mini_fracatlas(fracatlas_dir, tmp_path / "source")
    dest = tmp_path / "packed"
    run = [sys.executable, str(SCRIPT), str(source), str(dest), "--long-side", "200", "--workers", "1"]
    done = subprocess.run(run, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    original, packed = load_dataset(source), load_dataset(dest)
    kept = [s for s in original.samples if s.split in ("train", "val")]
    assert len(packed.samples) == len(kept) and {s.split for s in packed.samples} == {"train", "val"}
    by_name = {s.path.name: s for s in packed.samples}
    for s in kept:
        twin = by_name[s.path.name]
        assert twin.labels == s.labels and twin.regions == s.regions and twin.boxes == s.boxes
        with Image.open(s.path) as a, Image.open(twin.path) as b:
            assert max(b.size) == min(200, max(a.size))
            assert abs(b.width / b.height - a.width / a.height) < 0.02  # aspect ratio kept
    assert any(s.boxes for s in packed.samples)
    # the copy holds what the model reads: its letterbox is the original's, up to JPEG re-encoding
    # (a full-size decode resized with Lanczos, the script's first version, was visibly sharper)
    twins = [by_name[s.path.name] for s in kept]
    ours, theirs = letterbox_samples(kept, 200).images, letterbox_samples(twins, 200).images
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.mean() < 0.7 and diff.max() < 32  # here 0.47 and 12; the first version 0.91 and 63
    again = subprocess.run(run, capture_output=True, text=True, check=False)
    assert again.returncode != 0 and "not empty" in again.stderr  # never overwrites a copy


def test_pack_refuses_what_it_cannot_pack(tmp_path: Path) -> None:
    def run(*args: Path | str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)

    missing = run(tmp_path / "nowhere", tmp_path / "out")
    assert missing.returncode == 2 and "not a FracAtlas folder" in missing.stderr
    source = tmp_path / "source"
    (source / "images").mkdir(parents=True)
    (source / "dataset.csv").write_text("image_id,fractured,split\nIMG1.jpg,0,test\n")
    no_rows = run(source, tmp_path / "out", "--splits", "train,val")
    assert no_rows.returncode == 2 and "no rows" in no_rows.stderr
    assert not (tmp_path / "out").exists()  # nothing written on refusal
