"""The Predictor's entry points: determinism, batching, failures in a batch, results, studies."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fracsight.inference import NOTICE, FailedPrediction, Prediction, Predictor
from fracsight.inference.tabular import collect_inputs
from fracsight.io import read_image


def _images(fracatlas_dir: Path, n: int = 10) -> list[Path]:
    root = fracatlas_dir / "images"
    half = n // 2
    return [
        *sorted((root / "Fractured").glob("*.jpg"))[:half],
        *sorted((root / "Non_fractured").glob("*.jpg"))[100 : 100 + n - half],
    ]


@pytest.fixture(scope="module")
def predictor(tiny_bundle: Path) -> Predictor:
    return Predictor(tiny_bundle)


@pytest.fixture(scope="module")
def sharp_predictor(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """The tiny bundle at temperature 1: its large fitted temperature squashes differences in probability."""
    folder = tmp_path_factory.mktemp("sharp") / "bundle"
    shutil.copytree(tiny_bundle, folder)
    data = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    data["temperature"] = 1.0
    (folder / "bundle.json").write_text(json.dumps(data), encoding="utf-8")
    return Predictor(folder)


def _synthetic(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """A radiograph-like greyscale PNG: a bright bar (bone) on a noisy dark background."""
    rng = np.random.default_rng(seed)
    img = rng.normal(60, 20, (height, width))
    img[height // 4 : 3 * height // 4, width // 3 : width // 2] += 120
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(path)
    return path


# ---- determinism ---------------------------------------------------------------------------------


def test_repeated_predictions_are_identical(sharp_predictor: Predictor, fracatlas_dir: Path) -> None:
    path = _images(fracatlas_dir, 2)[0]
    first = sharp_predictor.predict(path)
    for _ in range(2):
        again = sharp_predictor.predict(path)
        assert again == first  # every field except the arrays
        assert again.to_dict() == first.to_dict()
        np.testing.assert_array_equal(again.heatmap, first.heatmap)


def test_results_do_not_depend_on_the_batch_size(sharp_predictor: Predictor, fracatlas_dir: Path) -> None:
    paths = _images(fracatlas_dir, 10)
    runs = {bs: list(sharp_predictor.predict_many(paths, batch_size=bs, heatmap=True)) for bs in (1, 3, 8)}
    reference = runs[1]
    assert [r.source for r in reference] == [p.name for p in paths]
    probs = np.array([r.fracture_probability for r in reference])
    assert np.ptp(probs) > 1e-4, "the images should not all get the same probability"
    for bs in (3, 8):
        for a, b in zip(reference, runs[bs], strict=True):
            assert isinstance(a, Prediction) and isinstance(b, Prediction)
            assert a.source == b.source
            assert b.fracture_probability == pytest.approx(a.fracture_probability, abs=1e-6)
            np.testing.assert_allclose(b.heatmap, a.heatmap, atol=1e-6)
            assert len(a.boxes) == len(b.boxes)
            for ba, bb in zip(a.boxes, b.boxes, strict=True):
                np.testing.assert_allclose(bb.as_tuple(), ba.as_tuple(), atol=1e-6)
            assert a.decisions == b.decisions and a.reliable == b.reliable


def test_the_calibration_bias_shifts_the_logit(
    sharp_predictor: Predictor, fracatlas_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "biased"
    shutil.copytree(sharp_predictor.bundle_dir, folder)
    data = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    assert data.get("calibration_bias", 0.0) == 0.0
    data["calibration_bias"] = 1.5
    (folder / "bundle.json").write_text(json.dumps(data), encoding="utf-8")
    biased = Predictor(folder)
    for path in _images(fracatlas_dir, 4):
        p0 = sharp_predictor.predict(path).fracture_probability
        p1 = biased.predict(path).fracture_probability
        assert np.log(p1 / (1 - p1)) == pytest.approx(np.log(p0 / (1 - p0)) + 1.5, abs=1e-6)


def test_threads_sharing_a_predictor_get_the_sequential_results(
    sharp_predictor: Predictor, fracatlas_dir: Path
) -> None:
    """The API predicts from several threads at once on one Predictor and its statistics thread."""
    from concurrent.futures import ThreadPoolExecutor

    paths = _images(fracatlas_dir, 6) * 3
    sequential = [sharp_predictor.predict(p) for p in paths]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(sharp_predictor.predict, paths))
    for a, b in zip(sequential, concurrent, strict=True):
        assert b == a  # every field, warnings and reliability included, except the arrays
        np.testing.assert_array_equal(b.heatmap, a.heatmap)


# ---- batches with failures -----------------------------------------------------------------------


@pytest.fixture()
def folder_with_a_bad_file(tmp_path: Path, fracatlas_dir: Path) -> Path:
    folder = tmp_path / "batch"
    folder.mkdir()
    for i, src in enumerate(_images(fracatlas_dir, 4)):
        shutil.copyfile(src, folder / f"{i if i < 2 else i + 1:02d}_{src.name}")
    (folder / "02_broken.png").write_bytes(b"this is not an image at all")
    return folder


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_a_bad_file_fails_alone_and_in_place(
    predictor: Predictor, folder_with_a_bad_file: Path, batch_size: int
) -> None:
    files = collect_inputs([folder_with_a_bad_file])
    assert [f.name[:2] for f in files] == ["00", "01", "02", "03", "04"]
    results = list(predictor.predict_many(files, batch_size=batch_size))
    assert [r.source for r in results] == [f.name for f in files]
    bad = results[2]
    assert isinstance(bad, FailedPrediction)
    assert bad.source == "02_broken.png" and bad.error_code == "unsupported_format" and bad.error
    for i in (0, 1, 3, 4):
        assert isinstance(results[i], Prediction)
    alone = predictor.predict(files[3])
    assert results[3].fracture_probability == pytest.approx(alone.fracture_probability, abs=1e-6)


def test_predict_many_streams(predictor: Predictor, fracatlas_dir: Path) -> None:
    """The first batch is answered before the input iterator is exhausted."""
    paths = _images(fracatlas_dir, 6)
    consumed: list[Path] = []

    def source() -> Iterator[Path]:
        for p in paths:
            consumed.append(p)
            yield p

    stream = predictor.predict_many(source(), batch_size=2)
    first = next(stream)
    assert first.source == paths[0].name
    assert len(consumed) < len(paths)
    assert [r.source for r in [first, *stream]] == [p.name for p in paths]


def test_predict_many_of_nothing_is_nothing(predictor: Predictor) -> None:
    assert list(predictor.predict_many([])) == []


# ---- results -------------------------------------------------------------------------------------


def test_results_serialize_to_json_with_the_notice(predictor: Predictor, fracatlas_dir: Path) -> None:
    path = _images(fracatlas_dir, 2)[0]
    result = predictor.predict(path)
    payload = json.loads(json.dumps(result.to_dict()))  # no default=: plain JSON types only
    assert payload["notice"] == NOTICE
    assert payload["source"] == path.name  # a file name, never the full path
    assert str(path.parent) not in json.dumps(payload)
    assert 0.0 <= payload["fracture_probability"] <= 1.0
    assert payload["operating_point"]["name"] == predictor.operating_point.name
    assert set(payload["decisions"]) == {op.name for op in predictor.spec.operating_points}
    assert (payload["image"]["height"], payload["image"]["width"]) == result.metadata.original_size
    failed = FailedPrediction("x.png", "empty_file", "x.png is empty")
    assert json.loads(json.dumps(failed.to_dict()))["error_code"] == "empty_file"
    study = predictor.predict_study([result], "s1")
    assert json.loads(json.dumps(study.to_dict()))["notice"] == NOTICE


@pytest.mark.parametrize(("height", "width"), [(300, 700), (640, 200), (97, 97)])
def test_heatmap_has_the_original_size_and_boxes_lie_inside(
    predictor: Predictor, tmp_path: Path, height: int, width: int
) -> None:
    path = _synthetic(tmp_path / "x.png", height, width)
    result = predictor.predict(path)
    assert result.heatmap is not None and result.heatmap.shape == (height, width)
    assert result.heatmap.dtype == np.float32
    assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= 1.0
    for box in result.boxes:
        assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height
    assert predictor.predict(path, heatmap=False).heatmap is None


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_an_exif_rotated_image_reports_the_size_its_boxes_are_on(
    predictor: Predictor, tmp_path: Path, suffix: str
) -> None:
    """Orientation 6 (turn 90 degrees to display): stored 300 high x 700 wide, shown 700 x 300.
    The reported image size is the shown one, the frame of boxes, heatmap and overlay."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"turned.{suffix}"
    Image.open(_synthetic(tmp_path / "x.png", 300, 700)).save(path, exif=exif)
    result = predictor.predict(path, keep_pixels=True)
    assert result.metadata.original_size == (300, 700)  # as stored (docs/reading.md, "Metadata")
    assert result.heatmap is not None and result.heatmap.shape == (700, 300)
    assert result.pixels is not None and result.pixels.shape == (700, 300)
    assert result.image_size == (700, 300)
    assert (result.to_dict()["image"]["height"], result.to_dict()["image"]["width"]) == (700, 300)
    for box in result.boxes:
        assert 0 <= box.x0 < box.x1 <= 300 and 0 <= box.y0 < box.y1 <= 700


def test_boxes_on_real_images_lie_inside(predictor: Predictor, fracatlas_dir: Path) -> None:
    results = [predictor.predict(p) for p in _images(fracatlas_dir, 6)]
    assert any(r.boxes for r in results), "the tiny model should find something somewhere"
    for r in results:
        h, w = r.metadata.original_size
        assert r.heatmap is not None and r.heatmap.shape == (h, w)
        for box in r.boxes:
            assert 0 <= box.x0 < box.x1 <= w and 0 <= box.y0 < box.y1 <= h
            assert 0.0 <= box.score <= 1.0


def test_bytes_in_and_pixels_kept(predictor: Predictor, fracatlas_dir: Path) -> None:
    path = _images(fracatlas_dir, 2)[0]
    from_bytes = predictor.predict(path.read_bytes(), name="/somewhere/upload.jpg", keep_pixels=True)
    from_path = predictor.predict(path, keep_pixels=True)
    assert from_bytes.source == "upload.jpg"
    assert from_bytes.fracture_probability == from_path.fracture_probability
    assert from_bytes.pixels is not None and from_bytes.pixels.shape == from_path.metadata.original_size


def test_jpegs_are_decoded_reduced_and_pixels_kept_at_full_size(
    predictor: Predictor, fracatlas_dir: Path
) -> None:
    paths = _images(fracatlas_dir, 4)  # 1024 x 842 and smaller; the tiny model's input is 64 px
    plain = [predictor.predict(p) for p in paths]
    kept = [predictor.predict(p, keep_pixels=True) for p in paths]
    streamed = list(predictor.predict_many(paths, keep_pixels=True, heatmap=True))
    for p, a, b, c in zip(paths, plain, kept, streamed, strict=True):
        size = a.metadata.original_size
        assert a.metadata.reduced_from == size, p.name  # the model's read was reduced ...
        assert a.heatmap is not None and a.heatmap.shape == size  # ... heatmap and boxes are not
        assert a.pixels is None and b.pixels is not None and c.pixels is not None
        np.testing.assert_array_equal(b.pixels, predictor.full_pixels(p, predictor.read(p)))
        assert b.pixels.shape == c.pixels.shape == size
        # keeping the pixels (overlays: CLI, API, app) does not change the answer
        assert a.fracture_probability == b.fracture_probability == c.fracture_probability
        assert a.boxes == b.boxes == c.boxes
        # decoded at 1/8 the image is about 128 x 106 pixels, but it is no low-resolution radiograph
        assert not any("low resolution" in w for w in a.warnings)


def test_full_pixels_decodes_again_only_when_reduced(predictor: Predictor, tmp_path: Path) -> None:
    png = _synthetic(tmp_path / "x.png", 300, 400)
    radiograph = predictor.read(png)
    assert radiograph.metadata.reduced_from is None
    assert predictor.full_pixels(png, radiograph) is radiograph.pixels


def test_a_blank_image_is_not_reliable(predictor: Predictor, tmp_path: Path) -> None:
    path = tmp_path / "blank.png"
    Image.fromarray(np.full((256, 256), 128, dtype=np.uint8), mode="L").save(path)
    result = predictor.predict(path)
    assert not result.reliable and result.decision.startswith("not reliable")
    assert any("uniform" in w for w in result.warnings)


# ---- studies -------------------------------------------------------------------------------------


def test_study_probability_is_the_mean_of_its_views(predictor: Predictor, fracatlas_dir: Path) -> None:
    base = predictor.predict(_images(fracatlas_dir, 2)[0])
    views = [  # three images (their own file contents) made from one result
        dataclasses.replace(
            base,
            source=f"image{i}.png",
            fracture_probability=p,
            metadata=dataclasses.replace(base.metadata, content_sha256=str(i)),
        )
        for i, p in enumerate((0.1, 0.2, 0.9), start=1)
    ]
    study = predictor.predict_study(views, "patient1/study1")
    assert study.fracture_probability == pytest.approx(0.4)  # mean, not max (0.9) nor any one view
    assert study.aggregation == "mean"
    assert study.images == ("image1.png", "image2.png", "image3.png")
    assert study.fracture_suspected == (study.fracture_probability >= predictor.operating_point.threshold)
    assert study.reliable
    unreliable = [*views[:2], dataclasses.replace(views[2], reliable=False)]
    assert not predictor.predict_study(unreliable, "s").reliable
    with pytest.raises(ValueError):
        predictor.predict_study([], "empty")


def test_a_study_has_the_region_of_its_views_and_warns_when_they_differ(fracatlas_dir: Path) -> None:
    predictor = Predictor()  # the default model has a region head (the tiny bundle has none)
    base = predictor.predict(_images(fracatlas_dir, 2)[0])

    def view(i: int, hand: float) -> Any:
        regions = {"hand": hand, "leg": 1 - hand, "hip": 0.0, "shoulder": 0.0}
        return dataclasses.replace(
            base,
            source=f"view{i}.png",
            region=max(regions, key=regions.get),
            region_probabilities=regions,
            metadata=dataclasses.replace(base.metadata, content_sha256=str(i)),
        )

    # a study had no region: the table's region cell of a study row was blank
    same = predictor.predict_study([view(1, 0.9), view(2, 0.7)], "wrist")
    assert same.region == "hand" and same.region_probabilities["hand"] == pytest.approx(0.8)
    assert same.to_dict()["region"] == "hand" and not same.warnings
    mixed = predictor.predict_study([view(1, 0.9), view(2, 0.2), view(3, 0.2)], "hand and leg")
    assert mixed.region == "leg" and mixed.region_probabilities["leg"] == pytest.approx(1.7 / 3)
    assert mixed.warnings == (
        "the views read as different body regions (hand: view1.png; leg: view2.png, view3.png): are "
        "they one examination? The study's region is the likeliest over all of them, leg",
    )


def test_a_view_given_twice_counts_once_and_the_study_says_so(
    predictor: Predictor, fracatlas_dir: Path
) -> None:
    # by file content: a copy under another name weighed its view double in the mean
    first, second = (path.read_bytes() for path in _images(fracatlas_dir, 2))
    a, copy, b = (
        predictor.predict(data, name=name)
        for data, name in ((first, "a.jpg"), (first, "copy.jpg"), (second, "b.jpg"))
    )
    study = predictor.predict_study([a, copy, b, a], "s")
    assert study.images == ("a.jpg", "b.jpg")
    assert study.fracture_probability == pytest.approx((a.fracture_probability + b.fracture_probability) / 2)
    assert study.warnings == (
        "given more than once, so counted once: copy.jpg (the same image as a.jpg), a.jpg",
    )
    assert study.reliable and predictor.predict_study([a, b], "s").warnings == ()


def test_one_dicom_image_saved_twice_is_one_view(predictor: Predictor) -> None:
    """The same DX image as explicit and as implicit VR (or with a header value edited): two files,
    so it was two views, the mean weighing it double. Other pixels are another view, though the
    (test) files share their SOP Instance UID, as a careless anonymiser's do."""
    from pydicom.uid import ImplicitVRLittleEndian

    from corpus import dicom_bytes

    explicit = dicom_bytes()
    implicit = dicom_bytes(transfer_syntax=ImplicitVRLittleEndian)
    other = dicom_bytes(pixel_bytes=bytes(reversed(dicom_bytes(pixels=True)[-72 * 64 * 2 :])))
    assert explicit != implicit
    a, again, b = (
        predictor.predict(data, name=name)
        for data, name in ((explicit, "a.dcm"), (implicit, "a-implicit.dcm"), (other, "b.dcm"))
    )
    study = predictor.predict_study([a, again, b], "s")
    assert study.images == ("a.dcm", "b.dcm")
    assert (
        study.warnings[0] == "given more than once, so counted once: a-implicit.dcm (the same image as a.dcm)"
    )


def test_one_image_stored_monochrome1_and_monochrome2_is_one_view(predictor: Predictor) -> None:
    """An export re-encoded MONOCHROME1 (4095 - v) as MONOCHROME2 (v): read as 1 - x, the two
    differed by float rounding (6e-8), so a study counted two views, one weighed double."""
    import io

    import pydicom

    from corpus import dicom_bytes

    values = np.random.default_rng(7).integers(0, 4096, (72, 64), dtype=np.uint16)
    shown = dicom_bytes(pixel_bytes=values.astype("<u2").tobytes())
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(pixel_bytes=(4095 - values).astype("<u2").tobytes())))
    ds.PhotometricInterpretation = "MONOCHROME1"
    stored_inverted = _file_bytes(ds)
    m2, m1 = (read_image(data) for data in (shown, stored_inverted))
    np.testing.assert_array_equal(m1.pixels, m2.pixels)
    assert m1.metadata.content_sha256 == m2.metadata.content_sha256
    a, again = (
        predictor.predict(data, name=n) for data, n in ((shown, "a.dcm"), (stored_inverted, "a1.dcm"))
    )
    study = predictor.predict_study([a, again], "s")
    assert study.images == ("a.dcm",) and "a1.dcm (the same image as a.dcm)" in study.warnings[0]


def test_views_of_two_dicom_studies_given_as_one_say_so(predictor: Predictor) -> None:
    """Two patients' radiographs ticked as one study made one verdict without a word (the app, the
    desktop, predict --study); no identifier of either is said or kept, only that the studies differ."""
    import io

    import pydicom

    from corpus import dicom_bytes

    def in_study(uid: str, value: int) -> bytes:
        pixels = np.random.default_rng(value).integers(0, 4096, (72, 64), dtype=np.uint16)
        ds = pydicom.dcmread(io.BytesIO(dicom_bytes(pixel_bytes=pixels.astype("<u2").tobytes())))
        ds.StudyInstanceUID = uid
        return _file_bytes(ds)

    a, b, c = (
        predictor.predict(in_study(uid, value), name=name)
        for uid, value, name in (("1.2.3.1", 10, "a.dcm"), ("1.2.3.1", 20, "b.dcm"), ("1.2.3.2", 30, "c.dcm"))
    )
    one = predictor.predict_study([a, b], "s")
    assert not any("DICOM studies" in w for w in one.warnings)
    two = predictor.predict_study([a, b, c], "s")
    (said,) = [w for w in two.warnings if "DICOM studies" in w]
    assert said.startswith("the views come from 2 DICOM studies (their Study Instance UIDs differ)")
    assert "1.2.3" not in json.dumps(two.to_dict()) + json.dumps(a.to_dict()) + repr(a)


def _file_bytes(ds) -> bytes:
    """A pydicom Dataset as the bytes of its file."""
    import io

    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_views_of_two_patients_in_one_dicom_study_are_not_reliable(
    predictor: Predictor, fracatlas_dir: Path
) -> None:
    """Two patients' images under one Study Instance UID (a PACS or anonymiser mix-up) made one
    reliable verdict without a word, where the DICOM node refuses them; no Patient ID is said."""

    from dicom_results_support import cr_from_jpeg

    jpegs = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:3]

    def of_patient(patient: str, jpeg: Path) -> bytes:
        ds = cr_from_jpeg(jpeg, study_uid="1.2.3.1")
        ds.PatientID = patient
        return _file_bytes(ds)

    a, b, c = (
        predictor.predict(of_patient(patient, jpeg), name=name)
        for patient, jpeg, name in zip(
            ("SECRET-1", "SECRET-1", "SECRET-2"), jpegs, ("a.dcm", "b.dcm", "c.dcm"), strict=True
        )
    )
    assert a.reliable and b.reliable and c.reliable  # radiographs: only the patients make it unreliable
    one = predictor.predict_study([a, b], "s")
    assert one.reliable and not any("patients" in w for w in one.warnings)
    two = predictor.predict_study([a, b, c], "s")
    assert not two.reliable and two.to_dict()["reliable"] is False
    assert two.decision == "not reliable: the views come from several patients"
    # the mix-up said first also where a view is out of range (it said "some views are outside ...")
    odd = dataclasses.replace(c, reliable=False, warnings=("the image is nearly uniform",))
    assert (
        predictor.predict_study([a, b, odd], "s").decision
        == "not reliable: the views come from several patients"
    )
    # the same image filed under another patient too: counted once as a view, but still a mix-up
    again = predictor.predict(of_patient("SECRET-2", jpegs[0]), name="a-again.dcm")
    twice = predictor.predict_study([a, again], "s")
    assert twice.repeats and not twice.reliable
    (said,) = [w for w in two.why_not_reliable if "patients" in w]
    assert (
        said.startswith("the views come from 2 patients (their DICOM Patient IDs differ)")
        and said in two.warnings
    )
    assert "SECRET" not in json.dumps(two.to_dict()) + json.dumps(c.to_dict()) + repr(c)


def test_a_study_with_views_that_could_not_be_read_warns_and_is_not_reliable(
    predictor: Predictor, fracatlas_dir: Path
) -> None:
    view = predictor.predict(_images(fracatlas_dir, 2)[1])
    assert predictor.predict_study([view], "s").reliable
    study = predictor.predict_study([view], "s", unread=["image2.png", "image3.png"])
    assert study.fracture_probability == view.fracture_probability  # from the view that was read
    assert not study.reliable and study.decision == "not reliable: some views could not be read"
    assert study.warnings == (
        "2 of 3 views could not be read (image2.png, image3.png); the study result is from the other 1 only",
    )
    assert study.to_dict()["unread_images"] == ["image2.png", "image3.png"]
    assert study.to_dict()["warnings"] == list(study.warnings)


def test_a_study_names_the_views_that_are_not_reliable_on_their_own(
    predictor: Predictor, fracatlas_dir: Path
) -> None:
    # it said "not reliable: some views are outside what the model was made for" with no warning
    # naming them, and their probabilities in its mean
    view = predictor.predict(_images(fracatlas_dir, 1)[0])
    noise = predictor.predict(np.random.default_rng(0).random((256, 256)), name="noise.png")
    assert view.reliable and not noise.reliable
    study = predictor.predict_study([view, noise], "s")
    assert not study.reliable
    assert study.decision == "not reliable: some views are outside what the model was made for"
    assert study.warnings == (
        "not reliable on its own: noise.png (see each view's warnings); the study's result still includes it",
    )
    assert study.to_dict()["warnings"] == list(study.warnings)
    assert predictor.predict_study([view], "s").warnings == ()
