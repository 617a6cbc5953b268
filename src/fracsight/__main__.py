"""``python -m fracsight``: the ``fracsight`` command, where its script is not on PATH.

The same entry point as the script, so that Ctrl-C during the import and SIGTERM end it as they
end ``fracsight`` (it called the Typer app directly and left both as tracebacks or a bare kill).
"""

from fracsight._entry import main

if __name__ == "__main__":
    main(prog_name="fracsight")
