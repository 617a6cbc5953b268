"""Does the detector learn better boxes from more views of the fractured training images? (issue 14)

    python scripts/detector_augmented_views.py [--views 6] [--seeds 0 1 2] [--epochs 8]

The detector of v4 learns from cached features of five fixed views per fractured image (four
quarter turns, one mirror) shifted by whole cells. This script adds ``--views`` more views of
every fractured training image with boxes, each through the frozen network of the base bundle:
a random quarter turn and mirror, scale, small rotation, shift, gamma and contrast (the GPU
recipe's augmentation, applied to the cached letterbox), the boxes moved with the image (the
axis-aligned box around the moved corners). It then trains v4's recipe with and without them,
over several seeds, and prints the validation figures as scripts/detector_variants.py does.
Validation only; the extra views are cached in runs/.cache/aug-<key>-<views>.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from pathlib import Path

import numpy as np
from detector_variants import cached_views, compare  # scripts/, beside this one

from fracsight.bundle import load_bundle_spec
from fracsight.data.sample import FRACTURE
from fracsight.data.splits import train_val_samples
from fracsight.detection.features import FeatureSet, model_boxes
from fracsight.detection.taps import tapped_session
from fracsight.explain.boxes import turn_boxes
from fracsight.training.cache import letterbox_samples

ROOT = Path(__file__).resolve().parents[1]


def augmented_view(
    image: np.ndarray,
    boxes: np.ndarray,
    rng: np.random.Generator,
    *,
    rotate: float,
    scale: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """One random view of a (S, S) uint8 letterbox and its (n, 4) boxes in model pixels."""
    from PIL import Image

    size = image.shape[-1]
    c = size / 2
    angle = math.radians(rng.uniform(-rotate, rotate))
    s = rng.uniform(*scale)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    tx, ty = rng.uniform(-0.08, 0.08, size=2) * size
    # forward map (source -> view): p' = c + s R F (p - c) + t
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    forward = s * rot @ np.diag([flip, 1.0])
    offset = np.array([c, c]) - forward @ np.array([c, c]) + np.array([tx, ty])
    inverse = np.linalg.inv(forward)
    inv_offset = -inverse @ offset
    coeffs = (*inverse[0], inv_offset[0], *inverse[1], inv_offset[1])
    view = (
        np.asarray(
            Image.fromarray(image).transform(
                (size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR
            )
        ).astype(np.float32)
        / 255
    )
    view = view ** rng.uniform(0.7, 1.4)
    mean = view.mean()
    view = np.clip((view - mean) * rng.uniform(0.8, 1.2) + mean, 0, 1)
    moved = []
    for x0, y0, x1, y1 in boxes:
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) @ forward.T + offset
        lo, hi = np.clip(corners.min(0), 0, size), np.clip(corners.max(0), 0, size)
        if (hi - lo).min() >= 2:
            moved.append([*lo, *hi])
    k = int(rng.integers(4))
    out_boxes = turn_boxes(np.array(moved).reshape(-1, 4), k, size)
    return np.ascontiguousarray(np.rot90(view, k)), out_boxes


def augmented_features(
    bundle_dir: Path, dataset, cache: Path, views: int, seed: int, rotate: float, scale: tuple[float, float]
) -> FeatureSet:
    spec = load_bundle_spec(bundle_dir)
    size = spec.input_size
    train, _ = train_val_samples(dataset, seed)
    chosen = [s for s in train if s.labels.get(FRACTURE) == 1 and s.boxes]
    key = hashlib.sha1(f"boxes per axis|{spec.onnx_sha256}|{views}|{seed}|{rotate}|{scale}".encode())
    for s in chosen:
        key.update(f"|{s.path}|{s.boxes}".encode())
    folder = cache / f"aug-{key.hexdigest()[:12]}"
    if (folder / "orientation.npy").is_file():
        return FeatureSet.load(folder)
    images = letterbox_samples(chosen, size, cache, 2).images
    session, names = tapped_session(bundle_dir / "model.onnx", size)
    rng = np.random.default_rng(seed + 1000)
    jobs = [(i, r) for i in range(len(chosen)) for r in range(views)]
    s8, s16, s32, boxes = [], [], [], []
    for start in range(0, len(jobs), 8):
        part = jobs[start : start + 8]
        x = np.empty((len(part), 1, size, size), np.float32)
        for j, (i, _) in enumerate(part):
            x[j, 0], b = augmented_view(
                images[i], model_boxes(chosen[i], size), rng, rotate=rotate, scale=scale
            )
            boxes.append(b)
        o8, o16, of = session.run(names, {"image": x})
        s8.append(o8.astype(np.float16))
        s16.append(o16.astype(np.float16))
        s32.append(of.astype(np.float16))
        if start % 400 == 0:
            print(f"augmented views: {start}/{len(jobs)}", flush=True)
    n = len(jobs)
    features = FeatureSet(
        orientation=np.zeros(n, int),
        fracture=np.ones(n, int),
        grid_features=np.zeros((n, 1, 3, 3), np.float16),
        detect=np.ones(n, bool),
        stride8=np.concatenate(s8),
        stride16=np.concatenate(s16),
        features=np.concatenate(s32),
        boxes=boxes,
    )
    features.save(folder)
    return FeatureSet.load(folder)


def joined(a: FeatureSet, b: FeatureSet) -> FeatureSet:
    """The detector's views of both sets (in memory)."""
    return FeatureSet(
        orientation=np.concatenate([a.orientation, b.orientation]),
        fracture=np.concatenate([a.fracture, b.fracture]),
        grid_features=np.zeros((0, 1, 3, 3), np.float16),
        detect=np.ones(len(a.boxes) + len(b.boxes), bool),
        stride8=np.concatenate([a.stride8, b.stride8]),
        stride16=np.concatenate([a.stride16, b.stride16]),
        features=np.concatenate([a.features, b.features]),
        boxes=[*a.boxes, *b.boxes],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=int, default=6)
    parser.add_argument("--rotate", type=float, default=10.0)
    parser.add_argument("--scale", type=float, nargs=2, default=(0.8, 1.25))
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--base", default="fracatlas-lite0-384-v2")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fracatlas")
    parser.add_argument("--without", action="store_true", help="also train without the extra views")
    args = parser.parse_args()
    base_dir, dataset, seed, train, val = cached_views(args.base, args.data)
    cache = ROOT / "runs" / ".cache"
    extra = augmented_features(base_dir, dataset, cache, args.views, seed, args.rotate, tuple(args.scale))
    print(f"{len(train.boxes)} cached views + {len(extra.boxes)} augmented views", flush=True)
    variants = {f"v4 + {args.views} augmented views": joined(train, extra)}
    if args.without:
        variants = {"v4": train, **variants}
    for name, data in variants.items():
        print(compare(name, data, val, {}, args.seeds, args.epochs), flush=True)


if __name__ == "__main__":
    main()
