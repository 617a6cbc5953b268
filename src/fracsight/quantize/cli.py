"""``fracsight quantize``: an INT8 bundle from a float one. Thin: parse, call quantize_bundle, report."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from fracsight._options import split_callback
from fracsight._terminal import warning_line

__all__ = ["quantize"]

GATE_KEYS = ("auroc_drop", "heatmap_correlation", "top_box_iou", "hit_rate_drop", "class_accuracy_drop")


def quantize(
    model: Annotated[str, typer.Argument(help="Float bundle: a packaged name, a folder or a .zip.")],
    out: Annotated[Path, typer.Argument(help="Folder for the INT8 bundle (created; never the float one).")],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            exists=True,
            file_okay=False,
            help="Data set whose train images calibrate and whose val images refit and gate (default: the "
            "bundle's).",
        ),
    ] = None,
    calibration_images: Annotated[
        int, typer.Option(min=1, max=2048, help="Training images that calibrate the INT8 activation ranges.")
    ] = 64,
    evaluate_split: Annotated[
        str | None,
        typer.Option(
            "--evaluate",
            help="Also measure both models on this split and put it in the card.",
            callback=split_callback,
        ),
    ] = None,
    max_auroc_drop: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Gate: largest allowed fall in validation AUROC."),
    ] = 0.003,
    min_heatmap_correlation: Annotated[
        float,
        typer.Option(
            min=-1.0,
            max=1.0,
            help="Gate: least median per-image correlation of the heatmaps.",
        ),
    ] = 0.9,
    min_top_box_iou: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Gate: least mean IoU of the float and INT8 top boxes."),
    ] = 0.5,
    max_hit_rate_drop: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Gate: largest allowed fall in validation localization hit rate.",
        ),
    ] = 0.05,
    max_class_accuracy_drop: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Gate: largest allowed fall in validation class accuracy.",
        ),
    ] = 0.01,
    force: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Quantize a float bundle to INT8 (ONNX Runtime static QDQ), refit it on validation, gate it, write it.

    Refuses, writing nothing, when the INT8 model strays further from the float one than the gate allows.

    The gate (the options below) compares validation AUROC, heatmaps and boxes; a refusal says by how much.

    Exit code 0: the INT8 bundle written; 1: refused by the gate, an error (none written); 2: bad arguments.
    """
    from rich.console import Console

    from fracsight._terminal import on_a_terminal
    from fracsight.cli import invocation, user_errors, warn_unread_in_card
    from fracsight.quantize.build import quantize_bundle
    from fracsight.quantize.gate import GateBounds

    bounds = GateBounds(
        max_auroc_drop=max_auroc_drop,
        max_class_accuracy_drop=max_class_accuracy_drop,
        min_heatmap_correlation=min_heatmap_correlation,
        min_top_box_iou=min_top_box_iou,
        max_hit_rate_drop=max_hit_rate_drop,
    )
    command = invocation()
    err = Console(stderr=True)
    # the spinner shows only on a terminal: in a log (nohup, CI) the minutes of work said nothing
    # until the end, so each step is a line there, as `detector train` logs its epochs
    steps = err.status("quantizing") if on_a_terminal(err) else nullcontext()
    with user_errors(), steps as status:
        spec = quantize_bundle(
            model,
            out,
            data_dir=data,
            n_calibration=calibration_images,
            bounds=bounds,
            evaluate_split=evaluate_split,
            force=force,
            command=command,
            progress=status.update if status is not None else lambda msg: typer.echo(msg, err=True),
            warn=warning_line,
        )
    found = spec.metrics["quantization"]
    measured = found["gate"]["measured"]
    shown = ", ".join(f"{key} {measured[key]:.4f}" for key in GATE_KEYS if key in measured)
    size = (out / "model.onnx").stat().st_size / 1e6
    typer.echo(f"INT8 bundle {spec.name} v{spec.version} written to {out} (model.onnx {size:.1f} MB)")
    typer.echo(f"gate (validation, {measured['n']} images): {shown}")
    if found["calibration_images"] < calibration_images:  # the training split had fewer
        warning_line(
            f"calibrated on {found['calibration_images']} training images, all there are "
            f"(--calibration-images {calibration_images})"
        )
    if "not_refitted" in spec.localization:
        typer.echo(f"localization settings kept from the float bundle: {spec.localization['not_refitted']}")
    if spec.orientation:
        found, before = spec.orientation, spec.metrics["quantization"].get("float_orientation", {})
        typer.echo(
            f"orientation certainty refitted on {found['validation']['n_views']} validation views: "
            f"{found['min_probability']:.3f} (float {before.get('min_probability', float('nan')):.3f}), "
            f"upright views turned {found['validation']['upright_turned']:.4f}"
        )
    warn_unread_in_card(spec, evaluate_split)
