"""How messages name a file of secrets (API tokens, a DICOMweb password or token)."""

from __future__ import annotations

import os

__all__ = ["shown_secret_path"]


def shown_secret_path(path: str | os.PathLike[str]) -> str:
    """``path`` as an error message may quote it. The value of a ``..._FILE`` setting that names
    nothing on disk, not even its first folder, is most likely the secret itself given in the
    wrong setting (``FRACSIGHT_API_TOKENS_FILE=<token>``; base64 tokens hold ``/``): quoted, it
    went to the container's log. ``/run/secrets/missing`` is still named."""
    text = os.fspath(path)
    absolute = os.path.isabs(text)
    first = text.lstrip(os.sep).split(os.sep, 1)[0]
    top = os.path.join(os.sep, first) if absolute else first
    if os.path.lexists(text) or (first and os.path.lexists(top)):
        return text
    where = "" if absolute else f", relative to {os.getcwd()}"
    return f"(its value is not shown: nothing of it is on disk{where}; the secret itself?)"
