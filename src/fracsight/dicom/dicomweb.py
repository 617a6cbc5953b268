"""Processing one study named by its UID over DICOMweb: QIDO-RS to list it, WADO-RS to fetch its
images, STOW-RS to store the results (dicomweb-client).

Each image is read with the model's reader and predicted exactly as the node and ``fracsight
predict`` do; non-radiographs (by the QIDO Modality and SOP Class, before anything is fetched,
then by the reader) get no results. The study gets its verdict over the predicted images, and
all result objects go to the STOW-RS service in one request. Their SOP Instance UIDs are derived
from the sources', the bundle and the operating point, so running the command again on a study
re-sends the same objects, which the PACS stores once.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fracsight.dicom.login import Login
from fracsight.dicom.results_context import NODE_KINDS
from fracsight.dicom.sender import DELIVERED, DestinationUnavailable, StowDestination
from fracsight.dicom.spool import instance_key, study_key
from fracsight.errors import FracsightError, IncompleteStudyError, UnsupportedModalityError
from fracsight.io.dicom_gate import RESULT_MODEL_NAME, check_dicom_object

if TYPE_CHECKING:
    from fracsight.inference import Predictor

__all__ = ["StudyOutcome", "process_study", "web_client"]


def web_client(url: str, timeout: float, login: Login | None = None) -> Any:
    """A dicomweb-client for ``url`` (with ``login``: basic authentication or a bearer token) that tries each
    request once: its default retries (five, with exponential waits) held a failed request for
    about 30 s, longer than the node's own back-off and than a user waits for ``fracsight dicom
    study`` to say the service is down."""
    import requests
    from dicomweb_client import DICOMwebClient

    session = requests.Session()
    session.hooks["response"].extend([_refuse_a_post_turned_get, _bare_media_type])
    if login is not None:
        session.auth = login.auth()
    client = DICOMwebClient(url, session=session, timeout=timeout)
    client.set_http_retry_params(retry=False)
    # dicomweb-client sends its own Host header, read with a pattern that drops the port and cuts
    # an IPv6 address at its first colon ("Host: ["), which nginx and Apache answer with 400
    client.host = urlsplit(url).netloc.rpartition("@")[2]
    return client


log = logging.getLogger(__name__)

_DICOM_MEDIA_TYPES = (
    "application/dicom+json",
    "application/json",
    "application/dicom+xml",
    "application/xml",
)


class PostRedirected(Exception):
    """A STOW-RS request answered with a redirect that HTTP clients follow as a GET (301, 302,
    303): the results would not be sent (the GET got the study list back). A proxy sending
    ``http://`` on to ``https://`` does this; the URL to give is where it points."""

    def __init__(self, status: int, location: str) -> None:
        super().__init__(status, location)
        self.status, self.location = status, location

    def __str__(self) -> str:
        return (
            f"redirected (HTTP {self.status}) to {self.location}, where a POST is not followed: give that URL"
        )


def _refuse_a_post_turned_get(response: Any, *_: Any, **__: Any) -> Any:
    if response.request.method == "POST" and response.status_code in (301, 302, 303):
        from urllib.parse import urljoin

        from fracsight.dicom.login import redacted_url

        where = urljoin(response.url, response.headers.get("Location", ""))
        raise PostRedirected(response.status_code, redacted_url(where))
    return response


def _bare_media_type(response: Any, *_: Any, **__: Any) -> Any:
    """A DICOM JSON or XML answer's Content-Type without its parameters: dicomweb-client reads the
    answer of a STOW-RS request only when the type is exactly one of these, and took
    ``application/dicom+json; charset=utf-8`` (as PS3.18 allows) for no answer at all."""
    kind = response.headers.get("Content-Type", "")
    bare = kind.split(";", 1)[0].strip().lower()
    if bare in _DICOM_MEDIA_TYPES and bare != kind:
        response.headers["Content-Type"] = bare
    return response


_SOP_CLASS, _MODALITY, _MODEL_NAME = "00080016", "00080060", "00081090"
_SERIES_UID, _SOP_UID = "0020000E", "00080018"
_STUDY_INSTANCES = "00201208"  # NumberOfStudyRelatedInstances
_UID_VALUE = "0040A124"  # UID: the value of a UIDREF content item (a Tracking UID among them)


@dataclass
class StudyOutcome:
    """What ``fracsight dicom study`` did (no identifiers: keys are hashes of the UIDs)."""

    study: str
    predicted: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # instance key -> error code
    # instance key -> retrieve_http_<status>: the service failed to return it (the others still go);
    # retrieve_not_dicom: it answered with something else (a login page, a proxy's page)
    not_retrieved: dict[str, str] = field(default_factory=dict)
    own_results: int = 0  # fracsight's result objects already in the study: not read, not refused
    # other objects without an image (a report, a key object, a presentation state): no view, as the
    # node acknowledges them without keeping them (they were "refused: unsupported_modality")
    not_images: int = 0
    stored: int = 0
    failed: int = 0
    failed_codes: dict[str, int] = field(default_factory=dict)  # why: a count per outcome code
    decision: str | None = None
    fracture_probability: float | None = None
    study_error: str | None = None  # why there is no study verdict (two patients under one UID, ...)

    @property
    def complete(self) -> bool:
        """Every radiograph retrieved, every result stored, and the verdict made where there are images."""
        return not (self.failed or self.not_retrieved or self.study_error)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "study": self.study,
            "predicted": len(self.predicted),
            "refused": dict(self.refused),
            "not_retrieved": dict(self.not_retrieved),
            "own_results_skipped": self.own_results,
            "objects_without_an_image_skipped": self.not_images,
            "result_objects_stored": self.stored,
            "result_objects_failed": self.failed,
            "study_decision": self.decision,
        }
        if self.failed_codes:
            out["result_objects_failed_codes"] = dict(self.failed_codes)
        if self.fracture_probability is not None:
            out["study_fracture_probability"] = round(self.fracture_probability, 6)
        if self.study_error is not None:
            out["study_error"] = self.study_error
        return out


_MAX_INSTANCES = 100_000  # far above any radiograph study: ends the paging of a service that ignores offset


def _study_instances(client: Any, study_uid: str, study: str) -> list[dict[str, Any]]:
    """Every instance of the study, page by page (QIDO-RS ``offset``), each once.

    dicomweb-client's own paging (``get_remaining``) asked a service that ignores ``offset`` for the
    same page for ever, and took a service's result limit for the end of the study: a verdict on
    11 of 25 images, exit 0. Here a page with nothing new ends the listing, and a listing shorter
    than the study's NumberOfStudyRelatedInstances is an :class:`IncompleteStudyError`."""
    # counted first: an image stored while the study is listed can only make the listing longer
    studies = _dicom_json(
        client.search_for_studies(search_filters={"StudyInstanceUID": study_uid}, fields=[_STUDY_INSTANCES])
    )
    counts = [_value(item, _STUDY_INSTANCES) or "" for item in studies]
    held = max((int(n) for n in counts if n.isdigit()), default=0)
    # by series and instance: one SOP Instance UID a PACS holds in two series (results of a side
    # corrected, filed again) is two instances of its count; by UID alone the listing fell short of
    # the count on every run after, "a limit on its search results?"
    found: dict[tuple[str | None, str], dict[str, Any]] = {}
    received = 0
    while len(found) <= _MAX_INSTANCES:
        page = _dicom_json(
            client.search_for_instances(
                study_instance_uid=study_uid, fields=[_MODALITY, _SOP_CLASS, _MODEL_NAME], offset=received
            )
        )
        received += len(page)
        new = {
            key: item
            for item in page
            if (uid := _value(item, _SOP_UID)) and (key := (_value(item, _SERIES_UID), uid)) not in found
        }
        if not new:
            break
        found.update(new)
    if not found:
        raise LookupError(f"the DICOMweb service holds no instance of study {study} (hashed UID)")
    if len(found) > _MAX_INSTANCES:
        raise IncompleteStudyError(
            f"the DICOMweb service listed more than {_MAX_INSTANCES} instances of study {study} "
            "(hashed UID), page after page: does it ignore QIDO-RS offset?"
        )
    if len(found) < held:
        raise IncompleteStudyError(
            f"the DICOMweb service listed {len(found)} of the {held} instances of study {study} "
            "(hashed UID): a limit on its search results (Orthanc: LimitFindInstances)? No verdict "
            "is made on part of a study; raise the limit, or send the study to the node"
        )
    return list(found.values())


def _dicom_json(answer: Any) -> list[dict[str, Any]]:
    """A QIDO-RS answer, checked to be DICOM JSON (a list of objects): Orthanc's REST root, given
    without ``/dicom-web``, answers a search with a list of its own IDs (a traceback followed)."""
    import requests

    if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
        raise requests.exceptions.InvalidJSONError("a search answer that is not a list of DICOM JSON objects")
    return answer


def _earlier_verdicts(
    client: Any, study_uid: str, own: Sequence[tuple[str, str]], predictor: Predictor
) -> list[Any]:
    """The verdicts an earlier run of this model filed in the study (its Tracking UID in their
    content), which the new verdict names as its predecessors, as the node names its own (until
    2026-12-05 a run after an image was added filed a second verdict, unlinked to the first).
    Only this model's report series is looked into; one the service cannot return is left out."""
    import pydicom
    import requests

    from fracsight.dicom.results_context import ResultContext
    from fracsight.dicom.sr import study_tracking_uid

    context = ResultContext.of(predictor)
    reports = context.series_uid(study_uid, "sr")
    tracking = study_tracking_uid(study_uid, context)
    found = []
    for series_uid, sop_uid in own:
        if series_uid != reports:
            continue
        try:
            metadata = client.retrieve_instance_metadata(study_uid, series_uid, sop_uid)
            if tracking in _values_of(metadata, _UID_VALUE):
                found.append(pydicom.Dataset.from_json(metadata))
        except (requests.RequestException, ValueError, TypeError, KeyError) as e:
            log.warning(
                "an earlier result of the study not read (%s): not named as predecessor", type(e).__name__
            )
    return found


def _reports_held_by(client: Any, study_uid: str, predictor: Predictor) -> list[tuple[str, str]]:
    """``(series, instance)`` of this model's report series at a STOW-RS service other than the
    source (``--stow``): an earlier run's verdict went there, and looked for among the source's
    instances it was never found (the new verdict named no predecessor). A service without
    QIDO-RS, or not answering it, is said in a warning and names none."""
    import requests

    from fracsight.dicom.results_context import ResultContext

    reports = ResultContext.of(predictor).series_uid(study_uid, "sr")
    try:
        found = _dicom_json(
            client.search_for_instances(study_instance_uid=study_uid, series_instance_uid=reports)
        )
    except requests.RequestException as e:
        status = e.response.status_code if e.response is not None else None
        if status == 404:  # no such study there yet
            return []
        why = f"HTTP {status}" if status else type(e).__name__
    except ValueError as e:
        why = type(e).__name__
    else:
        return [(reports, uid) for item in found if (uid := _value(item, _SOP_UID))]
    log.warning("earlier results at the STOW-RS service not looked for (%s): none named as predecessor", why)
    return []


def _values_of(node: Any, tag: str) -> list[Any]:
    """Every value of ``tag`` anywhere in DICOM JSON, in sequences too."""
    if isinstance(node, list):
        return [v for item in node for v in _values_of(item, tag)]
    if not isinstance(node, dict):
        return []
    found = []
    for key, element in node.items():
        if key == tag and isinstance(element, dict):
            found += element.get("Value") or []
        else:
            found += _values_of(element, tag)
    return found


def _value(item: dict[str, Any], tag: str) -> str | None:
    values = (item.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else None


def _service_failing(not_retrieved: dict[str, str]) -> bool:
    """Whether retrieving failed as a service that is failing does, not as one lost file: every
    instance asked for refused (and more than one), or a gateway's or an overloaded service's status."""
    gateway = {f"retrieve_http_{status}" for status in (502, 503, 504)}
    return len(not_retrieved) > 1 or bool(gateway & set(not_retrieved.values()))


def process_study(
    study_uid: str,
    *,
    dicomweb_url: str,
    predictor: Predictor,
    stow_url: str | None = None,
    kinds: Sequence[str] = NODE_KINDS,
    timeout: float = 60,
    login: Login | None = None,
    stow_login: Login | None = None,
) -> StudyOutcome:
    """Predict every radiograph of a study held by a DICOMweb service and store the results.

    ``login`` is for ``dicomweb_url`` (QIDO-RS, WADO-RS, and STOW-RS when ``stow_url`` is None),
    ``stow_login`` for ``stow_url``; None: no authentication.

    Raises:
        LookupError: the service knows no instance of that study.
        requests.RequestException: the service could not be reached, or answered its search with
            an error, or returned none of the instances asked for (one it fails to return is
            recorded in ``not_retrieved``, and the others go on).
        fracsight.dicom.sender.DestinationUnavailable: the STOW-RS service stored nothing (down,
            missing at that URL, or refusing us), or the service answered every instance (more
            than one) with something that is not DICOM.
    """
    import pydicom
    import requests

    from fracsight.dicom.results import (
        header_of,
        image_uid_seed,
        result_datasets,
        study_result_datasets,
        study_uid_seed,
    )

    # what dicomweb-client and pydicom raise for a WADO-RS answer that is not a DICOM instance: another
    # media type, a multipart part that is not DICOM or is cut short, no part at all
    not_dicom = (ValueError, IndexError, EOFError, pydicom.errors.InvalidDicomError)
    source_client = web_client(dicomweb_url, timeout, login)
    outcome = StudyOutcome(study=study_key(study_uid))
    found = _study_instances(source_client, study_uid, outcome.study)
    sources, predictions, results = [], [], []
    own: list[tuple[str, str]] = []  # (series, instance) of fracsight's results already in the study
    unretrieved: requests.HTTPError | None = None
    retrieved = 0
    for item in found:
        series_uid, sop_uid = _value(item, _SERIES_UID), _value(item, _SOP_UID)
        if not series_uid or not sop_uid:
            continue
        key = instance_key(sop_uid)
        model_name = _value(item, _MODEL_NAME)
        if model_name is not None and model_name.strip() == RESULT_MODEL_NAME:  # e.g. from an earlier run
            outcome.own_results += 1
            own.append((series_uid, sop_uid))
            continue
        try:
            check_dicom_object(_value(item, _MODALITY), _value(item, _SOP_CLASS), model_name=model_name)
        except UnsupportedModalityError as e:
            if e.not_an_image:
                outcome.not_images += 1
            else:  # a CT slice or an unknown code (a vendor's "DR"): a view unread, as predict --study says
                outcome.refused[key] = e.code
            continue
        try:
            ds = source_client.retrieve_instance(study_uid, series_uid, sop_uid)  # WADO-RS
        except requests.HTTPError as e:  # this instance only (a lost attachment): the others still go
            status = e.response.status_code if e.response is not None else 0
            outcome.not_retrieved[key] = f"retrieve_http_{status}"
            log.warning("instance %s not retrieved (HTTP %d)", key, status)
            unretrieved = e
            continue
        except requests.RequestException:  # the service is gone: said for the whole study
            raise
        except not_dicom as e:  # HTTP 200, but a login page, a proxy's page, an empty answer
            outcome.not_retrieved[key] = "retrieve_not_dicom"
            log.warning(
                "instance %s not retrieved: the service answered with something that is not DICOM "
                "(%s; a login page or a proxy in front of it?)",
                key,
                type(e).__name__,
            )
            continue
        retrieved += 1
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        try:
            radiograph = predictor.read(buffer.getvalue(), name=f"{key}.dcm")
        except FracsightError as e:
            if getattr(e, "not_an_image", False):  # as the search's rule above, where it lacks Modality
                outcome.not_images += 1
                continue
            outcome.refused[key] = e.code
            log.warning("instance %s refused by the reader (%s)", key, e.code)
            continue
        (prediction,) = predictor.predict_radiographs([radiograph], [f"{key}.dcm"], heatmap=False)
        try:
            # UIDs derived from the source's: a second run (or one after an interrupted one, or after
            # the node) stores the same objects again, which the PACS keeps once
            results += result_datasets(
                ds,
                dataclasses.replace(prediction, pixels=radiograph.pixels),
                predictor,
                kinds=kinds,
                uid_seed=image_uid_seed(sop_uid, predictor),
            )
        except FracsightError as e:  # no results can be placed against it: the others still go
            outcome.refused[key] = e.code
            log.warning("instance %s: no result objects (%s)", key, e.code)
            continue
        sources.append(header_of(buffer.getvalue()))
        predictions.append(prediction)
        outcome.predicted.append(key)
    if unretrieved is not None and not retrieved and _service_failing(outcome.not_retrieved):
        raise unretrieved
    not_dicom_only = set(outcome.not_retrieved.values()) == {"retrieve_not_dicom"}
    if not_dicom_only and not retrieved and len(outcome.not_retrieved) > 1:  # the service, not a file
        raise DestinationUnavailable(
            f"the DICOMweb service answered each of the study's {len(outcome.not_retrieved)} instances "
            "with something that is not DICOM: a login page or a proxy in front of it?"
        )
    if predictions:
        # views refused (by Modality or by the reader) or not retrieved: not seen by the verdict, which
        # is then "not reliable", as predict --study says it (an object without an image is no view)
        unseen = [f"{key}.dcm" for key in (*outcome.refused, *outcome.not_retrieved)]
        verdict = predictor.predict_study(predictions, study=outcome.study, unread=unseen)
        seed = study_uid_seed(sources, predictor, unseen)
        try:
            holder, listed = source_client, own
            if stow_url:  # the results go there, and went there before
                holder = web_client(stow_url, timeout, stow_login)
                listed = _reports_held_by(holder, study_uid, predictor)
            earlier = _earlier_verdicts(holder, study_uid, listed, predictor)
            results += study_result_datasets(
                sources, verdict, predictions, predictor, uid_seed=seed, previous=earlier
            )
            outcome.decision = verdict.decision
            outcome.fracture_probability = verdict.fracture_probability
        except FracsightError as e:  # e.g. two patients under one study UID: the images' results still go
            outcome.study_error = e.code
            log.warning("study %s: no study result (%s)", outcome.study, e.code)
    if results:  # STOW-RS, one request (one per object if the service fails the whole request)
        stow = StowDestination(stow_url or dicomweb_url, timeout, stow_login if stow_url else login)
        outcomes = stow.store(results)
        outcome.stored = sum(o is DELIVERED for o in outcomes)
        outcome.failed = len(results) - outcome.stored
        # the count alone said "failed: 5" and never why (http_409: --stow given as .../studies)
        outcome.failed_codes = dict(Counter(o for o in outcomes if o is not DELIVERED))
    return outcome
