"""Realistic source radiographs for the DICOM results tests: a FracAtlas JPEG as a CR object.

The object is what a CR modality sends: MONOCHROME1 (bone dark in the stored values), 12 bits
stored in 16, a VOI window, with patient and study attributes filled in. The identifiers are
made up but shaped like real ones, so that a test can look for them where they must not be.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"

# Made-up identifiers, distinctive enough to be searched for in logs and messages.
PATIENT = {
    "PatientName": "Testperson^Ingrid^Maria",
    "PatientID": "FSX-48213977",
    "PatientBirthDate": "19710304",
    "PatientSex": "F",
    "AccessionNumber": "ACC7719023",
    "StudyID": "ST55102",
    "ReferringPhysicianName": "Referrer^Olav",
    "InstitutionName": "Fjordside General Hospital",
}
IDENTIFIER_STRINGS = ("Testperson", "Ingrid", "FSX-48213977", "19710304", "ACC7719023", "ST55102", "Olav")


def cr_from_jpeg(
    jpeg: Path,
    *,
    study_uid: str | None = None,
    instance_number: int = 1,
    body_part: str = "HAND",
) -> Dataset:
    """A CR Image Storage dataset (MONOCHROME1, 12-bit) holding the pixels of ``jpeg``."""
    grey = np.asarray(Image.open(jpeg).convert("L"), dtype=np.uint32)
    stored = (4095 - (grey * 4095 // 255)).astype(np.uint16)  # MONOCHROME1: bone (bright) stored low
    now = datetime.datetime(2026, 11, 30, 14, 5, 31)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for key, value in PATIENT.items():
        setattr(ds, key, value)
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.StudyDescription = "XR HAND 3 VIEWS"
    ds.Modality = "CR"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.BodyPartExamined = body_part
    ds.ViewPosition = "PA"
    ds.Laterality = "L"
    ds.PatientOrientation = ["A", "F"]
    ds.Manufacturer = "Example Imaging"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.KVP = 55
    ds.ExposureTime = 8
    ds.XRayTubeCurrent = 200
    ds.PixelSpacing = [0.15, 0.15]
    ds.ImagerPixelSpacing = [0.15, 0.15]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PixelData = stored.tobytes()
    return ds


def write(ds: Dataset, path: Path) -> Path:
    """Save ``ds`` as a DICOM Part 10 file."""
    ds.save_as(path, enforce_file_format=True)
    return path


def read(path: Path) -> Dataset:
    return pydicom.dcmread(path)
