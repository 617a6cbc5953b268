"""Command-line options that commands of several subpackages share, so that each says the same.

A module of its own: ``fracsight.cli`` imports the subpackages' command modules as it loads, so
they cannot import from it at their top.
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["ModelOption"]

ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Bundle folder, .zip, or packaged name (default: shipped model)."),
]
