#!/usr/bin/env python
"""Measure the out-of-distribution guard: false alarms on real radiographs, detection of everything else.

    python scripts/ood_eval.py --model path/to/bundle                 # FracAtlas test split + OOD set
    python scripts/ood_eval.py --model path/to/bundle --json > ood.json
    python scripts/ood_eval.py --model path/to/bundle --limit 200     # quicker: first 200 test images

In distribution: the FracAtlas test split (``split == test`` in dataset.csv, 687
images; never used to fit the guard). A *false alarm* is a radiograph whose
prediction is marked not reliable. Target: below 2 %.

Out of distribution (generated here; nothing is downloaded), each must come out
``reliable=False``. Target: at least 95 % detected.

- ``photo-colour``: scikit-image's bundled colour sample images (astronaut,
  chelsea the cat, coffee, rocket, ...), as JPEG;
- ``photo-gray``: the same photos converted to grayscale, as PNG;
- ``sample-gray``: scikit-image's bundled grayscale images (camera, coins, moon,
  text, page, microscopy, textures, ...);
- ``synthetic``: blank images, uniform and Gaussian noise, gradients,
  checkerboards, text-like screenshots rendered with Pillow (light and dark);
- ``medical-other``: things that *are* medical images but not musculoskeletal
  radiographs: a chest-X-ray-like phantom, a CT-like axial slice phantom and the
  Shepp-Logan CT phantom. They are crude geometric drawings (ellipses for lungs,
  arcs for ribs, a ring for a vertebra), not real chest films or CT slices; a
  real chest X-ray does show bone, so real ones are harder than these.

Prints per-category detection, the false-alarm rate, which guard signals fired,
and every miss by name. Exit code 0 always (it is a measurement), unless
``--check`` is given: then 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fracatlas"
FALSE_ALARM_TARGET = 0.02
DETECTION_TARGET = 0.95
SIDE = 512

# Substrings of the guard's warnings, to say which signal fired.
SIGNALS = {
    "truncated": "the file is cut short",
    "colour": "a colour image",
    "blank": "nearly uniform",
    "image_statistics": "image statistics outside",
    "feature_distance": "does not look like",
    "region": "body region outside",
}


@dataclass(frozen=True)
class Sample:
    category: str
    name: str
    data: bytes
    filename: str


@dataclass
class Outcome:
    category: str
    name: str
    reliable: bool | None  # None: the reader refused it (counts as detected, with its error code)
    signals: list[str] = field(default_factory=list)
    error: str | None = None
    distance: float | None = None


# ---- out-of-distribution inputs --------------------------------------------------------------------
def _png(gray: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(gray * 255.0 + 0.5, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _blur(a: np.ndarray, radius: float) -> np.ndarray:
    im = Image.fromarray(np.clip(a * 255.0, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(im, dtype=np.float64) / 255.0


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def skimage_inputs() -> Iterator[Sample]:
    try:
        import skimage.data as data
    except ImportError:
        print("scikit-image is not installed: its sample images are skipped", file=sys.stderr)
        return
    colour = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
              "retina", "colorwheel", "logo"]  # fmt: skip
    for name in colour:
        rgb = np.asarray(getattr(data, name)())
        image = Image.fromarray(rgb)
        if image.mode == "RGBA":
            yield Sample("photo-colour", name, _encode(image, "PNG"), f"{name}.png")
            image = image.convert("RGB")
        else:
            yield Sample("photo-colour", name, _encode(image, "JPEG"), f"{name}.jpg")
        yield Sample("photo-gray", f"{name} (gray)", _encode(image.convert("L"), "PNG"), f"{name}-gray.png")
    left, _, _ = data.stereo_motorcycle()
    yield Sample("photo-colour", "motorcycle", _encode(Image.fromarray(left), "JPEG"), "motorcycle.jpg")
    yield Sample(
        "photo-gray", "motorcycle (gray)", _encode(Image.fromarray(left).convert("L"), "PNG"), "moto.png"
    )
    gray = ["camera", "coins", "moon", "page", "text", "clock", "grass", "gravel", "brick", "cell",
            "microaneurysms", "horse", "checkerboard", "binary_blobs"]  # fmt: skip
    for name in gray:
        a = np.asarray(getattr(data, name)())
        a = a.astype(np.float64) if a.dtype == bool else a / 255.0
        yield Sample("sample-gray", name, _png(a), f"{name}.png")


def _screenshot(dark: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bg, fg, panel = (30, 220, 50) if dark else (255, 20, 235)
    im = Image.new("L", (SIDE + 128, SIDE), bg)
    draw = ImageDraw.Draw(im)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    draw.rectangle((0, 0, SIDE + 128, 28), fill=panel)  # title bar
    draw.text((10, 7), "Report viewer - fracsight_results.csv", fill=fg, font=font)
    words = ["fracture", "patient", "wrist", "distal", "radius", "no", "acute", "findings", "see", "image",
             "the", "of", "and", "left", "right", "lateral", "view", "2024", "cm", "mm"]  # fmt: skip
    y = 44
    while y < SIDE - 20:
        line = " ".join(rng.choice(words, size=int(rng.integers(4, 12))))
        draw.text((16, y), line, fill=fg, font=font)
        y += 20
        if rng.random() < 0.15:
            draw.rectangle((16, y, 140, y + 24), outline=fg, fill=panel)
            draw.text((30, y + 5), "OK", fill=fg, font=font)
            y += 34
    return np.asarray(im, dtype=np.float64) / 255.0


def synthetic_inputs() -> Iterator[Sample]:
    rng = np.random.default_rng(7)
    h, w = SIDE, SIDE
    y, x = np.mgrid[0:h, 0:w] / (SIDE - 1.0)
    arrays = {
        "blank black": np.zeros((h, w)),
        "blank white": np.ones((h, w)),
        "blank grey": np.full((h, w), 0.5),
        "grey with faint noise": np.clip(0.5 + rng.normal(0, 0.01, (h, w)), 0, 1),
        "uniform noise": rng.random((h, w)),
        "gaussian noise": np.clip(rng.normal(0.5, 0.2, (h, w)), 0, 1),
        "salt and pepper": (rng.random((h, w)) < 0.5).astype(float),
        "blurred noise (clouds)": _blur(rng.random((h, w)), 12) * 3 - 1,
        "gradient horizontal": x,
        "gradient vertical": y,
        "gradient diagonal": (x + y) / 2,
        "gradient radial": np.clip(1 - np.hypot(x - 0.5, y - 0.5) * 1.6, 0, 1),
        "checkerboard 8 px": ((np.arange(h)[:, None] // 8 + np.arange(w)[None] // 8) % 2).astype(float),
        "checkerboard 32 px": ((np.arange(h)[:, None] // 32 + np.arange(w)[None] // 32) % 2).astype(float),
        "checkerboard 64 px": ((np.arange(h)[:, None] // 64 + np.arange(w)[None] // 64) % 2).astype(float),
        "stripes": (np.sin(x * 40) > 0).astype(float),
        "screenshot light": _screenshot(False, 1),
        "screenshot dark": _screenshot(True, 2),
        "screenshot light 2": _screenshot(False, 3),
    }
    for name, a in arrays.items():
        yield Sample("synthetic", name, _png(np.clip(a, 0, 1)), name.replace(" ", "_") + ".png")


def chest_xray_phantom(seed: int = 0) -> np.ndarray:
    """A crude PA chest film: body outline, dark lungs, spine, heart, ribs, clavicles (bone bright)."""
    rng = np.random.default_rng(seed)
    h = w = SIDE
    img = np.full((h, w), 0.04)
    img[_ellipse(h, w, h * 0.62, w * 0.5, h * 0.62, w * 0.45)] = 0.55  # soft tissue of the trunk
    for cx in (0.31, 0.69):
        img[_ellipse(h, w, h * 0.47, w * cx, h * 0.3, w * 0.16)] = 0.18  # lungs
    img[_ellipse(h, w, h * 0.64, w * 0.56, h * 0.14, w * 0.15)] = 0.62  # heart shadow
    img[:, int(w * 0.47) : int(w * 0.53)] = np.maximum(img[:, int(w * 0.47) : int(w * 0.53)], 0.72)  # spine
    yy, xx = np.mgrid[0:h, 0:w]
    ribs = np.zeros((h, w))
    for k in range(10):  # arcs sweeping down and out from the spine
        top = h * (0.2 + 0.055 * k)
        curve = top + 0.0025 * (xx - w / 2) ** 2 / (1 + 0.02 * k)
        ribs += np.abs(yy - curve) < 5
    img += 0.18 * np.clip(ribs, 0, 1) * (img > 0.1)
    for sign in (-1, 1):  # clavicles
        cl = np.abs(yy - (h * 0.16 + sign * 0.12 * (xx - w / 2))) < 7
        img[cl & (np.abs(xx - w / 2) < w * 0.33) & (np.abs(xx - w / 2) > w * 0.04)] = 0.8
    img = _blur(np.clip(img, 0, 1), 3) + rng.normal(0, 0.015, (h, w))
    return np.clip(img, 0, 1)


def ct_phantom(seed: int = 0) -> np.ndarray:
    """A crude axial chest CT slice: air, table, body, fat ring, lungs, vertebra with canal, aorta."""
    rng = np.random.default_rng(seed)
    h = w = SIDE
    img = np.zeros((h, w))
    body = _ellipse(h, w, h * 0.5, w * 0.5, h * 0.33, w * 0.44)
    img[body] = 0.32  # subcutaneous fat
    img[_ellipse(h, w, h * 0.5, w * 0.5, h * 0.3, w * 0.41)] = 0.45  # muscle and soft tissue
    for cx in (0.33, 0.67):
        img[_ellipse(h, w, h * 0.46, w * cx, h * 0.2, w * 0.14)] = 0.03  # lungs
    img[_ellipse(h, w, h * 0.72, w * 0.5, h * 0.07, w * 0.07)] = 0.95  # vertebral body
    img[_ellipse(h, w, h * 0.79, w * 0.5, h * 0.025, w * 0.025)] = 0.42  # spinal canal
    img[_ellipse(h, w, h * 0.6, w * 0.55, h * 0.035, w * 0.035)] = 0.6  # aorta (contrast)
    img[_ellipse(h, w, h * 0.5, w * 0.5, h * 0.1, w * 0.09)] = 0.5  # heart
    img[int(h * 0.86) : int(h * 0.88), int(w * 0.1) : int(w * 0.9)] = 0.7  # table
    img = _blur(img, 1.5) + rng.normal(0, 0.02, (h, w))
    return np.clip(img, 0, 1)


def medical_other_inputs() -> Iterator[Sample]:
    for seed in range(2):
        yield Sample(
            "medical-other", f"chest X-ray phantom {seed}", _png(chest_xray_phantom(seed)), f"cxr{seed}.png"
        )
        yield Sample("medical-other", f"CT slice phantom {seed}", _png(ct_phantom(seed)), f"ct{seed}.png")
    try:
        from skimage.data import shepp_logan_phantom
    except ImportError:
        return
    yield Sample("medical-other", "Shepp-Logan CT phantom", _png(shepp_logan_phantom()), "shepp_logan.png")


def ood_samples() -> list[Sample]:
    return [*skimage_inputs(), *synthetic_inputs(), *medical_other_inputs()]


# ---- evaluation ---------------------------------------------------------------------------------------
def fracatlas_test_paths(data_dir: Path, split: str, limit: int | None) -> list[Path]:
    rows = list(csv.DictReader((data_dir / "dataset.csv").open(newline="")))
    paths = []
    for row in rows:
        if row.get("split") != split:
            continue
        folder = (
            "Fractured"
            if (data_dir / "images" / "Fractured" / row["image_id"]).is_file()
            else "Non_fractured"
        )
        paths.append(data_dir / "images" / folder / row["image_id"])
    return paths[:limit] if limit else paths


def _signals(warnings: tuple[str, ...] | list[str]) -> list[str]:
    return [name for name, text in SIGNALS.items() if any(text in w for w in warnings)]


def _outcome(category: str, name: str, result: object) -> Outcome:
    from fracsight.inference import FailedPrediction

    if isinstance(result, FailedPrediction):
        return Outcome(category, name, None, error=result.error_code)
    signals = _signals(result.warnings)  # type: ignore[attr-defined]
    return Outcome(category, name, bool(result.reliable), signals)  # type: ignore[attr-defined]


def evaluate(model: str | None, data_dir: Path, split: str, limit: int | None) -> dict[str, object]:
    from fracsight.errors import ImageReadError
    from fracsight.inference import Predictor

    predictor = Predictor(model)
    started = time.perf_counter()
    paths = fracatlas_test_paths(data_dir, split, limit)
    in_dist = [
        _outcome("fracatlas-" + split, p.name, r)
        for p, r in zip(paths, predictor.predict_many(paths), strict=True)
    ]
    ood: list[Outcome] = []
    for s in ood_samples():
        try:
            result = predictor.predict(s.data, name=s.filename, heatmap=False)
        except ImageReadError as e:
            ood.append(Outcome(s.category, s.name, None, error=e.code))
            continue
        ood.append(_outcome(s.category, s.name, result))
    return summarise(predictor.name, in_dist, ood, time.perf_counter() - started)


def summarise(model: str, in_dist: list[Outcome], ood: list[Outcome], seconds: float) -> dict[str, object]:
    read = [o for o in in_dist if o.reliable is not None]
    # a file cut short really is missing part of its image (FracAtlas has such files): flagging it is
    # right, not a false alarm, so it is counted on its own
    incomplete = [o for o in read if "truncated" in o.signals]
    alarms = [o for o in read if not o.reliable and "truncated" not in o.signals]
    detected = [o for o in ood if not o.reliable]  # refused by the reader counts as detected
    categories: dict[str, dict[str, object]] = {}
    for o in ood:
        c = categories.setdefault(o.category, {"n": 0, "detected": 0, "missed": []})
        c["n"] += 1  # type: ignore[operator]
        if o.reliable:
            c["missed"].append(o.name)  # type: ignore[union-attr]
        else:
            c["detected"] += 1  # type: ignore[operator]
    for c in categories.values():
        c["rate"] = round(c["detected"] / c["n"], 4)  # type: ignore[operator]
    fa_rate = len(alarms) / max(len(read), 1)
    det_rate = len(detected) / max(len(ood), 1)
    return {
        "model": model,
        "seconds": round(seconds, 1),
        "in_distribution": {
            "n": len(in_dist),
            "unreadable": len(in_dist) - len(read),
            "false_alarms": len(alarms),
            "false_alarm_rate": round(fa_rate, 4),
            "target": f"< {FALSE_ALARM_TARGET:.0%}",
            "met": fa_rate < FALSE_ALARM_TARGET,
            "signals": dict(Counter(s for o in alarms for s in o.signals)),
            "flagged": [o.name for o in alarms],
            "incomplete_files": [o.name for o in incomplete],
        },
        "out_of_distribution": {
            "n": len(ood),
            "detected": len(detected),
            "detection_rate": round(det_rate, 4),
            "target": f">= {DETECTION_TARGET:.0%}",
            "met": det_rate >= DETECTION_TARGET,
            "refused_by_reader": len([o for o in ood if o.reliable is None]),
            "signals": dict(Counter(s for o in detected for s in o.signals)),
            "categories": categories,
            "missed": [f"{o.category}: {o.name}" for o in ood if o.reliable],
        },
        "per_input": [o.__dict__ for o in ood],
    }


def print_report(r: dict[str, object]) -> None:
    ind, ood = r["in_distribution"], r["out_of_distribution"]
    print(f"OOD guard of {r['model']} ({r['seconds']} s)\n")
    print(
        f"false alarms on real radiographs: {ind['false_alarms']}/{ind['n'] - ind['unreadable']} = "
        f"{ind['false_alarm_rate']:.1%} (target {ind['target']}: {'met' if ind['met'] else 'MISSED'})"
    )
    if ind["signals"]:
        print(f"  signals that fired: {ind['signals']}")
    if ind["incomplete_files"]:
        print(f"  also not reliable, as they should be: {len(ind['incomplete_files'])} files cut short")
    print(
        f"detected non-radiographs: {ood['detected']}/{ood['n']} = {ood['detection_rate']:.1%} "
        f"(target {ood['target']}: {'met' if ood['met'] else 'MISSED'})"
    )
    print(f"  signals that fired: {ood['signals']}; refused by the reader: {ood['refused_by_reader']}")
    print("\n| category | detected | rate | missed |\n|---|---|---|---|")
    for name, c in ood["categories"].items():
        print(f"| {name} | {c['detected']}/{c['n']} | {c['rate']:.0%} | {', '.join(c['missed']) or '-'} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", "-m", default=None, help="bundle folder, .zip or packaged name (default: shipped)"
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="FracAtlas folder (with dataset.csv)")
    p.add_argument("--split", default="test", help="FracAtlas split used as in-distribution data")
    p.add_argument("--limit", type=int, default=None, help="use only the first N in-distribution images")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    if not (args.data / "dataset.csv").is_file():
        p.error(f"no FracAtlas data at {args.data} (give --data)")
    report = evaluate(args.model, args.data, args.split, args.limit)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    met = report["in_distribution"]["met"] and report["out_of_distribution"]["met"]  # type: ignore[index]
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
