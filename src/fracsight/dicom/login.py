"""HTTP basic authentication for DICOMweb services (STOW-RS, QIDO-RS, WADO-RS), kept off the
command line: every local user sees a process's command line (``ps``), and shells keep it in
their history, while a process's environment is readable by its own user (and root) only.

The user name comes from ``--dicomweb-user`` or ``FRACSIGHT_DICOMWEB_USER``; the password from
``FRACSIGHT_DICOMWEB_PASSWORD`` or a file (``--dicomweb-password-file``, or
``FRACSIGHT_DICOMWEB_PASSWORD_FILE``: a container's secret); ``http://USER:PASSWORD@host/...``
still works, but is discouraged. A password given more than one way is refused rather than one
of them picked silently. The password is never logged nor shown: a URL is shown as
``http://USER:***@host/...`` whichever way it was given.

>>> url, login = resolve_login(
...     "https://pacs/dicom-web", user="fracsight", password="s3cret", ways=[PASSWORD_ENV]
... )
>>> url, login
('https://pacs/dicom-web', BasicLogin(user='fracsight'))
>>> shown_url(url, login)
'https://fracsight:***@pacs/dicom-web'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "PASSWORD_ENV",
    "PASSWORD_FILE_ENV",
    "USER_ENV",
    "BasicLogin",
    "LoginError",
    "ca_bundle_error",
    "password_from",
    "redacted_url",
    "resolve_login",
    "shown_url",
]

USER_ENV = "FRACSIGHT_DICOMWEB_USER"
PASSWORD_ENV = "FRACSIGHT_DICOMWEB_PASSWORD"
PASSWORD_FILE_ENV = "FRACSIGHT_DICOMWEB_PASSWORD_FILE"


class LoginError(ValueError):
    """The credentials are given wrongly (twice, half, an unreadable file); never quotes a password."""


#: The variables requests takes its certificate authorities from, the first one set winning.
CA_BUNDLE_ENVS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def ca_bundle_error(environ: Mapping[str, str]) -> str | None:
    """Why the certificate authorities requests would use for an ``https://`` service cannot be
    used (None: they can): a ``REQUESTS_CA_BUNDLE`` that is missing, unreadable or holds no PEM
    certificate. requests finds out only when it connects, with an ``OSError`` that the node's
    sender took for an unexpected failure, retried every second for ever."""
    import ssl

    name = next((n for n in CA_BUNDLE_ENVS if environ.get(n)), None)
    if name is None:
        return None
    path = Path(environ[name])
    if path.is_dir():  # a folder of hashed certificates (c_rehash), as requests allows
        return None
    if not path.exists():
        return f"{name}={path}: no such file (give the PEM file of the hospital's certificate authority)"
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError:
        return f"{name}={path}: holds no certificate in PEM form (-----BEGIN CERTIFICATE-----)"
    except OSError as e:
        return f"{name}={path}: {e.strerror or type(e).__name__}"
    return None


@dataclass(frozen=True)
class BasicLogin:
    """A user name and password for HTTP basic authentication (the password not in its repr)."""

    user: str
    password: str = field(repr=False)

    def auth(self) -> Any:
        """For requests; in UTF-8 (RFC 7617), where requests would encode a str as Latin-1."""
        from requests.auth import HTTPBasicAuth

        return HTTPBasicAuth(self.user.encode(), self.password.encode())


def read_password_file(path: Path) -> str:
    """The password in ``path``: its first line, without the line end an editor or ``echo`` adds."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a BOM from Windows editors
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else "not readable as UTF-8 text"
        raise LoginError(f"the DICOMweb password file {path}: {why}") from None
    lines = text.splitlines()
    if len(lines) > 1 and any(line for line in lines[1:]):
        raise LoginError(
            f"the DICOMweb password file {path} holds more than one line: give the password only"
        )
    if not lines or not lines[0]:
        raise LoginError(f"the DICOMweb password file {path} is empty")
    return lines[0]


def password_from(environ: Mapping[str, str], password_file: Path | None) -> tuple[str | None, list[str]]:
    """The password given outside the URL, and the names of the ways it was given (for the
    message when there are several): ``FRACSIGHT_DICOMWEB_PASSWORD``, the password file.
    A variable set to nothing is not given (compose writes ``${VAR:-}`` so). One line end at the
    end of the variable is not part of the password, as in the file: a secret written with
    ``echo pw > file`` and passed on as the variable kept it, and the service refused every login."""
    given = []
    password = environ.get(PASSWORD_ENV, "").removesuffix("\n").removesuffix("\r") or None
    if password is not None:
        given.append(PASSWORD_ENV)
    if password_file is not None:
        given.append(f"a password file (--dicomweb-password-file or {PASSWORD_FILE_ENV})")
        password = read_password_file(password_file)
    return password, given


def _split(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its ``user:password@``, and the two (percent-decoded, as requests does)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.netloc.rpartition("@")[2]
    plain = urlunsplit(parts._replace(netloc=host))
    password = None if parts.password is None else unquote(parts.password)
    return plain, unquote(parts.username or ""), password


def resolve_login(
    url: str, *, user: str | None = None, password: str | None = None, ways: Sequence[str] = ()
) -> tuple[str, BasicLogin | None]:
    """``url`` without credentials, and the login for it (None: no authentication), from the
    credentials in ``url`` and those given outside it: ``user``, and ``password`` with ``ways``,
    the ways it was given (:func:`password_from`). Raises :class:`LoginError` for a password
    given more than one way, a user name given twice differently, or half a login."""
    plain, url_user, url_password = _split(url)
    ways = ["the URL", *ways] if url_password is not None else list(ways)
    if len(ways) > 1:
        raise LoginError(
            f"the DICOMweb password is given {len(ways)} ways ({', '.join(ways)}): give it one way"
        )
    if url_user and user and url_user != user:
        raise LoginError(
            f"the DICOMweb user name is given twice, differently (the URL and --dicomweb-user or {USER_ENV})"
        )
    name = url_user or user or None
    secret = url_password if url_password is not None else password
    if name is None and secret is None:
        return plain, None
    if secret is None:
        raise LoginError(
            f"a DICOMweb user name without a password: give {PASSWORD_ENV} or --dicomweb-password-file"
        )
    if name is None:
        raise LoginError(f"a DICOMweb password without a user name: give --dicomweb-user or {USER_ENV}")
    if ":" in name:
        raise LoginError("the DICOMweb user name holds ':', which HTTP basic authentication cannot carry")
    return plain, BasicLogin(name, secret)


def shown_url(url: str, login: BasicLogin | None) -> str:
    """``url`` as logs and messages show it: with ``USER:***@`` when it is reached with a login."""
    if login is None:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{login.user}:***@{parts.netloc}"))


def redacted_url(url: str) -> str:
    """``url`` with the password of ``http://user:password@host/...``, any ``;parameters``, query
    and fragment shown as ``***`` (a URL as the user typed it, before :func:`resolve_login` takes
    the login out of it; a token may ride in any of these)."""
    parts = urlsplit(url)
    path, semicolon, _ = parts.path.partition(";")
    parts = parts._replace(
        path=path + ("***" if semicolon else ""),
        query="***" if parts.query else "",
        fragment="***" if parts.fragment else "",
    )
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username}:***@{host}")
    return urlunsplit(parts)
