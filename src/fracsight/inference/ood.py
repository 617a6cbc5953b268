"""Is this input the kind of image the model was made for? (out-of-distribution guard)

Seven signals, each cheap; any one marks the result not reliable, with a warning:

- truncated: the file is cut short (an interrupted copy) and part of the image is missing from
  it, filled in by the decoder, so the model did not see all of it (``metadata.incomplete``: rows
  of a JPEG decoded as grey; any DICOM compressed frame without its end, where the extent cannot
  be told). A JPEG that lacks only its end marker is read whole and stays reliable;
- colour: radiographs are grayscale; the reader notes a visibly coloured image
  (``metadata.warnings``), which a photo or a screenshot usually is;
- blank: a nearly uniform image carries no anatomy;
- thumbnail: a shorter side under :data:`UNRELIABLE_SIDE` pixels (a thumbnail, a preview, an
  image cut from a screenshot): FracAtlas `val` images scaled down so read far worse
  (``scripts/resolution_eval.py``), and the other signals do not see it; under
  :data:`LOW_RESOLUTION_SIDE` a warning only. A radiograph read reduced below the model's input
  size (``read_image(..., reduce_to=)``) is a thumbnail too, whatever its full size;
- image statistics: four numbers that describe how the pixels vary
  (:class:`ImageStatistics`) must lie in the range seen on radiographs
  (:data:`IMAGE_LIMITS`, measured on FracAtlas; a bundle may carry its own);
  noise, text, posterised or binary images, smooth gradients and busy textures
  fall outside it;
- feature-space distance: how far the pooled embedding lies outside the
  principal subspace of the training images' embeddings (stored in
  ``bundle.json`` at export), beyond a threshold calibrated on held-out
  radiographs. Radiographs vary along a few dozen directions of the 1280-d
  embedding; photos and drawings leave that subspace even where they sit
  close to some radiograph by cosine similarity (bundles exported before this
  carry nearest-prototype or z-score statistics, which are still read);
- body-region confidence: when no region the model knows is likely.

One more check only warns, and never changes ``reliable`` or the prediction: a DICOM
header's Body Part Examined that clearly disagrees with the predicted body region
(:func:`body_part_warning`). The header is often set from the exam protocol rather
than the image, so a disagreement says "look at which is right", not "the image is
not a radiograph".

``scripts/ood_eval.py`` measures false alarms on real radiographs and detection
of photos, screenshots, synthetic and non-musculoskeletal medical images.
"""

from __future__ import annotations

import math
from base64 import b64decode, b64encode
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from fracsight.bundle import BundleSpec
from fracsight.errors import BundleError
from fracsight.inference.results import shown_probability
from fracsight.io import Radiograph
from fracsight.io._raster import COLOUR_WARNING, COMPRESSION_WARNING

__all__ = [
    "BODY_PART_REGIONS",
    "IMAGE_LIMITS",
    "ImageStatistics",
    "InputAssessment",
    "assess_input",
    "body_part_warning",
    "embedding_distance",
    "feature_distance",
    "fit_ood",
    "image_statistics",
    "pixel_statistics",
    "prototype_distance",
    "subspace_residual",
]

MIN_PIXEL_STD = 0.02
MIN_REGION_PROBABILITY = 0.2
LOW_RESOLUTION_SIDE = 128  # a shorter side under this: a warning
# ... under this: not reliable. Fracture AUROC on FracAtlas val (scripts/resolution_eval.py): 0.923 as
# given, 0.903 at a shorter side of 128 px, 0.877 at 96, 0.846 at 80, 0.807 at 64, 0.661 at 32
UNRELIABLE_SIDE = 96
FALSE_ALARM_TARGET = 0.02  # of real radiographs marked not reliable (scripts/ood_eval.py measures it)
SUBSPACE_VARIANCE = 0.95  # the principal subspace of the training embeddings keeps this share of variance
MAX_SUBSPACE = 256  # ... with at most this many directions (bundle.json holds them as float16)
STATS_SIDE = 256  # image statistics are computed on the image resized to this square
CORRELATION_CROP = 512  # ... except neighbour correlation: on a central crop at the decoded resolution
EDGE_GRADIENT = 0.02  # a pixel of the STATS_SIDE image is an edge where its gradient is steeper

#: Accepted (low, high) range of each image statistic; None: no limit on that side.
#: On the FracAtlas training split (2,216 radiographs, 0.1 %-99.9 % quantiles / extremes):
#: grey_levels 29 / 24 .. 64, neighbour_correlation 0.82 / 0.73 .. 1.0, edge_fraction
#: 0.064 / 0.041 .. 0.377 / 0.445, fine_detail 0.029 / 0.027 .. 0.349 / 0.355. The limits leave
#: a margin of about a third beyond those extremes.
IMAGE_LIMITS: dict[str, tuple[float | None, float | None]] = {
    "grey_levels": (16, None),
    "neighbour_correlation": (0.6, None),
    "edge_fraction": (0.025, 0.6),
    # low: a radiograph blurred past reading (Gaussian radius 4 on a 373 x 454 film moved a fracture
    # from 0.93 to 0.09, reliable, 2026-12-05); no FracAtlas image is below 0.026
    "fine_detail": (0.018, 0.45),
    # one row (or column) of a radiograph repeated over the whole image passed every other limit,
    # "fracture suspected, reliable" (2026-12-06); FracAtlas train 0.157 .. 0.863, all 3,232: 0.133 at least
    "cross_variation": (0.05, None),
}


_HAND = ("hand", "finger", "wrist")
_FOREARM = ("hand", "wrist", "forearm", "elbow")
_ARM = ("hand", "finger", "wrist", "forearm", "elbow", "humerus", "shoulder")
_SHOULDER = ("shoulder", "humerus")
_LEG = ("leg", "knee", "ankle", "foot")
_THIGH = ("leg", "hip", "femur", "knee")
_HIP = ("hip", "pelvis", "femur")

#: DICOM Body Part Examined terms (PS3.16 Annex L; compared without spaces or underscores)
#: -> the region names a model's region head may use for that part (FracAtlas: hand, leg,
#: hip, shoulder; MURA-like: finger, wrist, elbow, forearm, humerus, ...). A predicted
#: region among them agrees. Terms for parts no limb or shoulder model covers map to their
#: own name, so a model without such a region says the part is outside its training data.
#: Terms not listed (EXTREMITY, WHOLEBODY, SACRUM, ...) give no warning.
BODY_PART_REGIONS: Mapping[str, tuple[str, ...]] = {
    **dict.fromkeys(("HAND", "FINGER", "THUMB", "WRIST"), _HAND),
    **dict.fromkeys(("FOREARM", "RADIUS", "ULNA"), _FOREARM),
    "ELBOW": ("elbow", "forearm", "humerus", "hand", "shoulder"),  # FracAtlas has no elbow region
    **dict.fromkeys(("HUMERUS", "UPPERARM"), ("humerus", "shoulder", "elbow")),
    **dict.fromkeys(("ARM", "UPPERLIMB", "UPPEREXTREMITY"), _ARM),
    **dict.fromkeys(("SHOULDER", "CLAVICLE", "SCAPULA", "ACJOINT"), _SHOULDER),
    **dict.fromkeys(("FOOT", "TOE", "HEEL", "CALCANEUS", "ANKLE"), (*_LEG, "toe")),
    **dict.fromkeys(("KNEE", "PATELLA", "LEG", "LOWERLEG", "TIBIA", "FIBULA"), _LEG),
    **dict.fromkeys(("FEMUR", "THIGH"), _THIGH),
    **dict.fromkeys(("LOWERLIMB", "LOWEREXTREMITY"), (*_LEG, "hip", "femur")),
    **dict.fromkeys(("HIP", "PELVIS"), _HIP),
    **dict.fromkeys(("CHEST", "RIB", "STERNUM"), ("chest",)),
    **dict.fromkeys(("HEAD", "SKULL", "FACE", "JAW", "NECK"), ("head",)),
    **dict.fromkeys(("SPINE", "CSPINE", "TSPINE", "LSPINE"), ("spine",)),
    **dict.fromkeys(("ABDOMEN", "BREAST"), ("trunk",)),
}
#: A body part agrees with the prediction when one of its regions has at least this probability.
BODY_PART_AGREEMENT = 0.5


def body_part_warning(body_part: str | None, region_probs: Mapping[str, float]) -> str | None:
    """A warning when the DICOM Body Part Examined clearly disagrees with the predicted region.

    None when there is nothing to compare (no body part, no region head, a term not in
    :data:`BODY_PART_REGIONS`) or when they agree: the predicted (most likely) region is
    one of the body part's regions, or one of those has probability >=
    :data:`BODY_PART_AGREEMENT`.
    """
    if not body_part or not region_probs:
        return None
    regions = BODY_PART_REGIONS.get(body_part.upper().replace(" ", "").replace("_", ""))
    if regions is None:
        return None
    predicted = max(region_probs, key=region_probs.__getitem__)
    known = [r for r in regions if r in region_probs]
    if not known:
        return (
            f"DICOM Body Part Examined {body_part} is not a body region this model was trained on "
            f"({', '.join(region_probs)}); check the image (the prediction is unchanged)"
        )
    if predicted in known or max(region_probs[r] for r in known) >= BODY_PART_AGREEMENT:
        return None
    return (
        f"DICOM Body Part Examined {body_part} ({'/'.join(known)}) disagrees with the predicted body "
        f"region {predicted} ({shown_probability(region_probs[predicted])}); check that the header and "
        "the image belong together (the prediction is unchanged)"
    )


@dataclass(frozen=True)
class ImageStatistics:
    """How the pixels vary, in five numbers that separate radiographs from other images."""

    grey_levels: int  # occupied bins (>= 0.05 % of pixels) of a 64-bin histogram: few = posterised/binary
    neighbour_correlation: float  # of horizontally adjacent pixels at full resolution: low = noise/text
    edge_fraction: float  # pixels with gradient > 0.02 (256 px image): ~0 = smooth ramp, high = texture
    fine_detail: float  # mean |Laplacian| / std (256 px image): high = fine detail for its contrast
    # the grey levels' spread along each row, and along each column, over their spread in all (256 px
    # image), the smaller of the two: ~0 = stripes, every row (or column) one grey level
    cross_variation: float = 1.0

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def image_statistics(pixels: np.ndarray) -> ImageStatistics:
    """:class:`ImageStatistics` of a float H x W image in [0, 1] (about 1-2 ms).

    Pixel arithmetic is float32, and so are the correlation's dot products (plenty
    for a correlation); the other sums are float64. This runs once per prediction,
    so it is kept to a few passes over small arrays.
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    small = Image.fromarray(pixels).resize((STATS_SIDE, STATS_SIDE), Image.BOX)
    a = np.asarray(small, dtype=np.float32)
    bins = np.bincount(np.clip((a * 64).astype(np.intp), 0, 63).ravel(), minlength=64) / a.size
    gy, gx = np.gradient(a)
    edges = float((gx * gx + gy * gy > EDGE_GRADIENT**2).mean())
    lap = np.abs(4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:])
    spread = a.std(dtype=np.float64) + 1e-6
    fine = float(lap.mean(dtype=np.float64) / spread)
    along = min(a.std(axis=1, dtype=np.float64).mean(), a.std(axis=0, dtype=np.float64).mean())
    h, w = pixels.shape
    top, left = max(0, (h - CORRELATION_CROP) // 2), max(0, (w - CORRELATION_CROP) // 2)
    # every other row of the crop is plenty for a correlation, and halves its cost
    crop = pixels[top : top + CORRELATION_CROP : 2, left : left + CORRELATION_CROP]
    # centred in float32 (a float64 mean would turn both copies into float64 arrays)
    x0 = crop[:, :-1] - np.float32(crop[:, :-1].mean(dtype=np.float64))
    x1 = crop[:, 1:] - np.float32(crop[:, 1:].mean(dtype=np.float64))
    s00, s11, s01 = (float(np.einsum("ij,ij->", p, q)) for p, q in ((x0, x0), (x1, x1), (x0, x1)))
    flat = x0.size < 2 or s00 < 1e-12 * x0.size or s11 < 1e-12 * x0.size  # constant rows: no noise
    corr = 1.0 if flat else s01 / float(np.sqrt(s00 * s11))
    return ImageStatistics(int((bins >= 0.0005).sum()), corr, edges, fine, float(along / spread))


def _outside(stats: ImageStatistics, limits: Mapping[str, Sequence[float | None]]) -> list[str]:
    """Human descriptions of the statistics outside their limits."""
    out = []
    values = asdict(stats)
    for name, (low, high) in limits.items():
        value = values.get(name)
        if value is None:
            continue
        if low is not None and value < low:
            out.append(f"{name} {value:.3g} < {low:g}")
        elif high is not None and value > high:
            out.append(f"{name} {value:.3g} > {high:g}")
    return out


@dataclass(frozen=True)
class InputAssessment:
    reliable: bool
    distance: float | None
    warnings: tuple[str, ...]
    signals: tuple[
        str, ...
    ] = ()  # which fired: truncated, colour, compressed, blank, image_statistics, feature_distance, region
    statistics: ImageStatistics | None = None


def embedding_distance(embedding: np.ndarray, ood: dict[str, Any]) -> float:
    """Root-mean-square z-score of the embedding against the training statistics."""
    mean = np.asarray(ood["mean"], dtype=np.float64)
    std = np.asarray(ood["std"], dtype=np.float64)
    z = (np.asarray(embedding, dtype=np.float64) - mean) / std
    return float(np.sqrt(np.mean(z * z)))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """A float array as JSON-friendly float16 base64 (bundle.json stays one file)."""
    half = np.ascontiguousarray(a, dtype="<f2")
    return {
        "encoding": "float16-base64",
        "shape": list(half.shape),
        "data": b64encode(half.tobytes()).decode(),
    }


@lru_cache(maxsize=8)
def _decode(data: str, shape: tuple[int, ...], dtype: type[np.floating]) -> np.ndarray:
    a = np.frombuffer(b64decode(data), dtype="<f2").astype(dtype).reshape(shape)
    a.setflags(write=False)
    return a


def decode_array(record: Mapping[str, Any], dtype: type[np.floating] = np.float64) -> np.ndarray:
    if record.get("encoding") != "float16-base64":
        raise ValueError(f"unknown array encoding {record.get('encoding')!r}")
    return _decode(record["data"], tuple(int(n) for n in record["shape"]), dtype)


def prototype_distance(embedding: np.ndarray, ood: Mapping[str, Any]) -> float:
    """1 - cosine similarity of the embedding to its nearest training prototype (0: identical direction)."""
    prototypes = decode_array(ood["prototypes"])
    # einsum, not @: a BLAS call here wakes BLAS worker threads that then spin against
    # ONNX Runtime's own threads and slow the next image down (measured: 2x on 2 cores)
    similarity = np.einsum("kd,d->k", prototypes, _unit(np.asarray(embedding, dtype=np.float64)))
    return float(1.0 - similarity.max())


def subspace_residual(embedding: np.ndarray, ood: Mapping[str, Any]) -> float:
    """RMS of the embedding's part outside the training embeddings' principal subspace."""
    mean = decode_array(ood["subspace_mean"], np.float32)
    components = decode_array(ood["subspace_components"], np.float32)  # (k, d), orthonormal rows
    # float32 like the embedding itself (the float16-stored statistics are exact in it);
    # einsum, not @ (see prototype_distance)
    x = np.asarray(embedding, dtype=np.float32) - mean
    residual = x - np.einsum("k,kd->d", np.einsum("kd,d->k", components, x), components)
    return float(np.sqrt(np.mean(residual * residual, dtype=np.float64)))


def _subspace(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and principal directions keeping SUBSPACE_VARIANCE of the training variance."""
    x = np.asarray(train, dtype=np.float64)
    mean = x.mean(axis=0)
    _, singular, directions = np.linalg.svd(x - mean, full_matrices=False)
    share = np.cumsum(singular**2) / max(float((singular**2).sum()), 1e-12)
    k = int(np.searchsorted(share, SUBSPACE_VARIANCE)) + 1
    k = max(1, min(k, MAX_SUBSPACE, len(x) - 1))
    return mean, directions[:k]


def _subspace_record(train: np.ndarray) -> dict[str, Any]:
    mean, directions = _subspace(train)
    return {"subspace_mean": encode_array(mean), "subspace_components": encode_array(directions)}


def _residuals(embeddings: np.ndarray, record: Mapping[str, Any]) -> np.ndarray:
    return np.array([subspace_residual(e, record) for e in embeddings])


def _held_out_residuals(train: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Residuals of training images against subspaces fitted without them (k-fold cross-fitting)."""
    if len(train) < 2 * folds:
        return np.empty(0)
    parts = np.array_split(np.random.default_rng(seed).permutation(len(train)), folds)
    out = []
    for k, part in enumerate(parts):
        rest = np.concatenate([p for j, p in enumerate(parts) if j != k])
        out.append(_residuals(train[part], _subspace_record(train[rest])))
    return np.concatenate(out)


def fit_ood(
    train_embeddings: np.ndarray,
    val_embeddings: np.ndarray,
    quantile: float = 0.995,
    residual_quantile: float = 1.0 - FALSE_ALARM_TARGET / 2,
) -> dict[str, Any]:
    """Feature-space statistics of the training images and thresholds from held-out images.

    ``threshold``: 1.1 x the ``quantile`` of the validation images' RMS z-distances
    to the training mean/std (the score every fracsight version reads).
    ``subspace_threshold``: for the residual outside the principal subspace of the
    training embeddings (:func:`subspace_residual`), the score used when present.
    Its calibration set is the validation images plus the training images scored
    against subspaces fitted without them (5-fold cross-fitting), so small
    validation sets still give a usable estimate; the threshold is the
    ``residual_quantile`` of it (the validation set's own quantile if higher)
    times 1 + 1/sqrt(n). The default quantile, 1 - 2 %/2, aims at half the
    false-alarm target.
    """
    train_embeddings = np.asarray(train_embeddings, dtype=np.float64)
    mean = train_embeddings.mean(axis=0)
    std = train_embeddings.std(axis=0) + 1e-3
    stats: dict[str, Any] = {"mean": mean.round(5).tolist(), "std": std.round(5).tolist()}
    distances = np.array([embedding_distance(e, stats) for e in val_embeddings])
    stats["threshold"] = float(np.quantile(distances, quantile)) * 1.1
    stats["description"] = (
        f"RMS z-distance of the pooled features to the training images; threshold = 1.1 x the "
        f"{quantile:.1%} quantile of validation distances"
    )
    if len(train_embeddings) >= 2:
        stats.update(_subspace_record(train_embeddings))
        own = _residuals(val_embeddings, stats)
        pooled = np.concatenate([own, _held_out_residuals(train_embeddings)])
        margin = 1.0 + 1.0 / np.sqrt(len(pooled))  # the quantile's estimation error shrinks with n
        q = residual_quantile
        stats["subspace_threshold"] = float(max(np.quantile(own, q), np.quantile(pooled, q)) * margin)
        k = stats["subspace_components"]["shape"][0]
        stats["subspace_description"] = (
            f"RMS of the pooled features outside the {k} principal directions that hold "
            f"{SUBSPACE_VARIANCE:.0%} of the training images' variance; threshold = the {q:.1%} quantile "
            f"of {len(pooled)} calibration residuals (validation images, and training images against "
            "subspaces fitted without them; the validation quantile if higher) x (1 + 1/sqrt(n)) = "
            f"x {margin:.3f}. Used instead of the RMS z-distance when present."
        )
    return stats


def feature_distance(embedding: np.ndarray, ood: Mapping[str, Any]) -> tuple[float, float]:
    """(distance, threshold) of the feature-space score this bundle carries.

    The subspace residual; in bundles exported before it, the nearest-prototype
    distance; in the oldest, the RMS z-distance.
    """
    if "subspace_components" in ood and "subspace_threshold" in ood:
        return subspace_residual(embedding, ood), float(ood["subspace_threshold"])
    if "prototypes" in ood and "prototype_threshold" in ood:
        return prototype_distance(embedding, ood), float(ood["prototype_threshold"])
    return embedding_distance(embedding, dict(ood)), float(ood["threshold"])


def check_feature_record(ood: Mapping[str, Any], dimension: int) -> None:
    """Refuse, when a bundle is loaded, an ``ood`` record its feature-space score cannot use on an
    embedding of ``dimension`` values: arrays that do not decode or fit it, or NaN in them (which
    made every distance NaN and so the guard silently never fire). Scored once on a probe embedding;
    the decoded arrays stay cached for the predictions."""
    if not ood:
        return
    try:
        distance, threshold = feature_distance(np.ones(dimension, dtype=np.float32), ood)
    except Exception as e:  # KeyError, ValueError, TypeError, binascii.Error: all mean the same here
        text = f"{type(e).__name__}: {e}"
        raise BundleError(f"bundle.json's ood record cannot be used: {text[:200]}") from None
    if not (math.isfinite(distance) and math.isfinite(threshold)):
        raise BundleError("bundle.json's ood record gives no finite distance: NaN or infinite values in it")


NOT_RELIABLE = "the result is not reliable"


def pixel_statistics(pixels: np.ndarray) -> ImageStatistics | None:
    """The statistics of an image's pixels, or None for a nearly uniform (blank) image.

    Needs only the pixels, so the Predictor runs it beside letterboxing; its
    result goes to :func:`assess_input`.
    """
    return None if is_blank(pixels) else image_statistics(pixels)


def is_blank(pixels: np.ndarray) -> bool:
    """Whether an image is nearly uniform: no anatomy, nothing to assess (nor to turn upright)."""
    # every fourth row is plenty to tell a uniform image from one with content
    return float(pixels[::4].std()) < MIN_PIXEL_STD


def assess_input(
    radiograph: Radiograph,
    statistics: ImageStatistics | None,
    embedding: np.ndarray,
    region_probs: dict[str, float],
    spec: BundleSpec,
) -> InputAssessment:
    """Judge whether a prediction on this input can be relied on (see the module docstring).

    ``statistics``: :func:`pixel_statistics` of the radiograph's pixels (None: blank).
    """
    warnings: list[str] = []
    signals: list[str] = []
    h, w = radiograph.full_size
    if min(h, w) < UNRELIABLE_SIDE:
        warnings.append(
            f"very low resolution: {w}x{h} pixels (a thumbnail?): the model reads images this small "
            f"much worse; {NOT_RELIABLE}"
        )
        signals.append("thumbnail")
    elif radiograph.metadata.reduced_from is not None and min(radiograph.pixels.shape[:2]) < spec.input_size:
        # read_image(..., reduce_to=) below the model's input size: a thumbnail of a large file
        rh, rw = radiograph.pixels.shape[:2]
        warnings.append(
            f"read reduced to {rw}x{rh} pixels, below the model's input size of {spec.input_size} "
            f"(reduce_to): the model reads images with this little detail much worse; {NOT_RELIABLE}"
        )
        signals.append("thumbnail")
    elif min(h, w) < LOW_RESOLUTION_SIDE:
        warnings.append(f"low resolution: {w}x{h} pixels; small fractures may not be visible")
    if radiograph.metadata.incomplete:
        warnings.append(f"the file is cut short and part of the image is missing from it; {NOT_RELIABLE}")
        signals.append("truncated")
    if any(note.startswith(COLOUR_WARNING) for note in radiograph.metadata.warnings):
        warnings.append(
            f"a colour image: radiographs are grayscale, so this is probably not one; {NOT_RELIABLE}"
        )
        signals.append("colour")
    if any(note.startswith(COMPRESSION_WARNING) for note in radiograph.metadata.warnings):
        warnings.append(
            f"its compression blocks can read as findings: the model was fitted on JPEGs of quality 89 "
            f"and above; {NOT_RELIABLE}"
        )
        signals.append("compressed")
    if statistics is None:
        warnings.append("the image is nearly uniform (blank?): there is nothing to assess")
        signals.append("blank")
    else:
        limits = (spec.ood or {}).get("image_limits") or IMAGE_LIMITS
        outside = _outside(statistics, limits)
        if outside:
            warnings.append(
                f"image statistics outside the range of radiographs ({'; '.join(outside)}): "
                f"probably not a radiograph; {NOT_RELIABLE}"
            )
            signals.append("image_statistics")
    distance = None
    if spec.ood:
        distance, threshold = feature_distance(embedding, spec.ood)
        if distance > threshold:
            warnings.append(
                "the image does not look like the musculoskeletal radiographs the model was trained on; "
                f"{NOT_RELIABLE}"
            )
            signals.append("feature_distance")
    if region_probs and max(region_probs.values()) < MIN_REGION_PROBABILITY:
        known = ", ".join(region_probs)
        warnings.append(f"body region outside the model's training data ({known}); {NOT_RELIABLE}")
        signals.append("region")
    disagreement = body_part_warning(radiograph.metadata.body_part, region_probs)
    if disagreement is not None:  # a warning only: no signal, so `reliable` is unchanged
        warnings.append(disagreement)
    return InputAssessment(
        reliable=not signals,
        distance=distance,
        warnings=tuple(warnings),
        signals=tuple(signals),
        statistics=statistics,
    )
