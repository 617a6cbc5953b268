"""Bearer-token authentication of the REST API: parsing, hashing, refusals, and a real loopback server."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fracsight.api.auth import TokenGuard, is_loopback, parse_tokens, token_digest, token_guard
from fracsight.api.settings import ENV_PREFIX, GRACEFUL_SHUTDOWN_S, ApiSettings, near_misses
from fracsight.cli import app as cli
from fracsight.errors import ConfigError

uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from conftest import free_port  # noqa: E402
from test_api_serve import _png, loopback_server  # noqa: E402  (after the importorskip guards)

TOKEN = "tok-" + "a1b2c3d4" * 4
OTHER = "tok-" + "e5f6a7b8" * 4  # given to the server as its sha256 digest only


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ApiSettings.model_fields:
        monkeypatch.setenv(ENV_PREFIX + name.upper(), "")


# ---- tokens ------------------------------------------------------------------------------------------
def test_tokens_are_kept_as_digests_and_compared_by_digest(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# pilot tokens\n\n{TOKEN}\n{token_digest(OTHER)}\n")
    guard = token_guard("required", None, str(tokens))
    assert len(guard) == 2
    assert guard.allows(TOKEN) and guard.allows(OTHER)
    assert not guard.allows(TOKEN[:-1]) and not guard.allows(token_digest(OTHER)) and not guard.allows("")
    settings = ApiSettings.from_env({"FRACSIGHT_API_TOKENS": f"{TOKEN}, {token_digest(OTHER)}"})
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.to_env())
    expected = {"sha256:" + hashlib.sha256(t.encode()).hexdigest() for t in (TOKEN, OTHER)}
    assert set(settings.api_tokens.split(",")) == expected
    # the workers of `fracsight serve --workers N` rebuild the same guard from the exported digests
    again = ApiSettings.from_env(settings.to_env())
    assert token_guard(again.auth, again.api_tokens, None).allows(OTHER)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["short-token"], "at least 16 characters"),
        (["sha256:abc"], "64 hex digits"),
    ],
)
def test_weak_or_malformed_tokens_are_refused_without_quoting_them(entries: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_tokens(entries, "FRACSIGHT_API_TOKENS")
    assert "short-token" not in str(caught.value)


def test_required_auth_without_tokens_and_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FRACSIGHT_AUTH=proxy"):
        token_guard("required", None, None)
    assert not token_guard("proxy", None, None) and not token_guard("optional", None, None)
    with pytest.raises(ConfigError, match="cannot read it"):
        token_guard("optional", None, str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="holds no token"):
        token_guard("optional", None, str(tmp_path / "empty"))


def test_a_token_given_as_the_tokens_files_path_is_not_quoted(tmp_path: Path, monkeypatch) -> None:
    """FRACSIGHT_API_TOKENS_FILE=<the token> by mistake: the error line quoted it, into the
    container's log; a path with a folder in it is still named."""
    monkeypatch.chdir(tmp_path)
    for secret in (TOKEN, "yMnKy8zNzs/Q0dLT1NXW19jZ2tvc3d7f4OHi4+Tl5uc=", "/Q0dLT1NXW19jZ2tvc3d7f4OHi4"):
        with pytest.raises(ConfigError, match="the secret itself") as caught:  # base64 holds "/"
            token_guard("required", None, secret)
        assert secret not in str(caught.value)
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="run/secrets/tokens: cannot read it"):
        token_guard("required", None, "run/secrets/tokens")  # a path whose first folder is there
    with pytest.raises(ConfigError, match="/run/secrets/nothing-here: cannot read it"):
        token_guard("required", None, "/run/secrets/nothing-here")


def test_a_tokens_file_far_too_large_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    """/dev/zero given as the tokens file filled the memory, and ended in a MemoryError traceback."""
    huge = tmp_path / "tokens"
    with open(huge, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: no disk used
    with pytest.raises(ConfigError, match="larger than 1 MiB; a tokens file holds one short line per token"):
        token_guard("required", None, str(huge))


def test_guard_compares_against_every_digest() -> None:
    digests = [hashlib.sha256(f"token-number-{i:04d}".encode()).digest() for i in range(5)]
    guard = TokenGuard(digests)
    assert all(guard.allows(f"token-number-{i:04d}") for i in range(5))
    assert not guard.allows("token-number-0005") and not TokenGuard([]).allows("token-number-0000")


def test_tokens_file_from_a_windows_editor_bom_and_crlf_included(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_bytes(("\ufeff# pilot\r\n\r\n" + TOKEN + "\r\n  \r\n").encode())
    assert token_guard("required", None, str(tokens)).allows(TOKEN)
    tokens.write_bytes(("\ufeff" + TOKEN + "\r\n").encode())  # the BOM must not become part of it
    assert token_guard("required", None, str(tokens)).allows(TOKEN)
    tokens.write_bytes(("# old Mac\r" + TOKEN + "\r").encode())  # lines ended by CR alone
    assert token_guard("required", None, str(tokens)).allows(TOKEN)


@pytest.mark.parametrize(
    "line",
    [
        f"{TOKEN}   # radiology PACS",
        f"{TOKEN} second-half-of-it",
        "tök-" + "a1b2c3d4" * 4,
        f"{TOKEN[:20]}\v{TOKEN[20:]}",  # was split in two and called too short
        f"{TOKEN[:20]}\x85{TOKEN[20:]}",
    ],
    ids=["inline-comment", "space-inside", "non-ascii", "vertical-tab", "next-line"],
)
def test_a_token_no_client_could_send_is_refused_at_start(tmp_path: Path, line: str) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="printable ASCII") as caught:
        token_guard("optional", None, str(tokens))
    assert TOKEN not in str(caught.value) and "PACS" not in str(caught.value)


def test_a_quoted_token_is_refused_and_an_upper_case_digest_read(tmp_path: Path) -> None:
    """``"TOKEN"`` was taken with its quotes, so the client's real token never matched; a digest
    written ``SHA256:<HEX>`` was refused as not 64 hex digits."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f'"{TOKEN}"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="a token in quotes") as caught:
        token_guard("optional", None, str(tokens))
    assert TOKEN not in str(caught.value)
    tokens.write_text(token_digest(TOKEN).upper() + "\n", encoding="utf-8")
    assert token_guard("required", None, str(tokens)).allows(TOKEN)


@pytest.mark.parametrize("quote", ['"', "'"])
@pytest.mark.parametrize("digests", [False, True], ids=["tokens", "digests"])
def test_several_tokens_in_one_pair_of_quotes_are_refused(quote: str, digests: bool) -> None:
    """``FRACSIGHT_API_TOKENS="tokA,tokB"`` from ``docker run --env-file`` (which keeps the quotes)
    started with two tokens no client has, every request 401; two digests so quoted were refused
    as not having 64 hex digits, which they had."""
    other = "b" * 40
    pair = [token_digest(TOKEN), token_digest(other)] if digests else [TOKEN, other]
    for bom in ("", "\ufeff"):  # "$(cat tokens)" of a file a Windows editor saved
        with pytest.raises(ConfigError, match="FRACSIGHT_API_TOKENS is in quotes") as caught:
            token_guard("required", f"{bom}{quote}{pair[0]},{pair[1]}{quote}", None)
        assert TOKEN not in str(caught.value) and other not in str(caught.value)


def test_a_token_with_a_quote_at_one_end_is_a_token(tmp_path: Path) -> None:
    """Tokens are printable ASCII (`pwgen -sy` makes some that begin or end with a quote)."""
    tokens = tmp_path / "tokens"
    for token in ('"Zq8r!vK2mT9pLw4xY', "Zq8r!vK2mT9pLw4xY'"):
        assert token_guard("required", token, None).allows(token)
        tokens.write_text(token + "\n", encoding="utf-8")
        assert token_guard("required", None, str(tokens)).allows(token)


def test_a_digest_with_a_comment_after_it_is_told_so(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{token_digest(TOKEN)}  # ci runner\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"64 hex digits \(a `#` comment takes a line of its own"):
        token_guard("required", None, str(tokens))


_SHA256_HEX = hashlib.sha256(TOKEN.encode()).hexdigest()


@pytest.mark.parametrize(
    ("line", "looks_like"),
    [
        ("sha512:" + hashlib.sha512(TOKEN.encode()).hexdigest(), "a sha512 digest"),
        ("sha-256:" + _SHA256_HEX, "a sha-256 digest"),
        ("SHA-256=" + base64.b64encode(hashlib.sha256(TOKEN.encode()).digest()).decode(), "a sha-256 digest"),
        ("{SHA256}" + base64.b64encode(hashlib.sha256(TOKEN.encode()).digest()).decode(), "{SHA256} digest"),
        ("{SSHA}WvZ2mHf0xQK3yZ8sXJvYQm0aLqZ0bUFvZ0E=", "{SSHA} digest"),
        ("$2y$10$abcdefghijklmnopqrstuuVVC5sXx0OOa4F1yV1oyxQoQbC7KSbuW", "password hash (bcrypt)"),
        ("pacs:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/", "htpasswd line (a user and a password hash (Apache"),
        ("pacs:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "htpasswd line (a user and an LDAP-style {SHA}"),
        (f"{_SHA256_HEX}  -", "sha256sum output"),
        ("sha384-" + base64.b64encode(hashlib.sha384(TOKEN.encode()).digest()).decode(), "a sha384 digest"),
        (f"SHA2-256(stdin)= {_SHA256_HEX}", "openssl dgst output (a SHA2-256 digest)"),
    ],
    ids=[
        "sha512",
        "sha-256",
        "sha-256-base64",
        "ldap-sha256",
        "ldap-ssha",
        "bcrypt",
        "htpasswd",
        "htpasswd-sha",
        "sha256sum",
        "subresource-integrity",
        "openssl-dgst",
    ],
)
def test_a_digest_in_another_form_is_refused_not_taken_as_a_token(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch, line: str, looks_like: str
) -> None:
    """``sha512:<hex>``, ``{SHA256}<base64>``, ``$2y$`` bcrypt ... were taken as tokens: the real
    token got 401, and the digest's text, in a file the docs call non-secret, was a working token."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# pilot\n{TOKEN}\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"entry 3: looks like ") as caught:
        token_guard("required", None, str(tokens))
    message = str(caught.value)
    assert looks_like in message and "only sha256:<64 hex digits> digests are supported" in message
    assert "hashlib.sha256" in message and line not in message and TOKEN not in message
    with pytest.raises(ConfigError, match=r"FRACSIGHT_API_TOKENS, entry 2: looks like "):
        ApiSettings.from_env({"FRACSIGHT_API_TOKENS": f"{TOKEN},{line}"})
    result, calls = _serve(monkeypatch, {"FRACSIGHT_API_TOKENS_FILE": str(tokens)})
    assert result.exit_code == 1 and not calls and "error (config_error)" in result.output


@pytest.mark.parametrize(
    "token",
    [
        "wxo8_UIb_5BI-8a1XroRdKDgogCn3AZ_7UW0zemIkGw",  # secrets.token_urlsafe(32)
        "sha512-Zm9v_bar-" + "A1b2" * 8,  # its alphabet, beginning like a digest's name
        "md5_" + "x" * 40,
        "blake2b" + "Q" * 30,
        "5173e27f182549b8362474d7217dcc00",  # secrets.token_hex(16), as md5sum prints a digest
        "c9731d7cf66531f64cd953b5cab7ce12ddd9474f735b5b56652306254703162a"  # `openssl rand -hex 64`,
        "950d07ff47b5d2ff834aed70584ec049634c42aec6d617e75f419c2672af32f8",  # as sha512sum prints one
        "MA/77HAo21xnNSb0ALCncm4dEwF4HD4urGYZyIdvWo4=",  # `openssl rand -base64 32`: + / =
        "sha256+Ab/" + "c" * 33 + "=",
        "SHA1" + "d" * 39 + "=",
        "$Tr0ub4dor$3-correct-horse",  # a password manager's: `$` or `{` begin no hash scheme here
        "{Zk3kLmPq9XwY}tRuVb!x",
    ],
    ids=[
        "urlsafe",
        "urlsafe-sha512",
        "urlsafe-md5",
        "urlsafe-blake2b",
        "hex-32",
        "hex-128",
        "base64",
        "base64-sha256",
        "base64-sha1",
        "dollar-words",
        "brace-words",
    ],
)
def test_generated_tokens_are_still_accepted_quietly(token: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="fracsight.api"):
        assert TokenGuard(parse_tokens([token], "FRACSIGHT_API_TOKENS")).allows(token)
    assert not caplog.records


def test_64_hex_digits_are_a_token_and_a_warning_says_a_digest_needs_its_prefix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """64 hex digits are a token (`openssl rand -hex 32`, as documented) or a digest without its
    `sha256:` (sha256sum's): used as the token, and said, so that the second gets noticed."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n{_SHA256_HEX}\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="fracsight.api"):
        guard = token_guard("required", None, str(tokens))
    assert guard.allows(_SHA256_HEX) and not guard.allows(TOKEN + "x")
    warned = [r.getMessage() for r in caplog.records if "64 hex digits" in r.getMessage()]
    assert len(warned) == 1 and "entry 2" in warned[0] and "write sha256: before it" in warned[0]
    assert _SHA256_HEX not in caplog.text and TOKEN not in caplog.text


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_a_tokens_file_saved_as_utf16_with_a_bom_is_read(tmp_path: Path, encoding: str) -> None:
    """What Windows PowerShell 5.1's `>` and Out-File write: "cannot read it (UnicodeDecodeError)"."""
    tokens = tmp_path / "tokens"
    tokens.write_bytes(f"\ufeff# pilot\r\n{TOKEN}\r\n{token_digest(OTHER)}\r\n".encode(encoding))
    guard = token_guard("required", None, str(tokens))
    assert len(guard) == 2 and guard.allows(TOKEN) and guard.allows(OTHER)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_tokens_file_in_utf16_without_a_bom_or_in_latin1_is_refused_saying_so(
    tmp_path: Path, encoding: str
) -> None:
    """It was "cannot read it (UnicodeDecodeError)", which sounds like permissions, or "entry 1: a
    token may hold only printable ASCII characters"."""
    tokens = tmp_path / "tokens"
    for text in (f"{TOKEN}\r\n", f"# pilot\r\n{TOKEN}\r\n"):
        tokens.write_bytes(text.encode(encoding))
        with pytest.raises(ConfigError, match=r'looks like UTF-16 \("Unicode"\).*save it as UTF-8 or ASCII'):
            token_guard("optional", None, str(tokens))
    tokens.write_bytes(f"# café\n{TOKEN}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 5\): save it as UTF-8"):
        token_guard("optional", None, str(tokens))


def test_the_variable_read_from_a_file_with_a_bom_agrees_with_the_file() -> None:
    """`FRACSIGHT_API_TOKENS=$(cat tokens)` of a Windows editor's file: a UTF-8 BOM is dropped, as
    the file's; a UTF-16 one (its bytes, as os.environ decodes them) is refused saying so."""
    for value in (f"\ufeff{TOKEN}", f"\ufeff {TOKEN}"):  # a space after the BOM: refused as unsendable
        assert ApiSettings.from_env({"FRACSIGHT_API_TOKENS": value}).api_tokens == token_digest(TOKEN)
    with pytest.raises(ConfigError, match=r'entry 1: begins with a UTF-16 byte order mark.*"Unicode"'):
        ApiSettings.from_env({"FRACSIGHT_API_TOKENS": f"\udcff\udcfe{TOKEN}"})


@pytest.mark.parametrize("value", [",", " , ,"])
def test_tokens_variable_set_without_a_token_is_refused_not_open(value: str) -> None:
    with pytest.raises(ConfigError, match="holds no token"):
        ApiSettings.from_env({"FRACSIGHT_API_TOKENS": value})
    assert ApiSettings.from_env({"FRACSIGHT_API_TOKENS": "  "}).api_tokens is None  # blank: unset


@pytest.mark.parametrize("value", [f"# {TOKEN}", f"#{TOKEN}", f"{TOKEN},#Hash-start-token-123456"])
def test_a_token_in_the_variable_beginning_with_a_hash_is_refused_not_dropped(value: str) -> None:
    """`#...` in FRACSIGHT_API_TOKENS was taken for a comment: the server started without that
    token, and its clients got 401 without a word (alone: "holds no token")."""
    with pytest.raises(ConfigError, match=r"entry [12]: begins with '#'") as caught:
        ApiSettings.from_env({"FRACSIGHT_API_TOKENS": value})
    assert "Hash-start" not in str(caught.value) and TOKEN not in str(caught.value)


def test_a_tokens_file_set_into_the_variable_gives_its_tokens() -> None:
    """`FRACSIGHT_API_TOKENS="$(cat api_tokens)"` (as docs/deploy.md shows) of a file of two lines
    and a comment was refused: "entry 1: a sha256: digest needs exactly 64 hex digits"."""
    other = "client-B-token-0123456789"
    text = f"# client A\n{token_digest(TOKEN)}\r\n\n# client B, ward 3\n{other}\n"
    guard = token_guard("required", ApiSettings.from_env({"FRACSIGHT_API_TOKENS": text}).api_tokens, None)
    assert len(guard) == 2 and guard.allows(TOKEN) and guard.allows(other) and not guard.allows("x" * 20)
    assert len(token_guard("required", text, None)) == 2
    with pytest.raises(ConfigError, match="holds no token"):  # comments only: never an open API
        ApiSettings.from_env({"FRACSIGHT_API_TOKENS": "# client A\n# client B\n"})
    # a Windows editor's file: its byte order mark before the first comment line
    assert len(token_guard("required", f"\ufeff# ward PCs\r\n{token_digest(TOKEN)}\r\n", None)) == 1
    with pytest.raises(ConfigError, match="may hold only printable ASCII"):  # \x1c is no line end
        token_guard("required", f"{TOKEN}\x1c{other}", None)


def test_a_misspelt_setting_is_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    env = {"FRACSIGHT_API_TOKEN": TOKEN, "FRACSIGHT_MAX_UPLOAD_MB": "5", "FRACSIGHT_AET": "FRACSIGHT"}
    with caplog.at_level("WARNING", logger="fracsight.api"):
        assert ApiSettings.from_env(env).api_tokens is None
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2, warned  # FRACSIGHT_AET belongs to the DICOM node: not close to any
    assert "did you mean FRACSIGHT_API_TOKENS?" in warned[0] and "FRACSIGHT_MAX_UPLOAD_BYTES" in warned[1]
    assert TOKEN not in caplog.text


def test_the_usual_names_for_a_token_and_lower_case_names_are_warned_of() -> None:
    """FRACSIGHT_API_KEY, _AUTH_TOKEN, _BEARER_TOKENS or a lower-case fracsight_api_tokens were
    ignored without a word: under FRACSIGHT_AUTH=proxy or open, the API ran with no token check."""
    env = {
        "FRACSIGHT_API_KEY": TOKEN,
        "FRACSIGHT_AUTH_TOKEN": TOKEN,
        "FRACSIGHT_BEARER_TOKENS": TOKEN,
        "FRACSIGHT_SECRET_FILE": "/run/secrets/x",
        "fracsight_api_tokens": TOKEN,
        "FRACSIGHT_DICOMWEB_TOKEN": TOKEN,  # the DICOM node's: not a miss
        "FRACSIGHT_API_TOKENS": TOKEN,
        # what Kubernetes sets in every pod for a Service named fracsight: warned of at every start
        "FRACSIGHT_PORT": "tcp://10.96.0.12:8000",
        "FRACSIGHT_PORT_8000_TCP": "tcp://10.96.0.12:8000",
        "FRACSIGHT_PORT_8000_TCP_ADDR": "10.96.0.12",
        "FRACSIGHT_SERVICE_HOST": "10.96.0.12",
        "FRACSIGHT_SERVICE_PORT_HTTP": "8000",
        # and for Services named fracsight-keycloak, fracsight-metrics: "did you mean
        # FRACSIGHT_API_TOKENS?" eight times at every start
        "FRACSIGHT_KEYCLOAK_PORT": "tcp://10.96.0.14:8080",
        "FRACSIGHT_KEYCLOAK_PORT_8080_TCP_PORT": "8080",
        "FRACSIGHT_KEYCLOAK_SERVICE_HOST": "10.96.0.14",
        "FRACSIGHT_METRICS_PORT": "tcp://10.96.0.13:9102",
        "FRACSIGHT_METRICS_SERVICE_PORT": "9102",
    }
    assert near_misses(env) == {
        "FRACSIGHT_API_KEY": "FRACSIGHT_API_TOKENS",
        "FRACSIGHT_AUTH_TOKEN": "FRACSIGHT_API_TOKENS",
        "FRACSIGHT_BEARER_TOKENS": "FRACSIGHT_API_TOKENS",
        "FRACSIGHT_SECRET_FILE": "FRACSIGHT_API_TOKENS_FILE",
        "fracsight_api_tokens": "FRACSIGHT_API_TOKENS",
    }
    assert "FRACSIGHT_METRICS_PORT" in near_misses({"FRACSIGHT_METRICS_PORT": "9102"})  # no Service's


@pytest.mark.skipif(os.name != "posix", reason="file modes")
@pytest.mark.parametrize(
    ("content", "mode", "warned"),
    [
        (TOKEN, 0o644, True),
        (TOKEN, 0o640, True),
        (TOKEN, 0o600, False),
        (f"# readable on purpose\n{token_digest(TOKEN)}", 0o644, False),  # digests only: no secret
    ],
    ids=["tokens-644", "tokens-640", "tokens-600", "digests-644"],
)
def test_a_tokens_file_others_can_read_is_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, mode: int, warned: bool
) -> None:
    """A tokens file holding tokens, readable by every user of the server, was used without a word."""
    path = tmp_path / "tokens"
    path.write_text(content + "\n", encoding="utf-8")
    path.chmod(mode)
    with caplog.at_level("WARNING", logger="fracsight.api"):
        assert token_guard("required", None, str(path)).allows(TOKEN)
    assert ("readable by other users" in caplog.text) is warned
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ([("Authorization", f"Bearer {TOKEN}")], 200, None),
        ([("Authorization", f"bearer {TOKEN}")], 200, None),
        ([("Authorization", f"Bearer\t{TOKEN}  ")], 200, None),
        ([("Authorization", f"Bearer   {TOKEN}")], 200, None),
        ([], 401, "missing_token"),
        ([("Authorization", TOKEN)], 401, "missing_token"),
        ([("Authorization", "Bearer")], 401, "missing_token"),
        ([("Authorization", "Basic Zm9vOmJhcg==")], 401, "missing_token"),
        ([("Authorization", "Bearer " + "x" * 20_000)], 401, "invalid_token"),
        ([("Authorization", "Bearer tök-a1b2c3d4a1b2c3d4".encode())], 401, "invalid_token"),
        (
            [("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer wrong-token-1234567")],
            401,
            "invalid_token",
        ),
        (
            [("Authorization", "Bearer wrong-token-1234567"), ("Authorization", f"Bearer {TOKEN}")],
            401,
            "invalid_token",
        ),
        ([("Authorization", f"Bearer {TOKEN}"), ("Authorization", f"Bearer {TOKEN}")], 401, "invalid_token"),
    ],
    ids=[
        "bearer",
        "lowercase-scheme",
        "tab-and-trailing-space",
        "extra-spaces",
        "no-header",
        "no-scheme",
        "scheme-only",
        "basic",
        "very-long",
        "non-ascii",
        "two-headers-valid-first",
        "two-headers-valid-last",
        "two-identical-headers",
    ],
)
def test_authorization_header_forms(
    clean_env: None, headers: list[tuple[str, Any]], status: int, code: str | None
) -> None:
    from fastapi.testclient import TestClient

    from fracsight.api import create_app

    client = TestClient(create_app(ApiSettings(api_tokens=TOKEN)))  # no lifespan: /metrics needs no model
    r = client.get("/metrics", headers=headers)
    assert r.status_code == status
    if code is not None:
        assert r.json()["error"]["code"] == code and r.headers["www-authenticate"].startswith("Bearer")


def test_refused_requests_are_counted_under_the_route_they_were_sent_to(clean_env: None) -> None:
    from fastapi.testclient import TestClient

    from fracsight.api import create_app

    client = TestClient(create_app(ApiSettings(api_tokens=TOKEN)))
    assert client.post("/v1/predict").status_code == 401
    assert client.get("/no/such/path").status_code == 401  # the token is checked first everywhere
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert 'route="/v1/predict",method="POST",status="401"' in metrics  # was route="unmatched"
    assert 'route="unmatched",method="GET",status="401"' in metrics
    assert client.options("/v1/predict").status_code == 401  # a method the route does not take
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert 'route="/v1/predict",method="OPTIONS",status="401"' in metrics  # was route="unmatched"


@pytest.mark.parametrize(
    ("auth", "reached_at", "status"),
    [
        (
            "optional",
            "http://10.1.2.3:8000",
            403,
        ),  # uvicorn --factory --host 0.0.0.0, reached from the network
        ("optional", "http://[::ffff:10.1.2.3]:8000", 403),
        ("optional", "http://127.0.0.1:8000", 200),
        ("optional", "http://[::1]:8000", 200),
        ("open", "http://10.1.2.3:8000", 200),
        ("proxy", "http://10.1.2.3:8000", 200),
    ],
)
def test_without_a_token_the_app_answers_beyond_loopback_only_when_told(
    clean_env: None, auth: str, reached_at: str, status: int
) -> None:
    """The loopback check was the CLI's: the documented ``uvicorn --factory
    fracsight.api.app:create_app --host 0.0.0.0`` served predictions to anyone reaching the port."""
    from fastapi.testclient import TestClient

    from fracsight.api import create_app

    app = create_app(ApiSettings(auth=auth))
    client = TestClient(app, base_url=reached_at)
    r = client.get("/metrics")
    assert r.status_code == status, r.text
    if status == 403:
        assert r.json()["error"]["code"] == "loopback_only" and "FRACSIGHT_API_TOKENS" in r.text
        local = TestClient(app, base_url="http://127.0.0.1:8000")
        assert 'status="403"' in local.get("/metrics").text  # counted
    assert client.get("/healthz").status_code != 403  # the health check stays open


def test_without_a_token_a_request_forwarded_from_elsewhere_is_refused(clean_env: None) -> None:
    """A proxy on this computer connects on loopback, and uvicorn puts the forwarded client's
    address (X-Forwarded-For) in scope["client"]: the check looked at the connection only, so the
    API was open to anyone the proxy forwarded."""
    from fastapi.testclient import TestClient

    from fracsight.api import create_app

    app = create_app(ApiSettings())
    forwarded = TestClient(app, base_url="http://127.0.0.1:8000", client=("203.0.113.7", 50000))
    assert forwarded.get("/metrics").json()["error"]["code"] == "loopback_only"
    local = TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000))
    assert local.get("/metrics").status_code == 200


def test_a_proxy_that_hides_whom_it_forwards_for_is_refused_without_a_token(clean_env: None) -> None:
    """Squid (forwarded_for off) sends X-Forwarded-For: unknown, which uvicorn makes the client:
    not an address, it said nothing, and the API answered everyone behind the proxy."""
    from fastapi.testclient import TestClient

    from fracsight.api import create_app

    app = create_app(ApiSettings())
    hidden = TestClient(app, base_url="http://127.0.0.1:8000", client=("unknown", 0))
    r = hidden.get("/metrics", headers={"X-Forwarded-For": "unknown"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "loopback_only"
    assert TestClient(app, base_url="http://127.0.0.1:8000").get("/metrics").status_code == 200  # no proxy


def test_a_proxy_on_a_dual_stack_socket_is_refused_for_a_client_elsewhere(clean_env: None) -> None:
    """With ``--host ::`` and several workers, a proxy on this computer connects as ::ffff:127.0.0.1,
    which is not among uvicorn's FORWARDED_ALLOW_IPS: X-Forwarded-For was left unread, the client
    looked local, and the API answered everyone behind the proxy."""
    from fastapi.testclient import TestClient

    from fracsight.api import create_app

    app = create_app(ApiSettings())
    proxy = TestClient(app, base_url="http://127.0.0.1:8000", client=("::ffff:127.0.0.1", 50000))
    for elsewhere in ("203.0.113.7", "203.0.113.7:5555", "127.0.0.1, 203.0.113.7", "[2001:db8::1]:443"):
        r = proxy.get("/metrics", headers={"X-Forwarded-For": elsewhere})
        assert r.status_code == 403 and r.json()["error"]["code"] == "loopback_only", elsewhere
    for here in ("127.0.0.1", "::1", "[::1]:5555", "localhost"):
        assert proxy.get("/metrics", headers={"X-Forwarded-For": here}).status_code == 200, here


def test_a_token_sent_in_the_url_is_hidden_in_the_access_log_and_the_refusal_says_why(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 6750's ?access_token= form (not taken): uvicorn's access line quoted it, token and all."""
    import logging

    from fastapi.testclient import TestClient

    from fracsight.api import create_app
    from fracsight.api.auth import QuerySecretFilter

    line = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/v1/model?x=1&access_token={TOKEN}&api_key={TOKEN}", "1.1", 401), None,
    )  # fmt: skip
    assert QuerySecretFilter().filter(line)
    assert line.getMessage() == '127.0.0.1:5 - "GET /v1/model?x=1&access_token=***&api_key=*** HTTP/1.1" 401'
    # names beyond a fixed list, and percent-encoded ones; the API's own parameters are left alone
    for name in ("api_token", "auth_token", "x-api-key", "access%5Ftoken", "Client_Secret", "bearer"):
        target = f"/v1/predict?study=true&{name}={TOKEN}&operating_point=triage&format=csv"
        line.args = ("127.0.0.1:5", "POST", target, "1.1", 401)
        assert QuerySecretFilter().filter(line)
        shown = f"/v1/predict?study=true&{name}=***&operating_point=triage&format=csv"
        assert line.getMessage() == f'127.0.0.1:5 - "POST {shown} HTTP/1.1" 401', name
    monkeypatch.setenv("FRACSIGHT_API_TOKENS", TOKEN)
    r = TestClient(create_app(ApiSettings.from_env())).get(f"/v1/model?access_token={TOKEN}")
    assert r.status_code == 401 and "never in the URL" in r.json()["error"]["message"]
    r = TestClient(create_app(ApiSettings.from_env())).get(f"/v1/model?api_token={TOKEN}")
    assert r.status_code == 401 and "never in the URL" in r.json()["error"]["message"]


# ---- `fracsight serve` refuses to start, or starts, as configured -------------------------------------
def _serve(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> tuple[Any, list[Any]]:
    calls: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: calls.append((a, k)))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"]), calls


def test_serve_refuses_to_start_when_auth_is_required_without_a_token(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, calls = _serve(monkeypatch, {"FRACSIGHT_AUTH": "required"})
    assert result.exit_code == 1 and not calls
    assert "error (config_error)" in result.output and "FRACSIGHT_API_TOKENS" in result.output
    assert "Traceback" not in result.output


def test_serve_starts_behind_an_authenticating_proxy_without_tokens(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, calls = _serve(monkeypatch, {"FRACSIGHT_AUTH": "proxy"})
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and "authentication" not in result.output  # only the TLS reminder


def test_serve_with_a_short_token_says_why_and_never_echoes_it(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, calls = _serve(monkeypatch, {"FRACSIGHT_API_TOKENS": "hunter2"})
    assert result.exit_code == 1 and not calls
    assert "at least 16 characters" in result.output and "hunter2" not in result.output


def test_without_a_token_it_listens_beyond_loopback_only_when_told_the_network_is_closed(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fracsight serve --host 0.0.0.0`` without a token: it warned and served predictions (and
    /metrics) to anyone on the network; now it refuses, unless FRACSIGHT_AUTH says why not."""
    result, calls = _serve(monkeypatch, {})
    assert result.exit_code == 1 and not calls, result.output
    assert "error (config_error): listening on 0.0.0.0 without an API token" in result.output
    assert "FRACSIGHT_AUTH=open" in result.output and "Traceback" not in result.output
    result, calls = _serve(monkeypatch, {"FRACSIGHT_AUTH": "open"})
    assert result.exit_code == 0 and len(calls) == 1, result.output
    assert "TLS and authentication (FRACSIGHT_AUTH=open: none of its own)" in result.output
    result, calls = _serve(monkeypatch, {"FRACSIGHT_API_TOKENS": TOKEN})
    assert result.exit_code == 0 and len(calls) == 1 and "authentication" not in result.output


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost"])
def test_on_loopback_it_starts_open_and_quiet(
    host: str, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: calls.append((a, k)))
    result = CliRunner().invoke(cli, ["serve", "--host", host, "--port", str(free_port())])
    assert result.exit_code == 0 and len(calls) == 1, result.output
    assert "warning" not in result.output
    assert calls[0][1]["timeout_graceful_shutdown"] == GRACEFUL_SHUTDOWN_S < 30  # docs/deploy.md's grace


def test_loopback_is_this_computer_only() -> None:
    loopback = ["localhost", "LOCALHOST", "127.0.0.1", "127.9.9.9", "::1", "[::1]", "::ffff:127.0.0.1"]
    assert all(map(is_loopback, loopback))
    assert not any(
        map(is_loopback, ["0.0.0.0", "::", "10.0.0.5", "fracsight.example.org", "127.0.0.1.nip.io"])
    )


def test_openapi_documents_the_bearer_scheme(clean_env: None) -> None:
    from fastapi.testclient import TestClient

    from fracsight.api import create_app

    app = create_app(ApiSettings(api_tokens=TOKEN))
    with TestClient(app) as client:
        assert client.get("/openapi.json").status_code == 401
        schema = client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/predict"]["post"]["security"] == [{"bearer": []}]
    assert "401" in schema["paths"]["/v1/predict"]["post"]["responses"]
    assert schema["paths"]["/healthz"]["get"]["security"] == []
    assert "403" not in schema["paths"]["/v1/predict"]["post"]["responses"]
    # no token: the 403 loopback_only the same app answers a client elsewhere was in no schema
    with TestClient(create_app(ApiSettings())) as client:
        schema = client.get("/openapi.json").json()
    refused = schema["paths"]["/v1/predict"]["post"]["responses"]["403"]
    assert refused["description"].startswith("loopback_only")
    assert "403" not in schema["paths"]["/healthz"]["get"]["responses"] and "401" not in refused


# ---- a real server on loopback ------------------------------------------------------------------------
@pytest.mark.slow
def test_real_server_refuses_requests_without_a_valid_token(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n{token_digest(OTHER)}\n")
    env = {"FRACSIGHT_AUTH": "required", "FRACSIGHT_API_TOKENS_FILE": str(tokens)}
    with loopback_server(env=env) as url:
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200  # open: health checks

        missing = httpx.post(f"{url}/v1/predict", files={"files": ("a.png", _png())}, timeout=30)
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.json()["error"]["code"] == "missing_token"

        for header in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", f"Bearer {token_digest(OTHER)}"):
            r = httpx.get(f"{url}/v1/model", headers={"Authorization": header}, timeout=10)
            assert r.status_code == 401 and r.json()["error"]["code"] in {"invalid_token", "missing_token"}
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 401

        for token in (TOKEN, OTHER):
            auth = {"Authorization": f"Bearer {token}"}
            r = httpx.post(f"{url}/v1/predict", files={"files": ("a.png", _png())}, headers=auth, timeout=30)
            assert r.status_code == 200 and r.json()["images"][0]["source"] == "a.png"
        metrics = httpx.get(f"{url}/metrics", headers=auth, timeout=10).text
        assert 'code="missing_token"' in metrics and 'code="invalid_token"' in metrics
