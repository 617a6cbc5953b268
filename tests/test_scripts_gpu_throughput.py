"""scripts/gpu_throughput.py: the network's batch throughput and what feeds it, here on the CPU."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_throughput.py"


@pytest.mark.fracatlas
def test_it_reports_reading_network_and_end_to_end_rates(fracatlas_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:4]:
        shutil.copy(path, images / path.name)
    run = [sys.executable, str(SCRIPT), "--images", str(images), "--device", "cpu"]
    run += ["--batches", "2", "--workers", "1", "--seconds", "0.1", "--n", "8"]
    done = subprocess.run(run, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["device"] == "cpu" and result["reading_ips_by_workers"]["1"] > 0
    assert set(result["network_ips_by_batch"]) == {"float32", "bfloat16"}
    assert result["network_ips_by_batch"]["float32"]["2"] > 0
    assert result["end_to_end_ips"]["1 workers, batch 64"] > 0


def test_it_refuses_a_folder_without_jpegs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--images", str(tmp_path), "--device", "cpu"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "no .jpg files" in done.stderr
