"""The Python API as a notebook uses it: ``import fracsight``, pickling for worker processes, names."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import fracsight
from fracsight.inference import Predictor


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(operating_point="triage", threads=1)


@pytest.fixture(scope="module")
def image(fracatlas_dir: Path) -> Path:
    return sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]


def test_package_root_gives_the_api_without_importing_it() -> None:
    # `import fracsight; fracsight.Predictor()` was an AttributeError: the root exported __version__ only
    code = (
        "import sys, fracsight\n"
        "heavy = [m for m in ('numpy', 'onnxruntime', 'PIL', 'fracsight.inference') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert fracsight.Predictor is __import__('fracsight.inference').inference.Predictor\n"
        "assert 'fracatlas-lite0-384-v5-int8' in fracsight.list_bundles()\n"
        "assert callable(fracsight.explain.render_overlay) and callable(fracsight.io.read_image)\n"
        "assert callable(fracsight.evaluation.binary_metrics_at)\n"
        "assert {'Predictor', 'explain', 'io'} <= set(dir(fracsight))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in fracsight.__all__:
        assert getattr(fracsight, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Predicter'"):
        fracsight.Predicter  # noqa: B018


def test_a_predictor_pickles_for_worker_processes(predictor: Predictor, image: Path) -> None:
    # pickle.dumps(Predictor()) raised "cannot pickle 'InferenceSession' object", so a Predictor could
    # not be handed to multiprocessing / ProcessPoolExecutor workers
    again = pickle.loads(pickle.dumps(predictor))
    assert again is not predictor
    assert (again.bundle_dir.resolve(), again.threads) == (predictor.bundle_dir.resolve(), 1)
    assert again.operating_point == predictor.operating_point  # the point chosen, not the default
    assert again.predict(image) == predictor.predict(image)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(predictor.predict, image).result(timeout=120) == predictor.predict(image)


def test_a_packaged_model_pickles_by_its_name_not_this_installs_folder(image: Path) -> None:
    """Pickled as the absolute folder under this site-packages, a Predictor() loaded nowhere else
    (a Ray or Dask worker, a container with fracsight installed at another path)."""
    predictor = Predictor(threads=1)
    data = pickle.dumps(predictor)
    assert str(predictor.bundle_dir.resolve()).encode() not in data
    assert predictor.bundle_dir.name.encode() in data
    assert pickle.loads(data).predict(image) == predictor.predict(image)


@pytest.mark.parametrize("suffix", [".zip", ".ZIP"])
def test_a_predictor_of_a_zipped_bundle_pickles_as_the_archive(
    image: Path, tmp_path: Path, suffix: str
) -> None:
    # it pickled the folder the archive was unpacked to, removed when the process that unpacked it
    # ends: a copy loaded later (a longer-lived worker, another machine) found no bundle there
    # (and still did for an archive named .ZIP, which loads as .zip does)
    import shutil

    made = Path(shutil.make_archive(str(tmp_path / "bundle"), "zip", Predictor().bundle_dir))
    archive = made.rename(made.with_suffix(suffix))
    zipped = Predictor(archive, threads=1)
    data = pickle.dumps(zipped)
    assert str(zipped.bundle_dir).encode() not in data and str(archive).encode() in data
    expected = zipped.predict(image)
    shutil.rmtree(zipped.bundle_dir)  # as at the end of the process that unpacked it
    again = pickle.loads(data)
    assert again.bundle_dir != zipped.bundle_dir and again.predict(image) == expected


def test_predict_many_says_when_names_and_sources_differ(predictor: Predictor, image: Path) -> None:
    # used to be zip()'s "zip() argument 2 is shorter than argument 1", naming neither argument
    with pytest.raises(ValueError, match=r"names and sources differ in length \(more sources\)"):
        list(predictor.predict_many([image, image], names=["a"]))
    with pytest.raises(ValueError, match=r"names and sources differ in length \(more names\)"):
        list(predictor.predict_many([image], names=["a", "b"]))
    with pytest.raises(TypeError, match="names must be a list of names"):
        list(predictor.predict_many([image, image], names="ab"))
    assert [r.source for r in predictor.predict_many([image], names=["x"])] == ["x"]


def test_predict_many_passes_on_a_value_error_of_the_callers_iterable(predictor: Predictor) -> None:
    def sources():
        yield from ()
        raise ValueError("the caller's own")

    with pytest.raises(ValueError, match="the caller's own"):
        list(predictor.predict_many(sources(), names=["a"]))


def test_radiographs_compare_by_metadata_and_pixels(image: Path) -> None:
    # read_image(a) == read_image(a) raised "The truth value of an array ... is ambiguous"
    from fracsight.io import read_image

    first, again = read_image(image), read_image(image)
    assert first == again
    assert (first != again) is False
    assert first != read_image(image, reduce_to=384)  # other pixels and metadata
    assert (first == "IMG.jpg") is False
    with pytest.raises(TypeError, match="unhashable"):
        hash(first)


def test_study_names_are_strings_and_unread_is_a_list(predictor: Predictor, image: Path) -> None:
    result = predictor.predict(image)
    # unread="img2.png" was taken letter by letter: "8 of 9 views could not be read (i, m, g, 2, ...)"
    with pytest.raises(TypeError, match="unread must be a list"):
        predictor.predict_study([result], "s", unread="img2.png")
    study = predictor.predict_study([result], Path("XR_WRIST/patient1/study1"), unread=[Path("b/c.png")])
    # a Path study name was kept as a Path, and json.dumps(study.to_dict()) raised
    assert json.loads(json.dumps(study.to_dict()))["study"] == "XR_WRIST/patient1/study1"
    assert study.unread == ("b/c.png",) and not study.reliable
    assert predictor.predict_study([result], "s", unread=None).unread == ()
    with pytest.raises(TypeError, match="study: a name is a str"):
        predictor.predict_study([result], 3)  # type: ignore[arg-type]


def test_predict_many_names_may_be_paths_and_results_stay_json(predictor: Predictor, image: Path) -> None:
    # names=[Path(...)] gave results whose source was a Path: to_dict() could not be written as JSON
    (result,) = predictor.predict_many([image], names=[Path("wrist/a.jpg")])
    assert json.loads(json.dumps(result.to_dict()))["source"] == "wrist/a.jpg"
    (failed,) = predictor.predict_many([b""], names=[Path("wrist/empty.jpg")])
    assert json.loads(json.dumps(failed.to_dict()))["source"] == "wrist/empty.jpg"
    with pytest.raises(TypeError, match="names: a name is a str"):
        list(predictor.predict_many([image], names=[3]))  # type: ignore[list-item]


def test_a_path_holding_a_nul_character_fails_alone_in_predict_many(fracatlas_dir: Path) -> None:
    """A path from a damaged manifest (``a\\x00b.jpg``): os.stat raises a bare ValueError for it, which
    stopped the whole stream; now that one file is a FailedPrediction and the others are predicted."""
    from fracsight.inference import FailedPrediction, Predictor

    good = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    results = list(Predictor().predict_many([good, "a\x00b.jpg", good.parent / "missing.jpg"]))
    assert not isinstance(results[0], FailedPrediction)
    assert isinstance(results[1], FailedPrediction) and "NUL character" in results[1].error
    assert isinstance(results[2], FailedPrediction) and "no such file" in results[2].error


def test_one_image_object_read_by_several_threads_at_once(
    predictor: Predictor, image: Path, tmp_path: Path
) -> None:
    # Pillow decodes lazily and a file object has one position: the same Image or open file given
    # to threads at once (predict_many with a view listed twice, a thread pool) was read half decoded
    # ("broken PNG file", "image file is truncated", a bare AttributeError that ended the stream)
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    png = tmp_path / "view.png"
    Image.open(image).save(png)
    expected = predictor.predict(png).fracture_probability
    for _ in range(6):
        shared = Image.open(png)  # not decoded yet
        assert [r.fracture_probability for r in predictor.predict_many([shared] * 4, workers=4)] == [
            expected
        ] * 4
        with png.open("rb") as f, ThreadPoolExecutor(3) as pool:
            assert [r.fracture_probability for r in pool.map(predictor.predict, [f] * 3)] == [expected] * 3


def test_predict_many_refuses_one_grey_array_with_a_channel_axis(predictor: Predictor) -> None:
    # an (H, W, 1) array, which predict reads as one image, was read row by row: H failed results
    import numpy as np

    grey = np.full((64, 48, 1), 128, np.uint8)
    with pytest.raises(TypeError, match="takes a list of images, not one ndarray"):
        predictor.predict_many(grey)
    assert len(list(predictor.predict_many(np.zeros((2, 64, 48), np.uint8)))) == 2  # a stack is a list


def test_a_warning_names_the_size_of_the_image_as_given_when_read_turned(image: Path) -> None:
    # a thumbnail turned on its side, read upright by the orientation step, was called "72x90
    # pixels" while its result said 90 wide and 72 high
    from PIL import Image

    turned = Image.open(image).convert("L").rotate(90, expand=True)
    turned.thumbnail((90, 90))
    result = Predictor(threads=1).predict(turned)
    assert any("turned by" in w for w in result.warnings)  # the orientation step turned it upright
    width, height = turned.size
    assert any(f"very low resolution: {width}x{height} pixels" in w for w in result.warnings)
    assert (result.to_dict()["image"]["width"], result.to_dict()["image"]["height"]) == (width, height)
