"""The ``fracsight`` command's entry point: the CLI imported under a Ctrl-C handler.

Importing the CLI takes a moment (Typer, Rich); a Ctrl-C in it ended in a Python traceback,
before :func:`fracsight.cli.main` could say "interrupted".
"""

from __future__ import annotations

import _thread
import sys
import threading
import time


def _ctrl_c_again(unraisable: sys.UnraisableHookArgs) -> None:
    """Deliver once more a Ctrl-C that Python would drop.

    A Ctrl-C that lands while Python runs a callback it cannot raise from (the weak-reference
    callback of an import lock, a finalizer) is printed as "Exception ignored ... Traceback ...
    KeyboardInterrupt" and dropped: `detector train` then ran all its epochs and exited 0. Here it
    is delivered again from another thread, a moment later, so that it lands in the command's own
    code once this callback has returned (delivered at once, it would land in this hook itself).
    """
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        _earlier_hook(unraisable)
        return

    def later() -> None:
        time.sleep(0.05)
        _thread.interrupt_main()

    threading.Thread(target=later, daemon=True).start()


_earlier_hook = sys.unraisablehook


def main(prog_name: str | None = None) -> None:
    sys.unraisablehook = _ctrl_c_again
    from fracsight._malloc import keep_freed_memory

    # before any thread: glibc fixes its arena limit once a process has more than 8 arenas, and a
    # later cap is ignored (the model is loaded after torch's or a server's threads have started)
    keep_freed_memory()
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
