"""What the ``fracsight`` command does with its terminal: warnings on stderr, and a closed pipe.

Only the command line uses this; the library never configures logging or the terminal.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shlex
import sys
from contextlib import suppress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

__all__ = [
    "error_line",
    "install_warning_printer",
    "progress_bar",
    "stdout_console",
    "stdout_to_devnull",
    "visible",
    "warning_line",
    "write_stdout",
]

#: characters of a name shown escaped (``\\x1b``, ``\\n``, ``\\u202e``): control characters (an
#: escape sequence in a file name reached the terminal, a newline split a row or a message over two
#: lines) and the bidirectional controls that show a name in another order than it has
_SURROGATE = re.compile("[\ud800-\udfff]")
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

#: distinct warnings remembered to print each once (a cap, so a long-running command cannot grow it)
_REMEMBERED = 10_000


class _WarningPrinter(logging.Handler):
    """``warning: MESSAGE`` on stderr, each distinct message once.

    Python's handler of last resort prints a bare message, which reads as output rather than as
    a warning, and data loaders that look at a folder twice (once to recognize its layout, once
    to read it) said the same thing twice. A record with a traceback is always printed.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._printed: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"{record.levelname.lower()}: {visible(record.getMessage())}"
            if record.exc_info:
                line += "\n" + logging.Formatter().formatException(record.exc_info)
            elif line in self._printed:
                return
            elif len(self._printed) < _REMEMBERED:
                self._printed.add(line)
            sys.stderr.write(line + "\n")  # the stream of the moment: a test runner may swap it
        except Exception:
            self.handleError(record)


def visible(text: str) -> str:
    """``text`` with :data:`_INVISIBLE` characters written as Python escapes, and a file name's
    bytes that are not UTF-8 as the rows write them (``caf\\xe9.jpg``, not ``caf\\udce9.jpg``)."""
    if _SURROGATE.search(text):
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate that stands for no byte
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _INVISIBLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def error_line(code: str, message: str) -> None:
    """``error (CODE): MESSAGE`` on stderr, the one form of every command's errors; a name in the
    message (a file's, a bundle's, a DICOM service's) cannot run an escape sequence there."""
    import typer

    typer.echo(visible(f"error ({code}): {message}"), err=True)


def warning_line(message: str) -> None:
    """``warning: MESSAGE`` on stderr, escaped as :func:`error_line` escapes its message."""
    import typer

    typer.echo(visible(f"warning: {message}"), err=True)


def install_warning_printer() -> None:
    """Print fracsight's warnings as ``warning: ...``, once each, when nothing else handles them.

    It takes the place of logging's handler of last resort, so a command that sets up its own
    logging (``serve``, ``dicom listen``) or a program that configured logging is not affected.
    """
    if not isinstance(logging.lastResort, _WarningPrinter):
        logging.lastResort = _WarningPrinter()


def write_stdout(text: str) -> None:
    """``text`` to stdout as UTF-8 bytes, whatever the locale and as they are (click's echo drops
    what looks like an escape sequence when stdout is not a terminal, and a file name is data),
    and all of it: one large write onto a disk that fills, or into a pipe closed part-way, took
    what fitted and returned a short count, and a cut-off JSON or CSV ended with exit 0. The write
    that cannot go on raises (``ENOSPC``, ``EPIPE``), which the commands say as such."""
    out = getattr(sys.stdout, "buffer", None)
    if out is None:  # a stdout without bytes (replaced by a caller)
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    sys.stdout.flush()
    data = memoryview(text.encode("utf-8"))
    while data:
        data = data[out.write(data) :]
    out.flush()


def stdout_to_devnull() -> None:
    """After a closed pipe: stdout to /dev/null, so that flushing it at exit raises nothing more."""
    with suppress(OSError, ValueError, io.UnsupportedOperation):  # not a real file (a test's buffer)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def stdout_console(**options: Any) -> Console:
    """A rich console on stdout whose closed pipe raises :class:`BrokenPipeError`, which the root
    command turns into exit 141; rich's own handling exits 1, which says a file was unreadable."""
    from rich.console import Console

    class _PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    return _PipeConsole(**options)


def to_a_file(console: Console) -> bool:
    """Whether ``console`` writes to a file or a pipe with no ``COLUMNS`` set: Rich then assumes 80
    columns and cuts a wider table's cells (``fracat…``); there it is printed as wide as it needs
    (:func:`unwrapped_width`), one line a row, for the reader of the file or the next program.
    Asked of the file itself: FORCE_COLOR=1 (common in CI) makes Rich's ``is_terminal`` true of a
    log file, and its rows were folded at 80 columns again, a number cut in two."""
    return not _is_a_tty(console) and not os.environ.get("COLUMNS")


def unwrapped_width(console: Console, renderable: Any, least: int = 80) -> int:
    """The width ``renderable`` needs on one line a row, at least ``least``."""
    wide = console.options.update_width(1_000_000)
    return max(least, console.measure(renderable, options=wide).maximum)


def on_a_terminal(console: Console) -> bool:
    """Whether ``console`` writes to a terminal a person watches: its file is a tty (not Rich's
    word alone, which FORCE_COLOR=1, common in CI, makes true of a log file) and not a dumb one."""
    return _is_a_tty(console) and console.is_interactive


def _is_a_tty(console: Console) -> bool:
    try:
        return console.file.isatty()
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed file
        return False


def progress_bar(*columns: Any, hide: bool = False, **options: Any) -> Progress:
    """A transient progress bar on stderr, shown only on a terminal: elsewhere (scripts, CI, a log
    file) it would only leave an empty line, and stdout is kept for what a command reports.
    ``hide``: not shown at all."""
    from rich.console import Console
    from rich.progress import Progress

    err = Console(stderr=True)
    return Progress(*columns, console=err, transient=True, disable=hide or not on_a_terminal(err), **options)


def shell_command(*words: object) -> str:
    """A command to suggest, with each word quoted as this system's shell needs it: a path with a
    space (`fracsight audit mix dir`) failed when pasted. Windows' cmd.exe takes double quotes
    only (single ones were part of the path there)."""
    if os.name == "nt":
        import subprocess

        return subprocess.list2cmdline([str(word) for word in words])
    return " ".join(shlex.quote(str(word)) for word in words)
