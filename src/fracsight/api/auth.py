"""Bearer-token authentication for the REST API once it leaves loopback.

Tokens come from ``FRACSIGHT_API_TOKENS`` (comma-separated) and/or ``FRACSIGHT_API_TOKENS_FILE``
(one per line, ``#`` comments). Either may hold a token itself or its digest ``sha256:<64 hex>``,
so that a tokens file need not hold the secrets. Only digests are kept in memory; a presented
token is hashed and compared with every digest in constant time (:func:`hmac.compare_digest`).

``FRACSIGHT_AUTH`` says what happens without tokens:

- ``optional`` (default, ``fracsight serve`` on this computer): tokens are checked when there
  are any; with none the API answers this computer only (:class:`LoopbackOnlyMiddleware`);
- ``required`` (the container image): the server refuses to start without a token;
- ``proxy``: an authenticating reverse proxy in front of the API does it; with no tokens the API
  is open behind it (tokens, when given, are still checked);
- ``open``: no authentication wherever ``fracsight serve`` listens (a closed network); with
  ``optional`` it refuses to listen beyond loopback without a token (:func:`is_loopback`).

``/healthz`` is always open (load balancers and container health checks call it).

>>> guard = TokenGuard(parse_tokens([token_digest("correct-horse-battery-staple")], "example"))
>>> guard.allows("correct-horse-battery-staple"), guard.allows("guess")
(True, False)
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Receive, Scope, Send

from fracsight._secrets import shown_secret_path
from fracsight.api.errors import error_response
from fracsight.errors import ConfigError

__all__ = [
    "INVALID_TOKEN",
    "LOOPBACK_ONLY",
    "MIN_TOKEN_LENGTH",
    "MISSING_TOKEN",
    "OPEN_PATHS",
    "BearerAuthMiddleware",
    "LoopbackOnlyMiddleware",
    "TokenGuard",
    "digests_setting",
    "is_loopback",
    "parse_tokens",
    "route_path",
    "token_digest",
    "token_guard",
]

MISSING_TOKEN = "missing_token"  # 401: no Authorization: Bearer header
INVALID_TOKEN = "invalid_token"  # 401: a token that matches none of the server's
LOOPBACK_ONLY = "loopback_only"  # 403: no tokens, and the request came in beyond loopback
OPEN_PATHS = frozenset({"/healthz"})
MIN_TOKEN_LENGTH = 16
_DIGEST = re.compile(r"^sha256:([0-9a-fA-F]{64})$", re.IGNORECASE)  # SHA256:<HEX> too
_BARE_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")  # a hex token (openssl rand -hex 32), or sha256sum's digest
# Digests and password hashes in other forms. Taken as tokens, their text became a working token and
# the real one got 401. No token generator makes them: `:`, `{`, `$` and spaces are in none of
# token_urlsafe's, token_hex's or base64's alphabets, and `=` only ends base64.
_HASH_NAME = (
    r"sha-?(?:1|224|256|384|512)(?:[/_-](?:224|256))?|sha3[_-]?(?:224|256|384|512)|md[45]|blake[23][bs]?"
)
_OTHER_DIGEST = re.compile(rf"^({_HASH_NAME})[:=]", re.IGNORECASE)  # sha512:<hex>, SHA-256=<base64>
# Subresource Integrity's form: sha384-<base64 of the digest>, as browsers and npm write them
_SRI_DIGEST = re.compile(r"^(sha256|sha384|sha512)-[A-Za-z0-9+/]{43,86}={0,2}$", re.IGNORECASE)
_OPENSSL_DGST = re.compile(r"^([A-Za-z0-9-]+)\([^)]*\)= ?[0-9a-fA-F]+$")  # `SHA2-256(stdin)= <hex>`
_HTPASSWD_USER = r"(?:([^:\s]+):)?"  # an htpasswd line: user:<hash>
# the schemes' own names only: a password manager's token may well begin with `{` or `$`
_LDAP_SCHEMES = r"S?(?:SHA|SHA256|SHA384|SHA512|MD5)|CRYPT|BCRYPT|ARGON2|PBKDF2(?:-SHA\d+)?"
_LDAP_DIGEST = re.compile(rf"^{_HTPASSWD_USER}\{{({_LDAP_SCHEMES})\}}", re.IGNORECASE)  # {SHA256}<base64>
_CRYPT_HASH = re.compile(rf"^{_HTPASSWD_USER}\$(2[abxy]|argon2(?:i|d|id)|apr1|[156y])\$")  # $2y$, $apr1$, $6$
_HEXSUM_LINE = re.compile(r"^([0-9a-fA-F]+)\s+\*?\S+$")  # sha256sum's `<hex>  -` or `<hex> *file`
_HEXSUM_NAMES = {32: "md5sum", 40: "sha1sum"} | {bits // 4: f"sha{bits}sum" for bits in (224, 256, 384, 512)}
_CRYPT_NAMES = {
    **dict.fromkeys(("2a", "2b", "2x", "2y"), "bcrypt"),
    **dict.fromkeys(("argon2i", "argon2d", "argon2id"), "Argon2"),
    "apr1": "Apache apr1-MD5",
    "1": "MD5-crypt",
    "5": "SHA-256-crypt",
    "6": "SHA-512-crypt",
    "y": "yescrypt",
}
_MAKE_DIGEST = (
    'python3 -c "import hashlib,sys; '
    "print('sha256:' + hashlib.sha256(sys.argv[1].encode()).hexdigest())\" TOKEN"
)
# A byte order mark says how a tokens file is encoded (Windows PowerShell 5.1's `>` and Out-File
# write UTF-16 LE with one); UTF-32's marks begin with UTF-16's, so they are looked for first.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# what a client can send after `Bearer ` (HTTP header values are bytes; non-ASCII never arrives intact)
_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")
logger = logging.getLogger("fracsight.api")


def is_loopback(host: str) -> bool:
    """Whether only this computer reaches ``host`` (``localhost``, 127.0.0.0/8, ::1); a host name
    other than ``localhost`` counts as reachable from elsewhere."""
    if host.strip().lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, a dual-stack socket's
    return (mapped or address).is_loopback


def token_digest(token: str) -> str:
    """The ``sha256:<hex>`` form of a token, as a tokens file may hold it."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def digests_setting(digests: Iterable[bytes]) -> str:
    """Digests as ``FRACSIGHT_API_TOKENS`` holds them once read (``sha256:<hex>,...``, sorted)."""
    return ",".join(sorted("sha256:" + d.hex() for d in digests))


def _digest_bytes(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_tokens(entries: Iterable[str], where: str, *, comments: bool = True) -> set[bytes]:
    """Digests of the given tokens or ``sha256:`` digests; blank entries skipped, and ``#`` comments
    with ``comments`` (a tokens file's lines). Without (a variable's comma-separated entries), an
    entry beginning with ``#`` is refused: such a token was dropped as a comment without a word, and
    its clients got 401. No token may begin with ``#``, so that a file and the variable agree.

    Raises :class:`~fracsight.errors.ConfigError` on a malformed digest or one in another form
    (``sha512:``, ``{SHA256}``, ``$2y$``: its text would be taken as the token), or a token shorter
    than :data:`MIN_TOKEN_LENGTH` or holding characters no client can send (never quoting it).
    Logs a warning for 64 hex digits without ``sha256:``: a token (``openssl rand -hex 32``), used
    as one, but it may be a digest someone meant.
    """
    digests: set[bytes] = set()
    for n, raw in enumerate(entries, start=1):
        entry = raw.strip() if n > 1 else _without_bom(raw.strip(), f"{where}, entry 1").strip()
        if entry.startswith("#") and not comments:
            raise ConfigError(
                f"{where}, entry {n}: begins with '#', which no token may (it marks a comment in a "
                "tokens file; in the variable only a whole line of several can be one): give the token "
                "without it"
            )
        if entry and not entry.startswith("#"):
            digests.add(_entry_digest(entry, f"{where}, entry {n}"))
    return digests


def in_quotes(value: str) -> bool:
    """Whether ``value`` is wrapped in one pair of quotes (``docker run --env-file`` keeps them)."""
    return len(value) > 1 and value[0] == value[-1] and value[0] in "'\""


def quoted_setting(variable: str, shown: str = "") -> ConfigError:
    """The error of a setting given in quotes (``shown``: its value, where it is no secret)."""
    return ConfigError(
        f"{variable} is in quotes{shown}: `docker run --env-file` keeps them as part of the value; "
        "write it without quotes"
    )


def parse_tokens_variable(value: str) -> set[bytes]:
    """The digests of ``FRACSIGHT_API_TOKENS``: entries separated by commas, or by line ends too, as
    a tokens file set into it holds them (``"$(cat api_tokens)"``, a Kubernetes secret of the file),
    whose ``#`` comment lines are then skipped: two valid lines were refused as one malformed entry."""
    # the line ends a tokens file has (str.splitlines also splits at \x1c-\x1e, which no token holds),
    # past a Windows editor's byte order mark before a first comment line
    # "tokA,tokB" (`docker run --env-file` keeps the quotes) was two tokens no client has; after the
    # byte order mark of "$(cat tokens)" of a file a Windows editor saved, too
    if in_quotes(value.removeprefix("\ufeff").strip()):
        raise quoted_setting("FRACSIGHT_API_TOKENS")
    lines = re.split(r"\r\n|\r|\n", value.removeprefix("\ufeff"))
    if sum(1 for line in lines if line.strip()) > 1:
        lines = [line for line in lines if not line.strip().startswith("#")]
    entries = [entry for line in lines for entry in line.split(",")]
    return parse_tokens(entries, "FRACSIGHT_API_TOKENS", comments=False)


def _without_bom(entry: str, where: str) -> str:
    """The first entry without the UTF-8 byte order mark that a value read from a Windows editor's
    file begins with (a tokens file's own is dropped as it is decoded); a UTF-16 one is refused."""
    if entry.startswith(("\udcff\udcfe", "\udcfe\udcff")):  # bytes FF FE / FE FF, as os.environ decodes them
        raise ConfigError(
            f'{where}: begins with a UTF-16 byte order mark: it was read from a UTF-16 ("Unicode") '
            "file; save that as UTF-8 or ASCII"
        )
    return entry.removeprefix("\ufeff")


def _entry_digest(entry: str, where: str) -> bytes:
    if in_quotes(entry):
        raise ConfigError(f"{where}: a token in quotes: the quotes would be part of it; write it without")
    match = _DIGEST.match(entry)
    if match:
        return bytes.fromhex(match.group(1))
    if entry.lower().startswith("sha256:"):
        comment = " (a `#` comment takes a line of its own)" if "#" in entry or " " in entry else ""
        raise ConfigError(f"{where}: a sha256: digest needs exactly 64 hex digits{comment}")
    other = _other_digest(entry)
    if other:
        raise ConfigError(
            f"{where}: looks like {other}; only sha256:<64 hex digits> digests are supported, made "
            f"from the token itself: `{_MAKE_DIGEST}`"
        )
    if not _TOKEN_CHARS.match(entry):  # e.g. a comment after the token: it would never match
        raise ConfigError(
            f"{where}: a token may hold only printable ASCII characters and no spaces "
            "(a `#` comment takes a line of its own)"
        )
    if len(entry) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{where}: tokens must have at least {MIN_TOKEN_LENGTH} characters "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    if _BARE_SHA256.match(entry):  # documented as a token; refusing it would refuse hex tokens
        logger.warning(
            "%s: 64 hex digits, used as the token itself (as `openssl rand -hex 32` makes one); if it "
            "is a token's sha256 digest, write sha256: before it, or its clients get 401",
            where,
        )
    return _digest_bytes(entry)


def _other_digest(entry: str) -> str | None:
    """What ``entry`` looks like when it is a digest or password hash in another form than
    ``sha256:<hex>``; None when it may be a token."""
    if match := _OTHER_DIGEST.match(entry) or _SRI_DIGEST.match(entry):
        return f"a {match.group(1).lower()} digest"
    if match := _OPENSSL_DGST.match(entry):
        return f"openssl dgst output (a {match.group(1)} digest)"
    if (match := _HEXSUM_LINE.match(entry)) and len(match.group(1)) in _HEXSUM_NAMES:
        return f"{_HEXSUM_NAMES[len(match.group(1))]} output (a digest and a file name)"
    if match := _LDAP_DIGEST.match(entry):
        kind = f"an LDAP-style {{{match.group(2).upper()}}} digest"
    elif match := _CRYPT_HASH.match(entry):
        scheme = match.group(2)
        kind = f"a password hash ({_CRYPT_NAMES[scheme]})"
    else:
        return None
    return f"an htpasswd line (a user and {kind})" if match.group(1) else kind


class TokenGuard:
    """The set of accepted token digests; ``allows`` costs the same whichever digest matches."""

    def __init__(self, digests: Iterable[bytes]) -> None:
        self._digests = tuple(digests)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def as_setting(self) -> str:
        """The digests as ``FRACSIGHT_API_TOKENS`` holds them (:func:`digests_setting`)."""
        return digests_setting(self._digests)

    def allows(self, token: str) -> bool:
        presented = _digest_bytes(token)
        found = False
        for digest in self._digests:  # no early exit: the time does not tell which one matched
            found |= hmac.compare_digest(presented, digest)
        return found


def token_guard(auth: str, tokens: str | None, tokens_file: str | None) -> TokenGuard:
    """The tokens of these settings (see the module docstring), checked against ``auth``.

    Raises :class:`~fracsight.errors.ConfigError` when the file cannot be read, an entry is not a
    valid token, or ``auth`` is ``required`` and there is no token.
    """
    digests: set[bytes] = set()
    if tokens:
        digests |= parse_tokens_variable(tokens)
    if tokens_file:
        path = Path(tokens_file)
        lines = _tokens_file_lines(path)
        found = parse_tokens(lines, f"FRACSIGHT_API_TOKENS_FILE {path}")
        if not found:
            raise ConfigError(f"FRACSIGHT_API_TOKENS_FILE {path} holds no token")
        _warn_if_others_read(path, lines)
        digests |= found
    if auth == "required" and not digests:
        raise ConfigError(
            "FRACSIGHT_AUTH=required but no API token is set: give FRACSIGHT_API_TOKENS or "
            "FRACSIGHT_API_TOKENS_FILE, or set FRACSIGHT_AUTH=proxy when an authenticating reverse "
            "proxy is in front of the API (docs/deploy.md)"
        )
    return TokenGuard(digests)


_TOKENS_FILE_MAX = 1024 * 1024


def _tokens_file_lines(path: Path) -> list[str]:
    """The file's lines, decoded as its byte order mark says, or as UTF-8 without one.

    Raises :class:`~fracsight.errors.ConfigError` when it cannot be read, or decoded: UTF-16
    without a mark was "cannot read it (UnicodeDecodeError)" or a token of unsendable characters.
    """
    where = f"FRACSIGHT_API_TOKENS_FILE {shown_secret_path(path)}"
    try:
        with open(path, "rb") as f:
            data = f.read(_TOKENS_FILE_MAX + 1)
    except OSError as e:
        why = e.strerror or type(e).__name__
        if e.errno == errno.EACCES and hasattr(os, "getuid"):  # a compose secret keeps the host's mode
            try:
                path.stat()
                fix = (
                    "a file of sha256: digests only may be readable by all (chmod 644), one of tokens "
                    "must be owned by that uid"
                )
            except OSError:  # the file's own mode is not the problem: a folder above it is
                fix = "a folder on the file's way cannot be entered by that uid"
            why += f": the server runs as uid {os.getuid()}; {fix}"
        raise ConfigError(f"{where}: cannot read it ({why})") from None
    if len(data) > _TOKENS_FILE_MAX:  # /dev/zero, a log file: it filled the memory, then a traceback
        raise ConfigError(f"{where}: larger than 1 MiB; a tokens file holds one short line per token")
    encoding = next((codec for bom, codec in _BOMS if data.startswith(bom)), "utf-8")
    if encoding == "utf-8" and _looks_like_utf16(data):
        raise ConfigError(
            f'{where}: looks like UTF-16 ("Unicode") without a byte order mark: save it as UTF-8 or ASCII'
        )
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        name = encoding.upper().removesuffix("-SIG")
        raise ConfigError(f"{where}: not {name} text (byte {e.start}): save it as UTF-8 or ASCII") from None
    # lines end at \r\n, \n or \r only (splitlines also ends them at \v, \x1c-\x1e, U+0085 ...,
    # which split a token and misreported it as short)
    return re.split(r"\r\n|\r|\n", text)


def _looks_like_utf16(data: bytes) -> bool:
    """NUL in at least half of the even or of the odd bytes: the other half of each ASCII character
    in UTF-16 (a stray NUL in a token is refused with the token's other unsendable characters)."""
    return b"\0" in data and max(data[0::2].count(0), data[1::2].count(0)) * 4 >= len(data)


def _warn_if_others_read(path: Path, lines: list[str]) -> None:
    """Warn (as ssh does of a private key) when a tokens file holding tokens themselves, not only
    their ``sha256:`` digests, may be read by other users of the machine."""
    plain = any((e := line.strip()) and not e.startswith("#") and not _DIGEST.match(e) for line in lines)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if plain and os.name == "posix" and mode & 0o077:
        logger.warning(
            "FRACSIGHT_API_TOKENS_FILE %s holds tokens and is readable by other users (mode %03o): "
            "keep only their sha256: digests in it, or chmod 600 it (owned by the server's user)",
            path,
            mode,
        )


def route_path(scope: Scope) -> str:
    """The request's path inside the API, without the ``root_path`` a reverse proxy mounts it at:
    uvicorn's ``--root-path`` and ``FRACSIGHT_ROOT_PATH`` put that prefix into ``path`` as well."""
    path, root = str(scope.get("path", "")), str(scope.get("root_path", "")).rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :] or "/"
    return path


def _authorization_headers(scope: Scope) -> list[str]:
    return [value.decode("latin-1") for name, value in scope.get("headers", ()) if name == b"authorization"]


def _bearer(value: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value; None for another scheme or none."""
    parts = value.split(None, 1)  # any whitespace after the scheme, as lenient clients send it
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1].strip()
    return None


def _refusal(headers: list[str], guard: TokenGuard) -> tuple[str, str] | None:
    """(code, message) of the 401 to answer; None when the request carries an accepted token."""
    if len(headers) > 1:  # proxies and servers disagree on which one counts: accept neither
        return INVALID_TOKEN, "send one Authorization header, not several"
    token = _bearer(headers[0]) if headers else None
    if token is None:
        return MISSING_TOKEN, "this API needs a bearer token (Authorization: Bearer <token>)"
    if not guard.allows(token):
        return INVALID_TOKEN, "the bearer token is not valid"
    return None


class BearerAuthMiddleware:
    """Answers 401 JSON (the API's error shape) before the request reaches a route (so an
    unauthenticated upload is never read) unless it carries an accepted bearer token."""

    def __init__(self, app: ASGIApp, guard: TokenGuard, on_refusal=None) -> None:
        self.app = app
        self.guard = guard
        self.on_refusal = on_refusal  # called with the error code (metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        refusal = _refusal(_authorization_headers(scope), self.guard)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        code, message = refusal
        query = "?" + scope.get("query_string", b"").decode("latin-1")
        if code == MISSING_TOKEN and _has_query_secret(query):
            message += "; a token is taken only in that header, never in the URL (where logs keep it)"
        challenge = 'Bearer realm="fracsight"'
        if code == INVALID_TOKEN:
            challenge += ', error="invalid_token"'
        if self.on_refusal is not None:
            self.on_refusal(code)
        response = error_response(401, code, message, headers={"WWW-Authenticate": challenge})
        await response(scope, receive, send)


# a query parameter's name=value; a value hidden where the name, percent-decoded, sounds secret
# (a fixed list of names missed api_token, auth_token, x-api-key, access%5Ftoken ...)
_QUERY_PAIR = re.compile(r"([?&;])([^=&;\s]*)=([^&;\s]*)")
_SECRET_NAME = re.compile(
    r"token|key|secret|passw|auth|bearer|jwt|session|credential|signature", re.IGNORECASE
)


def _secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(unquote_plus(name)))


def _hide_query_secrets(target: str) -> str:
    """``target`` (a path with its query) with the value of every token-like query parameter as ``***``."""
    return _QUERY_PAIR.sub(lambda m: f"{m[1]}{m[2]}=***" if _secret_name(m[2]) else m[0], target)


def _has_query_secret(query: str) -> bool:
    return any(_secret_name(m[2]) for m in _QUERY_PAIR.finditer(query))


class QuerySecretFilter(logging.Filter):
    """uvicorn's log lines with the value of a token-like query parameter hidden: a client that
    sent its token in the URL (``?access_token=``, RFC 6750's URI form, which this API does not take)
    had it written into the log with its 401: in the access line, and at ``--log-level trace`` in
    the ASGI scope uvicorn logs (its ``query_string``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple):
            return True
        if record.name == "uvicorn.access" and len(args) >= 3 and isinstance(args[2], str):
            # (client, method, path with query, HTTP version, status)
            record.args = (*args[:2], _hide_query_secrets(args[2]), *args[3:])
        elif any(isinstance(a, dict) and "query_string" in a for a in args):
            record.args = tuple(_scope_without_secrets(a) for a in args)
        return True


def _scope_without_secrets(arg: object) -> object:
    if not isinstance(arg, dict) or not isinstance(arg.get("query_string"), bytes):
        return arg
    query = arg["query_string"].decode("latin-1")
    return {**arg, "query_string": _hide_query_secrets("?" + query)[1:].encode("latin-1")}


class LoopbackOnlyMiddleware:
    """Without tokens (``auth: optional``), predictions only for this computer: connections made
    to a loopback address, from a client that is not elsewhere. ``fracsight serve`` refuses to
    listen beyond loopback without a token, but the app started by ``uvicorn --factory ...
    --host 0.0.0.0`` never learns its host: it served anyone who reached the port. The address a
    connection came in on (``scope["server"]``) tells it here, and the client's (``scope["client"]``,
    which uvicorn sets from ``X-Forwarded-For`` when a proxy on this computer forwards a request
    from elsewhere). An address that is not an IP address (a Unix socket, a test client) says
    nothing either way. A proxy that forwards without ``X-Forwarded-For`` looks local: behind one,
    set tokens or ``FRACSIGHT_AUTH=proxy``."""

    def __init__(self, app: ASGIApp, on_refusal=None) -> None:
        self.app = app
        self.on_refusal = on_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = (scope.get("server") or ("",))[0] or ""
        client = (scope.get("client") or ("",))[0] or ""
        beyond = _beyond_loopback(server) or _beyond_loopback(client) or _forwarded_from_elsewhere(scope)
        if scope["type"] != "http" or route_path(scope) in OPEN_PATHS or not beyond:
            await self.app(scope, receive, send)
            return
        if self.on_refusal is not None:
            self.on_refusal(LOOPBACK_ONLY)
        message = (
            "this server has no API token, so it answers only on this computer (a loopback address): "
            "give it FRACSIGHT_API_TOKENS or FRACSIGHT_API_TOKENS_FILE, or set FRACSIGHT_AUTH=proxy "
            "behind an authenticating reverse proxy, or FRACSIGHT_AUTH=open on a closed network "
            "(docs/deploy.md)"
        )
        response = error_response(403, LOOPBACK_ONLY, message)
        await response(scope, receive, send)


def _forwarded_from_elsewhere(scope: Scope) -> bool:
    """Whether ``X-Forwarded-For`` names any client that is not this computer, or does not say whom
    (Squid's ``forwarded_for off`` writes ``unknown``). Read here, not only from ``scope["client"]``:
    uvicorn puts the forwarded client there only for a proxy among its FORWARDED_ALLOW_IPS
    (127.0.0.1, ::1), and on a dual-stack socket (``--host ::``, several workers) a proxy on this
    computer connects as ``::ffff:127.0.0.1``: the header was left unread, and the API answered
    everyone behind the proxy."""
    hops = [
        hop.strip()
        for name, value in scope.get("headers", ())
        if name == b"x-forwarded-for"
        for hop in value.decode("latin-1").split(",")
    ]
    return any(hop and not is_loopback(_host_of(hop)) for hop in hops)


def _host_of(hop: str) -> str:
    """The address of an ``X-Forwarded-For`` hop, without the port some proxies add
    (``203.0.113.7:5555``, ``[2001:db8::1]:5555``)."""
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    return hop.partition(":")[0] if hop.count(":") == 1 else hop


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _beyond_loopback(host: str) -> bool:
    return _is_address(host) and not is_loopback(host)
