"""`max_samples` (a quick run on part of the data) trains on a seeded draw from every label, and the
bundle says how many images it trained on. It took the first images in file order: on class folders
every "fractured" image and no normal one (the positive weight then 0: the fracture loss vanished)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from fracsight.data import load_dataset
from fracsight.data.sample import CLASS, FRACTURE, Sample
from fracsight.data.splits import train_val_samples, training_subset


def _samples(counts: dict[tuple[int, int | None], int]) -> list[Sample]:
    samples = []
    for (fracture, klass), n in counts.items():
        labels = {FRACTURE: fracture} | ({CLASS: klass} if klass is not None else {})
        samples += [Sample(path=Path(f"{fracture}-{klass}-{i}.png"), labels=labels) for i in range(n)]
    return samples


def _labels(samples: list[Sample]) -> Counter:
    return Counter((s.labels.get(FRACTURE), s.labels.get(CLASS)) for s in samples)


def test_a_subset_draws_from_every_label_in_proportion():
    samples = _samples({(1, None): 30, (0, None): 90})  # sorted by folder, as class folders read
    subset = training_subset(samples, 20, seed=0)
    assert _labels(subset) == {(1, None): 5, (0, None): 15}
    assert subset == [s for s in samples if s in subset]  # input order kept
    assert training_subset(samples, 20, seed=0) == subset and training_subset(samples, 20, seed=1) != subset


def test_a_subset_keeps_every_type():
    samples = _samples({(1, 0): 10, (1, 1): 10, (1, 2): 10, (0, None): 10})
    assert set(_labels(training_subset(samples, 8, seed=3))) == {(1, 0), (1, 1), (1, 2), (0, None)}


@pytest.mark.parametrize("n", [0, 40, 41])
def test_no_subset_is_all_the_samples(n):
    samples = _samples({(1, None): 20, (0, None): 20})
    assert training_subset(samples, n, seed=0) == samples


def test_the_run_trains_on_both_classes_and_the_bundle_counts_what_it_trained_on(tiny_dataset, tmp_path):
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from conftest import TINY_TRAINING
    from fracsight.cli import app

    train = train_val_samples(load_dataset(tiny_dataset), 0)[0]
    assert _labels(train[:6]) == {(1, None): 6}  # what the first six in file order were
    settings = [arg for item in [*TINY_TRAINING, "max_samples=6"] for arg in ("--set", item)]
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    # a name Rich took for markup: "[b]" vanished from the printed command, "[/b]" was a traceback
    odd = tmp_path / "data [b]" / "x[/b]"
    shutil.copytree(tiny_dataset, odd)
    # FORCE_COLOR=1 (CI): Rich then calls a log file a terminal, and the epoch lines went to stderr
    command = ["train", str(odd), "--out", str(run), *settings]
    trained = CliRunner().invoke(app, command, env={"FORCE_COLOR": "1"})
    assert trained.exit_code == 0, trained.output
    stdout, stderr = (re.sub(r"\x1b\[[0-9;]*m", "", text) for text in (trained.stdout, trained.stderr))
    assert "prepared 6 training" in stderr
    # `train > log`: each epoch's line, not its progress bar (drawn on a terminal only, on stderr)
    assert "epoch 1 (phase 1): train_loss" in stdout and "━" not in trained.output
    dataset = load_dataset(tiny_dataset)  # train and val only: a test split is carved from them, and said
    carved = len(dataset.samples) - sum(map(len, train_val_samples(dataset, 0)))
    assert carved > 0 and f"{carved} images held out as the test split the data set lacks" in stderr
    assert f"`fracsight evaluate MODEL '{odd}' --split test` measures on them" in stderr
    assert _labels(training_subset(train, 6, 0)) == {(1, None): 3, (0, None): 3}
    exported = CliRunner().invoke(app, ["export", str(run), str(bundle)])
    assert exported.exit_code == 0, exported.output
    assert json.loads((bundle / "bundle.json").read_text())["training"]["n_train"] == 6
    assert "6 training and" in (bundle / "card.md").read_text()


def test_the_card_says_when_no_box_taught_the_localization_map(tiny_bundle):
    """tiny_bundle trained on class folders, which have no boxes: its card said "box-supervised
    localization map" and that the map gives "the heatmap and boxes", as FracAtlas's did."""
    import dataclasses

    from fracsight.bundle import load_bundle_spec, read_card
    from fracsight.training.card import render_card

    spec = load_bundle_spec(tiny_bundle)
    assert spec.training["n_train_with_boxes"] == 0
    card = read_card(tiny_bundle)
    assert "box-supervised" not in card and "**No fracture box taught the localization map**" in card
    assert "localization map without boxes (no fractured training image has one)" in card
    boxed = dataclasses.replace(spec, training={**spec.training, "n_train_with_boxes": 5})
    assert "box-supervised localization map (positive cells x20.0)" in render_card(boxed)
    assert "No fracture box taught" not in render_card(boxed)
    older = dataclasses.replace(
        spec, training={k: v for k, v in spec.training.items() if k != "n_train_with_boxes"}
    )
    assert "box-supervised localization map" in render_card(older)  # as it said before
    unweighted = {**spec.training["config"], "mask_weight": 0.0}
    off = dataclasses.replace(boxed, training={**boxed.training, "config": unweighted})
    assert "no localization loss (mask_weight 0)" in render_card(off)
