"""Writing a model bundle folder without ever losing what the user had there.

A bundle is built in a hidden sibling folder and moved into place only once it is complete, so a
failed or interrupted export leaves the old folder as it was. ``--force`` replaces only a folder
that holds a bundle (``bundle.json``) and nothing else, and never one that is, or holds, an input
of the job (the run being exported, the base bundle, the data).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fracsight.errors import OutputFolderError

__all__ = [
    "BUNDLE_FILES",
    "STOP_SIGNALS",
    "TRAIN_CONFIG",
    "check_output_folder",
    "ignore_further_stops",
    "signals_handled",
    "staged_folder",
    "terminate_as_exit",
]

#: the config an exported model was trained with: the card's Reproduce line trains from it (the
#: run's own config.yaml, which it named, is rewritten by the run's next --force or --resume)
TRAIN_CONFIG = "train-config.yaml"
BUNDLE_FILES = frozenset({"bundle.json", "card.md", "model.onnx", TRAIN_CONFIG})  # what bundle commands write
# a file browser's (and macOS's ._NAME AppleDouble files); any other file, hidden or not, is the user's
_OS_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def check_output_folder(out_dir: Path, *, force: bool, inputs: Iterable[tuple[str, Path]] = ()) -> None:
    """Refuse an output folder the job may not write (before any work is done).

    ``inputs``: ``(what, path)`` of the job's inputs; the folder may not be or hold any of them.
    """
    out_dir = Path(out_dir)
    if out_dir.suffix.lower() == ".zip":
        # Refused, not written as a zip: a folder named OUT.zip is what it made, and every command
        # that writes a bundle comes through here, while a zip written in place would need rules
        # of its own (--force on a file, replacing it whole or not at all, the reader's limits).
        folder = out_dir.with_suffix("")
        raise OutputFolderError(
            f"{out_dir}: a bundle is written as a folder; write it to {folder} and zip the folder "
            f"afterwards: python -m zipfile -c {out_dir} {folder}/ (a .zip of it loads as the folder does)"
        )
    out = out_dir.resolve()
    with contextlib.suppress(OSError):  # a working folder since removed is no folder to refuse
        here = Path.cwd().resolve()
        if out == here or out in here.parents:
            # the bundle takes OUT's place when done: the build folder went inside OUT, and the
            # work was refused at its end ("holds files that are not the bundle's")
            raise OutputFolderError(
                f"{out_dir} is {'the folder' if out == here else 'a folder above the one'} you are in, "
                f"which a bundle written there would replace: give a new folder, for example "
                f"{out_dir / 'bundle'}"
            )
    for what, path in inputs:
        inside = Path(path).resolve()
        if inside == out or out in inside.parents:
            raise OutputFolderError(
                f"{out_dir} is or holds {what} ({path}): choose another folder for the bundle"
            )
    if (
        out_dir / "bundle.json"
    ).is_file():  # `quantize b1.zip b1 --force`: the float bundle unpacked elsewhere
        from fracsight.bundle import bundle_identity

        for what, path in inputs:
            if (Path(path) / "bundle.json").is_file() and bundle_identity(path) == bundle_identity(out_dir):
                raise OutputFolderError(
                    f"{out_dir} holds a copy of {what} ({path}): choose another folder for the bundle"
                )
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputFolderError(f"{out_dir} exists and is not a folder")
    if out_dir.is_symlink() and not out_dir.exists():  # it failed after the work, naming a hidden folder
        raise OutputFolderError(f"{out_dir} is a link whose target does not exist ({os.readlink(out_dir)})")
    if out_dir.is_symlink():  # the bundle took the link's place: `current -> releases/v3` was cut unsaid
        raise OutputFolderError(
            f"{out_dir} is a link to {os.readlink(out_dir)}, which the new bundle would replace (the "
            "link, not its target): give the target itself, or another folder, and point the link there"
        )
    _refuse_unwritable_parent(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        # what --force will not replace is said first: "pass --force" was refused when followed
        if not (out_dir / "bundle.json").is_file():
            raise OutputFolderError(
                f"{out_dir} is not a model bundle (no bundle.json), so --force will not replace it: "
                "choose another folder"
            )
        from fracsight.inference.store import packaged_bundles

        if out in {p.resolve() for p in packaged_bundles().values()}:  # the README promises it
            raise OutputFolderError(
                f"{out_dir} is a bundle packaged with fracsight, which --force will not replace: "
                "choose another folder (to retire a packaged bundle, remove it first)"
            )
        others = sorted(
            p.name
            for p in out_dir.iterdir()
            if p.name not in BUNDLE_FILES and p.name not in _OS_FILES and not p.name.startswith("._")
        )
        if others:  # notes, an evaluation report: replacing the folder would delete them unsaid
            raise OutputFolderError(
                f"{out_dir} holds files that are not the bundle's ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}), so --force will not replace it: move them "
                "out, or choose another folder"
            )
        if not force:
            raise OutputFolderError(f"{out_dir} holds a model bundle; choose another folder or pass --force")


def _refuse_unwritable_parent(out_dir: Path) -> None:
    """The bundle is built beside ``out_dir``: refuse, before any work, a parent that is a file or a
    folder this process may not write in (a read-only file system, another user's folder)."""
    parent = out_dir.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputFolderError(f"{out_dir}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputFolderError(f"{out_dir}: cannot write in {parent} (read-only, or not yours)")


@contextmanager
def staged_folder(out_dir: Path, *, force: bool, inputs: Iterable[tuple[str, Path]] = ()) -> Iterator[Path]:
    """A fresh folder to build the bundle in; it becomes ``out_dir`` when the block ends without
    an error (replacing an old bundle there only then), and is removed otherwise."""
    out_dir = Path(out_dir)
    inputs = list(inputs)
    check_output_folder(out_dir, force=force, inputs=inputs)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        with terminate_as_exit():
            yield work
        check_output_folder(out_dir, force=force, inputs=inputs)  # nothing appeared there meanwhile
        umask = os.umask(0)
        os.umask(umask)
        work.chmod(0o777 & ~umask)  # mkdtemp made it private; a bundle is an ordinary folder
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            out_dir.rename(old / out_dir.name)
            work.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            work.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


#: the signals that stop a command as Ctrl-C does: SIGTERM (``kill``, ``timeout``, a job scheduler)
#: and SIGHUP (the terminal or the ssh session closed)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def ignore_further_stops() -> None:
    """Once a command is stopping, a second Ctrl-C, SIGTERM or SIGHUP is ignored: it killed the
    process halfway through the clean-up the first one started (exit -2 or -15, files left).
    Only inside :func:`terminate_as_exit` (the ``fracsight`` command's whole run), where the
    process ends next: a program that calls the CLI in-process (a test, a notebook) keeps its
    handlers, and the processes it starts later do not inherit ignored signals."""
    if _stop_handlers and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, *STOP_SIGNALS):
            signal.signal(sig, signal.SIG_IGN)


_stop_handlers: list[object] = []  # the handlers terminate_as_exit has installed (0 or 1)


@contextmanager
def signals_handled(
    handler: Callable[[int, Any], object], signals: Iterable[int] = STOP_SIGNALS
) -> Iterator[None]:
    """``handler`` for ``signals`` while the block runs, the handlers before it put back after it
    (a program that ran a command in-process kept the command's); not where the block replaced
    ``handler`` meanwhile (a stop that made further stops ignored stays so). A signal ignored as the
    block starts stays ignored: `nohup fracsight batch run ... &` (or a DICOM node so started)
    stopped when the ssh session closed."""
    previous = {
        sig: signal.signal(sig, handler) for sig in signals if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)


@contextmanager
def terminate_as_exit() -> Iterator[None]:
    """:data:`STOP_SIGNALS` end the process as Ctrl-C would, through the ``finally`` blocks that
    remove a half-built folder; by default each kills the process outright and the folder stays.
    Only signals that still have their default action (not SIGHUP under ``nohup``), and only in the
    main thread (the only one that may set a handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mine = [sig for sig in STOP_SIGNALS if signal.getsignal(sig) is signal.SIG_DFL]

    def exit_on_terminate(signum: int, frame: object) -> None:
        ignore_further_stops()
        raise SystemExit(128 + signum)

    for sig in mine:
        signal.signal(sig, exit_on_terminate)
    if mine:
        _stop_handlers.append(exit_on_terminate)
    try:
        yield
    finally:
        for sig in mine:
            if signal.getsignal(sig) is exit_on_terminate:
                signal.signal(sig, signal.SIG_DFL)
        if mine:
            _stop_handlers.remove(exit_on_terminate)
