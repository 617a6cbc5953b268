"""Shared support for tests that talk DICOM to real software: Orthanc and dcmtk on loopback.

Public functions (the DICOM node and the DICOM results tests both use them):

- :func:`free_port`: a free TCP port on 127.0.0.1.
- :func:`make_radiograph_dicom`: a FracAtlas JPEG as a CR (or DX) DICOM file, MONOCHROME1, 12 bits
  stored in 16, optionally JPEG lossless (compressed by dcmtk's ``dcmcjpeg``).
- :func:`make_ct_dicom`: a small CT slice (for the refusals).
- :class:`Orthanc`: Debian's Orthanc started on loopback with its own configuration and storage
  folder (never the system service), DICOMweb plugin loaded, stop/start keeping its storage.
- :class:`NodeProcess`: ``fracsight dicom listen`` as a child process on loopback (SIGTERM, SIGKILL,
  its ``status`` and log).
- :class:`FailingProxy`: an HTTP proxy on loopback in front of Orthanc that answers 500 to any
  request whose body holds one of the given byte strings (a service that chokes on one object).
- :func:`storescu`: dcmtk's ``storescu`` (by absolute path: pynetdicom installs an app of the same
  name in the virtual environment).
- :func:`dcmtk_available`, :func:`orthanc_available`: for skip conditions.

Every identifier in these files is made up (:data:`PATIENT`).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import requests

ORTHANC_BIN = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DCMTK_BIN = Path("/usr/bin")

#: Made-up patient and study attributes written into every test file.
PATIENT: dict[str, str] = {
    "PatientName": "TESTPATIENT^FRACSIGHT",
    "PatientID": "FS-TEST-0001",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "AccessionNumber": "FSACC0001",
    "StudyID": "FS1",
    "ReferringPhysicianName": "REFERRER^TEST",
}

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler for a stand-in HTTP service of a test: no access log, and :meth:`reply`."""

    def reply(self, status: int, body: bytes = b"", content_type: str = "application/dicom+json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http_service(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` serving on 127.0.0.1 in a thread; yields its base URL (``http://127.0.0.1:PORT``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's new parent may be slow to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    """Whether ``condition()`` came true within ``timeout`` seconds (asked every ``step``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on the loopback ``port`` (a server started)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def dcmtk_available() -> bool:
    return all((DCMTK_BIN / tool).is_file() for tool in ("storescu", "findscu", "dcmcjpeg"))


def orthanc_available() -> bool:
    return Path(ORTHANC_BIN).is_file() and Path(DICOMWEB_PLUGIN).is_file()


def _base_dataset(sop_class: str, study_uid: str | None, series_uid: str | None, sop_uid: str | None):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    for keyword, value in PATIENT.items():
        setattr(ds, keyword, value)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.StudyDescription = "FRACSIGHT TEST STUDY"
    ds.Manufacturer = "fracsight test support"
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def make_radiograph_dicom(
    image: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    modality: str = "CR",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    instance_number: int = 1,
    body_part: str | None = None,
    jpeg_lossless: bool = False,
) -> Path:
    """Write ``image`` (a FracAtlas JPEG, 8-bit grey) as a projection radiograph DICOM file.

    The grey values are spread over 12 bits (``v * 4095 / 255``) and stored inverted
    (MONOCHROME1: bone dark in the stored values), BitsAllocated 16, no window (readers map
    the min/max). ``modality`` "CR" gives Computed Radiography Image Storage, "DX" Digital
    X-Ray For Presentation. ``jpeg_lossless`` compresses the file with dcmtk's ``dcmcjpeg``
    (JPEG Lossless, first-order prediction, 1.2.840.10008.1.2.4.70). Returns ``out``.
    """
    from PIL import Image

    out = Path(out)
    grey = np.asarray(Image.open(image).convert("L"), dtype=np.float64)
    stored = 4095 - np.round(grey * 4095 / 255).astype(np.uint16)
    sop_class = {"CR": CR_IMAGE_STORAGE, "DX": DX_IMAGE_STORAGE}[modality]
    ds = _base_dataset(sop_class, study_uid, series_uid, sop_uid)
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.BodyPartExamined = body_part or ""
    ds.ViewPosition = ""
    ds.PatientOrientation = ""
    if modality == "DX":
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        ds.PresentationLUTShape = "INVERSE"
        ds.BurnedInAnnotation = "NO"
        ds.ImagerPixelSpacing = [0.1, 0.1]
        ds.DetectorType = "SCINTILLATOR"
        ds.AcquisitionDate, ds.AcquisitionTime = "20260101", "101500"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = stored.tobytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not jpeg_lossless:
        ds.save_as(out, enforce_file_format=True)
        return out
    native = out.with_name(out.name + ".native.dcm")
    ds.save_as(native, enforce_file_format=True)
    try:
        subprocess.run(
            [str(DCMTK_BIN / "dcmcjpeg"), "+e1", str(native), str(out)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    finally:
        native.unlink(missing_ok=True)
    return out


def make_ct_dicom(out: str | os.PathLike[str], *, study_uid: str | None = None) -> Path:
    """A 64 x 64 CT Image Storage slice (Modality CT), for refusals."""
    out = Path(out)
    ds = _base_dataset(CT_IMAGE_STORAGE, study_uid, None, None)
    ds.Modality = "CT"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = (np.arange(64 * 64, dtype=np.uint16) % 4096).tobytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def storescu(
    host: str,
    port: int,
    files: Sequence[str | os.PathLike[str]],
    *,
    calling: str = "MODALITY",
    called: str = "FRACSIGHT",
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """dcmtk's ``storescu`` sending ``files`` on one association; the completed process (not checked).

    ``-xs`` proposes the files' own transfer syntaxes too, so a JPEG lossless file goes as it is.
    """
    cmd = [str(DCMTK_BIN / "storescu"), "-v", "-aet", calling, "-aec", called, "-xs", "-nh", host, str(port)]
    return subprocess.run(
        [*cmd, *map(str, files)], capture_output=True, text=True, timeout=timeout, check=False
    )


class Orthanc:
    """Orthanc on 127.0.0.1 with its own configuration and storage (``root``), DICOMweb enabled.

    ``modalities``: ``{name: (ae_title, host, port)}`` Orthanc may send to (DicomModalities);
    ``lua``: Lua scripts to load (LuaScripts); ``users``: ``{name: password}`` for HTTP basic
    authentication (AuthenticationEnabled, RegisteredUsers; off without); ``config``: more
    options (``{"LimitFindInstances": 10}``). :meth:`stop` and
    :meth:`start` keep the storage, so a test can take the PACS away and bring it back with what
    it had stored.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        ae_title: str = "ORTHANC",
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        lua: Sequence[str | os.PathLike[str]] = (),
        users: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.config = dict(config or {})  # more options, over the ones below
        self.users = dict(users or {})
        # the REST helpers below log in as the first user when Orthanc asks for one
        self.auth = next(iter(self.users.items()), None)
        self.ae_title = ae_title
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.modalities = dict(modalities or {})
        self.lua = [str(Path(p).resolve()) for p in lua]
        self.process: subprocess.Popen[bytes] | None = None
        self.config_path = self.root / "orthanc.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def _config(self) -> dict[str, Any]:
        return {
            "Name": "fracsight-test",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"),
            "HttpPort": self.http_port,
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomModalities": {name: list(spec) for name, spec in self.modalities.items()},
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            "LuaScripts": self.lua,
            "StableAge": 2,
            "HttpTimeout": 30,
            "ConcurrentJobs": 2,
            "SaveJobs": False,
        } | self.config

    def start(self, timeout: float = 60) -> Orthanc:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self._config(), indent=2))
        log = open(self.root / "orthanc.log", "ab")  # noqa: SIM115 (kept open while it runs)
        self.process = subprocess.Popen(
            [ORTHANC_BIN, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=self.root
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start; see {self.root / 'orthanc.log'}")
            try:
                if requests.get(f"{self.url}/system", timeout=2, auth=self.auth).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("Orthanc did not answer in time")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- REST -------------------------------------------------------------------------------------
    def get(self, path: str, **kwargs: Any) -> Any:
        response = requests.get(f"{self.url}{path}", timeout=30, auth=self.auth, **kwargs)
        response.raise_for_status()
        return response.json() if "json" in response.headers.get("content-type", "") else response.content

    def upload(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Store a DICOM file through the REST API (POST /instances)."""
        data = Path(path).read_bytes()
        response = requests.post(f"{self.url}/instances", data=data, timeout=60, auth=self.auth)
        response.raise_for_status()
        return response.json()

    def instances(self) -> list[str]:
        return list(self.get("/instances"))

    def find_instances(self, **tags: str) -> list[dict[str, Any]]:
        """Instances whose main tags match ``tags`` (``/tools/find``, level Instance, expanded)."""
        body = {"Level": "Instance", "Query": tags, "Expand": True}
        response = requests.post(f"{self.url}/tools/find", json=body, timeout=30, auth=self.auth)
        response.raise_for_status()
        return response.json()

    def tags(self, instance_id: str) -> dict[str, Any]:
        """All tags of an instance, by keyword (``/instances/{id}/simplified-tags``)."""
        return self.get(f"/instances/{instance_id}/simplified-tags")

    def file(self, instance_id: str) -> bytes:
        return self.get(f"/instances/{instance_id}/file")

    def wait_for_instances(self, count: int, timeout: float = 60, **tags: str) -> list[dict[str, Any]]:
        """Wait until at least ``count`` instances match ``tags``; return them (raise on timeout)."""
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = self.find_instances(**tags)
            if len(found) >= count:
                return found
            time.sleep(0.25)
        raise TimeoutError(f"Orthanc holds {len(found)} matching instances, {count} expected")


class FailingProxy:
    """Forwards HTTP on 127.0.0.1 to ``target`` (a base URL), except that a request whose body
    contains one of ``poison`` (or whose path one of ``poison_paths``) is answered 500 without
    reaching it: a DICOMweb service that fails a whole STOW-RS request on one object (or cannot
    return an instance); one whose body is larger than ``max_body`` 413, as a reverse proxy
    with a body limit answers; one whose path holds a key of ``answers`` with its HTTP 200 answer
    (a login page in front of the service). ``answered`` counts the 500s and 413s; ``seen`` lists
    every request as ``(method, path)`` when it arrives."""

    def __init__(self, target: str, poison: Sequence[bytes] = ()) -> None:
        host, port = target.removeprefix("http://").split("/")[0].split(":")
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real service: clients reuse the connection

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                proxy.seen.append((self.command, self.path))
                body = self._body()
                too_large = proxy.max_body is not None and len(body) > proxy.max_body
                lost = any(marker in self.path for marker in proxy.poison_paths)  # WADO-RS names its instance
                odd = next((answer for marker, answer in proxy.answers.items() if marker in self.path), None)
                if odd is not None:
                    self.send_response(200)
                    self.send_header("Content-Type", odd[0])
                    self.send_header("Content-Length", str(len(odd[1])))
                    self.end_headers()
                    self.wfile.write(odd[1])
                    return
                if too_large or lost or any(marker in body for marker in proxy.poison):
                    proxy.answered += 1
                    self.send_response(413 if too_large else 500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                upstream = http.client.HTTPConnection(host, int(port), timeout=60)
                dropped = ("host", "connection", "transfer-encoding", "content-length")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            def _body(self) -> bytes:
                if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                chunks = []  # dicomweb-client streams STOW-RS bodies in chunks
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()  # the empty line after the last chunk
                return b"".join(chunks)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

        self.poison = list(poison)
        self.max_body: int | None = None  # a larger body is answered 413, as nginx's client_max_body_size
        self.poison_paths: list[str] = []  # a request whose path holds one is answered 500
        # a request whose path holds a key is answered 200 with (Content-Type, body): a login page
        self.answers: dict[str, tuple[str, bytes]] = {}
        self.answered = 0
        self.seen: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FailingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class NodeProcess:
    """``fracsight dicom listen`` as a child process on 127.0.0.1 (a free port unless given), its
    log in ``root / "node.log"``. :meth:`kill` is SIGKILL (a crash); :meth:`stop` is SIGTERM."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        destination: Sequence[str],
        allow: Sequence[str] = ("MODALITY",),
        ae_title: str = "FRACSIGHT",
        quiet_time: float = 2.0,
        port: int | None = None,
        extra: Sequence[str] = (),
        own_group: bool = False,
    ) -> None:
        self.root = Path(root)
        self.own_group = own_group  # a process group of its own, as systemd or a terminal starts it
        self.spool = self.root / "spool"
        self.log_path = self.root / "node.log"
        self.port = port or free_port()
        self.ae_title = ae_title
        self.args = [
            "dicom", "listen", "--spool", str(self.spool), "--host", "127.0.0.1", "--port", str(self.port),
            "--ae-title", ae_title, "--quiet-time", str(quiet_time), "--max-backoff", "1",
            *[a for aet in allow for a in ("--allow", aet)], *destination, *extra,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the node, without waiting for it to listen."""
        import sys

        self.root.mkdir(parents=True, exist_ok=True)
        executable = Path(sys.executable).parent / "fracsight"
        with open(self.log_path, "ab") as log:  # the child keeps its own copy open while it runs
            self.process = subprocess.Popen(
                [str(executable), *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_group,
            )
        return self.process

    def start(self, timeout: float = 90) -> NodeProcess:
        process = self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the node exited at start:\n{self.log_path.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError("the node did not listen in time")

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM and wait: the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code, self.process = self.process.returncode, None
        return code

    def worker_pids(self) -> list[int]:
        """The node's child processes (its worker processes), from /proc."""
        if self.process is None:
            return []
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == self.process.pid:
                pids.append(int(stat.parent.name))
        return pids

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash or an OOM kill."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status(self) -> dict[str, Any]:
        """``fracsight dicom status --spool ... --json`` (readable with the node up or down)."""
        import sys

        executable = Path(sys.executable).parent / "fracsight"
        done = subprocess.run(
            [str(executable), "dicom", "status", "--spool", str(self.spool), "--json"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return json.loads(done.stdout)

    def wait_status(self, check: Any, timeout: float = 60) -> dict[str, Any]:
        """Poll :meth:`status` until ``check(status)`` is true; the status (raise on timeout)."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status()
            if check(status):
                return status
            time.sleep(0.3)
        raise TimeoutError(f"node status never matched: {json.dumps(status)}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def which_dcmtk(tool: str) -> str:
    """Absolute path of a dcmtk tool (never the venv's pynetdicom app of the same name)."""
    path = DCMTK_BIN / tool
    if not path.is_file():
        raise FileNotFoundError(f"dcmtk's {tool} not found in {DCMTK_BIN}")
    return str(path)


__all__ = [
    "CR_IMAGE_STORAGE",
    "CT_IMAGE_STORAGE",
    "DX_IMAGE_STORAGE",
    "JPEG_LOSSLESS_SV1",
    "PATIENT",
    "NodeProcess",
    "Orthanc",
    "dcmtk_available",
    "free_port",
    "make_ct_dicom",
    "make_radiograph_dicom",
    "orthanc_available",
    "poisoned_image_results",
    "storescu",
    "which_dcmtk",
]


POISON_ENV = "FRACSIGHT_TEST_POISON_KEY"


def poisoned_image_results(predictor: Any, kinds: Sequence[str], jobs: Sequence[Any]) -> list[Any]:
    """The node's image job, except that a worker process handed the instance whose spool key is
    in ``$FRACSIGHT_TEST_POISON_KEY`` dies at once (as if its decoder had crashed)."""
    from fracsight.dicom.result_pool import make_image_results

    if any(job.key == os.environ.get(POISON_ENV) for job in jobs):
        os._exit(70)
    return make_image_results(predictor, kinds, jobs)
