"""The Streamlit web app: upload radiographs, review results. Needs the ``app`` extra.

Importing this package does not import Streamlit; ``fracsight app`` calls
:func:`run_app`, which starts ``streamlit run`` on :data:`SCRIPT` in a child process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from fracsight._output import signals_handled

__all__ = [
    "SCRIPT",
    "listen_address",
    "local_url",
    "port_taken",
    "run_app",
    "streamlit_available",
    "streamlit_command",
]

SCRIPT = Path(__file__).resolve().with_name("streamlit_app.py")


def streamlit_available() -> bool:
    return importlib.util.find_spec("streamlit") is not None


def listen_address(host: str) -> str:
    """The address ``--host`` names, as a socket takes it (``[::1]`` as ``::1``); ValueError saying
    what to give instead for nothing, a URL, ``HOST:PORT`` or a name that does not resolve (each
    was "cannot listen on http://[http://127.0.0.1]:8000", as if the port were taken)."""
    address = host.strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if not address:
        raise ValueError("empty; give an address (127.0.0.1: this computer only)")
    if "/" in address or address.count(":") == 1 or re.fullmatch(r"\[.*\]:\d+", address):
        form = "a URL" if "/" in address else "HOST:PORT"
        raise ValueError(f"{form}: give the address alone (127.0.0.1, ::1 or a name); the port is --port")
    mapped = None
    with contextlib.suppress(ValueError):  # not an IPv6 address
        mapped = ipaddress.IPv6Address(address.split("%")[0]).ipv4_mapped
    if mapped is not None:  # servers bind IPv6 v6-only: it passed the port check, then failed to bind
        raise ValueError(f"an IPv4 address written as IPv6: give {mapped}")
    try:
        socket.getaddrinfo(address, None)
    except UnicodeError:  # a label over 63 characters, an empty one
        raise ValueError("not a valid host name") from None
    except OSError as e:
        raise ValueError(f"not an address or a host name this computer knows ({e.strerror or e})") from None
    return address


def local_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


def port_taken(address: str, port: int) -> str | None:
    """Why ``address:port`` cannot be listened on (the OS's words), or None when it can: checked
    before Streamlit starts, so that its URL is never printed for a port another server holds."""
    try:  # a name may resolve to IPv6 only (ip6-localhost)
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
    except (OSError, UnicodeError):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is fine
        if family == socket.AF_INET6:  # as asyncio binds: ::ffff:127.0.0.1 passed here, then failed there
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            probe.bind((address, port))
        except OSError as e:
            return e.strerror or str(e)
    return None


def streamlit_command(
    *,
    port: int,
    address: str = "127.0.0.1",
    model: str | None = None,
    examples: Path | None = None,
    operating_point: str | None = None,
) -> list[str]:
    """The ``streamlit run`` command line for the app (headless, no usage statistics)."""
    cmd = [
        sys.executable, "-m", "fracsight.app._launch", "run", str(SCRIPT),
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", address,
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
        # the tables' own "Download as CSV" wrote file names a spreadsheet runs as formulas
        # (@SUM(1+1).jpg), in other columns than the app's CSV download: that one only
        "--client.disableDataExport", "true",
        "--",
    ]  # fmt: skip
    # OPTION=VALUE: a value starting with "-" (a folder named "-x") is not read as an option
    if model:
        cmd.append(f"--model={model}")
    if examples is not None:
        cmd.append(f"--examples={examples}")
    if operating_point:
        cmd.append(f"--operating-point={operating_point}")
    return cmd


def run_app(
    command: list[str], on_start: Callable[[], None] | None = None, *, stop_timeout: float = 5.0
) -> int:
    """Run the Streamlit child until it exits; SIGTERM, SIGHUP and Ctrl+C stop it too. Returns its
    exit code.

    A child still running ``stop_timeout`` seconds after SIGTERM is killed: Streamlit can take
    longer than that to close its sessions, and a container stop must not wait for it. A child
    ended by a signal is said as a shell says it, 128 + the signal."""
    # Streamlit has no SIGHUP handler: a closed terminal's hang-up, sent to the whole group, killed
    # it at once and the command exited 255 without a word; the child ignores it (the disposition
    # outlives exec) and is stopped by this process's handler, as on SIGTERM
    hangup = getattr(signal, "SIGHUP", None)
    previous = signal.signal(hangup, signal.SIG_IGN) if hangup is not None else None
    try:
        child = subprocess.Popen(command)
    finally:
        if hangup is not None:
            signal.signal(hangup, previous)

    def stop(signum: int, frame: FrameType | None) -> None:
        child.terminate()
        killer = threading.Timer(stop_timeout, lambda: child.poll() is None and child.kill())
        killer.daemon = True
        killer.start()

    with signals_handled(stop):
        try:
            if on_start is not None:
                on_start()
            code = child.wait()
        except KeyboardInterrupt:  # the child got the same Ctrl+C; give it a moment to shut down
            try:
                code = child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    return 128 - code if code < 0 else code  # -9, killed: 137 (typer.Exit(-9) exited 247)
