"""The training and validation views of a data set, through a bundle's frozen network, cached on disk."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fracsight.bundle import load_bundle_spec
from fracsight.data.sample import FRACTURE, Dataset, Sample
from fracsight.data.splits import train_val_samples
from fracsight.detection.features import FeatureSet, ZoomViews, extract_features
from fracsight.training.cache import letterbox_samples

__all__ = ["prepare_features", "validation_features"]

log = logging.getLogger(__name__)


def _detect_mask(samples: list[Sample], normals: int, rng: np.random.Generator) -> np.ndarray:
    """Fractured images with boxes, plus ``normals`` images without a fracture, keep full maps."""
    boxed = np.array([s.labels.get(FRACTURE) == 1 and bool(s.boxes) for s in samples])
    normal = np.flatnonzero([s.labels.get(FRACTURE) == 0 for s in samples])
    chosen = rng.choice(normal, size=min(normals, len(normal)), replace=False)
    mask = boxed.copy()
    mask[chosen] = True
    return mask


def prepare_features(
    bundle_dir: Path,
    dataset: Dataset,
    cache_dir: Path,
    *,
    normals: int = 400,
    seed: int = 0,
    zoom: ZoomViews = ZoomViews(),
    show_progress: bool = True,
) -> tuple[FeatureSet, FeatureSet]:
    """Train and val :class:`FeatureSet` for ``dataset`` through the network of ``bundle_dir``
    (``zoom``: the zoomed training views, :class:`~fracsight.detection.features.ZoomViews`)."""
    out = _features(
        bundle_dir,
        dataset,
        cache_dir,
        normals=normals,
        seed=seed,
        zoom=zoom,
        show_progress=show_progress,
        with_train=True,
    )
    return out["train"], out["val"]


def _features(
    bundle_dir: Path,
    dataset: Dataset,
    cache_dir: Path,
    *,
    normals: int,
    seed: int,
    show_progress: bool,
    zoom: ZoomViews = ZoomViews(),
    with_train: bool = False,
    workers: int = 2,
) -> dict[str, FeatureSet]:
    from fracsight._terminal import progress_bar

    spec = load_bundle_spec(bundle_dir)
    onnx_path = Path(bundle_dir) / "model.onnx"
    train, val = train_val_samples(dataset, seed)
    key = cache_key(f"{spec.onnx_sha256}|{normals}|{seed}", zoom, train, val)
    out = {}
    splits = [("train", train, True)] if with_train else []
    for name, samples, is_train in (*splits, ("val", val, False)):
        folder = Path(cache_dir) / f"heads-{key}-{name}"
        log.info("frozen features of the %s views: %s", name, folder)
        if (folder / "boxes.npy").is_file():  # written last (FeatureSet.save: whole or not at all)
            out[name] = FeatureSet.load(folder)
            continue
        rng = np.random.default_rng(seed)
        detect = _detect_mask(samples, normals, rng) if is_train else np.ones(len(samples), bool)
        images = letterbox_samples(samples, spec.input_size, Path(cache_dir), workers).images
        fractured = np.array([s.labels.get(FRACTURE) == 1 for s in samples], bool)
        extra = int((detect & fractured).sum()) + zoom.count * int(detect.sum())
        views = 4 * len(samples) + (extra if is_train else 0)
        with progress_bar(hide=not show_progress) as bar:
            task = bar.add_task(f"frozen features of the {name} views", total=views)
            features = extract_features(
                onnx_path,
                samples,
                images,
                train=is_train,
                detect=detect,
                seed=seed,
                zoom=zoom,
                progress=lambda n, task=task: bar.advance(task, n),
            )
        features.save(folder)
        out[name] = FeatureSet.load(folder)
    return out


def cache_key(settings: str, zoom: ZoomViews, train: Sequence[Sample], val: Sequence[Sample]) -> str:
    """The name of the frozen features of ``train`` and ``val`` views made with ``settings``: a
    file replaced or relabelled, or moved from one split to the other, is other features."""
    # boxes mapped with each axis's own letterbox scale, DICOMs at their pixel aspect (2026-12-05):
    # caches made before not reused
    digest = hashlib.sha1(f"pixel aspect|{settings}".encode())
    if zoom.count:
        digest.update(f"|zoom {zoom.count} {zoom.low} {zoom.high}".encode())
    # each split's size: the last training image moved to the front of val was the same list, and
    # its old features (trained on as a training view) were read again
    digest.update(f"|train {len(train)}|val {len(val)}".encode())
    for sample in (*train, *val):
        stat = sample.path.stat()
        labels = sorted(sample.labels.items())
        digest.update(f"|{sample.path}|{stat.st_size}|{stat.st_mtime_ns}|{sample.boxes}|{labels}".encode())
    return digest.hexdigest()[:12]


def validation_features(
    bundle_dir: Path, dataset: Dataset, cache_dir: Path, *, seed: int = 0, show_progress: bool = True
) -> FeatureSet:
    """The validation views alone (what the score floor and the orientation certainty are chosen on)
    for a network whose heads were trained elsewhere (a joint run)."""
    return _features(bundle_dir, dataset, cache_dir, normals=0, seed=seed, show_progress=show_progress)["val"]
