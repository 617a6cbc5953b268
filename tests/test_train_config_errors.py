"""`fracsight train`'s configuration errors: one line naming the problem, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracsight.errors import ConfigError
from fracsight.training import load_config


def _train(tmp_path: Path, *args: str):
    """`fracsight train` on an empty data folder: a config error comes before the data is read."""
    from fracsight.cli import app

    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), *args])


@pytest.mark.parametrize(
    ("yaml_bytes", "message"),
    [
        (b"epochs: [3\n", "cannot read config .*: expected ',' or ']'.* at line 2, column 1$"),
        (b"epochs:\t3\n", r"at line 1, column 8 \(indent YAML with spaces, not tabs\)$"),
        (b"augment:\n\thflip: 0\n", r"line 2, column 1 \(indent YAML with spaces, not tabs\)$"),
        (b"\xff\xfeepochs: 3\n", "cannot read config .*: not UTF-8 text"),
        (b"epochs: 3\nepochs: 4\n", "option 'epochs' is given twice"),
        (b"augment:\n  hflip: 0\n  hflip: 1\n", "option 'hflip' is given twice"),
        # a list or mapping as a key: a TypeError traceback (unhashable) until 2026-12-05
        (b"? [a, b]\n: 1\n", r"line 1: an option's name must be a word, got a list$"),
        (b"augment:\n  ? {x: 1}\n  : 2\n", r"line 2: an option's name must be a word, got a dict$"),
    ],
)
def test_unreadable_yaml_is_one_line_naming_the_place(tmp_path, yaml_bytes, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(yaml_bytes)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert "\n" not in str(caught.value)


def test_cli_prints_a_yaml_syntax_error_in_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("augment:\n  hflip: 0\n\trotate_deg: 3\n")
    result = _train(tmp_path, "-c", str(path))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error (config_error)")
    assert not (tmp_path / "run").exists()


def test_yaml_merge_keys_are_read(tmp_path):
    """`<<: *defaults` was refused: "could not determine a constructor for the tag ...merge"."""
    path = tmp_path / "c.yaml"
    path.write_text("base: &b {hflip: 0.0, rotate_deg: 5}\naugment:\n  <<: *b\n  translate: 0.1\nepochs: 1\n")
    with pytest.raises(ConfigError, match="unknown training option"):  # `base` is none: the merge read
        load_config(path)
    path.write_text("augment:\n  <<: {hflip: 0.0, rotate_deg: 5}\n  translate: 0.1\nepochs: 1\n")
    cfg = load_config(path)
    assert (cfg.augment.hflip, cfg.augment.rotate_deg, cfg.augment.translate, cfg.epochs) == (0.0, 5, 0.1, 1)
    path.write_text("augment:\n  <<: {hflip: 0.0}\n  translate: 0.1\n  translate: 0.2\n")
    with pytest.raises(ConfigError, match="option 'translate' is given twice"):
        load_config(path)


def test_a_config_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbfepochs: 3\n")
    assert load_config(path).epochs == 3


def test_spaces_around_an_override_key_are_ignored():
    assert load_config(None, [" epochs = 3"]).epochs == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=-1", r"seed=-1 \(0 or more and below 2\*\*63"),  # numpy refused it in training, a traceback
        (f"seed={2**63}", r"seed=9223372036854775808 \(0 or more and below 2\*\*63"),  # torch's limit
        ("name=", r"name='' \(not empty\)"),
        ("version= ", r"version=' ' \(not empty\)"),
        ("out=", r"out='' \(not empty\)"),  # the current folder
        # after the data set was read, and (no ImageNet weights) with exit 1 as no setting error
        ("arch=resnet5O", r"arch='resnet5O' \(one of .*; did you mean resnet50\?\)"),
        ("arch=resnet50", r"no offline ImageNet weights for resnet50: use --set pretrained=none"),
    ],
)
def test_settings_training_cannot_use_are_refused_before_it_starts(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
    result = _train(tmp_path, "--set", override)
    assert result.exit_code == 2 and "error (config_error)" in result.stderr
    assert not isinstance(result.exception, ValueError) and not (tmp_path / "run").exists()


def test_a_seed_beyond_32_bits_seeds_every_generator() -> None:
    """numpy's legacy seed takes 32 bits: a larger seed passed the config and then raised
    ``ValueError`` in training, with a traceback."""
    pytest.importorskip("torch")
    import numpy as np

    from fracsight.training.trainer import seed_everything

    seed_everything(2**40 + 5)
    first = np.random.random()
    seed_everything(2**40 + 5)
    assert np.random.random() == first


def test_a_packaged_recipe_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    """`-c fracatlas-lite0-384` works where there is no checkout's `configs/` (a pip install)."""
    from fracsight.training.config import recipe_names

    monkeypatch.chdir(tmp_path)
    names = recipe_names()
    assert {"fracatlas-lite0-384", "fracatlas-lite0-384-gpu", "fracatlas-lite0-384-continue"} <= set(names)
    for name in names:
        assert load_config(name) == load_config(f"{name}.yaml")
    assert load_config("fracatlas-lite0-384-gpu").ema_decay == 0.998


def test_a_file_of_a_recipe_s_name_wins_over_the_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("fracatlas-lite0-384.yaml").write_text("epochs: 1\n")
    assert load_config("fracatlas-lite0-384.yaml").epochs == 1
    assert load_config("fracatlas-lite0-384").epochs == 12  # no file of that exact name: the recipe


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("configs/fracatlas-lite0-384.yaml", r"no such file \(the packaged recipe: -c fracatlas-lite0-384\)"),
        ("mine.yaml", r"no such file \(packaged recipes: fracatlas-lite0-384, .*fracatlas-lite0-384-gpu\)$"),
    ],
)
def test_a_missing_config_points_to_the_packaged_recipes(tmp_path, monkeypatch, given, message):
    from fracsight.training import TrainConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainConfigError, match=message) as caught:
        load_config(given)
    assert caught.value.code == "not_found" and caught.value.bad_argument  # as any missing input path


def test_train_takes_a_packaged_recipe_s_name_and_models_lists_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fracsight train DATA -c fracatlas-lite0-384` from a folder with no configs/ (a pip install):
    the recipe is read (a bad --set then names the option, not a missing file)."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    runner = CliRunner()
    result = runner.invoke(app, ["train", "data", "-c", "fracatlas-lite0-384", "--set", "epochs=-1"])
    assert result.exit_code == 2 and "epochs=-1 (0 or more)" in result.stderr, result.stderr
    listed = runner.invoke(app, ["models"])
    assert "training recipes (fracsight train DATA_DIR -c NAME): fracatlas-lite0-384," in listed.stdout


def test_an_architecture_without_imagenet_weights_is_fine_where_they_are_not_used():
    """init= replaces every weight, and a saved run's record trained already: refused, a run
    continued from another could be neither trained, exported nor resumed."""
    assert load_config(None, ["arch=small_cnn", "init=runs/first/best.pt"]).arch == "small_cnn"
    assert load_config(None, None, saved=True, arch="small_cnn").pretrained == "imagenet"
