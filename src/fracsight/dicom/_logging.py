"""Logging without leaking a header value.

A message from pydicom or highdicom can quote a value it choked on, and that value can be a
patient's name: failures are logged by the exception's type, never its message (the traceback,
with messages, only when the logger is at DEBUG, for someone debugging on a test system), and
the DICOM libraries' own logs and warnings are kept quiet, in the node and in its worker processes.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["log_failure", "setup_logging"]

# pydicom only at CRITICAL: it logs a decoder's failure at ERROR with its traceback and the
# decoder's own text; fracsight reports the refusal itself (reader error code, by spool key)
_LIBRARY_LEVELS = {
    "pynetdicom": logging.ERROR,
    "pydicom": logging.CRITICAL,
    "highdicom": logging.ERROR,
    "dicomweb_client": logging.ERROR,
}


class _OutageAsWarning(logging.Filter):
    """pynetdicom's ERROR lines for a destination that cannot be reached, or that takes the
    connection and never answers, which the sender retries with back-off and reports itself: the
    reason (``Connection refused``, a timeout) kept as a WARNING, a repeating second line dropped.
    An expected outage of the PACS logged ERROR on every try, which a monitoring system watching
    for ERROR takes for a fault of the node."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Association request failed: unable to connect to remote"):
            return False
        if message.startswith(_OUTAGE_MESSAGES):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_OUTAGE_MESSAGES = (
    "TCP Initialisation Error",  # pynetdicom.transport: refused, unreachable
    "DIMSE timeout reached",  # pynetdicom.association: a destination that never answers
    "Network timeout reached",
    "ACSE timeout reached",
    # pynetdicom.acse: the destination refused the association: three ERROR lines before the
    # sender's own warning that it waits. "Result: Rejected Permanent" (a called AE title it does
    # not know: a setting to fix, which no wait mends) stays an ERROR; a transient one (too busy)
    # is an outage
    "Association Rejected",
    "Result: Rejected Transient",
    "Reason: ",
)


_OUTAGE_FILTER = _OutageAsWarning()


class _OneLine(logging.Filter):
    """pynetdicom's records made one line of printable ASCII, without a traceback below DEBUG: an
    association request with a newline or a raw byte in its AE title (from anyone who reaches the
    port, before the allowed AE titles are checked) wrote a line of the caller's choosing into the
    node's log, under 20-line tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.isascii() or not message.isprintable():
            message = message.encode("unicode_escape").decode("ascii")
        record.msg, record.args = message, None
        if record.exc_info and not logging.getLogger("fracsight").isEnabledFor(logging.DEBUG):
            record.exc_info = record.exc_text = None
        return True


_ONE_LINE = _OneLine()


def setup_logging(level: str | int) -> None:
    """fracsight's own loggers at ``level``, in one format; the DICOM libraries only at ERROR (or
    above) and their Python warnings ignored: at INFO highdicom names the source's SOP Instance UID,
    pynetdicom logs request parameters, and pydicom's warnings about invalid values quote the
    value. fracsight's messages name instances by spool key only."""
    import pydicom  # noqa: F401  (its import sets its logger to WARNING: first, so that ours holds)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fracsight").setLevel(level.upper() if isinstance(level, str) else level)
    for library, library_level in _LIBRARY_LEVELS.items():
        logging.getLogger(library).setLevel(library_level)
        warnings.filterwarnings("ignore", module=rf"{library}(\..*)?$")
    import pynetdicom  # noqa: F401  (its modules, imported with it, make their loggers)

    # a filter acts on its own logger's records only: on each of pynetdicom's (getLogger(__name__))
    names = [n for n in logging.root.manager.loggerDict if n == "pynetdicom" or n.startswith("pynetdicom.")]
    for name in names:
        logger = logging.getLogger(name)
        if _ONE_LINE not in logger.filters:
            logger.addFilter(_ONE_LINE)
    for name in ("pynetdicom.transport", "pynetdicom.association", "pynetdicom.acse"):
        logger = logging.getLogger(name)
        if _OUTAGE_FILTER not in logger.filters:
            logger.addFilter(_OUTAGE_FILTER)


def log_failure(logger: logging.Logger, error: BaseException, message: str, *args: object) -> None:
    """``logger.error(message + ": ExceptionType", *args)``; with the traceback at DEBUG only."""
    logger.error(f"{message}: %s", *args, type(error).__name__, exc_info=logger.isEnabledFor(logging.DEBUG))
