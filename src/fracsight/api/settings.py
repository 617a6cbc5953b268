"""Settings of the REST API, from arguments or ``FRACSIGHT_*`` environment variables.

>>> from fracsight.api.settings import ApiSettings
>>> ApiSettings(max_files=4).max_files
4
>>> ApiSettings.from_env({"FRACSIGHT_MAX_FILES": "8"}).max_files
8

Uploads are held in memory only and never written to disk; there is no setting
to store them.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from fracsight.api.auth import digests_setting, in_quotes, parse_tokens_variable, quoted_setting
from fracsight.errors import ConfigError
from fracsight.io import DEFAULT_MAX_PIXELS
from fracsight.io._raster import PILLOW_MAX_PIXELS

__all__ = ["ENV_PREFIX", "GRACEFUL_SHUTDOWN_S", "SERVE_OPTIONS", "ApiSettings"]

ENV_PREFIX = "FRACSIGHT_"
# seconds `fracsight serve` lets running requests finish after SIGTERM; below the 30 s grace that
# docs/deploy.md asks of the orchestrator, and below the uploads' 60 s body timeout
GRACEFUL_SHUTDOWN_S = 20
MB = 1024 * 1024
# the settings `fracsight serve` also takes as options (the others are environment variables only)
SERVE_OPTIONS = {
    "model": "--model",
    "max_upload_bytes": "--max-upload-mb",
    "max_files": "--max-files",
    "max_upload_memory_bytes": "--max-upload-memory-mb",
    "max_concurrent_inferences": "--max-concurrent-inferences",
    "inference_threads": "--threads",
}
_ROOT_PATH = re.compile(r"^/(?!/)[^\s?#]*$")  # not //host: a browser would read that as another host
logger = logging.getLogger("fracsight.api")


class ApiSettings(BaseModel):
    """What the server loads and the limits it enforces on every request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(
        default=None, description="Bundle folder, .zip or packaged name; None: the packaged default."
    )
    max_upload_bytes: int = Field(default=50 * MB, ge=1, description="Largest accepted file, in bytes.")
    max_files: int = Field(default=16, ge=1, le=1000, description="Most files in one request.")
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        ge=1,
        # above it Pillow refuses a PNG or JPEG itself (a DICOM would be read): the limit the server
        # reported in /v1/model was not the one it applied
        le=PILLOW_MAX_PIXELS,
        description="Largest image (height x width) decoded; at most Pillow's own limit.",
    )
    max_concurrent_inferences: int = Field(
        default=2, ge=1, le=64, description="Requests decoding/inferring at once; the rest wait."
    )
    inference_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="ONNX Runtime threads per inference (0: the cores divided by max_concurrent_inferences).",
    )
    max_upload_memory_bytes: int = Field(
        default=0,
        ge=0,
        description="Request bodies one server process holds in memory at once (read, waiting or "
        "predicted); past it a request gets 503 `server_busy`. 0: the larger of 1 GiB and one "
        "largest request (max_files x max_upload_bytes); at least one largest request.",
    )
    metrics_dir: str | None = Field(
        default=None,
        description="Folder where the worker processes of one server share their metrics "
        "(`fracsight serve --workers N` makes a temporary one); None: each process reports its own.",
    )
    auth: Literal["optional", "required", "proxy", "open"] = Field(
        default="optional",
        description="Bearer tokens: `optional` checks them when any are set, and `fracsight serve` "
        "refuses to listen beyond loopback without one; `required` refuses to start without one "
        "(the container image); `proxy`: an authenticating reverse proxy is in front; `open`: no "
        "authentication wherever it listens (a closed network; tokens, when given, are checked).",
    )
    api_tokens: str | None = Field(
        default=None,
        repr=False,
        description="Comma-separated bearer tokens or `sha256:<hex>` digests; only digests are kept.",
    )
    api_tokens_file: str | None = Field(
        default=None, description="File with one bearer token or `sha256:<hex>` digest per line."
    )
    root_path: str | None = Field(
        default=None,
        description="URL prefix a reverse proxy serves the API under (e.g. `/fracsight`), for links "
        "in /docs and the OpenAPI `servers`; requests with or without it are answered.",
    )

    @field_validator("root_path")
    @classmethod
    def _url_prefix(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not _ROOT_PATH.match(value):
            raise ValueError(
                f"{value!r} is not a URL path prefix: give one such as /fracsight (a leading /, "
                "no //, spaces, ? or #)"
            )
        return value.rstrip("/") or None

    @field_validator("metrics_dir")
    @classmethod
    def _shared_folder_is_writable(cls, value: str | None) -> str | None:
        """A folder the workers cannot write to left /metrics reporting one worker at a time, silently."""
        if not value:
            return None
        if not Path(value).is_dir():
            raise ValueError(f"{value!r} is not an existing folder: create it, or leave the setting out")
        if not os.access(value, os.W_OK | os.X_OK):
            raise ValueError(f"{value!r}: this user cannot write in it")
        return value

    @field_validator("api_tokens")
    @classmethod
    def _keep_digests_only(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        digests = parse_tokens_variable(value)
        if not digests:  # set, but to separators only: never an open API by mistake
            raise ConfigError("FRACSIGHT_API_TOKENS is set but holds no token")
        return digests_setting(digests)

    @field_validator("max_upload_memory_bytes")
    @classmethod
    def _one_largest_request_fits(cls, value: int, info: ValidationInfo) -> int:
        files, each = info.data.get("max_files"), info.data.get("max_upload_bytes")
        if value and files and each and value < _request_bytes(files, each):  # refused on an idle server
            raise ValueError(
                f"{value:,} bytes is less than one largest request ({_request_bytes(files, each):,} bytes: "
                "max_files x max_upload_bytes and the multipart framing): raise it, lower those, or "
                "leave it 0 (automatic)"
            )
        return value

    @property
    def max_request_bytes(self) -> int:
        """The most body bytes read for one request: every file at its limit plus multipart framing."""
        return _request_bytes(self.max_files, self.max_upload_bytes)

    @property
    def upload_memory_limit(self) -> int:
        """``max_upload_memory_bytes``, or (0) the larger of 1 GiB and one largest request."""
        return self.max_upload_memory_bytes or max(1024 * MB, self.max_request_bytes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ApiSettings:
        """Read ``FRACSIGHT_MODEL``, ``FRACSIGHT_MAX_UPLOAD_BYTES``, ... ; ``overrides`` win over them.

        Raises :class:`~fracsight.errors.ConfigError` on a value that is not valid.
        """
        environ = os.environ if environ is None else environ
        _warn_near_misses(environ)
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is not None and raw.strip() != "":
                values[name] = _unquoted(name, raw.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            problems = "; ".join(_problem(".".join(map(str, err["loc"])), err["msg"]) for err in e.errors())
            raise ConfigError(f"invalid API settings: {problems}") from None

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings (for uvicorn worker processes)."""
        return {
            ENV_PREFIX + name.upper(): str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }


def _unquoted(name: str, value: str) -> str:
    """``value``, refused when in quotes: ``docker run --env-file`` keeps them as part of it, so
    FRACSIGHT_AUTH="proxy" was told to be one of 'proxy', ..., and a quoted tokens file's path was
    "nothing of it is on disk". The tokens themselves are checked entry by entry (auth.py)."""
    if name == "api_tokens" or not in_quotes(value):
        return value
    shown = "" if name == "api_tokens_file" else f" ({value})"  # the file's name may be the secret
    raise quoted_setting(ENV_PREFIX + name.upper(), shown)


def _problem(name: str, message: str) -> str:
    """One invalid setting, named as the user gave it: its variable, and its option where it has one."""
    option = SERVE_OPTIONS.get(name)
    where = ENV_PREFIX + name.upper() + (f" or `fracsight serve {option}`" if option else "")
    return f"{name} ({where}): {message.removeprefix('Value error, ')}"


def _request_bytes(max_files: int, max_upload_bytes: int) -> int:
    return max_files * (max_upload_bytes + 16 * 1024) + 64 * 1024


#: `fracsight serve` options that are no environment variable (a container's FRACSIGHT_PORT was
#: ignored without a word)
_OPTIONS_ONLY = {"port": "--port", "host": "--host", "workers": "--workers", "log_level": "--log-level"}


_SECRET_WORDS = re.compile(r"token|key|secret|bearer|password")
# what Kubernetes puts into every pod for a Service named `fracsight`: FRACSIGHT_SERVICE_HOST,
# FRACSIGHT_PORT=tcp://10.96.0.12:8000, FRACSIGHT_PORT_8000_TCP_ADDR, ... (docker's old links too),
# and for one named `fracsight-keycloak`: FRACSIGHT_KEYCLOAK_SERVICE_HOST, FRACSIGHT_KEYCLOAK_PORT, ...
_SERVICE_LINK_NAME = re.compile(r"(\w+_)?(service_(host|port)(_\w+)?|port_\d+_(tcp|udp|sctp)(_\w+)?)")
_SERVICE_LINK_VALUE = re.compile(r"(tcp|udp|sctp)://", re.IGNORECASE)


def near_misses(environ: Mapping[str, str]) -> dict[str, str]:
    """``FRACSIGHT_*`` names that are no setting but close to one, each with the setting meant: a
    typo such as ``FRACSIGHT_API_TOKEN`` would otherwise leave the API open without a word. An
    option's name (``FRACSIGHT_THREADS`` for ``--threads``) is its variable's miss; an option that
    has no variable (``FRACSIGHT_PORT``) is said to be one."""
    fields = list(ApiSettings.model_fields)
    by_option = {option[2:].replace("-", "_"): field for field, option in SERVE_OPTIONS.items()}
    found = {}
    for key, value in environ.items():
        if not key.upper().startswith(ENV_PREFIX) or not value.strip():
            continue
        name = key[len(ENV_PREFIX) :].lower()
        service_port = name == "port" or name.endswith("_port")
        if _SERVICE_LINK_NAME.fullmatch(name) or (service_port and _SERVICE_LINK_VALUE.match(value)):
            continue
        if name in fields:
            if key != key.upper():  # read as written: fracsight_api_tokens was no token at all
                found[key] = ENV_PREFIX + name.upper()
            continue
        if name in by_option:
            found[key] = ENV_PREFIX + by_option[name].upper()
        elif name in _OPTIONS_ONLY:
            found[key] = f"the option `fracsight serve {_OPTIONS_ONLY[name]}` (it has no variable)"
        elif close := difflib.get_close_matches(name, fields, n=1, cutoff=0.75):
            found[key] = ENV_PREFIX + close[0].upper()
        elif _SECRET_WORDS.search(name) and not name.startswith("dicomweb_"):  # the DICOM node's own
            # FRACSIGHT_API_KEY, _AUTH_TOKEN, _BEARER_TOKENS: under auth proxy or open, no token check
            found[key] = ENV_PREFIX + ("API_TOKENS_FILE" if name.endswith("file") else "API_TOKENS")
    return found


def _warn_near_misses(environ: Mapping[str, str]) -> None:
    for key, meant in near_misses(environ).items():
        logger.warning("%s is not a setting of the REST API and is ignored; did you mean %s?", key, meant)
