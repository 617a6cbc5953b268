"""The researcher's commands (`train`, `export`, `evaluate`) exit 2 with one line for what the user
got wrong (a data path that is a file, a config that cannot be used, a run folder without a run),
never 1 as for a failure of the work itself, and never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracsight.cli import app


def _refused(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and message in errors[0], result.stderr


def _class_folders(images_from: Path, root: Path, classes: str = "abc") -> Path:
    """A class-folder set (train/val) of the images in ``images_from``, linked, dealt into ``classes``."""
    for i, image in enumerate(sorted(images_from.rglob("*.jpg"))):
        folder = root / ("val" if i % 4 == 0 else "train") / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / image.name).symlink_to(image.resolve())
    return root


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("not a data set")
    return path


def test_train_on_a_file_is_a_bad_argument(tmp_path, a_file):
    result = CliRunner().invoke(app, ["train", str(a_file), "--out", str(tmp_path / "run")])
    _refused(result, f"error (dataset_error): {a_file} is not a folder; give the data set's top folder")
    assert not (tmp_path / "run").exists()


def test_train_into_a_folder_under_a_file_is_a_bad_argument(tiny_dataset, tmp_path, a_file):
    """Said once the data set was read, as a failure: `error (os_error): Not a directory`, exit 1."""
    result = CliRunner().invoke(app, ["train", str(tiny_dataset), "--out", str(a_file / "run")])
    _refused(result, f"error (output_refused): --out {a_file / 'run'}: {a_file} is a file, not a folder")
    assert a_file.read_text() == "not a data set"
    # the cache folder too, and a link to a disk cleaned since is called one, not a file
    gone = tmp_path / "gone"
    gone.symlink_to(tmp_path / "cleaned")
    cache = ["--set", f"cache_dir={gone / 'cache'}"]
    result = CliRunner().invoke(app, ["train", str(tiny_dataset), "--out", str(tmp_path / "run"), *cache])
    _refused(
        result,
        f"cache_dir {gone / 'cache'}: {gone} is a link whose target does not exist ({tmp_path / 'cleaned'})",
    )
    assert not (tmp_path / "run").exists()


def test_train_with_an_unknown_layout_is_a_bad_argument(tmp_path):
    result = CliRunner().invoke(
        app, ["train", str(tmp_path), "--out", str(tmp_path.parent / "r"), "--set", "layout=voc"]
    )
    _refused(result, "unknown layout 'voc'")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("epochs: [3\n", "cannot read config"),
        ("epoch: 3\n", "epoch (did you mean epochs?)"),
        ("input_size: 100\n", "input_size=100 (a multiple of 32"),
        ("device: tpu\n", "device='tpu' (auto, cpu or cuda)"),
    ],
    ids=["yaml", "unknown", "range", "device"],
)
def test_train_config_errors_are_bad_arguments(tmp_path, yaml_text, message):
    pytest.importorskip("torch")
    data = tmp_path / "data"
    for label in ("fractured", "not fractured"):
        (data / label).mkdir(parents=True)
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    result = CliRunner().invoke(app, ["train", str(data), "-c", str(config), "--out", str(tmp_path / "run")])
    _refused(result, "error (config_error): ")
    assert message in result.stderr and not (tmp_path / "run").exists()


def test_export_with_a_data_dir_that_is_a_file_names_the_option(tiny_bundle, tmp_path, a_file):
    run = tiny_bundle.parent / "run"
    result = CliRunner().invoke(app, ["export", str(run), str(tmp_path / "b"), "--data-dir", str(a_file)])
    _refused(result, f"--data-dir {a_file} is not a folder")
    assert not (tmp_path / "b").exists()


def test_export_of_a_folder_without_a_run_is_a_bad_argument(tmp_path):
    (tmp_path / "norun").mkdir()
    result = CliRunner().invoke(app, ["export", str(tmp_path / "norun"), str(tmp_path / "b")])
    _refused(result, "no checkpoint at")


def test_evaluate_on_a_file_is_a_bad_argument(tiny_bundle, a_file):
    result = CliRunner().invoke(app, ["evaluate", str(tiny_bundle), str(a_file), "--bootstrap", "100"])
    _refused(result, f"{a_file} is not a folder")


def test_resume_with_data_whose_labels_do_not_fit_the_run_is_refused(tiny_dataset, tmp_path):
    """It loaded last.pt into a network built for the new data: a RuntimeError traceback (exit 1)."""
    pytest.importorskip("torch")
    from conftest import TINY_TRAINING

    types = _class_folders(tiny_dataset, tmp_path / "types")
    settings = [arg for item in TINY_TRAINING for arg in ("--set", item)]
    run = tmp_path / "run"
    first = CliRunner().invoke(app, ["train", str(tiny_dataset), "--out", str(run), *settings])
    assert first.exit_code == 0, first.output
    last = (run / "last.pt").read_bytes()
    resumed = CliRunner().invoke(
        app, ["train", str(types), "--out", str(run), *settings, "--set", "epochs=2", "--resume"]
    )
    _refused(resumed, f"error (config_error): --resume continues {run}, whose heads the data set {types}")
    assert "classes [] -> ['a', 'b', 'c']" in resumed.stderr
    assert "fracture ['not fractured', 'fractured'] -> []" in resumed.stderr
    assert (run / "last.pt").read_bytes() == last


def test_resume_with_other_images_of_the_same_heads_is_refused_and_a_moved_folder_resumes(
    tiny_dataset, fracatlas_dir, tmp_path
):
    """Other data whose heads fit the run (here: the same set less two images) was trained on in
    the same run without a word, and exported with; the same images in another folder are the
    same data. Another site's images under the same names and labels (exports numbered alike)
    passed for the run's own: resumed on, and export --data-dir recorded no other data."""
    pytest.importorskip("torch")
    from conftest import TINY_TRAINING

    settings = [arg for item in TINY_TRAINING for arg in ("--set", item)]
    run, own = tmp_path / "run", shutil.copytree(tiny_dataset, tmp_path / "own", symlinks=True)
    first = CliRunner().invoke(app, ["train", str(own), "--out", str(run), *settings])
    assert first.exit_code == 0, first.output
    last, config = (run / "last.pt").read_bytes(), (run / "config.yaml").read_text(encoding="utf-8")
    moved, fewer = tmp_path / "moved", tmp_path / "fewer"
    for copy in (moved, fewer):
        shutil.copytree(own, copy, symlinks=True)
    for gone in sorted((fewer / "train" / "fractured").iterdir())[:2]:
        gone.unlink()

    resume = ["--out", str(run), *settings, "--set", "epochs=2", "--resume"]
    refused = CliRunner().invoke(app, ["train", str(fewer), *resume])
    _refused(refused, f"error (config_error): --resume continues {run}, which trained on other images")
    said = " ".join(refused.stderr.split())  # the set loads as 34 images ("data: ... 34 images")
    assert f"than the 32 training and validation images of {fewer} (it had 34," in said
    assert (run / "last.pt").read_bytes() == last  # and config.yaml still names the run's data
    assert (run / "config.yaml").read_text(encoding="utf-8") == config
    alike = tmp_path / "alike"
    for label, source in (("fractured", "Fractured"), ("not fractured", "Non_fractured")):
        others = iter(sorted((fracatlas_dir / "images" / source).glob("*.jpg"))[40:])
        for image in sorted(own.glob(f"*/{label}/*.jpg")):
            (alike / image.relative_to(own)).parent.mkdir(parents=True, exist_ok=True)
            (alike / image.relative_to(own)).write_bytes(
                next(others).read_bytes()
            )  # a link: read as its target
    _refused(
        CliRunner().invoke(app, ["train", str(alike), *resume]),
        f"error (config_error): --resume continues {run}, which trained on other images",
    )
    assert (run / "last.pt").read_bytes() == last
    exported = CliRunner().invoke(app, ["export", str(run), str(tmp_path / "b0"), "--data-dir", str(alike)])
    assert exported.exit_code == 0, exported.output
    training = json.loads((tmp_path / "b0" / "bundle.json").read_text(encoding="utf-8"))["training"]
    assert training["calibration_data"]["data"] == str(alike.resolve()), training

    # export too: the run's data folder changed since (a set without splits that grew is split
    # anew) had calibration, thresholds and test fitted on images the model trained on
    (own / "train" / "fractured" / "late.jpg").symlink_to(
        next((own / "val" / "fractured").iterdir()).resolve()
    )
    exported = CliRunner().invoke(app, ["export", str(run), str(tmp_path / "b1")])
    _refused(exported, f"error (dataset_error): {own} is not the data {run / 'best.pt'} trained on")
    assert not (tmp_path / "b1").exists()
    exported = CliRunner().invoke(app, ["export", str(run), str(tmp_path / "b2"), "--data-dir", str(moved)])
    assert exported.exit_code == 0, exported.output  # the same images in another folder

    resumed = CliRunner().invoke(app, ["train", str(moved), *resume])
    assert resumed.exit_code == 0, resumed.output
    assert len(json.loads((run / "history.json").read_text(encoding="utf-8"))) == 3
    # the run's own folder with an image's bytes changed, not its picture (a comment added, as an
    # anonymiser or EXIF stripper does): still its data, where it was refused as "not the data"
    image = sorted((moved / "train" / "fractured").iterdir())[0]
    data = image.read_bytes()
    image.unlink()  # a link into FracAtlas: never written through
    image.write_bytes(data[:2] + b"\xff\xfe\x00\x08anon!!" + data[2:])
    exported = CliRunner().invoke(app, ["export", str(run), str(tmp_path / "b3")])
    assert exported.exit_code == 0, exported.output
    assert "calibration_data" not in json.loads((tmp_path / "b3" / "bundle.json").read_text())["training"]
    resumed = CliRunner().invoke(app, ["train", str(moved), *resume[:-3], "--set", "epochs=3", "--resume"])
    assert resumed.exit_code == 0, resumed.output


def test_export_names_why_it_read_an_image_that_cannot_be_read(tiny_bundle, tiny_dataset, tmp_path):
    """The fit stopped with the reader's message alone ("broken.jpg: not a supported image ..."),
    not saying that export reads every training and validation image, nor how to find such files;
    the file is named by its path under the data set (in MURA every view is ``image1.png``)."""
    data = shutil.copytree(tiny_dataset, tmp_path / "data", symlinks=True)
    # a validation image the run trained with, broken since (an image added since is refused first:
    # the data would not be the run's)
    broken = sorted((data / "val" / "fractured").iterdir())[0]
    broken.unlink()
    broken.write_bytes(b"not an image at all")
    out = tmp_path / "bundle"
    result = CliRunner().invoke(
        app, ["export", str(tiny_bundle.parent / "run"), str(out), "--data-dir", str(data)]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    steps, _, error = result.stderr.partition("error (")
    message = "error (" + " ".join(error.split())
    refused = f"error (unsupported_format): val/fractured/{broken.name}: not a supported image"
    assert message.startswith(refused), message
    # each step said as it began, in a log as on a terminal (two silent minutes on FracAtlas)
    assert steps.splitlines() == [
        "writing model.onnx ...",
        "calibrating on the 12 validation images ...",
    ], steps
    assert "(an image of the val split, whose outputs the calibration is fitted on" in message
    assert "`fracsight audit DATA` lists the files that cannot be read)" in message
    assert not out.exists()


@pytest.fixture(scope="module")
def class_bundle(tiny_dataset, tmp_path_factory) -> Path:
    """A tiny class-only bundle (classes a, b, c), trained and exported through the CLI."""
    pytest.importorskip("torch")
    from conftest import TINY_TRAINING

    work = tmp_path_factory.mktemp("class_bundle")
    data = _class_folders(tiny_dataset, work / "abc")
    settings = [arg for item in TINY_TRAINING for arg in ("--set", item)]
    trained = CliRunner().invoke(app, ["train", str(data), "--out", str(work / "run"), *settings])
    assert trained.exit_code == 0, trained.output
    exported = CliRunner().invoke(app, ["export", str(work / "run"), str(work / "bundle")])
    assert exported.exit_code == 0, exported.output
    return work / "bundle"


def test_evaluate_with_data_or_options_the_model_does_not_fit_is_a_bad_argument(
    class_bundle, tiny_bundle, tiny_dataset, tmp_path
):
    """export refused such data with exit 2; evaluate refused the same with exit 1, as a failure."""
    runner = CliRunner()
    fracture_only = runner.invoke(app, ["evaluate", str(class_bundle), str(tiny_dataset), "--split", "val"])
    _refused(fracture_only, "has no class labels (a, b, c) to evaluate against")
    class_only = runner.invoke(
        app, ["evaluate", str(tiny_bundle), str(class_bundle.parent / "abc"), "--split", "val"]
    )
    _refused(class_only, "has no fracture labels to evaluate against")
    other = _class_folders(tiny_dataset, tmp_path / "abd", "abd")
    unknown = runner.invoke(app, ["evaluate", str(class_bundle), str(other), "--split", "val"])
    _refused(unknown, "the model does not know ['d']")
    threshold = runner.invoke(
        app, ["evaluate", str(class_bundle), str(class_bundle.parent / "abc"), "--threshold", "0.5"]
    )
    _refused(threshold, "has no fracture head")


def test_a_runs_last_pt_named_as_the_model_says_what_it_is(tiny_bundle, tiny_dataset, tmp_path):
    """It said last.pt "is not a checkpoint written by fracsight (it lacks model, arch, config)":
    untrue (fracsight wrote it, and it holds the model's weights), with exit 1."""
    pytest.importorskip("torch")
    from conftest import TINY_TRAINING

    last = tiny_bundle.parent / "run" / "last.pt"
    message = f"{last} is a run's resume checkpoint (last.pt), not a trained model: use the run's best.pt"
    exported = CliRunner().invoke(app, ["export", str(last), str(tmp_path / "b")])
    _refused(exported, message)
    settings = [arg for item in [*TINY_TRAINING, f"init={last}"] for arg in ("--set", item)]
    started = CliRunner().invoke(app, ["train", str(tiny_dataset), "--out", str(tmp_path / "r"), *settings])
    _refused(started, f"init: {message}")
    assert not (tmp_path / "b").exists() and not (tmp_path / "r").exists()


def test_export_refuses_other_data_whose_validation_images_it_trained_on(
    tiny_bundle, tiny_dataset, fracatlas_dir, tmp_path
):
    """`export RUN OUT --data-dir DATA/images` (the training set's own images, read anew) or a copy
    of the training data with an image added was taken for other data: calibration and thresholds
    were fitted on 5 of 6 images the network trained on, and the card said "Calibrated on other
    data"."""
    import pytest

    from fracsight.data import DataMismatchError
    from fracsight.training.export_bundle import export_bundle

    other = tmp_path / "other"
    for split in ("train", "val"):
        for label in ("fractured", "not fractured"):
            (other / split / label).mkdir(parents=True)
    trained = sorted((tiny_dataset / "train" / "fractured").iterdir())
    unseen = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[40:44]
    normal = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[40:48]
    for i, path in enumerate([*trained[:2], *unseen]):  # two of the six the network trained on
        (other / ("val" if i % 2 == 0 else "train") / "fractured" / f"f{i}.jpg").symlink_to(path.resolve())
    for i, path in enumerate(normal):
        (other / ("val" if i % 2 == 0 else "train") / "not fractured" / f"n{i}.jpg").symlink_to(
            path.resolve()
        )
    run = tiny_bundle.parent / "run"
    with pytest.raises(
        DataMismatchError, match=r"1 of the 7 validation images of .* are images .* trained on"
    ):
        export_bundle(run, tmp_path / "out", data_dir=other)
    assert not (tmp_path / "out").exists()


def test_quantize_refuses_other_data_whose_validation_images_the_network_trained_on(
    tiny_bundle, tiny_dataset, tmp_path
):
    """`quantize B OUT --data DATA/images` (or a copy of the training data) passed as other data:
    the gate, calibration and thresholds were fitted mostly on images the network trained on, and
    the card said "Quantized on other data"."""
    import pytest

    from fracsight.data import DataMismatchError
    from fracsight.quantize.build import quantize_bundle

    copy = tmp_path / "copy"
    for split in ("train", "val"):  # the training data again, its splits swapped
        for label in ("fractured", "not fractured"):
            (copy / ("val" if split == "train" else "train") / label).mkdir(parents=True)
            for path in (tiny_dataset / split / label).iterdir():
                (copy / ("val" if split == "train" else "train") / label / path.name).symlink_to(
                    path.resolve()
                )
    with pytest.raises(
        DataMismatchError, match=r"of the 24 validation images of .* are images tiny-test v1 trained"
    ):
        quantize_bundle(tiny_bundle, tmp_path / "int8", data_dir=copy)
    assert not (tmp_path / "int8").exists()


def test_other_data_is_not_refused_where_the_training_data_changed_since(fracatlas_dir, tmp_path, caplog):
    """The check re-splits the run's data set: one image added to a set without given splits
    re-split it, and 4 of 8 images the run never saw were called "images RUN trained on"."""
    import logging

    from fracsight.data import load_dataset
    from fracsight.data.leakage import images_record, refuse_images_trained_on, trained_images_among
    from fracsight.data.splits import train_val_samples

    data = tmp_path / "data"
    for label, folder in (("fractured", "Fractured"), ("not fractured", "Non_fractured")):
        (data / label).mkdir(parents=True)
        for path in sorted((fracatlas_dir / "images" / folder).glob("*.jpg"))[20:40]:
            (data / label / path.name).symlink_to(path)
    train, val = train_val_samples(load_dataset(data), 0)
    sha = images_record(data, train + val)["images_sha256"]
    assert trained_images_among(data, "auto", 0, 0, [*train[:3], *val], sha) == 3  # as split: told
    extra = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[60]
    (data / "fractured" / extra.name).symlink_to(extra)  # the set re-splits: cannot be told
    assert trained_images_among(data, "auto", 0, 0, [*train[:3], *val], sha) is None
    trained = {"data": str(data), "layout": "auto", "seed": 0, "max_samples": 0}
    with caplog.at_level(logging.WARNING, logger="fracsight.data.leakage"):
        refuse_images_trained_on(trained, sha, tmp_path / "other", val, "RUN")  # no refusal
    assert "could not check whether the validation images of" in caplog.text


@pytest.mark.parametrize(
    "command", ["fracsight train data\n```\n## Measured results", "fracsight train \\\n  data"]
)
def test_a_train_command_of_several_lines_is_refused_before_any_work(command: str, tmp_path: Path) -> None:
    """`export --train-command` with a fence closed the card's Reproduce block early: what
    followed read as the card's own text (a made-up "## Measured results" section)."""
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["export", str(tmp_path), str(out), "--train-command", command])
    _refused(result, "--train-command must be one line")
    assert not out.exists()
