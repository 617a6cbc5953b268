"""The grafted detector and orientation step: geometry, decoding, and the whole `fracsight detector train`."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bundle_checks import assert_fitted_on_predictions
from fracsight.explain.boxes import DetectedBox, flip_boxes, turn_boxes, turn_boxes_in
from fracsight.explain.detections import boxes_from_detector, decode_detections
from fracsight.preprocessing import Letterbox


def _box_mask(box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(size, bool)
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.mark.parametrize("k", [0, 1, 2, 3, -1, 5])
def test_turned_boxes_cover_the_turned_pixels(k: int) -> None:
    size = (30, 50)  # not square, so height and width must trade places
    box = np.array([[7.0, 4.0, 19.0, 11.0]])
    turned = turn_boxes_in(box, k, size)[0]
    want = np.rot90(_box_mask(box[0], size), k)
    assert np.array_equal(_box_mask(turned, want.shape), want)


def test_square_turns_and_mirror_compose_back() -> None:
    box = np.array([[10.0, 20.0, 30.0, 25.0]])
    assert np.allclose(turn_boxes(turn_boxes(box, 1, 64), 3, 64), box)
    mirrored = flip_boxes(box, 64)
    assert np.array_equal(_box_mask(mirrored[0], (64, 64)), _box_mask(box[0], (64, 64))[:, ::-1])


def _maps(grid: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centre = np.full((grid, grid), -8.0)
    size = np.zeros((2, grid, grid))
    offset = np.full((2, grid, grid), 0.5)
    centre[3, 5] = 3.0  # a sure box centred at cell (row 3, col 5)
    size[:, 3, 5] = (np.log(2.0), np.log(1.0))  # 2 cells wide, 1 high
    offset[:, 3, 5] = (0.25, 0.75)
    centre[3, 6] = 1.0  # its neighbour: not a local maximum, so no second box
    centre[9, 9] = -1.0  # a weak peak elsewhere
    return centre, size, offset


def test_decoding_reads_box_centre_size_and_offset_at_peaks() -> None:
    centre, size, offset = _maps()
    boxes, scores = decode_detections(centre, size, offset, stride=8, min_score=0.2)
    cx, cy = (5 + 0.25) * 8, (3 + 0.75) * 8
    assert boxes.shape == (2, 4)
    assert np.allclose(boxes[0], [cx - 8, cy - 4, cx + 8, cy + 4])
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert scores[1] == pytest.approx(1 / (1 + np.exp(1.0)))
    only_sure, _ = decode_detections(centre, size, offset, stride=8, min_score=0.5)
    assert len(only_sure) == 1


def test_detector_boxes_land_in_original_pixels_and_overlaps_are_suppressed() -> None:
    centre, size, offset = _maps()
    size[:, 3, 5] = (np.log(6.0), 0.0)  # 6 cells wide: x 18..66 in model pixels
    centre[3, 7] = 2.5  # a second peak two cells right, its box (x 34..82) overlapping at IoU 0.5
    size[:, 3, 7], offset[:, 3, 7] = size[:, 3, 5], offset[:, 3, 5]
    geometry = Letterbox(size=96, original_size=(192, 160))  # scale 0.5, pad_x 8
    boxes = boxes_from_detector(centre, size, offset, geometry, stride=8, min_score=0.2, nms_iou=0.3)
    sure, weak = 1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(1.0))
    assert [b.score for b in boxes] == pytest.approx([sure, weak])
    cx, cy = 5.25 * 8, 3.75 * 8
    want = ((cx - 24 - 8) / 0.5, (cy - 4) / 0.5, (cx + 24 - 8) / 0.5, (cy + 4) / 0.5)
    assert boxes[0].as_tuple() == pytest.approx(want)
    kept_both = boxes_from_detector(centre, size, offset, geometry, stride=8, min_score=0.2, nms_iou=0.6)
    assert len(kept_both) == 3
    assert all(isinstance(b, DetectedBox) for b in boxes)


# ---- the whole path: a tiny FracAtlas, a tiny base bundle, the detector trained on it --------------


@pytest.mark.slow
def test_the_cells_around_each_centre_learn_to_read_its_box() -> None:
    pytest.importorskip("torch")
    from fracsight.detection.train import _targets

    box = (20.0, 36.0, 60.0, 52.0)  # centre (40, 44): cell (row 5, col 5) of a stride-8 grid
    t = _targets([np.array([box])], grid=12, spread=1)
    cells = np.zeros((12, 12), bool)
    cells[4:7, 4:7] = True
    assert np.array_equal(t["cells"][0].numpy(), cells)
    assert np.allclose(t["size"][0, :, 4:7, 4:7].numpy().reshape(2, -1).T, np.log([5.0, 2.0]))
    assert np.allclose(t["box"][0, :, 4:7, 4:7].numpy().reshape(4, -1).T, box)
    assert t["offset"][0, :, 5, 5].tolist() == [0.0, 0.5]  # the centre cell: the exact offset
    assert t["offset"][0, :, 4, 4].tolist() == [1.0, 1.0]  # up and left of it: clipped to the cell
    assert t["offset"][0, :, 6, 6].tolist() == [0.0, 0.0]
    assert t["heat"][0, 5, 5] == 1.0 and t["heat"][0].max() == 1.0
    assert _targets([np.array([box])], grid=12, spread=0)["cells"].sum() == 1


def test_the_box_a_cell_reads_and_its_giou_match_the_decoder() -> None:
    torch = pytest.importorskip("torch")
    from fracsight.detection.train import _decoded, _giou

    rng = np.random.default_rng(0)
    size, offset = rng.normal(size=(1, 2, 6, 6)), rng.uniform(size=(1, 2, 6, 6))
    boxes, _ = decode_detections(np.full((6, 6), 5.0), size[0], offset[0], 8, min_score=0.0, top_k=36)
    read = _decoded(torch.from_numpy(size), torch.from_numpy(offset))[0].reshape(4, -1).T.numpy()
    assert sorted(map(tuple, np.round(read, 6))) == sorted(map(tuple, np.round(boxes, 6)))
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [2.0, 0.0, 3.0, 1.0]])
    assert _giou(a, b).tolist() == pytest.approx([1.0, 1 / 3, -1 / 3])


def test_shifted_views_move_maps_and_boxes_together_by_whole_cells() -> None:
    from fracsight.detection.train import _shifted

    s32 = np.zeros((1, 1, 4, 4), np.float32)
    s32[0, 0, 1, 1] = 1.0  # the cell of the 32-px square at (32, 32)
    s16, s8 = np.kron(s32, np.ones((2, 2), np.float32)), np.kron(s32, np.ones((4, 4), np.float32))
    box = np.array([[32.0, 32.0, 64.0, 64.0]])

    class Fixed:  # shifts of one cell right and one down
        def integers(self, low, high, size):
            return np.array([1, 1])

    (m8, m16, m32), (moved,) = _shifted((s8, s16, s32), [box], 2, Fixed())
    assert moved.tolist() == [[64.0, 64.0, 96.0, 96.0]]
    assert np.argwhere(m32[0, 0]).tolist() == [[2, 2]]
    assert np.array_equal(m16[0, 0], np.kron(m32[0, 0], np.ones((2, 2)))) and m8[0, 0, 8:12, 8:12].all()
    assert s32[0, 0, 1, 1] == 1.0  # the cached maps are left as they were

    class Out:  # three cells left: the box leaves the image
        def integers(self, low, high, size):
            return np.array([-3, 0])

    _, (gone,) = _shifted((s8, s16, s32), [box], 3, Out())
    assert gone.shape == (0, 4)


def _synthetic_views(n: int = 6):
    from fracsight.detection.features import FeatureSet

    rng = np.random.default_rng(0)
    return FeatureSet(
        orientation=np.zeros(n, int),
        fracture=np.ones(n, int),
        grid_features=np.zeros((n, 4, 3, 3), np.float16),
        detect=np.ones(n, bool),
        stride8=rng.normal(size=(n, 4, 8, 8)).astype(np.float16),
        stride16=rng.normal(size=(n, 4, 4, 4)).astype(np.float16),
        features=rng.normal(size=(n, 4, 2, 2)).astype(np.float16),
        boxes=[np.array([[8.0, 8.0, 30.0, 40.0]])] * n,
    )


def test_a_weight_average_is_what_is_validated_and_kept() -> None:
    pytest.importorskip("torch")
    from fracsight.detection.train import HeadsConfig, train_detector

    views = _synthetic_views()
    kept = {}
    for decay in (0.0, 0.9):
        cfg = HeadsConfig(epochs=2, batch_size=2, width=8, shift_cells=0, ema_decay=decay)
        detector, history = train_detector(views, views, cfg, log=lambda line: None)
        assert len(history) == 2 and all(np.isfinite(h["train_loss"]) for h in history)
        kept[decay] = [p.detach().clone() for p in detector.parameters()]
    # same seed, same steps: only the average makes the kept weights differ
    assert any(not np.allclose(a.numpy(), b.numpy()) for a, b in zip(kept[0.0], kept[0.9], strict=True))


def test_detectors_averaged_are_grafted_and_read_back_as_one(detector_bundle, tmp_path: Path) -> None:
    import torch

    from fracsight.detection.graft import graft_heads
    from fracsight.detection.heads import DetectionHead, DetectorEnsemble, heads_from_tensors
    from fracsight.models.unfold import graph_tensors

    _, base, new = detector_bundle
    (single, orientation) = heads_from_tensors(graph_tensors(new / "model.onnx"), "heads/")
    c8, c16, c32 = (getattr(single, f"lateral{s}").in_channels for s in (8, 16, 32))
    torch.manual_seed(1)
    members = [DetectionHead(c8, c16, c32, 8).eval() for _ in range(2)]
    for m in members:  # trained members differ; fresh ones share the centre's prior bias
        torch.nn.init.normal_(m.centre.bias, -4.0, 0.5)
    ensemble = DetectorEnsemble(members).eval()
    x = [torch.randn(1, c, n, n) for c, n in ((c8, 12), (c16, 6), (c32, 3))]
    with torch.no_grad():
        outs = [m(*x) for m in members]
        centre, size, offset = ensemble(*x)
        mean_p = (torch.sigmoid(outs[0][0]) + torch.sigmoid(outs[1][0])) / 2
        assert torch.allclose(torch.sigmoid(centre), mean_p, atol=1e-6)
        assert torch.allclose(size, (outs[0][1] + outs[1][1]) / 2)
        assert torch.allclose(offset, (outs[0][2] + outs[1][2]) / 2)
        alone = DetectorEnsemble(members[:1]).eval()(*x)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(alone, outs[0], strict=True))
    # checks that the graph gives what torch gives, and that the heads read back from it do too
    graft_heads(base / "model.onnx", ensemble, orientation, 96, tmp_path / "model.onnx")
    back, _ = heads_from_tensors(graph_tensors(tmp_path / "model.onnx"), "heads/")
    assert isinstance(back, DetectorEnsemble) and len(back.members) == 2
    with torch.no_grad():
        again = back(*x)
        assert all(
            torch.allclose(a, b, atol=1e-6) for a, b in zip(again, (centre, size, offset), strict=True)
        )


def test_a_new_bundles_default_version_is_never_a_packaged_models() -> None:
    """`detector train fracatlas-lite0-384-v2` gave "fracatlas-lite0-384 v3" and `detector joint`
    over it "v4": a one-epoch model whose results were labelled as the shipped v4's."""
    from fracsight.detection.build import next_version
    from fracsight.inference.store import packaged_models

    shipped = set(packaged_models().values())
    assert ("fracatlas-lite0-384", "4") in shipped and ("fracatlas-lite0-384", "3") not in shipped
    assert next_version("fracatlas-lite0-384", "3", "joint") == "3+joint"
    assert next_version("fracatlas-lite0-384", "2", "detector") == "3"
    assert next_version("my-model", "3", "joint") == "4"
    assert next_version("my-model", "3+detector", "joint") == "3+detector+joint"


def test_new_bundle_keeps_the_base_outputs_and_adds_the_heads(detector_bundle) -> None:
    import onnxruntime as ort

    _, base, new = detector_bundle
    spec = json.loads((new / "bundle.json").read_text())
    old = json.loads((base / "bundle.json").read_text())
    assert spec["localization"]["boxes"] == "detector" and spec["localization"]["stride"] == 8
    assert 0.5 <= spec["orientation"]["min_probability"] < 1.0
    assert spec["version"] == str(int(old["version"]) + 1)
    assert spec["ood"] == old["ood"]  # calibration and operating points: the test below
    image = np.random.default_rng(1).random((1, 1, 96, 96), dtype=np.float32)
    got = ort.InferenceSession(str(new / "model.onnx")).run(None, {"image": image})
    want = ort.InferenceSession(str(base / "model.onnx")).run(None, {"image": image})
    for g, w in zip(got, want, strict=False):
        assert np.allclose(g, w, atol=1e-5)
    assert [g.shape for g in got[len(want) :]] == [(1, 12, 12), (1, 2, 12, 12), (1, 2, 12, 12), (1, 4)]
    recipe = spec["training"]["heads"]["config"]
    assert (recipe["giou_weight"], recipe["size_spread"], recipe["shift_cells"]) == (2.0, 1, 2)
    card = (new / "card.md").read_text()
    assert "the cells within 1 of a box's centre also learn to read its box" in card
    assert "give the heatmap (the detector below gives the boxes)" in card  # not "heatmap and boxes"
    assert "GIoU loss (weight 2.0)" in card and "shifted by up to 2 cells of 32 px" in card


def test_operating_points_are_fitted_on_what_the_predictor_gives(detector_bundle) -> None:
    data, _, new = detector_bundle
    assert_fitted_on_predictions(new, data)


@pytest.mark.slow
def test_predictor_boxes_come_from_the_detector(detector_bundle, tmp_path: Path) -> None:
    from fracsight.explain.detections import boxes_from_detector
    from fracsight.inference import Predictor

    data, _, new = detector_bundle
    image = sorted((data / "images" / "Fractured").glob("*.jpg"))[0]
    upright_only = tmp_path / "bundle"  # the same bundle without its orientation step
    shutil.copytree(new, upright_only)
    spec = json.loads((new / "bundle.json").read_text())
    (upright_only / "bundle.json").write_text(json.dumps({**spec, "orientation": {}}))
    predictor = Predictor(upright_only)
    prediction = predictor.predict(image)
    radiograph = predictor.read(image)
    batch, (geometry,) = predictor.preprocess([radiograph])
    out = predictor.onnx.run(batch)
    loc = predictor.spec.localization
    want = boxes_from_detector(
        out["detect_centre"][0],
        out["detect_size"][0],
        out["detect_offset"][0],
        geometry,
        stride=8,
        min_score=loc["min_box_score"],
        max_boxes=5,
        nms_iou=0.3,
    )
    assert prediction.boxes == tuple(want)


@pytest.mark.slow
def test_an_existing_output_folder_is_never_replaced_without_force(detector_bundle, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fracsight.cli import app

    data, base, _ = detector_bundle
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["detector", "train", str(base), str(keep), "--data", str(data)])
    assert result.exit_code != 0 and "--force" in result.output
    assert (keep / "notes.txt").read_text() == "mine"


def test_detector_bundles_are_never_written_over_or_into_the_bundles_they_start_from(
    detector_bundle, tmp_path: Path
) -> None:
    """`detector joint BASE HEADS RUN --out HEADS --force` (or `--out BASE`) was taken: after the
    epochs of training the new bundle replaced the one the run started from. `detector train BASE
    BASE/new` trained, then wrote the bundle and the feature cache (`BASE/.cache`) into the base's
    folder."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    data, base_fixture, heads_fixture = detector_bundle
    base = shutil.copytree(base_fixture, tmp_path / "base")  # copies: a regression must not spoil the fixture
    heads = shutil.copytree(heads_fixture, tmp_path / "heads")
    runner = CliRunner()
    for out, said in (
        (base, "is or holds the base bundle"),
        (heads, "is or holds the heads bundle"),
        (heads / "joint", "is inside the heads bundle"),
    ):
        run = tmp_path / f"run-{out.name}"
        args = ["detector", "joint", str(base), str(heads), str(run), "--data", str(data)]
        result = runner.invoke(app, [*args, "--out", str(out), "--force", "--epochs", "1"])
        assert result.exit_code == 2, result.output
        assert said in " ".join(result.stderr.split()) and not run.exists()
    inside = runner.invoke(app, ["detector", "train", str(base), str(base / "new"), "--data", str(data)])
    assert inside.exit_code == 2, inside.output
    assert "is inside the base bundle" in " ".join(inside.stderr.split())
    for bundle, fixture in ((base, base_fixture), (heads, heads_fixture)):
        assert sorted(p.name for p in bundle.iterdir()) == sorted(p.name for p in fixture.iterdir())
        assert (bundle / "bundle.json").read_bytes() == (fixture / "bundle.json").read_bytes()


def test_detector_bundle_of_an_epoch_the_run_lacks_names_the_epochs_it_has(
    detector_bundle, tmp_path: Path
) -> None:
    """`detector bundle RUN OUT --epoch 7` of a two-epoch run said "no joint checkpoint at
    RUN/epoch-7.pt: run `fracsight detector joint` first" (exit 1): the run had been made; it says
    which epochs it has, a bad argument (exit 2)."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    data, base, heads = detector_bundle
    run, runner = tmp_path / "run", CliRunner()
    made = runner.invoke(
        app, ["detector", "joint", str(base), str(heads), str(run), "--data", str(data), "--epochs", "2"]
    )
    assert made.exit_code == 0, made.output
    result = runner.invoke(
        app, ["detector", "bundle", str(run), str(tmp_path / "b"), "--data", str(data), "--epoch", "7"]
    )
    assert result.exit_code == 2, result.output
    said = f"error (unknown_epoch): no joint checkpoint at {run / 'epoch-7.pt'}: the run's epochs are 0 to 2"
    assert said in " ".join(result.stderr.split())
    assert not (tmp_path / "b").exists()
    # `export` of the joint run wrote a bundle without its detector, under the real one's name and a
    # card whose Reproduce line could not run
    exported = runner.invoke(app, ["export", str(run), str(tmp_path / "x")])
    assert exported.exit_code == 2 and "Traceback" not in exported.output, exported.output
    said = f"is from a `fracsight detector joint` run: `fracsight detector bundle {run} OUT --data DATA`"
    assert said in " ".join(exported.stderr.split()) and not (tmp_path / "x").exists()
    # a record that chose an epoch the run lacks: the bundle said epoch 7 and held best.pt's network
    history = json.loads((run / "history.json").read_text())
    (run / "history.json").write_text(json.dumps({**history, "chosen": 7}))
    result = runner.invoke(app, ["detector", "bundle", str(run), str(tmp_path / "b"), "--data", str(data)])
    assert result.exit_code == 1, result.output  # a damaged record, as one without a chosen epoch
    assert f"chose epoch 7, but best.pt is epoch {history['chosen']}'s" in " ".join(result.stderr.split())
    assert not (tmp_path / "b").exists()
    # the chosen epoch's own file pruned to save disk: best.pt is its copy, and is the network
    (run / "history.json").write_text(json.dumps(history))
    (run / f"epoch-{history['chosen']}.pt").unlink()
    result = runner.invoke(app, ["detector", "bundle", str(run), str(tmp_path / "b"), "--data", str(data)])
    assert result.exit_code == 0, result.output
    # the bundle records the joint run's images and splits, which `quantize --data` checks other
    # data against (it recorded none: "made before 2026-12-06", and a swapped copy passed)
    from fracsight.bundle import load_bundle_spec

    assert load_bundle_spec(tmp_path / "b").training["images_sha256"] == history["images_sha256"]
    # the run's data with two fractured training images and two fractured validation images
    # traded: the same counts, so it passed, and calibration was fitted on two trained-on images
    traded = tmp_path / "traded"
    shutil.copytree(data, traded, symlinks=True)
    with open(data / "dataset.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for split, other in (("train", "val"), ("val", "train")):
        for row in [r for r in rows if r["split"] == split and r["fractured"] == "1"][:2]:
            row["split"] = other + "-traded"
    for row in rows:
        row["split"] = row["split"].removesuffix("-traded")
    (traded / "dataset.csv").unlink()
    with open(traded / "dataset.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = runner.invoke(app, ["detector", "bundle", str(run), str(tmp_path / "c"), "--data", str(traded)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert "has other images or splits: give the data set the run trained on" in said
    assert not (tmp_path / "c").exists()


def test_detector_joint_refuses_int8_bundles_before_any_work(detector_bundle, tmp_path: Path) -> None:
    """The default model is INT8: given as joint's base or heads, a KeyError traceback (its weights
    are no float tensors), where `detector train` refused it by name."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    data, base, heads = detector_bundle
    for given in ("base", "heads"):
        int8 = shutil.copytree({"base": base, "heads": heads}[given], tmp_path / f"{given}-int8")
        spec = json.loads((int8 / "bundle.json").read_text(encoding="utf-8"))
        (int8 / "bundle.json").write_text(json.dumps({**spec, "precision": "int8"}), encoding="utf-8")
        pair = [str(int8), str(heads)] if given == "base" else [str(base), str(int8)]
        run = tmp_path / f"run-{given}"
        result = CliRunner().invoke(app, ["detector", "joint", *pair, str(run), "--data", str(data)])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert "is int8: give its float bundle" in " ".join(result.stderr.split()) and not run.exists()


@pytest.mark.slow
def test_bases_and_data_the_heads_cannot_use_are_refused_before_any_work(
    detector_bundle, tiny_bundle: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from fracsight.cli import app

    data, base, _ = detector_bundle
    unboxed = tmp_path / "unboxed"  # the same images and labels without annotations/
    unboxed.mkdir()
    for name in ("images", "dataset.csv"):
        (unboxed / name).symlink_to(data / name)
    runner = CliRunner()
    small = runner.invoke(
        app, ["detector", "train", str(tiny_bundle), str(tmp_path / "a"), "--data", str(data)]
    )
    # a base it cannot use: a bad argument, exit 2 (it was 1, as for a failure of the training)
    assert small.exit_code == 2 and "reads 64 px" in small.stderr and "multiple of 96" in small.stderr
    no_boxes = runner.invoke(
        app, ["detector", "train", str(base), str(tmp_path / "b"), "--data", str(unboxed)]
    )
    assert no_boxes.exit_code == 2 and "has no fracture boxes" in no_boxes.stderr
    assert "Traceback" not in small.output + no_boxes.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_unknown_evaluate_split_is_refused_before_the_heads_train(
    detector_bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import fracsight.detection.prepare as prepare
    from fracsight.cli import app

    def prepared(*_args, **_kwargs):
        raise AssertionError("features prepared before the split was checked")

    monkeypatch.setattr(prepare, "prepare_features", prepared)
    data, base, _ = detector_bundle
    out = tmp_path / "new"
    args = ["detector", "train", str(base), str(out), "--data", str(data), "--evaluate", "tset"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "no 'tset' split" in result.stderr, result.output
    assert not out.exists()


def test_distillation_matches_a_teacher_and_leaves_one_detector() -> None:
    torch = pytest.importorskip("torch")
    from fracsight.detection.heads import DetectionHead, DetectorEnsemble
    from fracsight.detection.train import HeadsConfig, distillation_loss, train_heads

    views = _synthetic_views()
    x = tuple(torch.from_numpy(m.astype(np.float32)) for m in (views.stride8, views.stride16, views.features))
    a, b = DetectionHead(4, 4, 4, 8).eval(), DetectionHead(4, 4, 4, 8).eval()
    with torch.no_grad():
        assert float(distillation_loss(a(*x), a(*x))) == pytest.approx(0.0, abs=1e-5)
        assert float(distillation_loss(a(*x), b(*x))) > 0.01
    cfg = HeadsConfig(epochs=2, batch_size=2, width=8, shift_cells=0, orientation_epochs=1, members=2)
    averaged = train_heads(views, views, cfg, log=lambda line: None)
    distilled = train_heads(views, views, dataclasses.replace(cfg, distill=1.0), log=lambda line: None)
    assert isinstance(averaged.detector, DetectorEnsemble)
    assert isinstance(distilled.detector, DetectionHead)  # one detector's cost at inference
    assert [h["epoch"] for h in distilled.history if h.get("member") == "distilled"] == [1, 2]


def test_distilling_needs_members_to_learn_from(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from fracsight.cli import app

    args = ["detector", "train", "fracatlas-lite0-384-v2", str(tmp_path / "new"), "--data", str(tmp_path)]
    refused = CliRunner().invoke(app, [*args, "--distill", "1"])
    assert refused.exit_code == 2 and "--members 2 or more" in refused.output, refused.output
    assert not (tmp_path / "new").exists()


def test_detector_train_help_states_the_recipe_defaults() -> None:
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from fracsight.cli import app
    from fracsight.detection.train import HeadsConfig

    shown = CliRunner().invoke(app, ["detector", "train", "--help"], env={"COLUMNS": "300"}).output
    cfg = HeadsConfig()
    for option, value in (
        ("--giou", cfg.giou_weight),
        ("--size-spread", cfg.size_spread),
        ("--shift", cfg.shift_cells),
        ("--members", cfg.members),
    ):
        line = next(row for row in shown.splitlines() if option in row)
        assert f"(default {value})" in line, line


def test_a_split_only_an_own_data_set_can_carve_is_refused_before_the_heads_train(
    detector_bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another copy of the data without splits: the heads could carve their own validation images
    out of it, but its `test` split is not the base's held-out one, so the evaluation at the end
    would refuse it; the command says so before the features are read."""

    from typer.testing import CliRunner

    import fracsight.detection.prepare as prepare
    from fracsight.cli import app

    def prepared(*_args, **_kwargs):
        raise AssertionError("features prepared before the split was checked")

    monkeypatch.setattr(prepare, "prepare_features", prepared)
    data, base, _ = detector_bundle
    copy = tmp_path / "copy"
    for path in data.rglob("*"):
        if path.is_file() and path.name != "dataset.csv":
            (copy / path.relative_to(data)).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(data)).symlink_to(path.resolve())
    with open(data / "dataset.csv", newline="", encoding="utf-8") as f:
        rows = [{k: v for k, v in row.items() if k != "split"} for row in csv.DictReader(f)]
    with open(copy / "dataset.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "new"
    args = ["detector", "train", str(base), str(out), "--data", str(copy), "--evaluate", "test"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "no 'test' split" in result.stderr, result.output
    assert not out.exists()


def test_the_card_names_test_images_that_could_not_be_read(detector_bundle, tmp_path: Path) -> None:
    """`detector train --evaluate test` with a test image that cannot be read: the bundle is made,
    its card and bundle.json name the image, and a warning says so, as export does."""
    from typer.testing import CliRunner

    from fracsight.bundle import load_bundle_spec
    from fracsight.cli import app

    data, base, _ = detector_bundle
    copy = shutil.copytree(data, tmp_path / "data", symlinks=True)
    with open(copy / "dataset.csv", newline="", encoding="utf-8") as f:
        damaged = next(r for r in csv.DictReader(f) if r["split"] == "test" and r["fractured"] == "1")
    image = copy / "images" / "Fractured" / damaged["image_id"]
    image.unlink()
    image.write_bytes(b"")
    out = tmp_path / "new"
    args = ["detector", "train", str(base), str(out), "--data", str(copy), "--epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--evaluate", "test"])
    assert result.exit_code == 0, result.output
    source = f"images/Fractured/{damaged['image_id']}"
    failed = load_bundle_spec(out).metrics["test"]["failed"]
    assert [(f["source"], f["error_code"]) for f in failed] == [(source, "empty_file")]
    card = (out / "card.md").read_text(encoding="utf-8")
    assert f"- **1 image of the split could not be read and is not in these figures**: {source}" in card
    warning = " ".join(result.stderr.split())
    assert "warning: 1 of 12 images of the test split could not be read and are left out" in warning


def fewer_fracatlas(data: Path, root: Path, per_label: dict[str, int]) -> Path:
    """Another FracAtlas-layout data set at ``root``: ``per_label[split]`` images of each fracture
    label of those splits of ``data`` (its files linked, with their boxes)."""
    with open(data / "dataset.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    kept = [
        row
        for split, n in per_label.items()
        for label in ("1", "0")
        for row in [r for r in rows if r["split"] == split and r["fractured"] == label][:n]
    ]
    for row in kept:
        folder = "Fractured" if row["fractured"] == "1" else "Non_fractured"
        for path in (
            Path("images") / folder / row["image_id"],
            Path("annotations") / "yolo" / f"{Path(row['image_id']).stem}.txt",
        ):
            if (data / path).exists():
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).symlink_to((data / path).resolve())
    with open(root / "dataset.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return root


def test_a_base_with_heads_already_or_in_int8_is_refused_before_any_work(
    detector_bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle with a detector grafted (a second could not be grafted beside it: the run ended in a
    traceback after training) or an INT8 one (heads learn on the float network) is no base."""
    from typer.testing import CliRunner

    import fracsight.detection.prepare as prepare
    from fracsight.cli import app

    def prepared(*_args, **_kwargs):
        raise AssertionError("features prepared for a base that cannot take the heads")

    monkeypatch.setattr(prepare, "prepare_features", prepared)
    data, base, grafted = detector_bundle
    int8 = shutil.copytree(base, tmp_path / "int8")
    spec = json.loads((base / "bundle.json").read_text(encoding="utf-8"))
    (int8 / "bundle.json").write_text(json.dumps({**spec, "precision": "int8"}), encoding="utf-8")
    runner = CliRunner()
    for given, said in (
        (grafted, "has a detector and an orientation step already (grafted onto tiny-base v1"),
        (int8, "is int8: train the detector on its float bundle, then quantize"),
    ):
        out = tmp_path / f"from-{given.name}"
        result = runner.invoke(app, ["detector", "train", str(given), str(out), "--data", str(data)])
        assert result.exit_code == 2 and said in " ".join(result.stderr.split()), result.output
        assert "Traceback" not in result.output and not out.exists()


def test_heads_trained_on_other_data_count_the_validation_images_they_were_fitted_on(
    detector_bundle, tmp_path: Path
) -> None:
    """Calibration and operating points are refitted on the validation images of --data; the
    bundle and its card say how many those were, not how many the base was fitted on."""
    from typer.testing import CliRunner

    from fracsight.bundle import load_bundle_spec
    from fracsight.cli import app

    data, base, _ = detector_bundle
    other = fewer_fracatlas(data, tmp_path / "other", {"train": 10, "val": 5})
    out = tmp_path / "new"
    args = ["detector", "train", str(base), str(out), "--data", str(other), "--epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--normals", "4"])
    assert result.exit_code == 0, result.output
    spec = load_bundle_spec(out)
    validation = spec.metrics["validation"]
    assert validation["n"] == 10 != load_bundle_spec(base).metrics["validation"]["n"]
    card = (out / "card.md").read_text(encoding="utf-8")
    assert "(n = 10)" in card
    # where the network was trained stays the base's record; the heads' data have their own
    assert spec.training["data"] == load_bundle_spec(base).training["data"] == str(data.resolve())
    assert spec.training["heads"]["data"] == str(other.resolve()) and spec.training["heads"]["other_data"]
    grafted = load_bundle_spec(detector_bundle[2])  # on the base's own data: nothing more to say
    assert grafted.training["heads"]["other_data"] is False
    assert "on other data" not in (detector_bundle[2] / "card.md").read_text(encoding="utf-8")
    assert f"the calibration and the operating points chosen, on other data: `{other.resolve()}`" in " ".join(
        card.split()
    )


def test_a_copy_with_train_and_val_swapped_is_other_data_the_network_trained_on(
    detector_bundle, tmp_path: Path
) -> None:
    """The base's FracAtlas set copied with dataset.csv's train and val swapped: its images, labels
    and paths are the run's, so `export --data-dir` took it for the run's data moved, and `detector
    train --data` never checked it; both fitted calibration and thresholds on images the network
    trained on. The digest of a run's images records their splits now."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    data, base, _ = detector_bundle
    swapped = tmp_path / "swapped"
    shutil.copytree(data, swapped, symlinks=True)
    text = (swapped / "dataset.csv").read_text(encoding="utf-8")
    rows = text.replace(",train,", ",was-train,").replace(",val,", ",train,").replace(",was-train,", ",val,")
    assert rows != text
    (swapped / "dataset.csv").unlink()
    (swapped / "dataset.csv").write_text(rows, encoding="utf-8")
    refused = "validation images of"
    for args in (
        ["export", str(base.parent / "run"), str(tmp_path / "exported"), "--data-dir", str(swapped)],
        ["detector", "train", str(base), str(tmp_path / "grafted"), "--data", str(swapped), "--epochs", "1"],
    ):
        result = CliRunner().invoke(app, args)
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2 and refused in message and "trained on" in message, result.output
    assert not (tmp_path / "exported").exists() and not (tmp_path / "grafted").exists()


def test_a_split_another_data_set_lacks_is_refused_naming_evaluate(detector_bundle, tmp_path: Path) -> None:
    """`detector train --evaluate val` on other data without a val split: the hint named `--split`,
    an option `detector train` does not have; it names `--evaluate` now, before any work."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    data, base, _ = detector_bundle
    noval = fewer_fracatlas(data, tmp_path / "noval", {"train": 10, "test": 5})
    out = tmp_path / "new"
    args = ["detector", "train", str(base), str(out), "--data", str(noval), "--evaluate", "val"]
    result = CliRunner().invoke(app, args)
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "has no 'val' split; it has ['test', 'train']" in message, result.output
    assert "--evaluate a split it has, or leave --evaluate out" in message and "--split" not in message
    assert not out.exists()


def test_measuring_the_new_bundle_writes_nothing_beside_it(detector_bundle, tmp_path: Path) -> None:
    """--evaluate measures for the card; it wrote a report into `<out>-evaluation-<split>/` as well,
    over the metrics.json and report.html of a folder of the user's by that name."""
    from typer.testing import CliRunner

    from fracsight.bundle import load_bundle_spec
    from fracsight.cli import app

    data, base, _ = detector_bundle
    mine = tmp_path / "new-evaluation-test"
    mine.mkdir()
    (mine / "metrics.json").write_text("mine", encoding="utf-8")
    out = tmp_path / "new"
    args = ["detector", "train", str(base), str(out), "--data", str(data), "--epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--evaluate", "test"])
    assert result.exit_code == 0, result.output
    assert "test" in load_bundle_spec(out).metrics
    assert {p.name for p in tmp_path.iterdir()} == {"new", "new-evaluation-test", ".cache"}
    assert [p.name for p in mine.iterdir()] == ["metrics.json"]
    assert (mine / "metrics.json").read_text(encoding="utf-8") == "mine"


def test_a_detector_that_diverges_is_not_written(detector_bundle, tmp_path: Path) -> None:
    """A loss weight so large that the loss overflows made NaN weights, written as a bundle that
    drew no boxes; the run stops and says which options to lower."""
    from typer.testing import CliRunner

    from fracsight.cli import app
    from fracsight.detection.build import build_detector_bundle
    from fracsight.detection.train import HeadsConfig
    from fracsight.errors import ConfigError

    data, base, _ = detector_bundle
    out = tmp_path / "new"
    # the CLI now bounds --giou (at most 100): a Python caller's weight is still guarded
    with pytest.raises(ConfigError, match=r"the detector diverged in epoch 1.*lower --giou or --distill"):
        build_detector_bundle(
            base, out, data, cfg=HeadsConfig(epochs=1, giou_weight=1e300), log=lambda _: None
        )
    assert not out.exists()
    args = ["detector", "train", str(base), str(out), "--data", str(data), "--epochs", "1"]
    refused = CliRunner().invoke(app, [*args, "--giou", "1e300"])
    assert refused.exit_code == 2 and "--giou" in refused.stderr and not out.exists()


def test_features_cached_in_part_by_a_stopped_run_are_made_again(detector_bundle, tmp_path: Path) -> None:
    """A run stopped while it wrote the frozen features (Ctrl-C, a full disk) left a folder the next
    run read as the cache, and failed on (KeyError: 'box_counts')."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    data, base, _ = detector_bundle
    runner = CliRunner()
    train = ["detector", "train", str(base), "--data", str(data), "--epochs", "1"]
    first = runner.invoke(app, [*train, str(tmp_path / "first")])
    assert first.exit_code == 0, first.output
    (cached,) = (tmp_path / ".cache").glob("heads-*-train")
    for name in ("features.npy", "box_counts.npy", "boxes.npy"):  # what had not been written yet
        (cached / name).unlink()
    again = runner.invoke(app, [*train, str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert (cached / "boxes.npy").is_file() and not list((tmp_path / ".cache").glob("*.partial"))


def test_features_of_a_replaced_image_are_made_again(detector_bundle, tmp_path: Path) -> None:
    """The frozen features were cached by the images' paths and boxes only: a file replaced by
    another image (or relabelled) under the same name was trained on with the old one's features."""
    import shutil

    from typer.testing import CliRunner

    from fracsight.cli import app

    shared, base, _ = detector_bundle
    data = shutil.copytree(shared, tmp_path / "data", symlinks=True)
    train = ["detector", "train", str(base), "--data", str(data), "--epochs", "1"]
    first = CliRunner().invoke(app, [*train, str(tmp_path / "first")])
    assert first.exit_code == 0, first.output
    assert len(list((tmp_path / ".cache").glob("heads-*-train"))) == 1
    images = sorted((data / "images" / "Non_fractured").iterdir())
    replaced = images[0]
    replaced.unlink()
    shutil.copyfile(images[1], replaced)  # another image under the first one's name
    again = CliRunner().invoke(app, [*train, str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert len(list((tmp_path / ".cache").glob("heads-*-train"))) == 2


@pytest.mark.parametrize("scale", [0.6, 1.0, 1.35, 1.6])
def test_a_zoomed_view_and_its_boxes_agree(scale: float) -> None:
    """The zoomed views the detector learns from: a bright square drawn where a box is lies where
    :func:`zoom_boxes` moves the box; a box pushed out of the view is dropped."""
    from fracsight.detection.features import zoom_image
    from fracsight.explain.boxes import zoom_boxes

    side = 96
    image = np.zeros((side, side), np.uint8)
    image[40:56, 30:50] = 255
    rows, cols = np.nonzero(zoom_image(image, scale) > 127)
    (moved,) = zoom_boxes(np.array([[30.0, 40.0, 50.0, 56.0]]), scale, (0.0, 0.0), side)
    np.testing.assert_allclose(moved, [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], atol=1.0)
    corner = zoom_boxes(np.array([[0.0, 0.0, 10.0, 10.0]]), 2.0, (0.0, 0.0), side)
    assert corner.shape == (0, 4)


def test_zoomed_views_are_added_for_the_detector_and_cached_apart(detector_bundle, tmp_path: Path) -> None:
    """`detector train --zoom-views N`: N more views with maps for every image the detector learns
    from, their boxes inside the view, in a cache of their own; the bundle records them."""
    from typer.testing import CliRunner

    from fracsight.bundle import load_bundle_spec
    from fracsight.cli import app
    from fracsight.detection.features import FeatureSet

    data, base, _ = detector_bundle
    runner = CliRunner()
    train = ["detector", "train", str(base), "--data", str(data), "--epochs", "1"]
    plain = runner.invoke(app, [*train, str(tmp_path / "plain")])
    zoom = ["--zoom-views", "2", "--zoom", "0.7", "1.5"]
    zoomed = runner.invoke(app, [*train, str(tmp_path / "zoomed"), *zoom])
    assert plain.exit_code == 0 and zoomed.exit_code == 0, plain.output + zoomed.output
    caches = sorted((tmp_path / ".cache").glob("heads-*-train"), key=lambda p: p.stat().st_mtime)
    assert len(caches) == 2
    without, with_zoom = (FeatureSet.load(c) for c in caches)
    # the detector's views: four turns of each of its images, and an upright mirror of the fractured ones
    views = int(without.detect.sum())
    fractured = int(((np.asarray(without.fracture) == 1) & np.asarray(without.detect)).sum()) // 5
    assert int(with_zoom.detect.sum()) - views == 2 * (views - fractured) // 4
    side = with_zoom.stride8.shape[-1] * 8
    for boxes in with_zoom.boxes:
        assert (boxes >= 0).all() and (boxes <= side).all()
    recorded = load_bundle_spec(tmp_path / "zoomed").training["heads"]
    assert recorded["zoom_views"] == {"count": 2, "low": 0.7, "high": 1.5}
    assert "zoom_views" not in load_bundle_spec(tmp_path / "plain").training["heads"]
    assert "zoomed by 0.7-1.5" in (tmp_path / "zoomed" / "card.md").read_text()
    bad = runner.invoke(app, [*train, str(tmp_path / "bad"), "--zoom-views", "1", "--zoom", "2", "1"])
    assert bad.exit_code == 2 and "--zoom" in bad.output and not (tmp_path / "bad").exists()


def test_bases_and_heads_whose_model_is_not_the_one_bundle_json_names_are_refused_before_any_work(
    detector_bundle, tmp_path: Path
) -> None:
    """A base whose model.onnx was swapped or cut short (predict refuses it) gave a bundle whose card
    named a network that was not inside it (exit 0), or a protobuf traceback; heads cut short the
    same in `detector joint`."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    data, base_fixture, heads_fixture = detector_bundle
    base, heads = (
        shutil.copytree(base_fixture, tmp_path / "base"),
        shutil.copytree(heads_fixture, tmp_path / "heads"),
    )
    for bundle in (base, heads):
        model = (bundle / "model.onnx").read_bytes()
        (bundle / "model.onnx").write_bytes(model[: len(model) // 2])
    runner = CliRunner()
    out = tmp_path / "new"
    made = runner.invoke(
        app, ["detector", "train", str(base), str(out), "--data", str(data), "--epochs", "1"]
    )
    joint = runner.invoke(
        app, ["detector", "joint", str(base_fixture), str(heads), str(tmp_path / "run"), "--data", str(data)]
    )
    for result in (made, joint):
        assert result.exit_code == 2, result.output
        assert "error (bundle_checksum_mismatch): model.onnx in" in " ".join(result.stderr.split())
        assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("layout", "refused"), [("fracatlas", True), ("mura", True), ("labels-csv", False)])
def test_an_output_inside_a_data_set_found_by_scanning_its_folders_is_refused(
    tmp_path: Path, layout: str, refused: bool
) -> None:
    """`detector train base data/images/Fractured/x --data data` (FracAtlas), `quantize` and `export`
    into a data set were taken: every later read warned of the bundle's files. A labels.csv set names
    its images, so a folder inside it is not read as one of them."""
    from fracsight.data import Dataset
    from fracsight.errors import OutputFolderError

    dataset = Dataset(root=tmp_path, layout=layout, samples=(), class_names={})
    dataset.refuse_output_inside(tmp_path.parent / "elsewhere")
    if not refused:
        dataset.refuse_output_inside(tmp_path / "reports")
        return
    with pytest.raises(OutputFolderError, match=f"inside the {layout} data set"):
        dataset.refuse_output_inside(tmp_path / "images" / "x", "OUT")


def test_detector_bundles_are_not_written_inside_the_data_set(detector_bundle, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fracsight.cli import app

    data_fixture, base, _ = detector_bundle
    data = shutil.copytree(data_fixture, tmp_path / "data", symlinks=True)
    out = data / "images" / "Fractured" / "x"
    result = CliRunner().invoke(app, ["detector", "train", str(base), str(out), "--data", str(data)])
    assert result.exit_code == 2, result.output
    assert "is inside the fracatlas data set" in " ".join(result.stderr.split())
    assert not out.exists() and not (out.parent / ".cache").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["joint", "--lr", "1e300"],
        ["joint", "--lr", "inf"],
        ["joint", "--distill", "inf"],
        ["train", "--giou", "inf"],
        ["train", "--distill", "inf"],
    ],
)
def test_settings_out_of_bounds_are_refused_before_any_work(args: list[str], tmp_path: Path) -> None:
    """`detector joint --lr 1e300` trained, then ended in a RuntimeError traceback (`--lr inf`: said it
    diverged, exit 1); `detector train --giou inf` the same."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    command, *settings = args
    folders = (
        ["base", "heads", str(tmp_path / "run")] if command == "joint" else ["base", str(tmp_path / "o")]
    )
    result = CliRunner().invoke(app, ["detector", command, *folders, "--data", str(tmp_path), *settings])
    assert result.exit_code == 2, result.output
    assert settings[0] in result.output and "Traceback" not in result.output
    assert f"Invalid value for '{settings[0]}'" in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "o").exists()


def test_a_bundle_json_with_a_value_that_is_not_a_number_is_never_written(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """bundle.json held a bare NaN (a detector chosen on data without boxes): not JSON."""
    from fracsight.bundle import load_bundle_spec, write_bundle_spec
    from fracsight.errors import BundleError

    spec = load_bundle_spec(tiny_bundle)
    for value in (float("nan"), float("inf")):
        with pytest.raises(BundleError, match="not a finite number"):
            write_bundle_spec(dataclasses.replace(spec, localization={"validation_ap50": value}), tmp_path)


def test_a_split_without_boxes_is_refused_before_any_work(detector_bundle, tmp_path: Path) -> None:
    """A val split without boxes trained every epoch (AP nan) and ended in a TypeError traceback;
    a train split without them wrote a detector that learned from no box, exit 0."""
    from typer.testing import CliRunner

    from fracsight.cli import app
    from fracsight.data import load_dataset
    from fracsight.data.splits import train_val_samples

    data, base, _ = detector_bundle
    for split in ("val", "train"):
        unboxed = tmp_path / split
        (unboxed / "annotations" / "yolo").mkdir(parents=True)
        for name in ("images", "dataset.csv"):
            (unboxed / name).symlink_to(data / name)
        train, val = train_val_samples(load_dataset(data), 0)
        emptied = {s.path.stem for s in (val if split == "val" else train)}
        for label in (data / "annotations" / "yolo").glob("*.txt"):
            target = unboxed / "annotations" / "yolo" / label.name
            target.write_text("" if label.stem in emptied else label.read_text())
        out = tmp_path / f"{split}-out"
        result = CliRunner().invoke(app, ["detector", "train", str(base), str(out), "--data", str(unboxed)])
        assert result.exit_code == 2, result.output
        assert f"its {split} split holds no fracture box" in " ".join(result.stderr.split())
        assert not out.exists()


@pytest.mark.slow
def test_a_joint_bundle_on_data_without_boxes_is_refused(detector_bundle, tmp_path: Path) -> None:
    """`detector bundle RUN OUT --data D` with D's box files all empty wrote a bundle chosen on
    "box AP50 nan", with NaN in bundle.json (exit 0); `detector train` refused such data with exit 1."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    data, base, heads = detector_bundle
    unboxed = tmp_path / "unboxed"
    (unboxed / "annotations" / "yolo").mkdir(parents=True)
    for name in ("images", "dataset.csv"):
        (unboxed / name).symlink_to(data / name)
    for label in (data / "annotations" / "yolo").glob("*.txt"):
        (unboxed / "annotations" / "yolo" / label.name).write_text("")
    run, runner = tmp_path / "run", CliRunner()
    made = runner.invoke(
        app, ["detector", "joint", str(base), str(heads), str(run), "--data", str(data), "--epochs", "1"]
    )
    assert made.exit_code == 0, made.output
    out = tmp_path / "b"
    result = runner.invoke(app, ["detector", "bundle", str(run), str(out), "--data", str(unboxed)])
    assert result.exit_code == 2 and "has no fracture boxes" in result.stderr, result.output
    assert not out.exists()


def test_the_reproduce_lines_chain_each_step_onto_the_one_before(detector_bundle, tmp_path: Path) -> None:
    """The card's Reproduce block re-trains into `RUN-again` and exports to `BASE-again`; the
    `detector train` line after it was appended as typed, so run in order it was refused (OUT held
    a bundle) or, with --force, grafted onto the old base and overwrote the bundle described.
    Typed for real (`python -m fracsight`: the command line is recorded only when typed)."""
    import subprocess
    import sys

    from fracsight.bundle import load_bundle_spec
    from fracsight.training.card import reproduce_line

    data, base, _ = detector_bundle
    new = tmp_path / "new"
    args = ["detector", "train", str(base), str(new), "--data", str(data), "--epochs", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "fracsight", *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    train, export, graft = load_bundle_spec(new).training["commands"]
    assert export.split()[2:4] == [f"{base.parent / 'run'}-again", f"{base}-again"]
    assert graft == f"fracsight detector train {base}-again {new}-again --data {data} --epochs 1"
    quantize = reproduce_line(
        [train, export, graft], f"fracsight quantize {new}/ {new}-int8 --data {data}", [f"{new}-int8"]
    )
    assert quantize == f"fracsight quantize {new}-again {new}-int8-again --data {data}"
    # no re-run above (the user's own --train-command), or a note on a step run from Python: as given
    assert reproduce_line(["fracsight export runs/a bundles/a"], "fracsight quantize bundles/a q", ["q"]) == (
        "fracsight quantize bundles/a q"
    )
    note = "# then fracsight.detection.build.build_detector_bundle(...) from Python"
    assert reproduce_line([train, export], note, ["x"]) == note
    # review: the command's own words and options that name no folder as typed; --out=FOLDER too
    earlier = ["fracsight train -c run/c.yaml --out run-again", "fracsight export run-again bundle-again"]
    line = "fracsight detector bundle jrun jb --data d --name bundle"
    assert reproduce_line(earlier, line, ["jb"]) == line.replace(" jb ", " jb-again ")
    line = "fracsight detector joint bundle heads joint --out=jb --force --evaluate test"
    assert reproduce_line(earlier, line, ["joint", "jb"]) == (
        "fracsight detector joint bundle-again heads joint-again --out=jb-again --force --evaluate test"
    )


def test_the_reproduce_line_knows_a_folder_however_it_is_spelled(tmp_path: Path, monkeypatch) -> None:
    """Export wrote `b1`, quantize was given `/home/me/b1`: the quantize line read the original `b1`,
    not the `b1-again` the lines above it had just rebuilt."""
    from fracsight.training.card import reproduce_line

    monkeypatch.chdir(tmp_path)
    earlier = ["fracsight train data --out r1-again", "fracsight export r1-again b1-again"]
    line = f"fracsight quantize {tmp_path / 'b1'} ./q1 --data data"
    assert (
        reproduce_line(earlier, line, [tmp_path / "q1"]) == "fracsight quantize b1-again q1-again --data data"
    )


def test_a_base_whose_graph_has_a_detector_is_refused_before_any_work(tiny_bundle: Path) -> None:
    """A detector's model.onnx under a bundle.json that does not say so (swapped in, its checksum
    updated): `detector train` cached features and trained for minutes to hours, then failed with
    onnx's "Cant merge two graphs with overlapping names"."""
    pytest.importorskip("torch")
    import onnx
    from onnx import TensorProto, helper

    from fracsight.bundle import load_bundle_spec
    from fracsight.detection.build import refuse_grafted_base
    from fracsight.errors import BundleError

    base = load_bundle_spec(tiny_bundle)
    refuse_grafted_base(base, (tiny_bundle / "model.onnx").read_bytes())  # its own graph: taken
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("orientation", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["orientation"])], "g", [x], [y])
    detector_graph = onnx.helper.make_model(graph).SerializeToString()
    with pytest.raises(BundleError, match=r"model.onnx has a detector's outputs already \(orientation\)"):
        refuse_grafted_base(base, detector_graph)


def test_the_feature_cache_is_other_features_for_an_image_moved_between_splits(tmp_path: Path) -> None:
    """The key hashed train and val as one list: the last training image moved to the front of val
    gave the same key, and the detector's old features (that image a training view) were read again."""
    from fracsight.data import Sample
    from fracsight.detection.features import ZoomViews
    from fracsight.detection.prepare import cache_key

    samples = []
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(b"x")
        samples.append(Sample(tmp_path / f"{i}.png", labels={"fracture": i % 2}))
    before = cache_key("settings", ZoomViews(), samples[:3], samples[3:])
    assert before != cache_key("settings", ZoomViews(), samples[:2], samples[2:])
    assert before == cache_key("settings", ZoomViews(), samples[:3], samples[3:])


def test_an_output_named_like_the_default_feature_cache_is_refused_before_any_work(tmp_path: Path) -> None:
    """`detector train BASE c/.cache`: every feature and epoch ran into the cache's folder, which
    was OUT, then the bundle was refused there ("not a model bundle, so --force will not replace it")."""
    from typer.testing import CliRunner

    from fracsight.cli import app

    (tmp_path / "run").mkdir()
    for args in (
        ["detector", "train", "default", str(tmp_path / "c" / ".cache"), "--data", str(tmp_path)],
        ["detector", "joint", "default", "default", str(tmp_path / ".cache"), "--data", str(tmp_path)],
        [
            "detector",
            "bundle",
            str(tmp_path / "run"),
            str(tmp_path / "b" / ".cache"),
            "--data",
            str(tmp_path),
        ],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "the frozen features are cached in .cache beside" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
