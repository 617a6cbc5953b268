"""The node's counters and backlog: Prometheus text for its ``/metrics``, a dict for ``status``.

Counters live in the spool's database (updated in the same transactions as the states they
count), so they survive restarts and ``fracsight dicom status --spool DIR`` reads the same
numbers as ``/metrics``, with or without the node running.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fracsight.dicom.spool import Spool

__all__ = ["COUNTERS", "MetricsServer", "health", "render", "status"]

log = logging.getLogger(__name__)

#: counter name in the spool -> (Prometheus name, label name or "", help)
COUNTERS: dict[str, tuple[str, str, str]] = {
    "received": ("fracsight_dicom_received_total", "", "Instances received and stored in the spool."),
    "duplicates": (
        "fracsight_dicom_duplicates_total",
        "",
        "Instances received again while already in the spool (kept once).",
    ),
    "refused": (
        "fracsight_dicom_refused_total",
        "code",
        "Instances refused (at C-STORE or by the reader), by error code; no results are made.",
    ),
    "ignored": (
        "fracsight_dicom_ignored_total",
        "code",
        "Instances acknowledged but not kept: no image to assess (a report, a presentation state, "
        "fracsight's own results), so that a study sent whole is not stopped at them.",
    ),
    "associations_rejected": (
        "fracsight_dicom_associations_rejected_total",
        "reason",
        "Associations rejected or aborted, by reason (AE title, too many at once, no SOP class taken, ...).",
    ),
    "predicted": ("fracsight_dicom_predicted_total", "", "Instances predicted, their results queued."),
    "study_verdicts": ("fracsight_dicom_study_verdicts_total", "", "Study-level verdicts queued."),
    "failed": (
        "fracsight_dicom_failed_total",
        "code",
        "Instances or studies whose results could not be made, by code.",
    ),
    "results_sent": (
        "fracsight_dicom_results_sent_total",
        "",
        "Result objects the destination confirmed.",
    ),
    "send_retries": (
        "fracsight_dicom_send_retries_total",
        "",
        "Delivery attempts that failed and were scheduled again (with back-off).",
    ),
    "send_failed": (
        "fracsight_dicom_send_failed_total",
        "code",
        "Result objects given up after repeated refusals by the destination, by code.",
    ),
}


def status(spool: Spool) -> dict[str, Any]:
    """Counters, backlog and instance states, as plain data (``fracsight dicom status --json``)."""
    counters = spool.counters()
    out: dict[str, Any] = {}
    for name, (_, label, _) in COUNTERS.items():
        values = counters.get(name, {})
        out[name] = dict(values) if label else values.get("", 0)
    return {
        "counters": out,
        "backlog": spool.backlog(),
        "instances": spool.states(),
        "given_up": spool.given_up(),
    }


#: below this much free space on the spool's file system the node is "degraded": a full spool
#: refused every image (0xA700) and could not write a study's verdict, while /healthz said "ok"
LOW_SPOOL_SPACE = 100 * 1024 * 1024


def spool_free_bytes(spool: Spool) -> int | None:
    """Free bytes on the spool's file system (None when it cannot be asked)."""
    try:
        return shutil.disk_usage(spool.root).free
    except OSError:
        return None


def spool_writable(spool: Spool, *, probe: bool) -> bool:
    """Whether the spool's file system takes writes: not mounted read-only and, with ``probe`` (the
    running node's own /healthz), a file can be made where received instances are written. A disk
    ext4 turned read-only after an error (``errors=remount-ro``) shows in neither ``statvfs`` nor
    ``os.access``: the node refused every image (0xA700) while /healthz said "ok". ``dicom status``
    does not probe: it only reads, maybe as another user than the node's."""
    try:
        if os.statvfs(spool.root).f_flag & os.ST_RDONLY:
            return False
        if probe:
            handle, name = tempfile.mkstemp(dir=spool.tmp_dir, prefix=".probe-")
            os.close(handle)
            os.unlink(name)
    except OSError:
        return False
    return True


def health(spool: Spool, *, probe: bool = False) -> dict[str, Any]:
    """``/healthz``: :func:`status` with ``status`` "ok", or "degraded" while result objects wait to
    be sent again after a failed try (``retrying``: a PACS down for an hour was "ok" throughout),
    the spool's file system has less than :data:`LOW_SPOOL_SPACE` free (``spool_low_space``) or
    takes no writes (``spool_writable``, :func:`spool_writable` with ``probe``). Still HTTP 200: a
    restart would bring neither the PACS back nor free or mend the disk."""
    retrying = spool.retrying()
    free = spool_free_bytes(spool)
    low = free is not None and free < LOW_SPOOL_SPACE
    writable = spool_writable(spool, probe=probe)
    return {
        "status": "degraded" if retrying or low or not writable else "ok",
        "retrying": retrying,
        "spool_free_bytes": free,
        "spool_low_space": low,
        "spool_writable": writable,
        **status(spool),
    }


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(spool: Spool) -> str:
    """All node metrics in the Prometheus text exposition format (0.0.4)."""
    counters = spool.counters()
    lines: list[str] = []
    for name, (metric, label, text) in COUNTERS.items():
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} counter"]
        values = counters.get(name, {})
        if not label:
            lines.append(f"{metric} {values.get('', 0)}")
        for value_label, value in sorted(values.items()):
            if label and value_label:
                lines.append(f'{metric}{{{label}="{_escape(value_label)}"}} {value}')
    lines += [
        "# HELP fracsight_dicom_backlog Work waiting now: instances to predict, result objects to send, "
        "studies waiting for their verdict.",
        "# TYPE fracsight_dicom_backlog gauge",
    ]
    lines += [f'fracsight_dicom_backlog{{stage="{k}"}} {v}' for k, v in spool.backlog().items()]
    lines += [
        "# HELP fracsight_dicom_instances Instances in the spool by state.",
        "# TYPE fracsight_dicom_instances gauge",
    ]
    lines += [f'fracsight_dicom_instances{{state="{k}"}} {v}' for k, v in sorted(spool.states().items())]
    lines += [
        "# HELP fracsight_dicom_given_up Result objects the destination refused until they were given "
        "up, not sent again since (fracsight dicom resend).",
        "# TYPE fracsight_dicom_given_up gauge",
    ]
    lines += [f'fracsight_dicom_given_up{{kind="{k}"}} {v}' for k, v in spool.given_up().items()]
    free = spool_free_bytes(spool)
    if free is not None:
        lines += [
            "# HELP fracsight_dicom_spool_free_bytes Free space on the spool's file system: a full one "
            "refuses every image.",
            "# TYPE fracsight_dicom_spool_free_bytes gauge",
            f"fracsight_dicom_spool_free_bytes {free}",
        ]
    return "\n".join(lines) + "\n"


def _server_for(host: str) -> type[ThreadingHTTPServer]:
    """ThreadingHTTPServer in the address family of ``host``: it is IPv4 only, and ``--metrics-host
    ::1`` (or an IPv6-only name) stopped the node at start, its DICOM port already open."""
    family = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return type("MetricsHTTPServer", (ThreadingHTTPServer,), {"address_family": family})


class MetricsServer:
    """``GET /metrics`` (Prometheus text) and ``GET /healthz`` (JSON backlog) on a small HTTP server."""

    def __init__(self, spool: Spool, host: str, port: int) -> None:
        spool_ref = spool

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, kind = render(spool_ref).encode(), "text/plain; version=0.0.4; charset=utf-8"
                elif self.path == "/healthz":
                    body, kind = json.dumps(health(spool_ref, probe=True)).encode(), "application/json"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the node's log

        try:
            self._server = _server_for(host)((host, port), Handler)
        except OSError as e:  # named, so that a taken port is not confused with the DICOM one
            raise OSError(e.errno, e.strerror, f"the metrics port {host}:{port}") from e
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fracsight-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        host = str(self._server.server_address[0])
        log.info("metrics on http://%s:%d/metrics", f"[{host}]" if ":" in host else host, self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
