"""The model bundle record (``bundle.json``): everything needed to use a model correctly.

A bundle is a folder (or a .zip of one) holding ``model.onnx``, ``bundle.json``
and ``card.md``. Training writes it; the Predictor, the API and the app read it
through :func:`load_bundle_spec`. Input size, head classes, temperature and
thresholds live here and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import unicodedata
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fracsight._terminal import shell_command
from fracsight.errors import BundleError, ChecksumMismatchError

__all__ = [
    "BUNDLE_FORMAT",
    "PRECISIONS",
    "BundleSpec",
    "ClassOperatingPoint",
    "HeadSpec",
    "OperatingPoint",
    "bundle_identity",
    "load_bundle_spec",
    "read_card",
    "read_checked_onnx",
    "sha256_file",
    "write_bundle_spec",
]

BUNDLE_FORMAT = 1
HEAD_KINDS = ("binary", "multilabel", "multiclass")
PRECISIONS = ("float32", "int8")  # of model.onnx's weights and activations (int8: fracsight.quantize)
MAX_SPEC_BYTES = 64 << 20  # the largest bundle.json read (the packaged ones: about 260 kB)
MAX_CARD_BYTES = 1 << 20  # the most of card.md shown
MAX_ONNX_BYTES = 2 << 30  # protobuf's own limit: onnxruntime cannot load a larger model.onnx
# a threshold chosen just above the highest validation probability (evaluation.thresholds) may
# exceed 1 by one step: "never suspected" on that data
_MAX_THRESHOLD = math.nextafter(1.0, 2.0)
# the numbers of bundle.json's settings that each prediction reads; a NaN there made every comparison
# false (a NaN threshold: "no fracture detected" at probability 0.99; a NaN OOD threshold: the guard
# off), a string one raised a TypeError on every image
_LOCALIZATION_NUMBERS = {"box_threshold": 1.0, "relative": 1.0, "min_box_score": 1.0, "nms_iou": 1.0}
_LOCALIZATION_COUNTS = ("stride", "max_boxes")
_ORIENTATION_NUMBERS = ("min_probability", "check_below")
_OOD_THRESHOLDS = ("threshold", "prototype_threshold", "subspace_threshold")
_CARD_NUMBERS = ("ema_decay", "feature_cache_variants", "unfreeze_from", "mask_weight")


def _number(value: Any, what: str, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` if it is a real number (not a bool) in ``low``..``high``; else a BundleError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
        bounds = (
            f" in {low:g}..{high:g}" if math.isfinite(high) else f" >= {low:g}" if math.isfinite(low) else ""
        )
        raise BundleError(f"{what} must be a finite number{bounds}, got {_shown(value)}")
    if not math.isfinite(value):
        raise BundleError(f"{what} must be a finite number, got {_shown(value)}")
    return float(value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_name(value: Any, what: str) -> str:
    """``value`` if it is a string without control characters: names reach terminals, logs, HTTP
    headers and Prometheus labels, where a newline or an escape sequence forges or garbles a line."""
    if not isinstance(value, str):
        raise BundleError(f"{what} must be a string, got {_shown(value)}")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise BundleError(f"{what} must not hold control characters (a newline, an escape): {_shown(value)}")
    return value


def _fraction(value: Any, what: str) -> None:
    """A measured share (sensitivity, accuracy, ...): absent, or a number in 0..1."""
    if value is not None:
        _number(value, what, 0.0, 1.0)


def _settings(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _check_settings(spec: BundleSpec) -> None:
    """The per-prediction settings of ``spec`` (localization, orientation, OOD): each number there
    that a prediction compares with is a real, finite number in its range."""
    loc = _settings(spec.localization, "localization")
    for key, high in _LOCALIZATION_NUMBERS.items():
        if key in loc:
            _number(loc[key], f"localization.{key}", 0.0, high)
    if loc.get("relative") == 0:  # a share of the map's peak: 0 boxed nothing, and raised on each image
        raise BundleError("localization.relative must be in (0, 1], got 0")
    for key in _LOCALIZATION_COUNTS:
        if key in loc:
            _number(loc[key], f"localization.{key}", 1 if key == "stride" else 0, 4096)
    if loc.get("boxes") == "detector" and not {"stride", "min_box_score"} <= loc.keys():
        raise BundleError("localization: boxes from the detector need its stride and min_box_score")
    orientation = _settings(spec.orientation, "orientation")
    for key in _ORIENTATION_NUMBERS:
        if key in orientation:
            _number(orientation[key], f"orientation.{key}", 0.0, 1.0)
    ood = _settings(spec.ood, "ood")
    for key in _OOD_THRESHOLDS:
        if key in ood:
            _number(ood[key], f"ood.{key}", 0.0)
    limits = ood.get("image_limits")
    for name, pair in _settings(limits or {}, "ood.image_limits").items():
        if not isinstance(pair, list) or len(pair) != 2:
            raise BundleError(f"ood.image_limits.{name} must be [low, high] (null for no limit)")
        for bound in pair:
            if bound is not None:
                _number(bound, f"ood.image_limits.{name}")
    _check_training(_settings(spec.training, "training"))
    for key, record in _settings(spec.metrics, "metrics").items():  # the card reads each as a record
        _settings(record, f"metrics.{key}")


def _check_training(training: dict[str, Any]) -> None:
    """The parts of ``training`` that evaluate, quantize and detector train read: a hand-edited
    ``config`` of another type, or a seed that is no integer, raised a traceback in each."""
    config = _settings(training.get("config", {}), "training.config")
    seed = config.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BundleError(f"training.config.seed must be an integer, got {_shown(seed)}")
    # the card compares these with numbers: a string raised a traceback once quantize had done its work
    for key in _CARD_NUMBERS:
        if key in config:
            _number(config[key], f"training.config.{key}")
    _settings(config.get("augment", {}), "training.config.augment")
    commands = training.get("commands", [])  # a string was spread one character a line in the card
    if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
        raise BundleError(f"training.commands must be a list of command lines, got {_shown(commands)}")
    for place, record in (
        ("training", training),
        ("training.calibration_data", training.get("calibration_data")),
    ):
        if record is None:
            continue
        for key in ("data", "layout"):
            if key in _settings(record, place) and not isinstance(record[key], str):
                raise BundleError(f"{place}.{key} must be a string, got {_shown(record[key])}")


@dataclass(frozen=True)
class HeadSpec:
    """One output head. ``binary`` heads have one logit; ``classes`` names them in order."""

    name: str
    kind: str
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():  # a list: unhashable, everywhere
            raise BundleError(f"a head's name must be a string, got {_shown(self.name)}")
        if self.kind not in HEAD_KINDS:
            raise BundleError(f"head {self.name!r}: kind must be one of {HEAD_KINDS}, got {self.kind!r}")
        if not self.classes:
            raise BundleError(f"head {self.name!r} has no classes")
        if not all(isinstance(c, str) and c.strip() for c in self.classes):
            raise BundleError(f"head {self.name!r}: classes must be names (strings, not empty)")
        if len(set(self.classes)) != len(self.classes):  # a name twice: one output's probability lost
            raise BundleError(f"head {self.name!r} names a class twice: {list(self.classes)}")
        if self.kind == "binary" and len(self.classes) > 2:  # the last is the positive label
            raise BundleError(
                f"head {self.name!r} is binary: its classes name the negative and the positive "
                f"label (two names at most), got {len(self.classes)}"
            )

    @property
    def num_outputs(self) -> int:
        return 1 if self.kind == "binary" else len(self.classes)


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold on the calibrated fracture probability, and where it came from."""

    name: str
    threshold: float
    description: str
    sensitivity: float | None = None  # measured on the data the threshold was chosen on
    specificity: float | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "an operating point's name")
        _number(self.threshold, f"operating point {self.name!r}: threshold", 0.0, _MAX_THRESHOLD)
        if not isinstance(self.description, str):
            raise BundleError(f"operating point {self.name!r}: description must be a string")
        _fraction(self.sensitivity, f"operating point {self.name!r}: sensitivity")
        _fraction(self.specificity, f"operating point {self.name!r}: specificity")


@dataclass(frozen=True)
class ClassOperatingPoint:
    """When an N-class head names its top class: only at or above ``min_probability``.

    Below it the class is reported as uncertain (the most likely class is still shown
    as such). ``accuracy`` and ``coverage`` were measured on the data it was chosen on:
    the accuracy of the stated classes and the share of images that got one.
    """

    min_probability: float
    description: str
    accuracy: float | None = None
    coverage: float | None = None

    def __post_init__(self) -> None:
        _number(self.min_probability, "class min_probability", 0.0, 1.0)
        if not isinstance(self.description, str):
            raise BundleError("class_operating_point: description must be a string")
        _fraction(self.accuracy, "class_operating_point: accuracy")
        _fraction(self.coverage, "class_operating_point: coverage")


@dataclass(frozen=True)
class BundleSpec:
    name: str
    version: str
    architecture: str
    input_size: int
    heads: tuple[HeadSpec, ...]
    operating_points: tuple[OperatingPoint, ...]
    default_operating_point: str
    temperature: float = 1.0
    calibration_bias: float = 0.0  # probability = sigmoid(logit / temperature + calibration_bias)
    onnx_sha256: str = ""
    feature_channels: int = 0
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    ood: dict[str, Any] = field(default_factory=dict)
    localization: dict[str, Any] = field(default_factory=dict)  # box_threshold, min_box_score, boxes
    class_operating_point: ClassOperatingPoint | None = None  # for a bundle with a class head
    orientation: dict[str, Any] = field(default_factory=dict)  # min_probability, with an orientation head
    precision: str = "float32"  # bundles written before INT8 existed are float32
    format: int = BUNDLE_FORMAT

    def __post_init__(self) -> None:
        for what in ("name", "version", "architecture", "onnx_sha256"):
            check_name(getattr(self, what), what)
        if not self.heads:  # every image got "no result", said reliable, and the command exited 0
            raise BundleError("bundle.json lists no heads: the bundle would predict nothing")
        size = self.input_size
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or not 32 <= size <= 2048:
            raise BundleError(f"input_size must be a whole number of pixels in 32..2048, got {_shown(size)}")
        names = [op.name for op in self.operating_points]
        if self.operating_points and self.default_operating_point not in names:
            raise BundleError(
                f"default operating point {self.default_operating_point!r} is not one of {names}"
            )
        if not _number(self.temperature, "temperature") > 0:
            raise BundleError("temperature must be positive")
        _number(self.calibration_bias, "calibration_bias")
        if self.precision not in PRECISIONS:
            raise BundleError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        _check_settings(self)

    @property
    def provenance(self) -> str:
        """Name, version and the start of the ONNX checksum: what a derived bundle records it came from."""
        return f"{self.name} v{self.version} (sha256 {self.onnx_sha256[:12]})"

    def head(self, name: str) -> HeadSpec | None:
        """The head called ``name`` (``fracture``, ``region``, ``class``), or None if the bundle lacks it."""
        return next((h for h in self.heads if h.name == name), None)

    def operating_point(self, name: str | None = None) -> OperatingPoint:
        # "" is a name asked for (an unset variable in a script, say), not the default
        name = self.default_operating_point if name is None else name
        for op in self.operating_points:
            if op.name == name:
                return op
        if not self.operating_points:
            why = (  # a damaged record said "has no fracture head" of a fracture head
                f"the fracture head of {self.name} has none: its bundle.json lists no operating point "
                "(every export writes some)"
                if self.head("fracture")
                else f"{self.name} has no fracture head, so it has no operating points"
            )
            raise BundleError(f"operating point {name!r} was asked for, but {why}")
        raise BundleError(
            f"unknown operating point {name!r}; known: {[o.name for o in self.operating_points]}"
        )

    def chosen_operating_point(self, name: str | None = None) -> OperatingPoint | None:
        """What a Predictor decides with: ``name``, else the default of a fracture head; None for a
        bundle without one when nothing was asked for (asking one anyway is an error, not ignored)."""
        if self.head("fracture") is None and name is None:
            return None
        return self.operating_point(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BundleSpec:
        try:
            found = d.get("format")
            if isinstance(found, int) and not isinstance(found, bool) and found > BUNDLE_FORMAT:
                raise BundleError(
                    f"bundle format {found} is newer than this fracsight reads ({BUNDLE_FORMAT}): "
                    "upgrade fracsight (pip install -U fracsight)"
                )
            if found != BUNDLE_FORMAT:
                raise BundleError(f"bundle format {found!r} is not supported (expected {BUNDLE_FORMAT})")
            kw = dict(_checked_fields(cls, d, ""))
            if isinstance(kw.get("onnx_sha256"), str):  # capitals (PowerShell's Get-FileHash): the same
                kw["onnx_sha256"] = kw["onnx_sha256"].lower()  # digest, in provenance, UIDs and batch too
            if not isinstance(d["heads"], list) or not isinstance(d["operating_points"], list):
                # a dict was taken as the list of its keys, {} as no heads
                raise BundleError("bundle.json is malformed: heads and operating_points must be lists")
            heads = [_checked_fields(HeadSpec, h, f"heads[{i}]") for i, h in enumerate(d["heads"])]
            if not all(isinstance(h["classes"], list) for h in heads):  # "ab" is not ("a", "b")
                raise BundleError("bundle.json is malformed: each head's classes must be a list")
            kw["heads"] = tuple(HeadSpec(**{**h, "classes": tuple(h["classes"])}) for h in heads)
            kw["operating_points"] = tuple(
                OperatingPoint(**_checked_fields(OperatingPoint, op, f"operating_points[{i}]"))
                for i, op in enumerate(d["operating_points"])
            )
            if d.get("class_operating_point") is not None:
                kw["class_operating_point"] = ClassOperatingPoint(
                    **_checked_fields(
                        ClassOperatingPoint, d["class_operating_point"], "class_operating_point"
                    )
                )
            return cls(**kw)
        except BundleError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BundleError(f"bundle.json is malformed: {e}") from e


def _checked_fields(kind: type, entry: Any, where: str) -> dict[str, Any]:
    """``entry`` (an object of ``bundle.json``, ``where`` in it) with every field ``kind`` needs and no
    other: fields are added within a format (orientation, precision, an operating point's
    sensitivity), so one this fracsight does not know means a newer fracsight wrote the bundle;
    until 2026-12-06 either was "bundle.json is malformed: ... unexpected keyword argument"."""
    at = f"{where}." if where else ""
    if not isinstance(entry, dict):
        raise BundleError(f"bundle.json is malformed: {where} must be an object")
    names = [f.name for f in fields(kind)]
    unknown = sorted(str(k) for k in entry if k not in names)
    if unknown:
        raise BundleError(
            f"bundle.json has fields this fracsight does not know ({', '.join(at + k for k in unknown)}): "
            "it was written by a newer fracsight; upgrade fracsight (pip install -U fracsight)"
        )
    needed = [f.name for f in fields(kind) if f.default is MISSING and f.default_factory is MISSING]
    missing = [at + name for name in needed if name not in entry]
    if missing:
        raise BundleError(f"bundle.json is malformed: it lacks {', '.join(missing)}")
    return entry


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundle_identity(folder: Path) -> str:
    """What tells two bundles apart by content, wherever they lie (a copy, an unpacked .zip): the
    sha256 of ``bundle.json``, which holds ``model.onnx``'s own sha256 and every setting."""
    return sha256_file(Path(folder) / "bundle.json")


def load_bundle_spec(folder: Path) -> BundleSpec:
    path = Path(folder) / "bundle.json"
    if not path.is_file():
        if (Path(folder) / "best.pt").is_file() and (Path(folder) / "config.yaml").is_file():  # a run
            raise BundleError(
                f"{folder} is a training run, not a model bundle: "
                f"`{shell_command('fracsight', 'export', folder, 'OUT')}` makes one"
            )
        raise BundleError(f"{folder} is not a model bundle: bundle.json is missing")
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise BundleError(f"{path} is larger than {MAX_SPEC_BYTES >> 20} MB: not a bundle record")
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: as Notepad saves it
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        # ValueError: JSONDecodeError, and integers longer than Python converts; RecursionError: nesting
        raise BundleError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise BundleError(f"{path} does not hold a JSON object")
    return BundleSpec.from_dict(data)


#: onnxruntime's setting for the folder ONNX external data is read from: fracsight gives it
#: ``os.devnull``, a file and never a folder, under which nothing can be found
EXTERNAL_DATA_FOLDER = "session.model_external_initializers_file_folder_path"


def read_checked_onnx(folder: Path, spec: BundleSpec) -> bytes:
    """The bytes of the bundle's ``model.onnx``, checked against the sha256 in ``bundle.json``, and
    refused when the graph keeps weights outside itself (ONNX external data, which the checksum
    would not cover: read unchecked by onnxruntime, or copied into a new bundle by onnx.load)."""
    onnx_path = Path(folder) / "model.onnx"
    if not onnx_path.is_file():
        raise BundleError(f"{folder} has no model.onnx")
    if onnx_path.stat().st_size > MAX_ONNX_BYTES:  # not read into memory only to be refused
        raise BundleError(f"model.onnx in {folder} is larger than {MAX_ONNX_BYTES >> 30} GB: not a model")
    model_bytes = onnx_path.read_bytes()
    digest = hashlib.sha256(model_bytes).hexdigest()
    if not spec.onnx_sha256:
        raise BundleError(
            f"bundle.json in {folder} has no onnx_sha256: model.onnx cannot be checked; refusing to load it"
        )
    if digest != spec.onnx_sha256:
        raise ChecksumMismatchError(
            f"model.onnx in {folder} does not match bundle.json "
            f"(sha256 {digest[:12]}... != {spec.onnx_sha256[:12]}...): refusing to load it"
        )
    _refuse_external_data(model_bytes, onnx_path)
    return model_bytes


def _refuse_external_data(model_bytes: bytes, onnx_path: Path) -> None:
    # every external-data entry names its file under the key "location": without those bytes there
    # is none (the packaged bundles), and nothing is loaded to make sure
    if b"location" not in model_bytes:
        return
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry(EXTERNAL_DATA_FOLDER, os.devnull)
    try:
        ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types, worded per release
        said = str(e)
        if "external data" in said.lower() or os.devnull in said:  # looked for where nothing is
            raise BundleError(
                f"{onnx_path} keeps weights outside itself (ONNX external data), which the checksum in "
                "bundle.json does not cover: refused"
            ) from None
        raise BundleError(f"onnxruntime cannot load {onnx_path}: {said}") from e


def read_card(folder: Path) -> str | None:
    """The bundle's ``card.md`` for display, or None when it has none that may be shown.

    Only a regular file inside the bundle folder is read, and only its first :data:`MAX_CARD_BYTES`:
    a bundle from elsewhere must not make a server show its own files (``card.md`` linked to
    ``/proc/self/environ`` would answer the API's tokens to ``GET /v1/model``).
    """
    root = Path(folder).resolve()
    path = Path(folder) / "card.md"
    try:
        real = path.resolve(strict=True)
        if not real.is_relative_to(root) or not real.is_file():
            return None
        with open(real, "rb") as f:
            data = f.read(MAX_CARD_BYTES)
    except (OSError, RuntimeError):  # missing, unreadable, a link loop
        return None
    return data.decode("utf-8", errors="replace")


def write_bundle_spec(spec: BundleSpec, folder: Path) -> Path:
    """Write ``bundle.json``; a NaN or infinite value raises :class:`BundleError` (one line, exit
    2; a ValueError traceback before) rather than being written as ``NaN``/``Infinity``, which is
    not JSON (other readers refuse the file)."""
    path = Path(folder) / "bundle.json"
    try:
        text = json.dumps(spec.to_dict(), indent=2, allow_nan=False)
    except ValueError:
        raise BundleError(
            f"{spec.name} v{spec.version}: a figure of the bundle is not a finite number (NaN or infinite), "
            "which bundle.json cannot hold as JSON: the bundle is not written"
        ) from None
    path.write_text(text + "\n", encoding="utf-8")
    return path
