"""Training config, augmentation, the trainer (both data paths), resume, export and the N-class path."""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_TRAINING as TINY  # noqa: E402
from fracsight.data import load_dataset  # noqa: E402
from fracsight.errors import ConfigError  # noqa: E402
from fracsight.training import Trainer, load_config  # noqa: E402
from fracsight.training import trainer as trainer_module  # noqa: E402
from fracsight.training.augment import augment_batch  # noqa: E402
from fracsight.training.config import AugmentConfig, TrainConfig  # noqa: E402
from fracsight.training.trainer import WeightAverage, bf16_pays  # noqa: E402


def test_config_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("arch: small_cnn\npretrained: none\nepochs: 3\naugment:\n  hflip: 0.0\n")
    cfg = load_config(path, ["epochs=5", "augment.rotate_deg=3", "amp=false", "augment.scale=0.8,1.2"])
    assert (cfg.arch, cfg.epochs, cfg.amp) == ("small_cnn", 5, False)
    assert cfg.augment.hflip == 0.0 and cfg.augment.rotate_deg == 3.0 and cfg.augment.scale == (0.8, 1.2)


def test_a_recipe_used_on_other_data_is_named_after_that_data(tmp_path):
    """The shipped recipe on a researcher's own data: the bundle must not be called fracatlas-...,
    nor the run land in runs/fracatlas-...; a name or --out given is kept."""
    path = tmp_path / "recipe.yaml"
    path.write_text(f"data: {tmp_path / 'fracatlas'}\nname: fracatlas-small\nout: runs/fracatlas-small\n")
    own = tmp_path / "my wrists"
    cfg = load_config(path, ["input_size=128"], data=str(own))
    assert (cfg.name, cfg.out) == (
        "my-wrists-efficientnet_lite0-128",
        "runs/my-wrists-efficientnet_lite0-128",
    )
    assert load_config(path, ["name=wrists"], data=str(own)).out == "runs/wrists"
    assert load_config(path, [], data=str(own), out="elsewhere").out == "elsewhere"
    same = load_config(path, [], data=str(tmp_path / "fracatlas"))
    assert (same.name, same.out) == ("fracatlas-small", "runs/fracatlas-small")
    assert load_config(path, [f"data={own}"]).name == "my-wrists-efficientnet_lite0-384"  # --set data=
    # the command that started the run, with --resume: its folder, and its name kept (the recipe's
    # folder was looked in, and with --out given the run was renamed after the recipe)
    resumed = load_config(path, ["input_size=128"], resume=True, data=str(own))
    assert (resumed.name, resumed.out) == (cfg.name, cfg.out)
    elsewhere = load_config(path, ["input_size=128"], resume=True, data=str(own), out=cfg.out)
    assert elsewhere.name == cfg.name


def test_a_packaged_recipe_given_other_data_in_python_is_named_after_that_data(tiny_dataset) -> None:
    """docs/training.md's From Python: `load_config(RECIPE)` and `Trainer(cfg, load_dataset(mine))`
    made a bundle called fracatlas-lite0-384 of the researcher's own data, where `train` names it
    after the data; an `out` given is kept."""
    from fracsight.data import load_dataset
    from fracsight.training import Trainer

    size = tiny_dataset.resolve().name
    trainer = Trainer(
        load_config("fracatlas-lite0-384", ["device=cpu"]), load_dataset(tiny_dataset), show_progress=False
    )
    assert (trainer.cfg.name, trainer.cfg.out) == (
        f"{size}-efficientnet_lite0-384",
        f"runs/{size}-efficientnet_lite0-384",
    )
    kept = Trainer(
        load_config("fracatlas-lite0-384", ["device=cpu"], out="runs/mine"), load_dataset(tiny_dataset)
    )
    assert kept.cfg.out == "runs/mine" and kept.cfg.name == f"{size}-efficientnet_lite0-384"


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        ("epochz: 3\n", [], "unknown training option"),
        (
            "",
            ["nope=1"],
            r"unknown option 'nope' in override 'nope=1' \(options: .*batch_size.*; augment\.<.*hflip",
        ),
        ("", ["epochs"], "must look like key=value"),
        ("", ["epochs=many"], "cannot read 'many'"),
        ("", ["augment.colour=1"], r"unknown augment option 'colour' \(augment options: .*hflip"),
        ("- a\n- b\n", [], "must hold a mapping"),
        # YAML of the wrong shape or type: named, never a TypeError later in training
        ("epochs: five\n", [], "epochs: cannot read 'five' as int"),
        ("epochs: 2.5\n", [], "epochs: cannot read 2.5 as int"),
        ("lr: [1]\n", [], "lr: expected a number"),
        ("amp: maybe\n", [], "amp: expected a boolean"),
        ("init:\n", [], "init: no value given"),
        ("version: 1.10\n", [], "version: expected text"),
        ("augment: [1, 2]\n", [], "augment: expected a mapping"),
        ("augment:\n  scale: 0.9\n", [], r"augment.scale: expected 2 numbers"),
        ("1: 2\n", [], "unknown training option"),
        ("", ["augment.scale=0.9"], r"augment.scale: expected 2 numbers"),
        ("", ["augment.scale=a,b"], "augment.scale: cannot read 'a'"),
        ("", ["lr=inf"], "lr: cannot read 'inf'"),
        ("", ["augment.hflip=2"], r"augment.hflip=2.0 \(a probability"),
        ("", ["augment.scale=1.2,0.8"], r"augment.scale=\(1.2, 0.8\)"),
        ("", ["augment.gamma=0,1"], "augment.gamma"),
        # a misspelt option names the one meant
        ("epoch: 3\n", [], r"epoch \(did you mean epochs\?\)"),
        ("augment:\n  hflp: 0\n", [], r"hflp \(did you mean hflip\?\)"),
        ("", ["epoch=3"], r"'epoch' in override 'epoch=3' \(did you mean epochs\?\)"),
        ("", ["lr_fintune=1e-4"], r"did you mean lr_finetune\?"),
        ("", ["EPOCHS=3"], r"did you mean epochs\?"),
        ("", ["augment.hflp=0"], r"did you mean augment.hflip\?"),
        ("", ["hflip=0"], r"did you mean augment.hflip\?"),
        ("", ["augment=0"], "one augment option at a time"),
        ("", ["=3"], "must look like key=value"),
    ],
)
def test_config_errors_are_specific(tmp_path, yaml_text, overrides, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, overrides)


def test_yaml_values_are_read_as_the_option_types(tmp_path):
    path = tmp_path / "c.yaml"  # YAML 1.1 reads 1e-3 (no dot) as a string; version: 2 as a number
    path.write_text("lr: 1e-3\nversion: 2\ninput_size: 96.0\nseed: 12345678901234567\n")
    cfg = load_config(path, ["augment.gamma=(0.9, 1.1)"])
    assert (cfg.lr, cfg.version, cfg.input_size, cfg.seed) == (0.001, "2", 96, 12345678901234567)
    assert cfg.augment.gamma == (0.9, 1.1) and isinstance(cfg.input_size, int)


def test_paths_in_yaml_expand_the_home_folder_and_booleans_take_one_and_zero(tmp_path, monkeypatch):
    """`out: ~/runs/exp1` in YAML trained into ./~/runs/exp1 (no shell expands it there), said as
    ~/runs/exp1; `amp: 1` was "expected a boolean" where `--set amp=1` was read."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "c.yaml"
    path.write_text("out: ~/runs/exp1\ncache_dir: ~/.cache/fracsight\ndata: ~/wrists\namp: 1\n")
    cfg = load_config(path, ["init=~/runs/a/best.pt", "pretrained=~/weights.pt", "name=~x"])
    home = tmp_path / "home"
    assert (cfg.out, cfg.cache_dir, cfg.data) == (
        f"{home}/runs/exp1",
        f"{home}/.cache/fracsight",
        f"{home}/wrists",
    )
    assert (cfg.init, cfg.pretrained) == (f"{home}/runs/a/best.pt", f"{home}/weights.pt")
    assert cfg.name == "~x" and cfg.amp is True  # a name is no path


@pytest.mark.parametrize(
    ("device", "flags", "expected"),
    [
        ("cuda", set(), True),
        ("cpu", {"avx2", "avx512f", "avx512_bf16"}, True),
        ("cpu", {"avx2", "amx_bf16", "amx_tile"}, True),
        ("cpu", {"avx2", "avx512f", "avx512_vnni"}, False),  # torch would emulate bfloat16: slower
        ("cpu", set(), False),  # no /proc/cpuinfo (macOS, Windows)
    ],
)
def test_bfloat16_autocast_only_where_it_is_faster(monkeypatch, device, flags, expected):
    monkeypatch.setattr(trainer_module, "_cpu_flags", lambda: frozenset(flags))
    assert bf16_pays(torch.device(device)) is expected


def test_runs_train_with_and_without_bfloat16(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "_cpu_flags", lambda: frozenset({"avx512_bf16"}))
    data = load_dataset(tiny_dataset)
    runs = {}
    for amp in (True, False):
        out = str(tmp_path / f"amp-{amp}")
        cfg = load_config(None, [*TINY, f"amp={amp}"], data=str(tiny_dataset), out=out)
        trainer = Trainer(cfg, data, show_progress=False)
        assert trainer.amp is amp  # `amp: false` keeps float32 even where bfloat16 would pay
        for backbone_trains, expected in ((False, amp), (True, False)):  # a CPU: float32 in phase 2
            trainer._backbone_trains = backbone_trains
            with trainer._autocast():
                assert torch.is_autocast_enabled("cpu") is expected
            with trainer._autocast(train=False):  # validation scores as the exported float model
                assert not torch.is_autocast_enabled("cpu")
        trainer._backbone_trains = False
        runs[amp] = trainer.fit()
    for amp, result in runs.items():  # both complete and validate; bfloat16 changes the numbers a little
        assert (result.run_dir / "best.pt").is_file(), amp
        assert all(math.isfinite(r["train_loss"]) for r in result.history)


def test_augmentation_moves_the_mask_with_the_image():
    img = torch.zeros(1, 1, 32, 32)
    img[..., :, :8] = 1.0  # bright left strip
    mask = img.clone()
    cfg = AugmentConfig(
        hflip=1.0, rotate_deg=0.0, scale=(1.0, 1.0), translate=0.0, gamma=(1.0, 1.0), contrast=(1.0, 1.0)
    )
    out_img, out_mask = augment_batch(img, mask, cfg, torch.Generator().manual_seed(0))
    assert out_img[..., :, -6:].mean() > 0.9 and out_img[..., :, :20].mean() < 0.05  # flipped to the right
    torch.testing.assert_close(out_img, out_mask)


def test_augmentation_is_seeded_and_stays_in_range():
    img = torch.rand(4, 1, 32, 32)
    a = augment_batch(img, img.clone(), AugmentConfig(), torch.Generator().manual_seed(3))[0]
    b = augment_batch(img, img.clone(), AugmentConfig(), torch.Generator().manual_seed(3))[0]
    torch.testing.assert_close(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_tiny_bundle_training_wrote_its_run(tiny_bundle):
    run = tiny_bundle.parent / "run"
    history = json.loads((run / "history.json").read_text())
    assert [h["phase"] for h in history] == [1, 2]
    assert all(np.isfinite(h["train_loss"]) for h in history)
    assert (run / "best.pt").is_file() and (run / "curves.png").stat().st_size > 1000
    spec = json.loads((tiny_bundle / "bundle.json").read_text())
    assert spec["temperature"] > 0 and {op["name"] for op in spec["operating_points"]} == {
        "balanced",
        "triage",
    }
    card = (tiny_bundle / "card.md").read_text()
    assert (
        "decision aid" in card
        and "Frozen-stage feature cache: 1 copy of each training image, unaugmented" in (card)
    )


def test_online_augmentation_path_and_resume(tiny_dataset, tmp_path, capsys):
    """Without the feature cache every batch is augmented on the fly; a resumed run continues its history."""
    overrides = [*TINY, "feature_cache_variants=0", "arch=small_cnn", "pretrained=none"]
    cfg = load_config(None, overrides, data=str(tiny_dataset), out=str(tmp_path / "run"))
    dataset = load_dataset(tiny_dataset)
    first = Trainer(cfg, dataset, show_progress=False).fit()
    assert len(first.history) == 2
    longer = load_config(None, [*overrides, "epochs=2"], data=str(tiny_dataset), out=str(tmp_path / "run"))
    # another recipe is refused before anything is read or written: it would mix two in one run
    # and write its settings over the run's config.yaml (both happened)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    other = load_config(
        None,
        [*overrides, "epochs=2", "input_size=96", "lr=0.01"],
        data=str(tiny_dataset),
        out=str(tmp_path / "run"),
    )
    with pytest.raises(
        ConfigError, match=r"these differ: input_size 64 -> 96; lr .* -> 0\.01\. Give the same"
    ):
        Trainer(other, dataset, show_progress=False).fit(resume=True)
    assert (tmp_path / "run" / "config.yaml").read_text() == saved
    # a new name on --resume was checked nowhere and kept only if a new best epoch came
    renamed = load_config(
        None, [*overrides, "epochs=2", "name=renamed"], data=str(tiny_dataset), out=str(tmp_path / "run")
    )
    with pytest.raises(ConfigError, match=r"these differ: name .* -> 'renamed'"):
        Trainer(renamed, dataset, show_progress=False).fit(resume=True)
    # a damaged config.yaml turned the check off: the settings last.pt records stand in for it
    (tmp_path / "run" / "config.yaml").write_text("\tbroken: [", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"these differ: input_size 64 -> 96"):
        Trainer(other, dataset, show_progress=False).fit(resume=True)
    (tmp_path / "run" / "config.yaml").write_text(saved)
    resumed = Trainer(longer, dataset, show_progress=False).fit(resume=True)  # more epochs: allowed
    assert len(resumed.history) == 3
    assert resumed.history[:2] == first.history
    # resumed again with no more epochs: it trained nothing, exit 0, without a word
    capsys.readouterr()
    again = Trainer(longer, dataset, show_progress=True).fit(resume=True)
    assert again.history == resumed.history
    said = " ".join(capsys.readouterr().err.split())
    assert (
        "has trained 3 epochs, 3 asked (epochs_frozen + epochs): nothing to train; "
        "add --set epochs=N (more than 2)" in said
    )
    # the schedule of the epochs before is kept, and the card says the config alone (Reproduce)
    # trains another model: the same command twice gave another best epoch and other weights
    schedules = json.loads(torch.load(tmp_path / "run" / "last.pt", weights_only=True)["schedules"])
    assert schedules == [{"epochs": 1, "patience": cfg.patience, "until_epoch": 2}]
    from fracsight.training.export_bundle import export_bundle

    export_bundle(tmp_path / "run", tmp_path / "bundle")
    card = " ".join((tmp_path / "bundle" / "card.md").read_text(encoding="utf-8").split())
    assert "The run was resumed with another schedule (`--resume --set epochs=N`); it followed, " in card
    assert "up to epoch 2, 1 fine-tuning epochs" in card and "another model than this one" in card


def test_a_run_resumed_to_train_longer_is_exported_with_its_final_schedule(tmp_path):
    """Trained with epochs=1, resumed with epochs=4, its best epoch from before: the card said "up to
    1 epoch" beside "epoch 1 of 5", and its Reproduce config.yaml trained 4."""
    from fracsight.training.export_bundle import _schedule_as_run

    (tmp_path / "config.yaml").write_text("epochs: 4\npatience: 9\n")
    before = load_config(None, ["epochs=1", "patience=3"])
    after = _schedule_as_run(before, tmp_path / "best.pt")
    assert (after.epochs, after.patience) == (4, 9) and after.lr == before.lr
    assert _schedule_as_run(before, tmp_path / "model.pt") == before  # not a run folder's best.pt
    (tmp_path / "config.yaml").write_text("epochs: [\n")  # unreadable: best.pt's own is kept
    assert _schedule_as_run(before, tmp_path / "best.pt") == before


def test_a_run_resumed_from_its_data_folders_new_place_is_exported_from_there(tmp_path):
    """`mv data data2; train data2 --resume`, its best epoch from before: export looked for the old
    folder ("the data set the run trained on ... is not a folder here"), though config.yaml said where."""
    from fracsight.training.export_bundle import _schedule_as_run

    (tmp_path / "data2").mkdir()
    (tmp_path / "config.yaml").write_text(f"epochs: 4\ndata: {tmp_path / 'data2'}\n")
    before = load_config(None, [f"data={tmp_path / 'data'}"])
    assert _schedule_as_run(before, tmp_path / "best.pt").data == str(tmp_path / "data2")
    (tmp_path / "data").mkdir()  # the old place is there: best.pt's own is kept (its digest decides)
    assert _schedule_as_run(before, tmp_path / "best.pt").data == str(tmp_path / "data")


def test_weight_average_follows_the_model_with_a_warm_up():
    model = torch.nn.Linear(2, 1)
    average = WeightAverage(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update(model)  # the decay ramps up from 0: the first step takes mostly the new weights
    expected = start + (1 - 0.9 * (1 - math.exp(-1 / 100))) * 1.0
    assert torch.allclose(average.model.weight, expected)
    assert not average.model.weight.requires_grad
    for _ in range(2000):
        average.update(model)
    assert torch.allclose(average.model.weight, model.weight, atol=1e-6)


def test_weight_average_is_what_gets_saved_and_resumed(tiny_dataset, tmp_path):
    overrides = [*TINY, "feature_cache_variants=0", "arch=small_cnn", "pretrained=none", "ema_decay=0.99"]
    cfg = load_config(None, overrides, data=str(tiny_dataset), out=str(tmp_path / "run"))
    dataset = load_dataset(tiny_dataset)
    first = Trainer(cfg, dataset, show_progress=False).fit()
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert last["average_updates"] > 0
    key = next(k for k, v in last["model"].items() if v.dtype.is_floating_point and v.dim() > 1)
    assert not torch.equal(last["model"][key], last["average"][key])  # the average lags the weights
    if first.best_epoch == len(first.history):
        assert torch.equal(best["model"][key], last["average"][key])
    longer = load_config(None, [*overrides, "epochs=2"], data=str(tiny_dataset), out=str(tmp_path / "run"))
    resumed = Trainer(longer, dataset, show_progress=False).fit(resume=True)
    assert resumed.history[:2] == first.history
    again = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert again["average_updates"] > last["average_updates"]


def _train_process(run: Path, data: Path, settings: list[str], *extra: str) -> subprocess.Popen[bytes]:
    """`fracsight train` as its own process; its output goes to files beside the run (a pipe nobody
    reads while the test waits would fill and stop it)."""
    command = [sys.executable, "-c", "from fracsight.cli import main; main()", "train", str(data)]
    command += ["--out", str(run), *(a for s in settings for a in ("--set", s)), *extra]
    log = run.parent / f"{run.name}.log"
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def _wait_for_epoch(proc: subprocess.Popen[bytes], run: Path, epoch: int) -> None:
    """Until ``run``'s history.json (written after last.pt, both replaced whole) reaches ``epoch``."""
    deadline = time.monotonic() + 120
    history = run / "history.json"
    while not (history.is_file() and json.loads(history.read_text())[-1]["epoch"] >= epoch):
        assert proc.poll() is None, (run.parent / f"{run.name}.log").read_text()
        assert time.monotonic() < deadline, f"no epoch {epoch} in {run}"
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP"])
def test_a_run_stopped_by_a_scheduler_or_a_closed_terminal_says_what_it_keeps(tiny_dataset, tmp_path, stop):
    """SIGTERM (a job scheduler, `timeout`) ended `train` with exit 143 and not a word; SIGHUP (the
    ssh session closed) killed it outright. Both now say, as Ctrl-C does, which epoch is kept."""
    settings = [*TINY, "arch=small_cnn", "pretrained=none", "feature_cache_variants=0", "input_size=128"]
    settings += ["epochs_frozen=0", "epochs=20", "patience=100"]
    run = tmp_path / "run"
    process = _train_process(run, tiny_dataset, settings)
    _wait_for_epoch(process, run, 1)
    sig = getattr(signal, stop)
    process.send_signal(sig)
    assert process.wait(timeout=60) == 128 + sig
    said = (tmp_path / "run.log").read_text()
    assert "Traceback" not in said
    assert f"stopped ({stop}): {run} keeps epoch " in said and "add --resume" in said, said
    assert said.rstrip().splitlines()[-1].startswith(f"cache: {tmp_path / '.cache'} ("), said


def test_a_killed_run_resumes_to_where_an_uninterrupted_run_ends(tiny_dataset, tmp_path):
    """A real `fracsight train` killed outright (SIGKILL) after its first checkpoint, resumed with
    `--resume`, stopped again by Ctrl-C (SIGINT) mid-epoch and resumed to the end, ends exactly where
    the same run left alone ends: the same history (but the seconds each epoch took) and bit-identical
    best.pt and last.pt. The generator that draws each epoch's order and every augmentation is kept in
    last.pt; until it was, the resumed run drew other augmentations from its first epoch on and ended
    elsewhere (with these settings less the weight average: validation AUROC 0.53 at the end instead
    of 0.69, best.pt from another epoch). Exact on the CPU with a fixed seed;
    the weight average is on, so its state is resumed too. Ctrl-C says in one line which epoch the run
    keeps and how to continue, exit code 130, no traceback."""
    settings = [*TINY, "arch=small_cnn", "pretrained=none", "feature_cache_variants=0", "input_size=128"]
    settings += ["epochs_frozen=2", "epochs=4", "ema_decay=0.9", "patience=100"]  # no early stop
    total = 6
    whole = _train_process(tmp_path / "whole", tiny_dataset, settings)  # left alone, alongside
    run = tmp_path / "run"

    killed = _train_process(run, tiny_dataset, settings)
    _wait_for_epoch(killed, run, 1)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    kept = torch.load(run / "last.pt", weights_only=True)["epoch"]
    assert 1 <= kept < total - 2, "the kill came too late to test anything: make the epochs longer"

    resumed = _train_process(run, tiny_dataset, settings, "--resume")
    _wait_for_epoch(resumed, run, kept + 1)
    resumed.send_signal(signal.SIGINT)
    assert resumed.wait(timeout=60) == 130
    kept = torch.load(run / "last.pt", weights_only=True)["epoch"]
    assert kept < total, "Ctrl-C came too late to test anything: make the epochs longer"
    said = (tmp_path / "run.log").read_text()
    assert "Traceback" not in said and "Aborted" not in said
    message = f"interrupted: {run} keeps epoch {kept} (last.pt); add --resume to the same command to continue"
    assert said.rstrip().splitlines()[-2:] == [message, said.rstrip().splitlines()[-1]], said
    assert said.rstrip().splitlines()[-1].startswith(f"cache: {tmp_path / '.cache'} ("), said
    # its bundle's card says the run stopped (it read as a finished run's, with commands that make
    # another model); once finished, the card says which epoch of all is the model
    from typer.testing import CliRunner

    from fracsight.bundle import load_bundle_spec
    from fracsight.cli import app

    assert CliRunner().invoke(app, ["export", str(run), str(tmp_path / "stopped")]).exit_code == 0
    epochs = load_bundle_spec(tmp_path / "stopped").training["epochs"]
    assert epochs["ended"] == "interrupted" and epochs["run"] == kept and epochs["planned"] == total
    card = (tmp_path / "stopped" / "card.md").read_text()
    assert f"the run stopped after epoch {kept} of the {total} planned, interrupted" in card

    finished = _train_process(run, tiny_dataset, settings, "--resume")
    assert finished.wait(timeout=120) == 0, (tmp_path / "run.log").read_text()
    assert CliRunner().invoke(app, ["export", str(run), str(tmp_path / "finished")]).exit_code == 0
    epochs = load_bundle_spec(tmp_path / "finished").training["epochs"]
    assert epochs["ended"] == "finished" and epochs["run"] == total
    card = (tmp_path / "finished" / "card.md").read_text()
    assert f"- The model is epoch {epochs['kept']} of {total}\n" in card
    assert whole.wait(timeout=120) == 0, (tmp_path / "whole.log").read_text()
    assert "Traceback" not in (tmp_path / "run.log").read_text()

    def history(folder: Path) -> list[dict[str, float]]:
        return [{k: v for k, v in h.items() if k != "seconds"} for h in json.loads(folder.read_text())]

    assert len(history(run / "history.json")) == total
    assert history(run / "history.json") == history(tmp_path / "whole" / "history.json")
    for name, part in (("best.pt", "model"), ("last.pt", "model"), ("last.pt", "average")):
        got = torch.load(run / name, weights_only=True)[part]
        want = torch.load(tmp_path / "whole" / name, weights_only=True)[part]
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in got), (name, part)


def test_init_starts_from_an_earlier_run_and_keeps_it_when_nothing_beats_it(tiny_dataset, tmp_path, caplog):
    overrides = [*TINY, "feature_cache_variants=0", "arch=small_cnn", "pretrained=none"]
    dataset = load_dataset(tiny_dataset)
    first_cfg = load_config(None, overrides, data=str(tiny_dataset), out=str(tmp_path / "first"))
    Trainer(first_cfg, dataset, show_progress=False).fit()
    start = torch.load(tmp_path / "first" / "best.pt", weights_only=True)["model"]
    init = f"init={tmp_path / 'first' / 'best.pt'}"

    # No epoch to train: the starting weights, validated as epoch 0, are what best.pt holds.
    cfg = load_config(None, [*overrides, init, "epochs_frozen=0", "epochs=0"], out=str(tmp_path / "kept"))
    with caplog.at_level(logging.WARNING, logger="fracsight"):
        kept_run = Trainer(cfg, dataset, show_progress=False).fit()
    assert not [r for r in caplog.records if r.getMessage().startswith("init:")]  # the same split
    assert (kept_run.best_epoch, kept_run.history) == (0, [])
    assert math.isfinite(kept_run.best_score)
    kept = torch.load(tmp_path / "kept" / "best.pt", weights_only=True)["model"]
    assert kept.keys() == start.keys() and all(torch.equal(kept[k], v) for k, v in start.items())
    # its card said "Pretrained: none (random initial weights)" of another run's network
    from fracsight.training.export_bundle import export_bundle

    export_bundle(tmp_path / "kept" / "best.pt", tmp_path / "kept-bundle")
    card = (tmp_path / "kept-bundle" / "card.md").read_text(encoding="utf-8")
    assert (
        f"- Initial weights: all of the checkpoint {tmp_path / 'first' / 'best.pt'} (training continued"
        in card
    )
    assert "- Pretrained:" not in card
    from fracsight.training.card import _epochs_line

    said = _epochs_line({"kept": 0, "run": 2, "planned": 2, "ended": "finished"})
    assert said[1] == "- Epoch 0 is the starting weights: no epoch trained here beat them on validation"

    cfg = load_config(None, [*overrides, init, "epochs_frozen=0"], out=str(tmp_path / "trained"))
    result = Trainer(cfg, dataset, show_progress=False).fit()
    assert len(result.history) == 1 and result.best_epoch in (0, 1)
    assert result.best_score >= kept_run.best_score  # epoch 0 is a candidate here too

    # another seed splits the data otherwise: the starting weights had trained on validation and
    # test images of this run, which scored them as epoch 0, unsaid
    other = [*overrides, init, "epochs_frozen=0", "epochs=0", "seed=1"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fracsight"):
        Trainer(
            load_config(None, other, out=str(tmp_path / "other-seed")), dataset, show_progress=False
        ).fit()
    (said,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("init:")]
    assert "validation and test images are images" in said and "trained on (the same bytes)" in said


def test_a_resumed_run_keeps_its_own_weights_whatever_became_of_init(tiny_dataset, tmp_path):
    """`--resume` loaded `init` again: a run whose init checkpoint was moved since could never be
    resumed ("init: no checkpoint at ..."), and one whose init was retrained since cached its frozen
    stages' features from the new weights while its network kept the old ones, unsaid. last.pt holds
    every weight: a resumed run trains on as it would have, init intact, replaced or gone."""
    dataset = load_dataset(tiny_dataset)

    def fit(out: str, *settings: str, resume: bool = False, force: bool = False):
        cfg = load_config(None, [*TINY, *settings], data=str(tiny_dataset), out=str(tmp_path / out))
        return Trainer(cfg, dataset, show_progress=False).fit(resume=resume, force=force)

    whole = ["feature_cache_variants=0", "unfreeze_from=0"]  # every stage of the start trained
    fit("base", *whole)
    init = f"init={tmp_path / 'base' / 'best.pt'}"
    for run in ("a", "b"):
        fit(run, init, "epochs=0")  # its frozen epoch only
    intact = fit("a", init, "epochs=1", resume=True).history
    fit("base", *whole, "lr_finetune=0.01", "seed=3", force=True)  # init retrained meanwhile
    replaced = fit("b", init, "epochs=1", resume=True).history

    def without_seconds(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history]

    assert len(intact) == 2 and without_seconds(replaced) == without_seconds(intact)
    (tmp_path / "base" / "best.pt").unlink()  # and gone
    assert len(fit("a", init, "epochs=2", resume=True).history) == 3


def test_init_from_a_run_whose_data_changed_since_says_it_could_not_check(tiny_dataset, tmp_path, caplog):
    """Images added to the folder since the starting run (the most common case): its split cannot
    be made again, and nothing was said of the images it may have trained on."""
    overrides = [*TINY, "feature_cache_variants=0", "arch=small_cnn", "pretrained=none", "epochs_frozen=0"]
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data, symlinks=True)
    first = load_config(None, overrides, data=str(data), out=str(tmp_path / "first"))
    Trainer(first, load_dataset(data), show_progress=False).fit()
    added = next((data / "train" / "fractured").iterdir())
    shutil.copy(added, added.with_name("added.jpg"))
    init = f"init={tmp_path / 'first' / 'best.pt'}"
    cfg = load_config(None, [*overrides, init, "epochs=0"], data=str(data), out=str(tmp_path / "second"))
    with caplog.at_level(logging.WARNING, logger="fracsight"):
        Trainer(cfg, load_dataset(data), show_progress=False).fit()
    (said,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("init:")]
    assert "could not check whether" in said and "has changed since" in said


@pytest.mark.parametrize(
    ("init", "extra", "message"),
    [
        ("missing.pt", [], "no checkpoint"),
        ("first/best.pt", ["arch=efficientnet_lite0"], "holds small_cnn"),
        ("first/best.pt", ["out=OUT/first"], "this run's own best.pt"),
    ],
)
def test_init_errors_are_specific(tiny_dataset, tmp_path, init, extra, message):
    overrides = [*TINY, "feature_cache_variants=0", "arch=small_cnn", "pretrained=none"]
    dataset = load_dataset(tiny_dataset)
    Trainer(
        load_config(None, overrides, data=str(tiny_dataset), out=str(tmp_path / "first")),
        dataset,
        show_progress=False,
    ).fit()
    extra = [e.replace("OUT", str(tmp_path)) for e in extra]
    cfg = load_config(
        None,
        [*overrides, f"init={tmp_path / init}", *extra],
        data=str(tiny_dataset),
        out=str(tmp_path / "second"),
    )
    first = [tmp_path / "first" / name for name in ("best.pt", "config.yaml", "history.json")]
    before = [f.read_bytes() for f in first]
    with pytest.raises(ConfigError, match=message):
        Trainer(cfg, dataset, show_progress=False).fit()
    assert [f.read_bytes() for f in first] == before  # nothing of the earlier run was touched


def _region_folders(fracatlas_dir: Path, root: Path, per_class: int = 8) -> Path:
    """FracAtlas body regions arranged as class folders (single-region images only)."""
    chosen: dict[str, list[Path]] = {}
    with open(fracatlas_dir / "dataset.csv", newline="") as f:
        for row in csv.DictReader(f):
            regions = [r for r in ("hand", "leg", "hip", "shoulder") if row[r] == "1"]
            if len(regions) != 1 or len(chosen.get(regions[0], [])) >= per_class:
                continue
            folder = "Fractured" if row["fractured"] == "1" else "Non_fractured"
            chosen.setdefault(regions[0], []).append(fracatlas_dir / "images" / folder / row["image_id"])
    for region, paths in chosen.items():
        for i, path in enumerate(paths):
            split = "train" if i < per_class * 3 // 4 else "val"
            target = root / split / region / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return root


def test_a_class_given_to_every_image_is_not_called_the_fractured_ones_type(tiny_dataset, tmp_path):
    """A labels.csv giving every image a class (normal ones too): the card said the class head "was
    trained and measured on fractured images only", and evaluate counted it over "the fractured
    ones", though the trainer learnt from, and evaluate measured, the normal images too."""
    from fracsight.evaluation.run import evaluate_model
    from fracsight.training.export_bundle import export_bundle

    data = tmp_path / "every"
    rows = ["image,fracture,class,split"]
    for k, path in enumerate(sorted(tiny_dataset.glob("*/*/*.jpg"))):
        (data / "images").mkdir(parents=True, exist_ok=True)
        (data / "images" / path.name).symlink_to(path.resolve())
        fractured = int(path.parent.name == "fractured")
        rows.append(
            f"images/{path.name},{fractured},{('frontal', 'lateral')[k % 2]},{path.parent.parent.name}"
        )
    (data / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    dataset = load_dataset(data)
    cfg = load_config(
        None, [*TINY, "arch=small_cnn", "pretrained=none"], data=str(data), out=str(tmp_path / "run")
    )
    Trainer(cfg, dataset, show_progress=False).fit()
    spec = export_bundle(tmp_path / "run", tmp_path / "bundle")
    n = spec.training["n_train_typed_not_fractured"]
    assert n >= 10  # the normal training images (one may be set aside as a duplicate)
    card = (tmp_path / "bundle" / "card.md").read_text(encoding="utf-8")
    assert f"trained on every image with a class label, {n} of the training images not fractured" in card
    assert "fractured images only" not in card and "(the fractured ones)" not in card
    metrics = evaluate_model(tmp_path / "bundle", data, tmp_path / "eval", split="val", n_bootstrap=100)
    assert "the fractured ones" not in metrics["multiclass"]["counted"]


@pytest.mark.fracatlas
def test_multiclass_end_to_end(fracatlas_dir, tmp_path):
    """Class folders -> N-class training -> bundle -> evaluate with multi-class metrics -> predict."""
    from fracsight.evaluation.run import evaluate_model
    from fracsight.inference import Predictor
    from fracsight.training.export_bundle import export_bundle

    data = _region_folders(fracatlas_dir, tmp_path / "regions")
    dataset = load_dataset(data)
    assert dataset.layout == "class-folders"
    assert dataset.class_names["class"] == ("hand", "hip", "leg", "shoulder")
    cfg = load_config(None, TINY, data=str(data), out=str(tmp_path / "run"))
    result = Trainer(cfg, dataset, show_progress=False).fit()
    assert "val_class_accuracy" in result.history[-1]
    spec = export_bundle(tmp_path / "run", tmp_path / "bundle")
    assert [h.name for h in spec.heads] == ["class"]
    metrics = evaluate_model(tmp_path / "bundle", data, tmp_path / "eval", split="val", n_bootstrap=100)
    mc = metrics["multiclass"]
    assert 0.0 <= mc["accuracy"] <= 1.0
    assert len(mc["confusion_matrix"]) == 4
    assert (tmp_path / "eval" / "report.html").is_file()
    pred = Predictor(tmp_path / "bundle").predict(next((data / "val" / "hand").iterdir()))
    assert set(pred.class_probabilities) == {"hand", "hip", "leg", "shoulder"}
    assert abs(sum(pred.class_probabilities.values()) - 1) < 1e-5


def test_cli_train_and_export(tiny_dataset, tmp_path):
    from typer.testing import CliRunner

    from fracsight.cli import app

    runner = CliRunner()
    args = ["train", str(tiny_dataset), "--out", str(tmp_path / "run")]
    for item in [*TINY, "arch=small_cnn", "pretrained=none"]:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best epoch" in result.output
    result = runner.invoke(app, ["export", str(tmp_path / "run"), str(tmp_path / "bundle")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bundle" / "model.onnx").is_file()
    again = runner.invoke(app, ["export", str(tmp_path / "run"), str(tmp_path / "bundle")])
    assert (
        again.exit_code == 2 and "holds a model bundle; choose another folder or pass --force" in again.output
    )
    bad = runner.invoke(app, ["train", str(tiny_dataset), "--set", "epochs=lots"])
    assert bad.exit_code == 2 and "config_error" in bad.output


def test_resume_with_nothing_to_resume_is_a_bad_argument(tiny_dataset, tmp_path):
    """docs/training.md: `--resume` of a folder that holds no run is refused like the other run
    folder refusals, as a bad argument (exit code 2), before anything is written: never taken as a
    fresh start."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    settings = [a for s in [*TINY, "arch=small_cnn", "pretrained=none"] for a in ("--set", s)]
    args = ["train", str(tiny_dataset), "--out", str(tmp_path / "fresh"), *settings, "--resume"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "error (nothing_to_resume): nothing to resume: " in result.stderr
    assert "fresh/last.pt does not exist" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "fresh").exists()


def test_cli_never_loses_a_trained_run_or_a_users_folder(tiny_dataset, tmp_path, monkeypatch):
    """A second `train` into a run and `export --force` onto the run itself or onto a folder that
    is no bundle are refused; a failed export keeps the bundle it would have replaced."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    runner = CliRunner()
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    train = ["train", str(tiny_dataset), "--out", str(run)]
    for item in [*TINY, "arch=small_cnn", "pretrained=none"]:
        train += ["--set", item]
    assert runner.invoke(app, train).exit_code == 0
    trained = (run / "best.pt").read_bytes()

    again = runner.invoke(app, train)
    assert again.exit_code == 2 and "holds an earlier run" in again.output
    # a folder that holds something else, or the config given itself, is never written over
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("keep")
    into_notes = runner.invoke(app, [*train[:3], str(tmp_path / "notes"), *train[4:]])
    assert into_notes.exit_code == 2 and "is not a run folder (it holds notes.txt)" in into_notes.output
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["notes.txt"]
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "config.yaml").write_text("# mine\nepochs: 1\n")
    given = tmp_path / "own" / "config.yaml"
    own = ["train", str(tiny_dataset), "-c", str(given), "--out", str(given.parent)]
    over_config = runner.invoke(app, own)
    assert over_config.exit_code == 2 and "the config given" in over_config.output
    assert (tmp_path / "own" / "config.yaml").read_text() == "# mine\nepochs: 1\n"

    onto_run = runner.invoke(app, ["export", str(run), str(run), "--force"])
    assert onto_run.exit_code == 2 and "is or holds the training run" in onto_run.output
    onto_parent = runner.invoke(app, ["export", str(run), str(tmp_path), "--force"])
    assert onto_parent.exit_code == 2 and "is or holds the training run" in onto_parent.output
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep")
    not_a_bundle = runner.invoke(app, ["export", str(run), str(mine), "--force"])
    assert not_a_bundle.exit_code == 2 and "not a model bundle" in not_a_bundle.output
    assert (mine / "notes.txt").read_text() == "keep" and (mine / "sub").is_dir()
    assert (run / "best.pt").read_bytes() == trained

    assert runner.invoke(app, ["export", str(run), str(bundle)]).exit_code == 0
    card = (bundle / "card.md").read_text(encoding="utf-8")  # small_cnn: no stages to cache or freeze
    assert "Augmentation drawn afresh for every batch" in card and "Frozen-stage" not in card, card
    assert "with the whole backbone unfrozen" in card and "stages >=" not in card, card
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    bad_split = runner.invoke(app, ["export", str(run), str(bundle), "--force", "--evaluate", "bogus"])
    assert bad_split.exit_code == 2 and "no 'bogus' split" in bad_split.output
    missing = runner.invoke(
        app, ["export", str(run), str(bundle), "--force", "--data-dir", str(tmp_path / "x")]
    )
    assert missing.exit_code == 2 and "error (not_found)" in missing.output
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before  # the old bundle, untouched
    monkeypatch.chdir(tmp_path / "mine")  # the run recorded its data set by the path it was given
    elsewhere = runner.invoke(app, ["export", str(run), str(tmp_path / "b2")])
    assert elsewhere.exit_code in (0, 1) and "Traceback" not in elsewhere.output
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]  # none left

    # --force replaces the run: the report export left in it named the old model beside the new
    # best.pt; a folder of the user's there is not a report and stays
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["export", str(run), str(tmp_path / "b3"), "--evaluate", "val"]).exit_code == 0
    assert (run / "evaluation-val" / "metrics.json").is_file()
    (run / "evaluation-notes").mkdir()
    replaced = runner.invoke(app, [*train, "--force"])
    assert replaced.exit_code == 0, replaced.output
    assert not (run / "evaluation-val").exists() and (run / "evaluation-notes").is_dir()
    assert f"cache: {tmp_path / '.cache'} (" in replaced.stderr  # named: it was written without a word


def test_force_replaces_the_earlier_run_before_the_new_one_writes(tiny_dataset, tmp_path, monkeypatch):
    """`train --force` stopped before its first epoch left the earlier run's checkpoints under its
    own config.yaml: `--resume` with the new settings then continued the old run, two recipes in
    one. A run with best.pt and no last.pt (stopped in its first epoch after `init=`) was refused
    by both `train` (pass --resume) and `train --resume` (leave out --resume)."""
    from typer.testing import CliRunner

    from fracsight.cli import app
    from fracsight.training.trainer import Trainer

    runner = CliRunner()
    run = tmp_path / "run"
    train = ["train", str(tiny_dataset), "--out", str(run)]
    for item in [*TINY, "arch=small_cnn", "pretrained=none"]:
        train += ["--set", item]
    assert runner.invoke(app, train).exit_code == 0

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    trained = {name: (run / name).read_bytes() for name in ("best.pt", "last.pt", "config.yaml")}
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_prepare", stopped)  # Ctrl-C while the images are decoded
        other = runner.invoke(app, [*train, "--set", "lr=0.01", "--force"])
    assert (
        other.exit_code == 130
        and "the earlier run in" in other.stderr
        and "is kept as it was" in other.stderr
    )
    assert {name: (run / name).read_bytes() for name in trained} == trained  # nothing replaced yet
    resumed = runner.invoke(app, [*train, "--set", "lr=0.01", "--resume"])  # not a mix of two recipes
    assert resumed.exit_code == 2 and "lr 0.001 -> 0.01" in resumed.stderr
    # refused a moment after its start (here: a validation split without one of its labels), a
    # --force run removed the earlier one and left nothing in its place
    import shutil

    one_label = tmp_path / "one-label"
    shutil.copytree(tiny_dataset, one_label, symlinks=True)
    shutil.rmtree(one_label / "val" / "not fractured")
    refused = runner.invoke(app, ["train", str(one_label), *train[2:], "--force"])
    assert refused.exit_code == 2 and "error (dataset_error)" in refused.stderr
    assert {name: (run / name).read_bytes() for name in trained} == trained
    both = runner.invoke(app, [*train, "--resume", "--force"])  # --resume continues; nothing removed
    assert both.exit_code == 0 and (run / "best.pt").is_file() and (run / "last.pt").is_file()

    (run / "last.pt").unlink()  # best.pt alone
    again = runner.invoke(app, train)
    assert again.exit_code == 2 and "no last.pt to resume: --force replaces it" in again.stderr
    assert runner.invoke(app, [*train, "--force"]).exit_code == 0


def test_a_recipe_of_the_users_named_config_yaml_is_not_written_over(tiny_dataset, tmp_path):
    """Only the config given with -c was protected: a recipe of the user's in --out, named as a
    run's file, was replaced without a word."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    folder = tmp_path / "exp1"
    folder.mkdir()
    (folder / "config.yaml").write_text("# my tuned recipe\narch: small_cnn\nlr: 0.005\n")
    train = ["train", str(tiny_dataset), "--out", str(folder)]
    for item in [*TINY, "arch=small_cnn", "pretrained=none"]:
        train += ["--set", item]
    refused = CliRunner().invoke(app, train)
    assert refused.exit_code == 2 and "is not a run folder (it holds config.yaml)" in refused.stderr
    assert (folder / "config.yaml").read_text().startswith("# my tuned recipe")
    from importlib import resources

    recipes = resources.files("fracsight.training").joinpath("recipes")
    for recipe in ("fracatlas-lite0-384-gpu.yaml", "fracatlas-lite0-384-continue.yaml"):  # full recipes
        (folder / "config.yaml").write_text(recipes.joinpath(recipe).read_text())
        refused = CliRunner().invoke(app, train)
        assert refused.exit_code == 2 and "is not a run folder" in refused.stderr, recipe


def test_a_checkpoint_save_cut_short_keeps_the_previous_one(tiny_dataset, tmp_path, monkeypatch):
    """Ctrl-C or a crash while `best.pt` was written used to leave it torn: the run's best model
    lost and `--resume` impossible. What a process killed outright leaves behind (a hidden
    temporary file) does not make its run folder look like someone else's."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    best = tmp_path / "best.pt"
    trainer_module.save_checkpoint({"epoch": 1, "weights": torch.ones(3)}, best)

    def torn(_state, path):
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(torch, "save", torn)
        with pytest.raises(KeyboardInterrupt):
            trainer_module.save_checkpoint({"epoch": 2}, best)
    assert torch.load(best)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # the half-written file is gone

    run = tmp_path / "killed"
    run.mkdir()
    import yaml

    (run / "config.yaml").write_text(yaml.safe_dump(TrainConfig(epochs=1).to_dict()))  # a run's own
    (run / ".best.pt.4242.140001.tmp").write_bytes(b"left by kill -9")
    train = ["train", str(tiny_dataset), "--out", str(run)]
    for item in [*TINY, "arch=small_cnn", "pretrained=none"]:
        train += ["--set", item]
    result = CliRunner().invoke(app, train)
    assert result.exit_code == 0, result.output
    assert "model" in torch.load(run / "best.pt", weights_only=False)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("batch_size=0", "batch_size=0"),
        ("input_size=-5", "input_size=-5"),
        ("input_size=100", "a multiple of 32"),
        ("lr=-1", "lr=-1.0"),
        ("ema_decay=1", "ema_decay"),
        ("input_size=100000", "64 to 2048"),  # a MemoryError traceback allocating 224 GiB
        ("input_size=32", "64 to 2048"),  # a one-pixel map: batch norm failed on a last batch of one
    ],
)
def test_training_settings_out_of_range_are_refused_by_name(setting, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [setting])
    # a run trained at 32 before 64 was the least keeps the rule of its day: exported, built on
    assert load_config(None, ["input_size=32"], saved=True).input_size == 32
    with pytest.raises(ConfigError, match="nothing to train"):
        load_config(None, ["epochs=0", "epochs_frozen=0"])


def test_a_new_run_named_as_a_path_is_refused_but_an_old_one_still_loads(tiny_dataset, tmp_path) -> None:
    """`--set name=../../escaped` put the run folder runs/<name> outside runs/; refused for a new
    run only: a run accepted under such a name before must still export and resume."""
    from typer.testing import CliRunner

    from fracsight.cli import app
    from fracsight.training.config import check_new_run

    for name in ("../../escaped", "a/b", ".."):
        args = ["train", str(tiny_dataset), "--out", str(tmp_path / "run"), "--set", f"name={name}"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "a name, not a path" in result.output, result.output
        assert not (tmp_path / "run").exists()
    old = load_config(None, ["name=wrist/v1"])  # as export and resume load a saved run's config
    assert old.name == "wrist/v1"
    with pytest.raises(ConfigError, match="a name, not a path"):
        check_new_run(old)


def test_a_name_no_bundle_could_carry_is_refused_before_training(tiny_dataset, tmp_path) -> None:
    """`--set name=<an escape sequence>` (or `detector joint --name` with a newline) trained every
    epoch, then export refused the bundle's name: the run could never become a bundle."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    args = ["train", str(tiny_dataset), "--out", str(tmp_path / "run"), "--set", "name=mine\x1b]0;X\x07"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "must not hold control characters" in result.output, result.output
    assert not (tmp_path / "run").exists()
    # the version too (export refused it after the training), and a weights file that is not there
    # (a config error, exit 1, after the data set was read)
    for setting, message in (
        ("version=1\x1b[31mX", "version must not hold control characters"),
        (f"pretrained={tmp_path / 'gone.pt'}", f"pretrained='{tmp_path / 'gone.pt'}' is not a file"),
    ):
        result = CliRunner().invoke(
            app, ["train", str(tiny_dataset), "--out", str(tmp_path / "run"), "--set", setting]
        )
        assert result.exit_code == 2 and message in result.output, result.output
        assert "data:" not in result.output and not (tmp_path / "run").exists()
    joint = ["detector", "joint", "default", "default", str(tmp_path / "joint"), "--data", str(tiny_dataset)]
    result = CliRunner().invoke(app, [*joint, "--name", "mine\nforged"])
    assert result.exit_code == 2 and "--name must not hold control characters" in result.output
    assert not (tmp_path / "joint").exists()


def test_damaged_checkpoints_and_run_folders_are_refused_in_one_line(tiny_dataset, tmp_path):
    from typer.testing import CliRunner

    from fracsight.cli import app

    damaged = tmp_path / "damaged.pt"
    damaged.write_text("not a checkpoint")
    settings = [a for s in [*TINY, "arch=small_cnn", "pretrained=none"] for a in ("--set", s)]
    runner = CliRunner()

    def train(out: Path, *extra: str):
        return runner.invoke(app, ["train", str(tiny_dataset), "--out", str(out), *settings, *extra])

    init = train(tmp_path / "a", "--set", f"init={damaged}")
    assert init.exit_code == 1 and "init: " in init.stderr and "torch cannot read it" in init.stderr
    assert not (tmp_path / "a").exists()
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_text("cut short")
    resumed = train(run, "--resume")
    assert resumed.exit_code == 1 and "run/last.pt is not a checkpoint" in resumed.stderr
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]  # nothing written before the refusal
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    into_file = train(a_file)
    assert into_file.exit_code == 2 and "exists and is not a folder" in into_file.stderr
    (tmp_path / "norun").mkdir()
    (tmp_path / "norun" / "best.pt").write_text("not a checkpoint")
    exported = runner.invoke(app, ["export", str(tmp_path / "norun"), str(tmp_path / "bundle")])
    assert exported.exit_code == 1 and "norun/best.pt is not a checkpoint" in exported.stderr
    assert len(exported.stderr.strip().splitlines()) == 1 and not (tmp_path / "bundle").exists()
    for result in (init, resumed, into_file, exported):
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert a_file.read_text() == "mine"


def test_export_names_an_unreadable_calibration_image_by_its_path_under_the_data_set(tmp_path: Path) -> None:
    """Export's refit named a damaged MURA view `image9.png`, one of thousands of that name."""
    from fracsight.data import FRACTURE, Sample
    from fracsight.errors import ImageReadError
    from fracsight.training.refit import model_input

    study = tmp_path / "valid" / "XR_WRIST" / "patient00038" / "study2_negative"
    study.mkdir(parents=True)
    (study / "image9.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    sample = Sample(path=study / "image9.png", labels={FRACTURE: 0}, split="val")
    named = r"^valid/XR_WRIST/patient00038/study2_negative/image9\.png: .*val split"
    with pytest.raises(ImageReadError, match=named):
        model_input(sample, 64, tmp_path)


def test_a_cache_folder_that_would_take_the_run_with_it_is_refused(tiny_dataset, tmp_path):
    """`cache_dir` set to the run folder trained, then advised "delete it to free the space", which
    deleted the model just trained; a bundle got the cache's files; a file was an os_error."""
    dataset = load_dataset(tiny_dataset)
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "bundle.json").write_text("{}")
    (tmp_path / "afile.txt").write_text("mine")
    for cache, said in (
        (tmp_path / "run", "is, holds or lies in the run folder"),
        (tmp_path, "is, holds or lies in the run folder"),
        (tmp_path / "bundle", "is a model bundle"),
        (tmp_path / "afile.txt", "is a file"),
    ):
        cfg = load_config(
            None, [*TINY, f"cache_dir={cache}"], data=str(tiny_dataset), out=str(tmp_path / "run")
        )
        with pytest.raises(ConfigError, match=said):
            Trainer(cfg, dataset, show_progress=False).fit()
        assert not (tmp_path / "run").exists() and (tmp_path / "afile.txt").read_text() == "mine"


def test_huge_rates_and_damaged_weights_are_refused_in_a_line(tmp_path):
    """lr=1e38 overflowed inside torch and lr=1e20 made every output NaN, tracebacks after the data
    were prepared; a damaged .safetensors file was a SafetensorError traceback."""
    from fracsight.models.weights import load_local_weights

    for setting in ("lr=1e38", "lr=1e20", "lr_finetune=2", "weight_decay=1e20", "mask_pos_weight=1e300"):
        with pytest.raises(ConfigError, match=setting.split("=")[0]):
            load_config(None, [setting])
    # a run that trained before the bounds is a record, not a new run: it still loads (to export)
    assert load_config(None, None, saved=True, lr=5.0, mask_pos_weight=1500.0).lr == 5.0
    import argparse

    timm_style = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=1)}, timm_style)
    with pytest.raises(ConfigError, match="holding Python objects besides its tensors"):
        load_local_weights(timm_style)
    bad = tmp_path / "bad.safetensors"
    bad.write_text("garbage")
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        load_local_weights(bad)
    text = tmp_path / "afile.pt"
    text.write_text("mine")
    with pytest.raises(ConfigError, match=r"not a torch weights file \("):
        load_local_weights(text)


def test_a_run_in_the_current_folder_and_one_whose_data_moved_resume(tiny_dataset, tmp_path, monkeypatch):
    """`--out .` was refused ("cache_dir .cache is, holds or lies in the run folder ."): the default
    cache beside `.` was computed inside it. A run whose data folder was moved or renamed was
    refused on --resume for a name derived from the new folder's name, which the user never gave."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    settings = [a for s in [*TINY, "arch=small_cnn", "pretrained=none"] for a in ("--set", s)]
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    done = CliRunner().invoke(app, ["train", str(tiny_dataset), "--out", ".", *settings])
    assert done.exit_code == 0, done.output
    assert (here / "best.pt").is_file() and (tmp_path / ".cache").is_dir() and not (here / ".cache").exists()
    monkeypatch.chdir(tmp_path)
    moved = tmp_path / "moved-data"
    shutil.copytree(tiny_dataset, moved, symlinks=True)
    run = tmp_path / "run"
    recipe = ["-c", "fracatlas-lite0-384"]
    first = CliRunner().invoke(app, ["train", str(moved), *recipe, "--out", str(run), *settings])
    assert first.exit_code == 0, first.output
    renamed = moved.rename(tmp_path / "renamed-data")
    again = [*settings, "--set", "epochs=2"]
    resumed = CliRunner().invoke(app, ["train", str(renamed), *recipe, "--out", str(run), *again, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "name: moved-data-" in (run / "config.yaml").read_text(encoding="utf-8")


def test_a_run_that_stopped_early_resumed_as_it_was_trains_nothing(tiny_dataset, tmp_path):
    """A run ended by early stopping, resumed with the same settings (a job script that always says
    --resume, run again): it trained on, and one better epoch reset the count, so best.pt became a
    model the run never would have kept, and the card's Reproduce command made another one. Now it
    trains nothing; a larger patience goes on, as docs/training.md says."""
    settings = [*TINY, "arch=small_cnn", "pretrained=none", "feature_cache_variants=0", "input_size=64"]
    settings += ["epochs_frozen=0", "epochs=6", "patience=1", "lr_finetune=0.05"]
    dataset = load_dataset(tiny_dataset)
    cfg = load_config(None, settings, data=str(tiny_dataset), out=str(tmp_path / "run"))
    first = Trainer(cfg, dataset, show_progress=False).fit()
    assert len(first.history) < 6, "the run did not stop early: nothing tested"
    best, history = (
        (tmp_path / "run" / "best.pt").read_bytes(),
        (tmp_path / "run" / "history.json").read_text(),
    )
    again = Trainer(cfg, dataset, show_progress=False).fit(resume=True)
    assert (tmp_path / "run" / "best.pt").read_bytes() == best
    assert (tmp_path / "run" / "history.json").read_text() == history
    assert (again.best_epoch, again.best_score) == (first.best_epoch, first.best_score)
    more = load_config(
        None,
        [*settings[:-2], "patience=100", "lr_finetune=0.05"],
        data=str(tiny_dataset),
        out=str(tmp_path / "run"),
    )
    on = Trainer(more, dataset, show_progress=False).fit(resume=True)
    assert len(on.history) == 6


def test_resume_keeps_the_runs_schedule_unless_given(tiny_dataset, tmp_path, caplog):
    """`train DATA --out RUN --resume` with the run's other settings but not its `epochs` and
    `patience`: the defaults (12 and 4) replaced the run's 1 and 5, and a finished run trained on,
    unsaid. The run's own schedule is kept; one given is said as a change."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    run = tmp_path / "run"
    settings = [a for s in [*TINY, "arch=small_cnn", "pretrained=none"] for a in ("--set", s)]
    start = ["train", str(tiny_dataset), "--out", str(run), *settings]
    first = CliRunner().invoke(app, [*start, "--set", "epochs=1", "--set", "patience=5"])
    assert first.exit_code == 0, first.output
    history = (run / "history.json").read_text()
    again = CliRunner().invoke(app, [*start, "--resume"])
    assert again.exit_code == 0, again.output
    assert "has trained 2 epochs, 2 asked (epochs_frozen + epochs): nothing to train" in again.output
    assert (run / "history.json").read_text() == history
    assert (
        "epochs: 1\n" in (run / "config.yaml").read_text()
        and "patience: 5\n" in (run / "config.yaml").read_text()
    )
    with caplog.at_level(logging.WARNING, logger="fracsight"):
        longer = CliRunner().invoke(app, [*start, "--resume", "--set", "epochs=2"])
    assert longer.exit_code == 0, longer.output
    assert "--resume: the run's schedule changes: epochs 1 -> 2" in caplog.text
    assert len(json.loads((run / "history.json").read_text())) == 3


def test_a_second_run_into_a_folder_being_trained_into_is_refused(tiny_dataset, tmp_path):
    """Two `train` runs started into one --out a second apart both passed its checks (nothing is
    written before the first epoch ends): each wrote best.pt and last.pt over the other's and both
    exited 0, and export made one's model under the other's record. The running one holds the folder."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    run = tmp_path / "run"
    settings = [a for s in [*TINY, "arch=small_cnn", "pretrained=none"] for a in ("--set", s)]
    long = [*settings, "--set", "epochs=500", "--set", "patience=1000"]
    first = subprocess.Popen(
        [sys.executable, "-m", "fracsight", "train", str(tiny_dataset), "--out", str(run), *long],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "config.yaml").is_file():  # its first epoch ended: it holds the folder
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "the first run wrote nothing in 120 s"
            time.sleep(0.2)
        for extra in ([], ["--force"], ["--resume"]):
            second = CliRunner().invoke(
                app, ["train", str(tiny_dataset), "--out", str(run), *settings, *extra]
            )
            assert second.exit_code == 2, second.output
            assert "is being trained into by another fracsight train now" in second.output
        assert first.poll() is None  # untouched by the refusals
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=120)
    # once it has ended, the folder is free
    again = CliRunner().invoke(app, ["train", str(tiny_dataset), "--out", str(run), *settings, "--force"])
    assert again.exit_code == 0, again.output


def test_a_run_refused_before_its_first_epoch_leaves_no_folder_it_made(tiny_dataset, tmp_path):
    """The folder made to hold the run's lock goes again with the folders made above it, where the
    run is refused before anything of its own was written."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    settings = [a for s in [*TINY, "arch=small_cnn", "pretrained=none"] for a in ("--set", s)]
    out = tmp_path / "new" / "deeper" / "run"
    refused = CliRunner().invoke(app, ["train", str(tiny_dataset), "--out", str(out), *settings, "--resume"])
    assert refused.exit_code == 2 and "nothing to resume" in refused.output
    assert not (tmp_path / "new").exists()


def test_a_run_refused_by_the_lock_leaves_the_holders_new_folder(tiny_dataset, tmp_path, monkeypatch):
    """Two runs into a new --out at one moment: the one refused by the lock removed the folder the
    other had just made and locked, which then wrote its run into a folder nobody held."""
    import fcntl
    import os

    from typer.testing import CliRunner

    from fracsight.cli import app

    run = tmp_path / "new" / "run"
    real_open, held = os.open, []

    def another_run_first(path, flags, *args, **kwargs):  # the other run makes and locks it first
        if Path(path) == run and not held:
            held.append(real_open(path, os.O_RDONLY))
            fcntl.flock(held[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", another_run_first)
    settings = [a for s in [*TINY, "arch=small_cnn", "pretrained=none"] for a in ("--set", s)]
    refused = CliRunner().invoke(app, ["train", str(tiny_dataset), "--out", str(run), *settings])
    monkeypatch.undo()
    assert refused.exit_code == 2 and "is being trained into by another" in refused.output
    assert held and run.is_dir()  # the holder's folder stays
    os.close(held[0])


def test_a_folder_that_cannot_be_locked_is_trained_into_with_a_warning(
    tiny_dataset, tmp_path, monkeypatch, caplog
):
    """NFS locks a folder only as a file open for writing (EBADF), Lustre without flock says ENOSYS:
    every run there was refused as "being trained into by another fracsight train"."""
    import errno
    import fcntl
    import logging

    from typer.testing import CliRunner

    from fracsight.cli import app

    def no_locks_here(fd, operation):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", no_locks_here)
    settings = [a for s in [*TINY, "arch=small_cnn", "pretrained=none"] for a in ("--set", s)]
    with caplog.at_level(logging.WARNING, logger="fracsight"):
        done = CliRunner().invoke(
            app, ["train", str(tiny_dataset), "--out", str(tmp_path / "run"), *settings]
        )
    assert done.exit_code == 0, done.output
    assert "cannot be locked here (Bad file descriptor)" in caplog.text + done.output
    assert (tmp_path / "run" / "best.pt").is_file()
