"""Logins for DICOMweb services (STOW-RS, QIDO-RS, WADO-RS), kept off the command line: every
local user sees a process's command line (``ps``), and shells keep it in their history, while a
process's environment is readable by its own user (and root) only.

HTTP basic authentication (a PACS's own users), or an OAuth 2.0 bearer token (RFC 6750: cloud
DICOM stores and PACS behind an authorizing proxy) from ``FRACSIGHT_DICOMWEB_TOKEN`` or a file
(``--dicomweb-token-file``, ``FRACSIGHT_DICOMWEB_TOKEN_FILE``). Such tokens last an hour or so:
the file is read again for every connection, so that a token another process renews in it is
used without a restart.

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

import errno
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from fracsight._secrets import shown_secret_path

__all__ = [
    "PASSWORD_ENV",
    "PASSWORD_FILE_ENV",
    "USER_ENV",
    "BasicLogin",
    "BearerToken",
    "Login",
    "LoginError",
    "ca_bundle_error",
    "password_from",
    "redacted_url",
    "resolve_login",
    "shown_url",
    "token_from",
]

USER_ENV = "FRACSIGHT_DICOMWEB_USER"
PASSWORD_ENV = "FRACSIGHT_DICOMWEB_PASSWORD"
PASSWORD_FILE_ENV = "FRACSIGHT_DICOMWEB_PASSWORD_FILE"
TOKEN_ENV = "FRACSIGHT_DICOMWEB_TOKEN"
TOKEN_FILE_ENV = "FRACSIGHT_DICOMWEB_TOKEN_FILE"


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


# RFC 6750's b64token: anything else (a space, a line end, a quote) cannot be sent in the header
_TOKEN_SYNTAX = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@dataclass(frozen=True)
class BearerToken:
    """An OAuth 2.0 bearer token (RFC 6750), given as is (``token``) or as a file to read again for
    every connection (``file``); the token is never in its repr."""

    token: str | None = field(default=None, repr=False)
    file: Path | None = None

    def current(self) -> str:
        """The token to send now (read from the file, when given as one)."""
        return _checked_token(read_secret_file(self.file, "token")) if self.file else str(self.token)

    def auth(self) -> Any:
        """For requests: an ``Authorization: Bearer`` header on every request of the session."""
        from requests.auth import AuthBase

        header = f"Bearer {self.current()}"

        class _Bearer(AuthBase):
            def __call__(self, request: Any) -> Any:
                request.headers["Authorization"] = header
                return request

        return _Bearer()


#: How a DICOMweb service is logged in to (None: it is not).
Login = BasicLogin | BearerToken


_SECRET_FILE_MAX = 64 * 1024  # a password or token is far shorter; /dev/zero given by mistake is not


def read_secret_file(path: Path, what: str = "password") -> str:
    """The ``what`` (password, token) in ``path``: its first line, without the line end an editor or
    ``echo`` adds."""
    try:
        with open(path, "rb") as f:
            data = f.read(_SECRET_FILE_MAX + 1)
        if len(data) > _SECRET_FILE_MAX:
            raise LoginError(f"the DICOMweb {what} file {path} is larger than 64 KiB: give the {what} only")
        text = data.decode("utf-8-sig")  # -sig: a BOM from Windows editors
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else "not readable as UTF-8 text"
        if isinstance(e, OSError) and e.errno == errno.EACCES and hasattr(os, "getuid"):
            # a container secret keeps the host's owner and mode (600, the admin's): say whose it must be
            uid = os.getuid()
            why += f": fracsight runs as uid {uid}, which must be able to read it (chown it to that uid)"
        raise LoginError(f"the DICOMweb {what} file {shown_secret_path(path)}: {why}") from None
    lines = text.splitlines()
    if len(lines) > 1 and any(line for line in lines[1:]):
        raise LoginError(f"the DICOMweb {what} file {path} holds more than one line: give the {what} only")
    if not lines or not lines[0]:
        raise LoginError(f"the DICOMweb {what} file {path} is empty")
    return lines[0]


def _checked_token(token: str) -> str:
    if not _TOKEN_SYNTAX.fullmatch(token):  # the token itself is not quoted: it is a secret
        raise LoginError(
            "the DICOMweb token holds characters a bearer token cannot have (a space, a quote, "
            "a line inside it?): give the token alone, without 'Bearer '"
        )
    return token


def token_from(environ: Mapping[str, str], token_file: Path | None) -> BearerToken | None:
    """The bearer token given in ``FRACSIGHT_DICOMWEB_TOKEN`` or ``token_file`` (None: neither),
    checked now. A regular file is read again for each connection; a pipe (``<(command)``,
    ``/dev/stdin``) can be read once only, and its token is kept. One line end at the end of the
    variable is not part of it, as for the password. Unlike the password's, the variable set to
    nothing is refused: it is what ``FRACSIGHT_DICOMWEB_TOKEN="$(command)"`` gives when the
    command that prints the token fails, and the service would be asked without a login."""
    token = environ.get(TOKEN_ENV)
    if token is not None:
        token = token.removesuffix("\n").removesuffix("\r")
        if not token:
            raise LoginError(f"{TOKEN_ENV} is set but empty (did the command that made the token fail?)")
    if token is not None and token_file is not None:
        raise LoginError(
            f"the DICOMweb token is given 2 ways ({TOKEN_ENV}, a token file "
            f"(--dicomweb-token-file or {TOKEN_FILE_ENV})): give it one way"
        )
    if token_file is not None:
        once = BearerToken(file=token_file).current()
        # os.path.isfile follows links: /dev/stdin (a link to a pipe) is no regular file
        return BearerToken(file=token_file) if os.path.isfile(token_file) else BearerToken(once)
    return None if token is None else BearerToken(_checked_token(token))


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
        password = read_secret_file(password_file)
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
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    ways: Sequence[str] = (),
    token: BearerToken | None = None,
) -> tuple[str, Login | None]:
    """``url`` without credentials, and the login for it (None: no authentication), from the
    credentials in ``url`` and those given outside it: ``user``, and ``password`` with ``ways``,
    the ways it was given (:func:`password_from`), or a bearer ``token`` (:func:`token_from`).
    Raises :class:`LoginError` for a password given more than one way, a user name given twice
    differently, half a login, or a token with a user name or password."""
    plain, url_user, url_password = _split(url)
    if token is not None:
        if url_user or url_password is not None or user or ways:
            raise LoginError(
                "a DICOMweb bearer token and a user name or password are both given: give one of them"
            )
        return plain, token
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


def shown_url(url: str, login: Login | None) -> str:
    """``url`` as logs and messages show it: with ``USER:***@`` when it is reached with a user
    name and password (a bearer token is not shown at all)."""
    if not isinstance(login, BasicLogin):
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{login.user}:***@{parts.netloc}"))


def redacted_url(url: str) -> str:
    """``url`` with the password of ``http://user:password@host/...``, any ``;parameters``, query
    and fragment shown as ``***`` (a URL as the user typed it, before :func:`resolve_login` takes
    the login out of it; a token may ride in any of these)."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest and "@" not in urlsplit(url).netloc:
        # a password holding "/", "?" or "#", not percent-encoded, ends the host there: all of it
        # up to the last "@" is hidden, else the password was shown as the URL's path
        after = redacted_url(f"{scheme}://{rest.rpartition('@')[2]}").partition("://")[2]
        return f"{scheme}://***@{after}"
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
