"""A single-node Ray started for one job, without the processes a batch job does not use.

``ray.init()`` without an address starts, besides the GCS and the raylet (with its dashboard and
runtime-env agents, which the raylet needs), three Python processes a one-machine batch job has
no use for: the dashboard head (started even with ``include_dashboard=False``, and ``ray.init``
waits until it answers), the autoscaler monitor (nothing to scale on one machine; it ignores
SIGTERM, so ``ray.shutdown`` waits a second for it before killing it) and the log monitor (it
copies the workers' output to the driver's terminal; the workers' logs stay in Ray's session
folder). On two cores each of them delays the start of the others: without them a local Ray
starts in about half the time and stops in a twentieth (docs/scale.md, "Where the start-up goes").

``ray.init`` has no options for them, so the head node is started here with Ray's own ``Node``
class and the ``RayParams`` that ``ray start --head --no-monitor`` uses, then joined with
``ray.init(address=...)``. That is Ray's private API: where it is missing or refuses the
arguments (another Ray release), :func:`start_local_ray` falls back to a plain ``ray.init``.
Token authentication, the kernel fate sharing of every Ray process with the driver (so a
killed job leaves no Ray behind) and the usage statistics switch are set as ``ray.init`` sets them.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from fracsight._output import STOP_SIGNALS

__all__ = ["LocalRay", "start_local_ray"]

logger = logging.getLogger("fracsight.scale")


class LocalRay:
    """The head node this process started (None: ``ray.init`` started Ray and stops it)."""

    def __init__(self, node: Any | None) -> None:
        self._node = node

    @property
    def lean(self) -> bool:
        """True when Ray was started without the dashboard head, monitor and log monitor."""
        return self._node is not None

    def stop(self) -> None:
        """Disconnect the driver and stop every process of the node (SIGTERM, SIGKILL after 1 s)."""
        shutdown_driver()
        if self._node is not None:
            self._node.kill_all_processes(check_alive=False, allow_graceful=True)
            self._node = None


def shutdown_driver() -> None:
    """``ray.shutdown()``, then this process's signal handlers set again: Ray's shutdown puts the
    operating system's SIGTERM handler back to the default while Python still reports its own, so
    a SIGTERM after it killed the job (Ray's stack dump, exit -6, ``job.json`` left "running", the
    raylet's agents orphaned) instead of reaching the handler that holds it."""
    import ray

    ray.shutdown()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, *STOP_SIGNALS):
            handler = signal.getsignal(sig)
            if handler is not None:
                signal.signal(sig, handler)


def start_local_ray(cpus: int, *, logging_level: int = logging.WARNING) -> LocalRay:
    """Start a single-node Ray with ``cpus`` CPUs and connect this process to it as the driver."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the hospital
    # Ray notes on stderr that token authentication is on by default and how to turn it off: for
    # the job's own cluster on this machine that is the right setting, and not the user's to change
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    import ray

    try:
        start_head = _lean_head(cpus)
    except (ImportError, AttributeError, TypeError) as e:  # Ray's private API moved
        logger.info("starting Ray with ray.init (the lean start is unavailable: %s)", e)
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging_level)
        return LocalRay(None)
    node = start_head()
    try:
        ray.init(address=node.address, logging_level=logging_level)
    except BaseException:
        node.kill_all_processes(check_alive=False, allow_graceful=False)
        raise
    return LocalRay(node)


def _lean_head(cpus: int) -> Callable[[], Any]:
    """What starts the lean head node; raises ImportError, AttributeError or TypeError, before
    anything is started, where this Ray release does not have the private API it uses."""
    from ray._private import services
    from ray._private.authentication import authentication_token_setup as auth
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token
    from ray._private.node import Node
    from ray._private.parameter import RayParams
    from ray._raylet import AuthenticationTokenLoader

    class _Head(Node):  # type: ignore[misc]
        """Ray's head node without the dashboard head (the API server behind the dashboard,
        the job and state APIs: none of which a batch job uses)."""

        def start_api_server(self, *_: Any, **__: Any) -> None:
            self._webui_url = None

    params = RayParams(num_cpus=cpus, include_dashboard=False, no_monitor=True, include_log_monitor=False)
    options = {"head": True, "shutdown_at_exit": False, "spawn_reaper": True, "ray_init_cluster": True}
    inspect.signature(Node).bind(params, **options)  # TypeError if Node's parameters changed
    setup = (auth.enable_token_auth_by_default, auth.ensure_token_if_auth_enabled)
    popen = services.ConsolePopen  # AttributeError here, before anything is started

    class _OwnSession(popen):  # type: ignore[misc,valid-type]
        """The node's processes (GCS, raylet, and what the raylet starts) in a session of their
        own: a stop sent to the job's process group (`timeout`, `kill -TERM -- -PGID`, Slurm)
        ended them with the driver, whose core worker then exited before the job could commit,
        job.json left "running". The job stops them itself, as for a stop sent to it alone."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if os.name == "posix":
                kwargs.setdefault("start_new_session", True)
            super().__init__(*args, **kwargs)

    def start() -> Any:
        # what ray.init does for a new local cluster: token authentication on unless
        # RAY_AUTH_MODE says otherwise, with a token generated where there is none
        setup[0]()
        tokens = AuthenticationTokenLoader.instance()
        if not tokens.has_token(ignore_auth_mode=True):
            # this private cluster's token in the environment its processes inherit, never written
            # to ~/.ray/auth_token: in the container, whose home is on the read-only root, writing
            # it failed every local job ("Read-only file system: '/var/lib/fracsight/.ray'"). It stays
            # set for the rest of this process (Ray caches it; a later local cluster reuses it): a
            # random token of a cluster on this machine, which ends with its job
            os.environ["RAY_AUTH_TOKEN"] = generate_new_authentication_token()
            tokens.reset_cache()
        setup[1]({}, create_token_if_missing=True)
        services.ConsolePopen = _OwnSession
        try:
            return _Head(params, **options)
        finally:
            services.ConsolePopen = popen

    return start
