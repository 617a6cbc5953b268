"""The bad-input corpus: hostile, broken and odd files, generated in code (nothing downloaded or stored).

Every :class:`Case` says what fracsight must do with it: read it (``expect="ok"``,
optionally with a warning that must reach the Prediction) or refuse it with one
specific error code. The same table drives the library, CLI and REST API tests
(tests/test_hardening_corpus.py), the fuzzers' seeds (tests/test_fuzz.py,
scripts/fuzz_reader.py), the stress run (scripts/stress_api.py) and the table in
docs/hardening.md (``python tests/corpus.py --markdown``).

>>> cases = build_corpus()
>>> by_id = {c.id: c for c in cases}
>>> by_id["empty"].expect, by_id["empty"].http_status
('empty_file', 400)
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from fracsight import errors

__all__ = [
    "OK",
    "Case",
    "RawRequest",
    "build_corpus",
    "dicom_bytes",
    "find_truncated_jpegs",
    "garbage_requests",
    "good_request",
    "http_status_for",
    "multipart",
    "radiograph_like",
    "write_corpus",
]

OK = "ok"
TRUNCATED_WARNING = "truncated file"
FRAMES_WARNING = "frames in the file; only the first was read"

# Identifiers planted in DICOM test files; they must never come back out.
SENTINELS = {
    "PatientName": "SENTINEL^PATIENT^NAME",
    "PatientID": "SENTINEL-PID-8675309",
    "PatientBirthDate": "19010203",
    "StudyDate": "19020304",
    "SeriesDate": "19030405",
    "AcquisitionDate": "19040506",
    "ContentDate": "19050607",
    "InstitutionName": "SENTINEL GENERAL HOSPITAL",
    "InstitutionAddress": "1 SENTINEL ROAD",
    "ReferringPhysicianName": "SENTINEL^REFERRER",
    "AccessionNumber": "SENTACC4242",
    "StudyDescription": "SENTINEL STUDY DESCRIPTION",
    "OtherPatientIDs": "SENTINEL-OTHER-ID",
}


def http_status_for(code: str) -> int:
    """The HTTP status the API answers for a library error ``code`` (from the error classes)."""
    if code == OK:
        return 200
    stack: list[type[errors.FracsightError]] = [errors.FracsightError]
    while stack:
        cls = stack.pop()
        if cls.code == code:
            return cls.http_status
        stack.extend(cls.__subclasses__())
    raise KeyError(code)


@dataclass(frozen=True)
class Case:
    """One corpus input and the behaviour required of every front end."""

    id: str
    filename: str
    data: bytes
    expect: str  # OK or an error code of fracsight.errors
    what: str  # a short human description (for docs/hardening.md)
    warning: str | None = None  # when OK: a substring that must be in the prediction's warnings
    shape: tuple[int, int] | None = None  # when OK: the (H, W) the reader must return

    @property
    def http_status(self) -> int:
        return http_status_for(self.expect)


# ---- small builders --------------------------------------------------------------------------------
def radiograph_like(height: int = 96, width: int = 80, seed: int = 0) -> np.ndarray:
    """uint8 grey image: dark background, a bright 'bone' band with a gap, some noise."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width), 30.0)
    img[:, width // 3 : 2 * width // 3] = 190.0
    img[height // 2 - 2 : height // 2 + 2, width // 3 : 2 * width // 3] = 90.0  # a 'fracture line'
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _gray(height: int = 96, width: int = 80, seed: int = 0) -> Image.Image:
    return Image.fromarray(radiograph_like(height, width, seed))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width`` x ``height`` (valid CRCs; one row of real data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 header is patched to claim ``width`` x ``height``."""
    data = bytearray(_encode(_gray(16, 16), "JPEG", quality=90))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("notes.txt", "not an image\n" * 20)
    return buffer.getvalue()


def _pdf_bytes() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    )


def _exif_rotated_jpeg() -> bytes:
    """Stored 80 wide x 48 high, EXIF orientation 6 (display rotated 90 degrees clockwise)."""
    im = _gray(48, 80)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(im, "JPEG", quality=92, exif=exif.tobytes())


def _frames(n: int = 3) -> list[Image.Image]:
    return [_gray(64, 64, seed) for seed in range(n)]


BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"  # a report's own SOP Class (not an image's)


def dicom_bytes(
    *,
    rows: int = 72,
    cols: int = 64,
    pixels: bool = True,
    photometric: str = "MONOCHROME2",
    samples: int = 1,
    bits_allocated: int = 16,
    bits_stored: int = 12,
    frames: int = 1,
    transfer_syntax: str | None = None,
    pixel_bytes: bytes | None = None,
    identifiers: bool = True,
    modality: str = "DX",
    colour: bool = False,
    preamble: bytes | None = None,
    sop_class: str | None = None,
) -> bytes:
    """A DX DICOM (explicit VR little endian unless ``transfer_syntax``), identifiers planted by default.

    ``colour`` makes the channels of a ``samples=3`` image differ (a real colour image);
    ``preamble`` fills the 128-byte preamble (PS3.10 7.1 lets it hold, e.g., a TIFF header);
    ``sop_class`` replaces Digital X-Ray Image Storage (a report's own class with ``modality="SR"``).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax) if transfer_syntax else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = (
        UID(sop_class) if sop_class else DigitalXRayImageStorageForPresentation
    )
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.BodyPartExamined = "HAND"
    if identifiers:
        for keyword, value in SENTINELS.items():
            setattr(ds, keyword, value)
    if pixels:
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = samples
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
        ds.PixelRepresentation = 0
        if samples > 1:
            ds.PlanarConfiguration = 0
        if frames > 1:
            ds.NumberOfFrames = frames
        if pixel_bytes is None:
            base = radiograph_like(rows, cols).astype(np.uint16) * 16
            stack = np.stack([base] * frames) if frames > 1 else base
            if samples > 1:
                stack = np.repeat(stack[..., None], samples, axis=-1)
                if colour:
                    stack[..., 0] = 4095 - stack[..., 0]
            dtype = np.uint8 if bits_allocated == 8 else np.uint16
            pixel_bytes = (stack >> (4 if dtype == np.uint8 else 0)).astype(dtype).tobytes()
        if ds.file_meta.TransferSyntaxUID.is_encapsulated:
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate([pixel_bytes[: len(pixel_bytes) // 2] or b"\x00\x00"])
        else:
            ds.PixelData = pixel_bytes
    buffer = io.BytesIO()
    if preamble is not None:
        ds.preamble = preamble.ljust(128, b"\x00")[:128]
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _cuts(data: bytes, fractions: tuple[float, ...]) -> list[tuple[str, bytes]]:
    return [(f"{int(f * 100)}pct", data[: int(len(data) * f)]) for f in fractions]


# ---- the corpus ------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def build_corpus() -> tuple[Case, ...]:
    """All generated cases (deterministic; about 1 MB in total)."""
    rng = np.random.default_rng(20240611)
    cases: list[Case] = []

    def add(id_: str, filename: str, data: bytes, expect: str, what: str, **kw: object) -> None:
        cases.append(Case(id_, filename, data, expect, what, **kw))  # type: ignore[arg-type]

    gray = _gray()
    png = _encode(gray, "PNG")
    jpeg = _encode(_gray(160, 128), "JPEG", quality=90)

    # controls: ordinary good inputs
    add("good-png", "good.png", png, OK, "8-bit grey PNG (control)", shape=(96, 80))
    add("good-jpeg", "good.jpg", jpeg, OK, "8-bit grey JPEG (control)", shape=(160, 128))
    add("jpeg-named-png", "photo.png", jpeg, OK, "a JPEG named .png (format from content)")

    # nothing, noise, and other file types under image names
    add("empty", "empty.png", b"", "empty_file", "zero-byte file")
    for ext in ("png", "jpg", "dcm", "tif"):
        add(
            f"random-{ext}",
            f"random.{ext}",
            rng.bytes(4096),
            "unsupported_format",
            f"4 KB of random bytes named .{ext}",
        )
    text = b"Patient presented with wrist pain.\nNo image here.\n" * 20
    add("text-png", "notes.png", text, "unsupported_format", "plain text named .png")
    add("text-dcm", "notes.dcm", text, "unsupported_format", "plain text named .dcm")
    html = b"<!DOCTYPE html><html><body><img src='x.png'></body></html>\n"
    add("html-png", "page.png", html, "unsupported_format", "HTML page named .png")
    add("pdf-png", "report.png", _pdf_bytes(), "unsupported_format", "PDF named .png")
    add("pdf-dcm", "report.dcm", _pdf_bytes(), "unsupported_format", "PDF named .dcm")
    add("zip-png", "archive.png", _zip_bytes(), "unsupported_format", "ZIP named .png")
    add("zip-dcm", "archive.dcm", _zip_bytes(), "unsupported_format", "ZIP named .dcm")
    add("magic-only-png", "magic.png", png[:8], "unreadable_image", "PNG signature and nothing else")
    add("magic-only-jpeg", "magic.jpg", jpeg[:3], "unreadable_image", "JPEG SOI marker and nothing else")

    # truncated files
    add("png-cut-header", "cut.png", png[:20], "unreadable_image", "PNG cut inside its IHDR header")
    for label, cut in _cuts(png, (0.1, 0.5, 0.9)):
        add(f"png-cut-{label}", "cut.png", cut, "truncated_image", f"PNG cut at {label[:-3]}% of its bytes")
    add("png-no-iend", "noiend.png", png[:-12], OK, "PNG missing only its IEND chunk")
    add("jpeg-cut-header", "cut.jpg", jpeg[:60], "unreadable_image", "JPEG cut inside its header (60 bytes)")
    for label, cut in _cuts(jpeg, (0.4, 0.7, 0.95)):
        add(
            f"jpeg-cut-{label}",
            "cut.jpg",
            cut,
            OK,
            f"JPEG cut at {label[:-3]}% (inside the scan): read tolerantly",
            warning=TRUNCATED_WARNING,
            shape=(160, 128),
        )
    add(
        "jpeg-no-eoi",
        "noeoi.jpg",
        jpeg[:-2],
        OK,
        "JPEG missing only its EOI marker",
        warning=TRUNCATED_WARNING,
    )
    tiff = _encode(_gray(), "TIFF")
    add("tiff-cut-50pct", "cut.tif", tiff[: len(tiff) // 2], "truncated_image", "TIFF cut at 50%")

    # sizes
    add("tiny-1x1", "one.png", _encode(Image.new("L", (1, 1), 128), "PNG"), "image_too_small", "1x1 PNG")
    add("tiny-8x8", "eight.png", _encode(_gray(8, 8), "PNG"), "image_too_small", "8x8 PNG")
    add(
        "bomb-png",
        "bomb.png",
        png_claiming(100_000, 100_000),
        "image_too_large",
        "PNG header claims 100000 x 100000",
    )
    add(
        "bomb-jpeg",
        "bomb.jpg",
        jpeg_claiming(65_000, 65_000),
        "image_too_large",
        "JPEG header claims 65000 x 65000 (the JPEG maximum is 65535)",
    )
    add(
        "bomb-dicom",
        "bomb.dcm",
        dicom_bytes(rows=60_000, cols=60_000, pixel_bytes=b"\x00" * 64),
        "image_too_large",
        "DICOM Rows x Columns claim 60000 x 60000",
    )

    # modes and containers
    arr16 = radiograph_like().astype(np.uint16) * 257
    add("png-16bit", "sixteen.png", _encode(Image.fromarray(arr16), "PNG"), OK, "16-bit grey PNG")
    rgba = _gray().convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 80).astype(np.uint8), (96, 1))))
    add(
        "png-rgba",
        "alpha.png",
        _encode(rgba, "PNG"),
        OK,
        "RGBA PNG with transparency",
        warning="composited on black",
    )
    add("png-palette", "palette.png", _encode(_gray().convert("P"), "PNG"), OK, "palette PNG")
    add("jpeg-cmyk", "cmyk.jpg", _encode(_gray().convert("CMYK"), "JPEG", quality=90), OK, "CMYK JPEG")
    add("tiff-cmyk", "cmyk.tif", _encode(_gray().convert("CMYK"), "TIFF"), OK, "CMYK TIFF")
    f0, *rest = _frames()
    add(
        "gif-animated",
        "anim.gif",
        _encode(f0, "GIF", save_all=True, append_images=rest),
        OK,
        "animated GIF (3 frames)",
        warning=FRAMES_WARNING,
    )
    add(
        "apng",
        "anim.png",
        _encode(f0, "PNG", save_all=True, append_images=rest),
        OK,
        "animated PNG (APNG, 3 frames)",
        warning=FRAMES_WARNING,
    )
    add(
        "tiff-multipage",
        "pages.tif",
        _encode(f0, "TIFF", save_all=True, append_images=rest),
        OK,
        "multi-page TIFF (3 pages)",
        warning=FRAMES_WARNING,
    )
    mpo = _encode(f0, "MPO", save_all=True, append_images=rest[:1])
    add("mpo", "stereo.jpg", mpo, OK, "MPO (multi-picture JPEG, 2 pictures)", warning=FRAMES_WARNING)
    add(
        "jpeg-exif-rotated",
        "rotated.jpg",
        _exif_rotated_jpeg(),
        OK,
        "JPEG with EXIF orientation 6 (stored 80x48)",
        shape=(80, 48),
    )
    colour = np.stack([radiograph_like(), radiograph_like()[::-1], np.full((96, 80), 200, np.uint8)], axis=-1)
    add(
        "jpeg-colour",
        "colour.jpg",
        _encode(Image.fromarray(colour), "JPEG"),
        OK,
        "visibly coloured JPEG",
        warning="colour image",
    )

    # DICOM
    add("dicom-good", "good.dcm", dicom_bytes(), OK, "12-bit MONOCHROME2 DICOM (control)", shape=(72, 64))
    add(
        "dicom-monochrome1",
        "inverted.dcm",
        dicom_bytes(photometric="MONOCHROME1"),
        OK,
        "MONOCHROME1 DICOM",
        shape=(72, 64),
    )
    add(
        "dicom-no-pixels",
        "report.dcm",
        dicom_bytes(pixels=False),
        "no_pixel_data",
        "DICOM without Pixel Data",
    )
    add(
        "dicom-bits-12",
        "bits.dcm",
        dicom_bytes(bits_allocated=12, bits_stored=12),
        "corrupt_image",
        "DICOM BitsAllocated 12",
    )
    add(
        "dicom-bits-stored-over",
        "bits2.dcm",
        dicom_bytes(bits_stored=20),
        "corrupt_image",
        "DICOM BitsStored 20 > BitsAllocated 16",
    )
    add(
        "dicom-rows-lie",
        "lie.dcm",
        dicom_bytes(rows=720, cols=640, pixel_bytes=b"\x00\x01" * 72 * 64),
        "corrupt_image",
        "DICOM Rows x Columns larger than its pixel data",
    )
    add(
        "dicom-rows-short",
        "short.dcm",
        dicom_bytes(rows=36, cols=64, pixel_bytes=radiograph_like(72, 64).astype(np.uint16).tobytes()),
        OK,
        "DICOM pixel data longer than Rows x Columns",
        warning="bytes more than the header implies",
    )
    add(
        "dicom-mpeg2",
        "video.dcm",
        dicom_bytes(transfer_syntax="1.2.840.10008.1.2.4.100"),
        "unsupported_format",
        "DICOM with MPEG-2 transfer syntax (no decoder)",
    )
    unknown_ts = dicom_bytes().replace(b"1.2.840.10008.1.2.1\x00", b"1.2.3.4.5.6.7.8.9.10", 1)
    add(
        "dicom-unknown-ts",
        "ts.dcm",
        unknown_ts,
        "unsupported_format",
        "DICOM with an unknown transfer syntax UID",
    )
    add(
        "dicom-jpeg-garbage",
        "jpegts.dcm",
        dicom_bytes(transfer_syntax="1.2.840.10008.1.2.4.50"),
        "unreadable_image",
        "DICOM JPEG Baseline syntax with a non-JPEG fragment",
    )
    add(
        "dicom-rgb",
        "rgb.dcm",
        dicom_bytes(photometric="RGB", samples=3, bits_allocated=8, bits_stored=8),
        OK,
        "RGB DICOM with equal channels (a grey secondary capture)",
        shape=(72, 64),
    )
    add(
        "dicom-colour",
        "colour.dcm",
        dicom_bytes(photometric="RGB", samples=3, bits_allocated=8, bits_stored=8, colour=True),
        "unsupported_photometric",
        "RGB DICOM in real colour",
    )
    add(
        "dicom-multiframe",
        "frames.dcm",
        dicom_bytes(frames=3),
        "multi_frame_image",
        "multi-frame DICOM (3 frames) without a frame chosen",
    )
    add("dicom-ct", "ct.dcm", dicom_bytes(modality="CT"), "unsupported_modality", "a CT slice (Modality CT)")
    add(
        "dicom-tiff-preamble",
        "tiffpre.dcm",
        dicom_bytes(preamble=b"II*\x00\x08\x00\x00\x00"),
        OK,
        "DICOM whose preamble starts with a TIFF header (PS3.10 7.5 allows it)",
        shape=(72, 64),
    )
    dicm = dicom_bytes()
    add(
        "dicom-cut",
        "cut.dcm",
        dicm[: len(dicm) // 2],
        "corrupt_image",
        "DICOM cut in the middle of its pixel data",
    )
    add("dicom-preamble-only", "pre.dcm", dicm[:132], "no_pixel_data", "DICOM preamble and DICM magic only")
    return tuple(cases)


# ---- real truncated JPEGs ----------------------------------------------------------------------------
def find_truncated_jpegs(fracatlas_dir: Path) -> list[Path]:
    """FracAtlas JPEGs that end early (49 in the shared subset, all in ``Non_fractured``).

    Files whose last bytes are not an End-Of-Image marker are candidates; the reader
    confirms which of them are really cut short (some just carry padding after EOI).
    """
    from fracsight.io import read_image

    found = []
    for path in sorted((fracatlas_dir / "images").rglob("*.jpg")):
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 16))
            tail = f.read().rstrip(b"\x00")
        if not tail.endswith(b"\xff\xd9") and read_image(path).metadata.truncated:
            found.append(path)
    return found


def write_corpus(folder: Path, cases: tuple[Case, ...] | None = None) -> dict[str, Path]:
    """Write each case to ``folder/<id>/<filename>`` (file names repeat); returns id -> path."""
    out = {}
    for case in cases or build_corpus():
        path = Path(folder) / case.id / case.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case.data)
        out[case.id] = path
    return out


# ---- garbage HTTP requests (the API service tests and scripts/stress_api.py) -------------------------
BOUNDARY = "fracsight-corpus-boundary"
_CLIENT_ERRORS = (400, 404, 405, 413, 415, 422)


@dataclass(frozen=True)
class RawRequest:
    """One HTTP request and the statuses (and error code) an intact server may answer it with."""

    kind: str
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    statuses: tuple[int, ...] = _CLIENT_ERRORS
    code: str | None = None


def multipart(parts: list[tuple[str, str, bytes]], boundary: str = BOUNDARY, close: bool = True) -> bytes:
    """A multipart/form-data body from (field name, file name, content) parts."""
    out = bytearray()
    for name, filename, data in parts:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode("utf-8", "surrogateescape")
        out += data + b"\r\n"
    if close:
        out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def upload_request(kind: str, files: list[tuple[str, bytes]], query: str = "", **kw: object) -> RawRequest:
    body = multipart([("files", name, data) for name, data in files])
    headers = (("content-type", f"multipart/form-data; boundary={BOUNDARY}"),)
    return RawRequest(kind, "POST", "/v1/predict" + query, body, headers, **kw)  # type: ignore[arg-type]


def good_request() -> RawRequest:
    case = next(c for c in build_corpus() if c.id == "good-png")
    return upload_request("good", [(case.filename, case.data)], statuses=(200,))


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 16))):
        op = int(rng.integers(3))
        pos = int(rng.integers(len(buf))) if buf else 0
        if op == 0 and buf:
            buf[pos] = int(rng.integers(256))
        elif op == 1:
            buf[pos:pos] = rng.bytes(int(rng.integers(1, 64)))
        else:
            del buf[pos : pos + int(rng.integers(1, 256))]
    return bytes(buf)


def garbage_requests(
    n: int, *, seed: int = 0, max_files: int = 16, max_upload_bytes: int = 50 * 1024 * 1024, raw: bool = True
) -> list[RawRequest]:
    """``n`` mixed bad requests, drawn with ``seed``. ``raw=False`` leaves out the ones an HTTP client
    library will not send (a Content-Length that lies)."""
    rng = np.random.default_rng(seed)
    cases = build_corpus()
    seeds = [c for c in cases if c.expect == OK]
    mp = f"multipart/form-data; boundary={BOUNDARY}"

    def corpus_file() -> RawRequest:
        c = cases[int(rng.integers(len(cases)))]
        return upload_request(
            f"corpus:{c.id}",
            [(c.filename, c.data)],
            statuses=(c.http_status,),
            code=c.expect if c.expect != OK else None,
        )

    def mutated() -> RawRequest:
        c = seeds[int(rng.integers(len(seeds)))]
        return upload_request(
            f"mutated:{c.id}", [(c.filename, _mutate(c.data, rng))], statuses=(200, 400, 413, 415, 422)
        )

    def random_body() -> RawRequest:
        return RawRequest(
            "random-body",
            "POST",
            "/v1/predict",
            rng.bytes(int(rng.integers(0, 8192))),
            (("content-type", mp),),
            (400, 422),
        )

    def cut_multipart() -> RawRequest:
        body = multipart([("files", "a.png", seeds[0].data)])
        return RawRequest(
            "cut-multipart",
            "POST",
            "/v1/predict",
            body[: int(rng.integers(1, len(body) - 4))],
            (("content-type", mp),),
            (400, 422),
        )

    def no_boundary() -> RawRequest:
        return RawRequest(
            "no-boundary",
            "POST",
            "/v1/predict",
            b"xx",
            (("content-type", "multipart/form-data"),),
            (400,),
            "malformed_multipart",
        )

    def json_body() -> RawRequest:
        return RawRequest(
            "json-body",
            "POST",
            "/v1/predict",
            b'{"files": "x.png"}',
            (("content-type", "application/json"),),
            (422,),
            "validation_error",
        )

    def no_content_type() -> RawRequest:
        return RawRequest(
            "no-content-type", "POST", "/v1/predict", rng.bytes(100), (), (422,), "validation_error"
        )

    def wrong_field() -> RawRequest:
        body = multipart([("image", "a.png", seeds[0].data)])
        return RawRequest(
            "wrong-field", "POST", "/v1/predict", body, (("content-type", mp),), (422,), "validation_error"
        )

    def huge_header() -> RawRequest:
        return upload_request(
            "huge-part-header",
            [("x" * 20_000 + ".png", seeds[0].data)],
            statuses=(400,),
            code="malformed_multipart",
        )

    def too_many() -> RawRequest:
        return upload_request(
            "too-many-files",
            [(f"{i}.png", b"x") for i in range(max_files + 1)],
            statuses=(422,),
            code="too_many_files",
        )

    def oversize() -> RawRequest:
        return upload_request(
            "oversize-file",
            [("big.png", b"\0" * (max_upload_bytes + 1))],
            statuses=(413,),
            code="upload_too_large",
        )

    def lying_length() -> RawRequest:
        return RawRequest(
            "lying-content-length",
            "POST",
            "/v1/predict",
            b"x",
            (("content-type", mp), ("content-length", str(10**12))),
            (413,),
            "upload_too_large",
        )

    def bad_query() -> RawRequest:
        q = ["?overlay=perhaps", "?study=2", "?operating_point=" + "z" * 101, "?operating_point=nope"][
            int(rng.integers(4))
        ]
        return upload_request("bad-query", [("a.png", seeds[0].data)], query=q, statuses=(422,))

    def wrong_method() -> RawRequest:
        return RawRequest(
            "wrong-method",
            ["GET", "PUT", "DELETE", "PATCH"][int(rng.integers(4))],
            "/v1/predict",
            statuses=(405,),
            code="method_not_allowed",
        )

    def unknown_path() -> RawRequest:
        path = "/" + "/".join(rng.choice(list("abc%2e."), size=int(rng.integers(1, 12))))
        return RawRequest("unknown-path", "GET", path.replace("//", "/"), statuses=(404,))

    def odd_filename() -> RawRequest:
        name = ["../../etc/passwd.png", "C:\\x\\..\\a.png", "a\x00b\x7f.png", "\udcff\udcfe.png", ""][
            int(rng.integers(5))
        ]
        return upload_request("odd-filename", [(name, seeds[0].data)], statuses=(200,))

    makers: list[Callable[[], RawRequest]] = [
        corpus_file, corpus_file, corpus_file, mutated, mutated, random_body, cut_multipart, no_boundary,
        json_body, no_content_type, wrong_field, huge_header, too_many, bad_query, wrong_method,
        unknown_path, odd_filename,
    ]  # fmt: skip
    if max_upload_bytes <= 4 * 1024 * 1024:  # keep the garbage itself small
        makers.append(oversize)
    if raw:
        makers.append(lying_length)
    return [makers[int(rng.integers(len(makers)))]() for _ in range(n)]


def markdown_table(cases: tuple[Case, ...]) -> str:
    """The corpus as a Markdown table, with the messages the reader gives now (docs/hardening.md)."""
    from fracsight.errors import ImageReadError
    from fracsight.io import read_image

    lines = [
        "| case | input | library | CLI exit, row | API status, `code` |",
        "|---|---|---|---|---|",
    ]
    for c in cases:
        incomplete = False
        try:
            meta = read_image(c.data, name=c.filename).metadata
            got, message, incomplete = OK, "; ".join(meta.warnings), meta.incomplete
        except ImageReadError as e:
            got, message = e.code, str(e)
        message = message.replace("|", "/")
        message = message if len(message) <= 110 else message[:107] + "..."
        if c.expect == OK:
            lib = "Prediction" + (", **not reliable**" if incomplete else "")
            lib += f"; warning: {message}" if message else ""
            cli = '0, decision "not reliable: ..."' if incomplete else "0, decision"
            api = "200, prediction, `reliable: false`" if incomplete else "200, prediction"
        else:
            lib = f"`{c.expect}`: {message}"
            cli, api = f"1, `{c.expect}: ...`", f"{c.http_status}, `{c.expect}`"
        mark = "" if got == c.expect else " **(differs!)**"
        lines.append(f"| `{c.id}` | {c.what} | {lib}{mark} | {cli} | {api} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if "--markdown" in sys.argv:
        print(markdown_table(build_corpus()))
    else:
        for c in build_corpus():
            print(f"{c.id:24} {len(c.data):>8} B  {c.expect:24} {c.what}")
