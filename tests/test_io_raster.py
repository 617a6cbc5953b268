"""fracsight.io on PNG/JPEG/BMP/TIFF/GIF: pixel values, metadata, and every refusal."""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from corpus import dicom_bytes
from fracsight.errors import (
    DecompressionBombError,
    EmptyFileError,
    ImageReadError,
    ImageTooSmallError,
    InvalidPixelsError,
    TruncatedImageError,
    UnsupportedFormatError,
)
from fracsight.inference import Predictor
from fracsight.io import DEFAULT_MAX_PIXELS, MIN_SIDE, Radiograph, read_image

RAMP8 = np.tile(np.arange(256, dtype=np.uint8)[None, :], (40, 1))  # 40 x 256, every 8-bit value


def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def crafted_png(width: int, height: int, extra: bytes = b"") -> bytes:
    """A PNG whose IHDR claims width x height but whose IDAT holds only a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def with_sbit(png: bytes, bits: int) -> bytes:
    """Insert an sBIT chunk right after IHDR (8 + 25 bytes)."""
    return png[:33] + png_chunk(b"sBIT", bytes([bits])) + png[33:]


# --- pixel values --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "GIF"])
def test_lossless_8bit_gray_is_value_over_255(fmt: str) -> None:
    rg = read_image(encode(Image.fromarray(RAMP8), fmt))
    assert rg.pixels.dtype == np.float32 and rg.pixels.shape == (40, 256)
    np.testing.assert_allclose(rg.pixels, RAMP8 / 255.0, atol=1e-6)
    assert rg.metadata.source_format == fmt.lower()
    assert rg.metadata.bit_depth == 8 and rg.metadata.truncated is False and rg.metadata.warnings == ()


def test_jpeg_gray_close_to_source() -> None:
    smooth = np.tile(np.linspace(0, 255, 128).astype(np.uint8)[None, :], (64, 1))
    rg = read_image(encode(Image.fromarray(smooth), "JPEG", quality=95))
    assert rg.metadata.source_format == "jpeg" and rg.metadata.photometric == "L"
    np.testing.assert_allclose(rg.pixels, smooth / 255.0, atol=0.03)


@pytest.mark.parametrize(
    ("top", "sbit", "divisor", "bits", "fmt"),
    [
        (65535, None, 65535, 16, "PNG"),
        (4095, None, 4095, 12, "PNG"),  # 12 bits stored in 16: scaled by 4095
        (1000, None, 1023, 10, "PNG"),  # a 10-bit detector's
        (16000, None, 16383, 14, "PNG"),  # a 14-bit one's: was divided by 65535, a quarter as bright
        (4096, None, 16383, 14, "TIFF"),
        (1000, 10, 1023, 10, "PNG"),  # sBIT says 10 significant bits
        (4095, None, 4095, 12, "TIFF"),
        (40000, None, 65535, 16, "TIFF"),
    ],
)
def test_16bit_scaled_by_bit_range(top: int, sbit: int | None, divisor: int, bits: int, fmt: str) -> None:
    arr = np.linspace(0, top, 64 * 64).reshape(64, 64).astype(np.uint16)
    data = encode(Image.fromarray(arr), fmt)
    if sbit is not None:
        data = with_sbit(data, sbit)
    rg = read_image(data)
    assert rg.metadata.bit_depth == bits
    np.testing.assert_allclose(rg.pixels, arr / divisor, atol=1e-6)


@pytest.mark.parametrize("mode", ["I;16", "F", "L"])
def test_a_white_is_zero_tiff_is_read_with_bone_bright(mode: str) -> None:
    """PhotometricInterpretation 0 (white is zero): Pillow inverts 8-bit grey itself, not 16-bit or
    float, which were read inverted (a fractured wrist 'no fracture detected', reliable)."""
    display = np.linspace(0.1, 0.9, 64 * 64).reshape(64, 64)  # what a viewer shows
    if mode == "I;16":
        stored = Image.fromarray(((1 - display) * 65535).round().astype(np.uint16))
    elif mode == "F":
        stored = Image.fromarray((1 - display).astype(np.float32), mode="F")
    else:  # Pillow writes 8-bit white-is-zero inverted, and reads it back as shown
        stored = Image.fromarray((display * 255).round().astype(np.uint8))
    data = encode(stored, "TIFF", tiffinfo={262: 0})
    want = "L" if mode == "L" else f"{mode} WhiteIsZero (inverted)"
    # the file, and the file opened with PIL (re-saved as a TIFF that dropped the tag: read inverted)
    for rg in (read_image(data), Radiograph.from_array(Image.open(io.BytesIO(data)))):
        np.testing.assert_allclose(rg.pixels, display, atol=1 / 255)
        assert rg.metadata.photometric == want


def test_a_pil_palette_image_with_transparency_is_composited_as_its_file_is() -> None:
    """The PIL image was re-saved as a TIFF, which keeps no palette transparency: the transparent
    band came out white where the file's reader makes it black (with a warning)."""
    im = Image.new("P", (64, 64), 1)
    im.putpalette([255, 255, 255] * 2 + [0, 0, 0] * 254)
    im.paste(0, (0, 0, 64, 16))  # index 0: transparent
    im.info["transparency"] = 0
    data = encode(im, "PNG", transparency=0)
    from_file, from_pil = read_image(data), Radiograph.from_array(Image.open(io.BytesIO(data)))
    assert from_file.pixels[:16].max() == 0.0 and from_file.pixels[16:].min() == 1.0
    np.testing.assert_array_equal(from_pil.pixels, from_file.pixels)
    assert any("transparent" in w for w in from_pil.metadata.warnings)


def test_a_16bit_colour_png_says_its_low_byte_was_dropped() -> None:
    """Pillow decodes 16-bit RGB to 8 bits by the high byte: 12-bit data read nearly black, as a
    'blank?' image, with no word of why."""
    for colour_type, samples in ((2, 3), (4, 2)):  # RGB; grey and alpha, decoded as 8-bit RGBA too
        _check_16bit_colour_png_warns(colour_type, samples)
    assert not any(
        "16-bit colour" in w for w in read_image(encode(Image.new("RGB", (40, 40)), "PNG")).metadata.warnings
    )


def _check_16bit_colour_png_warns(colour_type: int, samples: int) -> None:
    raw = zlib.compress(b"".join(b"\x00" + b"\x0f\xff" * samples * 40 for _ in range(40)))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40, 40, 16, colour_type, 0, 0, 0))
    png += chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    rg = read_image(png)
    assert any("16-bit colour or grey-and-alpha PNG read at 8 bits" in w for w in rg.metadata.warnings)


def test_32bit_int_tiff_outside_16bit_range_is_stretched_with_warning() -> None:
    arr = np.linspace(-5000, 100000, 64 * 64).reshape(64, 64).astype(np.int32)
    rg = read_image(encode(Image.fromarray(arr), "TIFF"))
    assert rg.pixels.min() == 0.0 and rg.pixels.max() == pytest.approx(1.0)
    assert any("stretched" in w for w in rg.metadata.warnings)


@pytest.mark.parametrize(("lo", "hi", "stretched"), [(0.0, 1.0, False), (-3.0, 7.0, True)])
def test_float_tiff(lo: float, hi: float, stretched: bool) -> None:
    arr = np.linspace(lo, hi, 64 * 64, dtype=np.float32).reshape(64, 64)
    rg = read_image(encode(Image.fromarray(arr, mode="F"), "TIFF"))
    np.testing.assert_allclose(rg.pixels, (arr - lo) / (hi - lo), atol=1e-6)
    assert any("stretched" in w for w in rg.metadata.warnings) is stretched


def test_rgb_becomes_bt601_luminance_and_colour_is_reported() -> None:
    rgb = np.zeros((40, 60, 3), dtype=np.uint8)
    rgb[:, :20, 0] = 255
    rgb[:, 20:40, 1] = 255
    rgb[:, 40:, 2] = 255
    rg = read_image(encode(Image.fromarray(rgb), "PNG"))
    np.testing.assert_allclose(rg.pixels[0, [0, 20, 40]], [0.299, 0.587, 0.114], atol=1e-5)
    assert rg.metadata.photometric == "RGB"
    assert any("colour image" in w for w in rg.metadata.warnings)


@pytest.mark.parametrize(("tint", "colour"), [(0, False), (2, False), (8, True), (60, True)])
def test_three_channel_jpeg_is_read_as_its_luma_with_the_same_colour_check(tint: int, colour: bool) -> None:
    """A colour JPEG is decoded as its stored YCbCr (the Y channel is the grey image): the
    same values as BT.601 luminance of its RGB decode where no channel clips, and the colour
    warning from the chroma for the same images as from RGB."""
    base = np.random.default_rng(0).integers(70, 185, (96, 128)).astype(np.float32)
    rgb = np.stack([base + tint, base, base - tint], axis=-1).astype(np.uint8)
    data = encode(Image.fromarray(rgb), "JPEG", quality=90)
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    luminance = decoded @ np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255
    rg = read_image(data)
    assert rg.metadata.photometric == "RGB"
    np.testing.assert_allclose(rg.pixels, luminance, atol=1.6 / 255)
    assert any("colour image" in w for w in rg.metadata.warnings) is colour
    reduced = read_image(data, reduce_to=48)  # decoded at half scale, still as YCbCr
    assert reduced.pixels.shape == (48, 64) and reduced.metadata.reduced_from == (96, 128)


@pytest.mark.parametrize("reduce_to", [None, 32])
def test_grey_three_channel_jpeg_gives_the_rgb_paths_values_to_the_bit(reduce_to: int | None) -> None:
    """Reading a grey three-channel JPEG as YCbCr must not change a single float: the packaged
    INT8 bundles were fitted and measured on the values of the RGB path (BT.601 luminance as
    three float32 products), and Y / 255, which differs in the last bit, moved the default
    model's test AUROC, sensitivity and box AP50 on FracAtlas."""
    data = encode(Image.fromarray(np.repeat(RAMP8[..., None], 3, axis=2)), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as im:
        if reduce_to:
            im.draft("RGB", (reduce_to, reduce_to))
        rgb = np.asarray(im.convert("RGB"))
    assert (rgb == rgb[..., :1]).all()  # a grey picture: equal channels
    expected = rgb[..., 0] * np.float32(0.299 / 255.0)
    expected += rgb[..., 1] * np.float32(0.587 / 255.0)
    expected += rgb[..., 2] * np.float32(0.114 / 255.0)
    np.clip(expected, 0.0, 1.0, out=expected)
    rg = read_image(data, reduce_to=reduce_to)
    assert rg.pixels.dtype == np.float32 and rg.pixels.shape == expected.shape
    assert np.array_equal(rg.pixels, expected)


def test_gray_stored_as_rgb_gives_same_values_without_warning() -> None:
    rgb = np.repeat(RAMP8[..., None], 3, axis=2)
    rg = read_image(encode(Image.fromarray(rgb), "PNG"))
    np.testing.assert_allclose(rg.pixels, RAMP8 / 255.0, atol=1e-5)
    assert rg.metadata.warnings == ()


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_black(mode: str) -> None:
    gray = np.full((40, 40), 200, dtype=np.uint8)
    alpha = np.full((40, 40), 255, dtype=np.uint8)
    alpha[:, :20] = 0
    bands = [gray, gray, gray, alpha] if mode == "RGBA" else [gray, alpha]
    rg = read_image(encode(Image.fromarray(np.stack(bands, axis=2), mode=mode), "PNG"))
    assert np.all(rg.pixels[:, :20] == 0.0)
    np.testing.assert_allclose(rg.pixels[:, 20:], 200 / 255.0, atol=1e-5)
    assert any("composited on black" in w for w in rg.metadata.warnings)


def test_opaque_alpha_changes_nothing() -> None:
    rgba = np.dstack([RAMP8, RAMP8, RAMP8, np.full_like(RAMP8, 255)])
    rg = read_image(encode(Image.fromarray(rgba, mode="RGBA"), "PNG"))
    np.testing.assert_allclose(rg.pixels, RAMP8 / 255.0, atol=1e-5)
    assert rg.metadata.warnings == ()


def test_palette_image_uses_palette_values() -> None:
    im = Image.new("P", (40, 40))
    im.putpalette([0, 0, 0, 100, 100, 100, 255, 255, 255] + [0] * (253 * 3))
    im.paste(1, (0, 0, 40, 20))
    im.paste(2, (0, 20, 40, 40))
    rg = read_image(encode(im, "PNG"))
    np.testing.assert_allclose(rg.pixels[[0, 39], 0], [100 / 255.0, 1.0], atol=1e-5)


def test_cmyk_and_bilevel() -> None:
    cmyk = Image.new("CMYK", (40, 40), (0, 0, 0, 0))
    cmyk.paste((0, 0, 0, 255), (0, 0, 20, 40))
    rg = read_image(encode(cmyk, "TIFF"))
    assert rg.pixels[0, 0] == 0.0 and rg.pixels[0, 39] == pytest.approx(1.0)
    bilevel = Image.fromarray(RAMP8 > 127).convert("1")
    rg = read_image(encode(bilevel, "PNG"))
    assert set(np.unique(rg.pixels)) == {0.0, 1.0} and rg.metadata.bit_depth == 1


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((40, 64), dtype=np.uint8)
    arr[:5, :5] = 255  # a bright block top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rg = read_image(encode(Image.fromarray(arr), "PNG", exif=exif))
    assert rg.pixels.shape == (64, 40) and rg.metadata.original_size == (40, 64)
    assert rg.pixels[:5, -5:].min() == 1.0 and rg.pixels[:5, :5].max() == 0.0


@pytest.mark.parametrize(("fmt", "kwargs"), [("TIFF", {}), ("GIF", {}), ("PNG", {"default_image": False})])
def test_multi_frame_reads_first_frame_with_warning(fmt: str, kwargs: dict[str, object]) -> None:
    frames = [Image.fromarray(np.full((40, 40), v, dtype=np.uint8)) for v in (30, 220, 90)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **kwargs)
    rg = read_image(data)
    assert rg.metadata.frames == 3
    np.testing.assert_allclose(rg.pixels, 30 / 255.0, atol=1e-5)
    assert any("only the first" in w for w in rg.metadata.warnings)


# --- reduced JPEG decoding (reduce_to) ---------------------------------------------------------


def smooth(height: int, width: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray((127 + 100 * np.sin(x / 37.0) * np.cos(y / 53.0)).astype(np.uint8))


def smooth_jpeg(height: int, width: int, exif: Image.Exif | None = None) -> bytes:
    kwargs = {"exif": exif} if exif is not None else {}
    return encode(smooth(height, width), "JPEG", quality=95, **kwargs)


@pytest.mark.parametrize(("reduce_to", "shape"), [(384, (600, 500)), (200, (300, 250)), (100, (150, 125))])
def test_jpeg_decodes_at_the_smallest_scale_covering_reduce_to(
    reduce_to: int, shape: tuple[int, int]
) -> None:
    data = smooth_jpeg(1200, 1000)
    full = read_image(data)
    rg = read_image(data, reduce_to=reduce_to)
    assert rg.pixels.shape == shape and min(shape) >= reduce_to
    assert rg.metadata.reduced_from == (1200, 1000) and rg.full_size == (1200, 1000)
    assert rg.metadata.original_size == full.metadata.original_size == (1200, 1000)
    assert full.metadata.reduced_from is None and full.full_size == (1200, 1000)
    # DCT scaling averages blocks: the reduced image is the full one, shrunk
    shrunk = Image.fromarray(full.pixels).resize(shape[::-1], Image.Resampling.BOX)
    assert np.abs(rg.pixels - np.asarray(shrunk)).mean() < 0.01


def test_reduce_to_keeps_small_jpegs_and_other_formats_at_full_size() -> None:
    small = smooth_jpeg(700, 500)  # halving would make the short side 250 < 384
    rg = read_image(small, reduce_to=384)
    assert rg.pixels.shape == (700, 500) and rg.metadata.reduced_from is None
    np.testing.assert_array_equal(rg.pixels, read_image(small).pixels)
    png = read_image(encode(smooth(1200, 1000), "PNG"), reduce_to=384)
    assert png.pixels.shape == (1200, 1000) and png.metadata.reduced_from is None


def test_reduced_jpeg_with_exif_rotation_reports_the_displayed_full_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = smooth_jpeg(800, 1000, exif)
    rg = read_image(data, reduce_to=384)
    assert rg.pixels.shape == (500, 400) and rg.full_size == (1000, 800)
    assert rg.metadata.original_size == (800, 1000)  # as stored


def test_truncated_jpeg_is_reduced_too() -> None:
    data = smooth_jpeg(1200, 1000)
    rg = read_image(data[: len(data) // 2], reduce_to=384)
    assert rg.metadata.truncated and rg.pixels.shape == (600, 500) and rg.full_size == (1200, 1000)


# --- truncated files -------------------------------------------------------------------------


def noisy_jpeg() -> bytes:
    arr = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    return encode(Image.fromarray(arr), "JPEG", quality=90)


def test_truncated_jpeg_is_read_tolerantly_and_flagged() -> None:
    data = noisy_jpeg()
    rg = read_image(data[: len(data) // 2], name="cut.jpg")
    assert rg.pixels.shape == (128, 128) and rg.metadata.truncated is True
    assert rg.metadata.incomplete
    assert rg.metadata.warnings == ("truncated file: the bottom 50% of the image is missing (filled grey)",)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # the global switch is never touched


def test_a_progressive_jpeg_cut_short_is_incomplete() -> None:
    """A progressive JPEG fills every row from its first scans: 90% of the file gone was "it ends
    without its end marker, but every row was decoded", reliable, on a blur of the radiograph."""
    data = encode(Image.fromarray(np.asarray(Image.open(io.BytesIO(noisy_jpeg())))), "JPEG", progressive=True)
    rg = read_image(data[: len(data) // 10], name="cut.jpg")
    assert rg.metadata.truncated and rg.metadata.incomplete
    assert rg.metadata.warnings == (
        "truncated file: a progressive JPEG cut short; its later scans are missing, so the image has "
        "less detail than it should",
    )
    whole = read_image(data, name="whole.jpg")
    assert not whole.metadata.truncated and not whole.metadata.incomplete
    # every scan there, the end marker alone missing: whole (it was refused as "not reliable")
    marker_only = read_image(data[:-2], name="no-end.jpg")
    assert marker_only.metadata.truncated and not marker_only.metadata.incomplete
    assert np.array_equal(marker_only.pixels, whole.pixels)


def test_truncated_jpeg_strict_is_refused() -> None:
    data = noisy_jpeg()
    with pytest.raises(TruncatedImageError, match=r"cut\.jpg: truncated JPEG .*strict"):
        read_image(data[: len(data) // 2], name="cut.jpg", strict=True)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_truncated_other_formats_are_refused(fmt: str) -> None:
    arr = np.random.default_rng(1).integers(0, 256, (128, 128), dtype=np.uint8)
    data = encode(Image.fromarray(arr), fmt)
    with pytest.raises(TruncatedImageError, match=f"truncated {fmt} file"):
        read_image(data[: len(data) // 2], name=f"x.{fmt.lower()}")


# --- refusals --------------------------------------------------------------------------------

SUPPORTED_LIST = "PNG, JPEG, BMP, TIFF, GIF, DICOM"


@pytest.mark.parametrize(
    ("content", "name", "looks_like"),
    [
        (b"patient notes: nothing broken\n", "xray.png", "a text file despite its .png extension"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "scan.dcm", "an HTML page despite its .dcm"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "report.jpg", "a PDF document"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\0" * 40, "images.png", "a ZIP archive"),
        (bytes(np.random.default_rng(2).integers(0, 256, 300, dtype=np.uint8)), "noise.bin", "unrecognised"),
    ],
)
def test_non_images_are_refused_by_content(content: bytes, name: str, looks_like: str) -> None:
    with pytest.raises(UnsupportedFormatError) as info:
        read_image(content, name=name)
    message = str(info.value)
    assert message.startswith(f"{name}: not a supported image")
    assert looks_like in message and SUPPORTED_LIST in message


def test_empty_bytes_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(EmptyFileError, match="empty"):
        read_image(b"")
    path = tmp_path / "blank.png"
    path.write_bytes(b"")
    with pytest.raises(EmptyFileError, match=r"^blank\.png: the file is empty"):
        read_image(path)


def test_too_small_is_refused_and_limit_is_configurable() -> None:
    data = encode(Image.new("L", (MIN_SIDE - 1, 100)), "PNG")
    with pytest.raises(ImageTooSmallError, match=rf"tiny\.png: .*{MIN_SIDE - 1} x 100 .*at least {MIN_SIDE}"):
        read_image(data, name="tiny.png")
    assert read_image(data, min_side=8).width == MIN_SIDE - 1


@pytest.mark.parametrize(
    ("width", "height", "max_pixels"),
    [
        (100_000, 100_000, DEFAULT_MAX_PIXELS),  # beyond Pillow's own bomb limit
        (8_000, 8_000, DEFAULT_MAX_PIXELS),  # beyond ours only
        (64, 64, 1_000),  # a caller's limit
    ],
)
def test_decompression_bomb_is_refused_from_header(width: int, height: int, max_pixels: int) -> None:
    data = crafted_png(width, height)
    assert len(data) < 200  # nothing is decoded: the header alone is refused
    with pytest.raises(DecompressionBombError, match=r"bomb\.png: .*(too large|exceeds the limit)"):
        read_image(data, name="bomb.png", max_pixels=max_pixels)
    with pytest.raises(DecompressionBombError) as refused:
        read_image(data, name="bomb.png", max_pixels=max_pixels)
    assert "Pillow" not in str(refused.value)  # a limit of ours, not the decoder's internals


def test_corrupt_data_behind_a_valid_signature_is_a_clean_error() -> None:
    data = crafted_png(64, 64)  # IDAT far too short for 64 x 64
    with pytest.raises(ImageReadError, match=r"^broken\.png: "):
        read_image(data, name="broken.png")
    with pytest.raises(ImageReadError, match="cannot decode this PNG"):
        read_image(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, name="g.png")


def test_missing_file_and_path_input(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match=r"^nope\.png: no such file"):
        read_image(tmp_path / "nope.png")
    path = tmp_path / "secret-folder" / "knee.png"
    path.parent.mkdir()
    path.write_bytes(encode(Image.fromarray(RAMP8), "PNG"))
    assert read_image(path).metadata.name == "knee.png"  # the file name, never the path
    assert read_image(str(path), name="other.png").metadata.name == "other.png"


def test_an_empty_path_or_a_url_is_named_as_what_it_is() -> None:
    """``read_image("")`` read the current folder ("``: is a folder, not an image file``"), and a
    URL was "no such file" (``predict_many`` of URLs pasted from a browser)."""
    with pytest.raises(ImageReadError, match=r"^an empty path: name an image file$"):
        read_image("")
    for url in ("https://pacs.example/wado/x.jpg", "s3://bucket/a.dcm", "file:///nowhere/a.png"):
        with pytest.raises(
            ImageReadError, match=rf"^{re.escape(url)}: a URL, not a file: fracsight reads files"
        ):
            read_image(url)
    with pytest.raises(ImageReadError, match=r"^x\.png: no such file$"):
        read_image("C:/x.png")  # a drive letter is not a URL scheme


# --- real radiographs ------------------------------------------------------------------------


@pytest.mark.fracatlas
@pytest.mark.parametrize(
    ("relative", "mode", "truncated"),
    [
        ("Non_fractured/IMG0000008.jpg", "L", False),
        ("Non_fractured/IMG0000000.jpg", "RGB", False),
        ("Non_fractured/IMG0004028.jpg", "RGB", True),
    ],
)
def test_real_fracatlas_images(fracatlas_dir: Path, relative: str, mode: str, truncated: bool) -> None:
    path = fracatlas_dir / "images" / relative
    rg = read_image(path)
    with Image.open(path) as im:
        width, height = im.size
    assert rg.pixels.shape == (height, width) and rg.pixels.dtype == np.float32
    assert 0.0 <= rg.pixels.min() < 0.2 and 0.6 < rg.pixels.max() <= 1.0
    meta = rg.metadata
    assert (meta.source_format, meta.photometric, meta.truncated) == ("jpeg", mode, truncated)
    assert meta.name == path.name and meta.original_size == (height, width)
    assert not any("colour" in w for w in meta.warnings)  # RGB-stored radiographs are gray


@pytest.mark.parametrize("reduce_to", [True, 0, -5, 100.5, "384"])
def test_reduce_to_refuses_what_is_not_a_side(reduce_to: object) -> None:
    # True decoded a JPEG at 1/8 scale without a word; 0 and -5 read it whole, 100.5 as 100
    data = encode(smooth(1200, 1000), "JPEG")
    with pytest.raises(ValueError, match="reduce_to must be None or a side in pixels"):
        read_image(data, reduce_to=reduce_to)  # type: ignore[arg-type]
    assert read_image(data, reduce_to=1).pixels.shape == (150, 125)  # 1/8, the smallest scale
    # the same call with a PNG or a DICOM was read whole without a word: a caller's bug hidden
    # until the first JPEG came along
    for other in (encode(smooth(120, 100), "PNG"), dicom_bytes()):
        with pytest.raises(ValueError, match="reduce_to must be None or a side in pixels"):
            read_image(other, reduce_to=reduce_to)  # type: ignore[arg-type]


@pytest.mark.parametrize("folder", [".", "/", ".."])
def test_a_folder_without_a_name_of_its_own_is_named_as_given(folder: str, tiny_bundle: Path) -> None:
    """``read_image(".")`` said ``: is a folder, not an image file``, and ``predict_many(["."])``
    gave a result with an empty ``source``."""
    with pytest.raises(ImageReadError, match=rf"^{re.escape(folder)}: is a folder, not an image file$"):
        read_image(folder)
    (failed,) = Predictor(tiny_bundle).predict_many([folder])
    assert failed.source == folder and failed.error_code == "unreadable_image"


def test_floats_a_hair_over_one_are_named_with_the_digits_that_show_it() -> None:
    """ "got 0 to 1: divide by the image's full scale" said of 1.0000001: the overshoot hidden."""
    pixels = np.full((64, 64), 1.0000001, dtype=np.float32)
    pixels[0, 0] = 0.0
    with pytest.raises(InvalidPixelsError, match=r"got 0\.0 to 1\.0000001\d*: clip them"):
        Radiograph.from_array(pixels)
    # 1 + 1e-12 was printed "1", -1e-17 told to divide by 255, as was a cubic zoom's overshoot
    for lo, hi, shown in ((0.0, 1 + 1e-12, "1.000000000001"), (-1e-17, 1.0, "-1e-17"), (-0.03, 1.06, "1.06")):
        pixels = np.linspace(lo, hi, 64 * 64).reshape(64, 64)
        with pytest.raises(InvalidPixelsError, match=r"clip them \(np\.clip\(a, 0, 1\)\)") as caught:
            Radiograph.from_array(pixels)
        assert shown in str(caught.value)
    with pytest.raises(InvalidPixelsError, match=r"got 0\.0 to 255\.0: divide by the image's full scale"):
        Radiograph.from_array(np.linspace(0, 255, 64 * 64).reshape(64, 64))
