"""Command-line options that commands of several subpackages share, so that each says the same.

A module of its own: ``fracsight.cli`` imports the subpackages' command modules as it loads, so
they cannot import from it at their top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["ModelOption", "refuse_option_as_name", "split_callback"]

# FRACSIGHT_MODEL as the API reads it: a deployment upgrades the API and the DICOM node with one
# variable (the node stayed on the shipped model while the API answered with the new one)
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        envvar="FRACSIGHT_MODEL",
        help="Bundle folder, .zip, or packaged name (default: shipped model).",
    ),
]


def split_callback(value: str | None) -> str | None:
    """For every option naming a split: ``--split TEST`` reads, reports and records ``test``."""
    from fracsight.data._files import canonical_split

    return canonical_split(value)


def refuse_option_as_name(path: Path | None, option: str, *, folder: bool) -> None:
    """Exit 2 when an output option took the next option as its value (``--csv --all-classes``,
    ``--out --json``): a file or folder of that name was written and the option left out."""
    if path is not None and str(path).startswith("--"):
        from fracsight._terminal import error_line

        what = "folder" if folder else "file"
        error_line(
            "bad_output",
            f"{path} is an option, not a {what} name (give its full path for a {what} so named) ({option})",
        )
        raise typer.Exit(2)
