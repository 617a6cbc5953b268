"""fracsight.io on DICOM: photometric, LUTs, bit depths, frames, compression, privacy, refusals."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from fracsight.errors import (
    CorruptImageError,
    DecompressionBombError,
    ImageReadError,
    ImageTooSmallError,
    NoPixelDataError,
    UnsupportedFormatError,
    UnsupportedPhotometricError,
)
from fracsight.io import read_image

RAMP12 = np.linspace(0, 4095, 48 * 64).round().astype(np.uint16).reshape(48, 64)  # 0 .. 4095

IDENTIFIERS = {
    "PatientName": "DOE^JOHNATHAN",
    "PatientID": "PID-7731942",
    "PatientBirthDate": "19610423",
    "StudyDate": "20240117",
    "AcquisitionDate": "20240118",
    "InstitutionName": "Saint Elsewhere Hospital",
    "InstitutionAddress": "12 Harbour Road",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "AccessionNumber": "ACC99817",
    "StudyDescription": "WRIST LEFT TRAUMA OF MR DOE",
    "OperatorsName": "SMITH^ANNA",
}


def make_dicom(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    bits_allocated: int = 16,
    signed: bool = False,
    compress: str | None = None,
    preamble: bool = True,
    **tags: Any,
) -> bytes:
    """A minimal DX DICOM (explicit VR little endian unless ``compress``) around ``pixels``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if preamble else ImplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    dtype = {8: np.uint8, 16: np.uint16}.get(bits_allocated, np.uint16)
    ds.PixelData = pixels.astype(np.int64).astype(dtype).tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if compress is not None:
        ds.compress(compress)
    buf = io.BytesIO()
    if preamble:
        ds.save_as(buf, enforce_file_format=True)
    else:
        ds.save_as(buf, implicit_vr=True, little_endian=True)
    return buf.getvalue()


# --- pixel values --------------------------------------------------------------------------


def test_monochrome2_ramp_maps_to_unit_ramp() -> None:
    rg = read_image(make_dicom(RAMP12), name="ramp.dcm")
    np.testing.assert_allclose(rg.pixels, RAMP12 / 4095.0, atol=1e-6)
    meta = rg.metadata
    assert (meta.source_format, meta.photometric, meta.bit_depth) == ("dicom", "MONOCHROME2", 12)
    assert meta.original_size == (48, 64) and meta.frames == 1 and meta.warnings == ()


def test_monochrome1_is_inverted_brightest_stored_becomes_zero() -> None:
    rg = read_image(make_dicom(RAMP12, photometric="MONOCHROME1"))
    np.testing.assert_allclose(rg.pixels, 1.0 - RAMP12 / 4095.0, atol=1e-6)
    assert rg.pixels.flat[RAMP12.argmax()] == 0.0  # the brightest stored value
    assert rg.metadata.photometric == "MONOCHROME1 (inverted)"


@pytest.mark.parametrize(("bits_stored", "bits_allocated"), [(8, 8), (10, 16), (12, 16), (16, 16)])
def test_bits_stored_ramps(bits_stored: int, bits_allocated: int) -> None:
    top = 2**bits_stored - 1
    ramp = np.linspace(0, top, 48 * 64).round().reshape(48, 64)
    rg = read_image(make_dicom(ramp, bits_stored=bits_stored, bits_allocated=bits_allocated))
    np.testing.assert_allclose(rg.pixels, ramp / top, atol=1e-6)
    assert rg.metadata.bit_depth == bits_stored


def test_signed_12bit_pixels_keep_their_order() -> None:
    signed = np.linspace(-2048, 2047, 48 * 64).round().reshape(48, 64)
    stored = signed.astype(np.int64) & 0x0FFF  # two's complement in 12 bits, high bits clear
    rg = read_image(make_dicom(stored, signed=True))
    np.testing.assert_allclose(rg.pixels, (signed + 2048) / 4095.0, atol=1e-6)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_rescale_then_window(function: str) -> None:
    slope, intercept, center, width = 2.0, -1024.0, 500.0, 1000.0
    data = make_dicom(
        RAMP12,
        RescaleSlope=slope,
        RescaleIntercept=intercept,
        WindowCenter=center,
        WindowWidth=width,
        VOILUTFunction=function,
    )
    values = RAMP12 * slope + intercept
    if function == "LINEAR":  # PS3.3 C.11.2.1.2.1
        center, width = center - 0.5, width - 1
    expected = np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if function == "SIGMOID":  # PS3.3 C.11.2.1.3.1
        expected = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    rg = read_image(data)
    np.testing.assert_allclose(rg.pixels, expected, atol=1e-5)
    if function != "SIGMOID":  # both sides of the window are reached
        assert rg.pixels.min() == 0.0 and rg.pixels.max() == 1.0


def test_rescale_without_window_uses_min_max() -> None:
    rg = read_image(make_dicom(RAMP12[:, 10:50] + 100, RescaleSlope=3.0, RescaleIntercept=-50.0))
    assert rg.pixels.min() == 0.0 and rg.pixels.max() == pytest.approx(1.0)


def test_voi_lut_sequence_is_applied_and_its_output_range_mapped() -> None:
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 16])  # LUT Descriptor: entries, first value, bits
    lut = (np.sqrt(np.arange(4096) / 4095.0) * 4000).astype(np.uint16)  # a curve, output 0..4000
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data
    rg = read_image(make_dicom(RAMP12, VOILUTSequence=Sequence([item]), WindowCenter=10, WindowWidth=20))
    np.testing.assert_allclose(rg.pixels, lut[RAMP12] / 4000.0, atol=1e-6)  # the LUT wins over the window


def test_unusable_window_falls_back_to_min_max_with_warning() -> None:
    rg = read_image(make_dicom(RAMP12, WindowCenter=100, WindowWidth=0))
    np.testing.assert_allclose(rg.pixels, RAMP12 / 4095.0, atol=1e-6)
    assert any("window" in w for w in rg.metadata.warnings)


def test_multi_frame_reads_first_frame() -> None:
    stack = np.stack([RAMP12, 4095 - RAMP12, np.full_like(RAMP12, 7)])
    rg = read_image(make_dicom(stack))
    np.testing.assert_allclose(rg.pixels, RAMP12 / 4095.0, atol=1e-6)
    assert rg.metadata.frames == 3 and any("only the first" in w for w in rg.metadata.warnings)


COMPRESSIONS = [
    pytest.param(uid, marks=pytest.mark.skipif(not get_encoder(uid).is_available, reason="no encoder"))
    for uid in (RLELossless, JPEG2000Lossless)
]


@pytest.mark.parametrize("uid", COMPRESSIONS)
def test_compressed_transfer_syntaxes_decode_like_native(uid: str) -> None:
    stack = np.stack([RAMP12, 4095 - RAMP12])
    rg = read_image(make_dicom(stack, photometric="MONOCHROME1", compress=uid))
    np.testing.assert_allclose(rg.pixels, 1.0 - RAMP12 / 4095.0, atol=1e-6)
    assert rg.metadata.frames == 2


def test_bare_dataset_without_preamble_is_read() -> None:
    data = make_dicom(RAMP12, preamble=False)
    assert data[128:132] != b"DICM"
    np.testing.assert_allclose(read_image(data).pixels, RAMP12 / 4095.0, atol=1e-6)


# --- metadata and privacy ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "spacing"),
    [
        ({"PixelSpacing": [0.139, 0.14]}, (0.139, 0.14)),
        ({"ImagerPixelSpacing": [0.2, 0.2]}, (0.2, 0.2)),
        ({"PixelSpacing": [0.1, 0.1], "ImagerPixelSpacing": [0.2, 0.2]}, (0.1, 0.1)),
        ({}, None),
    ],
)
def test_technical_metadata(tags: dict[str, Any], spacing: tuple[float, float] | None) -> None:
    rg = read_image(make_dicom(RAMP12, BodyPartExamined="HAND", ViewPosition="PA", **tags))
    assert rg.metadata.pixel_spacing_mm == spacing
    assert (rg.metadata.body_part, rg.metadata.view) == ("HAND", "PA")


def test_identifiers_never_reach_metadata() -> None:
    data = make_dicom(RAMP12, WindowCenter=1, WindowWidth=0, BodyPartExamined="WRIST", **IDENTIFIERS)
    meta = read_image(data, name="case.dcm").metadata
    assert meta.warnings  # the unusable window produced a warning, which must be clean too
    dumped = repr(meta) + repr(meta.to_dict())
    for value in IDENTIFIERS.values():
        for part in value.split("^"):
            assert part not in dumped


def test_identifiers_never_reach_error_messages() -> None:
    rgb = np.zeros((3, 48, 64))  # colour: refused
    data = make_dicom(rgb[0], photometric="RGB", SamplesPerPixel=3, **IDENTIFIERS)
    with pytest.raises(UnsupportedPhotometricError) as info:
        read_image(data)
    for value in IDENTIFIERS.values():
        assert value.split("^")[0] not in str(info.value)


# --- refusals --------------------------------------------------------------------------------


def test_dicom_without_pixel_data() -> None:
    data = make_dicom(RAMP12)
    with pytest.raises(NoPixelDataError, match=r"report\.dcm: DICOM file has no \(7FE0,0010\) Pixel Data"):
        read_image(data[: data.index(b"\xe0\x7f\x10\x00")], name="report.dcm")


@pytest.mark.parametrize(
    ("photometric", "samples"), [("RGB", 3), ("YBR_FULL", 3), ("PALETTE COLOR", 1), ("MONOCHROME2", 3)]
)
def test_colour_dicom_is_refused_naming_the_value(photometric: str, samples: int) -> None:
    data = make_dicom(RAMP12, photometric=photometric, SamplesPerPixel=samples)
    with pytest.raises(UnsupportedPhotometricError) as info:
        read_image(data, name="colour.dcm")
    message = str(info.value)
    assert message.startswith("colour.dcm: ") and repr(photometric) in message
    assert "MONOCHROME1 or MONOCHROME2" in message


@pytest.mark.parametrize(
    ("kwargs", "pixels", "error", "fragment"),
    [
        ({"bits_allocated": 12}, RAMP12, CorruptImageError, "BitsAllocated 12 is not supported"),
        ({"bits_stored": 16, "bits_allocated": 8}, RAMP12 % 256, CorruptImageError, "BitsStored 16"),
        ({"Rows": 96}, RAMP12, CorruptImageError, "needs 12288 bytes"),
        ({"Rows": 60000, "Columns": 60000}, RAMP12, DecompressionBombError, "60000 x 60000"),
        ({}, RAMP12[:16, :16], ImageTooSmallError, "16 x 16 pixels is too small"),
        ({"TransferSyntax": "1.2.3.4.5"}, RAMP12, UnsupportedFormatError, "transfer syntax 1.2.3.4.5"),
    ],
)
def test_inconsistent_headers_are_refused(
    kwargs: dict[str, Any], pixels: np.ndarray, error: type[ImageReadError], fragment: str
) -> None:
    syntax = kwargs.pop("TransferSyntax", None)
    data = make_dicom(pixels, **kwargs)
    if syntax is not None:
        data = data.replace(ExplicitVRLittleEndian.encode(), syntax.encode().ljust(19, b"\0"), 1)
    assert len(data) < 10_000  # the 60000 x 60000 header is refused without allocating
    with pytest.raises(error) as info:
        read_image(data, name="bad.dcm")
    assert str(info.value).startswith("bad.dcm: ") and fragment in str(info.value)


def test_garbage_after_dicom_magic_is_a_clean_error() -> None:
    noise = np.random.default_rng(3).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    with pytest.raises(ImageReadError, match=r"^junk\.dcm: "):
        read_image(b"\0" * 128 + b"DICM" + noise, name="junk.dcm")
