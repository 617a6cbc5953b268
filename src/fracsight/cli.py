"""The ``fracsight`` command. Thin: parse arguments, call the library, format output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from fracsight import __version__

app = typer.Typer(
    name="fracsight",
    help="Find bone fractures in X-ray radiographs. A decision aid, not a diagnosis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fracsight {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Find bone fractures in X-ray radiographs. A decision aid, not a diagnosis."""


@app.command()
def audit(
    data_dir: Annotated[Path, typer.Argument(help="Data set folder: FracAtlas, MURA or class folders.")],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object to stdout instead of tables.")
    ] = False,
    threshold: Annotated[
        int,
        typer.Option(
            min=0, max=64, help="pHash Hamming distance at or below which images are near-duplicates."
        ),
    ] = 6,
    workers: Annotated[int, typer.Option(min=1, help="Processes decoding images.")] = 2,
) -> None:
    """Audit a data set: class balance, unreadable files, duplicates and leakage across splits."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from fracsight.data.audit import audit as run_audit
    from fracsight.data.audit import render_audit
    from fracsight.errors import DatasetError

    err = Console(stderr=True)
    columns = (TextColumn("Hashing images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("hash", total=None)
            report = run_audit(
                data_dir,
                threshold=threshold,
                workers=workers,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except DatasetError as e:
        err.print(f"[red]error[/red] ({e.code}): {escape(str(e))}")
        raise typer.Exit(1) from None
    if json_output:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    out = Console()
    for renderable in render_audit(report):
        out.print(renderable)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a FracsightError into a one-line message and exit code 1 (never a traceback)."""
    from fracsight.errors import FracsightError

    try:
        yield
    except FracsightError as e:
        typer.echo(f"error ({e.code}): {e}", err=True)
        raise typer.Exit(1) from None


@app.command()
def train(
    data_dir: Annotated[
        Path | None, typer.Argument(help="Data set folder (any layout `audit` knows).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML training config.")] = None,
    out: Annotated[str | None, typer.Option(help="Run folder for checkpoints, history and curves.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last epoch.")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config option: --set epochs=5 (repeatable).")
    ] = None,
) -> None:
    """Train a model (two-phase fine-tuning, early stopping on validation AUROC)."""
    with user_errors():
        from fracsight.data import load_dataset
        from fracsight.training import Trainer, load_config

        cfg = load_config(config, set_, data=str(data_dir) if data_dir else None, out=out, device=device)
        if not cfg.data:
            raise typer.BadParameter("give DATA_DIR or set `data:` in the config")
        dataset = load_dataset(Path(cfg.data), cfg.layout)
        typer.echo(
            f"data: {dataset.layout} layout, {len(dataset.samples)} images; run folder: {cfg.out}", err=True
        )
        result = Trainer(cfg, dataset).fit(resume=resume)
        typer.echo(
            f"best epoch {result.best_epoch}: validation score {result.best_score:.4f}; "
            f"checkpoint {result.run_dir / 'best.pt'}"
        )


def main() -> None:
    app()
