"""The DICOMweb paths against Orthanc's DICOMweb plugin: ``fracsight dicom study`` run again on a
study files no second set of results, and a STOW-RS re-send of objects Orthanc already holds
counts as delivered and is stored once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from dicom_support import Orthanc, make_ct_dicom, make_radiograph_dicom, orthanc_available
from fracsight.cli import app
from fracsight.dicom.sender import DELIVERED, StowDestination
from test_dicom_node import DEFAULT_KINDS, results_in

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not orthanc_available(), reason="needs Orthanc with its DICOMweb plugin"),
]


@pytest.fixture(scope="module")
def images(fracatlas_dir: Path) -> list[Path]:
    return sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[20:22]


def test_study_processed_again_files_no_second_set_of_results(images: list[Path], tmp_path: Path) -> None:
    study_uid = generate_uid()
    sources = [
        make_radiograph_dicom(image, tmp_path / f"{i}.dcm", study_uid=study_uid, instance_number=i + 1)
        for i, image in enumerate(images)
    ]
    expected = 2 * len(DEFAULT_KINDS) + 1
    with Orthanc(tmp_path / "orthanc") as orthanc:
        for path in [*sources, make_ct_dicom(tmp_path / "ct.dcm", study_uid=study_uid)]:
            orthanc.upload(path)
        command = ["dicom", "study", study_uid, "--dicomweb", orthanc.dicomweb_url]
        first = CliRunner().invoke(app, command)
        assert first.exit_code == 0, first.output
        uids = {str(ds.SOPInstanceUID) for ds in results_in(orthanc, study_uid)}
        assert len(uids) == expected
        again = CliRunner().invoke(app, command)
        assert again.exit_code == 0, again.output
        summary = json.loads(again.stdout)
        assert summary["predicted"] == 2
        assert list(summary["refused"].values()) == ["unsupported_modality"]  # the CT, by its code
        assert summary["own_results_skipped"] == expected
        assert summary["result_objects_stored"] == expected and summary["result_objects_failed"] == 0
        # the same objects again (same UIDs), stored once: no second report, overlay or verdict
        assert {str(ds.SOPInstanceUID) for ds in results_in(orthanc, study_uid)} == uids
        assert len(orthanc.find_instances(StudyInstanceUID=study_uid)) == 3 + expected
        # another operating point is another result: filed beside the first, never hidden by its UIDs
        triage = CliRunner().invoke(app, [*command, "--operating-point", "triage"])
        assert triage.exit_code == 0, triage.output
        assert len({str(ds.SOPInstanceUID) for ds in results_in(orthanc, study_uid)} - uids) == expected


def test_stow_resend_of_stored_objects_is_delivered_once(images: list[Path], tmp_path: Path) -> None:
    files = [make_radiograph_dicom(image, tmp_path / f"{i}.dcm") for i, image in enumerate(images)]
    with Orthanc(tmp_path / "orthanc") as orthanc:
        destination = StowDestination(orthanc.dicomweb_url, timeout=30)
        assert destination.deliver(files[:1]) == [DELIVERED]
        # one already stored, one new: Orthanc answers both in ReferencedSOPSequence
        assert destination.deliver(files) == [DELIVERED, DELIVERED]
        assert len(orthanc.instances()) == 2
