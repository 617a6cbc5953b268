"""``fracsight benchmark``: thin: parse, call :func:`~fracsight.benchmark.run_benchmark`, show the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fracsight._options import ModelOption

__all__ = ["benchmark"]


def benchmark(
    model: ModelOption = None,
    images: Annotated[
        list[Path] | None,
        typer.Option(
            exists=True,
            help="Image files or folders (repeatable). Default: 64 FracAtlas test images, else synthetic.",
        ),
    ] = None,
    runs: Annotated[int, typer.Option(min=1, help="Timed single-image runs (after warm-up).")] = 50,
    batch: Annotated[int, typer.Option(min=1, max=256, help="Batch size for the throughput runs.")] = 16,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object to stdout.")] = False,
    compare: Annotated[
        bool, typer.Option(help="Also time eager-torch baselines (needs the train extra).")
    ] = True,
    also: Annotated[
        list[str] | None,
        typer.Option(
            help="Another bundle to time in the same run, e.g. an INT8 one (repeatable; default: "
            "the model's packaged other precision, <model>-int8 or <model> without -int8, if any)."
        ),
    ] = None,
    stages: Annotated[
        bool, typer.Option("--stages", help="Also time each stage of one prediction (read ... boxes).")
    ] = False,
) -> None:
    """Measure latency, throughput and peak memory of prediction here, against eager-torch baselines.

    Exit code 0: measured; 1: a timing failed (one line says why); 2: bad arguments (no image, no model).
    """
    from rich.console import Console
    from rich.markup import escape

    from fracsight.benchmark import render_report, run_benchmark
    from fracsight.cli import show_report, user_errors

    err = Console(stderr=True)
    with user_errors(), err.status("benchmarking") as status:
        report = run_benchmark(
            model,
            images,
            runs=runs,
            batch=batch,
            compare=compare,
            progress=lambda msg: status.update(escape(msg)),  # it names bundles and files: "[/]" failed
            also=also,
            stages=stages,
        )
    show_report(report, render_report, json_output)
