"""``fracsight batch``: archive-scale prediction on Ray (thin: parse, call :mod:`fracsight.scale.job`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fracsight._options import ModelOption, refuse_option_as_name
from fracsight._output import signals_handled
from fracsight._terminal import error_line, warning_line, write_stdout

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["batch_app"]

batch_app = typer.Typer(
    help="Predict whole archives on Ray (local or a cluster), resumably, to Parquet and CSV. "
    "A decision aid, not a diagnosis.",
    no_args_is_help=True,
)


@batch_app.command("run")
def run_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Folders, image files, path lists (.txt, .lst), manifests (.csv, .tsv, .parquet)."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder (re-run the same command to resume).")
    ],
    model: ModelOption = None,
    operating_point: Annotated[str | None, typer.Option(help="Named operating point of the bundle.")] = None,
    all_classes: Annotated[bool, typer.Option(help="Add p_<class> columns (as predict --csv).")] = False,
    path_column: Annotated[
        str, typer.Option(help="Column of a .csv/.tsv/.parquet manifest with the paths.")
    ] = "path",
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to run on (auto, HOST:6379, ray://HOST:10001); default: the one RAY_ADDRESS "
            "names, else a local Ray."
        ),
    ] = None,
    actors: Annotated[int, typer.Option(min=0, help="Predictor actors (0: one per CPU slot or GPU).")] = 0,
    cpus_per_actor: Annotated[float, typer.Option(min=0.1, help="CPUs each actor reserves.")] = 1.0,
    gpus_per_actor: Annotated[
        float, typer.Option(min=0.0, help="GPUs each actor reserves (needs onnxruntime-gpu on the nodes).")
    ] = 0.0,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="Images per actor call.")] = 16,
    commit_every: Annotated[
        int, typer.Option(min=1, help="Rows per committed Parquet part (what a kill can cost at most).")
    ] = 256,
    retry_errors: Annotated[
        bool,
        typer.Option(
            help="Predict again the inputs whose row has an error code (a file replaced, storage back); "
            "their new rows replace the old."
        ),
    ] = False,
) -> None:
    """Predict every input not yet in --out, to OUT/parts/*.parquet and OUT/results.csv.

    Rows have the columns of `fracsight predict --csv` plus `path`.

    Relative paths in a list or manifest are relative to its folder.

    Exit code 0: every file predicted; 1: a file unread (its row says why) or Ray failed; 2: bad arguments.

    Ctrl-C exits 130 and keeps what is committed: run the same command again to resume.

    A file that could not be read keeps its error row, unless --retry-errors.

    A file that changed since its row was made (size, time, where its path leads) is predicted again.
    """
    import gc

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from fracsight.cli import progress_bar, refuse_missing, user_errors
    from fracsight.inference import NOTICE
    from fracsight.scale.inputs import MANIFEST_SUFFIXES, collect_batch_inputs
    from fracsight.scale.job import run_batch

    refuse_option_as_name(out, "--out", folder=True)
    if Path("-") in inputs and not Path("-").exists():  # `find ... | batch run -` was "no such file"
        error_line(
            "usage",
            "batch run reads no paths from standard input ('-'): save them to a list "
            "(find /archive -type f > paths.txt) and give it, so that a re-run can read them again to resume",
        )
        raise typer.Exit(2)
    refuse_missing(inputs)
    import ray  # noqa: F401  # without the scale extra: named by the command group (fracsight.cli.EXTRA_OF)

    # one line each, as written (a log file got the summary cut at 80 columns; `[x]` in a path is not markup)
    err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)
    if path_column != "path" and not any(p.suffix.lower() in MANIFEST_SUFFIXES for p in inputs):
        warning_line(  # a mistyped input (folder given for a manifest) went on without a word
            f"--path-column {path_column}: no .csv, .tsv or .parquet manifest among the inputs, so it is "
            "not used"
        )
    with user_errors(exit_code=2):  # a manifest that cannot be read is a bad argument
        files = collect_batch_inputs(inputs, path_column=path_column)
    if not files:
        from fracsight.inference.tabular import no_images_message

        error_line("no_images", no_images_message(inputs))
        raise typer.Exit(2)
    columns = (TextColumn("Predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    # the bar moves when rows are committed; a slow redraw leaves the CPU to the actors
    with (
        user_errors(),
        _exit_codes(),
        signals_handled(_stop_as_interrupt),
        progress_bar(*columns, refresh_per_second=2) as bar,
    ):
        task = bar.add_task("batch", total=len(files))
        shown = (
            _LogProgress(err)
            if bar.disable
            else lambda done, total: bar.update(task, completed=done, total=total)
        )
        summary = run_batch(
            files,
            out,
            model=model,
            operating_point=operating_point,
            all_classes=all_classes,
            address=address,
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            gpus_per_actor=gpus_per_actor,
            batch_size=batch_size,
            commit_every=commit_every,
            retry_errors=retry_errors,
            progress=shown,
        )
    # The job is done and the process about to end: exempt what it holds (Ray Data, pyarrow,
    # pandas, ...) from garbage collection, whose last pass over all of it at exit took 0.4-0.9 s.
    gc.freeze()
    failed = sum(summary.errors.values())
    if summary.predicted:
        rate = summary.predicted / summary.seconds if summary.seconds else 0.0
        steady = summary.steady_rate
        warm = f"{steady:.1f} images/s once the actors were warm; " if steady else ""
        actors = f"{summary.actors} actor{'s' if summary.actors != 1 else ''}"
        done = (
            f"{summary.skipped} already in {out}, {summary.predicted} predicted by {actors} in "
            f"{summary.seconds:.1f} s ({rate:.1f} images/s, Ray start-up included); {warm}"
        )
    else:  # a re-run of a finished job: Ray was not started
        done = f"all already in {out}, nothing to predict; "
    codes = f" ({', '.join(f'{k}: {v}' for k, v in sorted(summary.errors.items()))})" if failed else ""
    if summary.retried:
        retried = "1 error row" if summary.retried == 1 else f"{summary.retried} error rows"
        done = f"{retried} retried; {done}"
    if summary.changed:
        files = "1 file" if summary.changed == 1 else f"{summary.changed} files"
        done = f"{files} changed since their rows were made, predicted again; {done}"
    rows = "1 row" if failed == 1 else f"{failed} rows"
    err.print(f"{summary.inputs} inputs: {done}{rows} with an error code{codes}")
    err.print(f"results: {out / 'parts'} (Parquet), {out / 'results.csv'}. {NOTICE}")
    if failed:
        raise typer.Exit(1)


def _stop_as_interrupt(signum: int, frame: object) -> None:
    """SIGTERM and SIGHUP (the terminal closed) as Ctrl-C: the job commits what is done, then stops."""
    raise KeyboardInterrupt


class _LogProgress:
    """Progress where the bar is not drawn (stderr not a terminal: nohup, a scheduler, a log file):
    a line at most every ``every`` seconds, so that a night's job says how far it has got (it said
    nothing until its summary). The rate is this run's, from its first call (Ray's start included)."""

    def __init__(
        self, console: Console, every: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.console, self.every, self.clock = console, every, clock
        self.start: tuple[float, int] | None = None  # when, and the rows committed then
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if self.start is None:
            self.start, self.last = (now, done), now
            return
        if now - self.last < self.every or done >= total:  # the summary says the end
            return
        self.last = now
        rate = (done - self.start[1]) / (now - self.start[0])
        left = f", {_duration((total - done) / rate)} left" if rate > 0 else ""
        self.console.print(f"{done} of {total} rows committed ({100 * done / total:.1f}%){left}")


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    return "about " + (f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min")


@contextmanager
def _exit_codes() -> Iterator[None]:
    """The job's exit codes besides user_errors' (1, or 2 for a bad argument): a bundle the job
    cannot use or an unknown operating point exits 2 too; an interrupted job says what it kept and
    exits 130, as Ctrl-C does."""
    from fracsight.errors import BundleError
    from fracsight.scale.job import BatchInterrupted

    try:
        yield
    except BatchInterrupted as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(130) from None
    except BundleError as e:
        error_line(e.code, str(e))
        raise typer.Exit(2) from None


@batch_app.command("status")
def status_command(
    out: Annotated[Path, typer.Argument(help="Output folder of `fracsight batch run`.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How far a batch output has got: rows committed, errors by code, the model.

    Exit code 0: reported; 1: its records cannot be read; 2: not a batch output.
    """
    job = out / "job.json"
    if not job.is_file():
        what = "is not a fracsight batch output (no job.json)" if out.exists() else "does not exist"
        error_line("not_found", f"{out} {what}")
        raise typer.Exit(2)
    try:
        record = json.loads(job.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        error_line("output_refused", f"{job} is unreadable ({type(e).__name__})")
        raise typer.Exit(1) from None
    if not (isinstance(record, dict) and isinstance(record.get("columns"), list) and record.get("model")):
        # another program's job.json (every batch output's has its columns and model): it was
        # "DIR: None, 0 rows, model None vNone", or "unreadable" of one that reads
        error_line("not_found", f"{out} is not a fracsight batch output (its job.json is another's)")
        raise typer.Exit(2)
    if not all(isinstance(record.get(key, {}), dict) for key in ("model", "errors")):
        error_line("output_refused", f"{job} is unreadable (its model or errors is not a JSON object)")
        raise typer.Exit(1)
    from fracsight.scale.output import OutputRefused, committed_codes, job_running

    try:  # from the parts, the record: job.json has no counts while a job runs or after a kill
        codes = committed_codes(out)
    except OutputRefused as e:  # a damaged part: one line, as `batch run` says it
        error_line(e.code, str(e))
        raise typer.Exit(1) from None
    record["rows"] = sum(codes.values())
    record["errors"] = {code: n for code, n in sorted(codes.items(), key=lambda c: -c[1]) if code}
    status = record.get("status")
    running = job_running(out)
    if status == "running" and running is False:  # killed (kill -9, a lost machine)
        record["status"] = status = "stopped"
        record["note"] = "not running: resume with the same command"
    elif status != "running" and running:  # a job opening the output (reading, retrying its rows)
        record["status"] = status = "running"
        record["note"] = "a job is opening this output: its counts change as it goes"
    if json_output:
        write_stdout(json.dumps(record, indent=2) + "\n")
        return
    model = record.get("model", {})
    said = f"{status} ({record['note']})" if "note" in record else status
    typer.echo(
        f"{out}: {said}, {record.get('rows', 0)} rows, model {model.get('name')} v{model.get('version')}"
    )
    for code, n in sorted(record.get("errors", {}).items()):
        typer.echo(f"  {code}: {n}")
