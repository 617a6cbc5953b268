"""The desktop app: a native window (plain Tk) for a reading-room workstation. Start it with
``fracsight desktop [FILES...]``.

A shell like :mod:`fracsight.app`, sharing its logic (:mod:`fracsight.app.logic`): only drawing
lives here. Importing this package imports neither tkinter nor the model; see docs/desktop.md.
"""

from __future__ import annotations

__all__: list[str] = []
