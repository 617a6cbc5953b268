"""``fracsight detector train``: thin: parse, call build_detector_bundle, report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

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
    width: Annotated[int, typer.Option(min=8, max=256, help="Channels of the detector's layers.")] = 32,
    normals: Annotated[
        int, typer.Option(min=0, help="Images without a fracture that teach the detector where none is.")
    ] = 400,
    evaluate_split: Annotated[
        str | None, typer.Option("--evaluate", help="Also measure the new bundle on this split.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Train a detection head and an orientation head on the frozen network of MODEL; write a new bundle.

    The base's outputs stay as they are; its boxes then come from the detector (with
    non-maximum suppression), and radiographs that seem turned are read turned upright.
    """
    from fracsight.cli import user_errors
    from fracsight.detection.build import build_detector_bundle
    from fracsight.detection.train import HeadsConfig
    from fracsight.inference.store import resolve_bundle

    command = "fracsight " + shlex.join(sys.argv[1:]) if Path(sys.argv[0]).name == "fracsight" else ""
    with user_errors():
        spec = build_detector_bundle(
            resolve_bundle(model),
            out,
            data,
            cfg=HeadsConfig(epochs=epochs, width=width),
            normals=normals,
            evaluate_split=evaluate_split,
            force=force,
            command=command,
            log=lambda line: typer.echo(line, err=True),
        )
    loc, orient = spec.localization, spec.orientation
    typer.echo(f"bundle {spec.name} v{spec.version} written to {out}")
    typer.echo(
        f"validation: box AP50 {loc['validation_ap50']:.3f}, top box hit {loc['validation_hit_rate']:.3f} "
        f"(score floor {loc['min_box_score']}); orientation accuracy {orient['validation']['accuracy']:.3f}, "
        f"turned upright when sure >= {orient['min_probability']:.2f}"
    )
    if evaluate_split:
        typer.echo(f"{evaluate_split}: AUROC {spec.metrics[evaluate_split]['auroc']['value']:.3f}")
