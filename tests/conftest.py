"""Shared test fixtures (keep minimal)."""

from __future__ import annotations

from pathlib import Path

import pytest

FRACATLAS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "fracatlas"


@pytest.fixture(scope="session")
def fracatlas_dir() -> Path:
    """The real FracAtlas subset in ../shared/data/fracatlas; tests using it skip when it is absent."""
    if not (FRACATLAS_DIR / "dataset.csv").is_file():
        pytest.skip(f"FracAtlas not found at {FRACATLAS_DIR}")
    return FRACATLAS_DIR
