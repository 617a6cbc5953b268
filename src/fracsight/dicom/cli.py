"""``fracsight dicom ...``: thin commands over :mod:`fracsight.dicom` (heavy imports inside them)."""

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fracsight._options import ModelOption, refuse_option_as_name
from fracsight._terminal import error_line, warning_line, write_stdout
from fracsight.dicom.login import PASSWORD_ENV, PASSWORD_FILE_ENV, TOKEN_ENV, TOKEN_FILE_ENV, USER_ENV

if TYPE_CHECKING:
    from fracsight.dicom.login import Login
    from fracsight.dicom.spool import Spool

dicom_app = typer.Typer(
    help="DICOM node: receive radiographs from a PACS, send results back as DICOM (docs/dicom.md).",
    no_args_is_help=True,
)


# ---- the node (docs/dicom.md, "The node") -----------------------------------------------------------
def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    known = ("sr", "gsps", "capture")
    if not kinds or any(k not in known for k in kinds):
        raise typer.BadParameter(f"a comma-separated list of {', '.join(known)}", param_hint="--results")
    return kinds


def _check_ae_title(value: str, option: str) -> None:
    """:func:`~fracsight.dicom.sender.check_ae_title`, refused as a bad argument before anything starts."""
    from fracsight.dicom.sender import check_ae_title

    try:
        check_ae_title(value)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=option) from None


def _check_host(value: str, option: str) -> None:
    """:func:`~fracsight.dicom.sender.check_host`, refused as a bad argument before anything starts."""
    from fracsight.dicom.sender import check_host

    try:
        check_host(value)
    except ValueError as e:
        raise typer.BadParameter(f"{value!r}: {e}", param_hint=option) from None


def _check_url(url: str, option: str) -> str:
    """``url`` without its trailing slash if it is an http(s) URL with a host (and a valid port),
    without the spaces around it (one pasted from a file: a trailing one went into the path)."""
    from urllib.parse import urlsplit

    from fracsight.dicom.login import redacted_url

    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when out of range or not a number
    except ValueError:
        parts, port = None, None
    if "@" in url.partition("://")[2] and (parts is None or "@" not in parts.netloc):
        # user:pass/word@host: the host ended at the "/", and the password was printed as a path.
        # An "@" in a path is refused too: it cannot be told apart from such a password
        raise typer.BadParameter(
            "the URL holds '@' after its host: a password holding / ? or # must be percent-encoded "
            "(%2F, %3F, %23), and an '@' in the path as %40; better, give the password with "
            "--dicomweb-user and its password file or variable (docs/dicom.md)",
            param_hint=option,
        )
    scheme = url.partition("://")[0]  # as typed: urlsplit takes " http://..." for http://
    if parts is None or scheme.lower() not in ("http", "https") or not parts.hostname or port == 0:
        shown = repr(redacted_url(url)) if parts is not None else "the URL given"
        why = f"{shown} is not an http(s) URL of a DICOMweb service (http://HOST[:PORT]/PATH)"
        raise typer.BadParameter(why, param_hint=option)
    if parts.query or parts.fragment or ";" in parts.path or url.endswith(("?", "#")):
        # dicomweb-client appends its paths to the URL (`...?token=X/studies`): no service takes
        # that, and the token was printed in every message; the part is not quoted here
        raise typer.BadParameter(
            f"{redacted_url(url)!r}: a query (?...), parameters (;...) or a fragment (#...) in a DICOMweb "
            "URL is not supported: give the service's DICOMweb root (http://HOST[:PORT]/PATH); for a login "
            "use --dicomweb-user and its password (docs/dicom.md)",
            param_hint=option,
        )
    if parts.path.rstrip("/").lower().endswith("/studies"):  # every STOW-RS answered 409 (Orthanc)
        raise typer.BadParameter(
            f"{redacted_url(url)!r} ends in /studies: give the service's DICOMweb root "
            "(http://HOST[:PORT]/PATH, e.g. .../dicom-web), to which fracsight adds /studies itself",
            param_hint=option,
        )
    return (scheme.lower() + url[len(scheme) :]).rstrip("/")  # HTTP:// read as http:// below


def _login_urls(
    urls: list[tuple[str, str]], user: str | None, password_file: Path | None, token_file: Path | None
) -> list[tuple[str, Login | None]]:
    """Each ``(url, option)`` checked (:func:`_check_url`), as the URL without credentials and its
    login (:func:`~fracsight.dicom.login.resolve_login`); credentials given wrongly, or certificate
    authorities that cannot be used for an https URL, exit 2. The password and token files are
    read once for all: a pipe (``<(gcloud auth print-access-token)``) can be read only once."""
    from fracsight.dicom.login import LoginError, ca_bundle_error, password_from, resolve_login, token_from

    urls = [(_check_url(url, option), option) for url, option in urls]
    if any(url.startswith("https://") for url, _ in urls):
        tls_problem = ca_bundle_error(os.environ)
        if tls_problem:  # else the node's sender failed on every try, and `dicom study` with a traceback
            error_line("tls_ca_bundle", tls_problem)
            raise typer.Exit(2)
    try:
        password, ways = password_from(os.environ, password_file)
        token = token_from(os.environ, token_file)
        return [resolve_login(url, user=user, password=password, ways=ways, token=token) for url, _ in urls]
    except LoginError as e:
        error_line("dicomweb_login", str(e))
        raise typer.Exit(2) from None


_SPOOL_OWN = frozenset({"instances", "results", "tmp", "lost+found"})  # lost+found: a disk of its own


def _check_spool(spool: Path) -> None:
    """A new or empty folder, or a node's spool: the node empties ``tmp/`` and deletes unreadable
    ``instances/*.dcm`` at start, so any other folder could lose files that are not its own."""
    if spool.exists() and not spool.is_dir():
        raise typer.BadParameter(f"{spool} exists and is not a folder", param_hint="--spool")
    if not spool.is_dir() or (spool / "spool.db").is_file():
        return
    try:
        others = any(p.name not in _SPOOL_OWN or (p.is_dir() and any(p.iterdir())) for p in spool.iterdir())
    except OSError as e:
        raise typer.BadParameter(f"{spool}: {e.strerror or e}", param_hint="--spool") from None
    if others:
        why = f"{spool} holds other files and no spool.db: give a new or empty folder, or a node's spool"
        raise typer.BadParameter(why, param_hint="--spool")


def _check_ports_free(ports: list[tuple[str, str, int]]) -> None:
    """Each ``(what, host, port)`` bound and listened on, then released, as the node's servers will:
    a taken port (or the metrics port given as the DICOM one) exits 1 at once, not after the model
    and the worker processes have loaded (seconds), nor with the DICOM port already taking images."""
    import socket
    from contextlib import ExitStack

    with ExitStack() as held:  # held together: the second one must not share the first one's port
        for what, host, port in ports:
            try:
                family, kind, proto, _, address = socket.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )[0]
                sock = held.enter_context(socket.socket(family, kind, proto))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as socketserver's
                sock.bind(address)
                sock.listen(1)
            except OSError as e:
                error_line("node_start", f"the {what} port {host}:{port}: {e.strerror or e}")
                raise typer.Exit(1) from None


def _destination(to: str | None, stow: str | None, calling_ae: str, login: LoginOptions):
    from fracsight.dicom.sender import DimseDestination, StowDestination, parse_dimse_address

    if (to is None) == (stow is None):
        raise typer.BadParameter("give exactly one destination: --to HOST:PORT:AET or --stow URL")
    if stow is not None:
        [(url, stow_login)] = _login_urls([(stow, "--stow")], *login)
        return StowDestination(url, login=stow_login)
    try:  # no default AE title: a PACS calls itself something, and ANY-SCP it would refuse for ever
        host, port, aet = parse_dimse_address(to, default_ae=None)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--to") from None
    return DimseDestination(host, port, aet, calling_ae=calling_ae, decompress_fallback=True)


DicomwebUserOption = Annotated[
    str | None,
    typer.Option(
        envvar=USER_ENV,
        help=f"User name for a DICOMweb service behind HTTP basic authentication; the password from "
        f"{PASSWORD_ENV} or --dicomweb-password-file, never on the command line.",
    ),
]
DicomwebPasswordFileOption = Annotated[
    Path | None,
    typer.Option(
        envvar=PASSWORD_FILE_ENV,
        readable=False,  # read_secret_file says why not, and whose it must be; click said "not readable"
        help="File holding the DICOMweb password (one line), e.g. a container secret.",
    ),
]
DicomwebTokenFileOption = Annotated[
    Path | None,
    typer.Option(
        envvar=TOKEN_FILE_ENV,
        readable=False,
        help=f"File holding an OAuth bearer token for the DICOMweb service (one line; read again for "
        f"each connection, so a renewed token is used), instead of a user name and password; or {TOKEN_ENV}.",
    ),
]
LoginOptions = tuple[str | None, Path | None, Path | None]  # user, password file, token file
ResultsOption = Annotated[
    str,
    typer.Option(
        "--results",
        help="Result objects per image: any of sr,gsps,capture (comma-separated; capture is opt-in).",
    ),
]


@dicom_app.command()
def listen(
    spool: Annotated[Path, typer.Option(help="Spool folder (created; holds patient data: keep it private).")],
    allow: Annotated[
        list[str], typer.Option("--allow", help="Calling AE title allowed to send (repeat for several).")
    ],
    to: Annotated[str | None, typer.Option(help="Send results by C-STORE to HOST:PORT:AET.")] = None,
    stow: Annotated[str | None, typer.Option(help="Send results by STOW-RS to this DICOMweb URL.")] = None,
    dicomweb_user: DicomwebUserOption = None,
    dicomweb_password_file: DicomwebPasswordFileOption = None,
    dicomweb_token_file: DicomwebTokenFileOption = None,
    ae_title: Annotated[str, typer.Option(help="The node's own AE title.")] = "FRACSIGHT",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(min=1, max=65535, help="DICOM port to listen on.")] = 11112,
    quiet_time: Annotated[
        float,
        typer.Option(
            min=0.0, max=86400.0, help="Seconds without a new image before a study gets its verdict."
        ),
    ] = 30.0,
    model: ModelOption = None,
    operating_point: Annotated[str | None, typer.Option(help="Named operating point of the bundle.")] = None,
    results: ResultsOption = "sr,gsps",
    batch_size: Annotated[int, typer.Option(min=1, max=64, help="Images predicted per batch.")] = 8,
    metrics_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Serve /metrics and /healthz on this port.")
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Address for /metrics (0.0.0.0 for a scraper on another host).")
    ] = "127.0.0.1",
    max_backoff: Annotated[
        float,
        typer.Option(
            min=0.1, max=86400.0, help="Longest wait (s) between tries while the destination is down."
        ),
    ] = 60.0,
    keep_files: Annotated[
        float, typer.Option(min=0.0, help="Seconds to keep a finished study's files in the spool.")
    ] = 3600.0,
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            "--result-processes",
            min=0,
            max=16,
            help="Worker processes that read, predict and make result objects (0: in the worker thread).",
        ),
    ] = 2,
    threads: Annotated[
        int,
        typer.Option(
            min=0, max=64, help="ONNX Runtime threads of each process that runs the model (0: one per core)."
        ),
    ] = 1,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run the DICOM node: receive radiographs (C-STORE), predict, send results back as DICOM.

    Runs until SIGTERM or SIGINT; whatever is in the spool then is resumed at the next start.

    Exit code 0: stopped (SIGTERM, SIGINT); 1: it could not start (port, spool); 2: bad arguments.
    """
    # without the dicom extra: named (fracsight.cli.EXTRA_OF) before the model loads or the spool is made
    import highdicom  # noqa: F401
    import pynetdicom  # noqa: F401

    from fracsight.cli import user_errors
    from fracsight.dicom.node import Node, NodeConfig, SpoolInUseError
    from fracsight.dicom.result_pool import ModelRef
    from fracsight.errors import FracsightError

    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter("DEBUG, INFO, WARNING or ERROR", param_hint="--log-level")
    _check_ae_title(ae_title, "--ae-title")
    for calling in allow:
        _check_ae_title(calling, "--allow")
    _check_host(host, "--host")
    _check_host(metrics_host, "--metrics-host")
    _check_spool(spool)
    config = NodeConfig(
        spool=spool,
        allowed=tuple(allow),
        destination=_destination(
            to, stow, ae_title, (dicomweb_user, dicomweb_password_file, dicomweb_token_file)
        ),
        ae_title=ae_title,
        host=host,
        port=port,
        quiet_time=quiet_time,
        model=model,
        operating_point=operating_point,
        kinds=_kinds(results),
        batch_size=batch_size,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        max_delay=max_backoff,
        keep_files_for=keep_files,
        processes=processes,
        threads=threads,
    )
    from fracsight.dicom._logging import setup_logging

    with user_errors(exit_code=2):  # an unknown model or operating point: before the node starts
        ModelRef.resolve(model, operating_point, threads)
    ports = [("DICOM", host, port)] + ([("metrics", metrics_host, metrics_port)] if metrics_port else [])
    _check_ports_free(ports)  # after the bad arguments (exit 2), before the model loads
    setup_logging(log_level)
    try:
        Node(config).serve_forever()
    except FracsightError as e:
        error_line(e.code, str(e))
        raise typer.Exit(1) from None
    except SpoolInUseError as e:
        error_line("spool_in_use", str(e))
        raise typer.Exit(1) from None
    except sqlite3.Error as e:  # a spool.db that is not a database, or one locked by another program
        db = spool / "spool.db"
        cannot_write = not os.access(spool, os.W_OK) or (db.exists() and not os.access(db, os.W_OK))
        error_line("node_start", f"{db}: {e}{_not_yours() if cannot_write else ''}")
        raise typer.Exit(1) from None
    except OSError as e:  # the port is taken, the spool cannot be written, ...
        where = e.filename or f"listening on {host}:{port}"  # the listeners name their port
        if not e.filename and _shared_memory_read_only():  # the worker pool's locks live there
            where = "shared memory (/dev/shm) cannot be written, which the node's workers need"
        refused = e.errno in (errno.EACCES, errno.EPERM) and _inside(e.filename, spool)
        error_line("node_start", f"{where}: {e.strerror or e}{_not_yours() if refused else ''}")
        raise typer.Exit(1) from None


def _not_yours() -> str:
    """What to change where the spool is another user's: a host folder bind-mounted as the spool
    keeps its host owner, and the container's node was restarted for ever without a word of it."""
    return (
        f": the node runs as uid {os.getuid()}; make the spool folder (or, to make it, the folder "
        "above it) writable by it (chown -R)"
    )


def _inside(filename: object, folder: Path) -> bool:
    if not isinstance(filename, str):
        return False
    return Path(os.path.abspath(filename)).is_relative_to(Path(os.path.abspath(folder)))


def _shared_memory_read_only() -> bool:
    """Whether ``/dev/shm``, where Python's multiprocessing makes its locks, is there but cannot be
    written (a container started with ``--read-only --ipc=none``): the failure has no file name."""
    return os.path.isdir("/dev/shm") and not os.access("/dev/shm", os.W_OK)


@dicom_app.command()
def send(
    files: Annotated[list[Path], typer.Argument(help="DICOM files to send (sent as they are).")],
    to: Annotated[str, typer.Option(help="The C-STORE SCP: HOST:PORT[:AET] (AET default ANY-SCP).")],
    ae_title: Annotated[str, typer.Option(help="Calling AE title.")] = "FRACSIGHT",
) -> None:
    """Send DICOM files by C-STORE on one association (for scripts and tests).

    Prints one line per file (stored, or the failure status).

    Exit code 0: every file stored; 1: any file not stored; 2: bad arguments.
    """
    from fracsight.dicom.sender import DestinationUnavailable, DimseDestination, parse_dimse_address

    _check_ae_title(ae_title, "--ae-title")
    folders = [str(f) for f in files if f.is_dir()]
    if folders:
        error_line("not_a_file", f"a folder, not a DICOM file: {', '.join(folders)}")
        raise typer.Exit(2)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        error_line("not_found", f"no such file: {', '.join(missing)}")
        raise typer.Exit(2)
    try:
        host, port, aet = parse_dimse_address(to)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--to") from None
    try:
        outcomes = DimseDestination(host, port, aet, calling_ae=ae_title).deliver(files)
    except DestinationUnavailable as e:
        error_line("destination_unavailable", str(e))
        raise typer.Exit(1) from None
    explain = {"file_unreadable": "file_unreadable (not a DICOM file with file meta information)"}
    for path, outcome in zip(files, outcomes, strict=True):
        typer.echo(f"{path.name}: {'stored' if outcome is None else explain.get(outcome, outcome)}")
    if any(o is not None for o in outcomes):
        raise typer.Exit(1)


@dicom_app.command()
def study(
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID of the study to process.")],
    dicomweb: Annotated[str, typer.Option(help="DICOMweb root URL holding the study (QIDO-RS, WADO-RS).")],
    stow: Annotated[str | None, typer.Option(help="STOW-RS URL for results (default: --dicomweb).")] = None,
    dicomweb_user: DicomwebUserOption = None,
    dicomweb_password_file: DicomwebPasswordFileOption = None,
    dicomweb_token_file: DicomwebTokenFileOption = None,
    model: ModelOption = None,
    operating_point: Annotated[str | None, typer.Option(help="Named operating point of the bundle.")] = None,
    results: ResultsOption = "sr,gsps",
) -> None:
    """Process one study over DICOMweb: predict its radiographs and store the results with the service.

    Finds its images (QIDO-RS), fetches them (WADO-RS), stores result objects and study verdict (STOW-RS).

    Prints a JSON summary. A decision aid, not a diagnosis.

    Exit code 0: results stored; 1: the service failed, a result unstored, none assessed; 2: bad arguments.
    """
    import requests

    from fracsight.cli import user_errors
    from fracsight.dicom.dicomweb import process_study
    from fracsight.dicom.login import LoginError, shown_url
    from fracsight.dicom.sender import DestinationUnavailable, request_error
    from fracsight.errors import FracsightError
    from fracsight.inference import NOTICE, Predictor

    kinds = _kinds(results)
    logins = (dicomweb_user, dicomweb_password_file, dicomweb_token_file)
    urls = [(dicomweb, "--dicomweb"), *([(stow, "--stow")] if stow is not None else [])]
    (dicomweb_url, login), *to_stow = _login_urls(urls, *logins)
    stow_url, stow_login = to_stow[0] if to_stow else (None, login)
    if len(study_uid) > 64 or not re.fullmatch(r"[0-9]+(\.[0-9]+)*", study_uid):
        raise typer.BadParameter("not a DICOM UID (digits and dots, at most 64 characters)")
    with user_errors(exit_code=2):  # an unknown model or operating point is a bad argument
        predictor = Predictor(model, operating_point=operating_point)
    from fracsight.cli import interrupted_saying

    stored_at_the_end = (
        "the results go to the service in one request at the end, under UIDs fixed by their sources; "
        "run the same command again to store them (objects already stored are kept once)"
    )
    try:
        with interrupted_saying(lambda: stored_at_the_end):
            outcome = process_study(
                study_uid,
                dicomweb_url=dicomweb_url,
                stow_url=stow_url,
                predictor=predictor,
                kinds=kinds,
                login=login,
                stow_login=stow_login,
            )
    except FracsightError as e:
        error_line(e.code, str(e))
        raise typer.Exit(1) from None
    except LookupError as e:
        error_line("study_not_found", str(e))
        raise typer.Exit(1) from None
    except LoginError as e:  # the token file gone or emptied since the start
        error_line("dicomweb_login", str(e))
        raise typer.Exit(1) from None
    except DestinationUnavailable as e:  # names the STOW-RS root URL and the HTTP status only
        error_line("dicomweb_unavailable", str(e))
        raise typer.Exit(1) from None
    except requests.RequestException as e:
        # requests' own message quotes the URL, which holds the Study Instance UID: not shown
        what = request_error(e, login)
        where = shown_url(dicomweb_url, login)
        error_line("dicomweb_unavailable", f"the DICOMweb service at {where}: {what}")
        raise typer.Exit(1) from None
    write_stdout(json.dumps(outcome.to_dict(), indent=2) + "\n")
    typer.echo(NOTICE, err=True)
    if outcome.failed:
        codes = ", ".join(f"{code} x{n}" for code, n in sorted(outcome.failed_codes.items()))
        warning_line(f"{outcome.failed} result object(s) were not stored by the STOW-RS service: {codes}")
    if not outcome.predicted:  # a CT-only study was exit 0: a script could not tell it from a done one
        if outcome.refused or outcome.not_retrieved:
            why = f"see {'refused' if outcome.refused else 'not_retrieved'}"
        else:
            skipped = f"{outcome.own_results} fracsight result objects"
            if outcome.not_images:
                n = outcome.not_images
                skipped += f" and {n} other object{'' if n == 1 else 's'} without an image"
            why = f"it holds no radiograph; {skipped} skipped"
        warning_line(f"no image of the study could be assessed ({why}): nothing was predicted")
        raise typer.Exit(1)
    if not outcome.complete:
        raise typer.Exit(1)


@contextmanager
def _existing_spool(spool: Path, *, read_only: bool) -> Iterator[Spool]:
    """A node's spool that exists already (never a new one), its errors as one line each."""
    from fracsight.dicom.spool import Spool

    if not (spool / "spool.db").is_file():
        if spool.is_dir():
            said = f"{spool} holds no spool.db"
        else:
            said = f"{spool} is a file, not a spool folder" if spool.exists() else f"no such folder: {spool}"
        error_line("not_a_spool", said)
        raise typer.Exit(2)
    try:
        if not read_only:
            Spool(spool, read_only=True).close()  # a node's tables, before anything is written
        store = Spool(spool, read_only=read_only)  # read-only, it checks the tables itself
        try:
            yield store
        finally:
            store.close()
    except sqlite3.Error as e:  # a spool.db that is not a node's database, or one locked for long
        code, exit_code = ("spool_busy", 1) if isinstance(e, sqlite3.OperationalError) else ("not_a_spool", 2)
        error_line(code, f"{spool / 'spool.db'}: {e}")
        raise typer.Exit(exit_code) from None


@dicom_app.command()
def status(
    spool: Annotated[Path, typer.Option(help="The node's spool folder.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Health, counters and backlog of a node's spool (works with the node running or stopped).

    Exit code 0: reported (a node stopped is said, not an error); 1: the spool is busy; 2: not a node's spool.
    """
    from fracsight.dicom.metrics import health
    from fracsight.dicom.node import node_running

    with _existing_spool(spool, read_only=True) as store:
        # as /healthz says it: the counters alone could not tell a PACS down from one receiving, nor
        # a spool about to fill, and the metrics port is off by default
        info = health(store)
    info["node_running"] = running = node_running(spool)
    backlog = info["backlog"]
    stopped_with_work = running is False and any(backlog.values())
    if stopped_with_work:
        info["status"] = "stopped"
    if json_output:
        write_stdout(json.dumps(info, indent=2) + "\n")
        return
    why = []
    if stopped_with_work:
        why.append(
            f"no node is running on this spool: {backlog['to_predict']} image(s) to predict, "
            f"{backlog['to_send']} result object(s) to send and {backlog['open_studies']} open "
            "study(ies) wait until one is started again"
        )
    elif info["retrying"]:
        why.append(f"{info['retrying']} result object(s) wait to be sent again: is the destination down?")
    if info["spool_low_space"]:
        why.append("the spool's file system is nearly full")
    if not info["spool_writable"]:
        why.append("the spool's file system is read-only: every image is refused")
    typer.echo(f"status: {info['status']}" + (f" ({'; '.join(why)})" if why else ""))
    if info["spool_free_bytes"] is not None:
        typer.echo(f"spool free: {info['spool_free_bytes'] / 1e9:.1f} GB")
    if running is not None:
        typer.echo(f"node: {'running' if running else 'not running'}")
    for section in ("counters", "backlog", "instances", "given_up"):
        values = info[section]
        typer.echo(f"{section}:")
        for name, value in values.items():
            if isinstance(value, dict):
                shown = ", ".join(f"{k}={v}" for k, v in value.items()) or "0"
                typer.echo(f"  {name}: {shown}")
            else:
                typer.echo(f"  {name}: {value}")
    given_up = info["given_up"]
    if any(given_up.values()):  # a study verdict given up left every instance "sent": it was unsaid
        typer.echo(
            f"{given_up['image_results']} image result object(s) and {given_up['study_verdicts']} study "
            "verdict(s) were refused by the destination until they were given up; once it is fixed, "
            f"`fracsight dicom resend --spool {spool}` sends them again"
        )


@dicom_app.command()
def resend(
    spool: Annotated[Path, typer.Option(help="The node's spool folder.")],
    code: Annotated[
        str | None,
        typer.Option(help="Only those given up with this code (as `status` names them: http_500, ...)."),
    ] = None,
) -> None:
    """Send again the result objects the destination refused until they were given up.

    Once the destination is fixed; with the node running, or stopped (then sent at its next start).

    Exit code 0: queued (or nothing to send); 1: the spool is busy; 2: not a node's spool.
    """
    with _existing_spool(spool, read_only=False) as store:
        queued = store.resend_failed(code)
    if not queued:
        which = f" with code {code}" if code else ""
        typer.echo(f"no result object was given up{which}: nothing to send again")
        return
    by_code = ", ".join(f"{n} {c or 'without a code'}" for c, n in sorted(queued.items()))
    typer.echo(f"{sum(queued.values())} result objects queued to be sent again ({by_code})")


@dicom_app.command("results")
def results_command(
    files: Annotated[
        list[Path], typer.Argument(help="DICOM radiographs (CR, DX, ...).", exists=True, dir_okay=False)
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the result objects (nothing replaced).")
    ],
    model: ModelOption = None,
    operating_point: Annotated[str | None, typer.Option(help="Named operating point of the bundle.")] = None,
    kinds: Annotated[
        str,
        typer.Option(
            "--results",
            "--kinds",
            help="Objects to write, comma-separated: sr (report), gsps (overlay), capture (as `listen`).",
        ),
    ] = "sr,gsps,capture",
    study: Annotated[
        bool, typer.Option("--study", help="Also write a study-level SR for each study among the inputs.")
    ] = False,
) -> None:
    """Predict DICOM radiographs and write the results as DICOM objects in each source's study.

    Writes a structured report, a presentation state and a secondary capture (docs/dicom.md).

    A decision aid, not a diagnosis.

    Exit code 0: every file got its results; 1: any was refused (its line says why); 2: bad arguments.
    """
    import dataclasses

    refuse_option_as_name(out, "--out", folder=True)
    import highdicom  # noqa: F401  # without the dicom extra: named before --out is made

    from fracsight.cli import user_errors
    from fracsight.dicom.results import (
        KINDS,
        image_uid_seed,
        read_source,
        result_datasets,
        study_result_datasets,
        study_uid_seed,
        write_new,
    )
    from fracsight.dicom.spool import instance_key
    from fracsight.errors import FracsightError
    from fracsight.inference import NOTICE, FailedPrediction, Predictor
    from fracsight.inference.results import views_unread
    from fracsight.inference.tabular import distinct_names
    from fracsight.io import image_stem

    wanted = [k.strip() for k in kinds.split(",") if k.strip()]
    if not wanted or any(k not in KINDS for k in wanted):
        error_line("bad_kinds", f"--results takes some of {', '.join(KINDS)}, got {kinds!r}")
        raise typer.Exit(2)
    if out.exists() and not out.is_dir():
        error_line("exists", f"{out} exists and is not a folder")
        raise typer.Exit(2)
    with user_errors(exit_code=2):  # an unknown or broken model: before any folder is made
        predictor = Predictor(model, operating_point=operating_point)
    try:  # an --out that cannot be made is a bad argument
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        error_line("unwritable", f"{out}: {e.strerror or e}")
        raise typer.Exit(2) from None
    failed = 0
    studies: dict[str, list] = {}
    done: dict[str, str] = {}  # SOP Instance UID -> the file that got its results
    # two patients' IM000000 (a PACS export's names) are said by their paths as typed, as predict
    # says them: two lines "IM000000: ..." with opposite verdicts could not be told apart
    # (a file named twice is one file: its second time is a note, by its name)
    names = dict(distinct_names(list(dict.fromkeys((path, path.name) for path in files))))
    # by study: the views whose header was read, not their image, with their SOP Instance UIDs
    unread: dict[str, list[tuple[FailedPrediction, str]]] = {}
    for path in files:
        said = names[path]
        source = None
        try:
            data = path.read_bytes()
            source = read_source(data, path.name)
            instance = str(source.get("SOPInstanceUID") or "")
            if instance and instance in done:  # a copy, or the file given twice: results once, counted once
                typer.echo(f"note: {said}: the same instance as {done[instance]}; its results once", err=True)
                continue
            prediction = predictor.predict(data, name=path.name, keep_pixels=True)
            # UIDs derived from the source's, as the node's: a re-run (after a full disk, say) makes
            # the same objects again, which a PACS keeps once
            seed = image_uid_seed(instance, predictor) if instance else None
            datasets = result_datasets(source, prediction, predictor, kinds=wanted, uid_seed=seed)
        except FracsightError as e:
            message = str(e).removeprefix(f"{path.name}: ")
            error_line(e.code, f"{said}: {message}")
            failed += 1
            if source is not None and "StudyInstanceUID" in source:  # its study's report says so
                failures = unread.setdefault(str(source.StudyInstanceUID), [])
                if not instance or instance not in (uid for _, uid in failures):  # a copy: one view, once
                    failures.append((FailedPrediction.of(said, e), instance))
            continue
        except OSError as e:
            error_line("unreadable", f"{said}: {e.strerror or e}")
            failed += 1
            continue
        try:
            # the name less its image suffix only: `1.2.3.101` (a PACS export's UID name) lost
            # its last part, and two sources' results were told apart by their order alone
            written: list[Path] = []
            for ds in datasets:
                written.append(write_new(ds, out, image_stem(path)))
        except OSError as e:
            for made in written:  # a source's objects whole or not at all: a re-run made them twice
                made.unlink(missing_ok=True)
            error_line("unwritable", f"{out}: {e.strerror or e} (no results of {said} kept)")
            raise typer.Exit(1) from None
        typer.echo(f"{said}: {prediction.decision} -> {', '.join(str(p) for p in written)}")
        done[instance] = said  # only now: a copy of a file that failed is tried in its own right
        if study:  # the study report needs the headers and numbers only, not the pixels
            del source.PixelData
            kept = dataclasses.replace(prediction, pixels=None, heatmap=None)
            studies.setdefault(str(source.StudyInstanceUID), []).append((source, kept))
    for n, (study_uid, members) in enumerate(studies.items(), start=1):
        predictions = [p for _, p in members]
        # a view that could not be read makes the study's verdict "not reliable", as predict says it
        failures = unread.get(study_uid, [])
        verdict = predictor.predict_study(
            predictions, f"study {n}", unread=views_unread(f for f, _ in failures)
        )
        # the views unread named as the node and `dicom study` name them: a verdict that has seen
        # them is another verdict, under another UID (a PACS kept the first of two under one UID)
        unseen = [f"{instance_key(uid)}.dcm" if uid else f.source for f, uid in failures if not f.not_a_view]
        try:
            sources = [s for s, _ in members]
            seed = study_uid_seed(sources, predictor, unseen)
            (ds,) = study_result_datasets(sources, verdict, predictions, predictor, uid_seed=seed)
        except FracsightError as e:  # e.g. two patients under one Study Instance UID: the others go on
            error_line(e.code, f"study {n} ({len(members)} images): {e}")
            failed += 1
            continue
        try:
            path = write_new(ds, out, f"study-{n}")
        except OSError as e:
            error_line("unwritable", f"{out}: {e.strerror or e}")
            raise typer.Exit(1) from None
        typer.echo(f"study {n} ({len(members)} images): {verdict.decision} -> {path}")
    typer.echo(NOTICE, err=True)
    if failed:
        raise typer.Exit(1)
