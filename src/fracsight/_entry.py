"""The ``fracsight`` command's entry point: the CLI imported under a Ctrl-C handler.

Importing the CLI takes a moment (Typer, Rich); a Ctrl-C in it ended in a Python traceback,
before :func:`fracsight.cli.main` could say "interrupted".
"""

from __future__ import annotations

import sys


def main(prog_name: str | None = None) -> None:
    try:
        from fracsight.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    run(prog_name)
