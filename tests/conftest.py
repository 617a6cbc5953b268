"""Shared test fixtures (keep minimal)."""

from __future__ import annotations

import csv
import socket
from pathlib import Path

import pytest

# A training run small enough for tests: 64 px, one epoch per phase, CPU.
TINY_TRAINING = [
    "input_size=64",
    "epochs_frozen=1",
    "epochs=1",
    "feature_cache_variants=1",
    "batch_size=8",
    "device=cpu",
    "workers=1",
]
FRACATLAS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "fracatlas"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for test servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def fracatlas_dir() -> Path:
    """The real FracAtlas subset in ../shared/data/fracatlas; tests using it skip when it is absent."""
    if not (FRACATLAS_DIR / "dataset.csv").is_file():
        pytest.skip(f"FracAtlas not found at {FRACATLAS_DIR}")
    return FRACATLAS_DIR


def _link_images(src: list[Path], dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for path in src:
        (dst / path.name).symlink_to(path)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory, fracatlas_dir: Path) -> Path:
    """A Kaggle-style binary class-folder set (train/val x fractured/not fractured) linked from FracAtlas."""
    root = tmp_path_factory.mktemp("tiny_dataset")
    fractured = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:18]
    normal = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:18]
    _link_images(fractured[:12], root / "train" / "fractured")
    _link_images(normal[:12], root / "train" / "not fractured")
    _link_images(fractured[12:], root / "val" / "fractured")
    _link_images(normal[12:], root / "val" / "not fractured")
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """A real (tiny, barely trained) bundle: 64 px Lite0, one epoch per phase. Needs the train extra."""
    pytest.importorskip("torch")
    from fracsight.data import load_dataset
    from fracsight.training import Trainer, load_config
    from fracsight.training.export_bundle import export_bundle

    work = tmp_path_factory.mktemp("tiny_bundle")
    cfg = load_config(
        None,
        [*TINY_TRAINING, "name=tiny-test"],
        data=str(tiny_dataset),
        out=str(work / "run"),
    )
    Trainer(cfg, load_dataset(tiny_dataset), show_progress=False).fit()
    bundle = work / "bundle"
    export_bundle(work / "run", bundle)
    return bundle


@pytest.fixture(scope="session")
def head_bundle(tmp_path_factory: pytest.TempPathFactory, fracatlas_dir: Path):
    """``head_bundle(kind) -> (data folder, bundle folder)`` for every head combination of
    :data:`head_kinds.HEAD_KINDS`, each trained (tiny settings) and exported once per session
    through the real CLI, as a researcher would. Needs the train extra."""
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from fracsight.cli import app
    from head_kinds import make_dataset

    built: dict[str, tuple[Path, Path]] = {}

    def build(kind: str) -> tuple[Path, Path]:
        if kind not in built:
            work = tmp_path_factory.mktemp(f"heads-{kind.replace('+', '-')}")
            data = make_dataset(kind, fracatlas_dir, work / "data")
            settings = [a for s in [*TINY_TRAINING, f"name=tiny-{kind}"] for a in ("--set", s)]
            runner = CliRunner()
            trained = runner.invoke(app, ["train", str(data), "--out", str(work / "run"), *settings])
            assert trained.exit_code == 0, trained.output
            exported = runner.invoke(app, ["export", str(work / "run"), str(work / "bundle")])
            assert exported.exit_code == 0, exported.output
            built[kind] = (data, work / "bundle")
        return built[kind]

    return build


def _mini_fracatlas(fracatlas: Path, root: Path) -> Path:
    """A FracAtlas-layout set of 60 images (with their boxes) linked from the real one."""
    return fracatlas_subset(fracatlas, root, {"train": (16, 16), "val": (8, 8), "test": (6, 6)})


def fracatlas_subset(fracatlas: Path, root: Path, counts: dict[str, tuple[int, int]]) -> Path:
    """A FracAtlas-layout data set at ``root`` linked from the real one: the first (fractured, other)
    images of each split ``counts`` names, with their box annotations."""
    with open(fracatlas / "dataset.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    chosen = []
    for split, (n_fractured, n_other) in counts.items():
        for fractured, n in (("1", n_fractured), ("0", n_other)):
            chosen += [r for r in rows if r["split"] == split and r["fractured"] == fractured][:n]
    (root / "annotations" / "yolo").mkdir(parents=True)
    for row in chosen:
        folder = "Fractured" if row["fractured"] == "1" else "Non_fractured"
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        (root / "images" / folder / row["image_id"]).symlink_to(
            fracatlas / "images" / folder / row["image_id"]
        )
        label = fracatlas / "annotations" / "yolo" / (Path(row["image_id"]).stem + ".txt")
        if label.is_file():
            (root / "annotations" / "yolo" / label.name).symlink_to(label)
    with open(root / "dataset.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return root


@pytest.fixture(scope="session")
def detector_bundle(tmp_path_factory: pytest.TempPathFactory, fracatlas_dir: Path) -> tuple[Path, Path, Path]:
    """(data, base bundle, new bundle): a tiny bundle with a grafted detector and orientation step
    (`fracsight detector train`), made through the real CLI as a researcher would."""
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from fracsight.cli import app

    work = tmp_path_factory.mktemp("detector")
    data = _mini_fracatlas(fracatlas_dir, work / "data")
    runner = CliRunner()
    settings = [a for s in [*TINY_TRAINING, "input_size=96", "name=tiny-base"] for a in ("--set", s)]
    trained = runner.invoke(app, ["train", str(data), "--out", str(work / "run"), *settings])
    assert trained.exit_code == 0, trained.output
    exported = runner.invoke(app, ["export", str(work / "run"), str(work / "base")])
    assert exported.exit_code == 0, exported.output
    made = runner.invoke(
        app,
        ["detector", "train", str(work / "base"), str(work / "new"), "--data", str(data), "--epochs", "2"],
    )
    assert made.exit_code == 0, made.output
    assert "validation: box AP50" in made.output
    return data, work / "base", work / "new"


def is_overlay_of(size: tuple[int, int], width: int, height: int) -> bool:
    """Whether an overlay of ``size`` (PIL's width, height) shows an image of ``width`` x ``height``:
    the image at full size at its top left, the caption band below it (as wide as
    :func:`fracsight.explain.overlay.band_width` makes it)."""
    from fracsight.explain.overlay import band_width

    return size[0] == band_width(width, height) and size[1] > height
