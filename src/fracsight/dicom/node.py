"""The DICOM node: listener -> spool -> worker -> sender, started and stopped together.

>>> node = Node(NodeConfig(spool="/var/spool/fracsight", allowed=("PACS",),
...                        destination=DimseDestination("pacs.local", 104, "PACS")))  # doctest: +SKIP
>>> node.serve_forever()    # until SIGTERM or SIGINT                                  # doctest: +SKIP

docs/dicom.md ("The node") has the flow, the durability guarantees and the metrics.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fracsight._output import STOP_SIGNALS, signals_handled
from fracsight.dicom.metrics import MetricsServer
from fracsight.dicom.result_pool import ModelRef
from fracsight.dicom.results_context import NODE_KINDS
from fracsight.dicom.scp import StoreSCP
from fracsight.dicom.sender import Destination, Sender
from fracsight.dicom.spool import Spool
from fracsight.dicom.worker import Worker

if TYPE_CHECKING:
    from fracsight.inference import Predictor

__all__ = ["Node", "NodeConfig", "SpoolInUseError"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs; the CLI's ``fracsight dicom listen`` options map onto it."""

    spool: str | Path
    allowed: tuple[str, ...]
    destination: Destination
    ae_title: str = "FRACSIGHT"
    host: str = "0.0.0.0"
    port: int = 11112
    quiet_time: float = 30.0
    model: str | None = None
    operating_point: str | None = None
    kinds: tuple[str, ...] = NODE_KINDS
    batch_size: int = 8
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    base_delay: float = 1.0
    max_delay: float = 60.0
    give_up_after: int = 10
    keep_files_for: float = 3600.0
    processes: int = 0  # worker processes for reading, predicting, making results (0: the worker thread)
    threads: int = 1  # ONNX Runtime threads: 1 leaves the other core to receiving, results, sending


class SpoolInUseError(RuntimeError):
    """Another node that is running holds the spool: a second one would empty its ``tmp/`` under
    it (files being received) and predict and send its images a second time."""


def _lock_spool(root: Path) -> int | None:
    """Hold ``root/node.lock`` for as long as the node runs (released by the system if it dies)."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        return None
    fd = os.open(root / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolInUseError(f"{root} is in use by another running node") from None
    return fd


def node_running(root: Path) -> bool | None:
    """Whether a node holds the spool at ``root`` now (its ``node.lock`` locked), read from the
    system's table of locks without taking the lock (a node starting that moment would find the
    spool "in use"); None where there is no such table (not Linux). `dicom status` said "ok" of a
    node that had died with 14 images waiting, and "is the destination down?" of its backlog."""
    try:
        meta = os.stat(root / "node.lock")
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        with open("/proc/locks", encoding="ascii") as f:
            table = f.read()
    except OSError:
        return None
    # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234567 0 EOF": the device's major and minor in hex. On
    # an anonymous device (major 0: overlay, btrfs, NFS) by the inode alone, as the table may name
    # another device than stat does there (a node said "not running" while it ran would send its
    # operator to start a second); on a disk, the device too: two spools on volumes made alike
    # have a node.lock of one inode number
    device = f"{os.major(meta.st_dev):02x}:{os.minor(meta.st_dev):02x}"
    for fields in (line.split() for line in table.splitlines()):
        if len(fields) < 6 or fields[1] == "->":  # a waiter's line, not a lock held
            continue
        held_on, _, inode = fields[5].rpartition(":")
        if inode == str(meta.st_ino) and (os.major(meta.st_dev) == 0 or held_on == device):
            return True
    return False


def _study_uid_of(path: Path) -> str | None:
    """The Study Instance UID of a spooled file, or None when it cannot be read (recovery)."""
    import pydicom

    try:
        value = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        return str(value.StudyInstanceUID) or None
    except Exception:  # a torn file from before the crash: never acknowledged, its sender retries
        return None


class Node:
    """A running node; :meth:`start` and :meth:`stop`, or :meth:`serve_forever`."""

    def __init__(self, config: NodeConfig, predictor: Predictor | None = None) -> None:
        self.config = config
        self._predictor = predictor
        self.spool: Spool | None = None
        self.scp: StoreSCP | None = None
        self.worker: Worker | None = None
        self.sender: Sender | None = None
        self.metrics: MetricsServer | None = None
        self._lock: int | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        cfg = self.config
        model = self._predictor or ModelRef.resolve(cfg.model, cfg.operating_point, cfg.threads)
        spool = Spool(cfg.spool)
        try:
            self._lock = _lock_spool(spool.root)
        except SpoolInUseError:
            spool.close()
            raise
        self.spool = spool
        recovered = spool.recover(_study_uid_of)
        backlog = spool.backlog()
        log.info(
            "spool %s: %d instances to predict, %d result objects to send, %d open studies%s",
            spool.root,
            backlog["to_predict"],
            backlog["to_send"],
            backlog["open_studies"],
            f" ({recovered} unacknowledged instances recovered)" if recovered else "",
        )
        self.sender = Sender(
            spool,
            cfg.destination,
            base_delay=cfg.base_delay,
            max_delay=cfg.max_delay,
            give_up_after=cfg.give_up_after,
        )
        self.worker = Worker(
            spool,
            model,
            kinds=cfg.kinds,
            quiet_time=cfg.quiet_time,
            batch_size=cfg.batch_size,
            keep_files_for=cfg.keep_files_for,
            processes=cfg.processes,
            on_results=self.sender.wake.set,
        )
        self.scp = StoreSCP(
            spool,
            ae_title=cfg.ae_title,
            host=cfg.host,
            port=cfg.port,
            allowed=cfg.allowed,
            on_stored=self.worker.wake.set,
        )
        self.worker.start_processes()  # the model is loaded before the listener starts
        # pydicom and pynetdicom are imported here, once, before the threads that use them start:
        # a sender thread with a backlog imports them at the same moment as the listener below,
        # and two threads importing these (circular) packages at once fail with "partially
        # initialized module" (seen on restarts with a full spool)
        import pydicom.filereader  # noqa: F401
        import pynetdicom  # noqa: F401

        self.sender.start()
        self.scp.start()
        # an open study's quiet time starts again now, not at recovery: the modality could not send
        # its other images while the node was down, nor while it loaded the model (seconds, with
        # worker processes on a busy machine); the worker starts after, so that no study whose
        # images are about to come again gets a verdict over part of them
        spool.restart_quiet_time()
        self.worker.start()
        if cfg.metrics_port is not None:  # last: /healthz answering means DICOM is accepted too
            self.metrics = MetricsServer(spool, cfg.metrics_host, cfg.metrics_port)
            self.metrics.start()
        log.info(
            "fracsight node %s ready: model %s, results (%s) to %s, study quiet time %g s",
            cfg.ae_title,
            model.name,
            ", ".join(cfg.kinds),
            cfg.destination.describe(),
            cfg.quiet_time,
        )

    def stop(self) -> None:
        """Stop taking associations, let the worker and the sender finish their batch, close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.scp is not None:
            self.scp.stop()
        for thread in (self.worker, self.sender):
            if thread is not None:
                thread.stop()
        for thread in (self.worker, self.sender):
            if thread is not None and thread.is_alive():
                thread.join(timeout=120)
        if self.worker is not None:
            self.worker.close()
        if self.metrics is not None:
            self.metrics.stop()
        if self.spool is not None:
            backlog = self.spool.backlog()
            self.spool.close()
            log.info(
                "stopped; left in the spool for next start: %d to predict, %d to send",
                backlog["to_predict"],
                backlog["to_send"],
            )
        if self._lock is not None:
            os.close(self._lock)  # releases the spool for the next node
            self._lock = None

    def serve_forever(self) -> None:
        """Start, run until SIGTERM or SIGINT, stop cleanly."""
        stop = threading.Event()
        with signals_handled(lambda *_: stop.set(), (signal.SIGINT, *STOP_SIGNALS)):
            try:
                self.start()
                while not stop.wait(0.5):
                    pass
                log.info("signal received: stopping")
            finally:
                self.stop()
