"""``python -m fracsight``: the ``fracsight`` command, where its script is not on PATH."""

from fracsight.cli import app

if __name__ == "__main__":
    app(prog_name="fracsight")
