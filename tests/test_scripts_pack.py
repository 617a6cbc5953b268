"""scripts/pack_fracatlas.py: a small training copy of FracAtlas for a remote GPU."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fracsight.data import load_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pack_fracatlas.py"


def _mini_fracatlas(fracatlas_dir: Path, root: Path, per_split: int = 4) -> Path:
    """A few rows of each split (fractured ones first, so boxes travel), images and boxes linked."""
    with open(fracatlas_dir / "dataset.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows, columns = list(reader), reader.fieldnames or []
    chosen: list[dict[str, str]] = []
    root.mkdir(parents=True)
    for split in ("train", "val", "test"):
        in_split = sorted((r for r in rows if r["split"] == split), key=lambda r: r["fractured"] != "1")
        chosen += in_split[:per_split]
    with open(root / "dataset.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(chosen)
    (root / "annotations" / "yolo").mkdir(parents=True)
    for r in chosen:
        folder = "Fractured" if r["fractured"] == "1" else "Non_fractured"
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        original = fracatlas_dir / "images" / folder / r["image_id"]
        (root / "images" / folder / r["image_id"]).symlink_to(original)
        label = fracatlas_dir / "annotations" / "yolo" / (Path(r["image_id"]).stem + ".txt")
        if label.is_file():
            (root / "annotations" / "yolo" / label.name).symlink_to(label)
    return root


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
