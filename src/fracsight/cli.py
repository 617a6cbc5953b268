"""The ``fracsight`` command. Thin: parse arguments, call the library, format output."""

from __future__ import annotations

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


def main() -> None:
    app()
