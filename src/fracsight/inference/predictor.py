"""The Predictor: read -> preprocess -> infer -> postprocess -> explain. CLI, API and app call only this.

>>> from fracsight.inference import Predictor
>>> predictor = Predictor()                       # the packaged default model
>>> result = predictor.predict("wrist.png")       # doctest: +SKIP
>>> result.decision, round(result.fracture_probability, 3)  # doctest: +SKIP
('no fracture detected', 0.041)
"""

from __future__ import annotations

import dataclasses
import io
import numbers
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from fracsight.bundle import BundleSpec, OperatingPoint
from fracsight.errors import (
    BundleError,
    FracsightError,
    ImageReadError,
    ImageTooSmallError,
    InvalidPixelsError,
    NoPixelDataError,
)
from fracsight.evaluation.calibration import apply_temperature
from fracsight.explain import (
    DetectedBox,
    boxes_from_heatmap,
    combine_maps,
    heatmap_to_original,
    sigmoid,
    softmax,
    upsample_to_input,
)
from fracsight.explain.detections import boxes_from_detector
from fracsight.inference.onnx_model import OnnxModel
from fracsight.inference.ood import (
    ImageStatistics,
    assess_input,
    check_feature_record,
    is_blank,
    pixel_statistics,
)
from fracsight.inference.orientation import reads_agree_on_turn, turn_prediction, turn_radiograph
from fracsight.inference.results import (
    CLASS_ACTIVATION,
    FRACTURE,
    FRACTURE_MAP,
    NO_LOCALIZATION,
    ClassResult,
    FailedPrediction,
    Prediction,
    StudyPrediction,
    finding_of,
)
from fracsight.inference.store import packaged_bundles, resolve_bundle
from fracsight.io import MIN_SIDE, Radiograph, file_name_only, read_image, text_cell
from fracsight.preprocessing import Letterbox, letterbox_radiograph, read_for_model

__all__ = ["Predictor"]

Source = str | os.PathLike | bytes
DETECTOR_OUTPUTS = frozenset({"detect_centre", "detect_size", "detect_offset"})  # boxes "detector" reads
BOX_GRID = 96  # boxes are traced on the localization map upsampled to this many cells
MAX_THREADS = 256  # the most ONNX Runtime threads a Predictor takes (as the API's inference_threads)
_READABLE = (str, os.PathLike, bytes, bytearray, memoryview)  # what read_image reads
_ACCEPTED = "a path, bytes, a binary file, a pydicom dataset, a numpy array, a PIL image or a Radiograph"
_FILE_READING = threading.Lock()


def localization_map(mask_logits: np.ndarray, cam: np.ndarray, source: str) -> np.ndarray:
    """The (h, w) map in [0, 1] that heatmaps and boxes come from, as the bundle names it."""
    if source == "mask":
        return sigmoid(mask_logits)
    if source == "cam":
        return sigmoid(cam)
    return combine_maps([sigmoid(mask_logits), sigmoid(cam)])


def fracture_boxes(
    outputs: dict[str, np.ndarray],
    i: int,
    heat_small: np.ndarray,
    geometry: Letterbox,
    localization: dict[str, Any],
) -> list[DetectedBox]:
    """Image ``i``'s boxes, in original-image pixels, as the bundle's localization settings say:
    from its detection head (``"boxes": "detector"``), else traced on the fracture map
    ``heat_small`` (from :func:`localization_map`)."""
    if localization.get("boxes") == "detector":
        return boxes_from_detector(
            outputs["detect_centre"][i],  # the three of DETECTOR_OUTPUTS
            outputs["detect_size"][i],
            outputs["detect_offset"][i],
            geometry,
            stride=int(localization["stride"]),
            min_score=localization["min_box_score"],
            max_boxes=int(localization.get("max_boxes", 5)),
            nms_iou=localization.get("nms_iou", 0.3),
        )
    return boxes_from_heatmap(
        upsample_to_input(heat_small, BOX_GRID),
        geometry,
        threshold=localization.get("box_threshold", 0.5),
        relative=localization.get("relative", 0.5),
        min_score=localization.get("min_box_score", 0.25),
    )


def _is_file_object(source: Any) -> bool:
    """A binary file (``open(..., "rb")``, ``io.BytesIO``): read for its bytes."""
    readable = callable(getattr(source, "read", None))
    return readable and not isinstance(source, _READABLE) and not _in_memory(source)


def _seekable(source: Any) -> bool:
    try:
        return bool(source.seekable())
    except (AttributeError, OSError, ValueError):  # no seekable(), or closed (its read() says so)
        return False


def _input_name(source: Any) -> str:
    """What a result calls an input given no name: a path's file name, an open file's (results of a
    list of open files were all "upload"), a Radiograph's own name, else ``"upload"`` (bytes, an
    unnamed file object) or ``"array"`` (pixels); never a folder."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "upload"
    # text_cell: a name of bytes that are not UTF-8 made results that no JSON or CSV could hold
    if isinstance(source, (str, os.PathLike)):
        return text_cell(Path(source).name or os.fsdecode(source))  # "." and "/" have no name of their own
    if isinstance(source, Radiograph):
        return source.metadata.name or "array"
    if _is_file_object(source) or _is_dicom_dataset(source):
        # a path for open(path) or dcmread(path); an int (a descriptor), a buffer or none
        own = getattr(source, "filename" if _is_dicom_dataset(source) else "name", None)
        return text_cell(Path(own).name) if isinstance(own, str) and Path(own).name else "upload"
    if not _in_memory(source):
        return f"<{type(source).__name__}>"
    own = getattr(source, "filename", None)  # a PIL image opened from a file: a study of "array"s
    return text_cell(Path(own).name) if isinstance(own, str) and Path(own).name else "array"


def _loaded_class(module: str, name: str) -> type | None:
    """The class ``module.name`` where the module is imported, else None: no object of it can exist
    then, and the check imports nothing. By getattr: a module another thread is importing is in
    sys.modules half built (predict_many reads files on threads: "partially initialized module
    'pydicom' has no attribute 'Dataset'" ended `fracsight predict` of DICOM files)."""
    return getattr(sys.modules.get(module), name, None)


def _is_dicom_dataset(source: Any) -> bool:
    dataset = _loaded_class("pydicom", "Dataset")
    return dataset is not None and isinstance(source, dataset)


def _dataset_bytes(dataset: Any, name: str) -> bytes:
    """A pydicom dataset as its file: read as a file is (MONOCHROME1, rescale, window, the header's
    checks), where ``ds.pixel_array``, the obvious other try, is a MONOCHROME1 image's negative
    (0.16 "no fracture detected", reliable, for a file read 0.85)."""
    import pydicom

    from fracsight.io.dicom_gate import check_dicom_object

    if not any(k in dataset for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        # a report is refused as what it is, as its file is; an image's header read alone
        # (stop_before_pixels=True, specific_tags) was said to be a file cut short before its pixels
        meta = getattr(dataset, "file_meta", None)
        sop = dataset.get("SOPClassUID") or (
            meta.get("MediaStorageSOPClassUID") if meta is not None else None
        )
        check_dicom_object(dataset.get("Modality"), sop, label=f"{name}: ")
        raise NoPixelDataError(
            f"{name}: this pydicom dataset holds no pixel data (read with stop_before_pixels=True?); "
            "read it whole, or pass its file"
        )
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    except Exception as e:  # no file meta and no SOP Class to make it from, a value pydicom cannot write
        raise ImageReadError(
            f"{name}: this pydicom dataset cannot be written as a DICOM file ({_write_failure(e)}); "
            "pass its file or bytes"
        ) from None
    return buffer.getvalue()


def _write_failure(error: Exception) -> str:
    """Why pydicom could not write a dataset, without the value: for an element's value it cannot
    encode, its message names the element with its value (a patient's name, perhaps) and carries
    pydicom's whole traceback."""
    tagged = re.match(r"With tag (\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\))", str(error))
    if tagged:
        return f"{type(error).__name__}: the value of element {tagged[1]} cannot be encoded as its VR says"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")


def _in_memory(source: Any) -> bool:
    """Whether ``source`` is an image in memory (a numpy array or a PIL image), which
    :meth:`Radiograph.from_array` reads, rather than a file."""
    if isinstance(source, np.ndarray):
        return True
    image = _loaded_class("PIL.Image", "Image")
    return image is not None and isinstance(source, image)


def _undecoded_jpeg_bytes(source: Any) -> bytes | None:
    """The file's bytes of a PIL JPEG not yet decoded (``Image.open(f)``), else None. Decoded by
    :meth:`Radiograph.from_array` it was read at full size, where its path is read at the reduced
    scale the model was fitted on: one test image read 0.188 "fracture suspected" as
    ``Image.open(path)`` and 0.160 "no fracture detected" as its path."""
    fp = getattr(source, "fp", None)
    # MPO: a JPEG holding several images (a phone's gain map), its first read as the file's is;
    # another frame chosen with seek() is the user's pixels
    if getattr(source, "format", None) not in ("JPEG", "MPO") or fp is None or source.tell() != 0:
        return None
    if getattr(source, "_im", None) is not None:
        return None
    from fracsight.io.radiograph import _PIL_DECODING

    try:
        with _PIL_DECODING:  # the file Pillow decodes from: no other thread's read between the seeks
            at = fp.tell()
            fp.seek(0)
            data = fp.read()
            fp.seek(at)
    except (OSError, ValueError, AttributeError):  # closed: from_array says so in its own words
        return None
    return bytes(data) or None


def _check_pixels(radiograph: Radiograph) -> None:
    """Refuse a :class:`Radiograph` given to the Predictor whose pixels the model cannot read (NaN
    came out "fracture suspected", reliable, without a warning; an empty one was predicted too):
    one built in Python, or one read and its pixels replaced (``dataclasses.replace``), which a
    check of only the radiographs built by hand let through."""
    if not isinstance(radiograph, Radiograph):  # a path: "'str' object has no attribute 'metadata'"
        raise TypeError(
            f"predict_radiographs takes Radiographs (predictor.read(...)), not {type(radiograph).__name__}; "
            "predict() and predict_many() take paths"
        )
    name = radiograph.metadata.name or "radiograph"
    if min(radiograph.pixels.shape) < MIN_SIDE:
        raise ImageTooSmallError(
            f"{name}: image of {radiograph.width} x {radiograph.height} pixels is too small: each side "
            f"must be at least {MIN_SIDE} pixels"
        )
    lo, hi = float(radiograph.pixels.min()), float(radiograph.pixels.max())
    if not (lo >= 0.0 and hi <= 1.0):  # NaN fails both
        raise InvalidPixelsError(
            f"{name}: pixels must be finite and in [0, 1], got {lo:g} to {hi:g} "
            "(Radiograph.from_array scales 8- and 16-bit arrays)"
        )


def _count(value: Any, argument: str, *, least: int, most: int) -> int:
    """``value`` as the int ``argument`` must be, between ``least`` and ``most``; else a refusal naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy's ints are ints
        raise TypeError(f"{argument} must be an int, not {type(value).__name__} ({value!r})")
    if not least <= value <= most:
        raise ValueError(f"{argument} must be between {least} and {most}, got {value}")
    return int(value)


def _as_name(name: Any, argument: str) -> str | None:
    """A name for a result as a ``str`` (a ``Path`` as written), or None: a ``Path`` kept as it was
    made a result whose ``to_dict()`` ``json.dumps`` could not write."""
    if name is None or isinstance(name, str):
        return name
    if isinstance(name, os.PathLike):
        return os.fspath(name)
    raise TypeError(f"{argument}: a name is a str (or a path), not {type(name).__name__} ({name!r})")


def _named(sources: Iterable[Any], names: Iterable[str] | None) -> Iterator[tuple[Any, str | None]]:
    """``(source, name)`` pairs for :meth:`Predictor.predict_many`; ``names`` and ``sources`` of
    different lengths are refused by name (``zip``'s own error named neither argument)."""
    if names is None:
        yield from ((s, None) for s in sources)
        return
    if isinstance(names, (str, bytes)):  # one name, which zip would have spread over the characters
        raise TypeError(f"names must be a list of names, one per source, not one {type(names).__name__}")
    try:
        for source, name in zip(sources, names, strict=True):
            yield source, _as_name(name, "names")
    except ValueError as e:
        if not str(e).startswith("zip()"):  # raised by the caller's own iterable: theirs to see
            raise
        longer = "sources" if "argument 2 is shorter" in str(e) else "names"
        raise ValueError(f"predict_many: names and sources differ in length (more {longer})") from None


def _study_names(study: Any, unread: Any) -> tuple[str | None, tuple[str, ...]]:
    """``predict_study``'s ``study`` and ``unread`` as the result holds them: a ``Path`` as a str
    (kept, it made ``to_dict()`` unwritable as JSON), ``unread`` None as none; one name given as
    ``unread`` is refused: as a sequence of characters it became "8 of 9 views could not be read
    (i, m, g, ...)"."""
    if isinstance(unread, (str, bytes, os.PathLike)):
        raise TypeError(f"unread must be a list of the views' names, not one {type(unread).__name__}")
    if unread is not None and not isinstance(unread, Iterable):  # "'int' object is not iterable"
        raise TypeError(f"unread must be a list of the views' names, not {type(unread).__name__}")
    names = []
    for view in unread or ():
        name = _as_name(view, "unread")
        if name is None:
            raise TypeError("unread: a name is a str (or a path), not None")
        names.append(name)
    return _as_name(study, "study"), tuple(names)


def _distinct_views(predictions: list[Prediction]) -> tuple[list[Prediction], list[str]]:
    """Each view once, at its first place, and a note per repeat left out: a view given twice (the
    same image, read twice, or a copy of its file under another name) weighed double in the mean.
    Views of one file content (``metadata.content_sha256``) are one view; a result without it (of
    pixels given as an array) is a repeat only when equal to an earlier one of its name."""
    distinct: list[Prediction] = []
    repeats: list[str] = []
    by_content: dict[str, str] = {}
    by_source: dict[str, list[Prediction]] = {}
    for p in predictions:
        digest = p.metadata.content_sha256
        same_name = by_source.setdefault(p.source, [])
        kept = by_content.get(digest) if digest else (p.source if p in same_name else None)
        if kept is not None:
            repeats.append(p.source if kept == p.source else f"{p.source} (the same image as {kept})")
            continue
        if digest:
            by_content[digest] = p.source
        same_name.append(p)
        distinct.append(p)
    return distinct, repeats


def _load_predictor(
    cls: type[Predictor], bundle_dir: str, threads: int, operating_point: str | None
) -> Predictor:
    """A pickled :class:`Predictor` (or subclass) loaded again (see :meth:`Predictor.__reduce__`)."""
    return cls(bundle_dir, threads=threads, operating_point=operating_point)


@dataclasses.dataclass(frozen=True)
class _Read:
    """One image's read through the network: row ``index`` of ``outputs``, made from ``radiograph``
    (the image turned upright by ``turns`` quarter turns, or as given when 0) with ``geometry``."""

    outputs: dict[str, np.ndarray]
    index: int
    radiograph: Radiograph
    geometry: Letterbox
    turns: int


class Predictor:
    """A model bundle ready to predict. Thread-safe for concurrent ``predict`` calls; pickles (as
    how to load it again) for worker processes.

    Args:
        model: a packaged bundle's name (:func:`~fracsight.inference.list_bundles`), a bundle
            folder or a .zip of one; None: the shipped default model.
        threads: ONNX Runtime threads, 0 (its default) to 256.
        operating_point: the bundle's operating point whose threshold decides
            ``fracture_suspected`` (e.g. ``"triage"``); None: the bundle's default. An unknown
            name raises :class:`~fracsight.errors.BundleError` listing the known ones.
    """

    def __init__(
        self, model: str | Path | None = None, *, threads: int = 0, operating_point: str | None = None
    ):
        # checked before anything is loaded: a negative count used to be passed on silently, and a huge
        # one made ONNX Runtime start that many threads (minutes, then out of memory)
        threads = _count(threads, "threads", least=0, most=MAX_THREADS)
        self.threads = threads
        self.bundle_dir = resolve_bundle(model)
        # what a pickled copy loads: a .zip's unpacked folder is removed when this process ends
        # (and is not on another machine), so a copy unpacks the archive again
        zipped = (
            isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".zip" and Path(model).is_file()
        )
        origin = (Path(model) if zipped else self.bundle_dir).resolve()  # type: ignore[arg-type]
        # a packaged bundle by its name: its folder is where this fracsight is installed, which a
        # worker on another machine or in a container (another site-packages) does not share
        packaged = {folder.resolve(): name for name, folder in packaged_bundles().items()}
        self._origin: Path | str = packaged.get(origin, origin)
        self.onnx = OnnxModel(self.bundle_dir, threads=threads)
        self.spec: BundleSpec = self.onnx.spec
        check_feature_record(self.spec.ood, self.onnx.embedding_size)
        detector = self.spec.localization.get("boxes") == "detector"
        if detector and DETECTOR_OUTPUTS - set(self.onnx.output_names):
            raise BundleError(
                "bundle.json asks for the detector's boxes, but model.onnx has no detection head"
            )
        fracture_head = self.spec.head("fracture")
        self.has_fracture_head = fracture_head is not None
        self.finding = finding_of(fracture_head.classes[-1]) if fracture_head else FRACTURE
        self.operating_point = self.spec.chosen_operating_point(operating_point)
        region_head = self.spec.head("region")
        self.regions: tuple[str, ...] = region_head.classes if region_head else ()
        class_head = self.spec.head("class")
        self.classes: tuple[str, ...] = class_head.classes if class_head else ()
        class_op = self.spec.class_operating_point
        # a class bundle without one (exported before they existed) states its top class always
        self.class_min_probability = class_op.min_probability if class_op else 0.0
        # The image statistics of the input checks need only the pixels: they run on this thread
        # while the main one letterboxes (Pillow and NumPy release the GIL), so one image uses
        # both cores before the network too. (The full-size heatmap was tried there as well: the
        # hand-over cost as much as it saved.)
        self._side = ThreadPoolExecutor(1, thread_name_prefix="fracsight-statistics")
        self._side_pid, self._side_lock = os.getpid(), threading.Lock()

    def _statistics_pool(self) -> ThreadPoolExecutor:
        """The statistics thread's pool, made again in a forked child: the child gets the pool but
        not its thread, and a Predictor used before ``fork`` (multiprocessing's default on Linux)
        waited for ever on its first image there."""
        if self._side_pid != os.getpid():
            with self._side_lock:
                if self._side_pid != os.getpid():
                    self._side = ThreadPoolExecutor(1, thread_name_prefix="fracsight-statistics")
                    self._side_pid = os.getpid()
        return self._side

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as how to load it again (its bundle folder or .zip, threads and operating point), so
        that a Predictor can be handed to ``multiprocessing`` or ``concurrent.futures`` workers:
        its ONNX Runtime session and thread pool cannot be pickled, and each process loads its own."""
        op = None if self.operating_point is None else self.operating_point.name
        return _load_predictor, (type(self), str(self._origin), self.threads, op)

    def __repr__(self) -> str:
        op = "" if self.operating_point is None else f", operating_point={self.operating_point.name!r}"
        return f"{type(self).__name__}({self.name!r}{op})"

    @property
    def operating_point(self) -> OperatingPoint | None:
        """The operating point whose threshold decides (None: a bundle without a fracture head)."""
        return self._operating_point

    @operating_point.setter
    def operating_point(self, point: str | OperatingPoint | None) -> None:
        """Set by name (``predictor.operating_point = "triage"``: it failed at the next prediction
        with "'str' object has no attribute 'name'") or as one of the bundle's own points."""
        if isinstance(point, OperatingPoint):
            if point not in self.spec.operating_points:
                raise ValueError(f"{point.name!r} is not one of this model's operating points")
            self._operating_point = point
        else:
            self._operating_point = self.spec.chosen_operating_point(point)

    def with_operating_point(self, point: str | OperatingPoint | None) -> Predictor:
        """This predictor deciding at another of its operating points: the same loaded model, its
        bundle not read again (a second ``Predictor(bundle, operating_point=...)`` reads the folder
        anew, and meets another model where a bundle was exported again into it meanwhile)."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)  # the session, spec and settings shared, as they are read only
        twin.operating_point = point
        return twin

    @property
    def name(self) -> str:
        """The model's name and version, as results name it (``Prediction.model``)."""
        return f"{self.spec.name} v{self.spec.version}"

    # ---- stages ------------------------------------------------------------------------------------
    def read(self, source: Source, *, name: str | None = None, **options: Any) -> Radiograph:
        """Read an image as this model's input: a JPEG is decoded at the smallest scale that still
        covers the input size (:func:`~fracsight.preprocessing.read_for_model`, as in training and
        export). ``options`` go to :func:`~fracsight.io.read_image`.
        """
        return read_for_model(source, self.spec.input_size, name=name, **options)

    def _read_any(self, source: Any, name: str | None) -> tuple[Radiograph, Source | None]:
        """The radiograph of any input :meth:`predict` takes, its pixels checked, and the file
        source to read it again at full size from (None: its pixels are full size)."""
        if isinstance(source, Radiograph):
            _check_pixels(source)  # the reader's own are checked as they are read
            return source, None
        if _in_memory(source):
            jpeg = _undecoded_jpeg_bytes(source)
            if jpeg is None:
                return Radiograph.from_array(source, name=name), None
            source = jpeg  # decoded as its file is, at the reduced scale the model was fitted on
        if _is_file_object(source):
            name = name or _input_name(source)  # its bytes are read under the file's own name
            try:
                # from its start: a notebook cell run again with the same open file read it from its
                # end and called a 100 KB JPEG "empty (0 bytes)"
                with _FILE_READING:  # one file object read by two threads: each seeks the other's read
                    if _seekable(source):
                        source.seek(0)
                    source = source.read()  # a binary file (open(..., "rb"), io.BytesIO): its bytes
            # closed, not open for reading, or its own reader's error (a damaged zip member raises
            # zipfile.BadZipFile, which ended predict_many and lost the results before it)
            except Exception as e:
                why = f"{type(e).__name__}: {e}" if not isinstance(e, (OSError, ValueError)) else str(e)
                raise ImageReadError(f"{name}: the file object cannot be read: {why}") from None
            if not isinstance(source, (bytes, bytearray, memoryview)):  # a text file's str is no path
                raise TypeError(
                    "a file given to predict must be opened in binary mode ('rb'); "
                    f"it read a {type(source).__name__}"
                )
        if _is_dicom_dataset(source):
            name = name or _input_name(source)
            source = _dataset_bytes(source, name)
        if not isinstance(source, _READABLE):
            raise TypeError(f"predict takes {_ACCEPTED}, not {type(source).__name__}")
        return self.read(source, name=name), source

    @staticmethod
    def full_pixels(source: Source | None, radiograph: Radiograph, **options: Any) -> np.ndarray:
        """The pixels of ``radiograph`` (read from ``source``) at full resolution, for overlays:
        decoded again only when :meth:`read` reduced them. A reduced radiograph given without its
        file (``source`` None) is enlarged to the full size, where the heatmap and boxes are: an
        overlay drawn on it fits, with the reduced read's detail (it used to be refused for its
        size)."""
        if radiograph.metadata.reduced_from is None:
            return radiograph.pixels
        if source is None:
            from PIL import Image

            h, w = radiograph.metadata.reduced_from
            return np.asarray(Image.fromarray(radiograph.pixels).resize((w, h), Image.Resampling.BILINEAR))
        return read_image(source, name=radiograph.metadata.name, **options).pixels

    def preprocess(self, radiographs: list[Radiograph]) -> tuple[np.ndarray, list[Letterbox]]:
        pairs = [letterbox_radiograph(r, self.spec.input_size) for r in radiographs]
        return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]

    def _postprocess(
        self,
        out: dict[str, np.ndarray],
        i: int,
        radiograph: Radiograph,
        geometry: Letterbox,
        source: str,
        statistics: Future[ImageStatistics | None],
        with_heatmap: bool,
        given: Radiograph | None = None,
    ) -> Prediction:
        """The prediction from the network's outputs ``out[...][i]`` on ``radiograph``, the read kept
        of ``given`` (given itself, or turned upright; None: ``radiograph`` is the image as given)."""
        spec = self.spec
        prob = decisions = None
        op = self.operating_point
        if op is not None:
            # the export's own function, so thresholds chosen on its validation probabilities
            # meet the same float64 arithmetic here
            prob = float(apply_temperature(out["fracture"][i], spec.temperature, spec.calibration_bias))
            decisions = {o.name: prob >= o.threshold for o in spec.operating_points}
        region_probs: dict[str, float] = {}
        region = None
        if "region" in out and self.regions:
            rp = sigmoid(out["region"][i].astype(np.float64))
            region_probs = {name: float(v) for name, v in zip(self.regions, rp, strict=True)}
            region = self.regions[int(np.argmax(rp))]
        classification = None
        if "class" in out and self.classes:
            class_probs = softmax(out["class"][i].astype(np.float64), axis=0)
            classification = ClassResult.from_probabilities(
                {name: float(v) for name, v in zip(self.classes, class_probs, strict=True)},
                self.class_min_probability,
            )
        # judged on the image as given: a warning names its size as the user knows it
        assessment = assess_input(
            given or radiograph, statistics.result(), out["embedding"][i], region_probs, spec
        )
        warnings = list(radiograph.metadata.warnings) + list(assessment.warnings)
        boxes: list = []
        if op is not None:  # boxes and the heatmap show where a fracture is suspected
            loc = spec.localization
            kind = FRACTURE_MAP
            heat_small = localization_map(out["mask"][i], out["cam"][i], loc.get("source", "combined"))
            boxes = fracture_boxes(out, i, heat_small, geometry, loc)
        elif classification is not None and "class_cam" in out:
            # where the predicted class is seen: its per-cell probability among the classes, with
            # chance (1/K) mapped to 0 so that cells that favour no class stay untinted
            kind = CLASS_ACTIVATION
            top = self.classes.index(classification.predicted)
            cell_probs = softmax(out["class_cam"][i].astype(np.float64), axis=0)[top]
            chance = 1.0 / len(self.classes)
            heat_small = np.clip((cell_probs - chance) / (1.0 - chance), 0.0, 1.0).astype(np.float32)
        else:  # a class bundle exported before class activation maps: no map means anything
            kind, heat_small = NO_LOCALIZATION, None
        show_heat = with_heatmap and heat_small is not None
        return Prediction(
            source=source,
            fracture_probability=prob,
            fracture_suspected=None if op is None else decisions[op.name],
            operating_point=None if op is None else op.name,
            threshold=None if op is None else op.threshold,
            decisions=decisions or {},
            region=region,
            region_probabilities=region_probs,
            boxes=tuple(boxes),
            classification=classification,
            reliable=assessment.reliable,
            warnings=tuple(warnings),
            model=self.name,
            metadata=radiograph.metadata,
            localization=kind,
            shown_size=radiograph.full_size,
            finding=self.finding,
            heatmap=heatmap_to_original(heat_small, geometry) if show_heat else None,
        )

    # ---- entry points ------------------------------------------------------------------------------
    def predict_radiographs(
        self,
        radiographs: list[Radiograph],
        sources: list[str],
        *,
        heatmap: bool = True,
    ) -> list[Prediction]:
        """Predict radiographs read with :meth:`read` (or built with ``Radiograph.from_array``), in one
        batch; ``sources`` names each. A Radiograph built by hand must hold finite pixels in [0, 1]
        (:class:`~fracsight.errors.InvalidPixelsError`)."""
        if isinstance(sources, (str, bytes)) or len(sources) != len(radiographs):
            raise ValueError(f"give one name in sources per radiograph ({len(radiographs)}), in a list")
        names = [_as_name(source, "sources") for source in sources]  # a Path: unwritable as JSON
        if None in names:
            raise TypeError("sources: a name is a str (or a path), not None")
        for radiograph in radiographs:
            _check_pixels(radiograph)
        return self._predict_checked(radiographs, names, heatmap)

    def _predict_checked(
        self, radiographs: list[Radiograph], sources: list[str], heatmap: bool
    ) -> list[Prediction]:
        """:meth:`predict_radiographs` of radiographs whose pixels were checked."""
        if not radiographs:
            return []
        side = self._statistics_pool()
        statistics = [side.submit(pixel_statistics, r.pixels) for r in radiographs]
        predictions = []
        for kept, radiograph, source, stats in zip(
            self._kept_reads(radiographs), radiographs, sources, statistics, strict=True
        ):
            # only the read that is kept gets its boxes and heatmap
            prediction = self._postprocess(
                kept.outputs, kept.index, kept.radiograph, kept.geometry, source, stats, heatmap, radiograph
            )
            if kept.turns:  # read turned upright: the results are turned back onto the image as given
                turned = turn_prediction(prediction, kept.turns, radiograph.full_size)
                prediction = dataclasses.replace(
                    turned, metadata=radiograph.metadata, shown_size=radiograph.full_size
                )
            predictions.append(prediction)
        return predictions

    def network_outputs(self, radiographs: list[Radiograph]) -> dict[str, np.ndarray]:
        """The network's raw outputs for each of ``radiographs`` (read with :meth:`read`), from the
        read the Predictor keeps: the image as given, or turned upright by the orientation step.
        Stacked over the images; what a bundle's calibration and operating points are fitted on
        (:func:`fracsight.training.refit.refit_to_predictions`)."""
        if not radiographs:  # numpy's "need at least one array to stack", from deep inside
            raise ValueError("network_outputs needs at least one Radiograph")
        for radiograph in radiographs:
            _check_pixels(radiograph)
        kept = self._kept_reads(radiographs)
        return {name: np.stack([k.outputs[name][k.index] for k in kept]) for name in kept[0].outputs}

    def _kept_reads(self, radiographs: list[Radiograph]) -> list[_Read]:
        """One network pass over ``radiographs``, and a second pass, turned upright, for each image
        the orientation step finds turned (:meth:`_quarter_turns`); per image, the read kept."""
        batch, geometries = self.preprocess(radiographs)
        out = self.onnx.run(batch)
        kept = []
        for i, (turns, sure) in enumerate(self._quarter_turns(out)):
            read = _Read(out, i, radiographs[i], geometries[i], 0)
            # a blank image has no up: its "turned by 90 degrees" note was noise read as a turn
            if turns and not is_blank(radiographs[i].pixels):
                upright = turn_radiograph(radiographs[i], -turns)
                again, (geometry,) = self.preprocess([upright])
                out_upright = self.onnx.run(again)
                if sure or reads_agree_on_turn(out["orientation"][i], out_upright["orientation"][0], turns):
                    read = _Read(out_upright, 0, upright, geometry, turns)
            kept.append(read)
        return kept

    def _quarter_turns(self, out: dict[str, np.ndarray]) -> list[tuple[int, bool]]:
        """Per image, ``(turns, sure)``: the quarter turns it seems to be from upright (0: read it
        as it is) and whether the orientation head is sure of them.

        A turn the head is sure of (the bundle's ``min_probability``, chosen on validation
        images so that almost no upright image is turned) is undone. When the head is not even
        sure the image is upright (its upright probability below ``check_below``), its likeliest
        turn is a candidate: both reads are made and :func:`reads_agree_on_turn` decides.
        """
        orientation = self.spec.orientation
        if "orientation" not in out or not orientation:
            return [(0, False)] * len(out["fracture"])
        probs = softmax(out["orientation"].astype(np.float64), axis=1)
        check_below = orientation.get("check_below", 0.0)
        found = []
        for p in probs:
            best = int(p.argmax())
            if best and p[best] >= orientation["min_probability"]:
                found.append((best, True))
            elif p[0] < check_below:
                found.append((int(p[1:].argmax()) + 1, False))
            else:
                found.append((0, False))
        return found

    def predict(
        self,
        source: Source | np.ndarray | Radiograph | Any,
        *,
        name: str | None = None,
        heatmap: bool = True,
        keep_pixels: bool = False,
    ) -> Prediction:
        """One image: a path, bytes, a binary file object, a numpy array or PIL image (read by
        :meth:`Radiograph.from_array <fracsight.io.Radiograph.from_array>`'s rules) or a
        :class:`~fracsight.io.Radiograph`. Raises an :class:`~fracsight.errors.ImageReadError` on
        a bad image and ``TypeError`` on anything else (a list: use :meth:`predict_many`). A binary
        file object is read from its start where it can seek (where it stands otherwise).

        ``name``: what the result calls it (default: the file name; ``"upload"`` for bytes,
        ``"array"`` for pixels). ``heatmap``: compute ``result.heatmap`` (H, W) in [0, 1].
        ``keep_pixels``: attach the full-resolution pixels (for overlays); the result is the same.
        """
        name = _as_name(name, "name")
        # a client's path: its file name; a file's own name is kept as it is (a backslash in a
        # name from a Windows archive is part of it)
        given = (
            (Path(name).name if isinstance(source, (str, os.PathLike)) else file_name_only(name))
            if name
            else None
        )
        radiograph, file = self._read_any(source, given)
        (prediction,) = self._predict_checked([radiograph], [given or _input_name(source)], heatmap)
        if keep_pixels:
            return dataclasses.replace(prediction, pixels=self.full_pixels(file, radiograph))
        return prediction

    def predict_many(
        self,
        sources: Iterable[Source | np.ndarray | Radiograph | Any],
        *,
        batch_size: int = 16,
        workers: int = 2,
        heatmap: bool = False,
        keep_pixels: bool = False,
        names: Iterable[str] | None = None,
    ) -> Iterator[Prediction | FailedPrediction]:
        """Stream results in input order; a bad file yields a FailedPrediction, never stops the run.

        Memory stays bounded: at most ``batch_size`` images are decoded at a time. ``names``: what
        the results call each source, as given (default: its file name), one per source; when
        their counts differ, a ``ValueError`` says so where the shorter one ends. ``sources`` is a list (or
        any iterable) of what :meth:`predict` takes (paths, bytes, arrays, ...); one image alone (a
        path, bytes, an open file, an (H, W) or (H, W, 3|4) array, a PIL image) is refused with a
        ``TypeError``, not read character by character, line by line or row by row, and an item that
        is none of those (None, a number) yields a FailedPrediction. ``batch_size`` and ``workers``
        are ints of at least 1; the arguments are checked when called, not when the stream is read.
        """
        one = (
            isinstance(sources, (str, bytes, os.PathLike, Radiograph))
            or _is_file_object(sources)
            # one array or PIL image, not a list of them: (H, W), (H, W, 1) grey, or (H, W, 3|4) colour
            # (an (N, H, W) stack of grayscale images, or (N, H, W, 3) of colour ones, is a list of
            # them; no image is 1, 3 or 4 pixels wide)
            or (
                _in_memory(sources)
                and (np.ndim(sources) < 3 or (np.ndim(sources) == 3 and np.shape(sources)[-1] in (1, 3, 4)))
            )
        )
        if one:
            raise TypeError(
                f"predict_many takes a list of images, not one {type(sources).__name__}: "
                "use predict() for one image, or list the files of a folder"
            )
        # checked here, not when the stream is first read (a generator's body runs only then)
        batch_size = _count(batch_size, "batch_size", least=1, most=sys.maxsize)
        workers = _count(workers, "workers", least=1, most=sys.maxsize)
        try:  # None or a number: Python's "'NoneType' object is not iterable", once the stream was read
            sources = iter(sources)
        except TypeError:
            raise TypeError(f"predict_many takes a list of images, not {type(sources).__name__}") from None
        if isinstance(names, Sequence) and not isinstance(names, (str, bytes)):
            for name in names:  # a bad one ended the stream part-way, the results after it never made
                _as_name(name, "names")
        return self._stream(_named(sources, names), batch_size, workers, heatmap, keep_pixels)

    def _stream(
        self,
        pending: Iterator[tuple[Any, str | None]],
        batch_size: int,
        workers: int,
        heatmap: bool,
        keep_pixels: bool,
    ) -> Iterator[Prediction | FailedPrediction]:
        """:meth:`predict_many`'s results, its arguments checked."""

        def read(
            named: tuple[Any, str | None],
        ) -> tuple[Radiograph, str, np.ndarray | None] | FailedPrediction:
            source, name = named
            label = name or _input_name(source)  # a name as given (predict_many's docs)
            try:
                radiograph, file = self._read_any(source, name)
                # read again at full size for overlays: a file gone in between (a sync tool renaming
                # into place) ended the run, every result lost; it is this file's row
                full = self.full_pixels(file, radiograph) if keep_pixels else None
            except TypeError as e:  # None, a number, a text file: this one fails, not the run
                return FailedPrediction(label, ImageReadError.code, str(e))
            except FracsightError as e:
                return FailedPrediction.of(label, e)
            return radiograph, label, full

        with ThreadPoolExecutor(workers) as pool:
            while chunk := list(islice(pending, batch_size)):  # take only what the next batch needs
                decoded = list(pool.map(read, chunk))
                good = [r for r in decoded if isinstance(r, tuple)]
                preds = iter(self._predict_checked([r[0] for r in good], [r[1] for r in good], heatmap))
                for r in decoded:
                    if isinstance(r, FailedPrediction):
                        yield r
                    elif r[2] is None:
                        yield next(preds)
                    else:
                        yield dataclasses.replace(next(preds), pixels=r[2])

    def predict_study(
        self,
        predictions: Iterable[Prediction],
        study: str | os.PathLike[str],
        *,
        unread: Sequence[str | os.PathLike[str]] | None = (),
    ) -> StudyPrediction:
        """Combine the views of one study (see :class:`StudyPrediction` for the rules).

        ``predictions`` are this predictor's results for the study's images (a list, or any
        iterable such as :meth:`predict_many`'s stream); a :class:`FailedPrediction` or another
        model's result raises ``ValueError``; a view given twice (the same file content, also under
        another name) counts once, and the study's warnings name the repeat. ``study`` names the
        result (a ``Path`` becomes its str). ``unread`` lists the names of the study's views that
        could not be read (a list, not one str): the study then warns that N of M views could not
        be read and is not reliable (its verdict has not seen every view).
        """
        # a generator is always truthy: taken as it was, an empty one made a study of no image
        # (probability NaN, "no fracture detected")
        study, unread = _study_names(study, unread)  # before a stream of predictions is run through
        predictions = list(predictions)
        if not predictions:
            raise ValueError("a study needs at least one image")
        for p in predictions:
            if not isinstance(p, Prediction):
                what = f"{p.source}: {p.error}" if isinstance(p, FailedPrediction) else type(p).__name__
                raise ValueError(f"predict_study takes this predictor's Prediction results, got {what}")
            if p.model != self.name:
                raise ValueError(f"{p.source} was predicted by {p.model}, not {self.name}: its scale differs")
        # before repeats are dropped: one image filed under two patients is a mix-up too
        patients = len({p.metadata.patient_digest for p in predictions} - {None})
        predictions, repeats = _distinct_views(predictions)
        op = self.operating_point
        fracture: dict[str, Any] = {}
        if op is not None:
            prob = float(np.mean([p.fracture_probability for p in predictions]))
            fracture = dict(
                fracture_probability=prob,
                fracture_suspected=prob >= op.threshold,
                operating_point=op.name,
                threshold=op.threshold,
            )
        classification = None
        aggregation = "mean"
        if self.classes:
            dists = np.array([[p.class_probabilities[c] for c in self.classes] for p in predictions])
            weights = np.ones(len(predictions))
            if op is not None:
                weights = np.array([p.fracture_probability for p in predictions])
                aggregation = "mean; class: mean weighted by fracture probability"
            mean = np.average(dists, axis=0, weights=weights if weights.sum() > 0 else None)
            classification = ClassResult.from_probabilities(
                {c: float(v) for c, v in zip(self.classes, mean, strict=True)}, self.class_min_probability
            )
        regions: dict[str, Any] = {}
        if self.regions:  # as the class: the mean of the views' distributions
            mean_regions = np.mean(
                [[p.region_probabilities[r] for r in self.regions] for p in predictions], axis=0
            )
            regions = dict(
                region=self.regions[int(np.argmax(mean_regions))],
                region_probabilities={r: float(v) for r, v in zip(self.regions, mean_regions, strict=True)},
                view_regions=tuple(p.region or "" for p in predictions),
            )
        return StudyPrediction(
            study=study,
            images=tuple(p.source for p in predictions),
            reliable=all(p.reliable for p in predictions) and not unread and patients <= 1,
            classification=classification,
            aggregation=aggregation,
            unread=tuple(unread),
            repeats=tuple(repeats),
            finding=self.finding,
            view_probabilities=tuple(p.fracture_probability for p in predictions) if op is not None else (),
            unreliable=tuple(p.source for p in predictions if not p.reliable),
            incomplete=tuple(p.source for p in predictions if not p.reliable and p.metadata.incomplete),
            dicom_studies=len({p.metadata.study_digest for p in predictions} - {None}),
            dicom_patients=patients,
            **fracture,
            **regions,
        )
