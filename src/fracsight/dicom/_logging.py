"""Logging a failure without leaking a header value: the exception's type, never its message.

A message from pydicom or highdicom can quote a value it choked on, and that value can be a
patient's name. The traceback (with messages) is added only when the logger is at DEBUG, for
someone debugging on a test system.
"""

from __future__ import annotations

import logging

__all__ = ["log_failure"]


def log_failure(logger: logging.Logger, error: BaseException, message: str, *args: object) -> None:
    """``logger.error(message + ": ExceptionType", *args)``; with the traceback at DEBUG only."""
    logger.error(f"{message}: %s", *args, type(error).__name__, exc_info=logger.isEnabledFor(logging.DEBUG))
