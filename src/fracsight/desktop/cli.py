"""``fracsight desktop``: a thin command over :mod:`fracsight.desktop.window` (tkinter imported inside)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from fracsight._options import ModelOption
from fracsight._output import STOP_SIGNALS, signals_handled
from fracsight._terminal import error_line
from fracsight.desktop.priority import MODEL_NICENESS

__all__ = ["desktop_command"]


def desktop_command(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Radiographs (PNG, JPEG, DICOM) and/or folders to open at start."),
    ] = None,
    model: ModelOption = None,
    operating_point: Annotated[
        str | None, typer.Option(help="Operating point to start with (default: the bundle's).")
    ] = None,
    threads: Annotated[
        int, typer.Option(min=0, help="ONNX Runtime threads (0: one fewer than the cores; at most 256).")
    ] = 0,
    niceness: Annotated[
        int, typer.Option(min=0, max=19, hidden=True, help="How much lower the model's threads run (Linux).")
    ] = MODEL_NICENESS,
    timing_log: Annotated[
        Path | None, typer.Option(hidden=True, help="Append timing events (JSON lines) here.")
    ] = None,
    quit_when_done: Annotated[
        bool, typer.Option(hidden=True, help="Close once the files are predicted and one is shown.")
    ] = False,
) -> None:
    """Review radiographs in a native window (plain Tk), offline. A decision aid, not a diagnosis.

    Results list, viewer (heatmap, zoom, window/level), study verdict; writes only what you export.

    Exit code 0: the window was closed; 1: no window could open (no display, no tkinter); 2: bad arguments.
    """
    started = time.time()
    from fracsight.cli import refuse_missing, refuse_unknown_model
    from fracsight.inference.predictor import MAX_THREADS  # here, so that fracsight --help stays fast

    if threads > MAX_THREADS:  # the Predictor would refuse it in the window, as a model that failed
        raise typer.BadParameter(f"Input should be at most {MAX_THREADS}", param_hint="'--threads'")
    refuse_missing(paths or [])
    refuse_unknown_model(model, operating_point)  # before any window opens
    try:
        import tkinter as tk
    except ImportError:
        error_line(
            "missing_dependency",
            "tkinter is not installed: on Debian/Ubuntu apt-get install "
            "python3-tk; on Windows and macOS it comes with the python.org installer",
        )
        raise typer.Exit(1) from None
    try:
        root = tk.Tk(className="fracsight")
    except tk.TclError as e:
        error_line("no_display", f"cannot open a window: {e}")
        raise typer.Exit(1) from None

    from fracsight.desktop.timing import TimingLog
    from fracsight.desktop.window import DesktopApp

    timing = TimingLog(timing_log) if timing_log is not None else None
    if timing is not None:
        timing.write("command_started", at=started)
    app = DesktopApp(
        root,
        model=model,
        operating_point=operating_point,
        paths=list(paths or []),
        threads=threads,
        niceness=niceness,
        timing=timing,
        quit_when_done=quit_when_done,
    )
    if timing is not None:
        root.update_idletasks()
        timing.write("window_built")
    # SIGTERM or SIGHUP (a session logging out, `kill`, the terminal closed), and Ctrl-C in the
    # terminal: closed as by the close button, which waits for the image in progress (exiting while
    # ONNX Runtime runs aborts the process: "terminate called without an active exception"), then
    # exit 0, or 130 after Ctrl-C as for every command; the window gone, a late signal ends the
    # process as any command's does
    stops: list[int] = []

    def close(signum: int, _frame: object) -> None:
        stops.append(signum)
        root.after(0, app.close)

    with signals_handled(close, (*STOP_SIGNALS, signal.SIGINT)):
        root.mainloop()
    if signal.SIGINT in stops:
        raise typer.Exit(130)
