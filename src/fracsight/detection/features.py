"""Frozen features of a bundle's network for training the grafted heads (no torch here).

Every training image is read in its four right-angle orientations (with a random
mirror): the orientation head learns from all of them. The detection head learns from
the fractured images with boxes and a sample of the others, in the same orientations
(plus the upright mirror of the fractured ones), so that a radiograph the orientation
step leaves turned still gets boxes; optionally also in views zoomed about their centre
(``zoom_views``), so that it sees fractures at more than one size.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fracsight.data.sample import FRACTURE, Sample
from fracsight.detection.taps import tapped_session
from fracsight.explain.boxes import flip_boxes, turn_boxes, zoom_boxes
from fracsight.preprocessing import letterbox_geometry, read_for_model

__all__ = ["FeatureSet", "ZoomViews", "extract_features", "model_boxes", "zoom_image"]

GRID = 3  # the orientation head sees the feature map averaged over a 3 x 3 grid


@dataclass
class FeatureSet:
    """Inputs of the grafted heads for a list of (image, orientation) views."""

    orientation: np.ndarray  # (N,) int: quarter turns of each view
    fracture: np.ndarray  # (N,) int: 1 fractured, 0 not, -1 unknown
    grid_features: np.ndarray  # (N, C, 3, 3) float16, every view
    detect: np.ndarray  # (N,) bool: the view also has full maps below
    stride8: np.ndarray  # (M, C8, S/8, S/8) float16, the views with ``detect``
    stride16: np.ndarray  # (M, C16, S/16, S/16)
    features: np.ndarray  # (M, C, S/32, S/32)
    boxes: list[np.ndarray]  # M arrays (n, 4) in model-input pixels

    def with_maps(self, upright_only: bool = False) -> FeatureSet:
        """The views that have full maps (optionally only the upright ones): the detector's data."""
        keep = np.ones(len(self.boxes), bool)
        if upright_only:
            keep = np.asarray(self.orientation)[np.asarray(self.detect)] == 0
        views = np.flatnonzero(self.detect)[keep]
        return FeatureSet(
            orientation=np.asarray(self.orientation)[views],
            fracture=np.asarray(self.fracture)[views],
            grid_features=np.asarray(self.grid_features)[views],
            detect=np.ones(len(views), bool),
            stride8=self.stride8[keep],
            stride16=self.stride16[keep],
            features=self.features[keep],
            boxes=[b for b, k in zip(self.boxes, keep, strict=True) if k],
        )

    def save(self, folder: Path) -> None:
        """Written whole or not at all (a folder is a cache only when complete): into a sibling
        folder, renamed into place at the end. A run stopped while writing left a folder that the
        next run took for a cache, and failed on."""
        partial = folder.with_name(f"{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in ("orientation", "fracture", "grid_features", "detect", "stride8", "stride16", "features"):
            np.save(partial / f"{name}.npy", getattr(self, name))
        counts = np.array([len(b) for b in self.boxes])
        flat = np.concatenate(self.boxes) if self.boxes else np.zeros((0, 4))
        np.save(partial / "box_counts.npy", counts)
        np.save(partial / "boxes.npy", flat)
        shutil.rmtree(folder, ignore_errors=True)  # what an earlier run left incomplete
        partial.rename(folder)

    @classmethod
    def load(cls, folder: Path) -> FeatureSet:
        arrays = {p.stem: np.load(p, mmap_mode="r") for p in Path(folder).glob("*.npy")}
        counts, flat = arrays.pop("box_counts"), np.asarray(arrays.pop("boxes"))
        ends = np.cumsum(counts)
        boxes = [flat[e - c : e] for c, e in zip(counts, ends, strict=True)]
        return cls(boxes=boxes, **arrays)


def model_boxes(sample: Sample, size: int) -> np.ndarray:
    """A sample's boxes in model-input pixels of its centred letterbox."""
    from PIL import Image, UnidentifiedImageError

    if not sample.boxes:
        return np.zeros((0, 4))
    aspect = 1.0
    try:
        with Image.open(sample.path) as im:  # the header is enough
            w, h = im.size
    except (OSError, UnidentifiedImageError):  # DICOM and the like: read it as the model does
        radiograph = read_for_model(sample.path, size)
        (h, w), aspect = radiograph.full_size, radiograph.metadata.pixel_aspect  # may not be square
    geometry = letterbox_geometry((h, w), size, aspect)
    corners = [
        (*geometry.to_model(b.x0 * w, b.y0 * h), *geometry.to_model(b.x1 * w, b.y1 * h)) for b in sample.boxes
    ]
    return np.array(corners, dtype=np.float64)


@dataclass(frozen=True)
class ZoomViews:
    """``count`` more views of every training image with full maps, each in a random quarter turn
    and mirror, zoomed about its centre by a factor drawn between ``low`` and ``high``."""

    count: int = 0
    low: float = 0.6
    high: float = 1.6


def _views(
    sample: Sample, train: bool, detect: bool, rng: np.random.Generator, zoom: ZoomViews
) -> list[tuple[int, bool, bool, float]]:
    """(quarter turns, mirrored, with full maps, zoom) for each view of one image."""
    if not train:  # validation: the four turns, never mirrored
        return [(k, False, detect and k == 0, 1.0) for k in range(4)]
    views = [(k, bool(rng.random() < 0.5), detect, 1.0) for k in range(4)]
    if detect and sample.labels.get(FRACTURE) == 1:
        views.append((0, not views[0][1], True, 1.0))
    if detect:
        for _ in range(zoom.count):
            scale = float(rng.uniform(zoom.low, zoom.high))
            views.append((int(rng.integers(4)), bool(rng.random() < 0.5), True, scale))
    return views


def zoom_image(image: np.ndarray, scale: float) -> np.ndarray:
    """A square uint8 view zoomed by ``scale`` about its centre (bilinear, black outside), as
    :func:`~fracsight.explain.boxes.zoom_boxes` moves its boxes."""
    from PIL import Image

    side = image.shape[0]
    c = side / 2 - side / 2 / scale  # the view at u reads the image at u / scale + c
    im = Image.fromarray(np.ascontiguousarray(image))
    data = (1 / scale, 0, c, 0, 1 / scale, c)
    return np.asarray(im.transform((side, side), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR))


def extract_features(
    onnx_path: Path,
    samples: list[Sample],
    images: np.ndarray,
    *,
    train: bool,
    detect: np.ndarray,
    seed: int = 0,
    batch: int = 8,
    threads: int = 0,
    zoom: ZoomViews = ZoomViews(),
    progress=None,
) -> FeatureSet:
    """Run the frozen network at ``onnx_path`` on the views of ``samples``.

    ``images``: (N, S, S) uint8 centred letterboxes of the samples; ``detect``: (N,) bool,
    which samples' views keep full maps for the detection head (and, in training, get the
    zoomed views of ``zoom``).
    """
    size = images.shape[-1]
    session, names = tapped_session(onnx_path, size, threads)
    rng = np.random.default_rng(seed)
    jobs = []  # (sample index, k, mirrored, keep maps, zoom)
    for i, sample in enumerate(samples):
        jobs += [(i, *view) for view in _views(sample, train, bool(detect[i]), rng, zoom)]
    grid, orient, frac, keep = [], [], [], []
    s8, s16, feats, boxes = [], [], [], []
    for start in range(0, len(jobs), batch):
        part = jobs[start : start + batch]
        x = np.empty((len(part), 1, size, size), np.float32)
        for j, (i, k, mirrored, _, scale) in enumerate(part):
            img = np.rot90(images[i][:, ::-1] if mirrored else images[i], k)
            x[j, 0] = (zoom_image(img, scale) if scale != 1.0 else img) / np.float32(255)
        o8, o16, of = session.run(names, {"image": x})
        c = of.shape[1]
        g = of.reshape(len(part), c, GRID, of.shape[2] // GRID, GRID, of.shape[3] // GRID).mean(axis=(3, 5))
        grid.append(g.astype(np.float16))
        for j, (i, k, mirrored, maps, scale) in enumerate(part):
            orient.append(k)
            frac.append(int(samples[i].labels.get(FRACTURE, -1)))
            keep.append(maps)
            if maps:
                s8.append(o8[j].astype(np.float16))
                s16.append(o16[j].astype(np.float16))
                feats.append(of[j].astype(np.float16))
                b = model_boxes(samples[i], size)
                if mirrored:
                    b = flip_boxes(b, size)
                b = turn_boxes(b, k, size)
                boxes.append(zoom_boxes(b, scale, (0.0, 0.0), size) if scale != 1.0 else b)
        if progress:
            progress(len(part))

    def stack(arrays: list[np.ndarray], like: np.ndarray) -> np.ndarray:
        return np.stack(arrays) if arrays else np.zeros((0, *like.shape[1:]), np.float16)

    return FeatureSet(
        orientation=np.array(orient),
        fracture=np.array(frac),
        grid_features=np.concatenate(grid),
        detect=np.array(keep),
        stride8=stack(s8, o8),
        stride16=stack(s16, o16),
        features=stack(feats, of),
        boxes=boxes,
    )
