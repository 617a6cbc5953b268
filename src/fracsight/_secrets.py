"""How messages name a file of secrets (API tokens, a DICOMweb password or token)."""

from __future__ import annotations

import os

__all__ = ["shown_secret_path"]


def shown_secret_path(path: str | os.PathLike[str]) -> str:
    """``path`` as an error message may quote it. The value of a ``..._FILE`` setting that names no
    file and holds no folder separator is most likely the secret itself, given in the wrong
    setting (``FRACSIGHT_API_TOKENS_FILE=<token>``): quoted, it went to the container's log."""
    text = os.fspath(path)
    if "/" in text or os.sep in text or os.path.lexists(text):
        return text
    return "(its value is not shown: no folder in it and no such file; the secret itself?)"
