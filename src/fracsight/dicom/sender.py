"""Sending result objects from the spool: C-STORE (pynetdicom) or STOW-RS (dicomweb-client).

A :class:`Sender` thread takes due objects from the outbox in batches, hands each batch to one
destination call (one association per batch: the association is reused for the whole batch),
and records the outcome in the spool: delivered objects are ``sent``; while the destination
cannot be reached the batch waits with exponential back-off (``base_delay`` doubling up to
``max_delay``; no batch is tried before the back-off ends) and is retried for as long as it
takes; an object the destination refuses is retried with back-off too, and after
``give_up_after`` refusals it is ``failed`` (counted, logged by spool key, left in the spool for
a person to look at). Over STOW-RS, a 5xx for a whole request is first split into one request
per object, so that one object the service fails on cannot hold back the rest.

An object is marked ``sent`` only after the destination confirmed it; if the node dies in
between, the object is sent again after restart with the same SOP Instance UID, which a PACS
stores once. Result objects are never re-made for an instance once queued, so the PACS never
gets two different results for the same image.
"""

from __future__ import annotations

import functools
import logging
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fracsight.dicom._logging import log_failure
from fracsight.dicom._tcp import tcp_handlers
from fracsight.dicom.login import (
    PASSWORD_ENV,
    TOKEN_ENV,
    USER_ENV,
    BearerToken,
    Login,
    LoginError,
    redacted_url,
    shown_url,
)
from fracsight.dicom.spool import OutboxRow, Spool

if TYPE_CHECKING:
    import ssl

__all__ = [
    "DELIVERED",
    "Destination",
    "DestinationUnavailable",
    "DimseDestination",
    "Sender",
    "StowDestination",
    "check_host",
    "connection_error",
    "http_status",
    "parse_dimse_address",
    "request_error",
]

log = logging.getLogger(__name__)

DELIVERED = None  # the outcome of an object the destination confirmed
UNAVAILABLE = "destination_unavailable"


def _stored(code: int) -> bool:
    """Whether a C-STORE status means stored: success and every warning (PS3.7 C.1.3, C.4.2.1.5:
    0xB000-0xBFFF coercions and discarded elements, 0x0001, 0x0107 attribute list, 0x0116 attribute
    value out of range). Only 0xB000, 0xB006 and 0xB007 counted: a PACS answering 0x0107 got the
    same object ten times and the instance was left undelivered."""
    return code in (0x0000, 0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF


# Refused: Out of Resources (C-STORE 0xA7xx, a STOW-RS failure reason 0xA7xx): the PACS is short of
# disk or memory now, as the node itself says when its spool is full. Such objects wait with the
# back-off and are never given up; they were refused for good after 10 tries (about 5 minutes).
_OUT_OF_RESOURCES = re.compile(r"(status|stow_failure)_0xA7[0-9A-F]{2}")
_MAX_CONTEXTS = 128  # presentation contexts one association may propose (PS3.8 9.3.2.2)
_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_VR_LE = "1.2.840.10008.1.2"  # the syntax every SCP must take (PS3.5 10.1)
_DEFLATED = "1.2.840.10008.1.2.1.99"


def waits(outcome: str) -> bool:
    """Whether an object with this outcome is sent again later and never given up: the destination
    could not be reached, or was out of resources."""
    return outcome == UNAVAILABLE or bool(_OUT_OF_RESOURCES.fullmatch(outcome))


class DestinationUnavailable(Exception):
    """The destination could not be reached (connection refused, association rejected, timeout)."""


class NoStoreResponse(DestinationUnavailable):
    """The destination took the association and broke off the first store, of object ``index``: it
    takes no storage from this AE title, or cannot store that object (:meth:`DimseDestination.deliver`
    tells which)."""

    def __init__(self, index: int, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.index = index
        self.timed_out = timed_out  # no answer at all: another try waits out the timeout again


#: the outcome of an object the destination broke off the association on while it stored others
NO_RESPONSE = "no_response"


class Destination(Protocol):
    def deliver(self, paths: Sequence[Path]) -> list[str | None]:
        """Send the files; per file :data:`DELIVERED` or a failure code. Raises
        :class:`DestinationUnavailable` when nothing could be sent."""

    def describe(self) -> str: ...


def check_ae_title(value: str) -> str:
    """``value`` if it is an AE title as DICOM allows it (PS3.5: 1 to 16 characters of the default
    repertoire, no backslash, not only spaces); ValueError otherwise."""
    printable = all(" " <= c <= "~" and c != "\\" for c in value)
    if not printable or len(value) > 16 or not value.strip():
        raise ValueError(f"{value!r} is not an AE title (1 to 16 printable ASCII characters, no backslash)")
    return value


def check_host(value: str) -> str:
    """``value`` if the resolver can take it as a host name or address (not empty, no empty label,
    none over 63 characters); ValueError otherwise (socket calls raise UnicodeError for these)."""
    try:
        value.encode("idna")
    except UnicodeError:
        value = ""
    if not value.strip():
        raise ValueError("not a host name or address")
    return value


def parse_dimse_address(text: str, default_ae: str | None = "ANY-SCP") -> tuple[str, int, str]:
    """``HOST:PORT[:AET]`` -> ``(host, port, ae_title)``; ValueError with a clear message (also for
    a missing AET when there is no ``default_ae``)."""
    parts = text.rsplit(":", 2) if text.count(":") >= 2 else text.split(":")
    if len(parts) == 3 and not parts[1].isdigit() and parts[2].isdigit():  # an IPv6 host without AET
        parts = [f"{parts[0]}:{parts[1]}", parts[2]]
    if parts[0].startswith("[") and parts[0].endswith("]"):  # an IPv6 address as URLs write it: [::1]
        parts[0] = parts[0][1:-1]
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT or HOST:PORT:AET")
    if len(parts) == 2 and default_ae is None:
        raise ValueError(f"{text!r} names no AE title: HOST:PORT:AET, the destination's own AE title")
    port = int(parts[1])
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port {port} is not in 1..65535")
    try:
        host = check_host(parts[0])
        ae = check_ae_title(parts[2] if len(parts) == 3 else str(default_ae))
    except ValueError as e:
        raise ValueError(f"{text!r}: {e}") from None
    return host, port, ae


def _responses_to_the_store_only(assoc: Any) -> None:
    """Every C-STORE response of ``assoc`` read by the ``send_c_store`` that waits for it.

    pynetdicom 3.0's association thread polls for messages too, and pauses only while a send
    waits; right after one send, its "paused" flag is still set from before, so the next send went
    ahead while the thread woke and took that send's response off the queue: the store waited out
    the whole timeout (30 s), was counted unanswered and its object stored twice at the PACS
    (4 runs of 8 with five modalities sending at once). This association only sends, so the
    thread's non-blocking reads get nothing (a release or abort is told by ACSE, not by these)."""
    dimse = assoc.dimse
    read = dimse.get_msg

    def blocking_reads_only(block: bool = False) -> Any:
        return read(block) if block else (None, None)

    dimse.get_msg = blocking_reads_only


@dataclass
class DimseDestination:
    """A C-STORE SCP: ``host``, ``port``, its AE title; the node calls as ``calling_ae``."""

    host: str
    port: int
    ae_title: str
    calling_ae: str = "FRACSIGHT"
    timeout: float = 30
    #: a compressed file (the node's JPEG capture) also offered in Explicit VR Little Endian, and sent
    #: decoded when the peer takes only that: a PACS that stores uncompressed images only (dcmtk's
    #: storescp by default) refused the capture ten times and it was given up
    decompress_fallback: bool = False

    def describe(self) -> str:
        return f"C-STORE {self.ae_title}@{self.host}:{self.port}"

    def deliver(self, paths: Sequence[Path]) -> list[str | None]:
        from pydicom.filereader import read_file_meta_info
        from pynetdicom import _config

        # files go as they are on disk (no decode and re-encode): the exact bytes that were written
        _config.STORE_SEND_CHUNKED_DATASET = True
        outcomes: list[str | None] = [UNAVAILABLE] * len(paths)
        metas: dict[int, tuple[str, str]] = {}
        for i, path in enumerate(paths):
            try:
                meta = read_file_meta_info(path)
                metas[i] = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
            except FileNotFoundError:
                outcomes[i] = "file_missing"
            except Exception:  # not a DICOM file with file meta: it cannot be sent as it is
                outcomes[i] = "file_unreadable"
        send = functools.partial(self._deliver_group, paths, metas=metas, outcomes=outcomes)
        for n, group in enumerate(_association_groups(metas)):
            try:
                for i in self._past_suspects(group, send, lambda k: outcomes[k] is DELIVERED):
                    outcomes[i] = NO_RESPONSE
                    log.warning(
                        "%s broke off the association storing one object (SOP class %s, transfer "
                        "syntax %s) while it stored others: taken as a refusal of that object",
                        self.describe(),
                        *metas[i],
                    )
            except DestinationUnavailable as e:
                if n == 0:
                    raise
                log.warning("%s; the objects left wait for a retry", e)
                break  # what the first associations sent stays sent; the rest wait for a retry
        return outcomes

    @staticmethod
    def _past_suspects(
        group: list[int], send: Callable[[list[int]], object], stored: Callable[[int], bool]
    ) -> list[int]:
        """``send(group)``; where the PACS breaks off the first store of an association, the objects
        after that one are sent on a new association. Where it stores any of them, the objects it
        broke off on are returned: each one it cannot store (``no_response``, a refusal given up
        after the retries); else it takes nothing from us, and that is raised. Backed off whole,
        such an object (first again at every try) held every result behind it for good, the log
        blaming an AE title that was accepted."""
        errors: list[NoStoreResponse] = []
        remaining = group
        while remaining:
            try:
                send(remaining)
                break
            except DestinationUnavailable as e:
                # broken off at once: that object set aside; a PACS that answers nothing (a whole
                # timeout) or cannot be reached ends the batch
                if isinstance(e, NoStoreResponse) and not e.timed_out:
                    errors.append(e)
                    remaining = remaining[remaining.index(e.index) + 1 :]
                    continue
                if not errors:
                    raise
                break
        if errors and not any(stored(i) for i in group):
            raise errors[0]
        return [e.index for e in errors]

    def _deliver_group(
        self,
        paths: Sequence[Path],
        group: list[int],
        metas: dict[int, tuple[str, str]],
        outcomes: list[str | None],
    ) -> None:
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        # One context per SOP class and transfer syntax: the acceptor picks one syntax per context,
        # so a context offering several would leave every file in the others unsendable.
        pairs = {metas[i] for i in group}
        for sop_class, syntax in sorted(pairs):
            ae.add_requested_context(sop_class, syntax)
        for sop_class in sorted(self._fallback_classes(pairs)):
            ae.add_requested_context(sop_class, _EXPLICIT_VR_LE)
        for sop_class in sorted(self._implicit_classes(pairs)):
            ae.add_requested_context(sop_class, _IMPLICIT_VR_LE)
        try:
            assoc = ae.associate(self.host, self.port, ae_title=self.ae_title, evt_handlers=tcp_handlers())
        except OSError as e:  # the host name does not resolve (socket.gaierror), or no address at all
            why = "host name not resolved" if isinstance(e, socket.gaierror) else "no association"
            raise DestinationUnavailable(f"{self.describe()}: {why} ({e.strerror or e})") from None
        if not assoc.is_established:
            if assoc.rejected_contexts and not assoc.accepted_contexts:
                # the peer answered but takes none of these files' SOP classes and syntaxes: they are
                # refused (given up after the retries), not waiting for a destination that is down
                log.warning(
                    "%s accepts none of the %d objects' presentation contexts", self.describe(), len(group)
                )
                for i in group:
                    outcomes[i] = "no_presentation_context"
                return
            if assoc.is_rejected:  # the peer answered and said no: not a network fault
                why = "association rejected (check the calling and called AE titles it accepts)"
            else:  # pynetdicom reports a refused connection as an abort too
                why = "no association (refused, aborted or no answer: check host, port and firewall)"
            raise DestinationUnavailable(f"{self.describe()}: {why}")
        accepted = {(str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in assoc.accepted_contexts}
        _responses_to_the_store_only(assoc)
        answered = False  # any C-STORE response on this association
        try:
            for i in group:
                if not assoc.is_established:
                    break  # the peer went away: the rest stay UNAVAILABLE
                started = time.monotonic()
                try:
                    status = assoc.send_c_store(self._as_accepted(paths[i], metas[i], accepted))
                except (RuntimeError, ValueError):  # the peer accepted no context for this file
                    log.warning(
                        "object not sent: %s does not accept SOP class %s in transfer syntax %s",
                        self.describe(),
                        *metas[i],
                    )
                    outcomes[i] = "no_presentation_context"
                    continue
                code = getattr(status, "Status", None)
                if code is None and not answered:
                    # it took the association and then broke off the store, each try alike: a PACS
                    # that takes no storage from this AE title (Orthanc's DicomAlwaysAllowStore off)
                    # was retried for ever with nothing in the log
                    raise NoStoreResponse(
                        i,
                        f"{self.describe()}: no C-STORE response (it aborted the association, or gave "
                        f"no answer within {self.timeout:g} s: check that it accepts storage from "
                        f"calling AE title {self.calling_ae})",
                        timed_out=time.monotonic() - started >= 0.9 * self.timeout,
                    )
                answered = True
                if code is None:  # no response: connection lost or timed out
                    outcomes[i] = UNAVAILABLE
                    # pynetdicom has lost or aborted the association, yet may still say it is
                    # established: the next store waited out the whole timeout (30 s) on it
                    break
                elif _stored(code):
                    outcomes[i] = DELIVERED
                else:
                    outcomes[i] = f"status_0x{code:04X}"
        finally:
            if assoc.is_established:
                assoc.release()

    def _fallback_classes(self, pairs: set[tuple[str, str]]) -> set[str]:
        """SOP classes of compressed files to offer in Explicit VR Little Endian too, within the
        128 presentation contexts of an association."""
        from pydicom.uid import UID

        if not self.decompress_fallback:
            return set()
        wanted = {sop for sop, syntax in pairs if UID(syntax).is_compressed}
        wanted -= {sop for sop, syntax in pairs if syntax == _EXPLICIT_VR_LE}
        return set(sorted(wanted)[: max(0, _MAX_CONTEXTS - len(pairs))])

    def _implicit_classes(self, pairs: set[tuple[str, str]]) -> set[str]:
        """SOP classes to offer in Implicit VR Little Endian too, within the 128 presentation
        contexts: a PACS configured to take only that (legacy archives, gateways; dcmtk's
        ``storescp +xi``) accepted none of the node's contexts, and got no result ever."""
        wanted = {sop for sop, _ in pairs} - {sop for sop, syntax in pairs if syntax == _IMPLICIT_VR_LE}
        room = _MAX_CONTEXTS - len(pairs) - len(self._fallback_classes(pairs))
        return set(sorted(wanted)[: max(0, room)])

    def _as_accepted(self, path: Path, meta: tuple[str, str], accepted: set[tuple[str, str]]) -> Any:
        """``path`` as it is when the peer takes its SOP class and syntax; else the file read (and,
        with the fallback, a compressed one decoded; its Lossy Image Compression stays "01"), which
        pynetdicom encodes in the syntax the peer took: Explicit or Implicit VR Little Endian."""
        from pydicom.uid import UID

        sop, syntax = meta
        if syntax == _DEFLATED and meta in accepted:
            # handed on as the file, its deflated bytes went out unpadded where their count is odd,
            # which Orthanc drops the association for ("Odd Fragment Length"), and every file after it
            # waited 30 s in vain; read, pynetdicom encodes it again, padded
            import pydicom

            return pydicom.dcmread(path)
        compressed = UID(syntax).is_compressed
        explicit = (sop, _EXPLICIT_VR_LE) in accepted and compressed
        implicit = (sop, _IMPLICIT_VR_LE) in accepted
        if meta in accepted or not (explicit or implicit) or (compressed and not self.decompress_fallback):
            return path  # pynetdicom refuses a file without an accepted context: counted below
        import pydicom

        try:
            ds = pydicom.dcmread(path)
            if compressed:
                ds.decompress(generate_instance_uid=False)  # the same object: a re-send is stored once
        except Exception as e:  # no decoder for it: not sendable to this peer, as before
            raise ValueError(f"cannot decode {syntax} for this peer") from e
        return ds


def _association_groups(metas: dict[int, tuple[str, str]]) -> list[list[int]]:
    """The files in order, cut into runs that need at most 128 presentation contexts each (the
    most one association may propose)."""
    groups: list[list[int]] = []
    contexts: set[tuple[str, str]] = set()
    for i, pair in metas.items():
        if not groups or (pair not in contexts and len(contexts) == _MAX_CONTEXTS):
            groups.append([])
            contexts = set()
        contexts.add(pair)
        groups[-1].append(i)
    return groups


TLS_HINT = (
    "its TLS certificate is not trusted here (SSLError): for a hospital's own certificate authority, "
    "set REQUESTS_CA_BUNDLE to its certificate file (PEM)"
)


# OpenSSL's X509_V_ERR_* codes of a certificate refused for what it says, not for who signed it:
# REQUESTS_CA_BUNDLE cannot help with these
_NOT_THIS_HOST = (62, 64)  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
_CERTIFICATE_DATES = {
    9: "its TLS certificate is not valid yet (SSLError): check the clocks of this machine and of the service",
    10: "its TLS certificate has expired (SSLError): the service needs a new one "
    "(or this machine's clock is wrong)",
}


def _certificate_error(error: ssl.SSLCertVerificationError) -> str:
    """Why the service's certificate was refused, and what to do: a certificate made out to
    another host name, one out of its dates, else (an authority not known here) :data:`TLS_HINT`."""
    code = getattr(error, "verify_code", None)
    if code in _NOT_THIS_HOST:
        # OpenSSL names the host asked for: "... certificate is not valid for 'HOST'."
        named = re.search(r"'([^']*)'", getattr(error, "verify_message", "") or "")
        host = named.group(1) if named else "this host"
        return (
            f"its TLS certificate does not name {host} (SSLError): use the host name the certificate "
            f"is made out to in the URL, or have the service given a certificate that names {host}"
        )
    return _CERTIFICATE_DATES.get(code, TLS_HINT)


def connection_error(error: Exception) -> str:
    """A failed HTTP connection in words, without its message (it quotes the URL): what went wrong
    when the causes tell (a host name that does not resolve, a refused connection, no answer in
    time, as for a C-STORE destination), the exception's type, and what to do when it is the
    service's certificate."""
    import ssl

    import requests

    causes: list[BaseException] = []
    pending: list[object] = [error]
    while pending and len(causes) < 16:  # requests -> urllib3 (.reason) -> the socket's error
        cause = pending.pop()  # ssl.SSLError's .reason is a str ("WRONG_VERSION_NUMBER")
        if isinstance(cause, BaseException) and all(cause is not seen for seen in causes):
            causes.append(cause)
            pending += [cause.__cause__, cause.__context__, getattr(cause, "reason", None)]
    if isinstance(error, requests.exceptions.SSLError):
        refused = next((c for c in causes if isinstance(c, ssl.SSLCertVerificationError)), None)
        if refused is not None:
            return _certificate_error(refused)
        # a plain-HTTP service called with https:// answers the handshake with no TLS at all
        why = "check that the service speaks https on this port"
        return f"TLS handshake failed ({type(error).__name__}): {why}"
    meanings: tuple[tuple[type[BaseException], str], ...] = (  # the first that matches
        (socket.gaierror, "host name not resolved"),
        (ConnectionRefusedError, "connection refused: check host, port and firewall"),
        # http.client.RemoteDisconnected is one: the service stopped or restarted mid-request
        (ConnectionResetError, "the service closed the connection (stopped or restarting?): try again"),
        (TimeoutError, "no answer in time"),
        (requests.Timeout, "no answer in time"),
    )
    why = next((words for kind, words in meanings if any(isinstance(c, kind) for c in causes)), None)
    return f"{why} ({type(error).__name__})" if why else type(error).__name__


def http_status(status: int, login: Login | None) -> str:
    """A DICOMweb service's HTTP error status, with what to check where a status tells."""
    give = f"set {USER_ENV} and {PASSWORD_ENV}, or {TOKEN_ENV} (docs/dicom.md)"
    if login is None:  # a proxy checking tokens may answer 403 where the service itself says 401
        refused, forbidden = f"the service asks for a login: {give}", f"refused without a login? {give}"
    elif isinstance(login, BearerToken):
        refused = "the bearer token was refused: check that it is the service's and has not expired"
        forbidden = "the token was refused or may not do this on the service (expired?)"
    else:
        refused = f"the user name or password was refused: check {USER_ENV} and the password"
        forbidden = "the user may not do this on the service"
    hints = {
        401: refused,
        403: forbidden,
        404: "no DICOMweb service at this URL: check its path, e.g. http://HOST:8042/dicom-web for Orthanc",
    }
    hints[405] = hints[404]
    hint = hints.get(status)
    return f"HTTP {status}: {hint}" if hint else f"HTTP {status}"


def request_error(error: Exception, login: Login | None) -> str:
    """A failed DICOMweb request in words, without its message (it quotes the URL, which may hold a
    Study Instance UID): :func:`http_status`, an answer that is not DICOMweb JSON (a web page at
    that URL), or :func:`connection_error`."""
    import requests

    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, requests.HTTPError) and status:
        return http_status(status, login)
    if isinstance(error, requests.exceptions.InvalidJSONError):
        return (
            "its answer is not DICOMweb JSON: check that the URL is the service's DICOMweb root, "
            "e.g. http://HOST:8042/dicom-web for Orthanc"
        )
    return connection_error(error)


@dataclass
class StowDestination:
    """A DICOMweb STOW-RS service (the base URL of its DICOMweb root, e.g. ``.../dicom-web``),
    reached with ``login`` when it needs one (a user name and password, or a bearer token)."""

    url: str
    # as the C-STORE destination's: a request to a service that never answers ends within the
    # node's stop grace (compose.yaml: 45 s); 60 s held a SIGTERM for nearly a minute
    timeout: float = 30
    login: Login | None = None

    def describe(self) -> str:
        return f"STOW-RS {shown_url(redacted_url(self.url), self.login)}"

    def deliver(self, paths: Sequence[Path]) -> list[str | None]:
        import pydicom

        outcomes: list[str | None] = [UNAVAILABLE] * len(paths)
        datasets: list[tuple[int, Any]] = []
        for i, path in enumerate(paths):
            try:
                datasets.append((i, pydicom.dcmread(path)))
            except FileNotFoundError:
                outcomes[i] = "file_missing"
            except Exception:
                outcomes[i] = "file_unreadable"
        if datasets:
            self._store_all(datasets, outcomes)
        return outcomes

    def store(self, datasets: Sequence[Any]) -> list[str | None]:
        """:meth:`deliver` for pydicom datasets in memory."""
        outcomes: list[str | None] = [UNAVAILABLE] * len(datasets)
        if datasets:
            self._store_all(list(enumerate(datasets)), outcomes)
        return outcomes

    def _store_all(self, datasets: list[tuple[int, Any]], outcomes: list[str | None]) -> None:
        from fracsight.dicom.dicomweb import web_client

        try:  # a token file being renewed (missing, empty for a moment): tried again with the back-off
            client = web_client(self.url, self.timeout, self.login)
        except LoginError as e:
            raise DestinationUnavailable(f"{self.describe()}: {e}") from None
        try:
            self._store(client, datasets, outcomes)
        except _ServerError as e:
            if len(datasets) == 1:
                if e.status == _TOO_LARGE:  # too large alone: refused, not waiting for a service that is up
                    outcomes[datasets[0][0]] = f"http_{e.status}"
                    return
                raise DestinationUnavailable(f"{self.describe()}: HTTP {e.status}") from None
            # a 5xx for a whole request may come from one object the service chokes on, and a 413
            # from a front end's limit on a request's size (nginx: 1 MB) that each object alone fits:
            # one request per object tells them apart, so that none holds the others back for good
            self._store_one_by_one(client, datasets, outcomes)

    def _store_one_by_one(
        self, client: Any, datasets: list[tuple[int, Any]], outcomes: list[str | None]
    ) -> None:
        errors: dict[int, int] = {}
        for item in datasets:
            try:
                self._store(client, [item], outcomes)
            except _ServerError as e:
                errors[item[0]] = e.status
            except DestinationUnavailable:
                break  # the rest stay UNAVAILABLE and wait with the back-off
        stored = any(outcomes[i] is DELIVERED for i, _ in datasets)
        if not stored and _TOO_LARGE not in errors.values():
            raise DestinationUnavailable(f"{self.describe()}: HTTP {max(errors.values(), default=500)}")
        for i, status in errors.items():
            # too large alone: refused; a 5xx while the service stored others in the same attempt:
            # refused too; else it stays UNAVAILABLE (a proxy's 413 says nothing of the service behind)
            if status == _TOO_LARGE or stored:
                outcomes[i] = f"http_{status}"

    def _store(self, client: Any, datasets: list[tuple[int, Any]], outcomes: list[str | None]) -> None:
        """One STOW-RS request; sets the outcome of each object it answers for."""
        from xml.etree.ElementTree import ParseError

        import requests

        from fracsight.dicom.dicomweb import PostRedirected

        try:
            response = client.store_instances([ds for _, ds in datasets])
        except (requests.ConnectionError, requests.Timeout) as e:
            raise DestinationUnavailable(f"{self.describe()}: {connection_error(e)}") from e
        except requests.HTTPError as e:
            status = e.response.status_code if e.response is not None else 0
            if status >= 500 or status == _TOO_LARGE:
                raise _ServerError(status) from e
            # the service is missing at that URL (a PACS without its DICOMweb plugin answers 404),
            # busy, or refuses us (401, 403): wait for it, never give the results up
            if status in (401, 403, 404, 405, 408, 429):
                raise DestinationUnavailable(f"{self.describe()}: {http_status(status, self.login)}") from e
            for i, _ in datasets:
                outcomes[i] = f"http_{status}"
            return
        except PostRedirected as e:
            raise DestinationUnavailable(f"{self.describe()}: {e}") from e
        # an answer that is not DICOM JSON/XML, or JSON that is no store response (`[]`, `null`, an
        # error object: dicomweb-client's reading of it raised AttributeError or TypeError, a
        # traceback from `dicom study` and an ERROR line a second from the node, without back-off)
        except (ValueError, TypeError, AttributeError, KeyError, ParseError) as e:
            raise DestinationUnavailable(f"{self.describe()}: {_NOT_A_STOW_RESPONSE}") from e
        stored = {_uid(item) for item in _items(response, "ReferencedSOPSequence")}
        failed = {
            _uid(item): int(item.get("FailureReason", 0) or 0)
            for item in _items(response, "FailedSOPSequence")
        }
        if not stored and not failed:
            # a 200 with no store response (a single sign-on page the POST was redirected to, an
            # empty body) confirms nothing: counted as delivered, results were lost for good
            raise DestinationUnavailable(f"{self.describe()}: {_NOT_A_STOW_RESPONSE}")
        for i, ds in datasets:
            uid = str(ds.SOPInstanceUID)
            if uid in failed:
                outcomes[i] = f"stow_failure_0x{failed[uid]:04X}"
            elif uid in stored:
                outcomes[i] = DELIVERED
            # neither: unconfirmed, it stays UNAVAILABLE and is sent again


def _items(response: Any, keyword: str) -> list[Any]:
    return list(getattr(response, keyword, None) or [])


def _uid(item: Any) -> str:
    return str(item.get("ReferencedSOPInstanceUID", ""))


_NOT_A_STOW_RESPONSE = (
    "answered without a STOW-RS store response listing the objects (a login page, or a proxy in "
    "front of the service?): nothing counted as stored"
)


_TOO_LARGE = 413  # Content Too Large


class _ServerError(Exception):
    """A STOW-RS request answered with HTTP 5xx (the service is down, or it failed on an object) or
    413 (the request is larger than the service or a proxy in front of it takes)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class Sender(threading.Thread):
    """Drains the spool's outbox to one destination, with retries and exponential back-off."""

    def __init__(
        self,
        spool: Spool,
        destination: Destination,
        *,
        batch_size: int = 32,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        give_up_after: int = 10,
    ) -> None:
        super().__init__(name="fracsight-sender", daemon=True)
        self.spool = spool
        self.destination = destination
        self.batch_size = batch_size
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.give_up_after = give_up_after
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._failures = 0  # consecutive attempts that could not reach the destination
        # While it cannot be reached, no batch is tried before this time: results queued during an
        # outage wait for the back-off instead of each trying at once (and doubling it)
        self._retry_at = 0.0
        self._unrecorded = 0  # consecutive batches whose outcome spool.db could not take

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def _delay(self, attempts: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))

    def run(self) -> None:
        while not self.stopping.is_set():
            self.wake.clear()  # before looking: results queued from here on wake the sleep below
            try:
                if not self.send_once():
                    self._sleep()
                self._unrecorded = 0
            except sqlite3.OperationalError as e:  # only spool.db: the destinations raise their own
                self._spool_unavailable(e)
            except Exception as e:  # the sender must outlive any one bad batch
                log_failure(log, e, "sender: unexpected error; retrying shortly")
                self.stopping.wait(self.base_delay)

    def _spool_unavailable(self, error: sqlite3.Error) -> None:
        """``spool.db`` could not record a batch's outcome (its disk full, "database or disk is
        full"): the batch is sent again (same UIDs: the PACS keeps one) only after a back-off, not
        every second until there is room."""
        from fracsight.dicom.result_pool import spool_write_error

        self._unrecorded += 1
        delay = self._delay(self._unrecorded)
        log.warning(
            "sender: the outcome of a batch not recorded in spool.db (%s); sent again in %.0f s",
            spool_write_error(error),
            delay,
        )
        self.stopping.wait(delay)

    def _unreachable(self, rows: list[OutboxRow], code: str = UNAVAILABLE) -> float:
        """Back off after the destination could not be reached or take them; returns the delay."""
        self._failures += 1
        delay = self._delay(self._failures)
        self._retry_at = time.time() + delay
        self.spool.retry_later(rows, delay, code, give_up_after=0)
        return delay

    def _sleep(self) -> None:
        due = self.spool.next_due()
        if due is not None:
            due = max(due, self._retry_at)  # nothing is tried before the back-off ends: no busy polling
        timeout = 1.0 if due is None else min(1.0, max(0.02, due - time.time()))
        self.wake.wait(timeout)

    def _waiting(self) -> int:
        """The result objects in the outbox not yet sent (what `dicom status` calls to_send)."""
        return self.spool.backlog()["to_send"]

    def send_once(self) -> bool:
        """Send one batch of due objects; False when nothing was due."""
        if time.time() < self._retry_at:
            return False
        rows = self.spool.due(self.batch_size)
        if not rows:
            return False
        try:
            outcomes = self.destination.deliver([r.path for r in rows])
        except DestinationUnavailable as e:
            delay = self._unreachable(rows)
            # the whole backlog, not this try's batch (capped at batch_size: "32 wait" whatever it was)
            log.warning("%s; %d result objects wait, next try in %.1f s", e, self._waiting(), delay)
            return True
        delivered = [r for r, o in zip(rows, outcomes, strict=True) if o is DELIVERED]
        self.spool.mark_sent(delivered)

        def waiting_for(outcome: str | None) -> bool:
            # out of resources for every object of the attempt: the PACS is, and it is waited for; for
            # some while it stored others: a refusal of those (Orthanc answers 0xA700 for an object it
            # can never store), which would otherwise hold the back-off over every result for good
            return outcome == UNAVAILABLE or (not delivered and outcome is not DELIVERED and waits(outcome))

        waiting = [(r, o) for r, o in zip(rows, outcomes, strict=True) if waiting_for(o)]
        if waiting:
            codes = sorted({o for _, o in waiting})
            delay = self._unreachable([r for r, _ in waiting], codes[0])
            if codes != [UNAVAILABLE]:
                log.warning(
                    "%s is out of resources (%s) for %d result objects; next try in %.1f s",
                    self.destination.describe(),
                    ", ".join(codes),
                    len(waiting),
                    delay,
                )
        elif delivered:
            if self._failures:  # the log said it waited; it says the wait is over too
                log.info(
                    "%s is reachable again: %d result objects delivered, %d more to send",
                    self.destination.describe(),
                    len(delivered),
                    self._waiting(),
                )
            self._failures = 0
        by_code: dict[str, list[OutboxRow]] = {}
        for r, o in zip(rows, outcomes, strict=True):
            if o is not DELIVERED and not waiting_for(o):
                by_code.setdefault(o, []).append(r)
        for code, refused in by_code.items():
            give_up = 1 if code == "file_missing" else self.give_up_after
            delay = self._delay(max(r.attempts for r in refused) + 1)
            failed = self.spool.retry_later(refused, delay, code, give_up_after=give_up)
            log.warning(
                "%s refused %d result objects (%s); %d given up",
                self.destination.describe(),
                len(refused),
                code,
                failed,
            )
        return True
