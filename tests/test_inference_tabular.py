"""Which inputs a run takes and how it groups them into studies (no model needed)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from fracsight.inference.tabular import (
    distinct_names,
    is_folder_image,
    named_inputs,
    numbered_names,
    study_groups,
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    return path


def test_studies_with_the_same_last_folders_stay_apart(tmp_path: Path) -> None:
    wrist = _touch(tmp_path / "valid/XR_WRIST/patient11185/study1_positive/image1.png")
    elbow = _touch(tmp_path / "valid/XR_ELBOW/patient11185/study1_positive/image1.png")
    other = _touch(tmp_path / "valid/XR_ELBOW/patient2/study1_negative/image1.png")
    assert study_groups([wrist, elbow, other, tmp_path / "loose.png"]) == {
        "XR_WRIST/patient11185/study1_positive": [0],
        "XR_ELBOW/patient11185/study1_positive": [1],
        "patient2/study1_negative": [2],  # unique already: named as before
    }


def test_a_study_is_its_folder_however_it_is_reached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = _touch(tmp_path / "patient1/study1/image1.png")
    two = _touch(tmp_path / "patient1/study1/image2.png")
    monkeypatch.chdir(tmp_path / "patient1")
    # the same folder by an absolute and a relative path, the same file twice: one study, two views
    groups = study_groups([one, Path("study1/image2.png"), two, Path("./study1/image1.png")])
    assert groups == {"patient1/study1": [0, 1]}


def test_a_linked_study_folder_is_named_as_the_link(tmp_path: Path) -> None:
    """The reproduction: ``patient1/study1_positive`` linked to ``store/a`` came out as the study
    ``store/a``: its patient, and the label its name carries, gone from the study row."""
    _touch(tmp_path / "store/a/image1.png")
    (tmp_path / "patient1").mkdir()
    (tmp_path / "patient1/study1_positive").symlink_to(tmp_path / "store/a")
    (tmp_path / "patient1/study2_negative").symlink_to(tmp_path / "store/a")  # one folder, twice
    linked = tmp_path / "patient1/study1_positive/image1.png"
    again = tmp_path / "patient1/study2_negative/image1.png"
    assert study_groups([linked, again]) == {"patient1/study1_positive": [0]}


def test_names_are_as_long_as_needed_to_tell_studies_apart(tmp_path: Path) -> None:
    a = _touch(tmp_path / "a/XR_HAND/patient1/study1/image1.png")
    b = _touch(tmp_path / "b/XR_HAND/patient1/study1/image1.png")
    assert list(study_groups([a, b])) == ["a/XR_HAND/patient1/study1", "b/XR_HAND/patient1/study1"]


def test_each_file_is_taken_once_by_its_resolved_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _touch(tmp_path / "st/a.png")
    _touch(tmp_path / "st/b.png")
    os.symlink(a, tmp_path / "link.png")
    monkeypatch.chdir(tmp_path)
    given = [Path("st"), Path("st/a.png"), a, Path("./st/b.png"), Path("link.png")]
    assert named_inputs(given) == [(Path("st/a.png"), "a.png"), (Path("st/b.png"), "b.png")]


def test_a_file_linked_into_a_second_study_is_a_view_of_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MURA's layout with an image of one study linked into another: taken once in all, it was a
    view of whichever folder came first; the other study's verdict changed with the order of the
    arguments (fracture suspected, or not) and said the image was "not given"."""
    _touch(tmp_path / "patient1/study1_positive/image1.png")
    shared = _touch(tmp_path / "patient1/study1_positive/image2.png")
    _touch(tmp_path / "patient2/study1_negative/image1.png")
    (tmp_path / "patient2/study1_negative/image2.png").symlink_to(shared)
    monkeypatch.chdir(tmp_path)
    one, two = Path("patient1/study1_positive"), Path("patient2/study1_negative")
    for order in ([one, two], [two, one], [Path(".")]):
        named = named_inputs(order)
        assert len(named) == 4, (order, named)
        assert {len(v) for v in study_groups([f for f, _ in named]).values()} == {2}
    # within one study a file is still taken once, however often it is given
    assert len(named_inputs([one, one / "image2.png", Path("./patient1/study1_positive/image1.png")])) == 2


def test_an_uploaded_folder_is_judged_as_a_folder_on_disk(tmp_path: Path) -> None:
    """The web app's folder upload: names are paths in the folder (no files here), its images are
    those ``folder_images`` would find there, and its study folders are grouped by name alone."""
    jpeg = b"\xff\xd8\xff\xe0" + bytes(100)
    assert is_folder_image("export/study1/IM000001", lambda: jpeg)  # by its bytes
    assert is_folder_image("export/study1/a.PNG", lambda: b"")  # by its extension, bytes unread
    assert not is_folder_image("export/study1/notes.txt", lambda: b"left wrist")
    assert not is_folder_image("export/study1/.DS_Store", lambda: jpeg)
    assert not is_folder_image("export/.git/objects/IM000001", lambda: jpeg)
    assert is_folder_image(".export/study1/IM000001", lambda: jpeg)  # the folder chosen is not judged
    names = ["bin/XR_HAND/patient1/study1/a.png", "XR_HAND/patient1/study1/b.png", "bin/loose.png"]
    # "/bin" is a link on this system: a name is never resolved against the server's files
    assert study_groups([Path("/", n) for n in names], resolve=False) == {
        "bin/XR_HAND/patient1/study1": [0],
        "XR_HAND/patient1/study1": [1],
    }


def test_the_dicomdir_of_an_export_is_no_input(tmp_path: Path) -> None:
    """A CD or PACS export (pydicom's FileSet writes one as they do) holds a DICOMDIR, its index:
    `predict EXPORT` gave it an error row (`no_pixel_data`) and exit 1 on every export."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.fileset import FileSet

    from corpus import dicom_bytes

    image = pydicom.dcmread(io.BytesIO(dicom_bytes()))
    # what a FileSet files an image by: patient, study, series
    image.PatientID, image.PatientName, image.StudyDate, image.StudyTime = "P1", "Test^P", "20261204", "1200"
    image.StudyID, image.AccessionNumber, image.SeriesNumber, image.InstanceNumber = "1", "1", 1, 1
    image.StudyInstanceUID, image.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    fileset = FileSet()
    fileset.add(image)
    fileset.write(tmp_path / "export")
    found = [name for _, name in named_inputs([tmp_path / "export"])]
    assert (tmp_path / "export" / "DICOMDIR").is_file() and len(found) == 1
    assert found[0].endswith("/IM000000") and not found[0].startswith("DICOMDIR")
    assert not is_folder_image("export/DICOMDIR", lambda: (tmp_path / "export" / "DICOMDIR").read_bytes())


@pytest.mark.skipif(os.name == "nt", reason="names of bytes that are no UTF-8 are POSIX's")
def test_names_that_read_the_same_are_numbered(tmp_path: Path) -> None:
    """A name of bytes (caf\\xe9.jpg in Latin-1) is shown as ``caf\\xe9.jpg``; beside a file named so
    literally both rows, and their overlays, had one name, paths as typed included."""
    folder = tmp_path / "enc"
    latin = _touch(Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.jpg")))
    literal = _touch(folder / "caf\\xe9.jpg")
    names = [name for _, name in named_inputs([folder])]
    assert len(set(names)) == 2, names
    # numbered as the web app numbers a repeat, as a browser numbers a second download of one name
    numbered = distinct_names([(latin, "x.jpg"), (literal, "x.jpg")])
    assert numbered[0][1].endswith("/caf\\xe9.jpg") and numbered[1][1].endswith("/caf\\xe9 (2).jpg")
    assert numbered_names(["IM1", "IM1", "IM1 (2)", "a/"]) == ["IM1", "IM1 (3)", "IM1 (2)", "a/"]
