"""``fracsight serve``'s uvicorn: one process, or a supervisor of worker processes.

uvicorn's own supervisor keeps the listening socket open until every worker has finished its
graceful shutdown; meanwhile the kernel queued new connections, which hung (about 20 s, then a
reset) where a load balancer's health check needs a refusal at once. Ours stops listening first.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.config import LOG_LEVELS
from uvicorn.supervisors import Multiprocess

from fracsight.api.app import uvicorn_log_config
from fracsight.api.settings import GRACEFUL_SHUTDOWN_S

APP = "fracsight.api.app:create_app"  # a factory, configured through the environment
__all__ = ["APP", "LOG_LEVELS", "run", "supervise"]


class _Supervisor(Multiprocess):
    """Worker processes whose shared socket is closed here when a stop is asked for: each worker
    closes its own copy as its shutdown starts (uvicorn looks at its signals every 0.5 s), and with
    the last copy the port refuses."""

    def _stop_listening(self) -> None:
        for sock in self.sockets:
            sock.close()

    def handle_term(self) -> None:
        self._stop_listening()
        super().handle_term()

    def handle_int(self) -> None:
        self._stop_listening()
        super().handle_int()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # read before uvicorn's supervisor sets its own handler: `nohup fracsight serve` ignores it
        self._hup_ignored = hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        super().__init__(*args, **kwargs)

    # Workers are started with SIGHUP blocked (a child keeps its parent's signal mask, not its
    # handler): one still starting when a closed terminal sent SIGHUP died of its default action and
    # was replaced; create_worker_app ignores it, then unblocks it. Blocked here, not ignored: a
    # SIGHUP meanwhile waits for the supervisor, which handles it once the worker is started.
    def init_processes(self) -> None:
        with _sighup_blocked():
            super().init_processes()

    def restart_all(self) -> None:
        with _sighup_blocked():
            super().restart_all()

    def keep_subprocess_alive(self) -> None:
        with _sighup_blocked():
            super().keep_subprocess_alive()

    def handle_ttin(self) -> None:
        with _sighup_blocked():
            super().handle_ttin()

    def handle_hup(self) -> None:
        # the terminal closed (SIGHUP to the whole process group): a graceful stop, as with one
        # worker (uvicorn's supervisor restarted its workers instead); nothing under nohup
        if not self._hup_ignored:
            logging.getLogger("uvicorn.error").info("Received SIGHUP (the terminal closed), exiting.")
            self._stop_listening()  # as for SIGTERM: new connections are refused, not left hanging
            self.should_exit.set()


def create_worker_app() -> Any:
    """:data:`APP` in a worker process of :class:`_Supervisor`. SIGHUP is the supervisor's to act on:
    its default action killed the worker with its requests in flight (the clients' connections
    dropped unanswered) when a closed terminal sent it to the whole process group."""
    from fracsight.api.app import create_app

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if hasattr(signal, "pthread_sigmask"):  # started blocked by the supervisor (_sighup_blocked)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    return create_app()


@contextlib.contextmanager
def _sighup_blocked() -> Iterator[None]:
    if not (hasattr(signal, "SIGHUP") and hasattr(signal, "pthread_sigmask")):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


def run(*, host: str, port: int, workers: int, log_level: str) -> None:
    """Serve :data:`APP` until stopped (SIGTERM: a graceful stop of at most GRACEFUL_SHUTDOWN_S)."""
    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "log_level": log_level,
        "log_config": uvicorn_log_config(LOG_LEVELS[log_level.lower()]),
        "http": "fracsight.api.protocol:HeaderDeadlineProtocol",  # a deadline for request headers
        # requests still running then are cut: an upload stalled for up to the 60 s body timeout
        # held the shutdown past the orchestrator's grace (docs/deploy.md: allow 30 s)
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
    }
    if workers == 1:
        uvicorn.run(APP, **options)
        return
    supervise(options)


def supervise(options: dict[str, Any]) -> None:
    """``options["workers"]`` worker processes of :data:`APP` on one socket, under :class:`_Supervisor`
    (uvicorn.run's options; its Config sets up logging, so it is made here, when serving)."""
    config = uvicorn.Config("fracsight.api.server:create_worker_app", **options)
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C during the stop, as uvicorn.run
        _Supervisor(config, sockets=[config.bind_socket()]).run()
