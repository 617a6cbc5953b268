"""The node's DICOM listener: C-ECHO and C-STORE (pynetdicom), durable before acknowledged.

Who may call: only the calling AE titles listed (``allowed``); anyone else is rejected at
association ("calling AE title not recognised"), as is a call to another AE title than the
node's. What is stored: every storage SOP class is negotiated (in any transfer syntax pynetdicom
knows), so a router that forwards whole studies is not turned away, but each instance meets
:func:`fracsight.io.dicom_gate.check_dicom_object` before it is kept:

=========  ====================================================================================
Status     When
=========  ====================================================================================
0x0000     stored in the spool (fsynced, committed), or already there (a re-send: kept once); or
           an object without an image to assess (a report, a presentation state, fracsight's own
           result), not kept: counted as ``ignored{code=not_an_image|own_result}``, so that a
           study sent whole is not stopped at it
0x0122     Refused: SOP Class not supported. An image that is no projection radiograph (CT, MR...);
           the Error Comment names the modality. Counted as ``refused{code=unsupported_modality}``
0xA700     Refused: out of resources. The spool could not write it (disk full...); send again
0xA900     Error: data set does not match SOP Class. No SOP Instance / Study Instance UID, no
           pixel data, or uncompressed pixel data shorter than Rows x Columns say
0xC210     Error: cannot understand. The data set does not decode
=========  ====================================================================================

Nothing is kept of a refused instance. Log lines name an instance by its spool key (a hash)
and never carry a header value other than codes (Modality) and AE titles.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pydicom.uid import UID

from fracsight.dicom._logging import log_failure
from fracsight.dicom._tcp import tcp_handlers
from fracsight.dicom.spool import Spool, instance_key, study_key
from fracsight.errors import UnsupportedModalityError
from fracsight.io.dicom_gate import check_dicom_object

__all__ = ["STATUS", "StoreSCP", "check_received"]

log = logging.getLogger(__name__)

STATUS = {
    "success": 0x0000,
    "sop_class_not_supported": 0x0122,
    "out_of_resources": 0xA700,
    "does_not_match_sop_class": 0xA900,
    "cannot_understand": 0xC210,
}


_TRANSFER_SYNTAX_NOT_SUPPORTED = 0x04  # a presentation context's result (PS3.8 9.3.3.2)
_MAX_ASSOCIATIONS = 16  # served at once; one more is rejected (transient: local limit exceeded)
# Seconds a connection may take to ask for its association (A-ASSOCIATE-RQ, sent at once by every
# sender): pynetdicom's 30 s let 16 connections that never asked (a hung probe, a port scan) hold
# every association slot, and the modalities were rejected, for as long as they reconnected.
ACSE_TIMEOUT_S = 10
# (A-ASSOCIATE-RJ result source, diagnostic) -> the counter's reason and the log's words
_REJECTIONS = {
    (0x01, 0x03): ("calling_ae_title", "calling AE title not recognised: not in --allow"),
    (0x01, 0x07): ("called_ae_title", "called AE title not recognised: not the node's --ae-title"),
    (0x02, 0x01): ("user_identity", "user identity not accepted"),
    (0x03, 0x02): (
        "too_many_associations",
        f"too many associations at once (the node takes {_MAX_ASSOCIATIONS}): the caller should try later",
    ),
}


class Refusal(Exception):
    """An instance the node does not keep: the DIMSE status, a counter code and an error comment."""

    def __init__(self, status: int, code: str, comment: str) -> None:
        super().__init__(comment)
        self.status, self.code, self.comment = status, code, comment


def _uid(ds: Any, keyword: str) -> str:
    value = str(ds.get(keyword, "") or "").strip().rstrip("\0")
    if not value or len(value) > 64 or any(c not in "0123456789." for c in value):
        raise Refusal(STATUS["does_not_match_sop_class"], "missing_uid", f"no valid {keyword}")
    return value


def check_received(ds: Any, transfer_syntax: Any) -> tuple[str, str]:
    """Check a received data set before it is kept; ``(sop_instance_uid, study_uid)``.

    Raises :class:`Refusal` with the DIMSE status to answer.
    """
    try:
        modality = ds.get("Modality")
        sop_class = ds.get("SOPClassUID")
        model_name = ds.get("ManufacturerModelName")
    except Exception as e:  # pydicom parses elements lazily: garbage fails here
        raise Refusal(STATUS["cannot_understand"], "undecodable_dataset", "cannot decode the data set") from e
    try:
        check_dicom_object(modality, sop_class, model_name=model_name)
    except UnsupportedModalityError as e:
        if e.not_an_image:
            # a report, a presentation state, fracsight's own result: nothing to assess, and a
            # failure status for it ended a study sent whole (Orthanc's store job, and most
            # senders', stop at the first), so that the radiographs after it never came
            code = "own_result" if e.own_output else "not_an_image"
            raise Refusal(STATUS["success"], code, _gate_comment(e)) from e
        raise Refusal(STATUS["sop_class_not_supported"], e.code, _gate_comment(e)) from e
    try:
        sop_uid, study_uid = _uid(ds, "SOPInstanceUID"), _uid(ds, "StudyInstanceUID")
        _uid(ds, "SeriesInstanceUID")  # the results' new series is filed beside it: none, no results
        if "PixelData" not in ds:
            raise Refusal(STATUS["does_not_match_sop_class"], "no_pixel_data", "no Pixel Data")
        _check_size(ds)
        if transfer_syntax is not None and not transfer_syntax.is_compressed:
            _check_native_length(ds)
    except Refusal:
        raise
    except Exception as e:
        raise Refusal(STATUS["cannot_understand"], "undecodable_dataset", "cannot decode the data set") from e
    return sop_uid, study_uid


def _gate_comment(e: UnsupportedModalityError) -> str:
    """What the gate found an instance not kept to be, in fixed words and at most a code: for the
    log, and the Error Comment of a refusal (cut to 64 characters there)."""
    if e.own_output:
        return "a result object fracsight wrote"
    what = (
        f"SOP Class {UID(e.sop_class).name}"
        if e.sop_class
        else f"Modality {e.modality or '(not a code string)'}"
    )
    if e.not_an_image:
        return f"{what}: no image to assess"
    return f"{what} refused: {'not a radiograph' if e.sop_class else 'projection radiographs only'}"


def _check_size(ds: Any) -> None:
    """Refuse at C-STORE an image the reader would refuse for its size: it was acknowledged and
    spooled (a 392 MB film), then decoded in full only to be refused as ``image_too_large``."""
    from fracsight.io import DEFAULT_MAX_PIXELS

    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows * columns > DEFAULT_MAX_PIXELS:
        raise Refusal(
            STATUS["cannot_understand"],
            "image_too_large",
            f"{rows} x {columns} pixels: over the reader's {DEFAULT_MAX_PIXELS:,}-pixel limit",
        )


def _check_native_length(ds: Any) -> None:
    from fracsight.io._dicom import native_pixel_bits

    rows, columns = int(ds.Rows), int(ds.Columns)
    bits, samples = int(ds.BitsAllocated), int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation") or "")
    expected = (native_pixel_bits(rows, columns, frames, bits, samples, photometric) + 7) // 8
    if rows < 1 or columns < 1 or len(ds.PixelData) < expected:
        raise Refusal(
            STATUS["does_not_match_sop_class"],
            "corrupt_image",
            "Pixel Data shorter than Rows x Columns x Bits Allocated",
        )


def decodable(syntaxes: Sequence[str]) -> list[str]:
    """The transfer syntaxes of ``syntaxes`` whose pixels the reader decodes (every uncompressed
    one). The node accepted all that pynetdicom knows: an image in JPEG 2000 Part 2, HEVC or JPEG XL
    was acknowledged as stored, then dropped by the reader, the sender none the wiser; now the
    association offers it no such context, and a sender that can transcode falls back to one the
    node reads."""
    from pydicom.uid import UID

    from fracsight.io._dicom import decoder_available

    return [syntax for syntax in syntaxes if decoder_available(UID(syntax))]


class StoreSCP:
    """A pynetdicom Storage SCP writing into a :class:`Spool`; ``on_stored`` wakes the worker."""

    def __init__(
        self,
        spool: Spool,
        *,
        ae_title: str,
        host: str,
        port: int,
        allowed: Sequence[str],
        on_stored: Callable[[], None] = lambda: None,
    ) -> None:
        if not allowed:
            raise ValueError("name at least one calling AE title allowed to send (--allow)")
        self.spool = spool
        self.ae_title = ae_title
        self.address = (host, port)
        self.allowed = list(allowed)
        self.on_stored = on_stored
        self._server: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.ae_title)
        syntaxes = decodable(ALL_TRANSFER_SYNTAXES)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification)
        ae.require_calling_aet = self.allowed
        ae.require_called_aet = True
        ae.maximum_associations = _MAX_ASSOCIATIONS
        ae.acse_timeout = ACSE_TIMEOUT_S
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_aborted),
            *tcp_handlers(),
        ]
        try:
            self._server = ae.start_server(self.address, block=False, evt_handlers=handlers)
        except OSError as e:  # named, so that a taken port is not confused with the metrics one
            raise OSError(e.errno, e.strerror, f"the DICOM port {self.address[0]}:{self.address[1]}") from e
        self.address = self._server.server_address[:2]
        log.info("listening as %s on %s:%d; callers allowed: %s", self.ae_title, *self.address, self.allowed)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    @property
    def port(self) -> int:
        return int(self.address[1])

    # ---- handlers (run in the association's thread) ----------------------------------------------
    def _on_rejected(self, event: Any) -> None:
        calling = event.assoc.requestor.ae_title
        answer = event.assoc.acceptor.primitive  # the A-ASSOCIATE-RJ sent: its source and diagnostic
        source, diagnostic = getattr(answer, "result_source", None), getattr(answer, "diagnostic", None)
        reason, why = _REJECTIONS.get(
            (source, diagnostic), ("other", f"A-ASSOCIATE-RJ source {source}, diagnostic {diagnostic}")
        )
        self.spool.count("associations_rejected", reason)
        if reason == "called_ae_title":  # the title it called: a lower-case or misspelt setting, seen at once
            request = getattr(event.assoc.requestor, "primitive", None)
            why += f"; it called {getattr(request, 'called_ae_title', '?')!r}"
        log.warning("association from %r rejected (%s)", calling, why)

    def _on_aborted(self, event: Any) -> None:
        """pynetdicom aborts an association none of whose presentation contexts it accepts (a
        private SOP class, a query): said here, else the caller's failure left no trace."""
        assoc = event.assoc
        if assoc.is_acceptor and not assoc.accepted_contexts and assoc.rejected_contexts:
            rejected = assoc.rejected_contexts
            self.spool.count("associations_rejected", "no_presentation_context")
            if all(c.result == _TRANSFER_SYNTAX_NOT_SUPPORTED for c in rejected):
                # SOP classes the node takes, in syntaxes it cannot decode: not "takes none of the
                # SOP classes", which sent the caller's administrator to the wrong setting
                offered = sorted({UID(c.transfer_syntax[0]).name for c in rejected})
                what = "transfer syntaxes it offers (%s): offer Explicit or Implicit VR Little Endian too"
            else:
                offered = sorted({str(c.abstract_syntax) for c in rejected})
                what = "SOP classes it offers (%s)"
            log.warning(
                f"association from %r aborted: the node takes none of the {what}",
                assoc.requestor.ae_title,
                ", ".join(offered[:5]) + (", ..." if len(offered) > 5 else ""),
            )

    def _on_store(self, event: Any) -> Any:
        calling = event.assoc.requestor.ae_title
        try:
            ds = event.dataset
            transfer_syntax = event.context.transfer_syntax
            sop_uid, study_uid = check_received(ds, transfer_syntax)
        except Refusal as refusal:
            return self._refuse(refusal, calling)
        except Exception:  # whatever a peer sends, the node answers and stays up
            refusal = Refusal(STATUS["cannot_understand"], "undecodable_dataset", "cannot decode")
            return self._refuse(refusal, calling)
        key = instance_key(sop_uid)
        try:
            added = self.spool.add_instance(key, study_uid, event.encoded_dataset(include_meta=True))
        except (OSError, sqlite3.Error) as e:  # a full disk: the file or the database's journal
            log_failure(log, e, "instance %s not stored: spool write failed", key)
            refusal = Refusal(STATUS["out_of_resources"], "spool_write_failed", "spool write failed")
            return self._refuse(refusal, calling)
        if added:
            log.info("stored instance %s (study %s)", key, study_key(study_uid))
            self.on_stored()
        else:
            log.info("instance %s received again: already in the spool, kept once", key)
        return STATUS["success"]

    def _refuse(self, refusal: Refusal, calling: str) -> Any:
        """Count and log ``refusal`` (with the caller, and the Error Comment: fixed words and at
        most a Modality code, never a header's free text) and answer it."""
        from pydicom.dataset import Dataset

        if refusal.status == STATUS["success"]:  # no image (a report...): acknowledged, not kept
            try:
                self.spool.count("ignored", refusal.code)
            except sqlite3.Error as e:
                log_failure(log, e, "instance not counted")
            log.info(
                "C-STORE from %r acknowledged, not kept (%s): %s", calling, refusal.code, refusal.comment
            )
            return STATUS["success"]
        try:
            self.spool.count("refused", refusal.code)
        except sqlite3.Error as e:  # the spool's disk is full: the answer matters more than the count
            log_failure(log, e, "refusal not counted")
        log.warning(
            "C-STORE from %r refused with 0x%04X (%s): %s",
            calling,
            refusal.status,
            refusal.code,
            refusal.comment,
        )
        status = Dataset()
        status.Status = refusal.status
        status.ErrorComment = refusal.comment[:64]  # an LO: 64 characters at most
        return status
