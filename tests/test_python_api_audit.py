"""A researcher's Python calls (audit of 2026-12-05): a folder given as a name kept in results, an
overlay saved over its radiograph or in a format that drops its mark, labels and arguments cast
before they were checked, a Trainer that recorded a recipe's data instead of the data it trained
on, PIL modes that stopped a whole run, and a result changed through its ``to_dict()``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracsight.errors import FracsightError, ImageReadError, InvalidPixelsError
from fracsight.inference import FailedPrediction, Prediction, Predictor
from fracsight.io import Radiograph, read_image


@pytest.fixture(scope="module")
def predictor(tiny_bundle) -> Predictor:
    return Predictor(tiny_bundle)


@pytest.fixture(scope="module")
def image_path(fracatlas_dir):
    return next((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))


@pytest.mark.parametrize(
    "given", ["/patients/Doe_Jane/MRN12345/wrist.jpg", "C:\\Patients\\Doe_Jane\\wrist.jpg"]
)
def test_a_folder_in_a_given_name_is_kept_nowhere(predictor: Predictor, image_path, given: str) -> None:
    """docs/reading.md: "The full path is never stored or shown"; read_image(bytes, name=PATH),
    Radiograph.from_array and predict(array, name=WINDOWS_PATH) kept the folders."""
    data = image_path.read_bytes()
    assert read_image(data, name=given).metadata.name == "wrist.jpg"
    assert predictor.read(data, name=given).metadata.name == "wrist.jpg"
    assert Radiograph.from_array(np.zeros((64, 64), np.uint8), name=given).metadata.name == "wrist.jpg"
    result = predictor.predict(np.zeros((64, 64), np.uint8), name=given)
    assert result.source == "wrist.jpg" and "Doe_Jane" not in str(result.to_dict())
    assert read_image(data, name=Path(given)).metadata.name == "wrist.jpg"  # a Path as a name
    with pytest.raises(ImageReadError) as caught:
        read_image(b"not an image at all", name=given)
    assert "Doe_Jane" not in str(caught.value) and str(caught.value).startswith("wrist.jpg: ")


def test_save_overlay_keeps_the_radiograph_and_writes_only_marked_formats(
    predictor: Predictor, image_path, tmp_path
) -> None:
    """save_overlay("scan.jpg", ...) replaced the radiograph it was made of; a .tif or .bmp overlay
    carried no mark and was read again as a reliable radiograph."""
    from fracsight import save_overlay

    scan = tmp_path / "scan.jpg"
    scan.write_bytes(image_path.read_bytes())
    shown = predictor.predict(scan, keep_pixels=True)
    drawn = (shown.pixels, shown.heatmap, shown.boxes)
    with pytest.raises(FileExistsError, match=r"scan\.jpg exists: pass overwrite=True"):
        save_overlay(scan, *drawn)
    assert scan.read_bytes() == image_path.read_bytes()
    for suffix in (".tif", ".bmp", ".gif"):
        with pytest.raises(ValueError, match=r"saved as \.png or \.jpg"):
            save_overlay(tmp_path / f"ov{suffix}", *drawn)
        assert not (tmp_path / f"ov{suffix}").exists()
    first = save_overlay(tmp_path / "ov.png", *drawn)
    again = save_overlay(first, *drawn, overwrite=True)
    with pytest.raises(FracsightError) as caught:
        read_image(again)
    assert caught.value.code == "fracsight_overlay"


def test_evaluation_labels_are_checked_before_they_are_cast() -> None:
    """evaluate_predictions(p, y) (swapped) gave n_positive 0 and AUROC None without a word;
    confusion_matrix and cohen_kappa cut probabilities given as labels down to class 0; a missing
    study id joined every unnamed image into one study; a threshold "0.5" was numpy's ufunc error."""
    from fracsight.evaluation import evaluate_predictions
    from fracsight.evaluation.metrics import (
        binary_metrics_at,
        cohen_kappa,
        confusion_matrix,
        multiclass_metrics,
    )
    from fracsight.evaluation.report import evaluate_classes

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 50), rng.random(50)
    with pytest.raises(ValueError, match=r"y must be binary"):
        evaluate_predictions(p, y)
    with pytest.raises(ValueError, match=r"must be 1-D"):
        evaluate_predictions(y, np.c_[p, 1 - p])
    with pytest.raises(ValueError, match=r"y_pred must hold class indices"):
        confusion_matrix(y, p, 2)
    with pytest.raises(ValueError, match=r"y_pred must hold class indices"):
        cohen_kappa(y, p)
    soft = [0.7, 1.4, 2.0, 0.2, 1.0, 2.9]
    with pytest.raises(ValueError, match=r"y must hold class indices"):
        multiclass_metrics(soft, np.full((6, 3), 1 / 3), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"class_labels must hold class indices"):
        evaluate_classes(soft, np.full((6, 3), 1 / 3), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"threshold must be a number, got str"):
        binary_metrics_at(y, p, "0.5")
    with pytest.raises(ValueError, match=r"study_ids has 50 missing ids"):
        evaluate_predictions(y, p, study_ids=[None] * 50)
    with pytest.raises(ValueError, match=r"study_ids has 5 entries for 50 samples"):
        evaluate_predictions(y, p, study_ids=list(range(5)))
    assert confusion_matrix([0, 1.0, 1], [0, 1, True], 2).tolist() == [[1, 0], [0, 2]]  # whole floats, bools
    assert evaluate_predictions(y.astype(bool), p, n_bootstrap=10)["n_positive"] == int(y.sum())


def test_a_trainer_records_the_data_set_it_was_given(tiny_dataset, tmp_path, caplog) -> None:
    """Trainer(recipe, load_dataset(MINE)) recorded the recipe's FracAtlas as its data: export then
    failed with "its training and validation images differ now"."""
    pytest.importorskip("torch")
    from fracsight.data import load_dataset
    from fracsight.training import Trainer, load_config

    cfg = load_config("fracatlas-lite0-384", out=str(tmp_path / "run"), device="cpu")
    trainer = Trainer(cfg, load_dataset(tiny_dataset), show_progress=False)
    assert trainer.cfg.data == str(tiny_dataset.resolve())
    assert "is not the data set given" in caplog.text


def test_uncommon_pil_modes_are_read_or_refused_by_name(predictor: Predictor, image_path) -> None:
    """predict_many([path, La image, path]) died on Pillow's "conversion from La to L not
    supported", the first result lost too; an I;16N image went through RGBA (p far off)."""
    grey = Image.open(image_path).convert("L")
    wide = np.asarray(grey).astype(np.uint16) * 257
    native = Image.frombytes("I;16N", grey.size, wide.astype(np.dtype("=u2")).tobytes())
    expected = predictor.predict(Image.fromarray(wide)).fracture_probability
    read = predictor.predict(native)
    assert read.fracture_probability == pytest.approx(expected) and read.metadata.photometric == "I;16"
    results = list(predictor.predict_many([image_path, grey.convert("LA").convert("La"), image_path]))
    assert [type(r) for r in results] == [Prediction, Prediction, Prediction]


def test_a_mode_no_tiff_holds_is_refused_as_invalid_pixels(monkeypatch, predictor: Predictor) -> None:
    """The last fallback (RGBA) failing gave Pillow's own error; it names the mode now."""
    original = Image.Image.convert

    def refuse_rgba(self, mode=None, *args, **kwargs):
        if self.mode == "HSV" and mode == "RGBA":
            raise ValueError("conversion not supported")
        return original(self, mode, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", refuse_rgba)
    odd = original(Image.new("L", (64, 64), 100), "HSV")
    with pytest.raises(InvalidPixelsError, match="a PIL image in mode HSV is not read"):
        Radiograph.from_array(odd)
    (failed,) = predictor.predict_many([odd])
    assert isinstance(failed, FailedPrediction) and failed.error_code == InvalidPixelsError.code


def test_to_dict_gives_a_copy_of_the_decisions(predictor: Predictor, image_path) -> None:
    result = predictor.predict(image_path)
    before = dict(result.decisions)
    result.to_dict()["decisions"].clear()
    assert result.decisions == before and result.to_dict()["decisions"] == before


def test_reader_arguments_are_checked_as_arguments_and_numpy_ints_are_ints(
    predictor: Predictor, image_path
) -> None:
    """max_pixels=None was "cannot decode this JPEG file: '>' not supported ..."; -1 was taken;
    np.int64(384) as reduce_to, threads or batch_size was refused."""
    for bad in ({"max_pixels": None}, {"max_pixels": -1}, {"min_side": "32"}, {"min_side": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be "):
            read_image(image_path, **bad)
    assert read_image(image_path, reduce_to=np.int64(64), frame=np.int64(0)).metadata.reduced_from
    threaded = Predictor(predictor.bundle_dir, threads=np.int64(1))
    assert len(list(threaded.predict_many([image_path], batch_size=np.int64(4), workers=np.int64(1)))) == 1


def test_the_operating_point_is_set_by_name(tiny_bundle) -> None:
    """`predictor.operating_point = "triage"` was taken, and the next prediction failed with
    "'str' object has no attribute 'name'"."""
    from fracsight.errors import BundleError

    predictor = Predictor(tiny_bundle)
    names = [o.name for o in predictor.spec.operating_points]
    predictor.operating_point = names[-1]
    assert predictor.operating_point == predictor.spec.operating_points[-1]
    assert predictor.predict(np.full((64, 64), 0.5, np.float32)).operating_point == names[-1]
    with pytest.raises(BundleError, match="unknown operating point 'bogus'"):
        predictor.operating_point = "bogus"
    predictor.operating_point = None
    assert predictor.operating_point == predictor.spec.chosen_operating_point()


def test_a_backslash_in_a_files_own_name_is_kept(predictor: Predictor, image_path, tmp_path) -> None:
    """A file named `Doe\\scan.jpg` on Linux (unpacked from a Windows archive) is that file's whole
    name: the desktop passes it as the name, and it was cut to `scan.jpg` like a Windows path."""
    odd = tmp_path / "Doe\\scan.jpg"
    odd.write_bytes(image_path.read_bytes())
    assert predictor.predict(odd).source == odd.name
    assert predictor.predict(odd, name=odd.name).source == odd.name
    assert predictor.predict(odd.read_bytes(), name=odd.name).source == "scan.jpg"  # bytes: a client's path


def test_a_notebooks_trainer_keeps_its_name_its_random_state_and_names_a_file_gone(
    tiny_dataset, tmp_path, monkeypatch
) -> None:
    """Notebook calls (hunt of 2026-12-07): a Trainer named ``../../x`` trained outside ``runs/``
    (only the CLI checked the name); fit() left Python's, NumPy's and torch's generators at the
    run's seed, so the notebook's own draws repeated after every training; a file removed after
    load_dataset stopped fit() with a bare FileNotFoundError of the letterbox cache."""
    pytest.importorskip("torch")
    import random
    import shutil

    import torch

    from conftest import TINY_TRAINING
    from fracsight.data import load_dataset
    from fracsight.training import Trainer, load_config
    from fracsight.training.config import TrainConfigError

    monkeypatch.chdir(tmp_path)
    data = shutil.copytree(tiny_dataset, tmp_path / "data", symlinks=True)
    escaping = load_config("fracatlas-lite0-384", [*TINY_TRAINING, "name=../../escaped"], data=str(data))
    with pytest.raises(TrainConfigError, match=r"name='\.\./\.\./escaped' \(a name, not a path"):
        Trainer(escaping, load_dataset(data), show_progress=False).fit()
    assert not (tmp_path.parent / "escaped").exists()

    cfg = load_config("fracatlas-lite0-384", TINY_TRAINING, data=str(data), out=str(tmp_path / "run"))
    draws = []
    for seed in (1000, 1001):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        Trainer(cfg, load_dataset(data), show_progress=False).fit(force=True)
        draws.append((random.random(), np.random.random(), torch.rand(1).item()))
    assert all(a != b for a, b in zip(*draws, strict=True)), draws

    dataset = load_dataset(data)
    gone = sorted((data / "train" / "fractured").iterdir())[0]
    gone.unlink()
    with pytest.raises(ImageReadError, match=gone.name):
        Trainer(cfg, dataset, show_progress=False).fit(force=True)


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ({"n_bootstrap": 3}, "3 resamples are too few for intervals"),
        ({"n_bootstrap": -5}, "a whole number, 0 or more"),
        ({"n_bootstrap": 200.0}, "a whole number, 0 or more"),
        ({"threshold": 1.5}, "threshold must be a number from 0 to 1"),
        ({"out_dir": ""}, "out_dir is empty"),
    ],
)
def test_evaluate_model_refuses_what_the_command_refuses(
    tiny_bundle, tiny_dataset, tmp_path, monkeypatch, arguments, said
) -> None:
    """evaluate_model took 3 resamples ("95% CI 0.647-0.907" in its report), -5, a threshold of
    1.5 and out_dir "" (the report's nine files in the working folder), each recorded as a command
    that the CLI refuses."""
    from fracsight.evaluation.run import EvaluationArgumentError, evaluate_model

    monkeypatch.chdir(tmp_path)  # out_dir "" wrote the report into the repository's folder
    with pytest.raises(EvaluationArgumentError, match=said):
        evaluate_model(tiny_bundle, tiny_dataset, **{"split": "val", **arguments})


def test_an_audit_keeps_the_readers_warnings_whatever_the_callers_logging(fracatlas_dir, tmp_path) -> None:
    """A notebook quieted to ERROR (logging.getLogger().setLevel(logging.ERROR)) got an audit without
    the readers' warnings (an image missing from dataset.csv), which it reports as findings."""
    import logging

    from conftest import fracatlas_subset
    from fracsight.data.audit import audit

    data = fracatlas_subset(fracatlas_dir, tmp_path / "fa", {"train": (3, 3), "test": (2, 2)})
    extra = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[-1]
    (data / "images" / "Fractured" / extra.name).symlink_to(extra)  # not in dataset.csv
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quiet = audit(data).loader_warnings
    finally:
        root.setLevel(level)
    assert any(extra.name in said for said in quiet), quiet
    assert quiet == audit(data).loader_warnings
    assert logging.getLogger("fracsight.data").propagate


def test_two_audits_at_once_keep_their_own_warnings_and_leave_logging_as_it_was() -> None:
    """Two audits in threads, ending in the order they began: the second set back the first one's
    temporary settings (the readers' logger cut off from its parent for good), and each report
    listed the other data set's warnings."""
    import logging
    import threading

    from fracsight.data.audit import _captured_warnings

    logger = logging.getLogger("fracsight.data")
    before = (logger.level, logger.propagate, list(logger.handlers))
    first, second = _captured_warnings(), _captured_warnings()
    first_notes = first.__enter__()
    entered: list[list[str]] = []
    other = threading.Thread(target=lambda: entered.append(second.__enter__()))
    other.start()
    other.join()
    (second_notes,) = entered
    logger.warning("seen by the first audit's thread only")
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)
    assert first_notes == ["seen by the first audit's thread only"] and second_notes == []
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
