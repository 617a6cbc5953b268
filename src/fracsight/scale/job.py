"""A batch job on Ray Data: manifest -> blocks -> Predictor actors -> committed rows (docs/scale.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import importlib.util
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fracsight._cpus import local_cpus
from fracsight._output import ignore_further_stops
from fracsight.bundle import BundleSpec
from fracsight.errors import FracsightError
from fracsight.inference import list_bundles, resolve_bundle
from fracsight.inference.store import loadable_bundle
from fracsight.inference.tabular import text_cell
from fracsight.scale.local_ray import LocalRay, shutdown_driver, start_local_ray
from fracsight.scale.output import (
    NAME_FIELD,
    PATH_COLUMN,
    SETTINGS_KEY,
    BatchOutput,
    OutputWriteFailed,
    interrupts_held,
    output_columns,
)

__all__ = [
    "ActorsDoNotFit",
    "BatchError",
    "BatchInterrupted",
    "BatchSummary",
    "local_cpus",
    "run_batch",
    "settings_sha256",
]


class BatchError(FracsightError):
    """Ray could not be reached or the job stopped; the rows committed so far are kept."""

    code = "batch_failed"


class ActorsDoNotFit(BatchError):
    """The Ray the job runs on cannot place one actor as asked (a bad argument)."""

    code = "actors_do_not_fit"
    bad_argument = True


class ModelNotShared(BatchError):
    """A bundle .zip for a cluster: each node's actors would need the driver's unpacked copy."""

    code = "model_not_shared"
    bad_argument = True


class BatchInterrupted(BatchError):
    """Ctrl-C or SIGTERM stopped the job; the rows committed so far are kept."""

    code = "batch_interrupted"


@dataclasses.dataclass(frozen=True)
class BatchSummary:
    inputs: int  # distinct input files
    skipped: int  # already in the output when the job started
    predicted: int  # rows committed by this run (results and errors)
    errors: dict[str, int]  # error code -> rows of these inputs (job.json: of the whole output)
    seconds: float  # this run, Ray start-up included
    actors: int
    steady_rate: float | None  # images/s once the first rows came back (warm actors); None: too few
    retried: int = 0  # inputs whose error row was taken out to be predicted again (retry_errors)
    changed: int = 0  # inputs whose file changed since its row was made: predicted again


def settings_sha256(spec: BundleSpec) -> str:
    """The sha256 of what in bundle.json shapes the rows besides model.onnx (thresholds,
    calibration, localization, ...; not its training record or metrics): a bundle refitted in
    place keeps its name, version and model.onnx, and its new rows must not join the old ones."""
    settings = {k: v for k, v in spec.to_dict().items() if k not in ("training", "metrics")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _model_for_actors(model: str | None) -> str | None:
    """A packaged name stays a name (each node resolves its own install); a folder becomes absolute."""
    if model is None or model in list_bundles():
        return model
    return str(resolve_bundle(model).resolve())


def run_batch(
    inputs: Sequence[str] | Mapping[str, str],
    out: Path,
    *,
    model: str | None = None,
    operating_point: str | None = None,
    all_classes: bool = False,
    address: str | None = None,
    actors: int = 0,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    batch_size: int = 16,
    commit_every: int = 256,
    commit_seconds: float = 30.0,
    retry_errors: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> BatchSummary:
    """Predict every input not yet in ``out`` and commit the rows there.

    ``address``: an existing Ray cluster (``auto``, ``ray://host:10001``, ``host:6379``); None starts
    a local Ray with this machine's cores for the job. ``actors``: Predictor actors (0: one per
    ``cpus_per_actor`` CPUs, or per GPU with ``gpus_per_actor``). Rows are committed every
    ``commit_every`` rows or ``commit_seconds``, whichever comes first: a killed job loses at most
    those. ``progress(done, total)`` is called after each commit. ``inputs``: paths, or paths with
    the name each one's row gives it (:func:`~fracsight.scale.inputs.collect_batch_inputs`; else the
    file name). ``retry_errors``: the inputs whose committed row has an error code are predicted
    again, their new rows taking the old ones' place (otherwise a row, once committed, is final,
    unless its file changed since: such inputs are predicted again whatever ``retry_errors``).
    """
    if not isinstance(inputs, Mapping):
        inputs = {path: Path(path).name for path in inputs}
    started = time.perf_counter()
    option = "--address"
    if address == "local":  # as RAY_ADDRESS=local says it: a Ray of this machine's own, whatever
        address = None  # RAY_ADDRESS names
    elif not address:  # as `ray job submit` and KubeRay set it: a second, local Ray started beside it
        address, option = cluster_from_environment(), "RAY_ADDRESS"
    if address:
        _check_reachable(address, option)
        if str(model or "").lower().endswith(".zip"):  # its unpacked copy is in this machine's /tmp
            raise ModelNotShared(
                f"{_given(address, option)}: a bundle .zip is unpacked where the driver runs, out of the "
                f"other nodes' sight: unpack {model} on the file system the cluster shares and give its "
                "folder"
            )
    else:  # a local Ray gets this machine's cores: refuse actors it cannot place before starting it
        _check_fits({"CPU": float(local_cpus())}, cpus_per_actor, 0.0, actors)
    # a changed model.onnx, or a bundle.json that contradicts it: refused here, not by every
    # actor after Ray starts
    spec = loadable_bundle(model)[1]
    op = None
    if spec.head("fracture") is not None or operating_point is not None:
        op = spec.operating_point(operating_point)  # an unknown name fails here, not in every actor
    columns = output_columns(spec, all_classes=all_classes)
    if all_classes and spec.head("class") is None:  # as predict --csv says it: no columns without a word
        logging.getLogger("fracsight.scale").warning(
            "--all-classes: %s has no class head; no p_<class> columns", spec.name
        )
    identity = {"name": spec.name, "version": str(spec.version), "onnx_sha256": spec.onnx_sha256}
    if op is not None:  # rows at two thresholds must not mix in one output
        identity["operating_point"] = op.name
    identity[SETTINGS_KEY] = settings_sha256(spec)
    output = BatchOutput(out, columns, identity)
    redo_pending = False
    try:
        changed = output.forget_changed(inputs)
        output.forget_folders_now_read(inputs)
        retried = output.forget_errors(inputs) if retry_errors else 0
        pending = output.pending(inputs)
        redo_pending = True  # what was to be redone (changed files, errors to retry) is now pending
        skipped = len(inputs) - len(pending)
        if progress:
            progress(output.rows_done, output.rows_done + len(pending))
        run = _RayRun()
        run.phases["prepare_s"] = time.perf_counter() - started  # model, output folder, what is pending
        if pending:
            try:
                _run_on_ray(
                    {path: inputs[path] for path in pending},
                    output,
                    run,
                    model=_model_for_actors(model),
                    operating_point=operating_point,
                    all_classes=all_classes,
                    address=address,
                    actors=actors,
                    cpus_per_actor=cpus_per_actor,
                    gpus_per_actor=gpus_per_actor,
                    batch_size=batch_size,
                    commit_every=commit_every,
                    commit_seconds=commit_seconds,
                    progress=progress,
                )
            except (BatchError, OutputWriteFailed):  # job.json says the job stopped, not "running"
                output.end_early("stopped")
                raise
        errors = {code: n for code, n in output.error_counts().items() if code}
        missing = output.pending(inputs)
        # this command's rows decide its exit code: an output that also holds another command's
        # files (last month's archive) failed this month's with their errors
        mine = errors
        if output.rows_done != len(inputs) - len(missing):  # it holds rows of other inputs
            mine = {code: n for code, n in output.error_counts(inputs).items() if code}
        status = "complete" if not missing else "incomplete"
        seconds = time.perf_counter() - started
        last_run = {
            "predicted": len(pending),
            "actors": run.actors,
            "seconds": round(seconds, 3),
            "steady_images_per_s": None if run.steady is None else round(run.steady, 3),
            "phases": {name: round(value, 3) for name, value in run.phases.items()},
        }
        output.write_job({"status": status, "rows": output.rows_done, "errors": errors, "last_run": last_run})
        if missing:  # only if Ray itself failed; the next run predicts them
            raise BatchError(f"{len(missing)} inputs have no row yet; run the same command again")
        return BatchSummary(
            inputs=len(inputs),
            skipped=skipped,
            predicted=len(pending),
            errors=mine,
            retried=retried,
            changed=changed,
            seconds=seconds,
            actors=run.actors,
            steady_rate=run.steady,
        )
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what is committed stays, and job.json says so
        ignore_further_stops()  # under the CLI: the process ends next, and says what it kept
        if redo_pending and output.rows_done and not output.pending(inputs):  # held past the last commit
            output.end_early("complete")
            raise BatchInterrupted(
                f"interrupted after every row was committed: {output.folder} is complete"
            ) from None
        output.end_early("interrupted")
        if not output.rows_done:
            raise BatchInterrupted("interrupted before any row was committed") from None
        raise BatchInterrupted(
            f"interrupted: {output.rows_done} rows are committed in {output.folder}; "
            "run the same command again to finish"
        ) from None
    finally:
        output.close()


@dataclasses.dataclass
class _RayRun:
    """What one run on Ray did, and where its time went (written to job.json's last_run)."""

    actors: int = 0
    steady: float | None = None  # images/s once the first rows came back
    # seconds: prepare (model, output, pending), ray_start (ray.init), to_first_rows (dataset,
    # actors, model, first block), to_last_rows (the rest), ray_stop (ray.shutdown)
    phases: dict[str, float] = dataclasses.field(default_factory=dict)


# What the driver needs next (for Ray Data and the Parquet parts) that does not import Ray itself,
# so importing it beside ray.init cannot race ray.init for a module.
_DATA_STACK = ("pyarrow", "pyarrow.compute", "pyarrow.parquet", "pandas")
_STEADY_SECONDS = 2.0  # the least time after the first rows over which a steady rate is given


def _import_data_stack() -> None:
    for name in _DATA_STACK:
        importlib.import_module(name)


def _start_ray(address: str | None) -> LocalRay | None:
    """Connect to ``address``, or start a local Ray for the job (:mod:`fracsight.scale.local_ray`),
    with the heavy libraries Ray Data needs imported beside it; returns the local Ray to stop.

    A local Ray gets this machine's cores. Its start is mostly waiting for its own processes
    (GCS, raylet, agents), so the imports (most of a second of CPU, on the way to the first rows
    otherwise) cost no wall time there.
    """
    import ray

    importer = threading.Thread(target=_import_data_stack, daemon=True)
    importer.start()
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
            return None
        return start_local_ray(local_cpus())
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ... with long messages
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise BatchError(f"cannot start or reach {where}: {_first_line(e)}{_auth_hint(address, e)}") from None
    finally:
        importer.join()


def _auth_hint(address: str | None, error: Exception) -> str:
    """What to try when a cluster refused the connection and this driver sent no token: Ray sends
    one to an explicit address only under RAY_AUTH_MODE=token, while `ray start --head` turns token
    authentication on by default, so the plain `--address HOST:6379` failed after Ray's retries
    with only "Failed to connect" (its "InvalidAuthToken" lines scrolled by above)."""
    if not isinstance(error, ConnectionError) or not address or address == "auto":
        return ""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return ""
    return (
        "; if the cluster uses token authentication (the default of `ray start`), set "
        "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN, or ~/.ray/auth_token as on the head), "
        "or run on the head node with --address auto"
    )


def _run_on_ray(
    pending: dict[str, str],
    output: BatchOutput,
    run: _RayRun,
    *,
    model: str | None,
    operating_point: str | None,
    all_classes: bool,
    address: str | None,
    actors: int,
    cpus_per_actor: float,
    gpus_per_actor: float,
    batch_size: int,
    commit_every: int,
    commit_seconds: float,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Predict ``pending`` (path -> name) on Ray into ``output``; ``run`` records the actors, rates
    and phases."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the hospital
    import ray

    from fracsight.scale.predict import ACTOR, BatchPredictor

    clock = time.perf_counter()
    local: LocalRay | None = None
    batches: Generator[Any, None, None] | None = None
    ray_threads: set[threading.Thread] = set()  # those of the driver's connection, not of the iteration
    try:
        # Ctrl-C waits until the local Ray is up (seconds) and `local` holds it: one landing in
        # its start was swallowed by a Ray thread, or crashed the driver's core worker at exit
        # (SIGSEGV). Connecting to a cluster may retry for long: Ctrl-C stays immediate there.
        held = contextlib.nullcontext() if address else interrupts_held()
        with _own_sigterm(), held:
            local = _start_ray(address)
        run.phases["ray_start_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        ray_threads = set(threading.enumerate())
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the CLI shows its own, counted in committed rows
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled": ours
        resources = ray.cluster_resources()
        if local is not None:  # a cluster may add nodes as they are asked for; this Ray will not
            _check_fits(resources, cpus_per_actor, gpus_per_actor, actors)
        if actors <= 0:
            slots = resources.get("GPU", 0) / gpus_per_actor if gpus_per_actor else 0
            slots = slots or resources.get("CPU", 1) / max(cpus_per_actor, 1e-9)
            actors = max(1, int(slots))
        n_blocks = -(-len(pending) // batch_size)
        run.actors = actors = min(actors, n_blocks)  # no idle actors on a small job
        if local is None:  # Ray waits for actors that do not fit, silently: said, in case no node joins
            _say_if_short(resources, ray.available_resources(), cpus_per_actor, gpus_per_actor, actors)
        # One block per batch: the actors take blocks as they free up, and a block is the unit of
        # work lost (and redone) when a job is killed. from_items builds the blocks here in the
        # driver; from_arrow would run a Ray task per block just to read its metadata, and those
        # tasks would take the worker processes Ray starts in advance, which the actors then wait for.
        # a path as its bytes: a file name that is not UTF-8 cannot be Arrow text (the name is a label)
        items = [{PATH_COLUMN: os.fsencode(p), NAME_FIELD: text_cell(name)} for p, name in pending.items()]
        threads = max(1, int(cpus_per_actor))
        ds = ray.data.from_items(items, override_num_blocks=n_blocks).map_batches(
            BatchPredictor,
            fn_constructor_kwargs={
                "model": model,
                "operating_point": operating_point,
                "all_classes": all_classes,
                "threads": threads,
                "decode_workers": threads,
            },
            # a block is a batch; Ray Data wants the size said when an actor takes a GPU
            batch_size=batch_size if gpus_per_actor else None,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus_per_actor,
            num_gpus=gpus_per_actor or None,
        )
        total = output.rows_done + len(pending)
        buffer: list[dict[str, str]] = []
        last = time.monotonic()
        first: tuple[float, int] | None = None  # when the first rows came back, and how many
        received = 0
        workers: set[str] = set()  # the actors that made rows: fewer than asked on a busy cluster
        batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
        try:
            for batch in batches:
                buffer.extend(batch.to_pylist())
                received += batch.num_rows
                workers.update(batch.column(ACTOR).to_pylist())
                run.actors = len(workers)
                if first is None:
                    first = (time.monotonic(), batch.num_rows)
                    run.phases["to_first_rows_s"] = time.perf_counter() - clock
                    clock = time.perf_counter()
                if len(buffer) >= commit_every or time.monotonic() - last >= commit_seconds:
                    output.commit(buffer)
                    buffer, last = [], time.monotonic()
                    if progress:
                        progress(output.rows_done, total)
        except (KeyboardInterrupt, FracsightError):
            raise
        except Exception as e:  # an actor that cannot start (model missing on a node), a lost node, ...
            with contextlib.suppress(OutputWriteFailed):  # what came back is kept, and counted below
                output.commit(buffer)
                buffer = []
            raise BatchError(
                f"the Ray job stopped ({_first_line(e)}); {output.rows_done} rows are committed in "
                f"{output.folder}: run the same command again to continue"
            ) from None
        finally:  # Ctrl-C or SIGTERM too: keep what was predicted
            output.commit(buffer)
            if progress:
                progress(output.rows_done, total)
        run.phases["to_last_rows_s"] = time.perf_counter() - clock
        # measured over a while only: a second block that came back with the first gave 1,312
        # images/s for 30 files on 2 cores (about 80 in fact)
        if first is not None and received > first[1] and time.monotonic() - first[0] >= _STEADY_SECONDS:
            run.steady = (received - first[1]) / (time.monotonic() - first[0])
    finally:
        stopping = time.perf_counter()
        with interrupts_held():  # a second Ctrl-C stopped Ray halfway: its agents ran on for minutes
            if batches is not None:
                with contextlib.suppress(Exception):
                    batches.close()  # shuts Ray Data's executor down
                batches = None
                _threads_ended(ray_threads)
            if local is None:
                shutdown_driver()
            else:
                local.stop()
        run.phases["ray_stop_s"] = time.perf_counter() - stopping


def _say_if_short(
    total: dict[str, float], free: dict[str, float], cpus_per_actor: float, gpus_per_actor: float, actors: int
) -> None:
    """Warn when a cluster cannot start all ``actors`` now: its totals are too small (they start
    only if nodes join), or other jobs hold what they need (they start as it frees up; with none
    free the job waited without a word, and counted the actors asked as those that ran)."""
    said = logging.getLogger("fracsight.scale").warning

    def amounts(resources: dict[str, float]) -> str:
        return ", ".join(f"{resources.get(k, 0):g} {k}s" for k in ("CPU", "GPU"))

    try:
        _check_fits(total, cpus_per_actor, gpus_per_actor, actors)
    except ActorsDoNotFit:
        said(
            "the cluster has %s now, fewer than the actors ask for: those that do not fit start only "
            "if nodes join (Ray waits for them without a word)",
            amounts(total),
        )
        return
    try:
        _check_fits(free, cpus_per_actor, gpus_per_actor, actors)
    except ActorsDoNotFit:
        said(
            "the cluster has %s free now of %s (other jobs hold the rest): the %d actors start as "
            "they free up, and the job waits until one has",
            amounts(free),
            amounts(total),
            actors,
        )


def _threads_ended(ray_threads: set[threading.Thread]) -> None:
    """Wait (5 s at most) for the threads Ray Data started besides ``ray_threads``, once its
    iteration is closed: after a part that failed (a full disk) its pipeline thread (``iter_threaded``)
    ran on, and touching the driver after ``ray.shutdown()`` it ended the process ("The core worker
    has already been shutdown ... The process will exit") before the error line was printed."""
    gc.collect()
    deadline = time.monotonic() + 5
    for thread in set(threading.enumerate()) - ray_threads:
        # an iteration that stopped early leaves its block prefetcher parked for good (its thread
        # holds it, so it is never collected); it touches the driver only when the pipeline hands
        # it blocks, and the pipeline is what is waited for
        # (a dummy thread is one Ray's C++ core started and Python met in logging: it cannot be
        # joined, and the AssertionError took the place of the job's own error line)
        dummy = isinstance(thread, threading._DummyThread)  # type: ignore[attr-defined]
        if thread.name != "Prefetcher" and thread is not threading.current_thread() and not dummy:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def _own_sigterm() -> Iterator[None]:
    """Keep the caller's SIGTERM handler (the CLI's commits what is done, then stops): connecting a
    driver installs Ray's own, which dumps a stack trace and ends the process at once."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _check_fits(
    resources: dict[str, float], cpus_per_actor: float, gpus_per_actor: float, actors: int = 0
) -> None:
    """Refuse actors the local Ray cannot place (Ray would wait for them forever, silently), one
    alone or ``actors`` of them together (0: as many as fit; ``--actors 5`` on 2 CPUs ran on the
    actors that fit and said "predicted by 5 actors")."""
    asks = (("CPU", cpus_per_actor, "--cpus-per-actor"), ("GPU", gpus_per_actor, "--gpus-per-actor"))
    for kind, asked, option in asks:
        have = resources.get(kind, 0.0)
        if asked > have:
            raise ActorsDoNotFit(
                f"{option} {asked:g} asks for more than the local Ray has ({have:g} {kind}s"
                + (": is a CUDA GPU visible to onnxruntime-gpu here?" if kind == "GPU" else "")
                + ")"
            )
        if asked and actors * asked > have + 1e-9:
            raise ActorsDoNotFit(
                f"--actors {actors} with {option} {asked:g} asks for {actors * asked:g} {kind}s, more "
                f"than the local Ray has ({have:g}): fewer actors, or leave --actors out (as many as fit)"
            )


_VERSIONS = re.compile(r"Ray: (\S+)\s+Python: (\S+)")


def _first_line(error: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # Ray colours its errors' names
    versions = _VERSIONS.findall(text)
    if text.startswith("Version mismatch") and len(versions) == 2:
        # Ray spreads the versions over six lines; its first said only "The cluster was started with:"
        (ray_there, python_there), (ray_here, python_here) = versions
        return (
            f"version mismatch: the cluster runs Ray {ray_there} on Python {python_there}, this driver "
            f"Ray {ray_here} on Python {python_here}; run the driver with the cluster's versions"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__


def cluster_from_environment() -> str | None:
    """The cluster ``RAY_ADDRESS`` names, as ``ray job submit`` and KubeRay set it for a job; None
    where it names none: unset, ``local``, or the Jobs API's ``http://HEAD:8265`` (what Ray's docs
    have users export for ``ray job submit``, not a driver's address)."""
    value = os.environ.get("RAY_ADDRESS", "").strip()
    scheme, colon_slashes, _ = value.partition("://")
    if not value or value == "local" or (colon_slashes and scheme.lower() != "ray"):
        return None
    return value


def _given(address: str, option: str) -> str:
    """The address as the user gave it: ``--address HOST:PORT`` or ``RAY_ADDRESS=HOST:PORT``."""
    return f"{option} {address}" if option.startswith("--") else f"{option}={address}"


def _check_reachable(address: str, option: str = "--address", timeout: float = 5.0) -> None:
    """Fail at once on a HOST:PORT nothing answers at, or where what answers is not Ray (Ray itself
    would keep retrying for minutes in both cases). ``option``: where the address was given."""
    given = _given(address, option)
    at = address if option.startswith("--") else f"{address} ({option})"  # where it came from
    scheme, colon_slashes, _ = address.partition("://")
    if colon_slashes and scheme.lower() != "ray":  # Ray's own message about it was cut to one line
        raise BatchError(
            f"{given}: give the Ray GCS as HOST:PORT (6379 by default), or a Ray client "
            "server as ray://HOST:PORT (10001 by default); not a URL of another kind"
        )
    if scheme.lower() == "ray" and importlib.util.find_spec("grpc") is None:
        raise BatchError(
            f"{given}: a ray:// address needs Ray Client, which the scale extra does not "
            "install: pip install 'ray[client]'; or run the job on the cluster (`ray job submit -- "
            "fracsight batch run ... --address auto`)"
        )
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms: Ray resolves them
    if not 0 < int(port) < 65536:
        raise BatchError(f"{given}: {port} is not a port number (1-65535)")
    tls = os.environ.get("RAY_USE_TLS", "0").strip().lower() not in ("", "0", "false")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as probe:
            answer = None if tls else _http2_answer(probe)  # TLS: its handshake comes first, no telling
    except OSError as e:
        raise BatchError(f"no Ray cluster answers at {at} ({e.strerror or type(e).__name__})") from None
    if tls or (answer is not None and answer[3:4] == b"\x04"):  # a gRPC server's first frame is SETTINGS
        return
    if answer is None:  # Ray waited for minutes on such a server, deaf to Ctrl-C meanwhile
        raise BatchError(
            f"no Ray cluster answers at {at}: something took the connection but said nothing in "
            f"{timeout:g} s (a Ray GCS or client server answers at once)"
        )
    what = f"answered {answer[:20].decode('latin-1')!r}" if answer else "closed the connection"
    raise BatchError(
        f"what answers at {at} is not Ray (it {what}): is it the Ray GCS port "
        "(6379 by default) or, with ray://, the Ray client port (10001 by default)?"
    )


def _http2_answer(probe: socket.socket) -> bytes | None:
    """The first bytes a server at ``probe`` (a connected socket) sends after an HTTP/2 preface:
    Ray's GCS and client server speak gRPC, whose first frame is SETTINGS (type 4, the 4th byte),
    sent at once. None when nothing came within the socket's timeout."""
    answer = b""
    try:
        probe.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        while len(answer) < 4:
            chunk = probe.recv(9 - len(answer))
            if not chunk:
                break  # closed
            answer += chunk
    except TimeoutError:
        return answer or None
    except OSError:  # reset: closed
        pass
    return answer
