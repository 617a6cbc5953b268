"""``fracsight detector train|joint|bundle``: thin: parse, call the detection package, report."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated

import typer

from fracsight._options import split_callback
from fracsight._terminal import shell_command

__all__ = ["detector_app"]

detector_app = typer.Typer(
    help="A fracture detector and an orientation step, trained on a bundle's frozen network.",
    no_args_is_help=True,
)


@detector_app.command("train")
def train(
    model: Annotated[str, typer.Argument(help="Base bundle: a packaged name, a folder or a .zip.")],
    out: Annotated[Path, typer.Argument(help="Folder for the new bundle (created; never the base).")],
    data: Annotated[
        Path,
        typer.Option(
            "--data", exists=True, file_okay=False, help="Data set with boxes and the base's split."
        ),
    ],
    epochs: Annotated[
        int, typer.Option(min=1, max=500, help="Detector epochs over the cached features.")
    ] = 8,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="Folder for the frozen features, kept for the next run (default: .cache beside OUT; "
            "FracAtlas: gigabytes).",
        ),
    ] = None,
    width: Annotated[int, typer.Option(min=8, max=256, help="Channels of the detector's layers.")] = 32,
    giou: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=100.0,
            help="Weight of the GIoU loss of the box read at a centre (default 2.0).",
        ),
    ] = None,
    size_spread: Annotated[
        int | None,
        typer.Option(
            min=0, max=4, help="Cells this many around a centre also learn to read its box (default 1)."
        ),
    ] = None,
    shift: Annotated[
        int | None,
        typer.Option(min=0, max=4, help="Training views shifted by up to this many 32-px cells (default 2)."),
    ] = None,
    members: Annotated[
        int | None,
        typer.Option(
            min=1, max=8, help="Detectors trained with consecutive seeds, outputs averaged (default 1)."
        ),
    ] = None,
    distill: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=100.0,
            help="With --members N: one more detector learns the members' averaged outputs (this "
            "weight) and is kept alone, at one detector's cost (default 0: the average is kept).",
        ),
    ] = None,
    normals: Annotated[
        int, typer.Option(min=0, help="Images without a fracture that teach the detector where none is.")
    ] = 400,
    zoom_views: Annotated[
        int,
        typer.Option(
            min=0, max=8, help="More views of each detector image, zoomed by a factor in --zoom (default 0)."
        ),
    ] = 0,
    zoom: Annotated[
        tuple[float, float] | None,
        typer.Option(help="With --zoom-views: the range of the zoom factors (default 0.6 1.6)."),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(
            help="Version of the new bundle (default: the base's plus one, "
            "or BASE+detector where a packaged model has that one)."
        ),
    ] = None,
    evaluate_split: Annotated[
        str | None,
        typer.Option(
            "--evaluate", help="Also measure the new bundle on this split.", callback=split_callback
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Train a detection head and an orientation head on the frozen network of MODEL; write a new bundle.

    The base's outputs stay; its boxes then come from the detector (with non-maximum suppression).

    Radiographs that seem turned are read turned upright.

    The frozen features are cached (--cache-dir), so a second run with other settings starts at once.

    Exit code 0: the bundle was written; 1: an error (one line says why; nothing written); 2: bad arguments.
    """
    from fracsight.cli import invocation, user_errors
    from fracsight.detection.build import build_detector_bundle
    from fracsight.detection.features import ZoomViews
    from fracsight.detection.train import HeadsConfig
    from fracsight.inference.store import resolve_bundle

    command = invocation()
    _check_names(version=version)
    chosen = {
        "giou_weight": giou,
        "size_spread": size_spread,
        "shift_cells": shift,
        "members": members,
        "distill": distill,
    }
    given = {k: v for k, v in chosen.items() if v is not None}  # the rest: HeadsConfig's defaults
    if given.get("distill") and given.get("members", 1) < 2:
        raise typer.BadParameter(
            "needs --members 2 or more: the detectors to learn from", param_hint="--distill"
        )
    _check_zoom(zoom)
    if zoom is not None and zoom_views == 0:  # it zoomed nothing, without a word
        raise typer.BadParameter(
            "needs --zoom-views 1 or more: the zoomed views it sets the range of", param_hint="--zoom"
        )
    if cache_dir is None:
        _refuse_default_cache(out, "OUT")
    cache = cache_dir or out.parent / ".cache"
    with user_errors():
        base_dir = resolve_bundle(model)
    for what, folder in (("OUT", out), ("the base bundle", base_dir)):  # it would travel with the bundle
        if cache_dir is not None and folder.resolve() in (cache_dir.resolve(), *cache_dir.resolve().parents):
            raise typer.BadParameter(
                f"{cache_dir} is inside {what} {folder}: choose a folder outside it", param_hint="--cache-dir"
            )
    from fracsight.training.cache import cache_folder_refusal

    refused = cache_folder_refusal(cache_dir) if cache_dir is not None else None
    if refused is not None:  # another bundle was filled with features, then advised to be deleted
        raise typer.BadParameter(f"{cache_dir} {refused}", param_hint="--cache-dir")
    with user_errors(), _interrupted(out, cache):
        spec = build_detector_bundle(
            base_dir,
            out,
            data,
            cfg=HeadsConfig(epochs=epochs, width=width, **given),
            normals=normals,
            zoom=ZoomViews(zoom_views, *(zoom or (0.6, 1.6))),
            version=version,
            evaluate_split=evaluate_split,
            force=force,
            cache_dir=cache_dir,
            command=command,
            log=lambda line: typer.echo(line, err=True),
        )
    _report(spec, out, evaluate_split)
    _say_cache(cache)


def _refuse_default_cache(folder: Path | None, what: str) -> None:
    """A folder named ``.cache`` is where the frozen features go by default (``.cache`` beside it):
    they filled it, and the bundle was refused there after all the training ("not a model bundle")."""
    if folder is not None and folder.name == ".cache":
        raise typer.BadParameter(
            f"{folder}: the frozen features are cached in .cache beside {what}, that very folder: "
            "give it another name",
            param_hint=what,
        )


def _say_cache(folder: Path) -> None:
    from fracsight.training.cache import cache_note

    note = cache_note(folder, "the letterboxed images and frozen features")
    if note is not None:
        typer.echo(note, err=True)


def _check_names(**given: str | None) -> None:
    """Refuse, before any work, a name or version the new bundle could not be written with (a
    control character: the bundle would be refused after the training)."""
    from fracsight.bundle import check_name
    from fracsight.errors import BundleError

    for option, value in given.items():
        if value is not None:
            try:
                check_name(value, f"--{option}")
            except BundleError as e:
                raise typer.BadParameter(str(e), param_hint=f"--{option}") from None


def _check_zoom(zoom: tuple[float, float] | None) -> None:
    if zoom is not None and not 0 < zoom[0] <= zoom[1] <= 4:
        raise typer.BadParameter("two factors with 0 < LOW <= HIGH <= 4", param_hint="--zoom")


def _joint_interrupted(
    run: Path, data: Path, out: Path | None = None, force: bool = False, evaluate_split: str | None = None
) -> AbstractContextManager[None]:
    """Ctrl-C, SIGTERM or SIGHUP (`timeout`, Slurm, `docker stop`) in a joint run: its exit code,
    saying what RUN holds (the epochs done, best.pt chosen among them, which `detector bundle` makes
    a bundle of) and that the run cannot be continued; SIGTERM said only "the command stopped".
    ``out``: the bundle written after the training, left as it was when the stop came then; the
    command said writes it as that step would have (``--force``, ``--evaluate``)."""
    from fracsight.cli import interrupted_saying

    def what() -> str:
        try:
            record = json.loads((run / "history.json").read_text(encoding="utf-8"))
            done, chosen = record["epochs"][-1]["epoch"], record["chosen"]
        except (OSError, ValueError, KeyError, IndexError, TypeError):  # stopped before epoch 0 was kept
            return f"{run} holds no epoch of the run yet"
        options = (" --force" if force else "") + (f" --evaluate {evaluate_split}" if evaluate_split else "")
        command = shell_command("fracsight", "detector", "bundle", run, out or "OUT", "--data", data)
        make = f"`{command}{options}`"
        if out is not None:
            return (
                f"{run} holds all {done + 1} epochs (best.pt: epoch {chosen}); {out} left as it was; "
                f"{make} writes it"
            )
        return (
            f"{run} holds epochs 0 to {done}; best.pt is epoch {chosen}, chosen on validation among them "
            f"({make} makes its bundle); the run cannot be continued: start again in another folder"
        )

    return interrupted_saying(what)


def _interrupted(out: Path, cache: Path) -> AbstractContextManager[None]:
    """Ctrl-C, SIGTERM or SIGHUP: its exit code, saying that OUT was not written and what the cache
    keeps (it said nothing of the hundreds of megabytes left in a folder it had not named)."""
    from fracsight.cli import interrupted_saying
    from fracsight.training.cache import cache_size, own_entries

    def what() -> str:  # of a ~/.cache holding only pip's: nothing "kept" (0 MB)
        kept = f"; {cache} ({cache_size(cache)}) keeps what was made for the next run"
        return f"nothing written to {out}{kept if own_entries(cache) else ''}"

    return interrupted_saying(what)


def _report(spec, out: Path, evaluate_split: str | None) -> None:
    from fracsight.cli import warn_unread_in_card

    loc, orient = spec.localization, spec.orientation
    typer.echo(f"bundle {spec.name} v{spec.version} written to {out}")
    typer.echo(
        f"validation: box AP50 {loc['validation_ap50']:.3f}, top box hit {loc['validation_hit_rate']:.3f} "
        f"(score floor {loc['min_box_score']}); orientation accuracy {orient['validation']['accuracy']:.3f}, "
        f"turned upright when sure >= {orient['min_probability']:.2f}"
    )
    if evaluate_split:
        found = spec.metrics[evaluate_split]
        auroc = found.get("auroc") or {}
        shown = "n/a" if auroc.get("value") is None else f"{auroc['value']:.3f}"
        if auroc.get("value") is not None and auroc.get("ci_low") is not None:
            shown += f" (95% CI {auroc['ci_low']:.3f}-{auroc['ci_high']:.3f})"
        typer.echo(f"{evaluate_split} ({found.get('n', '?')} images): AUROC {shown}")
        warn_unread_in_card(spec, evaluate_split)


@detector_app.command("joint")
def joint(
    model: Annotated[
        str, typer.Argument(help="Base bundle whose network is fine-tuned (packaged name or folder).")
    ],
    heads: Annotated[
        str,
        typer.Argument(
            help="Bundle with a detector grafted onto that base (`detector train`): the heads' start."
        ),
    ],
    run: Annotated[
        Path, typer.Argument(help="Folder for the run: each epoch's weights, history.json, best.pt.")
    ],
    data: Annotated[
        Path,
        typer.Option(
            "--data", exists=True, file_okay=False, help="Data set with boxes and the base's split."
        ),
    ],
    out: Annotated[
        Path | None, typer.Option(help="Also write the bundle of the chosen epoch to this folder.")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, max=200, help="Epochs over the training images.")] = 12,
    lr: Annotated[float, typer.Option(min=0.0, max=1.0, help="Peak learning rate of the network.")] = 2e-4,
    frozen_stages: Annotated[
        int, typer.Option(min=0, max=7, help="Stem and this many first stages keep the base's weights.")
    ] = 2,
    distill: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=100.0,
            help="Weight of the starting network's upright logits as a teacher of the turned views.",
        ),
    ] = 0.0,
    zoom: Annotated[
        tuple[float, float],
        typer.Option(help="Each training view zoomed by a factor drawn between these two (1 1: none)."),
    ] = (1.0, 1.0),
    shift: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.5,
            help="Each training view shifted by up to this part of its side.",
        ),
    ] = 0.0,
    name: Annotated[str | None, typer.Option(help="Name of the new model (default: MODEL's).")] = None,
    version: Annotated[
        str | None,
        typer.Option(
            help="Version of the new model (default: HEADS' plus one, "
            "or HEADS+joint where a packaged model has that one)."
        ),
    ] = None,
    evaluate_split: Annotated[
        str | None,
        typer.Option(
            "--evaluate", help="With --out: also measure the bundle on this split.", callback=split_callback
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace a non-empty --out folder.")] = False,
    device: Annotated[str, typer.Option(help="auto (a CUDA GPU if there is one), cpu or cuda.")] = "auto",
) -> None:
    """Fine-tune MODEL's network jointly with the detector and orientation head of HEADS.

    Every image is read in a random quarter turn and mirror; each epoch's weight average is kept.

    The epoch is chosen on validation (box AP50, AUROC upright and turned).

    Exit code 0: trained (with --out, the bundle written); 1: an error (one line says why); 2: bad arguments.
    """
    from fracsight._output import check_output_folder
    from fracsight.bundle import load_bundle_spec
    from fracsight.cli import invocation, user_errors
    from fracsight.data import load_dataset
    from fracsight.detection.build import next_version, refuse_output_in_bundle
    from fracsight.detection.joint import JointConfig, train_joint
    from fracsight.evaluation.run import select_samples
    from fracsight.inference.store import resolve_bundle
    from fracsight.training.card import reproduce_line

    command = invocation()
    _check_names(name=name, version=version)
    if evaluate_split and out is None:  # it measures the bundle --out writes: without it, nothing
        raise typer.BadParameter("needs --out: the bundle to measure", param_hint="--evaluate")
    _check_zoom(zoom)
    for folder, what in ((run, "RUN"), (out, "--out")):
        _refuse_default_cache(folder, what)
    with user_errors():
        if run.exists() and not run.is_dir():
            raise typer.BadParameter(f"{run} exists and is not a folder", param_hint="RUN")
        if run.exists() and any(run.iterdir()):
            raise typer.BadParameter(
                f"{run} exists and is not empty; choose another run folder", param_hint="RUN"
            )
        dataset = load_dataset(data, "auto")
        base_dir, heads_dir = resolve_bundle(model), resolve_bundle(heads)
        if out is not None:  # refused now, not after the epochs of training
            # the two bundles too: `--out HEADS --force` replaced the heads bundle the run started from
            inputs = [("the joint run", run), ("the data set", data)]
            inputs += [("the base bundle", base_dir), ("the heads bundle", heads_dir)]
            check_output_folder(out, force=force, inputs=inputs)
            for what, bundle_dir in inputs[2:]:
                refuse_output_in_bundle(out, bundle_dir, what)
            dataset.refuse_output_inside(out, "--out")
            if evaluate_split:
                select_samples(dataset, evaluate_split, 0)  # whether it has or can carve the split
        name = name or load_bundle_spec(base_dir).name
        heads_spec = load_bundle_spec(heads_dir)
        version = version or next_version(name, heads_spec.version, "joint")
        # the card's Reproduce line, run after the heads' own lines (their `-again` copies)
        outputs = [run, *([out] if out else [])]
        command = reproduce_line(heads_spec.training.get("commands", []), command, outputs)
        with _joint_interrupted(run, data):
            train_joint(
                base_dir,
                heads_dir,
                dataset,
                run,
                JointConfig(
                    epochs=epochs,
                    lr=lr,
                    frozen_stages=frozen_stages,
                    distill_weight=distill,
                    zoom=zoom,
                    shift=shift,
                    device=device,
                ),
                name=name,
                version=version,
                command=command,
                log=lambda line: typer.echo(line, err=True),
            )
        if out is not None:
            with _joint_interrupted(run, data, out, force, evaluate_split):
                _bundle_from_run(run, out, data, evaluate_split, force, command)
    if out is None or out.parent.resolve() != run.parent.resolve():
        _say_cache(run.parent / ".cache")


@detector_app.command("bundle")
def bundle(
    run: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A `detector joint` run folder.")],
    out: Annotated[Path, typer.Argument(help="Folder for the new bundle.")],
    data: Annotated[
        Path, typer.Option("--data", exists=True, file_okay=False, help="The data set the run trained on.")
    ],
    evaluate_split: Annotated[
        str | None,
        typer.Option(
            "--evaluate", help="Also measure the new bundle on this split.", callback=split_callback
        ),
    ] = None,
    epoch: Annotated[
        int | None, typer.Option(min=0, help="Another epoch than the one chosen on validation (to look at).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Write the bundle of a joint run's chosen epoch (calibration and settings refitted on validation).

    Exit code 0: the bundle was written; 1: an error (one line says why; nothing written); 2: bad arguments.
    """
    from fracsight.cli import invocation, user_errors

    _refuse_default_cache(out, "OUT")
    with user_errors():
        _bundle_from_run(run, out, data, evaluate_split, force, invocation(), epoch)


def _bundle_from_run(
    run: Path,
    out: Path,
    data: Path,
    evaluate_split: str | None,
    force: bool,
    command: str,
    epoch: int | None = None,
) -> None:
    from fracsight.detection.build import build_joint_bundle

    spec = build_joint_bundle(
        run,
        out,
        data,
        evaluate_split=evaluate_split,
        epoch=epoch,
        force=force,
        command=command,
        log=lambda line: typer.echo(line, err=True),
    )
    _report(spec, out, evaluate_split)
    _say_cache(out.parent / ".cache")
