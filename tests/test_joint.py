"""Joint fine-tuning: a network rebuilt from its ONNX graph, trained with its grafted heads."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from fracsight.bundle import load_bundle_spec  # noqa: E402
from fracsight.cli import app  # noqa: E402
from fracsight.detection.joint import choose_epoch, load_joint  # noqa: E402
from fracsight.models.network import HeadConfig  # noqa: E402
from fracsight.models.unfold import check_parity, network_from_onnx  # noqa: E402
from test_detection import fewer_fracatlas  # noqa: E402

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "fracsight" / "weights"


def test_the_shipped_float_network_is_rebuilt_from_its_graph() -> None:
    onnx_path = WEIGHTS / "fracatlas-lite0-384-v2" / "model.onnx"
    spec = load_bundle_spec(onnx_path.parent)
    network = network_from_onnx(onnx_path, spec.architecture, HeadConfig(regions=spec.head("region").classes))
    assert check_parity(network, onnx_path, spec.input_size, atol=1e-4) < 1e-4


def test_a_graph_of_another_architecture_is_refused() -> None:
    onnx_path = WEIGHTS / "fracatlas-lite0-384-v2" / "model.onnx"
    with pytest.raises(ValueError, match="does not hold"):
        network_from_onnx(onnx_path, "mobilenetv2", HeadConfig(regions=("hand", "leg", "hip", "shoulder")))


def test_joint_network_computes_what_the_grafted_bundle_computes(detector_bundle) -> None:
    import onnxruntime as ort

    _, base, grafted = detector_bundle
    model, _ = load_joint(base, grafted)
    size = load_bundle_spec(grafted).input_size
    x = np.random.default_rng(1).random((2, 1, size, size), dtype=np.float32)
    session = ort.InferenceSession(str(grafted / "model.onnx"), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": x}), strict=True))
    with torch.no_grad():
        out, (centre, box_size, offset), orientation = model.eval()(torch.from_numpy(x))
    for name, value in (
        ("fracture", out["fracture"]),
        ("detect_centre", centre),
        ("detect_size", box_size),
        ("detect_offset", offset),
        ("orientation", orientation),
    ):
        np.testing.assert_allclose(got[name], value.numpy(), atol=1e-3, rtol=1e-3, err_msg=name)


def test_a_bundle_without_a_detector_cannot_start_the_heads(detector_bundle) -> None:
    from fracsight.errors import ConfigError

    _, base, _ = detector_bundle
    with pytest.raises(ConfigError, match="no grafted detector"):
        load_joint(base, base)


def _epoch(epoch: int, up: float, turned: float, ap50: float) -> dict:
    return {"epoch": epoch, "val_auroc": up, "val_auroc_rot90": turned, "val_ap50": ap50}


def test_the_epoch_is_chosen_for_boxes_without_giving_up_ranking() -> None:
    history = [
        _epoch(0, 0.938, 0.78, 0.26),  # the start
        _epoch(1, 0.930, 0.90, 0.40),  # best boxes, but upright ranking fell
        _epoch(2, 0.936, 0.92, 0.30),
        _epoch(3, 0.935, 0.93, 0.33),
    ]
    assert choose_epoch(history) == 3
    assert choose_epoch(history, auroc_margin=0.01) == 1
    assert choose_epoch(history[:1]) == 0


def test_joint_run_and_its_bundle_through_the_cli(detector_bundle, tmp_path: Path) -> None:
    from fracsight.inference import Predictor

    data, base, grafted = detector_bundle
    runner = CliRunner()
    run, out = tmp_path / "run", tmp_path / "bundle"
    args = [
        "detector",
        "joint",
        str(base),
        str(grafted),
        str(run),
        "--data",
        str(data),
        "--epochs",
        "1",
        "--distill",
        "0.1",
        "--zoom",
        "0.8",
        "1.25",
        "--shift",
        "0.05",
    ]
    done = runner.invoke(app, [*args, "--out", str(out), "--version", "9", "--evaluate", "test"])
    assert done.exit_code == 0, done.output
    assert {p.name for p in run.iterdir()} >= {"epoch-0.pt", "epoch-1.pt", "best.pt", "history.json"}
    history = json.loads((run / "history.json").read_text())
    assert history["chosen"] in (0, 1) and len(history["epochs"]) == 2
    spec = load_bundle_spec(out)
    assert spec.version == "9" and spec.localization["boxes"] == "detector"
    assert spec.training["joint"]["chosen"] == history["chosen"]
    assert "test" in spec.metrics and "joint fine-tuning" in (out / "card.md").read_text()
    # the card named the detector's loss as "centre focal loss, size and offset L1" only
    card = " ".join((out / "card.md").read_text().split())
    assert (
        "size and offset L1; the cells within 1 of a box's centre also reading its box, GIoU loss "
        "(weight 2.0))" in card
    )
    image = sorted((data / "images" / "Fractured").glob("*.jpg"))[0]
    prediction = Predictor(out).predict(image)
    assert 0.0 <= prediction.fracture_probability <= 1.0 and prediction.model.endswith("v9")
    # another epoch than the chosen one, to look at: the card says so
    other = 1 - history["chosen"]
    looked = runner.invoke(
        app,
        ["detector", "bundle", str(run), str(tmp_path / "other"), "--data", str(data), "--epoch", str(other)],
    )
    assert looked.exit_code == 0, looked.output
    assert "this bundle, not the chosen epoch" in (tmp_path / "other" / "card.md").read_text()
    missing = runner.invoke(
        app, ["detector", "bundle", str(run), str(tmp_path / "none"), "--data", str(data), "--epoch", "7"]
    )
    assert missing.exit_code != 0 and "no joint checkpoint" in missing.output
    # --force never replaces the bundles the run started from (copies here: known by content)
    for what, bundle in (("base", base), ("heads", grafted)):
        copy = shutil.copytree(bundle, tmp_path / f"{what}-copy")
        before = sorted((p.name, p.stat().st_size) for p in copy.iterdir())
        forced = runner.invoke(
            app, ["detector", "bundle", str(run), str(copy), "--data", str(data), "--force"]
        )
        assert forced.exit_code == 2 and f"is the {what} bundle the joint run started from" in forced.output
        assert sorted((p.name, p.stat().st_size) for p in copy.iterdir()) == before
    # the run folder is never overwritten
    again = runner.invoke(app, args)
    assert again.exit_code != 0 and "not empty" in again.output


def test_zoomed_views_carry_their_boxes_along() -> None:
    """The warp and the box arithmetic agree: a bright square drawn where a box is lies where the
    moved box says after any zoom and shift; a box pushed out of the view is dropped."""
    from fracsight.detection.joint import _zoomed

    size = 96
    boxes = [np.array([[30.0, 40.0, 50.0, 56.0]]), np.array([[2.0, 2.0, 12.0, 12.0]])]
    x = torch.zeros(2, 1, size, size)
    for i, b in enumerate(boxes):
        x0, y0, x1, y1 = b[0].astype(int)
        x[i, 0, y0:y1, x0:x1] = 1.0
    gen = np.random.default_rng(3)
    for _ in range(5):
        zoomed, masks, moved = _zoomed(x, x.clone(), boxes, (0.7, 1.6), 0.1, gen)
        assert torch.equal(zoomed, masks)
        for view, box in zip(zoomed[:, 0], moved, strict=True):
            rows, cols = np.nonzero(view.numpy() > 0.5)
            if len(box) == 0:  # dropped: under a third of the square is left in the view
                inside = (view.numpy() > 0.5).sum()
                assert inside < 0.4 * 10 * 10 * 1.6**2
                continue
            found = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            np.testing.assert_allclose(box[0], found, atol=1.6)
    # the corner square leaves a view magnified about the centre
    _, _, moved = _zoomed(x[1:], x[1:], boxes[1:], (2.0, 2.0), 0.0, gen)
    assert len(moved[0]) == 0


def test_a_zoom_range_that_means_nothing_is_refused(detector_bundle, tmp_path: Path) -> None:
    data, base, grafted = detector_bundle
    args = ["detector", "joint", str(base), str(grafted), str(tmp_path / "run"), "--data", str(data)]
    done = CliRunner().invoke(app, [*args, "--zoom", "1.5", "0.5"])
    assert done.exit_code == 2 and "--zoom" in done.output and not (tmp_path / "run").exists()


def test_joint_checkpoints_record_what_the_fracture_head_means(detector_bundle, tmp_path: Path) -> None:
    """As training's best.pt: every checkpoint of a joint run records its fracture head's classes
    and its data set in full, so export reads them from the run instead of guessing from the data
    at hand."""
    from fracsight.data import load_dataset
    from fracsight.detection.joint import JointConfig, train_joint
    from fracsight.training.trainer import load_trained

    data, base, grafted = detector_bundle
    dataset = load_dataset(data)
    few = []  # a fast run: a few images, both labels in each split (validation measures AUROC)
    for split, n in (("train", 4), ("val", 2)):
        for label in (0, 1):
            few += [s for s in dataset.samples if s.split == split and s.labels["fracture"] == label][:n]
    dataset = dataclasses.replace(dataset, samples=tuple(few))
    run = tmp_path / "run"
    cfg = JointConfig(epochs=1, batch_size=4, device="cpu")
    train_joint(base, grafted, dataset, run, cfg, name="j", version="1", log=lambda _: None)
    for name in ("epoch-0.pt", "epoch-1.pt", "best.pt"):
        trained = load_trained(run / name, joint=True)
        assert trained.fracture == ("not fractured", "fractured"), name
        assert trained.config.data == str(data.resolve()), name


def test_joint_outputs_it_cannot_write_are_refused_before_training(detector_bundle, tmp_path) -> None:
    data, base, grafted = detector_bundle
    run, mine = tmp_path / "run", tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    joint = ["detector", "joint", str(base), str(grafted), str(run), "--data", str(data), "--epochs", "1"]
    runner = CliRunner()
    busy = runner.invoke(app, [*joint, "--out", str(mine)])
    assert busy.exit_code == 2 and "not a model bundle (no bundle.json)" in busy.stderr, busy.output
    assert not run.exists()
    split = runner.invoke(app, [*joint, "--out", str(tmp_path / "b"), "--evaluate", "tset"])
    assert split.exit_code == 2 and "no 'tset' split" in split.stderr and not run.exists(), split.output
    a_file = tmp_path / "run.txt"
    a_file.write_text("mine")
    into_file = runner.invoke(
        app, ["detector", "joint", str(base), str(grafted), str(a_file), "--data", str(data)]
    )
    assert into_file.exit_code == 2 and "is not a folder" in into_file.output
    assert (mine / "notes.txt").read_text() == "mine" and a_file.read_text() == "mine"


def test_a_damaged_joint_run_is_refused_in_one_line(detector_bundle, tmp_path) -> None:
    data, _, _ = detector_bundle
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_text("cut short")
    bundle = ["detector", "bundle", str(run), str(tmp_path / "b"), "--data", str(data)]
    runner = CliRunner()
    damaged = runner.invoke(app, bundle)
    assert damaged.exit_code == 1 and "best.pt is not a checkpoint" in damaged.stderr, damaged.output
    checkpoint = {"model": {}, "arch": "x", "config": "{}", "detector": {}, "orientation": {}}
    torch.save(checkpoint, run / "best.pt")
    (run / "history.json").write_text("{not json")
    history = runner.invoke(app, bundle)
    assert history.exit_code == 1 and "cannot read" in history.stderr and "history.json" in history.stderr
    (run / "history.json").write_text("[]")
    unfinished = runner.invoke(app, bundle)
    assert unfinished.exit_code == 1 and "no chosen epoch" in unfinished.stderr
    for result in (damaged, history, unfinished):
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert not (tmp_path / "b").exists()
    # a model bundle given as RUN, or a folder of no run: bad arguments, exit 2 ("no joint checkpoint
    # at d1/best.pt: run `fracsight detector joint` first" was said of a bundle, exit 1)
    _, base, _ = detector_bundle
    given = runner.invoke(app, ["detector", "bundle", str(base), str(tmp_path / "b"), "--data", str(data)])
    assert given.exit_code == 2 and f"{base} is a model bundle, not a joint run" in given.stderr, given.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(
        app, ["detector", "bundle", str(tmp_path / "empty"), str(tmp_path / "b"), "--data", str(data)]
    )
    assert empty.exit_code == 2 and "no joint checkpoint at" in empty.stderr, empty.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error_and_writes_nothing(detector_bundle, tmp_path) -> None:
    data, base, grafted = detector_bundle
    run = tmp_path / "run"
    args = ["detector", "joint", str(base), str(grafted), str(run), "--data", str(data), "--device", "cuda"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code != 0 and "no CUDA GPU is available" in done.output
    assert "Traceback" not in done.output and not run.exists()


@pytest.mark.slow
def test_the_gpu_joint_script_runs_its_variants_and_packs_what_comes_back(
    detector_bundle, tmp_path, monkeypatch
) -> None:
    """``scripts/gpu_joint.sh`` as a lent GPU session would run it, here with DEVICE=cpu: per variant
    one checkpoint (the chosen epoch, or the best-box epoch when the start was chosen) and one
    archive of logs and histories, from which a bundle is made here. A variant stopped at
    RUN_LIMIT (c) is a shorter run: its record says so, and it is bundled like the others."""
    data, base, grafted = detector_bundle
    out = tmp_path / "out"
    env = {
        **os.environ,
        **{"DATA": str(data), "BASE": str(base), "HEADS": str(grafted), "DEVICE": "cpu"},
        **{"OUT": str(out), "RUNS": str(tmp_path / "runs"), "PY": sys.executable, "RUN_LIMIT": "600"},
        # c alone is stopped: 200 epochs (the most --epochs takes) of 0.6 s end in 120 s on a fast
        # machine, and on a busy one (a test run beside other work) 60 s did not see the first end
        "RUN_LIMIT_c": "100",
    }
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_joint.sh"
    c = "c --epochs 200 --frozen-stages 0 --distill 0.1 --zoom 0.8 1.25"  # about 0.6 s an epoch here
    variants = ["a --epochs 1", "b --epochs 1 --frozen-stages 0 --lr 1e-4", c]
    done = subprocess.run(
        ["bash", str(script), *variants], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1, done.stdout + done.stderr  # c did not end
    assert "[a] epoch 1:" in done.stdout and "[b] chosen on validation" in done.stdout
    assert "[c] interrupted: " in done.stdout and "best.pt is epoch" in done.stdout, done.stdout
    with tarfile.open(out / "logs.tgz") as logs:
        names = ["./a.history.json", "./a.log", "./b.history.json", "./b.log", "./c.history.json", "./c.log"]
        assert sorted(logs.getnames()) == names
        records = {v: json.load(logs.extractfile(f"./{v}.history.json")) for v in "abc"}
    assert records["b"]["config"]["frozen_stages"] == 0 and records["b"]["config"]["device"] == "cpu"
    assert records["b"]["finished"] and not records["c"]["finished"]
    assert 1 <= records["c"]["epochs"][-1]["epoch"] < 200 and records["c"]["config"]["zoom"] == [0.8, 1.25]
    back = {}
    for v, record in records.items():
        came = sorted(p.name for p in out.glob(f"{v}.*pt"))
        if record["chosen"] == 0:  # the start is here already: the best-box epoch came back
            k = max(record["epochs"][1:], key=lambda h: h["val_ap50"])["epoch"]
            assert came == [f"{v}.epoch-{k}.pt"] and f"[{v}] epoch 0 chosen" in done.stdout
            back[v] = (f"epoch-{k}.pt", ["--epoch", str(k)])
        else:
            assert came == [f"{v}.pt"]
            back[v] = ("best.pt", [])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["logs.tgz", *(f"{v}.pt" if name == "best.pt" else f"{v}.{name}" for v, (name, _) in back.items())]
    )
    run = tmp_path / "back"  # the stopped run, made into a bundle here
    run.mkdir()
    name, epoch = back["c"]
    (run / name).write_bytes((out / ("c.pt" if name == "best.pt" else f"c.{name}")).read_bytes())
    (run / "history.json").write_text(json.dumps(records["c"]))
    args = ["detector", "bundle", str(run), str(tmp_path / "bundle"), "--data", str(data), *epoch]
    monkeypatch.setattr(sys, "argv", ["/usr/bin/fracsight", *args])  # recorded as typed
    made = CliRunner().invoke(app, args)
    assert made.exit_code == 0, made.output
    assert load_bundle_spec(tmp_path / "bundle").localization["boxes"] == "detector"
    card = (tmp_path / "bundle" / "card.md").read_text()
    assert "200 epochs planned, unfinished after epoch" in card and "zoomed by 0.8-1.25" in card
    # its Reproduce line runs as written: gpu_joint.sh's copy holds best.pt only, no epoch-N.pt
    (line,) = [x for x in card.splitlines() if x.startswith("fracsight detector bundle")]
    assert ("--epoch" in line) == bool(epoch), line


def test_joint_refuses_data_without_boxes_before_writing(detector_bundle, tmp_path: Path) -> None:
    """As `detector train`: without boxes the detector would only learn that there are none."""
    data, base, grafted = detector_bundle
    unboxed = tmp_path / "unboxed"  # the same images and labels without annotations/
    unboxed.mkdir()
    for name in ("images", "dataset.csv"):
        (unboxed / name).symlink_to(data / name)
    run = tmp_path / "run"
    args = ["detector", "joint", str(base), str(grafted), str(run), "--data", str(unboxed), "--epochs", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "has no fracture boxes" in result.stderr, result.output  # bad --data
    assert "Traceback" not in result.output and not run.exists()


def test_a_joint_run_on_fewer_images_than_a_batch_writes_its_bundle(
    detector_bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fewer training images than a batch (16) are one batch (it was a traceback); with --out the
    bundle records the run's command once, is named after MODEL and versioned after HEADS; its
    bundle is not made with another data set."""
    data, base, grafted = detector_bundle
    few = fewer_fracatlas(data, tmp_path / "few", {"train": 4, "val": 2})
    run, out = tmp_path / "run", tmp_path / "bundle"
    args = ["detector", "joint", str(base), str(grafted), str(run), "--data", str(few), "--epochs", "1"]
    args += ["--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["/venv/bin/fracsight", *args])  # the command line recorded
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    spec = load_bundle_spec(out)
    # as the Reproduce block runs it: after the base's own re-run (BASE-again), into RUN-again, OUT-again
    typed = "fracsight " + shlex.join(args)
    command = typed.replace(f" {base} ", f" {base}-again ").replace(f" {run} ", f" {run}-again ")
    command = command.replace(f"--out {out}", f"--out {out}-again")
    assert command != typed and spec.training["commands"].count(command) == 1
    assert (out / "card.md").read_text(encoding="utf-8").count(command) == 1
    assert (spec.name, spec.version) == ("tiny-base", str(int(load_bundle_spec(grafted).version) + 1))
    # the bundle of the run on another data set: it would be named as the network's training data
    other = CliRunner().invoke(
        app, ["detector", "bundle", str(run), str(tmp_path / "b"), "--data", str(data)]
    )
    message = " ".join(other.stderr.split())
    assert other.exit_code == 2 and "the joint run trained on 7 training and 4 validation" in message
    assert "give the data set the run trained on (--data)" in message and not (tmp_path / "b").exists()
    # bundled again, elsewhere: the joint line's --out wrote OUT-again first, and the bundle line
    # after it was refused ("holds a model bundle") when the Reproduce block was run top to bottom
    again = ["detector", "bundle", str(run), str(tmp_path / "again"), "--data", str(few)]
    monkeypatch.setattr(sys, "argv", ["/venv/bin/fracsight", *again])
    assert CliRunner().invoke(app, again).exit_code == 0
    lines = load_bundle_spec(tmp_path / "again").training["commands"]
    assert [line for line in lines if "detector joint" in line] == [
        command.removesuffix(f" --out {out}-again")
    ]
    assert lines[-1].startswith("fracsight detector bundle ") and f"{tmp_path / 'again'}-again" in lines[-1]
    from fracsight.detection.build import _without_out

    # the --evaluate that needs --out goes with it; a Windows line keeps its backslashes
    typed = r"fracsight detector joint C:\r\b h r --data D:\fa --evaluate test --out C:\r\jb --epochs 2"
    assert _without_out(typed) == r"fracsight detector joint C:\r\b h r --data D:\fa --epochs 2"
    # (review) the validation views of the floor and certainty: on the run's split, its base's seed
    import dataclasses

    from fracsight.detection import prepare
    from fracsight.training import export_bundle as exporting

    exported, seen = exporting.export_bundle, []

    def seed_3(*args, **kwargs):
        spec = exported(*args, **kwargs)
        config = {**spec.training["config"], "seed": 3}
        return dataclasses.replace(spec, training={**spec.training, "config": config})

    class Seen(Exception):
        pass

    def features(*args, seed: int = 0, **kwargs):
        seen.append(seed)
        raise Seen

    monkeypatch.setattr(exporting, "export_bundle", seed_3)
    monkeypatch.setattr(prepare, "validation_features", features)
    third = [*again[:3], str(tmp_path / "third"), "--data", str(few)]
    with pytest.raises(Seen):
        CliRunner().invoke(app, third, catch_exceptions=False)
    assert seen == [3]


def test_a_joint_run_that_diverges_says_so_in_one_line(detector_bundle, tmp_path: Path) -> None:
    """A learning rate so large that the outputs overflow ended in a traceback from the AUROC. The CLI
    now bounds --lr (at most 1): a Python caller's rate is still guarded."""
    from fracsight.data import load_dataset
    from fracsight.detection.joint import JointConfig, train_joint
    from fracsight.errors import ConfigError

    data, base, grafted = detector_bundle
    few = fewer_fracatlas(data, tmp_path / "few", {"train": 4, "val": 2})
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"the joint run diverged in epoch 1.*lower --lr or --distill"):
        train_joint(
            base,
            grafted,
            load_dataset(few),
            run,
            JointConfig(epochs=1, lr=1e30),
            name="x",
            version="1",
            log=str,
        )
    args = ["detector", "joint", str(base), str(grafted), str(run), "--data", str(few), "--epochs", "1"]
    refused = CliRunner().invoke(app, [*args, "--lr", "1e30"])
    assert refused.exit_code == 2 and "--lr" in refused.stderr and "Traceback" not in refused.output


def test_heads_grafted_onto_another_network_are_refused(detector_bundle, tmp_path: Path) -> None:
    """HEADS must be grafted onto MODEL('s network): others read another network's maps (the run
    went ahead, from heads that knew nothing of this one)."""

    data, base, grafted = detector_bundle
    elsewhere = shutil.copytree(grafted, tmp_path / "elsewhere")
    spec = json.loads((grafted / "bundle.json").read_text(encoding="utf-8"))
    spec["training"]["heads"]["base"] = "other-net v3 (sha256 0123456789ab)"
    (elsewhere / "bundle.json").write_text(json.dumps(spec), encoding="utf-8")
    run = tmp_path / "run"
    args = ["detector", "joint", str(base), str(elsewhere), str(run), "--data", str(data), "--epochs", "1"]
    result = CliRunner().invoke(app, args)
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "learned on the network of other-net v3" in message, result.output
    assert "give as HEADS a bundle grafted onto MODEL" in message and not run.exists()


def test_stages_frozen_past_the_detectors_maps_still_train(detector_bundle, tmp_path: Path) -> None:
    """--frozen-stages 3 to 7 (allowed by --help) freeze the stages whose maps the detector reads:
    those maps were not kept (KeyError: 8)."""
    data, base, grafted = detector_bundle
    few = fewer_fracatlas(data, tmp_path / "few", {"train": 4, "val": 2})
    run = tmp_path / "run"
    args = ["detector", "joint", str(base), str(grafted), str(run), "--data", str(few), "--epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--frozen-stages", "7"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "history.json").read_text())["config"]["frozen_stages"] == 7
