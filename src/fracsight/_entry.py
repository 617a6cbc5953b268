"""The ``fracsight`` command's entry point: the CLI imported under a Ctrl-C handler.

Importing the CLI takes a moment (Typer, Rich); a Ctrl-C in it ended in a Python traceback,
before :func:`fracsight.cli.main` could say "interrupted".
"""

from __future__ import annotations

import sys


def main(prog_name: str | None = None) -> None:
    try:
        try:
            from fracsight.cli import main as run
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            raise SystemExit(130) from None
        run(prog_name)
    finally:
        # CPython (3.8-3.13) marks a Ctrl-C that leaves code run by exec() of a string (dataclasses
        # and namedtuples make theirs so: importing torch runs hundreds) as unhandled, even where
        # a command catches it and exits 130; under `python -m` the process then killed itself
        # with SIGINT after that exit (-2, seen in 9 of 50 Ctrl-Cs of `detector train`). A string
        # run to its end clears the mark; a Ctrl-C that really escapes is marked again after this.
        exec("None")
