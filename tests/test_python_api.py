"""The library called from Python: bad input is refused clearly, nothing is silently wrong."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracsight.data import FRACTURE, Dataset, Sample, group_split, load_dataset
from fracsight.errors import ConfigError, DatasetError
from fracsight.evaluation import binary_metrics_at
from fracsight.explain import combine_maps, render_overlay


def _labels_csv(root: Path, header: str, rows: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for row in rows:
        Image.new("L", (8, 8)).save(root / row.split(",")[0])
    (root / "labels.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return root


# ---- data -------------------------------------------------------------------------------------------


def test_labels_csv_refuses_an_empty_fracture_value(tmp_path: Path) -> None:
    # one empty value used to drop the label from that image, and training then silently
    # dropped the whole fracture head (it needs the label on every image)
    root = _labels_csv(tmp_path / "d", "image,fracture,class", ["a.png,1,x", "b.png,,y", "c.png,0,x"])
    with pytest.raises(DatasetError, match="line 3: fracture is empty"):
        load_dataset(root)


def test_labels_csv_refuses_an_image_listed_twice(tmp_path: Path) -> None:
    root = _labels_csv(tmp_path / "d", "image,fracture", ["a.png,1", "b.png,0"])
    (root / "labels.csv").write_text("image,fracture\na.png,1\nb.png,0\na.png,0\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"line 4: image 'a\.png' is listed already on line 2"):
        load_dataset(root)


def test_fracatlas_flags_are_not_truncated(tmp_path: Path) -> None:
    root = tmp_path / "fa"
    (root / "images" / "Fractured").mkdir(parents=True)
    Image.new("L", (8, 8)).save(root / "images" / "Fractured" / "IMG1.jpg")
    (root / "dataset.csv").write_text("image_id,fractured\nIMG1.jpg,0.5\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"should be 0 or 1, got '0\.5'"):
        load_dataset(root)
    (root / "dataset.csv").write_text("image_id,fractured\nIMG1.jpg,inf\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="should be 0 or 1"):
        load_dataset(root)
    (root / "dataset.csv").write_text("image_id,fractured\nIMG1.jpg,1.0\n", encoding="utf-8")
    assert load_dataset(root).samples[0].labels == {FRACTURE: 1}


def test_group_split_refuses_nan_fractions() -> None:
    samples = [Sample(Path(f"{i}.png"), {FRACTURE: i % 2}) for i in range(20)]
    with pytest.raises(ValueError, match="fractions"):
        group_split(samples, (math.nan, 0.1, 0.1))


def test_dataset_split_reads_split_aliases() -> None:
    samples = (Sample(Path("a.png"), {FRACTURE: 1}, split="val"), Sample(Path("b.png"), {FRACTURE: 0}))
    ds = Dataset(Path("."), "labels-csv", samples, {FRACTURE: ("not fractured", "fractured")})
    assert ds.split("valid") == ds.split("val") == samples[:1]
    assert ds.split("Validation") == samples[:1]


# ---- evaluation and explain --------------------------------------------------------------------------


def test_binary_metrics_refuse_a_nan_threshold() -> None:
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        binary_metrics_at([0, 1, 1, 0], [0.1, 0.9, 0.7, 0.3], math.nan)


def test_combine_maps_refuses_nan_weights() -> None:
    maps = [np.zeros((4, 4)), np.ones((4, 4))]
    with pytest.raises(ValueError, match="weights"):
        combine_maps(maps, [math.nan, 1.0])


def test_overlay_without_pixels_says_how_to_get_them() -> None:
    with pytest.raises(ValueError, match="keep_pixels=True"):
        render_overlay(None, np.zeros((4, 4)))  # type: ignore[arg-type]


# ---- inference ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(fracatlas_dir: Path) -> list[Path]:
    return sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:2]


def test_predict_many_refuses_one_path(images: list[Path]) -> None:
    from fracsight.inference import Predictor

    predictor = Predictor()
    for one in (str(images[0]), images[0]):  # a str used to be read character by character
        with pytest.raises(TypeError, match="predict_many takes a list"):
            list(predictor.predict_many(one))  # type: ignore[arg-type]


def test_predict_study_refuses_failures_and_other_models(images: list[Path], tmp_path: Path) -> None:
    from fracsight.inference import FailedPrediction, Predictor

    predictor = Predictor()
    results = list(predictor.predict_many([*images, tmp_path / "missing.png"]))
    assert isinstance(results[-1], FailedPrediction)
    with pytest.raises(ValueError, match=r"missing\.png"):
        predictor.predict_study(results, "study")  # type: ignore[arg-type]
    good = results[:-1]
    assert predictor.predict_study(good, "study").images == tuple(p.source for p in good)  # type: ignore[arg-type]
    other = Predictor("fracatlas-lite0-384-v4").predict(images[0])
    with pytest.raises(ValueError, match="was predicted by"):
        predictor.predict_study([other], "study")


def test_predict_study_takes_a_stream_and_refuses_an_empty_one(images: list[Path]) -> None:
    from fracsight.inference import Predictor

    predictor = Predictor()
    # a generator is truthy even when empty: it made a study of no image, NaN, "no fracture detected"
    with pytest.raises(ValueError, match="at least one image"):
        predictor.predict_study((p for p in []), "study")
    study = predictor.predict_study(predictor.predict_many(images), "study")  # type: ignore[arg-type]
    assert study.images == tuple(p.name for p in images)
    assert study.fracture_probability is not None and not math.isnan(study.fracture_probability)


def test_predict_study_counts_each_view_once(images: list[Path]) -> None:
    from fracsight.inference import Predictor

    predictor = Predictor()
    first, second = (predictor.predict(path) for path in images)
    again = predictor.predict(images[0].read_bytes(), name=images[0].name)  # the same image, read again
    once = predictor.predict_study([first, second], "study")
    for views in ([first, first, second], [first, second, again]):  # first weighed double in the mean
        study = predictor.predict_study(views, "study")
        assert study.images == once.images == (images[0].name, images[1].name)
        assert study.fracture_probability == once.fracture_probability
    # two images sent as bytes without names are both "upload": two views all the same
    uploads = [predictor.predict(path.read_bytes()) for path in images]
    assert predictor.predict_study(uploads, "study").images == ("upload", "upload")


def test_predictor_refuses_bad_model_and_threads_by_name() -> None:
    from fracsight.errors import UnknownModelError
    from fracsight.inference import Predictor

    with pytest.raises(TypeError, match="model must be"):  # was pathlib's "expected str, bytes or ..."
        Predictor(5)  # type: ignore[arg-type]
    with pytest.raises(UnknownModelError, match="model is empty"):  # was the current folder
        Predictor("")
    # -1 was passed on silently, 10**6 made ONNX Runtime start a million threads, "2" a pybind error
    for threads, error in ((-1, ValueError), (10**6, ValueError), ("2", TypeError), (True, TypeError)):
        with pytest.raises(error, match="threads must be"):
            Predictor(threads=threads)  # type: ignore[arg-type]


def test_predict_takes_any_bytes_like(images: list[Path]) -> None:
    from fracsight.inference import Predictor

    predictor = Predictor()
    data = images[0].read_bytes()
    expected = predictor.predict(data).fracture_probability
    for source in (bytearray(data), memoryview(data)):  # read_image reads them; naming them failed
        result = predictor.predict(source)  # type: ignore[arg-type]
        assert (result.source, result.fracture_probability) == ("upload", expected)
    (streamed,) = predictor.predict_many([bytearray(data)])
    assert streamed.source == "upload"


def test_predict_many_fails_only_the_bad_items(images: list[Path], tmp_path: Path) -> None:
    import json

    from fracsight.inference import FailedPrediction, Predictor

    predictor = Predictor()
    mixed = [images[0], None, tmp_path / "missing.png", b"", np.full((64, 64), np.nan), b"junk", images[1], 7]
    results = list(predictor.predict_many(mixed, batch_size=3))  # type: ignore[arg-type]
    failed = {i: r.error_code for i, r in enumerate(results) if isinstance(r, FailedPrediction)}
    assert failed == {
        1: "unreadable_image",  # None, an array, a number: a TypeError used to stop the whole run
        2: "unreadable_image",
        3: "empty_file",
        4: "invalid_pixels",  # an array is read (Radiograph.from_array); one of NaN is refused
        5: "unsupported_format",
        7: "unreadable_image",
    }
    assert [results[0].source, results[6].source] == [images[0].name, images[1].name]
    assert results[1].source == "<NoneType>" and "takes a path, bytes" in results[1].error
    for r in results:
        json.dumps(r.to_dict())
    # a loop over the stream reads every result alike: it stopped at the first failure with AttributeError
    assert [r.fracture_probability is None for r in results] == [i in failed for i in range(len(results))]
    assert {r.notice for r in results} == {results[0].notice} and "not a diagnosis" in results[0].notice


@pytest.mark.parametrize("argument", ["batch_size", "workers"])
@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (-2, ValueError), (2.5, TypeError)])
def test_predict_many_refuses_bad_batch_size_and_workers(
    images: list[Path], argument: str, value: object, error: type[Exception]
) -> None:
    from fracsight.inference import Predictor

    # 0 and negatives were quietly taken as 1, 2.5 an islice ValueError, "4" a comparison TypeError
    with pytest.raises(error, match=f"{argument} must be"):
        list(Predictor().predict_many(images, **{argument: value}))


# ---- training ----------------------------------------------------------------------------------------


def test_trainer_checks_a_config_built_in_python(tiny_dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from fracsight.training import TrainConfig, Trainer

    with pytest.raises(ConfigError, match="batch_size=0"):
        Trainer(TrainConfig(batch_size=0, out=str(tmp_path / "run")), load_dataset(tiny_dataset))


def test_load_checkpoint_refuses_what_is_not_one(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from fracsight.training import load_checkpoint

    with pytest.raises(ConfigError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "best.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_a_run_trained_from_python_exports_with_its_own_data(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``TrainConfig.data`` is empty when the data come as a Dataset; export used to read the
    working folder instead (``Path("")``)."""
    pytest.importorskip("torch")
    from conftest import TINY_TRAINING
    from fracsight.training import Trainer, load_config
    from fracsight.training.export_bundle import export_bundle

    cfg = load_config(None, [*TINY_TRAINING, "name=tiny-python"], out=str(tmp_path / "run"))
    assert cfg.data == ""
    Trainer(cfg, load_dataset(tiny_dataset), show_progress=False).fit()
    monkeypatch.chdir(tmp_path)  # the working folder holds no data set
    spec = export_bundle(tmp_path / "run", tmp_path / "bundle")
    assert Path(spec.training["data"]) == tiny_dataset


# ---- the library as a notebook uses it: arrays, files, types -------------------------------------------


def test_the_package_root_is_typed_for_type_checkers() -> None:
    # the root's names come from a module __getattr__: to mypy and pyright each was an ``object``
    # (``fracsight.Predictor()``: "object" not callable) until the TYPE_CHECKING imports named them
    import ast

    import fracsight

    tree = ast.parse(Path(fracsight.__file__).read_text(encoding="utf-8"))
    (block,) = [
        n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING"
    ]
    typed = {
        alias.asname or alias.name for n in block.body if isinstance(n, ast.ImportFrom) for alias in n.names
    }
    assert set(fracsight.__all__) - {"__version__"} | fracsight._SUBPACKAGES <= typed
    assert fracsight.TYPE_CHECKING is False  # and nothing of them is imported when the package is


def test_mypy_sees_the_real_types_of_the_package_root(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    script = tmp_path / "notebook.py"
    script.write_text(
        "import fracsight\n"
        "predictor = fracsight.Predictor()\n"
        "result = predictor.predict('wrist.png')\n"
        "wrong: int = result.fracture_probability\n"
        "pixels = fracsight.read_image('wrist.png').pixels\n",
        encoding="utf-8",
    )
    out, _, _ = api.run([str(script), "--no-incremental", "--cache-dir", str(tmp_path / "cache")])
    assert "not callable" not in out and "has no attribute" not in out, out
    assert out.count("error:") == 1 and 'expression has type "float | None"' in out, out


def test_predict_takes_arrays_pil_images_and_binary_files(images: list[Path]) -> None:
    import io

    from PIL import Image

    from fracsight.inference import Predictor
    from fracsight.io import Radiograph, read_image

    predictor = Predictor()
    expected = predictor.predict(images[0]).fracture_probability
    with Image.open(images[0]) as pil:
        gray = np.asarray(pil.convert("L"))
        pil.load()
        inputs = {
            "uint8": gray,  # each used to be "read_image takes a path or bytes, not ndarray"
            "uint16": gray.astype(np.uint16) * 257,
            "float": gray / np.float32(255),
            "rgb": np.stack([gray] * 3, axis=-1),
            "pil": pil,
            "radiograph": read_image(images[0]),
            "bytesio": io.BytesIO(images[0].read_bytes()),
        }
        for kind, source in inputs.items():
            result = predictor.predict(source, keep_pixels=True)
            assert result.fracture_probability == pytest.approx(expected, abs=1e-3), kind
            assert result.pixels is not None and result.pixels.shape == gray.shape
    with images[0].open("rb") as f:
        assert predictor.predict(f).fracture_probability == pytest.approx(expected, abs=1e-3)
    named = predictor.predict(gray, name="wrist.png")
    assert (named.source, predictor.predict(gray).source, named.metadata.source_format) == (
        "wrist.png",
        "array",
        "array",
    )
    assert Radiograph.from_array(gray).metadata.name is None


@pytest.mark.parametrize(
    ("pixels", "says"),
    [
        (np.full((64, 64), np.nan), "NaN"),
        (np.full((64, 64), 200.0), r"must be in \[0, 1\], got 200\.0 to 200\.0: divide by"),  # 0..255
        (np.full((64, 64), 200, dtype=np.int64), "cast to uint8"),  # 8-bit or a dark 16-bit image?
        (np.full((64, 64), -5, dtype=np.int16), "Hounsfield"),
        (np.ones((64, 64), dtype=bool), "bool"),
        (np.zeros((3, 64, 64)), r"shape \(3, 64, 64\)"),
        (np.zeros((0, 64)), "empty"),
    ],
)
def test_arrays_the_reader_cannot_scale_are_refused(pixels: np.ndarray, says: str) -> None:
    from fracsight.errors import ImageReadError, InvalidPixelsError
    from fracsight.io import Radiograph

    with pytest.raises(InvalidPixelsError, match=says) as caught:
        Radiograph.from_array(pixels)
    assert isinstance(caught.value, ImageReadError) and caught.value.code == "invalid_pixels"


@pytest.mark.parametrize("dtype", [">u2", ">f4"])
def test_big_endian_arrays_are_read_as_their_values(dtype: str) -> None:
    """``np.fromfile(raw, ">u2")`` (a detector's dump) was refused: "integer pixels of >u2: their
    scale cannot be told; cast to ... uint16", of an array that is uint16 in another byte order."""
    from fracsight.io import Radiograph

    values = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    native = (values * 65535).astype(np.uint16) if dtype == ">u2" else values.astype(np.float32)
    swapped = native.astype(dtype)
    assert swapped.dtype.byteorder == ">" and (swapped == native).all()
    assert np.array_equal(Radiograph.from_array(swapped).pixels, Radiograph.from_array(native).pixels)


def test_a_hand_built_radiograph_must_hold_what_the_model_reads(images: list[Path]) -> None:
    from fracsight.errors import ImageTooSmallError, InvalidPixelsError
    from fracsight.inference import Predictor
    from fracsight.io import ImageMetadata, Radiograph, read_image

    predictor = Predictor()
    good = read_image(images[0])
    pixels = np.where(good.pixels > 0.5, np.nan, good.pixels).astype(np.float32)
    meta = ImageMetadata("array", good.metadata.original_size, 32, "L")
    # NaN pixels came out "fracture suspected" (0.99), reliable, with no warning
    with pytest.raises(InvalidPixelsError, match="finite and in"):
        predictor.predict_radiographs([Radiograph(pixels, meta)], ["nan"])
    with pytest.raises(InvalidPixelsError):
        predictor.predict(Radiograph(good.pixels * 255, meta))
    tiny = Radiograph(np.zeros((4, 4), np.float32), ImageMetadata("array", (4, 4), 32, "L"))
    with pytest.raises(ImageTooSmallError):  # predicted, with numpy's RuntimeWarnings
        predictor.predict(tiny)
    with pytest.raises(ValueError, match="one name in sources per radiograph"):
        predictor.predict_radiographs([good, good], ["a"])
    assert predictor.predict_radiographs([good], ["a"])[0].reliable


def test_predict_refuses_what_it_cannot_read_by_what_it_takes(images: list[Path]) -> None:
    from fracsight.inference import Predictor

    predictor = Predictor()
    for wrong in (None, [str(images[0])], 7):  # were "read_image takes a path or bytes", a call not made
        with pytest.raises(TypeError, match=r"predict takes a path, bytes, .* a numpy array"):
            predictor.predict(wrong)
    readme = Path(__file__).parents[1] / "README.md"
    # a text file's str was taken as a path: "File name too long"
    with readme.open(encoding="utf-8") as text, pytest.raises(TypeError, match="binary mode"):
        predictor.predict(text)


def test_dicom_files_read_on_threads_in_a_fresh_process_are_all_predicted(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    """`fracsight predict a.dcm b.jpg` ended with a traceback in most runs: predict_many reads on
    threads, one thread was importing pydicom, and another's check for a pydicom dataset met the
    module half built ("partially initialized module 'pydicom' has no attribute 'Dataset'")."""
    import subprocess
    import sys

    from dicom_support import make_radiograph_dicom

    images = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:3]
    files = [make_radiograph_dicom(image, tmp_path / f"{k}.dcm") for k, image in enumerate(images)]
    files.insert(1, images[0])
    script = (
        "import sys; from fracsight import Predictor, Prediction; "
        "print(sum(isinstance(r, Prediction) for r in Predictor().predict_many(sys.argv[1:])))"
    )
    for _ in range(3):  # the race came in 5 of 6 runs (and in 3 of 3 of this script)
        done = subprocess.run(
            [sys.executable, "-c", script, *map(str, files)], capture_output=True, text=True
        )
        assert done.returncode == 0 and done.stdout.strip() == "4", done.stderr[-2000:]


def test_a_pydicom_dataset_is_read_as_its_file(fracatlas_dir: Path, tmp_path: Path) -> None:
    """`predict(pydicom.dcmread(f))` was a TypeError, and the obvious next try, `ds.pixel_array`, is
    a MONOCHROME1 image's negative: 0.16 "no fracture detected", reliable, for a file read 0.85."""
    import pydicom

    from dicom_support import make_radiograph_dicom
    from fracsight.errors import ImageReadError, NoPixelDataError
    from fracsight.inference import Predictor

    path = make_radiograph_dicom(
        fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg", tmp_path / "cr.dcm"
    )
    predictor = Predictor()
    from_file, from_dataset = predictor.predict(path), predictor.predict(pydicom.dcmread(path))
    assert from_dataset.source == "cr.dcm" and from_dataset.metadata == from_file.metadata
    assert from_dataset.fracture_probability == from_file.fracture_probability
    made = pydicom.Dataset()  # built in Python, no file meta: said, not a traceback from pydicom
    made.Modality, made.PixelData = "CR", b"\0" * 4
    with pytest.raises(
        ImageReadError, match="upload: this pydicom dataset cannot be written as a DICOM file"
    ):
        predictor.predict(made)
    # a value pydicom cannot encode in its VR: its message quoted the element with the value and
    # carried pydicom's whole traceback, into the row's error and the CSV
    odd = pydicom.dcmread(path)
    odd.add_new(0x00101020, "FD", "DOE^JANE")
    with pytest.raises(ImageReadError) as refused:
        predictor.predict(odd)
    assert str(refused.value) == (
        "cr.dcm: this pydicom dataset cannot be written as a DICOM file (OSError: the value of element "
        "(0010,1020) cannot be encoded as its VR says); pass its file or bytes"
    )
    # the header read alone first, as one does: it was "the file ... ends before its pixels (cut
    # short in a copy?)" of a file that was whole
    for header_only in ({"stop_before_pixels": True}, {"specific_tags": ["PatientID", "Modality"]}):
        with pytest.raises(NoPixelDataError, match=r"cr\.dcm: this pydicom dataset holds no pixel data"):
            predictor.predict(pydicom.dcmread(path, **header_only))
    report = pydicom.dcmread(path)  # a report has no pixels either: refused by what it is, as its file
    for keyword in ("PixelData", "Rows", "Columns"):
        delattr(report, keyword)
    report.Modality = "SR"
    with pytest.raises(ImageReadError) as refused:
        predictor.predict(report)
    assert refused.value.code == "unsupported_modality", refused.value


def test_results_say_they_are_unhashable_and_bad_pixels_are_value_errors(images: list[Path]) -> None:
    """hash() of a result failed inside the generated __hash__ ("unhashable type: 'dict'"); bad
    pixels escaped a notebook's `except ValueError`."""
    from fracsight.inference import Predictor

    predictor = Predictor()
    result = predictor.predict(images[0])
    study = predictor.predict_study([result, predictor.predict(images[1])], "study")
    for made in (result, study):
        with pytest.raises(TypeError, match=f"unhashable type: '{type(made).__name__}'"):
            hash(made)
    assert result == predictor.predict(images[0])  # equality unchanged
    with pytest.raises(ValueError, match="NaN"):
        predictor.predict(np.full((64, 64), np.nan))


def test_predict_many_reads_arrays_and_fails_bad_ones_alone(images: list[Path]) -> None:
    from fracsight.inference import FailedPrediction, Predictor

    predictor = Predictor()
    gray = predictor.read(images[0]).pixels
    results = list(predictor.predict_many([gray, np.full((64, 64), np.inf), images[0]], keep_pixels=True))
    assert [type(r).__name__ for r in results] == ["Prediction", "FailedPrediction", "Prediction"]
    assert isinstance(results[1], FailedPrediction) and results[1].error_code == "invalid_pixels"
    assert results[0].source == "array" and results[0].pixels is not None
    with pytest.raises(TypeError, match="not one ndarray"):  # its rows used to fail one by one
        list(predictor.predict_many(gray))
    assert len(list(predictor.predict_many(np.stack([gray, gray])))) == 2  # a stack: one image each
    colour = np.repeat(gray[..., None], 3, axis=2)
    assert len(list(predictor.predict_many(np.stack([colour, colour])))) == 2  # was "not one ndarray"
    with pytest.raises(TypeError, match="not one ndarray"):
        list(predictor.predict_many(colour))


def test_predict_and_predict_many_call_a_named_radiograph_alike(images: list[Path]) -> None:
    from fracsight.inference import Predictor
    from fracsight.io import ImageMetadata, Radiograph

    predictor = Predictor()
    gray = predictor.read(images[0]).pixels
    named = Radiograph.from_array(gray, name="left wrist")
    nan = np.full((64, 64), np.nan, np.float32)
    bad = Radiograph(nan, ImageMetadata("array", (64, 64), 32, "L", name="nan"))
    many = list(predictor.predict_many([named, bad]))
    # predict_many called a named Radiograph "array", predict called it by its name
    assert [r.source for r in many] == [predictor.predict(named).source, "nan"] == ["left wrist", "nan"]


def test_render_overlay_of_a_prediction_says_what_to_pass(images: list[Path]) -> None:
    from fracsight.inference import Predictor

    result = Predictor().predict(images[0], keep_pixels=True)
    with pytest.raises(TypeError, match=r"render_overlay\(p.pixels, p.heatmap, p.boxes\)"):
        render_overlay(result)  # type: ignore[arg-type]  # was "image is object"
    assert result.pixels is not None and result.heatmap is not None
    overlay = render_overlay(result.pixels, result.heatmap, result.boxes)
    assert overlay.size == (result.image_size[1], result.image_size[0])


def test_predictor_and_results_say_what_they_are(images: list[Path]) -> None:
    import json

    from fracsight.inference import NOTICE, Predictor

    predictor = Predictor(operating_point="triage")
    # was "<fracsight.inference.predictor.Predictor object at 0x...>"
    assert repr(predictor) == f"Predictor({predictor.name!r}, operating_point='triage')"
    result = predictor.predict(images[0])
    study = predictor.predict_study([result], "study")
    assert result.notice == study.notice == NOTICE == result.to_dict()["notice"]
    assert "array" not in repr(result) and len(repr(result)) < 3000  # heatmap and pixels left out
    json.dumps([result.to_dict(), study.to_dict()])


def test_the_readme_python_example_runs(
    images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    monkeypatch.chdir(tmp_path)  # its overlay is written here

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    code = readme.split("Python API:\n\n```python\n", 1)[1].split("```", 1)[0]
    # with a file that cannot be read: the study of the example raised ValueError on it
    namespace: dict[str, object] = {"paths": [*images, tmp_path / "missing.png"]}
    exec(code.replace('"wrist.dcm"', repr(str(images[0]))), namespace)  # as written, but a file we have
    study = namespace["study"]
    assert study.images == tuple(p.name for p in images)  # type: ignore[attr-defined]
    assert study.unread == ("missing.png",) and not study.reliable  # type: ignore[attr-defined]
    assert len(namespace["results"]) == len(images) + 1  # type: ignore[arg-type]
    assert isinstance(eval(code.splitlines()[-1], namespace), Image.Image)
    # with the band of the decision and the notice below the image, as every other overlay has
    with Image.open(tmp_path / "wrist.overlay.png") as written, Image.open(images[0]) as original:
        assert written.width == original.width and written.height > original.height


def test_images_in_memory_that_cannot_be_decoded_fail_alone(images: list[Path], tmp_path: Path) -> None:
    """A PIL image cut short, closed or empty, or an empty colour array, raised Pillow's own
    OSError / AssertionError / ValueError: predict_many stopped and lost the batch's good results."""
    from fracsight.errors import ImageReadError
    from fracsight.inference import FailedPrediction, Predictor

    predictor = Predictor()
    cut = tmp_path / "cut.png"
    with Image.open(images[0]) as im:
        im.convert("L").save(cut)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with Image.open(images[0]) as closed:
        pass
    bad = [Image.open(cut), closed, Image.new("L", (0, 0)), np.zeros((0, 0, 3), np.uint8)]
    results = list(predictor.predict_many([images[0], *bad, images[1]]))
    assert [type(r).__name__ for r in results] == ["Prediction", *["FailedPrediction"] * 4, "Prediction"]
    failed = [r for r in results if isinstance(r, FailedPrediction)]
    assert [r.error_code for r in failed] == [
        "unreadable_image",
        "unreadable_image",
        "invalid_pixels",
        "invalid_pixels",
    ]
    assert "was it closed" in failed[1].error
    with pytest.raises(ImageReadError, match="cannot be decoded"):
        predictor.predict(Image.open(cut))
    # a JPEG cut short, not yet decoded, is read from its bytes as its path is: grey fill, unreliable
    cut_jpeg = tmp_path / "cut.jpg"
    cut_jpeg.write_bytes(images[0].read_bytes()[:60_000])
    opened, by_path = predictor.predict(Image.open(cut_jpeg)), predictor.predict(cut_jpeg)
    assert not opened.reliable and opened.warnings == by_path.warnings and opened.metadata.incomplete


def test_pixels_replaced_in_a_read_radiograph_are_checked(images: list[Path]) -> None:
    """The check of a radiograph's pixels was skipped for one read from a file (it has a digest),
    so NaN, 0..255 or 8 x 8 pixels put into it with dataclasses.replace got a probability."""
    import dataclasses

    from fracsight.errors import ImageTooSmallError, InvalidPixelsError
    from fracsight.inference import Predictor
    from fracsight.io import read_image

    predictor = Predictor()
    read = read_image(images[0])
    for pixels, error in (
        (np.full(read.pixels.shape, np.nan, np.float32), InvalidPixelsError),
        (read.pixels * 255, InvalidPixelsError),
        (read.pixels[:8, :8], ImageTooSmallError),
    ):
        with pytest.raises(error):
            predictor.predict(dataclasses.replace(read, pixels=pixels))
    assert Predictor.full_pixels(None, read) is read.pixels
    reduced = predictor.read(images[0])  # a JPEG read at the model's reduced scale, without its file
    kept = predictor.predict(reduced, keep_pixels=True)
    assert kept.pixels is not None and kept.heatmap is not None
    assert kept.pixels.shape == kept.heatmap.shape == reduced.full_size  # was (512, 410) against the full map
    render_overlay(kept.pixels, kept.heatmap, kept.boxes)  # refused for its size before


def test_predict_many_refuses_one_image_of_any_kind(images: list[Path]) -> None:
    """One open file was read line by line, one colour array row by row (1024 failures), one PIL
    image raised "'Image' object is not iterable"; the argument checks waited for the first read."""
    from fracsight.inference import Predictor
    from fracsight.io import read_image

    predictor = Predictor()
    with images[0].open("rb") as f, Image.open(images[0]) as pil:
        colour = np.asarray(pil.convert("RGB"))
        for one in (f, colour, pil, read_image(images[0])):
            with pytest.raises(TypeError, match="predict_many takes a list of images, not one"):
                predictor.predict_many(one)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be"):
        predictor.predict_many(images, batch_size=0)  # when called, not when first read


def test_inputs_are_named_by_their_file_and_never_by_a_folder(images: list[Path]) -> None:
    """Open files were all "upload" (and "array" when they failed); a name given with bytes kept
    its folder in the metadata and messages, with an array in the result; name=5 was pathlib's
    TypeError."""
    import io

    from fracsight.errors import ImageReadError
    from fracsight.inference import FailedPrediction, Predictor

    predictor = Predictor()
    readme = Path(__file__).parents[1] / "README.md"
    with images[0].open("rb") as good, readme.open("rb") as text:
        results = list(predictor.predict_many([good, text, io.BytesIO(images[1].read_bytes())]))
    assert [r.source for r in results] == [images[0].name, "README.md", "upload"]
    assert isinstance(results[1], FailedPrediction)
    with pytest.raises(ImageReadError, match=f"{images[0].name}: the file object cannot be read"):
        predictor.predict(good)  # closed
    client_path = "/patients/Doe_Jane/x.jpg"
    by_bytes = predictor.predict(images[0].read_bytes(), name=client_path)
    by_array = predictor.predict(predictor.read(images[0]).pixels, name=client_path)
    assert (by_bytes.source, by_bytes.metadata.name, by_array.source) == ("x.jpg", "x.jpg", "x.jpg")
    with pytest.raises(TypeError, match="a name is a str"):
        predictor.predict(images[0], name=5)  # type: ignore[arg-type]


def test_a_pil_image_is_turned_by_its_exif_orientation_as_its_file_is(
    images: list[Path], tmp_path: Path
) -> None:
    from fracsight.io import Radiograph, read_image

    tagged = tmp_path / "tagged.jpg"
    with Image.open(images[0]) as pil:
        exif = pil.getexif()
        exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to display
        pil.save(tagged, exif=exif, quality=95)
    with Image.open(tagged) as pil:
        from_pil = Radiograph.from_array(pil).pixels
    assert np.array_equal(from_pil, read_image(tagged).pixels)  # the stored (unturned) pixels before


def test_render_overlay_takes_what_results_give_and_refuses_what_it_cannot_draw(images: list[Path]) -> None:
    """A caption str was drawn one character a line; to_dict() boxes, a NaN box and a Radiograph
    raised float()/int() errors or "image is object"; a 0..255 heat map was drawn at full strength."""
    from fracsight.inference import Predictor
    from fracsight.io import read_image

    result = Predictor().predict(images[0], keep_pixels=True)
    assert result.pixels is not None and result.heatmap is not None and result.boxes
    one = render_overlay(result.pixels, caption="fracture suspected")
    assert one.size == render_overlay(result.pixels, caption=["fracture suspected"]).size
    as_dicts = render_overlay(result.pixels, result.heatmap, [b.to_dict() for b in result.boxes])
    as_boxes = render_overlay(result.pixels, result.heatmap, result.boxes)
    assert as_dicts.size == as_boxes.size
    with pytest.raises(ValueError, match="finite"):
        render_overlay(result.pixels, None, [(0, 0, float("nan"), 5)])
    with pytest.raises(ValueError, match="lacks 'score'"):
        render_overlay(result.pixels, None, [{"x0": 0, "y0": 0, "x1": 5, "y1": 5}])
    with pytest.raises(TypeError, match=r"pass its \.pixels"):
        render_overlay(read_image(images[0]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"heat must be in \[0, 1\]"):
        render_overlay(result.pixels, result.heatmap * 255)
    with pytest.raises(ValueError, match="NaN or infinite"):  # was drawn as no heat, without a word
        render_overlay(result.pixels, np.full_like(result.heatmap, np.nan))
    with pytest.raises(ValueError, match="down to"):  # negative: clipped to no heat, as NaN was
        render_overlay(result.pixels, result.heatmap - 5)


def test_a_bundle_zip_is_found_whatever_the_case_of_its_suffix(tmp_path: Path) -> None:
    import shutil

    from fracsight.inference import Predictor
    from fracsight.inference.store import resolve_bundle

    folder = resolve_bundle(None)
    archive = Path(shutil.make_archive(str(tmp_path / "bundle"), "zip", folder))
    upper = archive.rename(tmp_path / "BUNDLE.ZIP")
    assert Predictor(upper).name == Predictor().name  # "neither a bundle folder nor a .zip of one"


def test_a_file_object_is_read_from_its_start_and_its_own_errors_fail_it_alone(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    """A notebook cell run again with the same open file called a 100 KB JPEG "empty (0 bytes)"; a
    damaged zip member (zipfile.BadZipFile, not an OSError) ended predict_many and lost the result
    before it."""
    import zipfile

    from fracsight.errors import ImageReadError
    from fracsight.inference import FailedPrediction, Predictor

    images = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:3]
    predictor = Predictor()
    with images[0].open("rb") as f:
        first = predictor.predict(f)
        assert predictor.predict(f).fracture_probability == first.fracture_probability  # read again
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for image in images[:3]:
            z.write(image, image.name)
    data = bytearray(archive.read_bytes())
    second = images[1].read_bytes()
    at = bytes(data).index(second) + len(second) // 2
    data[at] ^= 0xFF  # the second member's CRC no longer matches
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as z:
        results = list(predictor.predict_many([z.open(n) for n in z.namelist()]))
        assert [type(r).__name__ for r in results] == ["Prediction", "FailedPrediction", "Prediction"]
        assert isinstance(results[1], FailedPrediction) and "BadZipFile" in results[1].error
        with pytest.raises(ImageReadError, match="the file object cannot be read: BadZipFile"):
            predictor.predict(z.open(images[1].name))


def test_errors_and_data_are_reachable_from_the_package_root() -> None:
    """The README names `fracsight.errors.InvalidPixelsError`: after `import fracsight` alone it was an
    AttributeError (it worked only once something else had imported the module)."""
    import subprocess
    import sys

    code = "import fracsight as f; print(f.errors.InvalidPixelsError.code, f.data.load_dataset.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["invalid_pixels", "load_dataset"], done.stderr


_FORKED = None  # the Predictor a forked worker inherits


def _forked_probability(path: str) -> float:
    return _FORKED.predict(path).fracture_probability


def test_a_predictor_used_before_a_fork_predicts_in_the_forked_worker(images: list[Path]) -> None:
    """multiprocessing's default on Linux: a worker forked from a process whose Predictor had
    predicted once waited for ever on its first image (the statistics thread is not forked)."""
    import multiprocessing

    from fracsight.inference import Predictor

    global _FORKED
    _FORKED = Predictor()
    expected = _FORKED.predict(images[0]).fracture_probability
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.map_async(_forked_probability, [str(images[0])]).get(timeout=120)
    assert got == [expected]


def test_odd_arguments_of_the_python_api_are_said_clearly(images: list[Path], tmp_path: Path) -> None:
    """A Path given as read_image's name went into results json.dumps refused; overlay_words of a
    failed file was a bare AttributeError; load_dataset("") loaded the current folder; a split
    name mistyped gave an empty split."""
    import json

    from fracsight.data.sample import MissingSplitError, NotADataFolderError
    from fracsight.explain import overlay_words
    from fracsight.inference import FailedPrediction, Predictor
    from fracsight.io import read_image

    predictor = Predictor()
    named = predictor.predict(read_image(images[0], name=Path("a") / "x.jpg"))
    assert named.source == "a/x.jpg" and json.dumps(named.to_dict())
    with pytest.raises(TypeError, match="name must be a str or a path, not int"):
        read_image(images[0], name=5)
    (failed,) = [
        r for r in predictor.predict_many([images[0], tmp_path / "missing.jpg"]) if not hasattr(r, "boxes")
    ]
    assert isinstance(failed, FailedPrediction)
    with pytest.raises(TypeError, match="overlay_words takes a Prediction, not FailedPrediction"):
        overlay_words(failed)
    with pytest.raises(NotADataFolderError, match="an empty path"):
        load_dataset("")
    root = tmp_path / "d"
    for label in ("fractured", "normal"):
        (root / "train" / label).mkdir(parents=True)
        Image.new("L", (64, 64)).save(root / "train" / label / "a.png")
    dataset = load_dataset(root)
    assert len(dataset.split("Train")) == 2 and dataset.split("val") == ()
    with pytest.raises(MissingSplitError, match="has no 'tset' split"):
        dataset.split("tset")
    with pytest.raises(TypeError):
        dataset.split(None)


def test_a_file_name_that_is_not_utf8_gives_results_json_and_csv_hold(
    images: list[Path], tmp_path: Path
) -> None:
    """A name of Latin-1 bytes came back with lone surrogates: json.dump(ensure_ascii=False), the CSV
    writer and Parquet refused the results, and the library named it otherwise than the CLI."""
    import json
    import os

    from fracsight.inference import Predictor
    from fracsight.io import read_image

    folder = os.fsencode(tmp_path)
    odd = os.path.join(folder, b"\xffname.jpg")
    with open(odd, "wb") as f:
        f.write(images[0].read_bytes())
    path = os.fsdecode(odd)
    (result,) = Predictor().predict_many([path])
    assert result.source == "\\xffname.jpg" == read_image(path).metadata.name
    json.dumps(result.to_dict(), ensure_ascii=False).encode("utf-8")


def test_public_calls_refuse_wrong_types_by_name(images: list[Path]) -> None:
    """Each was an AttributeError from inside the library."""
    from fracsight.explain import DetectedBox, nms, summary_lines
    from fracsight.inference import Predictor
    from fracsight.inference.results import at_operating_point

    predictor = Predictor()
    result = predictor.predict(images[0])
    (failed,) = predictor.predict_many([images[0].parent / "nope.jpg"])
    for call, says in [
        (lambda: summary_lines(failed), "summary_lines takes a Prediction or StudyPrediction"),
        (lambda: predictor.predict_radiographs([str(images[0])], ["a"]), "takes Radiographs"),  # type: ignore[list-item]
        (lambda: nms([(0, 0, 1, 1)]), "nms takes DetectedBoxes"),  # type: ignore[list-item]
        (lambda: at_operating_point(result, 3), "takes an OperatingPoint or None"),  # type: ignore[arg-type]
        (lambda: render_overlay(np.zeros((40, 40)), caption=["ok", 5]), "caption is a str"),  # type: ignore[list-item]
        (lambda: predictor.predict_many(None), "predict_many takes a list of images, not NoneType"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(TypeError, match=says):
            call()
    assert nms([DetectedBox(0, 0, 10, 10, 0.9)]) == [DetectedBox(0, 0, 10, 10, 0.9)]


def test_a_pil_image_opened_from_a_file_is_named_by_it(images: list[Path]) -> None:
    """Named "array": a study of several PIL images listed "array", "array"."""
    from fracsight.inference import Predictor

    with Image.open(images[0]) as im:
        assert Predictor().predict(im).source == images[0].name


def test_a_pil_jpeg_not_yet_decoded_is_read_as_its_path_is(fracatlas_dir: Path, tmp_path: Path) -> None:
    """``predict(Image.open(f))`` decoded the JPEG at full size, its path at the reduced scale the
    model was fitted on: this test image read 0.188 "fracture suspected" so, 0.160 "no fracture
    detected" by its path (the balanced threshold is 0.181)."""
    from fracsight.inference import Predictor

    path = fracatlas_dir / "images" / "Non_fractured" / "IMG0000246.jpg"
    predictor = Predictor()
    by_path = predictor.predict(path, keep_pixels=True)
    with Image.open(path) as im:
        opened = predictor.predict(im, keep_pixels=True)
        assert opened.fracture_probability == by_path.fracture_probability
        assert opened.decision == by_path.decision and opened.source == path.name
        assert opened.metadata.content_sha256 == by_path.metadata.content_sha256
        assert opened.pixels.shape == by_path.pixels.shape
        assert im.tell() == 0 and np.asarray(im).shape == by_path.pixels.shape  # still usable
    with Image.open(path) as im:
        im.load()  # decoded: read from its pixels, as an array is
        assert predictor.predict(im).metadata.content_sha256 is None
        mpo = tmp_path / "two.mpo"  # a JPEG holding two images (a phone's gain map): Pillow's MPO
        im.save(mpo, format="MPO", save_all=True, append_images=[im.rotate(90)])
    with Image.open(mpo) as im:
        assert im.format == "MPO"
        assert predictor.predict(im).fracture_probability == predictor.predict(mpo).fracture_probability


def test_with_operating_point_decides_with_the_model_as_loaded(images: list[Path], tmp_path: Path) -> None:
    """The web app loaded the bundle again at the first switch to each operating point: a bundle
    exported anew into the same folder meanwhile gave results of two models, credited to the new
    one. ``with_operating_point`` keeps the loaded model and leaves the original's point alone."""
    import shutil

    from fracsight.inference import Predictor, resolve_bundle

    folder = shutil.copytree(resolve_bundle("default"), tmp_path / "live")
    balanced = Predictor(folder)
    shutil.rmtree(folder)
    shutil.copytree(resolve_bundle("fracatlas-lite0-384-v2"), folder)  # exported again meanwhile
    triage = balanced.with_operating_point("triage")
    assert triage.name == balanced.name and balanced.operating_point.name == "balanced"
    assert triage.operating_point == balanced.spec.chosen_operating_point("triage")
    one, other = balanced.predict(images[0]), triage.predict(images[0])
    assert other.fracture_probability == one.fracture_probability and other.model == one.model
    assert other.threshold == triage.operating_point.threshold != one.threshold


def test_arguments_of_the_wrong_kind_are_refused_by_name(images: list[Path], tmp_path: Path) -> None:
    """Python API audit: `save_overlay(..., overwrite="no")` replaced the radiograph (any truthy
    string); `predict_radiographs` kept a Path source (to_dict() unwritable as JSON); a bad name
    late in `predict_many(names=...)` ended the stream part-way; `network_outputs([])` and bad
    `opacity`/`min_heat`/`unread` values failed deep inside (or, NaN, drew nothing unsaid)."""
    import json
    import shutil

    import fracsight

    predictor = fracsight.Predictor()
    radiograph = tmp_path / "radiograph.jpg"
    shutil.copyfile(images[0], radiograph)
    kept = predictor.predict(radiograph, keep_pixels=True)
    for given in ("no", "False", 0, None):
        with pytest.raises(TypeError, match="overwrite must be True or False"):
            fracsight.save_overlay(radiograph, kept.pixels, kept.heatmap, kept.boxes, overwrite=given)
    assert radiograph.read_bytes() == images[0].read_bytes()
    (result,) = predictor.predict_radiographs([predictor.read(radiograph)], [Path("case7/wrist.jpg")])
    assert json.loads(json.dumps(result.to_dict()))["source"] == "case7/wrist.jpg"
    with pytest.raises(TypeError, match="sources: a name is a str"):
        predictor.predict_radiographs([predictor.read(radiograph)], [None])
    with pytest.raises(TypeError, match=r"names: a name is a str \(or a path\), not int \(5\)"):
        predictor.predict_many([radiograph] * 3, names=["a", "b", 5], batch_size=1)  # before any result
    with pytest.raises(ValueError, match="network_outputs needs at least one Radiograph"):
        predictor.network_outputs([])
    for name, value in (("opacity", "0.5"), ("min_heat", float("nan")), ("opacity", 2)):
        with pytest.raises(ValueError, match=f"{name} must be a number in"):
            fracsight.render_overlay(kept.pixels, kept.heatmap, **{name: value})
    # numpy's numbers (and 0-d arrays, numpy's bool) stay numbers, as everywhere else
    fracsight.render_overlay(kept.pixels, kept.heatmap, opacity=np.int64(1), min_heat=np.array(0.1))
    fracsight.save_overlay(tmp_path / "o.png", kept.pixels, kept.heatmap, kept.boxes, overwrite=np.True_)
    with pytest.raises(TypeError, match="unread must be a list of the views' names, not int"):
        predictor.predict_study([kept], "s", unread=5)
